//! The webhook dispatcher: posts due deliveries, signed to the Standard Webhooks specification
//! (standardwebhooks.com), and records every attempt. It runs in each `psa worker`; several
//! dispatchers share the work through `FOR UPDATE SKIP LOCKED` claims with a lease, so a
//! dispatcher killed mid-attempt loses nothing: its claims fall due again when the lease ends
//! (docs/architecture.md, "Webhook deliveries", says why this is not a Temporal workflow).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use psa_models::webhooks::{self, AddressPolicy, Claimed, Next, Outcome, Schedule};
use secrecy::ExposeSecret;
use sqlx::PgPool;

use crate::secret::SecretKey;

/// What a dispatcher is set up with.
#[derive(Clone, Debug)]
pub struct DispatcherConfig {
    /// Opens the endpoints' sealed secrets.
    pub key: SecretKey,
    pub policy: AddressPolicy,
    /// The most one attempt may take (connect, send, response head).
    pub attempt_timeout: Duration,
    /// Attempts in flight at once.
    pub concurrency: usize,
    pub schedule: Schedule,
    /// How often due deliveries are looked for without a notification (retries fall due by
    /// time, not by a notification).
    pub poll: Duration,
}

impl DispatcherConfig {
    pub fn new(key: SecretKey) -> Self {
        Self {
            key,
            policy: AddressPolicy::default(),
            attempt_timeout: Duration::from_secs(10),
            concurrency: 16,
            schedule: Schedule::default(),
            poll: Duration::from_secs(1),
        }
    }

    /// A claim outlives its attempt: the timeout, and 10 s to record it. (Recorded later than
    /// that, the delivery may be attempted twice: deliveries are at least once.)
    fn lease(&self) -> Duration {
        self.attempt_timeout + Duration::from_secs(10)
    }
}

/// Resolves endpoint names, keeping only the addresses the policy allows: a name that points
/// inside the platform's network (or is made to, between the check at creation and the
/// delivery) gets no connection.
struct GuardedResolver {
    policy: AddressPolicy,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy;
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let all: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> = all
                .iter()
                .copied()
                .filter(|a| policy.allows(a.ip()))
                .collect();
            if allowed.is_empty() && !all.is_empty() {
                return Err(format!(
                    "refused: {host} resolves only to private, loopback or link-local addresses"
                )
                .into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// An HTTP client for requests to addresses a tenant chose (webhook endpoints, single sign-on
/// providers): no proxy, no redirects (a redirect could lead anywhere, inside the network
/// included), bounded in time, and reaching only the addresses `policy` allows.
pub fn guarded_client(
    policy: AddressPolicy,
    timeout: Duration,
    user_agent: &str,
) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .user_agent(format!("{user_agent}/{}", env!("CARGO_PKG_VERSION")))
        .dns_resolver(Arc::new(GuardedResolver { policy }))
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

pub struct Dispatcher {
    pool: PgPool,
    config: DispatcherConfig,
    client: reqwest::Client,
}

/// The body of a delivery: the Standard Webhooks payload shape.
fn body(c: &Claimed) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "type": c.event_type,
        "timestamp": c.event_created_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "data": c.data,
    }))
    .expect("JSON values serialise")
}

/// The `webhook-signature` header: `v1,<base64>` with the secret, and a second one with the
/// previous secret while it is still valid after a rotation.
fn signature(key: &SecretKey, c: &Claimed, timestamp: i64, body: &[u8]) -> Result<String, String> {
    let mut sigs = Vec::new();
    for sealed in std::iter::once(&c.secret_sealed).chain(c.previous_secret_sealed.as_ref()) {
        let secret = key
            .open_for(
                sealed,
                crate::secret::Sealed::WebhookSecret,
                &c.endpoint_id.to_string(),
            )
            .map_err(|e| format!("the endpoint's secret: {e}"))?;
        let webhook = standardwebhooks::Webhook::new(secret.expose_secret())
            .map_err(|_| "the endpoint's secret is not a whsec_ secret".to_owned())?;
        sigs.push(
            webhook
                .sign(&c.event_id.to_string(), timestamp, body)
                .map_err(|e| format!("signing: {e}"))?,
        );
    }
    Ok(sigs.join(" "))
}

