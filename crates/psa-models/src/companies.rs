//! Companies (the reference's companies era; "clients" in its later versions).
//!
//! Rules (docs/models.md):
//! * the name is trimmed, 1..255 characters, unique per tenant;
//! * `url` and `properties.website` are kept in sync (a website without url fills the url, a url
//!   without website fills the website);
//! * a new company gets the default tax settings of the server's TaxService (the tenant's oldest
//!   active tax rate as its default rate), unless `skip_tax_settings`;
//! * the website's host becomes the company's email suffix, self-registration disabled, unless
//!   `skip_email_suffix`;
//! * deleting a company removes its tag mappings; a company that still has contacts cannot be
//!   deleted.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgConnection;

use crate::db::{Page, PageRequest, double_option, page};
use crate::validate::{
    BillingCycle, ClientType, CompanyName, EmailAddress, WebsiteUrl, clean_optional, optional_text,
};
use crate::{CompanyId, ContactId, Error, Result, TenantId, UserId, email_suffix};

/// A row of `companies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Company {
    pub tenant: TenantId,
    pub company_id: CompanyId,
    pub company_name: String,
    pub client_type: Option<ClientType>,
    pub url: Option<String>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub properties: Option<Value>,
    pub notes: Option<String>,
    pub billing_email: Option<String>,
    pub billing_cycle: BillingCycle,
    pub billing_contact_id: Option<ContactId>,
    pub account_manager_id: Option<UserId>,
    pub region_code: Option<String>,
    pub is_inactive: bool,
    pub is_tax_exempt: bool,
    pub tax_id_number: Option<String>,
    pub timezone: Option<String>,
    pub credit_limit: Option<i64>,
    pub credit_balance: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "tenant, company_id, company_name, client_type, url, properties, notes, billing_email, \
         billing_cycle, billing_contact_id, account_manager_id, region_code, is_inactive, \
         is_tax_exempt, tax_id_number, timezone, credit_limit, credit_balance, created_at, updated_at"
    };
}

/// Input of [`create`]. Unknown fields are refused by deserialisation.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewCompany {
    pub company_name: String,
    #[serde(default)]
    pub client_type: Option<ClientType>,
    #[serde(default)]
    pub url: Option<String>,
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub properties: Option<Map<String, Value>>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub billing_email: Option<String>,
    #[serde(default)]
    pub billing_cycle: Option<BillingCycle>,
    #[serde(default)]
    pub billing_contact_id: Option<ContactId>,
    #[serde(default)]
    pub account_manager_id: Option<UserId>,
    #[serde(default)]
    pub region_code: Option<String>,
    #[serde(default)]
    pub is_inactive: Option<bool>,
    #[serde(default)]
    pub is_tax_exempt: Option<bool>,
    #[serde(default)]
    pub tax_id_number: Option<String>,
    #[serde(default)]
    pub timezone: Option<String>,
    #[serde(default)]
    pub credit_limit: Option<i64>,
}

/// Options of [`create`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// Use this id. A row with this id already in the tenant is returned as it is: a retried
    /// workflow activity finds its first run's company instead of making a second.
    pub company_id: Option<CompanyId>,
    pub skip_tax_settings: bool,
    pub skip_email_suffix: bool,
}

const MAX_PROPERTIES_BYTES: usize = 64 * 1024;
const MAX_NOTES: usize = 10_000;

/// The fields shared by create and update, validated.
struct Fields {
    company_name: CompanyName,
    client_type: ClientType,
    url: Option<WebsiteUrl>,
    properties: Option<Map<String, Value>>,
    notes: Option<String>,
    billing_email: Option<EmailAddress>,
    billing_cycle: BillingCycle,
    billing_contact_id: Option<ContactId>,
    account_manager_id: Option<UserId>,
    region_code: Option<String>,
    is_inactive: bool,
    is_tax_exempt: bool,
    tax_id_number: Option<String>,
    timezone: Option<String>,
    credit_limit: Option<i64>,
}

fn website_of(properties: &Map<String, Value>) -> Result<Option<String>> {
    match properties.get("website") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(clean_optional(Some(s))),
        Some(_) => Err(Error::validation(
            "properties.website",
            "The website must be a string",
        )),
    }
}

