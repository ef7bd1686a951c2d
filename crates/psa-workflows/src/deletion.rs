//! The `tenant_deletion` workflow: a canceled tenant's way out.
//!
//! ```text
//!   export_tenant (an archive of everything, before anything is removed)
//!   wait until delete_after, a `confirm` signal (delete now) or a `restore` signal (stop)
//!   delete_tenant (every row of every tenant table, one transaction; the customer record
//!                  stays, marked deleted)
//! ```
//!
//! `psa tenant cancel` (or the API) marks the tenant canceled and records the deletion in the
//! same transaction, then starts this workflow with the deletion's id; the worker's sweeper
//! starts it for a deletion whose starter died before it could. A restore changes the database
//! first and then signals; `delete_tenant` finds a restored deletion and removes nothing, so a
//! lost signal cannot delete a restored tenant. Every activity is idempotent, so a worker killed
//! at any point resumes where the history says.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use psa_models::exports::{self, ExportStore, Purpose};
use psa_models::{TenantId, lifecycle};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{
    ApplicationFailure, SyncWorkflowContext, WorkflowContext, WorkflowContextView, WorkflowResult,
};
use uuid::Uuid;

use crate::failure::to_activity_error;

/// The workflow type's name (pinned: renaming the Rust type must not break runs in flight).
pub const WORKFLOW_TYPE: &str = "tenant_deletion";

/// Input of the workflow (its id is the deletion's `workflow_id`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeletionInput {
    pub tenant_id: TenantId,
    /// Milliseconds since the Unix epoch.
    pub delete_after_ms: i64,
    /// The export to take before anything is removed (minted by the starter).
    pub export_id: Uuid,
}

