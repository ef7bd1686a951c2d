//! The watchers of a subscription's deadlines: `tenant_trial` (the trial's reminder and end)
//! and `tenant_payment_grace` (the end of a payment's grace), one of each per tenant at most.
//!
//! ```text
//!   loop: step (an activity: does what is due now, says how long until the next deadline)
//!         wait for that long, or for a `changed` signal
//! ```
//!
//! The database decides ([`psa_models::deadlines`]); the workflow only waits. A conversion,
//! an extension or a payment is written first and then signals `changed`, which wakes the
//! watcher to step again; a lost signal costs nothing but promptness. The watcher of a tenant is
//! started by whoever made the deadline (an extension, the billing webhook) and, for those whose
//! starter could not reach Temporal or that no one started (a new tenant on a trial plan), by the
//! worker's sweep ([`start_pending`]).

use std::sync::Arc;
use std::time::Duration;

use psa_models::TenantId;
use psa_models::deadlines::{self, Next, Watch};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{ApplicationFailure, SyncWorkflowContext, WorkflowContext, WorkflowResult};

/// The workflow types' names (pinned).
pub const TRIAL_WORKFLOW_TYPE: &str = "tenant_trial";
pub const PAYMENT_WORKFLOW_TYPE: &str = "tenant_payment_grace";

/// How long before a trial's end its reminder goes out, and how long a payment may be overdue.
#[derive(Clone, Copy, Debug)]
pub struct DeadlineSettings {
    pub trial_reminder: chrono::Duration,
    pub past_due_grace: chrono::Duration,
}

