//! What the platform keeps, and for how long (`PSA_EXPORT_RETENTION_DAYS`, default 30; the
//! worker's housekeeping applies it):
//!
//! - **Export archives** and their records are removed once older than the period, except the
//!   export a pending deletion took (it is kept until that deletion ends: it is the tenant's
//!   last copy). After a tenant is deleted its archives therefore go at the end of the period.
//! - **A deleted tenant's personal data in the platform's records**, once the period after its
//!   deletion has passed: its provisioning records' admin email, and the names and emails in
//!   its events' payloads. What stays: that the tenant existed and what happened to it, by whom
//!   (the management tenant's audit log and the deletion record), and its customer company in
//!   the management tenant (the business's own customer history). A tenant an import brought
//!   back is not redacted: it is a customer again.
//! - **The billing system's events** (`billing_events`: ids, types, outcomes; nothing
//!   personal), once older than the period and at least 30 days: they answer replays, which
//!   Stripe's signature tolerance refuses after 5 minutes anyway, and the ordering of a
//!   subscription's changes lives on the subscription itself.

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::exports::ExportStore;
use crate::{Result, TenantId};

/// The default period.
pub const DEFAULT_DAYS: u32 = 30;

/// What one pass removed.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Expired {
    pub exports: u64,
    pub tenants_redacted: u64,
    pub billing_events: u64,
}

/// One pass of the retention rules with period `keep` (at most 100 exports and 100 tenants a
/// pass; the next pass goes on).
pub async fn expire(pool: &PgPool, store: &ExportStore, keep: chrono::Duration) -> Result<Expired> {
    let mut out = Expired::default();
    let due: Vec<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT e.export_id, e.location FROM tenant_exports e \
         WHERE e.created_at < now() - make_interval(secs => $1) \
           AND (e.status <> 'running' OR e.created_at < now() - make_interval(secs => $1) \
                                                                - interval '1 day') \
           AND NOT EXISTS (SELECT 1 FROM tenant_deletions d \
                           WHERE d.export_id = e.export_id AND d.status = 'pending') \
         ORDER BY e.created_at LIMIT 100",
    )
    .bind(keep.num_seconds() as f64)
    .fetch_all(pool)
    .await?;
    for (id, location) in due {
        // One archive that cannot be removed holds up neither the others nor the redactions.
        match expire_export(pool, store, id, location.as_deref()).await {
            Ok(()) => out.exports += 1,
            Err(e) => tracing::warn!(export_id = %id, error = %e,
                "cannot remove an expired export; will retry"),
        }
    }
    let deleted: Vec<(String, TenantId)> = sqlx::query_as(
        "SELECT workflow_id, tenant_id FROM tenant_deletions d \
         WHERE status = 'deleted' AND redacted_at IS NULL \
           AND ended_at < now() - make_interval(secs => $1) \
           AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.tenant = d.tenant_id) \
         ORDER BY ended_at LIMIT 100",
    )
    .bind(keep.num_seconds() as f64)
    .fetch_all(pool)
    .await?;
    for (workflow_id, tenant) in deleted {
        let mut tx = pool.begin().await?;
        // Claimed: another worker's pass skips it, and a pass that finds it done does nothing.
        let claimed: Option<String> = sqlx::query_scalar(
            "SELECT workflow_id FROM tenant_deletions \
             WHERE workflow_id = $1 AND redacted_at IS NULL FOR UPDATE SKIP LOCKED",
        )
        .bind(&workflow_id)
        .fetch_optional(&mut *tx)
        .await?;
        if claimed.is_none() {
            continue;
        }
        sqlx::query(
            "UPDATE tenant_provisioning SET admin_email = 'redacted', updated_at = now() \
             WHERE tenant_id = $1",
        )
        .bind(tenant)
        .execute(&mut *tx)
        .await?;
        let events: Vec<(Uuid, Value)> =
            sqlx::query_as("SELECT event_id, data FROM events WHERE tenant_id = $1")
                .bind(tenant)
                .fetch_all(&mut *tx)
                .await?;
        for (id, mut data) in events {
            if redact(&mut data) {
                sqlx::query("UPDATE events SET data = $2 WHERE event_id = $1")
                    .bind(id)
                    .bind(&data)
                    .execute(&mut *tx)
                    .await?;
            }
        }
        sqlx::query("UPDATE tenant_deletions SET redacted_at = now() WHERE workflow_id = $1")
            .bind(&workflow_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        out.tenants_redacted += 1;
    }
    out.billing_events = sqlx::query(
        "DELETE FROM billing_events WHERE event_id IN ( \
           SELECT event_id FROM billing_events \
           WHERE received_at < now() - greatest(make_interval(secs => $1), interval '30 days') \
           ORDER BY received_at LIMIT 1000)",
    )
    .bind(keep.num_seconds() as f64)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(out)
}

/// Removes an expired export: the archive first (a record without its archive is harmless, an
/// archive nobody can find is not), then its record.
async fn expire_export(
    pool: &PgPool,
    store: &ExportStore,
    id: Uuid,
    location: Option<&str>,
) -> Result<()> {
    if let Some(key) = location {
        store.remove(key).await?;
    }
    sqlx::query("DELETE FROM tenant_exports WHERE export_id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Replaces, at any depth, the values of keys that name a person (emails, names, phone
/// numbers) with `"redacted"`; says whether anything changed.
pub fn redact(value: &mut Value) -> bool {
    const PERSONAL: [&str; 7] = [
        "email",
        "admin_email",
        "full_name",
        "first_name",
        "last_name",
        "phone",
        "phone_number",
    ];
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if PERSONAL.contains(&k.as_str()) && v.is_string() && v != "redacted" {
                    *v = Value::String("redacted".into());
                    changed = true;
                } else {
                    changed |= redact(v);
                }
            }
        }
        Value::Array(items) => {
            for v in items {
                changed |= redact(v);
            }
        }
        _ => {}
    }
    changed
}
