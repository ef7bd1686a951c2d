//! The customers (management): each customer tenant with its customer record, a CSV download
//! of the list as filtered, and repair (reconcile) with a preview first. The API's functions
//! (`crate::customers`) do the work.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use psa_models::TenantId;
use psa_workflows::reconcile::{LeftReason, ReconcileReport};
use serde::Deserialize;

use super::tenants::{ListQuery, STATUSES, TRACKINGS};
use super::{Badge, Console, Nav, Opt, Refused, next_link, options, page, page_ok, when};
use crate::AppState;
use crate::customers::{CustomerQuery, RepairRequest};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/customers", get(customers))
        .route("/console/customers.csv", get(download))
        .route("/console/customers/repairs", post(repair))
        .route("/console/customers/repairs/{id}", get(repair_report))
}

struct CustomerRow {
    tenant_id: String,
    name: String,
    status: String,
    tracking: String,
    repairable: bool,
    admin: String,
    admin_email: String,
    /// The plan's code and the subscription's status (empty: none).
    plan: String,
    plan_status: String,
    seats_used: i64,
    /// "unlimited", or the seats allowed.
    seats_allowed: String,
    over: bool,
    created: String,
    tags: Vec<Badge>,
}

#[derive(Template)]
#[template(path = "console/customers.html")]
struct CustomersPage {
    nav: Option<Nav>,
    csrf: String,
    error: Option<String>,
    name: String,
    statuses: Vec<Opt>,
    trackings: Vec<Opt>,
    plans: Vec<PlanOpt>,
    subscriptions: Vec<Opt>,
    seats_full: bool,
    trial_soon: bool,
    rows: Vec<CustomerRow>,
    next: Option<String>,
    csv: String,
}

/// A plan to filter by.
struct PlanOpt {
    value: String,
    label: String,
    selected: bool,
}

const SUBSCRIPTIONS: [(&str, &str); 5] = [
    ("", "Any"),
    ("trialing", "Trialing"),
    ("active", "Active"),
    ("past_due", "Past due"),
    ("canceled", "Canceled"),
];

fn query(q: &ListQuery, limit: Option<u32>) -> CustomerQuery {
    let some = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    CustomerQuery {
        status: some(&q.status),
        tracking: some(&q.tracking),
        name: some(&q.name),
        plan: some(&q.plan),
        subscription_status: some(&q.subscription),
        seats_full: (q.seats == "full").then_some(true),
        trial_ends_within_days: (q.trial == "7").then_some(7),
        limit,
        cursor: some(&q.cursor),
    }
}

async fn customers(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<ListQuery>,
) -> Result<Response, Refused> {
    let (rows, next, error) =
        match crate::customers::page(&state, &console.caller, &query(&q, Some(50))).await {
            Ok(p) => (p.items, p.next_cursor, None),
            Err(ApiError::Model(e @ psa_models::Error::Validation { .. })) => {
                (Vec::new(), None, Some(e.to_string()))
            }
            Err(e) => return Err(e.into()),
        };
    let csv_query: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(q.pairs())
        .finish();
    Ok(page_ok(CustomersPage {
        nav: console.nav("customers"),
        csrf: console.csrf.clone(),
        error,
        name: q.name.clone(),
        // The management tenant is not a customer: not a filter here.
        statuses: options(&STATUSES, &q.status),
        plans: std::iter::once(PlanOpt {
            value: String::new(),
            label: "Any".into(),
            selected: q.plan.is_empty(),
        })
        .chain(
            psa_app::plans::list(&state.app, &console.caller.principal())
                .await
                .unwrap_or_default()
                .into_iter()
                .map(|p| PlanOpt {
                    selected: p.code == q.plan,
                    label: p.name,
                    value: p.code,
                }),
        )
        .collect(),
        subscriptions: options(&SUBSCRIPTIONS, &q.subscription),
        seats_full: q.seats == "full",
        trial_soon: q.trial == "7",
        trackings: options(&TRACKINGS[..5], &q.tracking),
        rows: rows
            .into_iter()
            .map(|c| CustomerRow {
                tenant_id: c.tenant_id.to_string(),
                repairable: matches!(c.customer_tracking.as_str(), "partial" | "untracked"),
                tracking: c.customer_tracking,
                name: c.name,
                status: c.status.to_string(),
                admin: c
                    .admin_contact
                    .as_ref()
                    .map_or_else(String::new, |a| a.full_name.clone()),
                admin_email: c
                    .admin_contact
                    .as_ref()
                    .map_or_else(String::new, |a| a.email.clone()),
                plan: c.plan.clone().unwrap_or_default(),
                plan_status: c
                    .subscription_status
                    .map_or_else(String::new, |s| s.as_str().to_owned()),
                seats_used: c.seats_used,
                seats_allowed: c
                    .seats_allowed
                    .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
                over: psa_models::plans::seats_over(c.seats_used, c.seats_allowed),
                created: when(c.created_at),
                tags: c
                    .tags
                    .iter()
                    .map(|t| {
                        Badge::of(
                            &t.tag_text,
                            t.background_color.as_deref(),
                            t.text_color.as_deref(),
                            String::new(),
                        )
                    })
                    .collect(),
            })
            .collect(),
        next: next_link("/console/customers", &q.pairs(), next),
        csv: format!("/console/customers.csv?{csv_query}"),
    }))
}

