//! New tenant: the form, then a page that follows the run live (server-sent events from the
//! same view as `GET /api/v1/tenants/provisioning/{id}` and `psa tenant status`), whoever
//! started it.

use std::convert::Infallible;
use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use psa_models::provisioning::TrackingState;
use psa_workflows::client::IdempotencyKey;
use psa_workflows::{ActivityName, CORE_STEPS, Outcome, ProvisioningView, Step, WelcomeStatus};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::{Console, FieldErrors, Nav, Refused, page, page_ok};
use crate::AppState;
use crate::error::ApiError;
use crate::tenants::{AdminUser, NewTenantRequest};

/// The face runs started here are recorded under (`console:<user id>`).
const FACE: &str = "console";

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/tenants/new", get(form).post(create))
        .route("/console/provisioning/{id}", get(progress_view))
        .route("/console/provisioning/{id}/events", get(events))
}

#[derive(Deserialize, Default)]
struct NewTenantForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    key: String,
    #[serde(default)]
    tenant_name: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    company_name: String,
    #[serde(default)]
    license_count: String,
    #[serde(default)]
    skip_customer_tracking: Option<String>,
    #[serde(default)]
    slug: String,
    #[serde(default)]
    plan: String,
}

#[derive(Template)]
#[template(path = "console/new_tenant.html")]
struct NewTenantPage {
    nav: Option<Nav>,
    csrf: String,
    f: NewTenantForm,
    errors: FieldErrors,
    /// The plans offered (empty for a caller who may not read them: the default plan).
    plans: Vec<psa_models::plans::Plan>,
}

/// The plans offered, for the form's choice.
async fn offered(state: &AppState, console: &Console) -> Vec<psa_models::plans::Plan> {
    psa_app::plans::list(&state.app, &console.caller.principal())
        .await
        .map(|all| all.into_iter().filter(|p| p.active).collect())
        .unwrap_or_default()
}

/// A path segment: a run's id may carry any printable character of its idempotency key.
pub(super) fn segment(raw: &str) -> String {
    form_urlencoded::byte_serialize(raw.as_bytes()).collect()
}

/// A fresh idempotency key per form: a double submit starts one run.
fn fresh_key() -> String {
    format!("console-{}", uuid::Uuid::new_v4())
}

async fn form(State(state): State<AppState>, console: Console) -> Result<Response, Refused> {
    // The form is for those who may provision: others learn it here, not after filling it.
    let tx = console
        .caller
        .authorize_management(
            &state,
            crate::auth::Permission(crate::auth::Resource::Tenant, crate::auth::Action::Create),
        )
        .await?;
    super::done(tx).await?;
    Ok(page_ok(NewTenantPage {
        nav: console.nav("new"),
        csrf: console.csrf.clone(),
        f: NewTenantForm {
            key: fresh_key(),
            plan: state.app.settings.default_plan.clone(),
            ..NewTenantForm::default()
        },
        errors: FieldErrors::default(),
        plans: offered(&state, &console).await,
    }))
}

const FIELDS: [&str; 7] = [
    "tenant_name",
    "first_name",
    "last_name",
    "email",
    "company_name",
    "license_count",
    "plan",
];

async fn create(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<NewTenantForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let started = start(&state, &console, &f).await;
    match started {
        Ok(workflow_id) => Ok(Redirect::to(&format!(
            "/console/provisioning/{}",
            segment(&workflow_id)
        ))
        .into_response()),
        Err(e) => {
            let errors = FieldErrors::from_error(e, &FIELDS)?;
            Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                NewTenantPage {
                    nav: console.nav("new"),
                    csrf: console.csrf.clone(),
                    plans: offered(&state, &console).await,
                    f,
                    errors,
                },
            ))
        }
    }
}

async fn start(state: &AppState, console: &Console, f: &NewTenantForm) -> Result<String, ApiError> {
    let license_count = match f.license_count.trim() {
        "" => None,
        n => Some(n.parse::<i32>().map_err(|_| {
            psa_models::Error::validation("license_count", "The licence count is a whole number")
        })?),
    };
    let key = IdempotencyKey::parse(&f.key).map_err(|_| {
        ApiError::bad_request(
            None,
            "This form is incomplete: reload the page and try again",
        )
    })?;
    let req = NewTenantRequest {
        tenant_name: f.tenant_name.clone(),
        admin_user: AdminUser {
            first_name: f.first_name.clone(),
            last_name: f.last_name.clone(),
            email: f.email.clone(),
        },
        company_name: Some(f.company_name.clone()).filter(|c| !c.trim().is_empty()),
        license_count,
        skip_customer_tracking: f.skip_customer_tracking.is_some(),
        slug: Some(f.slug.trim().to_owned()).filter(|s| !s.is_empty()),
        plan: Some(f.plan.trim().to_owned()).filter(|p| !p.is_empty()),
    };
    crate::tenants::start(
        state,
        &console.caller,
        &req,
        Some(&key),
        &crate::tenants::starter(FACE, &console.caller),
    )
    .await
}

