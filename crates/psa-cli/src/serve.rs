//! `psa serve` and `psa api-key`.

use std::net::SocketAddr;
use std::time::Duration;

use crate::config::{self, CliError};

/// Abuse limits of `psa serve` (docs/operations.md, "Security").
#[derive(clap::Args, Clone, Debug)]
pub struct LimitArgs {
    /// Login attempts per minute from one client address.
    #[arg(long, env = "PSA_LOGIN_RATE_PER_MINUTE", default_value_t = 60,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_rate_per_minute: u32,
    /// Login attempts per minute for one account (tenant and email).
    #[arg(long, env = "PSA_LOGIN_ACCOUNT_RATE_PER_MINUTE", default_value_t = 10,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub login_account_rate_per_minute: u32,
    /// Requests per second with one credential (session or API key).
    #[arg(long, env = "PSA_API_RATE_PER_SECOND", default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub api_rate_per_second: u32,
    /// Password hashes computed at once (default: half the cores).
    #[arg(long, env = "PSA_CONCURRENT_HASHES", value_parser = clap::value_parser!(u32).range(1..))]
    pub concurrent_hashes: Option<u32>,
}

/// Connection and request limits of `psa serve`.
#[derive(clap::Args, Clone, Debug)]
pub struct ServerArgs {
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "PSA_HEADER_READ_TIMEOUT_SECONDS", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub header_read_timeout_seconds: u64,
    /// Seconds after which a request is answered 503 `timeout`.
    #[arg(long, env = "PSA_REQUEST_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_seconds: u64,
    /// Open connections at most.
    #[arg(long, env = "PSA_MAX_CONNECTIONS", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,
    /// The load balancers or ingress controllers in front of this server, comma-separated
    /// addresses and CIDR networks (e.g. `10.0.0.0/8`): only from them is the client's address
    /// taken from `Forwarded` / `X-Forwarded-For`. Empty: the TCP peer is the client.
    #[arg(long, env = "PSA_TRUSTED_PROXIES", default_value = "",
          value_parser = parse_trusted_proxies)]
    pub trusted_proxies: psa_api::proxies::TrustedProxies,
    /// The header those proxies write the client's address in: `x-forwarded-for` or
    /// `forwarded` (RFC 7239). Only that one is read.
    #[arg(long, env = "PSA_FORWARDED_HEADER", default_value = "x-forwarded-for",
          value_parser = parse_forwarded_header)]
    pub forwarded_header: psa_api::proxies::ForwardedHeader,
    /// Minutes without use after which a session ends.
    #[arg(long, env = "PSA_SESSION_IDLE_MINUTES", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub session_idle_minutes: u64,
    #[command(flatten)]
    pub db: crate::config::DbTimeoutArgs,
    #[command(flatten)]
    pub billing: BillingArgs,
}

/// The billing system's webhook.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct BillingArgs {
    /// A file holding the secret Stripe signs its webhook deliveries with (a mounted secret);
    /// the secret itself is read from `PSA_STRIPE_WEBHOOK_SECRET` only. Neither: the billing
    /// webhook answers 503.
    #[arg(long, env = "PSA_STRIPE_WEBHOOK_SECRET_FILE", value_name = "PATH")]
    pub stripe_webhook_secret_file: Option<std::path::PathBuf>,
}

impl BillingArgs {
    pub fn stripe_webhook_secret(&self) -> Result<Option<secrecy::SecretString>, CliError> {
        Ok(crate::config::secret_from_env_or_file(
            "PSA_STRIPE_WEBHOOK_SECRET",
            "PSA_STRIPE_WEBHOOK_SECRET_FILE",
            self.stripe_webhook_secret_file.as_deref(),
        )?
        .map(secrecy::SecretString::from))
    }
}

fn parse_forwarded_header(raw: &str) -> Result<psa_api::proxies::ForwardedHeader, String> {
    psa_api::proxies::ForwardedHeader::parse(raw).map_err(|e| format!("PSA_FORWARDED_HEADER: {e}"))
}

