//! Authentication: bearer tokens that are either sessions (from `POST /api/v1/auth/login`) or
//! API keys (from `psa api-key create`). Only SHA-256 digests of tokens are stored: tokens are
//! 256-bit random values, so a slow hash would add latency without adding safety.
//!
//! The caller's tenant comes from the credential and nothing else; the [`Caller`] extractor is
//! the only way a handler learns it, so a handler cannot take it from the request body.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, Postgres, Transaction};
use utoipa::ToSchema;

use psa_app::{Member, Principal};
use psa_models::audit::{Action as AuditAction, Actor};
use psa_models::invitations::{self, Delivery};
use psa_models::mail::Kind;
use psa_models::validate::EmailAddress;
use psa_models::{TenantId, auth_tokens, credentials, db, password, tenants, users};

use crate::AppState;
use crate::error::{ApiError, TenantChoice};
use crate::extract::{ApiJson, ClientInfo};

pub use psa_app::access::{Access as Action, Permission, Resource};
pub use psa_models::credentials::Credential;

/// The authenticated caller: a user of a tenant, by session or API key. The permission checks
/// are the operations layer's ([`psa_app::access`]); these methods open the request's
/// transaction through it.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Member);

impl std::ops::Deref for Caller {
    type Target = Member;
    fn deref(&self) -> &Member {
        &self.0
    }
}

impl Caller {
    /// The caller as an operation's principal.
    pub fn principal(&self) -> Principal {
        Principal::Member(self.0)
    }

    /// The caller as the audit log records it.
    pub fn actor(&self) -> Actor {
        self.principal().actor()
    }

    /// The request's transaction, confined to the caller's tenant by row-level security, once
    /// the caller is known to hold `permission` (403 otherwise, before anything is read or
    /// written). Every handler that touches tenant data starts here.
    pub async fn authorize(
        &self,
        state: &AppState,
        permission: Permission,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(state
            .app
            .begin(&self.principal(), self.tenant, permission)
            .await?)
    }

    /// Like [`Caller::authorize`], for the platform's operations: the caller's tenant must be
    /// the management tenant (as the database marks it, `tenants.is_management`), else 403.
    pub async fn authorize_management(
        &self,
        state: &AppState,
        permission: Permission,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(state
            .app
            .begin_management(&self.principal(), permission)
            .await?
            .0)
    }

    /// Whether the caller holds `permission` (to offer what needs it); a failure to check is
    /// an error, not a "no".
    pub async fn may(
        &self,
        conn: &mut PgConnection,
        permission: Permission,
    ) -> Result<bool, ApiError> {
        Ok(psa_app::access::may(conn, &self.principal(), permission).await?)
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        Caller::from_token(state, token, parts.uri.path()).await
    }
}

/// Where a session that may only set up a second factor may go: setting one up, and leaving.
pub(crate) const ENROLMENT_PATHS: [&str; 11] = [
    "/api/v1/auth/mfa/totp",
    "/api/v1/auth/mfa/totp/confirm",
    "/api/v1/auth/passkeys/options",
    "/api/v1/auth/passkeys",
    "/api/v1/auth/logout",
    "/console/account/second-factor",
    "/console/account/second-factor/start",
    "/console/account/second-factor/confirm",
    "/console/account/passkeys/options",
    "/console/account/passkeys",
    "/console/sign-out",
];

impl Caller {
    /// The holder of a session token or API key (the bearer header's, or the console's
    /// cookie's), with the same checks: active tenant, request rate.
    pub(crate) async fn from_token(
        state: &AppState,
        token: &str,
        path: &str,
    ) -> Result<Caller, ApiError> {
        Self::from_token_as(state, token, credentials::Use::Recorded, path).await
    }

    /// [`Caller::from_token`], recording the credential's use or not (a live stream re-checking
    /// its session does not keep it alive).
    /// A session that may only set up a second factor reaches only [`ENROLMENT_PATHS`] (403
    /// `mfa_enrollment_required` elsewhere).
    pub(crate) async fn from_token_as(
        state: &AppState,
        token: &str,
        used: credentials::Use,
        path: &str,
    ) -> Result<Caller, ApiError> {
        let mut conn = state.pool.acquire().await?;
        let holder = credentials::authenticate_as(&mut conn, token, state.session_idle, used)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        drop(conn);
        if !holder.tenant_active {
            return Err(ApiError::TenantInactive);
        }
        if holder.enrollment_only && !ENROLMENT_PATHS.contains(&path) {
            return Err(ApiError::MfaEnrollmentRequired);
        }
        let (Credential::Session(id) | Credential::ApiKey(id)) = holder.credential;
        state.limits.request_with(id)?;
        Ok(Caller(Member {
            tenant: holder.tenant,
            user: holder.user,
            credential: holder.credential,
            client_portal: holder.client_portal,
            support: holder.support,
        }))
    }
}

