//! `psa customers reconcile`: makes every tenant a tracked customer of the management tenant.
//!
//! It repairs tracking that failed (the management tenant was down) and backfills tenants
//! created before tracking existed, with the same rules as the workflow's activities (one
//! customer company per tenant, found by `properties.tenant_id`; the admin as contact; the tag),
//! so running it twice changes nothing the second time. It also reports customer companies whose
//! tenant no longer exists; it never deletes them (business data may hang on them).
//!
//! What it leaves alone, by the tenant's provisioning record:
//! - a tenant whose run is still in flight (`requested`, `running`): the run tracks it, and two
//!   writers of one customer record would race; reconcile and the run's tracking steps also
//!   serialise on a per-tenant lock, so the check cannot go stale while reconcile writes;
//! - a tenant provisioned with `--skip-customer-tracking`: the operator's choice stands;
//! - a tenant whose run ended without completing (cut off, awaiting the sweeper): it is about to
//!   be removed, and must never be recorded as a customer.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use psa_models::events::{self, EventType};
use psa_models::provisioning::{self, RunStatus};
use psa_models::tags::{self, TaggedType};
use psa_models::validate::{CompanyName, EmailAddress, FullName};
use psa_models::{CompanyId, ContactId, TenantId, companies, lifecycle, tenants, users};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use temporalio_macros::{activities, workflow, workflow_methods};
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use temporalio_sdk::{ApplicationFailure, WorkflowContext, WorkflowResult};

use crate::types::TrackingSettings;
use psa_models::customer_record::{
    CustomerCompanyIn, CustomerContactIn, company as customer_company, contact as customer_contact,
    tag as customer_tag,
};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Orphan {
    pub customer_company_id: CompanyId,
    pub tenant_id: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Failure {
    pub tenant_id: TenantId,
    pub error: String,
}

/// A tenant reconcile did not touch, and why.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Left {
    pub tenant_id: TenantId,
    pub workflow_id: String,
    pub reason: LeftReason,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LeftReason {
    /// Its provisioning run is still in flight.
    InFlight,
    /// Provisioned with `--skip-customer-tracking`.
    Skipped,
    /// Its run ended without completing; the sweeper removes it.
    Incomplete,
}

/// A tenant whose customer records were created (or, in a dry run, would be), and which.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Repair {
    pub tenant_id: TenantId,
    pub name: String,
    /// `company`, `contact`, `tag`.
    pub what: Vec<String>,
}

/// At most this many repairs are listed in a report (`created` counts them all).
pub const REPAIRS_LISTED: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq)]
pub struct ReconcileReport {
    /// The one tenant this run was for; `None`: every tenant.
    #[serde(default)]
    pub tenant_id: Option<TenantId>,
    /// Tenants for which at least one customer record was created.
    pub created: usize,
    pub already_tracked: usize,
    pub failed: usize,
    pub orphans: Vec<Orphan>,
    pub dry_run: bool,
    pub failures: Vec<Failure>,
    pub warnings: Vec<String>,
    /// Tenants left alone (in flight, skipped by choice, incomplete).
    pub left_alone: Vec<Left>,
    /// What was (or would be) created, tenant by tenant: the first [`REPAIRS_LISTED`].
    #[serde(default)]
    pub repairs: Vec<Repair>,
}

enum Tracked {
    /// Warnings, and what was created.
    Created(Vec<String>, Vec<String>),
    Already(Vec<String>),
    Left(Left),
}

