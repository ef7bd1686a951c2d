//! Search from the management console: a tenant by its name, slug or id, by a staff member's
//! email address, or by its customer company's name. One query over trigram indexes
//! (`psa_search_tenants`), each kind capped, exact and prefix matches first.

use serde::Serialize;
use sqlx::PgConnection;

use crate::{Error, Result, TenantId};

/// What a search found, grouped by what matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Results {
    /// The query as searched (trimmed, lower case).
    pub query: String,
    /// Tenants whose id, name or slug matched.
    pub tenants: Vec<Hit>,
    /// Tenants one of whose staff has a matching email address.
    pub people: Vec<Hit>,
    /// Tenants whose customer company (in the management tenant) has a matching name.
    pub customers: Vec<Hit>,
}

/// One match: the tenant, and what matched.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Hit {
    /// `id`, `name`, `slug`, `user` or `customer`.
    pub kind: String,
    pub tenant_id: TenantId,
    pub name: String,
    pub slug: String,
    pub status: String,
    /// The text that matched (the email address, the customer company's name, ...).
    pub detail: String,
    /// The text is the query itself.
    #[serde(skip)]
    pub exact: bool,
    /// The text starts with the query.
    #[serde(skip)]
    pub prefix: bool,
}

/// The most matches of each kind.
pub const PER_KIND: i32 = 20;

/// A query as typed: 3-200 characters once trimmed (fewer give the trigram indexes nothing to
/// narrow with), or a validation error on `q`. Lower-cased by the database, as its indexes are.
pub fn query(raw: &str) -> Result<String> {
    let q = raw.trim();
    if (3..=200).contains(&q.chars().count()) && !q.chars().any(char::is_control) {
        Ok(q.to_owned())
    } else {
        Err(Error::validation(
            "q",
            "Search for 3-200 characters: a name, slug, id, email address or company name",
        ))
    }
}

/// Searches every tenant (the platform's connection or a management caller's: the function
/// reads across tenants; the caller checked the permission).
pub async fn search(conn: &mut PgConnection, raw: &str) -> Result<Results> {
    let q = query(raw)?;
    let mut hits: Vec<Hit> = sqlx::query_as(
        "SELECT kind, tenant_id, name, slug, status, detail, exact, prefix \
         FROM psa_search_tenants($1, $2)",
    )
    .bind(&q)
    .bind(PER_KIND)
    .fetch_all(conn)
    .await?;
    // Exact matches first, then prefixes, then the rest, each by its text.
    hits.sort_by(|a, b| {
        (!a.exact, !a.prefix, a.detail.to_lowercase()).cmp(&(
            !b.exact,
            !b.prefix,
            b.detail.to_lowercase(),
        ))
    });
    let mut out = Results {
        query: q.to_lowercase(),
        ..Default::default()
    };
    for hit in hits {
        let group = match hit.kind.as_str() {
            "user" => &mut out.people,
            "customer" => &mut out.customers,
            _ => &mut out.tenants,
        };
        // A tenant found by its name and its slug is listed once.
        if !group.iter().any(|h| h.tenant_id == hit.tenant_id) {
            group.push(hit);
        }
    }
    Ok(out)
}
