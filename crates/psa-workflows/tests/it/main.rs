//! The tenant creation workflow on a real Temporal dev server and a real PostgreSQL, with the
//! worker running in this process (so fail points can be set per test: nextest runs each test
//! in its own process). Run with `--features psa-workflows/failpoints` (scripts/test does).

mod events;
mod failures;
mod happy;
mod lifecycle;
mod replay;
mod tracking;

use std::time::Duration;

use psa_models::validate::TagText;
use psa_models::{TenantId, tenants};
use psa_testing::{TestDb, TestTemporal};
use psa_workflows::client::TenantWorkflows;
use psa_workflows::secret::SecretKey;
use psa_workflows::worker::{Background, WorkerConfig};
use psa_workflows::{RawRequest, TenantCreationInput, TenantCreationResult, TrackingSettings};

/// Who the tests' own lifecycle changes are by.
pub const TESTER: &psa_models::audit::Actor = &psa_models::audit::Actor::Platform("worker");

pub struct Env {
    pub db: TestDb,
    pub temporal: TestTemporal,
    pub workflows: TenantWorkflows,
    pub mgmt: TenantId,
    pub key: SecretKey,
    /// The worker's export directory.
    pub exports: std::path::PathBuf,
    _worker: Background,
}

/// The worker's tracking settings of the usual test: enabled, with the management tenant.
pub fn tracking_on(mgmt: TenantId) -> TrackingSettings {
    TrackingSettings {
        enabled: true,
        management_tenant_id: Some(mgmt),
        tag_name: TagText::parse("PSA Customer").unwrap(),
    }
}

impl Env {
    pub async fn start() -> Env {
        Self::start_with(tracking_on).await
    }

    /// With the worker's tracking settings made from the management tenant's id.
    pub async fn start_with(tracking: impl FnOnce(TenantId) -> TrackingSettings) -> Env {
        let db = TestDb::new(&psa_models::MIGRATOR).await;
        let temporal = TestTemporal::start().await;
        let mut tx = db.pool.begin().await.unwrap();
        let mgmt = tenants::init_management(&mut tx, "Nine Minds LLC", None)
            .await
            .unwrap()
            .tenant
            .tenant;
        tx.commit().await.unwrap();
        let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
        let task_queue = format!("test-{}", uuid::Uuid::new_v4().simple());
        let exports = std::env::temp_dir().join(format!("psa-exports-{}", uuid::Uuid::new_v4()));
        let client = psa_workflows::client::connect(&temporal.address, "default")
            .await
            .unwrap();
        let workflows = TenantWorkflows {
            client,
            task_queue: task_queue.clone(),
            pool: db.pool.clone(),
        };
        let worker = Background::start(
            &temporal.address,
            &task_queue,
            WorkerConfig {
                pool: db.pool.clone(),
                key: key.clone(),
                tracking: tracking(mgmt),
                delivery: psa_models::invitations::Delivery::without_mail(
                    "http://psa.test".parse().unwrap(),
                ),
                lifecycle: psa_workflows::worker::LifecycleConfig::in_dir(&exports).unwrap(),
            },
        )
        .expect("worker started");
        Env {
            db,
            temporal,
            workflows,
            mgmt,
            key,
            exports,
            _worker: worker,
        }
    }

    pub fn input(&self, name: &str) -> TenantCreationInput {
        let email = format!("Ada@{}.Example.com", name.to_lowercase().replace(' ', "-"));
        let company = format!("{name} Services");
        TenantCreationInput::parse(RawRequest {
            tenant_name: name,
            first_name: "Ada",
            last_name: "Admin",
            email: &email,
            company_name: Some(&company),
            license_count: Some(10),
            skip_customer_tracking: false,
            slug: None,
            plan: None,
        })
        .unwrap()
    }

    /// Starts a run (without a key) and returns its id.
    pub async fn start_run(&self, input: TenantCreationInput) -> String {
        self.workflows.start(input, None, "test").await.unwrap()
    }

    pub async fn run(&self, input: TenantCreationInput) -> TenantCreationResult {
        let id = self.start_run(input).await;
        tokio::time::timeout(Duration::from_secs(120), self.workflows.result(&id))
            .await
            .expect("the workflow finishes")
            .unwrap()
    }

