use std::collections::BTreeSet;

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let get = |p: &str| app.http.get(format!("{}{p}", app.base)).send();
    // `/metrics` is not on the public port: on a listener of its own.
    assert_eq!(
        get("/metrics").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let get_metrics = || app.http.get(format!("{}/metrics", app.metrics_base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get("/readyz").await.unwrap().status(), StatusCode::OK);
    let (_, co) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            Some(&t.key),
            Some(json!({"company_name": "Co"})),
        )
        .await;
    app.call(
        Method::GET,
        &format!("/api/v1/companies/{}", co["company_id"].as_str().unwrap()),
        Some(&t.key),
        None,
    )
    .await;
    app.call(
        Method::GET,
        &format!("/api/v1/companies/{}", uuid::Uuid::new_v4()),
        Some(&t.key),
        None,
    )
    .await;
    let metrics = get_metrics().await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            r#"http_requests_total{method="POST",route="/api/v1/companies",status="201"}"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/api/v1/companies/{company_id}",status="200""#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"route="/api/v1/companies/{company_id}",status="404""#),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(
        !metrics.contains(co["company_id"].as_str().unwrap()),
        "no raw ids in labels"
    );
    assert!(!metrics.contains(&t.key));

    // Readiness follows the database.
    app.db.pool.close().await;
    assert_eq!(
        get("/readyz").await.unwrap().status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(get("/healthz").await.unwrap().status(), StatusCode::OK);
}

pub(crate) fn documented(doc: &serde_json::Value) -> BTreeSet<(String, String)> {
    doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.to_uppercase(), path.clone()))
        })
        .collect()
}

