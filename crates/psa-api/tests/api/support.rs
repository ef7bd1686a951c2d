//! Support sessions: management staff with `tenant:support` act in a tenant as one of its users,
//! with the tenant's consent; every write is audited with both identities in both tenants;
//! credentials stay out of reach; the session ends when ended, at its time, when the operator's
//! own session ends, when the tenant is suspended or turns support access off.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;

async fn session_of(app: &TestApp, t: &TenantFixture) -> String {
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"tenant_id": t.tenant, "email": t.admin_email,
                        "password": t.admin_password})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

async fn open(app: &TestApp, key: &str, tenant: TenantId, body: Value) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &format!("/api/v1/tenants/{tenant}/support-sessions"),
        Some(key),
        Some(body),
    )
    .await
}

/// The token and id of a support session just opened (201).
#[track_caller]
fn opened(r: (StatusCode, Value)) -> (String, String) {
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    (
        r.1["token"].as_str().unwrap().to_owned(),
        r.1["support_session"]["support_session_id"]
            .as_str()
            .unwrap()
            .to_owned(),
    )
}

async fn events_of(app: &TestApp, kind: &str) -> Vec<Value> {
    sqlx::query_scalar("SELECT data FROM events WHERE event_type = $1 ORDER BY event_id")
        .bind(kind)
        .fetch_all(&app.db.pool)
        .await
        .unwrap()
}

