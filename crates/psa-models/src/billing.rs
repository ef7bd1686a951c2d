//! The billing system's word: Stripe's webhook events, verified and applied to the tenants'
//! subscriptions.
//!
//! A delivery is verified before anything is read from it ([`verify_signature`]: the
//! `Stripe-Signature` header's HMAC-SHA256 of `"{t}.{body}"`, within a tolerance of its time).
//! Its event is then applied once ([`apply`]): its id is recorded in `billing_events` in the
//! transaction that applies it, so a replay (Stripe retries; an attacker replays) answers and
//! changes nothing, and two deliveries of one event at once are taken one after the other. Events
//! are applied in the order of their `created`: one older than the last applied to the
//! subscription (`billing_event_at` for subscription events, `billing_invoice_event_at` for
//! invoices) arrived late and changes nothing.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::Sha256;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{Action, Actor};
use crate::deadlines::{self, Watch};
use crate::events::{self, EventType};
use crate::lifecycle::{self, TenantStatus};
use crate::plans::{self, SubscriptionStatus};
use crate::{Error, Result, TenantId, db};

/// How far a signature's time may be from now (Stripe's libraries' default).
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a delivery was refused before anything was read from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the Stripe-Signature header is missing")]
    Missing,
    #[error("the Stripe-Signature header is malformed (t=TIMESTAMP,v1=SIGNATURE)")]
    Malformed,
    #[error("the Stripe-Signature timestamp is outside the tolerance of 300 seconds")]
    Timestamp,
    #[error("no v1 signature of the Stripe-Signature header matches")]
    Mismatch,
}

impl SignatureError {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Malformed => "malformed",
            SignatureError::Timestamp => "timestamp",
            SignatureError::Mismatch => "signature",
        }
    }
}

