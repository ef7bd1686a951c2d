//! Second factors: TOTP (RFC 6238: 6 digits, 30-second steps, SHA-1, which every authenticator
//! app reads; one step of clock skew either way) and recovery codes (ten per enrolment, each
//! good once, stored as SHA-256).
//!
//! A code is accepted once: the step of the last code accepted is kept, and a code of that step
//! or an earlier one is refused. The TOTP secret is stored sealed with `PSA_SECRET_KEY` (the
//! sealing is the caller's: `psa_workflows::secret`); this module keeps rows and checks codes.

use rand::Rng;
use sqlx::PgConnection;
use totp_rs::{Algorithm, TOTP};

use crate::credentials::digest;
use crate::{Error, Result, TenantId, UserId};

/// Seconds per TOTP step.
pub const STEP: u64 = 30;
/// How many recovery codes an enrolment gives.
pub const RECOVERY_CODES: usize = 10;
/// The issuer authenticator apps show next to the account.
pub const ISSUER: &str = "psa";

/// A new TOTP secret: 160 random bits, as RFC 4226 recommends.
pub fn new_secret() -> Vec<u8> {
    let mut bytes = vec![0u8; 20];
    rand::rng().fill(&mut bytes[..]);
    bytes
}

/// The secret as authenticator apps take it typed in (base32, no padding).
pub fn encoded(secret: &[u8]) -> String {
    totp_rs::Secret::Raw(secret.to_vec())
        .to_encoded()
        .to_string()
}

/// The secret back from its encoded form (as sealed).
pub fn decoded(encoded: &str) -> Result<Vec<u8>> {
    totp_rs::Secret::Encoded(encoded.to_owned())
        .to_bytes()
        .map_err(|_| Error::internal(std::io::Error::other("a stored TOTP secret is malformed")))
}

fn totp(secret: &[u8], account: &str) -> Result<TOTP> {
    // Skew 0: each step is checked on its own, so the step a code matched is known.
    TOTP::new(
        Algorithm::SHA1,
        6,
        0,
        STEP,
        secret.to_vec(),
        Some(ISSUER.to_owned()),
        account.replace(':', " "),
    )
    .map_err(|e| Error::internal(std::io::Error::other(e.to_string())))
}

/// The `otpauth://` URI an authenticator app scans (as a QR code) to add the account.
pub fn otpauth_uri(secret: &[u8], account: &str) -> Result<String> {
    Ok(totp(secret, account)?.get_url())
}

/// The code of the step holding `unix_time` (for tests and the enrolment's own check).
pub fn code_at(secret: &[u8], unix_time: u64) -> Result<String> {
    Ok(totp(secret, "x")?.generate(unix_time))
}

/// A code as typed: digits only, spaces dropped; 6 digits or nothing.
pub fn totp_code(raw: &str) -> Option<String> {
    let code: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
    (code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit())).then_some(code)
}

/// The step `code` belongs to (the current one, or one either side), if it is right.
pub fn matching_step(secret: &[u8], code: &str, unix_time: u64) -> Result<Option<i64>> {
    let t = totp(secret, "x")?;
    let now = unix_time / STEP;
    for step in [now, now.saturating_sub(1), now + 1] {
        if t.check(code, step * STEP) {
            return Ok(Some(step as i64));
        }
    }
    Ok(None)
}

/// Ten new recovery codes (`xxxx-xxxx-xxxx-xxxx`, from an alphabet without look-alikes: 79
/// bits each, so that their SHA-256 in a leaked database cannot be reversed by trying them all).
pub fn new_recovery_codes() -> Vec<String> {
    const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..RECOVERY_CODES)
        .map(|_| {
            let plain: String = (0..16)
                .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
                .collect();
            grouped(&plain)
        })
        .collect()
}

fn grouped(plain: &str) -> String {
    [&plain[..4], &plain[4..8], &plain[8..12], &plain[12..]].join("-")
}

/// A recovery code as typed: lowercase, spaces and hyphens anywhere; `xxxx-xxxx-xxxx-xxxx` or
/// nothing.
pub fn recovery_code(raw: &str) -> Option<String> {
    let plain: String = raw
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect::<String>()
        .to_lowercase();
    (plain.len() == 16 && plain.bytes().all(|b| b.is_ascii_alphanumeric())).then(|| grouped(&plain))
}

/// A user's TOTP enrolment.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Enrolment {
    pub secret_sealed: String,
    pub confirmed: bool,
}

pub async fn enrolment(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Option<Enrolment>> {
    Ok(sqlx::query_as(
        "SELECT secret_sealed, confirmed_at IS NOT NULL AS confirmed FROM user_totp \
         WHERE tenant = $1 AND user_id = $2",
    )
    .bind(tenant)
    .bind(user)
    .fetch_optional(conn)
    .await?)
}

/// Whether the user has a second factor: a confirmed TOTP or a passkey.
pub async fn has_second_factor(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_totp \
                        WHERE tenant = $1 AND user_id = $2 AND confirmed_at IS NOT NULL) \
             OR EXISTS (SELECT 1 FROM user_passkeys WHERE tenant = $1 AND user_id = $2)",
    )
    .bind(tenant)
    .bind(user)
    .fetch_one(conn)
    .await?)
}

