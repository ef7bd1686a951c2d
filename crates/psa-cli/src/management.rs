//! `psa management init`: the platform's management tenant.

use clap::Subcommand;
use psa_models::tenants::AdminInput;
use secrecy::ExposeSecret;

use crate::config::{CliError, MailArgs};

#[derive(Subcommand)]
pub enum Command {
    /// Create the management tenant (seeded like any tenant) unless it exists; print its id. With
    /// an administrator who does not exist yet, invite them: their invitation link is printed
    /// once (there is nobody to mail it to yet). An administrator who was invited and has not
    /// set a password gets a new link (the earlier one stops working).
    Init {
        /// The management tenant's name.
        #[arg(long)]
        name: String,
        /// Email of an administrator to create with it.
        #[arg(long, requires_all = ["first_name", "last_name"])]
        admin_email: Option<String>,
        #[arg(long, requires = "admin_email")]
        first_name: Option<String>,
        #[arg(long, requires = "admin_email")]
        last_name: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    database_url: Option<&str>,
    mail: &MailArgs,
    command: Command,
) -> Result<(), CliError> {
    match command {
        Command::Init {
            name,
            admin_email,
            first_name,
            last_name,
            json,
        } => {
            let admin = admin_email.map(|email| AdminInput {
                email,
                first_name: first_name.unwrap_or_default(),
                last_name: last_name.unwrap_or_default(),
            });
            let services = crate::app::Services {
                mail: Some(mail),
                ..Default::default()
            };
            let app = crate::app::app(database_url, services).await?;
            let psa_app::management::Initialised { init, link } =
                psa_app::management::init(&app, &crate::app::operator(), &name, admin).await?;
            let id = init.tenant.tenant;
            if json {
                let mut out = serde_json::json!({"tenant_id": id, "created": init.created});
                if let Some((user, created)) = &init.admin {
                    out["admin_user_id"] = serde_json::json!(user.user_id);
                    out["admin_created"] = serde_json::json!(created);
                    out["invitation_link"] =
                        serde_json::json!(link.as_ref().map(|(l, _)| l.expose_secret()));
                    out["invitation_expires_at"] = serde_json::json!(link.as_ref().map(|(_, e)| e));
                }
                println!("{out}");
            } else {
                let what = if init.created {
                    "created"
                } else {
                    "already exists:"
                };
                println!(
                    "management tenant {:?} {what} {id}",
                    init.tenant.company_name
                );
                if let Some((user, created)) = &init.admin {
                    match &link {
                        Some((l, expires)) => println!(
                            "administrator {} {}; their invitation link (shown once, valid until {expires}):\n{}",
                            user.email,
                            if *created { "invited" } else { "invited again" },
                            l.expose_secret()
                        ),
                        None => println!(
                            "administrator {} already exists and has set a password",
                            user.email
                        ),
                    }
                }
                println!("configure the worker with NINEMINDS_TENANT_ID={id}");
            }
            Ok(())
        }
    }
}
