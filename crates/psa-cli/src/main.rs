//! `psa`: the operator's command line. Thin: it reads configuration, then calls the crates.
//!
//! Exit codes: 0 success, 1 the operation failed, 2 bad usage, configuration or input.

mod api_key;
mod app;
mod attention;
mod config;
mod customers;
mod demo;
mod events;
mod lifecycle;
mod management;
mod migrate;
mod plan;
mod probe;
mod search;
mod secrets;
mod serve;
mod sso;
mod temporal;
mod tenant;
mod user;
mod webhooks;
mod worker;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{CliError, LogFormat};

#[derive(Parser)]
#[command(
    name = "psa",
    version,
    about = "Multi-tenant PSA backend: tenant provisioning with customer tracking"
)]
struct Cli {
    /// A file holding the PostgreSQL connection URL (a mounted secret). The URL itself is read
    /// from `DATABASE_URL` only: a flag would put its password on the process list.
    #[arg(long, env = "DATABASE_URL_FILE", global = true, value_name = "PATH")]
    database_url_file: Option<std::path::PathBuf>,
    /// The URL, from `DATABASE_URL` or the file.
    #[arg(skip)]
    database_url: Option<String>,
    /// Log format on stderr: pretty or json.
    #[arg(long, env = "PSA_LOG_FORMAT", global = true, default_value = "pretty")]
    log_format: String,
    #[command(flatten)]
    workflow: temporal::WorkflowArgs,
    #[command(flatten)]
    mail: config::MailArgs,
    #[command(flatten)]
    exports: lifecycle::ExportArgs,
    #[command(flatten)]
    webhooks: webhooks::WebhookArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations (idempotent).
    Migrate {
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The platform's management tenant.
    Management {
        #[command(subcommand)]
        command: management::Command,
    },
    /// Run the HTTP API.
    Serve {
        /// Listen address.
        #[arg(long, env = "PSA_BIND", default_value = "127.0.0.1:8080")]
        bind: String,
        /// Where `/metrics` is served (host:port): a listener of its own, for Prometheus, not
        /// the public port.
        #[arg(long, env = "PSA_METRICS_BIND", default_value = "127.0.0.1:9091")]
        metrics_bind: std::net::SocketAddr,
        /// Lifetime of login sessions, in minutes.
        #[arg(long, env = "PSA_SESSION_TTL_MINUTES", default_value_t = 720)]
        session_ttl_minutes: u64,
        /// Database connections of the API. A few per core: more only add contention.
        #[arg(long, env = "PSA_DB_POOL_SIZE", default_value_t = 10)]
        db_pool_size: u32,
        #[command(flatten)]
        limits: serve::LimitArgs,
        #[command(flatten)]
        server: serve::ServerArgs,
        /// The customer tags (lifecycle endpoints mark customer companies with them).
        #[command(flatten)]
        tracking: temporal::TrackingArgs,
    },
    /// API keys for the HTTP API.
    ApiKey {
        #[command(subcommand)]
        command: api_key::ApiKeyCommand,
    },
    /// Run the Temporal worker of the tenant creation workflow.
    Worker {
        /// Where the worker serves /metrics and /healthz (host:port).
        #[arg(
            long,
            env = "PSA_WORKER_METRICS_BIND",
            default_value = "127.0.0.1:9090"
        )]
        metrics_bind: std::net::SocketAddr,
        /// Seconds between sweeps of cut-off provisioning runs.
        #[arg(long, env = "PSA_SWEEP_INTERVAL_SECONDS", default_value_t = 60,
              value_parser = clap::value_parser!(u64).range(1..))]
        sweep_interval_seconds: u64,
        /// Days export archives are kept, and after a tenant's deletion its personal data in
        /// the platform's records (docs/operations.md, "What is kept").
        #[arg(long, env = "PSA_EXPORT_RETENTION_DAYS", default_value_t = psa_models::retention::DEFAULT_DAYS,
              value_parser = clap::value_parser!(u32).range(1..=3650))]
        export_retention_days: u32,
        #[command(flatten)]
        deadlines: worker::DeadlineArgs,
        #[command(flatten)]
        tracking: temporal::TrackingArgs,
        #[command(flatten)]
        db: config::DbTimeoutArgs,
    },
    /// Tenant provisioning.
    Tenant {
        #[command(subcommand)]
        command: tenant::TenantCommand,
    },
    /// A tenant's users: invitations, roles, deactivation.
    User {
        #[command(subcommand)]
        command: user::UserCommand,
    },
    /// Exit 0 if an HTTP GET of URL (http://host:port/path) answers 200: a health check for
    /// images without curl.
    Probe { url: String },
    /// The embedded default, end to end: private PostgreSQL and Temporal when none is configured,
    /// a sample tenant, then the console until Ctrl-C.
    Demo {
        /// Stop after the sample tenant instead of serving the console (scripts, tests).
        #[arg(long)]
        exit: bool,
        /// Where the console listens (a free port when this one is taken).
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: std::net::SocketAddr,
    },
    /// Customer records of tenants in the management tenant.
    Customers {
        #[command(subcommand)]
        command: customers::CustomersCommand,
    },
    /// Secrets the platform keeps sealed under PSA_SECRET_KEY.
    Secrets {
        #[command(subcommand)]
        command: secrets::SecretsCommand,
    },
    /// What happened to tenants and customers (docs/events.md).
    Events {
        #[command(subcommand)]
        command: events::EventsCommand,
    },
    /// The endpoints events are delivered to, signed (docs/events.md).
    Webhooks {
        #[command(subcommand)]
        command: webhooks::WebhooksCommand,
    },
    /// What needs attention on the platform (as the management console's start page): exit 0
    /// when nothing does, 1 otherwise, so that a cron job or a monitor can run it.
    Attention {
        #[arg(long)]
        json: bool,
    },
    /// Find tenants by part of a name, slug or staff email, a customer company's name, or an id.
    Search {
        /// 3-200 characters.
        query: String,
        #[arg(long)]
        json: bool,
    },
    /// The platform's plans (seats, trials, features, billing prices).
    Plan {
        #[command(subcommand)]
        command: plan::PlanCommand,
    },
    /// A tenant's single sign-on (OpenID Connect) and its verified email domains.
    Sso {
        #[command(subcommand)]
        command: sso::SsoCommand,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // A bad value (a variable or a flag): one line naming it, exit 2, as every other
        // configuration error.
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue
            ) =>
        {
            eprintln!("{}", e.to_string().lines().next().unwrap_or_default());
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    let format = match LogFormat::parse(&cli.log_format) {
        Ok(f) => f,
        Err(e) => return e.report(),
    };
    config::init_logging(format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            return CliError::Failed(anyhow::anyhow!("cannot start the runtime: {e}")).report();
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}

async fn run(mut cli: Cli) -> Result<(), CliError> {
    cli.database_url = config::secret_from_env_or_file(
        "DATABASE_URL",
        "DATABASE_URL_FILE",
        cli.database_url_file.as_deref(),
    )?;
    cli.workflow.secret_key = match config::secret_from_env_or_file(
        "PSA_SECRET_KEY",
        "PSA_SECRET_KEY_FILE",
        cli.workflow.secret_key_file.as_deref(),
    )? {
        None => None,
        Some(raw) => {
            let key = psa_workflows::secret::SecretKey::from_base64(&raw)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            // Older keys, kept for reading what they sealed until `psa secrets reseal`.
            let previous_file =
                std::env::var_os("PSA_SECRET_KEY_PREVIOUS_FILE").map(std::path::PathBuf::from);
            let previous = config::secret_from_env_or_file(
                "PSA_SECRET_KEY_PREVIOUS",
                "PSA_SECRET_KEY_PREVIOUS_FILE",
                previous_file.as_deref(),
            )?
            .unwrap_or_default();
            Some(key.with_previous(&previous).map_err(|_| {
                CliError::Usage(
                    "PSA_SECRET_KEY_PREVIOUS must be base64 keys of 32 bytes, comma separated"
                        .into(),
                )
            })?)
        }
    };
    match cli.command {
        Command::Migrate { json } => migrate::run(cli.database_url.as_deref(), json).await,
        Command::Management { command } => {
            management::run(cli.database_url.as_deref(), &cli.mail, command).await
        }
        Command::Serve {
            bind,
            metrics_bind,
            session_ttl_minutes,
            db_pool_size,
            limits,
            server,
            tracking,
        } => {
            serve::serve(
                &cli.workflow,
                &cli.mail,
                &cli.exports,
                &cli.webhooks,
                &tracking,
                cli.database_url.as_deref(),
                &bind,
                metrics_bind,
                session_ttl_minutes,
                db_pool_size,
                &limits,
                &server,
            )
            .await
        }
        Command::ApiKey { command } => api_key::run(cli.database_url.as_deref(), command).await,
        Command::Worker {
            metrics_bind,
            sweep_interval_seconds,
            export_retention_days,
            deadlines,
            tracking,
            db,
        } => {
            worker::worker(
                cli.database_url.as_deref(),
                &cli.workflow,
                &cli.mail,
                &cli.exports,
                &cli.webhooks,
                &tracking,
                &db,
                metrics_bind,
                std::time::Duration::from_secs(sweep_interval_seconds),
                export_retention_days,
                &deadlines,
            )
            .await
        }
        Command::Tenant { command } => {
            tenant::tenant(
                cli.database_url.as_deref(),
                &cli.workflow,
                &cli.mail,
                &cli.exports,
                command,
            )
            .await
        }
        Command::User { command } => {
            user::run(cli.database_url.as_deref(), &cli.mail, command).await
        }
        Command::Probe { url } => probe::run(&url).await,
        Command::Demo { exit, bind } => {
            let temporal = std::env::var("TEMPORAL_ADDRESS").ok();
            demo::demo(
                cli.database_url.as_deref(),
                temporal.as_deref(),
                &cli.mail,
                exit,
                bind,
            )
            .await
        }
        Command::Customers { command } => {
            customers::customers(cli.database_url.as_deref(), command).await
        }
        Command::Events { command } => events::run(cli.database_url.as_deref(), command).await,
        Command::Secrets { command } => {
            secrets::run(
                cli.database_url.as_deref(),
                &cli.workflow,
                &cli.webhooks,
                command,
            )
            .await
        }
        Command::Plan { command } => plan::run(cli.database_url.as_deref(), command).await,
        Command::Attention { json } => attention::run(cli.database_url.as_deref(), json).await,
        Command::Search { query, json } => {
            search::run(cli.database_url.as_deref(), &query, json).await
        }
        Command::Sso { command } => {
            sso::run(
                cli.database_url.as_deref(),
                &cli.workflow,
                &cli.mail,
                &cli.webhooks,
                command,
            )
            .await
        }
        Command::Webhooks { command } => {
            webhooks::webhooks(
                cli.database_url.as_deref(),
                &cli.workflow,
                &cli.webhooks,
                command,
            )
            .await
        }
    }
}
