//! The tenant's lifecycle: `active`, `suspended`, `canceled` (pending deletion); deletion removes
//! the tenant. Every change locks the tenant's row, checks the transition, changes the tenant and
//! makes its customer record in the management tenant follow, in the caller's transaction, with
//! an audit row in both tenants.
//!
//! The transaction switches between the tenant's context and the management tenant's
//! ([`db::enter_tenant`]), so the API's confined role can run it as the CLI's owner role does;
//! platform tables (provisioning records, deletions) are written outside any tenant context.
//!
//! | from | to | by |
//! |---|---|---|
//! | active | suspended | [`suspend`] |
//! | suspended | active | [`reactivate`] |
//! | active, suspended | canceled | [`cancel`] (a deletion starts: see `tenant_deletions`) |
//! | canceled | where the cancel found it | [`restore`], before the deletion ran |
//! | canceled | (gone) | [`delete`], at the deadline or when confirmed |
//!
//! The management tenant never leaves `active`, and nothing changes a tenant whose provisioning
//! run is still in flight.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{Action, Actor};
use crate::events::{self, EventType};
use crate::provisioning::{self, RunStatus};
use crate::tags::{self, NewTag, TaggedType};
use crate::validate::TagText;
use crate::{CompanyId, Error, Result, TenantId, audit, companies, db};

pub use crate::tenants::TenantStatus;

/// The tags that show a customer company's tenant is suspended or canceled (configured with
/// the other customer tracking settings).
#[derive(Clone, Debug, PartialEq)]
pub struct LifecycleTags {
    /// `CUSTOMER_SUSPENDED_TAG_NAME`, default "Suspended".
    pub suspended: TagText,
    /// `CUSTOMER_CANCELED_TAG_NAME`, default "Canceled".
    pub canceled: TagText,
}

impl Default for LifecycleTags {
    fn default() -> Self {
        Self {
            suspended: TagText::parse("Suspended").expect("a valid tag"),
            canceled: TagText::parse("Canceled").expect("a valid tag"),
        }
    }
}

/// Where the customer records live and the tags that show a customer's state.
#[derive(Clone, Debug)]
pub struct Settings {
    pub management_tenant_id: TenantId,
    /// The customer tag (`CUSTOMER_TAG_NAME`): tells `tracked` from `partial`.
    pub customer_tag: TagText,
    pub tags: LifecycleTags,
}

/// A reason given for a change: 1 to 500 characters, trimmed.
pub fn reason(raw: &str) -> Result<String> {
    let r = raw.trim();
    if r.is_empty() {
        return Err(Error::validation("reason", "A reason is required"));
    }
    if r.chars().count() > 500 {
        return Err(Error::validation(
            "reason",
            "The reason must be at most 500 characters",
        ));
    }
    Ok(r.to_owned())
}

/// The grace period of a cancel: from 1 second to 365 days.
pub fn grace(seconds: i64) -> Result<chrono::Duration> {
    if !(1..=365 * 86_400).contains(&seconds) {
        return Err(Error::validation(
            "grace",
            "The grace period must be between 1 second and 365 days",
        ));
    }
    Ok(chrono::Duration::seconds(seconds))
}

/// A tenant's customer record in the management tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomerRecord {
    pub customer_company_id: Option<Uuid>,
    /// `tracked` (company and customer tag), `partial` (company without the tag), `untracked`.
    pub tracking: String,
    pub is_inactive: Option<bool>,
}

/// A pending deletion.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingDeletion {
    pub workflow_id: String,
    pub requested_at: DateTime<Utc>,
    pub delete_after: DateTime<Utc>,
}

/// What `psa tenant show` and `GET /api/v1/tenants/{id}` tell of a tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantDetails {
    pub tenant_id: TenantId,
    pub name: String,
    /// The short name its people sign in with (`/console/sign-in?org=SLUG`).
    pub slug: String,
    pub status: TenantStatus,
    pub status_reason: Option<String>,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub deletion: Option<PendingDeletion>,
    pub customer: CustomerRecord,
    /// Its plan and seats (the management tenant has none).
    pub subscription: Option<crate::plans::Subscription>,
    /// The management tenant: no lifecycle, plan or support session applies to it.
    pub is_management: bool,
    /// Whether it lets the platform's support staff in (`allowed`, `disabled`): its
    /// administrators decide.
    pub support_access: String,
}

/// The outcome of a change: the tenant as it is now, where it came from, and whether its
/// customer record followed (`updated`) or there is none (`absent`: reconcile may add it later,
/// with the state the tenant is in then).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Change {
    pub tenant: TenantDetails,
    pub status_before: TenantStatus,
    /// `updated` or `absent`.
    pub customer_record: String,
}