/// How a deletion ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeletionOutcome {
    Deleted,
    Restored,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeletionResult {
    pub outcome: DeletionOutcome,
    pub export_id: Uuid,
    /// Who confirmed it early (`None`: the deadline, or restored).
    pub confirmed_by: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DeleteIn {
    pub workflow_id: String,
    pub confirmed_by: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportIn {
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub export_id: Uuid,
}

/// What the deletion's activities need: the owner-role pool, where customer records live and
/// which tags mark them, and the export store.
pub struct DeletionActivities {
    pub pool: PgPool,
    /// `None`: there is no management tenant (then there are no customer records either).
    pub management_tenant_id: Option<TenantId>,
    pub customer_tag: psa_models::validate::TagText,
    pub tags: lifecycle::LifecycleTags,
    pub store: ExportStore,
}

impl DeletionActivities {
    fn settings(&self) -> Option<lifecycle::Settings> {
        self.management_tenant_id.map(|m| lifecycle::Settings {
            management_tenant_id: m,
            customer_tag: self.customer_tag.clone(),
            tags: self.tags.clone(),
        })
    }
}

fn failed(step: &'static str) {
    metrics::counter!("psa_lifecycle_failures_total", "step" => step).increment(1);
}

#[activities]
impl DeletionActivities {
    /// Takes the export the deletion keeps (idempotent: a completed export is kept).
    #[activity(name = "export_tenant")]
    pub async fn export_tenant(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ExportIn,
    ) -> Result<Uuid, ActivityError> {
        let result = heartbeating(&ctx, async {
            exports::begin(
                &self.pool,
                input.export_id,
                input.tenant_id,
                Purpose::Deletion,
                &format!("workflow:{}", input.workflow_id),
                None,
            )
            .await?;
            exports::run(&self.pool, &self.store, input.export_id).await?;
            sqlx::query("UPDATE tenant_deletions SET export_id = $2, updated_at = now() WHERE workflow_id = $1")
                .bind(&input.workflow_id)
                .bind(input.export_id)
                .execute(&self.pool)
                .await?;
            Ok::<_, psa_models::Error>(input.export_id)
        })
        .await;
        if let Err(e) = &result {
            failed("export_tenant");
            tracing::warn!(workflow_id = %input.workflow_id, tenant = %input.tenant_id, error = %e,
                "tenant deletion: export failed");
        }
        result.map_err(to_activity_error)
    }

    /// Deletes the tenant, unless it was restored (one transaction; idempotent).
    #[activity(name = "delete_tenant")]
    pub async fn delete_tenant(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: DeleteIn,
    ) -> Result<DeletionOutcome, ActivityError> {
        let result = heartbeating(&ctx, async {
            let mut tx = self.pool.begin().await?;
            let done = lifecycle::delete(
                &mut tx,
                self.settings().as_ref(),
                &input.workflow_id,
                input.confirmed_by.as_deref(),
            )
            .await?;
            tx.commit().await?;
            Ok::<_, psa_models::Error>(done)
        })
        .await;
        match result {
            Ok(lifecycle::Deleted::Restored) => Ok(DeletionOutcome::Restored),
            Ok(lifecycle::Deleted::Deleted { rows }) => {
                let total: i64 = rows.values().filter_map(|v| v.as_i64()).sum();
                tracing::info!(workflow_id = %input.workflow_id, rows = total, "tenant deleted");
                metrics::counter!("psa_tenant_deletions_total").increment(1);
                Ok(DeletionOutcome::Deleted)
            }
            Ok(lifecycle::Deleted::AlreadyDeleted) => Ok(DeletionOutcome::Deleted),
            Err(e) => {
                failed("delete_tenant");
                tracing::warn!(workflow_id = %input.workflow_id, error = %e,
                    "tenant deletion: delete failed");
                Err(to_activity_error(e))
            }
        }
    }
}

/// The workflow's state: what the signals asked.
#[workflow]
#[derive(Default)]
pub struct TenantDeletionWorkflow {
    confirmed_by: Option<String>,
    restored: bool,
}

/// Deleting and exporting retry for about an hour: they must happen, and an outage must not
/// turn into a half-done deletion (each attempt is one transaction). An attempt may take long
/// (a large tenant), so it heartbeats: a worker that dies mid-attempt is noticed in 20 s, and
/// another worker retries.
fn options() -> temporalio_sdk::ActivityOptions {
    temporalio_sdk::ActivityOptions::with_start_to_close_timeout(Duration::from_secs(3600))
        .heartbeat_timeout(HEARTBEAT_TIMEOUT)
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(300))
                .maximum_attempts(20)
                .build(),
        )
        .build()
}

const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs `work` while heartbeating every few seconds.
pub(crate) async fn heartbeating<T>(
    ctx: &ActivityContext,
    work: impl std::future::Future<Output = T>,
) -> T {
    let beat = async {
        loop {
            tokio::time::sleep(HEARTBEAT_TIMEOUT / 4).await;
            if let Err(e) = ctx.record_heartbeat(()).await {
                tracing::debug!(error = %e, "heartbeat not recorded");
            }
        }
    };
    tokio::select! {
        out = work => out,
        () = beat => unreachable!("the heartbeat loop never ends"),
    }
}

