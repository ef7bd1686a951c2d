//! The tenant's lifecycle, for the management tenant: show and list, suspend, reactivate,
//! cancel, restore, delete now, export and the export's download.
//!
//! Permissions: `tenant:read` to look, `tenant:update` to suspend, reactivate, restore, export
//! and download an export (a tenant's whole data needs the permission that makes it), and
//! `tenant:delete` to cancel and delete.
//!
//! When Temporal is down: the change is recorded (with its audit entry) and the operation
//! succeeds; what Temporal must do follows when it can: the starter tries at once, and the
//! worker's sweeper starts a recorded deletion's workflow and delivers a recorded "delete now"
//! within a minute (docs/operations.md, "When Temporal is down").

use psa_models::audit::{self, Action};
use psa_models::db::{Page, PageRequest};
use psa_models::exports::{self, Export, Purpose};
use psa_models::lifecycle::{self, Change, TenantDetails};
use psa_models::provisioning::{self, TenantListFilter, TenantSummary};
use psa_models::{Error, Result, TenantId};

use psa_models::mail::Kind;

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};
use crate::users::{Invited, LinkDelivery};

const READ: Permission = Permission(Resource::Tenant, Access::Read);
const UPDATE: Permission = Permission(Resource::Tenant, Access::Update);
const DELETE: Permission = Permission(Resource::Tenant, Access::Delete);

/// Asks for a new tenant (`tenant:create`): the request is audited in the management tenant
/// (`create` of a `tenant`, with the name and the idempotency key) and committed first, so no run
/// starts unaudited; then the run is started through the one starter, idempotent by `key`.
/// Returns its workflow id and whether this call started it (`false` for a later call with the
/// same key). `requested_by` is how the run's record names its starter (a door shows the admin's
/// link only to the one who started it there).
pub async fn provision(
    app: &App,
    who: &Principal,
    input: psa_workflows::TenantCreationInput,
    key: Option<&psa_workflows::client::IdempotencyKey>,
    requested_by: &str,
) -> std::result::Result<(String, bool), psa_workflows::client::StartError> {
    let mut input = input;
    let (mut tx, mgmt) = app
        .begin_management(who, Permission(Resource::Tenant, Access::Create))
        .await?;
    // The plan (the default when none is asked for) must be offered, and the licence count fit
    // it: 422 on `plan` or `license_count` now, rather than a run that rolls back.
    psa_models::db::leave_tenant(&mut tx).await?;
    let code = input
        .plan
        .clone()
        .unwrap_or_else(|| app.settings.default_plan.clone());
    let plan = psa_models::plans::offered(&mut tx, &code).await?;
    psa_models::plans::seats_for(&plan, input.license_count.filter(|n| *n > 0)).map_err(
        |e| match e {
            Error::Validation { message, .. } => Error::validation("license_count", message),
            other => other,
        },
    )?;
    input.plan = Some(plan.code);
    psa_models::db::enter_tenant(&mut tx, mgmt).await?;
    // A slug asked for must be free now (422 on `slug`, nothing started); one taken between
    // now and the run's first step fails the run, which rolls back.
    if let Some(slug) = &input.slug {
        psa_models::db::leave_tenant(&mut tx).await?;
        psa_models::tenants::ensure_slug_free(&mut tx, slug).await?;
        psa_models::db::enter_tenant(&mut tx, mgmt).await?;
    }
    audit::record(
        &mut tx,
        mgmt,
        &who.actor(),
        Action::Create,
        "tenant",
        None,
        serde_json::json!({"tenant_name": input.tenant_name.as_str(),
                           "slug": input.slug.as_ref().map(|s| s.as_str()),
                           "plan": input.plan,
                           "idempotency_key": key.map(|k| k.as_str())}),
    )
    .await?;
    // No connection is held while Temporal is called.
    tx.commit().await.map_err(Error::from)?;
    let workflows = app.temporal("Tenant provisioning")?.workflows().await?;
    workflows.start_run(input, key, requested_by).await
}

/// The tenants, oldest first, a page at a time, with status and customer tracking state.
pub async fn list(
    app: &App,
    who: &Principal,
    filter: &TenantListFilter,
    page: &PageRequest,
) -> Result<Page<TenantSummary>> {
    let (mut tx, _) = app.begin_management(who, READ).await?;
    // Across tenants: the tenants table is read outside any tenant's context (the caller is the
    // management tenant's, checked above).
    psa_models::db::leave_tenant(&mut tx).await?;
    let page =
        provisioning::list_tenants(&mut tx, app.settings.customer_tag.as_str(), filter, page)
            .await?;
    tx.rollback().await?;
    Ok(page)
}