/// `POST /api/v1/auth/login` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    /// The organisation to sign in to, by id or slug. Without it the email finds it: one match
    /// signs in, several answer 409 `tenant_required` with the organisations to choose from.
    #[serde(default)]
    pub tenant: Option<String>,
    /// The organisation's id (as before slugs; `tenant` takes an id too).
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub tenant_id: Option<TenantId>,
}

impl LoginRequest {
    /// The organisation the caller named, if any.
    fn named(&self) -> Option<String> {
        self.tenant
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .or_else(|| self.tenant_id.map(|t| t.to_string()))
    }
}

/// A new session.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// The bearer token; shown once.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// A hash to verify against when the email is unknown, so that an unknown email costs the same
/// time as a wrong password and does not reveal whether the account exists.
pub(crate) static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    password::hash_blocking(&password::generate()).expect("hashing a generated password")
});

/// Sign in with email and password (and the organisation, when the email is in several);
/// returns a session token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::ErrorBody),
              (status = 409, description = "`tenant_required`: the password matched in several organisations; repeat with `tenant` (one of `tenants`)", body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    sign_in(&state, &client, req).await.map(Json)
}

/// Checks email and password and opens a session (the API's login and the console's sign-in).
/// The email finds its tenants (or the one named): the password is checked against each
/// candidate's hash (at least one hash always, so an unknown email costs what a wrong password
/// does); one match signs in, several answer [`ApiError::TenantRequired`] naming only the
/// tenants where it matched. Rate limits per address and per account, refused for an inactive
/// tenant, audited either way.
pub(crate) async fn sign_in(
    state: &AppState,
    client: &ClientInfo,
    req: LoginRequest,
) -> Result<LoginResponse, ApiError> {
    let peer = client.peer;
    state.limits.login_from(peer.ip()).await?;
    let Ok(email) = EmailAddress::parse(&req.email) else {
        return Err(ApiError::Unauthorized);
    };
    let named = req.named();
    // The lookup on a pooled connection, released before any hash is checked: a flood of
    // logins cannot take the pool from everyone else.
    let candidates = {
        let mut conn = state.pool.acquire().await?;
        psa_models::sign_in::candidates(&mut conn, &email, named.as_deref()).await?
    };
    // Per account: the email, whatever it names (an unknown one counts the same).
    state.limits.login_of(email.as_str()).await?;
    let mut matched = Vec::new();
    let mut hashed = false;
    for c in &candidates {
        // A user who has not set a password yet matches nothing.
        let Some(hash) = c.hash.clone() else { continue };
        hashed = true;
        if verify_limited(state, &req.password, hash).await? {
            matched.push(c.clone());
        }
    }
    if !hashed {
        verify_limited(state, &req.password, DUMMY_HASH.clone()).await?;
    }
    match matched.as_slice() {
        [] => {
            // The tenants the attempt was against: the email's, and the one named by id.
            let mut tenants: Vec<TenantId> = candidates.iter().map(|c| c.tenant).collect();
            if let Some(t) = named.as_deref().and_then(|n| uuid::Uuid::parse_str(n).ok()) {
                tenants.push(TenantId(t));
            }
            tenants.sort_by_key(|t| t.0);
            tenants.dedup();
            // Written after the answer: a known email's failure row would otherwise make its
            // answer slower than an unknown one's, which has no tenant to write into.
            let (pool, email) = (state.pool.clone(), email.clone());
            tokio::spawn(async move {
                if let Err(e) = record_failure(&pool, peer, &email, &tenants).await {
                    tracing::warn!(error = %e.log_safe(), "recording a failed sign-in failed");
                }
            });
            Err(ApiError::Unauthorized)
        }
        [one] => open_session(state, client, one.tenant, one.user, How::Password).await,
        several => Err(ApiError::TenantRequired(
            several
                .iter()
                .map(|c| TenantChoice {
                    id: c.tenant,
                    slug: c.slug.clone(),
                    name: c.tenant_name.clone(),
                })
                .collect(),
        )),
    }
}