#[workflow_methods]
impl TenantDeletionWorkflow {
    #[run(name = "tenant_deletion")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: DeletionInput,
    ) -> WorkflowResult<DeletionResult> {
        let workflow_id = ctx.workflow_id().to_owned();
        ctx.execute_activity(
            DeletionActivities::export_tenant,
            ExportIn {
                workflow_id: workflow_id.clone(),
                tenant_id: input.tenant_id,
                export_id: input.export_id,
            },
            options(),
        )
        .await?;
        loop {
            if ctx.state(|s| s.restored) {
                return Ok(DeletionResult {
                    outcome: DeletionOutcome::Restored,
                    export_id: input.export_id,
                    confirmed_by: None,
                });
            }
            if ctx.state(|s| s.confirmed_by.is_some()) {
                break;
            }
            let now = ctx
                .workflow_time()
                .ok_or_else(|| ApplicationFailure::new("the workflow has no time"))?
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis() as i64;
            if now >= input.delete_after_ms {
                break;
            }
            let remaining = Duration::from_millis((input.delete_after_ms - now) as u64);
            temporalio_sdk::workflows::select! {
                _ = ctx.timer(remaining) => {}
                _ = ctx.wait_condition(|s: &Self| s.restored || s.confirmed_by.is_some()) => {}
            }
        }
        let confirmed_by = ctx.state(|s| s.confirmed_by.clone());
        let outcome = ctx
            .execute_activity(
                DeletionActivities::delete_tenant,
                DeleteIn {
                    workflow_id,
                    confirmed_by: confirmed_by.clone(),
                },
                options(),
            )
            .await?;
        Ok(DeletionResult {
            outcome,
            export_id: input.export_id,
            confirmed_by,
        })
    }

    /// Delete now instead of at the deadline; the argument says who confirmed.
    #[signal(name = "confirm")]
    pub fn confirm(&mut self, _ctx: &mut SyncWorkflowContext<Self>, by: String) {
        self.confirmed_by.get_or_insert(by);
    }

    /// The tenant was restored (the database says so already): stop without deleting.
    #[signal(name = "restore")]
    pub fn restore(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _: ()) {
        self.restored = true;
    }

    #[query(name = "pending")]
    pub fn pending(&self, _ctx: &WorkflowContextView) -> bool {
        !self.restored && self.confirmed_by.is_none()
    }
}

/// A new deletion's workflow id.
pub fn new_workflow_id(tenant: TenantId) -> String {
    format!("tenant-deletion-{tenant}-{}", Uuid::now_v7().simple())
}

/// Starting and signalling deletions.
#[derive(Clone)]
pub struct Deletions {
    pub client: temporalio_client::Client,
    pub task_queue: String,
    pub pool: PgPool,
}

impl Deletions {
    /// Starts the workflow of the recorded deletion `workflow_id` (a second start of the same
    /// deletion is a no-op) and records that it runs.
    pub async fn start(&self, workflow_id: &str) -> Result<(), crate::client::ClientError> {
        use temporalio_client::errors::WorkflowStartError;
        use temporalio_client::{
            WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowStartOptions,
        };
        let mut conn = self.pool.acquire().await.map_err(psa_models::Error::from)?;
        let Some(d) = lifecycle::deletion_to_start(&mut conn, workflow_id).await? else {
            // Restored (or deleted) meanwhile: nothing to start.
            return Ok(());
        };
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.to_owned())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .build();
        let input = DeletionInput {
            tenant_id: d.tenant_id,
            delete_after_ms: d.delete_after.timestamp_millis(),
            export_id: d.export_id,
        };
        match self
            .client
            .start_workflow(TenantDeletionWorkflow::run, input, options)
            .await
        {
            Ok(_) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
            Err(e) => return Err(crate::client::ClientError::Temporal(e.to_string())),
        }
        lifecycle::deletion_started(&mut conn, workflow_id).await?;
        Ok(())
    }

    /// Asks the deletion to delete now.
    pub async fn confirm(
        &self,
        workflow_id: &str,
        by: &str,
    ) -> Result<(), crate::client::ClientError> {
        self.client
            .get_workflow_handle::<TenantDeletionWorkflow>(workflow_id)
            .signal(
                TenantDeletionWorkflow::confirm,
                by.to_owned(),
                temporalio_client::WorkflowSignalOptions::default(),
            )
            .await
            .map_err(|e| crate::client::ClientError::Temporal(e.to_string()))
    }

    /// Tells the deletion its tenant was restored (it would find out by itself at the deadline).
    pub async fn restored(&self, workflow_id: &str) -> Result<(), crate::client::ClientError> {
        self.client
            .get_workflow_handle::<TenantDeletionWorkflow>(workflow_id)
            .signal(
                TenantDeletionWorkflow::restore,
                (),
                temporalio_client::WorkflowSignalOptions::default(),
            )
            .await
            .map_err(|e| crate::client::ClientError::Temporal(e.to_string()))
    }
}

