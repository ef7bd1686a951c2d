//! Sign-in by email: who may sign in with an email (in every tenant, or in the one named by id
//! or slug), and the server-side half of a sign-in whose password matched in several tenants
//! while the person chooses one (`login_challenges`), so the password is not sent again.
//!
//! Both live outside any tenant: the email is all the caller has said. The lookup is a SECURITY
//! DEFINER function that returns the rows of that exact email only, at most
//! [`MAX_TENANTS_PER_EMAIL`] + 1 of them.

use secrecy::{ExposeSecret, SecretString};
use sqlx::PgConnection;

use crate::credentials::{digest, new_token};
use crate::validate::EmailAddress;
use crate::{Error, Result, TenantId, UserId};

/// At most this many tenants are tried for one email (each costs a password hash); an email in
/// more must name its tenant.
pub const MAX_TENANTS_PER_EMAIL: usize = 10;

/// How long a choice of tenant may take.
pub const CHOICE_TTL: std::time::Duration = std::time::Duration::from_secs(5 * 60);

/// An active internal user with the email, in one tenant.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub tenant: TenantId,
    pub slug: String,
    pub tenant_name: String,
    pub user: UserId,
    /// None until the user has chosen a password.
    pub hash: Option<String>,
}

/// The users who may sign in with `email`: in every tenant, or in `tenant` (an id or a slug).
/// More than [`MAX_TENANTS_PER_EMAIL`] is refused.
pub async fn candidates(
    conn: &mut PgConnection,
    email: &EmailAddress,
    tenant: Option<&str>,
) -> Result<Vec<Candidate>> {
    let rows: Vec<(TenantId, String, String, UserId, Option<String>)> =
        sqlx::query_as("SELECT * FROM psa_login_candidates($1, $2)")
            .bind(email.as_str())
            .bind(tenant.map(str::trim).filter(|t| !t.is_empty()))
            .fetch_all(conn)
            .await?;
    if rows.len() > MAX_TENANTS_PER_EMAIL {
        return Err(Error::validation(
            "tenant",
            format!(
                "This email belongs to more than {MAX_TENANTS_PER_EMAIL} organisations: name the \
                 organisation to sign in to (its slug)"
            ),
        ));
    }
    Ok(rows
        .into_iter()
        .map(|(tenant, slug, tenant_name, user, hash)| Candidate {
            tenant,
            slug,
            tenant_name,
            user,
            hash,
        })
        .collect())
}

/// Records that the password of `email` matched in `tenants`, for the person to choose one;
/// returns the token that redeems it (shown once, stored as its digest).
pub async fn begin_choice(
    conn: &mut PgConnection,
    email: &EmailAddress,
    tenants: &[TenantId],
    address: &str,
) -> Result<SecretString> {
    let token = new_token("psa_choice_");
    let ids: Vec<uuid::Uuid> = tenants.iter().map(|t| t.0).collect();
    let ttl = chrono::Duration::from_std(CHOICE_TTL).map_err(Error::internal)?;
    sqlx::query(
        "INSERT INTO login_challenges (token_hash, purpose, email, tenants, address, expires_at) \
         VALUES ($1, 'choose_tenant', $2, $3, $4, now() + $5)",
    )
    .bind(digest(token.expose_secret()))
    .bind(email.as_str())
    .bind(ids)
    .bind(address)
    .bind(ttl)
    .execute(conn)
    .await?;
    Ok(token)
}

/// Redeems a choice: the email whose password matched in `tenant`, when the token is current,
/// unused and offered `tenant`. Used once, whatever the outcome.
pub async fn redeem_choice(
    conn: &mut PgConnection,
    token: &str,
    tenant: TenantId,
) -> Result<Option<EmailAddress>> {
    let row: Option<(String, Vec<uuid::Uuid>)> = sqlx::query_as(
        "UPDATE login_challenges SET used_at = now() \
         WHERE token_hash = $1 AND purpose = 'choose_tenant' AND used_at IS NULL \
           AND expires_at > now() \
         RETURNING email, tenants",
    )
    .bind(digest(token))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row
        .filter(|(_, tenants)| tenants.contains(&tenant.0))
        .and_then(|(email, _)| EmailAddress::parse(&email).ok()))
}

