//! Bearer credentials: login sessions and API keys.
//!
//! Tokens are 256-bit random values with a prefix naming their kind; only their SHA-256 digest is
//! stored (a slow hash would add latency without adding safety to a random 256-bit value). A
//! token is shown once, when it is made.

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
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
    /// The tenant is `active` (a suspended or canceled tenant's credentials are refused, and
    /// work again when it is reactivated or restored).
    pub tenant_active: bool,
    /// A session that may only set up a second factor (its tenant requires one).
    pub enrollment_only: bool,
    /// The support session this session's token was opened for (the `support` module): management
    /// staff acting as the user.
    pub support: Option<Uuid>,
}

pub(crate) fn new_token(prefix: &str) -> SecretString {
    let mut bytes = [0u8; 32];
    rand::rng().fill(&mut bytes);
    SecretString::from(format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

pub(crate) fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether `body` (a token without its prefix) is 32 bytes in base64url, as [`new_token`] makes
/// them: only a well-formed token is looked up.
pub(crate) fn well_formed(body: &str) -> bool {
    body.len() == 43
        && body
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
}

/// Finds who holds `token`: an unrevoked session that has neither expired nor been idle longer
/// than `session_idle`, or an unrevoked, unexpired API key, of an active user. `None` for anything
/// else, including a token of neither kind. Records the use (at most once a minute per
/// credential, so that authenticating stays a read).
pub async fn authenticate(
    conn: &mut PgConnection,
    token: &str,
    session_idle: std::time::Duration,
) -> Result<Option<Holder>> {
    authenticate_as(conn, token, session_idle, Use::Recorded).await
}

/// Whether a check of a credential counts as its holder's activity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// A request the holder made: the session's idle time starts again.
    Recorded,
    /// The platform checking that a credential still holds (a live page's stream): nothing
    /// recorded, so an open tab does not keep a session alive.
    NotRecorded,
}

/// [`authenticate`], recording the use or not.
pub async fn authenticate_as(
    conn: &mut PgConnection,
    token: &str,
    session_idle: std::time::Duration,
    used: Use,
) -> Result<Option<Holder>> {
    type Row = (
        TenantId,
        UserId,
        Uuid,
        bool,
        bool,
        String,
        bool,
        Option<Uuid>,
    );
    // Through SECURITY DEFINER functions (migration `api_login_role`): the API's login role
    // finds a token across tenants without seeing any tenant's credentials.
    // Only a well-formed token reaches the database: a prefix and 32 random bytes in base64url
    // (43 characters). Junk costs a string check, not a query.
    let (kind, body) = if let Some(b) = token.strip_prefix(SESSION_PREFIX) {
        ("session", b)
    } else if let Some(b) = token.strip_prefix(API_KEY_PREFIX) {
        ("api_key", b)
    } else {
        return Ok(None);
    };
    if !well_formed(body) {
        return Ok(None);
    }
    let row: Option<Row> = sqlx::query_as(
        "SELECT tenant, user_id, credential_id, client_portal, stale, tenant_status, \
                enrollment_only, support_session_id \
         FROM psa_authenticate($1, $2, $3)",
    )
    .bind(kind)
    .bind(digest(token))
    .bind(session_idle.as_secs_f64())
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((tenant, _, id, _, true, _, _, _)) = &row
        && used == Use::Recorded
    {
        sqlx::query("SELECT psa_touch_credential($1, $2, $3)")
            .bind(kind)
            .bind(tenant)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(row.map(
        |(tenant, user, id, client_portal, _, status, enrolling, support)| Holder {
            tenant,
            user,
            client_portal,
            tenant_active: status == "active",
            enrollment_only: enrolling,
            support,
            credential: if token.starts_with(SESSION_PREFIX) {
                Credential::Session(id)
            } else {
                Credential::ApiKey(id)
            },
        },
    ))
}

/// A new session token, shown once.
#[derive(Debug)]
pub struct NewSession {
    pub token: SecretString,
    pub expires_at: DateTime<Utc>,
}

/// Where and how a session was opened.
#[derive(Debug, Clone, Default)]
pub struct SessionMeta {
    /// The client's address.
    pub address: Option<String>,
    /// The browser or client, as it said (`User-Agent`, at most 512 characters kept).
    pub user_agent: Option<String>,
    /// The user passed a second factor to open it.
    pub second_factor: bool,
    /// Its tenant requires a second factor and the user has none yet: it may only set one up.
    pub enrollment_only: bool,
}

/// Opens a session for a user who has just proven who they are.
pub async fn create_session(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    expires_at: DateTime<Utc>,
    meta: &SessionMeta,
) -> Result<NewSession> {
    let token = new_token(SESSION_PREFIX);
    let agent = meta
        .user_agent
        .as_deref()
        .map(|a| a.chars().take(512).collect::<String>());
    sqlx::query(
        "INSERT INTO sessions (tenant, user_id, token_hash, expires_at, address, user_agent, \
                               second_factor, enrollment_only) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(tenant)
    .bind(user)
    .bind(digest(token.expose_secret()))
    .bind(expires_at)
    .bind(meta.address.as_deref())
    .bind(agent)
    .bind(meta.second_factor)
    .bind(meta.enrollment_only)
    .execute(conn)
    .await?;
    Ok(NewSession { token, expires_at })
}

/// The session passed a second factor (its user just confirmed one): no longer enrolment-only.
pub async fn passed_second_factor(
    conn: &mut PgConnection,
    tenant: TenantId,
    session: Uuid,
) -> Result<()> {
    sqlx::query(
        "UPDATE sessions SET second_factor = true, enrollment_only = false \
         WHERE tenant = $1 AND session_id = $2",
    )
    .bind(tenant)
    .bind(session)
    .execute(conn)
    .await?;
    Ok(())
}

/// A session as its user sees it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SessionView {
    pub session_id: Uuid,
    pub created_at: DateTime<Utc>,
    /// The last request made with it (recorded at most once a minute).
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub address: Option<String>,
    pub user_agent: Option<String>,
    /// Opened with a second factor.
    pub second_factor: bool,
    /// The session this request is made with.
    #[sqlx(default)]
    pub current: bool,
}

/// The user's open sessions, most recently used first (not the support sessions opened as
/// them: those are the tenant's audit log's).
pub async fn sessions_of(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    current: Option<Uuid>,
) -> Result<Vec<SessionView>> {
    let mut rows: Vec<SessionView> = sqlx::query_as(
        "SELECT session_id, created_at, last_seen_at, expires_at, address, user_agent, \
                second_factor \
         FROM sessions WHERE tenant = $1 AND user_id = $2 AND revoked_at IS NULL \
           AND expires_at > now() AND support_session_id IS NULL ORDER BY last_seen_at DESC",
    )
    .bind(tenant)
    .bind(user)
    .fetch_all(conn)
    .await?;
    for r in &mut rows {
        r.current = Some(r.session_id) == current;
    }
    Ok(rows)
}

/// Ends one of the user's sessions; false when it is not theirs or already ended.
pub async fn revoke_session_of(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    session: Uuid,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = now() \
         WHERE tenant = $1 AND user_id = $2 AND session_id = $3 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .bind(session)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Ends every session of the user but `keep`; returns how many ended.
pub async fn revoke_other_sessions(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    keep: Uuid,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = now() \
         WHERE tenant = $1 AND user_id = $2 AND session_id <> $3 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .bind(keep)
    .execute(conn)
    .await?
    .rows_affected())
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

/// Ends every session of a user ("log out everywhere"); returns how many were open.
pub async fn revoke_sessions_of(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = now() \
         WHERE tenant = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Revokes every API key of a user; returns how many were active. Revoked keys stay revoked:
/// reactivating the user does not bring them back.
pub async fn revoke_api_keys_of(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE api_keys SET revoked_at = now() \
         WHERE tenant = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Ends every session of a user but `keep` (a password change ends the others); returns how
/// many ended.
pub async fn revoke_sessions_except(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    keep: Option<Uuid>,
) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE sessions SET revoked_at = now() \
         WHERE tenant = $1 AND user_id = $2 AND revoked_at IS NULL \
           AND session_id IS DISTINCT FROM $3",
    )
    .bind(tenant)
    .bind(user)
    .bind(keep)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes sessions that expired or were revoked over a day ago; returns how many.
pub async fn purge_sessions(conn: &mut PgConnection) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT psa_purge_sessions()")
        .fetch_one(conn)
        .await?;
    Ok(n as u64)
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
    create_api_key_until(
        conn,
        tenant,
        user,
        description,
        None,
        &crate::audit::Actor::operator_from_environment(),
    )
    .await
}

/// Like [`create_api_key`], with an expiry, audited as `actor`'s.
pub async fn create_api_key_until(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    description: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
    actor: &crate::audit::Actor,
) -> Result<NewApiKey> {
    users::get(conn, tenant, user).await?;
    let key = new_token(API_KEY_PREFIX);
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO api_keys (tenant, user_id, description, key_hash, expires_at) \
         VALUES ($1, $2, $3, $4, $5) RETURNING api_key_id",
    )
    .bind(tenant)
    .bind(user)
    .bind(description)
    .bind(digest(key.expose_secret()))
    .bind(expires_at)
    .fetch_one(&mut *conn)
    .await?;
    crate::audit::record(
        conn,
        tenant,
        actor,
        crate::audit::Action::Create,
        "api_key",
        Some(id),
        serde_json::json!({"user_id": user, "expires_at": expires_at}),
    )
    .await?;
    Ok(NewApiKey {
        api_key_id: id,
        key,
    })
}

/// Revokes an API key, audited as `actor`'s; `false` when there is no such active key.
pub async fn revoke_api_key(
    conn: &mut PgConnection,
    api_key_id: Uuid,
    actor: &crate::audit::Actor,
) -> Result<bool> {
    let revoked: Option<TenantId> = sqlx::query_scalar(
        "UPDATE api_keys SET revoked_at = now() WHERE api_key_id = $1 AND revoked_at IS NULL \
         RETURNING tenant",
    )
    .bind(api_key_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(tenant) = revoked {
        crate::audit::record(
            conn,
            tenant,
            actor,
            crate::audit::Action::Revoke,
            "api_key",
            Some(api_key_id),
            serde_json::json!({}),
        )
        .await?;
    }
    Ok(revoked.is_some())
}

/// An API key as its tenant's administrators see it: never the key, only what it is and when it
/// was last used.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiKeySummary {
    pub api_key_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = Uuid))]
    pub user_id: UserId,
    /// The user's email.
    pub email: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    /// The last request made with it (recorded at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The tenant's API keys (of one user, when given), newest first, revoked ones included.
