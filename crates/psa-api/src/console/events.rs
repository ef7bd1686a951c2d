//! Events and webhooks (management): the latest events, and the webhook endpoints with their
//! deliveries, a retry button, a test event, secret rotation and removal. Permissions are the
//! API's (`tenant:read` for events, `webhook:*`); the model functions and `crate::webhooks` do
//! the work, with the same audit rows.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use psa_models::db::PageRequest;
use psa_models::events::{self, EventFilter, EventType};
use psa_models::webhooks::{self, DeliveryStatus, EndpointPatch, NewEndpoint};
use serde::Deserialize;
use uuid::Uuid;

use super::{
    Console, CsrfForm, FieldErrors, Nav, Opt, PageId, PageIdAnd, PageIds, Refused, done, page,
    page_ok, query_id, when,
};
use crate::AppState;
use crate::auth::{Action, Permission, Resource};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/events", get(events_page))
        .route("/console/webhooks", get(endpoints).post(create))
        .route("/console/webhooks/{id}", get(endpoint))
        .route("/console/webhooks/{id}/rotate", post(rotate))
        .route("/console/webhooks/{id}/delete", post(delete))
        .route("/console/webhooks/{id}/{change}", post(one_click))
        .route(
            "/console/webhooks/{id}/deliveries/{delivery}/retry",
            post(retry),
        )
}

struct EventRow {
    id: String,
    time: String,
    event_type: String,
    tenant_id: Option<String>,
    name: String,
    data: String,
}

#[derive(Template)]
#[template(path = "console/events.html")]
struct EventsPage {
    nav: Option<Nav>,
    types: Vec<Opt>,
    rows: Vec<EventRow>,
    older: Option<String>,
}

#[derive(Deserialize, Default)]
struct EventsQuery {
    #[serde(default, rename = "type")]
    event_type: String,
    #[serde(default)]
    before: String,
}

fn type_options(chosen: &str) -> Vec<Opt> {
    std::iter::once(Opt {
        value: "",
        label: "Any",
        selected: chosen.is_empty(),
    })
    .chain(EventType::ALL.iter().map(|t| Opt {
        value: t.as_str(),
        label: t.as_str(),
        selected: t.as_str() == chosen,
    }))
    .collect()
}

async fn events_page(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<EventsQuery>,
) -> Result<Response, Refused> {
    let types = match q.event_type.as_str() {
        "" => Vec::new(),
        t => vec![EventType::parse(t, "type").map_err(ApiError::from)?],
    };
    let before = match q.before.as_str() {
        "" => None,
        b => Some(query_id::<Uuid>(b, "event")?),
    };
    let mut tx = console
        .caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Read))
        .await?;
    let list = events::recent(
        &mut tx,
        &EventFilter {
            types,
            tenant_id: None,
        },
        before,
        50,
    )
    .await
    .map_err(ApiError::from)?;
    done(tx).await?;
    let older = (list.len() == 50).then(|| {
        let last = list.last().map(|e| e.id.to_string()).unwrap_or_default();
        format!(
            "/console/events?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("type", &q.event_type)
                .append_pair("before", &last)
                .finish()
        )
    });
    Ok(page_ok(EventsPage {
        nav: console.nav("events"),
        types: type_options(&q.event_type),
        rows: list
            .into_iter()
            .map(|e| EventRow {
                id: e.id.to_string(),
                time: when(e.created_at),
                // What the event is about, by the shapes of docs/events.md.
                name: [
                    "/name",
                    "/tenant_name",
                    "/tenant/name",
                    "/url",
                    "/endpoint/url",
                ]
                .iter()
                .find_map(|p| e.data.pointer(p).and_then(|n| n.as_str()))
                .unwrap_or_default()
                .to_owned(),
                tenant_id: e.tenant_id.map(|t| t.to_string()),
                event_type: e.event_type,
                data: serde_json::to_string_pretty(&e.data).unwrap_or_default(),
            })
            .collect(),
        older,
    }))
}

struct EndpointRow {
    id: String,
    url: String,
    description: String,
    events: String,
    state: String,
    enabled: bool,
}

#[derive(Deserialize, Default)]
struct EndpointForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    description: String,
    /// The ticked event types (`event_type`, once per box).
    #[serde(default, rename = "event_type")]
    event_types: Vec<String>,
}

#[derive(Template)]
#[template(path = "console/webhooks.html")]
struct EndpointsPage {
    nav: Option<Nav>,
    csrf: String,
    notice: Option<String>,
    rows: Vec<EndpointRow>,
    f: EndpointForm,
    types: Vec<Opt>,
    errors: FieldErrors,
}

fn checked_types(chosen: &[String]) -> Vec<Opt> {
    EventType::ALL
        .iter()
        .map(|t| Opt {
            value: t.as_str(),
            label: t.as_str(),
            selected: chosen.iter().any(|c| c == t.as_str()),
        })
        .collect()
}

/// The events an endpoint receives, as shown.
fn events_of(e: &webhooks::Endpoint) -> String {
    if e.event_types.is_empty() {
        "all".into()
    } else {
        e.event_types.join(", ")
    }
}