/// Reads the start of a response body, at most `max` bytes, and no more of it.
async fn excerpt(mut response: reqwest::Response, max: usize) -> Option<String> {
    let mut buf = Vec::new();
    while buf.len() < max {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk[..chunk.len().min(max - buf.len())]),
            _ => break,
        }
    }
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// A new webhook secret: `whsec_` and 32 random bytes in base64.
pub fn new_secret() -> secrecy::SecretString {
    use base64::Engine;
    let bytes: [u8; 32] = rand::random();
    secrecy::SecretString::from(format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    ))
}

impl Dispatcher {
    pub fn new(pool: PgPool, config: DispatcherConfig) -> Result<Self, String> {
        // A 3xx is a failed attempt: redirects are not followed.
        let client = guarded_client(config.policy, config.attempt_timeout, "psa-webhooks")?;
        Ok(Self {
            pool,
            config,
            client,
        })
    }

    /// Dispatches until `shutdown` resolves: at once when a delivery is added (the trigger
    /// notifies), else every `poll`. Attempts in flight at shutdown are abandoned with the
    /// process; their claims fall due again. (The backlog is observed by [`observe`], from the
    /// worker's sweep, so it is reported even when no dispatcher runs.)
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut listener = match sqlx::postgres::PgListener::connect_with(&self.pool).await {
            Ok(mut l) => match l.listen("psa_webhook_deliveries").await {
                Ok(()) => Some(l),
                Err(e) => {
                    tracing::warn!(error = %e, "webhook dispatcher: no notifications, polling");
                    None
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "webhook dispatcher: no notifications, polling");
                None
            }
        };
        tokio::pin!(shutdown);
        loop {
            let busy = match self.dispatch_once().await {
                Ok(n) => n > 0,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook dispatch failed; will retry");
                    false
                }
            };
            if busy {
                // More may be due: look again at once (shutdown still wins).
                tokio::select! {
                    biased;
                    () = &mut shutdown => return,
                    () = tokio::task::yield_now() => continue,
                }
            }
            let wake = async {
                match listener.as_mut() {
                    Some(l) => {
                        let _ = tokio::time::timeout(self.config.poll, l.recv()).await;
                    }
                    None => tokio::time::sleep(self.config.poll).await,
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = wake => {}
            }
        }
    }

    /// Claims up to `concurrency` due deliveries and attempts them all at once (each claim's
    /// lease starts with its attempt). Returns how many were attempted.
    pub async fn dispatch_once(&self) -> Result<usize, psa_models::Error> {
        let claimed = {
            let mut conn = self.pool.acquire().await?;
            webhooks::claim(
                &mut conn,
                i64::try_from(self.config.concurrency).unwrap_or(16),
                self.config.lease(),
            )
            .await?
        };
        let n = claimed.len();
        futures::stream::iter(claimed)
            .map(|c| self.attempt(c))
            .buffer_unordered(self.config.concurrency.max(1))
            .collect::<Vec<()>>()
            .await;
        Ok(n)
    }

    async fn attempt(&self, claimed: Claimed) {
        let outcome = self.post(&claimed).await;
        metrics::histogram!("psa_webhook_attempt_duration_seconds")
            .record(outcome.latency.as_secs_f64());
        let jitter = rand::random::<f64>() * 0.4 - 0.2;
        let recorded = async {
            let mut tx = self.pool.begin().await?;
            let next =
                webhooks::complete(&mut tx, &claimed, &outcome, &self.config.schedule, jitter)
                    .await?;
            tx.commit().await?;
            Ok::<_, psa_models::Error>(next)
        }
        .await;
        match recorded {
            Ok(next) => {
                let label = match next {
                    Next::Delivered => "delivered",
                    Next::Retry(_) => "retrying",
                    Next::Failed => "failed",
                    Next::Gone => "gone",
                };
                metrics::counter!("psa_webhook_attempts_total", "outcome" => label).increment(1);
                if let Next::Delivered = next {
                    let lag = (chrono::Utc::now() - claimed.created_at)
                        .to_std()
                        .unwrap_or_default();
                    metrics::histogram!("psa_webhook_delivery_duration_seconds")
                        .record(lag.as_secs_f64());
                }
                if outcome.error.is_some() {
                    tracing::info!(
                        delivery_id = %claimed.delivery_id,
                        endpoint_id = %claimed.endpoint_id,
                        event_type = %claimed.event_type,
                        attempt = claimed.attempts + 1,
                        error = outcome.error.as_deref().unwrap_or_default(),
                        next = ?next,
                        "webhook attempt failed"
                    );
                }
            }
            // Not recorded: the claim falls due again when its lease ends.
            Err(e) => tracing::warn!(
                delivery_id = %claimed.delivery_id,
                error = %e,
                "recording a webhook attempt failed; it will be attempted again"
            ),
        }
    }

    async fn post(&self, c: &Claimed) -> Outcome {
        let started = Instant::now();
        let failed = |error: String| Outcome {
            response_status: None,
            latency: started.elapsed(),
            error: Some(error),
            response_excerpt: None,
        };
        let url = match url::Url::parse(&c.url) {
            Ok(u) => u,
            Err(e) => return failed(format!("the endpoint's URL is invalid: {e}")),
        };
        // A literal address is connected to without resolving: checked here.
        let literal = match url.host() {
            Some(url::Host::Ipv4(a)) => Some(IpAddr::V4(a)),
            Some(url::Host::Ipv6(a)) => Some(IpAddr::V6(a)),
            _ => None,
        };
        if let Some(ip) = literal
            && !self.config.policy.allows(ip)
        {
            return failed(format!(
                "refused: {ip} is a private, loopback or link-local address"
            ));
        }
        let body = body(c);
        let timestamp = chrono::Utc::now().timestamp();
        let signature = match signature(&self.config.key, c, timestamp, &body) {
            Ok(s) => s,
            Err(e) => return failed(e),
        };
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header(standardwebhooks::HEADER_WEBHOOK_ID, c.event_id.to_string())
            .header(
                standardwebhooks::HEADER_WEBHOOK_TIMESTAMP,
                timestamp.to_string(),
            )
            .header(standardwebhooks::HEADER_WEBHOOK_SIGNATURE, signature)
            .body(body)
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                let excerpt = excerpt(response, 512).await;
                Outcome {
                    response_status: Some(status.as_u16()),
                    latency: started.elapsed(),
                    error: (!status.is_success()).then(|| format!("HTTP {}", status.as_u16())),
                    response_excerpt: excerpt,
                }
            }
            Err(e) => failed(describe(&e)),
        }
    }
}

