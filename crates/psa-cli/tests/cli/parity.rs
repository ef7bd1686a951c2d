//! One operation, whichever door: every mutating operation that more than one of the HTTP API,
//! the console and the `psa` command offer does the same thing and leaves the same audit entry
//! (the action, and the kind of actor each door acts as: an API key, a signed-in user, the
//! operator), on real PostgreSQL and Temporal; and with Temporal out of reach the API and the
//! CLI follow the one rule (recorded now, carried out by the worker).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::Running;
use super::workflow::{Setup, code, last_json};

/// The API in this process (over real HTTP) and the `psa` binary, on one database and one
/// Temporal, with a worker; the API is called with a management administrator's API key.
struct Doors {
    s: Setup,
    base: String,
    http: reqwest::Client,
    key: String,
    /// The console's session cookie (the same administrator, signed in with a password).
    cookie: String,
    _worker: Running,
    _servers: Vec<tokio::task::JoinHandle<()>>,
}

/// Where nothing answers: Temporal "stopped", as a process configured with it sees it.
const NO_TEMPORAL: &str = "127.0.0.1:9";

#[derive(Clone, Copy, Debug)]
enum Door {
    Api,
    Console,
    Cli,
}

impl Door {
    /// The actor kind its entries are recorded under.
    fn actor_kind(self) -> &'static str {
        match self {
            Door::Api => "api_key",
            Door::Console => "user",
            Door::Cli => "operator",
        }
    }
}

const PASSWORD: &str = "parity correct horse battery";

async fn api_server(s: &Setup, temporal_address: &str) -> (String, tokio::task::JoinHandle<()>) {
    let smtp = s.smtp.as_ref().expect("the doors mail");
    let config = psa_api::Config {
        dns: Default::default(),
        trusted_proxies: Default::default(),
        bind: "127.0.0.1:0".parse().unwrap(),
        metrics_bind: None,
        session_ttl: Duration::from_secs(3600),
        session_idle: Duration::from_secs(3600),
        limits: Default::default(),
        server: Default::default(),
        delivery: psa_models::invitations::Delivery {
            mailer: Some(
                psa_models::mail::Mailer::new(
                    &secrecy::SecretString::from(smtp.url()),
                    "psa <noreply@psa.test>",
                )
                .unwrap(),
            ),
            ..psa_models::invitations::Delivery::without_mail(
                url::Url::parse("https://psa.test").unwrap(),
            )
        },
        lifecycle: psa_api::LifecycleConfig {
            store: Some(psa_models::exports::ExportStore::local(&s.exports()).unwrap()),
            ..Default::default()
        },
        webhooks: psa_api::webhooks::WebhookConfig {
            key: Some(psa_workflows::secret::SecretKey::from_base64(&s.key).unwrap()),
            policy: Default::default(),
        },
    };
    let temporal = psa_app::Temporal::new(
        temporal_address.to_owned(),
        "default".into(),
        s.queue.clone(),
        s.db.pool.clone(),
    );
    let app = psa_api::Application::build_with(config, s.db.pool.clone(), Some(temporal))
        .await
        .unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    let served = tokio::spawn(async move {
        app.run_until(std::future::pending()).await.unwrap();
    });
    (base, served)
}