/// A tenant: status, reason, pending deletion, customer record.
pub async fn show(app: &App, who: &Principal, tenant: TenantId) -> Result<TenantDetails> {
    let (mut tx, mgmt) = app.begin_management(who, READ).await?;
    let details = lifecycle::show(&mut tx, &app.lifecycle(mgmt), tenant).await?;
    tx.rollback().await?;
    Ok(details)
}

/// A tenant's staff, oldest first, with their status and last sign-in (`tenant:read`).
pub async fn people(
    app: &App,
    who: &Principal,
    tenant: TenantId,
) -> Result<Vec<psa_models::users::UserSummary>> {
    let (mut tx, _) = app.begin_management(who, READ).await?;
    psa_models::db::enter_tenant(&mut tx, tenant).await?;
    psa_models::tenants::get(&mut tx, tenant).await?;
    let list = psa_models::users::list(&mut tx, tenant).await?;
    tx.rollback().await?;
    Ok(list)
}

/// A page of a tenant's timeline, newest first, and where the next (older) page starts.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Timeline {
    pub items: Vec<psa_models::timeline::Entry>,
    /// `before` of the next page; absent on the last.
    pub next_before: Option<chrono::DateTime<chrono::Utc>>,
}

/// A tenant's timeline (`tenant:read`): its events, its audit log and the management tenant's
/// rows about it, newest first, `limit` (1-200, default 50) older than `before`.
pub async fn timeline(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    sources: &[psa_models::timeline::Source],
    before: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<u32>,
) -> Result<Timeline> {
    let limit = i64::from(limit.unwrap_or(50));
    let (mut tx, mgmt) = app.begin_management(who, READ).await?;
    psa_models::db::enter_tenant(&mut tx, tenant).await?;
    psa_models::tenants::get(&mut tx, tenant).await?;
    let items =
        psa_models::timeline::of_tenant(&mut tx, tenant, mgmt, sources, before, limit).await?;
    tx.rollback().await?;
    let next_before = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| e.at))
        .flatten();
    Ok(Timeline { items, next_before })
}

/// A tenant's provisioning runs and exports, newest first (`tenant:read`).
pub async fn history(
    app: &App,
    who: &Principal,
    tenant: TenantId,
) -> Result<(
    Vec<psa_models::timeline::Run>,
    Vec<psa_models::timeline::PastExport>,
)> {
    let (mut tx, _) = app.begin_management(who, READ).await?;
    let runs = psa_models::timeline::runs(&mut tx, tenant).await?;
    let exports = psa_models::timeline::exports(&mut tx, tenant).await?;
    tx.rollback().await?;
    Ok((runs, exports))
}

/// Gives a tenant a new slug (`tenant:update`): the name its people sign in with. Refused when
/// it breaks the rules or another tenant has it (422 on `slug`, nothing written); audited in the
/// management tenant with the old and the new slug. The same slug again changes nothing.
pub async fn set_slug(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    slug: &str,
) -> Result<TenantDetails> {
    let slug = psa_models::validate::Slug::parse(slug)?;
    let (mut tx, mgmt) = app.begin_management(who, UPDATE).await?;
    let current = lifecycle::show(&mut tx, &app.lifecycle(mgmt), tenant).await?;
    if current.slug == slug.as_str() {
        tx.rollback().await?;
        return Ok(current);
    }
    psa_models::db::leave_tenant(&mut tx).await?;
    psa_models::tenants::ensure_slug_free(&mut tx, &slug).await?;
    psa_models::db::enter_tenant(&mut tx, tenant).await?;
    let before = psa_models::tenants::set_slug(&mut tx, tenant, &slug).await?;
    psa_models::db::enter_tenant(&mut tx, mgmt).await?;
    audit::record(
        &mut tx,
        mgmt,
        &who.actor(),
        Action::Update,
        "tenant",
        Some(tenant.0),
        serde_json::json!({"slug": {"before": before, "after": slug.as_str()}}),
    )
    .await?;
    let details = lifecycle::show(&mut tx, &app.lifecycle(mgmt), tenant).await?;
    tx.commit().await?;
    Ok(details)
}

/// Suspends an active tenant: its users are refused until it is reactivated.
pub async fn suspend(app: &App, who: &Principal, tenant: TenantId, reason: &str) -> Result<Change> {
    let (mut tx, mgmt) = app.begin_management(who, UPDATE).await?;
    let change =
        lifecycle::suspend(&mut tx, &app.lifecycle(mgmt), tenant, reason, &who.actor()).await?;
    tx.commit().await?;
    Ok(change)
}

/// Reactivates a suspended tenant.
pub async fn reactivate(app: &App, who: &Principal, tenant: TenantId) -> Result<Change> {
    let (mut tx, mgmt) = app.begin_management(who, UPDATE).await?;
    let change = lifecycle::reactivate(&mut tx, &app.lifecycle(mgmt), tenant, &who.actor()).await?;
    tx.commit().await?;
    Ok(change)
}

