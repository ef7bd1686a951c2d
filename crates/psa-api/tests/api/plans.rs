//! Plans and seats: the management tenant makes plans and puts a tenant on one; the tenant's
//! staff are counted against its seats from their invitation until deactivated, at every door;
//! two invitations at the last seat, at the same moment, make exactly one user.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::*;

/// The platform (management tenant and Acme) with mail, so that invitations go out.
async fn platform_with_mail() -> (TestApp, TenantFixture, TenantFixture, psa_testing::SmtpSink) {
    let smtp = psa_testing::SmtpSink::start().await;
    let mut config = test_config();
    config.delivery.mailer = Some(
        psa_models::mail::Mailer::new(
            &secrecy::SecretString::from(smtp.url()),
            "psa <noreply@psa.test>",
        )
        .unwrap(),
    );
    let (app, mgmt, acme) = super::lifecycle::platform_with(config).await;
    (app, mgmt, acme, smtp)
}

/// The management tenant's admin puts `tenant` on a plan (`{"plan", "seats"?}`).
async fn put_on(
    app: &TestApp,
    mgmt: &TenantFixture,
    tenant: psa_models::TenantId,
    body: Value,
) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        &format!("/api/v1/tenants/{tenant}/subscription"),
        Some(&mgmt.key),
        Some(body),
    )
    .await
}

fn invitee(email: &str) -> Value {
    json!({"first_name": "Ada", "last_name": "Lovelace", "email": email, "role": "Technician"})
}

