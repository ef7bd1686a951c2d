//! Configuration of the workflow side, parsed once by clap into typed values: the Temporal
//! connection (every command that talks to Temporal), the secret key, and the customer tracking
//! settings, which belong to the worker (and to reconcile, which repairs what the worker does):
//! a starter (`psa tenant create`, the API) never reads them.

use clap::Args;
use psa_models::TenantId;
use psa_models::validate::TagText;
use psa_workflows::TrackingSettings;
use psa_workflows::client::TenantWorkflows;
use psa_workflows::secret::SecretKey;

use crate::config::CliError;

fn tag_text(s: &str) -> Result<TagText, String> {
    TagText::parse(s).map_err(|_| "must be a valid tag (1-50 ASCII characters)".to_owned())
}

#[derive(Args, Clone, Debug)]
pub struct WorkflowArgs {
    /// host:port of the Temporal frontend.
    #[arg(
        long,
        env = "TEMPORAL_ADDRESS",
        default_value = "127.0.0.1:7233",
        global = true
    )]
    pub temporal_address: String,
    #[arg(
        long,
        env = "TEMPORAL_NAMESPACE",
        default_value = "default",
        global = true
    )]
    pub temporal_namespace: String,
    #[arg(
        long,
        env = "TEMPORAL_TASK_QUEUE",
        default_value = "tenant-workflows",
        global = true,
        value_parser = clap::builder::NonEmptyStringValueParser::new()
    )]
    pub task_queue: String,
    /// A file holding `PSA_SECRET_KEY` (32 bytes, base64), e.g. a mounted secret. The key itself
    /// is read from `PSA_SECRET_KEY` only: a flag would put it on the process list.
    #[arg(long, env = "PSA_SECRET_KEY_FILE", global = true, value_name = "PATH")]
    pub secret_key_file: Option<std::path::PathBuf>,
    /// The key, from `PSA_SECRET_KEY` or the file (seals the admin's invitation link on its way
    /// through Temporal when the worker sends no mail).
    #[arg(skip)]
    pub secret_key: Option<SecretKey>,
}

/// The customer tracking settings: the worker's (they decide every run it executes) and
/// reconcile's.
#[derive(Args, Clone, Debug)]
pub struct TrackingArgs {
    /// UUID of the management tenant.
    #[arg(long, env = "NINEMINDS_TENANT_ID")]
    pub nineminds_tenant_id: Option<TenantId>,
    /// Record new tenants as customers of the management tenant (true/false).
    #[arg(
        long,
        env = "ENABLE_CUSTOMER_TRACKING",
        default_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    pub enable_customer_tracking: bool,
    #[arg(long, env = "CUSTOMER_TAG_NAME", default_value = "PSA Customer", value_parser = tag_text)]
    pub customer_tag_name: TagText,
    /// The tag on a customer company whose tenant is suspended.
    #[arg(long, env = "CUSTOMER_SUSPENDED_TAG_NAME", default_value = "Suspended", value_parser = tag_text)]
    pub customer_suspended_tag_name: TagText,
    /// The tag on a customer company whose tenant is canceled (or deleted).
    #[arg(long, env = "CUSTOMER_CANCELED_TAG_NAME", default_value = "Canceled", value_parser = tag_text)]
    pub customer_canceled_tag_name: TagText,
    /// The plan of a new tenant that names none.
    #[arg(long, env = "PSA_DEFAULT_PLAN", default_value = psa_models::plans::DEFAULT_PLAN)]
    pub default_plan: String,
}

impl TrackingArgs {
    pub fn lifecycle_tags(&self) -> psa_models::lifecycle::LifecycleTags {
        psa_models::lifecycle::LifecycleTags {
            suspended: self.customer_suspended_tag_name.clone(),
            canceled: self.customer_canceled_tag_name.clone(),
        }
    }

    /// The platform's settings, as the operations layer takes them.
    pub fn app_settings(&self) -> psa_app::Settings {
        psa_app::Settings {
            management_tenant_id: self.nineminds_tenant_id,
            customer_tracking: self.enable_customer_tracking,
            customer_tag: self.customer_tag_name.clone(),
            lifecycle_tags: self.lifecycle_tags(),
            default_plan: self.default_plan.clone(),
            ..Default::default()
        }
    }

    pub fn settings(&self) -> TrackingSettings {
        TrackingSettings {
            enabled: self.enable_customer_tracking,
            management_tenant_id: self.nineminds_tenant_id,
            tag_name: self.customer_tag_name.clone(),
        }
    }
}

impl WorkflowArgs {
    /// The key, required.
    pub fn key(&self) -> Result<SecretKey, CliError> {
        self.secret_key.clone().ok_or_else(|| {
            CliError::Usage(
                "PSA_SECRET_KEY is not set: 32 random bytes, base64 (`openssl rand -base64 32`)"
                    .into(),
            )
        })
    }

    /// The key if configured (a caller without it gets no password).
    pub fn key_if_set(&self) -> Option<&SecretKey> {
        self.secret_key.as_ref()
    }

    /// Temporal for the operations layer, connected on first use.
    pub fn temporal(&self, pool: sqlx::PgPool) -> psa_app::Temporal {
        psa_app::Temporal::new(
            self.temporal_address.clone(),
            self.temporal_namespace.clone(),
            self.task_queue.clone(),
            pool,
        )
    }

    pub async fn connect(&self, pool: sqlx::PgPool) -> Result<TenantWorkflows, CliError> {
        let client =
            psa_workflows::client::connect(&self.temporal_address, &self.temporal_namespace)
                .await
                .map_err(|e| match e {
                    psa_workflows::client::ClientError::BadAddress(_)
                    | psa_workflows::client::ClientError::Config(_) => {
                        CliError::Usage(e.to_string())
                    }
                    other => CliError::Failed(anyhow::Error::new(other)),
                })?;
        Ok(TenantWorkflows {
            client,
            task_queue: self.task_queue.clone(),
            pool,
        })
    }
}