#[derive(sqlx::FromRow)]
struct Row {
    company_name: String,
    slug: String,
    is_management: bool,
    support_access: String,
    status: TenantStatus,
    status_reason: Option<String>,
    status_changed_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
}

async fn row(conn: &mut PgConnection, tenant: TenantId, lock: bool) -> Result<Row> {
    db::enter_tenant(conn, tenant).await?;
    let sql = if lock {
        "SELECT company_name, slug, is_management, support_access, status, status_reason, \
                status_changed_at, created_at \
         FROM tenants WHERE tenant = $1 FOR NO KEY UPDATE"
    } else {
        "SELECT company_name, slug, is_management, support_access, status, status_reason, \
                status_changed_at, created_at \
         FROM tenants WHERE tenant = $1"
    };
    sqlx::query_as::<_, Row>(sql)
        .bind(tenant)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound { entity: "tenant" })
}

fn refused(code: &'static str, message: impl Into<Cow<'static, str>>) -> Error {
    Error::InvalidState {
        code,
        message: message.into(),
    }
}

/// Locks the tenant and checks that `verb` may change it: not the management tenant, not while
/// its provisioning run is in flight, and from one of `from`.
async fn lock_for(
    conn: &mut PgConnection,
    tenant: TenantId,
    verb: &str,
    from: &[TenantStatus],
) -> Result<Row> {
    let current = row(conn, tenant, true).await?;
    if current.is_management {
        return Err(refused(
            "management_tenant",
            format!("The management tenant can never be {verb}"),
        ));
    }
    db::leave_tenant(conn).await?;
    if let Some(run) = provisioning::latest_for_tenant(conn, tenant).await?
        && matches!(run.status, RunStatus::Requested | RunStatus::Running)
    {
        return Err(refused(
            "provisioning_in_flight",
            format!(
                "The tenant's provisioning run {} is still in flight: wait for it to end",
                run.workflow_id
            ),
        ));
    }
    if !from.contains(&current.status) {
        return Err(refused(
            "tenant_state",
            format!(
                "The tenant is {}: only a tenant that is {} can be {verb}",
                current.status,
                from.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    Ok(current)
}

async fn set_status(
    conn: &mut PgConnection,
    tenant: TenantId,
    status: TenantStatus,
    reason: Option<&str>,
) -> Result<()> {
    db::enter_tenant(conn, tenant).await?;
    sqlx::query(
        "UPDATE tenants SET status = $2, status_reason = $3, status_changed_at = now() \
         WHERE tenant = $1",
    )
    .bind(tenant)
    .bind(status)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    // A tenant that is not active has no support session into it (its tokens are refused
    // already; this records the end, so that reactivating does not bring one back).
    if status != TenantStatus::Active {
        crate::support::end_all_of_tenant(
            conn,
            tenant,
            crate::support::EndReason::TenantSuspended,
            "platform:lifecycle",
        )
        .await?;
    }
    Ok(())
}

/// The customer company of `tenant`, in the management tenant's context.
async fn customer_company(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
) -> Result<Option<companies::Company>> {
    db::enter_tenant(conn, settings.management_tenant_id).await?;
    companies::find_by_managed_tenant(conn, settings.management_tenant_id, tenant).await
}

async fn tag(
    conn: &mut PgConnection,
    mgmt: TenantId,
    company: CompanyId,
    text: &TagText,
) -> Result<()> {
    tags::attach(
        conn,
        mgmt,
        NewTag {
            tag_text: text.as_str().to_owned(),
            tagged_id: company.0,
            tagged_type: TaggedType::Company,
            background_color: None,
            text_color: None,
        },
        tags::AttachOptions::default(),
    )
    .await?;
    Ok(())
}

async fn untag(
    conn: &mut PgConnection,
    mgmt: TenantId,
    company: CompanyId,
    text: &TagText,
) -> Result<()> {
    sqlx::query(
        "DELETE FROM tag_mappings m USING tag_definitions d \
         WHERE m.tenant = $1 AND m.tagged_id = $2 AND m.tagged_type = 'company' \
           AND d.tenant = m.tenant AND d.tag_id = m.tag_id AND d.tag_text = $3",
    )
    .bind(mgmt)
    .bind(company)
    .bind(text.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Makes active again the management tenant's contacts a cancel made inactive.
async fn reactivate_contacts(
    conn: &mut PgConnection,
    mgmt: TenantId,
    contacts: &[Uuid],
) -> Result<()> {
    sqlx::query(
        "UPDATE contacts SET is_inactive = false, updated_at = now() \
         WHERE tenant = $1 AND contact_name_id = ANY ($2)",
    )
    .bind(mgmt)
    .bind(contacts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Merges `patch` into the company's properties and sets its `is_inactive` when given.
async fn mark_company(
    conn: &mut PgConnection,
    mgmt: TenantId,
    company: CompanyId,
    patch: serde_json::Value,
    inactive: Option<bool>,
) -> Result<()> {
    db::as_platform(conn).await?;
    sqlx::query(
        "UPDATE companies SET properties = coalesce(properties, '{}') || $3, \
                is_inactive = coalesce($4, is_inactive), updated_at = now() \
         WHERE tenant = $1 AND company_id = $2",
    )
    .bind(mgmt)
    .bind(company)
    .bind(patch)
    .bind(inactive)
    .execute(conn)
    .await?;
    Ok(())
}

/// Audits a change in the tenant (while it exists) and in the management tenant.
async fn audit_both(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
    actor: &Actor,
    action: Action,
    details: serde_json::Value,
) -> Result<()> {
    db::enter_tenant(conn, tenant).await?;
    audit::record(
        conn,
        tenant,
        actor,
        action,
        "tenant",
        Some(tenant.0),
        details.clone(),
    )
    .await?;
    db::enter_tenant(conn, settings.management_tenant_id).await?;
    audit::record(
        conn,
        settings.management_tenant_id,
        actor,
        action,
        "tenant",
        Some(tenant.0),
        details,
    )
    .await
}

fn presence(company: &Option<companies::Company>) -> String {
    if company.is_some() {
        "updated"
    } else {
        "absent"
    }
    .to_owned()
}

/// active -> suspended: the tenant's users are refused from now on (sessions and API keys
/// included); the customer company gets the suspended tag and `properties.tenant_status`.
pub async fn suspend(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
    reason: &str,
    actor: &Actor,
) -> Result<Change> {
    let reason = self::reason(reason)?;
    switch(
        conn,
        settings,
        tenant,
        actor,
        Switch {
            from: TenantStatus::Active,
            to: TenantStatus::Suspended,
            verb: "suspended",
            action: Action::Suspend,
            reason: Some(reason),
            event: EventType::TenantSuspended,
        },
    )
    .await
}

/// suspended -> active: access comes back with the credentials the users had. Not while the
/// tenant's trial has ended unconverted (409 `trial_ended`).
pub async fn reactivate(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
    actor: &Actor,
) -> Result<Change> {
    row(conn, tenant, true).await?;
    reactivation_allowed(conn, tenant).await?;
    clear_suspension(conn, tenant).await?;
    switch(
        conn,
        settings,
        tenant,
        actor,
        Switch {
            from: TenantStatus::Suspended,
            to: TenantStatus::Active,
            verb: "reactivated",
            action: Action::Reactivate,
            reason: None,
            event: EventType::TenantReactivated,
        },
    )
    .await
}

/// Refuses to reactivate a tenant whose trial has ended unconverted (409 `trial_ended`): it
/// would be active without a plan that allows it. In the tenant's context.
pub async fn reactivation_allowed(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    let ended: Option<DateTime<Utc>> = sqlx::query_scalar(
        "SELECT trial_ends_at FROM tenant_subscriptions \
         WHERE tenant = $1 AND status = 'trialing' AND trial_ends_at <= now()",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await?;
    match ended {
        Some(at) => Err(Error::InvalidState {
            code: "trial_ended",
            message: format!(
                "The tenant's trial ended on {}: put it on a paid plan or extend its trial first",
                at.format("%Y-%m-%d %H:%M UTC")
            )
            .into(),
        }),
        None => Ok(()),
    }
}

/// After a reactivation, by whoever: the suspension it ended is nobody's any more.
async fn clear_suspension(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query(
        "UPDATE tenant_subscriptions SET suspended_for = NULL \
         WHERE tenant = $1 AND suspended_for IS NOT NULL",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// A change between active and suspended, the same steps either way: the tenant's row locked and
/// its status set, the customer company tagged suspended (or untagged) and marked, the audit
/// rows in both tenants, the event.
struct Switch {
    from: TenantStatus,
    to: TenantStatus,
    /// For the refusal: "the tenant cannot be {verb}".
    verb: &'static str,
    /// The audit action.
    action: Action,
    /// The new status's reason (a suspension has one; a reactivation audits the one it ends).
    reason: Option<String>,
    event: EventType,
}

async fn switch(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
    actor: &Actor,
    s: Switch,
) -> Result<Change> {
    let before = lock_for(conn, tenant, s.verb, &[s.from]).await?;
    set_status(conn, tenant, s.to, s.reason.as_deref()).await?;
    let company = customer_company(conn, settings, tenant).await?;
    if let Some(c) = &company {
        let mgmt = settings.management_tenant_id;
        if s.to == TenantStatus::Suspended {
            tag(conn, mgmt, c.company_id, &settings.tags.suspended).await?;
        } else {
            untag(conn, mgmt, c.company_id, &settings.tags.suspended).await?;
        }
        mark_company(
            conn,
            mgmt,
            c.company_id,
            json!({"tenant_status": s.to.as_str()}),
            None,
        )
        .await?;
    }
    let reason = s.reason.or_else(|| before.status_reason.clone());
    audit_both(
        conn,
        settings,
        tenant,
        actor,
        s.action,
        json!({"before": before.status, "after": s.to.as_str(), "reason": reason,
               "customer_record": presence(&company)}),
    )
    .await?;
    finish(conn, settings, tenant, before.status, &company, s.event).await
}

/// What a cancel changed, so that a restore puts it back exactly.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Undo {
    status: TenantStatus,
    status_reason: Option<String>,
    company_inactive: Option<bool>,
    /// Contacts of the customer company that the cancel set inactive.
    contacts: Vec<Uuid>,
    /// Whether the customer company carried the suspended tag.
    suspended_tag: bool,
}

/// active or suspended -> canceled: access ends as for a suspension; the customer company and
/// its contacts become inactive, tagged canceled, with `delete_after`; a deletion is recorded
/// under `workflow_id`, whose workflow (started by the caller after the commit) deletes the
/// tenant at `delete_after` unless it is restored first.
#[allow(clippy::too_many_arguments)]
pub async fn cancel(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
    reason: &str,
    grace: chrono::Duration,
    workflow_id: &str,
    export_id: Uuid,
    actor: &Actor,
) -> Result<Change> {
    let reason = self::reason(reason)?;
    let before = lock_for(
        conn,
        tenant,
        "canceled",
        &[TenantStatus::Active, TenantStatus::Suspended],
    )
    .await?;
    let delete_after = Utc::now() + grace;
    set_status(conn, tenant, TenantStatus::Canceled, Some(&reason)).await?;
    let company = customer_company(conn, settings, tenant).await?;
    let mut undo = Undo {
        status: before.status,
        status_reason: before.status_reason.clone(),
        company_inactive: company.as_ref().map(|c| c.is_inactive),
        contacts: Vec::new(),
        suspended_tag: false,
    };
    if let Some(c) = &company {
        let mgmt = settings.management_tenant_id;
        undo.contacts = sqlx::query_scalar(
            "UPDATE contacts SET is_inactive = true, updated_at = now() \
             WHERE tenant = $1 AND company_id = $2 AND NOT is_inactive RETURNING contact_name_id",
        )
        .bind(mgmt)
        .bind(c.company_id)
        .fetch_all(&mut *conn)
        .await?;
        undo.suspended_tag = tags::list_for_entity(conn, mgmt, TaggedType::Company, c.company_id.0)
            .await?
            .iter()
            .any(|t| t.tag_text == settings.tags.suspended.as_str());
        untag(conn, mgmt, c.company_id, &settings.tags.suspended).await?;
        tag(conn, mgmt, c.company_id, &settings.tags.canceled).await?;
        mark_company(
            conn,
            mgmt,
            c.company_id,
            json!({"tenant_status": "canceled", "delete_after": delete_after}),
            Some(true),
        )
        .await?;
    }
    db::leave_tenant(conn).await?;
    sqlx::query(
        "INSERT INTO tenant_deletions (workflow_id, tenant_id, tenant_name, reason, requested_by, \
                                       delete_after, undo, export_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(workflow_id)
    .bind(tenant)
    .bind(&before.company_name)
    .bind(&reason)
    .bind(actor.to_string())
    .bind(delete_after)
    .bind(serde_json::to_value(&undo).map_err(Error::internal)?)
    .bind(export_id)
    .execute(&mut *conn)
    .await?;
    audit_both(
        conn,
        settings,
        tenant,
        actor,
        Action::Cancel,
        json!({"before": before.status, "after": "canceled", "reason": reason,
               "delete_after": delete_after, "workflow_id": workflow_id,
               "customer_record": presence(&company)}),
    )
    .await?;
    finish(
        conn,
        settings,
        tenant,
        before.status,
        &company,
        EventType::TenantCanceled,
    )
    .await
}

/// The tenant's pending deletion, if any (outside any tenant context).
pub async fn pending_deletion(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<PendingDeletion>> {
    db::leave_tenant(conn).await?;
    Ok(sqlx::query_as::<_, PendingDeletion>(
        "SELECT workflow_id, requested_at, delete_after FROM tenant_deletions \
         WHERE tenant_id = $1 AND status = 'pending'",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await?)
}

/// Confirms the tenant's pending deletion now ("delete now"): who confirmed and when are
/// recorded on the deletion, with a `confirm_delete` entry in the management tenant's audit log,
/// in the caller's transaction. The deletion's workflow is told after the commit (by the caller,
/// or by the worker's sweeper: [`deletions_to_confirm`]). Confirming twice keeps the first.
pub async fn confirm_deletion(
    conn: &mut PgConnection,
    management_tenant: TenantId,
    tenant: TenantId,
    actor: &Actor,
) -> Result<PendingDeletion> {
    db::leave_tenant(conn).await?;
    let pending = sqlx::query_as::<_, PendingDeletion>(
        "UPDATE tenant_deletions SET confirmed_by = coalesce(confirmed_by, $2), \
                confirmed_at = coalesce(confirmed_at, now()), updated_at = now() \
         WHERE tenant_id = $1 AND status = 'pending' \
         RETURNING workflow_id, requested_at, delete_after",
    )
    .bind(tenant)
    .bind(actor.to_string())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(pending) = pending else {
        let current = row(conn, tenant, false).await?;
        return Err(refused(
            "tenant_state",
            format!(
                "The tenant is {}: only a canceled tenant can be deleted (cancel it first)",
                current.status
            ),
        ));
    };
    db::enter_tenant(conn, management_tenant).await?;
    audit::record(
        conn,
        management_tenant,
        actor,
        Action::ConfirmDelete,
        "tenant",
        Some(tenant.0),
        json!({"workflow_id": pending.workflow_id}),
    )
    .await?;
    db::leave_tenant(conn).await?;
    Ok(pending)
}

/// A confirmed deletion whose workflow may not have been told: its id and who confirmed.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DeletionToConfirm {
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub confirmed_by: String,
}

/// Deletions confirmed before `older_than` and still pending: the worker's sweeper tells their
/// workflows (again: the signal is idempotent).
pub async fn deletions_to_confirm(
    conn: &mut PgConnection,
    older_than: DateTime<Utc>,
) -> Result<Vec<DeletionToConfirm>> {
    Ok(sqlx::query_as::<_, DeletionToConfirm>(
        "SELECT workflow_id, tenant_id, confirmed_by FROM tenant_deletions \
         WHERE status = 'pending' AND confirmed_at IS NOT NULL AND confirmed_at < $1 \
         ORDER BY confirmed_at LIMIT 100",
    )
    .bind(older_than)
    .fetch_all(conn)
    .await?)
}

/// Pending deletions, and how many of them are stuck: more than an hour past their deadline, or
/// more than an hour after a "delete now" confirmation (whose deadline may be weeks away), and
/// still pending (the alert `PsaTenantDeletionOverdue`).
pub async fn deletion_backlog(conn: &mut PgConnection) -> Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE delete_after < now() - interval '1 hour' \
                                              OR confirmed_at < now() - interval '1 hour') \
         FROM tenant_deletions WHERE status = 'pending'",
    )
    .fetch_one(conn)
    .await?)
}

/// A deletion whose workflow is to be started: by its starter right after the cancel, or by the
/// worker's sweeper when the starter could not.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct DeletionToStart {
    pub workflow_id: String,
    pub tenant_id: TenantId,
    pub delete_after: DateTime<Utc>,
    pub export_id: Uuid,
}

/// Pending deletions whose workflow has not been started, requested before `older_than`.
pub async fn deletions_to_start(
    conn: &mut PgConnection,
    older_than: DateTime<Utc>,
) -> Result<Vec<DeletionToStart>> {
    Ok(sqlx::query_as::<_, DeletionToStart>(
        "SELECT workflow_id, tenant_id, delete_after, export_id FROM tenant_deletions \
         WHERE status = 'pending' AND started_at IS NULL AND requested_at < $1 \
         ORDER BY requested_at LIMIT 100",
    )
    .bind(older_than)
    .fetch_all(conn)
    .await?)
}

/// The deletion `workflow_id`, to start its workflow; `None` once it is no longer pending
/// (restored or deleted: its workflow must not start, nor take the export it begins with).
pub async fn deletion_to_start(
    conn: &mut PgConnection,
    workflow_id: &str,
) -> Result<Option<DeletionToStart>> {
    Ok(sqlx::query_as::<_, DeletionToStart>(
        "SELECT workflow_id, tenant_id, delete_after, export_id FROM tenant_deletions \
         WHERE workflow_id = $1 AND status = 'pending'",
    )
    .bind(workflow_id)
    .fetch_optional(conn)
    .await?)
}

/// Records that the deletion's workflow runs.
pub async fn deletion_started(conn: &mut PgConnection, workflow_id: &str) -> Result<()> {
    sqlx::query(
        "UPDATE tenant_deletions SET started_at = coalesce(started_at, now()), updated_at = now() \
         WHERE workflow_id = $1",
    )
    .bind(workflow_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// canceled -> where the cancel found it (active, or suspended with its reason), before the
/// deletion ran: the customer company and the contacts the cancel set inactive come back.
/// Returns the change and the deletion's workflow id (the caller signals it to stop; it also
/// stops by itself, finding the deletion restored).
pub async fn restore(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
    actor: &Actor,
) -> Result<(Change, String)> {
    let before = lock_for(conn, tenant, "restored", &[TenantStatus::Canceled]).await?;
    db::leave_tenant(conn).await?;
    let (workflow_id, undo): (String, serde_json::Value) = sqlx::query_as(
        "SELECT workflow_id, undo FROM tenant_deletions WHERE tenant_id = $1 AND status = 'pending' \
         FOR UPDATE",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| refused("tenant_state", "The tenant has no pending deletion to stop"))?;
    let undo: Undo = serde_json::from_value(undo).map_err(Error::internal)?;
    sqlx::query(
        "UPDATE tenant_deletions SET status = 'restored', ended_at = now(), updated_at = now() \
         WHERE workflow_id = $1",
    )
    .bind(&workflow_id)
    .execute(&mut *conn)
    .await?;
    set_status(conn, tenant, undo.status, undo.status_reason.as_deref()).await?;
    let company = customer_company(conn, settings, tenant).await?;
    if let Some(c) = &company {
        let mgmt = settings.management_tenant_id;
        reactivate_contacts(conn, mgmt, &undo.contacts).await?;
        untag(conn, mgmt, c.company_id, &settings.tags.canceled).await?;
        if undo.status == TenantStatus::Suspended || undo.suspended_tag {
            tag(conn, mgmt, c.company_id, &settings.tags.suspended).await?;
        }
        db::as_platform(conn).await?;
        sqlx::query(
            "UPDATE companies SET properties = (coalesce(properties, '{}') - 'delete_after') || $3, \
                    is_inactive = coalesce($4, is_inactive), updated_at = now() \
             WHERE tenant = $1 AND company_id = $2",
        )
        .bind(mgmt)
        .bind(c.company_id)
        .bind(json!({"tenant_status": undo.status}))
        .bind(undo.company_inactive)
        .execute(&mut *conn)
        .await?;
    }
    audit_both(
        conn,
        settings,
        tenant,
        actor,
        Action::Restore,
        json!({"before": before.status, "after": undo.status, "workflow_id": workflow_id,
               "customer_record": presence(&company)}),
    )
    .await?;
    Ok((
        finish(
            conn,
            settings,
            tenant,
            before.status,
            &company,
            EventType::TenantRestored,
        )
        .await?,
        workflow_id,
    ))
}

/// What [`delete`] did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Deleted {
    /// The tenant is gone: rows removed by table.
    Deleted {
        rows: serde_json::Map<String, serde_json::Value>,
    },
    /// An earlier attempt deleted it already.
    AlreadyDeleted,
    /// It was restored before its deadline: nothing was deleted.
    Restored,
}

/// The tenant tables: every table of the schema with a `tenant` column, from the catalog (a new
/// table is never forgotten by deletion or export).
pub async fn tenant_tables(conn: &mut PgConnection) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped \
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') \
         ORDER BY c.relname",
    )
    .fetch_all(conn)
    .await?)
}

/// Deletes the canceled tenant of the deletion `workflow_id`: every row it owns in every tenant
/// table, in one transaction (a crash at any point leaves all of it or none; run again, it
/// finishes). The customer company stays, for the business's history: inactive, tagged
/// canceled, `tenant_status = "deleted"`, `deleted_at`. Idempotent.
pub async fn delete(
    conn: &mut PgConnection,
    settings: Option<&Settings>,
    workflow_id: &str,
    confirmed_by: Option<&str>,
) -> Result<Deleted> {
    db::leave_tenant(conn).await?;
    // A large tenant takes longer than the worker's statement limit; the activity heartbeats.
    sqlx::query("SET LOCAL statement_timeout = '1h'")
        .execute(&mut *conn)
        .await?;
    let (tenant, status, name, reason): (TenantId, String, String, String) = sqlx::query_as(
        "SELECT tenant_id, status, tenant_name, reason FROM tenant_deletions \
         WHERE workflow_id = $1 FOR UPDATE",
    )
    .bind(workflow_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound { entity: "deletion" })?;
    match status.as_str() {
        "deleted" => return Ok(Deleted::AlreadyDeleted),
        "restored" => return Ok(Deleted::Restored),
        _ => {}
    }
    // The tenant's row, locked: a restore waits for this transaction, then finds it deleted.
    // (Gone already, removed outside its lifecycle: the records below are still completed.)
    match row(conn, tenant, true).await {
        Ok(current) if current.is_management || current.status != TenantStatus::Canceled => {
            return Err(refused(
                "tenant_state",
                format!(
                    "The tenant is {}, not canceled: it is not deleted",
                    current.status
                ),
            ));
        }
        Ok(_) | Err(Error::NotFound { .. }) => {}
        Err(e) => return Err(e),
    }
    db::leave_tenant(conn).await?;
    // What it owns, table by table, for the record; then the tenant row, whose cascade removes
    // all of it in an order the foreign keys accept; then proof that nothing is left.
    let tables = tenant_tables(conn).await?;
    let mut rows = serde_json::Map::new();
    for table in &tables {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{table}\" WHERE tenant = $1"
        ))
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await?;
        rows.insert(table.clone(), n.into());
    }
    sqlx::query("DELETE FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .execute(&mut *conn)
        .await?;
    for table in &tables {
        let left: bool = sqlx::query_scalar(&format!(
            "SELECT EXISTS (SELECT 1 FROM \"{table}\" WHERE tenant = $1)"
        ))
        .bind(tenant)
        .fetch_one(&mut *conn)
        .await?;
        if left {
            return Err(Error::Internal(
                format!("rows of the tenant are left in {table} after its deletion").into(),
            ));
        }
    }
    let company = match settings {
        Some(settings) => customer_company(conn, settings, tenant).await?,
        None => None,
    };
    if let (Some(settings), Some(c)) = (settings, &company) {
        let mgmt = settings.management_tenant_id;
        tag(conn, mgmt, c.company_id, &settings.tags.canceled).await?;
        mark_company(
            conn,
            mgmt,
            c.company_id,
            json!({"tenant_status": "deleted", "deleted_at": Utc::now()}),
            Some(true),
        )
        .await?;
    }
    let actor = confirmed_by.unwrap_or("deadline");
    if let Some(settings) = settings {
        db::enter_tenant(conn, settings.management_tenant_id).await?;
        audit::record(
            conn,
            settings.management_tenant_id,
            &Actor::Platform("deletion"),
            Action::Delete,
            "tenant",
            Some(tenant.0),
            json!({"before": "canceled", "after": "deleted", "name": name, "reason": reason,
                   "by": actor, "workflow_id": workflow_id, "rows": rows,
                   "customer_record": presence(&company)}),
        )
        .await?;
    }
    db::leave_tenant(conn).await?;
    sqlx::query(
        "UPDATE tenant_deletions SET status = 'deleted', \
                confirmed_by = coalesce(confirmed_by, $2), deleted_rows = $3, \
                ended_at = now(), updated_at = now() WHERE workflow_id = $1",
    )
    .bind(workflow_id)
    .bind(confirmed_by)
    .bind(serde_json::Value::Object(rows.clone()))
    .execute(&mut *conn)
    .await?;
    events::record(
        conn,
        EventType::TenantDeleted,
        Some(tenant),
        json!({"tenant_id": tenant, "name": name, "status_before": "canceled", "reason": reason,
               "deleted_by": actor, "workflow_id": workflow_id, "rows": rows,
               "customer_record": presence(&company),
               "customer_company_id": company.as_ref().map(|c| c.company_id)}),
        Some(&format!("{workflow_id}/tenant.deleted")),
    )
    .await?;
    Ok(Deleted::Deleted { rows })
}

/// The change as callers see it, and as its event (in the change's transaction).
async fn finish(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
    before: TenantStatus,
    company: &Option<companies::Company>,
    event: EventType,
) -> Result<Change> {
    let change = Change {
        tenant: show(conn, settings, tenant).await?,
        status_before: before,
        customer_record: presence(company),
    };
    let data = serde_json::to_value(&change).map_err(|e| Error::Internal(e.into()))?;
    // Outside the tenant's context: events are the platform's.
    db::leave_tenant(conn).await?;
    events::record(conn, event, Some(tenant), data, None).await?;
    Ok(change)
}

/// The tenant's status, pending deletion and customer record.
pub async fn show(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
) -> Result<TenantDetails> {
    let r = row(conn, tenant, false).await?;
    let subscription = crate::plans::subscription(conn, tenant).await?;
    let deletion = pending_deletion(conn, tenant).await?;
    let company = customer_company(conn, settings, tenant).await?;
    let customer = match &company {
        None => CustomerRecord {
            customer_company_id: None,
            tracking: "untracked".into(),
            is_inactive: None,
        },
        Some(c) => {
            let tagged = tags::list_for_entity(
                conn,
                settings.management_tenant_id,
                TaggedType::Company,
                c.company_id.0,
            )
            .await?
            .iter()
            .any(|t| t.tag_text == settings.customer_tag.as_str());
            CustomerRecord {
                customer_company_id: Some(c.company_id.0),
                tracking: if tagged { "tracked" } else { "partial" }.into(),
                is_inactive: Some(c.is_inactive),
            }
        }
    };
    Ok(TenantDetails {
        tenant_id: tenant,
        name: r.company_name,
        slug: r.slug,
        status: r.status,
        status_reason: r.status_reason,
        status_changed_at: r.status_changed_at,
        created_at: r.created_at,
        deletion,
        customer,
        subscription,
        is_management: r.is_management,
        support_access: r.support_access,
    })
}

/// Makes the customer record of a tenant an import brought back say what it is now: its
/// status, no deletion (`delete_after` and `deleted_at` gone), the lifecycle tags to match,
/// active again, and the contacts its cancel made inactive active again. Returns whether there
/// was a record (none: reconcile's rules make one).
pub async fn record_returned(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
) -> Result<bool> {
    let r = row(conn, tenant, false).await?;
    let Some(company) = customer_company(conn, settings, tenant).await? else {
        return Ok(false);
    };
    db::leave_tenant(conn).await?;
    let undo: Option<serde_json::Value> = sqlx::query_scalar(
        "SELECT undo FROM tenant_deletions WHERE tenant_id = $1 AND status = 'deleted' \
         ORDER BY ended_at DESC NULLS LAST LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?;
    let mgmt = settings.management_tenant_id;
    db::enter_tenant(conn, mgmt).await?;
    if let Some(undo) = undo.and_then(|u| serde_json::from_value::<Undo>(u).ok()) {
        reactivate_contacts(conn, mgmt, &undo.contacts).await?;
    }
    untag(conn, mgmt, company.company_id, &settings.tags.canceled).await?;
    if r.status == TenantStatus::Suspended {
        tag(conn, mgmt, company.company_id, &settings.tags.suspended).await?;
    } else {
        untag(conn, mgmt, company.company_id, &settings.tags.suspended).await?;
    }
    db::as_platform(conn).await?;
    sqlx::query(
        "UPDATE companies SET properties = (coalesce(properties, '{}') - 'delete_after' - 'deleted_at') \
                || $3, is_inactive = false, updated_at = now() \
         WHERE tenant = $1 AND company_id = $2",
    )
    .bind(mgmt)
    .bind(company.company_id)
    .bind(json!({"tenant_status": r.status}))
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// Applies the tenant's current status to a customer company that reconcile just created for
/// it, so a record added late shows the same state as one that followed every change.
pub async fn apply_to_new_record(
    conn: &mut PgConnection,
    settings: &Settings,
    tenant: TenantId,
    company: CompanyId,
) -> Result<()> {
    let r = row(conn, tenant, false).await?;
    let mgmt = settings.management_tenant_id;
    db::enter_tenant(conn, mgmt).await?;
    match r.status {
        TenantStatus::Active => {}
        TenantStatus::Suspended => {
            tag(conn, mgmt, company, &settings.tags.suspended).await?;
            mark_company(
                conn,
                mgmt,
                company,
                json!({"tenant_status": "suspended"}),
                None,
            )
            .await?;
        }
        TenantStatus::Canceled => {
            let deletion = pending_deletion(conn, tenant).await?;
            db::enter_tenant(conn, mgmt).await?;
            tag(conn, mgmt, company, &settings.tags.canceled).await?;
            mark_company(
                conn,
                mgmt,
                company,
                json!({"tenant_status": "canceled",
                       "delete_after": deletion.map(|d| d.delete_after)}),
                Some(true),
            )
            .await?;
        }
    }
    db::leave_tenant(conn).await
}