impl Default for DeadlineSettings {
    fn default() -> Self {
        DeadlineSettings {
            trial_reminder: chrono::Duration::days(3),
            past_due_grace: chrono::Duration::days(7),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchInput {
    pub tenant_id: TenantId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StepIn {
    pub tenant_id: TenantId,
    pub watch: Watch,
}

/// What a watcher's activities need.
pub struct DeadlineActivities {
    pub pool: PgPool,
    pub management_tenant_id: Option<TenantId>,
    pub lifecycle: psa_models::lifecycle::LifecycleTags,
    pub customer_tag: psa_models::validate::TagText,
    pub mailer: Option<psa_models::mail::Mailer>,
    pub settings: DeadlineSettings,
}

impl DeadlineActivities {
    async fn step(
        &self,
        input: &StepIn,
    ) -> Result<(Next, Option<deadlines::Reminder>), psa_models::Error> {
        let settings = psa_models::lifecycle::Settings {
            management_tenant_id: self
                .management_tenant_id
                .ok_or_else(|| psa_models::Error::unavailable("there is no management tenant"))?,
            customer_tag: self.customer_tag.clone(),
            tags: self.lifecycle.clone(),
        };
        let mut tx = self.pool.begin().await?;
        let out = match input.watch {
            Watch::Trial => {
                deadlines::trial_step(
                    &mut tx,
                    &settings,
                    input.tenant_id,
                    self.settings.trial_reminder,
                )
                .await?
            }
            Watch::Payment => (
                deadlines::payment_step(
                    &mut tx,
                    &settings,
                    input.tenant_id,
                    self.settings.past_due_grace,
                )
                .await?,
                None,
            ),
        };
        tx.commit().await?;
        Ok(out)
    }

    /// Mails the reminder to each administrator; a failure is logged and counted (the event was
    /// recorded: the reminder is not sent twice).
    async fn mail(&self, tenant: TenantId, r: &deadlines::Reminder) {
        let Some(mailer) = &self.mailer else {
            return;
        };
        let day = r.trial_ends_at.format("%Y-%m-%d %H:%M UTC").to_string();
        for (first, name, email) in &r.admins {
            let message = psa_models::mail::notice(
                &r.tenant_name,
                first,
                &format!("Your trial ends on {day}"),
                &[
                    format!("The trial of {} on psa ends on {day}.", r.tenant_name),
                    "To keep using it, choose a plan before then; otherwise the organisation \
                     is suspended when the trial ends (nothing is deleted)."
                        .to_owned(),
                ],
            );
            if let Err(e) = mailer.send(name, email, &message).await {
                metrics::counter!("psa_trial_reminder_failures_total").increment(1);
                tracing::warn!(tenant = %tenant, error = %e, "trial reminder not mailed");
            }
        }
    }
}

#[activities]
impl DeadlineActivities {
    /// Does what is due for the watched deadline; how long until the next.
    #[activity(name = "deadline_step")]
    pub async fn deadline_step(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: StepIn,
    ) -> Result<Next, ActivityError> {
        match self.step(&input).await {
            Ok((next, reminder)) => {
                if let Some(r) = &reminder {
                    tracing::info!(tenant = %input.tenant_id, ends = %r.trial_ends_at,
                        administrators = r.admins.len(), "trial ending: reminded");
                    self.mail(input.tenant_id, r).await;
                }
                if let Next::Done(why) = &next {
                    tracing::info!(tenant = %input.tenant_id, watch = ?input.watch, why,
                        "deadline watcher done");
                }
                Ok(next)
            }
            Err(e) => {
                metrics::counter!("psa_lifecycle_failures_total", "step" => "deadline_step")
                    .increment(1);
                tracing::warn!(tenant = %input.tenant_id, watch = ?input.watch, error = %e,
                    "deadline step failed; will retry");
                // Retried, whatever the error: the deadline must be kept, and what failed (a
                // provisioning run still in flight, the database away) passes.
                Err(ActivityError::application(ApplicationFailure::new(
                    format!("deadline step: {e}"),
                )))
            }
        }
    }
}

/// A step retries for about a day, backing off to 10 minutes between attempts.
fn options() -> temporalio_sdk::ActivityOptions {
    temporalio_sdk::ActivityOptions::with_start_to_close_timeout(Duration::from_secs(120))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(600))
                .maximum_attempts(150)
                .build(),
        )
        .build()
}

/// The loop both watchers run: step, then wait for the next deadline or a change.
async fn watch<W>(
    ctx: &mut WorkflowContext<W>,
    tenant_id: TenantId,
    watch: Watch,
    changes: fn(&W) -> u64,
) -> WorkflowResult<String> {
    loop {
        let seen = ctx.state(changes);
        let next = ctx
            .execute_activity(
                DeadlineActivities::deadline_step,
                StepIn { tenant_id, watch },
                options(),
            )
            .await?;
        match next {
            // A change that came in while the step ran (an extension right at the end) is
            // looked at before the watcher ends.
            Next::Done(why) if ctx.state(changes) == seen => return Ok(why),
            Next::Done(_) => {}
            Next::Wait(wait) => {
                // At least a second: a deadline met in the same instant steps once more.
                let wait = wait.max(Duration::from_secs(1));
                temporalio_sdk::workflows::select! {
                    _ = ctx.timer(wait) => {}
                    _ = ctx.wait_condition(move |s: &W| changes(s) > seen) => {}
                }
            }
        }
    }
}

#[workflow]
#[derive(Default)]
pub struct TenantTrialWorkflow {
    changes: u64,
}

#[workflow_methods]
impl TenantTrialWorkflow {
    #[run(name = "tenant_trial")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: WatchInput) -> WorkflowResult<String> {
        watch(ctx, input.tenant_id, Watch::Trial, |s: &Self| s.changes).await
    }

    /// The subscription changed (converted, extended): step again now.
    #[signal(name = "changed")]
    pub fn changed(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _: ()) {
        self.changes += 1;
    }
}

#[workflow]
#[derive(Default)]
pub struct TenantPaymentGraceWorkflow {
    changes: u64,
}

#[workflow_methods]
impl TenantPaymentGraceWorkflow {
    #[run(name = "tenant_payment_grace")]
    pub async fn run(ctx: &mut WorkflowContext<Self>, input: WatchInput) -> WorkflowResult<String> {
        watch(ctx, input.tenant_id, Watch::Payment, |s: &Self| s.changes).await
    }