/// How many wrong codes a second-factor step takes before it ends.
pub const MAX_CODE_ATTEMPTS: i32 = 5;

/// Records that `user` of `tenant` gave the right password and owes a second factor; returns
/// the `mfa_token` that carries the sign-in on (shown once, stored as its digest).
pub async fn begin_second_factor(
    conn: &mut PgConnection,
    email: &EmailAddress,
    tenant: TenantId,
    user: UserId,
    address: &str,
) -> Result<SecretString> {
    let token = new_token("psa_mfa_");
    let ttl = chrono::Duration::from_std(CHOICE_TTL).map_err(Error::internal)?;
    sqlx::query(
        "INSERT INTO login_challenges \
           (token_hash, purpose, email, tenants, user_id, address, expires_at) \
         VALUES ($1, 'second_factor', $2, ARRAY[$3::uuid], $4, $5, now() + $6)",
    )
    .bind(digest(token.expose_secret()))
    .bind(email.as_str())
    .bind(tenant)
    .bind(user)
    .bind(address)
    .bind(ttl)
    .execute(conn)
    .await?;
    Ok(token)
}

/// A second-factor step an `mfa_token` carries on.
#[derive(Debug, Clone)]
pub struct SecondFactorStep {
    pub tenant: TenantId,
    pub user: UserId,
    pub email: String,
    /// The passkey assertion asked for ([`ask_passkey`]), if one was: this attempt answers it.
    pub ceremony: Option<serde_json::Value>,
}

/// The sign-in an `mfa_token` carries on, taking one of its attempts (at once, so that codes
/// sent together cannot exceed [`MAX_CODE_ATTEMPTS`]) and the passkey assertion it asked for
/// (each is answered once): while it is current, unused and has attempts left.
pub async fn take_attempt(
    conn: &mut PgConnection,
    token: &str,
) -> Result<Option<SecondFactorStep>> {
    let row: Option<(uuid::Uuid, UserId, String, Option<serde_json::Value>)> = sqlx::query_as(
        "UPDATE login_challenges c SET attempts = c.attempts + 1, ceremony = NULL \
         FROM (SELECT challenge_id, ceremony FROM login_challenges \
               WHERE token_hash = $1 AND purpose = 'second_factor' FOR UPDATE) before \
         WHERE c.challenge_id = before.challenge_id AND c.used_at IS NULL \
           AND c.expires_at > now() AND c.attempts < $2 \
         RETURNING c.tenants[1], c.user_id, c.email, before.ceremony",
    )
    .bind(digest(token))
    .bind(MAX_CODE_ATTEMPTS)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(t, user, email, ceremony)| SecondFactorStep {
        tenant: TenantId(t),
        user,
        email,
        ceremony,
    }))
}

/// Keeps the passkey assertion a second-factor step asks for (`ceremony`, the relying party's
/// state): its user and tenant, while the token is current, unused and has attempts left.
pub async fn ask_passkey(
    conn: &mut PgConnection,
    token: &str,
    ceremony: &serde_json::Value,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE login_challenges SET ceremony = $2 \
         WHERE token_hash = $1 AND purpose = 'second_factor' AND used_at IS NULL \
           AND expires_at > now() AND attempts < $3",
    )
    .bind(digest(token))
    .bind(ceremony)
    .bind(MAX_CODE_ATTEMPTS)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// The tenant and user a current, unused second-factor step is for.
pub async fn second_factor_of(
    conn: &mut PgConnection,
    token: &str,
) -> Result<Option<(TenantId, UserId)>> {
    let row: Option<(uuid::Uuid, UserId)> = sqlx::query_as(
        "SELECT tenants[1], user_id FROM login_challenges \
         WHERE token_hash = $1 AND purpose = 'second_factor' AND used_at IS NULL \
           AND expires_at > now() AND attempts < $2",
    )
    .bind(digest(token))
    .bind(MAX_CODE_ATTEMPTS)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(t, u)| (TenantId(t), u)))
}