impl Doors {
    async fn open() -> Doors {
        let s = Setup::with_mail().await;
        let mgmt = psa_models::TenantId(uuid::Uuid::parse_str(&s.mgmt).unwrap());
        let mut tx = s.db.pool.begin().await.unwrap();
        let admin = psa_models::users::create_admin(
            &mut tx,
            mgmt,
            "Olga",
            "Operator",
            "olga@nineminds.example",
            Default::default(),
        )
        .await
        .unwrap()
        .user
        .user_id;
        let key = psa_models::credentials::create_api_key(&mut tx, mgmt, admin, Some("parity"))
            .await
            .unwrap();
        let hash = psa_models::password::hash(&secrecy::SecretString::from(PASSWORD))
            .await
            .unwrap();
        psa_models::users::set_password_hash(&mut tx, mgmt, admin, &hash)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        // The management tenant requires a second factor from the start; these doors compare
        // operations, not sign-ins (docs/operations.md, "Sign-in and second factors").
        let off = s.run(&["user", "mfa-policy", "--tenant", &s.mgmt, "off"]);
        assert!(
            off.status.success(),
            "{}",
            String::from_utf8_lossy(&off.stderr)
        );
        let (base, served) = api_server(&s, &s.temporal.address).await;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let signed_in = http
            .post(format!("{base}/console/sign-in"))
            .form(&[
                ("tenant", s.mgmt.as_str()),
                ("email", "olga@nineminds.example"),
                ("password", PASSWORD),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(signed_in.status(), StatusCode::SEE_OTHER);
        let cookie = signed_in.headers()[reqwest::header::SET_COOKIE]
            .to_str()
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let mut worker = s.cmd(&["worker", "--metrics-bind", "127.0.0.1:0"]);
        worker.env("PSA_SWEEP_INTERVAL_SECONDS", "1");
        let worker = Running::spawn(worker);
        use secrecy::ExposeSecret;
        Doors {
            base,
            http,
            key: key.key.expose_secret().to_owned(),
            cookie,
            _worker: worker,
            _servers: vec![served],
            s,
        }
    }

    async fn api_at(
        &self,
        base: &str,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&self.key);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn api(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.api_at(&self.base, method, path, body).await
    }

    /// Posts a console form (with the session's CSRF token, read from the page at `page`);
    /// answers the status, and must not be refused.
    async fn console(&self, page: &str, path: &str, fields: &[(&str, &str)]) -> StatusCode {
        let html = self
            .http
            .get(format!("{}{page}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
        let csrf = html[at..].split('"').next().unwrap().to_owned();
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header(reqwest::header::COOKIE, &self.cookie)
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(
            status.is_success() || status.is_redirection(),
            "{path}: {status} {body}"
        );
        status
    }

    fn cli(&self, args: &[&str]) -> std::process::Output {
        self.s.run(args)
    }

    /// A managed tenant, seeded (made directly: the lifecycle needs no provisioning run).
    async fn tenant(&self, name: &str) -> String {
        let id = psa_models::TenantId::new();
        let mut tx = self.s.db.pool.begin().await.unwrap();
        psa_models::tenants::create(
            &mut tx,
            id,
            psa_models::tenants::NewTenant {
                name: name.into(),
                email: format!("admin@{}.example", name.to_lowercase().replace(' ', "-")),
                company_name: Some(name.into()),
                licensed_user_count: Some(5),
                slug: None,
            },
            Default::default(),
        )
        .await
        .unwrap();
        psa_models::seeds::run(&mut tx, id).await.unwrap();
        tx.commit().await.unwrap();
        id.to_string()
    }

    async fn status(&self, tenant: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM tenants WHERE tenant = $1::uuid")
            .bind(tenant)
            .fetch_optional(&self.s.db.pool)
            .await
            .unwrap()
    }

    /// The kinds of actor of the management tenant's entries with this action about `entity`.
    async fn audited(&self, action: &str, entity: &str) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT actor_kind FROM audit_log WHERE tenant = $1::uuid AND action = $2 \
             AND entity_id = $3::uuid ORDER BY created_at",
        )
        .bind(&self.s.mgmt)
        .bind(action)
        .bind(entity)
        .fetch_all(&self.s.db.pool)
        .await
        .unwrap()
    }

    /// Runs a lifecycle operation through `door`, which must succeed.
    async fn lifecycle(&self, door: Door, op: &str, tenant: &str) {
        match door {
            Door::Api => {
                let (path, method, body) = match op {
                    "suspend" => ("suspend", Method::POST, Some(json!({"reason": "unpaid"}))),
                    "reactivate" => ("reactivate", Method::POST, None),
                    "cancel" => (
                        "cancel",
                        Method::POST,
                        Some(json!({"reason": "leaving", "grace_seconds": 3600})),
                    ),
                    "restore" => ("restore", Method::POST, None),
                    "export" => ("export", Method::POST, None),
                    "delete" => ("", Method::DELETE, None),
                    other => panic!("{other}"),
                };
                let path = if path.is_empty() {
                    format!("/api/v1/tenants/{tenant}")
                } else {
                    format!("/api/v1/tenants/{tenant}/{path}")
                };
                let (status, body) = self.api(method, &path, body).await;
                assert!(status.is_success(), "{op}: {status} {body}");
            }
            Door::Console => {
                let page = format!("/console/tenants/{tenant}");
                let fields: Vec<(&str, &str)> = match op {
                    "suspend" => vec![("reason", "unpaid")],
                    "cancel" => vec![
                        ("reason", "leaving"),
                        ("grace_days", "1"),
                        ("confirm", "yes"),
                    ],
                    "delete" => vec![("confirm_name", "Parity Console")],
                    _ => vec![],
                };
                self.console(&page, &format!("{page}/{op}"), &fields).await;
            }
            Door::Cli => {
                let out_file = self.s.exports().join(format!("{tenant}.tar.gz"));
                let out = match op {
                    "suspend" => self.cli(&["tenant", "suspend", tenant, "--reason", "unpaid"]),
                    "reactivate" => self.cli(&["tenant", "reactivate", tenant]),
                    "cancel" => self.cli(&[
                        "tenant", "cancel", tenant, "--reason", "leaving", "--grace", "1h",
                    ]),
                    "restore" => self.cli(&["tenant", "restore", tenant]),
                    "export" => self.cli(&[
                        "tenant",
                        "export",
                        tenant,
                        "--out",
                        out_file.to_str().unwrap(),
                    ]),
                    "delete" => self.cli(&["tenant", "delete", tenant, "--confirm"]),
                    other => panic!("{other}"),
                };
                assert!(
                    out.status.success(),
                    "{op}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }

    async fn wait_gone(&self, tenant: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while self.status(tenant).await.is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "tenant {tenant} not deleted in time"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_operation_does_the_same_through_the_api_the_console_and_the_cli() {
    let d = Doors::open().await;
    for door in [Door::Api, Door::Console, Door::Cli] {
        let kind = door.actor_kind();
        // The tenant's lifecycle.
        let t = d.tenant(&format!("Parity {door:?}")).await;
        for (op, after, action) in [
            ("suspend", Some("suspended"), "suspend"),
            ("reactivate", Some("active"), "reactivate"),
            ("cancel", Some("canceled"), "cancel"),
            ("restore", Some("active"), "restore"),
            ("export", Some("active"), "export"),
            ("cancel", Some("canceled"), "cancel"),
        ] {
            d.lifecycle(door, op, &t).await;
            assert_eq!(d.status(&t).await.as_deref(), after, "{door:?} {op}");
            let kinds = d.audited(action, &t).await;
            assert_eq!(
                kinds.last().map(String::as_str),
                Some(kind),
                "{door:?} {op}: {kinds:?}"
            );
        }
        d.lifecycle(door, "delete", &t).await;
        d.wait_gone(&t).await;
        assert_eq!(d.audited("confirm_delete", &t).await, vec![kind.to_owned()]);

        // A user of the management tenant: invited, given a role, deactivated.
        let email = format!("{}@nineminds.example", kind.replace('_', "-"));
        let user = match door {
            Door::Api => {
                let (status, body) = d
                    .api(
                        Method::POST,
                        "/api/v1/users",
                        Some(
                            json!({"first_name": "Uma", "last_name": "User", "email": email,
                                    "role": "Technician"}),
                        ),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                let id = body["user"]["user_id"].as_str().unwrap().to_owned();
                let (status, body) = d
                    .api(
                        Method::PATCH,
                        &format!("/api/v1/users/{id}"),
                        Some(json!({"role": "Finance"})),
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                let (status, body) = d
                    .api(
                        Method::POST,
                        &format!("/api/v1/users/{id}/deactivate"),
                        None,
                    )
                    .await;
                assert_eq!(status, StatusCode::OK, "{body}");
                id
            }
            Door::Console => {
                d.console(
                    "/console/users",
                    "/console/users",
                    &[
                        ("first_name", "Uma"),
                        ("last_name", "User"),
                        ("email", &email),
                        ("role", "Technician"),
                    ],
                )
                .await;
                let id: uuid::Uuid =
                    sqlx::query_scalar("SELECT user_id FROM users WHERE email = $1")
                        .bind(&email)
                        .fetch_one(&d.s.db.pool)
                        .await
                        .unwrap();
                let id = id.to_string();
                d.console(
                    "/console/users",
                    &format!("/console/users/{id}/role"),
                    &[("role", "Finance")],
                )
                .await;
                d.console(
                    "/console/users",
                    &format!("/console/users/{id}/deactivate"),
                    &[],
                )
                .await;
                id
            }
            Door::Cli => {
                let m = d.s.mgmt.as_str();
                let out = d.cli(&[
                    "user",
                    "invite",
                    "--tenant",
                    m,
                    "--email",
                    &email,
                    "--role",
                    "Technician",
                    "--first-name",
                    "Uma",
                    "--last-name",
                    "User",
                    "--json",
                ]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let id = last_json(&out)["user_id"].as_str().unwrap().to_owned();
                let out = d.cli(&[
                    "user", "set-role", "--tenant", m, "--email", &email, "--role", "Finance",
                ]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let out = d.cli(&["user", "deactivate", "--tenant", m, "--email", &email]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                id
            }
        };
        let (roles, inactive): (Vec<String>, bool) = sqlx::query_as(
            "SELECT array(SELECT r.role_name FROM user_roles ur JOIN roles r \
                          ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
                          WHERE ur.tenant = u.tenant AND ur.user_id = u.user_id), u.is_inactive \
             FROM users u WHERE u.user_id = $1::uuid",
        )
        .bind(&user)
        .fetch_one(&d.s.db.pool)
        .await
        .unwrap();
        assert_eq!(
            (roles, inactive),
            (vec!["Finance".to_owned()], true),
            "{door:?}"
        );
        for action in ["invite", "change_role", "deactivate"] {
            assert_eq!(
                d.audited(action, &user).await,
                vec![kind.to_owned()],
                "{door:?} {action}"
            );
        }

        // A webhook endpoint: created, its secret rotated, removed.
        let endpoint = match door {
            Door::Api => {
                let (status, body) = d
                    .api(
                        Method::POST,
                        "/api/v1/webhook-endpoints",
                        Some(json!({"url": "https://hooks.example/api"})),
                    )
                    .await;
                assert_eq!(status, StatusCode::CREATED, "{body}");
                let id = body["endpoint_id"].as_str().unwrap().to_owned();
                let path = format!("/api/v1/webhook-endpoints/{id}");
                let (status, _) = d
                    .api(Method::POST, &format!("{path}/rotate-secret"), None)
                    .await;
                assert_eq!(status, StatusCode::OK);
                let (status, _) = d.api(Method::DELETE, &path, None).await;
                assert_eq!(status, StatusCode::NO_CONTENT);
                id
            }
            Door::Console => {
                d.console(
                    "/console/webhooks",
                    "/console/webhooks",
                    &[("url", "https://hooks.example/console")],
                )
                .await;
                let id: uuid::Uuid = sqlx::query_scalar(
                    "SELECT endpoint_id FROM webhook_endpoints WHERE url = 'https://hooks.example/console'",
                )
                .fetch_one(&d.s.db.pool)
                .await
                .unwrap();
                let id = id.to_string();
                let page = format!("/console/webhooks/{id}");
                d.console(&page, &format!("{page}/rotate"), &[]).await;
                d.console(&page, &format!("{page}/delete"), &[("confirm", "yes")])
                    .await;
                id
            }
            Door::Cli => {
                let out = d.cli(&["webhooks", "add", "https://hooks.example/cli", "--json"]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let id = last_json(&out)["endpoint_id"].as_str().unwrap().to_owned();
                let out = d.cli(&["webhooks", "rotate-secret", &id]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let out = d.cli(&["webhooks", "remove", &id]);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stderr)
                );
                id
            }
        };
        let left: i64 = sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints")
            .fetch_one(&d.s.db.pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "{door:?}");
        for action in ["create", "rotate_secret", "delete"] {
            assert_eq!(
                d.audited(action, &endpoint).await,
                vec![kind.to_owned()],
                "{door:?} {action}"
            );
        }

        // An API key revoked (the API and the CLI offer it; the console revokes all of a
        // user's, another operation).
        if !matches!(door, Door::Console) {
            let mgmt = psa_models::TenantId(uuid::Uuid::parse_str(&d.s.mgmt).unwrap());
            let admin: uuid::Uuid = sqlx::query_scalar(
                "SELECT user_id FROM users WHERE email = 'olga@nineminds.example'",
            )
            .fetch_one(&d.s.db.pool)
            .await
            .unwrap();
            let mut tx = d.s.db.pool.begin().await.unwrap();
            let spare = psa_models::credentials::create_api_key(
                &mut tx,
                mgmt,
                psa_models::UserId(admin),
                Some("spare"),
            )
            .await
            .unwrap()
            .api_key_id;
            tx.commit().await.unwrap();
            match door {
                Door::Api => {
                    let (status, body) = d
                        .api(Method::DELETE, &format!("/api/v1/api-keys/{spare}"), None)
                        .await;
                    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
                }
                _ => {
                    let out = d.cli(&["api-key", "revoke", &spare.to_string()]);
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                }
            }
            let revoked: Option<chrono::DateTime<chrono::Utc>> =
                sqlx::query_scalar("SELECT revoked_at FROM api_keys WHERE api_key_id = $1")
                    .bind(spare)
                    .fetch_one(&d.s.db.pool)
                    .await
                    .unwrap();
            assert!(revoked.is_some(), "{door:?}");
            assert_eq!(
                d.audited("revoke", &spare.to_string()).await,
                vec![kind.to_owned()],
                "{door:?} revoke"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn with_temporal_out_of_reach_both_doors_record_and_the_worker_carries_out() {
    let mut d = Doors::open().await;
    // An API whose Temporal does not answer, beside the one that works.
    let (down, served) = api_server(&d.s, NO_TEMPORAL).await;
    d._servers.push(served);
    let by_api = d.tenant("Down Api").await;
    let by_cli = d.tenant("Down Cli").await;

    let (status, body) = d
        .api_at(
            &down,
            Method::POST,
            &format!("/api/v1/tenants/{by_api}/cancel"),
            Some(json!({"reason": "leaving", "grace_seconds": 3600})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let out =
        d.s.cmd(&[
            "tenant", "cancel", &by_cli, "--reason", "leaving", "--grace", "1h",
        ])
        .env("TEMPORAL_ADDRESS", NO_TEMPORAL)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));

    let (status, body) = d
        .api_at(
            &down,
            Method::DELETE,
            &format!("/api/v1/tenants/{by_api}"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let out =
        d.s.cmd(&["tenant", "delete", &by_cli, "--confirm"])
            .env("TEMPORAL_ADDRESS", NO_TEMPORAL)
            .output()
            .unwrap();
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("recorded"));

    // Both recorded the same way: canceled, the deletion confirmed, its workflow not started.
    for (t, kind) in [(&by_api, "api_key"), (&by_cli, "operator")] {
        assert_eq!(d.status(t).await.as_deref(), Some("canceled"));
        let (started, confirmed): (
            Option<chrono::DateTime<chrono::Utc>>,
            Option<chrono::DateTime<chrono::Utc>>,
        ) = sqlx::query_as(
            "SELECT started_at, confirmed_at FROM tenant_deletions WHERE tenant_id = $1::uuid",
        )
        .bind(t)
        .fetch_one(&d.s.db.pool)
        .await
        .unwrap();
        assert!(started.is_none() && confirmed.is_some(), "{t}");
        assert_eq!(d.audited("cancel", t).await, vec![kind.to_owned()]);
        assert_eq!(d.audited("confirm_delete", t).await, vec![kind.to_owned()]);
    }
    // The worker's sweeper carries both out once they are 30 s old.
    d.wait_gone(&by_api).await;
    d.wait_gone(&by_cli).await;
}
