use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn attach_list_detach() {
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
    let body = json!({"tag_text": "PSA Customer", "tagged_id": co["company_id"], "tagged_type": "company"});
    let (status, tag) = app
        .call(Method::POST, "/api/v1/tags", k, Some(body.clone()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{tag}");
    assert_eq!(tag["background_color"], "#BEC5F4");
    assert_eq!(tag["created_by"], json!(t.admin));
    let (status, again) = app.call(Method::POST, "/api/v1/tags", k, Some(body)).await;
    assert_eq!((status, &again), (StatusCode::OK, &tag), "idempotent");

    let path = format!(
        "/api/v1/tags?tagged_type=company&tagged_id={}",
        co["company_id"].as_str().unwrap()
    );
    let (status, list) = app.call(Method::GET, &path, k, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([tag]));

    let (status, _) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/tags/{}", tag["mapping_id"].as_str().unwrap()),
            k,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.call(Method::GET, &path, k, None).await.1, json!([]));
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/tags/{}", tag["mapping_id"].as_str().unwrap()),
            k,
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn tag_errors() {
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
    let cases = [
        (
            json!({"tag_text": "", "tagged_id": co["company_id"], "tagged_type": "company"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            json!({"tag_text": "x".repeat(51), "tagged_id": co["company_id"], "tagged_type": "company"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
        ),
        (
            json!({"tag_text": "ok", "tagged_id": co["company_id"], "tagged_type": "ticket"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
        (
            json!({"tag_text": "ok", "tagged_id": uuid::Uuid::new_v4(), "tagged_type": "company"}),
            StatusCode::NOT_FOUND,
            "foreign_key_error",
        ),
        (
            json!({"tag_text": "ok", "tagged_type": "company"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
        ),
    ];
    for (body, status, code) in cases {
        assert_error(
            &app.call(Method::POST, "/api/v1/tags", k, Some(body)).await,
            status,
            code,
        );
    }
    assert_eq!(app.count("tag_definitions").await, 0);
    let r = app
        .call(Method::GET, "/api/v1/tags?tagged_type=company", k, None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_error");
}
