//! Single-use links: invitations (a new user sets their first password) and password resets.
//!
//! A token is 256 random bits with a prefix naming its purpose; only its SHA-256 digest is
//! stored, and the token itself exists only in the link that is mailed (or, without mail, shown
//! once to the operator who asked for it). Issuing a token revokes the user's earlier unused
//! tokens of the same purpose, so only the newest link works. Redeeming one sets the password,
//! uses the token and revokes every other open token of the user.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::credentials::{digest, new_token, well_formed};
use crate::{Error, Result, TenantId, UserId};

/// What a link is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Invitation,
    PasswordReset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Invitation => "invitation",
            Purpose::PasswordReset => "password_reset",
        }
    }

    fn prefix(self) -> &'static str {
        match self {
            Purpose::Invitation => "psa_i_",
            Purpose::PasswordReset => "psa_r_",
        }
    }

    /// The page of `psa serve` the link opens.
    pub fn page(self) -> &'static str {
        match self {
            Purpose::Invitation => "/invite",
            Purpose::PasswordReset => "/reset-password",
        }
    }

    /// How long a link lives when the operator configured nothing: an invitation waits for a
    /// person who may be away for a weekend, a reset link is asked for by someone at a screen.
    pub fn default_ttl(self) -> std::time::Duration {
        match self {
            Purpose::Invitation => std::time::Duration::from_secs(72 * 3600),
            Purpose::PasswordReset => std::time::Duration::from_secs(3600),
        }
    }
}

/// A link just issued. The token is shown once: in the email, or to the operator.
#[derive(Debug)]
pub struct IssuedLink {
    pub token_id: Uuid,
    pub token: SecretString,
    pub purpose: Purpose,
    pub expires_at: DateTime<Utc>,
}

impl IssuedLink {
    /// The link: `PUBLIC_URL/invite#TOKEN`. The token is in the fragment, which browsers do not
    /// send to servers, so it stays out of access logs, proxies and `Referer` headers; the page
    /// hands it to the form.
    pub fn url(&self, public_url: &url::Url) -> SecretString {
        let base = public_url.as_str().trim_end_matches('/');
        SecretString::from(format!(
            "{base}{}#{}",
            self.purpose.page(),
            self.token.expose_secret()
        ))
    }
}

/// Who asked for a link and why, for the row and the audit log.
#[derive(Debug, Clone, Copy)]
pub struct IssueOptions<'a> {
    pub purpose: Purpose,
    pub ttl: std::time::Duration,
    /// `workflow:<id>`, `user:<id>`, `cli` or `anonymous`.
    pub created_by: &'a str,
    /// The provisioning run whose welcome email carries the link.
    pub workflow_id: Option<&'a str>,
}