    /// The subscription changed (paid): step again now.
    #[signal(name = "changed")]
    pub fn changed(&mut self, _ctx: &mut SyncWorkflowContext<Self>, _: ()) {
        self.changes += 1;
    }
}

/// Starting and waking watchers.
#[derive(Clone)]
pub struct Watchers {
    pub client: temporalio_client::Client,
    pub task_queue: String,
}

impl Watchers {
    /// Makes sure the tenant's watcher of `watch` runs (started when it does not: a watcher that
    /// ended is started anew) and wakes it.
    pub async fn ensure(
        &self,
        tenant: TenantId,
        watch: Watch,
    ) -> Result<(), crate::client::ClientError> {
        use temporalio_client::errors::WorkflowStartError;
        use temporalio_client::{
            WorkflowIdConflictPolicy, WorkflowIdReusePolicy, WorkflowSignalOptions,
            WorkflowStartOptions,
        };
        let id = watch.workflow_id(tenant);
        let options = WorkflowStartOptions::new(self.task_queue.clone(), id.clone())
            .id_reuse_policy(WorkflowIdReusePolicy::AllowDuplicate)
            .id_conflict_policy(WorkflowIdConflictPolicy::UseExisting)
            .build();
        let input = WatchInput { tenant_id: tenant };
        let started = match watch {
            Watch::Trial => self
                .client
                .start_workflow(TenantTrialWorkflow::run, input, options)
                .await
                .map(|_| ()),
            Watch::Payment => self
                .client
                .start_workflow(TenantPaymentGraceWorkflow::run, input, options)
                .await
                .map(|_| ()),
        };
        match started {
            Ok(()) | Err(WorkflowStartError::AlreadyStarted { .. }) => {}
            Err(e) => return Err(crate::client::ClientError::Temporal(e.to_string())),
        }
        let signalled = match watch {
            Watch::Trial => {
                self.client
                    .get_workflow_handle::<TenantTrialWorkflow>(&id)
                    .signal(
                        TenantTrialWorkflow::changed,
                        (),
                        WorkflowSignalOptions::default(),
                    )
                    .await
            }
            Watch::Payment => {
                self.client
                    .get_workflow_handle::<TenantPaymentGraceWorkflow>(&id)
                    .signal(
                        TenantPaymentGraceWorkflow::changed,
                        (),
                        WorkflowSignalOptions::default(),
                    )
                    .await
            }
        };
        // A watcher that ended between its start and the signal: its step noted no deadline,
        // so the worker's sweep starts a new one if there is one to keep.
        if let Err(e) = signalled {
            tracing::debug!(workflow_id = %id, error = %e, "deadline watcher not signalled");
        }
        Ok(())
    }
}

/// Starts the watchers no one started: new tenants on a trial plan, and deadlines whose starter
/// could not reach Temporal. The worker runs this with its sweep; idempotent. Returns how many.
pub async fn start_pending(
    workflows: &crate::client::TenantWorkflows,
    older_than: chrono::DateTime<chrono::Utc>,
) -> Result<usize, crate::client::ClientError> {
    let mut conn = workflows
        .pool
        .acquire()
        .await
        .map_err(psa_models::Error::from)?;
    let pending = deadlines::unwatched(&mut conn, older_than).await?;
    drop(conn);
    let watchers = Watchers {
        client: workflows.client.clone(),
        task_queue: workflows.task_queue.clone(),
    };
    for (tenant, watch) in &pending {
        // One that cannot be started does not hold up the others.
        if let Err(e) = watchers.ensure(*tenant, *watch).await {
            tracing::warn!(tenant = %tenant, watch = ?watch, error = %e,
                "cannot start a deadline watcher; will retry");
        }
    }
    Ok(pending.len())
}