/// Tracks one tenant in one transaction, under the tenant's customer-record lock.
async fn track(
    pool: &PgPool,
    mgmt: TenantId,
    tenant: &tenants::Tenant,
    tag: &psa_models::validate::TagText,
    lifecycle_tags: &lifecycle::LifecycleTags,
    dry_run: bool,
) -> Result<Tracked, psa_models::Error> {
    let mut tx = pool.begin().await?;
    let tracked = track_in(&mut tx, mgmt, tenant, tag, lifecycle_tags, dry_run).await?;
    if dry_run || matches!(tracked, Tracked::Left(_)) {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok(tracked)
}

/// Tracks a tenant an import just wrote, in the import's transaction, as reconcile would
/// (found by the tenant's id, created when missing). Returns what it has to say: warnings, and
/// why it left the tenant alone if it did.
pub async fn track_imported(
    conn: &mut sqlx::PgConnection,
    settings: &lifecycle::Settings,
    tenant: &tenants::Tenant,
) -> Result<Vec<String>, psa_models::Error> {
    let tracked = track_in(
        conn,
        settings.management_tenant_id,
        tenant,
        &settings.customer_tag,
        &settings.tags,
        false,
    )
    .await?;
    Ok(match tracked {
        Tracked::Created(warnings, _) | Tracked::Already(warnings) => warnings,
        Tracked::Left(left) => vec![format!(
            "the customer record was left alone: the tenant's provisioning run {} is {:?}",
            left.workflow_id, left.reason
        )],
    })
}

async fn track_in(
    tx: &mut sqlx::PgConnection,
    mgmt: TenantId,
    tenant: &tenants::Tenant,
    tag: &psa_models::validate::TagText,
    lifecycle_tags: &lifecycle::LifecycleTags,
    dry_run: bool,
) -> Result<Tracked, psa_models::Error> {
    provisioning::lock_customer_record(&mut *tx, tenant.tenant).await?;
    if let Some(record) = provisioning::latest_for_tenant(&mut *tx, tenant.tenant).await? {
        let reason = match record.status {
            RunStatus::Requested | RunStatus::Running => Some(LeftReason::InFlight),
            _ if record.skip_customer_tracking => Some(LeftReason::Skipped),
            RunStatus::Completed => None,
            _ => Some(LeftReason::Incomplete),
        };
        if let Some(reason) = reason {
            return Ok(Tracked::Left(Left {
                tenant_id: tenant.tenant,
                workflow_id: record.workflow_id,
                reason,
            }));
        }
    }
    let mut created = false;
    // What was missing, for the event.
    let mut repaired: Vec<String> = Vec::new();
    let mut new_company = None;
    let mut warnings = Vec::new();
    let existing = companies::find_by_managed_tenant(&mut *tx, mgmt, tenant.tenant).await?;
    let admin = users::tenant_admin(&mut *tx, tenant.tenant).await?;
    let company_id = match existing {
        Some(c) => c.company_id,
        None => {
            created = true;
            repaired.push("company".into());
            if dry_run {
                // A new company has neither contact nor tag yet: say what else would be made.
                if let Some((_, _, email)) = &admin
                    && psa_models::contacts::find_by_email(
                        &mut *tx,
                        mgmt,
                        &EmailAddress::parse(email)?,
                    )
                    .await?
                    .is_none()
                {
                    repaired.push("contact".into());
                }
                repaired.push("tag".into());
                return Ok(Tracked::Created(warnings, repaired));
            }
            let out = customer_company(
                &mut *tx,
                &CustomerCompanyIn {
                    workflow_id: None,
                    management_tenant_id: mgmt,
                    company_id: CompanyId::new(),
                    tenant_id: tenant.tenant,
                    tenant_name: CompanyName::parse(&tenant.company_name)?,
                },
            )
            .await?;
            warnings.extend(out.warning);
            new_company = Some(out.company_id);
            out.company_id
        }
    };
    if let Some((first, last, email)) = admin {
        let email = EmailAddress::parse(&email)?;
        let has_contact = psa_models::contacts::find_by_email(&mut *tx, mgmt, &email)
            .await?
            .is_some();
        if !has_contact {
            created = true;
            repaired.push("contact".into());
            if !dry_run {
                let full_name = FullName::parse(&format!("{first} {last}"))
                    .or_else(|_| FullName::parse(email.as_str()))?;
                let out = customer_contact(
                    &mut *tx,
                    &CustomerContactIn {
                        workflow_id: None,
                        management_tenant_id: mgmt,
                        tenant_id: tenant.tenant,
                        contact_id: ContactId::new(),
                        company_id,
                        full_name,
                        email,
                    },
                )
                .await?;
                warnings.extend(out.warning);
            }
        }
    } else {
        warnings.push(format!(
            "tenant {} has no active administrator: no customer contact",
            tenant.tenant
        ));
    }
    let tagged = tags::list_for_entity(&mut *tx, mgmt, TaggedType::Company, company_id.0)
        .await?
        .iter()
        .any(|t| t.tag_text == tag.as_str());
    if !tagged {
        created = true;
        repaired.push("tag".into());
        if !dry_run {
            customer_tag(
                &mut *tx,
                mgmt,
                company_id,
                tag,
                None,
                &psa_models::audit::Actor::Platform("reconcile"),
            )
            .await?;
        }
    }
    let settings = lifecycle::Settings {
        management_tenant_id: mgmt,
        customer_tag: tag.clone(),
        tags: lifecycle_tags.clone(),
    };
    // A record added late shows the tenant's state as one that followed every change would.
    if let Some(company) = new_company {
        lifecycle::apply_to_new_record(&mut *tx, &settings, tenant.tenant, company).await?;
    }
    if !dry_run && created {
        provisioning::mark_repaired(&mut *tx, tenant.tenant).await?;
        // From what is known here: reading the tenant's details back would cost reconcile
        // a third of its rate.
        psa_models::db::leave_tenant(&mut *tx).await?;
        events::record(
            &mut *tx,
            EventType::CustomerRepaired,
            Some(tenant.tenant),
            serde_json::json!({
                "tenant_id": tenant.tenant,
                "name": tenant.company_name,
                "created_at": tenant.created_at,
                "customer": {"customer_company_id": company_id, "tracking": "tracked"},
                "repaired": repaired,
            }),
            None,
        )
        .await?;
    }
    Ok(if created {
        Tracked::Created(warnings, repaired)
    } else {
        Tracked::Already(warnings)
    })
}

/// Tenants read at a time.
const RECONCILE_PAGE: i64 = 500;

/// Tenants tracked at once. Each is a chain of short statements, so one connection waits on
/// round trips most of the time; a few in parallel keep the server busy. The caller's pool
/// needs this many connections (and one more for reading pages).
pub const CONCURRENCY: usize = 8;

/// The management tenant of `tracking`, checked to be one.
async fn management(
    pool: &PgPool,
    tracking: &TrackingSettings,
) -> Result<TenantId, psa_models::Error> {
    let mgmt = tracking.management_tenant_id.ok_or_else(|| {
        psa_models::Error::validation("NINEMINDS_TENANT_ID", "NINEMINDS_TENANT_ID is not set")
    })?;
    let mut conn = pool.acquire().await?;
    match tenants::find(&mut conn, mgmt).await? {
        None => {
            return Err(psa_models::Error::validation(
                "NINEMINDS_TENANT_ID",
                format!("NINEMINDS_TENANT_ID={mgmt} names no tenant"),
            ));
        }
        Some(t) if !t.is_management => {
            return Err(psa_models::Error::validation(
                "NINEMINDS_TENANT_ID",
                format!(
                    "NINEMINDS_TENANT_ID={mgmt} names a tenant that is not the management tenant"
                ),
            ));
        }
        Some(_) => {}
    }
    Ok(mgmt)
}

/// Reconciles one tenant (not the management tenant).
pub async fn reconcile_tenant(
    pool: &PgPool,
    tracking: &TrackingSettings,
    lifecycle_tags: &lifecycle::LifecycleTags,
    tenant: TenantId,
    dry_run: bool,
) -> Result<ReconcileReport, psa_models::Error> {
    let mgmt = management(pool, tracking).await?;
    let mut conn = pool.acquire().await?;
    let found = tenants::find(&mut conn, tenant)
        .await?
        .filter(|t| !t.is_management)
        .ok_or_else(|| {
            psa_models::Error::validation("tenant_id", "There is no such customer tenant")
        })?;
    drop(conn);
    let mut report = ReconcileReport {
        tenant_id: Some(tenant),
        dry_run,
        ..Default::default()
    };
    let outcome = track(
        pool,
        mgmt,
        &found,
        &tracking.tag_name,
        lifecycle_tags,
        dry_run,
    )
    .await;
    add(&mut report, &found, outcome);
    Ok(report)
}

/// Adds one tenant's outcome to the report.
fn add(
    report: &mut ReconcileReport,
    tenant: &tenants::Tenant,
    outcome: Result<Tracked, psa_models::Error>,
) {
    match outcome {
        Ok(Tracked::Created(w, what)) => {
            report.created += 1;
            report.warnings.extend(w);
            if report.repairs.len() < REPAIRS_LISTED {
                report.repairs.push(Repair {
                    tenant_id: tenant.tenant,
                    name: tenant.company_name.clone(),
                    what,
                });
            }
        }
        Ok(Tracked::Already(w)) => {
            report.already_tracked += 1;
            report.warnings.extend(w);
        }
        Ok(Tracked::Left(left)) => report.left_alone.push(left),
        Err(e) => {
            tracing::warn!(tenant = %tenant.tenant, error = ?e, "reconcile failed for a tenant");
            report.failed += 1;
            report.failures.push(Failure {
                tenant_id: tenant.tenant,
                error: e.to_string(),
            });
        }
    }
}

/// Reconciles every tenant but the management tenant.
pub async fn reconcile(
    pool: &PgPool,
    tracking: &TrackingSettings,
    lifecycle_tags: &lifecycle::LifecycleTags,
    dry_run: bool,
) -> Result<ReconcileReport, psa_models::Error> {
    reconcile_paged(pool, tracking, lifecycle_tags, dry_run, RECONCILE_PAGE).await
}

/// [`reconcile`], reading `page` tenants at a time.
pub async fn reconcile_paged(
    pool: &PgPool,
    tracking: &TrackingSettings,
    lifecycle_tags: &lifecycle::LifecycleTags,
    dry_run: bool,
    page: i64,
) -> Result<ReconcileReport, psa_models::Error> {
    let mgmt = management(pool, tracking).await?;
    let mut conn = pool.acquire().await?;
    let orphans = companies::orphaned_customers(&mut conn, mgmt).await?;
    drop(conn);
    let mut report = ReconcileReport {
        dry_run,
        orphans: orphans
            .into_iter()
            .map(|(customer_company_id, tenant_id)| Orphan {
                customer_company_id,
                tenant_id,
            })
            .collect(),
        ..Default::default()
    };
    // A page of tenants at a time: memory stays flat however many tenants there are.
    let mut after = None;
    loop {
        let mut conn = pool.acquire().await?;
        let tenants = tenants::list_page(&mut conn, after, page).await?;
        let Some(last) = tenants.last() else { break };
        after = Some(last.tenant);
        // Those already complete are counted from one query; the rest are checked one by one.
        let ids: Vec<TenantId> = tenants.iter().map(|t| t.tenant).collect();
        let complete =
            provisioning::fully_tracked(&mut conn, mgmt, tracking.tag_name.as_str(), &ids).await?;
        drop(conn);
        let others: Vec<&tenants::Tenant> = tenants
            .iter()
            .filter(|t| t.tenant != mgmt && !t.is_management)
            .collect();
        report.already_tracked += others
            .iter()
            .filter(|t| complete.contains(&t.tenant))
            .count();
        // In parallel, reported in the tenants' order (`buffered` keeps it).
        // Owned tenants: a stream of references cannot be held across an await in a future
        // that must be `Send` (the worker's activity).
        let todo: Vec<tenants::Tenant> = others
            .into_iter()
            .filter(|t| !complete.contains(&t.tenant))
            .cloned()
            .collect();
        let tag_name = &tracking.tag_name;
        let outcomes: Vec<_> = futures::stream::iter(todo)
            .map(move |tenant: tenants::Tenant| async move {
                let outcome = track(pool, mgmt, &tenant, tag_name, lifecycle_tags, dry_run).await;
                (tenant, outcome)
            })
            .buffered(CONCURRENCY)
            .collect()
            .await;
        for (tenant, outcome) in outcomes {
            // Two tenants tracked at once can race for one record they share (an admin email
            // that is already a contact): the loser is tried again alone.
            let outcome = match outcome {
                Err(_) => track(pool, mgmt, &tenant, tag_name, lifecycle_tags, dry_run).await,
                ok => ok,
            };
            add(&mut report, &tenant, outcome);
        }
    }
    Ok(report)
}

/// The workflow type's name of a reconcile asked from the API or the console.
pub const WORKFLOW_TYPE: &str = "customer_reconcile";

/// Prefix of a reconcile run's workflow id.
pub const WORKFLOW_ID_PREFIX: &str = "customer-reconcile-";

/// What a reconcile run does: one tenant or all of them, for real or as a preview.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReconcileInput {
    /// `None`: every tenant.
    pub tenant_id: Option<TenantId>,
    pub dry_run: bool,
    /// Who asked (`user:<id>`), for the log.
    pub requested_by: String,
}

