//! Passkeys (WebAuthn credentials) as stored: each a user's, named by them, with the relying
//! party library's record of it (`passkey`, JSON: the public key and signature counter, never a
//! secret). The ceremonies themselves are `psa_app::passkeys`; their server-side state between
//! two requests lives in `login_challenges` (see [`crate::sign_in`]).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Error, Result, TenantId, UserId};

/// How many passkeys one user may have.
pub const MAX_PER_USER: i64 = 20;

/// A passkey as its holder sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PasskeyView {
    pub passkey_id: Uuid,
    pub name: String,
    pub created_at: DateTime<Utc>,
    /// The last sign-in it made (none yet: never used).
    pub last_used_at: Option<DateTime<Utc>>,
}

/// A passkey's name: 1 to 64 characters, trimmed.
pub fn name(raw: &str) -> Result<String> {
    let n = raw.trim();
    if n.is_empty() {
        return Err(Error::validation(
            "name",
            "Name the passkey (for example the device it is on)",
        ));
    }
    if n.chars().count() > 64 {
        return Err(Error::validation(
            "name",
            "The name must be at most 64 characters",
        ));
    }
    if n.chars().any(char::is_control) {
        return Err(Error::validation(
            "name",
            "The name must not contain control characters",
        ));
    }
    Ok(n.to_owned())
}

/// The user's passkeys, oldest first.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Vec<PasskeyView>> {
    Ok(sqlx::query_as(
        "SELECT passkey_id, name, created_at, last_used_at FROM user_passkeys \
         WHERE tenant = $1 AND user_id = $2 ORDER BY created_at, passkey_id",
    )
    .bind(tenant)
    .bind(user)
    .fetch_all(conn)
    .await?)
}

/// The user's passkeys as the relying party library keeps them, with their ids.
pub async fn records(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Vec<(Uuid, serde_json::Value)>> {
    Ok(sqlx::query_as(
        "SELECT passkey_id, passkey FROM user_passkeys WHERE tenant = $1 AND user_id = $2 \
         ORDER BY created_at, passkey_id",
    )
    .bind(tenant)
    .bind(user)
    .fetch_all(conn)
    .await?)
}

/// One passkey's record, when it is an active user's (locked until the transaction ends: two
/// sign-ins with it at once check its counter one after the other).
pub async fn record_for_update(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    passkey: Uuid,
) -> Result<Option<serde_json::Value>> {
    Ok(sqlx::query_scalar(
        "SELECT p.passkey FROM user_passkeys p \
         JOIN users u ON u.tenant = p.tenant AND u.user_id = p.user_id \
         WHERE p.tenant = $1 AND p.user_id = $2 AND p.passkey_id = $3 AND NOT u.is_inactive \
         FOR UPDATE OF p",
    )
    .bind(tenant)
    .bind(user)
    .bind(passkey)
    .fetch_optional(conn)
    .await?)
}

/// The user's passkey with this credential id, locked until the transaction ends.
pub async fn by_credential_for_update(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    credential_id: &[u8],
) -> Result<Option<(Uuid, serde_json::Value)>> {
    Ok(sqlx::query_as(
        "SELECT passkey_id, passkey FROM user_passkeys \
         WHERE tenant = $1 AND user_id = $2 AND credential_id = $3 FOR UPDATE",
    )
    .bind(tenant)
    .bind(user)
    .bind(credential_id)
    .fetch_optional(conn)
    .await?)
}

/// Whether the user has a passkey of this name.
pub async fn name_taken(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    name: &str,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_passkeys \
                        WHERE tenant = $1 AND user_id = $2 AND name = $3)",
    )
    .bind(tenant)
    .bind(user)
    .bind(name)
    .fetch_one(conn)
    .await?)
}

/// How many passkeys the user has.
pub async fn count(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM user_passkeys WHERE tenant = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user)
            .fetch_one(conn)
            .await?,
    )
}

/// Stores a newly registered passkey (a taken name is a validation error on `name`; a credential
/// registered already, a conflict); at most [`MAX_PER_USER`].
pub async fn add(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    name: &str,
    credential_id: &[u8],
    passkey: &serde_json::Value,
) -> Result<PasskeyView> {
    // One registration at a time per user: the count below holds until this one is stored.
    sqlx::query("SELECT 1 FROM users WHERE tenant = $1 AND user_id = $2 FOR UPDATE")
        .bind(tenant)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    if count(conn, tenant, user).await? >= MAX_PER_USER {
        return Err(Error::validation(
            "name",
            format!("You have {MAX_PER_USER} passkeys already: remove one to add another"),
        ));
    }
    let view = sqlx::query_as(
        "INSERT INTO user_passkeys (tenant, user_id, name, credential_id, passkey) \
         VALUES ($1, $2, $3, $4, $5) \
         RETURNING passkey_id, name, created_at, last_used_at",
    )
    .bind(tenant)
    .bind(user)
    .bind(name)
    .bind(credential_id)
    .bind(passkey)
    .fetch_one(&mut *conn)
    .await?;
    crate::mfa::sync_flag(conn, tenant, user).await?;
    Ok(view)
}

/// A sign-in used the passkey: its updated record (the signature counter) and when.
pub async fn used(
    conn: &mut PgConnection,
    tenant: TenantId,
    passkey_id: Uuid,
    passkey: &serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "UPDATE user_passkeys SET passkey = $3, last_used_at = now() \
         WHERE tenant = $1 AND passkey_id = $2",
    )
    .bind(tenant)
    .bind(passkey_id)
    .bind(passkey)
    .execute(conn)
    .await?;
    Ok(())
}

/// Removes one of the user's passkeys: its name, when there was one.
pub async fn remove(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    passkey_id: Uuid,
) -> Result<Option<String>> {
    let name: Option<String> = sqlx::query_scalar(
        "DELETE FROM user_passkeys WHERE tenant = $1 AND user_id = $2 AND passkey_id = $3 \
         RETURNING name",
    )
    .bind(tenant)
    .bind(user)
    .bind(passkey_id)
    .fetch_optional(&mut *conn)
    .await?;
    if name.is_some() {
        // The recovery codes recover a second factor: with none left, they go too.
        if !crate::mfa::has_second_factor(conn, tenant, user).await? {
            crate::mfa::replace_recovery_codes(conn, tenant, user, &[]).await?;
        }
        crate::mfa::sync_flag(conn, tenant, user).await?;
    }
    Ok(name)
}

/// Whose passkey a credential id is, with the user handle the authenticator keeps (any
/// tenant's; only an active internal user's): the tenant, the user and the passkey.
pub async fn owner(
    conn: &mut PgConnection,
    credential_id: &[u8],
    handle: Uuid,
) -> Result<Option<(TenantId, UserId, Uuid)>> {
    Ok(
        sqlx::query_as("SELECT tenant, user_id, passkey_id FROM psa_passkey_owner($1, $2)")
            .bind(credential_id)
            .bind(handle)
            .fetch_optional(conn)
            .await?,
    )
}
