//! Passkeys over the API: registering one (options, then the authenticator's answer), the
//! caller's list and removal, a passkey as the second factor of a sign-in, and a sign-in with a
//! passkey alone. The rules are the operations layer's (`psa_app::passkeys`); the console's
//! pages call the same.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use psa_models::passkeys::PasskeyView;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, How, LoginResponse};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientInfo, PathId};

/// A registration begun.
#[derive(Serialize, ToSchema)]
pub struct RegistrationOptions {
    /// Finishes it (5 minutes, once).
    pub registration_token: String,
    /// For `navigator.credentials.create()`: `{"publicKey": ...}`, binary fields base64url.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// `POST /api/v1/auth/passkeys/options` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegistrationRequest {
    /// What the holder calls it (1-64 characters, unique among theirs), e.g. the device.
    pub name: String,
    /// With a second factor already: the password (or `code`, a current code).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub code: Option<String>,
}

/// Start registering a passkey for the caller (a signed-in person, not an API key): the options
/// for the browser's authenticator. A caller who has a second factor already confirms with the
/// password or a code (a passkey signs in alone). Works in a session that may only set up a
/// second factor.
#[utoipa::path(post, path = "/api/v1/auth/passkeys/options", tag = "auth", security(("bearer" = [])),
    request_body = RegistrationRequest,
    responses((status = 200, body = RegistrationOptions), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn registration_options(
    State(state): State<AppState>,
    caller: Caller,
    client: ClientInfo,
    ApiJson(req): ApiJson<RegistrationRequest>,
) -> Result<Json<RegistrationOptions>, ApiError> {
    psa_app::passkeys::require_person(&caller.principal())?;
    let proof_req = crate::mfa::ProofRequest {
        password: req.password.clone(),
        code: req.code.clone(),
    };
    let proof = crate::mfa::proof_of(&state, &caller, &proof_req).await?;
    let begun = psa_app::passkeys::begin_registration(
        &state.app,
        &caller.principal(),
        &client.peer.ip().to_string(),
        &req.name,
        proof,
    )
    .await?;
    Ok(Json(RegistrationOptions {
        registration_token: begun.token.expose_secret().to_owned(),
        options: begun.options,
    }))
}

/// `POST /api/v1/auth/passkeys` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// From `POST /api/v1/auth/passkeys/options`.
    #[schema(value_type = String, format = Password)]
    pub registration_token: SecretString,
    /// The `PublicKeyCredential` `navigator.credentials.create()` gave, binary fields base64url.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// A passkey registered.
#[derive(Serialize, ToSchema)]
pub struct Registered {
    pub passkey: PasskeyView,
    /// Ten recovery codes when the caller had none left (their first second factor): shown
    /// this once.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub recovery_codes: Vec<String>,
}

/// Finish registering a passkey with the authenticator's answer: it is a second factor from now
/// on (and signs in alone), and this session counts as having passed one. Audited; the user is
/// told by email.
#[utoipa::path(post, path = "/api/v1/auth/passkeys", tag = "auth", security(("bearer" = [])),
    request_body = RegisterRequest,
    responses((status = 201, body = Registered), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<(StatusCode, Json<Registered>), ApiError> {
    let done = psa_app::passkeys::finish_registration(
        &state.app,
        &caller.principal(),
        req.registration_token.expose_secret(),
        &req.credential,
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(Registered {
            passkey: done.passkey,
            recovery_codes: done.recovery_codes,
        }),
    ))
}

/// The caller's passkeys.
#[derive(Serialize, ToSchema)]
pub struct PasskeyList {
    pub data: Vec<PasskeyView>,
}

/// The caller's passkeys: name, when registered, when last used.
#[utoipa::path(get, path = "/api/v1/auth/passkeys", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = PasskeyList), (status = 401, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<PasskeyList>, ApiError> {
    Ok(Json(PasskeyList {
        data: psa_app::passkeys::list_own(&state.app, &caller.principal()).await?,
    }))
}

