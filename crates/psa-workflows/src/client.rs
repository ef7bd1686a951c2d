//! Starting, watching and reading tenant creation runs: the one starter that the CLI and the API
//! share, with one idempotency-key rule and one view of a run.

use std::str::FromStr;
use std::time::Duration;

use psa_models::provisioning::{self, Claimed, RunStatus};
use sqlx::PgPool;
use temporalio_client::tonic;
use temporalio_client::{
    Client, ClientOptions, Connection, ConnectionOptions, NamespacedClient, Url,
    WorkflowDescribeOptions, WorkflowExecutionStatus, WorkflowGetResultOptions,
    WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowQueryOptions, WorkflowSignalOptions,
    WorkflowStartOptions, errors::WorkflowStartError,
};
use temporalio_common::protos::temporal::api::enums::v1::TaskQueueType;
use temporalio_common::protos::temporal::api::taskqueue::v1::TaskQueue;
use temporalio_common::protos::temporal::api::workflowservice::v1::DescribeTaskQueueRequest;

use crate::types::{
    ProvisioningView, TenantCreationInput, TenantCreationResult, WelcomeStatus, WorkflowState,
};
use crate::workflow::TenantCreationWorkflow;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("TEMPORAL_ADDRESS must be host:port, not {0:?}")]
    BadAddress(String),
    /// The TLS or API key settings (`TEMPORAL_TLS*`, `TEMPORAL_API_KEY`, the profile) are unusable.
    #[error("Temporal connection settings: {0}")]
    Config(String),
    #[error("cannot reach Temporal at {address}: {message}")]
    Unreachable { address: String, message: String },
    #[error("no provisioning run {0}")]
    NotFound(String),
    #[error("temporal: {0}")]
    Temporal(String),
    #[error("{0}")]
    Database(#[from] psa_models::Error),
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The key was used before for a different request (API 409 `idempotency_key_reused`, CLI
    /// exit 2).
    #[error(
        "idempotency key {key:?} was already used for a different request (run {workflow_id}); use a new key for a new request"
    )]
    KeyReused { key: String, workflow_id: String },
    #[error("{0}")]
    Database(#[from] psa_models::Error),
    #[error(transparent)]
    Temporal(#[from] ClientError),
}

/// An idempotency key: 1-200 printable characters without spaces. One key provisions at most one
/// tenant, for as long as the platform keeps the provisioning record (for ever: it does not
/// depend on Temporal's history retention).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, psa_models::Error> {
        let k = raw.trim();
        if k.is_empty()
            || k.chars().count() > 200
            || k.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(psa_models::Error::validation(
                "idempotency_key",
                "The idempotency key must be 1-200 printable characters without spaces",
            ));
        }
        Ok(IdempotencyKey(k.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The workflow id of the run this key names: the same for every starter.
    pub fn workflow_id(&self) -> String {
        format!("{WORKFLOW_ID_PREFIX}key-{}", self.0)
    }
}

/// Every tenant creation run's id starts with this.
pub const WORKFLOW_ID_PREFIX: &str = "tenant-creation-";

/// The id of a run started without a key.
pub fn new_workflow_id() -> String {
    format!("{WORKFLOW_ID_PREFIX}{}", uuid::Uuid::new_v4())
}

/// The request's fingerprint: the same normalised request always hashes the same.
pub fn request_hash(input: &TenantCreationInput) -> Vec<u8> {
    input.fingerprint()
}

/// Connects to the Temporal frontend at `address` (`host:port`), configured the way the
/// `temporal` CLI and every Temporal SDK are: TLS, mutual TLS, an API key (Temporal Cloud) and
/// gRPC headers come from `TEMPORAL_TLS*`, `TEMPORAL_API_KEY`, `TEMPORAL_GRPC_META_*` and the
/// profile named by `TEMPORAL_PROFILE` in `TEMPORAL_CONFIG_FILE` (docs/configuration.md). An API
/// key turns TLS on.
pub async fn connect(address: &str, namespace: &str) -> Result<Client, ClientError> {
    let well_formed = Url::from_str(&format!("http://{address}"))
        .ok()
        .is_some_and(|u| u.host_str().is_some() && u.port().is_some());
    if !well_formed || address.contains("://") {
        return Err(ClientError::BadAddress(address.to_owned()));
    }
    let mut profile = temporalio_common::envconfig::load_client_config_profile(
        temporalio_common::envconfig::LoadClientConfigProfileOptions::default(),
        None,
    )
    .map_err(|e| ClientError::Config(e.to_string()))?;
    profile.address = Some(address.to_owned());
    profile.namespace = Some(namespace.to_owned());
    let options =
        ConnectionOptions::try_from(profile).map_err(|e| ClientError::Config(e.to_string()))?;
    let conn = Connection::connect(options)
        .await
        .map_err(|e| ClientError::Unreachable {
            address: address.to_owned(),
            message: e.to_string(),
        })?;
    Client::new(conn, ClientOptions::new(namespace).build())
        .map_err(|e| ClientError::Temporal(e.to_string()))
}

/// A connected client with its task queue, and the database where provisioning records live.
#[derive(Clone)]
pub struct TenantWorkflows {
    pub client: Client,
    pub task_queue: String,
    pub pool: PgPool,
}

/// How long a state query may wait for a worker before the view falls back to the record.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

impl TenantWorkflows {
    /// Starts a run, or returns the run that `key` already started. The claim is written to the
    /// database first: the same key with the same request returns the first run (also after
    /// Temporal purged it); the same key with a different request is refused.
    pub async fn start(
        &self,
        input: TenantCreationInput,
        key: Option<&IdempotencyKey>,
        requested_by: &str,
    ) -> Result<String, StartError> {
        self.start_run(input, key, requested_by)
            .await
            .map(|(id, _)| id)
    }

    /// Like [`TenantWorkflows::start`], and whether this call is the run's starter: the one that
    /// claimed its key (`false` for every later call with the same key). Only the starter who
    /// waits is shown the admin's invitation link.
    pub async fn start_run(
        &self,
        input: TenantCreationInput,
        key: Option<&IdempotencyKey>,
        requested_by: &str,
    ) -> Result<(String, bool), StartError> {
        let workflow_id = key.map_or_else(new_workflow_id, IdempotencyKey::workflow_id);
        let hash = request_hash(&input);
        let mut conn = self.pool.acquire().await.map_err(psa_models::Error::from)?;
        let claimed = provisioning::claim(
            &mut conn,
            &provisioning::Claim {
                workflow_id: &workflow_id,
                tenant_name: input.tenant_name.as_str(),
                admin_email: input.admin_user.email.as_str(),
                idempotency_key: key.map(IdempotencyKey::as_str),
                request_hash: &hash,
                requested_by,
                skip_customer_tracking: input.skip_customer_tracking,
            },
        )
        .await?;
        drop(conn);
        match claimed {
            Claimed::Different(record) => {
                return Err(StartError::KeyReused {
                    key: key.map(|k| k.as_str().to_owned()).unwrap_or_default(),
                    workflow_id: record.workflow_id,
                });
            }
            // The run began (or ended): never start it again, even if Temporal forgot it.
            Claimed::Same(record) if record.status != RunStatus::Requested => {
                return Ok((workflow_id, false));
            }
            Claimed::Same(_) | Claimed::New => {}
        }
        // Only the call that made the claim is the starter: another call with the same key
        // (even while the run is still `requested`) joins the run Temporal already has, and
        // `UseExisting` does not say which call started it.
        let starter = matches!(claimed, Claimed::New);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::RejectDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .build();
        match self
            .client
            .start_workflow(TenantCreationWorkflow::run, input, options)
            .await
        {
            Ok(_) => Ok((workflow_id, starter)),
            Err(WorkflowStartError::AlreadyStarted { .. }) => Ok((workflow_id, false)),
            Err(e) => Err(ClientError::Temporal(e.to_string()).into()),
        }
    }

    /// Cancels a run in flight: it stops before its next step and rolls back what it built (a
    /// run that has finished its tenant's steps is not undone).
    pub async fn cancel(&self, workflow_id: &str, reason: &str) -> Result<(), ClientError> {
        // The request in the database first: the run's steps read it before they write, also
        // while a workflow task runs several of them and the signal has not reached it yet.
        let mut conn = self.pool.acquire().await.map_err(psa_models::Error::from)?;
        if !provisioning::request_cancel(&mut conn, workflow_id, reason).await? {
            return Err(ClientError::NotFound(workflow_id.to_owned()));
        }
        drop(conn);
        let reason = provisioning::cancel_reason(reason)?;
        self.client
            .get_workflow_handle::<TenantCreationWorkflow>(workflow_id)
            .signal(
                TenantCreationWorkflow::cancel,
                reason,
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

    /// The state query (answered by a worker).
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

    /// Whether any worker polls the task queue for workflow tasks. Without one, a run stays
    /// scheduled and a state query waits in vain.
    pub async fn worker_polling(&self) -> Result<bool, ClientError> {
        self.worker_polling_on(&self.task_queue).await
    }

    /// Whether any worker polls `task_queue` (a run's own queue may differ from this starter's).
    pub async fn worker_polling_on(&self, task_queue: &str) -> Result<bool, ClientError> {
        let request = DescribeTaskQueueRequest {
            namespace: self.client.namespace(),
            task_queue: Some(TaskQueue {
                name: task_queue.to_owned(),
                ..Default::default()
            }),
            task_queue_type: TaskQueueType::Workflow as i32,
            ..Default::default()
        };
        let response = self
            .client
            .connection()
            .workflow_service()
            .describe_task_queue(tonic::Request::new(request))
            .await
            .map_err(|e| ClientError::Temporal(e.message().to_owned()))?;
        Ok(!response.into_inner().pollers.is_empty())
    }

    /// What Temporal says of a run: its status and task queue, `None` when it does not know the
    /// run (never started, or its history was purged).
    pub async fn describe(
        &self,
        workflow_id: &str,
    ) -> Result<Option<(WorkflowExecutionStatus, String)>, ClientError> {
        let handle = self
            .client
            .get_workflow_handle::<TenantCreationWorkflow>(workflow_id);
        match handle.describe(WorkflowDescribeOptions::default()).await {
            Ok(d) => Ok(Some((d.status(), d.task_queue().to_owned()))),
            Err(e) if e.to_string().to_lowercase().contains("not found") => Ok(None),
            Err(e) => Err(unreachable_or(e.to_string())),
        }
    }

    /// The message for a run that no worker picks up.
    pub fn no_worker_notice(task_queue: &str) -> String {
        format!(
            "no worker is polling task queue {task_queue:?}: the run is scheduled and starts when one does (start `psa worker` with TEMPORAL_TASK_QUEUE={task_queue})"
        )
    }

    /// One run as every face shows it: Temporal's state or result, the provisioning record, and
    /// a notice when an operator must act. It never carries a credential.
    pub async fn view(&self, workflow_id: &str) -> Result<ProvisioningView, ClientError> {
        let mut conn = self.pool.acquire().await.map_err(psa_models::Error::from)?;
        let record = provisioning::get(&mut conn, workflow_id).await?;
        drop(conn);
        let described = self.describe(workflow_id).await?;
        let mut view = ProvisioningView {
            workflow_id: workflow_id.to_owned(),
            finished: false,
            status: record.as_ref().map_or(RunStatus::Requested, |r| r.status),
            state: None,
            result: None,
            record: None,
            notice: None,
        };
        match described {
            None => {
                // Never started, or purged from Temporal: the record is all there is.
                let Some(r) = &record else {
                    return Err(ClientError::NotFound(workflow_id.to_owned()));
                };
                view.finished = r.status.is_final();
                if r.status == RunStatus::Requested {
                    view.notice = Some(format!(
                        "the run was requested but is not in Temporal (namespace {}); start it again with the same idempotency key",
                        self.client.namespace()
                    ));
                }
            }
            Some((WorkflowExecutionStatus::Running, task_queue)) => {
                if self.worker_polling_on(&task_queue).await? {
                    // A worker is there but busy, or the run has not had its first task: without
                    // an answer in time, the record says where it is.
                    if let Ok(Ok(state)) =
                        tokio::time::timeout(QUERY_TIMEOUT, self.state(workflow_id)).await
                    {
                        view.state = Some(state);
                    }
                } else {
                    view.notice = Some(Self::no_worker_notice(&task_queue));
                }
                // The record may still say `requested` (the first activity has not run yet).
                if view.status != RunStatus::Requested {
                    view.status = RunStatus::Running;
                }
            }
            Some((WorkflowExecutionStatus::Completed, _)) => {
                let result = self.result(workflow_id).await?;
                view.finished = true;
                view.status = record
                    .as_ref()
                    .map(|r| r.status)
                    .filter(|s| s.is_final())
                    .unwrap_or(result.status.into());
                view.state = Some(result.final_state());
                view.notice = welcome_notice(&result);
                view.result = Some(result.public());
            }
            Some((other, _)) => {
                // Terminated, timed out, failed outside the workflow's own handling: cut off.
                view.finished = true;
                view.status = RunStatus::CutOff;
                view.notice = Some(match record.as_ref().map(|r| r.status) {
                    Some(RunStatus::CutOff) => format!(
                        "the run ended without finishing ({other:?}); the sweeper rolled back what it had built"
                    ),
                    _ => format!(
                        "the run ended without finishing ({other:?}); the sweeper (in `psa worker`, or `psa tenant sweep`) rolls back what it built"
                    ),
                });
            }
        }
        view.record = record;
        Ok(view)
    }
}

/// What an operator should do about a completed run's welcome email, if anything.
fn welcome_notice(result: &TenantCreationResult) -> Option<String> {
    let tenant = result.tenant_id?;
    match result.welcome_email.status {
        WelcomeStatus::Failed => Some(format!(
            "the welcome email failed: once mail works, send the admin a new link with `psa tenant resend-invite {tenant}`"
        )),
        WelcomeStatus::Disabled => Some(format!(
            "the worker sends no mail: the admin's invitation link was shown only to the `psa tenant create` that started and waited for this run; if it was lost, `psa tenant resend-invite {tenant}` prints a new one"
        )),
        WelcomeStatus::Sent | WelcomeStatus::Pending => None,
    }
}

fn unreachable_or(text: String) -> ClientError {
    let lower = text.to_lowercase();
    if lower.contains("transport") || lower.contains("connect") || lower.contains("unavailable") {
        ClientError::Unreachable {
            address: "the configured TEMPORAL_ADDRESS".into(),
            message: text,
        }
    } else {
        ClientError::Temporal(text)
    }
}
