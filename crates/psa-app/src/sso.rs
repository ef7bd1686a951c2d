//! Single sign-on per tenant, with OpenID Connect: what a tenant's administrator configures
//! (the provider and this installation's client there, the claims, who gets in and how), the
//! email domains the tenant verifies by DNS, and the sign-in itself: the authorization code
//! flow with PKCE, `state` and `nonce` kept server-side for one use, the ID token checked by the
//! `openidconnect` crate against the provider's keys fetched at each sign-in (a key the provider
//! rotated in is simply found), and the person matched by the provider's subject, the first time
//! by verified email, or created when the tenant allows it.
//!
//! The provider is reached over https, but for a provider on this machine's loopback
//! (development and tests); never through a redirect, and only at addresses the outbound policy
//! allows (`PSA_WEBHOOK_ALLOW_PRIVATE`, as webhooks).

use std::time::Duration;

use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdTokenVerifier, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use psa_models::audit::{self, Action};
use psa_models::sign_in::{self, Ceremony};
use psa_models::sso::{self, Connection, SecretChange, Settings};
use psa_models::{Error, Result, TenantId, UserId, db, users};
use psa_workflows::secret::{Sealed, SecretKey};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::{Postgres, Transaction};

use crate::access::{Access, Permission, Resource};
use crate::{App, Principal};

const MANAGE: Permission = Permission(Resource::Sso, Access::Manage);

/// What an administrator sets (the API's and the console's form, the CLI's flags).
#[derive(Debug, Clone, Default)]
pub struct Input {
    pub issuer: String,
    pub client_id: String,
    /// `None`: keep the stored one; `Some("")`: none (a public client, PKCE only).
    pub client_secret: Option<SecretString>,
    pub scopes: Option<Vec<String>>,
    pub email_claim: Option<String>,
    pub first_name_claim: Option<String>,
    pub last_name_claim: Option<String>,
    pub jit: bool,
    pub jit_role: Option<String>,
    pub required: bool,
    /// Emails of the tenant's users who may still sign in with a password when `required`.
    pub break_glass: Vec<String>,
    pub enabled: bool,
}

/// A connection as its administrators see it: never the secret, only whether there is one.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionView {
    pub issuer: String,
    pub client_id: String,
    pub has_client_secret: bool,
    pub scopes: Vec<String>,
    pub email_claim: String,
    pub first_name_claim: String,
    pub last_name_claim: String,
    pub jit: bool,
    pub jit_role: String,
    pub required: bool,
    /// Emails of the users who may still use a password when `required`.
    pub break_glass: Vec<String>,
    pub enabled: bool,
    /// What to register at the provider as the redirect (callback) URI.
    pub redirect_uri: String,
}

fn key(app: &App) -> Result<&SecretKey> {
    app.webhooks.key.as_ref().ok_or_else(|| {
        Error::unavailable(
            "This server has no PSA_SECRET_KEY: a provider's client secret cannot be kept",
        )
    })
}

/// Where the provider sends the person back: the console's callback at `PSA_PUBLIC_URL`.
pub fn redirect_uri(app: &App) -> String {
    let mut url = app.delivery.public_url.clone();
    url.set_path("/console/sso/callback");
    url.to_string()
}

async fn view(conn: &mut sqlx::PgConnection, app: &App, c: &Connection) -> Result<ConnectionView> {
    let mut emails = Vec::new();
    for id in &c.break_glass {
        if let Ok(u) = users::get(conn, c.tenant, UserId(*id)).await {
            emails.push(u.email);
        }
    }
    Ok(ConnectionView {
        issuer: c.issuer.clone(),
        client_id: c.client_id.clone(),
        has_client_secret: c.client_secret_sealed.is_some(),
        scopes: c.scopes.clone(),
        email_claim: c.email_claim.clone(),
        first_name_claim: c.first_name_claim.clone(),
        last_name_claim: c.last_name_claim.clone(),
        jit: c.jit,
        jit_role: c.jit_role.clone(),
        required: c.required,
        break_glass: emails,
        enabled: c.enabled,
        redirect_uri: redirect_uri(app),
    })
}

/// The tenant's connection, if it has one (`sso:manage`).
pub async fn show(app: &App, who: &Principal, tenant: TenantId) -> Result<Option<ConnectionView>> {
    who.refuse_in_support("single sign-on")?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let out = match sso::get(&mut tx, tenant).await? {
        Some(c) => Some(view(&mut tx, app, &c).await?),
        None => None,
    };
    tx.rollback().await?;
    Ok(out)
}

/// A claim's name: letters, digits, `_`, `.`, `:` or `-`, at most 64.
fn claim(field: &'static str, raw: Option<&str>, default: &str) -> Result<String> {
    let c = raw
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .unwrap_or(default);
    if c.len() > 64
        || !c
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
    {
        return Err(Error::validation(
            field,
            "A claim's name is at most 64 letters, digits, _ . : or -",
        ));
    }
    Ok(c.to_owned())
}