/// The second factors a sign-in of the user may pass with: `totp` and `recovery_code` with a
/// confirmed app, `recovery_code` with unused codes, `passkey` with a passkey.
pub async fn methods(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Vec<&'static str>> {
    let (totp, codes, passkeys): (bool, bool, bool) = sqlx::query_as(
        "SELECT EXISTS (SELECT 1 FROM user_totp \
                        WHERE tenant = $1 AND user_id = $2 AND confirmed_at IS NOT NULL), \
                EXISTS (SELECT 1 FROM user_recovery_codes \
                        WHERE tenant = $1 AND user_id = $2 AND used_at IS NULL), \
                EXISTS (SELECT 1 FROM user_passkeys WHERE tenant = $1 AND user_id = $2)",
    )
    .bind(tenant)
    .bind(user)
    .fetch_one(conn)
    .await?;
    let mut out = Vec::new();
    if totp {
        out.push("totp");
    }
    if totp || codes {
        out.push("recovery_code");
    }
    if passkeys {
        out.push("passkey");
    }
    Ok(out)
}

/// The reference's `users.two_factor_enabled` follows the user's second factors (its plain-text
/// secret column stays empty).
pub async fn sync_flag(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<()> {
    let on = has_second_factor(conn, tenant, user).await?;
    sqlx::query("UPDATE users SET two_factor_enabled = $3 WHERE tenant = $1 AND user_id = $2")
        .bind(tenant)
        .bind(user)
        .bind(on)
        .execute(conn)
        .await?;
    Ok(())
}

/// Starts an enrolment with `secret_sealed` (replacing an unconfirmed one); a confirmed one must
/// be removed first.
pub async fn begin(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    secret_sealed: &str,
) -> Result<()> {
    let done = sqlx::query(
        "INSERT INTO user_totp (tenant, user_id, secret_sealed) VALUES ($1, $2, $3) \
         ON CONFLICT (tenant, user_id) DO UPDATE SET secret_sealed = EXCLUDED.secret_sealed, \
             created_at = now(), last_step = NULL \
         WHERE user_totp.confirmed_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .bind(secret_sealed)
    .execute(conn)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::conflict(
            None,
            "An authenticator app is already set up: remove it first to set up another",
        ));
    }
    Ok(())
}

/// Accepts a TOTP code of `step` once: false when a code of this step (or a later one) was
/// already accepted.
pub async fn use_step(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    step: i64,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE user_totp SET last_step = $3 \
         WHERE tenant = $1 AND user_id = $2 AND (last_step IS NULL OR last_step < $3)",
    )
    .bind(tenant)
    .bind(user)
    .bind(step)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Confirms the enrolment (its first code was right) and replaces the recovery codes.
pub async fn confirm(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    recovery_codes: &[String],
) -> Result<()> {
    sqlx::query("UPDATE user_totp SET confirmed_at = now() WHERE tenant = $1 AND user_id = $2")
        .bind(tenant)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sync_flag(conn, tenant, user).await?;
    replace_recovery_codes(conn, tenant, user, recovery_codes).await
}

