//! Authentication: bearer tokens that are either sessions (from `POST /api/v1/auth/login`) or
//! API keys (from `psa api-key create`). Only SHA-256 digests of tokens are stored: tokens are
//! 256-bit random values, so a slow hash would add latency without adding safety.
//!
//! The caller's tenant comes from the credential and nothing else; the [`Caller`] extractor is
//! the only way a handler learns it, so a handler cannot take it from the request body.

use std::sync::LazyLock;

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, Postgres, Transaction};
use utoipa::ToSchema;

use psa_models::validate::EmailAddress;
use psa_models::{TenantId, UserId, db, password, users};

use crate::AppState;
use crate::error::ApiError;
use crate::extract::ApiJson;

const SESSION_PREFIX: &str = "psa_s_";
const API_KEY_PREFIX: &str = "psa_k_";

/// What a credential stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Session(uuid::Uuid),
    ApiKey(uuid::Uuid),
}

/// The authenticated caller: a user of a tenant.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub tenant: TenantId,
    pub user: UserId,
    pub credential: Credential,
}

impl Caller {
    /// Begins the request's transaction, confined to the caller's tenant by row-level security.
    pub async fn begin(
        &self,
        state: &AppState,
    ) -> Result<Transaction<'static, Postgres>, ApiError> {
        Ok(db::begin_tenant(&state.pool, self.tenant).await?)
    }

    /// Fails with 403 unless the caller holds `resource:action`.
    pub async fn require(
        &self,
        conn: &mut PgConnection,
        resource: &str,
        action: &str,
    ) -> Result<(), ApiError> {
        if users::has_permission(conn, self.tenant, self.user, resource, action).await? {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "Permission denied: {resource}:{action} is required"
            )))
        }
    }
}

fn new_token(prefix: &str) -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    SecretString::from(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(ApiError::Unauthorized)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or(ApiError::Unauthorized)?;
        let row: Option<(TenantId, UserId, uuid::Uuid)> = if token.starts_with(SESSION_PREFIX) {
            sqlx::query_as(
                "SELECT s.tenant, s.user_id, s.session_id FROM sessions s \
                 JOIN users u ON u.tenant = s.tenant AND u.user_id = s.user_id \
                 WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now() \
                   AND NOT u.is_inactive",
            )
            .bind(digest(token))
            .fetch_optional(&state.pool)
            .await?
        } else if token.starts_with(API_KEY_PREFIX) {
            sqlx::query_as(
                "SELECT k.tenant, k.user_id, k.api_key_id FROM api_keys k \
                 JOIN users u ON u.tenant = k.tenant AND u.user_id = k.user_id \
                 WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND NOT u.is_inactive",
            )
            .bind(digest(token))
            .fetch_optional(&state.pool)
            .await?
        } else {
            None
        };
        let (tenant, user, id) = row.ok_or(ApiError::Unauthorized)?;
        let credential = if token.starts_with(SESSION_PREFIX) {
            Credential::Session(id)
        } else {
            Credential::ApiKey(id)
        };
        Ok(Caller {
            tenant,
            user,
            credential,
        })
    }
}

/// `POST /api/v1/auth/login` body.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(value_type = uuid::Uuid)]
    pub tenant_id: TenantId,
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// A new session.
#[derive(Serialize, ToSchema)]
pub struct LoginResponse {
    /// The bearer token; shown once.
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// A hash to verify against when the email is unknown, so that an unknown email costs the same
/// time as a wrong password and does not reveal whether the account exists.
static DUMMY_HASH: LazyLock<String> = LazyLock::new(|| {
    password::hash_blocking(&password::generate()).expect("hashing a generated password")
});

/// Log in with email and password; returns a session token.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, body = LoginResponse), (status = 401, body = crate::error::ErrorBody)))]
pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<Json<LoginResponse>, ApiError> {
    let Ok(email) = EmailAddress::parse(&req.email) else {
        return Err(ApiError::Unauthorized);
    };
    let mut tx = db::begin_tenant(&state.pool, req.tenant_id).await?;
    let found = users::find_for_login(&mut tx, req.tenant_id, &email).await?;
    let (user, hash) = match found {
        Some((user, hash)) => (Some(user), hash),
        None => (None, DUMMY_HASH.clone()),
    };
    let ok = password::verify(&req.password, &hash).await?;
    let Some(user) = user.filter(|_| ok) else {
        tracing::info!(tenant = %req.tenant_id, "login refused");
        return Err(ApiError::Unauthorized);
    };
    let token = new_token(SESSION_PREFIX);
    let expires_at = Utc::now() + state.session_ttl;
    sqlx::query(
        "INSERT INTO sessions (tenant, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(req.tenant_id)
    .bind(user.user_id)
    .bind(digest(token.expose_secret()))
    .bind(expires_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!(tenant = %req.tenant_id, user = %user.user_id, "login");
    Ok(Json(LoginResponse {
        token: token.expose_secret().to_owned(),
        expires_at,
    }))
}

/// End the current session.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204), (status = 400, body = crate::error::ErrorBody), (status = 401, body = crate::error::ErrorBody)))]
pub async fn logout(State(state): State<AppState>, caller: Caller) -> Result<StatusCode, ApiError> {
    let Credential::Session(session) = caller.credential else {
        return Err(ApiError::bad_request(
            None,
            "API keys are revoked with `psa api-key revoke`, not logged out",
        ));
    };
    let mut tx = caller.begin(&state).await?;
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE tenant = $1 AND session_id = $2")
        .bind(caller.tenant)
        .bind(session)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A new API key, as `psa api-key create` prints it.
#[derive(Debug)]
pub struct NewApiKey {
    pub api_key_id: uuid::Uuid,
    pub key: SecretString,
}

/// Creates an API key for a user of a tenant. The key is returned once; only its digest is kept.
pub async fn create_api_key(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    description: Option<&str>,
) -> Result<NewApiKey, psa_models::Error> {
    users::get(conn, tenant, user).await?;
    let key = new_token(API_KEY_PREFIX);
    let id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO api_keys (tenant, user_id, description, key_hash) VALUES ($1, $2, $3, $4) RETURNING api_key_id",
    )
    .bind(tenant)
    .bind(user)
    .bind(description)
    .bind(digest(key.expose_secret()))
    .fetch_one(conn)
    .await?;
    Ok(NewApiKey {
        api_key_id: id,
        key,
    })
}

/// Revokes an API key; `false` when there is no such active key.
pub async fn revoke_api_key(
    conn: &mut PgConnection,
    api_key_id: uuid::Uuid,
) -> Result<bool, psa_models::Error> {
    let n = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE api_key_id = $1 AND revoked_at IS NULL",
    )
    .bind(api_key_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}
