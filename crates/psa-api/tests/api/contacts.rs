use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn contact_create_get_list_update() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let k = Some(t.key.as_str());
    let (_, co) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            k,
            Some(json!({"company_name": "Co"})),
        )
        .await;
    let (status, c) = app
        .call(Method::POST, "/api/v1/contacts", k, Some(json!({"full_name": " Ada ", "email": " ADA@Example.com ", "company_id": co["company_id"]})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(
        (c["full_name"].as_str(), c["email"].as_str()),
        (Some("Ada"), Some("ada@example.com"))
    );
    let id = c["contact_name_id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call(Method::GET, &format!("/api/v1/contacts/{id}"), k, None)
            .await
            .1,
        c
    );

    let (status, u) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/contacts/{id}"),
            k,
            Some(json!({"role": "CTO", "company_id": null})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["role"], "CTO");
    assert!(u["company_id"].is_null());

    app.call(
        Method::POST,
        "/api/v1/contacts",
        k,
        Some(
            json!({"full_name": "Bob", "email": "bob@example.com", "company_id": co["company_id"]}),
        ),
    )
    .await;
    let (_, list) = app
        .call(
            Method::GET,
            &format!(
                "/api/v1/contacts?company_id={}",
                co["company_id"].as_str().unwrap()
            ),
            k,
            None,
        )
        .await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_eq!(list["items"][0]["full_name"], "Bob");
}

#[tokio::test]
async fn contact_errors() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let k = Some(t.key.as_str());
    app.call(
        Method::POST,
        "/api/v1/contacts",
        k,
        Some(json!({"full_name": "A", "email": "a@example.com"})),
    )
    .await;
    let cases = [
        (
            json!({}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "full_name",
        ),
        (
            json!({"full_name": "B"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "email",
        ),
        (
            json!({"full_name": "B", "email": "bad"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "email",
        ),
        (
            json!({"full_name": "B", "email": "A@EXAMPLE.com"}),
            StatusCode::CONFLICT,
            "email_exists",
            "email",
        ),
        (
            json!({"full_name": "B", "email": "b@example.com", "company_id": uuid::Uuid::new_v4()}),
            StatusCode::NOT_FOUND,
            "foreign_key_error",
            "company_id",
        ),
        (
            json!({"full_name": "B", "email": "b@example.com", "company_id": "not-a-uuid"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
            "company_id",
        ),
    ];
    for (body, status, code, field) in cases {
        let r = app
            .call(Method::POST, "/api/v1/contacts", k, Some(body.clone()))
            .await;
        assert_error(&r, status, code);
        assert!(
            r.1["error"]["fields"][field].is_string(),
            "{body} -> {}",
            r.1
        );
    }
    assert_eq!(app.count("contacts").await, 1);
    let r = app
        .call(
            Method::GET,
            &format!("/api/v1/contacts/{}", uuid::Uuid::new_v4()),
            k,
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app
        .call(Method::GET, "/api/v1/contacts/not-a-uuid", k, None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}