/// A failed sign-in, in each tenant it was against (bounded: one row per email and address per
/// window), counted and logged.
async fn record_failure(
    pool: &sqlx::PgPool,
    peer: std::net::SocketAddr,
    email: &EmailAddress,
    tenants: &[TenantId],
) -> Result<(), ApiError> {
    let address = peer.ip().to_string();
    for &tenant in tenants {
        let mut tx = db::begin_tenant(pool, tenant).await?;
        let written =
            psa_models::audit::record_login_failure(&mut tx, tenant, email.as_str(), &address)
                .await?;
        tx.commit().await?;
        tracing::info!(%tenant, %address, audited = written, "login failed");
    }
    if tenants.is_empty() {
        tracing::info!(%address, "login failed: no such account");
    }
    metrics::counter!("psa_login_failures_total").increment(1);
    Ok(())
}

/// How a sign-in proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum How {
    /// The password (a second factor follows when the user has one).
    Password,
    /// A link just redeemed (invitation or reset): like a password.
    Link,
    /// The password, then a second factor.
    SecondFactor,
    /// A passkey alone: possession of the device and its user verification, both factors.
    Passkey,
    /// The tenant's single sign-on provider: its own policy (and second factor) governs.
    Sso,
}

/// Opens a session for `user` of `tenant` who just proved who they are: refused for a suspended
/// or canceled tenant (its holder proved who they are); a user with a second factor who has
/// not passed it gets [`ApiError::MfaRequired`] instead (its `mfa_token` carries the sign-in
/// on); a user of a tenant that requires one, who has none, gets a session that may only set
/// one up. Audited as a login.
pub(crate) async fn open_session(
    state: &AppState,
    client: &ClientInfo,
    tenant: TenantId,
    user: psa_models::UserId,
    how: How,
) -> Result<LoginResponse, ApiError> {
    let tx = db::begin_tenant(&state.pool, tenant).await?;
    open_session_in(state, client, tx, tenant, user, how).await
}

/// [`open_session`] in `tx` (the tenant's, holding what the proof used up, such as a code's
/// step), committed with the session and its audit row.
pub(crate) async fn open_session_in(
    state: &AppState,
    client: &ClientInfo,
    mut tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    user: psa_models::UserId,
    how: How,
) -> Result<LoginResponse, ApiError> {
    let peer = client.peer;
    if !tenant_is_active(&mut tx, tenant).await? {
        return Err(ApiError::TenantInactive);
    }
    // A tenant that signs in through its provider refuses every other way in, but for its
    // break-glass users.
    if how != How::Sso {
        let mut conn = state.pool.acquire().await?;
        if psa_app::sso::refuses_other_ways(&mut conn, tenant, user).await? {
            return Err(ApiError::SsoRequired);
        }
    }
    let has_factor = psa_models::mfa::has_second_factor(&mut tx, tenant, user).await?;
    let second_factor = matches!(how, How::SecondFactor | How::Passkey);
    if has_factor && !second_factor && how != How::Sso {
        let email = EmailAddress::parse(&users::get(&mut tx, tenant, user).await?.email)?;
        let methods = psa_models::mfa::methods(&mut tx, tenant, user).await?;
        tx.rollback().await?;
        let mut conn = state.pool.acquire().await?;
        let token = psa_models::sign_in::begin_second_factor(
            &mut conn,
            &email,
            tenant,
            user,
            &peer.ip().to_string(),
        )
        .await?;
        return Err(ApiError::MfaRequired(crate::error::MfaChallenge {
            token: token.expose_secret().to_owned(),
            methods,
        }));
    }
    let enrollment_only =
        how != How::Sso && !has_factor && psa_models::mfa::required(&mut tx, tenant).await?;
    let meta = credentials::SessionMeta {
        address: Some(peer.ip().to_string()),
        user_agent: client.user_agent.clone(),
        second_factor,
        enrollment_only,
    };
    let session =
        credentials::create_session(&mut tx, tenant, user, Utc::now() + state.session_ttl, &meta)
            .await?;
    let new_device = credentials::note_device(
        &mut tx,
        tenant,
        user,
        client.user_agent.as_deref(),
        peer.ip(),
    )
    .await?;
    psa_models::audit::record(
        &mut tx,
        tenant,
        &Actor::User { user },
        AuditAction::Login,
        "user",
        Some(user.0),
        serde_json::json!({
            "address": peer.ip().to_string(),
            "by": match how {
                How::Password => "password",
                How::Link => "link",
                How::SecondFactor => "second_factor",
                How::Passkey => "passkey",
                How::Sso => "sso",
            },
            "enrollment_only": enrollment_only,
        }),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%tenant, %user, "login");
    if new_device {
        tell_of_new_device(state, client, tenant, user);
    }
    Ok(LoginResponse {
        token: session.token.expose_secret().to_owned(),
        expires_at: session.expires_at,
    })
}

