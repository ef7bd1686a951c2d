//! The operations layer as the command line uses it. Every command that changes something acts
//! as the operator running `psa` ([`operator`]): named by the operating-system account and host
//! (self-declared), and holding every permission, as holding the database's credentials already
//! does (see `psa_app::access`).

use psa_app::{App, Operator, Principal};

use crate::config::{self, CliError, MailArgs};
use crate::temporal::{TrackingArgs, WorkflowArgs};

/// The operator running this command.
pub fn operator() -> Principal {
    Principal::Operator(Operator::from_environment())
}

/// What an operation may need besides the database; each command passes what it has.
#[derive(Default)]
pub struct Services<'a> {
    pub settings: Option<&'a TrackingArgs>,
    pub workflow: Option<&'a WorkflowArgs>,
    pub mail: Option<&'a MailArgs>,
    /// The export store (`ExportArgs::store`).
    pub exports: Option<psa_models::exports::ExportStore>,
    /// The addresses webhook endpoints (and identity providers) may have
    /// (`WebhookArgs::policy`).
    pub webhooks: Option<psa_models::webhooks::AddressPolicy>,
    /// Where DNS lookups go (`PSA_DNS_RESOLVER`).
    pub dns: Option<psa_app::dns::Dns>,
}

/// The operations layer over `DATABASE_URL`, with the services given.
pub async fn app(database_url: Option<&str>, services: Services<'_>) -> Result<App, CliError> {
    let pool = config::pool(database_url, 2).await?;
    let settings = services
        .settings
        .map(TrackingArgs::app_settings)
        .unwrap_or_default();
    let delivery = match services.mail {
        Some(mail) => mail.delivery()?,
        None => psa_models::invitations::Delivery::without_mail(
            url::Url::parse("http://localhost").expect("a valid URL"),
        ),
    };
    let mut app = App::new(pool.clone(), settings, delivery);
    if let Some(wf) = services.workflow {
        app = app.with_temporal(wf.temporal(pool));
    }
    if let Some(mut store) = services.exports {
        if let Some(key) = services.workflow.and_then(WorkflowArgs::key_if_set) {
            store = store.with_key(psa_workflows::secret::archive_key(&app.pool, key).await?);
        }
        app = app.with_exports(store);
    }
    // The key seals what the platform keeps secret (webhook secrets, second factors): webhook
    // commands need it, and so do a move's export and import, which open and seal them again.
    let key = services.workflow.and_then(|w| w.key_if_set().cloned());
    if services.webhooks.is_some() || key.is_some() {
        app = app.with_webhooks(psa_app::webhooks::WebhookSettings {
            key,
            policy: services.webhooks.unwrap_or_default(),
        });
    }
    if let Some(dns) = services.dns {
        app = app.with_dns(dns);
    }
    Ok(app)
}

/// The operations layer with the platform's `settings` (or the defaults) and Temporal,
/// connected only if an operation needs it: the tenant lifecycle's commands.
pub async fn with_temporal(
    database_url: Option<&str>,
    settings: Option<TrackingArgs>,
    wf: &WorkflowArgs,
) -> Result<App, CliError> {
    let services = Services {
        settings: settings.as_ref(),
        workflow: Some(wf),
        ..Default::default()
    };
    app(database_url, services).await
}
