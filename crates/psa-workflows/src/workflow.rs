//! The `tenant_creation` workflow: a saga with a parallel branch.
//!
//! ```text
//!   core:      create_tenant -> run_onboarding_seeds -> create_admin_user -> setup_tenant_data
//!   tracking:  create_customer_company -> (create_customer_contact || tag_customer_company)
//! ```
//!
//! The two branches run concurrently (joined futures on the workflow's own executor). The
//! tracking branch turns its failures into a status, so only the core chain can fail the run.
//! When a core step fails for good (non-retryable, or retries exhausted: transient failures are
//! retried for minutes first) or a cancel signal arrives, the compensations run in reverse order
//! of what completed: customer tag, contact, company, then the tenant with everything it owns.
//! A compensation that still fails after its retries is reported in the result, never dropped.

use std::time::{Duration, SystemTime};

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
fn retrying(start_to_close: Duration, max_interval: Duration, attempts: u32) -> ActivityOptions {
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

#[workflow]
#[derive(Default)]
pub struct TenantCreationWorkflow {
    state: WorkflowState,
    /// What compensation must undo. Ids are the ones this run minted, recorded once their
    /// activity has been *attempted*: a step can commit and still fail (after the commit), so
    /// "attempted" rather than "succeeded" decides; deleting a row that is not there is a no-op,
    /// and a minted id can only name a row this run created.
    undo: Undo,
    /// The core chain has finished (either way).
    core_done: bool,
}

#[derive(Default)]
struct Undo {
    tenant: Option<Uuid>,
    customer_company: Option<Uuid>,
    customer_contact: Option<Uuid>,
    /// An existing contact this run linked to the customer company (unlinked on rollback).
    linked_contact: Option<Uuid>,
}

enum CoreFailure {
    Step(&'static str, String),
    Cancelled(String),
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

    fn set_step(ctx: &WorkflowContext<Self>, step: Step, progress: u8) {
        ctx.state_mut(|s| {
            s.state.step = step;
            s.state.progress = progress;
        });
    }

    async fn core(
        ctx: &WorkflowContext<Self>,
        input: &TenantCreationInput,
        tenant_id: Uuid,
        company_id: Uuid,
        user_id: Uuid,
        sealed: &mut Option<String>,
    ) -> Result<(), CoreFailure> {
        let step = |name: &'static str| {
            move |e: ActivityExecutionError| CoreFailure::Step(name, failure_message(&e))
        };

        Self::cancel_point(ctx)?;
        Self::set_step(ctx, Step::CreatingTenant, 10);
        ctx.state_mut(|s| s.undo.tenant = Some(tenant_id));
        let created = ctx
            .execute_activity(
                TenantActivities::create_tenant,
                CreateTenantIn {
                    tenant_id,
                    company_id,
                    tenant_name: input.tenant_name.clone(),
                    admin_email: input.admin_user.email.clone(),
                    company_name: input.company_name.clone(),
                    license_count: input.license_count,
                },
                core_options(),
            )
            .await
            .map_err(step("create_tenant"))?;
        ctx.state_mut(|s| {
            s.state.tenant_id = Some(created.tenant_id);
            s.state.company_id = created.company_id;
        });

        Self::cancel_point(ctx)?;
        Self::set_step(ctx, Step::RunningOnboardingSeeds, 30);
        ctx.execute_activity(
            TenantActivities::run_onboarding_seeds,
            tenant_id,
            core_options(),
        )
        .await
        .map_err(step("run_onboarding_seeds"))?;

        Self::cancel_point(ctx)?;
        Self::set_step(ctx, Step::CreatingAdminUser, 55);
        let admin = ctx
            .execute_activity(
                TenantActivities::create_admin_user,
                CreateAdminIn {
                    tenant_id,
                    user_id,
                    first_name: input.admin_user.first_name.clone(),
                    last_name: input.admin_user.last_name.clone(),
                    email: input.admin_user.email.clone(),
                },
                core_options(),
            )
            .await
            .map_err(step("create_admin_user"))?;
        ctx.state_mut(|s| s.state.admin_user_id = Some(admin.user_id));
        *sealed = Some(admin.temporary_password_sealed);

        Self::cancel_point(ctx)?;
        Self::set_step(ctx, Step::SettingUpData, 80);
        ctx.execute_activity(
            TenantActivities::setup_tenant_data,
            SetupIn {
                tenant_id,
                company_id: created.company_id,
            },
            core_options(),
        )
        .await
        .map_err(step("setup_tenant_data"))?;
        Self::cancel_point(ctx)?;
        Ok(())
    }

    async fn tracking(
        ctx: &WorkflowContext<Self>,
        input: &TenantCreationInput,
        tenant_id: Uuid,
        company_id: Uuid,
        contact_id: Uuid,
    ) {
        let Some(mgmt) = input.tracking.management_tenant_id else {
            ctx.state_mut(|s| {
                s.state.customer_tracking.status = TrackingStatus::Failed;
                s.state.customer_tracking.error = Some("NINEMINDS_TENANT_ID is not set".into());
            });
            return;
        };
        ctx.state_mut(|s| s.state.customer_tracking.status = TrackingStatus::Running);
        let fail = |ctx: &WorkflowContext<Self>, step: &str, e: &ActivityExecutionError| {
            let message = format!("{step}: {}", failure_message(e));
            ctx.state_mut(|s| {
                s.state.customer_tracking.status = TrackingStatus::Failed;
                match &mut s.state.customer_tracking.error {
                    Some(prev) => {
                        prev.push_str("; ");
                        prev.push_str(&message);
                    }
                    None => s.state.customer_tracking.error = Some(message),
                }
            });
        };
        ctx.state_mut(|s| s.undo.customer_company = Some(company_id));
        let company = match ctx
            .execute_activity(
                TenantActivities::create_customer_company,
                CustomerCompanyIn {
                    management_tenant_id: mgmt,
                    company_id,
                    tenant_id,
                    tenant_name: input.tenant_name.clone(),
                },
                tracking_options(),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => return fail(ctx, "create_customer_company", &e),
        };
        ctx.state_mut(|s| {
            s.state.customer_tracking.customer_company_id = Some(company.company_id);
            s.state
                .customer_tracking
                .warnings
                .extend(company.warning.clone());
        });
        ctx.state_mut(|s| s.undo.customer_contact = Some(contact_id));
        let contact = ctx.execute_activity(
            TenantActivities::create_customer_contact,
            CustomerContactIn {
                management_tenant_id: mgmt,
                contact_id,
                company_id: company.company_id,
                first_name: input.admin_user.first_name.clone(),
                last_name: input.admin_user.last_name.clone(),
                email: input.admin_user.email.clone(),
            },
            tracking_options(),
        );
        let tag = ctx.execute_activity(
            TenantActivities::tag_customer_company,
            TagIn {
                management_tenant_id: mgmt,
                company_id: company.company_id,
                tag_text: input.tracking.tag_name.clone(),
            },
            tracking_options(),
        );
        let (contact, tag) = futures::join!(contact, tag);
        match contact {
            Ok(c) => ctx.state_mut(|s| {
                if c.linked && !c.created {
                    s.undo.linked_contact = Some(c.contact_id);
                }
                s.state.customer_tracking.customer_contact_id = Some(c.contact_id);
                s.state.customer_tracking.warnings.extend(c.warning.clone());
            }),
            Err(e) => fail(ctx, "create_customer_contact", &e),
        }
        match tag {
            Ok(t) => ctx.state_mut(|s| {
                s.state.customer_tracking.customer_tag_id = Some(t.tag_id);
                s.state.customer_tracking.customer_tag_mapping_id = Some(t.mapping_id);
            }),
            Err(e) => fail(ctx, "tag_customer_company", &e),
        }
        ctx.state_mut(|s| {
            if s.state.customer_tracking.status == TrackingStatus::Running {
                s.state.customer_tracking.status = TrackingStatus::Completed;
            }
        });
    }

    /// Runs one compensation with its generous retries and records how it went.
    async fn undo<AD>(
        ctx: &WorkflowContext<Self>,
        report: &mut RollbackReport,
        name: &str,
        activity: AD,
        input: AD::Input,
    ) where
        AD: ActivityDefinition<Output = ()>,
    {
        match ctx
            .execute_activity(activity, input, compensation_options())
            .await
        {
            Ok(()) => report.compensated.push(name.to_owned()),
            Err(e) => report
                .errors
                .push(format!("{name}: {}", failure_message(&e))),
        }
    }

    /// Undoes, in reverse order, what the run did. Returns the report.
    async fn compensate(
        ctx: &WorkflowContext<Self>,
        input: &TenantCreationInput,
    ) -> RollbackReport {
        let mut report = RollbackReport {
            performed: true,
            ..Default::default()
        };
        let (tracking, undo) = ctx.state(|s| {
            let u = &s.undo;
            (
                s.state.customer_tracking.clone(),
                (
                    u.tenant,
                    u.customer_company,
                    u.customer_contact,
                    u.linked_contact,
                ),
            )
        });
        let (tenant, minted_company, minted_contact, linked_contact) = undo;
        if let Some(mgmt) = input.tracking.management_tenant_id {
            let remove = |id| RemoveIn {
                management_tenant_id: mgmt,
                id,
            };
            // A tag on a company this run did not create (a reused customer company) is removed
            // by its mapping; on the company this run created, deleting the company removes it.
            if let Some(mapping) = tracking
                .customer_tag_mapping_id
                .filter(|_| tracking.customer_company_id != minted_company)
            {
                Self::undo(
                    ctx,
                    &mut report,
                    "remove_customer_tag",
                    TenantActivities::remove_customer_tag,
                    remove(mapping),
                )
                .await;
            }
            if let (Some(contact_id), Some(company_id)) =
                (linked_contact, tracking.customer_company_id)
            {
                let unlink = UnlinkIn {
                    management_tenant_id: mgmt,
                    contact_id,
                    company_id,
                };
                Self::undo(
                    ctx,
                    &mut report,
                    "unlink_customer_contact",
                    TenantActivities::unlink_customer_contact,
                    unlink,
                )
                .await;
            }
            if let Some(contact) = minted_contact {
                Self::undo(
                    ctx,
                    &mut report,
                    "remove_customer_contact",
                    TenantActivities::remove_customer_contact,
                    remove(contact),
                )
                .await;
            }
            if let Some(company) = minted_company {
                Self::undo(
                    ctx,
                    &mut report,
                    "remove_customer_company",
                    TenantActivities::remove_customer_company,
                    remove(company),
                )
                .await;
            }
        }
        if let Some(tenant) = tenant {
            Self::undo(
                ctx,
                &mut report,
                "rollback_tenant",
                TenantActivities::rollback_tenant,
                tenant,
            )
            .await;
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
        let (tenant_id, company_id, user_id) = (uuid(ctx), uuid(ctx), uuid(ctx));
        let (customer_company_id, customer_contact_id) = (uuid(ctx), uuid(ctx));
        let tracking_wanted = input.tracking.enabled && !input.skip_customer_tracking;
        ctx.state_mut(|s| {
            s.state.customer_tracking.status =
                match (input.tracking.enabled, input.skip_customer_tracking) {
                    (false, _) => TrackingStatus::Disabled,
                    (true, true) => TrackingStatus::Skipped,
                    (true, false) => TrackingStatus::Pending,
                }
        });

        let mut sealed = None;
        let core_ctx = ctx.clone();
        let tracking_ctx = ctx.clone();
        let core = async {
            let r = Self::core(
                &core_ctx,
                &input,
                tenant_id,
                company_id,
                user_id,
                &mut sealed,
            )
            .await;
            core_ctx.state_mut(|s| s.core_done = true);
            r
        };
        // Tracking starts once the tenant row exists (it needs only the tenant's id, and a
        // customer record must never name a tenant that was never created) and then runs in
        // parallel with the tenant's own setup: seeds, admin user, settings.
        let tracking = async {
            if tracking_wanted {
                let _ = tracking_ctx
                    .wait_condition(|s| s.state.tenant_id.is_some() || s.core_done)
                    .await;
                if tracking_ctx.state(|s| s.state.tenant_id.is_none()) {
                    tracking_ctx.state_mut(|s| {
                        s.state.customer_tracking.status = TrackingStatus::Skipped;
                        s.state.customer_tracking.error =
                            Some("not started: the tenant was not created".into());
                    });
                    return;
                }
                Self::tracking(
                    &tracking_ctx,
                    &input,
                    tenant_id,
                    customer_company_id,
                    customer_contact_id,
                )
                .await;
            }
        };
        let (core_result, ()) = futures::join!(core, tracking);

        let (status, error, rollback) = match core_result {
            Ok(()) => (Outcome::Completed, None, RollbackReport::default()),
            Err(failure) => {
                let (outcome, step, message) = match failure {
                    CoreFailure::Step(step, message) => {
                        (Outcome::RolledBack, step.to_owned(), message)
                    }
                    CoreFailure::Cancelled(reason) => {
                        (Outcome::Cancelled, "cancel".to_owned(), reason)
                    }
                };
                ctx.state_mut(|s| {
                    s.state.step = Step::RollingBack;
                    s.state.error = Some(format!("{step}: {message}"));
                });
                let report = Self::compensate(ctx, &input).await;
                let outcome = if report.errors.is_empty() {
                    outcome
                } else {
                    Outcome::Failed
                };
                ctx.state_mut(|s| {
                    if s.state.customer_tracking.customer_company_id.is_some() && tracking_wanted {
                        s.state.customer_tracking.status = TrackingStatus::RolledBack;
                    }
                });
                (outcome, Some(StepError { step, message }), report)
            }
        };
        let finished = ctx.workflow_time().unwrap_or(started);
        ctx.state_mut(|s| {
            s.state.step = match status {
                Outcome::Completed => Step::Completed,
                Outcome::RolledBack => Step::RolledBack,
                Outcome::Cancelled => Step::Cancelled,
                Outcome::Failed => Step::Failed,
            };
            s.state.progress = 100;
        });
        let state = ctx.state(|s| s.state.clone());
        let tracking = state.customer_tracking.clone();
        let _ = ctx
            .execute_activity(
                TenantActivities::record_outcome,
                OutcomeIn {
                    outcome: status.as_str().to_owned(),
                    tracking_status: serde_json::to_value(tracking.status)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    tracking_rolled_back: tracking.status == TrackingStatus::RolledBack,
                    duration_seconds: finished
                        .duration_since(started)
                        .unwrap_or_default()
                        .as_secs_f64(),
                },
                ActivityOptions::with_start_to_close_timeout(Duration::from_secs(10))
                    .retry_policy(RetryPolicy::builder().maximum_attempts(3).build())
                    .build(),
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
            temporary_password_sealed: sealed.filter(|_| completed),
            created_at,
            customer_tracking: tracking,
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
