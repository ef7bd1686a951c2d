//! The workflow's activities: thin calls into psa-models, one transaction each.
//!
//! Exactly-once effects from at-least-once execution: every id is minted by the workflow and
//! recorded in history, and every model call finds the row a previous attempt committed (see
//! psa-models' `CreateOptions`), so an activity that ran twice (the worker died after its commit)
//! adds nothing. Errors are classified once ([`to_activity_error`]): transient database failures
//! are retried with backoff; everything else fails the step for good and triggers the rollback.
//!
//! The provisioning record (psa-models' `provisioning`) is written here, in the same transactions
//! as the changes it describes: the run's first activity records the worker's settings and the
//! ids the run minted; the steps that build check first that the run has not been cut off.
//!
//! Fail points (`--features failpoints`, `FAILPOINTS` env): `activity::<name>` fails before the
//! commit, `activity::<name>::after_commit` after it; `return(permanent)` is non-retryable,
//! `return(transient)` or `return` retryable.

use std::sync::Arc;
use std::time::Instant;

use psa_models::audit::Actor;
use psa_models::companies;
use psa_models::provisioning::{self, TrackingState};
use psa_models::validate::{CompanyName, EmailAddress, FullName, PersonName, Slug, TagText};
use psa_models::{CompanyId, ContactId, MappingId, TenantId, UserId, seeds, tenants, users};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};

use psa_models::auth_tokens::{self, IssueOptions, Purpose};
use psa_models::invitations::{Delivered, Delivery};
use psa_models::mail::Kind;

pub use crate::failure::to_activity_error;
use crate::failure::{Failure, failpoint};
use crate::secret::SecretKey;
use crate::types::{ActivityName, Outcome, RunStatus, TrackingSettings, WelcomeStatus};

/// The activities and what they share: the owner-role pool (the worker writes into two tenants,
/// so row-level security does not restrict it), the key that seals the invitation link when
/// there is no mail, the worker's customer tracking settings and its mail settings, which decide
/// every run this worker executes.
pub struct TenantActivities {
    pub pool: PgPool,
    pub key: SecretKey,
    pub tracking: TrackingSettings,
    pub delivery: Delivery,
}

/// Runs `body` in one transaction with the fail points around the commit, and times it.
async fn transaction<T, F>(
    ctx: &ActivityContext,
    pool: &PgPool,
    activity: ActivityName,
    tenant: Option<TenantId>,
    body: F,
) -> Result<T, ActivityError>
where
    F: for<'c> AsyncFnOnce(&'c mut PgConnection) -> Result<T, psa_models::Error>,
{
    in_transaction(ctx, pool, activity, tenant, body).await
}

/// [`transaction`] for a step of several parts, whose body names the part that failed.
async fn transaction_of_parts<T, F>(
    ctx: &ActivityContext,
    pool: &PgPool,
    activity: ActivityName,
    tenant: Option<TenantId>,
    body: F,
) -> Result<T, ActivityError>
where
    F: for<'c> AsyncFnOnce(&'c mut PgConnection) -> Result<T, Failure>,
{
    in_transaction(ctx, pool, activity, tenant, body).await
}

async fn in_transaction<T, E, F>(
    ctx: &ActivityContext,
    pool: &PgPool,
    activity: ActivityName,
    // The tenant the step works in (for the log line of a failure).
    tenant: Option<TenantId>,
    body: F,
) -> Result<T, ActivityError>
where
    E: Into<Failure>,
    F: for<'c> AsyncFnOnce(&'c mut PgConnection) -> Result<T, E>,
{
    let start = Instant::now();
    let name = activity.as_str();
    let result = async {
        let mut tx: Transaction<'_, Postgres> = pool
            .begin()
            .await
            .map_err(|e| to_activity_error(e.into()))?;
        let out = body(&mut tx)
            .await
            .map_err(|e| e.into().into_activity_error())?;
        failpoint(&format!("activity::{name}"))?;
        tx.commit().await.map_err(|e| to_activity_error(e.into()))?;
        failpoint(&format!("activity::{name}::after_commit"))?;
        Ok(out)
    }
    .await;
    observe(ctx, activity, tenant, start, &result);
    if activity.is_tracking() {
        tracking_step(activity, &result);
    }
    result
}

