//! Single sign-on over the API: the tenant's connection to its OpenID Connect provider and its
//! verified email domains (`sso:manage`), and the start of a sign-in for API clients. The rules
//! are the operations layer's (`psa_app::sso`); the console and the CLI call the same. The
//! sign-in ends at the console's callback (`/console/sso/callback`), which opens the session.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use psa_app::sso::{ConnectionView, Input, TestReport};
use psa_models::TenantId;
use psa_models::sso::Domain;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientInfo};

/// `PUT /api/v1/sso/connection` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionRequest {
    /// The provider's issuer URL (https): its discovery document is at
    /// `{issuer}/.well-known/openid-configuration`.
    pub issuer: String,
    /// What the provider calls this application.
    pub client_id: String,
    /// Write-only: sealed with PSA_SECRET_KEY, never shown again. Left out: the stored one is
    /// kept; `""`: none (a public client, PKCE only).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub client_secret: Option<SecretString>,
    /// Default `["openid", "email", "profile"]`; must include `openid`.
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// The claims read for the email and the names (defaults `email`, `given_name`,
    /// `family_name`).
    #[serde(default)]
    pub email_claim: Option<String>,
    #[serde(default)]
    pub first_name_claim: Option<String>,
    #[serde(default)]
    pub last_name_claim: Option<String>,
    /// Create a user at their first sign-in (with `jit_role`); off: only users who exist here
    /// (invited) get in.
    #[serde(default)]
    pub jit: bool,
    /// The role of users created at their first sign-in (default `Technician`).
    #[serde(default)]
    pub jit_role: Option<String>,
    /// Refuse every other way in (password, code, passkey) but for `break_glass`.
    #[serde(default)]
    pub required: bool,
    /// Emails of administrators who may still sign in with a password (at least one when
    /// `required`).
    #[serde(default)]
    pub break_glass: Vec<String>,
    /// Default true.
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// The caller's tenant's connection (`sso:manage`); 404 when it has none.
#[utoipa::path(get, path = "/api/v1/sso/connection", tag = "sso", security(("bearer" = [])),
    responses((status = 200, body = ConnectionView), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<ConnectionView>, ApiError> {
    psa_app::sso::show(&state.app, &caller.principal(), caller.tenant)
        .await?
        .map(Json)
        .ok_or(ApiError::Model(psa_models::Error::NotFound {
            entity: "single sign-on connection",
        }))
}

/// Set the caller's tenant's connection (`sso:manage`): the provider must answer discovery
/// (422 on `issuer` saying what went wrong); audited, never the secret.
#[utoipa::path(put, path = "/api/v1/sso/connection", tag = "sso", security(("bearer" = [])),
    request_body = ConnectionRequest,
    responses((status = 200, body = ConnectionView), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ConnectionRequest>,
) -> Result<Json<ConnectionView>, ApiError> {
    let input = Input {
        issuer: req.issuer,
        client_id: req.client_id,
        client_secret: req.client_secret,
        scopes: req.scopes,
        email_claim: req.email_claim,
        first_name_claim: req.first_name_claim,
        last_name_claim: req.last_name_claim,
        jit: req.jit,
        jit_role: req.jit_role,
        required: req.required,
        break_glass: req.break_glass,
        enabled: req.enabled,
    };
    Ok(Json(
        psa_app::sso::set(&state.app, &caller.principal(), caller.tenant, input).await?,
    ))
}

/// Remove the caller's tenant's connection (`sso:manage`; audited): its users sign in with
/// passwords again.
#[utoipa::path(delete, path = "/api/v1/sso/connection", tag = "sso", security(("bearer" = [])),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    psa_app::sso::remove(&state.app, &caller.principal(), caller.tenant).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Run discovery against the connection's provider and report what it found (`sso:manage`).
#[utoipa::path(post, path = "/api/v1/sso/connection/test", tag = "sso", security(("bearer" = [])),
    responses((status = 200, body = TestReport), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<TestReport>, ApiError> {
    Ok(Json(
        psa_app::sso::test(&state.app, &caller.principal(), caller.tenant).await?,
    ))
}

/// The tenant's email domains.
#[derive(Serialize, ToSchema)]
pub struct DomainList {
    pub data: Vec<Domain>,
}

/// The caller's tenant's email domains and whether each is verified (`sso:manage`).
#[utoipa::path(get, path = "/api/v1/sso/domains", tag = "sso", security(("bearer" = [])),
    responses((status = 200, body = DomainList), (status = 403, body = ErrorBody)))]
pub async fn domains(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<DomainList>, ApiError> {
    Ok(Json(DomainList {
        data: psa_app::sso::domains(&state.app, &caller.principal(), caller.tenant).await?,
    }))
}

/// `POST /api/v1/sso/domains` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DomainRequest {
    /// e.g. `example.com`: the part of the staff's emails after the @.
    pub domain: String,
}

