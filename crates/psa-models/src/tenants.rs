//! Tenants: creation with their own company and its "Main Office", the tenant settings, the
//! management tenant, and complete deletion.
//!
//! Every tenant-owned table cascades from `tenants`, so [`delete`] is one statement that cannot
//! forget a table; a test discovers the tables from the catalog to keep it so.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;

use crate::companies::{self, Company, NewCompany};
use crate::validate::{CompanyName, EmailAddress, Slug};
use crate::{CompanyId, Error, LocationId, Result, TenantId};

/// A row of `tenants`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Tenant {
    pub tenant: TenantId,
    /// The tenant's name (the reference's column name).
    pub company_name: String,
    /// The short name people sign in with (`/console/sign-in?org=SLUG`): unique.
    pub slug: String,
    pub email: String,
    pub licensed_user_count: Option<i32>,
    pub is_management: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "tenant, company_name, slug, email, licensed_user_count, is_management, created_at, updated_at"
    };
}

/// Input of [`create`].
#[derive(Debug, Clone, Default, Deserialize)]
pub struct NewTenant {
    /// The tenant's name.
    pub name: String,
    /// The contact email of the tenant (its admin's).
    pub email: String,
    /// When given, the tenant's own ("MSP") company is created with this name.
    pub company_name: Option<String>,
    pub licensed_user_count: Option<i32>,
    /// The slug; when absent, one is derived from the name (with a number when taken).
    #[serde(default)]
    pub slug: Option<String>,
}

/// Options of [`create`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// The id of the tenant's own company; minted by the caller for idempotency.
    pub company_id: Option<CompanyId>,
    /// Create the platform's management tenant (whose users must have a second factor: it can
    /// suspend or delete every customer; its admins may change that).
    pub is_management: bool,
}

/// What [`create`] stored.
#[derive(Debug, Clone)]
pub struct CreatedTenant {
    pub tenant: Tenant,
    pub company: Option<Company>,
}

/// The validated input of a tenant; shared with the workflow's input checks.
pub fn validate(input: &NewTenant) -> Result<(CompanyName, EmailAddress, Option<CompanyName>)> {
    let name = CompanyName::parse(&input.name)
        .map_err(|e| rename_field(e, "tenant_name", "Tenant name"))?;
    let email = EmailAddress::parse(&input.email)?;
    validate_rest(input, name, email)
}

fn validate_rest(
    input: &NewTenant,
    name: CompanyName,
    email: EmailAddress,
) -> Result<(CompanyName, EmailAddress, Option<CompanyName>)> {
    let company = input
        .company_name
        .as_deref()
        .filter(|c| !c.trim().is_empty())
        .map(CompanyName::parse)
        .transpose()?;
    if input.licensed_user_count.is_some_and(|n| n < 0) {
        return Err(Error::validation(
            "license_count",
            "The licence count must not be negative",
        ));
    }
    if let Some(slug) = &input.slug {
        Slug::parse(slug)?;
    }
    Ok((name, email, company))
}

fn rename_field(e: Error, field: &'static str, label: &str) -> Error {
    match e {
        Error::Validation { message, .. } => {
            Error::validation(field, message.replacen("Company name", label, 1))
        }
        other => other,
    }
}

/// Creates the tenant `tenant` and, when asked, its own company with a default "Main Office"
/// location. Idempotent: with the same ids a second call returns what the first stored.
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    input: NewTenant,
    options: CreateOptions,
) -> Result<CreatedTenant> {
    let (name, email, company_name) = validate(&input)?;
    insert(
        conn,
        tenant,
        &input,
        options,
        name,
        email.as_str(),
        company_name,
    )
    .await
}

async fn insert(
    conn: &mut PgConnection,
    tenant: TenantId,
    input: &NewTenant,
    options: CreateOptions,
    name: CompanyName,
    email: &str,
    company_name: Option<CompanyName>,
) -> Result<CreatedTenant> {
    let slug = input.slug.as_deref().map(Slug::parse).transpose()?;
    let inserted = sqlx::query_as::<_, Tenant>(concat!(
        "INSERT INTO tenants (tenant, company_name, slug, email, licensed_user_count, last_license_update, is_management, mfa_required) \
         VALUES ($1, $2, coalesce($6, psa_free_slug(psa_slug_base($2))), $3, $4, \
                 CASE WHEN $4::int IS NULL THEN NULL ELSE now() END, $5, $5) \
         ON CONFLICT (tenant) DO NOTHING RETURNING ",
        columns!()
    ))
    .bind(tenant)
    .bind(name.as_str())
    .bind(email)
    .bind(input.licensed_user_count)
    .bind(options.is_management)
    .bind(slug.as_ref().map(Slug::as_str))
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| slug_error(e, slug.as_ref()))?;
    let row = match inserted {
        Some(t) => t,
        None => get(conn, tenant).await?,
    };
    let company = match company_name {
        None => None,
        Some(company_name) => {
            let company = companies::create(
                conn,
                tenant,
                NewCompany {
                    company_name: company_name.as_str().to_owned(),
                    properties: json!({"type": "msp", "is_system_company": true, "created_by": "tenant_setup"})
                        .as_object()
                        .cloned(),
                    ..Default::default()
                },
                companies::CreateOptions {
                    company_id: Some(options.company_id.unwrap_or_default()),
                    // The seeds (and so the tax rates) come after the tenant.
                    skip_tax_settings: true,
                    skip_email_suffix: true,
                },
            )
            .await?;
            sqlx::query(
                "INSERT INTO company_locations (tenant, location_id, company_id, location_name, email, phone, \
                 address_line1, city, country_code, country_name, is_default, is_active) \
                 SELECT $1, $2, $3, 'Main Office', $4, '', 'N/A', 'N/A', 'XX', 'Unknown', true, true \
                 WHERE NOT EXISTS (SELECT 1 FROM company_locations \
                                   WHERE tenant = $1 AND company_id = $3 AND is_default)",
            )
            .bind(tenant)
            .bind(LocationId::new())
            .bind(company.company_id)
            .bind(email)
            .execute(&mut *conn)
            .await?;
            Some(company)
        }
    };
    Ok(CreatedTenant {
        tenant: row,
        company,
    })
}

