//! The worker: configuration checks at start, then polling the task queue until shutdown.

use std::future::Future;

use psa_models::{TenantId, tenants};
use sqlx::PgPool;
use temporalio_client::Client;
use temporalio_sdk::{Runtime, Worker, WorkerOptions};

use crate::activities::TenantActivities;
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
    psa_models::validate::TagText::parse(&tracking.tag_name)
        .map_err(|e| WorkerError::Config(format!("CUSTOMER_TAG_NAME is invalid: {e}")))?;
    let mut conn = pool
        .acquire()
        .await
        .map_err(|e| WorkerError::Failed(format!("cannot connect to PostgreSQL: {e}")))?;
    match tenants::find(&mut conn, TenantId::from(id)).await {
        Ok(Some(_)) => Ok(()),
        Ok(None) => Err(WorkerError::Config(format!(
            "NINEMINDS_TENANT_ID={id} names no tenant in this database (create it with `psa management init`)"
        ))),
        Err(e) => Err(WorkerError::Failed(format!(
            "cannot read the management tenant: {e}"
        ))),
    }
}

/// Runs a worker for the tenant creation workflow on `task_queue` until `shutdown` resolves.
/// The worker's future is not `Send`: await this on the caller's task (or its own thread).
pub async fn run(
    client: Client,
    task_queue: &str,
    pool: PgPool,
    key: SecretKey,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    let runtime = Runtime::from_current_tokio(Default::default())
        .map_err(|e| WorkerError::Failed(e.to_string()))?;
    let options = WorkerOptions::new(task_queue)
        .register_workflow::<TenantCreationWorkflow>()
        .map_err(|e| WorkerError::Failed(e.to_string()))?
        .register_activities(TenantActivities { pool, key })
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