/// Reconcile as a worker's activity: the API runs as a role confined to one tenant, while
/// reconcile reads every tenant and writes into the management tenant, which only the worker's
/// owner role may.
pub struct ReconcileActivities {
    pub pool: PgPool,
    pub tracking: TrackingSettings,
    pub tags: lifecycle::LifecycleTags,
}

#[activities]
impl ReconcileActivities {
    #[activity(name = "reconcile_customers")]
    pub async fn reconcile_customers(
        self: Arc<Self>,
        ctx: ActivityContext,
        input: ReconcileInput,
    ) -> Result<ReconcileReport, ActivityError> {
        if !self.tracking.enabled {
            return Err(ActivityError::application(
                ApplicationFailure::builder(
                    "Customer tracking is disabled on the worker (ENABLE_CUSTOMER_TRACKING=false)",
                )
                .type_name("tracking_disabled".to_owned())
                .non_retryable(true)
                .build(),
            ));
        }
        tracing::info!(requested_by = %input.requested_by, tenant = ?input.tenant_id,
            dry_run = input.dry_run, "customer reconcile");
        let report = crate::deletion::heartbeating(&ctx, async {
            match input.tenant_id {
                Some(t) => {
                    reconcile_tenant(&self.pool, &self.tracking, &self.tags, t, input.dry_run).await
                }
                None => reconcile(&self.pool, &self.tracking, &self.tags, input.dry_run).await,
            }
        })
        .await
        .map_err(crate::failure::to_activity_error)?;
        Ok(report)
    }
}