/// Mails the user that their account was signed in to from a device not seen lately (when mail
/// is configured), after the answer: a sign-in does not wait on the mail server.
fn tell_of_new_device(
    state: &AppState,
    client: &ClientInfo,
    tenant: TenantId,
    user: psa_models::UserId,
) {
    let app = state.app.clone();
    let (agent, address) = (
        client
            .user_agent
            .clone()
            .unwrap_or_else(|| "an unnamed client".into()),
        client.peer.ip().to_string(),
    );
    tokio::spawn(async move {
        let lines = [
            format!(
                "Your account was signed in to from a device not seen lately: {agent}, from the \
                 address {address}, at {}.",
                Utc::now().format("%Y-%m-%d %H:%M UTC")
            ),
            "If it was you, there is nothing to do. If not, change your password and sign out \
             your other sessions (the console's Sessions page)."
                .to_owned(),
        ];
        psa_app::mfa::tell(
            &app,
            tenant,
            user,
            "A new sign-in to your psa account",
            &lines,
        )
        .await;
    });
}

/// Whether the tenant is `active` (read in the tenant's own confined transaction).
pub(crate) async fn tenant_is_active(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<bool, ApiError> {
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .fetch_optional(conn)
        .await?;
    Ok(status.as_deref() == Some("active"))
}

/// End the current session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    psa_app::sessions::sign_out(&state.app, &caller.principal())
        .await
        .map_err(|e| match e {
            // The contract's 400 for a key (a validation error would be 422).
            psa_models::Error::Validation { message, .. } => ApiError::bad_request(None, message),
            other => other.into(),
        })?;
    Ok(StatusCode::NO_CONTENT)
}

/// End every session of the caller ("log out everywhere": a lost device, a shared computer).
/// API keys are not affected (`psa api-key revoke`).
#[utoipa::path(post, path = "/api/v1/auth/logout-all", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204), (status = 401, body = crate::error::ErrorBody)))]
pub async fn logout_everywhere(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    psa_app::sessions::sign_out_everywhere(&state.app, &caller.principal()).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs `work` (a password hash or check) under a permit of the hashing semaphore, which it
/// keeps until it is done, even if this request is dropped (its timeout): the configured number
/// of hashes is never exceeded. A caller that cannot get a permit within 5 s is told to come
/// back.
async fn with_hash_permit<T: Send + 'static>(
    state: &AppState,
    work: impl std::future::Future<Output = psa_models::Result<T>> + Send + 'static,
) -> Result<T, ApiError> {
    let permit = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        state.limits.hashing.clone().acquire_owned(),
    )
    .await
    .map_err(|_| ApiError::RateLimited {
        retry_after: std::time::Duration::from_secs(1),
    })?
    .map_err(ApiError::internal)?;
    tokio::spawn(async move {
        let out = work.await;
        drop(permit);
        out
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::from)
}

pub(crate) async fn verify_limited(
    state: &AppState,
    candidate: &SecretString,
    hash: String,
) -> Result<bool, ApiError> {
    let candidate = candidate.clone();
    with_hash_permit(
        state,
        async move { password::verify(&candidate, &hash).await },
    )
    .await
}

pub(crate) async fn hash_limited(
    state: &AppState,
    new_password: &SecretString,
) -> Result<String, ApiError> {
    let p = new_password.clone();
    with_hash_permit(state, async move { password::hash(&p).await }).await
}

/// `POST /api/v1/auth/invitations/accept` and `/password-reset/accept` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetPasswordRequest {
    /// The token from the link (the part after `#`).
    #[schema(value_type = String, format = Password)]
    pub token: SecretString,
    /// The new password: 12 to 256 characters, not easy to guess.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// Redeems a link's token: checks the new password, sets it, uses the token and ends the user's