/// Remove one of the caller's passkeys (a signed-in person), proven by the password or a current
/// code; audited, and the user is told by email.
#[utoipa::path(delete, path = "/api/v1/auth/passkeys/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    request_body = crate::mfa::ProofRequest,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn remove(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<uuid::Uuid>,
    ApiJson(req): ApiJson<crate::mfa::ProofRequest>,
) -> Result<StatusCode, ApiError> {
    psa_app::passkeys::require_person(&caller.principal())?;
    let proof = crate::mfa::proof_of(&state, &caller, &req)
        .await?
        .ok_or_else(|| {
            ApiError::Model(psa_models::Error::validation(
                "password",
                "Give your password or a code to remove a passkey",
            ))
        })?;
    psa_app::passkeys::remove_own(&state.app, &caller.principal(), id, proof).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/auth/mfa/passkey` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaPasskeyRequest {
    /// From the password step's 401 `mfa_required`.
    #[schema(value_type = String, format = Password)]
    pub mfa_token: SecretString,
}

/// The options of a passkey assertion.
#[derive(Serialize, ToSchema)]
pub struct AssertionOptions {
    /// For `navigator.credentials.get()`: `{"publicKey": ...}`, binary fields base64url.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// Ask for a passkey as the second factor of a sign-in: the options for
/// `navigator.credentials.get()` (the user's passkeys only). Its answer goes to
/// `POST /api/v1/auth/mfa` as `passkey`, once.
#[utoipa::path(post, path = "/api/v1/auth/mfa/passkey", tag = "auth",
    request_body = MfaPasskeyRequest,
    responses((status = 200, body = AssertionOptions), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn mfa_options(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<MfaPasskeyRequest>,
) -> Result<Json<AssertionOptions>, ApiError> {
    state.limits.login_from(client.peer.ip()).await?;
    let options = psa_app::passkeys::ask_second_factor(&state.app, req.mfa_token.expose_secret())
        .await?
        .ok_or(ApiError::InvalidMfaToken)?;
    Ok(Json(AssertionOptions { options }))
}

/// A sign-in with a passkey begun.
#[derive(Serialize, ToSchema)]
pub struct PasskeySignInOptions {
    /// Finishes it (5 minutes, once).
    pub passkey_token: String,
    /// For `navigator.credentials.get()`: `{"publicKey": ...}`, binary fields base64url; no
    /// account named, the authenticator offers the passkeys it holds for this server.
    #[schema(value_type = Object)]
    pub options: serde_json::Value,
}

/// Start a sign-in with a passkey alone (no email, no password): rate-limited like logins.
#[utoipa::path(post, path = "/api/v1/auth/passkey/options", tag = "auth",
    responses((status = 200, body = PasskeySignInOptions), (status = 429, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn sign_in_options(
    State(state): State<AppState>,
    client: ClientInfo,
) -> Result<Json<PasskeySignInOptions>, ApiError> {
    let begun = begin_sign_in(&state, &client).await?;
    Ok(Json(PasskeySignInOptions {
        passkey_token: begun.token.expose_secret().to_owned(),
        options: begun.options,
    }))
}

pub(crate) async fn begin_sign_in(
    state: &AppState,
    client: &ClientInfo,
) -> Result<psa_app::passkeys::Begun, ApiError> {
    state.limits.login_from(client.peer.ip()).await?;
    Ok(psa_app::passkeys::begin_sign_in(&state.app, &client.peer.ip().to_string()).await?)
}

/// `POST /api/v1/auth/passkey` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PasskeySignInRequest {
    /// From `POST /api/v1/auth/passkey/options`.
    #[schema(value_type = String, format = Password)]
    pub passkey_token: SecretString,
    /// The `PublicKeyCredential` `navigator.credentials.get()` gave, binary fields base64url.
    #[schema(value_type = Object)]
    pub credential: serde_json::Value,
}

/// Sign in with a passkey alone: the device verified its user, so it counts as both factors. A
/// passkey that is not registered, or does not verify, is 401 `invalid_passkey`; an inactive
/// tenant's user is refused as at any sign-in. Audited as a login.
#[utoipa::path(post, path = "/api/v1/auth/passkey", tag = "auth",
    request_body = PasskeySignInRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
pub async fn sign_in(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<PasskeySignInRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    finish_sign_in(
        &state,
        &client,
        req.passkey_token.expose_secret(),
        &req.credential,
    )
    .await
    .map(Json)
}

/// Verifies a passkey sign-in and opens the session (the API and the console).
pub(crate) async fn finish_sign_in(
    state: &AppState,
    client: &ClientInfo,
    token: &str,
    credential: &serde_json::Value,
) -> Result<LoginResponse, ApiError> {
    state.limits.login_from(client.peer.ip()).await?;
    let Some(v) = psa_app::passkeys::finish_sign_in(&state.app, token, credential).await? else {
        tracing::info!(address = %client.peer.ip(), "passkey sign-in refused");
        metrics::counter!("psa_login_failures_total").increment(1);
        return Err(ApiError::InvalidPasskey);
    };
    crate::auth::open_session_in(state, client, v.tx, v.tenant, v.user, How::Passkey).await
}