/// Carries out what was recorded while Temporal could not be reached: starts the workflows of
/// recorded deletions whose starter could not (the tenant was canceled while Temporal was down),
/// and tells the workflows of deletions confirmed ("delete now") that may not have heard it.
/// The worker runs this with its sweep; both are idempotent. Returns how many it handled.
/// (A run that repeats a confirmation while the deletion runs adds a signal to its history;
/// the workflow keeps the first.)
pub async fn start_pending(
    workflows: &crate::client::TenantWorkflows,
) -> Result<usize, crate::client::ClientError> {
    let mut conn = workflows
        .pool
        .acquire()
        .await
        .map_err(psa_models::Error::from)?;
    let older_than = chrono::Utc::now() - chrono::Duration::seconds(30);
    let pending = lifecycle::deletions_to_start(&mut conn, older_than).await?;
    let confirmed = lifecycle::deletions_to_confirm(&mut conn, older_than).await?;
    drop(conn);
    let deletions = Deletions {
        client: workflows.client.clone(),
        task_queue: workflows.task_queue.clone(),
        pool: workflows.pool.clone(),
    };
    for d in &pending {
        // One deletion that cannot be started does not hold up the others.
        match deletions.start(&d.workflow_id).await {
            Ok(()) => tracing::info!(workflow_id = %d.workflow_id, tenant = %d.tenant_id,
                "started the workflow of a recorded deletion"),
            Err(e) => tracing::warn!(workflow_id = %d.workflow_id, error = %e,
                "cannot start a recorded deletion's workflow; will retry"),
        }
    }
    for d in &confirmed {
        // One deletion that cannot be told does not hold up the others.
        let told = match deletions.start(&d.workflow_id).await {
            Ok(()) => deletions.confirm(&d.workflow_id, &d.confirmed_by).await,
            Err(e) => Err(e),
        };
        match told {
            Ok(()) => tracing::info!(workflow_id = %d.workflow_id, tenant = %d.tenant_id,
                "told a deletion's workflow of its recorded confirmation"),
            Err(e) => tracing::warn!(workflow_id = %d.workflow_id, error = %e,
                "cannot tell a deletion's workflow of its confirmation; will retry"),
        }
    }
    Ok(pending.len() + confirmed.len())
}

/// Sets the lifecycle gauges: tenants by status, deletions pending, and the stuck ones (past
/// their deadline, or past a confirmation, by more than an hour: the alert
/// `PsaTenantDeletionOverdue`).
pub async fn observe_lifecycle(pool: &PgPool) {
    let counts: Result<Vec<(String, i64)>, psa_models::Error> =
        sqlx::query_as("SELECT status, count(*) FROM tenants GROUP BY status")
            .fetch_all(pool)
            .await
            .map_err(Into::into);
    let deletions = match pool.acquire().await {
        Ok(mut conn) => lifecycle::deletion_backlog(&mut conn).await,
        Err(e) => Err(e.into()),
    };
    match (counts, deletions) {
        (Ok(counts), Ok((pending, overdue))) => {
            for status in lifecycle::TenantStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status.as_str())
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("psa_tenants", "status" => status.as_str()).set(n as f64);
            }
            metrics::gauge!("psa_tenant_deletions_pending").set(pending as f64);
            metrics::gauge!("psa_tenant_deletions_overdue").set(overdue as f64);
        }
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot read the lifecycle gauges");
        }
    }
}

/// The lifecycle series at zero, so that rules and dashboards see them before anything happens.
pub(crate) fn init_metrics() {
    for step in ["export_tenant", "delete_tenant"] {
        metrics::counter!("psa_lifecycle_failures_total", "step" => step).absolute(0);
    }
    metrics::counter!("psa_tenant_deletions_total").absolute(0);
    metrics::gauge!("psa_tenant_deletions_pending").set(0.0);
    metrics::gauge!("psa_tenant_deletions_overdue").set(0.0);
    for status in lifecycle::TenantStatus::ALL {
        metrics::gauge!("psa_tenants", "status" => status.as_str()).set(0.0);
    }
}
