//! A tenant's users: invite, resend an invitation, change a role, deactivate and reactivate.
//! `user:create` to invite, `user:update` for the rest, in the tenant acted on.

use chrono::{DateTime, Utc};
use psa_models::audit::{self, Action, Actor};
use psa_models::invitations::{self, Delivered, Invitation, NewInvitee};
use psa_models::mail::Kind;
use psa_models::users::{self, UserSummary};
use psa_models::validate::EmailAddress;
use psa_models::{Error, Result, TenantId, UserId, identity, tenants};
use sqlx::PgConnection;

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

/// How a link reaches its user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkDelivery {
    /// By mail only: without mail settings the operation is refused before anything is written
    /// (the API and the console never show a link).
    Mail,
    /// By mail, or shown once to the operator who asked when no mail is configured (`psa`).
    MailOrShow,
}

/// An invitation issued and delivered.
#[derive(Debug)]
pub struct Invited {
    pub user: UserSummary,
    /// When the link stops working.
    pub expires_at: DateTime<Utc>,
    pub delivered: Delivered,
}

/// The users of `tenant` (`user:read`).
pub async fn list(app: &App, who: &Principal, tenant: TenantId) -> Result<Vec<UserSummary>> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Read))
        .await?;
    tenants::get(&mut tx, tenant).await?;
    let list = users::list(&mut tx, tenant).await?;
    tx.rollback().await?;
    Ok(list)
}

/// The user of `tenant` with this email (`user:read`).
pub async fn find_by_email(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    email: &str,
) -> Result<UserId> {
    let address = EmailAddress::parse(email)?;
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Read))
        .await?;
    tenants::get(&mut tx, tenant).await?;
    let found = users::find_by_email(&mut tx, tenant, &address)
        .await?
        .map(|u| u.user_id)
        .ok_or(Error::NotFound { entity: "User" });
    tx.rollback().await?;
    found
}

/// Invites a user with a role: created without a password and sent a single-use link to set
/// one. Written only once the link is delivered.
pub async fn invite(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    input: &NewInvitee,
    how: LinkDelivery,
) -> Result<Invited> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Create))
        .await?;
    refuse_without_mail(app, how)?;
    tenants::get(&mut tx, tenant).await?;
    let actor = who.actor();
    let invitation =
        invitations::invite(&mut tx, tenant, input, &app.delivery, &actor.to_string()).await?;
    let user = invitation.user.user_id;
    record(
        &mut tx,
        tenant,
        &actor,
        Action::Invite,
        user,
        serde_json::json!({"email": invitation.user.email, "role": input.role}),
    )
    .await?;
    deliver_and_commit(app, tx, tenant, invitation, Kind::Invitation).await
}

/// Sends a user who has not accepted their invitation a new one; the earlier link stops
/// working.
pub async fn resend_invite(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    user: UserId,
    how: LinkDelivery,
) -> Result<Invited> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Create))
        .await?;
    refuse_without_mail(app, how)?;
    let actor = who.actor();
    let invitation =
        invitations::reissue(&mut tx, tenant, user, &app.delivery, &actor.to_string()).await?;
    record(
        &mut tx,
        tenant,
        &actor,
        Action::ResendInvite,
        user,
        serde_json::json!({}),
    )
    .await?;
    deliver_and_commit(app, tx, tenant, invitation, Kind::Invitation).await
}

/// Gives a user one msp role, audited with the roles before and after. The tenant's last active
/// administrator keeps the Admin role.
pub async fn change_role(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    user: UserId,
    role: &str,
) -> Result<UserSummary> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Update))
        .await?;
    let before = users::summary(&mut tx, tenant, user).await?;
    let after = users::set_role(&mut tx, tenant, user, role).await?;
    record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::ChangeRole,
        user,
        serde_json::json!({"from": before.roles, "to": after.roles}),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// Deactivates (`inactive`) or reactivates a user. A deactivation ends their sessions, revokes
/// their API keys and voids their open links; a reactivation brings none of them back. Nobody
/// deactivates themselves, and the tenant's last active administrator stays.
pub async fn set_inactive(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    user: UserId,
    inactive: bool,
) -> Result<UserSummary> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Update))
        .await?;
    if inactive && who.member().is_some_and(|m| m.user == user) {
        return Err(Error::conflict(None, "You cannot deactivate yourself"));
    }
    let after = identity::set_inactive(&mut tx, tenant, user, inactive).await?;
    let action = if inactive {
        Action::Deactivate
    } else {
        Action::Reactivate
    };
    record(
        &mut tx,
        tenant,
        &who.actor(),
        action,
        user,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

pub(crate) fn refuse_without_mail(app: &App, how: LinkDelivery) -> Result<()> {
    if how == LinkDelivery::Mail && app.delivery.mailer.is_none() {
        return Err(mail_not_configured());
    }
    Ok(())
}

/// The refusal of a door that never shows links, on a server without mail.
pub fn mail_not_configured() -> Error {
    Error::InvalidState {
        code: "mail_not_configured",
        message: "This server sends no email (PSA_SMTP_URL is not set): an operator can run the psa CLI, which prints the link instead".into(),
    }
}

/// Delivers an issued link, then commits: a link whose email could not go out is not kept.
pub(crate) async fn deliver_and_commit(
    app: &App,
    mut tx: sqlx::Transaction<'static, sqlx::Postgres>,
    tenant: TenantId,
    invitation: Invitation,
    kind: Kind,
) -> Result<Invited> {
    let tenant_name = tenants::get(&mut tx, tenant).await?.company_name;
    let delivered = app
        .delivery
        .deliver(kind, &tenant_name, &invitation.user, &invitation.link)
        .await
        .map_err(|e| {
            // The mail server's own answer (its host, its words) goes to the log only: the caller
            // learns what happened and what to do. Each door says "nothing was changed" its way.
            tracing::warn!(%tenant, error = %e, "invitation email failed");
            Error::Unavailable {
                code: "mail_failed",
                message: if e.transient {
                    "the mail server could not be reached or asked to try later: try again in a few minutes"
                } else {
                    "the mail server refused the message: an operator finds why in the server's log"
                }
                .into(),
            }
        })?;
    let user = users::summary(&mut tx, tenant, invitation.user.user_id).await?;
    tx.commit().await?;
    Ok(Invited {
        user,
        expires_at: invitation.link.expires_at,
        delivered,
    })
}

async fn record(
    conn: &mut PgConnection,
    tenant: TenantId,
    actor: &Actor,
    action: Action,
    user: UserId,
    details: serde_json::Value,
) -> Result<()> {
    audit::record(conn, tenant, actor, action, "user", Some(user.0), details).await
}