/// Whether `url` is https, or http to this machine (development, tests).
fn secure_or_local(url: &url::Url) -> bool {
    url.scheme() == "https"
        || (url.scheme() == "http"
            && match url.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            })
}

/// The issuer as given: an absolute https URL (http only to loopback), no query or fragment,
/// at most 500 characters.
fn issuer(raw: &str) -> Result<url::Url> {
    let bad = |m: &str| Error::validation("issuer", m.to_owned());
    let raw = raw.trim();
    if raw.is_empty() || raw.len() > 500 {
        return Err(bad(
            "The issuer is the provider's URL, e.g. https://login.example.com",
        ));
    }
    let url = url::Url::parse(raw)
        .map_err(|_| bad("The issuer must be an absolute URL, e.g. https://login.example.com"))?;
    if url.query().is_some() || url.fragment().is_some() || url.host().is_none() {
        return Err(bad("The issuer must be a URL without a query or fragment"));
    }
    if !secure_or_local(&url) {
        return Err(bad(
            "The issuer must use https (http only to a provider on this machine)",
        ));
    }
    Ok(url)
}

/// What the provider says of itself, checked: its endpoints over https (or loopback).
pub struct Discovered {
    pub metadata: CoreProviderMetadata,
}

/// The most a provider's answer may be (a discovery document, its keys, a token response are
/// a few kilobytes; anything larger is not read).
const MAX_ANSWER: usize = 512 * 1024;

/// The most email domains one tenant claims.
const MAX_DOMAINS: usize = 20;

/// A request to a provider that was refused or failed: said in words, never with a secret (the
/// token request's body is not part of it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProviderHttpError(String);

type ProviderAnswer = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = std::result::Result<openidconnect::HttpResponse, ProviderHttpError>,
            > + Send,
    >,
>;

/// Whether a request may go to `url`: https, or http to this machine where the address policy
/// allows private addresses (development, tests); an address written as an IP must be one the
/// policy allows (host names are checked by the client's resolver, after resolution).
fn may_call(
    url: &url::Url,
    policy: psa_models::webhooks::AddressPolicy,
) -> std::result::Result<(), String> {
    let literal: Option<std::net::IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => Some(ip.into()),
        Some(url::Host::Ipv6(ip)) => Some(ip.into()),
        Some(url::Host::Domain(_)) => None,
        None => return Err(format!("{url} names no host")),
    };
    if let Some(ip) = literal
        && !policy.allows(ip)
    {
        return Err(format!("{url} is inside this platform's network"));
    }
    if url.scheme() == "https" || (secure_or_local(url) && policy.allow_private) {
        Ok(())
    } else {
        Err(format!("{url} is not https"))
    }
}

/// Every request to a provider goes through here (discovery, its keys, the token endpoint,
/// whatever URLs its discovery document names): the client that refuses private addresses
/// after resolution and follows no redirect, [`may_call`] for the URL itself, and at most
/// [`MAX_ANSWER`] bytes read.
fn provider_http(
    app: &App,
) -> Result<impl Fn(openidconnect::HttpRequest) -> ProviderAnswer + use<>> {
    let client = match app.provider_client.get() {
        Some(c) => c.clone(),
        None => {
            let made = psa_workflows::webhooks::guarded_client(
                app.webhooks.policy,
                Duration::from_secs(10),
                "psa-sso",
            )
            .map_err(|e| Error::internal(std::io::Error::other(e)))?;
            app.provider_client.get_or_init(|| made).clone()
        }
    };
    let policy = app.webhooks.policy;
    Ok(
        move |request: openidconnect::HttpRequest| -> ProviderAnswer {
            let client = client.clone();
            Box::pin(async move {
                let url = url::Url::parse(&request.uri().to_string())
                    .map_err(|e| ProviderHttpError(format!("not a URL: {e}")))?;
                may_call(&url, policy).map_err(ProviderHttpError)?;
                let (parts, body) = request.into_parts();
                let mut answer = client
                    .request(parts.method, url.as_str())
                    .headers(parts.headers)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| {
                        ProviderHttpError(format!("{}: {e}", url.host_str().unwrap_or("")))
                    })?;
                let mut body = Vec::new();
                while let Some(chunk) = answer
                    .chunk()
                    .await
                    .map_err(|e| ProviderHttpError(format!("reading the answer: {e}")))?
                {
                    if body.len() + chunk.len() > MAX_ANSWER {
                        return Err(ProviderHttpError(format!(
                            "the answer of {url} is larger than {} KiB",
                            MAX_ANSWER / 1024
                        )));
                    }
                    body.extend_from_slice(&chunk);
                }
                let mut out = openidconnect::http::Response::builder().status(answer.status());
                for (name, value) in answer.headers() {
                    out = out.header(name, value);
                }
                out.body(body)
                    .map_err(|e| ProviderHttpError(format!("the answer: {e}")))
            })
        },
    )
}

