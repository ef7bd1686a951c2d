//! The `tenant_creation` workflow: a saga with a parallel branch.
//!
//! ```text
//!   begin_provisioning (the worker's settings, the provisioning record)
//!   core:      create_tenant -> run_onboarding_seeds -> create_admin_user -> setup_tenant_data
//!              -> send_welcome_email (cannot fail the run)
//!   tracking:  create_customer_record (company, contact and tag in one transaction)
//!   finish_provisioning (outcome in the record and the metrics)
//! ```
//!
//! The short database steps (begin, the four core steps, the customer record, finish) run as
//! local activities: in the worker that runs the workflow task, recorded as markers in history,
//! without a round trip through the server's task queues each. They keep the guarantees of
//! remote activities: the same retry policies (backoffs over a second wait on a durable timer,
//! so a long retry does not hold the workflow task), idempotent effects through the ids minted
//! here, compensation registered first. What waits on something outside stays remote: the
//! welcome email (SMTP) and the compensations (rare, with the longest retries).
//! Runs that began before the `local-steps` patch replay and finish on their old path: remote
//! activities, and the customer record in three steps (`create_customer_company` ->
//! `create_customer_contact || tag_customer_company`).
//!
//! The two branches run concurrently (joined futures on the workflow's own executor). The
//! tracking branch turns its failures into a status, so only the core chain can fail the run.
//! Each step registers its compensation *before* it runs: a step can commit and still fail (after
//! the commit), so "attempted", not "succeeded", decides what is undone; every compensation
//! removes only what this run minted or recorded, so undoing a step that wrote nothing is a no-op.
//! When a core step fails for good (non-retryable, or retries exhausted: transient failures are
//! retried for minutes first) or a cancel signal arrives, the compensations run in reverse order
//! of registration. A compensation that still fails after its retries is reported in the result,
//! never dropped.
//!
//! Changing this code changes what a replay of a run in flight sees: see docs/workflow.md
//! ("Changing the workflow") and the replay tests.

use std::time::{Duration, SystemTime};

use psa_models::provisioning;
use psa_models::validate::FullName;
use psa_models::{CompanyId, ContactId, MappingId, TenantId, UserId};
use temporalio_common::data_converters::TemporalDeserializable;
use temporalio_common::error::IncomingError;
use temporalio_common::{ActivityDefinition, RetryPolicy};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, SyncWorkflowContext, WorkflowContext,
    WorkflowContextView, WorkflowResult,
};
use temporalio_workflow::LocalActivityOptions;
use uuid::Uuid;

use crate::activities::*;
use crate::types::*;

/// How a step is retried: exponential backoff from 1 s, doubling up to `max_interval`, for
/// `attempts` attempts of at most `start_to_close` each.
#[derive(Clone, Copy)]
pub(crate) struct Retry {
    start_to_close: Duration,
    max_interval: Duration,
    attempts: u32,
}

/// Local retries back off on a durable timer above this, so every retry does: the workflow task
/// is released while a step waits for its next attempt (queries and a cancel are answered), and
/// each failed attempt is in the history with its error, as a remote activity's would be.
const LOCAL_BACKOFF_ON_TIMER_ABOVE: Duration = Duration::from_millis(100);

impl Retry {
    const fn new(start_to_close: Duration, max_interval: Duration, attempts: u32) -> Retry {
        Retry {
            start_to_close,
            max_interval,
            attempts,
        }
    }

    fn policy(self) -> RetryPolicy {
        RetryPolicy::builder()
            .initial_interval(Duration::from_secs(1))
            .backoff_coefficient(2.0)
            .maximum_interval(self.max_interval)
            .maximum_attempts(self.attempts)
            .build()
    }

    pub(crate) fn remote(self) -> ActivityOptions {
        ActivityOptions::with_start_to_close_timeout(self.start_to_close)
            .retry_policy(self.policy())
            .build()
    }

    fn local(self) -> LocalActivityOptions {
        LocalActivityOptions::builder()
            .start_to_close_timeout(self.start_to_close)
            .schedule_to_close_timeout(LOCAL_SCHEDULE_TO_CLOSE)
            .retry_policy(self.policy())
            .timer_backoff_threshold(LOCAL_BACKOFF_ON_TIMER_ABOVE)
            .build()
    }
}

