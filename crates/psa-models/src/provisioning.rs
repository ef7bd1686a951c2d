//! The provisioning record: how each tenant was provisioned, kept in the database.
//!
//! One row per tenant creation run (`tenant_provisioning`, keyed by workflow id). Its life:
//!
//! ```text
//!   requested --(the run's first activity)--> running --> completed | rolled_back | failed | cancelled
//!                                                 \--(the run was terminated or timed out)--> cut_off
//! ```
//!
//! The starter claims the row (`requested`, with the idempotency key and the request's hash);
//! the workflow's own activities write the rest: the settings the run used, the ids it minted for
//! its customer records, its outcome. The record outlives Temporal's history, so an idempotency
//! key holds for as long as the platform keeps the record (for ever), and `psa tenant list`,
//! status, reconcile and the sweeper of cut-off runs read it instead of scanning Temporal.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Error, Result, TenantId};

/// Where a run is. The final states are all but `requested` and `running`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RunStatus {
    /// Claimed by a starter; the run has not begun (no worker yet, or it is queued).
    Requested,
    Running,
    Completed,
    RolledBack,
    /// A compensation failed for good: something may be left behind (see the run's result).
    Failed,
    Cancelled,
    /// The run ended without its own outcome (terminated, timed out): the sweeper rolled back
    /// what it had built.
    CutOff,
}

impl RunStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, RunStatus::Requested | RunStatus::Running)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Requested => "requested",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::RolledBack => "rolled_back",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::CutOff => "cut_off",
        }
    }
}

/// The customer record's state, as the run left it and as reconcile later repaired it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type, Default)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TrackingState {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
    /// The starter chose `--skip-customer-tracking`; reconcile honours it.
    Skipped,
    /// The worker's `ENABLE_CUSTOMER_TRACKING` was false.
    Disabled,
    /// Its records were removed by a rollback of the tenant.
    RolledBack,
    /// Tracking had failed; `psa customers reconcile` created the missing records.
    Repaired,
}

impl TrackingState {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackingState::Pending => "pending",
            TrackingState::Running => "running",
            TrackingState::Completed => "completed",
            TrackingState::Failed => "failed",
            TrackingState::Skipped => "skipped",
            TrackingState::Disabled => "disabled",
            TrackingState::RolledBack => "rolled_back",
            TrackingState::Repaired => "repaired",
        }
    }
}

/// A row of `tenant_provisioning`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema), schema(as = ProvisioningRecord))]
pub struct Record {
    pub workflow_id: String,
    pub tenant_id: Option<Uuid>,
    pub tenant_name: String,
    pub idempotency_key: Option<String>,
    pub requested_by: String,
    pub status: RunStatus,
    pub skip_customer_tracking: bool,
    pub tracking_enabled: Option<bool>,
    pub management_tenant_id: Option<Uuid>,
    pub customer_tag_name: Option<String>,
    pub customer_tracking: TrackingState,
    pub customer_company_id: Option<Uuid>,
    pub customer_contact_id: Option<Uuid>,
    pub customer_tag_mapping_id: Option<Uuid>,
    pub linked_contact_id: Option<Uuid>,
    pub error: Option<String>,
    pub requested_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub ended_at: Option<DateTime<Utc>>,
}

macro_rules! columns {
    () => {
        "workflow_id, tenant_id, tenant_name, idempotency_key, requested_by, status, \
         skip_customer_tracking, tracking_enabled, management_tenant_id, customer_tag_name, \
         customer_tracking, customer_company_id, customer_contact_id, customer_tag_mapping_id, \
         linked_contact_id, error, requested_at, started_at, ended_at"
    };
}

/// A starter's claim on a workflow id.
#[derive(Clone, Debug)]
pub struct Claim<'a> {
    pub workflow_id: &'a str,
    pub tenant_name: &'a str,
    pub admin_email: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub request_hash: &'a [u8],
    pub requested_by: &'a str,
    pub skip_customer_tracking: bool,
}

/// What [`claim`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Claimed {
    /// The id was free: the caller starts the run.
    New,
    /// The id was claimed before with the same request: the caller returns that run.
    Same(Record),
    /// The id was claimed before with a different request.
    Different(Record),
}

