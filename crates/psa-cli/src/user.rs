//! `psa user invite|list|set-role|deactivate|reactivate|resend-invite`: a tenant's staff, for
//! operators. Users are invited: the link is mailed, or printed once when no mail is
//! configured. Each command calls its operation in `psa_app::users`, audited as the operator's.

use clap::Subcommand;
use psa_app::users::{Invited, LinkDelivery};
use psa_app::{App, Principal};
use psa_models::invitations::{Delivered, NewInvitee};
use psa_models::users::{self, UserSummary};
use psa_models::{TenantId, UserId};
use secrecy::ExposeSecret;

use crate::app::{Services, app, operator};
use crate::config::{CliError, MailArgs};

#[derive(Subcommand)]
pub enum UserCommand {
    /// Invite a user with a role: created without a password, sent a link to set one.
    Invite {
        #[arg(long, value_parser = crate::config::tenant_id)]
        tenant: TenantId,
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
        #[arg(long, value_parser = crate::config::tenant_id)]
        tenant: TenantId,
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
    /// Remove a user's second factors (a lost phone): their sessions end, and they are told by
    /// email when mail is configured. Audited.
    ResetMfa(UserArgs),
    /// Whether the tenant's users must have a second factor (`on` or `off`); audited.
    MfaPolicy {
        #[arg(long, value_parser = crate::config::tenant_id)]
        tenant: TenantId,
        #[arg(value_parser = ["on", "off"])]
        required: String,
    },
}

/// One user of one tenant, by email.
#[derive(clap::Args)]
pub struct UserArgs {
    /// The tenant's id.
    #[arg(long, value_parser = crate::config::tenant_id)]
    tenant: TenantId,
    /// The user's email.
    #[arg(long)]
    email: String,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// A refused change (the last admin, an accepted invitation, an unknown user or tenant) is
/// the operator's to fix: exit 2.
fn refused_is_usage(e: psa_models::Error) -> CliError {
    match e {
        psa_models::Error::Conflict { .. } | psa_models::Error::NotFound { .. } => {
            CliError::Usage(e.to_string())
        }
        other => other.into(),
    }
}

/// Prints an issued invitation: mailed, or its link, shown once.
pub fn print_invited(tenant: TenantId, done: &Invited, json: bool) {
    let user = &done.user;
    let link = match &done.delivered {
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
                "invitation": done.delivered.status(),
                "invitation_link": link,
                "expires_at": done.expires_at,
            })
        );
    } else {
        match link {
            None => println!(
                "invitation sent to {} (valid until {})",
                user.email, done.expires_at
            ),
            Some(l) => println!(
                "invitation for {} (shown once, valid until {}; no mail is configured, so pass it on yourself):\n{l}",
                user.email, done.expires_at
            ),
        }
    }
}

/// The user of `tenant` with `email`.
async fn user_by_email(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    email: &str,
) -> Result<UserId, CliError> {
    psa_app::users::find_by_email(app, who, tenant, email)
        .await
        .map_err(|e| match e {
            psa_models::Error::NotFound { entity: "User" } => {
                CliError::Usage(format!("tenant {tenant} has no user {email}"))
            }
            psa_models::Error::NotFound { .. } => CliError::Usage(format!("no tenant {tenant}")),
            other => other.into(),
        })
}

fn print_user(u: &UserSummary, json: bool) {
    if json {
        println!("{}", serde_json::to_string(u).expect("a user serialises"));
    } else {
        println!(
            "{}  {:<8}  {:<16}  {:<3}  {}",
            u.user_id,
            status(u),
            u.roles.join(","),
            if u.two_factor_enabled { "yes" } else { "no" },
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
    let who = operator();
    let services = Services {
        mail: Some(mail),
        ..Default::default()
    };
    match command {
        UserCommand::Invite {
            tenant,
            email,
            role,
            first_name,
            last_name,
            json,
        } => {
            let app = app(database_url, services).await?;
            let input = NewInvitee {
                first_name,
                last_name,
                email,
                role,
            };
            let done = psa_app::users::invite(&app, &who, tenant, &input, LinkDelivery::MailOrShow)
                .await
                .map_err(|e| match e {
                    psa_models::Error::NotFound { .. } => {
                        CliError::Usage(format!("no tenant {tenant}"))
                    }
                    other => refused_is_usage(other),
                })?;
            print_invited(tenant, &done, json);
            Ok(())
        }
        UserCommand::ResendInvite(UserArgs {
            tenant,
            email,
            json,
        }) => {
            let app = app(database_url, services).await?;
            let user = user_by_email(&app, &who, tenant, &email).await?;
            let done =
                psa_app::users::resend_invite(&app, &who, tenant, user, LinkDelivery::MailOrShow)
                    .await
                    .map_err(refused_is_usage)?;
            print_invited(tenant, &done, json);
            Ok(())
        }
        UserCommand::List { tenant, json } => {
            let app = app(database_url, Services::default()).await?;
            let list = psa_app::users::list(&app, &who, tenant)
                .await
                .map_err(|e| match e {
                    psa_models::Error::NotFound { .. } => {
                        CliError::Usage(format!("no tenant {tenant}"))
                    }
                    other => other.into(),
                })?;
            if json {
                println!("{}", serde_json::to_string(&list).expect("users serialise"));
            } else {
                println!(
                    "{:<36}  {:<8}  {:<16}  {:<3}  EMAIL",
                    "USER", "STATUS", "ROLES", "2FA"
                );
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
            let app = app(database_url, Services::default()).await?;
            let user = user_by_email(&app, &who, tenant, &email).await?;
            let after = psa_app::users::change_role(&app, &who, tenant, user, &role)
                .await
                .map_err(refused_is_usage)?;
            print_user(&after, json);
            Ok(())
        }
        UserCommand::Deactivate(u) => set_inactive(database_url, &who, &u, true).await,
        UserCommand::Reactivate(u) => set_inactive(database_url, &who, &u, false).await,
        UserCommand::ResetMfa(UserArgs {
            tenant,
            email,
            json,
        }) => {
            let app = app(database_url, services).await?;
            let user = user_by_email(&app, &who, tenant, &email).await?;
            let removed = psa_app::mfa::reset(&app, &who, tenant, user)
                .await
                .map_err(refused_is_usage)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"user_id": user, "removed": removed})
                );
            } else if removed {
                println!(
                    "{email}: second factor removed, sessions ended; they set one up again at their next sign-in"
                );
            } else {
                println!("{email} had no second factor; their sessions were ended");
            }
            Ok(())
        }
        UserCommand::MfaPolicy { tenant, required } => {
            let app = app(database_url, Services::default()).await?;
            let on = psa_app::mfa::set_policy(&app, &who, tenant, required == "on")
                .await
                .map_err(refused_is_usage)?;
            println!(
                "{}",
                if on {
                    "every user of the tenant must have a second factor"
                } else {
                    "a second factor is each user's choice"
                }
            );
            Ok(())
        }
    }
}

async fn set_inactive(
    database_url: Option<&str>,
    who: &Principal,
    u: &UserArgs,
    inactive: bool,
) -> Result<(), CliError> {
    let app = app(database_url, Services::default()).await?;
    let user = user_by_email(&app, who, u.tenant, &u.email).await?;
    let after = psa_app::users::set_inactive(&app, who, u.tenant, user, inactive)
        .await
        .map_err(refused_is_usage)?;
    print_user(&after, u.json);
    Ok(())
}