fn endpoint_state(e: &webhooks::Endpoint) -> String {
    match (&e.disabled_reason, e.enabled, e.failing_since) {
        (_, true, Some(since)) => format!("enabled, failing since {}", when(since)),
        (_, true, None) => "enabled".into(),
        (Some(r), false, _) => format!("disabled: {r}"),
        (None, false, _) => "disabled".into(),
    }
}

async fn endpoints_page(
    state: &AppState,
    console: &Console,
    f: EndpointForm,
    errors: FieldErrors,
) -> Result<EndpointsPage, Refused> {
    let mut tx = console
        .caller
        .authorize_management(state, Permission(Resource::Webhook, Action::Read))
        .await?;
    let list = webhooks::list(
        &mut tx,
        &PageRequest {
            limit: Some(200),
            cursor: None,
        },
    )
    .await
    .map_err(ApiError::from)?;
    done(tx).await?;
    Ok(EndpointsPage {
        nav: console.nav("webhooks"),
        csrf: console.csrf.clone(),
        notice: None,
        rows: list
            .items
            .iter()
            .map(|e| EndpointRow {
                id: e.endpoint_id.to_string(),
                url: e.url.clone(),
                description: e.description.clone(),
                events: events_of(e),
                state: endpoint_state(e),
                enabled: e.enabled,
            })
            .collect(),
        types: checked_types(&f.event_types),
        f,
        errors,
    })
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: String,
    #[serde(default)]
    status: String,
}

async fn endpoints(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<DoneQuery>,
) -> Result<Response, Refused> {
    let mut p = endpoints_page(
        &state,
        &console,
        EndpointForm::default(),
        FieldErrors::default(),
    )
    .await?;
    if q.done == "deleted" {
        p.notice = Some("The endpoint was removed; its pending deliveries are dropped.".into());
    }
    Ok(page_ok(p))
}

async fn create(
    State(state): State<AppState>,
    console: Console,
    // axum-extra's form: the ticked event types come as one repeated field.
    axum_extra::extract::Form(f): axum_extra::extract::Form<EndpointForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let req = NewEndpoint {
        url: f.url.clone(),
        description: Some(f.description.clone()).filter(|d| !d.trim().is_empty()),
        event_types: f.event_types.clone(),
    };
    match crate::webhooks::create_endpoint(&state, &console.caller, &req).await {
        Ok(made) => {
            let mut p = endpoint_view(&console, &made.endpoint, Vec::new(), "");
            p.secret = Some(made.secret);
            p.notice = Some("Endpoint added.".into());
            Ok(page(StatusCode::CREATED, p))
        }
        Err(e) => {
            let errors = FieldErrors::from_error(e, &["url", "description", "event_types"])?;
            let p = endpoints_page(&state, &console, f, errors).await?;
            Ok(page(StatusCode::UNPROCESSABLE_ENTITY, p))
        }
    }
}

struct DeliveryRow {
    id: String,
    time: String,
    event_type: String,
    status: String,
    attempts: i32,
    outcome: String,
    retryable: bool,
}

#[derive(Template)]
#[template(path = "console/webhook.html")]
struct EndpointPage {
    nav: Option<Nav>,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    /// A signing secret just made: shown this once.
    secret: Option<String>,
    id: String,
    url: String,
    description: String,
    events: String,
    state: String,
    enabled: bool,
    created: String,
    statuses: Vec<Opt>,
    deliveries: Vec<DeliveryRow>,
}

async fn endpoint_page(
    state: &AppState,
    console: &Console,
    id: Uuid,
    status: &str,
) -> Result<EndpointPage, Refused> {
    let status_filter = match status {
        "" => None,
        s => Some(DeliveryStatus::parse(s).map_err(ApiError::from)?),
    };
    let mut tx = console
        .caller
        .authorize_management(state, Permission(Resource::Webhook, Action::Read))
        .await?;
    let e = webhooks::get(&mut tx, id).await.map_err(ApiError::from)?;
    let list = webhooks::deliveries(
        &mut tx,
        id,
        status_filter,
        &PageRequest {
            limit: Some(50),
            cursor: None,
        },
    )
    .await
    .map_err(ApiError::from)?;
    done(tx).await?;
    Ok(endpoint_view(console, &e, list.items, status))
}