/// Fetches the provider's discovery document and keys (each sign-in does: a rotated key is
/// found at once). A provider that does not answer, or answers junk, is a validation error on
/// `issuer` saying what went wrong.
pub async fn discover(app: &App, issuer_url: &str) -> Result<Discovered> {
    let url = issuer(issuer_url)?;
    may_call(&url, app.webhooks.policy).map_err(|m| {
        Error::validation(
            "issuer",
            format!("The issuer cannot be reached from here: {m}"),
        )
    })?;
    let http = provider_http(app)?;
    // As typed (trimmed): the provider's `issuer` must match it exactly, a trailing slash too.
    let issuer_url = IssuerUrl::new(issuer_url.trim().to_owned())
        .map_err(|_| Error::validation("issuer", "The issuer is not a valid URL"))?;
    let metadata = CoreProviderMetadata::discover_async(issuer_url, &http)
        .await
        .map_err(|e| {
            Error::validation(
                "issuer",
                format!(
                    "The provider at {url} did not give a usable discovery document \
                     (/.well-known/openid-configuration): {e}"
                ),
            )
        })?;
    for (what, endpoint) in [
        (
            "authorization endpoint",
            Some(metadata.authorization_endpoint().url().clone()),
        ),
        (
            "token endpoint",
            metadata.token_endpoint().map(|t| t.url().clone()),
        ),
        ("keys (jwks_uri)", Some(metadata.jwks_uri().url().clone())),
    ] {
        match endpoint {
            Some(u) => may_call(&u, app.webhooks.policy).map_err(|m| {
                Error::validation(
                    "issuer",
                    format!("The provider's {what} cannot be used: {m}"),
                )
            })?,
            None => {
                return Err(Error::validation(
                    "issuer",
                    format!("The provider names no {what}"),
                ));
            }
        }
    }
    Ok(Discovered { metadata })
}

/// What a test of the connection found.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TestReport {
    pub issuer: String,
    pub authorization_endpoint: String,
    pub token_endpoint: Option<String>,
    pub jwks_uri: String,
    pub userinfo_endpoint: Option<String>,
    /// How many signing keys the provider publishes.
    pub signing_keys: usize,
    pub scopes_supported: Vec<String>,
}

/// Runs discovery for the tenant's connection (or `issuer`, before one is saved) and reports
/// what it found (`sso:manage`; audited as a test).
pub async fn test(app: &App, who: &Principal, tenant: TenantId) -> Result<TestReport> {
    who.refuse_in_support("single sign-on")?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let c = sso::get(&mut tx, tenant).await?.ok_or(Error::NotFound {
        entity: "single sign-on connection",
    })?;
    tx.rollback().await?;
    let found = discover(app, &c.issuer).await?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let m = &found.metadata;
    let report = TestReport {
        issuer: m.issuer().to_string(),
        authorization_endpoint: m.authorization_endpoint().to_string(),
        token_endpoint: m.token_endpoint().map(|t| t.to_string()),
        jwks_uri: m.jwks_uri().to_string(),
        userinfo_endpoint: m.userinfo_endpoint().map(|u| u.to_string()),
        signing_keys: m.jwks().keys().len(),
        scopes_supported: m
            .scopes_supported()
            .map(|s| s.iter().map(|s| s.to_string()).collect())
            .unwrap_or_default(),
    };
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Test,
        "sso_connection",
        Some(c.connection_id),
        serde_json::json!({"issuer": c.issuer, "signing_keys": report.signing_keys}),
    )
    .await?;
    tx.commit().await?;
    Ok(report)
}

