//! `psa user invite|list|set-role|deactivate|reactivate|resend-invite`: a tenant's staff, for
//! operators. Users are invited: the link is mailed, or printed once when no mail is
//! configured. Every change is audited (actor `cli`).

use clap::Subcommand;
use psa_models::invitations::{self, Delivered, Delivery, Invitation, NewInvitee};
use psa_models::mail::Kind;
use psa_models::users::{self, UserSummary};
use psa_models::validate::EmailAddress;
use psa_models::{TenantId, UserId, identity, tenants};
use secrecy::ExposeSecret;
use sqlx::{PgConnection, Postgres, Transaction};

use crate::config::{self, CliError, MailArgs};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Invite a user with a role: created without a password, sent a link to set one.
    Invite {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// Admin, Finance, Technician, Project Manager or Dispatcher.
        #[arg(long)]
        role: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
        #[arg(long)]
        json: bool,
    },
    /// The tenant's users, with roles and status (invited, active, inactive).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Give a user one role (their other roles are removed).
    SetRole {
        #[command(flatten)]
        user: UserArgs,
        #[arg(long)]
        role: String,
    },
    /// Deactivate a user: sessions, API keys and links stop working at once.
    Deactivate(UserArgs),
    /// Reactivate a user.
    Reactivate(UserArgs),
    /// Send a user who has not set a password a new invitation; the earlier link stops working.
    ResendInvite(UserArgs),
}

/// One user of one tenant, by email.
#[derive(clap::Args)]
pub struct UserArgs {
    /// The tenant's id.
    #[arg(long)]
    tenant: String,
    /// The user's email.
    #[arg(long)]
    email: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub fn parse_tenant(raw: &str) -> Result<TenantId, CliError> {
    uuid::Uuid::parse_str(raw.trim())
        .map(TenantId)
        .map_err(|_| CliError::Usage(format!("invalid tenant id {raw:?}: expected a UUID")))
}

async fn audit(
    conn: &mut PgConnection,
    tenant: TenantId,
    action: &str,
    user: UserId,
    details: serde_json::Value,
) -> Result<(), CliError> {
    psa_models::audit::record(conn, tenant, "cli", action, "user", Some(user.0), details).await?;
    Ok(())
}

/// Delivers an issued invitation, then commits: a link whose email could not go out is not
/// kept. Without mail settings the link is printed (once: only its digest is stored).
async fn deliver_and_commit(
    mut tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    invitation: Invitation,
    delivery: &Delivery,
    kind: Kind,
    json: bool,
) -> Result<(), CliError> {
    let tenant_name = tenants::get(&mut tx, tenant).await?.company_name;
    let delivered = delivery
        .deliver(kind, &tenant_name, &invitation.user, &invitation.link)
        .await
        .map_err(|e| {
            CliError::Failed(anyhow::anyhow!(
                "the invitation email could not be sent, nothing was changed: {e}"
            ))
        })?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    let user = &invitation.user;
    let link = match &delivered {
        Delivered::Sent => None,
        Delivered::Shown(l) => Some(l.expose_secret().to_owned()),
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "tenant_id": tenant,
                "user_id": user.user_id,
                "email": user.email,
                "invitation": delivered.status(),
                "invitation_link": link,
                "expires_at": invitation.link.expires_at,
            })
        );
    } else {
        match link {
            None => println!(
                "invitation sent to {} (valid until {})",
                user.email, invitation.link.expires_at
            ),
            Some(l) => println!(
                "invitation for {} (shown once, valid until {}; no mail is configured, so pass it on yourself):\n{l}",
                user.email, invitation.link.expires_at
            ),
        }
    }
    Ok(())
}

/// Issues a new invitation for an existing user who has not set a password, and delivers it.
pub async fn send_invitation(
    mut tx: Transaction<'static, Postgres>,
    tenant: TenantId,
    user: UserId,
    delivery: &Delivery,
    kind: Kind,
    json: bool,
) -> Result<(), CliError> {
    let invitation = invitations::reissue(&mut tx, tenant, user, delivery, "cli")
        .await
        .map_err(conflict_is_usage)?;
    audit(
        &mut tx,
        tenant,
        "resend_invite",
        user,
        serde_json::json!({}),
    )
    .await?;
    deliver_and_commit(tx, tenant, invitation, delivery, kind, json).await
}

/// A refused change (the last admin, an accepted invitation) is the operator's to fix: exit 2.
fn conflict_is_usage(e: psa_models::Error) -> CliError {
    match e {
        psa_models::Error::Conflict { .. } | psa_models::Error::NotFound { .. } => {
            CliError::Usage(e.to_string())
        }
        other => other.into(),
    }
}

