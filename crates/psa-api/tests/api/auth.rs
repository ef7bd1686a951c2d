use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn login_use_and_logout() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let (status, body) = app
        .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"tenant_id": t.tenant, "email": t.admin_email.to_uppercase(), "password": t.admin_password})))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let token = body["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("psa_s_"));
    assert!(
        body["expires_at"]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
            > chrono::Utc::now()
    );

    let (status, _) = app
        .call(Method::GET, "/api/v1/companies", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let stored: Vec<u8> = sqlx::query_scalar("SELECT token_hash FROM sessions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_ne!(stored, token.as_bytes(), "only a digest is stored");

    let (status, _) = app
        .call(Method::POST, "/api/v1/auth/logout", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let r = app
        .call(Method::GET, "/api/v1/companies", Some(&token), None)
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");

    // Logging out an API key is refused (it is revoked with the CLI).
    let r = app
        .call(Method::POST, "/api/v1/auth/logout", Some(&t.key), None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_error");
}

#[tokio::test]
async fn login_failures_do_not_reveal_whether_the_email_exists() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let wrong_password = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"tenant_id": t.tenant, "email": t.admin_email, "password": "wrong"})),
        )
        .await;
    let unknown_email = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(
                json!({"tenant_id": t.tenant, "email": "nobody@acme.example", "password": "wrong"}),
            ),
        )
        .await;
    let unknown_tenant = app
        .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"tenant_id": uuid::Uuid::new_v4(), "email": t.admin_email, "password": t.admin_password})))
        .await;
    let bad_email = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"tenant_id": t.tenant, "email": "x", "password": "y"})),
        )
        .await;
    for r in [&wrong_password, &unknown_email, &unknown_tenant, &bad_email] {
        assert_error(r, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(r.1, wrong_password.1, "identical bodies");
    }
    assert_eq!(app.count("sessions").await, 0);
}

#[tokio::test]
async fn unknown_expired_and_revoked_credentials_are_401() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    for bad in [
        None,
        Some("garbage"),
        Some("psa_s_AAAA"),
        Some("psa_k_AAAA"),
    ] {
        let r = app.call(Method::GET, "/api/v1/companies", bad, None).await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let resp = app
        .http
        .get(format!("{}/api/v1/companies", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");

    // Expired session.
    let (_, body) = app
        .call(Method::POST, "/api/v1/auth/login", None, Some(json!({"tenant_id": t.tenant, "email": t.admin_email, "password": t.admin_password})))
        .await;
    let token = body["token"].as_str().unwrap().to_owned();
    sqlx::query("UPDATE sessions SET expires_at = now() - interval '1 second'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_error(
        &app.call(Method::GET, "/api/v1/companies", Some(&token), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // Revoked API key.
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", Some(&t.key), None)
            .await
            .0,
        StatusCode::OK
    );
    let id: uuid::Uuid = sqlx::query_scalar("SELECT api_key_id FROM api_keys")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let mut conn = app.db.pool.acquire().await.unwrap();
    assert!(
        psa_api::auth::revoke_api_key(
            &mut conn,
            id,
            &psa_models::audit::Actor::operator_from_environment()
        )
        .await
        .unwrap()
    );
    assert_error(
        &app.call(Method::GET, "/api/v1/companies", Some(&t.key), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );

    // A deactivated user's key stops working.
    let t2 = app.tenant("Beta").await;
    sqlx::query("UPDATE users SET is_inactive = true WHERE tenant = $1")
        .bind(t2.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    assert_error(
        &app.call(Method::GET, "/api/v1/companies", Some(&t2.key), None)
            .await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
}

async fn login_token(app: &TestApp, t: &TenantFixture) -> String {
    let (status, body) = app
        .call(
            reqwest::Method::POST,
            "/api/v1/auth/login",
            None,
            Some(serde_json::json!({"tenant_id": t.tenant, "email": t.admin_email, "password": t.admin_password})),
        )
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Sessions end after a while without use; "log out everywhere" ends them all at once (API keys
/// stay); API keys can expire and record their last use; logins, failed logins and logouts are
/// audited in the tenant.
#[tokio::test]
async fn credentials_expire_idle_sessions_end_and_logins_are_audited() {
    let mut app = TestApp::unserved().await;
    let pool = app.db.pool.clone();
    let config = psa_api::Config {
        dns: Default::default(),
        session_idle: Duration::from_secs(2),
        ..test_config()
    };
    app.serve(pool, config, None).await;
    let t = app.tenant("Acme").await;

    // Idle timeout.
    let idle = login_token(&app, &t).await;
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", Some(&idle), None)
            .await
            .0,
        StatusCode::OK
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", Some(&idle), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED,
        "an idle session ends"
    );

    // Log out everywhere.
    let (a, b) = (login_token(&app, &t).await, login_token(&app, &t).await);
    assert_eq!(
        app.call(Method::POST, "/api/v1/auth/logout-all", Some(&a), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
    for token in [&a, &b] {
        assert_eq!(
            app.call(Method::GET, "/api/v1/companies", Some(token), None)
                .await
                .0,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", Some(&t.key), None)
            .await
            .0,
        StatusCode::OK,
        "API keys are not sessions"
    );
    let used: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT last_used_at FROM api_keys WHERE tenant = $1")
            .bind(t.tenant)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(used.is_some(), "the key's last use is recorded");

    // An expired key is refused.
    let mut tx = app.db.pool.begin().await.unwrap();
    let expired = psa_api::auth::create_api_key_until(
        &mut tx,
        t.tenant,
        t.admin,
        None,
        Some(chrono::Utc::now() - chrono::Duration::seconds(1)),
        &psa_models::audit::Actor::operator_from_environment(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        app.call(
            Method::GET,
            "/api/v1/companies",
            Some(expired.key.expose_secret()),
            None
        )
        .await
        .0,
        StatusCode::UNAUTHORIZED
    );

    // A failed login, then the audit trail.
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(serde_json::json!({"tenant_id": t.tenant, "email": t.admin_email, "password": "not-it-Secret-1"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // What a caller without credentials can write is bounded: a burst of failures with one
    // email from one address is one row (the rest are counted in psa_login_failures_total);
    // another email is another row; a tenant that does not exist gets none.
    for (email, tenant) in [
        (t.admin_email.as_str(), t.tenant),
        (t.admin_email.as_str(), t.tenant),
        ("invented@acme.example", t.tenant),
        ("invented@acme.example", t.tenant),
        ("x@nowhere.example", psa_models::TenantId::new()),
    ] {
        let (status, _) = app
            .call(
                Method::POST,
                "/api/v1/auth/login",
                None,
                Some(serde_json::json!({"tenant_id": tenant, "email": email, "password": "not-it-Secret-1"})),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    // Written just after each answer.
    let expected = [t.admin_email.as_str(), "invented@acme.example"];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let failed: Vec<String> = sqlx::query_scalar(
            "SELECT details ->> 'email' FROM audit_log WHERE action = 'login_failed' \
             ORDER BY created_at",
        )
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        if failed == expected || std::time::Instant::now() > deadline {
            assert_eq!(failed, expected);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE tenant = $1 AND entity_type IN ('user', 'api_key') \
         ORDER BY created_at",
    )
    .bind(t.tenant)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    for expected in ["login", "logout_all", "login_failed", "create"] {
        assert!(
            actions.iter().any(|a| a == expected),
            "{expected} in {actions:?}"
        );
    }
    let details: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT details FROM audit_log WHERE tenant = $1")
            .bind(t.tenant)
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert!(
        !serde_json::to_string(&details)
            .unwrap()
            .contains("not-it-Secret-1"),
        "no password in the audit log"
    );
}