/// Cancels a tenant: deleted after `grace` (the settings' default when `None`) unless restored.
/// The deletion is recorded with the cancel; its workflow is started now, or by the worker's
/// sweeper when Temporal cannot be reached.
pub async fn cancel(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    reason: &str,
    grace: Option<chrono::Duration>,
) -> Result<Change> {
    let grace = grace.unwrap_or(app.settings.default_grace);
    lifecycle::grace(grace.num_seconds())?;
    let (mut tx, mgmt) = app.begin_management(who, DELETE).await?;
    let workflow_id = psa_workflows::deletion::new_workflow_id(tenant);
    let change = lifecycle::cancel(
        &mut tx,
        &app.lifecycle(mgmt),
        tenant,
        reason,
        grace,
        &workflow_id,
        uuid::Uuid::now_v7(),
        &who.actor(),
    )
    .await?;
    tx.commit().await?;
    start_deletion(app, &workflow_id).await;
    Ok(change)
}

/// Starts the workflow of a deletion recorded (and committed) by a cancel; when Temporal cannot
/// be reached, the worker's sweeper starts it.
pub(crate) async fn start_deletion(app: &App, workflow_id: &str) {
    let started = match deletions(app).await {
        Ok(d) => d.start(workflow_id).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = started {
        tracing::warn!(workflow_id, error = %e, "deletion workflow not started; the worker's sweeper starts it");
    }
}

/// Restores a canceled tenant before its deletion. The deletion's workflow is told; when it
/// cannot be, it finds the deletion restored at its deadline and ends without deleting.
pub async fn restore(app: &App, who: &Principal, tenant: TenantId) -> Result<Change> {
    let (mut tx, mgmt) = app.begin_management(who, UPDATE).await?;
    let (change, workflow_id) =
        lifecycle::restore(&mut tx, &app.lifecycle(mgmt), tenant, &who.actor()).await?;
    tx.commit().await?;
    if let Ok(d) = deletions(app).await
        && let Err(e) = d.restored(&workflow_id).await
    {
        tracing::info!(workflow_id, error = %e, "deletion workflow not told of the restore; it ends at its deadline without deleting");
    }
    Ok(change)
}

/// A confirmed "delete now".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteNow {
    pub workflow_id: String,
    /// Whether the deletion's workflow was told now; if not, the worker's sweeper tells it.
    pub signalled: bool,
}

