//! Provisioning benchmark: latency (p50/p95) and throughput of the tenant creation workflow,
//! sequential and with 16 in flight, with customer tracking on and off in the same run.
//! Tracking is the worker's setting, so the benchmark runs two workers in this process, one with
//! tracking on and one with it off, each on its own task queue; a run goes to one or the other.
//! Run through `bench/provisioning.sh` (release build, tuned Temporal dev server, fresh database).
//!
//! CPU: each setting's CPU-seconds per tenant, summed over this process (the workers and the
//! starter), the Temporal server (`BENCH_TEMPORAL_PID`, with its child processes) and the
//! PostgreSQL server (found from a backend's parent when it runs on this machine), from `/proc`.
//! Idle work of those servers in the same seconds (autovacuum, timers) is counted too.
//!
//! Environment: DATABASE_URL (a database: empty, or with tenants already in it),
//! TEMPORAL_ADDRESS, BENCH_SEQUENTIAL (runs, default 40), BENCH_CONCURRENT (runs, default 96),
//! BENCH_IN_FLIGHT (default 16), BENCH_TEMPORAL_PID, BENCH_CLK_TCK (default 100), and
//! BENCH_SUMMARY (a file to append one line per setting to: `LABEL SETTING seq_p50_ms
//! seq_p95_ms seq_per_s conc_p50_ms conc_p95_ms conc_per_s cpu_s_per_tenant cpu_psa
//! cpu_temporal cpu_postgres`, with BENCH_LABEL).

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