#[tokio::test]
async fn the_openapi_document_matches_the_routes_and_the_checked_in_copy() {
    let app = TestApp::spawn().await;
    let doc: serde_json::Value = app
        .http
        .get(format!("{}/api/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected: BTreeSet<(String, String)> = [
        ("POST", "/api/v1/auth/login"),
        ("GET", "/api/v1/audit-log"),
        ("GET", "/api/v1/api-keys"),
        ("DELETE", "/api/v1/api-keys/{id}"),
        ("POST", "/api/v1/users/{id}/revoke-api-keys"),
        ("POST", "/api/v1/auth/logout"),
        ("POST", "/api/v1/auth/mfa"),
        ("POST", "/api/v1/auth/mfa/totp"),
        ("DELETE", "/api/v1/auth/mfa/totp"),
        ("POST", "/api/v1/auth/mfa/totp/confirm"),
        ("POST", "/api/v1/auth/mfa/passkey"),
        ("POST", "/api/v1/auth/passkeys/options"),
        ("POST", "/api/v1/auth/passkeys"),
        ("GET", "/api/v1/auth/passkeys"),
        ("DELETE", "/api/v1/auth/passkeys/{id}"),
        ("POST", "/api/v1/auth/passkey/options"),
        ("POST", "/api/v1/auth/passkey"),
        ("POST", "/api/v1/auth/sso/start"),
        ("GET", "/api/v1/plans"),
        ("POST", "/api/v1/plans"),
        ("PATCH", "/api/v1/plans/{code}"),
        ("POST", "/api/v1/tenants/{id}/subscription"),
        ("POST", "/api/v1/tenants/{id}/trial/extend"),
        ("POST", "/api/v1/tenants/{id}/support-sessions"),
        ("GET", "/api/v1/tenants/{id}/support-sessions"),
        (
            "POST",
            "/api/v1/tenants/{id}/support-sessions/{session_id}/end",
        ),
        ("GET", "/api/v1/support-sessions"),
        ("GET", "/api/v1/attention"),
        ("GET", "/api/v1/tenants/{id}/timeline"),
        ("POST", "/api/v1/billing/stripe/webhook"),
        ("GET", "/api/v1/search"),
        ("GET", "/api/v1/sso/connection"),
        ("PUT", "/api/v1/sso/connection"),
        ("DELETE", "/api/v1/sso/connection"),
        ("POST", "/api/v1/sso/connection/test"),
        ("GET", "/api/v1/sso/domains"),
        ("POST", "/api/v1/sso/domains"),
        ("POST", "/api/v1/sso/domains/{domain}/verify"),
        ("DELETE", "/api/v1/sso/domains/{domain}"),
        ("GET", "/api/v1/auth/sessions"),
        ("DELETE", "/api/v1/auth/sessions/{id}"),
        ("GET", "/api/v1/security-policy"),
        ("PATCH", "/api/v1/security-policy"),
        ("POST", "/api/v1/users/{id}/reset-mfa"),
        ("POST", "/api/v1/auth/logout-all"),
        ("POST", "/api/v1/auth/password"),
        ("POST", "/api/v1/auth/password-reset"),
        ("POST", "/api/v1/auth/password-reset/accept"),
        ("POST", "/api/v1/auth/invitations/accept"),
        ("GET", "/api/v1/users"),
        ("POST", "/api/v1/users"),
        ("PATCH", "/api/v1/users/{id}"),
        ("POST", "/api/v1/users/{id}/deactivate"),
        ("POST", "/api/v1/users/{id}/reactivate"),
        ("POST", "/api/v1/users/{id}/resend-invite"),
        ("POST", "/api/v1/tenants/{id}/resend-invite"),
        ("POST", "/api/v1/companies"),
        ("GET", "/api/v1/companies"),
        ("GET", "/api/v1/companies/{company_id}"),
        ("PATCH", "/api/v1/companies/{company_id}"),
        ("DELETE", "/api/v1/companies/{company_id}"),
        ("POST", "/api/v1/contacts"),
        ("GET", "/api/v1/contacts"),
        ("GET", "/api/v1/contacts/{contact_name_id}"),
        ("PATCH", "/api/v1/contacts/{contact_name_id}"),
        ("POST", "/api/v1/tags"),
        ("GET", "/api/v1/tags"),
        ("DELETE", "/api/v1/tags/{mapping_id}"),
        ("POST", "/api/v1/tenants"),
        ("GET", "/api/v1/tenants/provisioning/{workflow_id}"),
        ("GET", "/api/v1/tenants"),
        ("GET", "/api/v1/tenants/{id}"),
        ("DELETE", "/api/v1/tenants/{id}"),
        ("PATCH", "/api/v1/tenants/{id}"),
        ("POST", "/api/v1/tenants/{id}/suspend"),
        ("POST", "/api/v1/tenants/{id}/reactivate"),
        ("POST", "/api/v1/tenants/{id}/cancel"),
        ("POST", "/api/v1/tenants/{id}/restore"),
        ("POST", "/api/v1/tenants/{id}/export"),
        ("GET", "/api/v1/tenants/{id}/exports/{export_id}"),
        ("GET", "/api/v1/tenants/{id}/exports/{export_id}/archive"),
        ("POST", "/api/v1/tenants/imports"),
        ("GET", "/api/v1/customers"),
        ("GET", "/api/v1/customers/export.csv"),
        ("POST", "/api/v1/customers/repairs"),
        ("GET", "/api/v1/customers/repairs/{workflow_id}"),
        ("GET", "/api/v1/events"),
        ("GET", "/api/v1/events/{id}"),
        ("GET", "/api/v1/webhook-endpoints"),
        ("POST", "/api/v1/webhook-endpoints"),
        ("GET", "/api/v1/webhook-endpoints/{id}"),
        ("PATCH", "/api/v1/webhook-endpoints/{id}"),
        ("DELETE", "/api/v1/webhook-endpoints/{id}"),
        ("POST", "/api/v1/webhook-endpoints/{id}/rotate-secret"),
        ("POST", "/api/v1/webhook-endpoints/{id}/test"),
        ("GET", "/api/v1/webhook-endpoints/{id}/deliveries"),
        (
            "GET",
            "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}",
        ),
        (
            "POST",
            "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
        ),
    ]
    .iter()
    .map(|(m, p)| (m.to_string(), p.to_string()))
    .collect();
    assert_eq!(documented(&doc), expected);

    // Every documented operation is served (401 without credentials, 400/415 for login; the
    // start of a passkey sign-in needs nothing), not the fallback's 404 or a 405.
    for (method, path) in &expected {
        let concrete = path
            .replace("{company_id}", &uuid::Uuid::nil().to_string())
            .replace("{contact_name_id}", &uuid::Uuid::nil().to_string())
            .replace("{mapping_id}", &uuid::Uuid::nil().to_string())
            .replace("{workflow_id}", "tenant-creation-x")
            .replace("{domain}", "example.com")
            .replace("{code}", "standard");
        let resp = app
            .http
            .request(method.parse().unwrap(), format!("{}{concrete}", app.base))
            .send()
            .await
            .unwrap();
        // The start of a passkey sign-in needs nothing; the billing webhook, without its secret
        // configured here, says it is not offered.
        let open = (path == "/api/v1/auth/passkey/options" && resp.status() == StatusCode::OK)
            || (path == "/api/v1/billing/stripe/webhook"
                && resp.status() == StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            open || matches!(
                resp.status(),
                StatusCode::UNAUTHORIZED | StatusCode::UNSUPPORTED_MEDIA_TYPE
            ),
            "{method} {path}: {}",
            resp.status()
        );
    }
    // Every schema a document refers to is defined.
    let text = doc.to_string();
    for cap in text.split("\"#/components/schemas/").skip(1) {
        let name = cap.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "dangling reference to {name}"
        );
    }

    // The copy in docs/ is what the code generates (regenerate with PSA_UPDATE_OPENAPI=1).
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let pretty = serde_json::to_string_pretty(&doc).unwrap() + "\n";
    if std::env::var_os("PSA_UPDATE_OPENAPI").is_some() {
        std::fs::write(path, &pretty).unwrap();
    }
    let checked_in = std::fs::read_to_string(path)
        .expect("docs/openapi.json exists (PSA_UPDATE_OPENAPI=1 writes it)");
    assert_eq!(
        checked_in, pretty,
        "docs/openapi.json is stale: run the tests with PSA_UPDATE_OPENAPI=1"
    );
}

