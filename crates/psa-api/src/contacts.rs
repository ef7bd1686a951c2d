//! `/api/v1/contacts`: the contact server actions (resource `contact`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use psa_models::contacts::{self, Contact, ContactPatch, ListFilter, NewContact};
use psa_models::db::{Page, PageRequest};
use psa_models::{CompanyId, ContactId};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::{Action, Caller, Permission, Resource};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, PathId};

/// Query parameters of the contact list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<u32>,
    pub cursor: Option<String>,
    #[param(value_type = Option<uuid::Uuid>)]
    pub company_id: Option<CompanyId>,
    pub is_inactive: Option<bool>,
    /// Only contacts whose name or email contains this (case-insensitive).
    pub name: Option<String>,
}

/// Create a contact.
#[utoipa::path(post, path = "/api/v1/contacts", tag = "contacts", security(("bearer" = [])),
    request_body = NewContact,
    responses((status = 201, body = Contact), (status = 404, body = ErrorBody, description = "foreign_key_error: the company does not exist"),
              (status = 409, body = ErrorBody, description = "email_exists"), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewContact>,
) -> Result<(StatusCode, Json<Contact>), ApiError> {
    let contact =
        psa_app::directory::create_contact(&state.app, &caller.principal(), caller.tenant, input)
            .await?;
    Ok((StatusCode::CREATED, Json(contact)))
}

/// List contacts by name, a page at a time.
#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts", security(("bearer" = [])),
    params(ListQuery), responses((status = 200, body = Page<Contact>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Page<Contact>>, ApiError> {
    let mut tx = caller
        .authorize(&state, Permission(Resource::Contact, Action::Read))
        .await?;
    let page = contacts::list(
        &mut tx,
        caller.tenant,
        &ListFilter {
            company_id: q.company_id,
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

/// Get a contact.
#[utoipa::path(get, path = "/api/v1/contacts/{contact_name_id}", tag = "contacts", security(("bearer" = [])),
    params(("contact_name_id" = uuid::Uuid, Path)),
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<ContactId>,
) -> Result<Json<Contact>, ApiError> {
    let mut tx = caller
        .authorize(&state, Permission(Resource::Contact, Action::Read))
        .await?;
    let contact = contacts::get(&mut tx, caller.tenant, id).await?;
    tx.commit().await?;
    Ok(Json(contact))
}

/// Update a contact.
#[utoipa::path(patch, path = "/api/v1/contacts/{contact_name_id}", tag = "contacts", security(("bearer" = [])),
    params(("contact_name_id" = uuid::Uuid, Path)), request_body = ContactPatch,
    responses((status = 200, body = Contact), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<ContactId>,
    ApiJson(patch): ApiJson<ContactPatch>,
) -> Result<Json<Contact>, ApiError> {
    let contact = psa_app::directory::update_contact(
        &state.app,
        &caller.principal(),
        caller.tenant,
        id,
        patch,
    )
    .await?;
    Ok(Json(contact))
}
