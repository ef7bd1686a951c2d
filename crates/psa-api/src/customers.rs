//! `/api/v1/customers`: the customers (management callers with `tenant:read`) as a page of JSON
//! or one CSV of every customer the filters match, and `repair` (reconcile, `tenant:update`),
//! which the worker runs as the `customer_reconcile` workflow: the API's role reads one tenant
//! at a time, reconcile writes customer records for all of them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use psa_models::TenantId;
use psa_models::customers::{self, Customer};
use psa_models::db::{Page, PageRequest};
use psa_models::lifecycle::TenantStatus;
use psa_models::plans::SubscriptionStatus;
use psa_models::provisioning::TenantListFilter;
use psa_workflows::reconcile::{ReconcileReport, ReconcileRun};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Action, Caller, Permission, Resource};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};

/// Filters of the customer list and its CSV.
#[derive(Deserialize, IntoParams, Default)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CustomerQuery {
    /// `active`, `suspended` or `canceled`.
    pub status: Option<String>,
    /// `tracked`, `partial`, `untracked` or `skipped`.
    pub tracking: Option<String>,
    /// Part of the name, case-insensitive.
    pub name: Option<String>,
    /// On this plan (its code).
    pub plan: Option<String>,
    /// The subscription's status: `trialing`, `active`, `past_due` or `canceled`.
    pub subscription_status: Option<String>,
    /// `true`: only those whose every seat is taken (or more in use than allowed).
    pub seats_full: Option<bool>,
    /// Only those trialing whose trial ends within this many days (1-365).
    pub trial_ends_within_days: Option<u32>,
    /// 1-200, default 50 (the JSON list only).
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page (the JSON list only).
    pub cursor: Option<String>,
}

impl CustomerQuery {
    fn filter(&self) -> Result<TenantListFilter, ApiError> {
        Ok(TenantListFilter {
            customer_tracking: self.tracking.clone().filter(|t| !t.is_empty()),
            name_contains: self
                .name
                .as_deref()
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned),
            created_after: None,
            created_before: None,
            status: self
                .status
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(TenantStatus::parse)
                .transpose()?,
            plan: self
                .plan
                .as_deref()
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    psa_models::plans::code(p).map_err(|_| {
                        psa_models::Error::validation(
                            "plan",
                            "plan is a plan's code, such as standard",
                        )
                    })
                })
                .transpose()?,
            subscription_status: self
                .subscription_status
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .map(|s| SubscriptionStatus::parse(s, "subscription_status"))
                .transpose()?,
            seats_full: self.seats_full.unwrap_or(false),
            trial_ends_before: match self.trial_ends_within_days {
                None => None,
                Some(d @ 1..=365) => {
                    Some(chrono::Utc::now() + chrono::Duration::days(i64::from(d)))
                }
                Some(_) => {
                    return Err(psa_models::Error::validation(
                        "trial_ends_within_days",
                        "trial_ends_within_days is 1-365",
                    )
                    .into());
                }
            },
        })
    }
}

/// One page of customers (the API and the console).
pub async fn page(
    state: &AppState,
    caller: &Caller,
    q: &CustomerQuery,
) -> Result<Page<Customer>, ApiError> {
    let filter = q.filter()?;
    let mut tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Read))
        .await?;
    let page = customers::list(
        &mut tx,
        caller.tenant,
        state.app.settings.customer_tag.as_str(),
        &filter,
        &PageRequest {
            limit: q.limit,
            cursor: q.cursor.clone(),
        },
    )
    .await?;
    tx.rollback().await?;
    Ok(page)
}

/// The customers, in the tenant list's order, a page at a time.
#[utoipa::path(get, path = "/api/v1/customers", tag = "customers", security(("bearer" = [])),
    params(CustomerQuery),
    responses((status = 200, body = Page<Customer>), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CustomerQuery>,
) -> Result<Json<Page<Customer>>, ApiError> {
    Ok(Json(page(&state, &caller, &q).await?))
}

/// Every customer the filters match as CSV (the API and the console): read 200 at a time, in
/// one transaction, the permission checked once.
pub async fn csv(
    state: &AppState,
    caller: &Caller,
    q: CustomerQuery,
) -> Result<Response, ApiError> {
    let filter = q.filter()?;
    let mut tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Read))
        .await?;
    let mut out = csv::Writer::from_writer(Vec::new());
    let write_error = |e: csv::Error| ApiError::internal(anyhow::anyhow!("CSV: {e}"));
    out.write_record(customers::CSV_HEADER)
        .map_err(write_error)?;
    let mut cursor = None;
    loop {
        let p = customers::list(
            &mut tx,
            caller.tenant,
            state.app.settings.customer_tag.as_str(),
            &filter,
            &PageRequest {
                limit: Some(200),
                cursor,
            },
        )
        .await?;
        for c in &p.items {
            out.write_record(c.csv_record()).map_err(write_error)?;
        }
        match p.next_cursor {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    tx.rollback().await?;
    let body = out
        .into_inner()
        .map_err(|e| ApiError::internal(anyhow::anyhow!("CSV: {e}")))?;
    let filename = format!("customers-{}.csv", chrono::Utc::now().format("%Y-%m-%d"));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response())
}