/// Our failure is a 500 `internal` with a generic message: no database text reaches the caller,
/// and the request wrote nothing.
#[tokio::test]
async fn an_internal_failure_is_a_generic_500() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    // The schema is broken under the running server (a table gone): a failure that is ours.
    sqlx::query("ALTER TABLE contacts RENAME TO contacts_elsewhere")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let r = app
        .call(
            reqwest::Method::POST,
            "/api/v1/contacts",
            Some(&t.key),
            Some(serde_json::json!({"full_name": "A", "email": "a@x.example"})),
        )
        .await;
    assert_error(&r, reqwest::StatusCode::INTERNAL_SERVER_ERROR, "internal");
    let message = r.1["error"]["message"].as_str().unwrap();
    assert_eq!(message, "An unexpected error occurred");
    assert!(r.1["error"].get("fields").is_none(), "{}", r.1);
    sqlx::query("ALTER TABLE contacts_elsewhere RENAME TO contacts")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(app.count("contacts").await, 0);
}

/// Methods a client invents are counted as `other`: `/metrics` does not grow with them. Every
/// answer is `Cache-Control: no-store` (a login answer carries a token).
#[tokio::test]
async fn metric_labels_are_bounded_and_answers_are_not_cached() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    for i in 0..50 {
        let m = reqwest::Method::from_bytes(format!("INVENTED{i}").as_bytes()).unwrap();
        let r = app
            .http
            .request(m, format!("{}/api/v1/companies", app.base))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }
    let metrics = app
        .http
        .get(format!("{}/metrics", app.metrics_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !metrics.contains("INVENTED"),
        "client-chosen methods became labels"
    );
    assert!(metrics.contains(r#"method="other""#), "{metrics}");
    let login = app
        .http
        .post(format!("{}/api/v1/auth/login", app.base))
        .json(&serde_json::json!({"tenant_id": t.tenant, "email": t.admin_email, "password": t.admin_password}))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), reqwest::StatusCode::OK);
    assert_eq!(
        login
            .headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store")
    );
}

