//! What needs attention: each list fed by its real cause (a rolled-back run, a customer
//! tracking failure, a welcome email against a closed SMTP port, a cancel with a short grace, a
//! failing webhook endpoint), the same at the API, on the management console's start page and
//! from `psa attention`; and only for the management tenant's staff.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::provisioning::{Provisioned, body, finished, post};
use super::*;

async fn attention(p: &Provisioned) -> Value {
    let (status, a) = p
        .app
        .call(Method::GET, "/api/v1/attention", Some(&p.mgmt.key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{a}");
    a
}

fn list<'a>(a: &'a Value, kind: &str) -> &'a Vec<Value> {
    a["lists"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["kind"] == kind)
        .unwrap_or_else(|| panic!("no list {kind}: {a}"))["items"]
        .as_array()
        .unwrap()
}

fn names(items: &[Value]) -> Vec<&str> {
    items.iter().map(|i| i["name"].as_str().unwrap()).collect()
}

/// Provisions `name` and waits for its run to end; returns the result.
async fn provision(p: &Provisioned, name: &str) -> Value {
    let resp = post(p, Some(&p.mgmt.key), None, body(name)).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = resp.json::<Value>().await.unwrap()["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    finished(p, &id).await["result"].clone()
}

#[tokio::test]
async fn each_list_is_fed_by_its_real_cause() {
    let mut p = super::provisioning::provisioned().await;
    let k = p.mgmt.key.clone();
    let quiet = attention(&p).await;
    assert_eq!(quiet["total"], 0, "{quiet}");

    // A run that rolls back.
    fail::cfg("activity::setup_tenant_data", "return(permanent)").unwrap();
    let doomed = provision(&p, "Doomed").await;
    fail::remove("activity::setup_tenant_data");
    assert_eq!(doomed["status"], "rolled_back", "{doomed}");
    // A run whose customer record could not be made (the tenant completes).
    fail::cfg("activity::create_customer_company", "return(permanent)").unwrap();
    let untracked = provision(&p, "Untracked").await;
    fail::remove("activity::create_customer_company");
    assert_eq!(untracked["status"], "completed", "{untracked}");
    assert_eq!(
        untracked["customer_tracking"]["status"], "failed",
        "{untracked}"
    );
    // A welcome email against a closed SMTP port.
    p.smtp.stop();
    let unwelcome = provision(&p, "Unwelcome").await;
    p.smtp.restart().await;
    assert_eq!(
        unwelcome["welcome_email"]["status"], "failed",
        "{unwelcome}"
    );
    let unwelcome_id = unwelcome["tenant_id"].as_str().unwrap().to_owned();
    // A webhook endpoint nobody answers at.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (status, endpoint) = p
        .app
        .call(
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(&k),
            Some(json!({"url": format!("http://{closed}/hooks"), "description": "CRM sync"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");
    // A cancel with a short grace (its event goes to the endpoint, which fails).
    let (status, canceled) = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{unwelcome_id}/cancel"),
            Some(&k),
            Some(json!({"reason": "contract ended", "grace_seconds": 3 * 86400})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{canceled}");

    // The worker's dispatcher (as `psa worker` runs it), allowed to reach loopback here.
    let dispatcher = psa_workflows::webhooks::Dispatcher::new(
        p.app.db.pool.clone(),
        psa_workflows::webhooks::DispatcherConfig {
            policy: psa_models::webhooks::AddressPolicy {
                allow_private: true,
            },
            ..psa_workflows::webhooks::DispatcherConfig::new(p.key.clone())
        },
    )
    .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let dispatching = tokio::spawn(dispatcher.run(async {
        stopped.await.ok();
    }));
    let mut a = attention(&p).await;
    for _ in 0..300 {
        if !list(&a, "webhook_endpoints").is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        a = attention(&p).await;
    }
    stop.send(()).unwrap();
    dispatching.await.unwrap();
    // The worker counts the tenants every minute; here, now.
    psa_models::attention::refresh_counts(&p.app.db.pool)
        .await
        .unwrap();
    let a = attention(&p).await;
    assert_eq!(names(list(&a, "failed_runs")), ["Doomed"], "{a}");
    assert!(
        list(&a, "failed_runs")[0]["fix"]
            .as_str()
            .unwrap()
            .starts_with("/console/provisioning/tenant-creation-"),
        "{a}"
    );
    assert_eq!(names(list(&a, "customer_records")), ["Untracked"], "{a}");
    assert_eq!(names(list(&a, "welcome_emails")), ["Unwelcome"], "{a}");
    assert_eq!(names(list(&a, "deletions_due")), ["Unwelcome"], "{a}");
    assert_eq!(
        list(&a, "deletions_due")[0]["fix"],
        format!("/console/tenants/{unwelcome_id}")
    );
    assert_eq!(names(list(&a, "webhook_endpoints")), ["CRM sync"], "{a}");
    assert!(list(&a, "trials_ending").is_empty(), "{a}");
    assert!(list(&a, "past_due").is_empty(), "{a}");
    assert_eq!(a["total"], 5, "{a}");
    // The customer tenants by status and plan: Untracked active, Unwelcome canceled.
    let counts: Vec<(String, i64)> = a["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["status"].as_str().unwrap().to_owned(),
                c["tenants"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        counts,
        [("active".to_owned(), 1), ("canceled".to_owned(), 1)],
        "{a}"
    );

    // The start page of the management console shows the same lists, each linking to its fix.
    let signed_in = super::console::sign_in(&p.app, &p.mgmt, &p.mgmt.admin_password).await;
    let session = super::console::cookie(&signed_in);
    let page = super::console::text(&p.app, "/console", Some(&session)).await;
    for expected in [
        "5</strong> things need attention",
        "Doomed",
        "Untracked",
        "Unwelcome",
        "CRM sync",
        &format!("href=\"/console/tenants/{unwelcome_id}\""),
    ] {
        assert!(page.contains(expected), "{expected} not on the page");
    }

    // Restoring the canceled tenant and resending its invitation clear their lists.
    let (status, _) = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{unwelcome_id}/restore"),
            Some(&k),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, r) = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{unwelcome_id}/resend-invite"),
            Some(&k),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    let a = attention(&p).await;
    assert!(list(&a, "deletions_due").is_empty(), "{a}");
    assert!(list(&a, "welcome_emails").is_empty(), "{a}");

    // Only the management tenant's staff: a customer tenant's admin is refused.
    let globex = p.app.tenant("Globex").await;
    let r = p
        .app
        .call(Method::GET, "/api/v1/attention", Some(&globex.key), None)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // The cancel's export is done before the worker stops (a worker stopped mid-export holds
    // its transaction open, which other tests' event paging would wait behind).
    for _ in 0..600 {
        let done: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM tenant_exports WHERE tenant_id = $1::uuid \
               AND status = 'completed'",
        )
        .bind(&unwelcome_id)
        .fetch_one(&p.app.db.pool)
        .await
        .unwrap();
        if done > 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the cancel's export never finished");
}
