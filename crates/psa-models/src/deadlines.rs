//! A subscription's deadlines: a trial's reminder and end, and the grace of a payment overdue.
//!
//! Each is watched by a workflow of its own (`tenant_trial`, `tenant_payment_grace`) that waits
//! on durable timers and calls [`trial_step`] or [`payment_step`] at each wake-up. The database
//! is the truth: a step reads the subscription under its lock, does what is due *now* (once:
//! each deed leaves its mark), notes the deadline it waits for (so that the worker's sweep starts
//! a watcher only where none waits), and says how long to wait for the next one. A conversion, an
//! extension or a payment changes the database first and then wakes the watcher; a wake-up that
//! is lost only makes the watcher find the change at its next deadline, where the step does
//! nothing that is no longer due.
//!
//! A suspension the platform makes for a deadline is marked (`suspended_for`): only such a
//! suspension is lifted when its cause ends ([`lift`]); an operator's own stays.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::audit::Actor;
use crate::events::{self, EventType};
use crate::lifecycle::{self, Change, TenantStatus};
use crate::plans::{self, Subscription, SubscriptionStatus};
use crate::{Error, Result, TenantId, db};

/// The reason a tenant is suspended with when its trial ends unconverted.
pub const TRIAL_ENDED: &str = "trial ended";
/// The reason a tenant is suspended with when a payment stays overdue past its grace.
pub const PAYMENT_OVERDUE: &str = "payment overdue";

/// Which deadline a watcher keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Watch {
    /// The trial's reminder and end.
    Trial,
    /// The end of the grace of a payment overdue.
    Payment,
}

impl Watch {
    /// The workflow id of the tenant's watcher (one per tenant and deadline).
    pub fn workflow_id(self, tenant: TenantId) -> String {
        match self {
            Watch::Trial => format!("tenant-trial-{tenant}"),
            Watch::Payment => format!("tenant-payment-grace-{tenant}"),
        }
    }
}

/// What a watcher does next: wait (and step again), or end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Next {
    Wait(Duration),
    /// Nothing is left to watch; why (`converted`, `suspended`, ...).
    Done(String),
}

