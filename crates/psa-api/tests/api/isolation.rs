//! Tenant B's credential cannot see or touch tenant A's rows, and the database would refuse it
//! even if a handler forgot its tenant filter.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn another_tenants_ids_are_404_everywhere() {
    let app = TestApp::spawn().await;
    let a = app.tenant("Alpha").await;
    let b = app.tenant("Beta").await;
    let ka = Some(a.key.as_str());
    let kb = Some(b.key.as_str());
    let (_, co) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            ka,
            Some(json!({"company_name": "A secret"})),
        )
        .await;
    let co_id = co["company_id"].as_str().unwrap().to_owned();
    let (_, ct) = app
        .call(
            Method::POST,
            "/api/v1/contacts",
            ka,
            Some(json!({"full_name": "A person", "email": "p@alpha.example", "company_id": co_id})),
        )
        .await;
    let ct_id = ct["contact_name_id"].as_str().unwrap().to_owned();
    let (_, tag) = app
        .call(
            Method::POST,
            "/api/v1/tags",
            ka,
            Some(json!({"tag_text": "VIP", "tagged_id": co_id, "tagged_type": "company"})),
        )
        .await;
    let map_id = tag["mapping_id"].as_str().unwrap().to_owned();
    let rows = |app: &TestApp| {
        let pool = app.db.pool.clone();
        async move {
            let q = |t: &str| format!("SELECT count(*) FROM {t}");
            let mut v = Vec::new();
            for t in ["companies", "contacts", "tag_definitions", "tag_mappings"] {
                v.push(
                    sqlx::query_scalar::<_, i64>(&q(t))
                        .fetch_one(&pool)
                        .await
                        .unwrap(),
                );
            }
            v
        }
    };
    let before = rows(&app).await;

    let attempts = [
        app.call(Method::GET, &format!("/api/v1/companies/{co_id}"), kb, None)
            .await,
        app.call(
            Method::PATCH,
            &format!("/api/v1/companies/{co_id}"),
            kb,
            Some(json!({"notes": "pwned"})),
        )
        .await,
        app.call(
            Method::DELETE,
            &format!("/api/v1/companies/{co_id}"),
            kb,
            None,
        )
        .await,
        app.call(Method::GET, &format!("/api/v1/contacts/{ct_id}"), kb, None)
            .await,
        app.call(
            Method::PATCH,
            &format!("/api/v1/contacts/{ct_id}"),
            kb,
            Some(json!({"role": "pwned"})),
        )
        .await,
        app.call(Method::DELETE, &format!("/api/v1/tags/{map_id}"), kb, None)
            .await,
        app.call(
            Method::POST,
            "/api/v1/contacts",
            kb,
            Some(json!({"full_name": "M", "email": "m@beta.example", "company_id": co_id})),
        )
        .await,
        app.call(
            Method::POST,
            "/api/v1/tags",
            kb,
            Some(json!({"tag_text": "VIP", "tagged_id": co_id, "tagged_type": "company"})),
        )
        .await,
    ];
    for r in &attempts {
        assert_eq!(r.0, StatusCode::NOT_FOUND, "{}", r.1);
    }
    assert_eq!(
        rows(&app).await,
        before,
        "nothing of A's changed, nothing written for B"
    );

    let (_, tags_of_a) = app
        .call(
            Method::GET,
            &format!("/api/v1/tags?tagged_type=company&tagged_id={co_id}"),
            kb,
            None,
        )
        .await;
    assert_eq!(tags_of_a, json!([]));
    let (_, companies) = app.call(Method::GET, "/api/v1/companies", kb, None).await;
    let names: Vec<&str> = companies["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["company_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Beta MSP"]);
    let (_, contacts) = app.call(Method::GET, "/api/v1/contacts", kb, None).await;
    assert_eq!(contacts["items"], json!([]));
    // A's view is intact.
    assert_eq!(
        app.call(Method::GET, &format!("/api/v1/companies/{co_id}"), ka, None)
            .await
            .1["notes"],
        json!(null)
    );
}

