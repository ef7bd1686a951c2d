//! `psa management init`: the platform's management tenant.

use clap::Subcommand;
use psa_models::tenants::{self, AdminInput};
use secrecy::ExposeSecret;

use crate::config::{self, CliError};

#[derive(Subcommand)]
pub enum Command {
    /// Create the management tenant (seeded like any tenant) unless it exists; print its id.
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

pub async fn run(database_url: Option<&str>, command: Command) -> Result<(), CliError> {
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
            let pool = config::pool(database_url, 2).await?;
            let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
            let init = tenants::init_management(&mut tx, &name, admin).await?;
            tx.commit().await.map_err(psa_models::Error::from)?;
            let id = init.tenant.tenant;
            if json {
                let mut out = serde_json::json!({"tenant_id": id, "created": init.created});
                if let Some(a) = &init.admin {
                    out["admin_user_id"] = serde_json::json!(a.user.user_id);
                    out["temporary_password"] =
                        serde_json::json!(a.temporary_password.expose_secret());
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
                if let Some(a) = &init.admin {
                    println!(
                        "administrator {} with temporary password {} (shown once)",
                        a.user.email,
                        a.temporary_password.expose_secret()
                    );
                }
                println!("configure the worker with NINEMINDS_TENANT_ID={id}");
            }
            Ok(())
        }
    }
}