/// A reminder to mail: the trial's end, and the tenant's administrators.
#[derive(Debug, Clone)]
pub struct Reminder {
    pub tenant_name: String,
    pub trial_ends_at: DateTime<Utc>,
    /// (first name, full name, email) of each active administrator.
    pub admins: Vec<(String, String, String)>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct Locked {
    status: SubscriptionStatus,
    trial_ends_at: Option<DateTime<Utc>>,
    trial_reminded_for: Option<DateTime<Utc>>,
    trial_ended_for: Option<DateTime<Utc>>,
    past_due_since: Option<DateTime<Utc>>,
    suspended_for: Option<String>,
    now: DateTime<Utc>,
}

/// Locks the tenant, then its subscription (the order every change of both keeps), in the
/// tenant's context; `None`: no such tenant or no subscription.
pub(crate) async fn lock(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<(TenantStatus, Locked)>> {
    db::enter_tenant(conn, tenant).await?;
    let status: Option<TenantStatus> =
        // Not a key update: inserts into the tenant's tables (their foreign keys share-lock the
        // row) go on meanwhile.
        sqlx::query_scalar("SELECT status FROM tenants WHERE tenant = $1 FOR NO KEY UPDATE")
            .bind(tenant)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(status) = status else {
        return Ok(None);
    };
    let sub: Option<Locked> = sqlx::query_as(
        "SELECT status, trial_ends_at, trial_reminded_for, trial_ended_for, past_due_since, \
                suspended_for, now() AS now \
         FROM tenant_subscriptions WHERE tenant = $1 FOR UPDATE",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(sub.map(|s| (status, s)))
}

/// Locks the tenant and then its subscription, the order every change of both keeps (in the
/// tenant's context).
pub async fn hold(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    lock(conn, tenant).await.map(drop)
}

fn until(from: DateTime<Utc>, to: DateTime<Utc>) -> Duration {
    (to - from).to_std().unwrap_or_default()
}

async fn event(
    conn: &mut PgConnection,
    tenant: TenantId,
    kind: EventType,
    data: serde_json::Value,
) -> Result<()> {
    db::leave_tenant(conn).await?;
    events::record(conn, kind, Some(tenant), data, None).await?;
    db::enter_tenant(conn, tenant).await
}

async fn mark_suspended(conn: &mut PgConnection, tenant: TenantId, why: &str) -> Result<()> {
    db::enter_tenant(conn, tenant).await?;
    sqlx::query("UPDATE tenant_subscriptions SET suspended_for = $2 WHERE tenant = $1")
        .bind(tenant)
        .bind(why)
        .execute(conn)
        .await?;
    Ok(())
}

/// Does what is due for the tenant's trial now, in the caller's transaction (the platform's
/// connection): the reminder `lead` before the end (once per end: the event
/// `tenant.trial_ending`, and the administrators to mail, returned for after the commit), and at
/// the end, unless the trial was converted, the suspension (reason `trial ended`, the event
/// `tenant.trial_ended`). A tenant suspended or canceled by an operator is not suspended again;
/// it is told its trial ended all the same.
pub async fn trial_step(
    conn: &mut PgConnection,
    settings: &lifecycle::Settings,
    tenant: TenantId,
    lead: chrono::Duration,
) -> Result<(Next, Option<Reminder>)> {
    let Some((status, s)) = lock(conn, tenant).await? else {
        return Ok((Next::Done("no subscription".into()), None));
    };
    if s.status != SubscriptionStatus::Trialing {
        return Ok((Next::Done("converted".into()), None));
    }
    if status == TenantStatus::Canceled {
        return Ok((Next::Done("canceled".into()), None));
    }
    let Some(ends) = s.trial_ends_at else {
        return Ok((Next::Done("no trial end".into()), None));
    };
    if s.now >= ends {
        if s.trial_ended_for == Some(ends) {
            return Ok((Next::Done("ended".into()), None));
        }
        sqlx::query("UPDATE tenant_subscriptions SET trial_ended_for = $2 WHERE tenant = $1")
            .bind(tenant)
            .bind(ends)
            .execute(&mut *conn)
            .await?;
        let suspended = if status == TenantStatus::Active {
            lifecycle::suspend(
                conn,
                settings,
                tenant,
                TRIAL_ENDED,
                &Actor::Platform("trial"),
            )
            .await?;
            mark_suspended(conn, tenant, "trial_ended").await?;
            true
        } else {
            false
        };
        event(
            conn,
            tenant,
            EventType::TenantTrialEnded,
            serde_json::json!({"tenant": tenant, "trial_ends_at": ends, "suspended": suspended}),
        )
        .await?;
        return Ok((Next::Done("ended".into()), None));
    }
    let remind_at = ends - lead;
    let mut reminder = None;
    // A watcher waits for this end: the sweep leaves it alone.
    sqlx::query(
        "UPDATE tenant_subscriptions SET trial_watch_for = trial_ends_at WHERE tenant = $1",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    if s.trial_reminded_for != Some(ends) {
        if s.now < remind_at {
            return Ok((Next::Wait(until(s.now, remind_at)), None));
        }
        sqlx::query("UPDATE tenant_subscriptions SET trial_reminded_for = $2 WHERE tenant = $1")
            .bind(tenant)
            .bind(ends)
            .execute(&mut *conn)
            .await?;
        let (tenant_name, admins) = admins(conn, tenant).await?;
        event(
            conn,
            tenant,
            EventType::TenantTrialEnding,
            serde_json::json!({"tenant": tenant, "trial_ends_at": ends,
                               "administrators": admins.len()}),
        )
        .await?;
        reminder = Some(Reminder {
            tenant_name,
            trial_ends_at: ends,
            admins,
        });
    }
    Ok((Next::Wait(until(s.now, ends)), reminder))
}

/// The tenant's name and its active administrators (in the tenant's context).
async fn admins(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<(String, Vec<(String, String, String)>)> {
    let name: String = sqlx::query_scalar("SELECT company_name FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await?;
    let admins: Vec<(Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT DISTINCT u.first_name, u.last_name, u.email FROM users u \
         JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
         JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
         WHERE u.tenant = $1 AND u.user_type = 'internal' AND NOT u.is_inactive \
           AND r.role_name = 'Admin' AND r.msp ORDER BY u.email",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    let admins = admins
        .into_iter()
        .map(|(first, last, email)| {
            let first = first.unwrap_or_default();
            let full = format!("{first} {}", last.unwrap_or_default())
                .trim()
                .to_owned();
            (first, full, email)
        })
        .collect();
    Ok((name, admins))
}

/// Does what is due for a payment overdue now: once it has been overdue for `grace`, the
/// tenant is suspended (reason `payment overdue`) unless it is suspended or canceled already.
pub async fn payment_step(
    conn: &mut PgConnection,
    settings: &lifecycle::Settings,
    tenant: TenantId,
    grace: chrono::Duration,
) -> Result<Next> {
    let Some((status, s)) = lock(conn, tenant).await? else {
        return Ok(Next::Done("no subscription".into()));
    };
    let (SubscriptionStatus::PastDue, Some(since)) = (s.status, s.past_due_since) else {
        return Ok(Next::Done("paid".into()));
    };
    if status == TenantStatus::Canceled {
        return Ok(Next::Done("canceled".into()));
    }
    // A watcher waits for this trouble: the sweep leaves it alone.
    sqlx::query(
        "UPDATE tenant_subscriptions SET payment_watch_for = past_due_since WHERE tenant = $1",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?;
    let due = since + grace;
    if s.now < due {
        return Ok(Next::Wait(until(s.now, due)));
    }
    if status == TenantStatus::Active {
        lifecycle::suspend(
            conn,
            settings,
            tenant,
            PAYMENT_OVERDUE,
            &Actor::Platform("billing"),
        )
        .await?;
        mark_suspended(conn, tenant, "payment_overdue").await?;
        return Ok(Next::Done("suspended".into()));
    }
    // Suspended by an operator: if they reactivate it while it is still past due, it has one
    // more grace period from this look, then it is suspended for payment.
    Ok(Next::Wait(
        grace.to_std().unwrap_or(Duration::from_secs(3600)),
    ))
}

/// The longest extension at once.
pub const MAX_EXTENSION: chrono::Duration = chrono::Duration::days(365);

/// An extension's days as typed (1-365), or a validation error on `days`.
pub fn extension_days(days: i64) -> Result<chrono::Duration> {
    if (1..=MAX_EXTENSION.num_days()).contains(&days) {
        Ok(chrono::Duration::days(days))
    } else {
        Err(Error::validation(
            "days",
            "A trial is extended by 1-365 days at a time",
        ))
    }
}

/// Extends the tenant's trial by `by`, from its end or, when it has ended, from now (in the
/// tenant's context; the caller has locked the tenant). The reminder is sent again before the
/// new end. Returns the subscription before and after.
pub async fn extend_trial(
    conn: &mut PgConnection,
    tenant: TenantId,
    by: chrono::Duration,
) -> Result<(Subscription, Subscription)> {
    if by < chrono::Duration::seconds(1) || by > MAX_EXTENSION {
        return Err(Error::validation(
            "days",
            "A trial is extended by 1-365 days at a time",
        ));
    }
    db::enter_tenant(conn, tenant).await?;
    if !plans::lock_seats(conn, tenant).await? {
        return Err(Error::NotFound {
            entity: "subscription",
        });
    }
    let before = plans::subscription(conn, tenant)
        .await?
        .ok_or(Error::NotFound {
            entity: "subscription",
        })?;
    if before.status != SubscriptionStatus::Trialing {
        return Err(Error::InvalidState {
            code: "not_trialing",
            message: format!(
                "The tenant's subscription is {}: it has no trial to extend",
                before.status.as_str()
            )
            .into(),
        });
    }
    sqlx::query(
        "UPDATE tenant_subscriptions \
         SET trial_ends_at = greatest(trial_ends_at, now()) + make_interval(secs => $2), \
             trial_reminded_for = NULL, trial_ended_for = NULL, updated_at = now() \
         WHERE tenant = $1",
    )
    .bind(tenant)
    .bind(by.num_seconds() as f64)
    .execute(&mut *conn)
    .await?;
    let after = plans::subscription(conn, tenant)
        .await?
        .ok_or(Error::NotFound {
            entity: "subscription",
        })?;
    Ok((before, after))
}

/// Lifts the platform's own suspension of the tenant when its cause has ended (the trial
/// converted or extended, the payment made): the tenant is reactivated as `actor`. An
/// operator's suspension, or one whose cause remains, stays. Locks the tenant first.
pub async fn lift(
    conn: &mut PgConnection,
    settings: &lifecycle::Settings,
    tenant: TenantId,
    actor: &Actor,
) -> Result<Option<Change>> {
    let Some((status, s)) = lock(conn, tenant).await? else {
        return Ok(None);
    };
    if status != TenantStatus::Suspended {
        return Ok(None);
    }
    let ended = match s.suspended_for.as_deref() {
        Some("trial_ended") => {
            s.status == SubscriptionStatus::Active
                || (s.status == SubscriptionStatus::Trialing
                    && s.trial_ends_at.is_some_and(|e| e > s.now))
        }
        Some("payment_overdue") => matches!(
            s.status,
            SubscriptionStatus::Active | SubscriptionStatus::Trialing
        ),
        _ => false,
    };
    if !ended {
        return Ok(None);
    }
    // Another cause may hold it (a payment made after the trial ended unconverted).
    if lifecycle::reactivation_allowed(conn, tenant).await.is_err() {
        return Ok(None);
    }
    lifecycle::reactivate(conn, settings, tenant, actor)
        .await
        .map(Some)
}

/// The deadlines without a watcher: trials whose end no watcher was started for, and payments
/// overdue likewise, changed before `older_than` (a starter may still be at it). The platform's
/// connection (every tenant's rows).
pub async fn unwatched(
    conn: &mut PgConnection,
    older_than: DateTime<Utc>,
) -> Result<Vec<(TenantId, Watch)>> {
    let rows: Vec<(TenantId, bool)> = sqlx::query_as(
        "SELECT s.tenant, s.status = 'trialing' FROM tenant_subscriptions s \
         JOIN tenants t ON t.tenant = s.tenant \
         WHERE s.updated_at < $1 AND t.status <> 'canceled' AND ( \
           (s.status = 'trialing' AND s.trial_watch_for IS DISTINCT FROM s.trial_ends_at \
              AND s.trial_ended_for IS DISTINCT FROM s.trial_ends_at) \
           OR (s.status = 'past_due' AND s.payment_watch_for IS DISTINCT FROM s.past_due_since)) \
         ORDER BY s.updated_at LIMIT 500",
    )
    .bind(older_than)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(t, trial)| (t, if trial { Watch::Trial } else { Watch::Payment }))
        .collect())
}