/// Every customer the filters match, as one CSV file (for spreadsheets: a cell that would run
/// as a formula starts with an apostrophe).
#[utoipa::path(get, path = "/api/v1/customers/export.csv", tag = "customers", security(("bearer" = [])),
    params(CustomerQuery),
    responses((status = 200, content_type = "text/csv"), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn export_csv(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<CustomerQuery>,
) -> Result<Response, ApiError> {
    csv(&state, &caller, q).await
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RepairRequest {
    /// One tenant; absent: every tenant.
    #[schema(value_type = Option<uuid::Uuid>)]
    pub tenant_id: Option<TenantId>,
    /// Only report what would be created.
    #[serde(default)]
    pub dry_run: bool,
}

#[derive(Serialize, ToSchema)]
pub struct RepairStarted {
    pub workflow_id: String,
}

/// Starts a repair (the API and the console): checked (a customer tenant that exists), audited
/// in the management tenant, then started on the worker.
pub async fn start_repair(
    state: &AppState,
    caller: &Caller,
    req: RepairRequest,
) -> Result<String, ApiError> {
    let workflow_id = psa_app::customers::start_repair(
        &state.app,
        &caller.principal(),
        req.tenant_id,
        req.dry_run,
    )
    .await?;
    Ok(workflow_id)
}

/// Repairs customer records: creates what is missing (company, admin contact, tag) for one
/// tenant or all of them, or with `dry_run` only reports it. Runs on the worker; follow it at
/// `GET /api/v1/customers/repairs/{workflow_id}`.
#[utoipa::path(post, path = "/api/v1/customers/repairs", tag = "customers", security(("bearer" = [])),
    request_body = RepairRequest,
    responses((status = 202, body = RepairStarted), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn repair(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(req): ApiJson<RepairRequest>,
) -> Result<(StatusCode, Json<RepairStarted>), ApiError> {
    let workflow_id = start_repair(&state, &caller, req).await?;
    Ok((StatusCode::ACCEPTED, Json(RepairStarted { workflow_id })))
}

#[derive(Serialize, ToSchema)]
pub struct RepairStatus {
    pub workflow_id: String,
    /// `running`, `completed` or `failed`.
    pub status: String,
    #[schema(value_type = Option<Object>)]
    pub report: Option<ReconcileReport>,
    pub error: Option<String>,
}

/// Where a repair is (the API and the console).
pub async fn repair_status(
    state: &AppState,
    caller: &Caller,
    workflow_id: &str,
) -> Result<RepairStatus, ApiError> {
    let tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Read))
        .await?;
    tx.rollback().await?;
    if !workflow_id.starts_with(psa_workflows::reconcile::WORKFLOW_ID_PREFIX) {
        return Err(ApiError::NotFound);
    }
    let run = state
        .reconciles()
        .await?
        .outcome(workflow_id)
        .await
        .map_err(|e| match e {
            psa_workflows::client::ClientError::NotFound(_) => ApiError::NotFound,
            other => {
                tracing::warn!(error = %other, "customer reconcile status");
                ApiError::Unavailable("The repair service is temporarily unavailable".into())
            }
        })?;
    let (status, report, error) = match run {
        ReconcileRun::Running => ("running", None, None),
        ReconcileRun::Done(r) => ("completed", Some(r), None),
        ReconcileRun::Failed(e) => ("failed", None, Some(e)),
    };
    Ok(RepairStatus {
        workflow_id: workflow_id.to_owned(),
        status: status.to_owned(),
        report,
        error,
    })
}

/// A repair: `running`, or its report.
#[utoipa::path(get, path = "/api/v1/customers/repairs/{workflow_id}", tag = "customers", security(("bearer" = [])),
    params(("workflow_id" = String, Path)),
    responses((status = 200, body = RepairStatus), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn get_repair(
    State(state): State<AppState>,
    caller: Caller,
    Path(workflow_id): Path<String>,
) -> Result<Json<RepairStatus>, ApiError> {
    Ok(Json(repair_status(&state, &caller, &workflow_id).await?))
}
