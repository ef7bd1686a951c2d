//! Events and webhook endpoints over the API (docs/events.md), for callers of the management
//! tenant: `GET /api/v1/events` (`tenant:read`), and `/api/v1/webhook-endpoints` with their
//! deliveries (`webhook:read|create|update|delete`). Every change is audited in the management
//! tenant; an endpoint's secret is shown once, when it is created or rotated.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use psa_models::db::{Page, PageRequest};
use psa_models::events::{Event, EventFilter, EventPage, EventType};
use psa_models::webhooks::{self, Delivery, DeliveryDetails, Endpoint, EndpointPatch, NewEndpoint};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, PathId, PathIds};

/// What the webhook endpoints need from the server's configuration (sealing key, address
/// policy): the operations layer's settings.
pub type WebhookConfig = psa_app::webhooks::WebhookSettings;

/// `GET /api/v1/events` query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventQuery {
    /// The `next_cursor` of the previous page: the events after it.
    pub after: Option<String>,
    /// Only these types, comma-separated (`tenant.suspended,tenant.canceled`).
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub event_type: Option<String>,
    /// Only the events of this tenant.
    pub tenant_id: Option<Uuid>,
    /// 1-200, default 50.
    pub limit: Option<u32>,
}

/// The platform's events, oldest first, a page at a time. A consumer keeps `next_cursor` (given
/// on the last page too) and asks again with `after` to get exactly the events since, without
/// gap or duplicate; `has_more` false means caught up. A page ends before events whose
/// transactions may still commit (docs/events.md).
#[utoipa::path(get, path = "/api/v1/events", tag = "events", security(("bearer" = [])),
    params(EventQuery),
    responses((status = 200, body = EventPage), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn list_events(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<EventQuery>,
) -> Result<Json<EventPage>, ApiError> {
    let types = q
        .event_type
        .as_deref()
        .map(|t| EventType::parse_list(t, "type"))
        .transpose()?
        .unwrap_or_default();
    let page = psa_app::events::list(
        &state.app,
        &caller.principal(),
        &EventFilter {
            types,
            tenant_id: q.tenant_id.map(psa_models::TenantId),
        },
        &PageRequest {
            limit: q.limit,
            cursor: q.after,
        },
    )
    .await?;
    Ok(Json(page))
}

/// One event.
#[utoipa::path(get, path = "/api/v1/events/{id}", tag = "events", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Event), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_event(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
) -> Result<Json<Event>, ApiError> {
    Ok(Json(
        psa_app::events::get(&state.app, &caller.principal(), id).await?,
    ))
}

/// `GET /api/v1/webhook-endpoints` query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1-200, default 50.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The webhook endpoints, oldest first.
#[utoipa::path(get, path = "/api/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])),
    params(PageQuery),
    responses((status = 200, body = Page<Endpoint>), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<PageQuery>,
) -> Result<Json<Page<Endpoint>>, ApiError> {
    let page = psa_app::webhooks::list(
        &state.app,
        &caller.principal(),
        &PageRequest {
            limit: q.limit,
            cursor: q.cursor,
        },
    )
    .await?;
    Ok(Json(page))
}