/// What went wrong, without the URL (which may carry a receiver's token in its query).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    let mut detail = String::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        detail = s.to_string();
        source = s.source();
    }
    if detail.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}: {detail}")
    }
}

/// The backlog gauges: deliveries due and not yet attempted, how long the oldest has waited,
/// and the endpoints disabled for failing.
pub async fn observe(pool: &PgPool) {
    let row: Result<(i64, f64, i64), sqlx::Error> = sqlx::query_as(
        "SELECT (SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints w \
                   ON w.endpoint_id = d.endpoint_id AND w.enabled \
                 WHERE d.status = 'pending' AND d.next_attempt_at <= now()), \
                coalesce((SELECT extract(epoch FROM now() - min(d.next_attempt_at))::float8 \
                          FROM webhook_deliveries d JOIN webhook_endpoints w \
                            ON w.endpoint_id = d.endpoint_id AND w.enabled \
                          WHERE d.status = 'pending' AND d.next_attempt_at <= now()), 0), \
                (SELECT count(*) FROM webhook_endpoints \
                 WHERE NOT enabled AND disabled_reason LIKE 'every attempt since %')",
    )
    .fetch_one(pool)
    .await;
    match row {
        Ok((due, lag, disabled)) => {
            metrics::gauge!("psa_webhook_deliveries_due").set(due as f64);
            metrics::gauge!("psa_webhook_delivery_lag_seconds").set(lag);
            metrics::gauge!("psa_webhook_endpoints_disabled").set(disabled as f64);
        }
        Err(e) => tracing::warn!(error = %e, "cannot observe the webhook backlog"),
    }
}

/// Registers the dispatcher's metrics at zero, so they exist before the first delivery.
pub fn init_metrics() {
    for outcome in ["delivered", "retrying", "failed", "gone"] {
        metrics::counter!("psa_webhook_attempts_total", "outcome" => outcome).absolute(0);
    }
    metrics::gauge!("psa_webhook_deliveries_due").set(0.0);
    metrics::gauge!("psa_webhook_delivery_lag_seconds").set(0.0);
    metrics::gauge!("psa_webhook_endpoints_disabled").set(0.0);
}
