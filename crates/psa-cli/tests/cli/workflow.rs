//! `psa worker` and `psa tenant ...` as processes, on a real Temporal dev server.

use std::process::{Command, Stdio};

use super::Running;
use std::time::Duration;

use psa_testing::{TestDb, TestTemporal};

pub(crate) struct Setup {
    pub(crate) db: TestDb,
    pub(crate) temporal: TestTemporal,
    pub(crate) queue: String,
    pub(crate) mgmt: String,
    pub(crate) key: String,
    /// Mail through this SMTP server (`PSA_SMTP_URL`), or no mail at all.
    pub(crate) smtp: Option<psa_testing::SmtpSink>,
}

impl Setup {
    pub(crate) async fn new() -> Setup {
        let db = TestDb::new(&psa_models::MIGRATOR).await;
        let temporal = TestTemporal::start().await;
        let mut tx = db.pool.begin().await.unwrap();
        let mgmt = psa_models::tenants::init_management(&mut tx, "Nine Minds LLC", None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        Setup {
            db,
            temporal,
            queue: format!("cli-{}", uuid::Uuid::new_v4().simple()),
            mgmt: mgmt.tenant.tenant.to_string(),
            key: psa_workflows::secret::SecretKey::generate_base64(),
            smtp: None,
        }
    }

    pub(crate) async fn with_mail() -> Setup {
        Setup {
            smtp: Some(psa_testing::SmtpSink::start().await),
            ..Setup::new().await
        }
    }

    pub(crate) fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_psa"));
        c.args(args)
            .env("DATABASE_URL", self.db.url())
            .env("TEMPORAL_ADDRESS", &self.temporal.address)
            .env("TEMPORAL_TASK_QUEUE", &self.queue)
            .env("NINEMINDS_TENANT_ID", &self.mgmt)
            .env("PSA_SECRET_KEY", &self.key)
            .env("PSA_EXPORT_DIR", self.exports())
            .env("RUST_LOG", "warn")
            .env_remove("FAILPOINTS")
            .env_remove("PSA_SMTP_URL");
        if let Some(smtp) = &self.smtp {
            c.env("PSA_SMTP_URL", smtp.url())
                .env("PSA_MAIL_FROM", "psa <noreply@psa.test>")
                .env("PSA_PUBLIC_URL", "https://psa.test");
        }
        c
    }

    /// The export store of this test's processes.
    pub(crate) fn exports(&self) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("psa-exports-{}", self.queue))
    }

    pub(crate) fn worker(&self, failpoints: Option<&str>) -> Running {
        self.worker_on(failpoints, "127.0.0.1:0")
    }

    pub(crate) fn worker_on(&self, failpoints: Option<&str>, metrics_bind: &str) -> Running {
        let mut c = self.cmd(&["worker", "--metrics-bind", metrics_bind]);
        if let Some(f) = failpoints {
            c.env("FAILPOINTS", f);
        }
        Running::spawn(c)
    }

    pub(crate) fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args).output().unwrap()
    }
}

