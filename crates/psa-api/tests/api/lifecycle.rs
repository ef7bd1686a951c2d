//! The lifecycle endpoints: a suspended tenant's users are refused (login, sessions, API keys)
//! and get access back on reactivation; the customer record follows; the management tenant and
//! callers outside it are refused; the tenant list filters by status; an export's row counts
//! are the database's.

use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

/// A served app whose "Mgmt" tenant is the management tenant, and a customer tenant "Acme"
/// tracked as its customer (by reconcile). The API runs as its production login role, so a
/// privilege the handlers lack fails here.
pub(crate) async fn platform() -> (TestApp, TenantFixture, TenantFixture) {
    platform_with(test_config()).await
}

/// The platform served with `config`.
pub(crate) async fn platform_with(
    config: psa_api::Config,
) -> (TestApp, TenantFixture, TenantFixture) {
    let mut app = TestApp::unserved().await;
    let mgmt = app.tenant("Mgmt").await;
    sqlx::query("UPDATE tenants SET is_management = true WHERE tenant = $1")
        .bind(mgmt.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let acme = app.tenant("Acme").await;
    let tracking = psa_workflows::TrackingSettings {
        enabled: true,
        management_tenant_id: Some(mgmt.tenant),
        tag_name: psa_models::validate::TagText::parse("PSA Customer").unwrap(),
    };
    let report =
        psa_workflows::reconcile::reconcile(&app.db.pool, &tracking, &Default::default(), false)
            .await
            .unwrap();
    assert_eq!(report.created, 1, "{report:?}");
    let (pool, _) = app.api_login_pool().await;
    app.serve(pool, config, None).await;
    (app, mgmt, acme)
}

/// Where PSA_SECRET_KEY is not set, no archive could be encrypted: an export is refused before
/// anything is read or recorded, and says why.
#[tokio::test]
async fn without_the_secret_key_an_export_is_refused_and_nothing_recorded() {
    let mut config = test_config();
    config.webhooks.key = None;
    let (app, mgmt, acme) = platform_with(config).await;
    let audit_before = app.count("audit_log").await;
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/export", acme.tenant),
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PSA_SECRET_KEY"),
        "{}",
        r.1
    );
    assert_eq!(app.count("tenant_exports").await, 0);
    assert_eq!(app.count("audit_log").await, audit_before);
}

async fn login(app: &TestApp, t: &TenantFixture) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"tenant_id": t.tenant, "email": t.admin_email, "password": t.admin_password})),
    )
    .await
}

