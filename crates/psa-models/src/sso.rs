//! Single sign-on as stored: a tenant's connection to its OpenID Connect provider, the email
//! domains it verified, and which provider subject is which user. The protocol itself is
//! `psa_app::sso`; the sign-in's state while the person is at the provider lives in
//! `login_challenges` (see [`crate::sign_in`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Error, Result, TenantId, UserId};

/// A tenant's connection, as stored (the client secret sealed).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Connection {
    pub tenant: TenantId,
    pub connection_id: Uuid,
    pub issuer: String,
    pub client_id: String,
    pub client_secret_sealed: Option<String>,
    pub scopes: Vec<String>,
    pub email_claim: String,
    pub first_name_claim: String,
    pub last_name_claim: String,
    pub jit: bool,
    pub jit_role: String,
    pub required: bool,
    pub break_glass: Vec<Uuid>,
    pub enabled: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a connection is set to (the secret apart: see [`SecretChange`]).
#[derive(Debug, Clone)]
pub struct Settings {
    pub issuer: String,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub email_claim: String,
    pub first_name_claim: String,
    pub last_name_claim: String,
    pub jit: bool,
    pub jit_role: String,
    pub required: bool,
    pub break_glass: Vec<Uuid>,
    pub enabled: bool,
}

/// What becomes of the stored client secret.
#[derive(Debug, Clone)]
pub enum SecretChange {
    /// Kept as it is.
    Keep,
    /// Replaced by this sealed one.
    Set(String),
    /// Removed: a public client (PKCE only).
    Clear,
}

pub async fn get(conn: &mut PgConnection, tenant: TenantId) -> Result<Option<Connection>> {
    Ok(
        sqlx::query_as("SELECT * FROM sso_connections WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(conn)
            .await?,
    )
}

/// Creates or replaces the tenant's connection; returns it and what it was before.
pub async fn put(
    conn: &mut PgConnection,
    tenant: TenantId,
    s: &Settings,
    secret: &SecretChange,
) -> Result<(Connection, Option<Connection>)> {
    let before = sqlx::query_as::<_, Connection>(
        "SELECT * FROM sso_connections WHERE tenant = $1 FOR UPDATE",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    let moved = before
        .as_ref()
        .is_some_and(|b| b.issuer != s.issuer || b.client_id != s.client_id);
    if moved
        && matches!(secret, SecretChange::Keep)
        && before
            .as_ref()
            .is_some_and(|b| b.client_secret_sealed.is_some())
    {
        return Err(Error::validation(
            "client_secret",
            "Another issuer or client id needs its client secret again (or none, for a public \
             client): the secret kept is not sent to another provider",
        ));
    }
    if before.as_ref().is_some_and(|b| b.issuer != s.issuer) {
        // Subjects are the old provider's: at another, the same subject may be someone else.
        sqlx::query("DELETE FROM sso_identities WHERE tenant = $1")
            .bind(tenant)
            .execute(&mut *conn)
            .await?;
    }
    let sealed = match secret {
        SecretChange::Keep => before.as_ref().and_then(|b| b.client_secret_sealed.clone()),
        SecretChange::Set(s) => Some(s.clone()),
        SecretChange::Clear => None,
    };
    let after = sqlx::query_as(
        "INSERT INTO sso_connections (tenant, issuer, client_id, client_secret_sealed, scopes, \
           email_claim, first_name_claim, last_name_claim, jit, jit_role, required, break_glass, \
           enabled) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (tenant) DO UPDATE SET issuer = EXCLUDED.issuer, \
           client_id = EXCLUDED.client_id, client_secret_sealed = EXCLUDED.client_secret_sealed, \
           scopes = EXCLUDED.scopes, email_claim = EXCLUDED.email_claim, \
           first_name_claim = EXCLUDED.first_name_claim, \
           last_name_claim = EXCLUDED.last_name_claim, jit = EXCLUDED.jit, \
           jit_role = EXCLUDED.jit_role, required = EXCLUDED.required, \
           break_glass = EXCLUDED.break_glass, enabled = EXCLUDED.enabled, updated_at = now() \
         RETURNING *",
    )
    .bind(tenant)
    .bind(&s.issuer)
    .bind(&s.client_id)
    .bind(sealed)
    .bind(&s.scopes)
    .bind(&s.email_claim)
    .bind(&s.first_name_claim)
    .bind(&s.last_name_claim)
    .bind(s.jit)
    .bind(&s.jit_role)
    .bind(s.required)
    .bind(&s.break_glass)
    .bind(s.enabled)
    .fetch_one(conn)
    .await?;
    Ok((after, before))
}

/// Removes the tenant's connection (and the identities it matched); whether there was one.
pub async fn delete(conn: &mut PgConnection, tenant: TenantId) -> Result<bool> {
    Ok(sqlx::query("DELETE FROM sso_connections WHERE tenant = $1")
        .bind(tenant)
        .execute(conn)
        .await?
        .rows_affected()
        > 0)
}

/// The tenant an email's domain signs in through, with its slug: a verified domain of a tenant
/// whose connection is enabled.
pub async fn for_domain(
    conn: &mut PgConnection,
    domain: &str,
) -> Result<Option<(TenantId, String)>> {
    Ok(
        sqlx::query_as("SELECT tenant, slug FROM psa_sso_for_domain($1)")
            .bind(domain)
            .fetch_optional(conn)
            .await?,
    )
}

/// Whether `user` must sign in through the tenant's provider (it is required and enabled, and
/// they are not a break-glass user).
pub async fn refuses(conn: &mut PgConnection, tenant: TenantId, user: Uuid) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT psa_sso_refuses($1, $2)")
        .bind(tenant)
        .bind(user)
        .fetch_one(conn)
        .await?)
}

