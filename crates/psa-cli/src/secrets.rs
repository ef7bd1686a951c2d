//! `psa secrets reseal`: after a new `PSA_SECRET_KEY` (the old one kept in
//! `PSA_SECRET_KEY_PREVIOUS`), moves every stored sealed secret to the new key; then the old one
//! can be dropped (docs/operations.md, "To rotate").

use clap::Subcommand;

use crate::config::CliError;
use crate::temporal::WorkflowArgs;
use crate::webhooks::WebhookArgs;

#[derive(Subcommand)]
pub enum SecretsCommand {
    /// Seal every stored secret (webhook signing secrets, the export archives' key) again under
    /// the current key.
    Reseal {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(
    database_url: Option<&str>,
    wf: &WorkflowArgs,
    webhooks: &WebhookArgs,
    command: SecretsCommand,
) -> Result<(), CliError> {
    let SecretsCommand::Reseal { json } = command;
    // Without the key there is nothing to seal with: a setting to fix (exit 2).
    let key = wf.key()?;
    let services = crate::app::Services {
        workflow: Some(wf),
        webhooks: Some(webhooks.policy()),
        ..Default::default()
    };
    let app = crate::app::app(database_url, services).await?;
    let done = psa_app::webhooks::reseal(&app, &crate::app::operator()).await?;
    if json {
        println!(
            "{}",
            serde_json::json!({"resealed": done.resealed, "current": done.current,
                               "key_id": key.current_id()})
        );
    } else {
        println!(
            "resealed {} secret(s) under key {} ({} already were); PSA_SECRET_KEY_PREVIOUS can now be dropped",
            done.resealed,
            key.current_id(),
            done.current
        );
    }
    Ok(())
}
