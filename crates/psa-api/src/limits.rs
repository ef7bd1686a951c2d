//! Abuse limits: rate limits on login (per client address and per account) and on every
//! authenticated request (per credential), and a bound on concurrent password hashing.
//!
//! Login verifies an argon2 hash, which costs tens of milliseconds of CPU and 19 MiB: a flood of
//! wrong passwords must neither occupy every core (hashes wait for a permit) nor hold database
//! connections (the hash is verified outside any transaction). The limits answer 429
//! `rate_limited` with `Retry-After`.
//!
//! The per-account limit counts every attempt, so someone who knows an account's email can keep
//! it from logging in for as long as they keep trying (a lockout by design: it also stops them
//! guessing); operators see it in `psa_rate_limited_total` and the audit log's failed logins.
//!
//! The sign-in limits (per account, per client address: passwords, second-factor codes, reset
//! requests) are security controls, so they hold across every replica: they live in PostgreSQL,
//! which all replicas share (`psa_rate_take`, one statement per attempt on an unlogged table;
//! migration `shared_limits`). Each replica also keeps the same limits in memory, in front: a
//! flood a replica can refuse alone never reaches the database. The per-credential request
//! limit protects the replica that answers, not an account: it stays in each replica's memory,
//! and ordinary requests never touch the database for it.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::ApiError;

/// The configured limits.
#[derive(Clone, Copy, Debug)]
pub struct LimitsConfig {
    /// Login attempts per minute from one client address (bursts up to the same number).
    pub login_per_minute_per_address: u32,
    /// Sign-in attempts per minute for one email (passwords, second-factor codes, reset
    /// requests), from anywhere.
    pub login_per_minute_per_account: u32,
    /// Requests per second with one credential (session or API key).
    pub requests_per_second_per_credential: u32,
    /// Password hashes computed at once.
    pub concurrent_hashes: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            login_per_minute_per_address: 60,
            login_per_minute_per_account: 10,
            requests_per_second_per_credential: 100,
            // Half the cores: a flood of logins leaves the other half to everyone else.
            concurrent_hashes: std::thread::available_parallelism()
                .map(|n| (n.get() / 2).max(1))
                .unwrap_or(1),
        }
    }
}

/// The limiters of one server.
pub struct Limits {
    /// Where the shared limits live.
    pool: sqlx::PgPool,
    login_per_minute_per_address: u32,
    login_per_minute_per_account: u32,
    /// The same limits in this replica's memory, checked first.
    local_by_address: DefaultKeyedRateLimiter<IpAddr>,
    local_by_account: DefaultKeyedRateLimiter<String>,
    requests_by_credential: DefaultKeyedRateLimiter<uuid::Uuid>,
    /// Permits to compute a password hash.
    pub hashing: std::sync::Arc<tokio::sync::Semaphore>,
    /// Permits to send a password-reset email in the background (each holds a connection for a
    /// moment and waits on the mail server).
    pub mail_sends: std::sync::Arc<tokio::sync::Semaphore>,
}

/// Password-reset emails sent at once, at most.
pub const CONCURRENT_MAIL_SENDS: usize = 4;

/// The key of an address: IPv4 as it is, IPv6 by its /64 (one subscriber has a whole /64, and
/// would otherwise get a fresh limit for every address in it).
fn network_of(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

fn per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least 1"))
}

fn check<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), ApiError> {
    limiter
        .check_key(key)
        .map_err(|not_until| limited(not_until.wait_time_from(DefaultClock::default().now())))
}

fn limited(wait: Duration) -> ApiError {
    metrics::counter!("psa_rate_limited_total").increment(1);
    // Whole seconds, rounded up: what `Retry-After` and the message both say.
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ApiError::RateLimited {
        retry_after: Duration::from_secs(secs.max(1)),
    }
}

impl Limits {
    /// The limits of a server whose replicas share `pool`'s database.
    pub fn new(config: LimitsConfig, pool: sqlx::PgPool) -> Limits {
        Limits {
            pool,
            login_per_minute_per_address: config.login_per_minute_per_address,
            login_per_minute_per_account: config.login_per_minute_per_account,
            local_by_address: RateLimiter::keyed(per_minute(config.login_per_minute_per_address)),
            local_by_account: RateLimiter::keyed(per_minute(config.login_per_minute_per_account)),
            requests_by_credential: RateLimiter::keyed(Quota::per_second(
                NonZeroU32::new(config.requests_per_second_per_credential.max(1))
                    .expect("at least 1"),
            )),
            mail_sends: std::sync::Arc::new(tokio::sync::Semaphore::new(CONCURRENT_MAIL_SENDS)),
            hashing: std::sync::Arc::new(tokio::sync::Semaphore::new(
                config.concurrent_hashes.max(1),
            )),
        }
    }

    /// Takes one from `key`'s shared allowance of `per_minute`.
    async fn take(&self, key: &str, per_minute: u32) -> Result<(), ApiError> {
        let wait: f64 = sqlx::query_scalar("SELECT psa_rate_take($1, $2)")
            .bind(key)
            .bind(i32::try_from(per_minute.max(1)).unwrap_or(i32::MAX))
            .fetch_one(&self.pool)
            .await
            .map_err(ApiError::from)?;
        if wait > 0.0 {
            return Err(limited(Duration::from_secs_f64(wait)));
        }
        Ok(())
    }

    /// Sign-in attempts from one client address (its /64 for IPv6), across replicas.
    pub async fn login_from(&self, address: IpAddr) -> Result<(), ApiError> {
        let network = network_of(address);
        check(&self.local_by_address, &network)?;
        let key = format!("login:address:{network}");
        self.take(&key, self.login_per_minute_per_address).await
    }

    /// Sign-in attempts (passwords, second-factor codes, reset requests) for one email, whatever
    /// organisation they name, across replicas: one bucket per email, so that how it fills
    /// tells nothing about which organisations the email is in. Kept by a digest of the email.
    pub async fn login_of(&self, email: &str) -> Result<(), ApiError> {
        use sha2::Digest;
        let email = email.to_lowercase();
        let digest = sha2::Sha256::digest(email.as_bytes());
        check(&self.local_by_account, &format!("{digest:x}"))?;
        let key = format!("login:account:{digest:x}");
        self.take(&key, self.login_per_minute_per_account).await
    }

    pub fn request_with(&self, credential: uuid::Uuid) -> Result<(), ApiError> {
        check(&self.requests_by_credential, &credential)
    }

    /// Forgets keys whose limits have fully recovered (the map and the shared table would
    /// otherwise grow with every address and account ever seen).
    pub async fn forget_idle(&self) {
        self.requests_by_credential.retain_recent();
        self.local_by_address.retain_recent();
        self.local_by_account.retain_recent();
        if let Err(e) = sqlx::query("SELECT psa_rate_prune()")
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "pruning the shared limits failed");
        }
    }
}
