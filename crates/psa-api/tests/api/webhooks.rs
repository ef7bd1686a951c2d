//! The events API and the webhook endpoints over HTTP: management admins manage endpoints (the
//! secret shown once, never stored or audited in plain text), others are refused; the events
//! API pages through 1,000 events without gap or duplicate, even when a transaction that began
//! early commits its event late.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::lifecycle::platform;
use super::*;

#[tokio::test]
async fn management_admins_manage_endpoints_and_everything_is_audited() {
    let (app, mgmt, acme) = platform().await;
    let m = Some(mgmt.key.as_str());
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/webhook-endpoints",
            m,
            Some(json!({"url": "https://hooks.billing.example/psa", "description": "billing",
                        "event_types": ["tenant.suspended", "tenant.canceled", "tenant.suspended"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    assert_eq!(
        created["event_types"],
        json!(["tenant.suspended", "tenant.canceled"])
    );
    assert_eq!(created["enabled"], true);
    let id = created["endpoint_id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/webhook-endpoints/{id}");

    // The secret is never shown again, and not stored in plain text.
    let (_, shown) = app.call(Method::GET, &path, m, None).await;
    let (_, listed) = app
        .call(Method::GET, "/api/v1/webhook-endpoints", m, None)
        .await;
    assert_eq!(listed["items"][0]["endpoint_id"], id.as_str());
    for body in [&shown, &listed] {
        let text = body.to_string();
        assert!(
            !text.contains("whsec_") && !text.contains("secret_sealed"),
            "{text}"
        );
    }
    let stored: String = sqlx::query_scalar(
        "SELECT secret_sealed FROM webhook_endpoints WHERE endpoint_id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(!stored.contains(&secret[6..]));

    // Bad input names the problem and writes nothing.
    for (body, field) in [
        (json!({"url": "ftp://hooks.example/x"}), "url"),
        (json!({"url": "https://user:pw@hooks.example/x"}), "url"),
        (json!({"url": "not a url"}), "url"),
        (
            json!({"url": "https://hooks.example/x", "event_types": ["tenant.exploded"]}),
            "event_types",
        ),
    ] {
        let r = app
            .call(Method::POST, "/api/v1/webhook-endpoints", m, Some(body))
            .await;
        assert_eq!(r.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", r.1);
        assert!(r.1["error"]["fields"][field].is_string(), "{}", r.1);
    }
    assert_eq!(app.count("webhook_endpoints").await, 1);

    // Disable, enable, rotate.
    let (status, off) = app
        .call(Method::PATCH, &path, m, Some(json!({"enabled": false})))
        .await;
    assert_eq!(status, StatusCode::OK, "{off}");
    assert_eq!(off["enabled"], false);
    assert_eq!(off["disabled_reason"], "disabled by an administrator");
    let (_, on) = app
        .call(
            Method::PATCH,
            &path,
            m,
            Some(json!({"enabled": true, "event_types": []})),
        )
        .await;
    assert_eq!(
        (on["enabled"].clone(), on["disabled_reason"].clone()),
        (json!(true), json!(null))
    );
    assert_eq!(on["event_types"], json!([]));
    let (status, rotated) = app
        .call(Method::POST, &format!("{path}/rotate-secret"), m, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    let new_secret = rotated["secret"].as_str().unwrap();
    assert!(new_secret.starts_with("whsec_") && new_secret != secret);
    assert!(rotated["previous_secret_until"].is_string());

    // A test delivery, its record, a retry.
    let (status, test) = app
        .call(Method::POST, &format!("{path}/test"), m, None)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{test}");
    assert_eq!(test["event_type"], "webhook_endpoint.test");
    assert_eq!(test["status"], "pending");
    let delivery = test["delivery_id"].as_str().unwrap().to_owned();
    let (_, deliveries) = app
        .call(
            Method::GET,
            &format!("{path}/deliveries?status=pending"),
            m,
            None,
        )
        .await;
    assert_eq!(deliveries["items"][0]["delivery_id"], delivery.as_str());
    let (_, none) = app
        .call(
            Method::GET,
            &format!("{path}/deliveries?status=failed"),
            m,
            None,
        )
        .await;
    assert_eq!(none["items"], json!([]));
    let r = app
        .call(
            Method::GET,
            &format!("{path}/deliveries?status=lost"),
            m,
            None,
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let (status, retried) = app
        .call(
            Method::POST,
            &format!("{path}/deliveries/{delivery}/retry"),
            m,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{retried}");
    assert_eq!(retried["attempt_log"], json!([]));
    let r = app
        .call(
            Method::POST,
            &format!("{path}/deliveries/{}/retry", uuid::Uuid::new_v4()),
            m,
            None,
        )
        .await;
    assert_eq!(r.0, StatusCode::NOT_FOUND);

    // Outside the management tenant: refused, for endpoints and events alike.
    let a = Some(acme.key.as_str());
    for (method, p) in [
        (Method::GET, "/api/v1/webhook-endpoints".to_owned()),
        (Method::GET, path.clone()),
        (Method::DELETE, path.clone()),
        (Method::GET, "/api/v1/events".to_owned()),
    ] {
        let r = app.call(method, &p, a, None).await;
        assert_eq!(r.0, StatusCode::FORBIDDEN, "{p}: {}", r.1);
    }
    // Inside it, without the webhook permission: refused too.
    let tech = app.user_with_role(mgmt.tenant, "Technician").await;
    let r = app
        .call(Method::GET, "/api/v1/webhook-endpoints", Some(&tech), None)
        .await;
    assert_eq!(r.0, StatusCode::FORBIDDEN, "{}", r.1);

    let (status, _) = app.call(Method::DELETE, &path, m, None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(Method::GET, &path, m, None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(app.count("webhook_deliveries").await, 0);

    // Every change is in the management tenant's audit log, by its caller, without a secret.
    let audited: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, actor, details::text FROM audit_log \
         WHERE tenant = $1 AND entity_type = 'webhook_endpoint' ORDER BY created_at, action",
    )
    .bind(mgmt.tenant)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audited.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(
        actions,
        [
            "create",
            "update",
            "update",
            "rotate_secret",
            "test",
            "retry_delivery",
            "delete"
        ]
    );
    for (_, actor, details) in &audited {
        // Called with the admin's API key: recorded as that key, naming its user.
        assert!(
            actor.starts_with("api_key:") && actor.ends_with(&format!("/{}", mgmt.admin)),
            "{actor}"
        );
        assert!(!details.contains("whsec_"), "{details}");
    }
}

#[tokio::test]
async fn the_events_api_pages_through_1000_events_without_gap_or_duplicate() {
    let (app, mgmt, _) = platform().await;
    let m = Some(mgmt.key.as_str());
    let write = |from: usize, to: usize| {
        let pool = app.db.pool.clone();
        async move {
            // Four writers at once, a transaction per event: commits interleave.
            let mut tasks = Vec::new();
            for w in 0..4 {
                let pool = pool.clone();
                tasks.push(tokio::spawn(async move {
                    for n in (from + w..to).step_by(4) {
                        let mut tx = pool.begin().await.unwrap();
                        psa_models::events::record(
                            &mut tx,
                            psa_models::events::EventType::TenantSuspended,
                            None,
                            json!({"n": n}),
                            None,
                        )
                        .await
                        .unwrap();
                        tx.commit().await.unwrap();
                    }
                }));
            }
            for t in tasks {
                t.await.unwrap();
            }
        }
    };
    let page_on = |after: Option<String>| async {
        let mut seen = Vec::new();
        let mut after = after;
        loop {
            let q = match &after {
                Some(c) => format!("/api/v1/events?type=tenant.suspended&limit=37&after={c}"),
                None => "/api/v1/events?type=tenant.suspended&limit=37".to_owned(),
            };
            let (status, page) = app.call(Method::GET, &q, m, None).await;
            assert_eq!(status, StatusCode::OK, "{page}");
            for e in page["items"].as_array().unwrap() {
                seen.push(e["data"]["n"].as_u64().unwrap() as usize);
            }
            // The cursor comes on the last page too: where to go on from later.
            after = Some(page["next_cursor"].as_str().unwrap().to_owned());
            if page["has_more"] == false {
                return (seen, after);
            }
        }
    };

    write(0, 300).await;
    // A transaction that began early commits its event late: until it ends, events after it
    // are held back, so the consumer's cursor never passes it.
    let mut late = app.db.pool.begin().await.unwrap();
    psa_models::events::record(
        &mut late,
        psa_models::events::EventType::TenantSuspended,
        None,
        json!({"n": 999}),
        None,
    )
    .await
    .unwrap();
    write(300, 600).await;
    let (first, cursor) = page_on(None).await;
    assert_eq!(
        first.len(),
        300,
        "only the events before the open transaction"
    );
    late.commit().await.unwrap();
    write(600, 999).await;
    let (rest, _) = page_on(cursor).await;
    let mut all: Vec<usize> = first.iter().chain(&rest).copied().collect();
    assert_eq!(all.len(), 1000, "no duplicate");
    all.sort_unstable();
    assert_eq!(all, (0..1000).collect::<Vec<_>>(), "no gap");
    assert!(rest.contains(&999));

    // Filters, and bad input.
    let (_, typed) = app
        .call(Method::GET, "/api/v1/events?type=tenant.canceled", m, None)
        .await;
    assert_eq!(typed["items"], json!([]));
    let r = app
        .call(Method::GET, "/api/v1/events?type=tenant.exploded", m, None)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(r.1["error"]["fields"]["type"].is_string(), "{}", r.1);
    let r = app
        .call(Method::GET, "/api/v1/events?after=garbage", m, None)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let (_, one) = app
        .call(
            Method::GET,
            "/api/v1/events?limit=1&type=tenant.suspended",
            m,
            None,
        )
        .await;
    let id = one["items"][0]["id"].as_str().unwrap();
    let (status, event) = app
        .call(Method::GET, &format!("/api/v1/events/{id}"), m, None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(event["type"], "tenant.suspended");
    assert!(event.get("position").is_none());
}
