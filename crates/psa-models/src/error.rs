//! The one error type of the models, with stable machine codes.
//!
//! Database constraint violations are mapped to the domain error they mean (by constraint name,
//! which the migrations set explicitly), so that a race the pre-checks cannot see still yields
//! `email_exists` rather than a generic failure. No database message ever reaches `Display`: the
//! original error is kept as the `source` for logs.

use std::borrow::Cow;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The input breaks a rule; `field` names the offending input field.
    #[error("{message}")]
    Validation {
        field: Cow<'static, str>,
        message: Cow<'static, str>,
    },
    /// A contact with this email already exists in the tenant.
    #[error("A contact with this email address already exists in the system")]
    EmailExists,
    /// A referenced row does not exist in the same tenant.
    #[error("{message}")]
    ForeignKey {
        field: Cow<'static, str>,
        message: Cow<'static, str>,
    },
    /// The addressed row does not exist (in this tenant).
    #[error("{entity} not found")]
    NotFound { entity: &'static str },
    /// The operation conflicts with the current state (a duplicate name, a row still in use, a
    /// precondition such as missing seeds).
    #[error("{message}")]
    Conflict {
        field: Option<Cow<'static, str>>,
        message: Cow<'static, str>,
    },
    /// The tenant's state refuses the operation (the management tenant, a run in flight, a
    /// transition that does not exist); `code` says which (`management_tenant`,
    /// `provisioning_in_flight`, `tenant_state`).
    #[error("{message}")]
    InvalidState {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// An invitation or password-reset link that no longer works; the message says why.
    #[error("{0}")]
    InvalidLink(&'static str),
    /// The actor lacks the permission the operation needs; the message names it.
    #[error("{0}")]
    Forbidden(Cow<'static, str>),
    /// The actor may not do this here, whatever their permissions, for a reason `code` names
    /// (`support_access_disabled`: the tenant refuses support sessions; `not_in_support_session`:
    /// a support session does not touch credentials).
    #[error("{message}")]
    Refused {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// A service the operation needs (Temporal, mail, the export store) cannot be used now, or
    /// is not configured here; nothing was written. `code`: `unavailable`, `mail_failed`.
    #[error("{message}")]
    Unavailable {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// A database failure that is not the caller's fault.
    #[error("an unexpected database error occurred")]
    Database(#[source] sqlx::Error),
    /// Any other failure that is not the caller's fault.
    #[error("an unexpected error occurred")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl Error {
    /// The stable machine-readable code of this error (the API's `error.code`).
    pub fn code(&self) -> &'static str {
        match self {
            Error::Validation { .. } => "validation_error",
            Error::EmailExists => "email_exists",
            Error::ForeignKey { .. } => "foreign_key_error",
            Error::NotFound { .. } => "not_found",
            Error::Conflict { .. } => "conflict",
            Error::InvalidLink(_) => "invalid_link",
            Error::Forbidden(_) => "forbidden",
            Error::Unavailable { code, .. } => code,
            Error::InvalidState { code, .. } => code,
            Error::Refused { code, .. } => code,
            Error::Database(_) | Error::Internal(_) => "internal",
        }
    }

    /// The input field the error is about, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Validation { field, .. } | Error::ForeignKey { field, .. } => Some(field),
            Error::Conflict { field, .. } => field.as_deref(),
            Error::EmailExists => Some("email"),
            _ => None,
        }
    }

    pub fn validation(
        field: impl Into<Cow<'static, str>>,
        message: impl Into<Cow<'static, str>>,
    ) -> Self {
        Error::Validation {
            field: field.into(),
            message: message.into(),
        }
    }

    pub fn conflict(field: Option<&'static str>, message: impl Into<Cow<'static, str>>) -> Self {
        Error::Conflict {
            field: field.map(Cow::Borrowed),
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<Cow<'static, str>>) -> Self {
        Error::Forbidden(message.into())
    }

    pub fn unavailable(message: impl Into<Cow<'static, str>>) -> Self {
        Error::Unavailable {
            code: "unavailable",
            message: message.into(),
        }
    }

    pub fn internal(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Error::Internal(Box::new(e))
    }

    /// Whether retrying the same operation later may succeed: connection loss, failover,
    /// serialization failures and deadlocks. Everything else (the caller's mistakes, real
    /// conflicts) is permanent. The workflow uses this to tell "retry for minutes" from
    /// "roll back now".
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Database(e) => is_transient_sqlx(e),
            _ => false,
        }
    }
}

/// Classifies a sqlx error as transient (worth retrying) or not. See [`Error::is_transient`].
pub fn is_transient_sqlx(e: &sqlx::Error) -> bool {
    match e {
        // A message cut off or garbled on the wire (a server killed mid-reply) is the
        // connection's failure, not the statement's: a new connection may well succeed.
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") // connection exception
                || matches!(
                    &*code,
                    "40001" // serialization_failure
                    | "40P01" // deadlock_detected
                    | "57P01" // admin_shutdown
                    | "57P02" // crash_shutdown
                    | "57P03" // cannot_connect_now
                    | "25006" // read_only_sql_transaction: a failover in progress
                    | "53300" // too_many_connections
                    | "55P03" // lock_not_available
                )
        }),
        _ => false,
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        let Some(db) = e.as_database_error() else {
            return Error::Database(e);
        };
        let constraint = db.constraint().unwrap_or_default();
        match db.code().as_deref() {
            Some("23505") => match constraint {
                "contacts_tenant_email_unique" => Error::EmailExists,
                "companies_tenant_company_name_unique" => Error::conflict(
                    Some("company_name"),
                    "A company with this name already exists. Please choose a different name.",
                ),
                "companies_customer_tenant_unique" => Error::conflict(
                    Some("properties.tenant_id"),
                    "A customer company for this tenant already exists",
                ),
                "users_tenant_email_user_type_unique" => Error::conflict(
                    Some("email"),
                    "A user with this email address already exists",
                ),
                "user_passkeys_name_key" => Error::validation(
                    "name",
                    "You already have a passkey with this name: choose another",
                ),
                "user_passkeys_credential_key" => {
                    Error::conflict(None, "This passkey is already registered")
                }
                _ => Error::conflict(None, "The record already exists"),
            },
            Some("23503") => match constraint {
                "contacts_company_fkey" => Error::ForeignKey {
                    field: "company_id".into(),
                    message: "The selected company no longer exists".into(),
                },
                "companies_billing_contact_fkey" => Error::ForeignKey {
                    field: "billing_contact_id".into(),
                    message: "The selected billing contact does not exist".into(),
                },
                "companies_account_manager_fkey" => Error::ForeignKey {
                    field: "account_manager_id".into(),
                    message: "The selected account manager does not exist".into(),
                },
                "companies_region_fkey" => Error::ForeignKey {
                    field: "region_code".into(),
                    message: "The selected tax region does not exist".into(),
                },
                _ => Error::ForeignKey {
                    field: "".into(),
                    message: "Referenced data not found".into(),
                },
            },
            Some("23502") => {
                let column = not_null_column(db.message());
                Error::validation(column.clone(), format!("The {column} is required"))
            }
            // The customer link guard (migration `customer_link_guard`).
            Some("P0001") if constraint == "companies_customer_link" => Error::validation(
                "properties",
                "tenant_id, tenant_status, delete_after and deleted_at are set by the platform only",
            ),
            Some("P0001") if constraint == "companies_customer_record" => Error::conflict(
                None,
                "This company is a managed tenant's customer record: it is removed with the \
                 tenant's lifecycle, not deleted",
            ),
            Some("23514") | Some("22001") | Some("22P02") | Some("22003") => {
                Error::validation(constraint.to_owned(), "The data is invalid")
            }
            _ => Error::Database(e),
        }
    }
}

/// The column named by a not-null violation. sqlx does not expose the `column` field of the
/// error response, so it is read from PostgreSQL's fixed message format; only an identifier is
/// kept, never the rest of the message.
fn not_null_column(message: &str) -> String {
    message
        .split('"')
        .nth(1)
        .filter(|c| c.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_'))
        .unwrap_or("value")
        .to_owned()
}
