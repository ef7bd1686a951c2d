//! `/api/v1/tenants`: provisioning through the workflow, with a worker in this process.

use std::time::Duration;

use psa_models::validate::TagText;
use psa_testing::TestTemporal;
use psa_workflows::TrackingSettings;
use psa_workflows::secret::SecretKey;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

pub(crate) struct Provisioned {
    // Dropped first (fields drop in order): the worker stops while Temporal still answers, as
    // it must when a workflow of its (a trial's watcher) is still running.
    _worker: psa_workflows::worker::Background,
    pub app: TestApp,
    pub temporal: TestTemporal,
    pub mgmt: TenantFixture,
    pub queue: String,
    /// The SMTP server the worker and the API mail through.
    pub smtp: psa_testing::SmtpSink,
    /// The login role the API's pool uses (the worker's is the database owner).
    pub api_role: String,
    /// Where the API looks DNS up (`PSA_DNS_RESOLVER`): a test starts a server there.
    pub dns: std::net::SocketAddr,
    /// The API's and the worker's `PSA_SECRET_KEY` (a test's webhook dispatcher opens the
    /// endpoints' secrets with it).
    pub key: SecretKey,
}

/// Mail through `smtp`, links to `psa.test`.
fn mail_delivery(smtp: &psa_testing::SmtpSink) -> psa_models::invitations::Delivery {
    psa_models::invitations::Delivery {
        mailer: Some(
            psa_models::mail::Mailer::new(
                &secrecy::SecretString::from(smtp.url()),
                "psa <noreply@psa.test>",
            )
            .unwrap(),
        ),
        ..crate::test_config().delivery
    }
}

