//! `GET /api/v1/attention`: what needs attention on the platform (`psa_app::attention`).

use axum::Json;
use axum::extract::State;

use psa_models::attention::Attention;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};

/// What needs attention on the platform, as the management console's start page shows it
/// (management, `tenant:read`): provisioning runs failed or cut off in the last 7 days,
/// customers whose record is partial or missing, welcome emails that failed, deletions due
/// within 7 days, webhook endpoints failing or disabled, trials ending within 7 days, past-due
/// subscriptions (each at most 50, with `more`), and the customer tenants by status and plan.
#[utoipa::path(get, path = "/api/v1/attention", tag = "tenants", security(("bearer" = [])),
    responses((status = 200, body = Attention), (status = 403, body = ErrorBody)))]
pub async fn attention(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<Attention>, ApiError> {
    Ok(Json(
        psa_app::attention::gather(&state.app, &caller.principal()).await?,
    ))
}