pub(crate) fn last_json(out: &std::process::Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {text}, stderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

fn stop(worker: Running) -> String {
    worker.stop().1
}

#[tokio::test]
async fn tenant_create_status_list_and_reconcile_through_the_cli() {
    let s = Setup::new().await;
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let worker = s.worker_on(None, &format!("127.0.0.1:{metrics_port}"));
    let out = s.run(&[
        "tenant",
        "create",
        "--name",
        "Globex",
        "--admin-email",
        "Hank@Globex.example",
        "--first-name",
        "Hank",
        "--last-name",
        "Scorpio",
        "--company-name",
        "Globex Corp",
        "--license-count",
        "25",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = last_json(&out);
    assert_eq!(r["status"], "completed");
    // No mail here: the starter who waited is shown the admin's invitation link, once.
    assert_eq!(r["welcome_email"]["status"], "disabled");
    let link = r["invitation_link"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with("http://localhost:8080/invite#psa_i_"),
        "{link}"
    );
    let token = link.rsplit('#').next().unwrap().to_owned();
    assert!(!String::from_utf8_lossy(&out.stderr).contains(&token));
    assert_eq!(r["customer_tracking"]["status"], "completed");
    for k in ["tenant_id", "admin_user_id", "company_id", "created_at"] {
        assert!(r[k].is_string(), "{k}: {r}");
    }
    for k in [
        "customer_company_id",
        "customer_contact_id",
        "customer_tag_id",
    ] {
        assert!(r["customer_tracking"][k].is_string(), "{k}: {r}");
    }
    assert_eq!(r["rollback"]["performed"], false);
    assert!(r["error"].is_null());
    let id = r["workflow_id"].as_str().unwrap().to_owned();

    let st = s.run(&["tenant", "status", &id, "--json"]);
    assert!(
        !String::from_utf8_lossy(&st.stdout).contains("psa_i_"),
        "no later read shows the link"
    );
    let st = last_json(&st);
    // But it says how to get a new one.
    assert!(
        st["notice"].as_str().unwrap().contains(&format!(
            "psa tenant resend-invite {}",
            r["tenant_id"].as_str().unwrap()
        )),
        "{st}"
    );
    assert_eq!(
        (st["finished"].as_bool(), st["result"]["tenant_id"].as_str()),
        (Some(true), r["tenant_id"].as_str())
    );

    let list = s.run(&["tenant", "list", "--json"]);
    let list = last_json(&list);
    let entries = list["items"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    assert!(list["next_cursor"].is_null());
    // Filtered and paged: one page of one, then the next.
    let first = last_json(&s.run(&["tenant", "list", "--json", "--limit", "1"]));
    assert_eq!(first["items"].as_array().unwrap().len(), 1);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let second = last_json(&s.run(&[
        "tenant", "list", "--json", "--limit", "1", "--cursor", &cursor,
    ]));
    assert_ne!(
        second["items"][0]["tenant_id"],
        first["items"][0]["tenant_id"]
    );
    let tracked = last_json(&s.run(&[
        "tenant",
        "list",
        "--json",
        "--tracking",
        "tracked",
        "--name",
        "glob",
    ]));
    assert_eq!(tracked["items"].as_array().unwrap().len(), 1);
    let bad = s.run(&["tenant", "list", "--tracking", "lost"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        entries.iter().any(|e| e["name"] == "Globex"
            && e["customer_tracking"] == "tracked"
            && e["workflow_id"] == id.as_str()
            && e["provisioning_status"] == "completed"),
        "the tenant is linked to the run that provisioned it: {list}"
    );
    let text = String::from_utf8_lossy(&s.run(&["tenant", "list"]).stdout).into_owned();
    assert!(
        text.starts_with("TENANT") && text.contains("CREATED") && text.contains(&id),
        "{text}"
    );

    // --no-wait, and the idempotency key (unique per test run: keys hold for good).
    let key = format!("order-{}", uuid::Uuid::new_v4().simple());
    let keyed_id = format!("tenant-creation-key-{key}");
    let keyed = |name: &str, extra: &[&str]| {
        let mut args = vec![
            "tenant",
            "create",
            "--name",
            name,
            "--admin-email",
            "k@keyed.example",
            "--first-name",
            "K",
            "--last-name",
            "D",
            "--idempotency-key",
            &key,
            "--json",
        ];
        args.extend_from_slice(extra);
        s.run(&args)
    };
    let a = last_json(&keyed("Keyed", &["--no-wait"]));
    assert_eq!(a["workflow_id"], keyed_id.as_str());
    let b = keyed("Keyed", &[]);
    assert!(b.status.success());
    let waited = last_json(&b);
    assert_eq!(waited["workflow_id"], keyed_id.as_str());
    // Not this command's run (the --no-wait one started it): no link, and a way to get one.
    assert!(waited["invitation_link"].is_null(), "{waited}");
    assert!(String::from_utf8_lossy(&b.stderr).contains("psa tenant resend-invite"));
    // The same key for another request: refused (exit 2, naming the key), nothing started.
    let c = keyed("Keyed Again", &[]);
    let err = String::from_utf8_lossy(&c.stderr);
    assert_eq!(c.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&key) && err.contains("different request"),
        "{err}"
    );
    let keyed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE company_name = 'Keyed'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(keyed, 1);

    let rec = s.run(&["customers", "reconcile", "--json"]);
    assert!(
        rec.status.success(),
        "{}",
        String::from_utf8_lossy(&rec.stderr)
    );
    let rec = last_json(&rec);
    assert_eq!(
        (
            rec["created"].as_u64(),
            rec["already_tracked"].as_u64(),
            rec["failed"].as_u64()
        ),
        (Some(0), Some(2), Some(0))
    );
    assert_eq!(rec["dry_run"], false);
    assert_eq!(rec["orphans"], serde_json::json!([]));

    // The worker's metrics: outcomes, tracking steps, activity durations; no secrets.
    let metrics = reqwest::get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"psa_tenant_creations_total{outcome="completed"} 2"#,
        r#"psa_customer_tracking_steps_total{step="create_customer_company",outcome="success"} 2"#,
        r#"psa_customer_tracking_steps_total{step="tag_customer_company",outcome="success"} 2"#,
        r#"psa_customer_tracking_total{status="completed"} 2"#,
        r#"psa_activity_duration_seconds_bucket{activity="create_tenant",outcome="ok""#,
        "psa_tenant_creation_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from\n{metrics}");
    }
    assert!(
        metrics.contains(r#"psa_welcome_emails_total{status="disabled"} 2"#),
        "{metrics}"
    );
    assert!(!metrics.contains(&token));
    let logs = stop(worker);
    assert!(!logs.contains(&token), "the token reached the worker's log");
}

/// With mail: the welcome email goes out; the SMTP server down does not fail the tenant, and
/// `psa tenant resend-invite` repairs it; operators invite and manage users. No token in the
/// worker's log, the status, or Temporal's history.
#[tokio::test]
async fn welcome_emails_resend_and_users_through_the_cli() {
    let mut s = Setup::with_mail().await;
    let worker = s.worker(None);
    let create = |s: &Setup, name: &str| {
        let out = s.run(&[
            "tenant",
            "create",
            "--name",
            name,
            "--admin-email",
            &format!("ada@{}.example", name.to_lowercase()),
            "--first-name",
            "Ada",
            "--last-name",
            "Lovelace",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        last_json(&out)
    };
    let r = create(&s, "Mailed");
    assert_eq!(r["welcome_email"]["status"], "sent", "{r}");
    assert!(
        r["invitation_link"].is_null(),
        "mailed links are never printed"
    );
    let smtp = s.smtp.as_ref().unwrap();
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    let link = psa_testing::link_in(&mails[0]).unwrap();
    assert!(link.starts_with("https://psa.test/invite#psa_i_"), "{link}");
    let token = link.rsplit('#').next().unwrap().to_owned();
    let id = r["workflow_id"].as_str().unwrap();
    let history = Command::new(psa_testing::temporal_cli())
        .args([
            "workflow",
            "show",
            "--output",
            "json",
            "--address",
            &s.temporal.address,
            "-w",
            id,
        ])
        .output()
        .unwrap();
    let history = String::from_utf8_lossy(&history.stdout);
    assert!(history.contains("send_welcome_email") && !history.contains(&token));
    let status = s.run(&["tenant", "status", id, "--json"]);
    assert!(!String::from_utf8_lossy(&status.stdout).contains(&token));

    // The SMTP server down: the tenant completes, the email is `failed`; resend repairs it.
    s.smtp.as_mut().unwrap().stop();
    let r = create(&s, "Unmailed");
    assert_eq!(r["status"], "completed");
    assert_eq!(r["welcome_email"]["status"], "failed", "{r}");
    let tenant = r["tenant_id"].as_str().unwrap().to_owned();
    let down = s.run(&["tenant", "resend-invite", &tenant, "--json"]);
    assert_eq!(
        down.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert!(String::from_utf8_lossy(&down.stderr).contains("nothing was changed"));
    s.smtp.as_mut().unwrap().restart().await;
    let resent = s.run(&["tenant", "resend-invite", &tenant, "--json"]);
    assert!(
        resent.status.success(),
        "{}",
        String::from_utf8_lossy(&resent.stderr)
    );
    let resent = last_json(&resent);
    assert_eq!(
        (resent["invitation"].as_str(), resent["email"].as_str()),
        (Some("sent"), Some("ada@unmailed.example"))
    );
    assert!(resent["invitation_link"].is_null());
    let smtp = s.smtp.as_ref().unwrap();
    assert_eq!(smtp.wait_for(2, Duration::from_secs(10)).await.len(), 2);

    // Users: invite, list, a role change, deactivation; the last admin is protected (exit 2).
    let invite = s.run(&[
        "user",
        "invite",
        "--tenant",
        &tenant,
        "--email",
        "grace@unmailed.example",
        "--role",
        "Technician",
        "--first-name",
        "Grace",
        "--last-name",
        "Hopper",
        "--json",
    ]);
    assert!(
        invite.status.success(),
        "{}",
        String::from_utf8_lossy(&invite.stderr)
    );
    assert_eq!(last_json(&invite)["invitation"], "sent");
    assert_eq!(smtp.wait_for(3, Duration::from_secs(10)).await.len(), 3);
    let bad = s.run(&[
        "user",
        "invite",
        "--tenant",
        &tenant,
        "--email",
        "x@unmailed.example",
        "--role",
        "Boss",
        "--first-name",
        "X",
        "--last-name",
        "Y",
    ]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("Technician"));
    let set = s.run(&[
        "user",
        "set-role",
        "--tenant",
        &tenant,
        "--email",
        "grace@unmailed.example",
        "--role",
        "Dispatcher",
        "--json",
    ]);
    assert_eq!(last_json(&set)["roles"], serde_json::json!(["Dispatcher"]));
    let last = s.run(&[
        "user",
        "deactivate",
        "--tenant",
        &tenant,
        "--email",
        "ada@unmailed.example",
    ]);
    assert_eq!(last.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&last.stderr).contains("last active administrator"));
    let off = s.run(&[
        "user",
        "deactivate",
        "--tenant",
        &tenant,
        "--email",
        "grace@unmailed.example",
        "--json",
    ]);
    assert_eq!(last_json(&off)["status"], "inactive");
    let list = last_json(&s.run(&["user", "list", "--tenant", &tenant, "--json"]));
    let statuses: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["invited", "inactive"]);
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE tenant = $1::uuid AND actor_kind = 'operator' \
         ORDER BY created_at",
    )
    .bind(&tenant)
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        ["resend_invite", "invite", "change_role", "deactivate"]
    );

    let logs = stop(worker);
    assert!(!logs.contains(&token), "the token reached the worker's log");
    assert!(
        logs.contains("welcome email failed"),
        "the failure is logged: {logs}"
    );
}

#[tokio::test]
async fn bad_input_and_configuration_exit_2() {
    let s = Setup::new().await;
    let create = |extra: &[(&str, &str)], args: &[&str]| {
        let mut c = s.cmd(args);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    let base = [
        "tenant",
        "create",
        "--name",
        "X",
        "--admin-email",
        "x@x.example",
        "--first-name",
        "A",
        "--last-name",
        "B",
        "--no-wait",
    ];
    let bad_email = [
        "tenant",
        "create",
        "--name",
        "X",
        "--admin-email",
        "nope",
        "--first-name",
        "A",
        "--last-name",
        "B",
        "--no-wait",
    ];
    assert_eq!(create(&[], &bad_email).status.code(), Some(2));
    let empty_name = [
        "tenant",
        "create",
        "--name",
        " ",
        "--admin-email",
        "x@x.example",
        "--first-name",
        "A",
        "--last-name",
        "B",
        "--no-wait",
    ];
    assert_eq!(create(&[], &empty_name).status.code(), Some(2));
    // The tracking settings are the worker's: a starter does not read them at all.
    let laptop = create(
        &[
            ("NINEMINDS_TENANT_ID", "not-a-uuid"),
            ("ENABLE_CUSTOMER_TRACKING", "maybe"),
            ("CUSTOMER_TAG_NAME", "ü"),
        ],
        &base,
    );
    assert_eq!(
        laptop.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&laptop.stderr)
    );
    assert_eq!(
        create(&[("TEMPORAL_ADDRESS", "no port")], &base)
            .status
            .code(),
        Some(2)
    );
    // The worker refuses to start without a usable configuration, with one clear line.
    for (k, v, needle) in [
        ("PSA_SECRET_KEY", "", "PSA_SECRET_KEY"),
        (
            "NINEMINDS_TENANT_ID",
            "00000000-0000-4000-8000-000000000000",
            "NINEMINDS_TENANT_ID",
        ),
        ("NINEMINDS_TENANT_ID", "", "NINEMINDS_TENANT_ID"),
        ("NINEMINDS_TENANT_ID", "not-a-uuid", "NINEMINDS_TENANT_ID"),
        (
            "ENABLE_CUSTOMER_TRACKING",
            "maybe",
            "ENABLE_CUSTOMER_TRACKING",
        ),
        ("CUSTOMER_TAG_NAME", "ü", "CUSTOMER_TAG_NAME"),
    ] {
        let out = create(&[(k, v)], &["worker"]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{k}={v}: {err}");
        assert!(
            err.contains(needle) && err.trim().lines().count() == 1,
            "{err}"
        );
    }
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 1, "only the management tenant");
    // NINEMINDS_TENANT_ID naming a customer tenant (a copy-paste slip) is refused, naming the
    // variable: the worker and reconcile would otherwise write customer records into it.
    let customer = psa_models::TenantId::new();
    let mut tx = s.db.pool.begin().await.unwrap();
    psa_models::tenants::create(
        &mut tx,
        customer,
        psa_models::tenants::NewTenant {
            name: "A Customer".into(),
            email: "admin@customer.example".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    for args in [&["worker"][..], &["customers", "reconcile"][..]] {
        let out = create(&[("NINEMINDS_TENANT_ID", &customer.to_string())], args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("NINEMINDS_TENANT_ID") && err.contains("not the management tenant"),
            "{args:?}: {err}"
        );
    }
}

#[tokio::test]
async fn a_failed_run_exits_1_with_the_rollback_in_the_result() {
    let s = Setup::new().await;
    let worker = s.worker(Some("activity::create_admin_user=return(permanent)"));
    let out = s.run(&[
        "tenant",
        "create",
        "--name",
        "Failing",
        "--admin-email",
        "f@f.example",
        "--first-name",
        "F",
        "--last-name",
        "G",
        "--json",
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = last_json(&out);
    assert_eq!(r["status"], "rolled_back");
    assert_eq!(r["error"]["step"], "create_admin_user");
    assert!(r["invitation_link"].is_null() && r["tenant_id"].is_null());
    assert_eq!(r["rollback"]["performed"], true);
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 1);
    stop(worker);
}

#[tokio::test]
async fn a_killed_worker_is_replaced_and_the_run_completes() {
    let s = Setup::new().await;
    // The first worker is held in the admin step (by a table lock the step needs: it waits on
    // PostgreSQL, and still answers queries); it is killed there.
    let mut lock = s.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE user_roles IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let first = s.worker(None);
    let started = last_json(&s.run(&[
        "tenant",
        "create",
        "--name",
        "Survivor",
        "--admin-email",
        "s@s.example",
        "--first-name",
        "S",
        "--last-name",
        "V",
        "--no-wait",
        "--json",
    ]));
    let id = started["workflow_id"].as_str().unwrap().to_owned();
    let mut reached = false;
    for _ in 0..100 {
        let st = last_json(&s.run(&["tenant", "status", &id, "--json"]));
        if st["state"]["step"] == "creating_admin_user" {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reached, "the run reached the admin step");
    first.kill(); // SIGKILL
    lock.commit().await.unwrap();
    let second = s.worker(None);
    let mut result = serde_json::Value::Null;
    for _ in 0..600 {
        let st = last_json(&s.run(&["tenant", "status", &id, "--json"]));
        if st["finished"] == true {
            result = st["result"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(result["status"], "completed", "{result}");
    let tenant = result["tenant_id"].as_str().unwrap();
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users WHERE tenant::text = $1")
        .bind(tenant)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(users, 1);
    stop(second);
}

#[tokio::test]
async fn demo_runs_end_to_end_with_nothing_configured() {
    // Its own directory, readable by the postgres OS user the private cluster runs as.
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_psa"))
        .args(["demo", "--exit"])
        .current_dir(&dir)
        .env_remove("DATABASE_URL")
        .env_remove("TEMPORAL_ADDRESS")
        .env("TEMPORAL_CLI", psa_testing::temporal_cli())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("[100%] completed"), "{stderr}");
    assert!(stdout.contains(r#""status": "completed""#), "{stdout}");
    assert!(
        stdout.contains(r#"company "Acme Demo""#) && stdout.contains("tag PSA Customer"),
        "{stdout}"
    );
    // What it started is gone.
    let leftovers: Vec<_> = std::fs::read_dir(dir.join(".psa/demo"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Without `--exit`, the demo serves the console with an operator's login it prints, until
/// Ctrl-C, which stops everything it started.
#[tokio::test]
async fn demo_serves_the_console_until_interrupted() {
    use std::io::BufRead;
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("demo-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    // Its own process group: the PostgreSQL and Temporal it starts end with it if this fails.
    let mut child = psa_testing::Spawned::spawn(
        Command::new(env!("CARGO_BIN_EXE_psa"))
            .args(["demo", "--bind", "127.0.0.1:0"])
            .current_dir(&dir)
            .env_remove("DATABASE_URL")
            .env_remove("TEMPORAL_ADDRESS")
            .env("TEMPORAL_CLI", psa_testing::temporal_cli())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped()),
    )
    .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(180);
    while !printed
        .iter()
        .any(|l: &String| l.starts_with("Ctrl-C stops"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines_rx.recv_timeout(left) {
            Ok(l) => printed.push(l),
            Err(_) => {
                let _ = child.kill();
                panic!("the demo printed no console: {printed:?}");
            }
        }
    }
    let value = |prefix: &str| {
        printed
            .iter()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {prefix:?} in {printed:?}"))
    };
    let console = value("the console:");
    let base = console.strip_suffix("/console").unwrap().to_owned();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(format!("{base}/console/sign-in"))
        // Email and password only: the email finds the management tenant.
        .form(&[
            ("tenant", String::new()),
            ("email", value("email")),
            ("password", value("password")),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER, "{printed:?}");
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    // The management tenant asks for a second factor first: every page leads to setting one up.
    let r = http
        .get(format!("{base}/console/customers"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/console/account/second-factor");
    let setup = http
        .get(format!("{base}/console/account/second-factor"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let csrf = setup
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    let started = http
        .post(format!("{base}/console/account/second-factor/start"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let secret = started
        .split("<code class=\"secret\">")
        .nth(1)
        .expect("the key to type in")
        .split('<')
        .next()
        .unwrap()
        .to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let code = psa_models::mfa::code_at(&psa_models::mfa::decoded(&secret).unwrap(), now).unwrap();
    let confirmed = http
        .post(format!("{base}/console/account/second-factor/confirm"))
        .header("cookie", &cookie)
        .form(&[("csrf", csrf.as_str()), ("code", code.as_str())])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(confirmed.contains("Your recovery codes"), "{confirmed}");
    let page = http
        .get(format!("{base}/console/customers"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Acme Demo") && page.contains("PSA Customer"),
        "{page}"
    );
    // Ctrl-C: everything stops, nothing is left behind.
    let interrupted = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let leftovers: Vec<_> = std::fs::read_dir(dir.join(".psa/demo"))
        .map(|d| d.collect())
        .unwrap_or_default();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn without_a_worker_the_cli_says_so_and_keeps_waiting() {
    let s = Setup::new().await;
    let create = [
        "tenant",
        "create",
        "--name",
        "Waiting",
        "--admin-email",
        "w@waiting.example",
        "--first-name",
        "W",
        "--last-name",
        "T",
    ];
    let started = s.run(&[&create[..], &["--no-wait", "--json"]].concat());
    let id = last_json(&started)["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // The status answers at once, naming the task queue, with no transport error.
    let st = s.run(&["tenant", "status", &id]);
    let (out, err) = (
        String::from_utf8_lossy(&st.stdout),
        String::from_utf8_lossy(&st.stderr),
    );
    assert_eq!(st.status.code(), Some(0), "{out}{err}");
    assert!(
        out.contains("no worker is polling task queue") && out.contains(&s.queue),
        "{out}"
    );
    assert!(
        !format!("{out}{err}")
            .to_lowercase()
            .contains("timeout expired")
    );
    // Create waits, and says why, once.
    let mut child =
        psa_testing::Spawned::spawn(s.cmd(&create).stdout(Stdio::null()).stderr(Stdio::piped()))
            .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut said = None;
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        if line.contains("no worker is polling task queue") {
            said = Some(line);
            break;
        }
    }
    let said = said.expect("create says that no worker polls");
    assert!(
        said.contains(&s.queue) && said.contains("psa tenant status"),
        "{said}"
    );
    assert!(child.try_wait().unwrap().is_none(), "it keeps waiting");
    // A worker arrives: the waiting create finishes the run.
    let worker = s.worker(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "create finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success());
    stop(worker);
}

/// The series and label matchers the alert and recording rules read, from
/// `deploy/prometheus/alerts.yml`: `(metric, [(label, value)])`, one entry per alternative of a
/// regex matcher.
fn alert_series() -> Vec<(String, Vec<(String, String)>)> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/prometheus/alerts.yml");
    let text = std::fs::read_to_string(path).unwrap();
    // The expressions: `expr: ...` lines and the indented block after `expr: |`.
    let mut exprs = String::new();
    let mut block: Option<usize> = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        if let Some(min) = block {
            if line.trim().is_empty() || indent > min {
                exprs.push_str(line);
                exprs.push('\n');
                continue;
            }
            block = None;
        }
        if let Some(rest) = line.trim_start().strip_prefix("expr:") {
            if rest.trim() == "|" {
                block = Some(indent);
            } else {
                exprs.push_str(rest);
                exprs.push('\n');
            }
        }
    }
    let series = regex::Regex::new(r"(psa_[a-z_]+)(\{([^}]*)\})?").unwrap();
    let matcher = regex::Regex::new(r#"([a-z_]+)\s*(=~|=)\s*"([^"]*)""#).unwrap();
    let mut out = Vec::new();
    for c in series.captures_iter(&exprs) {
        let name = c[1].to_owned();
        let mut alternatives: Vec<Vec<(String, String)>> = vec![vec![]];
        if let Some(labels) = c.get(3) {
            for m in matcher.captures_iter(labels.as_str()) {
                let label = m[1].to_owned();
                let mut next = Vec::new();
                for prefix in &alternatives {
                    for v in m[3].split('|') {
                        let mut p = prefix.clone();
                        p.push((label.clone(), v.to_owned()));
                        next.push(p);
                    }
                }
                alternatives = next;
            }
        }
        for labels in alternatives {
            out.push((name.clone(), labels));
        }
    }
    assert!(out.len() >= 8, "the rules were read: {out:?}");
    out
}

/// The metrics contract: every series and label value the alert rules use is exported by a real
/// worker after one completed, one tracking-failed, one transiently-retried and one
/// rolled-back-after-tracking creation; the counters the rules divide by exist from start-up.
#[tokio::test]
async fn the_worker_exports_every_series_the_alert_rules_read() {
    let s = Setup::new().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Each fail point counts its evaluations across the four runs, made one after the other:
    // run 1 completes; run 2's customer company fails for good; run 3's tag fails once and is
    // retried; run 4's last core step fails for good after tracking, and rolls back.
    let failpoints = "activity::create_customer_company=1*off->1*return(permanent);\
                      activity::tag_customer_company=1*off->1*return(transient);\
                      activity::setup_tenant_data=3*off->1*return(permanent)";
    let worker = s.worker_on(Some(failpoints), &format!("127.0.0.1:{port}"));
    let scrape = || async {
        for _ in 0..100 {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{port}/metrics")).await {
                return r.text().await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the worker's /metrics did not answer");
    };
    let at_start = scrape().await;
    for needle in [
        r#"psa_tenant_creations_total{outcome="completed"} 0"#,
        r#"psa_tenant_creations_total{outcome="failed"} 0"#,
        r#"psa_customer_tracking_total{status="failed"} 0"#,
        r#"psa_customer_tracking_rollbacks_total 0"#,
        r#"psa_tenant_provisioning_cut_off_total 0"#,
    ] {
        assert!(
            at_start.contains(needle),
            "{needle} at start-up:\n{at_start}"
        );
    }
    let mut outcomes = Vec::new();
    for i in 1..=4 {
        let out = s.run(&[
            "tenant",
            "create",
            "--name",
            &format!("Contract {i}"),
            "--admin-email",
            &format!("c{i}@contract.example"),
            "--first-name",
            "C",
            "--last-name",
            "T",
            "--json",
        ]);
        let r = last_json(&out);
        outcomes.push((
            r["status"].as_str().unwrap().to_owned(),
            r["customer_tracking"]["status"]
                .as_str()
                .unwrap()
                .to_owned(),
        ));
    }
    let expected = [
        ("completed", "completed"),
        ("completed", "failed"),
        ("completed", "completed"),
        ("rolled_back", "rolled_back"),
    ];
    assert_eq!(
        outcomes,
        expected.map(|(a, b)| (a.to_owned(), b.to_owned())),
        "the four runs went as designed"
    );
    let metrics = scrape().await;
    let exported: Vec<(&str, Vec<(String, String)>)> = metrics
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let name_end = l.find(['{', ' ']).unwrap();
            let labels = l[name_end..]
                .strip_prefix('{')
                .and_then(|rest| rest.split_once('}'))
                .map(|(inner, _)| {
                    inner
                        .split("\",")
                        .filter(|kv| !kv.is_empty())
                        .map(|kv| {
                            let (k, v) = kv.split_once('=').unwrap();
                            (k.to_owned(), v.trim_matches('"').to_owned())
                        })
                        .collect()
                })
                .unwrap_or_default();
            (&l[..name_end], labels)
        })
        .collect();
    for (name, labels) in alert_series() {
        let found = exported
            .iter()
            .any(|(n, l)| *n == name && labels.iter().all(|kv| l.contains(kv)));
        assert!(
            found,
            "the rules read {name}{labels:?}, which the worker does not export:\n{metrics}"
        );
    }
    // And the runs moved them.
    for needle in [
        r#"psa_tenant_creations_total{outcome="completed"} 3"#,
        r#"psa_tenant_creations_total{outcome="rolled_back"} 1"#,
        r#"psa_customer_tracking_total{status="failed"} 1"#,
        r#"psa_customer_tracking_rollbacks_total 1"#,
        r#"psa_customer_tracking_steps_total{step="tag_customer_company",outcome="transient_failure"} 1"#,
    ] {
        assert!(
            metrics.contains(needle),
            "{needle} after the runs:\n{metrics}"
        );
    }
    // Readiness: the database and Temporal answer.
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert_eq!(ready.text().await.unwrap(), "ready");
    // Each failed step attempt is one warn line with the step, its kind and the run.
    let logs = stop(worker);
    let failed: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("provisioning step failed"))
        .collect();
    assert!(
        failed.iter().any(|l| l.contains("create_customer_company")
            && l.contains("permanent")
            && l.contains("tenant-creation-")),
        "{logs}"
    );
    assert!(
        failed
            .iter()
            .any(|l| l.contains("tag_customer_company") && l.contains("transient")),
        "{logs}"
    );
    assert!(
        failed
            .iter()
            .any(|l| l.contains("setup_tenant_data") && l.contains("permanent")),
        "{logs}"
    );
    // And the tenant the step worked in; no colour codes in a log that is not a terminal, so
    // the runbooks' greps work.
    let uuid = regex::Regex::new(r"tenant=[0-9a-f]{8}-[0-9a-f]{4}-").unwrap();
    assert!(failed.iter().all(|l| uuid.is_match(l)), "{logs}");
    assert!(!logs.contains('\u{1b}'), "{logs}");
    assert!(
        failed.iter().any(|l| l.contains(r#"kind="permanent""#)),
        "{logs}"
    );
}

/// Temporal down: starting a run and running a worker fail with exit 1 and one clear line, and
/// nothing is written.
#[tokio::test]
async fn temporal_unreachable_exits_1_with_a_clear_message() {
    let s = Setup::new().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string(); // bound and dropped: nothing listens there
    for args in [
        &[
            "tenant",
            "create",
            "--name",
            "Nowhere",
            "--admin-email",
            "n@nowhere.example",
            "--first-name",
            "N",
            "--last-name",
            "W",
        ][..],
        &["tenant", "status", "tenant-creation-x"][..],
        &["worker", "--metrics-bind", "127.0.0.1:0"][..],
    ] {
        let out = s.cmd(args).env("TEMPORAL_ADDRESS", &dead).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.contains(&format!("cannot reach Temporal at {dead}")),
            "{args:?}: {err}"
        );
    }
    let records: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_provisioning")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(records, 0, "nothing was claimed");
}

/// Creates a tenant through the worker; returns its id.
pub(crate) fn create(s: &Setup, name: &str) -> String {
    let email = format!("admin@{}.example", name.to_lowercase());
    let out = s.run(&[
        "tenant",
        "create",
        "--name",
        name,
        "--admin-email",
        &email,
        "--first-name",
        "Pat",
        "--last-name",
        "Admin",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    last_json(&out)["tenant_id"].as_str().unwrap().to_owned()
}

pub(crate) fn code(out: &std::process::Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

async fn rows_left(s: &Setup, tenant: &str) -> Vec<(String, i64)> {
    let tenant = uuid::Uuid::parse_str(tenant).unwrap();
    let mut conn = s.db.pool.acquire().await.unwrap();
    let mut left = Vec::new();
    for t in psa_models::lifecycle::tenant_tables(&mut conn)
        .await
        .unwrap()
    {
        let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM \"{t}\" WHERE tenant = $1"))
            .bind(tenant)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
        if n > 0 {
            left.push((t, n));
        }
    }
    left
}

async fn customer_status(s: &Setup, tenant: &str) -> serde_json::Value {
    sqlx::query_scalar(
        "SELECT properties -> 'tenant_status' FROM companies \
         WHERE tenant = $1::uuid AND properties ->> 'tenant_id' = $2",
    )
    .bind(&s.mgmt)
    .bind(tenant)
    .fetch_one(&s.db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_tenant_lifecycle_through_the_cli() {
    let s = Setup::new().await;
    let worker = s.worker(None);
    let id = create(&s, "Initech");
    let shown = last_json(&s.run(&["tenant", "show", &id, "--json"]));
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["customer"]["tracking"], "tracked");
    assert_eq!(shown["customer"]["is_inactive"], false);

    // Usage errors: exit 2, nothing changed.
    assert_eq!(
        code(&s.run(&["tenant", "suspend", &id])),
        2,
        "--reason is required"
    );
    let out = s.run(&["tenant", "suspend", &s.mgmt, "--reason", "no"]);
    assert_eq!(code(&out), 2);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("management tenant can never be suspended"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        code(&s.run(&["tenant", "reactivate", &id])),
        2,
        "not suspended"
    );
    assert_eq!(
        code(&s.run(&["tenant", "cancel", &id, "--reason", "x", "--grace", "10x"])),
        2
    );
    assert_eq!(
        code(&s.run(&["tenant", "delete", &id])),
        2,
        "--confirm is required"
    );
    assert_eq!(
        last_json(&s.run(&["tenant", "show", &id, "--json"]))["status"],
        "active"
    );

    let suspended = last_json(&s.run(&["tenant", "suspend", &id, "--reason", "unpaid", "--json"]));
    assert_eq!(suspended["tenant"]["status"], "suspended");
    assert_eq!(suspended["tenant"]["status_reason"], "unpaid");
    assert_eq!(customer_status(&s, &id).await, "suspended");
    let listed = last_json(&s.run(&["tenant", "list", "--status", "suspended", "--json"]));
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{listed}");
    assert_eq!(items[0]["tenant_id"], id.as_str());
    let reactivated = last_json(&s.run(&["tenant", "reactivate", &id, "--json"]));
    assert_eq!(reactivated["tenant"]["status"], "active");
    assert_eq!(customer_status(&s, &id).await, "active");

    // An export any time: the archive in the store and at --out, its row counts the database's.
    let out_file = s.exports().join("initech.tar.gz");
    let export = last_json(&s.run(&[
        "tenant",
        "export",
        &id,
        "--out",
        out_file.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(export["status"], "completed");
    assert_eq!(export["manifest"]["tables"]["users"]["rows"], 1);
    assert_eq!(
        std::fs::metadata(&out_file).unwrap().len(),
        export["bytes"].as_u64().unwrap()
    );
    // --out has the plain archive; the store only an encrypted one.
    assert_eq!(&std::fs::read(&out_file).unwrap()[..2], &[0x1f, 0x8b]);
    let stored = s.exports().join(export["location"].as_str().unwrap());
    assert!(
        std::fs::read(stored)
            .unwrap()
            .starts_with(b"age-encryption.org/v1\n")
    );

    // Cancel with a grace period, then restore before it ends.
    let canceled = last_json(&s.run(&[
        "tenant", "cancel", &id, "--reason", "left", "--grace", "45s", "--json",
    ]));
    assert_eq!(canceled["tenant"]["status"], "canceled");
    let deletion = &canceled["tenant"]["deletion"];
    let after =
        chrono::DateTime::parse_from_rfc3339(deletion["delete_after"].as_str().unwrap()).unwrap();
    let left = after
        .signed_duration_since(chrono::Utc::now())
        .num_seconds();
    assert!((30..=46).contains(&left), "{left} s to go");
    assert_eq!(canceled["tenant"]["customer"]["is_inactive"], true);
    let restored = last_json(&s.run(&["tenant", "restore", &id, "--json"]));
    assert_eq!(restored["tenant"]["status"], "active");
    assert_eq!(restored["tenant"]["deletion"], serde_json::Value::Null);
    assert_eq!(restored["tenant"]["customer"]["is_inactive"], false);

    // Cancel for 30 days, then delete now.
    let out = s.run(&[
        "tenant",
        "cancel",
        &id,
        "--reason",
        "left for good",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deleted = last_json(&s.run(&["tenant", "delete", &id, "--confirm", "--json"]));
    assert_eq!(deleted["status"], "deleted");
    assert!(rows_left(&s, &id).await.is_empty());
    assert_eq!(customer_status(&s, &id).await, "deleted");
    assert_eq!(code(&s.run(&["tenant", "show", &id])), 1, "gone");
    stop(worker);
}

/// A worker SIGKILLed while it deletes a tenant (its transaction held up by a lock): the
/// deletion is retried by the next worker and completes; nothing is left half deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_in_the_middle_of_a_deletion_still_deletes_everything() {
    let s = Setup::new().await;
    let first = s.worker(None);
    let id = create(&s, "Doomed");
    let out = s.run(&["tenant", "cancel", &id, "--reason", "left", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The export the deletion takes first.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let done: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tenant_exports WHERE tenant_id = $1::uuid \
               AND purpose = 'deletion' AND status = 'completed')",
        )
        .bind(&id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        if done {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no export");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Hold the deletion up half-way: it counts and deletes table by table. (Not the audit log:
    // `delete --confirm` writes its entry there before the deletion is told.)
    let mut lock = s.db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE companies IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let out = s.run(&["tenant", "delete", &id, "--confirm", "--wait-seconds", "1"]);
    assert_eq!(
        code(&out),
        1,
        "not deleted yet: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let waiting: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE application_name = 'psa' \
               AND wait_event_type = 'Lock' AND query LIKE '%companies%')",
        )
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        if waiting {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the deletion never reached the lock"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    first.kill();
    lock.rollback().await.unwrap();
    // Nothing was deleted by the killed attempt (one transaction).
    assert!(!rows_left(&s, &id).await.is_empty());
    let second = s.worker(None);
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenant_deletions WHERE tenant_id = $1::uuid")
                .bind(&id)
                .fetch_one(&s.db.pool)
                .await
                .unwrap();
        if status == "deleted" {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not deleted after the kill: {status}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(rows_left(&s, &id).await, Vec::<(String, i64)>::new());
    assert_eq!(customer_status(&s, &id).await, "deleted");
    stop(second);
}

/// `psa webhooks` and `psa events` as an operator uses them: add an endpoint (the secret shown
/// once), send a test through the worker's dispatcher to a receiver that verifies it with the
/// Standard Webhooks reference library, list deliveries and events, remove it; bad input is
/// exit 2 with nothing written.
#[tokio::test(flavor = "multi_thread")]
async fn webhooks_and_events_through_the_cli() {
    let s = Setup::new().await;
    let receiver = psa_testing::WebhookReceiver::start().await;
    let mut cmd = s.cmd(&["worker", "--metrics-bind", "127.0.0.1:0"]);
    cmd.env("PSA_WEBHOOK_ALLOW_PRIVATE", "true");
    let worker = Running::spawn(cmd);
    // Refused without the development switch: a loopback receiver.
    let out = s.run(&["webhooks", "add", &receiver.url()]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
    let out = s.run(&[
        "webhooks",
        "add",
        "https://hooks.example",
        "--types",
        "tenant.nope",
    ]);
    assert_eq!(code(&out), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("tenant.nope"));
    let none: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(none, 0);

    let out = s
        .cmd(&["webhooks", "add", &receiver.url(), "--json"])
        .env("PSA_WEBHOOK_ALLOW_PRIVATE", "true")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added = last_json(&out);
    let secret = added["secret"].as_str().unwrap();
    let id = added["endpoint_id"].as_str().unwrap();
    receiver.set_secrets(&[secret]);
    let listed = s.run(&["webhooks", "list"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(id) && !text.contains("whsec_"), "{text}");

    let out = s.run(&["webhooks", "test", id, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = receiver
        .wait_until(Duration::from_secs(30), |r| !r.is_empty())
        .await;
    assert_eq!(got.len(), 1);
    assert!(got[0].verified);
    assert_eq!(got[0].event_type(), "webhook_endpoint.test");
    // The attempt is on record.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = s.run(&["webhooks", "deliveries", id]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.contains("delivered") {
            assert!(text.contains("HTTP 200"), "{text}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let out = s.run(&["events", "list", "--json"]);
    let page = last_json(&out);
    assert_eq!(page["items"][0]["type"], "webhook_endpoint.test");
    assert_eq!(page["has_more"], false);
    let out = s.run(&["webhooks", "remove", id]);
    assert!(out.status.success());
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE entity_type = 'webhook_endpoint' \
           AND actor_kind = 'operator' AND action IN ('create', 'test', 'delete')",
    )
    .fetch_one(&s.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 3);
    let log = stop(worker);
    assert!(!log.contains(secret), "the secret reached the log");
}

/// A worker SIGKILLed while it delivers a burst of 50 events loses none: the next worker
/// delivers what the first had not (its claims fall due again when their lease ends).
#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_during_a_burst_of_deliveries_loses_none() {
    let s = Setup::new().await;
    let receiver = psa_testing::WebhookReceiver::start().await;
    // Slow answers, two at a time: the burst takes seconds, the kill lands in the middle.
    receiver.delay(0.1);
    let dispatcher = |cmd: &mut Command| {
        cmd.env("PSA_WEBHOOK_ALLOW_PRIVATE", "true")
            .env("PSA_WEBHOOK_CONCURRENCY", "2")
            .env("PSA_WEBHOOK_TIMEOUT_SECONDS", "2")
            .env("PSA_WEBHOOK_RETRY_DELAYS", "1,1,1");
    };
    let mut add = s.cmd(&["webhooks", "add", &receiver.url(), "--json"]);
    dispatcher(&mut add);
    let added = last_json(&add.output().unwrap());
    receiver.set_secrets(&[added["secret"].as_str().unwrap()]);

    let mut ids = Vec::new();
    for n in 0..50 {
        let mut tx = s.db.pool.begin().await.unwrap();
        psa_models::events::record(
            &mut tx,
            psa_models::events::EventType::TenantSuspended,
            None,
            serde_json::json!({"n": n}),
            None,
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    let events: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT event_id FROM events")
        .fetch_all(&s.db.pool)
        .await
        .unwrap();
    ids.extend(events.iter().map(|e| e.to_string()));
    assert_eq!(ids.len(), 50);

    let mut cmd = s.cmd(&["worker", "--metrics-bind", "127.0.0.1:0"]);
    dispatcher(&mut cmd);
    let first = Running::spawn(cmd);
    receiver
        .wait_until(Duration::from_secs(60), |r| r.len() >= 10)
        .await;
    first.kill(); // SIGKILL, attempts in flight
    let at_kill = receiver.received().len();
    assert!(at_kill < 50, "the kill came too late to test anything");

    let mut cmd = s.cmd(&["worker", "--metrics-bind", "127.0.0.1:0"]);
    dispatcher(&mut cmd);
    let second = Running::spawn(cmd);
    let got = receiver
        .wait_until(Duration::from_secs(90), |r| {
            ids.iter()
                .all(|id| r.iter().any(|x| &x.id == id && x.status == 200))
        })
        .await;
    for id in &ids {
        assert!(
            got.iter().any(|x| &x.id == id && x.status == 200),
            "event {id} lost: {} received",
            got.len()
        );
    }
    assert!(got.iter().all(|r| r.verified));
    // Every delivery is recorded as delivered.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'",
        )
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        if delivered == 50 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{delivered} of 50 recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stop(second);
}

/// `psa tenant cancel-run`: a run not yet picked up is cancelled before its first step and
/// rolls back; an unknown run or an empty reason is a usage error that records nothing.
#[tokio::test]
async fn cancel_run_stops_a_run_before_its_next_step() {
    let s = Setup::new().await;
    // No worker yet: the run waits, so the request is there before its first step.
    let started = last_json(&s.run(&[
        "tenant",
        "create",
        "--name",
        "Called Off",
        "--admin-email",
        "ada@called-off.example",
        "--first-name",
        "Ada",
        "--last-name",
        "L",
        "--no-wait",
        "--json",
    ]));
    let id = started["workflow_id"].as_str().unwrap().to_owned();
    for (args, needle) in [
        (
            vec![
                "tenant",
                "cancel-run",
                "tenant-creation-nope",
                "--reason",
                "x",
            ],
            "no provisioning run",
        ),
        (
            vec!["tenant", "cancel-run", &id, "--reason", "  "],
            "reason",
        ),
    ] {
        let out = s.run(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let requests: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_provisioning_cancel_requests")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(requests, 0, "a refused request records nothing");

    let out = s.run(&["tenant", "cancel-run", &id, "--reason", "ordered twice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let worker = s.worker(None);
    let status = || {
        let out = s.run(&["tenant", "status", &id, "--json"]);
        last_json(&out)
    };
    let mut view = status();
    for _ in 0..200 {
        if view["record"]["status"] != "running" && view["record"]["status"] != "requested" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        view = status();
    }
    stop(worker);
    assert_eq!(view["record"]["status"], "cancelled", "{view}");
    let tenants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE company_name = 'Called Off'")
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
    assert_eq!(tenants, 0, "nothing of the tenant is left");
}

/// The sealing key rotated: with the new key current and the old one kept for reading, `psa
/// secrets reseal` moves every stored webhook secret to the new key, after which the old key
/// opens nothing; a sealed secret opens only as what and for whom it was sealed.
#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_resealed_after_a_key_rotation_and_bound_to_their_purpose() {
    use psa_workflows::secret::{Sealed, SecretKey};
    use secrecy::ExposeSecret;
    let s = Setup::new().await;
    let out = s.run(&["webhooks", "add", "https://hooks.example/rotate", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added = last_json(&out);
    let (id, secret) = (
        added["endpoint_id"].as_str().unwrap().to_owned(),
        added["secret"].as_str().unwrap().to_owned(),
    );
    let old = SecretKey::from_base64(&s.key).unwrap();
    let new_b64 = SecretKey::generate_base64();
    let new = SecretKey::from_base64(&new_b64).unwrap();
    let sealed = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT secret_sealed FROM webhook_endpoints WHERE endpoint_id = $1::uuid",
        )
        .bind(&id)
        .fetch_one(&s.db.pool)
        .await
        .unwrap()
    };
    let before = sealed().await;
    assert!(!before.contains(&secret));
    // Bound to its purpose and its endpoint.
    assert!(old.open_for(&before, Sealed::InvitationLink, &id).is_err());
    assert!(
        old.open_for(
            &before,
            Sealed::WebhookSecret,
            &uuid::Uuid::new_v4().to_string()
        )
        .is_err()
    );
    assert_eq!(
        old.open_for(&before, Sealed::WebhookSecret, &id)
            .unwrap()
            .expose_secret(),
        secret
    );

    // The platform's archive key, sealed with the old key too.
    psa_workflows::secret::archive_key(&s.db.pool, &old)
        .await
        .unwrap();
    // A tenant's single sign-on client secret, bound to its tenant.
    let sso_secret = secrecy::SecretString::from("the-provider-client-secret".to_owned());
    sqlx::query(
        "INSERT INTO sso_connections (tenant, issuer, client_id, client_secret_sealed) \
         VALUES ($1::uuid, 'https://login.example', 'psa', $2)",
    )
    .bind(&s.mgmt)
    .bind(old.seal_for(&sso_secret, Sealed::SsoClientSecret, &s.mgmt))
    .execute(&s.db.pool)
    .await
    .unwrap();
    let sso_sealed = || async {
        sqlx::query_scalar::<_, String>("SELECT client_secret_sealed FROM sso_connections")
            .fetch_one(&s.db.pool)
            .await
            .unwrap()
    };
    let reseal = |previous: Option<&str>| {
        let mut c = s.cmd(&["secrets", "reseal", "--json"]);
        c.env("PSA_SECRET_KEY", &new_b64);
        match previous {
            Some(p) => c.env("PSA_SECRET_KEY_PREVIOUS", p),
            None => c.env_remove("PSA_SECRET_KEY_PREVIOUS"),
        };
        c.output().unwrap()
    };
    // Without the old key the secret cannot be opened: the reseal fails and changes nothing.
    let out = reseal(None);
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(sealed().await, before);
    let out = reseal(Some(&s.key));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        last_json(&out)["resealed"],
        3,
        "the endpoint's secret, the archive key and the SSO client secret"
    );
    assert_eq!(
        new.open_for(&sso_sealed().await, Sealed::SsoClientSecret, &s.mgmt)
            .unwrap()
            .expose_secret(),
        "the-provider-client-secret"
    );
    let after = sealed().await;
    assert!(new.is_current(&after));
    assert_eq!(
        new.open_for(&after, Sealed::WebhookSecret, &id)
            .unwrap()
            .expose_secret(),
        secret
    );
    assert!(old.open_for(&after, Sealed::WebhookSecret, &id).is_err());
    // The archive key opens with the new key alone (so archives stay readable), not the old.
    assert!(
        psa_workflows::secret::archive_key(&s.db.pool, &new)
            .await
            .is_ok()
    );
    assert_eq!(
        psa_workflows::secret::archive_key(&s.db.pool, &old)
            .await
            .err()
            .map(|e| e.code()),
        Some("unavailable")
    );
    // Again: nothing left to move.
    let out = reseal(Some(&s.key));
    assert_eq!(last_json(&out)["resealed"], 0);
    assert_eq!(last_json(&out)["current"], 3);
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'reseal'")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(audited, 2);
}
