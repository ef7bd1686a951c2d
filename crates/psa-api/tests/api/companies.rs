use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

#[tokio::test]
async fn company_crud() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let k = Some(t.key.as_str());
    let (status, c) = app
        .call(Method::POST, "/api/v1/companies", k, Some(json!({"company_name": " Globex ", "url": "globex.example.com", "client_type": "company", "billing_cycle": "quarterly"})))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{c}");
    assert_eq!(c["company_name"], "Globex");
    assert_eq!(c["properties"]["website"], "globex.example.com");
    assert_eq!(c["billing_cycle"], "quarterly");
    let id = c["company_id"].as_str().unwrap().to_owned();

    let (status, got) = app
        .call(Method::GET, &format!("/api/v1/companies/{id}"), k, None)
        .await;
    assert_eq!((status, &got), (StatusCode::OK, &c));

    let (status, u) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/companies/{id}"),
            k,
            Some(json!({"notes": "vip", "properties": {"website": "https://globex.example.org"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{u}");
    assert_eq!(u["url"], "https://globex.example.org");
    assert_eq!(u["notes"], "vip");

    for i in 0..3 {
        app.call(
            Method::POST,
            "/api/v1/companies",
            k,
            Some(json!({"company_name": format!("Z{i}")})),
        )
        .await;
    }
    let (_, page) = app
        .call(Method::GET, "/api/v1/companies?limit=2", k, None)
        .await;
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let (status, page2) = app
        .call(
            Method::GET,
            &format!("/api/v1/companies?limit=2&cursor={cursor}"),
            k,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page2}");
    assert_ne!(page2["items"][0], page["items"][0]);
    let (_, all) = app
        .call(Method::GET, "/api/v1/companies?limit=200", k, None)
        .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 5);
    assert!(all["next_cursor"].is_null());
    // A name search: case-insensitive, pages like the rest, `_` is a character.
    let names = |page: &serde_json::Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["company_name"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, found) = app
        .call(Method::GET, "/api/v1/companies?name=gLoB", k, None)
        .await;
    assert_eq!(names(&found), ["Globex"]);
    let (_, z) = app
        .call(Method::GET, "/api/v1/companies?name=z&limit=2", k, None)
        .await;
    assert_eq!(names(&z), ["Z0", "Z1"]);
    let (_, z2) = app
        .call(
            Method::GET,
            &format!(
                "/api/v1/companies?name=z&limit=2&cursor={}",
                z["next_cursor"].as_str().unwrap()
            ),
            k,
            None,
        )
        .await;
    assert_eq!(names(&z2), ["Z2"]);
    let (_, none) = app
        .call(Method::GET, "/api/v1/companies?name=_", k, None)
        .await;
    assert!(names(&none).is_empty());

    let (status, _) = app
        .call(Method::DELETE, &format!("/api/v1/companies/{id}"), k, None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_error(
        &app.call(Method::GET, &format!("/api/v1/companies/{id}"), k, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &app.call(Method::DELETE, &format!("/api/v1/companies/{id}"), k, None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Every change is in the tenant's audit log, with what changed; refusals write nothing.
    let audited: Vec<(String, serde_json::Value)> = sqlx::query_as(
        "SELECT action, details FROM audit_log WHERE tenant = $1 AND entity_type = 'company' \
           AND entity_id = $2::uuid ORDER BY created_at",
    )
    .bind(t.tenant)
    .bind(&id)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audited.iter().map(|(a, _)| a.as_str()).collect();
    assert_eq!(actions, ["create", "update", "delete"]);
    assert_eq!(audited[0].1["company_name"], "Globex");
    assert_eq!(audited[1].1["changes"]["notes"]["to"], "vip");
    assert!(
        audited[1].1["changes"].get("company_name").is_none(),
        "unchanged fields stay out"
    );
    let creates: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant = $1 AND entity_type = 'company' \
           AND action = 'create'",
    )
    .bind(t.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(creates, 4, "Globex and Z0-Z2");
}

#[tokio::test]
async fn company_validation_errors_name_the_field() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let k = Some(t.key.as_str());
    let cases = [
        (
            json!({"company_name": ""}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "company_name",
        ),
        (
            json!({"company_name": "X", "url": "ftp://x"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "url",
        ),
        (
            json!({"company_name": "X", "billing_email": "nope"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_error",
            "billing_email",
        ),
        (
            json!({"company_name": "X", "client_type": "alien"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
            "client_type",
        ),
        (
            json!({"company_name": 5}),
            StatusCode::BAD_REQUEST,
            "validation_error",
            "company_name",
        ),
        (
            json!({}),
            StatusCode::BAD_REQUEST,
            "validation_error",
            "company_name",
        ),
        (
            json!({"company_name": "X", "tenant": "00000000-0000-0000-0000-000000000000"}),
            StatusCode::BAD_REQUEST,
            "validation_error",
            "tenant",
        ),
        (
            json!({"company_name": "Acme MSP"}),
            StatusCode::CONFLICT,
            "conflict",
            "company_name",
        ),
        (
            json!({"company_name": "X", "account_manager_id": uuid::Uuid::new_v4()}),
            StatusCode::NOT_FOUND,
            "foreign_key_error",
            "account_manager_id",
        ),
    ];
    for (body, status, code, field) in cases {
        let r = app
            .call(Method::POST, "/api/v1/companies", k, Some(body.clone()))
            .await;
        assert_error(&r, status, code);
        assert!(
            r.1["error"]["fields"][field].is_string(),
            "{body} -> {}",
            r.1
        );
    }
    assert_eq!(
        app.count("companies").await,
        1,
        "only the tenant's own company"
    );
    let r = app
        .call(Method::GET, "/api/v1/companies?limit=0", k, None)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let r = app
        .call(Method::GET, "/api/v1/companies?cursor=zzz", k, None)
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let r = app
        .call(Method::GET, "/api/v1/companies?bogus=1", k, None)
        .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "validation_error");
    let r = app
        .call(
            Method::PATCH,
            &format!("/api/v1/companies/{}", uuid::Uuid::new_v4()),
            k,
            Some(json!({"notes": "x"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}