    /// Runs the `temporal` CLI against this test's server; panics unless it succeeds.
    pub fn temporal_cli(&self, args: &[&str]) -> String {
        let out = std::process::Command::new(psa_testing::temporal_cli())
            .args(args)
            .args(["--address", &self.temporal.address])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "temporal {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The run's history as Temporal's JSON (all events, with every failure message).
    pub fn history(&self, workflow_id: &str) -> String {
        self.temporal_cli(&["workflow", "show", "-w", workflow_id, "--output", "json"])
    }

    /// Asserts that each fail point fired in the run (its failure is in the history: the last
    /// failure of a retried attempt, or the final failure of a step).
    #[track_caller]
    pub fn assert_fired(&self, workflow_id: &str, points: &[&str]) {
        let history = self.history(workflow_id);
        for point in points {
            assert!(
                history.contains(&format!("fail point {point} (")),
                "fail point {point} did not fire in {workflow_id}"
            );
        }
    }

    /// How many attempts the run made of `activity`: the attempt number of its last start (a
    /// remote activity) or of its last result marker (a local activity, whose retries back off on
    /// timers and leave one marker per failed attempt).
    pub fn attempts(&self, workflow_id: &str, activity: &str) -> u64 {
        let history: serde_json::Value = serde_json::from_str(&self.history(workflow_id)).unwrap();
        let events = history["events"].as_array().expect("events");
        let id_of = |v: &serde_json::Value| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        };
        let scheduled: Vec<String> = events
            .iter()
            .filter(|e| {
                e["activityTaskScheduledEventAttributes"]["activityType"]["name"] == activity
            })
            .map(|e| id_of(&e["eventId"]))
            .collect();
        let remote = events.iter().filter_map(|e| {
            let started = &e["activityTaskStartedEventAttributes"];
            scheduled
                .contains(&id_of(&started["scheduledEventId"]))
                .then(|| started["attempt"].as_u64().unwrap_or(1))
        });
        let local = events.iter().filter_map(|e| {
            let marker = local_activity_marker(e)?;
            let name = marker
                .get("activity_type")
                .or_else(|| marker.get("activityType"))?;
            (name == activity).then(|| marker["attempt"].as_u64().unwrap_or(1))
        });
        let attempts: Vec<u64> = remote.chain(local).collect();
        assert!(!attempts.is_empty(), "{activity} was never run");
        attempts.into_iter().max().unwrap_or(0)
    }

    /// The provisioning record of a run.
    pub async fn record(&self, workflow_id: &str) -> psa_models::provisioning::Record {
        let mut conn = self.db.pool.acquire().await.unwrap();
        psa_models::provisioning::get(&mut conn, workflow_id)
            .await
            .unwrap()
            .expect("a provisioning record")
    }

    /// Rows of `tenant` in every tenant table (from the catalog), by table, non-zero only.
    pub async fn rows_of(&self, tenant: impl Into<uuid::Uuid>) -> Vec<(String, i64)> {
        let tenant: uuid::Uuid = tenant.into();
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped \
             WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        let mut out = Vec::new();
        for t in tables {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t} WHERE tenant = $1"))
                .bind(tenant)
                .fetch_one(&self.db.pool)
                .await
                .unwrap();
            if n > 0 {
                out.push((t, n));
            }
        }
        out
    }

    /// Customer records in the management tenant: (companies with a tenant_id, contacts, tag mappings).
    pub async fn customer_records(&self) -> (i64, i64, i64) {
        let q = |sql: &'static str| {
            let pool = self.db.pool.clone();
            let mgmt = self.mgmt;
            async move {
                sqlx::query_scalar::<_, i64>(sql)
                    .bind(mgmt)
                    .fetch_one(&pool)
                    .await
                    .unwrap()
            }
        };
        (
            q("SELECT count(*) FROM companies WHERE tenant = $1 AND properties ? 'tenant_id'")
                .await,
            q("SELECT count(*) FROM contacts WHERE tenant = $1").await,
            q("SELECT count(*) FROM tag_mappings WHERE tenant = $1").await,
        )
    }
}

/// Fails loudly when the fail points are compiled out (the feature is missing).
pub fn require_failpoints() {
    assert!(
        fail::has_failpoints(),
        "this test needs `--features psa-workflows/failpoints` (scripts/test sets it)"
    );
}

/// The data of a local activity's result marker (its type and attempt), if `event` is one.
fn local_activity_marker(event: &serde_json::Value) -> Option<serde_json::Value> {
    use base64::Engine as _;
    let marker = &event["markerRecordedEventAttributes"];
    let payload = marker["details"]["data"]["payloads"].get(0)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(payload["data"].as_str()?)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}