fn check_properties(properties: &Map<String, Value>) -> Result<()> {
    let size = serde_json::to_vec(properties)
        .map(|v| v.len())
        .unwrap_or(usize::MAX);
    if size > MAX_PROPERTIES_BYTES {
        return Err(Error::validation(
            "properties",
            "The properties must be at most 64 KiB of JSON",
        ));
    }
    Ok(())
}

/// The url/website sync: a website without url fills the url; a url without website fills the
/// website. Returns the validated url.
fn sync_url(
    url: Option<String>,
    properties: &mut Option<Map<String, Value>>,
) -> Result<Option<WebsiteUrl>> {
    let website = match properties {
        Some(p) => website_of(p)?,
        None => None,
    };
    let url = match (url, website) {
        (Some(u), _) => Some(WebsiteUrl::parse(&u)?),
        (None, Some(w)) => Some(WebsiteUrl::parse_field(&w, "properties.website")?),
        (None, None) => None,
    };
    if let Some(u) = &url {
        let p = properties.get_or_insert_with(Map::new);
        if website_of(p)?.is_none() {
            p.insert("website".into(), Value::String(u.as_str().to_owned()));
        }
    }
    Ok(url)
}

fn bounded(raw: Option<String>, field: &'static str, max: usize) -> Result<Option<String>> {
    let v = optional_text(raw.as_deref(), field, max)?;
    if v.as_deref()
        .is_some_and(|s| s.chars().any(char::is_control))
        && field != "notes"
    {
        return Err(Error::validation(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(v)
}

impl NewCompany {
    fn validate(self) -> Result<Fields> {
        let company_name = CompanyName::parse(&self.company_name)?;
        let mut properties = self.properties;
        if let Some(p) = &properties {
            check_properties(p)?;
        }
        let url = sync_url(clean_optional(self.url.as_deref()), &mut properties)?;
        let billing_email = clean_optional(self.billing_email.as_deref())
            .map(|e| EmailAddress::parse_field(&e, "billing_email"))
            .transpose()?;
        Ok(Fields {
            company_name,
            client_type: self.client_type.unwrap_or_default(),
            url,
            properties,
            notes: bounded(self.notes, "notes", MAX_NOTES)?,
            billing_email,
            billing_cycle: self.billing_cycle.unwrap_or_default(),
            billing_contact_id: self.billing_contact_id,
            account_manager_id: self.account_manager_id,
            region_code: bounded(self.region_code, "region_code", 255)?,
            is_inactive: self.is_inactive.unwrap_or(false),
            is_tax_exempt: self.is_tax_exempt.unwrap_or(false),
            tax_id_number: bounded(self.tax_id_number, "tax_id_number", 255)?,
            timezone: bounded(self.timezone, "timezone", 255)?,
            credit_limit: non_negative(self.credit_limit)?,
        })
    }
}

fn non_negative(limit: Option<i64>) -> Result<Option<i64>> {
    match limit {
        Some(n) if n < 0 => Err(Error::validation(
            "credit_limit",
            "credit_limit must not be negative",
        )),
        other => Ok(other),
    }
}

/// Creates a company in `tenant`, with its default tax settings and email suffix (see the module
/// documentation). Returns the stored row.
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    input: NewCompany,
    options: CreateOptions,
) -> Result<Company> {
    let f = input.validate()?;
    let id = options.company_id.unwrap_or_default();
    let suffix = if options.skip_email_suffix {
        None
    } else {
        f.url
            .as_ref()
            .and_then(|u| email_suffix::extract(u.as_str()))
    };
    // One statement: the company, its default tax settings (the server TaxService's: the
    // tenant's oldest active rate becomes the default rate, with settings and, if the rate has
    // none yet, one "Default Tax" component; the reference added a component per company) and
    // its email suffix. Without an active rate nothing is inserted and the error says why.
    let inserted = sqlx::query_as::<_, Company>(concat!(
        "WITH rate AS ( \
           SELECT tax_rate_id, tax_percentage FROM tax_rates \
           WHERE tenant = $1 AND is_active AND $18 ORDER BY created_at, tax_rate_id LIMIT 1), \
         c AS ( \
           INSERT INTO companies (tenant, company_id, company_name, client_type, url, properties, notes, \
             billing_email, billing_cycle, billing_contact_id, account_manager_id, region_code, \
             is_inactive, is_tax_exempt, tax_id_number, timezone, credit_limit) \
           SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17 \
           WHERE NOT $18 OR EXISTS (SELECT 1 FROM rate) \
           ON CONFLICT (tenant, company_id) DO NOTHING RETURNING *), \
         ts AS ( \
           INSERT INTO company_tax_settings (tenant, company_id, is_reverse_charge_applicable) \
           SELECT $1, c.company_id, false FROM c, rate ON CONFLICT DO NOTHING), \
         tr AS ( \
           INSERT INTO company_tax_rates (tenant, company_id, tax_rate_id, is_default) \
           SELECT $1, c.company_id, rate.tax_rate_id, true FROM c, rate ON CONFLICT DO NOTHING), \
         tc AS ( \
           INSERT INTO tax_components (tenant, tax_rate_id, name, rate, sequence, is_compound) \
           SELECT $1, rate.tax_rate_id, 'Default Tax', ceil(rate.tax_percentage)::bigint, 1, false \
           FROM c, rate ON CONFLICT DO NOTHING), \
         es AS ( \
           INSERT INTO company_email_settings (tenant, company_id, email_suffix, self_registration_enabled) \
           SELECT $1, c.company_id, $19, false FROM c WHERE $19::text IS NOT NULL ON CONFLICT DO NOTHING) \
         SELECT ",
        columns!(),
        " FROM c"
    ))
    .bind(tenant)
    .bind(id)
    .bind(f.company_name.as_str())
    .bind(f.client_type)
    .bind(f.url.as_ref().map(WebsiteUrl::as_str))
    .bind(f.properties.clone().map(Value::Object))
    .bind(&f.notes)
    .bind(f.billing_email.as_ref().map(EmailAddress::as_str))
    .bind(f.billing_cycle)
    .bind(f.billing_contact_id)
    .bind(f.account_manager_id)
    .bind(&f.region_code)
    .bind(f.is_inactive)
    .bind(f.is_tax_exempt)
    .bind(&f.tax_id_number)
    .bind(&f.timezone)
    .bind(f.credit_limit)
    .bind(!options.skip_tax_settings)
    .bind(suffix)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(c) => Ok(c),
        // Either the same id is already stored (a replay of an earlier, committed create)...
        None => match find(conn, tenant, id).await? {
            Some(existing) => Ok(existing),
            // ...or the tenant has no tax rate to default to.
            None => Err(Error::conflict(
                None,
                "No active tax rates found for this tenant: its onboarding seeds have not run",
            )),
        },
    }
}

/// The company `id` of `tenant`.
/// The names of these companies of `tenant` (those that exist), in one query: a page of
/// contacts shows its companies' names.
pub async fn names(
    conn: &mut PgConnection,
    tenant: TenantId,
    ids: &[CompanyId],
) -> Result<Vec<(CompanyId, String)>> {
    Ok(sqlx::query_as(
        "SELECT company_id, company_name FROM companies WHERE tenant = $1 AND company_id = ANY($2)",
    )
    .bind(tenant)
    .bind(ids)
    .fetch_all(conn)
    .await?)
}

pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: CompanyId) -> Result<Company> {
    find(conn, tenant, id)
        .await?
        .ok_or(Error::NotFound { entity: "company" })
}