/// Claim an email domain (`sso:manage`; audited): the answer's `txt_record` is what to publish
/// as a TXT record at the domain, then `verify`. A public mail service's domain (gmail.com,
/// outlook.com, ...) or one another organisation verified is refused (422).
#[utoipa::path(post, path = "/api/v1/sso/domains", tag = "sso", security(("bearer" = [])),
    request_body = DomainRequest,
    responses((status = 201, body = Domain), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn add_domain(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<DomainRequest>,
) -> Result<(StatusCode, Json<Domain>), ApiError> {
    let d = psa_app::sso::add_domain(&state.app, &caller.principal(), caller.tenant, &req.domain)
        .await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// Look the domain's TXT record up and verify it (`sso:manage`; audited): 422 on `domain` while
/// the record is not found.
#[utoipa::path(post, path = "/api/v1/sso/domains/{domain}/verify", tag = "sso", security(("bearer" = [])),
    params(("domain" = String, Path)),
    responses((status = 200, body = Domain), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn verify_domain(
    State(state): State<AppState>,
    caller: Caller,
    Path(domain): Path<String>,
) -> Result<Json<Domain>, ApiError> {
    Ok(Json(
        psa_app::sso::verify_domain(&state.app, &caller.principal(), caller.tenant, &domain)
            .await?,
    ))
}

/// Give up a domain (`sso:manage`; audited).
#[utoipa::path(delete, path = "/api/v1/sso/domains/{domain}", tag = "sso", security(("bearer" = [])),
    params(("domain" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn remove_domain(
    State(state): State<AppState>,
    caller: Caller,
    Path(domain): Path<String>,
) -> Result<StatusCode, ApiError> {
    psa_app::sso::remove_domain(&state.app, &caller.principal(), caller.tenant, &domain).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/auth/sso/start` body: the email (its verified domain finds the organisation)
/// or the organisation (its slug or id).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub tenant: Option<String>,
}

/// Where to send the person.
#[derive(Serialize, ToSchema)]
pub struct StartResponse {
    /// The console's start of the organisation's sign-in (`/console/sso/{slug}`, with the
    /// email as the provider's login hint): opened in the person's browser, it sends them to
    /// the provider, which sends them back to `/console/sso/callback`, which opens the session
    /// (the console's cookie). The sign-in is bound to that browser.
    pub authorization_url: String,
}

/// Start a sign-in through an organisation's provider: by email (whose domain an organisation
/// verified) or by the organisation. 404 when neither leads to an enabled connection.
/// Rate-limited like logins.
#[utoipa::path(post, path = "/api/v1/auth/sso/start", tag = "auth",
    request_body = StartRequest,
    responses((status = 200, body = StartResponse), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn start(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<StartRequest>,
) -> Result<Json<StartResponse>, ApiError> {
    let email = req
        .email
        .as_deref()
        .map(str::trim)
        .filter(|e| !e.is_empty());
    let (_, slug) = target(&state, &client, email, req.tenant.as_deref())
        .await?
        .ok_or(ApiError::Model(psa_models::Error::NotFound {
            entity: "single sign-on connection",
        }))?;
    let mut url = state.app.delivery.public_url.clone();
    url.path_segments_mut()
        .map_err(|()| {
            ApiError::Model(psa_models::Error::internal(std::io::Error::other(
                "PSA_PUBLIC_URL cannot be a base",
            )))
        })?
        .pop_if_empty()
        .extend(["console", "sso", slug.as_str()]);
    if let Some(email) = email {
        url.query_pairs_mut().append_pair("login_hint", email);
    }
    Ok(Json(StartResponse {
        authorization_url: url.to_string(),
    }))
}

/// The organisation a sign-in by `email` or for `tenant` (a slug or an id) goes to, with its
/// slug: `None` when neither leads to an enabled connection (the API and the console).
/// Rate-limited like logins.
pub(crate) async fn target(
    state: &AppState,
    client: &ClientInfo,
    email: Option<&str>,
    tenant: Option<&str>,
) -> Result<Option<(TenantId, String)>, ApiError> {
    state.limits.login_from(client.peer.ip()).await?;
    let found = match (email.map(str::trim).filter(|e| !e.is_empty()), tenant) {
        (Some(email), _) => psa_app::sso::for_email(&state.app, email).await?,
        (None, Some(tenant)) => {
            let mut conn = state.pool.acquire().await?;
            psa_models::tenants::by_slug_or_id(&mut conn, tenant.trim()).await?
        }
        (None, None) => {
            return Err(ApiError::Model(psa_models::Error::validation(
                "email",
                "Give the email (or the organisation) to sign in",
            )));
        }
    };
    match found {
        Some((tenant, slug)) if psa_app::sso::signs_in_through(&state.app, tenant).await? => {
            Ok(Some((tenant, slug)))
        }
        _ => Ok(None),
    }
}
