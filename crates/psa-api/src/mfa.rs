//! Second factors over the API: the second step of a sign-in (`POST /api/v1/auth/mfa`), setting
//! up an authenticator app and its recovery codes, removing it, an administrator's reset, the
//! tenant's policy, and the caller's own sessions. The rules are the operations layer's
//! (`psa_app::mfa`, `psa_app::sessions`); the console's pages call the same.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use psa_models::credentials::SessionView;
use psa_models::{UserId, db};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Caller, How, LoginResponse};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ClientInfo, PathId};
use psa_app::mfa::{Checked, Proof};

/// `POST /api/v1/auth/mfa` body: a code, or a passkey's answer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecondFactorRequest {
    /// From the password step's 401 `mfa_required`.
    #[schema(value_type = String, format = Password)]
    pub mfa_token: SecretString,
    /// A code from the authenticator app (6 digits) or a recovery code (`xxxx-xxxx-xxxx-xxxx`).
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub code: Option<SecretString>,
    /// A passkey's answer to `POST /api/v1/auth/mfa/passkey`'s options: the
    /// `PublicKeyCredential` `navigator.credentials.get()` gave, binary fields base64url.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub passkey: Option<serde_json::Value>,
}

/// The second step of a sign-in: a code, or a passkey, for the `mfa_token` the password step
/// gave. A wrong code is 401 `invalid_code`, a passkey that is not the user's or does not verify
/// 401 `invalid_passkey` (audited; the fifth wrong answer ends the token); a token that is
/// unknown, used or expired is 401 `invalid_mfa_token`.
#[utoipa::path(post, path = "/api/v1/auth/mfa", tag = "auth",
    request_body = SecondFactorRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn second_factor(
    State(state): State<AppState>,
    client: ClientInfo,
    ApiJson(req): ApiJson<SecondFactorRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    use secrecy::ExposeSecret;
    let answer = match (&req.code, &req.passkey) {
        (Some(code), None) => Answer::Code(code.expose_secret()),
        (None, Some(passkey)) => Answer::Passkey(passkey),
        _ => {
            return Err(ApiError::Model(psa_models::Error::validation(
                "code",
                "Send either a code or a passkey's answer",
            )));
        }
    };
    complete(&state, &client, req.mfa_token.expose_secret(), answer)
        .await
        .map(Json)
}

/// What a second-factor step is answered with.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Answer<'a> {
    /// A TOTP or recovery code.
    Code(&'a str),
    /// A passkey's answer to the assertion the step asked for.
    Passkey(&'a serde_json::Value),
}

/// Checks the answer for the sign-in `mfa_token` carries; opens the session when it is right
/// (the API and the console).
pub(crate) async fn complete(
    state: &AppState,
    client: &ClientInfo,
    mfa_token: &str,
    answer: Answer<'_>,
) -> Result<LoginResponse, ApiError> {
    state.limits.login_from(client.peer.ip()).await?;
    let token = mfa_token.trim();
    let mut conn = state.pool.acquire().await?;
    let step = psa_models::sign_in::take_attempt(&mut conn, token)
        .await?
        .ok_or(ApiError::InvalidMfaToken)?;
    drop(conn);
    let (tenant, user) = (step.tenant, step.user);
    // The same bucket as the password step: codes and passwords for one email together.
    state.limits.login_of(&step.email).await?;
    let mut tx = db::begin_tenant(&state.pool, tenant).await?;
    let checked = match answer {
        Answer::Code(code) => {
            psa_app::mfa::check_code(&state.app, &mut tx, tenant, user, code).await?
        }
        Answer::Passkey(credential) => {
            // A passkey is not guessed: a wrong one does not count towards the code lock.
            let right = psa_app::passkeys::check_second_factor(
                &state.app,
                &mut tx,
                tenant,
                user,
                step.ceremony,
                credential,
            )
            .await?;
            if right {
                Checked::Passed("passkey")
            } else {
                Checked::Wrong { locked: false }
            }
        }
    };
    match checked {
        Checked::Passed(method) => {
            let mut conn = state.pool.acquire().await?;
            if !psa_models::sign_in::finish_second_factor(&mut conn, token).await? {
                return Err(ApiError::InvalidMfaToken);
            }
            drop(conn);
            tracing::info!(%tenant, %user, method, "second factor passed");
            // The code's use commits with the session and its audit row.
            crate::auth::open_session_in(state, client, tx, tenant, user, How::SecondFactor).await
        }
        Checked::Wrong { locked } => {
            tx.rollback().await?;
            let mut tx = db::begin_tenant(&state.pool, tenant).await?;
            psa_models::audit::record(
                &mut tx,
                tenant,
                &psa_models::audit::Actor::User { user },
                psa_models::audit::Action::SecondFactorFailed,
                "user",
                Some(user.0),
                serde_json::json!({
                    "address": client.peer.ip().to_string(),
                    "method": match answer { Answer::Code(_) => "code", Answer::Passkey(_) => "passkey" },
                    "locked": locked,
                }),
            )
            .await?;
            tx.commit().await?;
            metrics::counter!("psa_second_factor_failures_total").increment(1);
            Err(match answer {
                Answer::Code(_) => ApiError::InvalidCode,
                Answer::Passkey(_) => ApiError::InvalidPasskey,
            })
        }
        Checked::Locked(until) => {
            tx.rollback().await?;
            Err(ApiError::RateLimited {
                retry_after: (until - chrono::Utc::now())
                    .to_std()
                    .unwrap_or_default()
                    .max(std::time::Duration::from_secs(1)),
            })
        }
    }
}

/// An authenticator app being set up: type the secret in, or scan the URI as a QR code.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrolment {
    /// Base32.
    pub secret: String,
    /// `otpauth://totp/...`.
    pub otpauth_uri: String,
}

