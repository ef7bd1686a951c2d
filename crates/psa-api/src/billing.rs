//! The billing system's webhook: Stripe's deliveries, verified by their signature (no session),
//! applied by the operations layer (`psa_app::billing`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};

/// What became of a delivery.
#[derive(Serialize, ToSchema)]
pub struct Received {
    /// `applied`, `duplicate` (seen before: nothing done), `stale` (older than what was applied:
    /// nothing done), `ignored` (a type psa does not handle) or `unmatched` (no tenant's
    /// subscription).
    pub outcome: String,
}

/// Stripe's webhook: `customer.subscription.created|updated|deleted`, `invoice.paid`,
/// `invoice.payment_failed`, verified by the `Stripe-Signature` header (HMAC-SHA256 with
/// `PSA_STRIPE_WEBHOOK_SECRET`, within 300 s). Idempotent by event id; applied in the order of
/// the events' `created`. A bad signature or timestamp: 400, nothing written.
#[utoipa::path(post, path = "/api/v1/billing/stripe/webhook", tag = "billing",
    request_body(content = Object, description = "A Stripe event, as Stripe sends it"),
    params(("Stripe-Signature" = String, Header, description = "t=TIMESTAMP,v1=SIGNATURE")),
    responses((status = 200, body = Received), (status = 400, body = ErrorBody),
              (status = 503, body = ErrorBody)))]
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Received>, ApiError> {
    let signature = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    match psa_app::billing::stripe_webhook(&state.app, signature, &body).await {
        Ok(outcome) => Ok(Json(Received {
            outcome: outcome.as_str().to_owned(),
        })),
        // Stripe's signature and body are the request's framing, not a resource's fields.
        Err(psa_models::Error::Validation { field, message }) => {
            Err(ApiError::bad_request(Some(field.into_owned()), message))
        }
        Err(e) => Err(e.into()),
    }
}