#[tokio::test]
async fn the_request_transaction_is_confined_even_without_a_tenant_filter() {
    let app = TestApp::spawn().await;
    let a = app.tenant("Alpha").await;
    let b = app.tenant("Beta").await;
    app.call(
        Method::POST,
        "/api/v1/companies",
        Some(&a.key),
        Some(json!({"company_name": "A only"})),
    )
    .await;
    // The same transaction a handler gets, running queries that forgot `WHERE tenant = ..`.
    let state = psa_api::AppState {
        app: psa_app::App::new(
            app.db.pool.clone(),
            Default::default(),
            crate::test_config().delivery,
        ),
        pool: app.db.pool.clone(),
        session_ttl: chrono::Duration::hours(1),
        limits: std::sync::Arc::new(psa_api::limits::Limits::new(
            Default::default(),
            app.db.pool.clone(),
        )),
        request_timeout: std::time::Duration::from_secs(30),
        session_idle: std::time::Duration::from_secs(3600),
    };
    let caller = psa_api::auth::Caller(psa_app::Member {
        tenant: b.tenant,
        user: b.admin,
        credential: psa_api::auth::Credential::ApiKey(uuid::Uuid::nil()),
        client_portal: false,
        support: None,
    });
    let mut tx = caller
        .authorize(
            &state,
            psa_api::auth::Permission(psa_api::auth::Resource::Client, psa_api::auth::Action::Read),
        )
        .await
        .unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT company_name FROM companies")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(names, ["Beta MSP"]);
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(users, 1);
    let deleted = sqlx::query("DELETE FROM companies WHERE company_name = 'A only'")
        .execute(&mut *tx)
        .await
        .unwrap();
    assert_eq!(deleted.rows_affected(), 0);
    let e = sqlx::query("INSERT INTO companies (tenant, company_name) VALUES ($1, 'planted')")
        .bind(a.tenant)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42501")
    );
}

/// The API can run as a login role that is only a member of `psa_app` and `psa_api`: everything
/// works through it, and it cannot leave its confinement, not even with `RESET ROLE`.
#[tokio::test]
async fn the_api_login_role_cannot_leave_its_confinement() {
    let mut app = TestApp::unserved().await;
    let (pool, role) = app.api_login_pool().await;
    let who: String = sqlx::query_scalar("SELECT current_user::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(who, role);

    // The API, running as that role.
    let a = app.tenant("Alpha").await;
    let b = app.tenant("Beta").await;
    app.serve(pool.clone(), test_config(), None).await;
    let (status, login) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"tenant_id": a.tenant, "email": a.admin_email, "password": a.admin_password})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{login}");
    let token = login["token"].as_str().unwrap().to_owned();
    let (status, created) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            Some(&token),
            Some(json!({"company_name": "Made by the login role"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", Some(&b.key), None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::POST, "/api/v1/auth/logout-all", Some(&token), None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );

    // What it cannot do, even by leaving the confined role.
    let mut tx = psa_models::db::begin_tenant(&pool, a.tenant).await.unwrap();
    sqlx::query("RESET ROLE").execute(&mut *tx).await.unwrap();
    let other: i64 = sqlx::query_scalar("SELECT count(*) FROM companies WHERE tenant = $1")
        .bind(b.tenant)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(other, 0, "another tenant's rows after RESET ROLE");
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE tenant = $1")
        .bind(b.tenant)
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    drop(tx);
    let mut conn = pool.acquire().await.unwrap();
    let unset: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(
        unset, 0,
        "without a tenant context it sees no tenant's rows"
    );
    for sql in [
        "SELECT count(*) FROM _sqlx_migrations",
        "UPDATE tenants SET is_management = true",
        "DELETE FROM tenant_provisioning",
        "SET ROLE postgres",
    ] {
        let e = sqlx::query(sql).execute(&mut *conn).await.unwrap_err();
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("42501"),
            "{sql}: {e}"
        );
    }
    drop(conn);
    pool.close().await;
    sqlx::query(&format!("DROP ROLE {role}"))
        .execute(&app.db.pool)
        .await
        .unwrap();
}