/// Sets the tenant's connection (`sso:manage`): checked (the issuer answers discovery, the role
/// exists, the break-glass users are the tenant's active staff, one at least when sign-in
/// through the provider is required), the client secret sealed for this tenant, audited with
/// what changed (never the secret).
pub async fn set(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    input: Input,
) -> Result<ConnectionView> {
    who.refuse_in_support("single sign-on")?;
    issuer(&input.issuer)?;
    let client_id = input.client_id.trim();
    if client_id.is_empty() || client_id.len() > 500 {
        return Err(Error::validation(
            "client_id",
            "The client id is what the provider calls this application (1-500 characters)",
        ));
    }
    let scopes = input
        .scopes
        .clone()
        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
    if !scopes.iter().any(|s| s == "openid")
        || scopes.len() > 20
        || scopes.iter().any(|s| {
            s.is_empty() || s.len() > 100 || s.chars().any(|c| c.is_whitespace() || c.is_control())
        })
    {
        return Err(Error::validation(
            "scopes",
            "The scopes include openid, each a word without spaces (at most 20)",
        ));
    }
    let email_claim = claim("email_claim", input.email_claim.as_deref(), "email")?;
    let first_name_claim = claim(
        "first_name_claim",
        input.first_name_claim.as_deref(),
        "given_name",
    )?;
    let last_name_claim = claim(
        "last_name_claim",
        input.last_name_claim.as_deref(),
        "family_name",
    )?;
    let secret = match &input.client_secret {
        None => SecretChange::Keep,
        Some(s) if s.expose_secret().trim().is_empty() => SecretChange::Clear,
        Some(s) if s.expose_secret().len() > 1000 => {
            return Err(Error::validation(
                "client_secret",
                "The client secret must be at most 1000 characters",
            ));
        }
        Some(s) => SecretChange::Set(key(app)?.seal_for(
            &SecretString::from(s.expose_secret().trim().to_owned()),
            Sealed::SsoClientSecret,
            &tenant.to_string(),
        )),
    };
    // Allowed first (no one else makes this server call out), then the provider answers before
    // anything is stored, with no transaction held open while it does.
    app.begin(who, tenant, MANAGE).await?.rollback().await?;
    discover(app, input.issuer.trim()).await?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let jit_role = input
        .jit_role
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or("Technician")
        .to_owned();
    let role_known: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM roles WHERE tenant = $1 AND role_name = $2 AND msp)",
    )
    .bind(tenant)
    .bind(&jit_role)
    .fetch_one(&mut *tx)
    .await?;
    if !role_known {
        return Err(Error::validation(
            "jit_role",
            format!("There is no role named {jit_role} in this organisation"),
        ));
    }
    // A person the provider lets in is made with this role unseen by anyone here: never one that
    // manages users or single sign-on.
    let manages: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM roles r \
           JOIN role_permissions rp ON rp.tenant = r.tenant AND rp.role_id = r.role_id \
           JOIN permissions p ON p.tenant = rp.tenant AND p.permission_id = rp.permission_id \
           WHERE r.tenant = $1 AND r.role_name = $2 AND r.msp \
             AND ((p.resource = 'user' AND p.action IN ('create', 'update', 'delete')) \
               OR (p.resource = 'sso' AND p.action = 'manage')))",
    )
    .bind(tenant)
    .bind(&jit_role)
    .fetch_one(&mut *tx)
    .await?;
    if manages {
        return Err(Error::validation(
            "jit_role",
            format!(
                "{jit_role} manages users or single sign-on: people made at their first sign-in \
                 get a role without that (give it to them by hand afterwards)"
            ),
        ));
    }
    let mut break_glass = Vec::new();
    for email in &input.break_glass {
        let email = psa_models::validate::EmailAddress::parse(email)
            .map_err(|_| Error::validation("break_glass", format!("{email} is not an email")))?;
        let id: Option<uuid::Uuid> = sqlx::query_scalar(
            "SELECT user_id FROM users WHERE tenant = $1 AND email = $2 \
             AND user_type = 'internal' AND NOT is_inactive",
        )
        .bind(tenant)
        .bind(email.as_str())
        .fetch_optional(&mut *tx)
        .await?;
        let id = id.ok_or_else(|| {
            Error::validation(
                "break_glass",
                format!("{email} is not an active user of this organisation"),
            )
        })?;
        if !break_glass.contains(&id) {
            break_glass.push(id);
        }
    }
    if input.required && break_glass.is_empty() {
        return Err(Error::validation(
            "break_glass",
            "Name at least one administrator who may still sign in with a password: if the \
             provider is down or misconfigured, they are the way back in",
        ));
    }
    let settings = Settings {
        issuer: input.issuer.trim().to_owned(),
        client_id: client_id.to_owned(),
        scopes,
        email_claim,
        first_name_claim,
        last_name_claim,
        jit: input.jit,
        jit_role,
        required: input.required,
        break_glass,
        enabled: input.enabled,
    };
    let (after, before) = sso::put(&mut tx, tenant, &settings, &secret).await?;
    // Required from now: the sessions opened another way end (but the break-glass users').
    let mut sessions_ended = 0;
    if after.required && after.enabled && !before.as_ref().is_some_and(|b| b.required && b.enabled)
    {
        sessions_ended =
            sqlx::query("DELETE FROM sessions WHERE tenant = $1 AND NOT (user_id = ANY ($2))")
                .bind(tenant)
                .bind(&after.break_glass)
                .execute(&mut *tx)
                .await?
                .rows_affected();
    }
    let shown = view(&mut tx, app, &after).await?;
    let secret_change = match secret {
        SecretChange::Keep => "kept",
        SecretChange::Set(_) => "set",
        SecretChange::Clear => "none",
    };
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        if before.is_some() {
            Action::Update
        } else {
            Action::Create
        },
        "sso_connection",
        Some(after.connection_id),
        serde_json::json!({
            "issuer": shown.issuer,
            "client_id": shown.client_id,
            "client_secret": secret_change,
            "scopes": shown.scopes,
            "jit": shown.jit,
            "jit_role": shown.jit_role,
            "required": shown.required,
            "break_glass": shown.break_glass,
            "enabled": shown.enabled,
            "sessions_ended": sessions_ended,
        }),
    )
    .await?;
    tx.commit().await?;
    Ok(shown)
}

