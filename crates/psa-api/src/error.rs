//! The API's error contract, in one place:
//! `{"error": {"code": "...", "message": "...", "fields": {"<field>": "<message>"}}}`.
//!
//! Codes are stable. 4xx for the caller's mistakes, 5xx only for ours; a 5xx is logged with its
//! cause and answered with a generic message, never database text.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Model(psa_models::Error),
    #[error("authentication required")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// The caller's tenant is suspended or canceled: 403 `tenant_inactive` (the credential is
    /// kept; it works again when the tenant is reactivated or restored).
    #[error("This organisation's access is suspended: contact the platform's support")]
    TenantInactive,
    #[error("{message}")]
    BadRequest {
        status: StatusCode,
        field: Option<String>,
        message: String,
    },
    #[error("not found")]
    NotFound,
    /// An `Idempotency-Key` already used for a different request: 409.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    /// The request took longer than the server allows: 503 `timeout`. Its transaction is
    /// dropped (rolled back) unless the deadline fell while it was committing.
    #[error(
        "The request took too long and was stopped; it was most likely not applied: check, or retry it (with the same Idempotency-Key where it has one)"
    )]
    Timeout,
    /// Too many requests: 429 with `Retry-After`.
    #[error("Too many requests: try again in {} s", retry_after.as_secs())]
    RateLimited { retry_after: std::time::Duration },
    /// The operation mails a link and this server has no mail settings: 409. (The API never
    /// shows a link instead: whoever asked could then sign in as the user.)
    #[error(
        "This server sends no email (PSA_SMTP_URL is not set): an operator can run the psa CLI, which prints the link instead"
    )]
    MailNotConfigured,
    /// The mail server refused or could not be reached: 503, nothing was written.
    #[error("The email could not be sent, nothing was changed: {0}")]
    MailFailed(String),
    /// The password matched in several organisations: 409 `tenant_required`, with them in the
    /// body's `tenants`; the caller repeats the sign-in naming one.
    #[error("This email signs in to several organisations: choose one and sign in again naming it")]
    TenantRequired(Vec<TenantChoice>),
    /// The password was right and a second factor is due: 401 `mfa_required`, with the
    /// `mfa_token` that carries the sign-in on (`POST /api/v1/auth/mfa`) and the methods.
    #[error(
        "A second factor is needed: a code from your authenticator app, a recovery code or a passkey"
    )]
    MfaRequired(MfaChallenge),
    /// The user's organisation signs in through its identity provider only: 403 `sso_required`.
    #[error(
        "Your organisation signs in through its identity provider: continue with your email to be sent there"
    )]
    SsoRequired,
    /// A wrong second-factor code: 401 `invalid_code`.
    #[error("The code is not right")]
    InvalidCode,
    /// A passkey's answer that does not sign this user in (not theirs, not registered, wrongly
    /// signed, or to another challenge): 401 `invalid_passkey`.
    #[error("This passkey does not sign in to this account: try again or use another way")]
    InvalidPasskey,
    /// An `mfa_token` that is unknown, used, expired or out of attempts: 401 `invalid_mfa_token`.
    #[error("This sign-in has expired or was already completed: sign in again")]
    InvalidMfaToken,
    /// The session may only set up a second factor (its tenant requires one): 403
    /// `mfa_enrollment_required`.
    #[error(
        "Your organisation requires a second factor: set up an authenticator app first (POST /api/v1/auth/mfa/totp)"
    )]
    MfaEnrollmentRequired,
    /// A dependency (Temporal) is down or not configured: 503, retry later.
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiError {
    pub fn bad_request(field: Option<String>, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            status: StatusCode::BAD_REQUEST,
            field,
            message: message.into(),
        }
    }

    pub fn internal(e: impl Into<anyhow::Error>) -> Self {
        ApiError::Internal(e.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Model(e) => match e {
                psa_models::Error::Validation { .. } => StatusCode::UNPROCESSABLE_ENTITY,
                psa_models::Error::EmailExists | psa_models::Error::Conflict { .. } => {
                    StatusCode::CONFLICT
                }
                psa_models::Error::InvalidLink(_) => StatusCode::BAD_REQUEST,
                // Converted to the API's own variants by `From`; here for completeness.
                psa_models::Error::Forbidden(_) | psa_models::Error::Refused { .. } => {
                    StatusCode::FORBIDDEN
                }
                psa_models::Error::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                psa_models::Error::InvalidState { .. } => StatusCode::CONFLICT,
                // A reference to a row the caller cannot see (missing, or another tenant's) is
                // indistinguishable from a missing row.
                psa_models::Error::ForeignKey { .. } | psa_models::Error::NotFound { .. } => {
                    StatusCode::NOT_FOUND
                }
                psa_models::Error::Database(_) | psa_models::Error::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            ApiError::Unauthorized
            | ApiError::MfaRequired(_)
            | ApiError::InvalidCode
            | ApiError::InvalidPasskey
            | ApiError::InvalidMfaToken => StatusCode::UNAUTHORIZED,
            ApiError::MfaEnrollmentRequired | ApiError::SsoRequired => StatusCode::FORBIDDEN,
            ApiError::Forbidden(_) | ApiError::TenantInactive => StatusCode::FORBIDDEN,
            ApiError::BadRequest { status, .. } => *status,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::IdempotencyKeyReused(_) | ApiError::TenantRequired(_) => StatusCode::CONFLICT,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::MailNotConfigured => StatusCode::CONFLICT,
            ApiError::MailFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Model(e) => e.code(),
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::TenantInactive => "tenant_inactive",
            ApiError::BadRequest { .. } => "validation_error",
            ApiError::NotFound => "not_found",
            ApiError::IdempotencyKeyReused(_) => "idempotency_key_reused",
            ApiError::TenantRequired(_) => "tenant_required",
            ApiError::MfaRequired(_) => "mfa_required",
            ApiError::InvalidCode => "invalid_code",
            ApiError::InvalidPasskey => "invalid_passkey",
            ApiError::InvalidMfaToken => "invalid_mfa_token",
            ApiError::MfaEnrollmentRequired => "mfa_enrollment_required",
            ApiError::SsoRequired => "sso_required",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::Timeout => "timeout",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::MailNotConfigured => "mail_not_configured",
            ApiError::MailFailed(_) => "mail_failed",
            ApiError::Internal(_) => "internal",
        }
    }
}

