//! `/api/v1/tenants`: provisioning, for callers of the management tenant holding the `tenant`
//! permissions. The work is done by the `tenant_creation` workflow on Temporal; these endpoints
//! start it (through the same starter as `psa tenant create`: one idempotency-key rule) and show
//! it (the same view as `psa tenant status`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use psa_workflows::client::{ClientError, IdempotencyKey, StartError};
use psa_workflows::{ProvisioningView, RawRequest, TenantCreationInput};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::{Action, Caller, Permission, Resource};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, PathId};

/// How the API reaches Temporal (connected on first use, so the rest of the API works while
/// Temporal is down). The API holds no customer tracking settings: the workers decide.
pub type Provisioning = psa_app::Temporal;

fn provisioning(state: &AppState) -> Result<&Provisioning, ApiError> {
    Ok(state.app.temporal("Tenant provisioning")?)
}

fn unavailable() -> ApiError {
    ApiError::Unavailable("Tenant provisioning is temporarily unavailable".into())
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AdminUser {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// `POST /api/v1/tenants` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenantRequest {
    pub tenant_name: String,
    pub admin_user: AdminUser,
    pub company_name: Option<String>,
    pub license_count: Option<i32>,
    /// Do not record this tenant as a customer (remembered; reconcile honours it). Whether
    /// tracking is enabled at all is the workers' setting.
    #[serde(default)]
    pub skip_customer_tracking: bool,
    /// The name its people sign in with (`/console/sign-in?org=SLUG`): lowercase a-z, 0-9 and
    /// hyphens, 3-63 characters, unique. Absent: derived from the tenant's name (with a number
    /// when taken).
    #[serde(default)]
    pub slug: Option<String>,
    /// The plan's code (an offered plan; absent: `PSA_DEFAULT_PLAN`). A plan with a trial
    /// starts the tenant trialing; `license_count` is its seats (absent: the plan's limit).
    #[serde(default)]
    pub plan: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Started {
    pub workflow_id: String,
}

/// Start provisioning a tenant. `Idempotency-Key` (1-200 printable characters) makes retries
/// safe: the same key with the same request answers with the same run (for good: the key does
/// not expire), which provisions one tenant; the same key with a different request is refused
/// (409 `idempotency_key_reused`). `psa tenant create --idempotency-key` names the same run.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", security(("bearer" = [])),
    request_body = NewTenantRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 202, body = Started), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewTenantRequest>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    // The permission first: a caller without it learns nothing about the request.
    caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Create))
        .await?
        .commit()
        .await?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|k| IdempotencyKey::parse(k).ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        Some("Idempotency-Key".into()),
                        "Idempotency-Key must be 1-200 printable characters without spaces",
                    )
                })?,
        ),
    };
    let workflow_id = start(
        &state,
        &caller,
        &req,
        key.as_ref(),
        &starter("api", &caller),
    )
    .await?;
    Ok((StatusCode::ACCEPTED, Json(Started { workflow_id })))
}

/// Who started a run, as its provisioning record keeps it: the face and the user.
pub fn starter(face: &str, caller: &Caller) -> String {
    format!("{face}:{}", caller.user)
}

/// Starts provisioning for a management caller with `tenant:create` (the API and the console):
/// the request checked, then the run started through the one starter (`psa tenant create`'s).
pub async fn start(
    state: &AppState,
    caller: &Caller,
    req: &NewTenantRequest,
    key: Option<&IdempotencyKey>,
    requested_by: &str,
) -> Result<String, ApiError> {
    // The permission first: a caller without it learns nothing about the request (the
    // operation checks it again, as it checks every caller).
    caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Create))
        .await?
        .commit()
        .await?;
    let input = TenantCreationInput::parse(RawRequest {
        tenant_name: &req.tenant_name,
        first_name: &req.admin_user.first_name,
        last_name: &req.admin_user.last_name,
        email: &req.admin_user.email,
        company_name: req.company_name.as_deref(),
        license_count: req.license_count,
        skip_customer_tracking: req.skip_customer_tracking,
        slug: req.slug.as_deref(),
        plan: req.plan.as_deref(),
    })?;
    let (workflow_id, _) =
        psa_app::tenants::provision(&state.app, &caller.principal(), input, key, requested_by)
            .await
            .map_err(|e| match e {
                StartError::KeyReused { .. } => ApiError::IdempotencyKeyReused(e.to_string()),
                StartError::Database(d) => d.into(),
                StartError::Temporal(t) => {
                    tracing::error!(error = %t, "cannot start the tenant creation workflow");
                    unavailable()
                }
            })?;
    tracing::info!(%workflow_id, caller = %caller.user, "tenant provisioning started");
    Ok(workflow_id)
}