/// Claims `workflow_id` for a request. One statement, safe under concurrency: of two starters
/// with the same key, one inserts and the other finds its row.
pub async fn claim(conn: &mut PgConnection, claim: &Claim<'_>) -> Result<Claimed> {
    let inserted: Option<String> = sqlx::query_scalar(
        "INSERT INTO tenant_provisioning (workflow_id, tenant_name, admin_email, idempotency_key, \
             request_hash, requested_by, skip_customer_tracking) \
         VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (workflow_id) DO NOTHING \
         RETURNING workflow_id",
    )
    .bind(claim.workflow_id)
    .bind(claim.tenant_name)
    .bind(claim.admin_email)
    .bind(claim.idempotency_key)
    .bind(claim.request_hash)
    .bind(claim.requested_by)
    .bind(claim.skip_customer_tracking)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_some() {
        return Ok(Claimed::New);
    }
    let (hash,): (Option<Vec<u8>>,) =
        sqlx::query_as("SELECT request_hash FROM tenant_provisioning WHERE workflow_id = $1")
            .bind(claim.workflow_id)
            .fetch_one(&mut *conn)
            .await?;
    let record = get(conn, claim.workflow_id).await?.ok_or(Error::NotFound {
        entity: "provisioning record",
    })?;
    // A run started without a starter's claim (by `temporal workflow start`) has no hash to
    // compare: it is accepted as the same request.
    if hash.is_none_or(|h| h == claim.request_hash) {
        Ok(Claimed::Same(record))
    } else {
        Ok(Claimed::Different(record))
    }
}

/// What the run's first activity records.
#[derive(Clone, Debug)]
pub struct Begin<'a> {
    pub workflow_id: &'a str,
    pub tenant_id: Uuid,
    pub tenant_name: &'a str,
    pub admin_email: &'a str,
    pub skip_customer_tracking: bool,
    pub tracking_enabled: bool,
    pub management_tenant_id: Option<Uuid>,
    pub customer_tag_name: &'a str,
    pub customer_tracking: TrackingState,
    pub customer_company_id: Uuid,
    pub customer_contact_id: Uuid,
    pub customer_tag_mapping_id: Uuid,
}