/// A local step's attempts bound its retries, not the clock. A remote activity waits in its
/// queue with no clock running while no worker is there; a local step's schedule-to-close runs
/// through the same outage (the SDK's default is 100 s), and would turn a worker restart or a
/// long failover into a rollback. A day is longer than any outage a run should not wait out.
const LOCAL_SCHEDULE_TO_CLOSE: Duration = Duration::from_secs(24 * 3600);

/// Retries of the core steps: transient failures (connection loss, failover, deadlock) are
/// retried for about four minutes before the tenant is rolled back. Each attempt is one short
/// transaction; 15 s bounds how long a step whose worker died waits before another worker
/// retries it.
const CORE: Retry = Retry::new(Duration::from_secs(15), Duration::from_secs(30), 12);

/// Tracking retries less (about 15 s): it runs in parallel, and a failure is repaired later by
/// `psa customers reconcile` rather than waited for.
const TRACKING: Retry = Retry::new(Duration::from_secs(15), Duration::from_secs(8), 5);

/// The welcome email retries like tracking (about 15 s): a mail server that stays down is
/// repaired by `psa tenant resend-invite`, not waited for.
const WELCOME: Retry = Retry::new(Duration::from_secs(30), Duration::from_secs(8), 5);

/// Compensations retry longest: a compensation dropped leaves data behind.
const COMPENSATION: Retry = Retry::new(Duration::from_secs(60), Duration::from_secs(60), 15);

/// The run's record and metrics at its end.
const FINISH: Retry = Retry::new(Duration::from_secs(10), Duration::from_secs(30), 10);

/// Runs recorded with this marker run their short database steps as local activities and write
/// the customer record in one step.
const LOCAL_STEPS: &str = "local-steps";

/// The message of an activity failure (its `Display` is only the wrapper's).
fn failure_message(e: &ActivityExecutionError) -> String {
    e.reason()
        .map(|c| c.failure().message.clone())
        .or_else(|| e.failure().map(|f| f.message.clone()))
        .unwrap_or_else(|| e.to_string())
}

/// Whether a step was refused because its run was asked to cancel (it wrote nothing).
fn refused_for_cancel(e: &ActivityExecutionError) -> bool {
    use temporalio_common::protos::temporal::api::failure::v1::failure::FailureInfo;
    match e.reason() {
        // A remote activity's failure wraps the application failure.
        Some(IncomingError::Application(f)) => f.type_name() == Some(provisioning::RUN_CANCELLED),
        // A local activity's is the application failure itself.
        _ => matches!(
            e.failure().and_then(|f| f.failure_info.as_ref()),
            Some(FailureInfo::ApplicationFailureInfo(info)) if info.r#type == provisioning::RUN_CANCELLED
        ),
    }
}

/// One undo step, registered before the step it undoes runs.
#[derive(Clone, Debug)]
enum Compensation {
    RemoveCustomerTag(RemoveTagIn),
    UnlinkCustomerContact(UnlinkIn),
    RemoveCustomerContact(RemoveContactIn),
    RemoveCustomerCompany(RemoveCompanyIn),
    RemoveCustomerRecord(RemoveRecordIn),
    RollbackTenant(TenantId),
}

#[workflow]
#[derive(Default)]
pub struct TenantCreationWorkflow {
    state: WorkflowState,
    /// What compensation must undo, in registration order.
    undo: Vec<Compensation>,
    /// The core chain has finished (either way).
    core_done: bool,
    /// The run has the `local-steps` marker (decided once, at its start).
    local_steps: bool,
    /// A local step has run since a remote activity last ended the workflow task (see
    /// `finish_in_its_own_task`).
    local_since_task: bool,
}

enum CoreFailure {
    Step(FailedStep, String),
    Cancelled(String),
}

/// The ids a run mints up front (recorded in history: retries and replays see the same ids).
#[derive(Clone, Copy)]
struct Ids {
    tenant: TenantId,
    company: CompanyId,
    user: UserId,
    customer_company: CompanyId,
    customer_contact: ContactId,
    customer_tag_mapping: MappingId,
}

