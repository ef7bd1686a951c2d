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
    login_by_address: DefaultKeyedRateLimiter<IpAddr>,
    login_by_account: DefaultKeyedRateLimiter<String>,
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

fn quota_per_minute(n: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(n.max(1)).expect("at least 1"))
}

fn check<K: Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), ApiError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(DefaultClock::default().now());
        metrics::counter!("psa_rate_limited_total").increment(1);
        // Whole seconds, rounded up: what `Retry-After` and the message both say.
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        ApiError::RateLimited {
            retry_after: Duration::from_secs(secs.max(1)),
        }
    })
}

impl Limits {
    pub fn new(config: LimitsConfig) -> Limits {
        Limits {
            login_by_address: RateLimiter::keyed(quota_per_minute(
                config.login_per_minute_per_address,
            )),
            login_by_account: RateLimiter::keyed(quota_per_minute(
                config.login_per_minute_per_account,
            )),
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

    pub fn login_from(&self, address: IpAddr) -> Result<(), ApiError> {
        check(&self.login_by_address, &network_of(address))
    }

    /// Sign-in attempts (passwords, second-factor codes, reset requests) for one email, whatever
    /// organisation they name: one bucket per email, so that how it fills tells nothing about
    /// which organisations the email is in.
    pub fn login_of(&self, email: &str) -> Result<(), ApiError> {
        check(&self.login_by_account, &email.to_lowercase())
    }

    pub fn request_with(&self, credential: uuid::Uuid) -> Result<(), ApiError> {
        check(&self.requests_by_credential, &credential)
    }

    /// Forgets keys whose limits have fully recovered (the maps would otherwise grow with every
    /// address and account ever seen).
    pub fn forget_idle(&self) {
        self.login_by_address.retain_recent();
        self.login_by_account.retain_recent();
        self.requests_by_credential.retain_recent();
    }
}
