//! The alert rules against the real thing: a real Prometheus (Debian's `prometheus`) scrapes a
//! real `psa worker` with `deploy/prometheus/alerts.yml` loaded, each fault is induced for real
//! (fail points, an SMTP server that is not there, PostgreSQL stopped, a run terminated,
//! Temporal stopped), and Prometheus' HTTP API must show the rule's expression true: the alert
//! `pending` (its `for:` is as shipped, so it need not have fired yet) or `firing`. A healthy
//! run first must leave every alert inactive.
// Without fail points only the failing placeholder of the alert test is built.
#![cfg_attr(not(feature = "failpoints"), allow(unused_imports, dead_code))]

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use psa_workflows::client::TenantWorkflows;
use psa_workflows::{Outcome, RawRequest, TenantCreationInput};

use super::{Running, free_port};

/// A Prometheus server scraping one target every second and evaluating the shipped rules every
/// second (only the recording group's own `interval: 1m` is shortened).
struct Prometheus {
    /// The rules file as shipped.
    rules: String,
    child: std::process::Child,
    base: String,
    dir: std::path::PathBuf,
}

impl Prometheus {
    async fn start(target: &str) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("psa-prom-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let rules = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../deploy/prometheus/alerts.yml"),
        )
        .unwrap();
        assert!(rules.contains("interval: 1m"));
        std::fs::write(
            dir.join("alerts.yml"),
            rules.replace("interval: 1m", "interval: 1s").as_bytes(),
        )
        .unwrap();
        std::fs::write(
            dir.join("prometheus.yml"),
            format!(
                "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
                 rule_files: [{rules}]\n\
                 scrape_configs:\n  - job_name: psa-worker\n    static_configs:\n      - targets: ['{target}']\n",
                rules = dir.join("alerts.yml").display()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("prometheus (Debian's `prometheus` package; scripts/test installs it)");
        let p = Prometheus {
            rules,
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while reqwest::get(format!("{}/-/ready", p.base))
            .await
            .map(|r| !r.status().is_success())
            .unwrap_or(true)
        {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        p
    }

    /// Every alert rule's state: inactive, pending or firing.
    async fn states(&self) -> BTreeMap<String, String> {
        let body: serde_json::Value =
            reqwest::get(format!("{}/api/v1/rules?type=alert", self.base))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
        let mut out = BTreeMap::new();
        for group in body["data"]["groups"].as_array().unwrap() {
            for rule in group["rules"].as_array().unwrap() {
                out.insert(
                    rule["name"].as_str().unwrap().to_owned(),
                    rule["state"].as_str().unwrap().to_owned(),
                );
            }
        }
        out
    }

    /// Waits until `alert`'s expression is true (pending or firing).
    async fn wait_active(&self, alert: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let states = self.states().await;
            let state = states
                .get(alert)
                .unwrap_or_else(|| panic!("no rule {alert}"));
            if state == "pending" || state == "firing" {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{alert} did not become active: {states:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until Prometheus has scraped the target's `metric` at least once.
    async fn wait_scraped(&self, metric: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let body: serde_json::Value =
                reqwest::get(format!("{}/api/v1/query?query={metric}", self.base))
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
            if body["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
            {
                return;
            }
            assert!(Instant::now() < deadline, "{metric} was never scraped");
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn input(name: &str) -> TenantCreationInput {
    TenantCreationInput::parse(RawRequest {
        tenant_name: name,
        first_name: "Ada",
        last_name: "Lovelace",
        email: &format!("ada@{}.example", name.to_lowercase().replace(' ', "-")),
        company_name: None,
        license_count: None,
        skip_customer_tracking: false,
        slug: None,
        plan: None,
    })
    .unwrap()
}

/// Without fail points the faults cannot be induced: that is a failure, not a skip.
#[cfg(not(feature = "failpoints"))]
#[test]
fn each_alert_fires_on_its_real_fault_and_a_healthy_run_raises_none() {
    panic!("this test needs `--features psa-cli/failpoints` (scripts/test sets it)");
}

#[cfg(feature = "failpoints")]
#[tokio::test(flavor = "multi_thread")]
async fn each_alert_fires_on_its_real_fault_and_a_healthy_run_raises_none() {
    // Its own PostgreSQL and Temporal: this test stops both.
    let pg = psa_testing::PrivateCluster::start(|_| {}, "");
    let url = pg.url("");
    let pool = psa_models::db::connect(&url, 4).await.unwrap();
    psa_models::MIGRATOR.run(&pool).await.unwrap();
    let mut tx = pool.begin().await.unwrap();
    let mgmt = psa_models::tenants::init_management(&mut tx, "Nine Minds LLC", None)
        .await
        .unwrap()
        .tenant
        .tenant;
    tx.commit().await.unwrap();
    let temporal = psa_workflows::dev_server::DevServer::start(&psa_testing::temporal_cli())
        .await
        .expect("a Temporal dev server");
    let queue = format!("alerts-{}", uuid::Uuid::new_v4().simple());
    let metrics_port = free_port();
    let key = psa_workflows::secret::SecretKey::generate_base64();
    let smtp = psa_testing::SmtpSink::start().await;
    let worker = |failpoints: &str, smtp_url: &str| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_psa"));
        c.args([
            "worker",
            "--metrics-bind",
            &format!("127.0.0.1:{metrics_port}"),
        ])
        .env("DATABASE_URL", &url)
        .env("TEMPORAL_ADDRESS", &temporal.address)
        .env("TEMPORAL_TASK_QUEUE", &queue)
        .env("NINEMINDS_TENANT_ID", mgmt.to_string())
        .env("PSA_SECRET_KEY", &key)
        .env("PSA_SMTP_URL", smtp_url)
        .env("PSA_MAIL_FROM", "psa <noreply@psa.test>")
        .env("PSA_SWEEP_INTERVAL_SECONDS", "1")
        .env("RUST_LOG", "warn")
        .env("FAILPOINTS", failpoints);
        Running::spawn(c)
    };
    let prometheus = Prometheus::start(&format!("127.0.0.1:{metrics_port}")).await;
    let client = psa_workflows::client::connect(&temporal.address, "default")
        .await
        .unwrap();
    let workflows = TenantWorkflows {
        client,
        task_queue: queue.clone(),
        pool: pool.clone(),
    };
    let run = |name: &'static str| {
        let w = workflows.clone();
        async move {
            let id = w.start(input(name), None, "test").await.unwrap();
            w.result(&id).await.unwrap()
        }
    };

    // A healthy run: everything works, no alert is active.
    let healthy = worker("", &smtp.url());
    prometheus.wait_scraped("psa_worker_dependency_up").await;
    let r = run("Healthy").await;
    assert_eq!(r.status, Outcome::Completed);
    assert_eq!(r.welcome_email.status, psa_workflows::WelcomeStatus::Sent);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let states = prometheus.states().await;
    assert_eq!(
        states.len(),
        prometheus.rules.matches("- alert:").count(),
        "every rule was loaded: {states:?}"
    );
    assert!(
        states.values().all(|s| s == "inactive"),
        "a healthy run raised an alert: {states:?}"
    );
    healthy.stop();

    // Faults in the runs: the first two fail in setup_tenant_data for good (the first's rollback
    // fails too) after their customer records were written (rolled back with them), the tag of
    // every later customer record fails (and with it the whole record: one transaction), and
    // the SMTP server is not there.
    let closed = format!("smtp://127.0.0.1:{}", free_port());
    let faulty = worker(
        "activity::setup_tenant_data=2*return(permanent);\
         activity::rollback_tenant=1*return(permanent);\
         activity::tag_customer_company=2*off->return(permanent)",
        &closed,
    );
    assert_eq!(run("Broken One").await.status, Outcome::Failed);
    assert_eq!(run("Broken Two").await.status, Outcome::RolledBack);
    let r = run("Unmailed").await;
    assert_eq!(r.status, Outcome::Completed);
    assert_eq!(r.welcome_email.status, psa_workflows::WelcomeStatus::Failed);
    let minute = Duration::from_secs(60);
    for alert in [
        "PsaProvisioningRunFailed",
        "PsaProvisioningRunRolledBack",
        "PsaCustomerTrackingFailureRateHigh",
        "PsaCustomerTrackingRollbackRateHigh",
        "PsaWelcomeEmailFailed",
    ] {
        prometheus.wait_active(alert, minute).await;
    }

    // PostgreSQL down for 25 s with three runs in flight: the worker's database probe and the
    // retried step failures (of the tenant's own steps: tracking has not started) show it.
    let mut ids = Vec::new();
    for name in ["Outage One", "Outage Two", "Outage Three"] {
        ids.push(workflows.start(input(name), None, "test").await.unwrap());
    }
    // And an operator's `psa tenant create` waiting for its run when the database goes away: it
    // keeps waiting (saying so) and ends with the result, not an error.
    let mut create = Command::new(env!("CARGO_BIN_EXE_psa"));
    create
        .args(["tenant", "create", "--name", "Outage Four", "--admin-email"])
        .args([
            "ada@outage-four.example",
            "--first-name",
            "Ada",
            "--last-name",
            "L",
            "--json",
        ])
        .env("DATABASE_URL", &url)
        .env("TEMPORAL_ADDRESS", &temporal.address)
        .env("TEMPORAL_TASK_QUEUE", &queue)
        .env("PSA_SECRET_KEY", &key)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut create = psa_testing::Spawned::spawn(&mut create).unwrap();
    let claimed = Instant::now() + Duration::from_secs(20);
    while sqlx::query_scalar::<_, i64>(
        "SELECT count(*) FROM tenant_provisioning WHERE tenant_name = 'Outage Four'",
    )
    .fetch_one(&pool)
    .await
    .unwrap()
        == 0
    {
        assert!(Instant::now() < claimed, "the create never claimed its run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pg.stop();
    let down = Instant::now();
    prometheus
        .wait_active("PsaWorkerDatabaseUnreachable", Duration::from_secs(20))
        .await;
    // A run cut off from outside while it waits: the sweeper rolls it back (30 s after it
    // began, once the database is back).
    let out = Command::new(psa_testing::temporal_cli())
        .args([
            "workflow",
            "terminate",
            "--address",
            &temporal.address,
            "-w",
            &ids[0],
        ])
        .args(["--reason", "operator"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_secs(25).saturating_sub(down.elapsed())).await;
    pg.resume();
    for id in &ids[1..] {
        let r = workflows.result(id).await.unwrap();
        assert_eq!(
            r.status,
            Outcome::Completed,
            "retried through the outage, not rolled back: {:?}",
            r.error
        );
    }
    let (status, stdout, stderr) = tokio::task::spawn_blocking(move || {
        use std::io::Read as _;
        let (mut out, mut err) = (String::new(), String::new());
        // Both pipes drained at once, so neither fills while the other is read.
        let mut stdout = create.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            stdout.read_to_string(&mut out).unwrap();
            out
        });
        create
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        let out = reader.join().unwrap();
        (create.wait().unwrap(), out, err)
    })
    .await
    .unwrap();
    assert!(status.success(), "{stderr}");
    assert!(stderr.contains("waiting:"), "{stderr}");
    let last = stdout.lines().last().unwrap_or_default().to_owned();
    let result: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(result["status"], "completed", "{result}");
    prometheus
        .wait_active("PsaProvisioningStepsFailingTransiently", minute)
        .await;
    prometheus
        .wait_active("PsaProvisioningRunCutOff", Duration::from_secs(90))
        .await;

    // Temporal stopped: the worker's Temporal probe shows it.
    drop(temporal);
    prometheus
        .wait_active("PsaWorkerTemporalUnreachable", Duration::from_secs(30))
        .await;
    let logs = faulty.stop().1;
    for line in [
        "provisioning step failed",
        "compensation failed",
        "welcome email failed",
        "the worker cannot reach a dependency",
    ] {
        assert!(
            logs.contains(line),
            "{line:?} missing from the worker's log:\n{logs}"
        );
    }
}

/// Every alert has its runbook: a section of docs/troubleshooting.md titled with its exact name,
/// which its `runbook_url` points to, and no section names an alert that does not exist.
#[test]
fn every_alert_has_its_runbook_section() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let rules = std::fs::read_to_string(root.join("deploy/prometheus/alerts.yml")).unwrap();
    let docs = std::fs::read_to_string(root.join("docs/troubleshooting.md")).unwrap();
    let alerts: std::collections::BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .map(str::to_owned)
        .collect();
    let alerts_part = docs
        .split("\n## Alerts\n")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let sections: std::collections::BTreeSet<String> = alerts_part
        .lines()
        .filter_map(|l| l.strip_prefix("### "))
        .map(str::to_owned)
        .collect();
    assert_eq!(alerts, sections);
    for alert in &alerts {
        let url = format!(
            "runbook_url: \"https://github.com/psa/psa/blob/main/docs/troubleshooting.md#{}\"",
            alert.to_lowercase()
        );
        assert!(rules.contains(&url), "{alert}: {url}");
    }
}
