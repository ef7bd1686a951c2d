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

/// The tenant seen whole: its timeline shows its provisioning, a suspension, a support session
/// and a user's invitation in order, from the tenant's and the management tenant's logs; its
/// runs; filtered by source; the page shows the same.
#[tokio::test]
async fn the_timeline_shows_what_happened_in_order() {
    let p = super::provisioning::provisioned().await;
    let k = p.mgmt.key.clone();
    let result = provision(&p, "Timely").await;
    assert_eq!(result["status"], "completed", "{result}");
    let tenant = result["tenant_id"].as_str().unwrap().to_owned();
    for (step, body) in [
        ("suspend", Some(json!({"reason": "unpaid"}))),
        ("reactivate", None),
    ] {
        let (status, r) = p
            .app
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{tenant}/{step}"),
                Some(&k),
                body,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{step}: {r}");
    }
    let (status, opened) = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/support-sessions"),
            Some(&k),
            Some(json!({"reason": "help them invite"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{opened}");
    let token = opened["token"].as_str().unwrap().to_owned();
    let (status, invited) = p
        .app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&token),
            Some(
                json!({"first_name": "Nia", "last_name": "New", "email": "nia@timely.example",
                        "role": "Technician"}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invited}");
    let (status, _) = p
        .app
        .call(Method::POST, "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);

    let (status, page) = p
        .app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/timeline?limit=200"),
            Some(&k),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    let seq: Vec<(String, String)> = items
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_owned(),
                e["what"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let at = |source: &str, what: &str| {
        seq.iter()
            .position(|(s, w)| s == source && w == what)
            .unwrap_or_else(|| panic!("no {source} {what} in {seq:?}"))
    };
    // Newest first: the support session's end, the invitation it made (in the tenant's log),
    // its start, the reactivation, the suspension (in the management tenant's log too), the
    // provisioning. (What one transaction wrote shares its time: events first.)
    let order = [
        at("event", "support_session.ended"),
        at("audit", "invite"),
        at("event", "support_session.started"),
        at("event", "tenant.reactivated"),
        at("event", "tenant.suspended"),
        at("event", "tenant.provisioned"),
    ];
    assert!(at("platform", "suspend") > at("event", "tenant.reactivated"));
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "{order:?} in {seq:?}"
    );
    // The invitation names both identities; the platform's copy of it is there too.
    let invite = &items[at("audit", "invite")];
    assert!(
        invite["who"]
            .as_str()
            .unwrap()
            .starts_with(&format!("support:{}", p.mgmt.admin_email)),
        "{invite}"
    );
    at("platform", "invite");
    // One source at a time; a bad one is a 422 naming `kind`.
    let (_, events) = p
        .app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/timeline?kind=event"),
            Some(&k),
            None,
        )
        .await;
    assert!(
        events["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["source"] == "event"),
        "{events}"
    );
    let r = p
        .app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/timeline?kind=gossip"),
            Some(&k),
            None,
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    // A customer tenant's admin cannot read another tenant's timeline.
    let other = p.app.tenant("Other").await;
    let r = p
        .app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{tenant}/timeline"),
            Some(&other.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");

    // The tenant page: its people, its run, its timeline.
    let signed_in = super::console::sign_in(&p.app, &p.mgmt, &p.mgmt.admin_password).await;
    let session = super::console::cookie(&signed_in);
    let html = super::console::text(
        &p.app,
        &format!("/console/tenants/{tenant}"),
        Some(&session),
    )
    .await;
    for expected in [
        "nia@timely.example",
        "tenant-creation-",
        "end support session",
        "help them invite",
    ] {
        assert!(html.contains(expected), "{expected} not on the tenant page");
    }
}
