//! Events and their webhook deliveries: each change writes exactly its documented events, in its
//! transaction; the dispatcher delivers them signed to a real receiver on loopback, which
//! verifies every signature with the Standard Webhooks reference library (Python), not psa's.

use std::time::Duration;

use psa_models::db::PageRequest;
use psa_models::events::{self, Event, EventFilter};
use psa_models::lifecycle;
use psa_models::validate::TagText;
use psa_models::webhooks::{self, AddressPolicy, By, NewEndpoint, Schedule};
use psa_models::{TenantId, provisioning};
use psa_testing::{Received, WebhookReceiver};
use psa_workflows::reconcile;
use psa_workflows::webhooks::{Dispatcher, DispatcherConfig};
use psa_workflows::{Outcome, TrackingState as TrackingStatus};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::{Env, TESTER, require_failpoints, tracking_on};

const LOOPBACK: AddressPolicy = AddressPolicy {
    allow_private: true,
};

fn settings(env: &Env) -> lifecycle::Settings {
    lifecycle::Settings {
        management_tenant_id: env.mgmt,
        customer_tag: TagText::parse("PSA Customer").unwrap(),
        tags: Default::default(),
    }
}

/// An endpoint for `receiver` (all types unless `types`), its secret given to the receiver.
async fn endpoint(env: &Env, receiver: &WebhookReceiver, types: &[&str]) -> Uuid {
    let secret = psa_workflows::webhooks::new_secret();
    assert!(secret.expose_secret().starts_with("whsec_"));
    receiver.set_secrets(&[secret.expose_secret()]);
    let mut tx = env.db.pool.begin().await.unwrap();
    let id = uuid::Uuid::new_v4();
    let e = webhooks::create(
        &mut tx,
        id,
        &NewEndpoint {
            url: receiver.url(),
            description: Some("test receiver".into()),
            event_types: types.iter().map(|t| t.to_string()).collect(),
        },
        LOOPBACK,
        &env.key.seal_for(
            &secret,
            psa_workflows::secret::Sealed::WebhookSecret,
            &id.to_string(),
        ),
        By {
            management_tenant: env.mgmt,
            actor: TESTER,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    e.endpoint_id
}

/// A dispatcher in this process, retrying after `delays`, until the test ends.
fn dispatch(env: &Env, delays: &[u64], disable_after: Duration) {
    let config = DispatcherConfig {
        policy: LOOPBACK,
        attempt_timeout: Duration::from_secs(5),
        schedule: Schedule {
            delays: delays.iter().map(|s| Duration::from_secs(*s)).collect(),
            disable_after,
        },
        poll: Duration::from_millis(200),
        ..DispatcherConfig::new(env.key.clone())
    };
    let dispatcher = Dispatcher::new(env.db.pool.clone(), config).unwrap();
    tokio::spawn(dispatcher.run(std::future::pending()));
}

/// Cancels `tenant` (a deletion in 30 days); returns the deletion's workflow id.
async fn cancel(env: &Env, tenant: TenantId) -> String {
    let wf = format!("deletion-{}", Uuid::new_v4());
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::cancel(
        &mut tx,
        &settings(env),
        tenant,
        "left",
        chrono::Duration::days(30),
        &wf,
        Uuid::new_v4(),
        TESTER,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    wf
}

/// Every event, oldest first, through the events API's model, once every transaction that
/// committed before the call is within the feed's horizon (the feed shows an event only when no
/// older transaction of its database is still in flight: on a loaded machine a moment later).
async fn all_events(env: &Env) -> Vec<Event> {
    let mut tx = env.db.pool.begin().await.unwrap();
    let now: String = sqlx::query_scalar("SELECT pg_current_xact_id()::text")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !sqlx::query_scalar::<_, bool>("SELECT psa_events_horizon() > $1::xid8")
        .bind(&now)
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the events' horizon never passed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut conn = env.db.pool.acquire().await.unwrap();
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let page = events::list(
            &mut conn,
            &EventFilter::default(),
            &PageRequest {
                limit: Some(200),
                cursor,
            },
        )
        .await
        .unwrap();
        out.extend(page.items);
        if !page.has_more {
            return out;
        }
        cursor = page.next_cursor;
    }
}

fn types(events: &[Event], tenant: TenantId) -> Vec<String> {
    events
        .iter()
        .filter(|e| e.tenant_id == Some(tenant.0))
        .map(|e| e.event_type.clone())
        .collect()
}

/// Waits until the receiver has answered 200 to every event of `expected` (ids); returns the
/// requests, each of which must have verified.
async fn delivered(receiver: &WebhookReceiver, expected: &[Uuid]) -> Vec<Received> {
    let ids: Vec<String> = expected.iter().map(Uuid::to_string).collect();
    let got = receiver
        .wait_until(Duration::from_secs(60), |r| {
            ids.iter()
                .all(|id| r.iter().any(|x| &x.id == id && x.status == 200))
        })
        .await;
    for id in &ids {
        assert!(
            got.iter().any(|x| &x.id == id && x.status == 200),
            "event {id} was not delivered: {got:?}"
        );
    }
    for r in &got {
        assert!(r.verified, "a delivery did not verify: {r:?}");
    }
    got
}

#[tokio::test]
async fn provisioning_and_the_lifecycle_produce_exactly_their_events_delivered_signed() {
    let env = Env::start().await;
    let receiver = WebhookReceiver::start().await;
    endpoint(&env, &receiver, &[]).await;
    dispatch(&env, &[1], Duration::from_secs(3600));

    let result = env.run(env.input("Evented")).await;
    assert_eq!(result.status, Outcome::Completed, "{result:?}");
    let tenant = result.tenant_id.unwrap();
    let s = settings(&env);
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::suspend(&mut tx, &s, tenant, "unpaid invoice", TESTER)
        .await
        .unwrap();
    lifecycle::reactivate(&mut tx, &s, tenant, TESTER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    cancel(&env, tenant).await;
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::restore(&mut tx, &s, tenant, TESTER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let deletion = cancel(&env, tenant).await;
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::delete(&mut tx, Some(&s), &deletion, Some("test"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Deleted again (a retried activity): no second event.
    let mut tx = env.db.pool.begin().await.unwrap();
    assert!(matches!(
        lifecycle::delete(&mut tx, Some(&s), &deletion, Some("test"))
            .await
            .unwrap(),
        lifecycle::Deleted::AlreadyDeleted
    ));
    tx.commit().await.unwrap();

    let events = all_events(&env).await;
    assert_eq!(
        types(&events, tenant),
        [
            "tenant.provisioned",
            "customer.tracked",
            "tenant.suspended",
            "tenant.reactivated",
            "tenant.canceled",
            "tenant.restored",
            "tenant.canceled",
            "tenant.deleted"
        ]
    );
    let mine: Vec<&Event> = events
        .iter()
        .filter(|e| e.tenant_id == Some(tenant.0))
        .collect();
    // The payloads are the API's resources.
    assert_eq!(mine[0].data["status"], "completed");
    assert_eq!(mine[0].data["tenant_id"], tenant.to_string());
    assert_eq!(mine[0].data["workflow_id"], result.workflow_id);
    assert_eq!(mine[1].data["customer_tracking"], "completed");
    assert!(mine[1].data["customer_company_id"].is_string());
    assert_eq!(mine[2].data["tenant"]["status"], "suspended");
    assert_eq!(mine[2].data["status_before"], "active");
    assert_eq!(mine[2].data["tenant"]["status_reason"], "unpaid invoice");
    assert_eq!(mine[3].data["tenant"]["status"], "active");
    assert_eq!(mine[4].data["tenant"]["status"], "canceled");
    assert!(mine[4].data["tenant"]["deletion"]["delete_after"].is_string());
    assert_eq!(mine[5].data["tenant"]["status"], "active");
    assert_eq!(mine[7].data["tenant_id"], tenant.to_string());
    assert_eq!(mine[7].data["deleted_by"], "test");
    assert!(mine[7].data["rows"]["users"].as_i64().unwrap() >= 1);
    // Time-ordered ids, in the list's order.
    let ids: Vec<Uuid> = mine.iter().map(|e| e.id).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    // Every event reached the receiver, signed (the reference library verified each), with
    // the Standard Webhooks headers and payload shape.
    let got = delivered(&receiver, &ids).await;
    for e in &mine {
        let r = got
            .iter()
            .find(|r| r.id == e.id.to_string())
            .expect("delivered");
        assert_eq!(r.event_type(), e.event_type);
        assert_eq!(r.body["data"], e.data);
        assert!(r.body["timestamp"].is_string());
        assert!(r.headers["webhook-signature"].starts_with("v1,"));
        assert!(r.headers["webhook-timestamp"].parse::<i64>().is_ok());
    }
    // Once each: the receiver answered 200 the first time.
    for id in &ids {
        assert_eq!(
            got.iter().filter(|r| r.id == id.to_string()).count(),
            1,
            "{id} delivered more than once"
        );
    }
}

#[tokio::test]
async fn tracking_failure_and_its_repair_are_events_and_a_rollback_writes_none() {
    require_failpoints();
    let env = Env::start().await;
    fail::cfg("activity::create_customer_company", "return(permanent)").unwrap();
    let result = env.run(env.input("Untracked")).await;
    fail::remove("activity::create_customer_company");
    assert_eq!(result.customer_tracking.status, TrackingStatus::Failed);
    let tenant = result.tenant_id.unwrap();
    assert_eq!(
        types(&all_events(&env).await, tenant),
        ["tenant.provisioned", "customer.tracking_failed"]
    );
    let failed = all_events(&env).await;
    assert!(
        failed[1].data["error"]
            .as_str()
            .unwrap()
            .contains("create_customer_company")
    );

    let tracking = tracking_on(env.mgmt);
    // A dry run writes no event; the repair writes one; a second reconcile none.
    reconcile::reconcile(&env.db.pool, &tracking, &Default::default(), true)
        .await
        .unwrap();
    for _ in 0..2 {
        reconcile::reconcile(&env.db.pool, &tracking, &Default::default(), false)
            .await
            .unwrap();
    }
    let events = all_events(&env).await;
    assert_eq!(
        types(&events, tenant),
        [
            "tenant.provisioned",
            "customer.tracking_failed",
            "customer.repaired"
        ]
    );
    let repaired = events.last().unwrap();
    assert_eq!(repaired.data["customer"]["tracking"], "tracked");
    assert!(repaired.data["customer"]["customer_company_id"].is_string());
    assert_eq!(
        repaired.data["repaired"],
        serde_json::json!(["company", "contact", "tag"])
    );
    assert_eq!(repaired.data["name"], "Untracked");

    // A run that rolls back: its tenant never existed, so no tenant event but the failure.
    fail::cfg("activity::create_admin_user", "return(permanent)").unwrap();
    let failed = env.run(env.input("Doomed")).await;
    fail::remove("activity::create_admin_user");
    assert_eq!(failed.status, Outcome::RolledBack, "{failed:?}");
    let events = all_events(&env).await;
    let of_run: Vec<&Event> = events
        .iter()
        .filter(|e| e.data["workflow_id"] == failed.workflow_id)
        .collect();
    assert_eq!(of_run.len(), 1, "{of_run:?}");
    assert_eq!(of_run[0].event_type, "tenant.provisioning_failed");
    assert_eq!(of_run[0].data["status"], "rolled_back");
    assert!(
        of_run[0].data["error"]
            .as_str()
            .unwrap()
            .contains("create_admin_user")
    );

    // A change whose transaction rolls back leaves no event; a run finished twice, one.
    let before = all_events(&env).await.len();
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::suspend(&mut tx, &settings(&env), tenant, "never", TESTER)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let mut conn = env.db.pool.acquire().await.unwrap();
    assert!(
        !provisioning::finish(
            &mut conn,
            &result.workflow_id,
            provisioning::RunStatus::Completed,
            TrackingStatus::Completed,
            None
        )
        .await
        .unwrap()
    );
    assert_eq!(all_events(&env).await.len(), before);
}

#[tokio::test]
async fn a_receiver_that_fails_twice_gets_the_event_on_the_third_attempt() {
    let env = Env::start().await;
    let receiver = WebhookReceiver::start().await;
    receiver.fail_first(2);
    let endpoint = endpoint(&env, &receiver, &["tenant.suspended"]).await;
    dispatch(&env, &[1, 1, 1], Duration::from_secs(3600));
    let tenant = env.run(env.input("Flaky")).await.tenant_id.unwrap();
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::suspend(&mut tx, &settings(&env), tenant, "late", TESTER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let event = all_events(&env)
        .await
        .into_iter()
        .find(|e| e.event_type == "tenant.suspended")
        .unwrap();
    let got = delivered(&receiver, &[event.id]).await;
    // Only the type the endpoint wants; three attempts, the third answered 200.
    assert!(got.iter().all(|r| r.event_type() == "tenant.suspended"));
    assert_eq!(
        got.iter()
            .map(|r| (r.attempt, r.status))
            .collect::<Vec<_>>(),
        [(1, 500), (2, 500), (3, 200)]
    );
    // Every attempt is recorded: status, latency, error, a short excerpt of the response.
    let mut conn = env.db.pool.acquire().await.unwrap();
    let page = webhooks::deliveries(&mut conn, endpoint, None, &PageRequest::default())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    // The receiver answers before the dispatcher records the answer: wait for the record.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let d = loop {
        let d = webhooks::delivery(&mut conn, endpoint, page.items[0].delivery_id)
            .await
            .unwrap();
        if d.delivery.status != webhooks::DeliveryStatus::Pending
            || std::time::Instant::now() > deadline
        {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(d.delivery.status, webhooks::DeliveryStatus::Delivered);
    assert_eq!(d.delivery.attempts, 3);
    assert_eq!(
        d.attempt_log
            .iter()
            .map(|a| (a.response_status, a.error.clone()))
            .collect::<Vec<_>>(),
        [
            (Some(500), Some("HTTP 500".to_owned())),
            (Some(500), Some("HTTP 500".to_owned())),
            (Some(200), None)
        ]
    );
    // The receiver's 1,300-byte answer is kept as 512 characters at most.
    assert_eq!(
        d.attempt_log[0].response_excerpt.as_deref().unwrap().len(),
        512
    );
    assert!(
        d.attempt_log
            .windows(2)
            .all(|w| w[0].attempted_at < w[1].attempted_at)
    );

    // A replay sends it again, under the same webhook-id.
    let mut tx = env.db.pool.begin().await.unwrap();
    webhooks::retry(
        &mut tx,
        endpoint,
        d.delivery.delivery_id,
        By {
            management_tenant: env.mgmt,
            actor: TESTER,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let got = receiver
        .wait_until(Duration::from_secs(30), |r| r.len() == 4)
        .await;
    assert_eq!(got.len(), 4);
    assert_eq!(got[3].id, event.id.to_string());
    assert!(got[3].verified);
}

#[tokio::test]
async fn an_endpoint_failing_too_long_is_disabled_and_an_event_says_so() {
    let env = Env::start().await;
    let broken = WebhookReceiver::start().await;
    broken.fail_first(1000);
    let watcher = WebhookReceiver::start().await;
    let broken_id = endpoint(&env, &broken, &["tenant.suspended", "tenant.reactivated"]).await;
    endpoint(&env, &watcher, &["webhook_endpoint.disabled"]).await;
    // No retries; an endpoint failing for a second is disabled.
    dispatch(&env, &[], Duration::from_secs(1));
    let tenant = env.run(env.input("Broken Hook")).await.tenant_id.unwrap();
    let s = settings(&env);
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::suspend(&mut tx, &s, tenant, "x", TESTER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    broken
        .wait_until(Duration::from_secs(30), |r| !r.is_empty())
        .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::reactivate(&mut tx, &s, tenant, TESTER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let got = watcher
        .wait_until(Duration::from_secs(30), |r| !r.is_empty())
        .await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].verified);
    assert_eq!(got[0].event_type(), "webhook_endpoint.disabled");
    assert_eq!(got[0].body["data"]["endpoint_id"], broken_id.to_string());
    assert_eq!(got[0].body["data"]["enabled"], false);
    let mut conn = env.db.pool.acquire().await.unwrap();
    let e = webhooks::get(&mut conn, broken_id).await.unwrap();
    assert!(!e.enabled);
    assert!(
        e.disabled_reason
            .as_deref()
            .unwrap()
            .starts_with("every attempt since")
    );
    // Its second delivery failed for good (no retries configured).
    let failed = webhooks::deliveries(
        &mut conn,
        broken_id,
        Some(webhooks::DeliveryStatus::Failed),
        &PageRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(failed.items.len(), 2);
    // Disabled, it is sent nothing, and nothing is queued for it.
    let before = broken.received().len();
    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::suspend(&mut tx, &s, tenant, "again", TESTER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(broken.received().len(), before);
    let pending = webhooks::deliveries(
        &mut conn,
        broken_id,
        Some(webhooks::DeliveryStatus::Pending),
        &PageRequest::default(),
    )
    .await
    .unwrap();
    assert!(pending.items.is_empty());
}

#[tokio::test]
async fn deliveries_refuse_private_addresses_unless_allowed() {
    let env = Env::start().await;
    let receiver = WebhookReceiver::start().await;
    // Refused when the endpoint is made...
    let mut tx = env.db.pool.begin().await.unwrap();
    let e = webhooks::create(
        &mut tx,
        uuid::Uuid::new_v4(),
        &NewEndpoint {
            url: receiver.url(),
            description: None,
            event_types: vec![],
        },
        AddressPolicy::default(),
        "sealed",
        By {
            management_tenant: env.mgmt,
            actor: TESTER,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.field(), Some("url"));
    drop(tx);
    // ...and when it is delivered to (a name that resolves to loopback, or an endpoint made
    // while private addresses were allowed): the attempt fails without a connection.
    let id = endpoint(&env, &receiver, &[]).await;
    let mut tx = env.db.pool.begin().await.unwrap();
    sqlx::query("UPDATE webhook_endpoints SET url = $2 WHERE endpoint_id = $1")
        .bind(id)
        .bind(format!("http://localhost:{}/hooks", receiver.port))
        .execute(&mut *tx)
        .await
        .unwrap();
    let d = webhooks::send_test(
        &mut tx,
        id,
        By {
            management_tenant: env.mgmt,
            actor: TESTER,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let config = DispatcherConfig {
        policy: AddressPolicy::default(),
        schedule: Schedule {
            delays: vec![],
            disable_after: Duration::from_secs(3600),
        },
        ..DispatcherConfig::new(env.key.clone())
    };
    let dispatcher = Dispatcher::new(env.db.pool.clone(), config).unwrap();
    assert_eq!(dispatcher.dispatch_once().await.unwrap(), 1);
    let mut conn = env.db.pool.acquire().await.unwrap();
    let d = webhooks::delivery(&mut conn, id, d.delivery.delivery_id)
        .await
        .unwrap();
    assert_eq!(d.delivery.status, webhooks::DeliveryStatus::Failed);
    let error = d.attempt_log[0].error.as_deref().unwrap();
    assert!(error.contains("private, loopback or link-local"), "{error}");
    assert!(receiver.received().is_empty());
}