/// Parameters are where they are documented: every `path` parameter is a `{name}` of its path
/// template and every `{name}` is declared; the list endpoints' filters and cursors are `query`
/// parameters (a client generated from the document sends them there).
#[test]
fn documented_parameters_are_in_the_right_place() {
    let (_, doc) = psa_api::api_routes();
    let doc = serde_json::to_value(&doc).unwrap();
    let mut query = BTreeSet::new();
    let mut ids = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            ids.push(op["operationId"].as_str().unwrap().to_owned());
            let params = op["parameters"].as_array().cloned().unwrap_or_default();
            let declared: BTreeSet<String> = params
                .iter()
                .filter(|p| p["in"] == "path")
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect();
            let templated: BTreeSet<String> = path
                .split('{')
                .skip(1)
                .map(|s| s.split('}').next().unwrap().to_owned())
                .collect();
            assert_eq!(declared, templated, "{method} {path}");
            for p in params.iter().filter(|p| p["in"] == "query") {
                query.insert(format!("{method} {path} {}", p["name"].as_str().unwrap()));
            }
        }
    }
    for expected in [
        "get /api/v1/companies limit",
        "get /api/v1/companies cursor",
        "get /api/v1/companies is_inactive",
        "get /api/v1/contacts company_id",
        "get /api/v1/tags tagged_type",
        "get /api/v1/tags tagged_id",
    ] {
        assert!(
            query.contains(expected),
            "{expected} not a query parameter: {query:?}"
        );
    }
    // Operation ids are unique (generated clients name their methods after them).
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), ids.len(), "{ids:?}");
}

/// The document is good enough for the ecosystem's tools: a Python client generated from
/// docs/openapi.json by openapi-python-client pages through 1,000 companies of a running server,
/// each once. `PSA_TEST_OPENAPI_VENV` names a virtualenv with the generator (scripts/test
/// installs one into .tools/).
#[tokio::test(flavor = "multi_thread")]
async fn a_client_generated_from_the_document_pages_through_a_list() {
    let venv = std::env::var("PSA_TEST_OPENAPI_VENV")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/openapi-venv")
        });
    assert!(
        venv.join("bin/openapi-python-client").exists(),
        "{}: openapi-python-client is missing; run scripts/test, which installs it (tests never skip)",
        venv.display()
    );
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let mut tx = app.db.pool.begin().await.unwrap();
    for i in 0..1000 {
        psa_models::companies::create(
            &mut tx,
            t.tenant,
            psa_models::companies::NewCompany {
                company_name: format!("Customer {i:04}"),
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let expected: i64 = sqlx::query_scalar("SELECT count(*) FROM companies WHERE tenant = $1")
        .bind(t.tenant)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("psa-client-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let doc = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    let generated = std::process::Command::new(venv.join("bin/openapi-python-client"))
        .args(["generate", "--meta", "none", "--path"])
        .arg(&doc)
        .current_dir(&dir)
        .output()
        .unwrap();
    assert!(
        generated.status.success()
            && dir
                .join("psa_client/api/companies/companies_list.py")
                .exists(),
        "{}",
        String::from_utf8_lossy(&generated.stdout)
    );
    let script = r#"
import sys
from psa_client import AuthenticatedClient
from psa_client.api.companies import companies_list
from psa_client.types import UNSET
client = AuthenticatedClient(base_url=sys.argv[1], token=sys.argv[2])
seen, cursor, pages = [], UNSET, 0
while True:
    page = companies_list.sync(client=client, limit=200, cursor=cursor)
    pages += 1
    seen += [c.company_id for c in page.items]
    if not isinstance(page.next_cursor, str):
        break
    cursor = page.next_cursor
print(len(seen), len(set(seen)), pages)
"#;
    let base = app.base.clone();
    let key = t.key.clone();
    let python = venv.join("bin/python");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python)
            .args(["-c", script, &base, &key])
            .current_dir(&dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        format!("{expected} {expected} {}", (expected as u64).div_ceil(200))
    );
}