/// The company `id` of `tenant`, if it exists.
pub async fn find(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: CompanyId,
) -> Result<Option<Company>> {
    Ok(sqlx::query_as::<_, Company>(concat!(
        "SELECT ",
        columns!(),
        " FROM companies WHERE tenant = $1 AND company_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The company of `tenant` whose `properties.tenant_id` is `managed`: the customer record of a
/// managed tenant in the management tenant.
pub async fn find_by_managed_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
    managed: TenantId,
) -> Result<Option<Company>> {
    Ok(sqlx::query_as::<_, Company>(concat!(
        "SELECT ",
        columns!(),
        " FROM companies WHERE tenant = $1 AND properties ? 'tenant_id' \
          AND properties ->> 'tenant_id' = $2"
    ))
    .bind(tenant)
    .bind(managed.to_string())
    .fetch_optional(conn)
    .await?)
}

/// The company of `tenant` with exactly this name, if any.
pub async fn find_by_name(
    conn: &mut PgConnection,
    tenant: TenantId,
    name: &str,
) -> Result<Option<Company>> {
    Ok(sqlx::query_as::<_, Company>(concat!(
        "SELECT ",
        columns!(),
        " FROM companies WHERE tenant = $1 AND company_name = $2"
    ))
    .bind(tenant)
    .bind(name.trim())
    .fetch_optional(conn)
    .await?)
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListFilter {
    /// Only active (`false`) or only inactive (`true`) companies; both when absent.
    pub is_inactive: Option<bool>,
    /// Only companies whose name contains this, case-insensitive (`%` and `_` are characters).
    #[serde(default)]
    pub name: Option<String>,
}

/// The companies of `tenant` by name, a page at a time.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    filter: &ListFilter,
    paging: &PageRequest,
) -> Result<Page<Company>> {
    let limit = paging.limit()?;
    let cursor = paging.decode_cursor()?;
    // Names are unique in a tenant: the name alone orders the pages, and the unique index
    // (tenant, company_name) serves a page at any depth without sorting. Only the filters given
    // are in the SQL: a prepared statement's generic plan must not read the whole tenant to
    // honour an `$n IS NULL OR ...` that is never null (100k customers: 60 ms a deep page, 180
    // ms a name search, against under 1 ms and 30 ms).
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(concat!(
        "SELECT ",
        columns!(),
        " FROM companies WHERE tenant = "
    ));
    q.push_bind(tenant);
    if let Some((name, _)) = &cursor {
        q.push(" AND company_name > ").push_bind(name.clone());
    }
    if let Some(inactive) = filter.is_inactive {
        q.push(" AND is_inactive = ").push_bind(inactive);
    }
    if let Some(name) = filter.name.as_deref() {
        q.push(" AND company_name ILIKE ")
            .push_bind(crate::db::contains_pattern(name));
    }
    q.push(" ORDER BY company_name LIMIT ").push_bind(limit + 1);
    // A name search is planned for its pattern, every time: a rare name is found through the
    // trigram index, a common one by reading the name order until the page is full. A cached
    // (generic) plan knows no pattern and reads the name order for every search (100k customers:
    // 110 ms a search for one of them).
    let rows = q
        .build_query_as::<Company>()
        .persistent(filter.name.is_none())
        .fetch_all(conn)
        .await?;
    Ok(page(rows, limit, |c| {
        (c.company_name.clone(), c.company_id.0)
    }))
}

/// A partial update: an absent field is left as it is; `null` (or `""`) clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CompanyPatch {
    #[serde(default)]
    pub company_name: Option<String>,
    #[serde(default)]
    pub client_type: Option<ClientType>,
    #[serde(default, deserialize_with = "double_option")]
    pub url: Option<Option<String>>,
    /// Merged into the stored properties (new keys win).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub properties: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "double_option")]
    pub notes: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub billing_email: Option<Option<String>>,
    #[serde(default)]
    pub billing_cycle: Option<BillingCycle>,
    #[serde(default, deserialize_with = "double_option")]
    pub billing_contact_id: Option<Option<ContactId>>,
    #[serde(default, deserialize_with = "double_option")]
    pub account_manager_id: Option<Option<UserId>>,
    #[serde(default, deserialize_with = "double_option")]
    pub region_code: Option<Option<String>>,
    #[serde(default)]
    pub is_inactive: Option<bool>,
    #[serde(default)]
    pub is_tax_exempt: Option<bool>,
    #[serde(default, deserialize_with = "double_option")]
    pub tax_id_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub timezone: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub credit_limit: Option<Option<i64>>,
}

fn patched<T: Clone>(current: &Option<T>, patch: Option<Option<T>>) -> Option<T> {
    match patch {
        None => current.clone(),
        Some(v) => v,
    }
}

/// Updates a company with the reference's update rules: properties are merged; a `website` in the
/// new properties also sets `url`; an explicit `url` overwrites `properties.website`; `""` clears a
/// field; deactivating a company deactivates its contacts. Unlike the reference, fields absent from
/// the patch keep their values (it reset the billing contact and email when absent).
#[tracing::instrument(skip_all, fields(%tenant, %id))]
pub async fn update(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: CompanyId,
    patch: CompanyPatch,
) -> Result<Company> {
    let current = sqlx::query_as::<_, Company>(concat!(
        "SELECT ",
        columns!(),
        " FROM companies WHERE tenant = $1 AND company_id = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound { entity: "company" })?;

    let mut properties = match &current.properties {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let mut url = current.url.clone();
    if let Some(new) = patch.properties {
        if new.contains_key("website") {
            url = website_of(&new)?;
        }
        properties.extend(new);
        check_properties(&properties)?;
    }
    if let Some(explicit) = patch.url {
        url = clean_optional(explicit.as_deref());
        match &url {
            Some(u) => properties.insert("website".into(), Value::String(u.clone())),
            None => properties.remove("website"),
        };
    }
    let url = url
        .map(|u| WebsiteUrl::parse(&u).map(|u| u.as_str().to_owned()))
        .transpose()?;
    if let (Some(u), None) = (&url, website_of(&properties)?) {
        properties.insert("website".into(), Value::String(u.clone()));
    }

    let company_name = match patch.company_name {
        Some(n) => CompanyName::parse(&n)?.as_str().to_owned(),
        None => current.company_name.clone(),
    };
    let billing_email = match patch.billing_email {
        None => current.billing_email.clone(),
        Some(e) => clean_optional(e.as_deref())
            .map(|e| EmailAddress::parse_field(&e, "billing_email").map(|e| e.as_str().to_owned()))
            .transpose()?,
    };
    let text = |cur: &Option<String>, p: Option<Option<String>>, field, max| match p {
        None => Ok(cur.clone()),
        Some(v) => bounded(v, field, max),
    };
    let notes = text(&current.notes, patch.notes, "notes", MAX_NOTES)?;
    let region_code = text(&current.region_code, patch.region_code, "region_code", 255)?;
    let tax_id_number = text(
        &current.tax_id_number,
        patch.tax_id_number,
        "tax_id_number",
        255,
    )?;
    let timezone = text(&current.timezone, patch.timezone, "timezone", 255)?;
    let credit_limit = non_negative(patched(&current.credit_limit, patch.credit_limit))?;
    let is_inactive = patch.is_inactive.unwrap_or(current.is_inactive);

    let updated = sqlx::query_as::<_, Company>(concat!(
        "UPDATE companies SET company_name = $3, client_type = $4, url = $5, properties = $6, \
         notes = $7, billing_email = $8, billing_cycle = $9, billing_contact_id = $10, \
         account_manager_id = $11, region_code = $12, is_inactive = $13, is_tax_exempt = $14, \
         tax_id_number = $15, timezone = $16, credit_limit = $17, updated_at = now() \
         WHERE tenant = $1 AND company_id = $2 RETURNING ",
        columns!()
    ))
    .bind(tenant)
    .bind(id)
    .bind(company_name)
    .bind(patch.client_type.or(current.client_type))
    .bind(url)
    .bind(
        (!properties.is_empty() || current.properties.is_some())
            .then_some(Value::Object(properties)),
    )
    .bind(notes)
    .bind(billing_email)
    .bind(patch.billing_cycle.unwrap_or(current.billing_cycle))
    .bind(patched(
        &current.billing_contact_id,
        patch.billing_contact_id,
    ))
    .bind(patched(
        &current.account_manager_id,
        patch.account_manager_id,
    ))
    .bind(region_code)
    .bind(is_inactive)
    .bind(patch.is_tax_exempt.unwrap_or(current.is_tax_exempt))
    .bind(tax_id_number)
    .bind(timezone)
    .bind(credit_limit)
    .fetch_one(&mut *conn)
    .await?;

    if is_inactive && !current.is_inactive {
        sqlx::query(
            "UPDATE contacts SET is_inactive = true, updated_at = now() \
             WHERE tenant = $1 AND company_id = $2 AND NOT is_inactive",
        )
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(updated)
}

/// Deletes a company and its tag mappings. Refused with `conflict` while contacts belong to it.
#[tracing::instrument(skip_all, fields(%tenant, %id))]
pub async fn delete(conn: &mut PgConnection, tenant: TenantId, id: CompanyId) -> Result<()> {
    let exists: Option<(i64,)> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM contacts ct WHERE ct.tenant = c.tenant AND ct.company_id = c.company_id) \
         FROM companies c WHERE c.tenant = $1 AND c.company_id = $2 FOR UPDATE OF c",
    )
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?;
    match exists {
        None => return Err(Error::NotFound { entity: "company" }),
        Some((n,)) if n > 0 => return Err(still_has_contacts()),
        Some(_) => {}
    }
    crate::tags::detach_all(conn, tenant, crate::tags::TaggedType::Company, id.0).await?;
    sqlx::query("DELETE FROM companies WHERE tenant = $1 AND company_id = $2")
        .bind(tenant)
        .bind(id)
        .execute(&mut *conn)
        .await
        .map_err(|e| match Error::from(e) {
            // A contact added concurrently since the check above.
            Error::ForeignKey { .. } => still_has_contacts(),
            other => other,
        })?;
    Ok(())
}

/// Customer companies of the management tenant `mgmt` whose tenant no longer exists, as
/// (company id, the tenant id they name), by name. A customer whose tenant was deleted through
/// its lifecycle (`properties.tenant_status = "deleted"`) is history, not an orphan.
pub async fn orphaned_customers(
    conn: &mut PgConnection,
    mgmt: TenantId,
) -> Result<Vec<(CompanyId, String)>> {
    Ok(sqlx::query_as(
        "SELECT c.company_id, c.properties ->> 'tenant_id' FROM companies c \
         WHERE c.tenant = $1 AND c.properties ? 'tenant_id' \
           AND c.properties ->> 'tenant_status' IS DISTINCT FROM 'deleted' \
           AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.tenant::text = c.properties ->> 'tenant_id') \
         ORDER BY c.company_name",
    )
    .bind(mgmt)
    .fetch_all(conn)
    .await?)
}

fn still_has_contacts() -> Error {
    Error::conflict(
        None,
        "The company still has contacts: delete them or move them to another company first",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str) -> NewCompany {
        NewCompany {
            company_name: name.into(),
            ..Default::default()
        }
    }

    #[test]
    fn name_rules() {
        assert_eq!(
            new("  Acme  ").validate().unwrap().company_name.as_str(),
            "Acme"
        );
        for bad in ["", "   ", "a\u{0}b", "line\nbreak"] {
            let e = new(bad).validate().err().unwrap();
            assert_eq!(e.code(), "validation_error", "{bad:?}");
            assert_eq!(e.field(), Some("company_name"));
        }
        assert_eq!(
            new("").validate().err().unwrap().to_string(),
            "Company name is required"
        );
        assert!(new(&"x".repeat(255)).validate().is_ok());
        assert_eq!(
            new(&"x".repeat(256)).validate().err().unwrap().to_string(),
            "Company name must be at most 255 characters"
        );
    }

    #[test]
    fn website_fills_url_and_url_fills_website() {
        let mut c = new("A");
        c.properties = Some(
            serde_json::json!({"website": "https://a.example"})
                .as_object()
                .unwrap()
                .clone(),
        );
        let f = c.validate().unwrap();
        assert_eq!(f.url.unwrap().as_str(), "https://a.example");

        let mut c = new("A");
        c.url = Some(" https://b.example ".into());
        let f = c.validate().unwrap();
        assert_eq!(f.properties.unwrap()["website"], "https://b.example");

        let mut c = new("A");
        c.url = Some("".into());
        let f = c.validate().unwrap();
        assert!(f.url.is_none() && f.properties.is_none());
    }

    #[test]
    fn field_rules() {
        let mut c = new("A");
        c.url = Some("not a url".into());
        assert_eq!(c.validate().err().unwrap().field(), Some("url"));

        let mut c = new("A");
        c.properties = Some(
            serde_json::json!({"website": 5})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(
            c.validate().err().unwrap().field(),
            Some("properties.website")
        );

        let mut c = new("A");
        c.billing_email = Some("nope".into());
        assert_eq!(c.validate().err().unwrap().field(), Some("billing_email"));

        let mut c = new("A");
        c.credit_limit = Some(-1);
        assert_eq!(c.validate().err().unwrap().field(), Some("credit_limit"));

        let mut c = new("A");
        c.properties = Some(
            serde_json::json!({"blob": "x".repeat(70_000)})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(c.validate().err().unwrap().field(), Some("properties"));

        let mut c = new("A");
        c.timezone = Some("Europe/\u{7}Paris".into());
        assert_eq!(c.validate().err().unwrap().field(), Some("timezone"));
    }
}