/// Checks `header` (`t=...,v1=...[,v1=...]`) against `body` signed with `secret`, at `now`
/// (seconds since the epoch). Every `v1` is tried (Stripe sends two while a secret is rolled);
/// the comparison is constant-time.
pub fn verify_signature(
    secret: &[u8],
    header: Option<&str>,
    body: &[u8],
    now: i64,
) -> std::result::Result<(), SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        let (key, value) = part
            .trim()
            .split_once('=')
            .ok_or(SignatureError::Malformed)?;
        match key {
            "t" if timestamp.is_none() => {
                timestamp = Some(
                    value
                        .parse::<i64>()
                        .map_err(|_| SignatureError::Malformed)?,
                );
            }
            "t" => return Err(SignatureError::Malformed),
            "v1" => signatures.push(hex::decode(value).map_err(|_| SignatureError::Malformed)?),
            // v0 (test mode's old scheme) and anything newer are not ours to check.
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if now.abs_diff(timestamp) > TOLERANCE_SECONDS as u64 {
        return Err(SignatureError::Timestamp);
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    if signatures
        .iter()
        .any(|s| mac.clone().verify_slice(s).is_ok())
    {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// A Stripe event, as much of it as psa reads.
#[derive(Debug, Clone, Deserialize)]
pub struct StripeEvent {
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// Seconds since the epoch.
    pub created: i64,
    pub data: StripeData,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StripeData {
    pub object: Value,
}

/// What became of an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Applied to a tenant's subscription (which may not have changed).
    Applied,
    /// Seen before: nothing done.
    Duplicate,
    /// Older than what was applied already: nothing done.
    Stale,
    /// Not a type psa handles.
    Ignored,
    /// No tenant's subscription could be found for it.
    Unmatched,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::Ignored => "ignored",
            Outcome::Unmatched => "unmatched",
        }
    }
}

/// What to do after the commit: the watchers to start or wake, the deletion to start.
#[derive(Debug, Clone, Default)]
pub struct Followups {
    pub tenant: Option<TenantId>,
    pub watch: Vec<Watch>,
    /// The workflow id of a deletion recorded by a cancel.
    pub deletion: Option<String>,
}

/// How a subscription the billing system deleted cancels its tenant: the deletion's workflow id
/// (named by the caller's scheme; the caller starts the workflow after the commit), the grace.
#[derive(Debug, Clone)]
pub struct CancelWith {
    pub workflow_id: fn(TenantId) -> String,
    pub grace: chrono::Duration,
}

const HANDLED: [&str; 5] = [
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "invoice.paid",
    "invoice.payment_failed",
];

/// A string field, or an expanded object's `id`.
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// The subscription id, the tenant its metadata names, and the customer id of `object`.
fn references(kind: &str, o: &Value) -> (Option<String>, Option<String>, Option<String>) {
    let customer = id_of(&o["customer"]);
    if kind.starts_with("customer.subscription.") {
        let tenant = o["metadata"]["tenant_id"].as_str().map(str::to_owned);
        return (id_of(&o["id"]), tenant, customer);
    }
    // Invoices: the subscription at the top (older API versions) or under `parent`.
    let details = &o["parent"]["subscription_details"];
    let subscription = id_of(&o["subscription"]).or_else(|| id_of(&details["subscription"]));
    let tenant = o["subscription_details"]["metadata"]["tenant_id"]
        .as_str()
        .or_else(|| details["metadata"]["tenant_id"].as_str())
        .map(str::to_owned);
    (subscription, tenant, customer)
}

/// The tenant whose subscription is `subscription` (stored), else the one the metadata names
/// (a customer tenant that exists). Outside any tenant's context.
async fn find_tenant(
    conn: &mut PgConnection,
    subscription: Option<&str>,
    named: Option<&str>,
) -> Result<Option<TenantId>> {
    let named = named.and_then(|n| Uuid::parse_str(n.trim()).ok());
    Ok(sqlx::query_scalar("SELECT psa_billing_tenant($1, $2)")
        .bind(subscription)
        .bind(named)
        .fetch_one(&mut *conn)
        .await?)
}

fn stripe_status(raw: &str) -> Option<SubscriptionStatus> {
    match raw {
        "trialing" => Some(SubscriptionStatus::Trialing),
        "active" => Some(SubscriptionStatus::Active),
        "past_due" | "unpaid" => Some(SubscriptionStatus::PastDue),
        "canceled" => Some(SubscriptionStatus::Canceled),
        // incomplete (the first payment under way), incomplete_expired (a checkout that never
        // paid: the subscription psa knows is another, or none), paused: no change.
        _ => None,
    }
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_i64().and_then(|s| DateTime::from_timestamp(s, 0))
}

/// The subscription's fields the event sets (`None`: unchanged).
#[derive(Debug, Default)]
struct Wanted {
    status: Option<SubscriptionStatus>,
    plan: Option<String>,
    seats: Option<i32>,
    trial_end: Option<DateTime<Utc>>,
    period_end: Option<DateTime<Utc>>,
    notes: Vec<String>,
}

async fn wanted(
    conn: &mut PgConnection,
    kind: &str,
    o: &Value,
    current: &plans::Subscription,
) -> Result<Wanted> {
    let mut w = Wanted::default();
    match kind {
        "customer.subscription.deleted" => w.status = Some(SubscriptionStatus::Canceled),
        "invoice.paid" => {
            if current.status == SubscriptionStatus::PastDue {
                w.status = Some(SubscriptionStatus::Active);
            }
        }
        "invoice.payment_failed" => {
            if matches!(
                current.status,
                SubscriptionStatus::Active | SubscriptionStatus::Trialing
            ) {
                w.status = Some(SubscriptionStatus::PastDue);
            }
        }
        _ => {
            let raw = o["status"].as_str().unwrap_or_default();
            w.status = stripe_status(raw);
            if w.status.is_none() {
                w.notes.push(format!("status {raw:?} changes nothing"));
            }
            // A plan, seats and dates count once they are paid for (or tried): not those of a
            // checkout under way, nor of a canceled subscription.
            if !matches!(
                w.status,
                Some(
                    SubscriptionStatus::Trialing
                        | SubscriptionStatus::Active
                        | SubscriptionStatus::PastDue
                )
            ) {
                return Ok(w);
            }
            let item = &o["items"]["data"][0];
            let price = id_of(&item["price"]).or_else(|| id_of(&item["plan"]));
            if let Some(price) = price {
                let plan: Option<String> = sqlx::query_scalar("SELECT psa_plan_for_price($1)")
                    .bind(&price)
                    .fetch_one(&mut *conn)
                    .await?;
                match plan {
                    Some(p) => w.plan = Some(p),
                    None => w.notes.push(format!("no plan has the price {price}")),
                }
            }
            let quantity = item["quantity"].as_i64().or_else(|| o["quantity"].as_i64());
            if let Some(q) = quantity {
                let plan_code = w.plan.as_deref().unwrap_or(&current.plan);
                let plan = plans::get(conn, plan_code).await?;
                match i32::try_from(q)
                    .ok()
                    .and_then(|q| plans::seats_for(&plan, Some(q)).ok())
                {
                    Some(seats) => w.seats = seats,
                    None => w
                        .notes
                        .push(format!("{q} seats do not fit the plan {}", plan.code)),
                }
            }
            w.trial_end = time(&o["trial_end"]);
            w.period_end =
                time(&o["current_period_end"]).or_else(|| time(&item["current_period_end"]));
        }
    }
    Ok(w)
}

/// Applies `event` (verified) once, in the caller's transaction (the API's connection, outside
/// any tenant): the subscription's status, plan, seats and dates as the billing system says,
/// audited in both tenants and told as `tenant.subscription_changed`; the platform's own
/// suspension lifted when its cause ended; a deleted subscription cancels its tenant.
pub async fn apply(
    conn: &mut PgConnection,
    settings: &lifecycle::Settings,
    event: &StripeEvent,
    cancel: &CancelWith,
) -> Result<(Outcome, Followups)> {
    let created = DateTime::from_timestamp(event.created, 0)
        .ok_or_else(|| Error::validation("created", "The event's created time is not a time"))?;
    if event.id.is_empty() || event.id.len() > 255 || event.kind.len() > 255 {
        return Err(Error::validation(
            "id",
            "The event's id is 1-255 characters",
        ));
    }
    db::leave_tenant(conn).await?;
    // Taken first: a second delivery of the same event waits here for the first to commit,
    // then finds it.
    let fresh = sqlx::query(
        "INSERT INTO billing_events (event_id, event_type, created, outcome) \
         VALUES ($1, $2, $3, 'received') ON CONFLICT (event_id) DO NOTHING",
    )
    .bind(&event.id)
    .bind(&event.kind)
    .bind(created)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !fresh {
        return Ok((Outcome::Duplicate, Followups::default()));
    }
    let mut followups = Followups::default();
    let (outcome, detail) = if !HANDLED.contains(&event.kind.as_str()) {
        (Outcome::Ignored, None)
    } else {
        let o = &event.data.object;
        let (subscription, named, customer) = references(&event.kind, o);
        match find_tenant(conn, subscription.as_deref(), named.as_deref()).await? {
            None => (
                Outcome::Unmatched,
                Some(format!(
                    "no tenant has the subscription {}",
                    subscription.as_deref().unwrap_or("(none)")
                )),
            ),
            Some(tenant) => {
                followups.tenant = Some(tenant);
                apply_to(
                    conn,
                    settings,
                    tenant,
                    event,
                    created,
                    Ids {
                        subscription,
                        customer,
                    },
                    cancel,
                    &mut followups,
                )
                .await?
            }
        }
    };
    db::leave_tenant(conn).await?;
    sqlx::query(
        "UPDATE billing_events SET outcome = $2, tenant_id = $3, detail = $4 WHERE event_id = $1",
    )
    .bind(&event.id)
    .bind(outcome.as_str())
    .bind(followups.tenant)
    .bind(detail)
    .execute(&mut *conn)
    .await?;
    Ok((outcome, followups))
}

struct Ids {
    subscription: Option<String>,
    customer: Option<String>,
}

const ACTOR: Actor = Actor::Platform("billing");

#[allow(clippy::too_many_arguments)]
async fn apply_to(
    conn: &mut PgConnection,
    settings: &lifecycle::Settings,
    tenant: TenantId,
    event: &StripeEvent,
    created: DateTime<Utc>,
    ids: Ids,
    cancel: &CancelWith,
    followups: &mut Followups,
) -> Result<(Outcome, Option<String>)> {
    let Some((tenant_status, _)) = deadlines::lock(conn, tenant).await? else {
        return Ok((
            Outcome::Unmatched,
            Some("the tenant has no subscription".into()),
        ));
    };
    // Ordered each on its own: a subscription event carries the subscription's whole state and
    // is stale only behind a later one; an invoice's word on payment is stale behind any later
    // event. A subscription event older than the last invoice's brings its plan and dates but
    // not its status (the payment since is newer news).
    let (last_subscription, last_invoice): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "SELECT billing_event_at, billing_invoice_event_at FROM tenant_subscriptions \
             WHERE tenant = $1",
        )
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await?;
    let is_subscription_event = event.kind.starts_with("customer.subscription.");
    let newer = |t: Option<DateTime<Utc>>| t.is_some_and(|l| l > created);
    let stale = if is_subscription_event {
        newer(last_subscription)
    } else {
        newer(last_subscription) || newer(last_invoice)
    };
    if stale {
        return Ok((Outcome::Stale, None));
    }
    let before = plans::subscription(conn, tenant)
        .await?
        .ok_or(Error::NotFound {
            entity: "subscription",
        })?;
    db::leave_tenant(conn).await?;
    let w = wanted(conn, &event.kind, &event.data.object, &before).await?;
    db::enter_tenant(conn, tenant).await?;
    let mut notes = w.notes;
    let mut status = w.status.unwrap_or(before.status);
    if is_subscription_event && newer(last_invoice) && status != before.status {
        notes.push("its status is older than a later invoice's: kept".into());
        status = before.status;
    }
    // A trial needs its end: the billing system that names none leaves the status as it is.
    if status == SubscriptionStatus::Trialing
        && w.trial_end.is_none()
        && before.trial_ends_at.is_none()
    {
        notes.push("trialing without a trial_end changes nothing".into());
        status = before.status;
    }
    sqlx::query(
        "UPDATE tenant_subscriptions SET \
           status = $2, plan_code = coalesce($3, plan_code), \
           seats = CASE WHEN $4::integer IS NULL THEN seats ELSE $4 END, \
           trial_ends_at = CASE WHEN $2 = 'trialing' THEN coalesce($5, trial_ends_at) END, \
           current_period_end = coalesce($6, current_period_end), \
           past_due_since = CASE WHEN $2 = 'past_due' THEN coalesce(past_due_since, $7) END, \
           billing_subscription_id = CASE WHEN $10 THEN coalesce($8, billing_subscription_id) \
                                          ELSE billing_subscription_id END, \
           billing_customer_id = coalesce($9, billing_customer_id), \
           billing_event_at = CASE WHEN $10 THEN $7 ELSE billing_event_at END, \
           billing_invoice_event_at = CASE WHEN $10 THEN billing_invoice_event_at ELSE $7 END, \
           updated_at = now() \
         WHERE tenant = $1",
    )
    .bind(tenant)
    .bind(status)
    .bind(&w.plan)
    .bind(w.seats)
    .bind(w.trial_end)
    .bind(w.period_end)
    .bind(created)
    .bind(&ids.subscription)
    .bind(&ids.customer)
    .bind(is_subscription_event)
    .execute(&mut *conn)
    .await?;
    plans::mirror_licence_count(conn, tenant).await?;
    let after = plans::subscription(conn, tenant)
        .await?
        .ok_or(Error::NotFound {
            entity: "subscription",
        })?;
    let changed = (
        &before.plan,
        before.seats,
        before.status,
        before.trial_ends_at,
        before.current_period_end,
    ) != (
        &after.plan,
        after.seats,
        after.status,
        after.trial_ends_at,
        after.current_period_end,
    );
    if changed {
        let change = serde_json::json!({
            "event": {"id": event.id, "type": event.kind},
            "plan": {"before": before.plan, "after": after.plan},
            "seats": {"before": before.seats, "after": after.seats},
            "status": {"before": before.status, "after": after.status},
            "trial_ends_at": {"before": before.trial_ends_at, "after": after.trial_ends_at},
        });
        plans::audit_change(
            conn,
            tenant,
            settings.management_tenant_id,
            &ACTOR,
            Action::Update,
            change,
        )
        .await?;
        events::record(
            conn,
            EventType::TenantSubscriptionChanged,
            Some(tenant),
            serde_json::json!({
                "tenant": tenant,
                "source": "stripe",
                "billing_event": event.id,
                "status_before": before.status,
                "status": after.status,
                "plan_before": before.plan,
                "plan": after.plan,
                "seats_before": before.seats,
                "seats": after.seats,
                "seats_allowed": after.seats_allowed,
                "trial_ends_at": after.trial_ends_at,
                "current_period_end": after.current_period_end,
                "past_due_since": after.past_due_since,
            }),
            None,
        )
        .await?;
    }
    // What follows from the new status.
    match after.status {
        SubscriptionStatus::Canceled => {
            if matches!(
                tenant_status,
                TenantStatus::Active | TenantStatus::Suspended
            ) {
                let workflow_id = (cancel.workflow_id)(tenant);
                let canceled = refusable(conn, &mut notes, async |c: &mut PgConnection| {
                    lifecycle::cancel(
                        c,
                        settings,
                        tenant,
                        "subscription canceled",
                        cancel.grace,
                        &workflow_id,
                        Uuid::now_v7(),
                        &ACTOR,
                    )
                    .await
                })
                .await?;
                if canceled.is_some() {
                    followups.deletion = Some(workflow_id);
                }
            }
        }
        SubscriptionStatus::PastDue => {
            if before.status != SubscriptionStatus::PastDue {
                followups.watch.push(Watch::Payment);
            }
        }
        SubscriptionStatus::Trialing | SubscriptionStatus::Active => {
            refusable(conn, &mut notes, async |c: &mut PgConnection| {
                deadlines::lift(c, settings, tenant, &ACTOR).await
            })
            .await?;
            if tenant_status == TenantStatus::Canceled {
                // Paying for a tenant that is on its way out: an operator decides (restore it,
                // or cancel the subscription); psa does not undo a cancel by itself.
                tracing::warn!(tenant = %tenant, status = after.status.as_str(),
                    "billing: a canceled tenant's subscription is live");
                notes.push("the tenant is canceled while its subscription is live".into());
            }
            if after.status == SubscriptionStatus::Trialing
                && after.trial_ends_at != before.trial_ends_at
            {
                followups.watch.push(Watch::Trial);
            }
            // A trial converted, a payment made: their watchers end at once when woken.
            if before.status == SubscriptionStatus::Trialing
                && after.status != SubscriptionStatus::Trialing
            {
                followups.watch.push(Watch::Trial);
            }
            if before.status == SubscriptionStatus::PastDue {
                followups.watch.push(Watch::Payment);
            }
        }
    }
    let detail = (!notes.is_empty()).then(|| notes.join("; "));
    Ok((Outcome::Applied, detail))
}