/// A server with provisioning through Temporal at `address` on `queue`, on a pool logged in as
/// the API is in production, and a management tenant with its admin's key. Returns the API's
/// login role too.
async fn app_with_provisioning(
    address: &str,
    queue: &str,
    delivery: psa_models::invitations::Delivery,
    key: &SecretKey,
    dns: std::net::SocketAddr,
    stripe_secret: Option<&str>,
) -> (TestApp, TenantFixture, String) {
    let mut app = TestApp::unserved().await;
    let mgmt = app.tenant("Mgmt").await;
    sqlx::query("UPDATE tenants SET is_management = true WHERE tenant = $1")
        .bind(mgmt.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (pool, role) = app.api_login_pool().await;
    let provisioning = psa_api::tenants::Provisioning::new(
        address.to_owned(),
        "default".into(),
        queue.to_owned(),
        pool.clone(),
    );
    let mut config = psa_api::Config {
        dns: psa_app::dns::Dns { server: Some(dns) },
        delivery,
        ..test_config()
    };
    // One PSA_SECRET_KEY for the API and the worker, as deployed.
    config.webhooks.key = Some(key.clone());
    config.lifecycle.stripe_webhook_secret =
        stripe_secret.map(|s| secrecy::SecretString::from(s.to_owned()));
    app.serve(pool, config, Some(provisioning)).await;
    (app, mgmt, role)
}

pub(crate) async fn provisioned() -> Provisioned {
    provisioned_with(Default::default(), None).await
}

/// [`provisioned`], with the worker keeping these deadlines and the API taking Stripe's
/// webhook signed with `stripe_secret`.
pub(crate) async fn provisioned_with(
    deadlines: psa_workflows::deadlines::DeadlineSettings,
    stripe_secret: Option<&str>,
) -> Provisioned {
    let temporal = TestTemporal::start().await;
    let queue = format!("api-{}", uuid::Uuid::new_v4().simple());
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let smtp = psa_testing::SmtpSink::start().await;
    let dns = psa_testing::DnsServer::free_addr();
    let (app, mgmt, api_role) = app_with_provisioning(
        &temporal.address,
        &queue,
        mail_delivery(&smtp),
        &key,
        dns,
        stripe_secret,
    )
    .await;
    let api_key = key.clone();
    let tracking = TrackingSettings {
        enabled: true,
        management_tenant_id: Some(mgmt.tenant),
        tag_name: TagText::parse("PSA Customer").unwrap(),
    };
    let worker = psa_workflows::worker::Background::start(
        &temporal.address,
        &queue,
        psa_workflows::worker::WorkerConfig {
            pool: app.db.pool.clone(),
            key,
            tracking,
            delivery: mail_delivery(&smtp),
            lifecycle: psa_workflows::worker::LifecycleConfig {
                deadlines,
                ..psa_workflows::worker::LifecycleConfig::in_dir(
                    &std::env::temp_dir().join(format!("psa-exports-{}", uuid::Uuid::new_v4())),
                )
                .unwrap()
            },
        },
    )
    .expect("worker started");
    Provisioned {
        app,
        temporal,
        mgmt,
        queue,
        smtp,
        api_role,
        dns,
        key: api_key,
        _worker: worker,
    }
}

pub(crate) fn body(name: &str) -> serde_json::Value {
    json!({
        "tenant_name": name,
        "admin_user": {"first_name": "Pat", "last_name": "Lee", "email": format!("pat@{}.example", name.to_lowercase())},
        "company_name": format!("{name} Ltd"),
        "license_count": 3
    })
}

pub(crate) async fn post(
    p: &Provisioned,
    key: Option<&str>,
    idempotency: Option<&str>,
    b: serde_json::Value,
) -> reqwest::Response {
    let mut req = p
        .app
        .http
        .post(format!("{}/api/v1/tenants", p.app.base))
        .json(&b);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(i) = idempotency {
        req = req.header("Idempotency-Key", i);
    }
    req.send().await.unwrap()
}

#[tokio::test]
async fn provisioning_over_http() {
    let p = provisioned().await;
    let app = &p.app;
    let k = Some(p.mgmt.key.as_str());
    let resp = post(&p, k, Some("signup-77"), body("Acme")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<serde_json::Value>().await.unwrap()["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // One rule for every starter: the key names the run `psa tenant create --idempotency-key`
    // would start.
    assert_eq!(
        id,
        psa_workflows::client::IdempotencyKey::parse("signup-77")
            .unwrap()
            .workflow_id()
    );
    let again = post(&p, k, Some("signup-77"), body("Acme")).await;
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["workflow_id"],
        id.as_str()
    );
    // The same key with a different request is refused, and starts nothing.
    let mut other = body("Acme");
    other["license_count"] = json!(4);
    let r = post(&p, k, Some("signup-77"), other).await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "idempotency_key_reused", "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("signup-77"),
        "{e}"
    );

    let mut result = serde_json::Value::Null;
    for _ in 0..300 {
        let (status, s) = app
            .call(
                Method::GET,
                &format!("/api/v1/tenants/provisioning/{id}"),
                k,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{s}");
        if s["finished"] == true {
            result = s["result"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(result["status"], "completed", "{result}");
    // The worker's settings decided tracking, and the run says which it used.
    assert_eq!(result["tracking_settings"]["enabled"], true, "{result}");
    assert_eq!(
        result["tracking_settings"]["management_tenant_id"],
        json!(p.mgmt.tenant),
        "{result}"
    );
    assert_eq!(result["customer_tracking"]["status"], "completed");
    assert_eq!(result["welcome_email"]["status"], "sent", "{result}");
    let tenants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE company_name = 'Acme'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(tenants, 1, "one tenant per idempotency key");
    first_login(&p, &id, &result).await;

    // The management tenant's staff see the new customer through the ordinary API.
    let (_, companies) = app.call(Method::GET, "/api/v1/companies", k, None).await;
    assert!(
        companies["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["company_name"] == "Acme"
                && c["properties"]["tenant_id"] == result["tenant_id"]),
        "{companies}"
    );
    assert_eq!(
        app.http
            .get(format!("{}/readyz", app.base))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
}

#[tokio::test]
async fn only_the_management_tenant_with_permission_may_provision() {
    let p = provisioned().await;
    let app = &p.app;
    let other = app.tenant("Other").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(&other.key),
            Some(body("Nope")),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let tech = app.user_with_role(p.mgmt.tenant, "Technician").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/tenants",
            Some(&tech),
            Some(body("Nope")),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = app
        .call(
            Method::GET,
            "/api/v1/tenants/provisioning/tenant-creation-x",
            Some(&tech),
            None,
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let k = Some(p.mgmt.key.as_str());
    let mut bad = body("Bad");
    bad["admin_user"]["email"] = json!("not-an-email");
    assert_error(
        &app.call(Method::POST, "/api/v1/tenants", k, Some(bad))
            .await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_error",
    );
    assert_error(
        &app.call(
            Method::POST,
            "/api/v1/tenants",
            k,
            Some(json!({"tenant_name": "X"})),
        )
        .await,
        StatusCode::BAD_REQUEST,
        "validation_error",
    );
    let r = app
        .call(
            Method::GET,
            "/api/v1/tenants/provisioning/tenant-creation-unknown",
            k,
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app
        .call(
            Method::GET,
            "/api/v1/tenants/provisioning/something-else",
            k,
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        post(&p, k, Some("has space"), body("Spaced"))
            .await
            .status(),
        StatusCode::BAD_REQUEST
    );
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 2, "management and other only");
}

/// A run started the way `psa tenant create --idempotency-key K` starts it is readable through
/// the API, and a run no worker picks up says so instead of timing out.
#[tokio::test]
async fn a_run_started_by_the_cli_is_readable_and_no_worker_is_named() {
    let p = provisioned().await;
    let app = &p.app;
    let k = Some(p.mgmt.key.as_str());
    let temporal = psa_workflows::client::connect(&p.temporal.address, "default")
        .await
        .unwrap();
    // The CLI's starter, on a task queue no worker polls.
    let idle = psa_workflows::client::TenantWorkflows {
        client: temporal,
        task_queue: format!("{}-idle", p.queue),
        pool: app.db.pool.clone(),
    };
    let input = psa_workflows::TenantCreationInput::parse(psa_workflows::RawRequest {
        tenant_name: "Cli Co",
        first_name: "Cy",
        last_name: "Li",
        email: "cy@cli.example",
        ..Default::default()
    })
    .unwrap();
    let key = psa_workflows::client::IdempotencyKey::parse("cli-key-1").unwrap();
    let id = idle.start(input, Some(&key), "cli").await.unwrap();
    let started = std::time::Instant::now();
    let (status, view) = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/provisioning/{id}"),
            k,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{view}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the status must not wait on a query no worker answers"
    );
    assert_eq!(view["finished"], false, "{view}");
    assert_eq!(view["status"], "requested", "{view}");
    let notice = view["notice"].as_str().unwrap_or_default();
    assert!(
        notice.contains("no worker is polling task queue") && notice.contains(&idle.task_queue),
        "{view}"
    );
    assert_eq!(view["record"]["requested_by"], "cli", "{view}");
}

/// Temporal down: provisioning answers 503 `unavailable` (nothing written), `/readyz` 503, and
/// the rest of the API keeps working.
#[tokio::test]
async fn temporal_down_is_503_and_not_ready() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string(); // bound and dropped: nothing listens there
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let (app, mgmt, _) = app_with_provisioning(
        &dead,
        "nowhere",
        test_config().delivery,
        &key,
        psa_testing::DnsServer::free_addr(),
        None,
    )
    .await;
    let k = Some(mgmt.key.as_str());
    let r = app
        .call(Method::POST, "/api/v1/tenants", k, Some(body("Nowhere")))
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let r = app
        .call(
            Method::GET,
            "/api/v1/tenants/provisioning/tenant-creation-x",
            k,
            None,
        )
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let ready = app
        .http
        .get(format!("{}/readyz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", k, None).await.0,
        StatusCode::OK,
        "the rest of the API works without Temporal"
    );
    assert_eq!(
        app.count("tenant_provisioning").await,
        0,
        "nothing was claimed"
    );
}

/// The run's result until it finishes.
pub(crate) async fn finished(p: &Provisioned, id: &str) -> serde_json::Value {
    let k = Some(p.mgmt.key.as_str());
    for _ in 0..600 {
        let (status, s) = p
            .app
            .call(
                Method::GET,
                &format!("/api/v1/tenants/provisioning/{id}"),
                k,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{s}");
        if s["finished"] == true {
            return s;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("run {id} did not finish");
}

async fn accept(app: &TestApp, token: &str, password: &str) -> (StatusCode, serde_json::Value) {
    app.call(
        Method::POST,
        "/api/v1/auth/invitations/accept",
        None,
        Some(json!({"token": token, "password": password})),
    )
    .await
}

fn token_in(link: &str) -> String {
    link.rsplit('#').next().unwrap().to_owned()
}

/// What `temporal workflow show` prints of a run: its whole history.
fn history(p: &Provisioned, id: &str) -> String {
    let out = std::process::Command::new(psa_testing::temporal_cli())
        .args(["workflow", "show", "--output", "json", "--address"])
        .arg(&p.temporal.address)
        .args(["--workflow-id", id])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The new admin's first login, as they live it: one welcome email, its link opens the
/// set-password page, the password is set and they are signed in; the link works once; no
/// management reader (status, Temporal history) ever sees a credential.
async fn first_login(p: &Provisioned, id: &str, result: &serde_json::Value) {
    let app = &p.app;
    let mails = p.smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1, "one welcome email");
    let mail = &mails[0];
    assert_eq!(
        psa_testing::header_of(mail, "To").unwrap(),
        "\"Pat Lee\" <pat@acme.example>"
    );
    assert!(
        psa_testing::header_of(mail, "Subject")
            .unwrap()
            .contains("Acme")
    );
    let link = psa_testing::link_in(mail).expect("a link in the email");
    assert!(link.starts_with("http://psa.test/invite#psa_i_"), "{link}");
    let token = token_in(&link);

    // Nothing a management admin reads holds the token, or any credential.
    let view = finished(p, id).await.to_string();
    assert!(
        !view.contains(&token) && !view.contains("psa_i_") && !view.contains("password"),
        "{view}"
    );
    assert!(result.get("invitation_link").is_none() && result.get("temporary_password").is_none());
    let h = history(p, id);
    assert!(h.contains("send_welcome_email"), "the history is the run's");
    assert!(
        !h.contains(&token) && !h.contains("psa_i_"),
        "the token is not in Temporal's history"
    );

    // The link opens the page (the token stays in the fragment: the server never sees it).
    let page = app
        .http
        .get(format!("{}/invite", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(
        page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(page.headers()["referrer-policy"], "no-referrer");
    let html = page.text().await.unwrap();
    assert!(html.contains("Choose your password") && html.contains("set-password.js"));

    // A weak password is refused, and the link still works after that.
    let weak = accept(app, &token, "password1234").await;
    assert_error(&weak, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(
        weak.1["error"]["fields"]["password"].is_string(),
        "{}",
        weak.1
    );
    let (status, session) = accept(app, &token, "tall giraffe eats purple clouds").await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let bearer = session["token"].as_str().unwrap();
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(bearer), None)
        .await;
    assert_eq!(status, StatusCode::OK, "the new admin is signed in");
    // The same link a second time is refused, saying why.
    let again = accept(app, &token, "another fine long passphrase").await;
    assert_error(&again, StatusCode::BAD_REQUEST, "invalid_link");
    assert!(
        again.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already been used")
    );
    // The password works for a login.
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(
                json!({"tenant_id": result["tenant_id"], "email": "pat@acme.example",
                        "password": "tall giraffe eats purple clouds"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The admin accepted: a resend is refused, and sends nothing.
    let r = app
        .call(
            Method::POST,
            &format!(
                "/api/v1/tenants/{}/resend-invite",
                result["tenant_id"].as_str().unwrap()
            ),
            Some(&p.mgmt.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    assert_eq!(p.smtp.messages().len(), 1);
}

/// The SMTP server down: the tenant still completes, the welcome email is `failed` (with the
/// reason), the failure is in the metrics; resend repairs it and invalidates the earlier link.
#[tokio::test]
async fn welcome_email_failure_is_repaired_by_resend() {
    let mut p = provisioned().await;
    p.smtp.stop();
    let k = Some(p.mgmt.key.as_str());
    let resp = post(&p, k, None, body("Bravo")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<serde_json::Value>().await.unwrap()["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let view = finished(&p, &id).await;
    let result = &view["result"];
    assert_eq!(result["status"], "completed", "{view}");
    assert_eq!(result["welcome_email"]["status"], "failed", "{view}");
    assert!(
        result["welcome_email"]["error"]
            .as_str()
            .unwrap()
            .contains("SMTP"),
        "{view}"
    );
    let tenant = result["tenant_id"].as_str().unwrap().to_owned();

    // The API cannot send while the server is down: 503, and no link is kept.
    let down = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/resend-invite"),
            k,
            None,
        )
        .await;
    assert_error(&down, StatusCode::SERVICE_UNAVAILABLE, "mail_failed");
    // What the mail server said (its address, its words) stays in the log.
    let said = down.1["error"]["message"].as_str().unwrap();
    let port = p.smtp.url().rsplit(':').next().unwrap().to_owned();
    assert!(
        said.contains("try again") && !said.contains(&port) && !said.contains("127.0.0.1"),
        "{said}"
    );
    p.smtp.restart().await;
    // Only management callers may resend.
    let other = p.app.tenant("Other").await;
    let r = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/resend-invite"),
            Some(&other.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");

    let mut links = Vec::new();
    for n in 1..=2 {
        let (status, body) = p
            .app
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/resend-invite"),
                k,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["email"], "pat@bravo.example");
        assert!(
            !body.to_string().contains("psa_i_"),
            "the API never shows a link"
        );
        let mails = p.smtp.wait_for(n, Duration::from_secs(10)).await;
        assert_eq!(mails.len(), n);
        links.push(psa_testing::link_in(&mails[n - 1]).unwrap());
    }
    let old = accept(
        &p.app,
        &token_in(&links[0]),
        "tall giraffe eats purple clouds",
    )
    .await;
    assert_error(&old, StatusCode::BAD_REQUEST, "invalid_link");
    assert!(
        old.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("replaced"),
        "{}",
        old.1
    );
    let (status, _) = accept(
        &p.app,
        &token_in(&links[1]),
        "tall giraffe eats purple clouds",
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'resend_invite' AND tenant = $1",
    )
    .bind(p.mgmt.tenant)
    .fetch_one(&p.app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 2, "each resend audited in the management tenant");
}