fn admin_full_name(input: &TenantCreationInput) -> FullName {
    FullName::parse(&format!(
        "{} {}",
        input.admin_user.first_name, input.admin_user.last_name
    ))
    .expect("two valid person names make a valid full name")
}

fn uuid(ctx: &WorkflowContext<TenantCreationWorkflow>) -> Uuid {
    Uuid::parse_str(&ctx.uuid4()).expect("the SDK mints valid UUIDs")
}

impl TenantCreationWorkflow {
    fn cancel_point(ctx: &WorkflowContext<Self>) -> Result<(), CoreFailure> {
        match ctx.state(|s| s.state.cancel_requested.then(|| s.state.error.clone())) {
            Some(reason) => Err(CoreFailure::Cancelled(
                reason.unwrap_or_else(|| "cancelled".into()),
            )),
            None => Ok(()),
        }
    }

    fn register(ctx: &WorkflowContext<Self>, compensation: Option<Compensation>) {
        if let Some(c) = compensation {
            ctx.state_mut(|s| s.undo.push(c));
        }
    }

    /// A step refused because the run was asked to cancel, seen before the signal was: the
    /// state says so as the signal would.
    fn cancelled_by_request(ctx: &WorkflowContext<Self>, message: &str) {
        ctx.state_mut(|s| {
            if !s.state.cancel_requested {
                s.state.cancel_requested = true;
                s.state.error = Some(message.to_owned());
            }
        });
    }

    /// Runs a short database step: a local activity, or a remote one for runs from before the
    /// `local-steps` patch.
    async fn execute<AD>(
        ctx: &WorkflowContext<Self>,
        activity: AD,
        input: AD::Input,
        retry: Retry,
    ) -> Result<AD::Output, ActivityExecutionError>
    where
        AD: ActivityDefinition,
        AD::Output: TemporalDeserializable,
    {
        if ctx.state(|s| s.local_steps) {
            ctx.state_mut(|s| s.local_since_task = true);
            ctx.execute_local_activity(activity, input, retry.local())
                .await
        } else {
            ctx.execute_activity(activity, input, retry.remote()).await
        }
    }

    /// One core step: a cancel point, the step's progress, its compensation registered, the
    /// activity. A failure names the step.
    async fn core_step<AD>(
        ctx: &WorkflowContext<Self>,
        step: Step,
        activity: AD,
        input: AD::Input,
        compensation: Option<Compensation>,
    ) -> Result<AD::Output, CoreFailure>
    where
        AD: ActivityDefinition,
    {
        Self::cancel_point(ctx)?;
        ctx.state_mut(|s| {
            s.state.step = step;
            s.state.progress = step.progress();
        });
        // A step refused for a cancel keeps its compensation: an earlier attempt of it (timed
        // out, still writing) may have committed.
        Self::register(ctx, compensation);
        let name = step.activity().expect("a core step runs an activity");
        Self::execute(ctx, activity, input, CORE)
            .await
            .map_err(|e| {
                let message = failure_message(&e);
                if refused_for_cancel(&e) {
                    Self::cancelled_by_request(ctx, &message);
                    return CoreFailure::Cancelled(message);
                }
                CoreFailure::Step(FailedStep::of(name), message)
            })
    }

