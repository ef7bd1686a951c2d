//! `GET /api/v1/search`: a tenant by its name, slug, id, a staff member's email or its customer
//! company's name, for the management tenant's callers (`tenant:read`).

use axum::Json;
use axum::extract::{Query, State};
use psa_models::search::Results;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    /// 3-200 characters: part of a tenant's name, slug or email address of one of its staff, its
    /// customer company's name, or its whole id.
    #[serde(default)]
    pub q: String,
}

/// Search the tenants (management, `tenant:read`): grouped by what matched (the tenant itself,
/// one of its people, its customer company), at most 20 of each, exact and prefix matches
/// first.
#[utoipa::path(get, path = "/api/v1/search", tag = "tenants", security(("bearer" = [])),
    params(SearchQuery),
    responses((status = 200, body = Results), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn search(
    State(state): State<AppState>,
    caller: Caller,
    Query(q): Query<SearchQuery>,
) -> Result<Json<Results>, ApiError> {
    Ok(Json(
        psa_app::search::search(&state.app, &caller.principal(), &q.q).await?,
    ))
}
