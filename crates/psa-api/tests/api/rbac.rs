use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn a_technician_cannot_create_or_change_companies_and_nothing_is_written() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let tech = app.user_with_role(t.tenant, "Technician").await;
    let k = Some(tech.as_str());
    let (_, co) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            Some(&t.key),
            Some(json!({"company_name": "Co"})),
        )
        .await;
    let id = co["company_id"].as_str().unwrap();
    let before = (
        app.count("companies").await,
        app.count("contacts").await,
        app.count("tag_mappings").await,
    );

    // Technicians may read companies and contacts...
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", k, None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::GET, &format!("/api/v1/companies/{id}"), k, None)
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        app.call(Method::GET, "/api/v1/contacts", k, None).await.0,
        StatusCode::OK
    );
    // ...but not create or update them, nor tag a company (no client:update).
    let denied = [
        app.call(
            Method::POST,
            "/api/v1/companies",
            k,
            Some(json!({"company_name": "New"})),
        )
        .await,
        app.call(
            Method::PATCH,
            &format!("/api/v1/companies/{id}"),
            k,
            Some(json!({"notes": "x"})),
        )
        .await,
        app.call(
            Method::POST,
            "/api/v1/contacts",
            k,
            Some(json!({"full_name": "A", "email": "a@x.example"})),
        )
        .await,
        app.call(
            Method::POST,
            "/api/v1/tags",
            k,
            Some(json!({"tag_text": "VIP", "tagged_id": id, "tagged_type": "company"})),
        )
        .await,
    ];
    for r in &denied {
        assert_error(r, StatusCode::FORBIDDEN, "forbidden");
    }
    let after = (
        app.count("companies").await,
        app.count("contacts").await,
        app.count("tag_mappings").await,
    );
    assert_eq!(before, after);
    assert_eq!(app.count("tag_definitions").await, 0);
    // client:delete is among the technician's grants in the reference.
    assert_eq!(
        app.call(Method::DELETE, &format!("/api/v1/companies/{id}"), k, None)
            .await
            .0,
        StatusCode::NO_CONTENT
    );
}

#[tokio::test]
async fn new_tag_text_needs_tag_create() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    // A custom role with client:update but without tag:create.
    sqlx::query(
        "INSERT INTO roles (tenant, role_name, msp, client) VALUES ($1, 'Editor', true, false); ",
    )
    .bind(t.tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO role_permissions (tenant, role_id, permission_id) \
         SELECT r.tenant, r.role_id, p.permission_id FROM roles r JOIN permissions p ON p.tenant = r.tenant \
         WHERE r.tenant = $1 AND r.role_name = 'Editor' AND p.msp AND p.resource = 'client' AND p.action IN ('read', 'update')",
    )
    .bind(t.tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let editor = app.user_with_role(t.tenant, "Editor").await;
    let (_, co) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            Some(&t.key),
            Some(json!({"company_name": "Co"})),
        )
        .await;
    let body = |text: &str| json!({"tag_text": text, "tagged_id": co["company_id"], "tagged_type": "company"});

    let r = app
        .call(
            Method::POST,
            "/api/v1/tags",
            Some(&editor),
            Some(body("Brand new")),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(app.count("tag_definitions").await, 0);
    // Once an admin created the text, the editor may use it.
    let (_, co2) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            Some(&t.key),
            Some(json!({"company_name": "Co2"})),
        )
        .await;
    let admin_body =
        json!({"tag_text": "Brand new", "tagged_id": co2["company_id"], "tagged_type": "company"});
    assert_eq!(
        app.call(Method::POST, "/api/v1/tags", Some(&t.key), Some(admin_body))
            .await
            .0,
        StatusCode::CREATED
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/tags",
            Some(&editor),
            Some(body("Brand new")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
}