    async fn core(
        ctx: &WorkflowContext<Self>,
        input: &TenantCreationInput,
        workflow_id: &str,
        ids: Ids,
    ) -> Result<(), CoreFailure> {
        let wf = || workflow_id.to_owned();
        let created = Self::core_step(
            ctx,
            Step::CreatingTenant,
            TenantActivities::create_tenant,
            CreateTenantIn {
                workflow_id: wf(),
                tenant_id: ids.tenant,
                company_id: ids.company,
                tenant_name: input.tenant_name.clone(),
                admin_email: input.admin_user.email.clone(),
                company_name: input.company_name.clone(),
                license_count: input.license_count,
                slug: input.slug.clone(),
                plan: input.plan.clone(),
            },
            Some(Compensation::RollbackTenant(ids.tenant)),
        )
        .await?;
        ctx.state_mut(|s| {
            s.state.tenant_id = Some(created.tenant_id);
            s.state.company_id = created.company_id;
        });

        Self::core_step(
            ctx,
            Step::RunningOnboardingSeeds,
            TenantActivities::run_onboarding_seeds,
            SeedsIn {
                workflow_id: wf(),
                tenant_id: ids.tenant,
            },
            None,
        )
        .await?;

        let admin = Self::core_step(
            ctx,
            Step::CreatingAdminUser,
            TenantActivities::create_admin_user,
            CreateAdminIn {
                workflow_id: wf(),
                tenant_id: ids.tenant,
                user_id: ids.user,
                first_name: input.admin_user.first_name.clone(),
                last_name: input.admin_user.last_name.clone(),
                email: input.admin_user.email.clone(),
            },
            None,
        )
        .await?;
        ctx.state_mut(|s| s.state.admin_user_id = Some(admin.user_id));

        Self::core_step(
            ctx,
            Step::SettingUpData,
            TenantActivities::setup_tenant_data,
            SetupIn {
                workflow_id: wf(),
                tenant_id: ids.tenant,
                company_id: created.company_id,
            },
            None,
        )
        .await?;
        Self::cancel_point(ctx)?;
        Ok(())
    }

    /// The admin's invitation, after the tenant is complete. Its failure is a status, never a
    /// rollback: the tenant is fine, and `psa tenant resend-invite` sends a new link.
    async fn welcome(
        ctx: &WorkflowContext<Self>,
        input: &TenantCreationInput,
        workflow_id: &str,
        ids: Ids,
        sealed: &mut Option<String>,
    ) {
        ctx.state_mut(|s| {
            s.state.step = Step::SendingWelcomeEmail;
            s.state.progress = Step::SendingWelcomeEmail.progress();
        });
        let sent = ctx
            .execute_activity(
                TenantActivities::send_welcome_email,
                WelcomeIn {
                    workflow_id: workflow_id.to_owned(),
                    tenant_id: ids.tenant,
                    user_id: ids.user,
                    tenant_name: input.tenant_name.clone(),
                },
                WELCOME.remote(),
            )
            .await;
        ctx.state_mut(|s| s.local_since_task = false);
        let welcome = match sent {
            Ok(out) => {
                *sealed = out.invitation_link_sealed;
                WelcomeEmail {
                    status: out.status,
                    error: None,
                }
            }
            Err(e) => WelcomeEmail {
                status: WelcomeStatus::Failed,
                error: Some(failure_message(&e)),
            },
        };
        ctx.state_mut(|s| s.state.welcome_email = welcome);
    }

    /// The customer record in the management tenant: one step, one transaction.
    async fn tracking(
        ctx: &WorkflowContext<Self>,
        input: &TenantCreationInput,
        workflow_id: &str,
        settings: &TrackingSettings,
        ids: Ids,
    ) {
        if !ctx.state(|s| s.local_steps) {
            return Self::tracking_in_three_steps(ctx, input, workflow_id, settings, ids).await;
        }
        let Some(mgmt) = settings.management_tenant_id else {
            return Self::no_management_tenant(ctx);
        };
        ctx.state_mut(|s| s.state.customer_tracking.status = TrackingState::Running);
        Self::register(
            ctx,
            Some(Compensation::RemoveCustomerRecord(RemoveRecordIn {
                management_tenant_id: mgmt,
                workflow_id: workflow_id.to_owned(),
                tenant_id: ids.tenant,
                company_id: ids.customer_company,
                contact_id: ids.customer_contact,
                mapping_id: ids.customer_tag_mapping,
            })),
        );
        let record = Self::execute(
            ctx,
            TenantActivities::create_customer_record,
            CustomerRecordIn {
                workflow_id: workflow_id.to_owned(),
                management_tenant_id: mgmt,
                tenant_id: ids.tenant,
                tenant_name: input.tenant_name.clone(),
                company_id: ids.customer_company,
                contact_id: ids.customer_contact,
                mapping_id: ids.customer_tag_mapping,
                full_name: admin_full_name(input),
                email: input.admin_user.email.clone(),
                tag_text: settings.tag_name.clone(),
            },
            TRACKING,
        )
        .await;
        ctx.state_mut(|s| {
            let t = &mut s.state.customer_tracking;
            match record {
                Ok(r) => {
                    t.status = TrackingState::Completed;
                    t.customer_company_id = Some(r.company.company_id);
                    t.customer_contact_id = Some(r.contact.contact_id);
                    t.customer_tag_id = Some(r.tag.tag_id);
                    t.warnings.extend(r.company.warning);
                    t.warnings.extend(r.contact.warning);
                }
                Err(e) if refused_for_cancel(&e) => {
                    t.status = TrackingState::Skipped;
                    t.error = Some("not written: the run was cancelled".into());
                }
                Err(e) => {
                    // The message names the part that failed (company, contact or tag).
                    t.status = TrackingState::Failed;
                    t.error = Some(failure_message(&e));
                }
            }
        });
    }

