//! Repairs of customer records (reconcile): `tenant:update` in the management tenant, audited
//! there (`repair`, or `preview_repair` for a dry run) before anything runs.

use psa_models::audit::{self, Action};
use psa_models::{Error, Result, TenantId};
use psa_workflows::reconcile::{ReconcileInput, ReconcileReport};

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

const REPAIR: Permission = Permission(Resource::Tenant, Access::Update);

fn action(dry_run: bool) -> Action {
    if dry_run {
        Action::PreviewRepair
    } else {
        Action::Repair
    }
}

/// Starts a repair on the worker (the API and the console: their role may not write into
/// every tenant): for one customer tenant that exists, or all. Returns the run's id; a repair
/// that cannot be started is audited and answered `Unavailable`.
pub async fn start_repair(
    app: &App,
    who: &Principal,
    tenant: Option<TenantId>,
    dry_run: bool,
) -> Result<String> {
    // The permission first (a caller without it learns nothing), then Temporal (it may connect
    // now: no transaction is held while it does), then the audited transaction.
    app.begin_management(who, REPAIR)
        .await?
        .0
        .rollback()
        .await?;
    let reconciles = app.temporal("Customer repair")?.reconciles().await?;
    let (mut tx, mgmt) = app.begin_management(who, REPAIR).await?;
    if let Some(t) = tenant {
        if t == mgmt {
            return Err(Error::validation(
                "tenant_id",
                "The management tenant is not a customer",
            ));
        }
        psa_models::lifecycle::show(&mut tx, &app.lifecycle(mgmt), t).await?;
    }
    let workflow_id = psa_workflows::reconcile::new_workflow_id();
    let actor = who.actor();
    audit::record(
        &mut tx,
        mgmt,
        &actor,
        action(dry_run),
        "customers",
        tenant.map(|t| t.0),
        serde_json::json!({"workflow_id": workflow_id, "dry_run": dry_run}),
    )
    .await?;
    // Recorded first: a repair never runs unaudited.
    tx.commit().await?;
    reconciles
        .start(
            &workflow_id,
            ReconcileInput {
                tenant_id: tenant,
                dry_run,
                requested_by: actor.to_string(),
            },
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "cannot start a customer reconcile");
            Error::unavailable("The repair service is temporarily unavailable")
        })?;
    Ok(workflow_id)
}

/// Repairs every tenant's customer record in this process (`psa customers reconcile`: the
/// operator's role may write everywhere), audited first.
pub async fn reconcile(app: &App, who: &Principal, dry_run: bool) -> Result<ReconcileReport> {
    let (mut tx, mgmt) = app.begin_management(who, REPAIR).await?;
    audit::record(
        &mut tx,
        mgmt,
        &who.actor(),
        action(dry_run),
        "customers",
        None,
        serde_json::json!({"in_process": true, "dry_run": dry_run}),
    )
    .await?;
    tx.commit().await?;
    let tracking = psa_workflows::TrackingSettings {
        management_tenant_id: Some(mgmt),
        ..app.settings.tracking()
    };
    psa_workflows::reconcile::reconcile(&app.pool, &tracking, &app.settings.lifecycle_tags, dry_run)
        .await
}