async fn user_by_email(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &str,
) -> Result<UserId, CliError> {
    let address = EmailAddress::parse(email)?;
    users::find_by_email(conn, tenant, &address)
        .await?
        .map(|u| u.user_id)
        .ok_or_else(|| CliError::Usage(format!("tenant {tenant} has no user {email}")))
}

async fn tenant_exists(conn: &mut PgConnection, tenant: TenantId) -> Result<(), CliError> {
    tenants::find(conn, tenant)
        .await?
        .map(|_| ())
        .ok_or_else(|| CliError::Usage(format!("no tenant {tenant}")))
}

fn print_user(u: &UserSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(u).expect("a user serialises"));
    } else {
        println!(
            "{}  {:<8}  {:<16}  {}",
            u.user_id,
            status(u),
            u.roles.join(","),
            u.email
        );
    }
}

fn status(u: &UserSummary) -> &'static str {
    match u.status {
        users::UserStatus::Invited => "invited",
        users::UserStatus::Active => "active",
        users::UserStatus::Inactive => "inactive",
    }
}

pub async fn run(
    database_url: Option<&str>,
    mail: &MailArgs,
    command: UserCommand,
) -> Result<(), CliError> {
    match command {
        UserCommand::Invite {
            tenant,
            email,
            role,
            first_name,
            last_name,
            json,
        } => {
            let tenant = parse_tenant(&tenant)?;
            let delivery = mail.delivery()?;
            let pool = config::pool(database_url, 2).await?;
            let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
            tenant_exists(&mut tx, tenant).await?;
            let input = NewInvitee {
                first_name,
                last_name,
                email,
                role,
            };
            let invitation = invitations::invite(&mut tx, tenant, &input, &delivery, "cli")
                .await
                .map_err(conflict_is_usage)?;
            audit(
                &mut tx,
                tenant,
                "invite",
                invitation.user.user_id,
                serde_json::json!({"email": invitation.user.email, "role": input.role}),
            )
            .await?;
            deliver_and_commit(tx, tenant, invitation, &delivery, Kind::Invitation, json).await
        }
        UserCommand::ResendInvite(UserArgs {
            tenant,
            email,
            json,
        }) => {
            let tenant = parse_tenant(&tenant)?;
            let delivery = mail.delivery()?;
            let pool = config::pool(database_url, 2).await?;
            let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
            let user = user_by_email(&mut tx, tenant, &email).await?;
            send_invitation(tx, tenant, user, &delivery, Kind::Invitation, json).await
        }
        UserCommand::List { tenant, json } => {
            let tenant = parse_tenant(&tenant)?;
            let pool = config::pool(database_url, 2).await?;
            let mut conn = pool.acquire().await.map_err(psa_models::Error::from)?;
            tenant_exists(&mut conn, tenant).await?;
            let list = users::list(&mut conn, tenant).await?;
            if json {
                println!("{}", serde_json::to_string(&list).expect("users serialise"));
            } else {
                println!("{:<36}  {:<8}  {:<16}  EMAIL", "USER", "STATUS", "ROLES");
                for u in &list {
                    print_user(u, false);
                }
            }
            Ok(())
        }
        UserCommand::SetRole {
            user:
                UserArgs {
                    tenant,
                    email,
                    json,
                },
            role,
        } => {
            let tenant = parse_tenant(&tenant)?;
            let pool = config::pool(database_url, 2).await?;
            let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
            let user = user_by_email(&mut tx, tenant, &email).await?;
            let before = users::summary(&mut tx, tenant, user).await?;
            let after = users::set_role(&mut tx, tenant, user, &role)
                .await
                .map_err(conflict_is_usage)?;
            audit(
                &mut tx,
                tenant,
                "change_role",
                user,
                serde_json::json!({"from": before.roles, "to": after.roles}),
            )
            .await?;
            tx.commit().await.map_err(psa_models::Error::from)?;
            print_user(&after, json);
            Ok(())
        }
        UserCommand::Deactivate(u) => set_inactive(database_url, &u, true).await,
        UserCommand::Reactivate(u) => set_inactive(database_url, &u, false).await,
    }
}

async fn set_inactive(
    database_url: Option<&str>,
    u: &UserArgs,
    inactive: bool,
) -> Result<(), CliError> {
    let (email, json) = (&u.email, u.json);
    let tenant = parse_tenant(&u.tenant)?;
    let pool = config::pool(database_url, 2).await?;
    let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
    let user = user_by_email(&mut tx, tenant, email).await?;
    let after = identity::set_inactive(&mut tx, tenant, user, inactive)
        .await
        .map_err(conflict_is_usage)?;
    let action = if inactive { "deactivate" } else { "reactivate" };
    audit(&mut tx, tenant, action, user, serde_json::json!({})).await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    print_user(&after, json);
    Ok(())
}