    fn no_management_tenant(ctx: &WorkflowContext<Self>) {
        ctx.state_mut(|s| {
            s.state.customer_tracking.status = TrackingState::Failed;
            s.state.customer_tracking.error =
                Some("the worker's NINEMINDS_TENANT_ID is not set".into());
        });
    }

    /// The customer record of runs from before the `local-steps` patch: company, then contact
    /// and tag in parallel, three remote activities.
    async fn tracking_in_three_steps(
        ctx: &WorkflowContext<Self>,
        input: &TenantCreationInput,
        workflow_id: &str,
        settings: &TrackingSettings,
        ids: Ids,
    ) {
        let Some(mgmt) = settings.management_tenant_id else {
            return Self::no_management_tenant(ctx);
        };
        ctx.state_mut(|s| s.state.customer_tracking.status = TrackingState::Running);
        let fail = |ctx: &WorkflowContext<Self>, step: ActivityName, e: &ActivityExecutionError| {
            let message = format!("{step}: {}", failure_message(e));
            ctx.state_mut(|s| {
                s.state.customer_tracking.status = TrackingState::Failed;
                match &mut s.state.customer_tracking.error {
                    Some(prev) => {
                        prev.push_str("; ");
                        prev.push_str(&message);
                    }
                    None => s.state.customer_tracking.error = Some(message),
                }
            });
        };
        Self::register(
            ctx,
            Some(Compensation::RemoveCustomerCompany(RemoveCompanyIn {
                management_tenant_id: mgmt,
                company_id: ids.customer_company,
            })),
        );
        let company = match ctx
            .execute_activity(
                TenantActivities::create_customer_company,
                CustomerCompanyIn {
                    workflow_id: Some(workflow_id.to_owned()),
                    management_tenant_id: mgmt,
                    company_id: ids.customer_company,
                    tenant_id: ids.tenant,
                    tenant_name: input.tenant_name.clone(),
                },
                TRACKING.remote(),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => return fail(ctx, ActivityName::CreateCustomerCompany, &e),
        };
        ctx.state_mut(|s| {
            s.state.customer_tracking.customer_company_id = Some(company.company_id);
            s.state
                .customer_tracking
                .warnings
                .extend(company.warning.clone());
        });
        Self::register(
            ctx,
            Some(Compensation::RemoveCustomerContact(RemoveContactIn {
                management_tenant_id: mgmt,
                contact_id: ids.customer_contact,
            })),
        );
        Self::register(
            ctx,
            Some(Compensation::UnlinkCustomerContact(UnlinkIn {
                management_tenant_id: mgmt,
                workflow_id: workflow_id.to_owned(),
                company_id: company.company_id,
            })),
        );
        Self::register(
            ctx,
            Some(Compensation::RemoveCustomerTag(RemoveTagIn {
                management_tenant_id: mgmt,
                mapping_id: ids.customer_tag_mapping,
            })),
        );
        let full_name = admin_full_name(input);
        let contact = ctx.execute_activity(
            TenantActivities::create_customer_contact,
            CustomerContactIn {
                workflow_id: Some(workflow_id.to_owned()),
                management_tenant_id: mgmt,
                tenant_id: ids.tenant,
                contact_id: ids.customer_contact,
                company_id: company.company_id,
                full_name,
                email: input.admin_user.email.clone(),
            },
            TRACKING.remote(),
        );
        let tag = ctx.execute_activity(
            TenantActivities::tag_customer_company,
            TagIn {
                workflow_id: workflow_id.to_owned(),
                management_tenant_id: mgmt,
                tenant_id: ids.tenant,
                company_id: company.company_id,
                mapping_id: ids.customer_tag_mapping,
                tag_text: settings.tag_name.clone(),
            },
            TRACKING.remote(),
        );
        let (contact, tag) = futures::join!(contact, tag);
        match contact {
            Ok(c) => ctx.state_mut(|s| {
                s.state.customer_tracking.customer_contact_id = Some(c.contact_id);
                s.state.customer_tracking.warnings.extend(c.warning.clone());
            }),
            Err(e) => fail(ctx, ActivityName::CreateCustomerContact, &e),
        }
        match tag {
            Ok(t) => ctx.state_mut(|s| s.state.customer_tracking.customer_tag_id = Some(t.tag_id)),
            Err(e) => fail(ctx, ActivityName::TagCustomerCompany, &e),
        }
        ctx.state_mut(|s| {
            if s.state.customer_tracking.status == TrackingState::Running {
                s.state.customer_tracking.status = TrackingState::Completed;
            }
        });
    }

