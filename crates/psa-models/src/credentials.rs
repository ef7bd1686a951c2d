//! Bearer credentials: login sessions and API keys.
//!
//! Tokens are 256-bit random values with a prefix naming their kind; only their SHA-256 digest is
//! stored (a slow hash would add latency without adding safety to a random 256-bit value). A
//! token is shown once, when it is made.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Result, TenantId, UserId, users};

pub const SESSION_PREFIX: &str = "psa_s_";
pub const API_KEY_PREFIX: &str = "psa_k_";

/// What a token stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Session(Uuid),
    ApiKey(Uuid),
}

/// The owner of a valid token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub tenant: TenantId,
    pub user: UserId,
    pub credential: Credential,
    /// A client-portal user (`users.user_type = 'client'`): a customer of the tenant, not staff.
    pub client_portal: bool,
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

/// Finds who holds `token`: an unexpired, unrevoked session or an unrevoked API key of an active
/// user. `None` for anything else, including a token of neither kind.
pub async fn authenticate(conn: &mut PgConnection, token: &str) -> Result<Option<Holder>> {
    let row: Option<(TenantId, UserId, Uuid, bool)> = if token.starts_with(SESSION_PREFIX) {
        sqlx::query_as(
            "SELECT s.tenant, s.user_id, s.session_id, u.user_type = 'client' FROM sessions s \
             JOIN users u ON u.tenant = s.tenant AND u.user_id = s.user_id \
             WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now() \
               AND NOT u.is_inactive",
        )
        .bind(digest(token))
        .fetch_optional(conn)
        .await?
    } else if token.starts_with(API_KEY_PREFIX) {
        sqlx::query_as(
            "SELECT k.tenant, k.user_id, k.api_key_id, u.user_type = 'client' FROM api_keys k \
             JOIN users u ON u.tenant = k.tenant AND u.user_id = k.user_id \
             WHERE k.key_hash = $1 AND k.revoked_at IS NULL AND NOT u.is_inactive",
        )
        .bind(digest(token))
        .fetch_optional(conn)
        .await?
    } else {
        None
    };
    Ok(row.map(|(tenant, user, id, client_portal)| Holder {
        tenant,
        user,
        client_portal,
        credential: if token.starts_with(SESSION_PREFIX) {
            Credential::Session(id)
        } else {
            Credential::ApiKey(id)
        },
    }))
}

/// A new session token, shown once.
#[derive(Debug)]
pub struct NewSession {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Opens a session for a user who has just proven who they are.
pub async fn create_session(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    expires_at: DateTime<Utc>,
) -> Result<NewSession> {
    let token = new_token(SESSION_PREFIX);
    sqlx::query(
        "INSERT INTO sessions (tenant, user_id, token_hash, expires_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(tenant)
    .bind(user)
    .bind(digest(token.expose_secret()))
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(NewSession { token, expires_at })
}

/// Ends a session.
pub async fn revoke_session(
    conn: &mut PgConnection,
    tenant: TenantId,
    session: Uuid,
) -> Result<()> {
    sqlx::query("UPDATE sessions SET revoked_at = now() WHERE tenant = $1 AND session_id = $2")
        .bind(tenant)
        .bind(session)
        .execute(conn)
        .await?;
    Ok(())
}

/// A new API key, as `psa api-key create` prints it.
#[derive(Debug)]
pub struct NewApiKey {
    pub api_key_id: Uuid,
    pub key: SecretString,
}

/// Creates an API key for a user of a tenant. The key is returned once; only its digest is kept.
pub async fn create_api_key(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    description: Option<&str>,
) -> Result<NewApiKey> {
    users::get(conn, tenant, user).await?;
    let key = new_token(API_KEY_PREFIX);
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO api_keys (tenant, user_id, description, key_hash) VALUES ($1, $2, $3, $4) \
         RETURNING api_key_id",
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
pub async fn revoke_api_key(conn: &mut PgConnection, api_key_id: Uuid) -> Result<bool> {
    let n = sqlx::query(
        "UPDATE api_keys SET revoked_at = now() WHERE api_key_id = $1 AND revoked_at IS NULL",
    )
    .bind(api_key_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(n > 0)
}