/// A slug another tenant has: said as such, on the `slug` field.
fn slug_error(e: sqlx::Error, slug: Option<&Slug>) -> Error {
    let taken = e
        .as_database_error()
        .and_then(|d| d.constraint())
        .is_some_and(|c| c == "tenants_slug_key");
    match (taken, slug) {
        (true, Some(slug)) => Error::validation(
            "slug",
            format!("The slug {slug} is taken by another tenant"),
        ),
        _ => Error::from(e),
    }
}

/// Whether a slug is taken by any tenant (the API's confined role sees only its own).
pub async fn slug_taken(conn: &mut PgConnection, slug: &Slug) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT psa_slug_taken($1)")
        .bind(slug.as_str())
        .fetch_one(conn)
        .await?)
}

/// Refuses a slug that is taken (422 on `slug`), before anything is written.
pub async fn ensure_slug_free(conn: &mut PgConnection, slug: &Slug) -> Result<()> {
    if slug_taken(conn, slug).await? {
        return Err(Error::validation(
            "slug",
            format!("The slug {slug} is taken by another tenant"),
        ));
    }
    Ok(())
}

/// Gives `tenant` a new slug (in `tenant`'s own context, or as the owner); returns the old one.
pub async fn set_slug(conn: &mut PgConnection, tenant: TenantId, slug: &Slug) -> Result<String> {
    let before: String = sqlx::query_scalar("SELECT slug FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound { entity: "tenant" })?;
    sqlx::query("UPDATE tenants SET slug = $2 WHERE tenant = $1")
        .bind(tenant)
        .bind(slug.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| slug_error(e, Some(slug)))?;
    Ok(before)
}

/// The slugs of `tenants` (whatever context the connection is in).
pub async fn slugs(
    conn: &mut PgConnection,
    tenants: &[TenantId],
) -> Result<std::collections::HashMap<TenantId, String>> {
    let ids: Vec<uuid::Uuid> = tenants.iter().map(|t| t.0).collect();
    let rows: Vec<(TenantId, String)> =
        sqlx::query_as("SELECT tenant, slug FROM psa_tenant_slugs($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().collect())
}

/// The tenant's settings rows: email settings (Resend, fallback on, tracking off), the onboarding
/// settings, and the default-company link. Idempotent.
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn setup_tenant_data(
    conn: &mut PgConnection,
    tenant: TenantId,
    company: Option<CompanyId>,
) -> Result<Vec<&'static str>> {
    let mut steps = Vec::new();
    sqlx::query(
        "INSERT INTO tenant_email_settings (tenant, email_provider, fallback_enabled, tracking_enabled) \
         VALUES ($1, 'resend', true, false) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    steps.push("tenant_email_settings");
    sqlx::query(
        "INSERT INTO tenant_settings (tenant, onboarding_completed, onboarding_skipped) \
         VALUES ($1, false, false) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    steps.push("tenant_settings");
    if let Some(company) = company {
        sqlx::query(
            "INSERT INTO tenant_companies (tenant, company_id, is_default) VALUES ($1, $2, true) \
             ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(company)
        .execute(&mut *conn)
        .await?;
        steps.push("tenant_companies");
    }
    Ok(steps)
}

/// The tenant `id`.
pub async fn get(conn: &mut PgConnection, id: TenantId) -> Result<Tenant> {
    find(conn, id)
        .await?
        .ok_or(Error::NotFound { entity: "tenant" })
}

/// The tenant `id`, if it exists.
pub async fn find(conn: &mut PgConnection, id: TenantId) -> Result<Option<Tenant>> {
    Ok(sqlx::query_as::<_, Tenant>(concat!(
        "SELECT ",
        columns!(),
        " FROM tenants WHERE tenant = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Every tenant, oldest first. Needs the owner role (no tenant context).
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Tenant>> {
    Ok(sqlx::query_as::<_, Tenant>(concat!(
        "SELECT ",
        columns!(),
        " FROM tenants ORDER BY created_at, tenant"
    ))
    .fetch_all(conn)
    .await?)
}

/// Up to `limit` tenants after `after` in id order: a walk over every tenant a page at a time,
/// in memory that does not grow with the platform (reconcile).
pub async fn list_page(
    conn: &mut PgConnection,
    after: Option<TenantId>,
    limit: i64,
) -> Result<Vec<Tenant>> {
    Ok(sqlx::query_as::<_, Tenant>(concat!(
        "SELECT ",
        columns!(),
        " FROM tenants WHERE ($1::uuid IS NULL OR tenant > $1) ORDER BY tenant LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The management tenant, if it has been created.
pub async fn find_management(conn: &mut PgConnection) -> Result<Option<Tenant>> {
    Ok(sqlx::query_as::<_, Tenant>(concat!(
        "SELECT ",
        columns!(),
        " FROM tenants WHERE is_management ORDER BY created_at LIMIT 1"
    ))
    .fetch_optional(conn)
    .await?)
}

/// Deletes the tenant and everything it owns (by cascade). Idempotent: `false` when there was no
/// such tenant.
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn delete(conn: &mut PgConnection, tenant: TenantId) -> Result<bool> {
    let n = sqlx::query("DELETE FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

/// The administrator to create with the management tenant.
#[derive(Debug, Clone)]
pub struct AdminInput {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// What [`init_management`] found or did.
#[derive(Debug, Clone)]
pub struct ManagementInit {
    pub tenant: Tenant,
    pub created: bool,
    /// The administrator named by the command: created now (`true`), or found (`false`).
    pub admin: Option<(crate::users::User, bool)>,
}

/// Creates the administrator `a` of the management tenant unless a user with that email exists.
async fn ensure_management_admin(
    conn: &mut PgConnection,
    tenant: TenantId,
    a: &AdminInput,
) -> Result<(crate::users::User, bool)> {
    let (_, _, email) = crate::users::validate_person(&a.first_name, &a.last_name, &a.email)?;
    if let Some(existing) = crate::users::find_by_email(conn, tenant, &email).await? {
        return Ok((existing, false));
    }
    let created = crate::users::create_admin(
        conn,
        tenant,
        &a.first_name,
        &a.last_name,
        &a.email,
        Default::default(),
    )
    .await?;
    Ok((created.user, true))
}

/// Creates the management tenant, seeded like any tenant and with an optional administrator,
/// unless one exists already. For an existing management tenant only the administrator is
/// added, if no user has that email yet.
pub async fn init_management(
    conn: &mut PgConnection,
    name: &str,
    admin: Option<AdminInput>,
) -> Result<ManagementInit> {
    // Serialises concurrent inits; the partial unique index is the last line of defence.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('psa.management_init'))")
        .execute(&mut *conn)
        .await?;
    if let Some(tenant) = find_management(conn).await? {
        let admin = match &admin {
            Some(a) => Some(ensure_management_admin(conn, tenant.tenant, a).await?),
            None => None,
        };
        return Ok(ManagementInit {
            tenant,
            created: false,
            admin,
        });
    }
    let name = CompanyName::parse(name).map_err(|e| rename_field(e, "name", "Name"))?;
    let email = match &admin {
        Some(a) => Some(crate::users::validate_person(&a.first_name, &a.last_name, &a.email)?.2),
        None => None,
    };
    let id = TenantId::new();
    let input = NewTenant {
        name: name.as_str().to_owned(),
        ..Default::default()
    };
    let created = insert(
        conn,
        id,
        &input,
        CreateOptions {
            is_management: true,
            ..Default::default()
        },
        name,
        // Without an administrator the management tenant has no contact email yet.
        email.as_ref().map_or("", EmailAddress::as_str),
        None,
    )
    .await?;
    crate::seeds::run(conn, id).await?;
    setup_tenant_data(conn, id, None).await?;
    let admin = match &admin {
        Some(a) => Some(ensure_management_admin(conn, id, a).await?),
        None => None,
    };
    Ok(ManagementInit {
        tenant: created.tenant,
        created: true,
        admin,
    })
}

/// A tenant's status.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TenantStatus {
    Active,
    Suspended,
    Canceled,
}

impl TenantStatus {
    pub const ALL: [TenantStatus; 3] = [Self::Active, Self::Suspended, Self::Canceled];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Canceled => "canceled",
        }
    }

    pub fn parse(raw: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw)
            .ok_or_else(|| {
                Error::validation(
                    "status",
                    "status must be one of active, suspended, canceled",
                )
            })
    }
}

impl std::fmt::Display for TenantStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The tenant a sign-in link names, by slug or id (any tenant: the caller is not signed in
/// yet): its id and slug.
pub async fn by_slug_or_id(
    conn: &mut PgConnection,
    name: &str,
) -> Result<Option<(TenantId, String)>> {
    Ok(
        sqlx::query_as("SELECT tenant, slug FROM psa_tenant_named($1)")
            .bind(name)
            .fetch_optional(conn)
            .await?,
    )
}
