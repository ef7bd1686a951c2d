//! Plans and subscriptions, for the management tenant's business staff: the plans offered
//! (`plan:read`, `plan:manage`), and each tenant's plan and seats (`tenant:read`,
//! `tenant:update`). Every change is audited; a tenant's is audited in both tenants and told as
//! the event `tenant.plan_changed`.

use psa_models::deadlines::{self, Watch};
use psa_models::events::{self, EventType};
use psa_models::plans::{self, NewPlan, Plan, PlanPatch, Subscription, SubscriptionStatus};
use psa_models::{Error, Result, TenantId, db};

use crate::access::{Access, Permission, Resource};
use crate::{App, Principal};
use psa_models::audit::{self, Action};

const READ: Permission = Permission(Resource::Plan, Access::Read);
const MANAGE: Permission = Permission(Resource::Plan, Access::Manage);
const TENANT_UPDATE: Permission = Permission(Resource::Tenant, Access::Update);

/// The plans, offered ones first.
pub async fn list(app: &App, who: &Principal) -> Result<Vec<Plan>> {
    let (mut tx, _) = app.begin_management(who, READ).await?;
    db::leave_tenant(&mut tx).await?;
    let out = plans::list(&mut tx).await?;
    tx.rollback().await?;
    Ok(out)
}

/// Makes a plan (audited in the management tenant).
pub async fn create(app: &App, who: &Principal, input: &NewPlan) -> Result<Plan> {
    let (mut tx, mgmt) = app.begin_management(who, MANAGE).await?;
    db::leave_tenant(&mut tx).await?;
    let plan = plans::create(&mut tx, input).await?;
    db::enter_tenant(&mut tx, mgmt).await?;
    audit::record(
        &mut tx,
        mgmt,
        &who.actor(),
        Action::Create,
        "plan",
        None,
        serde_json::to_value(&plan).map_err(Error::internal)?,
    )
    .await?;
    tx.commit().await?;
    Ok(plan)
}

/// Changes a plan (`active: false` retires it); audited with what it was.
pub async fn update(app: &App, who: &Principal, code: &str, patch: &PlanPatch) -> Result<Plan> {
    let (mut tx, mgmt) = app.begin_management(who, MANAGE).await?;
    // New tenants that name no plan get the default one: it stays offered.
    if patch.active == Some(false) && code.trim().eq_ignore_ascii_case(&app.settings.default_plan) {
        return Err(Error::validation(
            "active",
            format!(
                "{} is the plan of new tenants that name none (PSA_DEFAULT_PLAN): choose another \
                 default before retiring it",
                app.settings.default_plan
            ),
        ));
    }
    db::leave_tenant(&mut tx).await?;
    let (before, after) = plans::update(&mut tx, code, patch).await?;
    db::enter_tenant(&mut tx, mgmt).await?;
    audit::record(
        &mut tx,
        mgmt,
        &who.actor(),
        Action::Update,
        "plan",
        None,
        serde_json::json!({"code": after.code, "before": before, "after": after}),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// The caller's own tenant's subscription, for those who manage its users (`user:read`): how
/// many seats are in use and allowed.
pub async fn own_subscription(
    app: &App,
    who: &Principal,
    tenant: TenantId,
) -> Result<Option<Subscription>> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Read))
        .await?;
    let out = plans::subscription(&mut tx, tenant).await?;
    tx.rollback().await?;
    Ok(out)
}

