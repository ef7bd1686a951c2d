//! The tenant's lifecycle over the API: `GET /api/v1/tenants` and `/api/v1/tenants/{id}`,
//! suspend, reactivate, cancel, restore, delete and export. For callers of the management tenant
//! with the `tenant` permission the action needs (`read`, `update` for suspend, reactivate,
//! restore and export, `delete` for cancel and delete). The same models as `psa tenant ...` do
//! the work, in the caller's transaction, with the same rules and audit rows.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use psa_models::TenantId;
use psa_models::exports::{self, Export, Purpose};
use psa_models::lifecycle::{self, Change, TenantDetails, TenantStatus};
use psa_models::provisioning::{self, TenantSummary};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::{Action, Caller, Permission, Resource};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery};

fn settings(state: &AppState, caller: &Caller) -> lifecycle::Settings {
    state.lifecycle.settings(caller.tenant)
}

/// `GET /api/v1/tenants` query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TenantListQuery {
    /// `active`, `suspended` or `canceled`.
    pub status: Option<String>,
    /// `tracked`, `partial`, `untracked`, `skipped` or `management`.
    pub tracking: Option<String>,
    /// Part of the name, case-insensitive.
    pub name: Option<String>,
    pub created_after: Option<chrono::DateTime<chrono::Utc>>,
    pub created_before: Option<chrono::DateTime<chrono::Utc>>,
    /// 1-200, default 50.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// The tenants, oldest first, a page at a time, with status and customer tracking state.
#[utoipa::path(get, path = "/api/v1/tenants", tag = "tenants", security(("bearer" = [])),
    params(TenantListQuery),
    responses((status = 200, body = psa_models::db::Page<TenantSummary>), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<TenantListQuery>,
) -> Result<Json<psa_models::db::Page<TenantSummary>>, ApiError> {
    let mut tx = caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Read))
        .await?;
    let status = q.status.as_deref().map(TenantStatus::parse).transpose()?;
    // Across tenants: the session role reads the tenants table (the caller is the management
    // tenant's, checked above).
    psa_models::db::leave_tenant(&mut tx).await?;
    let page = provisioning::list_tenants(
        &mut tx,
        state.lifecycle.customer_tag.as_str(),
        &provisioning::TenantListFilter {
            customer_tracking: q.tracking,
            name_contains: q.name,
            created_after: q.created_after,
            created_before: q.created_before,
            status,
        },
        &psa_models::db::PageRequest {
            limit: q.limit,
            cursor: q.cursor,
        },
    )
    .await?;
    tx.rollback().await.map_err(psa_models::Error::from)?;
    Ok(Json(page))
}

/// A tenant: status, reason, pending deletion, customer record.
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = TenantDetails), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<TenantDetails>, ApiError> {
    let tenant: TenantId = crate::extract::path_id(&id)?;
    let mut tx = caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Read))
        .await?;
    let details = lifecycle::show(&mut tx, &settings(&state, &caller), tenant).await?;
    tx.rollback().await.map_err(psa_models::Error::from)?;
    Ok(Json(details))
}

/// `POST .../suspend` and `.../cancel` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    /// Why (1-500 characters): shown to operators and kept in the audit log.
    pub reason: String,
}

/// Suspend an active tenant: its users are refused (403 `tenant_inactive`) until it is
/// reactivated; its customer company is tagged and marked suspended.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/suspend", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = ReasonRequest,
    responses((status = 200, body = Change), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn suspend(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> Result<Json<Change>, ApiError> {
    let tenant: TenantId = crate::extract::path_id(&id)?;
    Ok(Json(
        suspend_tenant(&state, &caller, tenant, &req.reason).await?,
    ))
}

/// Suspends a tenant for a management caller with `tenant:update` (the API and the console).
pub async fn suspend_tenant(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
    reason: &str,
) -> Result<Change, ApiError> {
    let mut tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Update))
        .await?;
    let change = lifecycle::suspend(
        &mut tx,
        &settings(state, caller),
        tenant,
        reason,
        &caller.actor(),
    )
    .await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    Ok(change)
}