pub async fn list_api_keys(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: Option<UserId>,
) -> Result<Vec<ApiKeySummary>> {
    Ok(sqlx::query_as::<_, ApiKeySummary>(
        "SELECT k.api_key_id, k.user_id, u.email, k.description, k.created_at, k.expires_at, \
                k.last_used_at, k.revoked_at \
         FROM api_keys k JOIN users u ON u.tenant = k.tenant AND u.user_id = k.user_id \
         WHERE k.tenant = $1 AND ($2::uuid IS NULL OR k.user_id = $2) \
         ORDER BY k.created_at DESC, k.api_key_id",
    )
    .bind(tenant)
    .bind(user)
    .fetch_all(conn)
    .await?)
}

/// How long a device stays known: a sign-in from one not seen for this long is told to its user.
pub const DEVICE_MEMORY: chrono::Duration = chrono::Duration::days(90);

/// The network a client address belongs to, as a device is recognised by: the /24 of an IPv4
/// address, the /64 of an IPv6 one (addresses move within them).
fn network(address: std::net::IpAddr) -> String {
    match address {
        std::net::IpAddr::V4(a) => {
            let [x, y, z, _] = a.octets();
            format!("{x}.{y}.{z}.0/24")
        }
        std::net::IpAddr::V6(a) => {
            let s = a.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

/// Notes a sign-in's device (its user agent on its network); true when it is new to a user who
/// has signed in before (not seen in [`DEVICE_MEMORY`]): the user is to be told.
pub async fn note_device(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    user_agent: Option<&str>,
    address: std::net::IpAddr,
) -> Result<bool> {
    let device = digest(&format!(
        "{}|{}",
        user_agent.unwrap_or_default(),
        network(address)
    ));
    let known_elsewhere: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_devices WHERE tenant = $1 AND user_id = $2 \
                          AND device_hash <> $3)",
    )
    .bind(tenant)
    .bind(user)
    .bind(&device)
    .fetch_one(&mut *conn)
    .await?;
    let last_seen: Option<DateTime<Utc>> = sqlx::query_scalar(
        "INSERT INTO user_devices (tenant, user_id, device_hash) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant, user_id, device_hash) DO UPDATE SET last_seen_at = now() \
         RETURNING (SELECT d.last_seen_at FROM user_devices d \
                    WHERE d.tenant = $1 AND d.user_id = $2 AND d.device_hash = $3)",
    )
    .bind(tenant)
    .bind(user)
    .bind(&device)
    .fetch_one(&mut *conn)
    .await?;
    let recent = last_seen.is_some_and(|at| at > Utc::now() - DEVICE_MEMORY);
    Ok(known_elsewhere && !recent)
}