/// Start setting up an authenticator app (TOTP: 6 digits, 30 s, SHA-1) for the caller. Nothing
/// is required of them until it is confirmed with a code. A confirmed one must be removed first
/// (409); a caller who has a passkey proves it is them with the password or a code.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp", tag = "auth", security(("bearer" = [])),
    request_body(content = Option<ProofRequest>, description = "With a passkey already: the password or a code"),
    responses((status = 201, body = TotpEnrolment), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn begin_totp(
    State(state): State<AppState>,
    caller: Caller,
    body: Option<ApiJson<ProofRequest>>,
) -> Result<(StatusCode, Json<TotpEnrolment>), ApiError> {
    let req = body.map(|ApiJson(r)| r).unwrap_or_default();
    let proof = proof_of(&state, &caller, &req).await?;
    let e = psa_app::mfa::begin_totp(&state.app, &caller.principal(), proof).await?;
    Ok((
        StatusCode::CREATED,
        Json(TotpEnrolment {
            secret: e.secret,
            otpauth_uri: e.otpauth_uri,
        }),
    ))
}

/// `POST /api/v1/auth/mfa/totp/confirm` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CodeRequest {
    /// The 6 digits the app shows.
    pub code: String,
}

/// The recovery codes of a confirmed enrolment: shown this once.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

/// Confirm the authenticator app with its first code: from now on sign-ins ask for a code. The
/// ten recovery codes (each works once) are shown this once; this session counts as having
/// passed the second factor.
#[utoipa::path(post, path = "/api/v1/auth/mfa/totp/confirm", tag = "auth", security(("bearer" = [])),
    request_body = CodeRequest,
    responses((status = 200, body = RecoveryCodes), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn confirm_totp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<CodeRequest>,
) -> Result<Json<RecoveryCodes>, ApiError> {
    let codes = psa_app::mfa::confirm_totp(&state.app, &caller.principal(), &req.code).await?;
    Ok(Json(RecoveryCodes {
        recovery_codes: codes,
    }))
}

/// Proof that the caller is who the session says (changing a second factor): the password, or a
/// current code.
#[derive(Deserialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct ProofRequest {
    #[serde(default)]
    #[schema(value_type = Option<String>, format = Password)]
    pub password: Option<SecretString>,
    #[serde(default)]
    pub code: Option<String>,
}

/// Remove the caller's second factor (the app and its recovery codes), proven by the password or
/// a current code. Where the tenant requires one, the next sign-in asks to set one up again.
#[utoipa::path(delete, path = "/api/v1/auth/mfa/totp", tag = "auth", security(("bearer" = [])),
    request_body = ProofRequest,
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn remove_totp(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<ProofRequest>,
) -> Result<StatusCode, ApiError> {
    let proof = proof_of(&state, &caller, &req).await?.ok_or_else(|| {
        ApiError::Model(psa_models::Error::validation(
            "password",
            "Give your password or a code to remove the second factor",
        ))
    })?;
    psa_app::mfa::remove_own(&state.app, &caller.principal(), proof).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The proof a request carries: the password (checked here, with the sign-in limits) or a code
/// (checked by the operation); none when neither is given.
pub(crate) async fn proof_of<'a>(
    state: &AppState,
    caller: &Caller,
    req: &'a ProofRequest,
) -> Result<Option<Proof<'a>>, ApiError> {
    Ok(match (&req.password, req.code.as_deref()) {
        (Some(password), _) => {
            crate::auth::verify_own_password(state, caller, password).await?;
            Some(Proof::PasswordChecked)
        }
        (None, Some(code)) => Some(Proof::Code(code)),
        (None, None) => None,
    })
}

