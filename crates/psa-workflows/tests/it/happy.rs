use psa_workflows::{Outcome, TrackingState as TrackingStatus};
use secrecy::ExposeSecret;

use super::*;

#[tokio::test]
async fn happy_path_creates_the_tenant_and_its_customer_records() {
    let env = Env::start().await;
    let result = env.run(env.input("Initech")).await;
    assert_eq!(result.status, Outcome::Completed, "{result:?}");
    let tenant = result.tenant_id.unwrap();
    let tracking = &result.customer_tracking;
    assert_eq!(tracking.status, TrackingStatus::Completed, "{tracking:?}");
    assert!(tracking.error.is_none() && tracking.warnings.is_empty());
    assert!(!result.rollback.performed);

    // The tenant's own rows.
    let rows: std::collections::HashMap<String, i64> =
        env.rows_of(tenant).await.into_iter().collect();
    for (table, n) in [
        ("tenants", 1),
        ("companies", 1),
        ("company_locations", 1),
        ("roles", 8),
        ("users", 1),
        ("user_roles", 1),
        ("tax_regions", 1),
        ("tax_rates", 1),
        ("tenant_settings", 1),
        ("tenant_email_settings", 1),
        ("tenant_companies", 1),
    ] {
        assert_eq!(rows.get(table).copied(), Some(n), "{table}: {rows:?}");
    }
    assert!(rows["permissions"] > 100 && rows["role_permissions"] > 100);
    let (name, licences): (String, Option<i32>) =
        sqlx::query_as("SELECT company_name, licensed_user_count FROM tenants WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!((name.as_str(), licences), ("Initech", Some(10)));

    // The admin has no password; without mail the invitation link reaches the starter sealed,
    // opens with the key, and names the admin.
    assert_eq!(
        result.welcome_email.status,
        psa_workflows::WelcomeStatus::Disabled
    );
    let link = result.invitation_link(&env.key).expect("a sealed link");
    assert!(
        !result
            .invitation_link_sealed
            .as_deref()
            .unwrap()
            .contains("psa_i_")
    );
    let hash: Option<String> =
        sqlx::query_scalar("SELECT hashed_password FROM users WHERE tenant = $1")
            .bind(tenant)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(hash, None);
    let token = link.expose_secret().rsplit('#').next().unwrap().to_owned();
    let mut conn = env.db.pool.acquire().await.unwrap();
    let found = psa_models::auth_tokens::find(
        &mut conn,
        psa_models::auth_tokens::Purpose::Invitation,
        &token,
    )
    .await
    .unwrap();
    assert_eq!(
        (found.tenant, Some(found.user)),
        (tenant, result.admin_user_id)
    );
    drop(conn);

    // In the management tenant: the company with the UUID, the contact, the tag.
    let mgmt = env.mgmt;
    let company_id = tracking.customer_company_id.unwrap();
    let (cname, props, notes): (String, serde_json::Value, String) =
        sqlx::query_as("SELECT company_name, properties, notes FROM companies WHERE tenant = $1 AND company_id = $2")
            .bind(mgmt)
            .bind(company_id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(cname, "Initech");
    assert_eq!(props["tenant_id"], tenant.to_string());
    assert_eq!(props["tenant_name"], "Initech");
    assert_eq!(props["subscription_type"], "psa");
    assert!(notes.contains("Initech"));
    let (email, contact_company, role): (String, uuid::Uuid, String) = sqlx::query_as(
        "SELECT email, company_id, role FROM contacts WHERE tenant = $1 AND contact_name_id = $2",
    )
    .bind(mgmt)
    .bind(tracking.customer_contact_id.unwrap())
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (email.as_str(), contact_company, role.as_str()),
        ("ada@initech.example.com", company_id.0, "Admin")
    );
    let (tag_text, bg, tagged): (String, String, uuid::Uuid) = sqlx::query_as(
        "SELECT d.tag_text, d.background_color, m.tagged_id FROM tag_mappings m \
         JOIN tag_definitions d ON d.tenant = m.tenant AND d.tag_id = m.tag_id WHERE m.tenant = $1",
    )
    .bind(mgmt)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(
        (tag_text.as_str(), bg.as_str(), tagged),
        ("PSA Customer", "#BEC5F4", company_id.0)
    );
    assert_eq!(
        Some(tracking.customer_tag_id.unwrap()),
        sqlx::query_scalar("SELECT tag_id FROM tag_definitions WHERE tenant = $1")
            .bind(mgmt)
            .fetch_optional(&env.db.pool)
            .await
            .unwrap()
    );
    let audits: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant = $1 AND action = 'create'",
    )
    .bind(mgmt)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(audits, 3, "one audit row per customer record");

    // The view after the end, and the provisioning record the run wrote.
    let view = env.workflows.view(&result.workflow_id).await.unwrap();
    assert!(view.finished);
    assert_eq!(view.status, psa_workflows::RunStatus::Completed);
    assert_eq!(view.result.as_ref().unwrap().tenant_id, Some(tenant));
    let state = view.state.unwrap();
    assert_eq!((state.progress, state.tenant_id), (100, Some(tenant)));
    let record = view.record.unwrap();
    assert_eq!(record.tenant_id, Some(tenant.0));
    assert_eq!(record.customer_tracking, TrackingStatus::Completed);
    assert_eq!(record.requested_by, "test");
    assert_eq!(record.tracking_enabled, Some(true));
    assert_eq!(record.management_tenant_id, Some(mgmt.0));
    assert!(record.ended_at.is_some());

    env.check_replay(&result.workflow_id, "happy_path").await;

    // Temporal's history never holds the invitation token in plain text: not in its JSON, not
    // in any payload (payloads are base64 in the JSON history: each is decoded and searched).
    let history = env.temporal_cli(&[
        "workflow",
        "show",
        "-w",
        &result.workflow_id,
        "--output",
        "json",
    ]);
    assert!(
        history.contains("send_welcome_email"),
        "the history was read"
    );
    assert!(!history.contains(&token), "plaintext token in history");
    use base64::Engine;
    fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) => out.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
            serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    for line in history.lines().filter(|l| l.trim_start().starts_with('{')) {
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(line) {
            strings(&v, &mut all);
        }
    }
    if all.is_empty() {
        strings(&serde_json::from_str(&history).unwrap(), &mut all);
    }
    let decoded: Vec<Vec<u8>> = all
        .iter()
        .filter_map(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .collect();
    assert!(decoded.len() > 5, "payloads were decoded");
    let needle = token.as_bytes();
    assert!(
        !decoded
            .iter()
            .any(|d| d.windows(needle.len()).any(|w| w == needle)),
        "the token is in a payload"
    );
}