/// Runs a lifecycle step that the tenant's state may refuse (a provisioning run in flight, a
/// trial that ended) in a savepoint: refused, it is undone and noted, and the billing system's
/// word on the subscription still stands (failing the delivery would only make Stripe retry
/// a change that cannot be made now).
async fn refusable<T>(
    conn: &mut PgConnection,
    notes: &mut Vec<String>,
    step: impl AsyncFnOnce(&mut PgConnection) -> Result<T>,
) -> Result<Option<T>> {
    use sqlx::Connection;
    let mut savepoint = conn.begin().await?;
    match step(&mut savepoint).await {
        Ok(v) => {
            savepoint.commit().await?;
            Ok(Some(v))
        }
        Err(e @ (Error::InvalidState { .. } | Error::Conflict { .. })) => {
            savepoint.rollback().await?;
            notes.push(format!("the tenant's lifecycle was not changed: {e}"));
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, t: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(format!("{t}.").as_bytes());
        mac.update(body);
        hex::encode(mac.finalize().into_bytes())
    }

    #[test]
    fn a_signature_is_checked_against_every_v1_within_the_tolerance() {
        let secret = "whsec_test";
        let body = br#"{"id":"evt_1"}"#;
        let t = 1_700_000_000;
        let good = sign(secret, t, body);
        let ok = format!("t={t},v1={},v1={good},v0=abc", "00".repeat(32));
        assert_eq!(
            verify_signature(secret.as_bytes(), Some(&ok), body, t + 10),
            Ok(())
        );
        assert_eq!(
            verify_signature(secret.as_bytes(), Some(&ok), body, t + 301),
            Err(SignatureError::Timestamp)
        );
        assert_eq!(
            verify_signature(secret.as_bytes(), Some(&ok), b"{}", t),
            Err(SignatureError::Mismatch)
        );
        assert_eq!(
            verify_signature(b"whsec_other", Some(&ok), body, t),
            Err(SignatureError::Mismatch)
        );
        for bad in [
            "",
            "t=x,v1=00",
            &format!("t={t}"),
            &format!("v1={good}"),
            "t=1,t=1,v1=00",
            &format!("t={t},v1=zz"),
        ] {
            assert_eq!(
                verify_signature(secret.as_bytes(), Some(bad), body, t),
                Err(SignatureError::Malformed),
                "{bad}"
            );
        }
        assert_eq!(
            verify_signature(secret.as_bytes(), None, body, t),
            Err(SignatureError::Missing)
        );
    }
}
