//! The billing system's webhook (Stripe): verified, then applied to the tenant's subscription
//! once (`psa_models::billing`); what follows from it (a watcher of a payment's grace, a
//! deletion after a cancel) is started after the commit, or by the worker's sweep when Temporal
//! cannot be reached.

use psa_models::billing::{self, CancelWith, Outcome, StripeEvent};
use psa_models::{Error, Result};
use secrecy::ExposeSecret;

use crate::App;

/// Verifies and applies one delivery of Stripe's webhook: `signature` is its `Stripe-Signature`
/// header, `body` the raw body. A refused delivery writes nothing and is counted
/// (`psa_billing_webhook_rejected_total`); an event no tenant's subscription matches is counted
/// (`psa_billing_unmatched_total`) and answered, so that Stripe does not retry it forever.
pub async fn stripe_webhook(app: &App, signature: Option<&str>, body: &[u8]) -> Result<Outcome> {
    let secret =
        app.settings.stripe_webhook_secret.as_ref().ok_or_else(|| {
            Error::unavailable("Billing webhooks are not configured on this server")
        })?;
    let now = chrono::Utc::now().timestamp();
    if let Err(e) =
        billing::verify_signature(secret.expose_secret().as_bytes(), signature, body, now)
    {
        metrics::counter!("psa_billing_webhook_rejected_total", "reason" => e.reason())
            .increment(1);
        tracing::warn!(reason = e.reason(), "billing webhook refused");
        return Err(Error::validation("Stripe-Signature", e.to_string()));
    }
    let event: StripeEvent = serde_json::from_slice(body).map_err(|e| {
        metrics::counter!("psa_billing_webhook_rejected_total", "reason" => "malformed")
            .increment(1);
        Error::validation("body", format!("not a Stripe event: {e}"))
    })?;
    let mgmt = app.management_tenant().await?;
    let cancel = CancelWith {
        workflow_id: psa_workflows::deletion::new_workflow_id,
        grace: app.settings.default_grace,
    };
    let mut tx = app.pool.begin().await?;
    let (outcome, followups) =
        billing::apply(&mut tx, &app.lifecycle(mgmt), &event, &cancel).await?;
    tx.commit().await?;
    metrics::counter!("psa_billing_events_total", "outcome" => outcome.as_str()).increment(1);
    match outcome {
        Outcome::Unmatched => {
            metrics::counter!("psa_billing_unmatched_total").increment(1);
            tracing::warn!(event = %event.id, kind = %event.kind,
                "billing event matches no tenant's subscription");
        }
        Outcome::Ignored => {
            tracing::debug!(event = %event.id, kind = %event.kind, "billing event ignored");
        }
        _ => tracing::info!(event = %event.id, kind = %event.kind, outcome = outcome.as_str(),
            tenant = ?followups.tenant, "billing event"),
    }
    if let Some(tenant) = followups.tenant {
        for watch in followups.watch {
            crate::plans::wake(app, tenant, watch).await;
        }
    }
    if let Some(workflow_id) = followups.deletion {
        crate::tenants::start_deletion(app, &workflow_id).await;
    }
    Ok(outcome)
}