/// Removes the tenant's connection (`sso:manage`; audited): its users sign in with passwords
/// again; the identities it matched go with it.
pub async fn remove(app: &App, who: &Principal, tenant: TenantId) -> Result<()> {
    who.refuse_in_support("single sign-on")?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let c = sso::get(&mut tx, tenant).await?.ok_or(Error::NotFound {
        entity: "single sign-on connection",
    })?;
    sso::delete(&mut tx, tenant).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Delete,
        "sso_connection",
        Some(c.connection_id),
        serde_json::json!({"issuer": c.issuer}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The tenant's domains (`sso:manage`).
pub async fn domains(app: &App, who: &Principal, tenant: TenantId) -> Result<Vec<sso::Domain>> {
    who.refuse_in_support("single sign-on")?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let list = sso::domains(&mut tx, tenant).await?;
    tx.rollback().await?;
    Ok(list)
}

/// Claims an email domain for the tenant (`sso:manage`; audited): the TXT record to publish.
/// A public mail service's domain, or one another tenant verified, is refused.
pub async fn add_domain(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    raw: &str,
) -> Result<sso::Domain> {
    who.refuse_in_support("single sign-on")?;
    let domain = sso::domain_name(raw)?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let claimed = sso::domains(&mut tx, tenant).await?;
    if claimed.len() >= MAX_DOMAINS && !claimed.iter().any(|d| d.domain == domain) {
        return Err(Error::validation(
            "domain",
            format!("An organisation claims at most {MAX_DOMAINS} domains: remove one first"),
        ));
    }
    if sso::domain_taken(&mut tx, &domain, tenant).await? {
        return Err(Error::validation(
            "domain",
            "Another organisation has verified this domain",
        ));
    }
    let token = sso::new_verification_token();
    let d = sso::add_domain(&mut tx, tenant, &domain, &token).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Create,
        "sso_domain",
        None,
        serde_json::json!({"domain": d.domain}),
    )
    .await?;
    tx.commit().await?;
    Ok(d)
}

/// Looks the domain's TXT records up (through `PSA_DNS_RESOLVER`, else the system's resolver)
/// and verifies it when one is its `psa-verification=<token>` (`sso:manage`; audited). Not
/// found is said so (422 on `domain`), with the lookup recorded.
pub async fn verify_domain(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    raw: &str,
) -> Result<sso::Domain> {
    who.refuse_in_support("single sign-on")?;
    let domain = sso::domain_name(raw)?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let d = sso::domain(&mut tx, tenant, &domain)
        .await?
        .ok_or(Error::NotFound { entity: "domain" })?;
    if d.verified_at.is_some() {
        tx.rollback().await?;
        return Ok(d);
    }
    if sso::domain_taken(&mut tx, &domain, tenant).await? {
        return Err(Error::validation(
            "domain",
            "Another organisation has verified this domain",
        ));
    }
    let records = app.dns.txt(&domain).await?;
    let found = records.iter().any(|r| r.trim() == d.txt_record);
    let d = sso::checked(&mut tx, tenant, &domain, found).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Verify,
        "sso_domain",
        None,
        serde_json::json!({"domain": d.domain, "verified": found}),
    )
    .await?;
    tx.commit().await?;
    if !found {
        return Err(Error::validation(
            "domain",
            format!(
                "No TXT record \"{}\" at {domain} yet (DNS changes can take a while to show)",
                d.txt_record
            ),
        ));
    }
    Ok(d)
}

/// Gives up a domain (`sso:manage`; audited).
pub async fn remove_domain(app: &App, who: &Principal, tenant: TenantId, raw: &str) -> Result<()> {
    who.refuse_in_support("single sign-on")?;
    let domain = sso::domain_name(raw).unwrap_or_else(|_| raw.trim().to_ascii_lowercase());
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    if !sso::remove_domain(&mut tx, tenant, &domain).await? {
        return Err(Error::NotFound { entity: "domain" });
    }
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Delete,
        "sso_domain",
        None,
        serde_json::json!({"domain": domain}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// The tenant an email signs in through, when its domain is verified by a tenant with an
/// enabled connection: its id and slug.
pub async fn for_email(app: &App, email: &str) -> Result<Option<(TenantId, String)>> {
    let Some((_, domain)) = email.trim().rsplit_once('@') else {
        return Ok(None);
    };
    let mut conn = app.pool.acquire().await?;
    sso::for_domain(&mut conn, &domain.to_ascii_lowercase()).await
}

/// Starts a sign-in through the tenant's provider (from `address`): the URL to send the person
/// to, and the value their browser keeps. The PKCE verifier, the nonce and the browser value's
/// digest wait server-side under the `state` token (five minutes, once). `login_hint` is passed
/// on (the email typed), so the provider need not ask again.
pub async fn start(
    app: &App,
    tenant: TenantId,
    login_hint: Option<&str>,
    address: &str,
) -> Result<Started> {
    let mut tx = db::begin_tenant(&app.pool, tenant).await?;
    let c = sso::get(&mut tx, tenant)
        .await?
        .filter(|c| c.enabled)
        .ok_or_else(|| {
            Error::validation(
                "tenant",
                "This organisation does not sign in through a provider",
            )
        })?;
    tx.rollback().await?;
    let found = discover(app, &c.issuer).await.map_err(|e| {
        tracing::warn!(%tenant, error = %e, "single sign-on: the provider did not answer discovery");
        Error::unavailable("The organisation's sign-in provider does not answer: try again later")
    })?;
    let client = CoreClient::from_provider_metadata(
        found.metadata,
        ClientId::new(c.client_id.clone()),
        None,
    )
    .set_redirect_uri(RedirectUrl::new(redirect_uri(app)).map_err(Error::internal)?);
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = Nonce::new_random();
    let browser = CsrfToken::new_random_len(32);
    let state = serde_json::json!({
        "tenant": tenant,
        "connection_id": c.connection_id,
        "verifier": verifier.secret(),
        "nonce": nonce.secret(),
        "browser": sign_in::digest_text(browser.secret()),
    });
    let mut conn = app.pool.acquire().await?;
    let token = sign_in::begin_ceremony(&mut conn, Ceremony::Sso, None, &state, address).await?;
    let token = token.expose_secret().to_owned();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            move || CsrfToken::new(token.clone()),
            move || nonce.clone(),
        )
        .set_pkce_challenge(challenge);
    for s in c.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(s.clone()));
    }
    if let Some(hint) = login_hint.filter(|h| !h.is_empty() && h.len() <= 320) {
        request = request.add_extra_param("login_hint", hint.to_owned());
    }
    let (url, _, _) = request.url();
    Ok(Started {
        url,
        browser: SecretString::from(browser.secret().clone()),
    })
}

