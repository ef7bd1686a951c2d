//! `psa api-key create|revoke`: API keys for the HTTP API, made for a user of a tenant and shown
//! once (`psa_app::api_keys`, audited as the operator's).

use clap::Subcommand;
use psa_models::{TenantId, UserId};
use secrecy::ExposeSecret;

use crate::config::CliError;

#[derive(Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key for a user; the key is printed once.
    Create {
        #[arg(long, value_parser = crate::config::tenant_id)]
        tenant: TenantId,
        #[arg(long, value_parser = crate::config::uuid)]
        user: uuid::Uuid,
        #[arg(long)]
        description: Option<String>,
        /// The key stops working after this many days (default: never).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=3650))]
        expires_in_days: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// Revoke an API key by its id.
    Revoke {
        #[arg(value_parser = crate::config::uuid)]
        api_key_id: uuid::Uuid,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(database_url: Option<&str>, command: ApiKeyCommand) -> Result<(), CliError> {
    let app = crate::app::app(database_url, Default::default()).await?;
    let who = crate::app::operator();
    match command {
        ApiKeyCommand::Create {
            tenant,
            user,
            description,
            expires_in_days,
            json,
        } => {
            let expires_at =
                expires_in_days.map(|d| chrono::Utc::now() + chrono::Duration::days(i64::from(d)));
            let key = psa_app::api_keys::create(
                &app,
                &who,
                tenant,
                UserId::from(user),
                description.as_deref(),
                expires_at,
            )
            .await
            .map_err(|e| match e {
                psa_models::Error::NotFound { .. } => {
                    CliError::Usage(format!("no user {user} in tenant {tenant}"))
                }
                other => other.into(),
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"api_key_id": key.api_key_id, "key": key.key.expose_secret(), "expires_at": expires_at})
                );
            } else {
                println!("API key {} (shown once, store it now):", key.api_key_id);
                println!("{}", key.key.expose_secret());
            }
            Ok(())
        }
        ApiKeyCommand::Revoke { api_key_id, json } => {
            let id = api_key_id;
            let revoked = psa_app::api_keys::revoke(&app, &who, id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"api_key_id": id, "revoked": revoked})
                );
            } else if revoked {
                println!("revoked API key {id}");
            } else {
                println!("no active API key {id}");
            }
            if revoked {
                Ok(())
            } else {
                Err(CliError::Failed(anyhow::anyhow!("no active API key {id}")))
            }
        }
    }
}