#[tokio::test]
async fn tracking_disabled_or_skipped_writes_nothing_in_the_management_tenant() {
    // The kill switch is the worker's: a starter cannot turn tracking back on.
    let env = Env::start_with(|mgmt| TrackingSettings {
        enabled: false,
        ..tracking_on(mgmt)
    })
    .await;
    let r = env.run(env.input("Quiet")).await;
    assert_eq!(
        (r.status, r.customer_tracking.status),
        (Outcome::Completed, TrackingStatus::Disabled)
    );
    assert_eq!(r.tracking_settings.as_ref().map(|t| t.enabled), Some(false));
    assert_eq!(
        env.record(&r.workflow_id).await.tracking_enabled,
        Some(false)
    );
    let mut input = env.input("Skipper");
    input.skip_customer_tracking = true;
    let r2 = env.run(input).await;
    assert_eq!(
        (r2.status, r2.customer_tracking.status),
        (Outcome::Completed, TrackingStatus::Disabled),
        "disabled by the worker wins over the starter's skip"
    );
    assert!(r2.customer_tracking.customer_company_id.is_none());
    assert_eq!(env.customer_records().await, (0, 0, 0));
    assert_eq!(
        env.rows_of(r.tenant_id.unwrap())
            .await
            .iter()
            .find(|r| r.0 == "users")
            .map(|r| r.1),
        Some(1)
    );
}

#[tokio::test]
async fn the_same_idempotency_key_provisions_one_tenant() {
    let env = Env::start().await;
    let key = psa_workflows::client::IdempotencyKey::parse(&format!(
        "same-key-{}",
        uuid::Uuid::new_v4().simple()
    ))
    .unwrap();
    let start = |name: &str| env.workflows.start(env.input(name), Some(&key), "test");
    let first = start("Once").await.unwrap();
    let second = start("Once").await.unwrap();
    assert_eq!(first, second);
    let r = env.workflows.result(&first).await.unwrap();
    assert_eq!(r.status, Outcome::Completed);
    let third = start("Once").await.unwrap();
    assert_eq!(third, first, "a finished key is not started again");
    // Reusing the key for another request is refused, and starts nothing.
    let refused = start("Twice").await.unwrap_err();
    assert!(
        matches!(refused, psa_workflows::client::StartError::KeyReused { .. }),
        "{refused:?}"
    );
    // The key holds without Temporal: once the run's history is gone (retention), the same key
    // still names the same run and provisions nothing more.
    env.temporal_cli(&["workflow", "delete", "--yes", "-w", &first]);
    // Temporal deletes asynchronously (a system workflow does it): wait up to a minute.
    let mut gone = false;
    for _ in 0..600 {
        if matches!(
            env.workflows.view(&first).await.map(|v| v.result.is_none()),
            Ok(true)
        ) {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gone, "the history was deleted");
    assert_eq!(start("Once").await.unwrap(), first);
    let view = env.workflows.view(&first).await.unwrap();
    assert_eq!(
        (view.finished, view.status, view.result.is_none()),
        (true, psa_workflows::RunStatus::Completed, true),
        "the record answers for the purged run, and no new run began"
    );
    let tenants: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tenants WHERE company_name = 'Once'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(tenants, 1);
    assert_eq!(env.customer_records().await, (1, 1, 1));
}

#[tokio::test]
async fn twenty_concurrent_creations() {
    let env = Env::start().await;
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(env.start_run(env.input(&format!("Concurrent {i}"))).await);
    }
    let results = futures::future::join_all(ids.iter().map(|id| env.workflows.result(id))).await;
    for r in &results {
        let r = r.as_ref().unwrap();
        assert_eq!(
            (r.status, r.customer_tracking.status),
            (Outcome::Completed, TrackingStatus::Completed),
            "{r:?}"
        );
    }
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE NOT is_management")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 20);
    assert_eq!(env.customer_records().await, (20, 20, 20));
    let defs: i64 = sqlx::query_scalar("SELECT count(*) FROM tag_definitions WHERE tenant = $1")
        .bind(env.mgmt)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(defs, 1, "one shared tag definition");
}