/// An email domain a tenant claims.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Domain {
    pub domain: String,
    /// The TXT record's value to publish at the domain: `psa-verification=<token>`.
    pub txt_record: String,
    pub verified_at: Option<DateTime<Utc>>,
    /// The last lookup.
    pub checked_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const DOMAIN_COLUMNS: &str =
    "domain, 'psa-verification=' || token AS txt_record, verified_at, checked_at, created_at";

pub async fn domains(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<Domain>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM sso_domains WHERE tenant = $1 ORDER BY domain"
    ))
    .bind(tenant)
    .fetch_all(conn)
    .await?)
}

pub async fn domain(
    conn: &mut PgConnection,
    tenant: TenantId,
    domain: &str,
) -> Result<Option<Domain>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {DOMAIN_COLUMNS} FROM sso_domains WHERE tenant = $1 AND domain = $2"
    ))
    .bind(tenant)
    .bind(domain)
    .fetch_optional(conn)
    .await?)
}

/// Claims `domain` for the tenant with a new verification token (again: the same token).
pub async fn add_domain(
    conn: &mut PgConnection,
    tenant: TenantId,
    domain: &str,
    token: &str,
) -> Result<Domain> {
    sqlx::query(
        "INSERT INTO sso_domains (tenant, domain, token) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant, domain) DO NOTHING",
    )
    .bind(tenant)
    .bind(domain)
    .bind(token)
    .execute(&mut *conn)
    .await?;
    self::domain(conn, tenant, domain)
        .await?
        .ok_or(Error::NotFound { entity: "domain" })
}

/// Records a lookup of the domain's TXT records: verified when `found` (a verified domain stays
/// so). A domain another tenant verified meanwhile is refused by the unique index.
pub async fn checked(
    conn: &mut PgConnection,
    tenant: TenantId,
    domain: &str,
    found: bool,
) -> Result<Domain> {
    sqlx::query(
        "UPDATE sso_domains SET checked_at = now(), \
           verified_at = CASE WHEN $3 THEN coalesce(verified_at, now()) ELSE verified_at END \
         WHERE tenant = $1 AND domain = $2",
    )
    .bind(tenant)
    .bind(domain)
    .bind(found)
    .execute(&mut *conn)
    .await
    .map_err(|e| {
        let taken = e
            .as_database_error()
            .and_then(|d| d.constraint())
            .is_some_and(|c| c == "sso_domains_verified");
        if taken {
            Error::validation("domain", "Another organisation has verified this domain")
        } else {
            Error::from(e)
        }
    })?;
    self::domain(conn, tenant, domain)
        .await?
        .ok_or(Error::NotFound { entity: "domain" })
}

