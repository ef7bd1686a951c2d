//! Connections and the tenant context.
//!
//! The API runs every request in one transaction under the restricted role `psa_app` with
//! `app.current_tenant` set, so row-level security confines it to the caller's tenant even where
//! a query forgot its `tenant` filter. The workflow worker writes into two tenants (the new one
//! and the management tenant) and stays on the owner role, which the policies do not restrict.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};

use crate::{Error, Result, TenantId};

/// The role the policies apply to (created by the migrations).
pub const APP_ROLE: &str = "psa_app";

/// A pool for the owner role, sized for a service.
pub async fn connect(database_url: &str, max_connections: u32) -> Result<PgPool, sqlx::Error> {
    connect_with(database_url, max_connections, None).await
}

/// Server-side limits of a long-running process's connections: no statement runs longer than
/// `statement`, no transaction stays open and idle longer than `idle_in_transaction` (its
/// locks would otherwise hold up everyone; PostgreSQL ends the session).
#[derive(Clone, Copy, Debug)]
pub struct DbTimeouts {
    pub statement: Duration,
    pub idle_in_transaction: Duration,
}

/// Like [`connect`], with [`DbTimeouts`] set on every connection.
pub async fn connect_with(
    database_url: &str,
    max_connections: u32,
    timeouts: Option<DbTimeouts>,
) -> Result<PgPool, sqlx::Error> {
    // No JIT: psa's queries are short lookups, for which compiling costs more than it saves
    // (a tenant list page took 17 ms of JIT on a 1 ms query at 100k tenants).
    let mut options: PgConnectOptions = database_url
        .parse::<PgConnectOptions>()?
        .options([("jit", "off")]);
    if let Some(t) = timeouts {
        options = options.options([
            (
                "statement_timeout",
                format!("{}ms", t.statement.as_millis()),
            ),
            (
                "idle_in_transaction_session_timeout",
                format!("{}ms", t.idle_in_transaction.as_millis()),
            ),
        ]);
    }
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options.application_name("psa"))
        .await
}

/// Switches the current transaction to the restricted role and the given tenant. Both settings
/// end with the transaction, so a pooled connection returns clean.
pub async fn enter_tenant(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query("SELECT set_config('role', $1, true), set_config('app.current_tenant', $2, true)")
        .bind(APP_ROLE)
        .bind(tenant.to_string())
        .execute(conn)
        .await?;
    Ok(())
}

/// Leaves any tenant context for the rest of the transaction (or until the next
/// [`enter_tenant`]): the session's own role again, for platform tables and functions.
pub async fn leave_tenant(conn: &mut PgConnection) -> Result<()> {
    sqlx::query(
        "SELECT set_config('role', 'none', true), set_config('app.current_tenant', '', true)",
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Declares the rest of the transaction one of the platform's own code paths (the provisioning
/// run, reconcile, the lifecycle): the only ones that may write a customer record's link and
/// lifecycle facts or remove one (the migration `customer_link_guard` refuses everything else
/// done as the API's confined role).
pub async fn as_platform(conn: &mut PgConnection) -> Result<()> {
    sqlx::query("SELECT set_config('psa.platform', 'on', true)")
        .execute(conn)
        .await?;
    Ok(())
}

/// Begins a transaction confined to `tenant` by row-level security.
pub async fn begin_tenant(
    pool: &PgPool,
    tenant: TenantId,
) -> Result<Transaction<'static, Postgres>> {
    let mut tx = pool.begin().await?;
    enter_tenant(&mut tx, tenant).await?;
    Ok(tx)
}

/// A page of a list, with the opaque cursor of the next page.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Paging parameters of the list operations.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PageRequest {
    /// 1..=200, default 50.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

pub const DEFAULT_PAGE: u32 = 50;
pub const MAX_PAGE: u32 = 200;

impl PageRequest {
    pub(crate) fn limit(&self) -> Result<i64> {
        match self.limit {
            None => Ok(i64::from(DEFAULT_PAGE)),
            Some(n @ 1..=MAX_PAGE) => Ok(i64::from(n)),
            Some(_) => Err(Error::validation(
                "limit",
                format!("limit must be between 1 and {MAX_PAGE}"),
            )),
        }
    }

    /// Decodes the cursor: a base64url JSON pair (sort key, id) written by [`encode_cursor`].
    pub(crate) fn decode_cursor(&self) -> Result<Option<(String, uuid::Uuid)>> {
        use base64::Engine;
        let Some(c) = self.cursor.as_deref().filter(|c| !c.is_empty()) else {
            return Ok(None);
        };
        let bad = || Error::validation("cursor", "The cursor is invalid");
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(c)
            .map_err(|_| bad())?;
        serde_json::from_slice::<(String, uuid::Uuid)>(&bytes)
            .map(Some)
            .map_err(|_| bad())
    }
}

pub(crate) fn encode_cursor(key: &str, id: uuid::Uuid) -> String {
    use base64::Engine;
    let json = serde_json::to_vec(&(key, id)).expect("a pair of strings serialises");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
}

/// An `ILIKE` pattern matching values that contain `text`: its `%`, `_` and `\` are escaped, so
/// they match themselves.
pub fn contains_pattern(text: &str) -> String {
    format!(
        "%{}%",
        text.replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    )
}

/// Cuts a fetched `limit + 1` rows down to a page.
pub(crate) fn page<T>(
    mut rows: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> (String, uuid::Uuid),
) -> Page<T> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next_cursor = if rows.len() > limit {
        rows.truncate(limit);
        rows.last().map(|r| {
            let (k, id) = key(r);
            encode_cursor(&k, id)
        })
    } else {
        None
    };
    Page {
        items: rows,
        next_cursor,
    }
}

/// Deserialises a field that may be absent (`None`), null (`Some(None)`) or a value
/// (`Some(Some(v))`): the three states a PATCH distinguishes.
pub fn double_option<'de, T, D>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    T: Deserialize<'de>,
    D: serde::Deserializer<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}