/// sessions. Shared with the set-password page.
pub(crate) async fn set_password_by_link(
    state: &AppState,
    peer: std::net::IpAddr,
    purpose: auth_tokens::Purpose,
    token: &SecretString,
    new_password: &SecretString,
) -> Result<Redeemed, ApiError> {
    state.limits.login_from(peer).await?;
    let mut conn = state.pool.acquire().await?;
    let found = auth_tokens::find(&mut conn, purpose, token.expose_secret()).await?;
    drop(conn);
    let mut tx = db::begin_tenant(&state.pool, found.tenant).await?;
    // A suspended or canceled tenant's link is kept for when it is active again.
    if !tenant_is_active(&mut tx, found.tenant).await? {
        return Err(ApiError::TenantInactive);
    }
    // A tenant that signs in through its provider gives its people no password (it would work
    // the day the provider is no longer required); the link is left for that day.
    if psa_app::sso::refuses_other_ways(&mut tx, found.tenant, found.user).await? {
        return Err(ApiError::SsoRequired);
    }
    let user = users::get(&mut tx, found.tenant, found.user).await?;
    let tenant = tenants::get(&mut tx, found.tenant).await?;
    let (tenant_name, tenant_slug) = (tenant.company_name, tenant.slug);
    tx.commit().await?;
    password::check_strength(
        new_password,
        &[
            user.email.as_str(),
            user.first_name.as_deref().unwrap_or_default(),
            user.last_name.as_deref().unwrap_or_default(),
            tenant_name.as_str(),
        ],
    )?;
    let hashed = hash_limited(state, new_password).await?;
    let mut tx = db::begin_tenant(&state.pool, found.tenant).await?;
    let keys_revoked = auth_tokens::redeem(&mut tx, &found, purpose, &hashed).await?;
    let action = match purpose {
        auth_tokens::Purpose::Invitation => AuditAction::AcceptInvitation,
        auth_tokens::Purpose::PasswordReset => AuditAction::ResetPassword,
    };
    psa_models::audit::record(
        &mut tx,
        found.tenant,
        &Actor::User { user: found.user },
        action,
        "user",
        Some(found.user.0),
        serde_json::json!({"address": peer.to_string(), "api_keys_revoked": keys_revoked}),
    )
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = %found.tenant, user = %found.user, action = action.as_str(), "password set through a link");
    Ok(Redeemed {
        found,
        email: user.email,
        tenant_name,
        tenant_slug,
    })
}

/// A link redeemed: whose it was.
pub(crate) struct Redeemed {
    pub found: auth_tokens::Found,
    pub email: String,
    pub tenant_name: String,
    pub tenant_slug: String,
}

/// Redeems a link (the API's way) and opens a session for the user who has just set their
/// password (a second factor is still asked for when the user has one: a link is not one).
async fn redeem_and_sign_in(
    state: &AppState,
    client: &ClientInfo,
    purpose: auth_tokens::Purpose,
    req: &SetPasswordRequest,
) -> Result<Json<LoginResponse>, ApiError> {
    let found = set_password_by_link(state, client.peer.ip(), purpose, &req.token, &req.password)
        .await?
        .found;
    open_session(state, client, found.tenant, found.user, How::Link)
        .await
        .map(Json)
}

/// Accept an invitation: set a password with the token from the invitation link; returns a
/// session. An expired, used or superseded link is refused (400 `invalid_link`, saying which).
#[utoipa::path(post, path = "/api/v1/auth/invitations/accept", tag = "auth",
    request_body = SetPasswordRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn accept_invitation(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<SetPasswordRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    redeem_and_sign_in(&state, &client, auth_tokens::Purpose::Invitation, &req).await
}

/// Set a new password with the token from a password-reset link; returns a session. Every other
/// session of the user ends.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/accept", tag = "auth",
    request_body = SetPasswordRequest,
    responses((status = 200, body = LoginResponse), (status = 400, body = crate::error::ErrorBody),
              (status = 403, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn accept_password_reset(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<SetPasswordRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    redeem_and_sign_in(&state, &client, auth_tokens::Purpose::PasswordReset, &req).await
}

/// `POST /api/v1/auth/password` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    /// 12 to 256 characters, not easy to guess.
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
    /// Also revoke every API key of the user (when the old password may have leaked with them).
    #[serde(default)]
    pub revoke_api_keys: bool,
}

/// Change the caller's password, proving the current one. Every other session of the user ends
/// (the one making the request stays); API keys stay unless `revoke_api_keys` is true.
#[utoipa::path(post, path = "/api/v1/auth/password", tag = "auth",
    security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses((status = 204), (status = 401, body = crate::error::ErrorBody),
              (status = 422, body = crate::error::ErrorBody), (status = 429, body = crate::error::ErrorBody)))]