const WORKFLOW_ACTOR: &Actor = &Actor::Platform("provisioning");

/// What every activity attempt leaves for operators: its duration, and for a failure a count by
/// kind and one log line with what they grep for: the step, the run, the tenant, the kind (a
/// transient failure is retried, a permanent one rolls back, fails tracking or the email).
fn observe<T>(
    ctx: &ActivityContext,
    activity: ActivityName,
    tenant: Option<TenantId>,
    start: Instant,
    result: &Result<T, ActivityError>,
) {
    let name = activity.as_str();
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!("psa_activity_duration_seconds", "activity" => name, "outcome" => outcome)
        .record(start.elapsed().as_secs_f64());
    let Err(ActivityError::Application(failure)) = result else {
        return;
    };
    let info = ctx.info();
    let workflow_id = info.workflow_id.as_deref().unwrap_or("-");
    if failure.type_name() == Some(provisioning::RUN_CANCELLED) {
        // Not a failure of the step: it wrote nothing, and the run rolls back as asked.
        tracing::info!(
            step = name,
            workflow_id,
            "step not run: the run was asked to cancel"
        );
        return;
    }
    let kind = if failure.is_non_retryable() {
        "permanent"
    } else {
        "transient"
    };
    let error = failure.to_string();
    let tenant = tenant.map_or_else(|| "-".to_owned(), |t| t.to_string());
    step_failed(activity, kind);
    if activity.is_compensation() {
        tracing::error!(step = name, workflow_id, tenant = %tenant, attempt = info.attempt, kind,
            %error, "compensation failed: what the run built may be left behind");
    } else if activity == ActivityName::SendWelcomeEmail {
        tracing::warn!(step = name, workflow_id, tenant = %tenant, attempt = info.attempt, kind,
            %error, "welcome email failed");
    } else {
        tracing::warn!(step = name, workflow_id, tenant = %tenant, attempt = info.attempt, kind,
            %error, "provisioning step failed");
    }
}

/// Counts a failed attempt of any activity by kind: `transient` (retried: the database or the
/// network failing) or `permanent`. Whatever step a database outage hits, this counter rises.
fn step_failed(activity: ActivityName, kind: &'static str) {
    metrics::counter!("psa_provisioning_step_failures_total", "step" => activity.as_str(), "kind" => kind)
        .increment(1);
}

/// Counts a tracking step attempt. Failures are split by kind: a `transient_failure` is the
/// management tenant's database unreachable or failing over (what the connection alert watches),
/// a `permanent_failure` a rule or data problem.
fn tracking_step<T>(step: ActivityName, result: &Result<T, ActivityError>) {
    let outcome = match result {
        Ok(_) => "success",
        Err(ActivityError::Application(f)) if f.is_non_retryable() => "permanent_failure",
        Err(_) => "transient_failure",
    };
    metrics::counter!("psa_customer_tracking_steps_total", "step" => step.as_str(), "outcome" => outcome)
        .increment(1);
}

