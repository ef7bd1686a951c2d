//! The sweeper of cut-off runs.
//!
//! The rule: a provisioning run is either finished by its own workflow (completed, or rolled
//! back by its compensations) or rolled back by the sweeper. The workflow has no execution
//! timeout (business logic does not time out; its retries are bounded step by step), but an
//! operator can terminate a run (`temporal workflow terminate`), or a namespace can impose a
//! timeout. Such a run ends without its compensations: it leaves a half-built tenant whose admin
//! never learned their credentials. The sweeper finds runs that the database records as
//! `running` while Temporal says they are closed (or no longer knows them), and rolls back what
//! they built, named by the ids the run recorded: its customer tag mapping, the contact it linked
//! (unlinked), its customer contact and company, then the tenant with everything it owns. The
//! record becomes `cut_off`, an audit row and the `psa_tenant_provisioning_cut_off_total` metric
//! say so (alert `PsaProvisioningRunCutOff`).
//!
//! A run that Temporal reports completed but whose record was not finished (its last activity
//! failed) is finished from its result instead.
//!
//! Safe to run from several workers at once: each record is taken `FOR UPDATE SKIP LOCKED`, and
//! the run's own building steps hold a share lock on it while they write (`ensure_running`), so a
//! step still in flight either commits before the sweep (and is rolled back by it) or sees the
//! run cut off and writes nothing.

use std::time::Duration;

use psa_models::provisioning::{self, Record, RunStatus};
use psa_models::{CompanyId, ContactId, MappingId, TenantId};
use serde::Serialize;
use temporalio_client::WorkflowExecutionStatus;

use crate::activities::undo;
use crate::client::{ClientError, TenantWorkflows};

/// How long a run must have been started before the sweeper looks at it: a run that has just
/// been started may not be visible in Temporal yet.
pub const MIN_AGE: Duration = Duration::from_secs(30);

const ACTOR: &psa_models::audit::Actor = &psa_models::audit::Actor::Platform("sweeper");

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct SweepReport {
    /// Runs looked at (recorded as running).
    pub checked: usize,
    /// Runs rolled back because they were cut off.
    pub cut_off: Vec<CutOff>,
    /// Runs whose record was finished from their result.
    pub finished: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CutOff {
    pub workflow_id: String,
    pub tenant_id: Option<uuid::Uuid>,
    /// What Temporal says of the run (`Terminated`, `TimedOut`, ... or `NotFound`).
    pub temporal_status: String,
}

/// One pass over the runs recorded as running.
pub async fn sweep(
    workflows: &TenantWorkflows,
    min_age: Duration,
) -> Result<SweepReport, ClientError> {
    let mut conn = workflows
        .pool
        .acquire()
        .await
        .map_err(psa_models::Error::from)?;
    let candidates = provisioning::running_since(&mut conn, min_age, 500).await?;
    drop(conn);
    let mut report = SweepReport {
        checked: candidates.len(),
        ..Default::default()
    };
    for record in candidates {
        let status = workflows
            .describe(&record.workflow_id)
            .await?
            .map(|(status, _)| status);
        let outcome = match status {
            Some(WorkflowExecutionStatus::Running) => continue,
            Some(WorkflowExecutionStatus::Completed) => {
                let result = workflows.result(&record.workflow_id).await?;
                let mut tx = workflows
                    .pool
                    .begin()
                    .await
                    .map_err(psa_models::Error::from)?;
                provisioning::finish(
                    &mut tx,
                    &record.workflow_id,
                    result.status.into(),
                    result.customer_tracking.status,
                    result.error.as_ref().map(|e| e.message.as_str()),
                )
                .await?;
                if result.welcome_email.status != crate::WelcomeStatus::Pending {
                    provisioning::record_welcome(
                        &mut tx,
                        &record.workflow_id,
                        result.welcome_email.status.as_str(),
                    )
                    .await?;
                }
                tx.commit().await.map_err(psa_models::Error::from)?;
                report.finished.push(record.workflow_id.clone());
                continue;
            }
            other => {
                let temporal_status =
                    other.map_or_else(|| "NotFound".to_owned(), |s| format!("{s:?}"));
                roll_back(workflows, &record, &temporal_status).await
            }
        };
        match outcome {
            Ok(Some(cut)) => {
                tracing::warn!(
                    workflow_id = %cut.workflow_id,
                    tenant = ?cut.tenant_id,
                    temporal_status = %cut.temporal_status,
                    "provisioning run was cut off; rolled back what it built"
                );
                metrics::counter!("psa_tenant_provisioning_cut_off_total").increment(1);
                report.cut_off.push(cut);
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(workflow_id = %record.workflow_id, error = %e, "cannot roll back a cut-off run");
                report.errors.push(format!("{}: {e}", record.workflow_id));
            }
        }
    }
    Ok(report)
}

/// Rolls back what a cut-off run built, in one transaction; `None` if another sweeper has it or
/// it is no longer running.
async fn roll_back(
    workflows: &TenantWorkflows,
    record: &Record,
    temporal_status: &str,
) -> Result<Option<CutOff>, psa_models::Error> {
    let mut tx = workflows.pool.begin().await?;
    let Some(r) = provisioning::lock_running(&mut tx, &record.workflow_id).await? else {
        return Ok(None);
    };
    if let Some(mgmt) = r.management_tenant_id.map(TenantId) {
        if let Some(mapping) = r.customer_tag_mapping_id {
            undo::remove_customer_tag(&mut tx, mgmt, MappingId(mapping), ACTOR).await?;
        }
        if let Some(company) = r.customer_company_id {
            undo::unlink_customer_contact(&mut tx, mgmt, &r.workflow_id, CompanyId(company), ACTOR)
                .await?;
        }
        if let Some(contact) = r.customer_contact_id {
            undo::remove_customer_contact(&mut tx, mgmt, ContactId(contact), ACTOR).await?;
        }
        if let Some(company) = r.customer_company_id {
            undo::remove_customer_company(&mut tx, mgmt, CompanyId(company), ACTOR).await?;
        }
    }
    if let Some(tenant) = r.tenant_id {
        undo::rollback_tenant(&mut tx, TenantId(tenant)).await?;
    }
    use provisioning::TrackingState;
    let tracking = match r.customer_tracking {
        TrackingState::Skipped | TrackingState::Disabled => r.customer_tracking,
        _ => TrackingState::RolledBack,
    };
    if let Some(mgmt) = psa_models::tenants::find_management(&mut tx)
        .await?
        .map(|t| t.tenant)
    {
        psa_models::audit::record(
            &mut tx,
            mgmt,
            ACTOR,
            psa_models::audit::Action::CutOff,
            "provisioning_run",
            Some(r.tenant_id.unwrap_or_default()),
            serde_json::json!({"workflow_id": r.workflow_id, "temporal_status": temporal_status}),
        )
        .await?;
    }
    provisioning::finish(
        &mut tx,
        &r.workflow_id,
        RunStatus::CutOff,
        tracking,
        Some(&format!(
            "the run ended without finishing (Temporal: {temporal_status}); the sweeper rolled back what it had built"
        )),
    )
    .await?;
    tx.commit().await?;
    Ok(Some(CutOff {
        workflow_id: r.workflow_id,
        tenant_id: r.tenant_id,
        temporal_status: temporal_status.to_owned(),
    }))
}
