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
            // The tenant's state refuses what was asked (the management tenant, a transition that
            // does not exist): the operator's request, not a failure.
            psa_models::Error::InvalidState { .. } => CliError::Usage(e.to_string()),
            psa_models::Error::Validation { .. } | psa_models::Error::ForeignKey { .. } => {
                CliError::Usage(match e.field() {
                    Some(f) if !f.is_empty() => format!("invalid {f}: {e}"),
                    _ => e.to_string(),
                })
            }
            psa_models::Error::Database(inner) => {
                CliError::Failed(anyhow::Error::new(inner).context("database error"))
            }
            psa_models::Error::Unavailable {
                code: "mail_failed",
                message,
            } => CliError::Failed(anyhow::anyhow!(
                "the invitation email could not be sent, nothing was changed: {message}"
            )),
            // Holding the database's credentials is every permission; a refusal here is a
            // setting (the management tenant) to fix.
            psa_models::Error::Forbidden(_) => CliError::Usage(e.to_string()),
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
    // Colours only on a terminal: in a log file or a pod's log, escape codes would break every
    // grep the runbooks give (`kind=transient`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Pretty => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// A secret from its environment variable, or from the file its `_FILE` variable (or flag)
/// names, trimmed; `None` when neither is set. Both set is a usage error: which one wins would be
/// a guess.
pub fn secret_from_env_or_file(
    var: &str,
    file_var: &str,
    file: Option<&std::path::Path>,
) -> Result<Option<String>, CliError> {
    let from_env = std::env::var(var).ok().filter(|v| !v.trim().is_empty());
    match (from_env, file) {
        (Some(_), Some(_)) => Err(CliError::Usage(format!(
            "both {var} and {file_var} are set: set one"
        ))),
        (Some(v), None) => Ok(Some(v)),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|e| {
                CliError::Usage(format!("{file_var}: cannot read {}: {e}", path.display()))
            })?;
            let v = text.trim().to_owned();
            if v.is_empty() {
                return Err(CliError::Usage(format!(
                    "{file_var}: {} is empty",
                    path.display()
                )));
            }
            Ok(Some(v))
        }
        (None, None) => Ok(None),
    }
}

/// The owner-role pool, from `DATABASE_URL` (or its file).
pub async fn pool(url: Option<&str>, max_connections: u32) -> Result<sqlx::PgPool, CliError> {
    pool_with(url, max_connections, None).await
}

/// The database limits of the long-running processes (`serve`, `worker`).
#[derive(clap::Args, Clone, Debug)]
pub struct DbTimeoutArgs {
    /// Longest a statement may run (PostgreSQL `statement_timeout`), in seconds.
    #[arg(long, env = "PSA_DB_STATEMENT_TIMEOUT_SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_statement_timeout_seconds: u64,
    /// Longest a transaction may stay open and idle (`idle_in_transaction_session_timeout`), in
    /// seconds.
    #[arg(long, env = "PSA_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub db_idle_in_transaction_timeout_seconds: u64,
}

impl DbTimeoutArgs {
    pub fn timeouts(&self) -> psa_models::db::DbTimeouts {
        psa_models::db::DbTimeouts {
            statement: std::time::Duration::from_secs(self.db_statement_timeout_seconds),
            idle_in_transaction: std::time::Duration::from_secs(
                self.db_idle_in_transaction_timeout_seconds,
            ),
        }
    }
}

/// The pool, with server-side timeouts when given.
pub async fn pool_with(
    url: Option<&str>,
    max_connections: u32,
    timeouts: Option<psa_models::db::DbTimeouts>,
) -> Result<sqlx::PgPool, CliError> {
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
    psa_models::db::connect_with(url, max_connections, timeouts)
        .await
        .map_err(|e| {
            CliError::Failed(
                anyhow::Error::new(e).context("cannot connect to PostgreSQL (DATABASE_URL)"),
            )
        })
}

/// Mail and links: how invitations and password resets reach people (docs/configuration.md,
/// "Mail"). Read by `serve`, `worker` and the commands that invite.
#[derive(clap::Args, Clone, Debug)]
pub struct MailArgs {
    /// A file holding the SMTP URL (a mounted secret). The URL itself, which may carry the SMTP
    /// password, is read from `PSA_SMTP_URL` only.
    #[arg(long, env = "PSA_SMTP_URL_FILE", global = true, value_name = "PATH")]
    pub smtp_url_file: Option<std::path::PathBuf>,
    /// The sender of psa's emails: `psa <noreply@example.com>`. Required with an SMTP URL.
    #[arg(long, env = "PSA_MAIL_FROM", global = true)]
    pub mail_from: Option<String>,
    /// The address users reach `psa serve` at; links in emails point there.
    #[arg(long, env = "PSA_PUBLIC_URL", global = true,
          default_value = psa_models::invitations::DEFAULT_PUBLIC_URL)]
    pub public_url: String,
    /// Hours an invitation link works.
    #[arg(long, env = "PSA_INVITATION_TTL_HOURS", global = true, default_value_t = 72,
          value_parser = clap::value_parser!(u64).range(1..=720))]
    pub invitation_ttl_hours: u64,
    /// Minutes a password-reset link works.
    #[arg(long, env = "PSA_PASSWORD_RESET_TTL_MINUTES", global = true, default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(5..=1440))]
    pub password_reset_ttl_minutes: u64,
}

impl MailArgs {
    /// The delivery settings; a usage error (exit 2) names what is wrong.
    pub fn delivery(&self) -> Result<psa_models::invitations::Delivery, CliError> {
        let usage = |e: psa_models::mail::ConfigError| CliError::Usage(e.to_string());
        let smtp = secret_from_env_or_file(
            "PSA_SMTP_URL",
            "PSA_SMTP_URL_FILE",
            self.smtp_url_file.as_deref(),
        )?;
        let mailer = match smtp {
            None => None,
            Some(url) => {
                let from = self
                    .mail_from
                    .as_deref()
                    .filter(|f| !f.trim().is_empty())
                    .ok_or(psa_models::mail::ConfigError::MissingFrom)
                    .map_err(usage)?;
                Some(
                    psa_models::mail::Mailer::new(&secrecy::SecretString::from(url), from)
                        .map_err(usage)?,
                )
            }
        };
        Ok(psa_models::invitations::Delivery {
            mailer,
            public_url: psa_models::mail::parse_public_url(&self.public_url).map_err(usage)?,
            invitation_ttl: std::time::Duration::from_secs(self.invitation_ttl_hours * 3600),
            reset_ttl: std::time::Duration::from_secs(self.password_reset_ttl_minutes * 60),
        })
    }
}

/// A tenant id argument: a UUID (clap's value parser; a malformed one is a usage error, exit 2).
pub fn tenant_id(raw: &str) -> Result<psa_models::TenantId, String> {
    uuid::Uuid::parse_str(raw.trim())
        .map(psa_models::TenantId)
        .map_err(|_| format!("invalid tenant id {raw:?}: expected a UUID"))
}

/// A UUID argument (an API key's, a webhook endpoint's, a delivery's).
pub fn uuid(raw: &str) -> Result<uuid::Uuid, String> {
    uuid::Uuid::parse_str(raw.trim()).map_err(|_| format!("expected a UUID, not {raw:?}"))
}

impl From<sqlx::Error> for CliError {
    fn from(e: sqlx::Error) -> Self {
        psa_models::Error::from(e).into()
    }
}
