//! The worker: configuration checks at start, then polling the task queue until shutdown.

use std::future::Future;
use std::time::Duration;

use psa_models::tenants;
use sqlx::PgPool;
use temporalio_client::Client;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::activities::TenantActivities;
use crate::client::TenantWorkflows;
use crate::deadlines::{DeadlineActivities, TenantPaymentGraceWorkflow, TenantTrialWorkflow};
use crate::deletion::{DeletionActivities, TenantDeletionWorkflow};
use crate::reconcile::{CustomerReconcileWorkflow, ReconcileActivities};
use crate::secret::SecretKey;
use crate::types::TrackingSettings;
use crate::workflow::TenantCreationWorkflow;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration is unusable: the worker must not start (exit code 2).
    #[error("{0}")]
    Config(String),
    #[error("{0}")]
    Failed(String),
}

/// Checks that customer tracking can work: with tracking enabled, the management tenant must
/// be set and exist.
pub async fn check_tracking(pool: &PgPool, tracking: &TrackingSettings) -> Result<(), WorkerError> {
    if !tracking.enabled {
        return Ok(());
    }
    let id = tracking.management_tenant_id.ok_or_else(|| {
        WorkerError::Config(
            "ENABLE_CUSTOMER_TRACKING is true but NINEMINDS_TENANT_ID is not set (create the management tenant with `psa management init`)".into(),
        )
    })?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| WorkerError::Failed(format!("cannot connect to PostgreSQL: {e}")))?;
    match tenants::find(&mut conn, id).await {
        Ok(Some(t)) if t.is_management => Ok(()),
        // Pointed at a customer tenant by mistake, every new admin's email would land in that
        // customer's data: refuse.
        Ok(Some(_)) => Err(WorkerError::Config(format!(
            "NINEMINDS_TENANT_ID={id} names a tenant that is not the management tenant (the one `psa management init` created)"
        ))),
        Ok(None) => Err(WorkerError::Config(format!(
            "NINEMINDS_TENANT_ID={id} names no tenant in this database (create it with `psa management init`)"
        ))),
        Err(e) => Err(WorkerError::Failed(format!(
            "cannot read the management tenant: {e}"
        ))),
    }
}

/// What a worker needs besides its Temporal client: the database, the key that seals secrets,
/// its customer tracking settings and its mail settings (which decide every run it executes).
#[derive(Clone)]
pub struct WorkerConfig {
    pub pool: PgPool,
    pub key: SecretKey,
    pub tracking: TrackingSettings,
    pub delivery: psa_models::invitations::Delivery,
    pub lifecycle: LifecycleConfig,
}

/// What the lifecycle's workflows need: the tags that mark a customer's state, where exports go,
/// and the subscriptions' deadlines (a trial's reminder, a payment's grace).
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    pub tags: psa_models::lifecycle::LifecycleTags,
    pub store: psa_models::exports::ExportStore,
    pub deadlines: crate::deadlines::DeadlineSettings,
}

impl LifecycleConfig {
    /// The default tags, exports in `dir` (tests, benchmarks, the demo).
    pub fn in_dir(dir: &std::path::Path) -> Result<Self, psa_models::Error> {
        Ok(Self {
            tags: Default::default(),
            store: psa_models::exports::ExportStore::local(dir)?,
            deadlines: Default::default(),
        })
    }
}

