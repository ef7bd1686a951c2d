//! The operations layer: every use case of the platform once, whichever door it comes in by
//! (the HTTP API, the console, the `psa` command).
//!
//! A door parses its input into typed values, says who is acting (a [`Principal`]), calls an
//! operation here and renders the outcome. An operation checks the principal's permission (once,
//! here: [`App::begin`]), does its work in one transaction through `psa_models`, and writes its
//! audit entry, with a typed [`Actor`](psa_models::audit::Actor) and
//! [`Action`](psa_models::audit::Action), in that same transaction; what must reach Temporal is
//! recorded first and carried out after the commit (docs/operations.md, "When Temporal is
//! down").
//!
//! ```text
//!   psa-api (HTTP API, console)   psa-cli (psa ...)
//!                 \                  /
//!                  psa-app (operations)
//!                 /                  \
//!          psa-workflows  ---->  psa-models
//! ```

pub mod access;
pub mod api_keys;
pub mod attention;
pub mod audit;
pub mod billing;
pub mod customers;
pub mod directory;
pub mod dns;
pub mod events;
pub mod imports;
pub mod management;
pub mod mfa;
pub mod passkeys;
pub mod plans;
pub mod search;
pub mod sessions;
pub mod settings;
pub mod sso;
pub mod support;
pub mod temporal;
pub mod tenants;
pub mod users;
pub mod webhooks;

use std::sync::Arc;

use psa_models::exports::ExportStore;
use psa_models::invitations::Delivery;
use psa_models::{Error, Result};
use sqlx::PgPool;

pub use access::{Access, Member, Operator, Permission, Principal, Resource};
pub use settings::Settings;
pub use temporal::Temporal;

/// What every operation runs with: the database, the platform's settings, and the services an
/// operation may need (Temporal, the export store, mail), each optional where a door can run
/// without it.
#[derive(Clone)]
pub struct App {
    pub pool: PgPool,
    pub settings: Arc<Settings>,
    /// Temporal, connected on first use; `None`: this process was given no Temporal settings.
    pub temporal: Option<Arc<Temporal>>,
    /// Where exports are kept; `None`: this process offers no exports.
    pub exports: Option<ExportStore>,
    /// How invitation and reset links reach people.
    pub delivery: Arc<Delivery>,
    /// Sealing of webhook secrets and the addresses endpoints may have.
    pub webhooks: Arc<webhooks::WebhookSettings>,
    /// Where DNS lookups go (verifying a tenant's domains).
    pub dns: dns::Dns,
    /// The client towards identity providers, made on first use (every sign-in through a
    /// provider asks it twice; building a TLS client each time would be work on that path).
    pub(crate) provider_client: Arc<std::sync::OnceLock<reqwest::Client>>,
}

impl App {
    pub fn new(pool: PgPool, settings: Settings, delivery: Delivery) -> App {
        App {
            pool,
            settings: Arc::new(settings),
            temporal: None,
            exports: None,
            delivery: Arc::new(delivery),
            webhooks: Arc::default(),
            dns: dns::Dns::default(),
            provider_client: Arc::default(),
        }
    }

    pub fn with_dns(mut self, dns: dns::Dns) -> App {
        self.dns = dns;
        self
    }

    pub fn with_webhooks(mut self, webhooks: webhooks::WebhookSettings) -> App {
        self.webhooks = Arc::new(webhooks);
        // Its address policy is the providers' client's too.
        self.provider_client = Arc::default();
        self
    }

    pub fn with_temporal(mut self, temporal: Temporal) -> App {
        self.temporal = Some(Arc::new(temporal));
        self
    }

    pub fn with_exports(mut self, store: ExportStore) -> App {
        self.exports = Some(store);
        self
    }

    /// The export store, or 503 where this process has none.
    pub fn export_store(&self) -> Result<&ExportStore> {
        self.exports
            .as_ref()
            .ok_or_else(|| Error::unavailable("Exports are not configured on this server"))
    }

    /// The lifecycle settings with the management tenant `mgmt`.
    pub fn lifecycle(&self, mgmt: psa_models::TenantId) -> psa_models::lifecycle::Settings {
        self.settings.lifecycle(mgmt)
    }
}