#[tokio::test]
async fn suspension_refuses_every_credential_and_reactivation_gives_them_back() {
    let (app, mgmt, acme) = platform().await;
    let m = Some(mgmt.key.as_str());
    let session = login(&app, &acme).await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, shown) = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{}", acme.tenant),
            m,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{shown}");
    assert_eq!(shown["status"], "active");
    assert_eq!(shown["customer"]["tracking"], "tracked");
    assert_eq!(shown["deletion"], Value::Null);

    // A reason is required; nothing changes without one.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", acme.tenant),
            m,
            Some(json!({"reason": "  "})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let (status, change) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", acme.tenant),
            m,
            Some(json!({"reason": "invoice 42 unpaid"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(change["status_before"], "active");
    assert_eq!(change["tenant"]["status"], "suspended");
    assert_eq!(change["tenant"]["status_reason"], "invoice 42 unpaid");
    assert_eq!(change["customer_record"], "updated");

    // Every way in is refused: the API key, the session, a new login.
    for token in [acme.key.as_str(), session.as_str()] {
        let r = app
            .call(Method::GET, "/api/v1/companies", Some(token), None)
            .await;
        assert_error(&r, StatusCode::FORBIDDEN, "tenant_inactive");
    }
    assert_error(
        &login(&app, &acme).await,
        StatusCode::FORBIDDEN,
        "tenant_inactive",
    );
    // The customer company carries the tag and the status.
    let (props, tags): (Value, Vec<String>) = sqlx::query_as(
        "SELECT c.properties, array_agg(d.tag_text ORDER BY d.tag_text) FROM companies c \
         JOIN tag_mappings m ON m.tenant = c.tenant AND m.tagged_id = c.company_id \
         JOIN tag_definitions d ON d.tenant = m.tenant AND d.tag_id = m.tag_id \
         WHERE c.tenant = $1 AND c.properties ->> 'tenant_id' = $2 GROUP BY c.properties",
    )
    .bind(mgmt.tenant)
    .bind(acme.tenant.to_string())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(props["tenant_status"], "suspended");
    assert_eq!(tags, ["PSA Customer", "Suspended"]);
    // The list filters by status.
    let (_, page) = app
        .call(Method::GET, "/api/v1/tenants?status=suspended", m, None)
        .await;
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["tenant_id"], acme.tenant.to_string());
    assert_eq!(items[0]["status"], "suspended");

    let (status, change) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/reactivate", acme.tenant),
            m,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{change}");
    assert_eq!(change["tenant"]["status"], "active");
    // The same credentials work again.
    for token in [acme.key.as_str(), session.as_str()] {
        let r = app
            .call(Method::GET, "/api/v1/companies", Some(token), None)
            .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    }
    assert_eq!(login(&app, &acme).await.0, StatusCode::OK);
    // Audited in both tenants, with the reason.
    let audited: Vec<(String, Value)> = sqlx::query_as(
        "SELECT action, details FROM audit_log WHERE entity_type = 'tenant' AND entity_id = $1 \
           AND tenant = $2 ORDER BY created_at",
    )
    .bind(acme.tenant.0)
    .bind(mgmt.tenant)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let actions: Vec<&str> = audited.iter().map(|a| a.0.as_str()).collect();
    assert_eq!(actions, ["suspend", "reactivate"]);
    assert_eq!(audited[0].1["reason"], "invoice 42 unpaid");
    assert_eq!(audited[0].1["before"], "active");
}

#[tokio::test]
async fn the_management_tenant_and_callers_outside_it_are_refused() {
    let (app, mgmt, acme) = platform().await;
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", mgmt.tenant),
            Some(&mgmt.key),
            Some(json!({"reason": "no"})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "management_tenant");
    // A customer tenant's admin cannot suspend anyone, itself included.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", acme.tenant),
            Some(&acme.key),
            Some(json!({"reason": "no"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // A tenant that does not exist.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", uuid::Uuid::new_v4()),
            Some(&mgmt.key),
            Some(json!({"reason": "no"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    // Reactivating an active tenant: the transition does not exist.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/reactivate", acme.tenant),
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "tenant_state");
    let statuses: Vec<String> = sqlx::query_scalar("SELECT status FROM tenants ORDER BY status")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(statuses, ["active", "active"]);
}

#[tokio::test]
async fn an_export_counts_the_rows_the_database_has_and_its_archive_downloads() {
    let (app, mgmt, acme) = platform().await;
    let m = Some(mgmt.key.as_str());
    // Credentials a tenant keeps in its settings: a mail provider's API key, an integration's
    // token in free-form settings. None of them may leave in an export.
    sqlx::query(
        "INSERT INTO tenant_email_settings (tenant, provider_configs) \
         VALUES ($1, '{\"sendgrid\": {\"api_key\": \"SG.provider-key-must-not-leave\"}}')",
    )
    .bind(acme.tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tenant_settings (tenant, settings) VALUES ($1, '{\"crm\": \
           {\"url\": \"https://crm.example\", \"access_token\": \"integration-token-must-not-leave\"}}') \
         ON CONFLICT (tenant) DO UPDATE SET settings = EXCLUDED.settings",
    )
    .bind(acme.tenant)
    .execute(&app.db.pool)
    .await
    .unwrap();
    let (status, export) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/export", acme.tenant),
            m,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{export}");
    assert_eq!(export["status"], "completed");
    for (table, entry) in export["manifest"]["tables"].as_object().unwrap() {
        let n: i64 = sqlx::query_scalar(&format!(
            "SELECT count(*) FROM \"{table}\" WHERE tenant = $1"
        ))
        .bind(acme.tenant)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert_eq!(entry["rows"], n, "{table}");
    }
    assert!(
        export["manifest"]["tables"]["users"]["rows"]
            .as_i64()
            .unwrap()
            >= 1
    );
    let id = export["export_id"].as_str().unwrap();
    let (status, got) = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{}/exports/{id}", acme.tenant),
            m,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["bytes"], export["bytes"]);
    let archive = app
        .http
        .get(format!(
            "{}/api/v1/tenants/{}/exports/{id}/archive",
            app.base, acme.tenant
        ))
        .bearer_auth(&mgmt.key)
        .send()
        .await
        .unwrap();
    assert_eq!(archive.status(), StatusCode::OK);
    let bytes = archive.bytes().await.unwrap();
    assert_eq!(bytes.len() as i64, export["bytes"].as_i64().unwrap());
    assert_eq!(&bytes[..2], &[0x1f, 0x8b], "gzip");
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text)
        .unwrap();
    for secret in [
        "SG.provider-key-must-not-leave",
        "integration-token-must-not-leave",
        "provider_configs\":",
        "hashed_password\":",
        "key_hash\":",
    ] {
        assert!(!text.contains(secret), "{secret} is in the export");
    }
    assert!(
        text.contains("https://crm.example"),
        "the settings themselves are exported"
    );
    let left_out = &export["manifest"]["tables"]["tenant_email_settings"]["left_out"];
    assert!(
        left_out
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "provider_configs"),
        "{left_out}"
    );
    // Another tenant's id with this export: not found.
    let r = app
        .call(
            Method::GET,
            &format!("/api/v1/tenants/{}/exports/{id}", mgmt.tenant),
            m,
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

/// Who confirmed a deletion is on record before anything is signalled: with the deletion
/// service unreachable, `DELETE` answers 503 and the `confirm_delete` entry is there.
#[tokio::test]
async fn a_delete_is_recorded_and_audited_when_the_deletion_service_is_down() {
    let (app, mgmt, acme) = platform().await;
    let settings = psa_models::lifecycle::Settings {
        management_tenant_id: mgmt.tenant,
        customer_tag: psa_models::validate::TagText::parse("PSA Customer").unwrap(),
        tags: Default::default(),
    };
    let workflow_id = format!("tenant-deletion-{}", uuid::Uuid::new_v4());
    let mut tx = app.db.pool.begin().await.unwrap();
    psa_models::lifecycle::cancel(
        &mut tx,
        &settings,
        acme.tenant,
        "closing the account",
        chrono::Duration::days(30),
        &workflow_id,
        uuid::Uuid::new_v4(),
        &psa_models::audit::Actor::Platform("worker"),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let (status, session) = login(&app, &mgmt).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = session["token"].as_str().unwrap();
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/tenants/{}", acme.tenant),
            Some(token),
            None,
        )
        .await;
    // The one rule when Temporal is down: recorded (and audited) now, carried out by the
    // worker's sweeper when it can.
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (confirmed_by, confirmed_at): (Option<String>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as(
            "SELECT confirmed_by, confirmed_at FROM tenant_deletions WHERE workflow_id = $1",
        )
        .bind(&workflow_id)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(confirmed_by, Some(format!("user:{}", mgmt.admin)));
    assert!(confirmed_at.is_some());
    let confirmed: Vec<serde_json::Value> = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE tenant = $1 AND action = 'confirm_delete' \
         AND entity_id = $2",
    )
    .bind(mgmt.tenant)
    .bind(acme.tenant)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(confirmed.len(), 1, "{confirmed:?}");
    assert_eq!(confirmed[0]["workflow_id"], workflow_id.as_str());
}

#[tokio::test]
async fn the_audit_log_says_which_credential_did_what_and_filters_by_it() {
    let (app, mgmt, acme) = platform().await;
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", acme.tenant),
            Some(&mgmt.key),
            Some(serde_json::json!({"reason": "unpaid"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // By the kind of actor: the API key's entry, naming the user behind it.
    let (status, page) = app
        .call(
            Method::GET,
            "/api/v1/audit-log?actor_kind=api_key&action=suspend",
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{page}");
    assert_eq!(items[0]["actor_kind"], "api_key");
    assert_eq!(items[0]["actor_user"], mgmt.admin.to_string());
    assert_eq!(items[0]["actor_email"], mgmt.admin_email.as_str());
    assert_eq!(items[0]["entity_id"], acme.tenant.to_string());
    // By the user's id: what their keys did too.
    let (_, by_user) = app
        .call(
            Method::GET,
            &format!("/api/v1/audit-log?actor_id={}&action=suspend", mgmt.admin),
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_eq!(by_user["items"].as_array().unwrap().len(), 1, "{by_user}");
    // Nobody at the command line suspended anything (the fixtures' keys were made there).
    let (_, none) = app
        .call(
            Method::GET,
            "/api/v1/audit-log?actor_kind=operator&action=suspend",
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_eq!(none["items"], serde_json::json!([]));
    // A kind that does not exist is the caller's mistake, named.
    let (status, body) = app
        .call(
            Method::GET,
            "/api/v1/audit-log?actor_kind=robot",
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["actor_kind"].is_string(), "{body}");
}

/// The customer link belongs to the platform: a management Finance user (who has
/// `client:create|update`) cannot link a company to a tenant, re-point or mark a customer
/// record, or delete one; each refusal names what it refuses, and nothing changes.
#[tokio::test]
async fn staff_cannot_rewrite_or_remove_a_customer_record() {
    let (app, mgmt, acme) = platform().await;
    let finance = app.user_with_role(mgmt.tenant, "Finance").await;
    let f = Some(finance.as_str());
    let (company_id, before): (uuid::Uuid, serde_json::Value) = sqlx::query_as(
        "SELECT company_id, properties FROM companies WHERE tenant = $1 \
           AND properties ->> 'tenant_id' = $2",
    )
    .bind(mgmt.tenant)
    .bind(acme.tenant.to_string())
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let companies_before: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();

    // 1. A new company claiming to be a tenant's customer record.
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/companies",
            f,
            Some(json!({"company_name": "Impostor", "properties": {"tenant_id": acme.tenant}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(
        body["error"]["fields"]["properties.tenant_id"].is_string(),
        "{body}"
    );
    // 2. Re-pointing or marking the customer record.
    for patch in [
        json!({"properties": {"tenant_status": "deleted"}}),
        json!({"properties": {"tenant_id": uuid::Uuid::new_v4()}}),
        json!({"properties": {"delete_after": "2020-01-01T00:00:00Z"}}),
    ] {
        let (status, body) = app
            .call(
                Method::PATCH,
                &format!("/api/v1/companies/{company_id}"),
                f,
                Some(patch),
            )
            .await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    }
    // Other properties stay the staff's to edit.
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/companies/{company_id}"),
            f,
            Some(json!({"notes": "key account"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // 3. Deleting it.
    let (status, body) = app
        .call(
            Method::DELETE,
            &format!("/api/v1/companies/{company_id}"),
            f,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&acme.tenant.to_string()),
        "{body}"
    );

    let after: serde_json::Value = sqlx::query_scalar(
        "SELECT properties FROM companies WHERE tenant = $1 AND company_id = $2",
    )
    .bind(mgmt.tenant)
    .bind(company_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(after, before, "the record is as it was");
    let companies_after: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(companies_after, companies_before);

    // The database refuses the same as the API's confined role, whatever the code path, unless
    // the transaction is the platform's.
    let mut tx = psa_models::db::begin_tenant(&app.db.pool, mgmt.tenant)
        .await
        .unwrap();
    let e = sqlx::query(
        "UPDATE companies SET properties = properties || '{\"tenant_status\": \"deleted\"}' \
         WHERE tenant = $1 AND company_id = $2",
    )
    .bind(mgmt.tenant)
    .bind(company_id)
    .execute(&mut *tx)
    .await
    .unwrap_err();
    assert_eq!(psa_models::Error::from(e).code(), "validation_error");
    drop(tx);
    let mut tx = psa_models::db::begin_tenant(&app.db.pool, mgmt.tenant)
        .await
        .unwrap();
    let e = sqlx::query("DELETE FROM companies WHERE tenant = $1 AND company_id = $2")
        .bind(mgmt.tenant)
        .bind(company_id)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(psa_models::Error::from(e).code(), "conflict");
    drop(tx);
    // A canceled tenant's record stays inactive: staff cannot reactivate it by hand.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/cancel", acme.tenant),
            Some(&mgmt.key),
            Some(json!({"reason": "leaving", "grace_seconds": 3600})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = app
        .call(
            Method::PATCH,
            &format!("/api/v1/companies/{company_id}"),
            f,
            Some(json!({"is_inactive": false})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body["error"]["fields"]["is_inactive"].is_string(), "{body}");
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/restore", acme.tenant),
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The lifecycle (the platform's path, as the same role) still marks it.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{}/suspend", acme.tenant),
            Some(&mgmt.key),
            Some(json!({"reason": "unpaid"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["customer_record"], "updated");
}