/// Runs a worker for the tenant creation workflow on `task_queue` until `shutdown` resolves.
/// The worker's future is not `Send`: await this on the caller's task (or its own thread).
pub async fn run(
    client: Client,
    task_queue: &str,
    config: WorkerConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let WorkerConfig {
        pool,
        key,
        tracking,
        delivery,
        lifecycle,
    } = config;
    // The deletion workflow keeps customer records in the management tenant: the configured
    // one, else the database's (with tracking disabled it may not be configured).
    let management_tenant_id = match tracking.management_tenant_id {
        Some(id) => Some(id),
        None => {
            let mut conn = pool
                .acquire()
                .await
                .map_err(|e| WorkerError::Failed(format!("cannot connect to PostgreSQL: {e}")))?;
            tenants::find_management(&mut conn)
                .await
                .map_err(|e| WorkerError::Failed(e.to_string()))?
                .map(|t| t.tenant)
        }
    };
    // Archives are encrypted to the platform's key (made by the first process that needs it).
    let archive_key = crate::secret::archive_key(&pool, &key)
        .await
        .map_err(|e| WorkerError::Failed(format!("the export archives' key: {e}")))?;
    let runtime = Runtime::from_current_tokio(Default::default())
        .map_err(|e| WorkerError::Failed(e.to_string()))?;
    let options = WorkerOptions::new(task_queue)
        .register_workflow::<TenantCreationWorkflow>()
        .map_err(|e| WorkerError::Failed(e.to_string()))?
        .register_workflow::<TenantDeletionWorkflow>()
        .map_err(|e| WorkerError::Failed(e.to_string()))?
        .register_workflow::<CustomerReconcileWorkflow>()
        .map_err(|e| WorkerError::Failed(e.to_string()))?
        .register_workflow::<TenantTrialWorkflow>()
        .map_err(|e| WorkerError::Failed(e.to_string()))?
        .register_workflow::<TenantPaymentGraceWorkflow>()
        .map_err(|e| WorkerError::Failed(e.to_string()))?
        .register_activities(DeadlineActivities {
            pool: pool.clone(),
            management_tenant_id,
            lifecycle: lifecycle.tags.clone(),
            customer_tag: tracking.tag_name.clone(),
            mailer: delivery.mailer.clone(),
            settings: lifecycle.deadlines,
        })
        .register_activities(ReconcileActivities {
            pool: pool.clone(),
            tracking: tracking.clone(),
            tags: lifecycle.tags.clone(),
        })
        .register_activities(DeletionActivities {
            pool: pool.clone(),
            management_tenant_id,
            customer_tag: tracking.tag_name.clone(),
            tags: lifecycle.tags,
            store: lifecycle.store.with_key(archive_key),
        })
        .register_activities(TenantActivities {
            pool,
            key,
            tracking,
            delivery,
        })
        .build();
    let mut worker =
        Worker::new(&runtime, client, options).map_err(|e| WorkerError::Failed(e.to_string()))?;
    let stop = worker.shutdown_handle();
    let (result, ()) = tokio::join!(worker.run(), async move {
        shutdown.await;
        stop();
    });
    result.map_err(|e| WorkerError::Failed(e.to_string()))
}

/// A worker on its own thread and runtime (its future is not `Send`), stopped and joined when
/// dropped. For tests, benchmarks and embedding; `psa worker` runs on the main task instead.
pub struct Background {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<(), WorkerError>>>,
}