/// A provisioning run: its state while running, its result once finished (never a credential:
/// the admin's invitation goes by email), its provisioning record, and a notice when an operator must act (no
/// worker polling the task queue, a run cut off).
#[utoipa::path(get, path = "/api/v1/tenants/provisioning/{workflow_id}", tag = "tenants", security(("bearer" = [])),
    params(("workflow_id" = String, Path)),
    responses((status = 200, body = ProvisioningView), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(workflow_id): Path<String>,
) -> Result<Json<ProvisioningView>, ApiError> {
    Ok(Json(view(&state, &caller, &workflow_id).await?))
}

/// One run as every face shows it, for a management caller with `tenant:read`.
pub async fn view(
    state: &AppState,
    caller: &Caller,
    workflow_id: &str,
) -> Result<ProvisioningView, ApiError> {
    let tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Read))
        .await?;
    tx.commit().await?;
    let p = provisioning(state)?;
    if !workflow_id.starts_with(psa_workflows::client::WORKFLOW_ID_PREFIX) {
        return Err(ApiError::NotFound);
    }
    p.workflows()
        .await?
        .view(workflow_id)
        .await
        .map_err(|e| match e {
            ClientError::NotFound(_) => ApiError::NotFound,
            ClientError::Database(d) => d.into(),
            other => {
                tracing::warn!(error = %other, "provisioning status");
                unavailable()
            }
        })
}

/// The invitation link a completed run sealed (its worker sends no mail), for the caller who
/// started it from `face` and no one else; `None` otherwise, or when this server does not hold
/// the key that sealed it (`PSA_SECRET_KEY`).
pub async fn invitation_link_for_starter(
    state: &AppState,
    caller: &Caller,
    view: &ProvisioningView,
    face: &str,
) -> Result<Option<secrecy::SecretString>, ApiError> {
    let mine = view
        .record
        .as_ref()
        .is_some_and(|r| r.requested_by == starter(face, caller));
    let disabled = view.result.as_ref().is_some_and(|r| {
        r.status == psa_workflows::Outcome::Completed
            && r.welcome_email.status == psa_workflows::WelcomeStatus::Disabled
    });
    let Some(key) = state.app.webhooks.key.as_ref().filter(|_| mine && disabled) else {
        return Ok(None);
    };
    let result = provisioning(state)?
        .workflows()
        .await?
        .result(&view.workflow_id)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "provisioning result");
            unavailable()
        })?;
    Ok(result.invitation_link(key))
}

/// What `POST /api/v1/tenants/{id}/resend-invite` did.
#[derive(Serialize, ToSchema)]
pub struct InviteResent {
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: psa_models::TenantId,
    #[schema(value_type = uuid::Uuid)]
    pub user_id: psa_models::UserId,
    pub email: String,
    pub invitation_expires_at: chrono::DateTime<chrono::Utc>,
}

/// Send a tenant's first administrator a new invitation (the welcome email failed, or its link
/// expired); the earlier link stops working. For management callers with `tenant:create`, on a
/// server with mail settings: the link is only ever mailed. 409 when the administrator has
/// already set a password.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/resend-invite", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = InviteResent), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn resend_invite(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<psa_models::TenantId>,
) -> Result<Json<InviteResent>, ApiError> {
    let done = psa_app::tenants::resend_admin_invite(
        &state.app,
        &caller.principal(),
        tenant,
        psa_app::users::LinkDelivery::Mail,
    )
    .await?;
    Ok(Json(InviteResent {
        tenant_id: tenant,
        user_id: done.user.user_id,
        email: done.user.email,
        invitation_expires_at: done.expires_at,
    }))
}

/// Whether Temporal answers (for `/readyz`).
pub async fn temporal_ready(p: &Provisioning) -> bool {
    match p.workflows().await {
        Ok(w) => w.worker_polling().await.is_ok(),
        Err(_) => false,
    }
}

/// `GET /api/v1/tenants/{id}/timeline` query.
#[derive(serde::Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TimelineQuery {
    /// Only these sources, comma-separated: `event`, `audit` (the tenant's own log),
    /// `platform` (the management tenant's rows about it). Absent: all.
    pub kind: Option<String>,
    /// The `next_before` of the previous page: older entries.
    pub before: Option<chrono::DateTime<chrono::Utc>>,
    /// 1-200, default 50.
    pub limit: Option<u32>,
}

/// A tenant's timeline, newest first (management, `tenant:read`): its events, its own audit log
/// and the management tenant's rows about it (the lifecycle, plans, support sessions), merged.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/timeline", tag = "tenants",
    security(("bearer" = [])), params(("id" = uuid::Uuid, Path), TimelineQuery),
    responses((status = 200, body = psa_app::tenants::Timeline), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn timeline(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<psa_models::TenantId>,
    crate::extract::ApiQuery(q): crate::extract::ApiQuery<TimelineQuery>,
) -> Result<Json<psa_app::tenants::Timeline>, ApiError> {
    let sources = psa_models::timeline::Source::parse_list(q.kind.as_deref().unwrap_or_default())?;
    Ok(Json(
        psa_app::tenants::timeline(
            &state.app,
            &caller.principal(),
            tenant,
            &sources,
            q.before,
            q.limit,
        )
        .await?,
    ))
}
