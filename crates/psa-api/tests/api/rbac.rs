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

/// Every documented endpoint (from the route table: a new endpoint joins this test or fails it),
/// called by a user whose roles grant nothing and by a client-portal user: 403 `forbidden`, and
/// not a row written anywhere.
#[tokio::test]
async fn every_endpoint_refuses_callers_without_the_permission_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    // In the management tenant, so that the provisioning endpoints reach their permission check.
    sqlx::query("UPDATE tenants SET is_management = true WHERE tenant = $1")
        .bind(t.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let admin = Some(t.key.as_str());
    let (_, co) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            admin,
            Some(json!({"company_name": "Co"})),
        )
        .await;
    let company = co["company_id"].as_str().unwrap().to_owned();
    let (_, ct) = app
        .call(
            Method::POST,
            "/api/v1/contacts",
            admin,
            Some(json!({"full_name": "C", "email": "c@co.example", "company_id": company})),
        )
        .await;
    let contact = ct["contact_name_id"].as_str().unwrap().to_owned();
    let (_, tag) = app
        .call(
            Method::POST,
            "/api/v1/tags",
            admin,
            Some(json!({"tag_text": "VIP", "tagged_id": company, "tagged_type": "company"})),
        )
        .await;
    let mapping = tag["mapping_id"].as_str().unwrap().to_owned();

    let mut tx = app.db.pool.begin().await.unwrap();
    let nobody = psa_models::users::create(
        &mut tx,
        t.tenant,
        psa_models::users::NewUser {
            first_name: "No".into(),
            last_name: "Roles".into(),
            email: "nobody@staff.example".into(),
            user_type: psa_models::users::UserType::Internal,
            roles: vec![],
        },
        Default::default(),
    )
    .await
    .unwrap();
    let portal = psa_models::users::create(
        &mut tx,
        t.tenant,
        psa_models::users::NewUser {
            first_name: "Portal".into(),
            last_name: "User".into(),
            email: "portal@customer.example".into(),
            user_type: psa_models::users::UserType::Client,
            roles: vec!["User".into()],
        },
        Default::default(),
    )
    .await
    .unwrap();
    let mut keys = Vec::new();
    for u in [&nobody, &portal] {
        let k = psa_api::auth::create_api_key(&mut tx, t.tenant, u.user.user_id, None)
            .await
            .unwrap();
        keys.push(k.key.expose_secret().to_owned());
    }
    tx.commit().await.unwrap();

    // A valid request for every documented operation (the body's shape is checked before the
    // permission, so it must be right to reach the check).
    let body = |method: &str, path: &str| -> Option<serde_json::Value> {
        Some(match (method, path) {
            ("post", "/api/v1/companies") => json!({"company_name": "Denied"}),
            ("patch", "/api/v1/companies/{company_id}") => json!({"notes": "denied"}),
            ("post", "/api/v1/contacts") => json!({"full_name": "D", "email": "d@denied.example"}),
            ("patch", "/api/v1/contacts/{contact_name_id}") => json!({"notes": "denied"}),
            ("post", "/api/v1/tags") => {
                json!({"tag_text": "VIP", "tagged_id": company, "tagged_type": "company"})
            }
            ("post", "/api/v1/tenants") => json!({
                "tenant_name": "Denied",
                "admin_user": {"first_name": "D", "last_name": "D", "email": "d@denied.example"}
            }),
            ("post", "/api/v1/users") => json!({
                "first_name": "D", "last_name": "D", "email": "d@denied.example", "role": "Admin"
            }),
            ("patch", "/api/v1/users/{id}") => json!({"role": "Admin"}),
            ("patch", "/api/v1/tenants/{id}") => json!({"slug": "denied-slug"}),
            ("patch", "/api/v1/security-policy") => json!({"mfa_required": true}),
            ("post", "/api/v1/tenants/{id}/suspend") => json!({"reason": "denied"}),
            ("post", "/api/v1/tenants/{id}/cancel") => json!({"reason": "denied"}),
            ("post", "/api/v1/webhook-endpoints") => json!({"url": "https://hooks.denied.example"}),
            ("patch", "/api/v1/webhook-endpoints/{id}") => json!({"enabled": false}),
            ("post", "/api/v1/customers/repairs") => json!({"dry_run": true}),
            // An issuer nobody answers at: the permission is checked before any call out.
            ("put", "/api/v1/sso/connection") => {
                json!({"issuer": "https://sso.denied.example", "client_id": "psa"})
            }
            ("post", "/api/v1/sso/domains") => json!({"domain": "denied.example"}),
            ("post", "/api/v1/plans") => json!({"code": "denied", "name": "Denied"}),
            ("patch", "/api/v1/plans/{code}") => json!({"name": "Denied"}),
            ("post", "/api/v1/tenants/{id}/subscription") => json!({"plan": "standard"}),
            ("post", "/api/v1/tenants/{id}/trial/extend") => json!({"days": 7}),
            ("post", "/api/v1/tenants/{id}/support-sessions") => json!({"reason": "denied"}),
            ("post", p)
                if p.ends_with("/deactivate")
                    || p.ends_with("/reactivate")
                    || p.ends_with("/resend-invite")
                    || p.ends_with("/restore")
                    || p.ends_with("/export")
                    || p.ends_with("/imports")
                    || p.ends_with("/rotate-secret")
                    || p.ends_with("/test")
                    || p.ends_with("/retry")
                    || p.ends_with("/revoke-api-keys")
                    || p.ends_with("/reset-mfa")
                    || p.ends_with("/end")
                    || p.ends_with("/verify") =>
            {
                return None;
            }
            ("get" | "delete", _) => return None,
            other => panic!("no request for {other:?}: add one to this test"),
        })
    };
    // Open to any caller by design: logging in (and its second step, with a passkey, or starting
    // one at the organisation's provider),
    // ending one's own session(s), changing one's own password, second factor or passkeys, and
    // the links (their token is
    // the credential), and the billing system's webhook (its signature is).
    let open = [
        "/api/v1/auth/login",
        "/api/v1/auth/mfa",
        "/api/v1/auth/mfa/totp",
        "/api/v1/auth/mfa/totp/confirm",
        "/api/v1/auth/mfa/passkey",
        "/api/v1/auth/passkeys/options",
        "/api/v1/auth/passkeys",
        "/api/v1/auth/passkeys/{id}",
        "/api/v1/auth/passkey/options",
        "/api/v1/auth/passkey",
        "/api/v1/auth/sessions",
        "/api/v1/auth/sessions/{id}",
        "/api/v1/auth/logout",
        "/api/v1/auth/logout-all",
        "/api/v1/auth/password",
        "/api/v1/auth/password-reset",
        "/api/v1/auth/password-reset/accept",
        "/api/v1/auth/invitations/accept",
        "/api/v1/auth/sso/start",
        // The billing system's webhook: its signature is the credential (billing tests).
        "/api/v1/billing/stripe/webhook",
    ];
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let snapshot = || async {
        let mut counts = Vec::new();
        for table in &tables {
            counts.push((table.clone(), app.count(table).await));
        }
        counts
    };
    let before = snapshot().await;
    let (_, doc) = psa_api::api_routes();
    let mut checked = 0;
    for (path, item) in &doc.paths.paths {
        if open.contains(&path.as_str()) {
            continue;
        }
        let item = serde_json::to_value(item).unwrap();
        for method in ["get", "post", "patch", "put", "delete"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path
                .replace("{company_id}", &company)
                .replace("{contact_name_id}", &contact)
                .replace("{mapping_id}", &mapping)
                .replace("{workflow_id}", "tenant-creation-denied")
                .replace("{export_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{delivery_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{session_id}", &uuid::Uuid::new_v4().to_string())
                .replace("{id}", &uuid::Uuid::new_v4().to_string())
                .replace("{domain}", "denied.example")
                .replace("{code}", "standard");
            // Required query parameters (checked before the permission, like bodies).
            let concrete = match (method, path.as_str()) {
                ("get", "/api/v1/tags") => {
                    format!("{concrete}?tagged_type=company&tagged_id={company}")
                }
                _ => concrete,
            };
            let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            for key in &keys {
                let r = app
                    .call(m.clone(), &concrete, Some(key), body(method, path))
                    .await;
                assert_eq!(r.0, StatusCode::FORBIDDEN, "{method} {path}: {}", r.1);
                assert_eq!(r.1["error"]["code"], "forbidden", "{method} {path}");
                checked += 1;
            }
        }
    }
    assert!(
        checked >= 2 * 12,
        "{checked} calls: the route table was read"
    );
    assert_eq!(
        snapshot().await,
        before,
        "a refused request wrote something"
    );
}
