//! `/api/v1/companies`: the company server actions (resource `client`, as in the reference).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use psa_models::CompanyId;
use psa_models::companies::{self, Company, CompanyPatch, ListFilter, NewCompany};
use psa_models::db::{Page, PageRequest};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::{Action, Caller, Permission, Resource};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, PathId};

/// Query parameters of the company list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Page size, 1..200 (default 50).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
    /// Only inactive (true) or active (false) companies.
    pub is_inactive: Option<bool>,
    /// Only companies whose name contains this (case-insensitive).
    pub name: Option<String>,
}

/// Create a company (with default tax settings and email suffix).
#[utoipa::path(post, path = "/api/v1/companies", tag = "companies", security(("bearer" = [])),
    request_body = NewCompany,
    responses((status = 201, body = Company), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewCompany>,
) -> Result<(StatusCode, Json<Company>), ApiError> {
    let company =
        psa_app::directory::create_company(&state.app, &caller.principal(), caller.tenant, input)
            .await?;
    Ok((StatusCode::CREATED, Json(company)))
}

/// List companies by name, a page at a time.
#[utoipa::path(get, path = "/api/v1/companies", tag = "companies", security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, body = Page<Company>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Company>>, ApiError> {
    let mut tx = caller
        .authorize(&state, Permission(Resource::Client, Action::Read))
        .await?;
    let page = companies::list(
        &mut tx,
        caller.tenant,
        &ListFilter {
            is_inactive: q.is_inactive,
            name: q.name,
        },
        &PageRequest {
            limit: q.limit,
            cursor: q.cursor,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Json(page))
}

/// Get a company.
#[utoipa::path(get, path = "/api/v1/companies/{company_id}", tag = "companies", security(("bearer" = [])),
    params(("company_id" = uuid::Uuid, Path)),
    responses((status = 200, body = Company), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<CompanyId>,
) -> Result<Json<Company>, ApiError> {
    let mut tx = caller
        .authorize(&state, Permission(Resource::Client, Action::Read))
        .await?;
    let company = companies::get(&mut tx, caller.tenant, id).await?;
    tx.commit().await?;
    Ok(Json(company))
}

/// Update a company (absent fields are kept; null or "" clears).
#[utoipa::path(patch, path = "/api/v1/companies/{company_id}", tag = "companies", security(("bearer" = [])),
    params(("company_id" = uuid::Uuid, Path)), request_body = CompanyPatch,
    responses((status = 200, body = Company), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<CompanyId>,
    ApiJson(patch): ApiJson<CompanyPatch>,
) -> Result<Json<Company>, ApiError> {
    let company = psa_app::directory::update_company(
        &state.app,
        &caller.principal(),
        caller.tenant,
        id,
        patch,
    )
    .await?;
    Ok(Json(company))
}

/// Delete a company and its tag mappings (refused while it has contacts).
#[utoipa::path(delete, path = "/api/v1/companies/{company_id}", tag = "companies", security(("bearer" = [])),
    params(("company_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<CompanyId>,
) -> Result<StatusCode, ApiError> {
    psa_app::directory::delete_company(&state.app, &caller.principal(), caller.tenant, id).await?;
    Ok(StatusCode::NO_CONTENT)
}
