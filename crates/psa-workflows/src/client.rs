//! Starting, watching and reading tenant creation workflows (used by the CLI and the API).

use std::str::FromStr;
use std::time::Duration;

use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, Url, WorkflowDescribeOptions,
    WorkflowExecutionStatus, WorkflowGetResultOptions, WorkflowIdConflictPolicy,
    WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowSignalOptions, WorkflowStartOptions,
    errors::WorkflowStartError,
};

use crate::types::{TenantCreationInput, TenantCreationResult, WorkflowState};
use crate::workflow::TenantCreationWorkflow;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TEMPORAL_ADDRESS must be host:port, not {0:?}")]
    BadAddress(String),
    #[error("cannot reach Temporal at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("no workflow {0}")]
    NotFound(String),
    #[error("temporal: {0}")]
    Temporal(String),
}

/// A connected client with its namespace and task queue.
#[derive(Clone)]
pub struct TenantWorkflows {
    pub client: Client,
    pub task_queue: String,
}

/// Connects to the Temporal frontend at `host:port`.
pub async fn connect(address: &str, namespace: &str) -> Result<Client, ClientError> {
    let url = Url::from_str(&format!("http://{address}"))
        .map_err(|_| ClientError::BadAddress(address.to_owned()))?;
    if url.host_str().is_none() || url.port().is_none() {
        return Err(ClientError::BadAddress(address.to_owned()));
    }
    let conn = Connection::connect(ConnectionOptions::new(url).build())
        .await
        .map_err(|e| ClientError::Unreachable {
            address: address.to_owned(),
            message: e.to_string(),
        })?;
    Client::new(conn, ClientOptions::new(namespace).build())
        .map_err(|e| ClientError::Temporal(e.to_string()))
}

/// Where a workflow is: its state while running, its result once finished.
#[derive(Debug, Clone)]
pub struct Status {
    pub finished: bool,
    pub state: Option<WorkflowState>,
    pub result: Option<TenantCreationResult>,
}

impl TenantWorkflows {
    /// Starts a run with this id; if a run with this id exists (running or finished), returns
    /// that one instead: the id is the idempotency key, and one key provisions one tenant.
    pub async fn start(
        &self,
        workflow_id: &str,
        input: TenantCreationInput,
    ) -> Result<String, ClientError> {
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.to_owned())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .execution_timeout(Duration::from_secs(3600))
            .build();
        match self
            .client
            .start_workflow(TenantCreationWorkflow::run, input, options)
            .await
        {
            Ok(_) => Ok(workflow_id.to_owned()),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok(workflow_id.to_owned()),
            Err(e) => Err(ClientError::Temporal(e.to_string())),
        }
    }

    pub async fn cancel(&self, workflow_id: &str, reason: &str) -> Result<(), ClientError> {
        self.client
            .get_workflow_handle::<TenantCreationWorkflow>(workflow_id)
            .signal(
                TenantCreationWorkflow::cancel,
                reason.to_owned(),
                WorkflowSignalOptions::default(),
            )
            .await
            .map_err(|e| ClientError::Temporal(e.to_string()))
    }

    /// Waits for the result.
    pub async fn result(&self, workflow_id: &str) -> Result<TenantCreationResult, ClientError> {
        self.client
            .get_workflow_handle::<TenantCreationWorkflow>(workflow_id)
            .get_result(WorkflowGetResultOptions::default())
            .await
            .map_err(|e| ClientError::Temporal(e.to_string()))
    }

    pub async fn state(&self, workflow_id: &str) -> Result<WorkflowState, ClientError> {
        self.client
            .get_workflow_handle::<TenantCreationWorkflow>(workflow_id)
            .query(
                TenantCreationWorkflow::get_state,
                (),
                WorkflowQueryOptions::default(),
            )
            .await
            .map_err(|e| ClientError::Temporal(e.to_string()))
    }

    /// The state while running, the result once finished.
    pub async fn status(&self, workflow_id: &str) -> Result<Status, ClientError> {
        let handle = self
            .client
            .get_workflow_handle::<TenantCreationWorkflow>(workflow_id);
        let description = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .map_err(|e| {
                let text = e.to_string();
                if text.to_lowercase().contains("not found") {
                    ClientError::NotFound(workflow_id.to_owned())
                } else {
                    ClientError::Temporal(text)
                }
            })?;
        match description.status() {
            WorkflowExecutionStatus::Running => {
                let state = self.state(workflow_id).await?;
                Ok(Status {
                    finished: false,
                    state: Some(state),
                    result: None,
                })
            }
            WorkflowExecutionStatus::Completed => {
                let result = self.result(workflow_id).await?;
                let state = self.state(workflow_id).await.ok();
                Ok(Status {
                    finished: true,
                    state,
                    result: Some(result),
                })
            }
            other => {
                // Terminated, timed out or failed outside the workflow's own error handling.
                tracing::warn!(?other, workflow_id, "workflow ended without a result");
                Ok(Status {
                    finished: true,
                    state: None,
                    result: None,
                })
            }
        }
    }
}