/// Reactivate a suspended tenant: its users' credentials work again.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/reactivate", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Change), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Change>, ApiError> {
    let tenant: TenantId = crate::extract::path_id(&id)?;
    Ok(Json(reactivate_tenant(&state, &caller, tenant).await?))
}

/// Reactivates a suspended tenant (`tenant:update`).
pub async fn reactivate_tenant(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
) -> Result<Change, ApiError> {
    let mut tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Update))
        .await?;
    let change =
        lifecycle::reactivate(&mut tx, &settings(state, caller), tenant, &caller.actor()).await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    Ok(change)
}

/// `POST .../cancel` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Why (1-500 characters).
    pub reason: String,
    /// The grace period before deletion, in seconds (1 s to 365 days; default 30 days).
    pub grace_seconds: Option<i64>,
}

/// Cancel a tenant: access ends, an export is taken, and the tenant is deleted when the grace
/// period ends (`POST .../restore` stops it, `DELETE` deletes at once). Its customer company and
/// contacts become inactive, tagged canceled.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/cancel", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = CancelRequest,
    responses((status = 200, body = Change), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> Result<Json<Change>, ApiError> {
    let tenant: TenantId = crate::extract::path_id(&id)?;
    Ok(Json(
        cancel_tenant(&state, &caller, tenant, &req.reason, req.grace_seconds).await?,
    ))
}

/// Cancels a tenant (`tenant:delete`): deleted after the grace period (default 30 days) unless
/// restored. The deletion workflow is started now; the worker's sweeper starts it otherwise.
pub async fn cancel_tenant(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
    reason: &str,
    grace_seconds: Option<i64>,
) -> Result<Change, ApiError> {
    let mut tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Delete))
        .await?;
    let grace = lifecycle::grace(grace_seconds.unwrap_or(30 * 86_400))?;
    // Temporal must be reachable to start the deletion: refused before anything is written.
    let deletions = state.deletions().await?;
    let workflow_id = psa_workflows::deletion::new_workflow_id(tenant);
    let change = lifecycle::cancel(
        &mut tx,
        &settings(state, caller),
        tenant,
        reason,
        grace,
        &workflow_id,
        uuid::Uuid::now_v7(),
        &caller.actor(),
    )
    .await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    if let Err(e) = deletions.start(&workflow_id).await {
        // Recorded: the worker's sweeper starts it.
        tracing::warn!(workflow_id, error = %e, "deletion workflow not started; the worker will start it");
    }
    Ok(change)
}

/// Restore a canceled tenant before its deletion: it returns to where the cancel found it.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/restore", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Change), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Change>, ApiError> {
    let tenant: TenantId = crate::extract::path_id(&id)?;
    Ok(Json(restore_tenant(&state, &caller, tenant).await?))
}

/// Restores a canceled tenant before its deletion (`tenant:update`).
pub async fn restore_tenant(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
) -> Result<Change, ApiError> {
    let mut tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Update))
        .await?;
    let (change, workflow_id) =
        lifecycle::restore(&mut tx, &settings(state, caller), tenant, &caller.actor()).await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    if let Ok(d) = state.deletions().await
        && let Err(e) = d.restored(&workflow_id).await
    {
        tracing::info!(workflow_id, error = %e, "deletion workflow not told of the restore; it ends at its deadline without deleting");
    }
    Ok(change)
}

/// Delete a canceled tenant now instead of at its deadline. Answers 202: the deletion's
/// workflow deletes it (`GET /api/v1/tenants/{id}` answers 404 once it is gone).
#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 202), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tenant: TenantId = crate::extract::path_id(&id)?;
    delete_now(&state, &caller, tenant).await?;
    Ok(StatusCode::ACCEPTED)
}

