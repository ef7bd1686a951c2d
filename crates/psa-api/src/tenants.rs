//! `/api/v1/tenants`: provisioning, for callers of the management tenant holding the `tenant`
//! permissions. The work is done by the `tenant_creation` workflow on Temporal; these endpoints
//! start it and report on it.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use psa_workflows::client::{ClientError, TenantWorkflows};
use psa_workflows::secret::SecretKey;
use psa_workflows::{AdminUserInput, TenantCreationInput, TrackingSettings};
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;
use utoipa::ToSchema;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiJson;

/// How the API reaches Temporal. The client connects on first use, so the rest of the API works
/// while Temporal is down.
pub struct Provisioning {
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
    pub tracking: TrackingSettings,
    /// Opens the admin's temporary password for the caller; without it the password is null.
    pub key: Option<SecretKey>,
    client: OnceCell<TenantWorkflows>,
}

impl Provisioning {
    pub fn new(
        address: String,
        namespace: String,
        task_queue: String,
        tracking: TrackingSettings,
        key: Option<SecretKey>,
    ) -> Self {
        Provisioning {
            address,
            namespace,
            task_queue,
            tracking,
            key,
            client: OnceCell::new(),
        }
    }

    pub async fn workflows(&self) -> Result<&TenantWorkflows, ApiError> {
        self.client
            .get_or_try_init(|| async {
                let client = psa_workflows::client::connect(&self.address, &self.namespace).await?;
                Ok::<_, ClientError>(TenantWorkflows {
                    client,
                    task_queue: self.task_queue.clone(),
                })
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "Temporal unreachable");
                ApiError::Unavailable("Tenant provisioning is temporarily unavailable".into())
            })
    }
}

impl std::fmt::Debug for Provisioning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provisioning")
            .field("address", &self.address)
            .field("task_queue", &self.task_queue)
            .finish()
    }
}

fn provisioning(state: &AppState) -> Result<&Provisioning, ApiError> {
    state.provisioning.as_deref().ok_or_else(|| {
        ApiError::Unavailable("Tenant provisioning is not configured on this server".into())
    })
}

/// Only the management tenant may provision; others get 403 before any permission lookup.
async fn require_management(
    state: &AppState,
    caller: &Caller,
    action: &str,
) -> Result<(), ApiError> {
    let p = provisioning(state)?;
    if p.tracking.management_tenant_id != Some(caller.tenant.0) {
        return Err(ApiError::Forbidden(
            "Only the management tenant may provision tenants".into(),
        ));
    }
    let mut tx = caller.begin(state).await?;
    caller.require(&mut tx, "tenant", action).await?;
    tx.commit().await?;
    Ok(())
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
    #[serde(default)]
    pub skip_customer_tracking: bool,
}

#[derive(Serialize, ToSchema)]
pub struct Started {
    pub workflow_id: String,
}

/// Start provisioning a tenant. `Idempotency-Key` (1-200 printable characters) makes retries
/// safe: the same key always answers with the same workflow, which provisions one tenant.
#[utoipa::path(post, path = "/api/v1/tenants", tag = "tenants", security(("bearer" = [])),
    request_body = NewTenantRequest,
    params(("Idempotency-Key" = Option<String>, Header)),
    responses((status = 202, body = Started), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    ApiJson(req): ApiJson<NewTenantRequest>,
) -> Result<(StatusCode, Json<Started>), ApiError> {
    require_management(&state, &caller, "create").await?;
    let p = provisioning(&state)?;
    let workflow_id = match headers.get("idempotency-key") {
        None => format!("tenant-creation-{}", uuid::Uuid::new_v4()),
        Some(v) => {
            let key = v.to_str().ok().map(str::trim).filter(|k| {
                !k.is_empty()
                    && k.len() <= 200
                    && !k.chars().any(|c| c.is_control() || c.is_whitespace())
            });
            let key = key.ok_or_else(|| {
                ApiError::bad_request(
                    Some("Idempotency-Key".into()),
                    "Idempotency-Key must be 1-200 printable characters without spaces",
                )
            })?;
            format!("tenant-creation-{}-{key}", caller.tenant)
        }
    };
    let input = TenantCreationInput {
        tenant_name: req.tenant_name,
        admin_user: AdminUserInput {
            first_name: req.admin_user.first_name,
            last_name: req.admin_user.last_name,
            email: req.admin_user.email,
        },
        company_name: req.company_name,
        license_count: req.license_count,
        skip_customer_tracking: req.skip_customer_tracking,
        tracking: p.tracking.clone(),
    };
    input.validate()?;
    let workflows = p.workflows().await?;
    workflows.start(&workflow_id, input).await.map_err(|e| {
        tracing::error!(error = %e, "cannot start the tenant creation workflow");
        ApiError::Unavailable("Tenant provisioning is temporarily unavailable".into())
    })?;
    tracing::info!(%workflow_id, caller = %caller.user, "tenant provisioning started");
    Ok((StatusCode::ACCEPTED, Json(Started { workflow_id })))
}

/// The state of a provisioning run, or its result once finished (with the admin's temporary
/// password).
#[utoipa::path(get, path = "/api/v1/tenants/provisioning/{workflow_id}", tag = "tenants", security(("bearer" = [])),
    params(("workflow_id" = String, Path)),
    responses((status = 200, body = Object), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn status(
    State(state): State<AppState>,
    caller: Caller,
    Path(workflow_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_management(&state, &caller, "read").await?;
    let p = provisioning(&state)?;
    if !workflow_id.starts_with("tenant-creation-") {
        return Err(ApiError::NotFound);
    }
    let status = p
        .workflows()
        .await?
        .status(&workflow_id)
        .await
        .map_err(|e| match e {
            ClientError::NotFound(_) => ApiError::NotFound,
            other => {
                tracing::warn!(error = %other, "provisioning status");
                ApiError::Unavailable("Tenant provisioning is temporarily unavailable".into())
            }
        })?;
    Ok(Json(serde_json::json!({
        "workflow_id": workflow_id,
        "finished": status.finished,
        "state": status.state,
        "result": status.result.as_ref().map(|r| r.public(p.key.as_ref())),
    })))
}

/// Whether Temporal answers (for `/readyz`).
pub async fn temporal_ready(p: &Provisioning) -> bool {
    match p.workflows().await {
        Ok(w) => !matches!(
            w.status("psa-readiness-probe").await,
            Err(ClientError::Unreachable { .. } | ClientError::Temporal(_))
        ),
        Err(_) => false,
    }
}
