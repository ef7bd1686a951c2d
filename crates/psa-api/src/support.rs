//! Support sessions over the API (`psa_app::support`): open one into a tenant, list a tenant's,
//! end one; the tenant's consent is part of its sign-in policy (`/api/v1/security-policy`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use psa_models::support::{Request, SupportSession};
use psa_models::{TenantId, UserId};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, PathId, PathIds};

/// `POST /api/v1/tenants/{id}/support-sessions` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OpenSupportSession {
    /// The tenant's user to act as (an active staff user); default: its first administrator.
    #[serde(default)]
    #[schema(value_type = Option<uuid::Uuid>)]
    pub user_id: Option<UserId>,
    /// Why (1-500 characters): the tenant's administrators read it in their audit log.
    pub reason: String,
    /// How long, 1-60 minutes (default 30).
    #[serde(default)]
    pub minutes: Option<u32>,
}

/// A support session just opened.
#[derive(Serialize, ToSchema)]
pub struct OpenedSupportSession {
    /// A bearer token acting as the user in the tenant until `ends_at` (shown once). It cannot
    /// reach credentials (403 `not_in_support_session`); `POST /api/v1/auth/logout` with it ends
    /// the support session.
    pub token: String,
    pub expires_at: DateTime<Utc>,
    pub support_session: SupportSession,
}

/// The support sessions of a tenant.
#[derive(Serialize, ToSchema)]
pub struct SupportSessionList {
    pub data: Vec<SupportSession>,
}

/// Open a support session into a tenant (management, `tenant:support`): act as one of its users
/// for a reason and a bounded time. Every write is audited in the tenant and in the management
/// tenant with both identities; events `support_session.started` and `.ended`. 403
/// `support_access_disabled` when the tenant refuses support access; 409 `tenant_state` when it
/// is not active; 422 on `reason`, `minutes` or `user_id`.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/support-sessions", tag = "tenants",
    security(("bearer" = [])), params(("id" = uuid::Uuid, Path)),
    request_body = OpenSupportSession,
    responses((status = 201, body = OpenedSupportSession), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn open_support_session(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
    ApiJson(req): ApiJson<OpenSupportSession>,
) -> Result<(StatusCode, Json<OpenedSupportSession>), ApiError> {
    let opened = psa_app::support::open(
        &state.app,
        &caller.principal(),
        tenant,
        &Request {
            user: req.user_id,
            reason: req.reason,
            minutes: req.minutes,
        },
    )
    .await?;
    Ok((
        StatusCode::CREATED,
        Json(OpenedSupportSession {
            token: opened.token.expose_secret().to_owned(),
            expires_at: opened.session.ends_at,
            support_session: opened.session,
        }),
    ))
}

/// A tenant's support sessions, newest first (management, `tenant:read`).
#[utoipa::path(get, path = "/api/v1/tenants/{id}/support-sessions", tag = "tenants",
    security(("bearer" = [])), params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = SupportSessionList), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn list_support_sessions(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
) -> Result<Json<SupportSessionList>, ApiError> {
    Ok(Json(SupportSessionList {
        data: psa_app::support::list(&state.app, &caller.principal(), tenant).await?,
    }))
}

/// End a support session now (management, `tenant:support`; or the support session itself).
/// Ending one that has ended changes nothing.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/support-sessions/{session_id}/end",
    tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("session_id" = uuid::Uuid, Path)),
    responses((status = 200, body = SupportSession), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
pub async fn end_support_session(
    State(state): State<AppState>,
    caller: Caller,
    PathIds(tenant, id): PathIds<TenantId, uuid::Uuid>,
) -> Result<Json<SupportSession>, ApiError> {
    Ok(Json(
        psa_app::support::end(&state.app, &caller.principal(), tenant, id).await?,
    ))
}

/// The caller's tenant's view of support (`user:read`): whether support access is allowed, the
/// support sessions into it and what was done in them, newest first. Not from a support session
/// (403 `not_in_support_session`). Change the setting with `PATCH /api/v1/security-policy`.
#[utoipa::path(get, path = "/api/v1/support-sessions", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = psa_app::support::TenantView), (status = 403, body = ErrorBody)))]
pub async fn own_support(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<psa_app::support::TenantView>, ApiError> {
    Ok(Json(
        psa_app::support::own_view(&state.app, &caller.principal(), caller.tenant).await?,
    ))
}