impl Background {
    /// Starts a worker for `task_queue` on the Temporal frontend at `address` (namespace
    /// `default`); returns once it is connected.
    pub fn start(
        address: &str,
        task_queue: &str,
        config: WorkerConfig,
    ) -> Result<Background, WorkerError> {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), WorkerError>>();
        let (address, task_queue) = (address.to_owned(), task_queue.to_owned());
        let thread = std::thread::Builder::new()
            .name("psa-worker".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .map_err(|e| WorkerError::Failed(e.to_string()))?;
                rt.block_on(async move {
                    let client = match crate::client::connect(&address, "default").await {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = ready_tx.send(Err(WorkerError::Failed(e.to_string())));
                            return Err(WorkerError::Failed(e.to_string()));
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    run(client, &task_queue, config, async {
                        let _ = stop_rx.await;
                    })
                    .await
                })
            })
            .map_err(|e| WorkerError::Failed(e.to_string()))?;
        match ready_rx.recv_timeout(std::time::Duration::from_secs(60)) {
            Ok(Ok(())) => Ok(Background {
                stop: Some(stop_tx),
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(WorkerError::Failed(
                "the worker did not start within 60 s".into(),
            )),
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Whether the worker reaches its database and Temporal (3 s each).
pub async fn dependencies_up(w: &TenantWorkflows) -> (bool, bool) {
    let database = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::query("SELECT 1").execute(&w.pool),
    )
    .await;
    let temporal = tokio::time::timeout(Duration::from_secs(3), w.worker_polling()).await;
    (matches!(database, Ok(Ok(_))), matches!(temporal, Ok(Ok(_))))
}

/// How often the worker checks its dependencies for `psa_worker_dependency_up`.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps `psa_worker_dependency_up{dependency="database"|"temporal"}` (1 or 0) current: the
/// alerts on an unreachable database or Temporal read it, whatever step is running or not. A
/// dependency counts as down after two failed checks in a row (one slow answer is not an
/// outage); going down and coming back are each logged once.
pub async fn probe_dependencies(w: TenantWorkflows) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = [0u32; 2];
    let mut down = [false; 2];
    loop {
        tick.tick().await;
        let (database, temporal) = dependencies_up(&w).await;
        for (i, (dependency, up)) in [("database", database), ("temporal", temporal)]
            .into_iter()
            .enumerate()
        {
            failures[i] = if up { 0 } else { failures[i] + 1 };
            let now_down = failures[i] >= 2;
            if now_down && !down[i] {
                tracing::warn!(dependency, "the worker cannot reach a dependency");
            } else if !now_down && down[i] {
                tracing::info!(dependency, "the worker reaches the dependency again");
            }
            down[i] = now_down;
            metrics::gauge!("psa_worker_dependency_up", "dependency" => dependency)
                .set(if now_down { 0.0 } else { 1.0 });
        }
    }
}

/// How long exports and a deleted tenant's personal data are kept (`psa_models::retention`).
#[derive(Clone, Debug)]
pub struct Retention {
    pub store: psa_models::exports::ExportStore,
    pub keep: chrono::Duration,
}

/// The worker's housekeeping, every `interval`: rolls back runs cut off half-way, starts
/// deletions whose starter could not reach Temporal and tells deletions confirmed meanwhile,
/// starts the watchers of trials and overdue payments that have none, records the end of
/// support sessions that lapsed, counts the tenants by status and plan, applies the retention rules, and refreshes the lifecycle and webhook gauges. Every worker
/// runs it; each step is safe to run from many at once.
pub async fn housekeeping(workflows: TenantWorkflows, interval: Duration, retention: Retention) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = crate::sweep::sweep(&workflows, crate::sweep::MIN_AGE).await {
            tracing::warn!(error = %e, "sweep of cut-off provisioning runs failed; will retry");
        }
        if let Err(e) = crate::deletion::start_pending(&workflows).await {
            tracing::warn!(error = %e, "starting recorded deletions failed; will retry");
        }
        let settled = chrono::Utc::now() - chrono::Duration::seconds(30);
        if let Err(e) = crate::deadlines::start_pending(&workflows, settled).await {
            tracing::warn!(error = %e, "starting deadline watchers failed; will retry");
        }
        if let Err(e) = psa_models::attention::refresh_counts(&workflows.pool).await {
            tracing::warn!(error = %e, "counting the tenants by status and plan failed; will retry");
        }
        match psa_models::support::close_lapsed(&workflows.pool).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(ended = n, "support sessions that lapsed were ended"),
            Err(e) => {
                tracing::warn!(error = %e, "ending lapsed support sessions failed; will retry")
            }
        }
        match psa_models::retention::expire(&workflows.pool, &retention.store, retention.keep).await
        {
            Ok(done) if done != Default::default() => {
                tracing::info!(
                    exports = done.exports,
                    tenants_redacted = done.tenants_redacted,
                    billing_events = done.billing_events,
                    "retention: removed what its period had passed"
                );
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "retention pass failed; will retry"),
        }
        // An upload the console staged for an import that was previewed and never made.
        match retention
            .store
            .sweep_staged(Duration::from_secs(24 * 3600))
            .await
        {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed uploads staged for imports never made"),
            Err(e) => tracing::warn!(error = %e, "cannot remove staged uploads; will retry"),
        }
        // An export's or an import's scratch directory outlives it only when its process died
        // midway; a day is longer than any runs.
        let removed = tokio::task::spawn_blocking(|| {
            psa_models::exports::sweep_scratch(
                &[
                    psa_models::exports::SCRATCH_PREFIX,
                    psa_models::imports::SCRATCH_PREFIX,
                ],
                Duration::from_secs(24 * 3600),
            )
        })
        .await
        .unwrap_or(0);
        if removed > 0 {
            tracing::info!(
                removed,
                "removed scratch directories of exports and imports cut off midway"
            );
        }
        crate::deletion::observe_lifecycle(&workflows.pool).await;
        crate::webhooks::observe(&workflows.pool).await;
    }
}
