//! A corpus of hostile or broken requests: none may produce a 5xx, none may write a row.

use reqwest::Method;

use super::*;

enum Body {
    Raw(&'static str, String),
    Json(serde_json::Value),
    Bytes(&'static str, Vec<u8>),
    None,
}

#[tokio::test]
async fn bad_input_corpus_yields_no_5xx_and_writes_nothing() {
    use serde_json::json;
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let (_, co) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            Some(&t.key),
            Some(json!({"company_name": "Existing"})),
        )
        .await;
    let co_id = co["company_id"].as_str().unwrap().to_owned();
    let tables = [
        "companies",
        "contacts",
        "tag_definitions",
        "tag_mappings",
        "company_email_settings",
        "company_tax_rates",
        "sessions",
        "tenants",
        "users",
    ];
    let mut before = Vec::new();
    for table in tables {
        before.push(app.count(table).await);
    }

    let big = "x".repeat(1024 * 1024);
    let json_ct = "application/json";
    let corpus: Vec<(Method, String, Body)> = vec![
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Raw("text/plain", r#"{"company_name":"A"}"#.into()),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Raw("application/x-www-form-urlencoded", "company_name=A".into()),
        ),
        (Method::POST, "/api/v1/companies".into(), Body::None),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Raw(json_ct, r#"{"company_name": "A""#.into()),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Raw(json_ct, "".into()),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Raw(json_ct, "null".into()),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Raw(json_ct, "[]".into()),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Raw(json_ct, "\"company\"".into()),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": null})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": 42})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": ["a"]})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": {"$ne": ""}})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": big.clone()})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "x".repeat(256)})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "nul\u{0}byte"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "bell\u{7}"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "\u{202e}\u{200b}", "url": "javascript:alert(1)"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(
                json!({"company_name": "'; DROP TABLE companies; --", "billing_cycle": "daily"}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "<script>alert(1)</script>", "client_type": "<b>"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "Existing"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A", "credit_limit": 1e300})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A", "credit_limit": -5})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A", "is_inactive": "yes"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A", "properties": "not an object"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A", "properties": {"website": 12}})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A", "url": "http://"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A", "region_code": "'; --"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A", "account_manager_id": "' OR 1=1"})),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Bytes(json_ct, b"{\"company_name\": \"\xff\xfe\"}".to_vec()),
        ),
        (
            Method::POST,
            "/api/v1/companies".into(),
            Body::Raw(
                json_ct,
                format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)),
            ),
        ),
        (
            Method::PATCH,
            format!("/api/v1/companies/{co_id}"),
            Body::Json(json!({"company_name": ""})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/companies/{co_id}"),
            Body::Json(json!({"url": 5})),
        ),
        (
            Method::PATCH,
            format!("/api/v1/companies/{co_id}"),
            Body::Json(json!({"tenant": uuid::Uuid::new_v4()})),
        ),
        (
            Method::PATCH,
            "/api/v1/companies/'%20OR%201=1".into(),
            Body::Json(json!({"notes": "x"})),
        ),
        (
            Method::DELETE,
            "/api/v1/companies/..%2F..%2Fetc%2Fpasswd".into(),
            Body::None,
        ),
        (Method::GET, "/api/v1/companies?limit=-1".into(), Body::None),
        (
            Method::GET,
            "/api/v1/companies?limit=99999999999999999999".into(),
            Body::None,
        ),
        (
            Method::GET,
            "/api/v1/companies?cursor=%00%01".into(),
            Body::None,
        ),
        (
            Method::GET,
            "/api/v1/companies?is_inactive=maybe".into(),
            Body::None,
        ),
        (
            Method::POST,
            "/api/v1/contacts".into(),
            Body::Json(json!({"full_name": "A", "email": "a@b.c\u{0}"})),
        ),
        (
            Method::POST,
            "/api/v1/contacts".into(),
            Body::Json(
                json!({"full_name": "A", "email": format!("{}@example.com", "a".repeat(300))}),
            ),
        ),
        (
            Method::POST,
            "/api/v1/contacts".into(),
            Body::Json(json!({"full_name": "A", "email": "ü@例え\u{301}"})),
        ),
        (
            Method::POST,
            "/api/v1/contacts".into(),
            Body::Json(json!({"full_name": big.clone(), "email": "x@example.com"})),
        ),
        (
            Method::POST,
            "/api/v1/contacts".into(),
            Body::Json(json!({"full_name": "A", "email": "a@example.com", "company_id": 7})),
        ),
        (
            Method::POST,
            "/api/v1/contacts".into(),
            Body::Json(json!({"full_name": "A\nB", "email": "a@example.com"})),
        ),
        (
            Method::POST,
            "/api/v1/tags".into(),
            Body::Json(json!({"tag_text": "💥", "tagged_id": co_id, "tagged_type": "company"})),
        ),
        (
            Method::POST,
            "/api/v1/tags".into(),
            Body::Json(json!({"tag_text": "a\tb", "tagged_id": co_id, "tagged_type": "company"})),
        ),
        (
            Method::POST,
            "/api/v1/tags".into(),
            Body::Json(json!({"tag_text": "ok", "tagged_id": co_id, "tagged_type": "COMPANY"})),
        ),
        (
            Method::POST,
            "/api/v1/tags".into(),
            Body::Json(
                json!({"tag_text": "ok", "tagged_id": co_id, "tagged_type": "company", "background_color": "red"}),
            ),
        ),
        (
            Method::GET,
            "/api/v1/tags?tagged_type=company&tagged_id=nope".into(),
            Body::None,
        ),
        (
            Method::POST,
            "/api/v1/auth/login".into(),
            Body::Json(json!({"tenant_id": "x", "email": "a", "password": 5})),
        ),
        (
            Method::POST,
            "/api/v1/auth/login".into(),
            Body::Json(json!({"tenant_id": t.tenant, "email": t.admin_email, "password": big})),
        ),
        (
            Method::POST,
            "/api/v1/auth/login".into(),
            Body::Json(json!({"tenant_id": t.tenant, "email": t.admin_email})),
        ),
        (
            Method::PUT,
            "/api/v1/companies".into(),
            Body::Json(json!({"company_name": "A"})),
        ),
        (Method::GET, "/api/v1/nope".into(), Body::None),
    ];
    assert!(corpus.len() >= 40);
    let mut statuses = Vec::new();
    for (method, path, body) in corpus {
        let mut req = app
            .http
            .request(method.clone(), format!("{}{path}", app.base))
            .bearer_auth(&t.key);
        req = match body {
            Body::Raw(ct, s) => req.header("content-type", ct).body(s),
            Body::Bytes(ct, b) => req.header("content-type", ct).body(b),
            Body::Json(v) => req.json(&v),
            Body::None => req,
        };
        let resp = req.send().await.expect("the server answers");
        let status = resp.status();
        let body = resp.text().await.unwrap();
        assert!(
            status.is_client_error(),
            "{method} {path} -> {status} {body}"
        );
        if status != reqwest::StatusCode::METHOD_NOT_ALLOWED {
            let v: serde_json::Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("{method} {path}: not JSON: {body}"));
            assert!(v["error"]["code"].is_string(), "{method} {path}: {body}");
            assert!(
                !body.to_lowercase().contains("sqlx")
                    && !body.contains("SQLSTATE")
                    && !body.contains("duplicate key"),
                "{body}"
            );
        }
        statuses.push(status.as_u16());
    }
    let mut after = Vec::new();
    for table in tables {
        after.push(app.count(table).await);
    }
    assert_eq!(before, after, "rows written by bad input");
    assert!(
        statuses.contains(&413)
            && statuses.contains(&415)
            && statuses.contains(&400)
            && statuses.contains(&422)
    );
}