/// A sign-in sent to the provider: where to, and the value the browser keeps (a cookie) so
/// that the answer is taken only in the browser that started it.
pub struct Started {
    pub url: url::Url,
    pub browser: SecretString,
}

/// Whether the tenant signs in through an enabled provider.
pub async fn signs_in_through(app: &App, tenant: TenantId) -> Result<bool> {
    let mut tx = db::begin_tenant(&app.pool, tenant).await?;
    let on = sso::get(&mut tx, tenant).await?.is_some_and(|c| c.enabled);
    tx.rollback().await?;
    Ok(on)
}

/// Why a sign-in through the provider did not open a session: said to the person in words
/// they understand; the details go to the log and the tenant's audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The `state` is unknown, used or expired (a link opened twice, or too late).
    Expired,
    /// The provider said no (the person cancelled, or is not assigned to the application).
    ProviderRefused(String),
    /// The provider's answer did not verify (token, signature, audience, nonce, expiry).
    Unverified(String),
    /// The person is not a user here and the tenant does not create users at sign-in.
    NotAllowed,
    /// The user is deactivated.
    Inactive,
    /// The email is not of a domain the tenant verified, so it links to no one.
    DomainNotVerified(String),
    /// The answer came to another browser than the one that started the sign-in (a link
    /// passed on, or a forged one).
    OtherBrowser,
    /// Every seat of the organisation is taken: no user is made at the first sign-in.
    NoSeat,
}

impl Refusal {
    /// What the person reads.
    pub fn message(&self) -> &'static str {
        match self {
            Refusal::Expired => "This sign-in link has expired or was already used: sign in again.",
            Refusal::ProviderRefused(_) => {
                "Your organisation's sign-in provider did not let you in. If you cancelled, sign \
                 in again; otherwise ask your IT administrator to give you access to psa."
            }
            Refusal::Unverified(_) => {
                "The answer from your organisation's sign-in provider could not be trusted, so \
                 you were not signed in. Try again; if it keeps happening, tell your IT \
                 administrator."
            }
            Refusal::NotAllowed => {
                "Your account is not allowed in this organisation yet: ask an administrator to \
                 invite you."
            }
            Refusal::Inactive => {
                "Your account in this organisation is deactivated: ask an administrator."
            }
            Refusal::DomainNotVerified(_) => {
                "Your email is not of a domain this organisation has verified, so it cannot be \
                 linked to an account here: ask your IT administrator."
            }
            Refusal::OtherBrowser => {
                "This sign-in was started in another browser, or has expired: sign in again \
                 from here."
            }
            Refusal::NoSeat => {
                "Your organisation has no free seat for you yet: ask your administrator."
            }
        }
    }

    fn reason(&self) -> String {
        match self {
            Refusal::Expired => "expired".into(),
            Refusal::ProviderRefused(d) => format!("provider refused: {d}"),
            Refusal::Unverified(d) => format!("unverified: {d}"),
            Refusal::NotAllowed => "not allowed".into(),
            Refusal::Inactive => "inactive".into(),
            Refusal::DomainNotVerified(email) => {
                format!("the domain of {email} is not verified by the organisation")
            }
            Refusal::OtherBrowser => "started in another browser".into(),
            Refusal::NoSeat => "every seat is taken".into(),
        }
    }
}

/// A sign-in through the provider that verified: who it is, and the tenant's transaction
/// holding what the sign-in wrote (the identity, a user created), committed with the session.
pub struct Verified {
    pub tenant: TenantId,
    pub user: UserId,
    pub tx: Transaction<'static, Postgres>,
}