async fn download(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<ListQuery>,
) -> Result<Response, Refused> {
    Ok(crate::customers::csv(&state, &console.caller, query(&q, None)).await?)
}

#[derive(Deserialize)]
struct RepairForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tenant_id: String,
    #[serde(default)]
    dry_run: String,
}

async fn repair(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<RepairForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let tenant_id = match f.tenant_id.trim() {
        "" => None,
        raw => Some(uuid::Uuid::parse_str(raw).map(TenantId).map_err(|_| {
            Refused::Page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Not done",
                "The tenant to repair is not a tenant ID.".into(),
            )
        })?),
    };
    let workflow_id = crate::customers::start_repair(
        &state,
        &console.caller,
        RepairRequest {
            tenant_id,
            dry_run: f.dry_run == "yes",
        },
    )
    .await?;
    Ok(Redirect::to(&format!("/console/customers/repairs/{workflow_id}")).into_response())
}

struct RepairLine {
    tenant_id: String,
    name: String,
    what: String,
}

#[derive(Template)]
#[template(path = "console/repair.html")]
struct RepairPage {
    nav: Option<Nav>,
    csrf: String,
    workflow_id: String,
    running: bool,
    error: Option<String>,
    report: Option<ReconcileReport>,
    repairs: Vec<RepairLine>,
    left: Vec<String>,
    /// The tenant a one-tenant preview was for (to repair it for real from here).
    scope: String,
}

async fn repair_report(
    State(state): State<AppState>,
    console: Console,
    Path(id): Path<String>,
) -> Result<Response, Refused> {
    let status = crate::customers::repair_status(&state, &console.caller, &id).await?;
    let repairs = status
        .report
        .as_ref()
        .map(|r| {
            r.repairs
                .iter()
                .map(|x| RepairLine {
                    tenant_id: x.tenant_id.to_string(),
                    name: x.name.clone(),
                    what: x.what.join(", "),
                })
                .collect()
        })
        .unwrap_or_default();
    // A preview of one tenant is repaired for that tenant only.
    let scope = status
        .report
        .as_ref()
        .and_then(|r| r.tenant_id)
        .map(|t| t.to_string())
        .unwrap_or_default();
    let left = status
        .report
        .as_ref()
        .map(|r| {
            r.left_alone
                .iter()
                .map(|l| {
                    let why = match l.reason {
                        LeftReason::InFlight => "its provisioning run is in flight",
                        LeftReason::Skipped => "provisioned without customer tracking",
                        LeftReason::Incomplete => {
                            "its provisioning run did not complete (it is being removed)"
                        }
                    };
                    format!("tenant {} ({why}; run {})", l.tenant_id, l.workflow_id)
                })
                .collect()
        })
        .unwrap_or_default();
    let running = status.status == "running";
    // The page shows a failed run as it shows a finished one: the page itself worked.
    Ok(page(
        StatusCode::OK,
        RepairPage {
            nav: console.nav("customers"),
            csrf: console.csrf.clone(),
            workflow_id: status.workflow_id,
            running,
            error: status.error,
            report: status.report,
            repairs,
            left,
            scope,
        },
    ))
}
