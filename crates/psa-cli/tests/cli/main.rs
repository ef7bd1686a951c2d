//! The `psa` binary, run as an operator would, against a real PostgreSQL.

mod alerts;
mod imports;
mod parity;
mod plans;
mod sso;
mod tls;
mod workflow;

use std::process::{Command, Output};

use psa_testing::TestDb;

fn psa(db_url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psa"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    if let Some(url) = db_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("run psa")
}

/// A `psa` process whose stderr is read continuously (a server logging at debug level would
/// block once the pipe's buffer filled).
pub struct Running {
    pub child: std::process::Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Running {
    pub fn spawn(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn psa");
        let pipe = child.stderr.take().unwrap();
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = stderr.clone();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        Running {
            child,
            stderr,
            reader: Some(reader),
        }
    }

    /// What it has written to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, up to 20 s for a graceful exit, then SIGKILL; its exit status and stderr.
    pub fn stop(mut self) -> (std::process::ExitStatus, String) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        (status, self.stderr())
    }

    /// SIGKILL, as a crash.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test that fails leaves no process behind.
impl Drop for Running {
    fn drop(&mut self) {
        if !matches!(self.child.try_wait(), Ok(Some(_))) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn stdout_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {text}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn migrate_applies_once_and_is_idempotent() {
    let db = TestDb::empty().await;
    let first = psa(Some(&db.url()), &["migrate", "--json"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let total = stdout_json(&first)["total"].as_u64().unwrap();
    assert!(total >= 1);
    assert_eq!(stdout_json(&first)["applied"], total);
    let second = psa(Some(&db.url()), &["migrate", "--json"]);
    assert!(second.status.success());
    assert_eq!(stdout_json(&second)["applied"], 0);
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'companies'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 1);
}

/// Secrets never ride on the command line (where every user of the machine can read them): the
/// URL and the key come from the environment or from a file (a mounted secret).
#[tokio::test]
async fn secrets_come_from_the_environment_or_a_file_never_a_flag() {
    let db = TestDb::empty().await;
    let dir = std::env::temp_dir().join(format!("psa-secret-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("database-url");
    std::fs::write(&file, format!("{}\n", db.url())).unwrap();
    let out = psa(
        None,
        &[
            "migrate",
            "--json",
            "--database-url-file",
            file.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let refused = psa(None, &["migrate", "--database-url", &db.url()]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let both = psa(
        Some(&db.url()),
        &["migrate", "--database-url-file", file.to_str().unwrap()],
    );
    assert_eq!(both.status.code(), Some(2));
    assert!(
        stderr(&both).contains("DATABASE_URL_FILE"),
        "{}",
        stderr(&both)
    );
    let missing = psa(
        None,
        &["migrate", "--database-url-file", "/nonexistent/psa-url"],
    );
    assert_eq!(missing.status.code(), Some(2));
    let key = dir.join("key");
    std::fs::write(&key, "not base64!").unwrap();
    let bad_key = psa(
        Some(&db.url()),
        &[
            "tenant",
            "status",
            "tenant-creation-x",
            "--secret-key-file",
            key.to_str().unwrap(),
        ],
    );
    assert_eq!(bad_key.status.code(), Some(2), "{}", stderr(&bad_key));
    assert!(
        stderr(&bad_key).contains("PSA_SECRET_KEY"),
        "{}",
        stderr(&bad_key)
    );
    assert!(
        !stderr(&bad_key).contains("not base64!"),
        "the secret was echoed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn management_init_creates_once_and_prints_the_id() {
    let db = TestDb::new(&psa_models::MIGRATOR).await;
    let url = db.url();
    let first = psa(
        Some(&url),
        &[
            "management",
            "init",
            "--name",
            "Nine Minds LLC",
            "--admin-email",
            "Ops@NineMinds.example",
            "--first-name",
            "Op",
            "--last-name",
            "Erator",
            "--json",
        ],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let j = stdout_json(&first);
    assert_eq!(j["created"], true);
    let id = j["tenant_id"].as_str().unwrap().to_owned();
    // The first admin is invited: a link printed once, no password.
    let link = j["invitation_link"].as_str().unwrap().to_owned();
    assert!(
        link.starts_with("http://localhost:8080/invite#psa_i_"),
        "{link}"
    );
    assert!(!stderr(&first).contains(&link), "the link is not in logs");
    assert_eq!(j["admin_created"], true);

    let second = psa(
        Some(&url),
        &["management", "init", "--name", "Other", "--json"],
    );
    assert!(second.status.success());
    let j = stdout_json(&second);
    assert_eq!(
        (j["created"].as_bool(), j["tenant_id"].as_str()),
        (Some(false), Some(id.as_str()))
    );
    assert!(j.get("invitation_link").is_none());

    // Again with an administrator who does not exist yet: invited. Again with the same one, who
    // has not accepted yet: a new link, and the first stops working.
    let invite = |email: &str| {
        let out = psa(
            Some(&url),
            &[
                "management",
                "init",
                "--name",
                "Other",
                "--admin-email",
                email,
                "--first-name",
                "Second",
                "--last-name",
                "Admin",
                "--json",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout_json(&out)
    };
    let added = invite("second@nineminds.example");
    assert_eq!(
        (added["created"].as_bool(), added["admin_created"].as_bool()),
        (Some(false), Some(true))
    );
    let again = invite("second@nineminds.example");
    assert_eq!(again["admin_created"], false);
    assert_ne!(again["invitation_link"], added["invitation_link"]);
    let open_links: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_auth_tokens WHERE user_id = $1::uuid AND revoked_at IS NULL",
    )
    .bind(added["admin_user_id"].as_str().unwrap())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(open_links, 1, "only the newest link works");

    let human = psa(Some(&url), &["management", "init", "--name", "Other"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains(&format!("NINEMINDS_TENANT_ID={id}")));

    let (name, is_management): (String, bool) =
        sqlx::query_as("SELECT company_name, is_management FROM tenants")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((name.as_str(), is_management), ("Nine Minds LLC", true));
}

#[tokio::test]
async fn usage_and_configuration_errors_exit_2_and_write_nothing() {
    let db = TestDb::new(&psa_models::MIGRATOR).await;
    let url = db.url();

    let out = psa(None, &["migrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DATABASE_URL"), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim().lines().count(),
        1,
        "one clear line: {}",
        stderr(&out)
    );

    let out = psa(Some("mysql://nope"), &["migrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DATABASE_URL"));

    let out = psa(
        Some(&url),
        &[
            "management",
            "init",
            "--name",
            "X",
            "--admin-email",
            "not-an-email",
            "--first-name",
            "A",
            "--last-name",
            "B",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("email"), "{}", stderr(&out));

    let out = psa(Some(&url), &["management", "init", "--name", "   "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("name"), "{}", stderr(&out));

    let out = psa(
        Some(&url),
        &[
            "management",
            "init",
            "--name",
            "X",
            "--admin-email",
            "a@b.example",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap requires the names with an email"
    );

    let out = psa(Some(&url), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psa"));
    let out = cmd
        .args(["migrate"])
        .env("DATABASE_URL", &url)
        .env("PSA_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("PSA_LOG_FORMAT"));

    // Proxies to trust, and their header, that do not parse: `psa serve` does not start.
    for (var, value) in [
        ("PSA_TRUSTED_PROXIES", "10.0.0.0/33"),
        ("PSA_TRUSTED_PROXIES", "ingress.internal"),
        ("PSA_FORWARDED_HEADER", "x-real-ip"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_psa"))
            .arg("serve")
            .env("DATABASE_URL", &url)
            .env(var, value)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{var}={value}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains(var), "{}", stderr(&out));
    }

    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 0);
}

#[tokio::test]
async fn an_unreachable_database_exits_1() {
    let out = psa(Some("postgres://nobody@127.0.0.1:1/none"), &["migrate"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn serve_with_api_keys_and_sessions_and_no_secret_in_the_logs() {
    let db = TestDb::new(&psa_models::MIGRATOR).await;
    let url = db.url();
    let init = psa(
        Some(&url),
        &[
            "management",
            "init",
            "--name",
            "Mgmt",
            "--admin-email",
            "ops@mgmt.example",
            "--first-name",
            "O",
            "--last-name",
            "P",
            "--json",
        ],
    );
    let init = stdout_json(&init);
    let tenant = init["tenant_id"].as_str().unwrap().to_owned();
    let user = init["admin_user_id"].as_str().unwrap().to_owned();
    let invitation = init["invitation_link"].as_str().unwrap().to_owned();
    let password = "fourteen quiet harbour lights".to_owned();

    let created = psa(
        Some(&url),
        &[
            "api-key", "create", "--tenant", &tenant, "--user", &user, "--json",
        ],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let created = stdout_json(&created);
    let key = created["key"].as_str().unwrap().to_owned();
    let key_id = created["api_key_id"].as_str().unwrap().to_owned();
    let bad = psa(
        Some(&url),
        &[
            "api-key",
            "create",
            "--tenant",
            &tenant,
            "--user",
            &uuid_str(),
            "--json",
        ],
    );
    assert_eq!(bad.status.code(), Some(2), "unknown user is a usage error");
    let bad = psa(
        Some(&url),
        &["api-key", "create", "--tenant", "nope", "--user", &user],
    );
    assert_eq!(bad.status.code(), Some(2));

    let port = free_port();
    let metrics_port = free_port();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_psa"));
    serve
        .arg("serve")
        .env("DATABASE_URL", &url)
        .env("PSA_BIND", format!("127.0.0.1:{port}"))
        .env("PSA_METRICS_BIND", format!("127.0.0.1:{metrics_port}"))
        .env("RUST_LOG", "debug");
    let child = Running::spawn(serve);
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..100 {
        if http
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(up, "psa serve did not become ready");
    // `/metrics` on its own listener, not on the public port.
    assert_eq!(
        http.get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        reqwest::StatusCode::NOT_FOUND
    );
    let metrics = http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert!(metrics.status().is_success());
    assert!(
        metrics
            .text()
            .await
            .unwrap()
            .contains("psa_login_failures_total")
    );
    // The container health check.
    assert!(
        psa(None, &["probe", &format!("{base}/healthz")])
            .status
            .success()
    );
    assert_eq!(
        psa(None, &["probe", &format!("{base}/nope")]).status.code(),
        Some(1)
    );
    assert_eq!(
        psa(None, &["probe", "http://127.0.0.1:1/healthz"])
            .status
            .code(),
        Some(1)
    );
    assert_eq!(psa(None, &["probe", "ftp://x"]).status.code(), Some(2));

    let resp = http
        .get(format!("{base}/api/v1/companies"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // The management admin's first login: the link printed by `management init`, as its page's
    // form posts it.
    let set = http
        .post(format!("{base}/invite"))
        .form(&[
            ("token", invitation.rsplit('#').next().unwrap()),
            ("password", password.as_str()),
            ("password_confirm", password.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    assert!(set.text().await.unwrap().contains("ops@mgmt.example"));
    let login: serde_json::Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"tenant_id": tenant, "email": "ops@mgmt.example", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    // The management tenant requires a second factor: this first session can only set one up.
    let resp = http
        .get(format!("{base}/api/v1/contacts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "mfa_enrollment_required", "{body}");
    // An operator lifts the policy (audited); a new sign-in is a full one.
    let off = psa(
        Some(&url),
        &["user", "mfa-policy", "--tenant", &tenant, "off"],
    );
    assert!(
        off.status.success(),
        "{}",
        String::from_utf8_lossy(&off.stderr)
    );
    let login: serde_json::Value = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&serde_json::json!({"tenant_id": tenant, "email": "ops@mgmt.example", "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap().to_owned();
    let resp = http
        .get(format!("{base}/api/v1/contacts"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = http.post(format!("{base}/api/v1/auth/login")).json(&serde_json::json!({"tenant_id": tenant, "email": "ops@mgmt.example", "password": "not-it-Secret-123"})).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    // A failure of ours whose database error carries row values in its DETAIL: the caller gets
    // a generic 500, the log gets the SQLSTATE and message but not the DETAIL.
    sqlx::query(
        "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
         RAISE EXCEPTION 'refused by a trigger' USING DETAIL = 'row value secret-detail-42', ERRCODE = 'XX001'; \
         END $$",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse BEFORE INSERT ON contacts FOR EACH ROW EXECUTE FUNCTION refuse()",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let resp = http
        .post(format!("{base}/api/v1/contacts"))
        .bearer_auth(&key)
        .json(&serde_json::json!({"full_name": "D", "email": "d@detail.example"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 500);
    assert!(!resp.text().await.unwrap().contains("secret-detail-42"));

    let revoked = psa(Some(&url), &["api-key", "revoke", &key_id, "--json"]);
    assert!(revoked.status.success());
    assert_eq!(stdout_json(&revoked)["revoked"], true);
    let again = psa(Some(&url), &["api-key", "revoke", &key_id]);
    assert_eq!(again.status.code(), Some(1));
    let resp = http
        .get(format!("{base}/api/v1/companies"))
        .bearer_auth(&key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    let (status, logs) = child.stop();
    assert!(status.success(), "graceful shutdown on SIGTERM: {status:?}");
    assert!(
        logs.contains("XX001") && logs.contains("refused by a trigger"),
        "{logs}"
    );
    assert!(
        !logs.contains("secret-detail-42"),
        "a database DETAIL reached the log"
    );
    assert!(
        logs.contains("/api/v1/companies"),
        "request logs present: {logs}"
    );
    for secret in [
        password.as_str(),
        token.as_str(),
        key.as_str(),
        "not-it-Secret-123",
    ] {
        assert!(!logs.contains(secret), "a secret reached the logs");
    }
}

fn uuid_str() -> String {
    format!("{:08x}-0000-4000-8000-000000000000", std::process::id())
}