/// The provider's answer at the callback: `code` and `state`, or `error` (and its description).
#[derive(Debug, Clone, Default)]
pub struct Callback {
    pub state: String,
    pub code: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

/// Finishes a sign-in through the provider: the `state` taken (once), the code exchanged, the ID
/// token verified (signature against the provider's current keys, issuer, audience, expiry,
/// nonce; `email_verified` when sent), the person matched or created. A refusal is audited in
/// the tenant when the tenant is known.
pub async fn finish(
    app: &App,
    cb: Callback,
    browser: Option<&str>,
    address: &str,
) -> Result<std::result::Result<Verified, Refusal>> {
    let mut conn = app.pool.acquire().await?;
    let Some((state, _)) = sign_in::take_ceremony(&mut conn, Ceremony::Sso, &cb.state).await?
    else {
        return Ok(Err(Refusal::Expired));
    };
    drop(conn);
    let tenant: TenantId =
        serde_json::from_value(state["tenant"].clone()).map_err(Error::internal)?;
    // The browser that started it, or no one: a callback link passed to someone else would
    // sign them in as whoever signed in at the provider.
    let same_browser = browser
        .map(sign_in::digest_text)
        .is_some_and(|d| state["browser"].as_str() == Some(d.as_str()));
    let outcome = if same_browser {
        verify(app, tenant, &state, &cb).await?
    } else {
        Err(Refusal::OtherBrowser)
    };
    match outcome {
        Ok(v) => Ok(Ok(v)),
        Err(refusal) => {
            tracing::info!(%tenant, address, reason = %refusal.reason(), "single sign-on refused");
            let mut tx = db::begin_tenant(&app.pool, tenant).await?;
            audit::record(
                &mut tx,
                tenant,
                &audit::Actor::Platform("sso"),
                Action::LoginFailed,
                "sso_connection",
                state["connection_id"].as_str().and_then(|s| uuid::Uuid::parse_str(s).ok()),
                serde_json::json!({"method": "sso", "reason": refusal.reason(), "address": address}),
            )
            .await?;
            tx.commit().await?;
            Ok(Err(refusal))
        }
    }
}

async fn verify(
    app: &App,
    tenant: TenantId,
    state: &serde_json::Value,
    cb: &Callback,
) -> Result<std::result::Result<Verified, Refusal>> {
    if let Some(error) = &cb.error {
        let detail = match &cb.error_description {
            Some(d) => format!("{error}: {d}"),
            None => error.clone(),
        };
        return Ok(Err(Refusal::ProviderRefused(
            detail.chars().take(300).collect(),
        )));
    }
    let Some(code) = cb.code.as_deref().filter(|c| !c.is_empty()) else {
        return Ok(Err(Refusal::ProviderRefused("no code".into())));
    };
    let mut tx = db::begin_tenant(&app.pool, tenant).await?;
    let Some(c) = sso::get(&mut tx, tenant).await?.filter(|c| c.enabled) else {
        return Ok(Err(Refusal::ProviderRefused(
            "the connection was removed or disabled".into(),
        )));
    };
    if state["connection_id"].as_str() != Some(&c.connection_id.to_string()) {
        return Ok(Err(Refusal::Expired));
    }
    // No transaction stays open while the provider is asked (it may be slow).
    tx.rollback().await?;
    let secret = match &c.client_secret_sealed {
        Some(sealed) => Some(ClientSecret::new(
            key(app)?
                .open_for(sealed, Sealed::SsoClientSecret, &tenant.to_string())
                .map_err(Error::internal)?
                .expose_secret()
                .to_owned(),
        )),
        None => None,
    };
    let found = match discover(app, &c.issuer).await {
        Ok(f) => f,
        Err(e) => return Ok(Err(Refusal::Unverified(format!("discovery: {e}")))),
    };
    let client = CoreClient::from_provider_metadata(
        found.metadata,
        ClientId::new(c.client_id.clone()),
        secret,
    )
    .set_redirect_uri(RedirectUrl::new(redirect_uri(app)).map_err(Error::internal)?);
    let verifier = PkceCodeVerifier::new(state["verifier"].as_str().unwrap_or_default().to_owned());
    let nonce = Nonce::new(state["nonce"].as_str().unwrap_or_default().to_owned());
    let http = provider_http(app)?;
    let exchange = match client.exchange_code(AuthorizationCode::new(code.to_owned())) {
        Ok(e) => e,
        Err(e) => return Ok(Err(Refusal::Unverified(format!("token endpoint: {e}")))),
    };
    let response = match exchange
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
    {
        Ok(r) => r,
        Err(e) => return Ok(Err(Refusal::ProviderRefused(format!("code exchange: {e}")))),
    };
    let Some(id_token) = response.id_token() else {
        return Ok(Err(Refusal::Unverified("no ID token".into())));
    };
    let token_verifier: CoreIdTokenVerifier = client.id_token_verifier();
    let claims = match id_token.claims(&token_verifier, &nonce) {
        Ok(c) => c.clone(),
        Err(e) => return Ok(Err(Refusal::Unverified(format!("ID token: {e}")))),
    };
    // The claims the tenant named, read from the verified token's payload.
    let payload = id_token
        .to_string()
        .split('.')
        .nth(1)
        .and_then(|p| {
            use base64::Engine as _;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(p)
                .ok()
        })
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .unwrap_or_default();
    let text = |name: &str| {
        payload[name]
            .as_str()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 255)
            .map(str::to_owned)
    };
    let email_verified = match &payload["email_verified"] {
        serde_json::Value::Bool(b) => Some(*b),
        serde_json::Value::String(v) => Some(v == "true"),
        serde_json::Value::Null => None,
        _ => Some(false),
    };
    if email_verified == Some(false) {
        return Ok(Err(Refusal::Unverified(
            "the provider has not verified the email".into(),
        )));
    }
    let subject = claims.subject().to_string();
    if subject.is_empty() || subject.len() > 255 {
        return Ok(Err(Refusal::Unverified(
            "the subject is empty or too long".into(),
        )));
    }
    let email = text(&c.email_claim)
        .and_then(|e| psa_models::validate::EmailAddress::parse(&e).ok())
        .map(|e| e.as_str().to_owned());
    let mut tx = db::begin_tenant(&app.pool, tenant).await?;
    // A person is theirs by the subject once linked. The first time, the email links them (or
    // makes them, with jit) only when it is of a domain this tenant verified: whoever can get an
    // ID token from the provider with some email must not become this tenant's user of that
    // email unless the tenant owns the domain.
    let linked = sso::identity(&mut tx, tenant, c.connection_id, &subject).await?;
    let owned = match (&linked, &email) {
        (Some(_), _) | (None, None) => false,
        (None, Some(email)) => {
            let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
            sso::domains(&mut tx, tenant)
                .await?
                .iter()
                .any(|d| d.verified_at.is_some() && d.domain == domain)
        }
    };
    let user = match (linked, &email) {
        (Some(user), _) => Some(user),
        (None, Some(_)) if !owned => {
            return Ok(Err(Refusal::DomainNotVerified(email.unwrap_or_default())));
        }
        (None, Some(email)) => {
            let id: Option<uuid::Uuid> = sqlx::query_scalar(
                "SELECT user_id FROM users WHERE tenant = $1 AND email = $2 \
                 AND user_type = 'internal'",
            )
            .bind(tenant)
            .bind(email)
            .fetch_optional(&mut *tx)
            .await?;
            id.map(UserId)
        }
        (None, None) => {
            return Ok(Err(Refusal::Unverified(format!(
                "no usable {} claim",
                c.email_claim
            ))));
        }
    };
    let user = match user {
        Some(u) => u,
        None if c.jit => {
            let Some(email) = email else {
                return Ok(Err(Refusal::Unverified(format!(
                    "no {} claim",
                    c.email_claim
                ))));
            };
            let created = users::create(
                &mut tx,
                tenant,
                users::NewUser {
                    first_name: text(&c.first_name_claim).unwrap_or_else(|| email.clone()),
                    last_name: text(&c.last_name_claim).unwrap_or_default(),
                    email: email.clone(),
                    user_type: users::UserType::Internal,
                    roles: vec![c.jit_role.clone()],
                },
                Default::default(),
            )
            .await;
            let created = match created {
                Ok(u) => u,
                Err(Error::Validation { message, .. }) => {
                    return Ok(Err(Refusal::Unverified(format!(
                        "the provider's claims: {message}"
                    ))));
                }
                // The email is taken meanwhile (another sign-in of the same person), or by a
                // user this sign-in does not link to.
                Err(Error::InvalidState {
                    code: "seat_limit_reached",
                    ..
                }) => return Ok(Err(Refusal::NoSeat)),
                Err(e @ (Error::Conflict { .. } | Error::EmailExists)) => {
                    tracing::info!(%tenant, error = %e, "single sign-on: the user could not be made");
                    return Ok(Err(Refusal::NotAllowed));
                }
                Err(e) => return Err(e),
            };
            let id = created.user.user_id;
            audit::record(
                &mut tx,
                tenant,
                &audit::Actor::Platform("sso"),
                Action::Create,
                "user",
                Some(id.0),
                serde_json::json!({"by": "sso", "role": c.jit_role, "email": email}),
            )
            .await?;
            id
        }
        None => return Ok(Err(Refusal::NotAllowed)),
    };
    let inactive: bool =
        sqlx::query_scalar("SELECT is_inactive FROM users WHERE tenant = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user)
            .fetch_one(&mut *tx)
            .await?;
    if inactive {
        return Ok(Err(Refusal::Inactive));
    }
    if let Err(e) = sso::signed_in(&mut tx, tenant, c.connection_id, &subject, user).await {
        return Ok(Err(Refusal::Unverified(e.to_string())));
    }
    Ok(Ok(Verified { tenant, user, tx }))
}

/// Whether a sign-in other than through the provider is refused for this user: their tenant
/// requires its provider, and they are not one of its break-glass users.
pub async fn refuses_other_ways(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<bool> {
    sso::refuses(conn, tenant, user.0).await
}
