//! Configuration and the CLI's error model: configuration and input problems exit 2 with one
//! line naming the problem; failures of the operation exit 1.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad configuration or input (exit 2).
    #[error("{0}")]
    Usage(String),
    /// The operation failed (exit 1).
    #[error("{0:#}")]
    Failed(anyhow::Error),
    /// The operation failed and its output already says how (exit 1, nothing more printed).
    #[error("")]
    Reported,
}

impl CliError {
    pub fn report(&self) -> ExitCode {
        if !matches!(self, CliError::Reported) {
            eprintln!("error: {self}");
        }
        match self {
            CliError::Usage(_) => ExitCode::from(2),
            CliError::Failed(_) | CliError::Reported => ExitCode::from(1),
        }
    }
}

impl From<psa_models::Error> for CliError {
    fn from(e: psa_models::Error) -> Self {
        match e {
            psa_models::Error::Validation { .. } | psa_models::Error::ForeignKey { .. } => {
                CliError::Usage(match e.field() {
                    Some(f) if !f.is_empty() => format!("invalid {f}: {e}"),
                    _ => e.to_string(),
                })
            }
            psa_models::Error::Database(inner) => {
                CliError::Failed(anyhow::Error::new(inner).context("database error"))
            }
            other => CliError::Failed(anyhow::Error::new(other)),
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Result<Self, CliError> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(CliError::Usage(format!(
                "PSA_LOG_FORMAT must be pretty or json, not {other:?}"
            ))),
        }
    }
}

/// Logs go to stderr, so stdout stays for results (`--json`).
pub fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The owner-role pool, from `DATABASE_URL` (or `--database-url`).
pub async fn pool(url: Option<&str>, max_connections: u32) -> Result<sqlx::PgPool, CliError> {
    let url = url.filter(|u| !u.trim().is_empty()).ok_or_else(|| {
        CliError::Usage(
            "DATABASE_URL is not set: give the PostgreSQL URL (postgres://user@host:port/db)"
                .into(),
        )
    })?;
    let scheme_ok = url.starts_with("postgres://") || url.starts_with("postgresql://");
    if !scheme_ok || url.parse::<sqlx::postgres::PgConnectOptions>().is_err() {
        return Err(CliError::Usage(
            "DATABASE_URL is not a valid PostgreSQL URL".into(),
        ));
    }
    psa_models::db::connect(url, max_connections)
        .await
        .map_err(|e| {
            CliError::Failed(
                anyhow::Error::new(e).context("cannot connect to PostgreSQL (DATABASE_URL)"),
            )
        })
}
