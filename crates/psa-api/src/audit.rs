//! `GET /api/v1/audit-log`: the management tenant's audit log (`tenant:read` there), newest
//! first, with who did it as a kind of actor and an id, filterable by either.

use axum::Json;
use axum::extract::State;
use psa_models::audit::{ActorKind, Entry, Filter};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;

/// `GET /api/v1/audit-log` query.
#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// An actor's text (`user:<id>`, `operator:<account>@<host>`) or part of a user's email.
    pub actor: Option<String>,
    /// `user`, `api_key`, `operator`, `platform`, `anonymous` or `support`.
    pub actor_kind: Option<String>,
    /// A user's or API key's id (a user's id also finds what their keys did), an operator's
    /// `account@host`, a platform part (`sweeper`, `reconcile`, ...).
    pub actor_id: Option<String>,
    /// An action (`suspend`, `invite`, `login_failed`, ...).
    pub action: Option<String>,
    /// `tenant`, `user`, `api_key`, `webhook_endpoint`, ...
    pub entity_type: Option<String>,
    /// The `next_before` of the previous page: older entries.
    pub before: Option<uuid::Uuid>,
    /// 1-200, default 50.
    pub limit: Option<u32>,
}

/// A page of the audit log, newest first.
#[derive(Serialize, ToSchema)]
pub struct AuditLogPage {
    pub items: Vec<Entry>,
    /// Pass as `before` for the next (older) page; absent on the last.
    pub next_before: Option<uuid::Uuid>,
}

/// The management tenant's audit log (the platform's operations, its own users' changes and
/// sign-ins), newest first, with who did it (`actor_kind`, `actor_id`, the user behind a session
/// or key and their email). For callers of the management tenant.
#[utoipa::path(get, path = "/api/v1/audit-log", tag = "audit", security(("bearer" = [])),
    params(AuditQuery),
    responses((status = 200, body = AuditLogPage), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> Result<Json<AuditLogPage>, ApiError> {
    let actor_kind = q.actor_kind.as_deref().map(ActorKind::parse).transpose()?;
    let filter = Filter {
        actor: q.actor.unwrap_or_default(),
        actor_kind,
        actor_id: q.actor_id.unwrap_or_default(),
        action: q.action.unwrap_or_default(),
        entity_type: q.entity_type.unwrap_or_default(),
    };
    let page =
        psa_app::audit::list(&state.app, &caller.principal(), &filter, q.before, q.limit).await?;
    Ok(Json(AuditLogPage {
        items: page.items,
        next_before: page.next_before,
    }))
}