/// Replaces the user's recovery codes with `recovery_codes` (stored as their SHA-256).
pub async fn replace_recovery_codes(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    recovery_codes: &[String],
) -> Result<()> {
    sqlx::query("DELETE FROM user_recovery_codes WHERE tenant = $1 AND user_id = $2")
        .bind(tenant)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    for code in recovery_codes {
        sqlx::query(
            "INSERT INTO user_recovery_codes (tenant, user_id, code_hash) VALUES ($1, $2, $3)",
        )
        .bind(tenant)
        .bind(user)
        .bind(digest(code))
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Uses a recovery code: true when it was one of the user's and unused (it is used now).
pub async fn use_recovery_code(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    code: &str,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE user_recovery_codes SET used_at = now() \
         WHERE tenant = $1 AND user_id = $2 AND code_hash = $3 AND used_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .bind(digest(code))
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// How many recovery codes are left.
pub async fn recovery_codes_left(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM user_recovery_codes \
         WHERE tenant = $1 AND user_id = $2 AND used_at IS NULL",
    )
    .bind(tenant)
    .bind(user)
    .fetch_one(conn)
    .await?)
}

/// Removes the user's authenticator app; whether there was one. The recovery codes go with it
/// unless a passkey remains (they recover that too).
pub async fn remove_totp(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<bool> {
    let removed = sqlx::query("DELETE FROM user_totp WHERE tenant = $1 AND user_id = $2")
        .bind(tenant)
        .bind(user)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        > 0;
    let passkeys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM user_passkeys WHERE tenant = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user)
            .fetch_one(&mut *conn)
            .await?;
    if passkeys == 0 {
        sqlx::query("DELETE FROM user_recovery_codes WHERE tenant = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user)
            .execute(&mut *conn)
            .await?;
    }
    sync_flag(conn, tenant, user).await?;
    Ok(removed)
}

/// Removes every second factor of the user (an administrator's reset: the app, the passkeys and
/// the recovery codes); whether there was one.
pub async fn remove_all(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<bool> {
    let had = has_second_factor(conn, tenant, user).await?;
    sqlx::query("DELETE FROM user_totp WHERE tenant = $1 AND user_id = $2")
        .bind(tenant)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM user_passkeys WHERE tenant = $1 AND user_id = $2")
        .bind(tenant)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM user_recovery_codes WHERE tenant = $1 AND user_id = $2")
        .bind(tenant)
        .bind(user)
        .execute(&mut *conn)
        .await?;
    sync_flag(conn, tenant, user).await?;
    Ok(had)
}

/// Wrong codes in a row after which the user's second factor refuses every code for
/// [`LOCK_MINUTES`] (each further wrong code locks it again): an attacker who has the password
/// cannot try codes for days, however many sign-ins they start.
pub const MAX_FAILURES: i32 = 10;
pub const LOCK_MINUTES: i64 = 15;

/// Until when the user's second factor refuses codes, if it does now.
pub async fn locked_until(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    Ok(
        sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(
            "SELECT locked_until FROM user_totp \
         WHERE tenant = $1 AND user_id = $2 AND locked_until > now()",
        )
        .bind(tenant)
        .bind(user)
        .fetch_optional(conn)
        .await?
        .flatten(),
    )
}

/// Counts a wrong code; true when it locked the second factor (the user is to be told).
pub async fn note_failure(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<bool> {
    let locked: Option<bool> = sqlx::query_scalar(
        "UPDATE user_totp SET failed_attempts = failed_attempts + 1, \
             locked_until = CASE WHEN failed_attempts + 1 >= $3 \
                                 THEN now() + make_interval(mins => $4::int) \
                                 ELSE locked_until END \
         WHERE tenant = $1 AND user_id = $2 RETURNING failed_attempts >= $3",
    )
    .bind(tenant)
    .bind(user)
    .bind(MAX_FAILURES)
    .bind(LOCK_MINUTES as i32)
    .fetch_optional(conn)
    .await?;
    Ok(locked.unwrap_or(false))
}

/// A right code: the count of wrong ones starts again.
pub async fn clear_failures(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<()> {
    sqlx::query(
        "UPDATE user_totp SET failed_attempts = 0, locked_until = NULL \
         WHERE tenant = $1 AND user_id = $2",
    )
    .bind(tenant)
    .bind(user)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the tenant requires a second factor of its users.
pub async fn required(conn: &mut PgConnection, tenant: TenantId) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT mfa_required FROM tenants WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(conn)
            .await?
            .unwrap_or(false),
    )
}

/// Sets the tenant's policy (in its own context); returns the previous one.
pub async fn set_required(conn: &mut PgConnection, tenant: TenantId, on: bool) -> Result<bool> {
    let before = required(conn, tenant).await?;
    sqlx::query("UPDATE tenants SET mfa_required = $2 WHERE tenant = $1")
        .bind(tenant)
        .bind(on)
        .execute(conn)
        .await?;
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_matches_its_step_and_one_either_side_only() {
        let secret = new_secret();
        let t = 1_800_000_000u64;
        let code = code_at(&secret, t).unwrap();
        let step = (t / STEP) as i64;
        assert_eq!(matching_step(&secret, &code, t).unwrap(), Some(step));
        assert_eq!(matching_step(&secret, &code, t + STEP).unwrap(), Some(step));
        assert_eq!(matching_step(&secret, &code, t - STEP).unwrap(), Some(step));
        assert_eq!(matching_step(&secret, &code, t + 2 * STEP).unwrap(), None);
        assert_eq!(decoded(&encoded(&secret)).unwrap(), secret);
        let uri = otpauth_uri(&secret, "ada@acme.example").unwrap();
        assert!(
            uri.starts_with("otpauth://totp/psa:ada%40acme.example?"),
            "{uri}"
        );
        assert!(
            uri.contains(&format!("secret={}", encoded(&secret))),
            "{uri}"
        );
    }

    #[test]
    fn codes_are_read_as_typed() {
        assert_eq!(totp_code(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(totp_code("12345"), None);
        assert_eq!(totp_code("12345a"), None);
        assert_eq!(
            recovery_code("ABCD EFGH-JKMN pqrs").as_deref(),
            Some("abcd-efgh-jkmn-pqrs")
        );
        assert_eq!(recovery_code("abcd-efgh-jkmn-pqr"), None);
        let codes = new_recovery_codes();
        assert_eq!(codes.len(), 10);
        assert!(
            codes
                .iter()
                .all(|c| recovery_code(c).as_deref() == Some(c.as_str()))
        );
    }
}