/// One step as the page shows it; `state` is also its CSS class.
#[derive(Serialize, Clone, PartialEq)]
struct StepView {
    id: &'static str,
    label: &'static str,
    state: &'static str,
}

/// What the page and its event stream show of a run: computed here, once, for both.
#[derive(Serialize, Clone, PartialEq)]
struct Progress {
    finished: bool,
    headline: String,
    core: Vec<StepView>,
    tracking: Vec<StepView>,
}

fn progress(view: &ProvisioningView) -> Progress {
    let step = view
        .result
        .as_ref()
        .map(|r| r.status.step())
        .or_else(|| view.state.as_ref().map(|s| s.step))
        .unwrap_or(Step::Initializing);
    // The core step a failed run stopped at, from its result.
    let failed_at = view
        .result
        .as_ref()
        .and_then(|r| r.error.as_ref())
        .and_then(|e| {
            CORE_STEPS
                .iter()
                .position(|s| s.activity().map(psa_workflows::FailedStep::of) == Some(e.step))
        });
    let rolled_back = view.result.as_ref().is_some_and(|r| r.rollback.performed);
    let current = CORE_STEPS.iter().position(|s| *s == step);
    let core = CORE_STEPS
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let state = match step {
                Step::Completed | Step::SendingWelcomeEmail => "done",
                Step::Initializing => "pending",
                Step::Failed | Step::RolledBack | Step::Cancelled | Step::RollingBack => {
                    match failed_at {
                        Some(f) if i == f => "failed",
                        Some(f) if i < f && rolled_back => "undone",
                        Some(f) if i < f => "done",
                        Some(_) => "skipped",
                        None if step == Step::RollingBack => "undone",
                        None => "skipped",
                    }
                }
                _ => match current {
                    Some(c) if i < c => "done",
                    Some(c) if i == c => "active",
                    _ => "pending",
                },
            };
            StepView {
                // Core steps are named by the activity they run.
                id: s.activity().map_or("other", ActivityName::as_str),
                label: s.label(),
                state,
            }
        })
        .collect();
    let t = view
        .state
        .as_ref()
        .map(|s| s.customer_tracking.clone())
        .or_else(|| view.result.as_ref().map(|r| r.customer_tracking.clone()))
        .unwrap_or_default();
    let made = [
        t.customer_company_id.is_some(),
        t.customer_contact_id.is_some(),
        t.customer_tag_id.is_some(),
    ];
    let first_missing = made.iter().position(|m| !m);
    let tracking = [
        ("customer_company", "customer company"),
        ("customer_contact", "admin as contact"),
        ("customer_tag", "customer tag"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (id, label))| {
        let state = match t.status {
            TrackingState::Completed | TrackingState::Repaired => "done",
            TrackingState::Skipped | TrackingState::Disabled => "skipped",
            TrackingState::RolledBack => "undone",
            TrackingState::Pending => "pending",
            TrackingState::Running if made[i] => "done",
            TrackingState::Running if first_missing == Some(i) => "active",
            TrackingState::Running => "pending",
            TrackingState::Failed if made[i] => "done",
            TrackingState::Failed if first_missing == Some(i) => "failed",
            TrackingState::Failed => "skipped",
        };
        StepView { id, label, state }
    })
    .collect();
    let headline = match (step, &view.notice) {
        (_, Some(n)) if !view.finished => format!("Waiting: {n}"),
        (Step::Completed, _) => "Completed".to_owned(),
        (Step::RolledBack, _) => "Failed and rolled back: nothing of the tenant is left".into(),
        (Step::Failed, _) => "Failed".into(),
        (Step::Cancelled, _) => "Cancelled".into(),
        (s, _) => format!("Running: {}", s.label()),
    };
    Progress {
        finished: view.finished,
        headline,
        core,
        tracking,
    }
}

#[derive(Template)]
#[template(path = "console/progress.html")]
struct ProgressPage {
    nav: Option<Nav>,
    workflow_id: String,
    tenant_name: String,
    tenant_id: Option<String>,
    p: Progress,
    outcome: String,
    welcome: Option<String>,
    invitation_link: Option<String>,
    error: Option<String>,
    rollback: Vec<String>,
    rollback_errors: Vec<String>,
    tracking_note: Option<String>,
    notice: Option<String>,
}

fn humanize(activity: &str) -> String {
    activity.replace('_', " ")
}

