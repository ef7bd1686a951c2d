//! Support sessions (`psa_models::support`): management staff with `tenant:support` act in a
//! tenant as one of its users, with the tenant's consent, for a reason and at most an hour.
//!
//! Who may: to open one, `tenant:support` in the management tenant (a member, by session or API
//! key, whose credential the support session then depends on; or an operator at the command
//! line); to see a tenant's, `tenant:read`; to end one, `tenant:support`, or the support session
//! itself. A support session cannot open another. The tenant's own consent is its
//! administrators' (`user:update`), and is out of a support session's reach.

use psa_models::audit::{self, Action};
use psa_models::credentials::Credential;
use psa_models::support::{self, EndReason, Opened, Request, SupportSession};
use psa_models::{Result, TenantId, users};
use uuid::Uuid;

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

const SUPPORT: Permission = Permission(Resource::Tenant, Access::Support);
const READ: Permission = Permission(Resource::Tenant, Access::Read);

/// Opens a support session into `tenant`; its token is the caller's to use (shown once).
pub async fn open(app: &App, who: &Principal, tenant: TenantId, req: &Request) -> Result<Opened> {
    who.refuse_in_support("another support session")?;
    let (mut tx, mgmt) = app.begin_management(who, SUPPORT).await?;
    let opener = match who {
        Principal::Member(m) => {
            let me = users::get(&mut tx, mgmt, m.user).await?;
            let (session, api_key) = match m.credential {
                Credential::Session(id) => (Some(id), None),
                Credential::ApiKey(id) => (None, Some(id)),
            };
            support::Opener {
                tenant: mgmt,
                user: Some(m.user),
                session,
                api_key,
                name: me.email,
            }
        }
        other => support::Opener {
            tenant: mgmt,
            user: None,
            session: None,
            api_key: None,
            name: other.actor().id(),
        },
    };
    let opened = support::open(&mut tx, tenant, &opener, req).await?;
    tx.commit().await?;
    tracing::info!(
        tenant = %tenant,
        support_session = %opened.session.support_session_id,
        operator = %opened.session.operator,
        "support session opened"
    );
    Ok(opened)
}

/// The tenant's support sessions, newest first (`tenant:read`).
pub async fn list(app: &App, who: &Principal, tenant: TenantId) -> Result<Vec<SupportSession>> {
    let (mut tx, _) = app.begin_management(who, READ).await?;
    let list = support::list(&mut tx, tenant, 100).await?;
    tx.rollback().await?;
    Ok(list)
}

/// Ends a support session: from the management tenant (`tenant:support`), or from inside it.
/// Ending one that has ended already changes nothing.
pub async fn end(app: &App, who: &Principal, tenant: TenantId, id: Uuid) -> Result<SupportSession> {
    let inside = who
        .member()
        .is_some_and(|m| m.tenant == tenant && m.support == Some(id));
    let mut tx = if inside {
        app.begin_unchecked(who, tenant).await?
    } else {
        app.begin_management(who, SUPPORT).await?.0
    };
    let (ended, _) = support::end(
        &mut tx,
        tenant,
        id,
        EndReason::Ended,
        &who.actor().to_string(),
    )
    .await?;
    tx.commit().await?;
    Ok(ended)
}

/// The support session `who` is in, if any (the console's banner).
pub async fn current(app: &App, who: &Principal) -> Result<Option<SupportSession>> {
    let Some(m) = who.member() else {
        return Ok(None);
    };
    let Some(id) = m.support else {
        return Ok(None);
    };
    let mut tx = app.begin_unchecked(who, m.tenant).await?;
    let s = support::get(&mut tx, m.tenant, id).await?;
    tx.rollback().await?;
    Ok(Some(s))
}

/// What the tenant's own people see of support: whether it is allowed, the support sessions
/// into it, and what they did (the audit rows written in them), newest first.
#[derive(Debug, Clone, serde::Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantView {
    pub allowed: bool,
    pub sessions: Vec<SupportSession>,
    pub actions: Vec<psa_models::audit::Entry>,
}

/// The tenant's own view of support (`user:read`; not from a support session, which is not the
/// tenant's to audit).
pub async fn own_view(app: &App, who: &Principal, tenant: TenantId) -> Result<TenantView> {
    who.refuse_in_support("the tenant's support access")?;
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Read))
        .await?;
    let allowed = support::access_allowed(&mut tx, tenant).await?;
    let sessions = support::list(&mut tx, tenant, 50).await?;
    let filter = psa_models::audit::Filter {
        actor_kind: Some(psa_models::audit::ActorKind::Support),
        ..Default::default()
    };
    let actions = psa_models::audit::list(&mut tx, tenant, &filter, None, 100).await?;
    tx.rollback().await?;
    Ok(TenantView {
        allowed,
        sessions,
        actions,
    })
}

/// Whether the tenant lets support sessions in (`user:read`, like its sign-in policy).
pub async fn access(app: &App, who: &Principal, tenant: TenantId) -> Result<bool> {
    who.refuse_in_support("the tenant's support access")?;
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Read))
        .await?;
    let allowed = support::access_allowed(&mut tx, tenant).await?;
    tx.rollback().await?;
    Ok(allowed)
}

/// The tenant's administrators allow or refuse support sessions (`user:update`; audited with
/// before and after). Refusing ends those open now.
pub async fn set_access(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    allowed: bool,
) -> Result<bool> {
    who.refuse_in_support("the tenant's support access")?;
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Update))
        .await?;
    let before = support::set_access(&mut tx, tenant, allowed).await?;
    if !allowed {
        support::end_all_of_tenant(
            &mut tx,
            tenant,
            EndReason::AccessDisabled,
            &who.actor().to_string(),
        )
        .await?;
    }
    if before != allowed {
        let name = |a: bool| if a { "allowed" } else { "disabled" };
        audit::record(
            &mut tx,
            tenant,
            &who.actor(),
            Action::Update,
            "tenant",
            Some(tenant.0),
            serde_json::json!({"support_access": {"before": name(before), "after": name(allowed)}}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(allowed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_support_session_is_refused_what_touches_credentials() {
        let member = crate::Member {
            tenant: TenantId(Uuid::nil()),
            user: psa_models::UserId(Uuid::nil()),
            credential: Credential::Session(Uuid::nil()),
            client_portal: false,
            support: Some(Uuid::nil()),
        };
        let err = Principal::Member(member)
            .refuse_in_support("API keys")
            .unwrap_err();
        assert_eq!(err.code(), "not_in_support_session");
        let own = crate::Member {
            support: None,
            ..member
        };
        assert!(Principal::Member(own).refuse_in_support("API keys").is_ok());
    }
}