/// An endpoint with its signing secret: the only time the secret is shown.
#[derive(Serialize, ToSchema)]
pub struct EndpointWithSecret {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_...`: receivers verify signatures with it (Standard Webhooks libraries take it
    /// as it is). Shown once; rotate it if it is lost.
    pub secret: String,
}

/// Create an endpoint. The response holds its signing secret, shown this once.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints", tag = "webhooks", security(("bearer" = [])),
    request_body = NewEndpoint,
    responses((status = 201, body = EndpointWithSecret), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<NewEndpoint>,
) -> Result<(StatusCode, Json<EndpointWithSecret>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(create_endpoint(&state, &caller, &req).await?),
    ))
}

/// Adds an endpoint with a new signing secret, shown this once (the API and the console).
pub async fn create_endpoint(
    state: &AppState,
    caller: &Caller,
    req: &NewEndpoint,
) -> Result<EndpointWithSecret, ApiError> {
    Ok(
        psa_app::webhooks::create(&state.app, &caller.principal(), req)
            .await?
            .into(),
    )
}

impl From<psa_app::webhooks::WithSecret> for EndpointWithSecret {
    fn from(w: psa_app::webhooks::WithSecret) -> Self {
        EndpointWithSecret {
            endpoint: w.endpoint,
            secret: w.secret.expose_secret().to_owned(),
        }
    }
}

/// One endpoint.
#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = Endpoint), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(
        psa_app::webhooks::get(&state.app, &caller.principal(), id).await?,
    ))
}

/// Change an endpoint's URL, description, event types, or enable/disable it (enabling clears
/// its failure record; pending deliveries go out again).
#[utoipa::path(patch, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)), request_body = EndpointPatch,
    responses((status = 200, body = Endpoint), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
    ApiJson(patch): ApiJson<EndpointPatch>,
) -> Result<Json<Endpoint>, ApiError> {
    Ok(Json(
        psa_app::webhooks::update(&state.app, &caller.principal(), id, &patch).await?,
    ))
}

/// Remove an endpoint, with its deliveries and their attempts.
#[utoipa::path(delete, path = "/api/v1/webhook-endpoints/{id}", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
) -> Result<StatusCode, ApiError> {
    psa_app::webhooks::delete(&state.app, &caller.principal(), id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new signing secret, shown this once. The previous one keeps signing too (a second
/// signature in `webhook-signature`) for 24 hours, so receivers can switch without losing a
/// delivery.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 200, body = EndpointWithSecret), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn rotate_secret(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
) -> Result<Json<EndpointWithSecret>, ApiError> {
    Ok(Json(rotate(&state, &caller, id).await?))
}

/// A new signing secret, shown this once; the previous one stays valid for 24 hours.
pub async fn rotate(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
) -> Result<EndpointWithSecret, ApiError> {
    Ok(
        psa_app::webhooks::rotate(&state.app, &caller.principal(), id)
            .await?
            .into(),
    )
}

/// Send a `webhook_endpoint.test` event to this endpoint now (to this one only).
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/test", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path)),
    responses((status = 202, body = DeliveryDetails), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn test(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
) -> Result<(StatusCode, Json<DeliveryDetails>), ApiError> {
    let d = psa_app::webhooks::send_test(&state.app, &caller.principal(), id).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}

/// `GET .../deliveries` query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryQuery {
    /// `pending`, `delivered` or `failed`.
    pub status: Option<String>,
    /// 1-200, default 50.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The endpoint's deliveries, newest first, with their last attempt's outcome.
#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}/deliveries", tag = "webhooks", security(("bearer" = [])),
    params(("id" = Uuid, Path), DeliveryQuery),
    responses((status = 200, body = Page<Delivery>), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<Uuid>,
    ApiQuery(q): ApiQuery<DeliveryQuery>,
) -> Result<Json<Page<Delivery>>, ApiError> {
    let status = q
        .status
        .as_deref()
        .map(webhooks::DeliveryStatus::parse)
        .transpose()?;
    let page = psa_app::webhooks::deliveries(
        &state.app,
        &caller.principal(),
        id,
        status,
        &PageRequest {
            limit: q.limit,
            cursor: q.cursor,
        },
    )
    .await?;
    Ok(Json(page))
}

/// A delivery with every attempt (status, latency, error, the start of the response).
#[utoipa::path(get, path = "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    responses((status = 200, body = DeliveryDetails), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn delivery(
    State(state): State<AppState>,
    caller: Caller,
    PathIds(id, delivery_id): PathIds<Uuid, Uuid>,
) -> Result<Json<DeliveryDetails>, ApiError> {
    Ok(Json(
        psa_app::webhooks::delivery(&state.app, &caller.principal(), id, delivery_id).await?,
    ))
}

/// Attempt a delivery again now: a failed one restarts its schedule; a delivered one is sent
/// again, under the same `webhook-id`.
#[utoipa::path(post, path = "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry", tag = "webhooks",
    security(("bearer" = [])),
    params(("id" = Uuid, Path), ("delivery_id" = Uuid, Path)),
    responses((status = 202, body = DeliveryDetails), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn retry(
    State(state): State<AppState>,
    caller: Caller,
    PathIds(id, delivery_id): PathIds<Uuid, Uuid>,
) -> Result<(StatusCode, Json<DeliveryDetails>), ApiError> {
    let d = psa_app::webhooks::retry(&state.app, &caller.principal(), id, delivery_id).await?;
    Ok((StatusCode::ACCEPTED, Json(d)))
}
