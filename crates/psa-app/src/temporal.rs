//! Temporal, connected on first use: a process that serves the rest (the API's reads, a
//! lifecycle change recorded for the worker to carry out) works while Temporal is down.

use psa_models::{Error, Result};
use psa_workflows::client::{ClientError, TenantWorkflows};
use psa_workflows::deletion::Deletions;
use psa_workflows::reconcile::Reconciles;
use sqlx::PgPool;
use tokio::sync::OnceCell;

pub struct Temporal {
    pub address: String,
    pub namespace: String,
    pub task_queue: String,
    pool: PgPool,
    client: OnceCell<TenantWorkflows>,
}

impl Temporal {
    pub fn new(address: String, namespace: String, task_queue: String, pool: PgPool) -> Temporal {
        Temporal {
            address,
            namespace,
            task_queue,
            pool,
            client: OnceCell::new(),
        }
    }

    /// A connection made already (by a process that reports its own connection errors, as the
    /// command line does).
    pub fn connected(workflows: TenantWorkflows, address: String, namespace: String) -> Temporal {
        Temporal {
            address,
            namespace,
            task_queue: workflows.task_queue.clone(),
            pool: workflows.pool.clone(),
            client: OnceCell::new_with(Some(workflows)),
        }
    }

    /// The connection, made now if it is not yet; `Unavailable` while Temporal cannot be
    /// reached (the next call tries again).
    pub async fn workflows(&self) -> Result<&TenantWorkflows> {
        self.client
            .get_or_try_init(|| async {
                let client = psa_workflows::client::connect(&self.address, &self.namespace).await?;
                Ok::<_, ClientError>(TenantWorkflows {
                    client,
                    task_queue: self.task_queue.clone(),
                    pool: self.pool.clone(),
                })
            })
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "Temporal unreachable");
                Error::unavailable("The workflow service is temporarily unavailable")
            })
    }

    pub async fn deletions(&self) -> Result<Deletions> {
        let w = self.workflows().await?;
        Ok(Deletions {
            client: w.client.clone(),
            task_queue: w.task_queue.clone(),
            pool: self.pool.clone(),
        })
    }

    pub async fn watchers(&self) -> Result<psa_workflows::deadlines::Watchers> {
        let w = self.workflows().await?;
        Ok(psa_workflows::deadlines::Watchers {
            client: w.client.clone(),
            task_queue: w.task_queue.clone(),
        })
    }

    pub async fn reconciles(&self) -> Result<Reconciles> {
        let w = self.workflows().await?;
        Ok(Reconciles {
            client: w.client.clone(),
            task_queue: w.task_queue.clone(),
        })
    }
}

impl std::fmt::Debug for Temporal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Temporal")
            .field("address", &self.address)
            .field("task_queue", &self.task_queue)
            .finish()
    }
}

impl crate::App {
    /// Temporal, or `Unavailable` naming `what` where this process has no Temporal settings.
    pub fn temporal(&self, what: &str) -> Result<&Temporal> {
        self.temporal
            .as_deref()
            .ok_or_else(|| Error::unavailable(format!("{what} is not configured on this server")))
    }
}