/// Deletes a canceled tenant now instead of at the end of its grace period: the confirmation
/// (who, when) and its audit entry are committed first, then the deletion's workflow is told.
pub async fn delete_now(app: &App, who: &Principal, tenant: TenantId) -> Result<DeleteNow> {
    let (mut tx, mgmt) = app.begin_management(who, DELETE).await?;
    let actor = who.actor();
    let pending = lifecycle::confirm_deletion(&mut tx, mgmt, tenant, &actor).await?;
    tx.commit().await?;
    let signalled = match deletions(app).await {
        Ok(d) => match d.start(&pending.workflow_id).await {
            Ok(()) => d.confirm(&pending.workflow_id, &actor.to_string()).await,
            Err(e) => Err(e),
        }
        .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &signalled {
        tracing::warn!(workflow_id = pending.workflow_id, error = %e, "deletion confirmed but its workflow not told; the worker's sweeper tells it");
    }
    Ok(DeleteNow {
        workflow_id: pending.workflow_id,
        signalled: signalled.is_ok(),
    })
}

/// Exports a tenant's data into the export store, audited; answers when the export is done (or
/// failed), with its record. With `encrypt_to` (a move's export) the archive carries every
/// column, credentials included, and is encrypted to that key alone.
pub async fn export(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    encrypt_to: Option<&exports::Recipient>,
) -> Result<Export> {
    let store = app.export_store()?;
    store.can_write()?;
    // Credentials leave only with the permission that brings a tenant in, and never the
    // management tenant's (the platform's own staff).
    let permission = match encrypt_to {
        None => UPDATE,
        Some(_) => Permission(Resource::Tenant, Access::Create),
    };
    let sealer = match encrypt_to {
        None => None,
        Some(_) => Some(app.webhooks.key.as_ref().ok_or_else(|| {
            Error::unavailable(
                "This server has no PSA_SECRET_KEY: the credentials it seals cannot be exported",
            )
        })? as &dyn exports::Sealer),
    };
    let (mut tx, mgmt) = app.begin_management(who, permission).await?;
    let shown = lifecycle::show(&mut tx, &app.lifecycle(mgmt), tenant).await?;
    if encrypt_to.is_some() && shown.is_management {
        return Err(Error::InvalidState {
            code: "management_tenant",
            message: "The management tenant's credentials are the platform's: they are never \
                      exported"
                .into(),
        });
    }
    let export_id = uuid::Uuid::now_v7();
    let actor = who.actor();
    audit::record(
        &mut tx,
        mgmt,
        &actor,
        Action::Export,
        "tenant",
        Some(tenant.0),
        serde_json::json!({"export_id": export_id, "credentials": encrypt_to.is_some()}),
    )
    .await?;
    tx.commit().await?;
    exports::begin(
        &app.pool,
        export_id,
        tenant,
        Purpose::Request,
        &actor.to_string(),
        encrypt_to,
    )
    .await?;
    exports::run_sealed(&app.pool, store, export_id, sealer).await
}

/// An export's record (`tenant:read`).
pub async fn get_export(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    export_id: uuid::Uuid,
) -> Result<Export> {
    let (tx, _) = app.begin_management(who, READ).await?;
    tx.rollback().await?;
    find_export(app, tenant, export_id).await
}

async fn find_export(app: &App, tenant: TenantId, export_id: uuid::Uuid) -> Result<Export> {
    let mut conn = app.pool.acquire().await?;
    let found = exports::get(&mut conn, export_id).await?;
    if found.tenant_id != tenant {
        return Err(Error::NotFound { entity: "Export" });
    }
    Ok(found)
}

/// A completed export, to download its archive (`tenant:update`, as making it): audited in the
/// management tenant. Returns the record and the archive's key in the store.
pub async fn download_export(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    export_id: uuid::Uuid,
) -> Result<(Export, String)> {
    let store = app.export_store()?;
    let (mut tx, mgmt) = app.begin_management(who, UPDATE).await?;
    let found = find_export(app, tenant, export_id).await?;
    let Some(key) = found
        .location
        .clone()
        .filter(|_| found.status == "completed")
    else {
        return Err(Error::conflict(None, "The export has not completed"));
    };
    // Only a download that can happen is recorded as one.
    store.can_read(&key)?;
    audit::record(
        &mut tx,
        mgmt,
        &who.actor(),
        Action::DownloadExport,
        "tenant",
        Some(tenant.0),
        serde_json::json!({"export_id": export_id}),
    )
    .await?;
    tx.commit().await?;
    Ok((found, key))
}

/// Sends a tenant's first administrator a new invitation (the welcome email failed, or its link
/// expired); the earlier link stops working. `tenant:create` in the management tenant (who may
/// create a tenant may invite its first administrator); audited in both tenants.
pub async fn resend_admin_invite(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    how: LinkDelivery,
) -> Result<Invited> {
    let (mut mgmt_tx, mgmt) = app
        .begin_management(who, Permission(Resource::Tenant, Access::Create))
        .await?;
    crate::users::refuse_without_mail(app, how)?;
    // The tenant's own data, confined to it, in a transaction of its own.
    let mut tx = psa_models::db::begin_tenant(&app.pool, tenant).await?;
    psa_models::tenants::get(&mut tx, tenant).await?;
    let admin = psa_models::users::first_admin(&mut tx, tenant)
        .await?
        .ok_or_else(|| Error::conflict(None, "The tenant has no active administrator to invite"))?;
    let actor = who.actor();
    let invitation = psa_models::invitations::reissue(
        &mut tx,
        tenant,
        admin.user_id,
        &app.delivery,
        &actor.to_string(),
    )
    .await?;
    // In the tenant (its admin got a new link) and in the management tenant (who did it).
    let details = serde_json::json!({"tenant_id": tenant, "user_id": admin.user_id});
    audit::record(
        &mut tx,
        tenant,
        &actor,
        Action::ResendInvite,
        "user",
        Some(admin.user_id.0),
        details.clone(),
    )
    .await?;
    audit::record(
        &mut mgmt_tx,
        mgmt,
        &actor,
        Action::ResendInvite,
        "tenant",
        Some(tenant.0),
        details,
    )
    .await?;
    // Mailed, then both committed: a link whose mail fails is not kept, and nothing is recorded
    // of an invitation that was not sent.
    // Its failed welcome email no longer needs attention (on the platform's record of the run).
    psa_models::db::leave_tenant(&mut mgmt_tx).await?;
    psa_models::provisioning::welcome_resent(&mut mgmt_tx, tenant).await?;
    let invited =
        crate::users::deliver_and_commit(app, tx, tenant, invitation, Kind::Welcome).await?;
    mgmt_tx.commit().await?;
    Ok(invited)
}

async fn deletions(app: &App) -> Result<psa_workflows::deletion::Deletions> {
    app.temporal("Tenant lifecycle")?.deletions().await
}