/// Puts a tenant on a plan with some seats (management callers with `tenant:update`): audited
/// in the management tenant and in the tenant, and told as `tenant.plan_changed`.
pub async fn set_plan(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    plan: &str,
    seats: Option<i32>,
) -> Result<Subscription> {
    let (mut tx, mgmt) = app.begin_management(who, TENANT_UPDATE).await?;
    if tenant == mgmt {
        return Err(Error::InvalidState {
            code: "management_tenant",
            message: "The management tenant has no plan".into(),
        });
    }
    // Not found when the tenant does not exist (or is another tenant's, for a member).
    psa_models::lifecycle::show(&mut tx, &app.lifecycle(mgmt), tenant).await?;
    // The tenant first, then its subscription: the order of every change of both.
    deadlines::hold(&mut tx, tenant).await?;
    let current = plans::subscription(&mut tx, tenant).await?;
    db::leave_tenant(&mut tx).await?;
    let plan = plans::choosable(&mut tx, plan, current.as_ref().map(|c| c.plan.as_str())).await?;
    db::enter_tenant(&mut tx, tenant).await?;
    // A tenant left without a subscription (made before plans by a run that named none) gets
    // one now.
    let (before, after) = match current {
        Some(_) => {
            let (b, a) = plans::set_plan(&mut tx, tenant, &plan, seats).await?;
            (Some(b), a)
        }
        None => (None, plans::subscribe(&mut tx, tenant, &plan, seats).await?),
    };
    if let Some(b) = &before
        && (&b.plan, b.seats, b.status) == (&after.plan, after.seats, after.status)
    {
        tx.rollback().await?;
        return Ok(after);
    }
    let change = serde_json::json!({
        "plan": {"before": before.as_ref().map(|b| &b.plan), "after": after.plan},
        "seats": {"before": before.as_ref().and_then(|b| b.seats), "after": after.seats},
        "status": {"before": before.as_ref().map(|b| b.status), "after": after.status},
    });
    plans::audit_change(&mut tx, tenant, mgmt, &who.actor(), Action::Update, change).await?;
    events::record(
        &mut tx,
        EventType::TenantPlanChanged,
        Some(tenant),
        serde_json::json!({
            "tenant": tenant,
            "plan_before": before.as_ref().map(|b| &b.plan),
            "plan": after.plan,
            "seats_before": before.as_ref().and_then(|b| b.seats),
            "seats": after.seats,
            "seats_allowed": after.seats_allowed,
            "status": after.status,
        }),
        None,
    )
    .await?;
    // A trial converted: a suspension for its end is lifted, and its watcher ends.
    deadlines::lift(&mut tx, &app.lifecycle(mgmt), tenant, &who.actor()).await?;
    tx.commit().await?;
    if before.as_ref().map(|b| b.status) == Some(SubscriptionStatus::Trialing)
        && after.status != SubscriptionStatus::Trialing
    {
        wake(app, tenant, Watch::Trial).await;
    }
    Ok(after)
}

/// A trial extended.
#[derive(Debug, Clone)]
pub struct TrialExtended {
    pub subscription: Subscription,
    /// The tenant was suspended because its trial had ended, and is active again.
    pub reactivated: bool,
}

/// Extends a tenant's trial by `by` (from its end, or from now when it has ended), for
/// management callers with `tenant:update`: audited in both tenants, the event
/// `tenant.trial_extended`; a suspension for the trial's end is lifted; the trial's watcher is
/// woken to keep the new end.
pub async fn extend_trial(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    by: chrono::Duration,
) -> Result<TrialExtended> {
    let (mut tx, mgmt) = app.begin_management(who, TENANT_UPDATE).await?;
    if tenant == mgmt {
        return Err(Error::InvalidState {
            code: "management_tenant",
            message: "The management tenant has no trial".into(),
        });
    }
    psa_models::lifecycle::show(&mut tx, &app.lifecycle(mgmt), tenant).await?;
    deadlines::hold(&mut tx, tenant).await?;
    let (before, after) = deadlines::extend_trial(&mut tx, tenant, by).await?;
    let change = serde_json::json!({
        "trial_ends_at": {"before": before.trial_ends_at, "after": after.trial_ends_at},
        "extended_by_seconds": by.num_seconds(),
    });
    plans::audit_change(
        &mut tx,
        tenant,
        mgmt,
        &who.actor(),
        Action::ExtendTrial,
        change,
    )
    .await?;
    events::record(
        &mut tx,
        EventType::TenantTrialExtended,
        Some(tenant),
        serde_json::json!({
            "tenant": tenant,
            "trial_ends_at_before": before.trial_ends_at,
            "trial_ends_at": after.trial_ends_at,
            "extended_by_seconds": by.num_seconds(),
        }),
        None,
    )
    .await?;
    let reactivated = deadlines::lift(&mut tx, &app.lifecycle(mgmt), tenant, &who.actor())
        .await?
        .is_some();
    tx.commit().await?;
    wake(app, tenant, Watch::Trial).await;
    Ok(TrialExtended {
        subscription: after,
        reactivated,
    })
}

/// Starts or wakes the tenant's watcher of `watch` after a change to its deadline; when
/// Temporal cannot be reached, the worker's sweep starts it.
pub(crate) async fn wake(app: &App, tenant: TenantId, watch: Watch) {
    let woken = match app.temporal("Subscription deadlines") {
        Ok(t) => match t.watchers().await {
            Ok(w) => w.ensure(tenant, watch).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = woken {
        tracing::warn!(tenant = %tenant, watch = ?watch, error = %e,
            "deadline watcher not woken; the worker's sweep starts it");
    }
}
