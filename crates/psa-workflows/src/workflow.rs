//! The `tenant_creation` workflow: a saga with a parallel branch.
//!
//! ```text
//!   begin_provisioning (the worker's settings, the provisioning record)
//!   core:      create_tenant -> run_onboarding_seeds -> create_admin_user -> setup_tenant_data
//!              -> send_welcome_email (cannot fail the run)
//!   tracking:  create_customer_company -> (create_customer_contact || tag_customer_company)
//!   finish_provisioning (outcome in the record and the metrics)
//! ```
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

use psa_models::validate::FullName;
use psa_models::{CompanyId, ContactId, MappingId, TenantId, UserId};
use temporalio_common::{ActivityDefinition, RetryPolicy};
use temporalio_macros::{workflow, workflow_methods};
use temporalio_sdk::{
    ActivityExecutionError, ActivityOptions, SyncWorkflowContext, WorkflowContext,
    WorkflowContextView, WorkflowResult,
};
use uuid::Uuid;

use crate::activities::*;
use crate::types::*;

/// Exponential backoff from 1 s, doubling up to `max_interval`, for `attempts` attempts.
pub(crate) fn retrying(
    start_to_close: Duration,
    max_interval: Duration,
    attempts: u32,
) -> ActivityOptions {
    ActivityOptions::with_start_to_close_timeout(start_to_close)
        .retry_policy(
            RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(max_interval)
                .maximum_attempts(attempts)
                .build(),
        )
        .build()
}

/// Retries of the core steps: transient failures (connection loss, failover, deadlock) are
/// retried for about four minutes before the tenant is rolled back. Each attempt is one short
/// transaction; 15 s bounds how long a step whose worker died waits before another worker
/// retries it.
fn core_options() -> ActivityOptions {
    retrying(Duration::from_secs(15), Duration::from_secs(30), 12)
}

/// Tracking retries less (about 15 s): it runs in parallel, and a failure is repaired later by
/// `psa customers reconcile` rather than waited for.
fn tracking_options() -> ActivityOptions {
    retrying(Duration::from_secs(15), Duration::from_secs(8), 5)
}

/// The welcome email retries like tracking (about 15 s): a mail server that stays down is
/// repaired by `psa tenant resend-invite`, not waited for.
fn welcome_options() -> ActivityOptions {
    retrying(Duration::from_secs(30), Duration::from_secs(8), 5)
}

/// Compensations retry longest: a compensation dropped leaves data behind.
fn compensation_options() -> ActivityOptions {
    retrying(Duration::from_secs(60), Duration::from_secs(60), 15)
}

/// The message of an activity failure (its `Display` is only the wrapper's).
fn failure_message(e: &ActivityExecutionError) -> String {
    e.reason()
        .map(|c| c.failure().message.clone())
        .or_else(|| e.failure().map(|f| f.message.clone()))
        .unwrap_or_else(|| e.to_string())
}

/// One undo step, registered before the step it undoes runs.
#[derive(Clone, Debug)]
enum Compensation {
    RemoveCustomerTag(RemoveTagIn),
    UnlinkCustomerContact(UnlinkIn),
    RemoveCustomerContact(RemoveContactIn),
    RemoveCustomerCompany(RemoveCompanyIn),
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
        Self::register(ctx, compensation);
        let name = step.activity().expect("a core step runs an activity");
        ctx.execute_activity(activity, input, core_options())
            .await
            .map_err(|e| CoreFailure::Step(FailedStep::of(name), failure_message(&e)))
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
                welcome_options(),
            )
            .await;
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

    async fn tracking(
        ctx: &WorkflowContext<Self>,
        input: &TenantCreationInput,
        workflow_id: &str,
        settings: &TrackingSettings,
        ids: Ids,
    ) {
        let Some(mgmt) = settings.management_tenant_id else {
            ctx.state_mut(|s| {
                s.state.customer_tracking.status = TrackingState::Failed;
                s.state.customer_tracking.error =
                    Some("the worker's NINEMINDS_TENANT_ID is not set".into());
            });
            return;
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
                tracking_options(),
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
        let full_name = FullName::parse(&format!(
            "{} {}",
            input.admin_user.first_name, input.admin_user.last_name
        ))
        .expect("two valid person names make a valid full name");
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
            tracking_options(),
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
            tracking_options(),
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
        match ctx
            .execute_activity(activity, input, compensation_options())
            .await
        {
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
        let begun = ctx
            .execute_activity(
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
                core_options(),
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
                    // Runs started before the welcome email existed replay without it.
                    if r.is_ok() && core_ctx.patched("welcome-email") {
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
        let state = ctx.state(|s| s.state.clone());
        let tracking = state.customer_tracking.clone();
        // The record and the metrics; the run's result does not depend on it (a failure here is
        // repaired by the sweeper, which reads the result).
        let _ = ctx
            .execute_activity(
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
                retrying(Duration::from_secs(10), Duration::from_secs(30), 10),
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
