//! `/api/v1/users`: a tenant's staff (resource `user`). Users are invited, never given a
//! password: the invitation link is mailed to them, and the API never shows it.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use psa_app::users::LinkDelivery;
use psa_models::UserId;
use psa_models::invitations::NewInvitee;
use psa_models::users::UserSummary;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, PathId};

/// The tenant's staff.
#[derive(Serialize, ToSchema)]
pub struct UserList {
    pub data: Vec<UserSummary>,
}

/// List the tenant's users (staff), oldest first, with their roles and status (`invited`,
/// `active`, `inactive`).
#[utoipa::path(get, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    responses((status = 200, body = UserList), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<UserList>, ApiError> {
    Ok(Json(UserList {
        data: list_users(&state, &caller).await?,
    }))
}

/// The tenant's staff users (`user:read`; the API and the console).
pub async fn list_users(state: &AppState, caller: &Caller) -> Result<Vec<UserSummary>, ApiError> {
    Ok(psa_app::users::list(&state.app, &caller.principal(), caller.tenant).await?)
}

/// A user just invited.
#[derive(Serialize, ToSchema)]
pub struct Invited {
    pub user: UserSummary,
    /// When the invitation link stops working.
    pub invitation_expires_at: DateTime<Utc>,
}

/// Invite a user with a role: the user is created without a password and mailed a single-use
/// link to set one. Needs `user:create` and mail settings on the server (409
/// `mail_not_configured` otherwise; `psa user invite` prints the link instead).
#[utoipa::path(post, path = "/api/v1/users", tag = "users", security(("bearer" = [])),
    request_body = NewInvitee,
    responses((status = 201, body = Invited), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the email is taken, or the server sends no mail"),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody, description = "mail_failed: nothing was written")))]
pub async fn invite(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewInvitee>,
) -> Result<(StatusCode, Json<Invited>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(invite_user(&state, &caller, &input).await?),
    ))
}

/// Invites a user by email (`user:create`; the API and the console): written only once the
/// mail went out.
pub async fn invite_user(
    state: &AppState,
    caller: &Caller,
    input: &NewInvitee,
) -> Result<Invited, ApiError> {
    let done = psa_app::users::invite(
        &state.app,
        &caller.principal(),
        caller.tenant,
        input,
        LinkDelivery::Mail,
    )
    .await?;
    Ok(Invited {
        user: done.user,
        invitation_expires_at: done.expires_at,
    })
}

/// Send a user who has not accepted their invitation a new one; the earlier link stops working.
#[utoipa::path(post, path = "/api/v1/users/{id}/resend-invite", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Invited), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "already accepted, deactivated, or the server sends no mail"),
              (status = 503, body = ErrorBody)))]
pub async fn resend_invite(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<UserId>,
) -> Result<Json<Invited>, ApiError> {
    Ok(Json(resend(&state, &caller, id).await?))
}

/// Sends a new invitation (the old link stops working; `user:create`).
pub async fn resend(state: &AppState, caller: &Caller, id: UserId) -> Result<Invited, ApiError> {
    let done = psa_app::users::resend_invite(
        &state.app,
        &caller.principal(),
        caller.tenant,
        id,
        LinkDelivery::Mail,
    )
    .await?;
    Ok(Invited {
        user: done.user,
        invitation_expires_at: done.expires_at,
    })
}

/// `PATCH /api/v1/users/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    /// The user's one msp role (their other msp roles are removed).
    pub role: String,
}

/// Change a user's role. The tenant's last active administrator keeps the Admin role (409).
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = UserPatch,
    responses((status = 200, body = UserSummary), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<UserId>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<UserSummary>, ApiError> {
    Ok(Json(change_role(&state, &caller, id, &patch.role).await?))
}

/// Gives a user one msp role (`user:update`), audited with the roles before and after.
pub async fn change_role(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    role: &str,
) -> Result<UserSummary, ApiError> {
    Ok(
        psa_app::users::change_role(&state.app, &caller.principal(), caller.tenant, id, role)
            .await?,
    )
}

/// Deactivates (`inactive`) or reactivates a user (`user:update`); nobody deactivates
/// themselves.
pub async fn set_inactive(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    inactive: bool,
) -> Result<UserSummary, ApiError> {
    Ok(
        psa_app::users::set_inactive(&state.app, &caller.principal(), caller.tenant, id, inactive)
            .await?,
    )
}

/// Deactivate a user: their sessions, API keys and open links stop working at once. The
/// tenant's last active administrator, and the caller, cannot be deactivated (409).
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UserSummary), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn deactivate(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<UserId>,
) -> Result<Json<UserSummary>, ApiError> {
    Ok(Json(set_inactive(&state, &caller, id, true).await?))
}

/// Reactivate a user. What the deactivation ended (sessions, API keys, open links) stays ended.
#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UserSummary), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<UserId>,
) -> Result<Json<UserSummary>, ApiError> {
    Ok(Json(set_inactive(&state, &caller, id, false).await?))
}