/// What an administrator's reset removed.
#[derive(Serialize, ToSchema)]
pub struct MfaReset {
    /// Whether the user had a second factor.
    pub removed: bool,
}

/// Remove a user's second factors (a lost phone; `user:update`): the user's sessions end and
/// they are told by email when mail is configured; audited.
#[utoipa::path(post, path = "/api/v1/users/{id}/reset-mfa", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = MfaReset), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reset(
    State(state): State<AppState>,
    caller: Caller,
    PathId(user): PathId<UserId>,
) -> Result<Json<MfaReset>, ApiError> {
    let removed = psa_app::mfa::reset(&state.app, &caller.principal(), caller.tenant, user).await?;
    Ok(Json(MfaReset { removed }))
}

/// Whether the platform's support staff may open support sessions into the tenant.
#[derive(Serialize, Deserialize, ToSchema, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SupportAccess {
    Allowed,
    Disabled,
}

/// The tenant's sign-in policy.
#[derive(Serialize, ToSchema)]
pub struct SecurityPolicy {
    /// Every user must have a second factor: one without is asked to set one up at sign-in
    /// and can do nothing else until then.
    pub mfa_required: bool,
    /// Support sessions (management staff acting as one of the tenant's users, audited) are
    /// `allowed` (the default) or `disabled`.
    pub support_access: SupportAccess,
}

/// `PATCH /api/v1/security-policy` body: what to change.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityPolicyChange {
    #[serde(default)]
    pub mfa_required: Option<bool>,
    /// `disabled` also ends the support sessions open now.
    #[serde(default)]
    pub support_access: Option<SupportAccess>,
}

async fn read_policy(state: &AppState, caller: &Caller) -> Result<SecurityPolicy, ApiError> {
    let who = caller.principal();
    who.refuse_in_support("the sign-in policy")?;
    let mfa_required = psa_app::mfa::policy(&state.app, &who, caller.tenant).await?;
    let allowed = psa_app::support::access(&state.app, &who, caller.tenant).await?;
    Ok(SecurityPolicy {
        mfa_required,
        support_access: if allowed {
            SupportAccess::Allowed
        } else {
            SupportAccess::Disabled
        },
    })
}

/// The caller's tenant's sign-in policy (`user:read`).
#[utoipa::path(get, path = "/api/v1/security-policy", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SecurityPolicy), (status = 403, body = ErrorBody)))]
pub async fn policy(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SecurityPolicy>, ApiError> {
    Ok(Json(read_policy(&state, &caller).await?))
}

/// Change the tenant's sign-in policy (`user:update`; audited). Not from a support session
/// (403 `not_in_support_session`).
#[utoipa::path(patch, path = "/api/v1/security-policy", tag = "auth", security(("bearer" = [])),
    request_body = SecurityPolicyChange,
    responses((status = 200, body = SecurityPolicy), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn set_policy(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<SecurityPolicyChange>,
) -> Result<Json<SecurityPolicy>, ApiError> {
    let who = caller.principal();
    who.refuse_in_support("the sign-in policy")?;
    if let Some(on) = req.mfa_required {
        psa_app::mfa::set_policy(&state.app, &who, caller.tenant, on).await?;
    }
    if let Some(access) = req.support_access {
        psa_app::support::set_access(
            &state.app,
            &who,
            caller.tenant,
            access == SupportAccess::Allowed,
        )
        .await?;
    }
    Ok(Json(read_policy(&state, &caller).await?))
}

/// The caller's open sessions.
#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub data: Vec<SessionView>,
}

/// The caller's open sessions: when and where each was opened, when last used, which one is
/// this one.
#[utoipa::path(get, path = "/api/v1/auth/sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = SessionList), (status = 401, body = ErrorBody)))]
pub async fn sessions(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<SessionList>, ApiError> {
    Ok(Json(SessionList {
        data: psa_app::sessions::list_own(&state.app, &caller.principal()).await?,
    }))
}

/// End one of the caller's sessions (another device; audited).
#[utoipa::path(delete, path = "/api/v1/auth/sessions/{id}", tag = "auth", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn end_session(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    psa_app::sessions::end_own(&state.app, &caller.principal(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}