/// What a WebAuthn ceremony is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceremony {
    /// A sign-in with a passkey alone.
    SignIn,
    /// A signed-in user registering a passkey (its tenant and user are kept with it).
    Registration,
    /// A sign-in at a tenant's provider (its `state`; the tenant is in the ceremony).
    Sso,
}

impl Ceremony {
    fn purpose(self) -> &'static str {
        match self {
            Ceremony::SignIn => "passkey_sign_in",
            Ceremony::Registration => "passkey_registration",
            Ceremony::Sso => "sso",
        }
    }

    /// The token's prefix: says what it is wherever it turns up (a URL's `state`, a log).
    fn prefix(self) -> &'static str {
        match self {
            Ceremony::SignIn | Ceremony::Registration => "psa_passkey_",
            Ceremony::Sso => "psa_sso_",
        }
    }
}

/// Keeps the server's half of a ceremony (WebAuthn's state, or a provider sign-in's PKCE
/// verifier and nonce) for [`CHOICE_TTL`]; returns the token that finishes it (shown once,
/// stored as its digest). A registration names its user.
pub async fn begin_ceremony(
    conn: &mut PgConnection,
    kind: Ceremony,
    user: Option<(TenantId, UserId)>,
    state: &serde_json::Value,
    address: &str,
) -> Result<SecretString> {
    let token = new_token(kind.prefix());
    let ttl = chrono::Duration::from_std(CHOICE_TTL).map_err(Error::internal)?;
    let tenants: Vec<uuid::Uuid> = user.iter().map(|(t, _)| t.0).collect();
    sqlx::query(
        "INSERT INTO login_challenges \
           (token_hash, purpose, tenants, user_id, ceremony, address, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, now() + $7)",
    )
    .bind(digest(token.expose_secret()))
    .bind(kind.purpose())
    .bind(tenants)
    .bind(user.map(|(_, u)| u))
    .bind(state)
    .bind(address)
    .bind(ttl)
    .execute(conn)
    .await?;
    Ok(token)
}

/// Takes a ceremony's state (used once, whatever the outcome): with the tenant and user it was
/// begun for (a registration's), while current and unused.
pub async fn take_ceremony(
    conn: &mut PgConnection,
    kind: Ceremony,
    token: &str,
) -> Result<Option<(serde_json::Value, Option<(TenantId, UserId)>)>> {
    let row: Option<(Option<serde_json::Value>, Vec<uuid::Uuid>, Option<UserId>)> = sqlx::query_as(
        "UPDATE login_challenges SET used_at = now() \
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > now() \
             RETURNING ceremony, tenants, user_id",
    )
    .bind(digest(token.trim()))
    .bind(kind.purpose())
    .fetch_optional(conn)
    .await?;
    Ok(row.and_then(|(state, tenants, user)| {
        let owner = match (tenants.first(), user) {
            (Some(t), Some(u)) => Some((TenantId(*t), u)),
            _ => None,
        };
        state.map(|s| (s, owner))
    }))
}

/// The `mfa_token` did its job: used, it opens nothing more.
pub async fn finish_second_factor(conn: &mut PgConnection, token: &str) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE login_challenges SET used_at = now() \
         WHERE token_hash = $1 AND purpose = 'second_factor' AND used_at IS NULL",
    )
    .bind(digest(token))
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Removes challenges that ended a day ago or more.
pub async fn purge(conn: &mut PgConnection) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM login_challenges WHERE expires_at < now() - interval '1 day'")
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// The SHA-256 of a value kept only as its digest, as text (base64url, as tokens are): the
/// browser binding of a sign-in at a provider (the cookie holds the value, the ceremony this).
pub fn digest_text(value: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest(value))
}
