//! Trials and the billing system's word, end to end with Temporal and a worker: a trial of a few
//! seconds reminds its administrators and then suspends the tenant; a converted one is left
//! alone; an extension lifts the suspension; Stripe's signed webhook moves a subscription
//! through past due, the grace, the suspension and the payment, in the order of its events,
//! once each.

use std::time::Duration;

use hmac::{Hmac, Mac};
use psa_models::TenantId;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;

use super::provisioning::{Provisioned, provisioned_with};
use super::*;

const SECRET: &str = "whsec_test_billing_secret";

/// Short deadlines: a reminder 3 s before a trial ends, 3 s of grace for a payment.
fn short() -> psa_workflows::deadlines::DeadlineSettings {
    psa_workflows::deadlines::DeadlineSettings {
        trial_reminder: chrono::Duration::seconds(3),
        past_due_grace: chrono::Duration::seconds(3),
    }
}

/// Stripe's signature of `body` at `t`: hex HMAC-SHA256 of `"{t}.{body}"` with the secret.
fn stripe_signature(secret: &str, t: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The signing above agrees with an independent implementation: the expected value was
/// computed with Python's standard library,
/// `hmac.new(b'whsec_test_vector', b'1700000000.{"id":"evt_vector","object":"event"}',
/// hashlib.sha256).hexdigest()`.
#[test]
fn the_test_signing_matches_an_independent_vector() {
    assert_eq!(
        stripe_signature(
            "whsec_test_vector",
            1_700_000_000,
            br#"{"id":"evt_vector","object":"event"}"#
        ),
        "fc8dcc87b3890eda47a8246da1dff9513a0efa7198ae3cff1692f99771cb8e6a"
    );
}

async fn deliver(p: &Provisioned, event: &Value, signature: Option<String>) -> (StatusCode, Value) {
    let body = serde_json::to_vec(event).unwrap();
    let mut req = p
        .app
        .http
        .post(format!("{}/api/v1/billing/stripe/webhook", p.app.base))
        .header("content-type", "application/json")
        .body(body.clone());
    let t = chrono::Utc::now().timestamp();
    let signature =
        signature.unwrap_or_else(|| format!("t={t},v1={}", stripe_signature(SECRET, t, &body)));
    req = req.header("Stripe-Signature", signature);
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn event(id: &str, kind: &str, created: i64, object: Value) -> Value {
    json!({"id": id, "object": "event", "type": kind, "created": created, "livemode": false,
           "api_version": "2025-03-31.basil", "data": {"object": object}})
}

fn subscription(
    id: &str,
    tenant: Option<TenantId>,
    status: &str,
    price: &str,
    seats: i64,
) -> Value {
    let mut metadata = json!({});
    if let Some(t) = tenant {
        metadata["tenant_id"] = json!(t.to_string());
    }
    json!({"id": id, "object": "subscription", "customer": "cus_acme", "status": status,
           "metadata": metadata,
           "items": {"object": "list", "data": [{"id": "si_1", "quantity": seats,
               "price": {"id": price, "object": "price"},
               "current_period_end": 1_900_000_000}]}})
}

fn invoice(id: &str, subscription: &str) -> Value {
    json!({"id": id, "object": "invoice", "customer": "cus_acme",
           "parent": {"type": "subscription_details",
                      "subscription_details": {"subscription": subscription, "metadata": {}}}})
}

async fn tenant_status(p: &Provisioned, tenant: TenantId) -> (String, Option<String>) {
    sqlx::query_as("SELECT status, status_reason FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&p.app.db.pool)
        .await
        .unwrap()
}

async fn sub_status(p: &Provisioned, tenant: TenantId) -> String {
    sqlx::query_scalar("SELECT status FROM tenant_subscriptions WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&p.app.db.pool)
        .await
        .unwrap()
}

async fn events_of(p: &Provisioned, kind: &str, tenant: TenantId) -> Vec<Value> {
    sqlx::query_scalar(
        "SELECT data FROM events WHERE event_type = $1 AND tenant_id = $2 ORDER BY event_id",
    )
    .bind(kind)
    .bind(tenant)
    .fetch_all(&p.app.db.pool)
    .await
    .unwrap()
}

/// Waits up to `secs` for `done` to hold, failing the test with `what` otherwise.
async fn eventually<F: std::future::Future<Output = bool>>(
    secs: u64,
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    while !done().await {
        assert!(
            std::time::Instant::now() < deadline,
            "{what} after {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn count(p: &Provisioned, sql: &str, tenant: TenantId) -> i64 {
    sqlx::query_scalar(sql)
        .bind(tenant)
        .fetch_one(&p.app.db.pool)
        .await
        .unwrap()
}

/// Waits up to `secs` for the tenant to have `status`.
async fn wait_for_status(p: &Provisioned, tenant: TenantId, status: &str, secs: u64) {
    eventually(secs, &format!("the tenant is not {status}"), || async {
        tenant_status(p, tenant).await.0 == status
    })
    .await;
}

async fn workflows(p: &Provisioned) -> psa_workflows::client::TenantWorkflows {
    psa_workflows::client::TenantWorkflows {
        client: psa_workflows::client::connect(&p.temporal.address, "default")
            .await
            .unwrap(),
        task_queue: p.queue.clone(),
        pool: p.app.db.pool.clone(),
    }
}

/// A customer tenant on `plan`, as provisioning starts it.
async fn on_plan(p: &Provisioned, name: &str, plan: &str) -> TenantFixture {
    let t = p.app.tenant(name).await;
    let mut conn = p.app.db.pool.acquire().await.unwrap();
    psa_models::plans::start(&mut conn, t.tenant, plan, None)
        .await
        .unwrap();
    t
}

/// The trial ends `secs` from now (a trial of days, made short).
async fn trial_ends_in(p: &Provisioned, tenant: TenantId, secs: i64) {
    sqlx::query(
        "UPDATE tenant_subscriptions SET trial_ends_at = now() + make_interval(secs => $2), \
           updated_at = now() - interval '1 minute' WHERE tenant = $1",
    )
    .bind(tenant)
    .bind(secs as f64)
    .execute(&p.app.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn a_trial_reminds_then_suspends_unless_converted_and_an_extension_lifts_it() {
    let p = provisioned_with(short(), Some(SECRET)).await;
    let k = Some(p.mgmt.key.as_str());
    let (status, plan) = p
        .app
        .call(
            Method::POST,
            "/api/v1/plans",
            k,
            Some(json!({"code": "trial", "name": "Trial", "trial_days": 14})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    let acme = on_plan(&p, "Acme", "trial").await;
    let globex = on_plan(&p, "Globex", "trial").await;
    assert_eq!(sub_status(&p, acme.tenant).await, "trialing");
    trial_ends_in(&p, acme.tenant, 6).await;
    trial_ends_in(&p, globex.tenant, 6).await;

    // The worker's sweep finds the trials without a watcher and starts one each.
    let w = workflows(&p).await;
    let started = psa_workflows::deadlines::start_pending(&w, chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(started, 2);
    // Once their first steps have run, the watchers are noted: nothing more is started.
    eventually(20, "the watchers never noted their deadlines", || async {
        psa_workflows::deadlines::start_pending(&w, chrono::Utc::now())
            .await
            .unwrap()
            == 0
    })
    .await;

    // Globex converts before its end: put on the standard plan, which has no trial.
    let (status, sub) = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/subscription", globex.tenant),
            k,
            Some(json!({"plan": "standard"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    assert_eq!(sub["status"], "active");

    // Acme's administrators are reminded 3 s before the end, then it is suspended.
    let mails = p.smtp.wait_for(1, Duration::from_secs(20)).await;
    assert!(
        mails
            .iter()
            .any(|m| m.contains(&acme.admin_email) && m.contains("trial ends")),
        "{mails:?}"
    );
    assert_eq!(
        events_of(&p, "tenant.trial_ending", acme.tenant)
            .await
            .len(),
        1
    );
    wait_for_status(&p, acme.tenant, "suspended", 30).await;
    assert_eq!(
        tenant_status(&p, acme.tenant).await.1.as_deref(),
        Some("trial ended")
    );
    let ended = events_of(&p, "tenant.trial_ended", acme.tenant).await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["suspended"], true);
    assert_eq!(
        events_of(&p, "tenant.suspended", acme.tenant).await.len(),
        1
    );
    // Its users are refused now.
    let (status, _) = p
        .app
        .call(Method::GET, "/api/v1/companies", Some(&acme.key), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Globex, converted, was neither reminded past its conversion nor suspended.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(tenant_status(&p, globex.tenant).await.0, "active");
    assert!(
        events_of(&p, "tenant.trial_ended", globex.tenant)
            .await
            .is_empty()
    );
    let globex_watch = w
        .describe(&psa_models::deadlines::Watch::Trial.workflow_id(globex.tenant))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(format!("{:?}", globex_watch.0), "Completed");

    // Reactivating a tenant whose trial ended unconverted is refused, nothing changes.
    let r = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/reactivate", acme.tenant),
            k,
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "trial_ended");
    assert!(
        r.1["error"]["message"].as_str().unwrap().contains("extend"),
        "{}",
        r.1
    );
    assert_eq!(tenant_status(&p, acme.tenant).await.0, "suspended");

    // Bad extensions are refused with the field named.
    for days in [0, 366] {
        let r = p
            .app
            .call(
                Method::POST,
                &format!("/api/v1/tenants/{}/trial/extend", acme.tenant),
                k,
                Some(json!({"days": days})),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert!(r.1["error"]["fields"]["days"].is_string(), "{}", r.1);
    }
    // Globex has no trial left to extend.
    let r = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/trial/extend", globex.tenant),
            k,
            Some(json!({"days": 7})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "not_trialing");

    // An extension gives Acme its access back and a new end, watched again.
    let (status, x) = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/trial/extend", acme.tenant),
            k,
            Some(json!({"days": 7})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{x}");
    assert_eq!(x["reactivated"], true);
    assert_eq!(x["subscription"]["status"], "trialing");
    let ends: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(x["subscription"]["trial_ends_at"].clone()).unwrap();
    let expected = chrono::Utc::now() + chrono::Duration::days(7);
    assert!((ends - expected).num_seconds().abs() < 60, "{ends}");
    assert_eq!(tenant_status(&p, acme.tenant).await.0, "active");
    assert_eq!(
        events_of(&p, "tenant.trial_extended", acme.tenant)
            .await
            .len(),
        1
    );
    let watch = w
        .describe(&psa_models::deadlines::Watch::Trial.workflow_id(acme.tenant))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(format!("{:?}", watch.0), "Running");
    // Its watcher took the new end in hand (its step noted it).
    eventually(20, "the new end is not watched", || async {
        count(
            &p,
            "SELECT count(*) FROM tenant_subscriptions \
             WHERE tenant = $1 AND trial_watch_for = trial_ends_at",
            acme.tenant,
        )
        .await
            == 1
    })
    .await;
    // Audited in both tenants, with who did it.
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'extend_trial' AND tenant = ANY($1)",
    )
    .bind(vec![acme.tenant.0, p.mgmt.tenant.0])
    .fetch_one(&p.app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 2);
}

#[tokio::test]
async fn stripe_drives_the_subscription_once_in_order_and_only_when_signed() {
    let p = provisioned_with(short(), Some(SECRET)).await;
    let k = Some(p.mgmt.key.as_str());
    let (status, _) = p
        .app
        .call(
            Method::POST,
            "/api/v1/plans",
            k,
            Some(json!({"code": "pro", "name": "Pro", "seat_limit": 50,
                        "billing_price_ids": ["price_pro"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let acme = on_plan(&p, "Acme", "standard").await;
    // Stripe's `created` times: the first events a while ago, the payment failure now (its grace
    // runs from then), later ones after it.
    let now = chrono::Utc::now().timestamp();
    let base = now - 100;

    // Subscribed through Stripe: the plan by its price, the seats by the quantity.
    let created = event(
        "evt_1",
        "customer.subscription.created",
        base,
        subscription("sub_acme", Some(acme.tenant), "active", "price_pro", 12),
    );
    let (status, body) = deliver(&p, &created, None).await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{body}"
    );
    let (status, t) = p
        .app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{}", acme.tenant),
            k,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let s = &t["subscription"];
    assert_eq!(
        (&s["plan"], &s["seats"], &s["status"]),
        (&json!("pro"), &json!(12), &json!("active")),
        "{s}"
    );
    assert_eq!(s["billing_subscription_id"], "sub_acme");
    assert_eq!(s["billing_customer_id"], "cus_acme");
    assert_eq!(
        events_of(&p, "tenant.subscription_changed", acme.tenant)
            .await
            .len(),
        1
    );

    // A replay answers and changes nothing.
    let audit_before = p.app.count("audit_log").await;
    let (status, body) = deliver(&p, &created, None).await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("duplicate"))
    );
    assert_eq!(p.app.count("audit_log").await, audit_before);

    // Bad signatures and timestamps: 400, nothing written, counted.
    let stored = p.app.count("billing_events").await;
    let forged = event(
        "evt_forged",
        "customer.subscription.deleted",
        base + 1,
        subscription("sub_acme", Some(acme.tenant), "canceled", "price_pro", 12),
    );
    let raw = serde_json::to_vec(&forged).unwrap();
    let now = chrono::Utc::now().timestamp();
    for signature in [
        format!("t={now},v1={}", stripe_signature("whsec_wrong", now, &raw)),
        format!(
            "t={},v1={}",
            now - 301,
            stripe_signature(SECRET, now - 301, &raw)
        ),
        "garbage".to_owned(),
        format!("t={now}"),
    ] {
        let (status, body) = deliver(&p, &forged, Some(signature.clone())).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{signature}: {body}");
        assert!(
            body["error"]["fields"]["Stripe-Signature"].is_string(),
            "{body}"
        );
    }
    let unsigned = p
        .app
        .http
        .post(format!("{}/api/v1/billing/stripe/webhook", p.app.base))
        .body(raw.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(unsigned.status(), StatusCode::BAD_REQUEST);
    assert_eq!(p.app.count("billing_events").await, stored);
    assert_eq!(sub_status(&p, acme.tenant).await, "active");
    assert_eq!(tenant_status(&p, acme.tenant).await.0, "active");
    let metrics = p
        .app
        .http
        .get(format!("{}/metrics", p.app.metrics_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"psa_billing_webhook_rejected_total{reason="signature"} 1"#),
        "{metrics}"
    );
    assert!(metrics.contains(r#"psa_billing_webhook_rejected_total{reason="timestamp"} 1"#));

    // A payment fails: past due; after the grace (3 s) the tenant is suspended for payment.
    let (status, body) = deliver(
        &p,
        &event(
            "evt_2",
            "invoice.payment_failed",
            now,
            invoice("in_1", "sub_acme"),
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied")),
        "{body}"
    );
    assert_eq!(sub_status(&p, acme.tenant).await, "past_due");
    // Within the grace, the tenant keeps its access.
    assert_eq!(tenant_status(&p, acme.tenant).await.0, "active");
    wait_for_status(&p, acme.tenant, "suspended", 30).await;
    assert_eq!(
        tenant_status(&p, acme.tenant).await.1.as_deref(),
        Some("payment overdue")
    );

    // A subscription update older than the payment failure, delivered late (Stripe does not
    // promise order): its seats count, its status does not (the failure is newer news).
    let (status, body) = deliver(
        &p,
        &event(
            "evt_late",
            "customer.subscription.updated",
            base + 50,
            subscription("sub_acme", None, "active", "price_pro", 15),
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied"))
    );
    assert_eq!(sub_status(&p, acme.tenant).await, "past_due");
    let seats: Option<i32> =
        sqlx::query_scalar("SELECT seats FROM tenant_subscriptions WHERE tenant = $1")
            .bind(acme.tenant)
            .fetch_one(&p.app.db.pool)
            .await
            .unwrap();
    assert_eq!(seats, Some(15));
    // Older than the last subscription event: stale, nothing changes.
    let (status, body) = deliver(
        &p,
        &event(
            "evt_older",
            "customer.subscription.updated",
            base + 40,
            subscription("sub_acme", None, "active", "price_pro", 3),
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("stale"))
    );
    // Another subscription naming the tenant does not take it over: its cancellation is not
    // the tenant's.
    let (status, body) = deliver(
        &p,
        &event(
            "evt_other",
            "customer.subscription.deleted",
            base + 60,
            subscription("sub_other", Some(acme.tenant), "canceled", "price_pro", 1),
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("unmatched"))
    );
    assert_eq!(sub_status(&p, acme.tenant).await, "past_due");
    assert_eq!(tenant_status(&p, acme.tenant).await.0, "suspended");

    // Paid: active again, and the platform's suspension for payment is lifted.
    let (status, body) = deliver(
        &p,
        &event(
            "evt_3",
            "invoice.paid",
            base + 110,
            invoice("in_1", "sub_acme"),
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied"))
    );
    assert_eq!(sub_status(&p, acme.tenant).await, "active");
    assert_eq!(tenant_status(&p, acme.tenant).await.0, "active");
    assert_eq!(
        events_of(&p, "tenant.reactivated", acme.tenant).await.len(),
        1
    );

    // An operator's own suspension is not lifted by a payment.
    let (status, _) = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", acme.tenant),
            k,
            Some(json!({"reason": "abuse report under review"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    deliver(
        &p,
        &event(
            "evt_4",
            "invoice.payment_failed",
            base + 120,
            invoice("in_2", "sub_acme"),
        ),
        None,
    )
    .await;
    deliver(
        &p,
        &event(
            "evt_5",
            "invoice.paid",
            base + 130,
            invoice("in_2", "sub_acme"),
        ),
        None,
    )
    .await;
    assert_eq!(sub_status(&p, acme.tenant).await, "active");
    assert_eq!(
        tenant_status(&p, acme.tenant).await,
        (
            "suspended".to_owned(),
            Some("abuse report under review".to_owned())
        )
    );

    // A subscription psa cannot match, and a type it does not handle: answered, counted.
    let (status, body) = deliver(
        &p,
        &event(
            "evt_6",
            "customer.subscription.updated",
            base + 140,
            subscription("sub_nobody", None, "active", "price_pro", 1),
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("unmatched"))
    );
    let (status, body) = deliver(
        &p,
        &event(
            "evt_7",
            "charge.succeeded",
            base + 140,
            json!({"id": "ch_1"}),
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("ignored"))
    );

    // Deleted in Stripe: the subscription is canceled and the tenant goes through the cancel.
    let (status, body) = deliver(
        &p,
        &event(
            "evt_8",
            "customer.subscription.deleted",
            base + 150,
            subscription("sub_acme", None, "canceled", "price_pro", 12),
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["outcome"]),
        (StatusCode::OK, &json!("applied"))
    );
    assert_eq!(sub_status(&p, acme.tenant).await, "canceled");
    assert_eq!(tenant_status(&p, acme.tenant).await.0, "canceled");
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenant_deletions WHERE tenant_id = $1")
            .bind(acme.tenant)
            .fetch_one(&p.app.db.pool)
            .await
            .unwrap();
    assert_eq!(pending, 1);
    // The deletion's first step, the export, is done before the worker stops (a worker stopped
    // mid-export holds its transaction open until its runtime goes, which other tests' event
    // paging would see as a transaction still running).
    eventually(60, "the deletion's export never finished", || async {
        count(
            &p,
            "SELECT count(*) FROM tenant_exports WHERE tenant_id = $1 AND status = 'completed'",
            acme.tenant,
        )
        .await
            == 1
    })
    .await;
    let outcomes: Vec<(String, String)> =
        sqlx::query_as("SELECT event_id, outcome FROM billing_events ORDER BY event_id")
            .fetch_all(&p.app.db.pool)
            .await
            .unwrap();
    assert_eq!(
        outcomes,
        [
            ("evt_1", "applied"),
            ("evt_2", "applied"),
            ("evt_3", "applied"),
            ("evt_4", "applied"),
            ("evt_5", "applied"),
            ("evt_6", "unmatched"),
            ("evt_7", "ignored"),
            ("evt_8", "applied"),
            ("evt_late", "applied"),
            ("evt_older", "stale"),
            ("evt_other", "unmatched"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    let metrics = p
        .app
        .http
        .get(format!("{}/metrics", p.app.metrics_base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("psa_billing_unmatched_total 2"),
        "{metrics}"
    );
}