    /// Ends the workflow task that ran local steps, if no remote activity (the welcome email, a
    /// compensation) has ended it since: `finish_provisioning` must run in a task of its own. A
    /// workflow task can fail after its local steps committed (the server refuses to complete
    /// the run when a signal arrived meanwhile; the worker dies), and its retry runs again every
    /// local step whose result is not yet in history. Steps of a running run are idempotent;
    /// steps of a run whose outcome `finish` already recorded are refused, and would turn a
    /// finished run into a failed one.
    async fn finish_in_its_own_task(ctx: &WorkflowContext<Self>) {
        if ctx.state(|s| s.local_since_task) {
            ctx.timer(Duration::from_millis(1)).await;
        }
    }

    /// Runs one compensation with its generous retries and records how it went.
    async fn run_compensation<AD>(
        ctx: &WorkflowContext<Self>,
        report: &mut RollbackReport,
        name: ActivityName,
        activity: AD,
        input: AD::Input,
    ) where
        AD: ActivityDefinition<Output = ()>,
    {
        let done = ctx
            .execute_activity(activity, input, COMPENSATION.remote())
            .await;
        ctx.state_mut(|s| s.local_since_task = false);
        match done {
            Ok(()) => report.compensated.push(name),
            Err(e) => report
                .errors
                .push(format!("{name}: {}", failure_message(&e))),
        }
    }

    /// Undoes, in reverse order of registration, what the run attempted.
    async fn compensate(ctx: &WorkflowContext<Self>) -> RollbackReport {
        let mut report = RollbackReport {
            performed: true,
            ..Default::default()
        };
        let undo = ctx.state(|s| s.undo.clone());
        for c in undo.into_iter().rev() {
            let r = &mut report;
            match c {
                Compensation::RemoveCustomerTag(i) => {
                    Self::run_compensation(
                        ctx,
                        r,
                        ActivityName::RemoveCustomerTag,
                        TenantActivities::remove_customer_tag,
                        i,
                    )
                    .await
                }
                Compensation::UnlinkCustomerContact(i) => {
                    Self::run_compensation(
                        ctx,
                        r,
                        ActivityName::UnlinkCustomerContact,
                        TenantActivities::unlink_customer_contact,
                        i,
                    )
                    .await
                }
                Compensation::RemoveCustomerContact(i) => {
                    Self::run_compensation(
                        ctx,
                        r,
                        ActivityName::RemoveCustomerContact,
                        TenantActivities::remove_customer_contact,
                        i,
                    )
                    .await
                }
                Compensation::RemoveCustomerCompany(i) => {
                    Self::run_compensation(
                        ctx,
                        r,
                        ActivityName::RemoveCustomerCompany,
                        TenantActivities::remove_customer_company,
                        i,
                    )
                    .await
                }
                Compensation::RemoveCustomerRecord(i) => {
                    Self::run_compensation(
                        ctx,
                        r,
                        ActivityName::RemoveCustomerRecord,
                        TenantActivities::remove_customer_record,
                        i,
                    )
                    .await
                }
                Compensation::RollbackTenant(t) => {
                    Self::run_compensation(
                        ctx,
                        r,
                        ActivityName::RollbackTenant,
                        TenantActivities::rollback_tenant,
                        t,
                    )
                    .await
                }
            }
        }
        report
    }
}