fn parse_trusted_proxies(raw: &str) -> Result<psa_api::proxies::TrustedProxies, String> {
    psa_api::proxies::TrustedProxies::parse(raw).map_err(|e| format!("PSA_TRUSTED_PROXIES: {e}"))
}

impl ServerArgs {
    pub fn limits(&self) -> psa_api::ServerLimits {
        psa_api::ServerLimits {
            header_read_timeout: Duration::from_secs(self.header_read_timeout_seconds),
            request_timeout: Duration::from_secs(self.request_timeout_seconds),
            max_connections: self.max_connections as usize,
        }
    }
}

impl LimitArgs {
    pub fn config(&self) -> psa_api::limits::LimitsConfig {
        let default = psa_api::limits::LimitsConfig::default();
        psa_api::limits::LimitsConfig {
            login_per_minute_per_address: self.login_rate_per_minute,
            login_per_minute_per_account: self.login_account_rate_per_minute,
            requests_per_second_per_credential: self.api_rate_per_second,
            concurrent_hashes: self
                .concurrent_hashes
                .map_or(default.concurrent_hashes, |n| n as usize),
        }
    }
}

/// `psa serve`: the HTTP API until SIGTERM or Ctrl-C.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    wf: &crate::temporal::WorkflowArgs,
    mail: &crate::config::MailArgs,
    exports: &crate::lifecycle::ExportArgs,
    webhook_args: &crate::webhooks::WebhookArgs,
    tracking: &crate::temporal::TrackingArgs,
    database_url: Option<&str>,
    bind: &str,
    metrics_bind: SocketAddr,
    session_ttl_minutes: u64,
    db_pool_size: u32,
    limits: &LimitArgs,
    server: &ServerArgs,
) -> Result<(), CliError> {
    let bind: SocketAddr = bind
        .parse()
        .map_err(|_| CliError::Usage(format!("PSA_BIND must be host:port, not {bind:?}")))?;
    if session_ttl_minutes == 0 {
        return Err(CliError::Usage(
            "PSA_SESSION_TTL_MINUTES must be at least 1".into(),
        ));
    }
    if db_pool_size == 0 {
        return Err(CliError::Usage(
            "PSA_DB_POOL_SIZE must be at least 1".into(),
        ));
    }
    let delivery = mail.delivery()?;
    let pool = config::pool_with(database_url, db_pool_size, Some(server.db.timeouts())).await?;
    let provisioning = psa_api::tenants::Provisioning::new(
        wf.temporal_address.clone(),
        wf.temporal_namespace.clone(),
        wf.task_queue.clone(),
        pool.clone(),
    );
    let app = psa_api::Application::build_with(
        psa_api::Config {
            dns: webhook_args.dns(),
            trusted_proxies: server
                .trusted_proxies
                .clone()
                .with_header(server.forwarded_header),
            bind,
            metrics_bind: Some(metrics_bind),
            session_ttl: Duration::from_secs(session_ttl_minutes * 60),
            session_idle: Duration::from_secs(server.session_idle_minutes * 60),
            limits: limits.config(),
            server: server.limits(),
            delivery,
            lifecycle: psa_api::LifecycleConfig {
                customer_tag: tracking.customer_tag_name.clone(),
                tags: tracking.lifecycle_tags(),
                store: Some(exports.store()?),
                default_plan: tracking.default_plan.clone(),
                stripe_webhook_secret: server.billing.stripe_webhook_secret()?,
                import_max_bytes: exports.import_max_bytes,
            },
            webhooks: psa_api::webhooks::WebhookConfig {
                key: wf.key_if_set().cloned(),
                policy: webhook_args.policy(),
            },
        },
        pool,
        Some(provisioning),
    )
    .await
    .map_err(|e| {
        CliError::Failed(anyhow::Error::new(e).context(format!("cannot listen on {bind}")))
    })?;
    tracing::info!(addr = %app.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        metrics = %app.metrics_addr().map(|a| a.to_string()).unwrap_or_default(),
        "psa API listening");
    app.run_until(shutdown_signal())
        .await
        .map_err(|e| CliError::Failed(anyhow::Error::new(e).context("server failed")))
}

/// Resolves on SIGTERM (Kubernetes) or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