async fn end_reason(app: &TestApp, id: &str) -> Option<String> {
    sqlx::query_scalar(
        "SELECT end_reason FROM support_sessions WHERE support_session_id = $1::uuid",
    )
    .bind(id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_support_session_acts_as_the_user_with_both_identities_in_both_tenants() {
    let (app, mgmt, acme) = super::lifecycle::platform().await;
    let operator = session_of(&app, &mgmt).await;
    // An endpoint that wants the support sessions' events.
    let (status, endpoint) = app
        .call(
            Method::POST,
            "/api/v1/webhook-endpoints",
            Some(&mgmt.key),
            Some(json!({"url": "https://hooks.example/psa",
                        "event_types": ["support_session.started", "support_session.ended"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{endpoint}");

    let (status, r) = open(
        &app,
        &operator,
        acme.tenant,
        json!({"reason": "Ticket 4711: invoices look wrong", "minutes": 20}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{r}");
    let token = r["token"].as_str().unwrap().to_owned();
    let id = r["support_session"]["support_session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // As the tenant's first administrator by default, for the length asked.
    assert_eq!(r["support_session"]["user_email"], acme.admin_email);
    assert_eq!(r["support_session"]["operator"], mgmt.admin_email);
    let started =
        chrono::DateTime::parse_from_rfc3339(r["support_session"]["started_at"].as_str().unwrap())
            .unwrap();
    let ends = chrono::DateTime::parse_from_rfc3339(r["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!((ends - started).num_minutes(), 20);

    // A write in the session: audited in the tenant as the operator acting as the user, and
    // copied to the management tenant naming the tenant.
    let (status, company) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            Some(&token),
            Some(json!({"company_name": "Fixed By Support"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{company}");
    let company_id: uuid::Uuid = company["company_id"].as_str().unwrap().parse().unwrap();
    type Row = (
        uuid::Uuid,
        String,
        String,
        String,
        Option<uuid::Uuid>,
        Value,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT tenant, actor, actor_kind, actor_id, actor_user, details FROM audit_log \
         WHERE entity_id = $1 AND action = 'create' ORDER BY tenant = $2",
    )
    .bind(company_id)
    .bind(mgmt.tenant)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 2, "{rows:?}");
    let (in_tenant, in_mgmt) = (&rows[0], &rows[1]);
    assert_eq!(in_tenant.0, acme.tenant.0);
    assert_eq!(in_mgmt.0, mgmt.tenant.0);
    for row in &rows {
        assert_eq!(row.2, "support");
        assert_eq!(row.3, mgmt.admin_email);
        assert_eq!(row.4, Some(acme.admin.0));
        assert_eq!(
            row.1,
            format!("support:{} as user:{}", mgmt.admin_email, acme.admin.0)
        );
        assert_eq!(row.5["support_session"], id.as_str());
    }
    assert_eq!(in_mgmt.5["tenant_id"], acme.tenant.to_string());

    // Credentials are out of reach, whatever the user could do.
    for (method, path, body) in [
        (Method::GET, "/api/v1/auth/sessions", None),
        (Method::POST, "/api/v1/auth/mfa/totp", Some(json!({}))),
        (Method::GET, "/api/v1/api-keys", None),
        (Method::GET, "/api/v1/sso/connection", None),
        (Method::GET, "/api/v1/auth/passkeys", None),
        (
            Method::PATCH,
            "/api/v1/security-policy",
            Some(json!({"support_access": "allowed"})),
        ),
        (Method::GET, "/api/v1/support-sessions", None),
        (Method::GET, "/api/v1/security-policy", None),
        (
            Method::POST,
            "/api/v1/auth/password",
            Some(json!({"current_password": acme.admin_password,
                        "new_password": "another long passphrase"})),
        ),
    ] {
        let r = app.call(method.clone(), path, Some(&token), body).await;
        assert_error(&r, StatusCode::FORBIDDEN, "not_in_support_session");
    }
    // Nor can it open another.
    let r = open(&app, &token, acme.tenant, json!({"reason": "chain"})).await;
    assert_error(&r, StatusCode::FORBIDDEN, "not_in_support_session");

    // The confined role cannot forge a support row, nor its copy into the management tenant:
    // a row that does not match its support session is refused.
    let mut tx = app.db.pool.begin().await.unwrap();
    psa_models::db::enter_tenant(&mut tx, acme.tenant)
        .await
        .unwrap();
    let forged = sqlx::query(
        "INSERT INTO audit_log (tenant, actor, actor_kind, actor_id, actor_user, action, \
                                entity_type, details) \
         VALUES ($1, 'support:someone-else', 'support', 'someone-else@example.com', $2, \
                 'delete', 'company', jsonb_build_object('support_session', $3::uuid))",
    )
    .bind(acme.tenant)
    .bind(acme.admin)
    .bind(uuid::Uuid::parse_str(&id).unwrap())
    .execute(&mut *tx)
    .await;
    assert!(forged.is_err(), "a forged support row was written");
    drop(tx);

    // The tenant's administrators see it, and what it did.
    let (status, own) = app
        .call(
            Method::GET,
            "/api/v1/support-sessions",
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{own}");
    assert_eq!(own["allowed"], true);
    assert_eq!(own["sessions"][0]["support_session_id"], id.as_str());
    assert_eq!(
        own["sessions"][0]["reason"],
        "Ticket 4711: invoices look wrong"
    );
    let actions: Vec<&str> = own["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["create", "start_support_session"], "{own}");

    // The event of its start, with reason, operator, user and tenant.
    let started = events_of(&app, "support_session.started").await;
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["operator"], mgmt.admin_email);
    assert_eq!(started[0]["tenant_id"], acme.tenant.to_string());
    assert_eq!(started[0]["user_email"], acme.admin_email);

    // The operator signs out of their own session: the support session stops at once, and the
    // worker's sweep records why.
    let (status, _) = app
        .call(Method::POST, "/api/v1/auth/logout", Some(&operator), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .call(Method::GET, "/api/v1/companies", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        psa_models::support::close_lapsed(&app.db.pool)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        end_reason(&app, &id).await.as_deref(),
        Some("operator_signed_out")
    );
    let ended = events_of(&app, "support_session.ended").await;
    assert_eq!(ended.len(), 1);
    assert_eq!(ended[0]["end_reason"], "operator_signed_out");
    // Both were handed to the endpoint for delivery.
    let queued: Vec<String> = sqlx::query_scalar(
        "SELECT e.event_type FROM webhook_deliveries d JOIN events e USING (event_id) \
         ORDER BY e.event_id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(queued, ["support_session.started", "support_session.ended"]);
    // Once: a second sweep finds nothing.
    assert_eq!(
        psa_models::support::close_lapsed(&app.db.pool)
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn it_ends_when_ended_at_its_time_when_suspended_and_when_the_tenant_says_no() {
    let (app, mgmt, acme) = super::lifecycle::platform().await;
    let k = mgmt.key.as_str();
    let reason = json!({"reason": "Checking the import"});

    // Ended from inside (sign out), and from the management side.
    let (token, id) = opened(open(&app, k, acme.tenant, reason.clone()).await);
    let (status, _) = app
        .call(Method::POST, "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(end_reason(&app, &id).await.as_deref(), Some("ended"));
    let (status, _) = app
        .call(Method::GET, "/api/v1/companies", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (token, id) = opened(open(&app, k, acme.tenant, reason.clone()).await);
    let (status, ended) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/support-sessions/{id}/end", acme.tenant),
            Some(k),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{ended}");
    assert_eq!(ended["end_reason"], "ended");
    let (status, _) = app
        .call(Method::GET, "/api/v1/companies", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // At its time: the token stops, the sweep records `expired`.
    let r = open(
        &app,
        k,
        acme.tenant,
        json!({"reason": "short", "minutes": 1}),
    )
    .await;
    let token = r.1["token"].as_str().unwrap().to_owned();
    let id = r.1["support_session"]["support_session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    sqlx::query(
        "UPDATE support_sessions SET started_at = now() - interval '2 minutes', \
                ends_at = now() - interval '1 minute' WHERE support_session_id = $1::uuid",
    )
    .bind(&id)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (status, _) = app
        .call(Method::GET, "/api/v1/companies", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    psa_models::support::close_lapsed(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(end_reason(&app, &id).await.as_deref(), Some("expired"));

    // The tenant is suspended: its support sessions end with it.
    let (_, id) = opened(open(&app, k, acme.tenant, reason.clone()).await);
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", acme.tenant),
            Some(k),
            Some(json!({"reason": "unpaid"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        end_reason(&app, &id).await.as_deref(),
        Some("tenant_suspended")
    );
    let r = open(&app, k, acme.tenant, reason.clone()).await;
    assert_error(&r, StatusCode::CONFLICT, "tenant_state");
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/reactivate", acme.tenant),
            Some(k),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // The tenant turns support access off: the open session ends, new ones are refused and
    // nothing is written.
    let (_, id) = opened(open(&app, k, acme.tenant, reason.clone()).await);
    let (status, policy) = app
        .call(
            Method::PATCH,
            "/api/v1/security-policy",
            Some(&acme.key),
            Some(json!({"support_access": "disabled"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{policy}");
    assert_eq!(policy["support_access"], "disabled");
    assert_eq!(policy["mfa_required"], false);
    assert_eq!(
        end_reason(&app, &id).await.as_deref(),
        Some("access_disabled")
    );
    let sessions = app.count("support_sessions").await;
    let audit = app.count("audit_log").await;
    let r = open(&app, k, acme.tenant, reason.clone()).await;
    assert_error(&r, StatusCode::FORBIDDEN, "support_access_disabled");
    assert_eq!(app.count("support_sessions").await, sessions);
    assert_eq!(app.count("audit_log").await, audit);

    // Every start and end was delivered as an event.
    assert_eq!(events_of(&app, "support_session.started").await.len(), 5);
    assert_eq!(events_of(&app, "support_session.ended").await.len(), 5);
}

#[tokio::test]
async fn only_management_staff_with_tenant_support_open_one_and_bad_input_writes_nothing() {
    let (app, mgmt, acme) = super::lifecycle::platform().await;
    let reason = json!({"reason": "help"});
    // A management user without `tenant:support` (a technician), a customer tenant's admin.
    let technician = app.user_with_role(mgmt.tenant, "Technician").await;
    let r = open(&app, &technician, acme.tenant, reason.clone()).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let globex = app.tenant("Globex").await;
    let r = open(&app, &acme.key, globex.tenant, reason.clone()).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{}/support-sessions", globex.tenant),
            Some(&acme.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");

    let k = mgmt.key.as_str();
    for (body, field) in [
        (json!({"reason": "  "}), "reason"),
        (json!({"reason": "x".repeat(501)}), "reason"),
        (json!({"reason": "help", "minutes": 61}), "minutes"),
        (json!({"reason": "help", "minutes": 0}), "minutes"),
        // Another tenant's user is no user of this one.
        (
            json!({"reason": "help", "user_id": globex.admin}),
            "user_id",
        ),
    ] {
        let r = open(&app, k, acme.tenant, body).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert!(r.1["error"]["fields"][field].is_string(), "{}", r.1);
    }
    // Not into the management tenant itself.
    let r = open(&app, k, mgmt.tenant, reason.clone()).await;
    assert_error(&r, StatusCode::CONFLICT, "management_tenant");
    assert_eq!(app.count("support_sessions").await, 0);
    assert!(events_of(&app, "support_session.started").await.is_empty());

    // The one that may: as a named user of the tenant.
    let r = open(
        &app,
        k,
        acme.tenant,
        json!({"reason": "help", "user_id": acme.admin}),
    )
    .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let (status, list) = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{}/support-sessions", acme.tenant),
            Some(k),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    // The token reaches its own tenant only.
    let token = r.1["token"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{}", globex.tenant),
            Some(token),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A management user whose role loses `tenant:support`: their open session stops at once.
    let r = open(&app, k, acme.tenant, reason.clone()).await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    let token = r.1["token"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(Method::GET, "/api/v1/companies", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    sqlx::query(
        "DELETE FROM role_permissions rp USING permissions p \
         WHERE p.tenant = rp.tenant AND p.permission_id = rp.permission_id \
           AND rp.tenant = $1 AND p.resource = 'tenant' AND p.action = 'support'",
    )
    .bind(mgmt.tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (status, _) = app
        .call(Method::GET, "/api/v1/companies", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Both of the operator's open sessions (the one above too) end.
    assert_eq!(
        psa_models::support::close_lapsed(&app.db.pool)
            .await
            .unwrap(),
        2
    );
    let r = open(&app, k, acme.tenant, reason.clone()).await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    sqlx::query(
        "INSERT INTO role_permissions (tenant, role_id, permission_id) \
         SELECT r.tenant, r.role_id, p.permission_id FROM roles r JOIN permissions p \
           ON p.tenant = r.tenant AND p.resource = 'tenant' AND p.action = 'support' \
         WHERE r.tenant = $1 AND r.role_name = 'Admin' AND r.msp",
    )
    .bind(mgmt.tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
}