pub async fn change_password(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    change_own_password(&state, &caller, &req).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Changes the caller's own password (the API and the console): the current one checked under
/// the login limits, the new one's strength, every other session ended, open links revoked.
/// Checks the signed-in user's own password (to remove a second factor, say): a guess with a
/// stolen session is a sign-in attempt like any other (the same limits, the hashing permits).
pub(crate) async fn verify_own_password(
    state: &AppState,
    caller: &Caller,
    password: &SecretString,
) -> Result<(), ApiError> {
    caller
        .principal()
        .refuse_in_support("the user's password")?;
    let mut tx = db::begin_tenant(&state.pool, caller.tenant).await?;
    let user = users::get(&mut tx, caller.tenant, caller.user).await?;
    let current = users::password_hash(&mut tx, caller.tenant, caller.user).await?;
    tx.commit().await?;
    state.limits.login_of(&user.email).await?;
    let current = current.unwrap_or_else(|| DUMMY_HASH.clone());
    if !verify_limited(state, password, current).await? {
        return Err(ApiError::Model(psa_models::Error::validation(
            "password",
            "That is not your password: nothing was changed",
        )));
    }
    Ok(())
}

pub async fn change_own_password(
    state: &AppState,
    caller: &Caller,
    req: &ChangePasswordRequest,
) -> Result<(), ApiError> {
    caller
        .principal()
        .refuse_in_support("the user's password")?;
    let mut tx = db::begin_tenant(&state.pool, caller.tenant).await?;
    let user = users::get(&mut tx, caller.tenant, caller.user).await?;
    let current = users::password_hash(&mut tx, caller.tenant, caller.user).await?;
    let tenant_name = tenants::get(&mut tx, caller.tenant).await?.company_name;
    tx.commit().await?;
    // Guessing the current password with a stolen session is a login attempt like any other.
    state.limits.login_of(&user.email).await?;
    let current = current.unwrap_or_else(|| DUMMY_HASH.clone());
    if !verify_limited(state, &req.current_password, current).await? {
        return Err(ApiError::Model(psa_models::Error::validation(
            "current_password",
            "The current password is not correct",
        )));
    }
    password::check_strength(
        &req.new_password,
        &[
            user.email.as_str(),
            user.first_name.as_deref().unwrap_or_default(),
            user.last_name.as_deref().unwrap_or_default(),
            tenant_name.as_str(),
        ],
    )
    .map_err(|e| match e {
        psa_models::Error::Validation { message, .. } => {
            psa_models::Error::validation("new_password", message)
        }
        other => other,
    })?;
    let hashed = hash_limited(state, &req.new_password).await?;
    let keep = match caller.credential {
        Credential::Session(id) => Some(id),
        Credential::ApiKey(_) => None,
    };
    let mut tx = db::begin_tenant(&state.pool, caller.tenant).await?;
    users::set_password_hash(&mut tx, caller.tenant, caller.user, &hashed).await?;
    let ended =
        credentials::revoke_sessions_except(&mut tx, caller.tenant, caller.user, keep).await?;
    auth_tokens::revoke_open(&mut tx, caller.tenant, caller.user).await?;
    let keys_revoked = if req.revoke_api_keys {
        credentials::revoke_api_keys_of(&mut tx, caller.tenant, caller.user).await?
    } else {
        0
    };
    psa_models::audit::record(
        &mut tx,
        caller.tenant,
        &caller.actor(),
        AuditAction::ChangePassword,
        "user",
        Some(caller.user.0),
        serde_json::json!({"sessions_ended": ended, "api_keys_revoked": keys_revoked}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// `POST /api/v1/auth/password-reset` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasswordResetRequest {
    pub email: String,
    /// One organisation, by id or slug; without it, a link goes for each organisation where the
    /// email is an active user.
    #[serde(default)]
    pub tenant: Option<String>,
    /// One organisation by id (as before slugs).
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub tenant_id: Option<TenantId>,
}

/// The answer to a reset request: the same whatever the account.
#[derive(Serialize, ToSchema)]
pub struct PasswordResetAccepted {
    pub message: String,
}

/// Ask for a password-reset link by email: one for each organisation where the email is an
/// active user (or the one named). The answer is the same (202) whether or not the account
/// exists, and comes before anything is looked up or sent, so neither its content nor its time
/// tells.
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "auth",
    request_body = PasswordResetRequest,
    responses((status = 202, body = PasswordResetAccepted), (status = 409, body = crate::error::ErrorBody),
              (status = 429, body = crate::error::ErrorBody)))]
pub async fn request_password_reset(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    ApiJson(req): ApiJson<PasswordResetRequest>,
) -> Result<(StatusCode, Json<PasswordResetAccepted>), ApiError> {
    let message = ask_password_reset(&state, peer, &req).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(PasswordResetAccepted { message }),
    ))
}

