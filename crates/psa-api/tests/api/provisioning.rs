//! `/api/v1/tenants`: provisioning through the workflow, with a worker in this process.

use std::time::Duration;

use psa_models::validate::TagText;
use psa_testing::TestTemporal;
use psa_workflows::TrackingSettings;
use psa_workflows::secret::SecretKey;
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

struct Provisioned {
    app: TestApp,
    _temporal: TestTemporal,
    mgmt: TenantFixture,
    queue: String,
    _worker: psa_workflows::worker::Background,
}

/// A server with provisioning through Temporal at `address` on `queue`, and a management tenant
/// with its admin's key.
async fn app_with_provisioning(
    address: &str,
    queue: &str,
    key: Option<SecretKey>,
) -> (TestApp, TenantFixture) {
    let mut app = TestApp::unserved().await;
    let mgmt = app.tenant("Mgmt").await;
    sqlx::query("UPDATE tenants SET is_management = true WHERE tenant = $1")
        .bind(mgmt.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let provisioning = psa_api::tenants::Provisioning::new(
        address.to_owned(),
        "default".into(),
        queue.to_owned(),
        app.db.pool.clone(),
        key,
    );
    let pool = app.db.pool.clone();
    app.serve(pool, test_config(), Some(provisioning)).await;
    (app, mgmt)
}

async fn provisioned() -> Provisioned {
    let temporal = TestTemporal::start().await;
    let queue = format!("api-{}", uuid::Uuid::new_v4().simple());
    let key = SecretKey::from_base64(&SecretKey::generate_base64()).unwrap();
    let (app, mgmt) = app_with_provisioning(&temporal.address, &queue, Some(key.clone())).await;
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
        },
    )
    .expect("worker started");
    Provisioned {
        app,
        _temporal: temporal,
        mgmt,
        queue,
        _worker: worker,
    }
}

fn body(name: &str) -> serde_json::Value {
    json!({
        "tenant_name": name,
        "admin_user": {"first_name": "Pat", "last_name": "Lee", "email": format!("pat@{}.example", name.to_lowercase())},
        "company_name": format!("{name} Ltd"),
        "license_count": 3
    })
}

async fn post(
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
    assert_eq!(result["temporary_password"].as_str().unwrap().len(), 16);
    assert_eq!(result["customer_tracking"]["status"], "completed");
    let tenants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE company_name = 'Acme'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(tenants, 1, "one tenant per idempotency key");

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
    let temporal = psa_workflows::client::connect(&p._temporal.address, "default")
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
    let (app, mgmt) = app_with_provisioning(&dead, "nowhere", None).await;
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