#[workflow]
#[derive(Default)]
pub struct CustomerReconcileWorkflow {
    _state: (),
}

#[workflow_methods]
impl CustomerReconcileWorkflow {
    #[run(name = "customer_reconcile")]
    pub async fn run(
        ctx: &mut WorkflowContext<Self>,
        input: ReconcileInput,
    ) -> WorkflowResult<ReconcileReport> {
        // Idempotent, so an attempt cut off is simply run again; a refusal is not retried.
        let options = temporalio_sdk::ActivityOptions::with_start_to_close_timeout(
            Duration::from_secs(2 * 3600),
        )
        .heartbeat_timeout(Duration::from_secs(20))
        .retry_policy(
            temporalio_common::RetryPolicy::builder()
                .initial_interval(Duration::from_secs(1))
                .backoff_coefficient(2.0)
                .maximum_interval(Duration::from_secs(60))
                .maximum_attempts(5)
                .build(),
        )
        .build();
        Ok(ctx
            .execute_activity(ReconcileActivities::reconcile_customers, input, options)
            .await?)
    }
}

/// Where a reconcile run is.
#[derive(Debug, Clone)]
pub enum ReconcileRun {
    Running,
    Done(ReconcileReport),
    Failed(String),
}

/// Starts and reads reconcile runs.
#[derive(Clone)]
pub struct Reconciles {
    pub client: temporalio_client::Client,
    pub task_queue: String,
}

