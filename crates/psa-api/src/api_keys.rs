//! `/api/v1/api-keys`: a tenant's API keys for its administrators (`user:update`): what each is
//! and when it was last used (never the key), revoked one by one or all of a user's at once.
//! Keys are made with `psa api-key create` (shown once).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use psa_models::UserId;
use psa_models::credentials::ApiKeySummary;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiQuery, PathId};

/// `GET /api/v1/api-keys` query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct KeyQuery {
    /// Only this user's keys.
    pub user_id: Option<uuid::Uuid>,
}

/// The tenant's API keys.
#[derive(Serialize, ToSchema)]
pub struct ApiKeyList {
    pub data: Vec<ApiKeySummary>,
}

/// The tenant's API keys (of one user with `user_id`), newest first, revoked ones included, with
/// when each was last used.
#[utoipa::path(get, path = "/api/v1/api-keys", tag = "users", security(("bearer" = [])),
    params(KeyQuery),
    responses((status = 200, body = ApiKeyList), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list_api_keys(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<KeyQuery>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let data = psa_app::api_keys::list(
        &state.app,
        &caller.principal(),
        caller.tenant,
        q.user_id.map(UserId),
    )
    .await?;
    Ok(Json(ApiKeyList { data }))
}

/// Revoke an API key: it stops working at once.
#[utoipa::path(delete, path = "/api/v1/api-keys/{id}", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_api_key(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<uuid::Uuid>,
) -> Result<StatusCode, ApiError> {
    if psa_app::api_keys::revoke(&state.app, &caller.principal(), id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound)
    }
}

/// How many keys were revoked.
#[derive(Serialize, ToSchema)]
pub struct Revoked {
    pub revoked: u64,
}

/// Revoke every API key of a user in one action.
#[utoipa::path(post, path = "/api/v1/users/{id}/revoke-api-keys", tag = "users", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Revoked), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn revoke_api_keys_of_user(
    State(state): State<AppState>,
    caller: Caller,
    PathId(user): PathId<UserId>,
) -> Result<Json<Revoked>, ApiError> {
    let revoked =
        psa_app::api_keys::revoke_all_of(&state.app, &caller.principal(), caller.tenant, user)
            .await?;
    Ok(Json(Revoked { revoked }))
}
