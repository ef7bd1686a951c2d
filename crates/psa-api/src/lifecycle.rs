//! The tenant's lifecycle over the API: `GET /api/v1/tenants` and `/api/v1/tenants/{id}`,
//! suspend, reactivate, cancel, restore, delete and export. For callers of the management tenant
//! with the `tenant` permission the action needs (`read`, `update` for suspend, reactivate,
//! restore, export and an export's download, `delete` for cancel and delete). Each handler parses
//! its input and calls the operation in `psa_app::tenants`, which `psa tenant ...` and the
//! console call too: the same rules, permission checks and audit entries.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use psa_models::TenantId;
use psa_models::exports::Export;
use psa_models::lifecycle::{self, Change, TenantDetails, TenantStatus};
use psa_models::provisioning::{self, TenantSummary};
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, PathId, PathIds};

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
    let status = q.status.as_deref().map(TenantStatus::parse).transpose()?;
    let page = psa_app::tenants::list(
        &state.app,
        &caller.principal(),
        &provisioning::TenantListFilter {
            customer_tracking: q.tracking,
            name_contains: q.name,
            created_after: q.created_after,
            created_before: q.created_before,
            status,
            ..Default::default()
        },
        &psa_models::db::PageRequest {
            limit: q.limit,
            cursor: q.cursor,
        },
    )
    .await?;
    Ok(Json(page))
}

/// A tenant: status, reason, pending deletion, customer record.
#[utoipa::path(get, path = "/api/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = TenantDetails), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
) -> Result<Json<TenantDetails>, ApiError> {
    Ok(Json(
        psa_app::tenants::show(&state.app, &caller.principal(), tenant).await?,
    ))
}

/// `PATCH /api/v1/tenants/{id}` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantPatch {
    /// The name its people sign in with (`/console/sign-in?org=SLUG`): lowercase a-z, 0-9 and
    /// hyphens, 3-63 characters, unique.
    pub slug: String,
}

/// Change a tenant's slug (management, `tenant:update`; audited). A slug that breaks the rules
/// or another tenant has is refused (422 on `slug`).
#[utoipa::path(patch, path = "/api/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = TenantPatch,
    responses((status = 200, body = TenantDetails), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
    ApiJson(patch): ApiJson<TenantPatch>,
) -> Result<Json<TenantDetails>, ApiError> {
    Ok(Json(
        psa_app::tenants::set_slug(&state.app, &caller.principal(), tenant, &patch.slug).await?,
    ))
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
    PathId(tenant): PathId<TenantId>,
    ApiJson(req): ApiJson<ReasonRequest>,
) -> Result<Json<Change>, ApiError> {
    Ok(Json(
        psa_app::tenants::suspend(&state.app, &caller.principal(), tenant, &req.reason).await?,
    ))
}

/// Reactivate a suspended tenant: its users' credentials work again.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/reactivate", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Change), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn reactivate(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
) -> Result<Json<Change>, ApiError> {
    Ok(Json(
        psa_app::tenants::reactivate(&state.app, &caller.principal(), tenant).await?,
    ))
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
/// contacts become inactive, tagged canceled. The cancel is recorded even while the workflow
/// service is down: the worker starts the deletion when it can.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/cancel", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)), request_body = CancelRequest,
    responses((status = 200, body = Change), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
    ApiJson(req): ApiJson<CancelRequest>,
) -> Result<Json<Change>, ApiError> {
    let grace = req.grace_seconds.map(lifecycle::grace).transpose()?;
    Ok(Json(
        psa_app::tenants::cancel(&state.app, &caller.principal(), tenant, &req.reason, grace)
            .await?,
    ))
}

/// Restore a canceled tenant before its deletion: it returns to where the cancel found it.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/restore", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 200, body = Change), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn restore(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
) -> Result<Json<Change>, ApiError> {
    Ok(Json(
        psa_app::tenants::restore(&state.app, &caller.principal(), tenant).await?,
    ))
}