pub async fn remove_domain(
    conn: &mut PgConnection,
    tenant: TenantId,
    domain: &str,
) -> Result<bool> {
    Ok(
        sqlx::query("DELETE FROM sso_domains WHERE tenant = $1 AND domain = $2")
            .bind(tenant)
            .bind(domain)
            .execute(conn)
            .await?
            .rows_affected()
            > 0,
    )
}

/// Whether another tenant verified `domain`.
pub async fn domain_taken(conn: &mut PgConnection, domain: &str, tenant: TenantId) -> Result<bool> {
    Ok(sqlx::query_scalar("SELECT psa_sso_domain_taken($1, $2)")
        .bind(domain)
        .bind(tenant)
        .fetch_one(conn)
        .await?)
}

/// The user a provider's subject is, through this connection.
pub async fn identity(
    conn: &mut PgConnection,
    tenant: TenantId,
    connection: Uuid,
    subject: &str,
) -> Result<Option<UserId>> {
    Ok(sqlx::query_scalar(
        "SELECT user_id FROM sso_identities \
         WHERE tenant = $1 AND connection_id = $2 AND subject = $3",
    )
    .bind(tenant)
    .bind(connection)
    .bind(subject)
    .fetch_optional(conn)
    .await?)
}

/// Links a subject to a user (the first sign-in), or records another sign-in.
pub async fn signed_in(
    conn: &mut PgConnection,
    tenant: TenantId,
    connection: Uuid,
    subject: &str,
    user: UserId,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sso_identities (tenant, connection_id, subject, user_id, last_login_at) \
         VALUES ($1, $2, $3, $4, now()) \
         ON CONFLICT (tenant, connection_id, subject) DO UPDATE SET last_login_at = now()",
    )
    .bind(tenant)
    .bind(connection)
    .bind(subject)
    .bind(user)
    .execute(conn)
    .await
    .map_err(|e| {
        let other = e
            .as_database_error()
            .and_then(|d| d.constraint())
            .is_some_and(|c| c == "sso_identities_user_key");
        if other {
            Error::conflict(
                None,
                "This user is already linked to another account at the provider",
            )
        } else {
            Error::from(e)
        }
    })?;
    Ok(())
}

/// A domain's verification token: random, URL- and DNS-safe.
pub fn new_verification_token() -> String {
    use secrecy::ExposeSecret;
    crate::credentials::new_token("").expose_secret().to_owned()
}

/// An email domain as typed: lower-cased, trimmed, a dot-separated host name.
pub fn domain_name(raw: &str) -> Result<String> {
    let d = raw.trim().trim_end_matches('.').to_ascii_lowercase();
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if d.len() > 253 || !d.contains('.') || !d.split('.').all(label_ok) {
        return Err(Error::validation(
            "domain",
            "A domain is a host name such as example.com (no @, no scheme, no path)",
        ));
    }
    if CONSUMER_DOMAINS.contains(&d.as_str()) {
        return Err(Error::validation(
            "domain",
            format!(
                "{d} is a public mail service: its addresses belong to anyone, not to one organisation"
            ),
        ));
    }
    Ok(d)
}

/// Public mail services: no organisation may claim their addresses.
pub const CONSUMER_DOMAINS: &[&str] = &[
    "aol.com",
    "gmail.com",
    "googlemail.com",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "hey.com",
    "hotmail.co.uk",
    "hotmail.com",
    "hotmail.de",
    "hotmail.fr",
    "icloud.com",
    "live.com",
    "mac.com",
    "mail.com",
    "mail.ru",
    "me.com",
    "msn.com",
    "outlook.com",
    "outlook.de",
    "proton.me",
    "protonmail.com",
    "qq.com",
    "t-online.de",
    "tutanota.com",
    "web.de",
    "yahoo.co.uk",
    "yahoo.com",
    "yahoo.fr",
    "yandex.com",
    "yandex.ru",
    "zoho.com",
];