/// Asks for a reset link (the API and the console's "forgotten password"): the same answer
/// whatever the account, before any mail is sent; the sending happens in the background.
pub async fn ask_password_reset(
    state: &AppState,
    peer: std::net::SocketAddr,
    req: &PasswordResetRequest,
) -> Result<String, ApiError> {
    if state.app.delivery.mailer.is_none() {
        return Err(ApiError::MailNotConfigured);
    }
    state.limits.login_from(peer.ip()).await?;
    let accepted = "If this account exists, a link to reset its password is on its way. It works for a limited time.".to_owned();
    let Ok(email) = EmailAddress::parse(&req.email) else {
        return Ok(accepted);
    };
    let named = req
        .tenant
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .or_else(|| req.tenant_id.map(|t| t.to_string()));
    // Per account: the email, the same for every email (an existing one is not told apart by
    // its limit).
    state.limits.login_of(email.as_str()).await?;
    // A few sends at once at most: a flood of requests (or a slow mail server) cannot take the
    // pool's connections from everyone else. Past that, requests are answered and dropped.
    let Ok(permit) = state.limits.mail_sends.clone().try_acquire_owned() else {
        tracing::warn!("password reset dropped: too many sends in progress");
        return Ok(accepted);
    };
    let (pool, delivery) = (state.pool.clone(), state.app.delivery.clone());
    // Looked up after the answer: its time says nothing about the email.
    tokio::spawn(async move {
        let found = match pool.acquire().await {
            Ok(mut conn) => {
                psa_models::sign_in::candidates(&mut conn, &email, named.as_deref()).await
            }
            Err(e) => Err(e.into()),
        };
        match found {
            Ok(candidates) => {
                for c in candidates {
                    if let Err(e) = send_reset(&pool, &delivery, c.tenant, &email, peer.ip()).await
                    {
                        tracing::warn!(tenant = %c.tenant, error = %e, "password reset email failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "password reset lookup failed"),
        }
        drop(permit);
    });
    Ok(accepted)
}

async fn send_reset(
    pool: &sqlx::PgPool,
    delivery: &Delivery,
    tenant: TenantId,
    email: &EmailAddress,
    peer: std::net::IpAddr,
) -> anyhow::Result<()> {
    let mut tx = db::begin_tenant(pool, tenant).await?;
    let Some(tenant_row) = tenants::find(&mut tx, tenant).await? else {
        return Ok(());
    };
    // No link for a suspended or canceled tenant's users (the answer is the same anyway).
    if !tenant_is_active(&mut tx, tenant).await? {
        return Ok(());
    }
    let Some(reset) = invitations::reset(&mut tx, tenant, email, delivery).await? else {
        return Ok(());
    };
    psa_models::audit::record(
        &mut tx,
        tenant,
        &Actor::Anonymous,
        AuditAction::RequestPasswordReset,
        "user",
        Some(reset.user.user_id.0),
        serde_json::json!({"address": peer.to_string()}),
    )
    .await?;
    // Committed before mailing, so no connection waits on the mail server; a link whose email
    // could not go out is revoked.
    tx.commit().await?;
    if let Err(e) = delivery
        .deliver(
            Kind::PasswordReset,
            &tenant_row.company_name,
            &reset.user,
            &reset.link,
        )
        .await
    {
        let mut tx = db::begin_tenant(pool, tenant).await?;
        sqlx::query(
            "UPDATE user_auth_tokens SET revoked_at = now() WHERE tenant = $1 AND token_id = $2",
        )
        .bind(tenant)
        .bind(reset.link.token_id)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        return Err(e.into());
    }
    Ok(())
}

pub use psa_models::credentials::{
    NewApiKey, create_api_key, create_api_key_until, revoke_api_key,
};
