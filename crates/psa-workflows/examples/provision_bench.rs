//! Provisioning benchmark: latency (p50/p95) and throughput of the tenant creation workflow,
//! sequential and with 16 in flight, with customer tracking on and off in the same run.
//! Tracking is the worker's setting, so the benchmark runs two workers in this process, one with
//! tracking on and one with it off, each on its own task queue; a run goes to one or the other.
//! Run through `bench/provisioning.sh` (release build, tuned Temporal dev server, fresh database).
//!
//! Environment: DATABASE_URL (an empty database), TEMPORAL_ADDRESS, BENCH_SEQUENTIAL (runs,
//! default 40), BENCH_CONCURRENT (runs, default 96), BENCH_IN_FLIGHT (default 16).

use std::time::{Duration, Instant};

use futures::StreamExt;
use psa_models::validate::TagText;
use psa_workflows::client::TenantWorkflows;
use psa_workflows::secret::SecretKey;
use psa_workflows::worker::WorkerConfig;
use psa_workflows::{Outcome, RawRequest, TenantCreationInput, TrackingSettings};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[idx]
}

/// One measurement round: (round, tracking on/off, sequential, concurrent).
type Row = (i32, &'static str, Stats, Stats);

struct Stats {
    p50: Duration,
    p95: Duration,
    per_second: f64,
}

async fn one(w: &TenantWorkflows, label: &str, i: usize) -> Duration {
    let name = format!("Bench {label} {i} {}", uuid::Uuid::new_v4().simple());
    let email = format!("admin-{}@bench.example", uuid::Uuid::new_v4().simple());
    let input = TenantCreationInput::parse(RawRequest {
        tenant_name: &name,
        first_name: "Bench",
        last_name: "Admin",
        email: &email,
        company_name: Some("Bench Services"),
        license_count: Some(5),
        skip_customer_tracking: false,
    })
    .expect("a valid request");
    let start = Instant::now();
    let id = w.start(input, None, "bench").await.expect("start");
    let r = w.result(&id).await.expect("result");
    let elapsed = start.elapsed();
    assert_eq!(r.status, Outcome::Completed, "{r:?}");
    elapsed
}

async fn measure(w: &TenantWorkflows, label: &str, runs: usize, in_flight: usize) -> Stats {
    let start = Instant::now();
    let mut latencies: Vec<Duration> = futures::stream::iter(0..runs)
        .map(|i| one(w, label, i))
        .buffer_unordered(in_flight)
        .collect()
        .await;
    let wall = start.elapsed();
    latencies.sort();
    Stats {
        p50: percentile(&latencies, 0.50),
        p95: percentile(&latencies, 0.95),
        per_second: runs as f64 / wall.as_secs_f64(),
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let address = std::env::var("TEMPORAL_ADDRESS").expect("TEMPORAL_ADDRESS");
    let sequential = env_usize("BENCH_SEQUENTIAL", 40);
    let concurrent = env_usize("BENCH_CONCURRENT", 96);
    let in_flight = env_usize("BENCH_IN_FLIGHT", 16);

    let pool = psa_models::db::connect(&url, 24).await.expect("database");
    psa_models::MIGRATOR.run(&pool).await.expect("migrations");
    let mut tx = pool.begin().await.unwrap();
    let mgmt = psa_models::tenants::init_management(&mut tx, "Nine Minds LLC", None)
        .await
        .unwrap()
        .tenant
        .tenant;
    tx.commit().await.unwrap();
    let on = TrackingSettings {
        enabled: true,
        management_tenant_id: Some(mgmt),
        tag_name: TagText::parse("PSA Customer").unwrap(),
    };
    let off = TrackingSettings {
        enabled: false,
        ..on.clone()
    };

    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let suffix = uuid::Uuid::new_v4().simple();
    let (queue_on, queue_off) = (format!("bench-on-{suffix}"), format!("bench-off-{suffix}"));
    let client = psa_workflows::client::connect(&address, "default")
        .await
        .expect("temporal");
    let starter = |task_queue: &str| TenantWorkflows {
        client: client.clone(),
        task_queue: task_queue.to_owned(),
        pool: pool.clone(),
    };
    let (w_on, w_off) = (starter(&queue_on), starter(&queue_off));
    let config = |tracking: TrackingSettings| WorkerConfig {
        pool: pool.clone(),
        key: key.clone(),
        tracking,
        // The welcome step issues the link and seals it for the starter: no mail server's
        // latency in the numbers.
        delivery: psa_models::invitations::Delivery::without_mail(
            "http://psa.test".parse().expect("a URL"),
        ),
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker_on = psa_workflows::worker::run(
        client.clone(),
        &queue_on,
        config(on),
        stopped(stop_rx.clone()),
    );
    let worker_off =
        psa_workflows::worker::run(client.clone(), &queue_off, config(off), stopped(stop_rx));
    let drive = async {
        // Warm-up: connections, caches, plans.
        measure(&w_on, "warm", 8, 4).await;
        measure(&w_off, "warm", 8, 4).await;
        let mut rows: Vec<Row> = Vec::new();
        // Interleave on and off so drift (table growth, autovacuum) hits both alike.
        for round in 0..2 {
            for (name, w) in [("on", &w_on), ("off", &w_off)] {
                let seq = measure(w, name, sequential / 2, 1).await;
                let conc = measure(w, name, concurrent / 2, in_flight).await;
                rows.push((round, name, seq, conc));
            }
        }
        let _ = stop_tx.send(true);
        rows
    };
    let (worker_on, worker_off, rows) = tokio::join!(worker_on, worker_off, drive);
    worker_on.expect("worker");
    worker_off.expect("worker");

    let avg = |name: &str, f: &dyn Fn(&Row) -> f64| {
        let v: Vec<f64> = rows.iter().filter(|r| r.1 == name).map(f).collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "tenant creation, {sequential} sequential and {concurrent} with {in_flight} in flight per setting\n"
    );
    println!(
        "{:<9} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12}",
        "tracking", "seq p50", "seq p95", "seq /s", "conc p50", "conc p95", "conc /s"
    );
    for name in ["on", "off"] {
        println!(
            "{:<9} {:>8.1}ms {:>8.1}ms {:>12.1} {:>10.1}ms {:>10.1}ms {:>12.1}",
            name,
            avg(name, &|r| ms(r.2.p50)),
            avg(name, &|r| ms(r.2.p95)),
            avg(name, &|r| r.2.per_second),
            avg(name, &|r| ms(r.3.p50)),
            avg(name, &|r| ms(r.3.p95)),
            avg(name, &|r| r.3.per_second),
        );
    }
    let seq_ratio = avg("on", &|r| ms(r.2.p50)) / avg("off", &|r| ms(r.2.p50));
    let conc_ratio = avg("on", &|r| ms(r.3.p50)) / avg("off", &|r| ms(r.3.p50));
    println!("\np50 on/off: sequential {seq_ratio:.3}, {in_flight} in flight {conc_ratio:.3}");
}