/// Creates every counter the alert rules read, at 0, with every label value they use: a series
/// that first appears at 1 loses that first increment to `rate()` and `increase()`. Call once
/// the metrics recorder is installed.
pub(crate) fn init_metrics() {
    for outcome in [
        RunStatus::Completed,
        RunStatus::RolledBack,
        RunStatus::Cancelled,
        RunStatus::Failed,
    ] {
        metrics::counter!("psa_tenant_creations_total", "outcome" => outcome.as_str()).absolute(0);
    }
    for status in [
        TrackingState::Completed,
        TrackingState::Failed,
        TrackingState::Skipped,
        TrackingState::Disabled,
        TrackingState::RolledBack,
    ] {
        metrics::counter!("psa_customer_tracking_total", "status" => status.as_str()).absolute(0);
    }
    for step in ActivityName::ALL.into_iter().filter(|a| a.is_tracking()) {
        for outcome in ["success", "transient_failure", "permanent_failure"] {
            metrics::counter!("psa_customer_tracking_steps_total", "step" => step.as_str(), "outcome" => outcome)
                .absolute(0);
        }
    }
    metrics::counter!("psa_customer_tracking_rollbacks_total").absolute(0);
    for step in ActivityName::ALL {
        for kind in ["transient", "permanent"] {
            metrics::counter!("psa_provisioning_step_failures_total", "step" => step.as_str(), "kind" => kind)
                .absolute(0);
        }
    }
    for status in [
        WelcomeStatus::Sent,
        WelcomeStatus::Failed,
        WelcomeStatus::Disabled,
    ] {
        metrics::counter!("psa_welcome_emails_total", "status" => status.as_str()).absolute(0);
    }
    metrics::counter!("psa_tenant_provisioning_cut_off_total").absolute(0);
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BeginIn {
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub tenant_name: CompanyName,
    pub admin_email: EmailAddress,
    pub skip_customer_tracking: bool,
    pub customer_company_id: CompanyId,
    pub customer_contact_id: ContactId,
    pub customer_tag_mapping_id: MappingId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Begun {
    /// The worker's settings, which this run uses from here on.
    pub tracking: TrackingSettings,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTenantIn {
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub company_id: CompanyId,
    pub tenant_name: CompanyName,
    pub admin_email: EmailAddress,
    pub company_name: Option<CompanyName>,
    pub license_count: Option<i32>,
    /// Absent in runs started before slugs (one is derived then).
    #[serde(default)]
    pub slug: Option<Slug>,
    /// The plan to subscribe the tenant to; absent in runs started before plans.
    #[serde(default)]
    pub plan: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTenantOut {
    pub tenant_id: TenantId,
    pub company_id: Option<CompanyId>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SeedsIn {
    pub workflow_id: String,
    pub tenant_id: TenantId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateAdminIn {
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub email: EmailAddress,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateAdminOut {
    pub user_id: UserId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetupIn {
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub company_id: Option<CompanyId>,
}

pub use psa_models::customer_record::{
    CustomerCompanyIn, CustomerCompanyOut, CustomerContactIn, CustomerContactOut,
};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagIn {
    pub workflow_id: String,
    pub management_tenant_id: TenantId,
    pub tenant_id: TenantId,
    pub company_id: CompanyId,
    /// Minted by the workflow: the mapping this run creates, if the company is not tagged yet.
    pub mapping_id: MappingId,
    pub tag_text: TagText,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagOut {
    pub tag_id: uuid::Uuid,
    pub mapping_id: MappingId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveTagIn {
    pub management_tenant_id: TenantId,
    pub mapping_id: MappingId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveContactIn {
    pub management_tenant_id: TenantId,
    pub contact_id: ContactId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveCompanyIn {
    pub management_tenant_id: TenantId,
    pub company_id: CompanyId,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UnlinkIn {
    pub management_tenant_id: TenantId,
    /// The run whose record says which contact, if any, it linked.
    pub workflow_id: String,
    pub company_id: CompanyId,
}

/// The customer record, written by one step in one transaction: the company, the admin as its
/// contact, and the tag (the ids are minted by the workflow).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerRecordIn {
    pub workflow_id: String,
    pub management_tenant_id: TenantId,
    /// The managed tenant.
    pub tenant_id: TenantId,
    pub tenant_name: CompanyName,
    pub company_id: CompanyId,
    pub contact_id: ContactId,
    pub mapping_id: MappingId,
    pub full_name: FullName,
    pub email: EmailAddress,
    pub tag_text: TagText,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerRecordOut {
    pub company: CustomerCompanyOut,
    pub contact: CustomerContactOut,
    pub tag: TagOut,
}

/// The customer record's compensation: what the run minted, and its record for a contact it
/// linked.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RemoveRecordIn {
    pub management_tenant_id: TenantId,
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub company_id: CompanyId,
    pub contact_id: ContactId,
    pub mapping_id: MappingId,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FinishIn {
    pub workflow_id: String,
    pub outcome: Outcome,
    pub tracking: TrackingState,
    #[serde(default)]
    pub welcome_email: WelcomeStatus,
    pub error: Option<String>,
    pub duration_seconds: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WelcomeIn {
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub user_id: UserId,
    pub tenant_name: CompanyName,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WelcomeOut {
    /// `sent` or `disabled`.
    pub status: WelcomeStatus,
    /// Without mail: the link, sealed (activity results are stored in history).
    pub invitation_link_sealed: Option<String>,
}

/// The undo operations, shared by the workflow's compensations and the sweeper of cut-off runs:
/// the customer record's (in `psa_models::customer_record`) and the tenant's own.
pub(crate) mod undo {
    use super::*;

    pub use psa_models::customer_record::undo::*;

    pub async fn rollback_tenant(
        conn: &mut PgConnection,
        tenant: TenantId,
    ) -> Result<(), psa_models::Error> {
        tenants::delete(conn, tenant).await.map(|_| ())
    }
}

#[activities]
impl TenantActivities {
    /// The run's first step: records the run, and answers with the worker's tracking settings
    /// (the workflow cannot read configuration itself: it must stay deterministic).
    #[activity(name = "begin_provisioning")]
    pub async fn begin_provisioning(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: BeginIn,
    ) -> Result<Begun, ActivityError> {
        let tracking = self.tracking.clone();
        transaction(&ctx, &self.pool, ActivityName::BeginProvisioning, Some(input.tenant_id), async move |conn| {
            let state = match (tracking.enabled, input.skip_customer_tracking) {
                (false, _) => TrackingState::Disabled,
                (true, true) => TrackingState::Skipped,
                (true, false) => TrackingState::Pending,
            };
            let begun = provisioning::begin(
                conn,
                &provisioning::Begin {
                    workflow_id: &input.workflow_id,
                    tenant_id: input.tenant_id.0,
                    tenant_name: input.tenant_name.as_str(),
                    admin_email: input.admin_email.as_str(),
                    skip_customer_tracking: input.skip_customer_tracking,
                    tracking_enabled: tracking.enabled,
                    management_tenant_id: tracking.management_tenant_id.map(|t| t.0),
                    customer_tag_name: tracking.tag_name.as_str(),
                    customer_tracking: state,
                    customer_company_id: input.customer_company_id.0,
                    customer_contact_id: input.customer_contact_id.0,
                    customer_tag_mapping_id: input.customer_tag_mapping_id.0,
                },
            )
            .await?;
            if !begun {
                return Err(psa_models::Error::conflict(
                    Some("workflow_id"),
                    format!(
                        "workflow id {} was already used by another provisioning run; nothing was done",
                        input.workflow_id
                    ),
                ));
            }
            Ok(Begun { tracking })
        })
        .await
    }

    #[activity(name = "create_tenant")]
    pub async fn create_tenant(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CreateTenantIn,
    ) -> Result<CreateTenantOut, ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::CreateTenant,
            Some(input.tenant_id),
            async move |conn| {
                provisioning::ensure_running(conn, &input.workflow_id).await?;
                let created = tenants::create(
                    conn,
                    input.tenant_id,
                    tenants::NewTenant {
                        name: input.tenant_name.as_str().to_owned(),
                        email: input.admin_email.as_str().to_owned(),
                        company_name: input.company_name.as_ref().map(|c| c.as_str().to_owned()),
                        licensed_user_count: input.license_count,
                        slug: input.slug.as_ref().map(|s| s.as_str().to_owned()),
                    },
                    tenants::CreateOptions {
                        company_id: Some(input.company_id),
                        is_management: false,
                    },
                )
                .await?;
                // Its subscription, in the same transaction (the licence count as its seats). A
                // run started before plans names none: the default plan, so no tenant is left
                // without seats to count.
                psa_models::plans::start(
                    conn,
                    input.tenant_id,
                    input
                        .plan
                        .as_deref()
                        .unwrap_or(psa_models::plans::DEFAULT_PLAN),
                    input.license_count.filter(|n| *n > 0),
                )
                .await?;
                Ok(CreateTenantOut {
                    tenant_id: input.tenant_id,
                    company_id: created.company.map(|c| c.company_id),
                })
            },
        )
        .await
    }

    #[activity(name = "run_onboarding_seeds")]
    pub async fn run_onboarding_seeds(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: SeedsIn,
    ) -> Result<(), ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::RunOnboardingSeeds,
            Some(input.tenant_id),
            async move |conn| {
                provisioning::ensure_running(conn, &input.workflow_id).await?;
                seeds::run(conn, input.tenant_id).await.map(|_| ())
            },
        )
        .await
    }

    #[activity(name = "create_admin_user")]
    pub async fn create_admin_user(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CreateAdminIn,
    ) -> Result<CreateAdminOut, ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::CreateAdminUser,
            Some(input.tenant_id),
            async move |conn| {
                provisioning::ensure_running(conn, &input.workflow_id).await?;
                let created = users::create_admin(
                    conn,
                    input.tenant_id,
                    input.first_name.as_str(),
                    input.last_name.as_str(),
                    input.email.as_str(),
                    users::CreateOptions {
                        user_id: Some(input.user_id),
                    },
                )
                .await?;
                Ok(CreateAdminOut {
                    user_id: created.user.user_id,
                })
            },
        )
        .await
    }

    #[activity(name = "setup_tenant_data")]
    pub async fn setup_tenant_data(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: SetupIn,
    ) -> Result<(), ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::SetupTenantData,
            Some(input.tenant_id),
            async move |conn| {
                provisioning::ensure_running(conn, &input.workflow_id).await?;
                tenants::setup_tenant_data(conn, input.tenant_id, input.company_id)
                    .await
                    .map(|_| ())
            },
        )
        .await
    }

    #[activity(name = "create_customer_company")]
    pub async fn create_customer_company(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CustomerCompanyIn,
    ) -> Result<CustomerCompanyOut, ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::CreateCustomerCompany,
            Some(input.tenant_id),
            async move |conn| {
                if let Some(wf) = &input.workflow_id {
                    provisioning::ensure_running(conn, wf).await?;
                }
                psa_models::customer_record::company(conn, &input).await
            },
        )
        .await
    }

    #[activity(name = "create_customer_contact")]
    pub async fn create_customer_contact(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CustomerContactIn,
    ) -> Result<CustomerContactOut, ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::CreateCustomerContact,
            Some(input.tenant_id),
            async move |conn| {
                if let Some(wf) = &input.workflow_id {
                    provisioning::ensure_running(conn, wf).await?;
                }
                psa_models::customer_record::contact(conn, &input).await
            },
        )
        .await
    }

    #[activity(name = "tag_customer_company")]
    pub async fn tag_customer_company(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: TagIn,
    ) -> Result<TagOut, ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::TagCustomerCompany,
            Some(input.tenant_id),
            async move |conn| {
                provisioning::ensure_running(conn, &input.workflow_id).await?;
                provisioning::lock_customer_record(conn, input.tenant_id).await?;
                let attached = psa_models::customer_record::tag(
                    conn,
                    input.management_tenant_id,
                    input.company_id,
                    &input.tag_text,
                    Some(input.mapping_id),
                    WORKFLOW_ACTOR,
                )
                .await?;
                Ok(TagOut {
                    tag_id: attached.tag.tag_id.0,
                    mapping_id: attached.tag.mapping_id,
                })
            },
        )
        .await
    }

    /// The whole customer record in one transaction: company, contact, tag, each with the
    /// collision rules of its own (older) step and that step's fail point, so a failure names the
    /// part it happened in (in its message and in `psa_customer_tracking_steps_total`) and
    /// leaves nothing of the record behind.
    #[activity(name = "create_customer_record")]
    pub async fn create_customer_record(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: CustomerRecordIn,
    ) -> Result<CustomerRecordOut, ActivityError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const PARTS: [ActivityName; 3] = [
            ActivityName::CreateCustomerCompany,
            ActivityName::CreateCustomerContact,
            ActivityName::TagCustomerCompany,
        ];
        // The part being written; a failure outside the parts (begin, commit) is counted as the
        // first part's: nothing of the record was written.
        let part = AtomicUsize::new(0);
        let at = |i: usize| {
            part.store(i, Ordering::Relaxed);
            PARTS[i]
        };
        let tenant = input.tenant_id;
        let result = transaction_of_parts(
            &ctx,
            &self.pool,
            ActivityName::CreateCustomerRecord,
            Some(tenant),
            async |conn| {
                let mgmt = input.management_tenant_id;
                provisioning::ensure_running(conn, &input.workflow_id).await?;
                let p = at(0);
                let company = psa_models::customer_record::company(
                    conn,
                    &CustomerCompanyIn {
                        workflow_id: Some(input.workflow_id.clone()),
                        management_tenant_id: mgmt,
                        company_id: input.company_id,
                        tenant_id: tenant,
                        tenant_name: input.tenant_name.clone(),
                    },
                )
                .await
                .map_err(Failure::in_part(p))?;
                failpoint(&format!("activity::{p}"))?;
                let p = at(1);
                let contact = psa_models::customer_record::contact(
                    conn,
                    &CustomerContactIn {
                        workflow_id: Some(input.workflow_id.clone()),
                        management_tenant_id: mgmt,
                        tenant_id: tenant,
                        contact_id: input.contact_id,
                        company_id: company.company_id,
                        full_name: input.full_name.clone(),
                        email: input.email.clone(),
                    },
                )
                .await
                .map_err(Failure::in_part(p))?;
                failpoint(&format!("activity::{p}"))?;
                let p = at(2);
                let attached = psa_models::customer_record::tag(
                    conn,
                    mgmt,
                    company.company_id,
                    &input.tag_text,
                    Some(input.mapping_id),
                    WORKFLOW_ACTOR,
                )
                .await
                .map_err(Failure::in_part(p))?;
                failpoint(&format!("activity::{p}"))?;
                at(0);
                Ok(CustomerRecordOut {
                    company,
                    contact,
                    tag: TagOut {
                        tag_id: attached.tag.tag_id.0,
                        mapping_id: attached.tag.mapping_id,
                    },
                })
            },
        )
        .await;
        match &result {
            Ok(_) => PARTS.iter().for_each(|p| tracking_step(*p, &result)),
            Err(ActivityError::Application(f))
                if f.type_name() == Some(provisioning::RUN_CANCELLED) => {}
            Err(_) => tracking_step(PARTS[part.load(Ordering::Relaxed)], &result),
        }
        result
    }

    /// Compensation of the customer record, in one transaction: the tag mapping, a contact link,
    /// the contact and the company this run minted or linked.
    #[activity(name = "remove_customer_record")]
    pub async fn remove_customer_record(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RemoveRecordIn,
    ) -> Result<(), ActivityError> {
        let mgmt = input.management_tenant_id;
        transaction(
            &ctx,
            &self.pool,
            ActivityName::RemoveCustomerRecord,
            Some(mgmt),
            async move |conn| {
                undo::remove_customer_tag(conn, mgmt, input.mapping_id, WORKFLOW_ACTOR).await?;
                // A contact is linked to the company the record used: the one minted, or one an
                // earlier run or reconcile made for this tenant.
                let company = companies::find_by_managed_tenant(conn, mgmt, input.tenant_id)
                    .await?
                    .map_or(input.company_id, |c| c.company_id);
                undo::unlink_customer_contact(
                    conn,
                    mgmt,
                    &input.workflow_id,
                    company,
                    WORKFLOW_ACTOR,
                )
                .await?;
                undo::remove_customer_contact(conn, mgmt, input.contact_id, WORKFLOW_ACTOR).await?;
                undo::remove_customer_company(conn, mgmt, input.company_id, WORKFLOW_ACTOR).await
            },
        )
        .await
    }

    /// Compensation: removes the tag mapping this run created (by its minted id).
    #[activity(name = "remove_customer_tag")]
    pub async fn remove_customer_tag(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RemoveTagIn,
    ) -> Result<(), ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::RemoveCustomerTag,
            Some(input.management_tenant_id),
            async move |conn| {
                undo::remove_customer_tag(
                    conn,
                    input.management_tenant_id,
                    input.mapping_id,
                    WORKFLOW_ACTOR,
                )
                .await
            },
        )
        .await
    }

    /// Compensation: unlinks an existing contact this run linked to the customer company.
    #[activity(name = "unlink_customer_contact")]
    pub async fn unlink_customer_contact(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: UnlinkIn,
    ) -> Result<(), ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::UnlinkCustomerContact,
            Some(input.management_tenant_id),
            async move |conn| {
                undo::unlink_customer_contact(
                    conn,
                    input.management_tenant_id,
                    &input.workflow_id,
                    input.company_id,
                    WORKFLOW_ACTOR,
                )
                .await
            },
        )
        .await
    }

    /// Compensation: deletes the customer contact this run created (by its minted id).
    #[activity(name = "remove_customer_contact")]
    pub async fn remove_customer_contact(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RemoveContactIn,
    ) -> Result<(), ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::RemoveCustomerContact,
            Some(input.management_tenant_id),
            async move |conn| {
                undo::remove_customer_contact(
                    conn,
                    input.management_tenant_id,
                    input.contact_id,
                    WORKFLOW_ACTOR,
                )
                .await
            },
        )
        .await
    }

    /// Compensation: deletes the customer company this run created (and its tag mappings).
    #[activity(name = "remove_customer_company")]
    pub async fn remove_customer_company(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: RemoveCompanyIn,
    ) -> Result<(), ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::RemoveCustomerCompany,
            Some(input.management_tenant_id),
            async move |conn| {
                undo::remove_customer_company(
                    conn,
                    input.management_tenant_id,
                    input.company_id,
                    WORKFLOW_ACTOR,
                )
                .await
            },
        )
        .await
    }

    /// Compensation: deletes the tenant and everything it owns.
    #[activity(name = "rollback_tenant")]
    pub async fn rollback_tenant(
        self: Arc<Self>,
        ctx: ActivityContext,
        tenant_id: TenantId,
    ) -> Result<(), ActivityError> {
        transaction(
            &ctx,
            &self.pool,
            ActivityName::RollbackTenant,
            Some(tenant_id),
            async move |conn| undo::rollback_tenant(conn, tenant_id).await,
        )
        .await
    }

    /// Invites the new tenant's admin: issues the invitation link and mails it, or, when this
    /// worker has no mail settings, returns it sealed for the starter. The link's token exists in
    /// plain text only here and in the email. A retried attempt whose email went out returns
    /// `sent` without mailing again; one whose email did not go out issues a new link (the
    /// earlier one stops working).
    #[activity(name = "send_welcome_email")]
    pub async fn send_welcome_email(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: WelcomeIn,
    ) -> Result<WelcomeOut, ActivityError> {
        let start = Instant::now();
        let result = self.welcome(&input).await;
        observe(
            &ctx,
            ActivityName::SendWelcomeEmail,
            Some(input.tenant_id),
            start,
            &result,
        );
        result
    }

    /// Records the run's outcome in its provisioning record and the worker's metrics (workflow
    /// code itself must stay free of side effects: it is replayed).
    #[activity(name = "finish_provisioning")]
    pub async fn finish_provisioning(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: FinishIn,
    ) -> Result<(), ActivityError> {
        let status = RunStatus::from(input.outcome);
        let (workflow_id, input_tracking) = (input.workflow_id.clone(), input.tracking);
        let welcome = input.welcome_email;
        let recorded = transaction(
            &ctx,
            &self.pool,
            ActivityName::FinishProvisioning,
            None,
            async move |conn| {
                let recorded = provisioning::finish(
                    conn,
                    &input.workflow_id,
                    status,
                    input.tracking,
                    input.error.as_deref(),
                )
                .await?;
                if input.welcome_email != WelcomeStatus::Pending {
                    provisioning::record_welcome(
                        conn,
                        &input.workflow_id,
                        input.welcome_email.as_str(),
                    )
                    .await?;
                }
                Ok(recorded)
            },
        )
        .await?;
        if recorded {
            tracing::info!(
                workflow_id = %workflow_id,
                outcome = status.as_str(),
                customer_tracking = input_tracking.as_str(),
                welcome_email = welcome.as_str(),
                "provisioning run finished"
            );
            metrics::counter!("psa_tenant_creations_total", "outcome" => status.as_str())
                .increment(1);
            metrics::histogram!("psa_tenant_creation_duration_seconds", "outcome" => status.as_str())
                .record(input.duration_seconds);
            metrics::counter!("psa_customer_tracking_total", "status" => input.tracking.as_str())
                .increment(1);
            if input.tracking == TrackingState::RolledBack {
                metrics::counter!("psa_customer_tracking_rollbacks_total").increment(1);
            }
            if welcome != WelcomeStatus::Pending {
                metrics::counter!("psa_welcome_emails_total", "status" => welcome.as_str())
                    .increment(1);
            }
        }
        Ok(())
    }
}

