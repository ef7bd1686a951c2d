//! Webhook delivery benchmark: how fast the dispatcher drains a backlog (events/s), and how long
//! an event takes from its commit to its delivery under a steady stream (p50/p95 lag), through
//! a receiver on loopback (in this process) that verifies every signature. Run through
//! `bench/webhooks.sh` (release build, a fresh database).
//!
//! Environment: DATABASE_URL (an empty database), BENCH_EVENTS (the backlog, default 5000),
//! BENCH_RATE (events/s of the stream, default 100), BENCH_SECONDS (of the stream, default 20),
//! BENCH_CONCURRENCY (attempts in flight, default 16).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use psa_models::events::{self, EventType};
use psa_models::webhooks::{self, AddressPolicy, By, NewEndpoint};
use psa_workflows::secret::SecretKey;
use psa_workflows::webhooks::{Dispatcher, DispatcherConfig};
use secrecy::ExposeSecret;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Default)]
struct Counts {
    verified: AtomicUsize,
    refused: AtomicUsize,
}

async fn receiver(secret: String, counts: Arc<Counts>) -> String {
    let verifier = Arc::new(standardwebhooks::Webhook::new(&secret).expect("a whsec_ secret"));
    let app = axum::Router::new().route(
        "/hooks",
        axum::routing::post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let verifier = verifier.clone();
                let counts = counts.clone();
                async move {
                    if verifier.verify(&body, &headers).is_ok() {
                        counts.verified.fetch_add(1, Ordering::Relaxed);
                        axum::http::StatusCode::OK
                    } else {
                        counts.refused.fetch_add(1, Ordering::Relaxed);
                        axum::http::StatusCode::BAD_REQUEST
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/hooks")
}

async fn write(pool: &sqlx::PgPool, n: usize, from: usize) {
    let mut tx = pool.begin().await.unwrap();
    for i in from..from + n {
        events::record(
            &mut tx,
            EventType::TenantSuspended,
            None,
            serde_json::json!({"n": i, "tenant": {"name": format!("Tenant {i}"), "status": "suspended"}}),
            None,
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
}

async fn delivered(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let backlog = env_usize("BENCH_EVENTS", 5000);
    let rate = env_usize("BENCH_RATE", 100);
    let seconds = env_usize("BENCH_SECONDS", 20);
    let concurrency = env_usize("BENCH_CONCURRENCY", 16);
    let pool = psa_models::db::connect(&url, 24).await.unwrap();
    psa_models::MIGRATOR.run(&pool).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let mgmt = psa_models::tenants::init_management(&mut tx, "Nine Minds LLC", None)
        .await
        .unwrap()
        .tenant
        .tenant;
    tx.commit().await.unwrap();

    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let secret = psa_workflows::webhooks::new_secret();
    let counts = Arc::new(Counts::default());
    let url = receiver(secret.expose_secret().to_owned(), counts.clone()).await;
    let policy = AddressPolicy {
        allow_private: true,
    };
    let mut tx = pool.begin().await.unwrap();
    let id = uuid::Uuid::new_v4();
    webhooks::create(
        &mut tx,
        id,
        &NewEndpoint {
            url,
            description: None,
            event_types: vec![],
        },
        policy,
        &key.seal_for(
            &secret,
            psa_workflows::secret::Sealed::WebhookSecret,
            &id.to_string(),
        ),
        By {
            management_tenant: mgmt,
            actor: &psa_models::audit::Actor::Platform("worker"),
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    // 1. A backlog: events written with no dispatcher, then drained.
    for chunk in 0..backlog.div_ceil(500) {
        write(&pool, 500.min(backlog - chunk * 500), chunk * 500).await;
    }
    let config = DispatcherConfig {
        policy,
        concurrency,
        poll: Duration::from_millis(100),
        ..DispatcherConfig::new(key)
    };
    let dispatcher = Dispatcher::new(pool.clone(), config).unwrap();
    let started = Instant::now();
    tokio::spawn(dispatcher.run(std::future::pending()));
    while (delivered(&pool).await as usize) < backlog {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = started.elapsed();

    // 2. A steady stream: `rate` events a second (in 10 transactions a second) while the
    // dispatcher runs; lag is an event's commit to its delivery's record.
    let stream_from = chrono::Utc::now();
    let per_tick = rate.div_ceil(10).max(1);
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut written = 0;
    for t in 0..seconds * 10 {
        tick.tick().await;
        write(&pool, per_tick, backlog + t * per_tick).await;
        written += per_tick;
    }
    while (delivered(&pool).await as usize) < backlog + written {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (p50, p95, max): (f64, f64, f64) = sqlx::query_as(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY lag), \
                percentile_cont(0.95) WITHIN GROUP (ORDER BY lag), max(lag) \
         FROM (SELECT extract(epoch FROM d.delivered_at - e.created_at)::float8 * 1000 AS lag \
               FROM webhook_deliveries d JOIN events e ON e.event_id = d.event_id \
               WHERE e.created_at >= $1) s",
    )
    .bind(stream_from)
    .fetch_one(&pool)
    .await
    .unwrap();
    let attempts: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_attempts")
        .fetch_one(&pool)
        .await
        .unwrap();

    println!(
        "webhook deliveries, {} cores, concurrency {concurrency}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "backlog of {backlog}: drained in {:.2} s = {:.0} events/s",
        drain.as_secs_f64(),
        backlog as f64 / drain.as_secs_f64()
    );
    println!(
        "stream of {rate}/s for {seconds} s ({written} events): lag p50 {p50:.0} ms, p95 {p95:.0} ms, max {max:.0} ms"
    );
    println!(
        "receiver: {} verified, {} refused; {attempts} attempts for {} deliveries",
        counts.verified.load(Ordering::Relaxed),
        counts.refused.load(Ordering::Relaxed),
        backlog + written
    );
}