/// An endpoint's page from what is at hand (a secret just made is shown from the endpoint the
/// change returned, whatever a later read would say).
fn endpoint_view(
    console: &Console,
    e: &webhooks::Endpoint,
    deliveries: Vec<webhooks::Delivery>,
    status: &str,
) -> EndpointPage {
    EndpointPage {
        nav: console.nav("webhooks"),
        csrf: console.csrf.clone(),
        notice: None,
        error: None,
        secret: None,
        id: e.endpoint_id.to_string(),
        url: e.url.clone(),
        description: e.description.clone(),
        events: events_of(e),
        state: endpoint_state(e),
        enabled: e.enabled,
        created: when(e.created_at),
        statuses: super::options(
            &[
                ("", "Any"),
                ("pending", "Pending"),
                ("delivered", "Delivered"),
                ("failed", "Failed"),
            ],
            status,
        ),
        deliveries: deliveries
            .into_iter()
            .map(|d| DeliveryRow {
                id: d.delivery_id.to_string(),
                time: when(d.created_at),
                event_type: d.event_type,
                status: match d.status {
                    DeliveryStatus::Pending => "pending",
                    DeliveryStatus::Delivered => "delivered",
                    DeliveryStatus::Failed => "failed",
                }
                .into(),
                attempts: d.attempts,
                outcome: match (d.last_response_status, d.last_error) {
                    (Some(code), None) => format!("HTTP {code}"),
                    (Some(code), Some(e)) => format!("HTTP {code}: {e}"),
                    (None, Some(e)) => e,
                    (None, None) => String::new(),
                },
                retryable: d.status == DeliveryStatus::Failed,
            })
            .collect(),
    }
}

async fn endpoint(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<Uuid>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, Refused> {
    let mut p = endpoint_page(&state, &console, id, &q.status).await?;
    p.notice = match q.done.as_str() {
        "test" => Some("A test event is on its way.".into()),
        "retry" => Some("The delivery is queued again.".into()),
        "enabled" => Some("Enabled: deliveries resume.".into()),
        "disabled" => Some("Disabled: nothing is sent until it is enabled.".into()),
        _ => None,
    };
    Ok(page_ok(p))
}

/// A change to an endpoint from its page.
enum Change {
    Test,
    Enabled(bool),
    Delete,
    Retry(Uuid),
}

/// Runs a change in a management transaction with the API's permission for it, then back to
/// the endpoint's page (the list after a removal); a refusal is shown on the page.
async fn change(
    state: &AppState,
    console: &Console,
    id: Uuid,
    what: Change,
) -> Result<Response, Refused> {
    let (app, who) = (&state.app, console.caller.principal());
    let (outcome, done_as) = match what {
        Change::Test => (
            psa_app::webhooks::send_test(app, &who, id)
                .await
                .map(|_| ()),
            "test",
        ),
        Change::Enabled(enabled) => {
            let patch = EndpointPatch {
                url: None,
                description: None,
                event_types: None,
                enabled: Some(enabled),
            };
            (
                psa_app::webhooks::update(app, &who, id, &patch)
                    .await
                    .map(|_| ()),
                if enabled { "enabled" } else { "disabled" },
            )
        }
        Change::Delete => (psa_app::webhooks::delete(app, &who, id).await, "deleted"),
        Change::Retry(delivery) => (
            psa_app::webhooks::retry(app, &who, id, delivery)
                .await
                .map(|_| ()),
            "retry",
        ),
    };
    match outcome {
        Ok(()) => {
            let to = if done_as == "deleted" {
                "/console/webhooks?done=deleted".to_owned()
            } else {
                format!("/console/webhooks/{id}?done={done_as}")
            };
            Ok(Redirect::to(&to).into_response())
        }
        // Not allowed: the refusal page, as for any page the caller may not use.
        Err(e @ psa_models::Error::Forbidden(_)) => Err(ApiError::from(e).into()),
        Err(e) => {
            let message = FieldErrors::from_error(e.into(), &[])?
                .general
                .unwrap_or_default();
            let mut p = endpoint_page(state, console, id, "").await?;
            p.error = Some(message);
            Ok(page(StatusCode::UNPROCESSABLE_ENTITY, p))
        }
    }
}

/// The one-click changes of an endpoint's page: `test`, `enable`, `disable`.
async fn one_click(
    State(state): State<AppState>,
    console: Console,
    PageIdAnd(id, what): PageIdAnd<Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let what = match what.as_str() {
        "test" => Change::Test,
        "enable" => Change::Enabled(true),
        "disable" => Change::Enabled(false),
        _ => return Err(super::not_found("page")),
    };
    change(&state, &console, id, what).await
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm: String,
}

async fn delete(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<Uuid>,
    Form(f): Form<DeleteForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    if f.confirm != "yes" {
        let mut p = endpoint_page(&state, &console, id, "").await?;
        p.error = Some("Tick the confirmation to remove the endpoint".into());
        return Ok(page(StatusCode::UNPROCESSABLE_ENTITY, p));
    }
    change(&state, &console, id, Change::Delete).await
}

async fn rotate(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let made = crate::webhooks::rotate(&state, &console.caller, id).await?;
    let mut p = match endpoint_page(&state, &console, id, "").await {
        Ok(p) => p,
        Err(_) => endpoint_view(&console, &made.endpoint, Vec::new(), ""),
    };
    p.secret = Some(made.secret);
    p.notice =
        Some("New signing secret below; the previous one keeps working for 24 hours.".into());
    Ok(page_ok(p))
}

async fn retry(
    State(state): State<AppState>,
    console: Console,
    PageIds(id, delivery): PageIds<Uuid, Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    change(&state, &console, id, Change::Retry(delivery)).await
}