/// One measurement round: (round, tracking on/off, sequential, concurrent, CPU-seconds by
/// process: this one, Temporal, PostgreSQL).
type Row = (i32, &'static str, Stats, Stats, Vec<f64>);

/// Reads CPU time from `/proc`: a process's own and its reaped children's, over a process tree.
struct CpuMeter {
    roots: Vec<u32>,
    tick: f64,
}

impl CpuMeter {
    /// (pid, parent pid, ticks used by the process and its reaped children).
    fn processes() -> Vec<(u32, u32, u64)> {
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.filter_map(|e| {
            let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name is in parentheses and may contain spaces: fields follow the last ')'.
            let f: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ppid = f.get(1)?.parse().ok()?;
            let ticks: u64 = f
                .get(11..15)?
                .iter()
                .filter_map(|v| v.parse::<u64>().ok())
                .sum();
            Some((pid, ppid, ticks))
        })
        .collect()
    }

    /// CPU-seconds of each root's process tree, in the order of `roots`.
    fn seconds(&self) -> Vec<f64> {
        let all = Self::processes();
        self.roots
            .iter()
            .map(|&root| {
                if root == 0 {
                    return 0.0;
                }
                let mut tree = vec![root];
                let mut i = 0;
                while i < tree.len() {
                    let parent = tree[i];
                    tree.extend(all.iter().filter(|p| p.1 == parent).map(|p| p.0));
                    i += 1;
                }
                all.iter()
                    .filter(|p| tree.contains(&p.0))
                    .map(|p| p.2)
                    .sum::<u64>() as f64
                    / self.tick
            })
            .collect()
    }
}

/// The PostgreSQL server's main process, when it runs on this machine.
async fn postmaster(pool: &sqlx::PgPool) -> Option<u32> {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{backend}/stat")).ok()?;
    if !stat.contains("(postgres)") {
        return None;
    }
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

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
        slug: None,
        plan: Some(psa_models::plans::DEFAULT_PLAN),
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

/// Mean time of each activity's successful attempts, over every run of both settings.
fn print_step_times(rendered: &str) {
    let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
    let mut steps: Vec<(String, f64, f64)> = Vec::new();
    for line in rendered.lines() {
        let (sum, rest) = if let Some(r) = line.strip_prefix("psa_activity_duration_seconds_sum{") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("psa_activity_duration_seconds_count{") {
            (false, r)
        } else {
            continue;
        };
        if !rest.contains("outcome=\"ok\"") {
            continue;
        }
        let Some(name) = rest
            .split("activity=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
        else {
            continue;
        };
        let Some(v) = value(line) else { continue };
        let i = match steps.iter().position(|s| s.0 == name) {
            Some(i) => i,
            None => {
                steps.push((name.to_owned(), 0.0, 0.0));
                steps.len() - 1
            }
        };
        if sum {
            steps[i].1 = v;
        } else {
            steps[i].2 = v;
        }
    }
    println!("\nmean time of a step's successful attempt (its transaction, or the email's work):");
    for (name, sum, count) in steps.iter().filter(|s| s.2 > 0.0) {
        println!("  {name:<24} {:>7.2} ms", sum / count * 1000.0);
    }
}

#[tokio::main]
async fn main() {
    let url = std::env::var("DATABASE_URL").expect("DATABASE_URL");
    let address = std::env::var("TEMPORAL_ADDRESS").expect("TEMPORAL_ADDRESS");
    let sequential = env_usize("BENCH_SEQUENTIAL", 40);
    let concurrent = env_usize("BENCH_CONCURRENT", 96);
    let in_flight = env_usize("BENCH_IN_FLIGHT", 16);

    // The activities' own timings (`psa_activity_duration_seconds`), printed per step at the end:
    // what each step's transaction costs, beside what the engine adds.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("a metrics recorder");
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
    // A root that is unknown (pid 0) counts nothing.
    let temporal_pid = std::env::var("BENCH_TEMPORAL_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok());
    let pg = postmaster(&pool).await;
    let roots = vec![
        std::process::id(),
        temporal_pid.unwrap_or(0),
        pg.unwrap_or(0),
    ];
    let meter = CpuMeter {
        roots,
        tick: env_usize("BENCH_CLK_TCK", 100) as f64,
    };
    let config = |tracking: TrackingSettings| WorkerConfig {
        pool: pool.clone(),
        key: key.clone(),
        tracking,
        // The welcome step issues the link and seals it for the starter: no mail server's
        // latency in the numbers.
        delivery: psa_models::invitations::Delivery::without_mail(
            "http://psa.test".parse().expect("a URL"),
        ),
        lifecycle: psa_workflows::worker::LifecycleConfig::in_dir(
            &std::env::temp_dir().join("psa-bench-exports"),
        )
        .expect("an export directory"),
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
                let cpu = meter.seconds();
                let seq = measure(w, name, sequential / 2, 1).await;
                let conc = measure(w, name, concurrent / 2, in_flight).await;
                let used = meter
                    .seconds()
                    .iter()
                    .zip(&cpu)
                    .map(|(b, a)| b - a)
                    .collect();
                rows.push((round, name, seq, conc, used));
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
    // Tenants per round and setting: the sequential and the concurrent runs.
    let per_round = (sequential / 2 + concurrent / 2) as f64;
    let cpu_part = |name: &str, i: usize| avg(name, &|r| r.4[i]) / per_round;
    let cpu_per_tenant = |name: &str| (0..3).map(|i| cpu_part(name, i)).sum::<f64>();
    println!(
        "{:<9} {:>10} {:>10} {:>12} {:>12} {:>12} {:>12} {:>14}",
        "tracking",
        "seq p50",
        "seq p95",
        "seq /s",
        "conc p50",
        "conc p95",
        "conc /s",
        "CPU s/tenant"
    );
    let label = std::env::var("BENCH_LABEL").unwrap_or_else(|_| "-".into());
    let mut summary = String::new();
    for name in ["on", "off"] {
        let v = [
            avg(name, &|r| ms(r.2.p50)),
            avg(name, &|r| ms(r.2.p95)),
            avg(name, &|r| r.2.per_second),
            avg(name, &|r| ms(r.3.p50)),
            avg(name, &|r| ms(r.3.p95)),
            avg(name, &|r| r.3.per_second),
            cpu_per_tenant(name),
        ];
        println!(
            "{:<9} {:>8.1}ms {:>8.1}ms {:>12.1} {:>10.1}ms {:>10.1}ms {:>12.1} {:>14.4}",
            name, v[0], v[1], v[2], v[3], v[4], v[5], v[6]
        );
        summary.push_str(&format!(
            "{label} {name} {:.1} {:.1} {:.2} {:.1} {:.1} {:.2} {:.4} {:.4} {:.4} {:.4}\n",
            v[0],
            v[1],
            v[2],
            v[3],
            v[4],
            v[5],
            v[6],
            cpu_part(name, 0),
            cpu_part(name, 1),
            cpu_part(name, 2)
        ));
    }
    for name in ["on", "off"] {
        println!(
            "CPU s/tenant, tracking {name}: workers and starter {:.4}, Temporal {:.4}, PostgreSQL {:.4}",
            cpu_part(name, 0),
            cpu_part(name, 1),
            cpu_part(name, 2)
        );
    }
    if temporal_pid.is_none() {
        println!("(CPU without Temporal: BENCH_TEMPORAL_PID is not set)");
    }
    if pg.is_none() {
        println!("(CPU without PostgreSQL: its server is not a local process)");
    }
    if let Ok(path) = std::env::var("BENCH_SUMMARY") {
        use std::io::Write;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(summary.as_bytes()))
            .expect("the summary file");
    }
    print_step_times(&recorder.render());
    let seq_ratio = avg("on", &|r| ms(r.2.p50)) / avg("off", &|r| ms(r.2.p50));
    let conc_ratio = avg("on", &|r| ms(r.3.p50)) / avg("off", &|r| ms(r.3.p50));
    println!("\np50 on/off: sequential {seq_ratio:.3}, {in_flight} in flight {conc_ratio:.3}");
    println!(
        "CPU per tenant on/off: {:.3}",
        cpu_per_tenant("on") / cpu_per_tenant("off")
    );
}
