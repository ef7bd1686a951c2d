//! Plans and subscriptions over the API: the plans offered (`plan:read`, `plan:manage`) and a
//! tenant's plan and seats (`tenant:update`), for the management tenant's callers. The rules
//! are the operations layer's (`psa_app::plans`); the console and the CLI call the same.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use psa_models::TenantId;
use psa_models::plans::{NewPlan, Plan, PlanPatch, Subscription};
use serde::Deserialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, PathId};

/// The plans, offered ones first, then the retired.
#[utoipa::path(get, path = "/api/v1/plans", tag = "plans", security(("bearer" = [])),
    responses((status = 200, body = Vec<Plan>), (status = 403, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Vec<Plan>>, ApiError> {
    Ok(Json(
        psa_app::plans::list(&state.app, &caller.principal()).await?,
    ))
}

/// Make a plan: a new code, a name, a seat limit (absent: unlimited), trial days (0: none),
/// features and the billing system's price ids that mean it. Audited.
#[utoipa::path(post, path = "/api/v1/plans", tag = "plans", security(("bearer" = [])),
    request_body = NewPlan,
    responses((status = 201, body = Plan), (status = 403, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewPlan>,
) -> Result<(StatusCode, Json<Plan>), ApiError> {
    let plan = psa_app::plans::create(&state.app, &caller.principal(), &input).await?;
    Ok((StatusCode::CREATED, Json(plan)))
}

/// Change a plan; `"active": false` retires it (its tenants keep it; no new tenant gets it).
/// Audited with what it was.
#[utoipa::path(patch, path = "/api/v1/plans/{code}", tag = "plans", security(("bearer" = [])),
    params(("code" = String, Path)), request_body = PlanPatch,
    responses((status = 200, body = Plan), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    Path(code): Path<String>,
    ApiJson(patch): ApiJson<PlanPatch>,
) -> Result<Json<Plan>, ApiError> {
    Ok(Json(
        psa_app::plans::update(&state.app, &caller.principal(), &code, &patch).await?,
    ))
}

/// `POST /api/v1/tenants/{id}/subscription` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionRequest {
    /// The plan's code (an offered plan, or the tenant's current one).
    pub plan: String,
    /// The seats bought (at least 1, at most the plan's limit); absent: as many as the plan
    /// allows. Fewer than in use is allowed: no one is cut off, new users wait for room.
    #[serde(default)]
    pub seats: Option<i32>,
}

/// Put a tenant on a plan with some seats (management, `tenant:update`). A plan without a trial
/// ends a trial. Audited in both tenants; the event `tenant.plan_changed`.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/subscription", tag = "tenants",
    security(("bearer" = [])), params(("id" = uuid::Uuid, Path)), request_body = SubscriptionRequest,
    responses((status = 200, body = Subscription), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn set_plan(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
    ApiJson(req): ApiJson<SubscriptionRequest>,
) -> Result<Json<Subscription>, ApiError> {
    Ok(Json(
        psa_app::plans::set_plan(
            &state.app,
            &caller.principal(),
            tenant,
            &req.plan,
            req.seats,
        )
        .await?,
    ))
}

/// `POST /api/v1/tenants/{id}/trial/extend` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExtendTrialRequest {
    /// Days to add (1-365): to the trial's end, or to now when it has ended.
    pub days: i64,
}

/// A trial extended.
#[derive(serde::Serialize, ToSchema)]
pub struct TrialExtended {
    pub subscription: Subscription,
    /// The tenant had been suspended because its trial ended, and is active again.
    pub reactivated: bool,
}

/// Extend a tenant's trial (management, `tenant:update`): a suspension for the trial's end is
/// lifted; the reminder goes out again before the new end. Audited in both tenants; the event
/// `tenant.trial_extended`. 409 `not_trialing` when the subscription has no trial.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/trial/extend", tag = "tenants",
    security(("bearer" = [])), params(("id" = uuid::Uuid, Path)), request_body = ExtendTrialRequest,
    responses((status = 200, body = TrialExtended), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn extend_trial(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
    ApiJson(req): ApiJson<ExtendTrialRequest>,
) -> Result<Json<TrialExtended>, ApiError> {
    let days = psa_models::deadlines::extension_days(req.days)?;
    let out = psa_app::plans::extend_trial(&state.app, &caller.principal(), tenant, days).await?;
    Ok(Json(TrialExtended {
        subscription: out.subscription,
        reactivated: out.reactivated,
    }))
}