#[tokio::test]
async fn the_management_tenant_makes_plans_and_retires_them() {
    let (app, mgmt, acme, _smtp) = platform_with_mail().await;
    let (status, plan) = app
        .call(
            Method::POST,
            "/api/v1/plans",
            Some(&mgmt.key),
            Some(json!({"code": "team", "name": "Team", "seat_limit": 5,
                        "features": ["sso", "exports"], "billing_price_ids": ["price_team"]})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{plan}");
    assert_eq!(plan["seat_limit"], 5);
    assert_eq!(plan["active"], true);
    // The same code again, bad input: refused, nothing written.
    let r = app
        .call(
            Method::POST,
            "/api/v1/plans",
            Some(&mgmt.key),
            Some(json!({"code": "team", "name": "Team again"})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    for (body, field) in [
        (json!({"code": "Not A Code", "name": "X"}), "code"),
        (json!({"code": "x", "name": ""}), "name"),
        (
            json!({"code": "x", "name": "X", "seat_limit": 0}),
            "seat_limit",
        ),
        (
            json!({"code": "x", "name": "X", "trial_days": 400}),
            "trial_days",
        ),
        (
            json!({"code": "x", "name": "X", "features": ["two words"]}),
            "features",
        ),
    ] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/plans",
                Some(&mgmt.key),
                Some(body.clone()),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert!(r.1["error"]["fields"][field].is_string(), "{body}: {}", r.1);
    }
    assert_eq!(app.count("plans").await, 2, "standard and team");
    // Only the management tenant's callers.
    let r = app
        .call(Method::GET, "/api/v1/plans", Some(&acme.key), None)
        .await;
    assert_eq!(r.0, StatusCode::FORBIDDEN, "{}", r.1);
    // The default plan of new tenants is not retired; an unknown field is refused.
    let r = app
        .call(
            Method::PATCH,
            "/api/v1/plans/standard",
            Some(&mgmt.key),
            Some(json!({"active": false})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let r = app
        .call(
            Method::POST,
            "/api/v1/plans",
            Some(&mgmt.key),
            Some(json!({"code": "x", "name": "X", "active": false})),
        )
        .await;
    assert!(r.0.is_client_error(), "{}", r.1);
    // Retired: listed after the offered ones, and no tenant is put on it any more.
    let (status, retired) = app
        .call(
            Method::PATCH,
            "/api/v1/plans/team",
            Some(&mgmt.key),
            Some(json!({"active": false})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{retired}");
    assert_eq!(retired["active"], false);
    let (_, list) = app
        .call(Method::GET, "/api/v1/plans", Some(&mgmt.key), None)
        .await;
    let codes: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["code"].as_str().unwrap())
        .collect();
    assert_eq!(codes, ["standard", "team"]);
    let mut tx = app.db.pool.begin().await.unwrap();
    psa_models::plans::start(&mut tx, acme.tenant, "standard", None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let r = put_on(&app, &mgmt, acme.tenant, json!({"plan": "team"})).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("retired")
    );
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE entity_type = 'plan'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(audited, 2, "made and retired");
}

#[tokio::test(flavor = "multi_thread")]
async fn seats_are_counted_from_the_invitation_until_deactivation() {
    let (app, mgmt, acme, _smtp) = platform_with_mail().await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/plans",
            Some(&mgmt.key),
            Some(json!({"code": "small", "name": "Small", "seat_limit": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Acme has no subscription (as a tenant made before plans by a run that named none): no
    // limit until it is put on a plan. Two seats: the admin and one more.
    let (status, sub) = put_on(
        &app,
        &mgmt,
        acme.tenant,
        json!({"plan": "small", "seats": 2}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    assert_eq!(sub["seats_allowed"], 2);
    assert_eq!(sub["seats_used"], 1);
    let (status, first) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&acme.key),
            Some(invitee("one@acme.example")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let users = app.count("users").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&acme.key),
            Some(invitee("two@acme.example")),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "seat_limit_reached");
    assert!(
        r.1["error"]["message"].as_str().unwrap().contains("2 / 2"),
        "{}",
        r.1
    );
    assert_eq!(app.count("users").await, users, "nothing written");
    // Deactivated, the seat is free; the user cannot come back while it is taken.
    let one = first["user"]["user_id"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            Method::POST,
            &format!("/api/v1/users/{one}/deactivate"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&acme.key),
            Some(invitee("two@acme.example")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/users/{one}/reactivate"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "seat_limit_reached");

    // Fewer seats than in use: allowed (no one is cut off), shown as over.
    let (status, sub) = put_on(
        &app,
        &mgmt,
        acme.tenant,
        json!({"plan": "small", "seats": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{sub}");
    assert_eq!(sub["seats_used"], 2);
    let (_, shown) = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{}", acme.tenant),
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_eq!(shown["subscription"]["plan"], "small", "{shown}");
    assert_eq!(shown["subscription"]["seats_allowed"], 1);
    // More than the plan allows: refused.
    let r = put_on(
        &app,
        &mgmt,
        acme.tenant,
        json!({"plan": "small", "seats": 11}),
    )
    .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");

    // The last seat, asked for twice at the same moment: exactly one user is made.
    let (status, _) = put_on(
        &app,
        &mgmt,
        acme.tenant,
        json!({"plan": "small", "seats": 3}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (a, b) = tokio::join!(
        app.call(
            Method::POST,
            "/api/v1/users",
            Some(&acme.key),
            Some(invitee("a@acme.example"))
        ),
        app.call(
            Method::POST,
            "/api/v1/users",
            Some(&acme.key),
            Some(invitee("b@acme.example"))
        ),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::CREATED, StatusCode::CONFLICT],
        "{} {}",
        a.1,
        b.1
    );
    let active: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE tenant = $1 AND user_type = 'internal' \
         AND NOT is_inactive",
    )
    .bind(acme.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(active, 3);

    // The customers list finds it by plan, by its full seats, and not by what it is not.
    let found = |query: &'static str| {
        let app = &app;
        let key = mgmt.key.clone();
        async move {
            let (status, body) = app
                .call(
                    Method::GET,
                    &format!("/api/v1/customers?{query}"),
                    Some(&key),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {body}");
            body["items"].as_array().unwrap().len()
        }
    };
    assert_eq!(found("plan=small").await, 1);
    assert_eq!(found("plan=standard").await, 0);
    assert_eq!(found("seats_full=true").await, 1);
    assert_eq!(found("subscription_status=active").await, 1);
    assert_eq!(found("subscription_status=trialing").await, 0);
    assert_eq!(found("trial_ends_within_days=7").await, 0);
    sqlx::query(
        "UPDATE tenant_subscriptions SET status = 'trialing', \
         trial_ends_at = now() + interval '2 days' WHERE tenant = $1",
    )
    .bind(acme.tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(found("trial_ends_within_days=7").await, 1);
    assert_eq!(found("trial_ends_within_days=1").await, 0);
    let r = app
        .call(
            Method::GET,
            "/api/v1/customers?subscription_status=late",
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");

    // Each change audited in both tenants and told as an event.
    let events: Vec<Value> = sqlx::query_scalar(
        "SELECT data FROM events WHERE event_type = 'tenant.plan_changed' ORDER BY event_id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(events.len(), 3, "{events:?}");
    assert_eq!(events[0]["plan_before"], Value::Null);
    assert_eq!(events[0]["plan"], "small");
    assert_eq!(events[2]["seats"], 3);
    for tenant in [acme.tenant, mgmt.tenant] {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE tenant = $1 AND entity_type = 'subscription'",
        )
        .bind(tenant)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(n, 3);
    }
}

/// In the console: the management tenant's admin puts Acme on a plan of two seats from its
/// page and sees it on the customers page; Acme's admin sees the seats on the users page,
/// invites one more, and is then offered no invitation. Pages reviewed (axe) and saved.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_a_plan_is_chosen_and_the_seats_show() {
    use super::console::{review, ui};
    let (app, mgmt, acme, _smtp) = platform_with_mail().await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/plans",
            Some(&mgmt.key),
            Some(json!({"code": "small", "name": "Small", "seat_limit": 10})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut tx = app.db.pool.begin().await.unwrap();
    psa_models::plans::start(&mut tx, acme.tenant, "standard", None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let browser = psa_testing::Browser::start(1280, 900).await;
    let b = &browser.client;
    ui::sign_in_as(b, &app.base, &mgmt).await;
    ui::wait_text(b, "h1", "", 20).await;
    b.goto(&format!("{}/console/tenants/{}", app.base, acme.tenant))
        .await
        .unwrap();
    ui::wait_text(b, "main", "Plan and seats", 20).await;
    b.find(fantoccini::Locator::Css("select#plan"))
        .await
        .unwrap()
        .select_by_value("small")
        .await
        .unwrap();
    ui::fill(b, "seats", "2").await;
    ui::click(b, "form[action$='/plan'] button[type=submit]").await;
    ui::wait_text(b, "main", "Now on Small (active), 2 seats.", 20).await;
    ui::wait_text(b, "main", "1 of 2 in use", 5).await;
    review(&browser, "tenant-plan").await;
    b.goto(&format!("{}/console/customers", app.base))
        .await
        .unwrap();
    ui::wait_text(b, "main", "1 / 2", 20).await;
    review(&browser, "customers-plans").await;
    ui::sign_out(b).await;

    ui::sign_in_as(b, &app.base, &acme).await;
    ui::wait_text(b, "h1", "", 20).await;
    b.goto(&format!("{}/console/users", app.base))
        .await
        .unwrap();
    ui::wait_text(b, "main", "Seats: 1 of 2 in use", 20).await;
    ui::fill(b, "first_name", "Ada").await;
    ui::fill(b, "last_name", "Lovelace").await;
    ui::fill(b, "email", "ada@acme.example").await;
    ui::click(b, "form[action='/console/users'] button[type=submit]").await;
    ui::wait_text(b, "main", "Every seat is taken (2 of 2 in use)", 20).await;
    let html = b.source().await.unwrap();
    assert!(
        !html.contains("action=\"/console/users\""),
        "no invitation offered"
    );
    review(&browser, "users-seats-full").await;
}

/// In the console: a tenant whose trial ended (and was suspended for it) offers no
/// reactivation but an extension, says why, and the extension gives it back its access. Pages
/// reviewed (axe) and saved.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_an_ended_trial_is_extended() {
    use super::console::{review, ui};
    let (app, mgmt, acme, _smtp) = platform_with_mail().await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/plans",
            Some(&mgmt.key),
            Some(json!({"code": "try", "name": "Try", "trial_days": 14})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    let mut tx = app.db.pool.begin().await.unwrap();
    psa_models::plans::start(&mut tx, acme.tenant, "try", None)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE tenant_subscriptions SET trial_ends_at = now() - interval '1 hour' \
         WHERE tenant = $1",
    )
    .bind(acme.tenant)
    .execute(&mut *tx)
    .await
    .unwrap();
    // The trial's watcher's step, as the worker runs it at the end.
    let settings = psa_models::lifecycle::Settings {
        management_tenant_id: mgmt.tenant,
        customer_tag: psa_models::validate::TagText::parse("PSA Customer").unwrap(),
        tags: Default::default(),
    };
    let (next, _) = psa_models::deadlines::trial_step(
        &mut tx,
        &settings,
        acme.tenant,
        chrono::Duration::days(3),
    )
    .await
    .unwrap();
    assert_eq!(next, psa_models::deadlines::Next::Done("ended".into()));
    tx.commit().await.unwrap();

    let browser = psa_testing::Browser::start(1280, 900).await;
    let b = &browser.client;
    ui::sign_in_as(b, &app.base, &mgmt).await;
    ui::wait_text(b, "h1", "", 20).await;
    b.goto(&format!("{}/console/tenants/{}", app.base, acme.tenant))
        .await
        .unwrap();
    ui::wait_text(b, "main", "Its trial has ended", 20).await;
    ui::wait_text(b, "main", "trial ended", 5).await;
    let html = b.source().await.unwrap();
    assert!(!html.contains("/reactivate\""), "no reactivation offered");
    review(&browser, "tenant-trial-ended").await;
    ui::fill(b, "days", "400").await;
    ui::click(b, "form[action$='/trial'] button[type=submit]").await;
    ui::wait_text(b, "main", "1-365 days", 20).await;
    ui::fill(b, "days", "7").await;
    ui::click(b, "form[action$='/trial'] button[type=submit]").await;
    ui::wait_text(b, "main", "the tenant is active again", 20).await;
    let html = b.source().await.unwrap();
    assert!(!html.contains("Its trial has ended"));
    review(&browser, "tenant-trial-extended").await;
    let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE tenant = $1")
        .bind(acme.tenant)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "active");
}