/// Deletes a canceled tenant now instead of at the end of its grace period (`tenant:delete`):
/// confirms its deletion workflow, which then deletes. Returns the workflow's id.
pub async fn delete_now(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
) -> Result<String, ApiError> {
    let mut tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Delete))
        .await?;
    let details = lifecycle::show(&mut tx, &settings(state, caller), tenant).await?;
    let pending = details
        .deletion
        .ok_or_else(|| psa_models::Error::InvalidState {
            code: "tenant_state",
            message: format!(
                "The tenant is {}: only a canceled tenant can be deleted (cancel it first)",
                details.status
            )
            .into(),
        })?;
    psa_models::audit::record(
        &mut tx,
        caller.tenant,
        &caller.actor(),
        "confirm_delete",
        "tenant",
        Some(tenant.0),
        serde_json::json!({"workflow_id": pending.workflow_id}),
    )
    .await?;
    // Who confirmed is on record before anything is deleted: the entry commits first, and a
    // signal that then fails (503) leaves the request on record, not a deletion without one.
    tx.commit().await.map_err(psa_models::Error::from)?;
    let deletions = state.deletions().await?;
    deletions.start(&pending.workflow_id).await.map_err(|_| {
        ApiError::Unavailable("The deletion service is temporarily unavailable".into())
    })?;
    deletions
        .confirm(&pending.workflow_id, &caller.actor())
        .await
        .map_err(|_| {
            ApiError::Unavailable("The deletion service is temporarily unavailable".into())
        })?;
    Ok(pending.workflow_id)
}

/// Export a tenant's data (any time): one archive with a JSON Lines file per table and a
/// manifest of row counts and checksums; secrets are left out. Answers when the export is done
/// (or failed), with its record; the archive is at `GET .../exports/{export_id}/archive`.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/export", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 201, body = Export), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Export>), ApiError> {
    let tenant: TenantId = crate::extract::path_id(&id)?;
    Ok((
        StatusCode::CREATED,
        Json(export_tenant(&state, &caller, tenant).await?),
    ))
}

/// Exports a tenant's data into the export store (`tenant:update`), audited.
pub async fn export_tenant(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
) -> Result<Export, ApiError> {
    let mut tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Update))
        .await?;
    let store = state.export_store()?;
    lifecycle::show(&mut tx, &settings(state, caller), tenant).await?;
    let export_id = uuid::Uuid::now_v7();
    psa_models::audit::record(
        &mut tx,
        caller.tenant,
        &caller.actor(),
        "export",
        "tenant",
        Some(tenant.0),
        serde_json::json!({"export_id": export_id}),
    )
    .await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    exports::begin(
        &state.pool,
        export_id,
        tenant,
        Purpose::Request,
        &caller.actor(),
    )
    .await?;
    Ok(exports::run(&state.pool, store, export_id).await?)
}

async fn find_export(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    export: &str,
) -> Result<Export, ApiError> {
    let tenant: TenantId = crate::extract::path_id(tenant)?;
    let export_id: uuid::Uuid = crate::extract::path_id(export)?;
    let tx = caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Read))
        .await?;
    tx.rollback().await.map_err(psa_models::Error::from)?;
    let mut conn = state
        .pool
        .acquire()
        .await
        .map_err(psa_models::Error::from)?;
    let found = exports::get(&mut conn, export_id).await?;
    if found.tenant_id != tenant {
        return Err(ApiError::NotFound);
    }
    Ok(found)
}

/// An export's record: status, size, manifest.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/exports/{export_id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("export_id" = uuid::Uuid, Path)),
    responses((status = 200, body = Export), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_export(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, export_id)): Path<(String, String)>,
) -> Result<Json<Export>, ApiError> {
    Ok(Json(find_export(&state, &caller, &id, &export_id).await?))
}

/// The export's archive (`application/gzip`, a tar of JSON Lines files and `manifest.json`).
#[utoipa::path(get, path = "/api/v1/tenants/{id}/exports/{export_id}/archive", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("export_id" = uuid::Uuid, Path)),
    responses((status = 200, content_type = "application/gzip"), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    Path((id, export_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    archive_download(&state, &caller, &id, &export_id).await
}

/// A completed export's archive as a download (`tenant:read`).
pub async fn archive_download(
    state: &AppState,
    caller: &Caller,
    tenant: &str,
    export: &str,
) -> Result<Response, ApiError> {
    let found = find_export(state, caller, tenant, export).await?;
    let Some(key) = found.location.filter(|_| found.status == "completed") else {
        return Err(psa_models::Error::conflict(None, "The export has not completed").into());
    };
    let stream = state.export_store()?.open(&key).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"tenant-{}-{}.tar.gz\"",
                    found.tenant_id, found.export_id
                ),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