/// Records that the run has begun, with the settings it uses and the ids it minted. Idempotent
/// for the same run; `false` when the workflow id already belongs to another run's tenant (a
/// second run under a reused id, after Temporal purged the first) or the run was cut off.
pub async fn begin(conn: &mut PgConnection, b: &Begin<'_>) -> Result<bool> {
    let row: Option<String> = sqlx::query_scalar(
        "INSERT INTO tenant_provisioning AS p (workflow_id, tenant_id, tenant_name, admin_email, \
             requested_by, status, skip_customer_tracking, tracking_enabled, management_tenant_id, \
             customer_tag_name, customer_tracking, customer_company_id, customer_contact_id, \
             customer_tag_mapping_id, started_at) \
         VALUES ($1, $2, $3, $4, 'workflow', 'running', $5, $6, $7, $8, $9, $10, $11, $12, now()) \
         ON CONFLICT (workflow_id) DO UPDATE SET \
             tenant_id = EXCLUDED.tenant_id, status = 'running', \
             tracking_enabled = EXCLUDED.tracking_enabled, \
             management_tenant_id = EXCLUDED.management_tenant_id, \
             customer_tag_name = EXCLUDED.customer_tag_name, \
             customer_tracking = EXCLUDED.customer_tracking, \
             customer_company_id = EXCLUDED.customer_company_id, \
             customer_contact_id = EXCLUDED.customer_contact_id, \
             customer_tag_mapping_id = EXCLUDED.customer_tag_mapping_id, \
             started_at = coalesce(p.started_at, now()), updated_at = now() \
         WHERE p.status IN ('requested', 'running') \
           AND (p.tenant_id IS NULL OR p.tenant_id = EXCLUDED.tenant_id) \
         RETURNING workflow_id",
    )
    .bind(b.workflow_id)
    .bind(b.tenant_id)
    .bind(b.tenant_name)
    .bind(b.admin_email)
    .bind(b.skip_customer_tracking)
    .bind(b.tracking_enabled)
    .bind(b.management_tenant_id)
    .bind(b.customer_tag_name)
    .bind(b.customer_tracking)
    .bind(b.customer_company_id)
    .bind(b.customer_contact_id)
    .bind(b.customer_tag_mapping_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// Fails unless the run is still `running` and not asked to cancel; holds a share lock on its
/// record until the caller's transaction ends, so the sweeper (which takes the row for update)
/// cannot cut the run off while one of its steps is writing. A step of a run that was cut off
/// must not build anything more; a step of a run asked to cancel fails with `run_cancelled`
/// before writing, and the workflow rolls back.
pub async fn ensure_running(conn: &mut PgConnection, workflow_id: &str) -> Result<()> {
    let row: Option<(RunStatus, Option<String>)> = sqlx::query_as(
        "SELECT p.status, c.reason FROM tenant_provisioning p \
         LEFT JOIN tenant_provisioning_cancel_requests c ON c.workflow_id = p.workflow_id \
         WHERE p.workflow_id = $1 FOR SHARE OF p",
    )
    .bind(workflow_id)
    .fetch_optional(conn)
    .await?;
    match row {
        Some((RunStatus::Running, None)) => Ok(()),
        Some((RunStatus::Running, Some(reason))) => Err(Error::InvalidState {
            code: RUN_CANCELLED,
            message: format!("Cancelled: {reason}").into(),
        }),
        Some((other, _)) => Err(Error::conflict(
            Some("workflow_id"),
            format!(
                "provisioning run {workflow_id} is {}, not running",
                other.as_str()
            ),
        )),
        None => Err(Error::NotFound {
            entity: "provisioning record",
        }),
    }
}

/// The error code of a step refused because its run was asked to cancel.
pub const RUN_CANCELLED: &str = "run_cancelled";

/// Records a request to cancel the run (the first reason stays); `false` when there is no such
/// run, an `InvalidState` (`run_finished`) when it has already ended. Its steps read it before
/// writing (see [`ensure_running`]).
pub async fn request_cancel(
    conn: &mut PgConnection,
    workflow_id: &str,
    reason: &str,
) -> Result<bool> {
    let reason = cancel_reason(reason)?;
    // Not locked: a step holds the share lock on the record while it writes (and reads this
    // request); a run that ends meanwhile is left with a request nobody reads.
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM tenant_provisioning WHERE workflow_id = $1")
            .bind(workflow_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(status) = status else {
        return Ok(false);
    };
    if !matches!(status.as_str(), "requested" | "running") {
        return Err(Error::InvalidState {
            code: "run_finished",
            message: format!("The run has already ended ({status}): there is nothing to cancel")
                .into(),
        });
    }
    sqlx::query(
        "INSERT INTO tenant_provisioning_cancel_requests (workflow_id, reason) VALUES ($1, $2) \
         ON CONFLICT (workflow_id) DO NOTHING",
    )
    .bind(workflow_id)
    .bind(&reason)
    .execute(conn)
    .await?;
    Ok(true)
}

/// The reason of a cancel request: 1-500 characters, trimmed.
pub fn cancel_reason(raw: &str) -> Result<String> {
    let reason = raw.trim();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(Error::validation(
            "reason",
            "The reason must be 1-500 characters",
        ));
    }
    Ok(reason.to_owned())
}

/// Records an existing contact the run linked to its customer company (in the transaction that
/// links it), so that a rollback unlinks it, and a retry knows the link was its own.
pub async fn note_linked_contact(
    conn: &mut PgConnection,
    workflow_id: &str,
    contact_id: Uuid,
) -> Result<()> {
    sqlx::query(
        "UPDATE tenant_provisioning SET linked_contact_id = $2, updated_at = now() \
         WHERE workflow_id = $1",
    )
    .bind(workflow_id)
    .bind(contact_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records the run's outcome. A record already final (cut off by the sweeper) is left alone;
/// returns whether it was written.
pub async fn finish(
    conn: &mut PgConnection,
    workflow_id: &str,
    status: RunStatus,
    tracking: TrackingState,
    error: Option<&str>,
) -> Result<bool> {
    let record = sqlx::query_as::<_, Record>(concat!(
        "UPDATE tenant_provisioning SET status = $2, customer_tracking = $3, error = $4, \
             ended_at = now(), updated_at = now() \
         WHERE workflow_id = $1 AND status IN ('requested', 'running') RETURNING ",
        columns!()
    ))
    .bind(workflow_id)
    .bind(status)
    .bind(tracking)
    .bind(error)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(record) = record else {
        return Ok(false);
    };
    // The run's outcome and its customer record's, as events in this transaction: a run
    // finished twice (a retried activity, the sweeper) records them once.
    let mut events = vec![match status {
        RunStatus::Completed => crate::events::EventType::TenantProvisioned,
        _ => crate::events::EventType::TenantProvisioningFailed,
    }];
    if status == RunStatus::Completed {
        match tracking {
            TrackingState::Completed => events.push(crate::events::EventType::CustomerTracked),
            TrackingState::Failed => events.push(crate::events::EventType::CustomerTrackingFailed),
            _ => {}
        }
    }
    let data = serde_json::to_value(&record).map_err(|e| crate::Error::Internal(e.into()))?;
    for event in events {
        crate::events::record(
            conn,
            event,
            record.tenant_id.map(TenantId),
            data.clone(),
            Some(&format!("{workflow_id}/{event}")),
        )
        .await?;
    }
    Ok(true)
}

/// The record of a run.
pub async fn get(conn: &mut PgConnection, workflow_id: &str) -> Result<Option<Record>> {
    Ok(sqlx::query_as::<_, Record>(concat!(
        "SELECT ",
        columns!(),
        " FROM tenant_provisioning WHERE workflow_id = $1"
    ))
    .bind(workflow_id)
    .fetch_optional(conn)
    .await?)
}

/// The latest run that provisioned (or is provisioning) `tenant`.
pub async fn latest_for_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<Record>> {
    Ok(sqlx::query_as::<_, Record>(concat!(
        "SELECT ",
        columns!(),
        " FROM tenant_provisioning WHERE tenant_id = $1 ORDER BY requested_at DESC LIMIT 1"
    ))
    .bind(tenant)
    .fetch_optional(conn)
    .await?)
}

/// Runs recorded as `running` that began more than `min_age` ago, oldest first: the sweeper's
/// candidates (it asks Temporal whether each is still alive).
pub async fn running_since(
    conn: &mut PgConnection,
    min_age: std::time::Duration,
    limit: i64,
) -> Result<Vec<Record>> {
    Ok(sqlx::query_as::<_, Record>(concat!(
        "SELECT ",
        columns!(),
        " FROM tenant_provisioning WHERE status = 'running' AND started_at < now() - make_interval(secs => $1) \
          ORDER BY requested_at LIMIT $2"
    ))
    .bind(min_age.as_secs_f64())
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Takes the record of a running run for update, skipping it if another sweeper holds it.
pub async fn lock_running(conn: &mut PgConnection, workflow_id: &str) -> Result<Option<Record>> {
    Ok(sqlx::query_as::<_, Record>(concat!(
        "SELECT ",
        columns!(),
        " FROM tenant_provisioning WHERE workflow_id = $1 AND status = 'running' \
          FOR UPDATE SKIP LOCKED"
    ))
    .bind(workflow_id)
    .fetch_optional(conn)
    .await?)
}

/// Marks the latest run of `tenant` as repaired by reconcile, when its tracking had not
/// completed.
pub async fn mark_repaired(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query(
        "UPDATE tenant_provisioning SET customer_tracking = 'repaired', updated_at = now() \
         WHERE workflow_id = (SELECT workflow_id FROM tenant_provisioning WHERE tenant_id = $1 \
                              ORDER BY requested_at DESC LIMIT 1) \
           AND customer_tracking IN ('pending', 'running', 'failed')",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// Of `tenants`, those reconcile would find complete and leave as they are: a customer company
/// in the management tenant `mgmt` tagged `tag`, the first admin's email among its contacts,
/// and no run in flight, cut off or skipped by choice. One query for a page of tenants, so
/// reconcile walks a platform of tracked tenants without their per-tenant checks. (It errs
/// only towards "not complete": an email written differently sends the tenant through the
/// full check, which then finds it tracked.)
pub async fn fully_tracked(
    conn: &mut PgConnection,
    mgmt: TenantId,
    tag: &str,
    tenants: &[TenantId],
) -> Result<std::collections::HashSet<TenantId>> {
    let ids: Vec<Uuid> = tenants.iter().map(|t| t.0).collect();
    let rows: Vec<Uuid> = sqlx::query_scalar(
        // Lookups per tenant (LIMIT 1 laterals): planned as joins of whole sets, knowing
        // the page's 500 ids, this read every customer company of the management tenant.
        "SELECT t.tenant FROM unnest($3::uuid[]) AS t (tenant) \
         LEFT JOIN LATERAL (SELECT r.status, r.skip_customer_tracking FROM tenant_provisioning r \
                            WHERE r.tenant_id = t.tenant \
                            ORDER BY r.requested_at DESC LIMIT 1) p ON true \
         CROSS JOIN LATERAL (SELECT c.company_id FROM companies c \
                             WHERE c.tenant = $1 AND c.properties ? 'tenant_id' \
                               AND c.properties ->> 'tenant_id' = t.tenant::text LIMIT 1) c \
         CROSS JOIN LATERAL (SELECT 1 AS tagged FROM tag_mappings m JOIN tag_definitions d \
                               ON d.tenant = m.tenant AND d.tag_id = m.tag_id \
                             WHERE m.tenant = $1 AND m.tagged_id = c.company_id \
                               AND m.tagged_type = 'company' AND d.tag_text = $2 LIMIT 1) g \
         CROSS JOIN LATERAL (SELECT u.email FROM users u \
                             JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
                             JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
                             WHERE u.tenant = t.tenant AND u.user_type = 'internal' \
                               AND NOT u.is_inactive AND r.role_name = 'Admin' AND r.msp \
                             ORDER BY u.created_at, u.user_id LIMIT 1) a \
         CROSS JOIN LATERAL (SELECT 1 AS known FROM contacts k \
                             WHERE k.tenant = $1 AND k.email = a.email LIMIT 1) k \
         WHERE p.status IS NULL OR (p.status = 'completed' AND NOT p.skip_customer_tracking)",
    )
    .bind(mgmt)
    .bind(tag)
    .bind(ids)
    // Planned with its values each time (3 ms a page): the cached generic plan, not knowing
    // the management tenant holds every customer company, took 8 s a page at 100k tenants.
    .persistent(false)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(TenantId).collect())
}

/// Serialises everything that writes the customer record of the managed tenant `tenant` (the
/// workflow's tracking steps, reconcile) until the caller's transaction ends.
pub async fn lock_customer_record(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtext('psa.customer_record'), hashtext($1::text))",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// A tenant as operators list it: its customer record and how it was provisioned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantSummary {
    pub tenant_id: Uuid,
    pub name: String,
    /// The short name its people sign in with.
    #[sqlx(default)]
    pub slug: String,
    pub created_at: DateTime<Utc>,
    pub is_management: bool,
    /// `active`, `suspended` or `canceled`.
    pub status: crate::tenants::TenantStatus,
    /// `tracked` (company and tag), `partial` (company without the tag), `untracked`,
    /// `skipped` (provisioned with --skip-customer-tracking), `management`.
    pub customer_tracking: String,
    pub customer_company_id: Option<Uuid>,
    /// Whether the customer company carries the tag.
    pub customer_tagged: bool,
    pub workflow_id: Option<String>,
    pub provisioning_status: Option<RunStatus>,
    pub skip_customer_tracking: Option<bool>,
}

/// The customer tracking states [`TenantSummary::customer_tracking`] takes.
pub const CUSTOMER_STATES: [&str; 5] = ["tracked", "partial", "untracked", "skipped", "management"];

/// Filters of [`list_tenants`]; every one optional.
#[derive(Clone, Debug, Default)]
pub struct TenantListFilter {
    /// One of [`CUSTOMER_STATES`].
    pub customer_tracking: Option<String>,
    /// Part of the name, case-insensitive.
    pub name_contains: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub status: Option<crate::tenants::TenantStatus>,
    /// On this plan (its code).
    pub plan: Option<String>,
    /// Whose subscription is in this state.
    pub subscription_status: Option<crate::plans::SubscriptionStatus>,
    /// Every seat taken (or more in use than allowed).
    pub seats_full: bool,
    /// Trialing, the trial ending before this time.
    pub trial_ends_before: Option<DateTime<Utc>>,
}

/// The tenants with their customer record in the management tenant and their latest
/// provisioning run, oldest first, a page at a time (keyset on the creation time: a deep page
/// costs what the first does).
pub async fn list_tenants(
    conn: &mut PgConnection,
    tag_name: &str,
    filter: &TenantListFilter,
    paging: &crate::db::PageRequest,
) -> Result<crate::db::Page<TenantSummary>> {
    if let Some(s) = &filter.customer_tracking
        && !CUSTOMER_STATES.contains(&s.as_str())
    {
        return Err(crate::Error::validation(
            "customer_tracking",
            format!(
                "customer_tracking must be one of {}",
                CUSTOMER_STATES.join(", ")
            ),
        ));
    }
    let limit = paging.limit()?;
    let cursor = paging.decode_cursor()?;
    let after = match &cursor {
        None => None,
        Some((key, id)) => Some((
            DateTime::parse_from_rfc3339(key)
                .map_err(|_| crate::Error::validation("cursor", "The cursor is invalid"))?
                .with_timezone(&Utc),
            *id,
        )),
    };
    let pattern = filter
        .name_contains
        .as_deref()
        .map(crate::db::contains_pattern);
    // The query is the migrations' `psa_tenant_list` (SECURITY DEFINER): the API's management
    // callers run it too, whose role sees no other tenant.
    let rows = sqlx::query_as::<_, TenantSummary>(
        "SELECT tenant_id, name, created_at, is_management, status, customer_company_id, \
                customer_tagged, workflow_id, provisioning_status, skip_customer_tracking, \
                customer_tracking \
         FROM psa_tenant_list($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(tag_name)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(pattern)
    .bind(filter.created_after)
    .bind(filter.created_before)
    .bind(filter.customer_tracking.as_deref())
    .bind(filter.status.map(|s| s.as_str()))
    .bind(i32::try_from(limit + 1).unwrap_or(i32::MAX))
    .bind(
        filter
            .plan
            .as_deref()
            .map(str::trim)
            .filter(|p| !p.is_empty()),
    )
    .bind(filter.subscription_status.map(|s| s.as_str()))
    .bind(filter.seats_full)
    .bind(filter.trial_ends_before)
    .fetch_all(&mut *conn)
    .await?;
    let ids: Vec<TenantId> = rows.iter().map(|t| TenantId(t.tenant_id)).collect();
    let mut slugs = crate::tenants::slugs(conn, &ids).await?;
    let rows = rows
        .into_iter()
        .map(|mut t| {
            t.slug = slugs.remove(&TenantId(t.tenant_id)).unwrap_or_default();
            t
        })
        .collect();
    Ok(crate::db::page(rows, limit, |t| {
        (
            t.created_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            t.tenant_id,
        )
    }))
}

/// Records how a finished run's welcome email went (`sent`, `failed`, `disabled`), for the
/// attention list of failed ones. Written once: a repeat (a retried activity) or a run whose
/// email was resent since changes nothing.
pub async fn record_welcome(
    conn: &mut PgConnection,
    workflow_id: &str,
    status: &str,
) -> Result<()> {
    sqlx::query(
        "UPDATE tenant_provisioning SET welcome_email = $2 \
         WHERE workflow_id = $1 AND (welcome_email IS NULL OR welcome_email = 'pending')",
    )
    .bind(workflow_id)
    .bind(status)
    .execute(conn)
    .await?;
    Ok(())
}

/// A tenant's first administrator was sent a new invitation: its failed welcome email no longer
/// needs attention.
pub async fn welcome_resent(conn: &mut PgConnection, tenant: crate::TenantId) -> Result<()> {
    sqlx::query(
        "UPDATE tenant_provisioning SET welcome_email = 'resent' \
         WHERE tenant_id = $1 AND welcome_email = 'failed'",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}
