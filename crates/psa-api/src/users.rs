//! `/api/v1/users`: a tenant's staff (resource `user`). Users are invited, never given a
//! password: the invitation link is mailed to them, and the API never shows it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use psa_models::invitations::{self, Delivered, NewInvitee};
use psa_models::mail::Kind;
use psa_models::users::{self, UserSummary};
use psa_models::{UserId, identity, tenants};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Action, Caller, Permission, Resource};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, path_id};

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
    let mut tx = caller
        .authorize(state, Permission(Resource::User, Action::Read))
        .await?;
    let data = users::list(&mut tx, caller.tenant).await?;
    tx.commit().await?;
    Ok(data)
}

/// A user just invited.
#[derive(Serialize, ToSchema)]
pub struct Invited {
    pub user: UserSummary,
    /// When the invitation link stops working.
    pub invitation_expires_at: DateTime<Utc>,
}

async fn audit(
    conn: &mut PgConnection,
    caller: &Caller,
    action: &str,
    user: UserId,
    details: serde_json::Value,
) -> Result<(), ApiError> {
    psa_models::audit::record(
        conn,
        caller.tenant,
        &caller.actor(),
        action,
        "user",
        Some(user.0),
        details,
    )
    .await?;
    Ok(())
}

/// Mails an invitation (the API's way: before its transaction commits, so that if the mail
/// cannot go out, nothing is written; never showing the link instead).
pub(crate) async fn mail_invitation(
    state: &AppState,
    kind: Kind,
    tenant_name: &str,
    invitation: &invitations::Invitation,
) -> Result<(), ApiError> {
    match state
        .delivery
        .deliver(kind, tenant_name, &invitation.user, &invitation.link)
        .await
    {
        Ok(Delivered::Sent) => Ok(()),
        // Callers check for a mailer before writing anything.
        Ok(Delivered::Shown(_)) => Err(ApiError::MailNotConfigured),
        Err(e) => {
            tracing::warn!(tenant = %invitation.user.tenant, error = %e, "invitation email failed");
            Err(ApiError::MailFailed(e.message))
        }
    }
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
    let mut tx = caller
        .authorize(state, Permission(Resource::User, Action::Create))
        .await?;
    if state.delivery.mailer.is_none() {
        return Err(ApiError::MailNotConfigured);
    }
    let invitation = invitations::invite(
        &mut tx,
        caller.tenant,
        input,
        &state.delivery,
        &caller.actor(),
    )
    .await?;
    let user = invitation.user.user_id;
    audit(
        &mut tx,
        caller,
        "invite",
        user,
        serde_json::json!({"email": invitation.user.email, "role": input.role}),
    )
    .await?;
    let tenant_name = tenants::get(&mut tx, caller.tenant).await?.company_name;
    mail_invitation(state, Kind::Invitation, &tenant_name, &invitation).await?;
    let summary = users::summary(&mut tx, caller.tenant, user).await?;
    tx.commit().await?;
    Ok(Invited {
        user: summary,
        invitation_expires_at: invitation.link.expires_at,
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
    Path(id): Path<String>,
) -> Result<Json<Invited>, ApiError> {
    let id: UserId = path_id(&id)?;
    Ok(Json(resend(&state, &caller, id).await?))
}

/// Sends a new invitation (the old link stops working; `user:create`).
pub async fn resend(state: &AppState, caller: &Caller, id: UserId) -> Result<Invited, ApiError> {
    let mut tx = caller
        .authorize(state, Permission(Resource::User, Action::Create))
        .await?;
    if state.delivery.mailer.is_none() {
        return Err(ApiError::MailNotConfigured);
    }
    let invitation =
        invitations::reissue(&mut tx, caller.tenant, id, &state.delivery, &caller.actor()).await?;
    audit(&mut tx, caller, "resend_invite", id, serde_json::json!({})).await?;
    let tenant_name = tenants::get(&mut tx, caller.tenant).await?.company_name;
    mail_invitation(state, Kind::Invitation, &tenant_name, &invitation).await?;
    let summary = users::summary(&mut tx, caller.tenant, id).await?;
    tx.commit().await?;
    Ok(Invited {
        user: summary,
        invitation_expires_at: invitation.link.expires_at,
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
    Path(id): Path<String>,
    ApiJson(patch): ApiJson<UserPatch>,
) -> Result<Json<UserSummary>, ApiError> {
    let id: UserId = path_id(&id)?;
    Ok(Json(change_role(&state, &caller, id, &patch.role).await?))
}

/// Gives a user one msp role (`user:update`), audited with the roles before and after.
pub async fn change_role(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    role: &str,
) -> Result<UserSummary, ApiError> {
    let mut tx = caller
        .authorize(state, Permission(Resource::User, Action::Update))
        .await?;
    let before = users::summary(&mut tx, caller.tenant, id).await?;
    let after = users::set_role(&mut tx, caller.tenant, id, role).await?;
    audit(
        &mut tx,
        caller,
        "change_role",
        id,
        serde_json::json!({"from": before.roles, "to": after.roles}),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deactivates (`inactive`) or reactivates a user (`user:update`); nobody deactivates
/// themselves.
pub async fn set_inactive(
    state: &AppState,
    caller: &Caller,
    id: UserId,
    inactive: bool,
) -> Result<UserSummary, ApiError> {
    let mut tx = caller
        .authorize(state, Permission(Resource::User, Action::Update))
        .await?;
    if inactive && id == caller.user {
        return Err(ApiError::Model(psa_models::Error::conflict(
            None,
            "You cannot deactivate yourself",
        )));
    }
    let after = identity::set_inactive(&mut tx, caller.tenant, id, inactive).await?;
    let action = if inactive { "deactivate" } else { "reactivate" };
    audit(&mut tx, caller, action, id, serde_json::json!({})).await?;
    tx.commit().await?;
    Ok(after)
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
    Path(id): Path<String>,
) -> Result<Json<UserSummary>, ApiError> {
    let id: UserId = path_id(&id)?;
    Ok(Json(set_inactive(&state, &caller, id, true).await?))
}

/// Reactivate a user. Their API keys work again; sessions ended by the deactivation stay ended.
#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = UserSummary), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<UserSummary>, ApiError> {
    let id: UserId = path_id(&id)?;
    Ok(Json(set_inactive(&state, &caller, id, false).await?))
}