/// A new reconcile run's workflow id.
pub fn new_workflow_id() -> String {
    format!("{WORKFLOW_ID_PREFIX}{}", uuid::Uuid::now_v7().simple())
}

impl Reconciles {
    /// Starts the run `workflow_id` (from [`new_workflow_id`]).
    pub async fn start(
        &self,
        workflow_id: &str,
        input: ReconcileInput,
    ) -> Result<(), crate::client::ClientError> {
        use temporalio_client::WorkflowStartOptions;
        let options =
            WorkflowStartOptions::new(self.task_queue.clone(), workflow_id.to_owned()).build();
        self.client
            .start_workflow(CustomerReconcileWorkflow::run, input, options)
            .await
            .map_err(|e| crate::client::ClientError::Temporal(e.to_string()))?;
        Ok(())
    }

    /// The run's report once it has one; `NotFound` for an id Temporal does not know.
    pub async fn outcome(
        &self,
        workflow_id: &str,
    ) -> Result<ReconcileRun, crate::client::ClientError> {
        use temporalio_client::WorkflowExecutionStatus;
        use temporalio_client::{WorkflowDescribeOptions, WorkflowGetResultOptions};
        let handle = self
            .client
            .get_workflow_handle::<CustomerReconcileWorkflow>(workflow_id);
        let described = handle
            .describe(WorkflowDescribeOptions::default())
            .await
            .map_err(|e| {
                if e.to_string().to_lowercase().contains("not found") {
                    crate::client::ClientError::NotFound(workflow_id.to_owned())
                } else {
                    crate::client::ClientError::Temporal(e.to_string())
                }
            })?;
        if described.status() == WorkflowExecutionStatus::Running {
            return Ok(ReconcileRun::Running);
        }
        match handle.get_result(WorkflowGetResultOptions::default()).await {
            Ok(report) => Ok(ReconcileRun::Done(report)),
            Err(e) => Ok(ReconcileRun::Failed(e.to_string())),
        }
    }
}