async fn progress_page(
    state: &AppState,
    console: &Console,
    workflow_id: &str,
) -> Result<ProgressPage, Refused> {
    let view = crate::tenants::view(state, &console.caller, workflow_id).await?;
    let link = crate::tenants::invitation_link_for_starter(state, &console.caller, &view, FACE)
        .await?
        .map(|l| l.expose_secret().to_owned());
    let p = progress(&view);
    let result = view.result.as_ref();
    let welcome =
        result
            .filter(|r| r.status == Outcome::Completed)
            .map(|r| {
                match r.welcome_email.status {
            WelcomeStatus::Sent => "The welcome email with the invitation went out.".to_owned(),
            WelcomeStatus::Disabled => {
                "No email is configured: the admin's invitation link is below for you to pass on."
                    .to_owned()
            }
            WelcomeStatus::Failed => format!(
                "The welcome email could not be sent ({}): resend it from the tenant's users.",
                r.welcome_email.error.as_deref().unwrap_or("no reason given")
            ),
            WelcomeStatus::Pending => "The welcome email is pending.".to_owned(),
        }
            });
    let tracking = view
        .state
        .as_ref()
        .map(|s| &s.customer_tracking)
        .or(result.map(|r| &r.customer_tracking));
    let tracking_note = tracking.and_then(|t| {
        let mut notes: Vec<String> = t.warnings.clone();
        if let Some(e) = &t.error {
            notes.push(format!("{e} (repair it from the customers page)"));
        }
        (!notes.is_empty()).then(|| notes.join("; "))
    });
    Ok(ProgressPage {
        nav: console.nav("tenants"),
        workflow_id: view.workflow_id.clone(),
        tenant_name: view
            .record
            .as_ref()
            .map_or_else(String::new, |r| r.tenant_name.clone()),
        tenant_id: result
            .and_then(|r| r.tenant_id)
            .filter(|_| result.is_some_and(|r| r.status == Outcome::Completed))
            .map(|t| t.to_string()),
        outcome: result.map_or_else(String::new, |r| r.status.as_str().to_owned()),
        welcome,
        error: result
            .and_then(|r| r.error.as_ref())
            .map(|e| format!("{} failed: {}", humanize(e.step.as_str()), e.message)),
        rollback: result
            .filter(|r| r.rollback.performed)
            .map(|r| {
                r.rollback
                    .compensated
                    .iter()
                    .map(|a| humanize(a.as_str()))
                    .collect()
            })
            .unwrap_or_default(),
        rollback_errors: result
            .map(|r| r.rollback.errors.clone())
            .unwrap_or_default(),
        tracking_note,
        // A notice about the link is for the CLI's user; here the link is on the page.
        notice: view.notice.clone().filter(|_| link.is_none()),
        invitation_link: link,
        p,
    })
}

async fn progress_view(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
) -> Result<Response, Refused> {
    Ok(page_ok(progress_page(&state, &console, &id).await?))
}

/// How often the stream reads the run, and how long one stream lasts (the browser reconnects).
const POLL: Duration = Duration::from_millis(500);
const STREAM_FOR: Duration = Duration::from_secs(15 * 60);
/// Polls between two checks of the session (5 s).
const RECHECK_EVERY: u32 = 10;

/// The run's progress as server-sent events: one `progress` event whenever it changes, the
/// last one with `finished: true`.
async fn events(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
) -> Result<Response, Refused> {
    // Refused (permission, unknown run) before the stream begins, as a page would be.
    let first = progress(&crate::tenants::view(&state, &console.caller, &id).await?);
    let console = std::sync::Arc::new(console);
    let deadline = tokio::time::Instant::now() + STREAM_FOR;
    let stream = futures::stream::unfold(
        (Some(first), None::<Progress>, 0u32),
        move |(next, last, mut polls)| {
            let state = state.clone();
            let id = id.clone();
            let console = console.clone();
            async move {
                let mut next = next;
                loop {
                    if let Some(p) = next.take()
                        && last.as_ref() != Some(&p)
                    {
                        let event = Event::default()
                            .event("progress")
                            .json_data(&p)
                            .unwrap_or_else(|_| Event::default().comment("unencodable"));
                        return Some((Ok::<_, Infallible>(event), (None, Some(p), polls)));
                    }
                    if last.as_ref().is_some_and(|l| l.finished)
                        || tokio::time::Instant::now() >= deadline
                    {
                        return None;
                    }
                    tokio::time::sleep(POLL).await;
                    polls += 1;
                    // The session is checked again every few seconds: a stream ends with the
                    // session (signed out, expired, idle, its tenant suspended).
                    let caller = if polls % RECHECK_EVERY == 0 {
                        console.still_signed_in(&state).await?
                    } else {
                        console.caller
                    };
                    match crate::tenants::view(&state, &caller, &id).await {
                        Ok(v) => next = Some(progress(&v)),
                        // No longer allowed, or gone: the stream ends.
                        Err(
                            ApiError::Unauthorized
                            | ApiError::Forbidden(_)
                            | ApiError::TenantInactive
                            | ApiError::NotFound,
                        ) => return None,
                        // Temporal or the database away for a moment: try again next tick.
                        Err(e) => tracing::debug!(error = %e.log_safe(), "progress stream read"),
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}