/// The longest one welcome email may take to send (the activity's attempt allows 30 s).
const WELCOME_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

impl TenantActivities {
    async fn welcome(&self, input: &WelcomeIn) -> Result<WelcomeOut, ActivityError> {
        let db = |e: sqlx::Error| to_activity_error(e.into());
        let mut tx = self.pool.begin().await.map_err(db)?;
        if auth_tokens::sent_by_workflow(&mut tx, &input.workflow_id)
            .await
            .map_err(to_activity_error)?
            .is_some()
        {
            return Ok(WelcomeOut {
                status: WelcomeStatus::Sent,
                invitation_link_sealed: None,
            });
        }
        let user = users::get(&mut tx, input.tenant_id, input.user_id)
            .await
            .map_err(to_activity_error)?;
        // Already signed up (a retry after a slow success): nothing left to send.
        if user.has_password {
            return Ok(WelcomeOut {
                status: WelcomeStatus::Sent,
                invitation_link_sealed: None,
            });
        }
        let link = auth_tokens::issue(
            &mut tx,
            input.tenant_id,
            input.user_id,
            IssueOptions {
                purpose: Purpose::Invitation,
                ttl: self.delivery.invitation_ttl,
                created_by: &format!("workflow:{}", input.workflow_id),
                workflow_id: Some(&input.workflow_id),
            },
        )
        .await
        .map_err(to_activity_error)?;
        failpoint("activity::send_welcome_email")?;
        tx.commit().await.map_err(db)?;
        // Bounded well inside the attempt's 30 s, so a slow server fails this attempt rather than
        // racing its retry (whose new link would replace the one being sent).
        let delivered = tokio::time::timeout(
            WELCOME_SEND_TIMEOUT,
            self.delivery
                .deliver(Kind::Welcome, input.tenant_name.as_str(), &user, &link),
        )
        .await
        .unwrap_or_else(|_| {
            Err(psa_models::mail::SendError {
                transient: true,
                message: format!(
                    "the mail server did not answer within {} s",
                    WELCOME_SEND_TIMEOUT.as_secs()
                ),
            })
        })
        .map_err(|e| {
            let failure = ApplicationFailure::builder(e.message)
                .type_name("mail".to_owned())
                .non_retryable(!e.transient)
                .build();
            ActivityError::application(failure)
        })?;
        match delivered {
            Delivered::Sent => {
                let mut conn = self.pool.acquire().await.map_err(db)?;
                auth_tokens::mark_sent(&mut conn, input.tenant_id, link.token_id)
                    .await
                    .map_err(to_activity_error)?;
                Ok(WelcomeOut {
                    status: WelcomeStatus::Sent,
                    invitation_link_sealed: None,
                })
            }
            Delivered::Shown(url) => Ok(WelcomeOut {
                status: WelcomeStatus::Disabled,
                invitation_link_sealed: Some(self.key.seal_for(
                    &url,
                    crate::secret::Sealed::InvitationLink,
                    &input.workflow_id,
                )),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activities::TenantActivities as A;

    /// `ActivityName` is the one list of activity names (fail points, metrics, reports): it must
    /// name exactly what the worker registers.
    #[test]
    fn activity_names_match_the_registered_activities() {
        let registered = [
            A::begin_provisioning.name().to_owned(),
            A::create_tenant.name().to_owned(),
            A::run_onboarding_seeds.name().to_owned(),
            A::create_admin_user.name().to_owned(),
            A::setup_tenant_data.name().to_owned(),
            A::create_customer_company.name().to_owned(),
            A::create_customer_contact.name().to_owned(),
            A::tag_customer_company.name().to_owned(),
            A::create_customer_record.name().to_owned(),
            A::remove_customer_tag.name().to_owned(),
            A::unlink_customer_contact.name().to_owned(),
            A::remove_customer_contact.name().to_owned(),
            A::remove_customer_company.name().to_owned(),
            A::remove_customer_record.name().to_owned(),
            A::rollback_tenant.name().to_owned(),
            A::send_welcome_email.name().to_owned(),
            A::finish_provisioning.name().to_owned(),
        ];
        let names: Vec<String> = ActivityName::ALL
            .iter()
            .map(|a| a.as_str().to_owned())
            .collect();
        assert_eq!(names, registered);
        for a in ActivityName::ALL {
            assert_eq!(serde_json::to_value(a).unwrap(), a.as_str());
        }
    }
}