impl ApiError {
    /// What the log says of a failure: the cause chain, but of a database error only its
    /// SQLSTATE, message and constraint. PostgreSQL's DETAIL and WHERE carry row values (emails,
    /// names) that have no place in logs.
    pub fn log_safe(&self) -> String {
        match self {
            ApiError::Model(psa_models::Error::Database(e)) => match e.as_database_error() {
                Some(db) => format!(
                    "database error {}: {} (constraint {})",
                    db.code().as_deref().unwrap_or("-"),
                    db.message(),
                    db.constraint().unwrap_or("-")
                ),
                None => format!("database error: {e}"),
            },
            ApiError::Internal(e) => format!("{e:#}"),
            other => format!("{other}"),
        }
    }
}

/// The operations' refusals in the API's own terms (their codes and messages are the API's
/// contract); the rest as they are.
impl From<psa_models::Error> for ApiError {
    fn from(e: psa_models::Error) -> Self {
        match e {
            psa_models::Error::Forbidden(m) => ApiError::Forbidden(m.into_owned()),
            psa_models::Error::Unavailable {
                code: "mail_failed",
                message,
            } => ApiError::MailFailed(message.into_owned()),
            psa_models::Error::Unavailable { message, .. } => {
                ApiError::Unavailable(message.into_owned())
            }
            psa_models::Error::InvalidState {
                code: "mail_not_configured",
                ..
            } => ApiError::MailNotConfigured,
            other => ApiError::Model(other),
        }
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Model(e.into())
    }
}

/// A sign-in whose password was right, owing a second factor: the token that carries it on, and
/// the methods the user can pass with.
#[derive(Debug, Clone)]
pub struct MfaChallenge {
    pub token: String,
    pub methods: Vec<&'static str>,
}

/// An organisation a sign-in can continue in (the password matched there): the body of a
/// `tenant_required` answer names them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TenantChoice {
    #[schema(value_type = uuid::Uuid)]
    pub id: psa_models::TenantId,
    pub slug: String,
    pub name: String,
}

/// The error body.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
    /// With `tenant_required`: the organisations the sign-in can continue in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenants: Option<Vec<TenantChoice>>,
    /// With `mfa_required`: carries the sign-in on to `POST /api/v1/auth/mfa` (5 minutes, once,
    /// at most 5 wrong codes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mfa_token: Option<String>,
    /// With `mfa_required`: the second factors this user can pass with (`totp`,
    /// `recovery_code`, `passkey`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<&'static str>>,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// One of validation_error, email_exists, foreign_key_error, not_found, unauthorized,
    /// forbidden, conflict, invalid_link, idempotency_key_reused, tenant_required, mfa_required,
    /// invalid_code, invalid_passkey, invalid_mfa_token, mfa_enrollment_required, sso_required, mail_not_configured,
    /// rate_limited, timeout, mail_failed, unavailable, internal.
    pub code: &'static str,
    pub message: String,
    /// Messages by offending input field.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let message = if let ApiError::Unavailable(m) = &self {
            m.clone()
        } else if matches!(self, ApiError::Timeout | ApiError::MailFailed(_)) {
            self.to_string()
        } else if status.is_server_error() {
            tracing::error!(error = %self.log_safe(), "request failed");
            "An unexpected error occurred".to_owned()
        } else {
            self.to_string()
        };
        let field = match &self {
            ApiError::Model(e) => e.field().filter(|f| !f.is_empty()).map(str::to_owned),
            ApiError::BadRequest { field, .. } => field.clone(),
            ApiError::IdempotencyKeyReused(_) => Some("Idempotency-Key".to_owned()),
            _ => None,
        };
        let mut fields = serde_json::Map::new();
        if let Some(f) = field {
            fields.insert(f, serde_json::Value::String(message.clone()));
        }
        let tenants = match &self {
            ApiError::TenantRequired(t) => Some(t.clone()),
            _ => None,
        };
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code(),
                message,
                fields,
            },
            tenants,
            mfa_token: match &self {
                ApiError::MfaRequired(c) => Some(c.token.clone()),
                _ => None,
            },
            methods: match &self {
                ApiError::MfaRequired(c) => Some(c.methods.clone()),
                _ => None,
            },
        };
        let mut response = (status, Json(body)).into_response();
        if let ApiError::RateLimited { retry_after } = &self
            && let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}
