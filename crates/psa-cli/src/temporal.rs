//! Configuration of the workflow side: Temporal, customer tracking, the secret key.

use clap::Args;
use psa_workflows::TrackingSettings;
use psa_workflows::client::TenantWorkflows;
use psa_workflows::secret::SecretKey;

use crate::config::CliError;

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
        global = true
    )]
    pub task_queue: String,
    /// UUID of the management tenant.
    #[arg(long, env = "NINEMINDS_TENANT_ID", global = true)]
    pub nineminds_tenant_id: Option<String>,
    /// Record new tenants as customers of the management tenant.
    #[arg(
        long,
        env = "ENABLE_CUSTOMER_TRACKING",
        default_value = "true",
        global = true
    )]
    pub enable_customer_tracking: String,
    #[arg(
        long,
        env = "CUSTOMER_TAG_NAME",
        default_value = "PSA Customer",
        global = true
    )]
    pub customer_tag_name: String,
    /// 32 bytes, base64: seals the admin's temporary password on its way through Temporal.
    #[arg(long, env = "PSA_SECRET_KEY", hide_env_values = true, global = true)]
    pub secret_key: Option<String>,
}

impl WorkflowArgs {
    pub fn tracking(&self) -> Result<TrackingSettings, CliError> {
        let enabled = match self
            .enable_customer_tracking
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "true" | "1" | "yes" | "on" => true,
            "false" | "0" | "no" | "off" => false,
            other => {
                return Err(CliError::Usage(format!(
                    "ENABLE_CUSTOMER_TRACKING must be true or false, not {other:?}"
                )));
            }
        };
        let management_tenant_id = match self
            .nineminds_tenant_id
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(s) => Some(uuid::Uuid::parse_str(s).map_err(|_| {
                CliError::Usage(format!("NINEMINDS_TENANT_ID must be a UUID, not {s:?}"))
            })?),
        };
        if psa_models::validate::TagText::parse(&self.customer_tag_name).is_err() {
            return Err(CliError::Usage(format!(
                "CUSTOMER_TAG_NAME is not a valid tag (1-50 ASCII characters): {:?}",
                self.customer_tag_name
            )));
        }
        Ok(TrackingSettings {
            enabled,
            management_tenant_id,
            tag_name: self.customer_tag_name.trim().to_owned(),
        })
    }

    /// The key, required.
    pub fn key(&self) -> Result<SecretKey, CliError> {
        let raw = self.secret_key.as_deref().filter(|s| !s.trim().is_empty()).ok_or_else(|| {
            CliError::Usage("PSA_SECRET_KEY is not set: 32 random bytes, base64 (`openssl rand -base64 32`)".into())
        })?;
        SecretKey::from_base64(raw).map_err(|e| CliError::Usage(e.to_string()))
    }

    /// The key if configured (a caller without it gets no password).
    pub fn key_if_set(&self) -> Result<Option<SecretKey>, CliError> {
        match self.secret_key.as_deref().filter(|s| !s.trim().is_empty()) {
            None => Ok(None),
            Some(_) => self.key().map(Some),
        }
    }

    pub async fn connect(&self) -> Result<TenantWorkflows, CliError> {
        if self.task_queue.trim().is_empty() {
            return Err(CliError::Usage(
                "TEMPORAL_TASK_QUEUE must not be empty".into(),
            ));
        }
        let client =
            psa_workflows::client::connect(&self.temporal_address, &self.temporal_namespace)
                .await
                .map_err(|e| match e {
                    psa_workflows::client::ClientError::BadAddress(_) => {
                        CliError::Usage(e.to_string())
                    }
                    other => CliError::Failed(anyhow::Error::new(other)),
                })?;
        Ok(TenantWorkflows {
            client,
            task_queue: self.task_queue.clone(),
        })
    }
}