/// Issues a link for `user`, revoking the user's earlier unused links of the same purpose.
pub async fn issue(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    options: IssueOptions<'_>,
) -> Result<IssuedLink> {
    let purpose = options.purpose;
    sqlx::query(
        "UPDATE user_auth_tokens SET revoked_at = now() \
         WHERE tenant = $1 AND user_id = $2 AND purpose = $3 \
           AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .bind(purpose.as_str())
    .execute(&mut *conn)
    .await?;
    let token = new_token(purpose.prefix());
    let ttl = chrono::Duration::from_std(options.ttl).map_err(Error::internal)?;
    let (token_id, expires_at): (Uuid, DateTime<Utc>) = sqlx::query_as(
        "INSERT INTO user_auth_tokens \
           (tenant, user_id, purpose, token_hash, expires_at, created_by, workflow_id) \
         VALUES ($1, $2, $3, $4, now() + $5, $6, $7) RETURNING token_id, expires_at",
    )
    .bind(tenant)
    .bind(user)
    .bind(purpose.as_str())
    .bind(digest(token.expose_secret()))
    .bind(ttl)
    .bind(options.created_by)
    .bind(options.workflow_id)
    .fetch_one(&mut *conn)
    .await?;
    Ok(IssuedLink {
        token_id,
        token,
        purpose,
        expires_at,
    })
}

/// Records that the link's email went out.
pub async fn mark_sent(conn: &mut PgConnection, tenant: TenantId, token_id: Uuid) -> Result<()> {
    sqlx::query("UPDATE user_auth_tokens SET sent_at = now() WHERE tenant = $1 AND token_id = $2")
        .bind(tenant)
        .bind(token_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// When a provisioning run's welcome email went out, if it did (a retried activity must not
/// mail a second link).
pub async fn sent_by_workflow(
    conn: &mut PgConnection,
    workflow_id: &str,
) -> Result<Option<DateTime<Utc>>> {
    Ok(sqlx::query_scalar(
        "SELECT max(sent_at) FROM user_auth_tokens WHERE workflow_id = $1 AND sent_at IS NOT NULL",
    )
    .bind(workflow_id)
    .fetch_one(conn)
    .await?)
}

/// A valid token's owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found {
    pub tenant: TenantId,
    pub token_id: Uuid,
    pub user: UserId,
}

const NOT_VALID: &str =
    "This link is not valid. Check that you opened the whole link, or ask for a new one.";
const USED: &str = "This link has already been used. Sign in with your password, or ask for a new link if you forgot it.";
const REVOKED: &str = "This link has been replaced by a newer one or withdrawn. Use the most recent email you received, or ask for a new link.";
const EXPIRED: &str = "This link has expired. Ask for a new one.";

/// Finds the user a token was issued to, across tenants (the holder is not signed in). An
/// unknown, used, revoked or expired token is refused with a message saying which.
pub async fn find(conn: &mut PgConnection, purpose: Purpose, token: &str) -> Result<Found> {
    let token = token.trim();
    let Some(body) = token.strip_prefix(purpose.prefix()) else {
        return Err(Error::InvalidLink(NOT_VALID));
    };
    if !well_formed(body) {
        return Err(Error::InvalidLink(NOT_VALID));
    }
    let row: Option<(TenantId, Uuid, UserId, String)> =
        sqlx::query_as("SELECT tenant, token_id, user_id, state FROM psa_find_user_token($1, $2)")
            .bind(purpose.as_str())
            .bind(digest(token))
            .fetch_optional(conn)
            .await?;
    match row {
        None => Err(Error::InvalidLink(NOT_VALID)),
        Some((tenant, token_id, user, state)) => match state.as_str() {
            "valid" => Ok(Found {
                tenant,
                token_id,
                user,
            }),
            "used" => Err(Error::InvalidLink(USED)),
            "expired" => Err(Error::InvalidLink(EXPIRED)),
            _ => Err(Error::InvalidLink(REVOKED)),
        },
    }
}

/// Redeems a token found by [`find`] in the token's tenant: sets the password (`hashed`, already
/// checked and hashed by the caller), uses the token, revokes the user's other open links, and
/// ends the user's sessions (whoever knew the old password is out). A reset link also revokes
/// the user's API keys: it exists because the account may be in someone else's hands. The
/// token is locked and checked again, so two concurrent uses cannot both succeed. Returns how
/// many API keys were revoked.
pub async fn redeem(
    conn: &mut PgConnection,
    found: &Found,
    purpose: Purpose,
    hashed: &str,
) -> Result<u64> {
    // An invitation sets a first password only: once the user has one, it is spent (a reset
    // link is the way to change it).
    let valid: Option<bool> = sqlx::query_scalar(
        "SELECT t.used_at IS NULL AND t.revoked_at IS NULL AND t.expires_at > now() \
                AND NOT u.is_inactive \
                AND (t.purpose <> 'invitation' OR u.hashed_password IS NULL) \
         FROM user_auth_tokens t JOIN users u ON u.tenant = t.tenant AND u.user_id = t.user_id \
         WHERE t.tenant = $1 AND t.token_id = $2 FOR UPDATE OF t",
    )
    .bind(found.tenant)
    .bind(found.token_id)
    .fetch_optional(&mut *conn)
    .await?;
    if valid != Some(true) {
        return Err(Error::InvalidLink(USED));
    }
    sqlx::query("UPDATE user_auth_tokens SET used_at = now() WHERE tenant = $1 AND token_id = $2")
        .bind(found.tenant)
        .bind(found.token_id)
        .execute(&mut *conn)
        .await?;
    revoke_open(conn, found.tenant, found.user).await?;
    crate::users::set_password_hash(conn, found.tenant, found.user, hashed).await?;
    crate::credentials::revoke_sessions_of(conn, found.tenant, found.user).await?;
    if purpose == Purpose::PasswordReset {
        return crate::credentials::revoke_api_keys_of(conn, found.tenant, found.user).await;
    }
    Ok(0)
}

/// Revokes every open link of a user (a password set, a user deactivated).
pub async fn revoke_open(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE user_auth_tokens SET revoked_at = now() \
         WHERE tenant = $1 AND user_id = $2 AND used_at IS NULL AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes links that ended over 30 days ago; returns how many.
pub async fn purge(conn: &mut PgConnection) -> Result<u64> {
    let n: i64 = sqlx::query_scalar("SELECT psa_purge_user_tokens()")
        .fetch_one(conn)
        .await?;
    Ok(n as u64)
}