#[workflow_methods]
impl TenantCreationWorkflow {
    #[run(name = "tenant_creation")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: TenantCreationInput,
    ) -> WorkflowResult<TenantCreationResult> {
        let started = ctx.workflow_time().unwrap_or(SystemTime::UNIX_EPOCH);
        let workflow_id = ctx.workflow_id().to_owned();
        let local_steps = ctx.patched(LOCAL_STEPS);
        ctx.state_mut(|s| s.local_steps = local_steps);
        // Every id is minted here, recorded in history: retries and replays see the same ids.
        let ids = Ids {
            tenant: TenantId(uuid(ctx)),
            company: CompanyId(uuid(ctx)),
            user: UserId(uuid(ctx)),
            customer_company: CompanyId(uuid(ctx)),
            customer_contact: ContactId(uuid(ctx)),
            customer_tag_mapping: MappingId(uuid(ctx)),
        };

        // The worker's settings decide tracking; the starter chose only whether to skip it.
        let begun = Self::execute(
            ctx,
            TenantActivities::begin_provisioning,
            BeginIn {
                workflow_id: workflow_id.clone(),
                tenant_id: ids.tenant,
                tenant_name: input.tenant_name.clone(),
                admin_email: input.admin_user.email.clone(),
                skip_customer_tracking: input.skip_customer_tracking,
                customer_company_id: ids.customer_company,
                customer_contact_id: ids.customer_contact,
                customer_tag_mapping_id: ids.customer_tag_mapping,
            },
            CORE,
        )
        .await;
        let (settings, begin_failure) = match begun {
            Ok(b) => (Some(b.tracking), None),
            Err(e) => (
                None,
                Some(CoreFailure::Step(
                    FailedStep::BeginProvisioning,
                    failure_message(&e),
                )),
            ),
        };
        let tracking_wanted = settings
            .as_ref()
            .is_some_and(|s| s.enabled && !input.skip_customer_tracking);
        ctx.state_mut(|s| {
            s.state.tracking_settings = settings.clone();
            s.state.customer_tracking.status = match &settings {
                Some(t) if !t.enabled => TrackingState::Disabled,
                Some(_) if input.skip_customer_tracking => TrackingState::Skipped,
                _ => TrackingState::Pending,
            }
        });

        let mut sealed = None;
        let core_result = match (begin_failure, &settings) {
            (Some(failure), _) => Err(failure),
            (None, None) => unreachable!("a run that began has settings"),
            (None, Some(settings)) => {
                let core_ctx = ctx.clone();
                let tracking_ctx = ctx.clone();
                let core = async {
                    let r = Self::core(&core_ctx, &input, &workflow_id, ids).await;
                    core_ctx.state_mut(|s| s.core_done = true);
                    // Runs started before the welcome email existed replay without it. Runs with
                    // local steps send it after the customer record (below).
                    if r.is_ok() && !local_steps && core_ctx.patched("welcome-email") {
                        Self::welcome(&core_ctx, &input, &workflow_id, ids, &mut sealed).await;
                    }
                    r
                };
                // Tracking starts once the tenant row exists (a customer record must never name
                // a tenant that was never created) and then runs in parallel with the tenant's
                // own setup: seeds, admin user, settings.
                let tracking = async {
                    if tracking_wanted {
                        let _ = tracking_ctx
                            .wait_condition(|s| s.state.tenant_id.is_some() || s.core_done)
                            .await;
                        if tracking_ctx.state(|s| s.state.tenant_id.is_none()) {
                            tracking_ctx.state_mut(|s| {
                                s.state.customer_tracking.status = TrackingState::Skipped;
                                s.state.customer_tracking.error =
                                    Some("not started: the tenant was not created".into());
                            });
                            return;
                        }
                        Self::tracking(&tracking_ctx, &input, &workflow_id, settings, ids).await;
                    }
                };
                let (core_result, ()) = futures::join!(core, tracking);
                // Every local step has ended here, so the welcome email (a remote activity) ends
                // the workflow task that ran them: their markers are in history before the run's
                // outcome is recorded (see `finish_in_its_own_task`).
                if core_result.is_ok() && local_steps && ctx.patched("welcome-email") {
                    Self::welcome(ctx, &input, &workflow_id, ids, &mut sealed).await;
                }
                core_result
            }
        };

        let (status, error, rollback) = match core_result {
            Ok(()) => (Outcome::Completed, None, RollbackReport::default()),
            Err(failure) => {
                let (outcome, step, message) = match failure {
                    CoreFailure::Step(step, message) => (Outcome::RolledBack, step, message),
                    CoreFailure::Cancelled(reason) => {
                        (Outcome::Cancelled, FailedStep::Cancel, reason)
                    }
                };
                ctx.state_mut(|s| {
                    s.state.step = Step::RollingBack;
                    s.state.progress = Step::RollingBack.progress();
                    s.state.error = Some(format!("{}: {message}", step.as_str()));
                });
                let report = Self::compensate(ctx).await;
                let outcome = if report.errors.is_empty() {
                    outcome
                } else {
                    Outcome::Failed
                };
                ctx.state_mut(|s| {
                    if s.state.customer_tracking.customer_company_id.is_some() && tracking_wanted {
                        s.state.customer_tracking.status = TrackingState::RolledBack;
                    }
                });
                (outcome, Some(StepError { step, message }), report)
            }
        };
        let finished = ctx.workflow_time().unwrap_or(started);
        let step = match status {
            Outcome::Completed => Step::Completed,
            Outcome::RolledBack => Step::RolledBack,
            Outcome::Cancelled => Step::Cancelled,
            Outcome::Failed => Step::Failed,
        };
        ctx.state_mut(|s| {
            s.state.step = step;
            s.state.progress = step.progress();
        });
        Self::finish_in_its_own_task(ctx).await;
        let state = ctx.state(|s| s.state.clone());
        let tracking = state.customer_tracking.clone();
        // The record and the metrics; the run's result does not depend on it (a failure here is
        // repaired by the sweeper, which reads the result).
        let _ = Self::execute(
            ctx,
            TenantActivities::finish_provisioning,
            FinishIn {
                workflow_id: workflow_id.clone(),
                outcome: status,
                tracking: tracking.status,
                welcome_email: state.welcome_email.status,
                error: error
                    .as_ref()
                    .map(|e| format!("{}: {}", e.step.as_str(), e.message))
                    .or_else(|| tracking.error.clone()),
                duration_seconds: finished
                    .duration_since(started)
                    .unwrap_or_default()
                    .as_secs_f64(),
            },
            FINISH,
        )
        .await;
        let created_at = chrono::DateTime::<chrono::Utc>::from(started).to_rfc3339();
        let completed = status == Outcome::Completed;
        Ok(TenantCreationResult {
            workflow_id,
            status,
            tenant_id: state.tenant_id.filter(|_| completed),
            admin_user_id: state.admin_user_id.filter(|_| completed),
            company_id: state.company_id.filter(|_| completed),
            created_at,
            tracking_settings: state.tracking_settings,
            customer_tracking: tracking,
            welcome_email: state.welcome_email,
            invitation_link_sealed: sealed.filter(|_| completed),
            rollback,
            error,
        })
    }

    #[query]
    pub fn get_state(&self, _ctx: &WorkflowContextView) -> WorkflowState {
        self.state.clone()
    }

    /// Stops before the next core step and rolls back.
    #[signal]
    pub fn cancel(&mut self, _ctx: &mut SyncWorkflowContext<Self>, reason: String) {
        if !self.state.cancel_requested {
            self.state.cancel_requested = true;
            self.state.error = Some(format!("Cancelled: {reason}"));
        }
    }
}