/// Delete a canceled tenant now instead of at its deadline. Answers 202: the confirmation is
/// recorded (and audited) and the deletion's workflow deletes the tenant, told now or, while the
/// workflow service is down, by the worker when it can (`GET /api/v1/tenants/{id}` answers 404
/// once it is gone).
#[utoipa::path(delete, path = "/api/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path)),
    responses((status = 202), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
) -> Result<StatusCode, ApiError> {
    psa_app::tenants::delete_now(&state.app, &caller.principal(), tenant).await?;
    Ok(StatusCode::ACCEPTED)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ExportQuery {
    /// An age X25519 public key (`age1...`): the archive carries every column, credentials
    /// included, and is encrypted to this key alone (a move to another installation).
    pub encrypt_to: Option<String>,
}

/// Export a tenant's data (any time): one archive with a JSON Lines file per table and a
/// manifest of row counts and checksums; secrets are left out, unless `encrypt_to` names the key
/// the archive is encrypted to. Answers when the export is done (or failed), with its record;
/// the archive is at `GET .../exports/{export_id}/archive`.
#[utoipa::path(post, path = "/api/v1/tenants/{id}/export", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ExportQuery),
    responses((status = 201, body = Export), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn export(
    State(state): State<AppState>,
    caller: Caller,
    PathId(tenant): PathId<TenantId>,
    ApiQuery(query): ApiQuery<ExportQuery>,
) -> Result<(StatusCode, Json<Export>), ApiError> {
    let to = query
        .encrypt_to
        .as_deref()
        .map(|r| psa_models::exports::Recipient::parse(r, "encrypt_to"))
        .transpose()?;
    Ok((
        StatusCode::CREATED,
        Json(psa_app::tenants::export(&state.app, &caller.principal(), tenant, to.as_ref()).await?),
    ))
}

/// An export's record: status, size, manifest.
#[utoipa::path(get, path = "/api/v1/tenants/{id}/exports/{export_id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("export_id" = uuid::Uuid, Path)),
    responses((status = 200, body = Export), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn get_export(
    State(state): State<AppState>,
    caller: Caller,
    PathIds(tenant, export_id): PathIds<TenantId, uuid::Uuid>,
) -> Result<Json<Export>, ApiError> {
    Ok(Json(
        psa_app::tenants::get_export(&state.app, &caller.principal(), tenant, export_id).await?,
    ))
}

/// The export's archive (`application/gzip`, a tar of JSON Lines files and `manifest.json`; an
/// export encrypted to a key: that, encrypted with age, `application/octet-stream`).
#[utoipa::path(get, path = "/api/v1/tenants/{id}/exports/{export_id}/archive", tag = "tenants", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path), ("export_id" = uuid::Uuid, Path)),
    responses((status = 200, content_type = "application/gzip"), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn archive(
    State(state): State<AppState>,
    caller: Caller,
    PathIds(tenant, export_id): PathIds<TenantId, uuid::Uuid>,
) -> Result<Response, ApiError> {
    archive_download(&state, &caller, tenant, export_id).await
}

/// A completed export's archive as a download (`tenant:update`, audited).
pub async fn archive_download(
    state: &AppState,
    caller: &Caller,
    tenant: TenantId,
    export_id: uuid::Uuid,
) -> Result<Response, ApiError> {
    let (found, key) =
        psa_app::tenants::download_export(&state.app, &caller.principal(), tenant, export_id)
            .await?;
    let stream = state.app.export_store()?.open(&key).await?;
    let (kind, suffix) = if found.encrypted_to.is_some() {
        ("application/octet-stream", ".age")
    } else {
        ("application/gzip", "")
    };
    Ok((
        [
            (header::CONTENT_TYPE, kind.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"tenant-{}-{}.tar.gz{suffix}\"",
                    found.tenant_id, found.export_id
                ),
            ),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
