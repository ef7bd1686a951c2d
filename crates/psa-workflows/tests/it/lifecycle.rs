//! The tenant lifecycle with its customer record: suspend, reactivate, cancel, restore, the
//! deletion workflow (deadline and confirmation), export; on the real worker and database.

use std::time::Duration;

use psa_models::lifecycle::{self, TenantStatus};
use psa_models::{TenantId, exports};
use psa_workflows::deletion::{self, Deletions};
use psa_workflows::reconcile;
use serde_json::Value;

use super::*;

fn settings(env: &Env) -> lifecycle::Settings {
    lifecycle::Settings {
        management_tenant_id: env.mgmt,
        customer_tag: TagText::parse("PSA Customer").unwrap(),
        tags: Default::default(),
    }
}

fn deletions(env: &Env) -> Deletions {
    Deletions {
        client: env.workflows.client.clone(),
        task_queue: env.workflows.task_queue.clone(),
        pool: env.db.pool.clone(),
    }
}

async fn provisioned(env: &Env, name: &str) -> TenantId {
    let r = env.run(env.input(name)).await;
    assert_eq!(r.status, psa_workflows::Outcome::Completed, "{r:?}");
    r.tenant_id.unwrap()
}

/// The customer company: (is_inactive, properties, tag texts), and its contacts' is_inactive.
async fn customer(env: &Env, tenant: TenantId) -> (bool, Value, Vec<String>, Vec<bool>) {
    let (id, inactive, props): (uuid::Uuid, bool, Value) = sqlx::query_as(
        "SELECT company_id, is_inactive, properties FROM companies \
         WHERE tenant = $1 AND properties ->> 'tenant_id' = $2",
    )
    .bind(env.mgmt)
    .bind(tenant.to_string())
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    let tags: Vec<String> = sqlx::query_scalar(
        "SELECT d.tag_text FROM tag_mappings m JOIN tag_definitions d \
           ON d.tenant = m.tenant AND d.tag_id = m.tag_id \
         WHERE m.tenant = $1 AND m.tagged_id = $2 ORDER BY d.tag_text",
    )
    .bind(env.mgmt)
    .bind(id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    let contacts: Vec<bool> = sqlx::query_scalar(
        "SELECT is_inactive FROM contacts WHERE tenant = $1 AND company_id = $2 ORDER BY email",
    )
    .bind(env.mgmt)
    .bind(id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    (inactive, props, tags, contacts)
}

async fn status_of(env: &Env, tenant: TenantId) -> Option<String> {
    sqlx::query_scalar("SELECT status FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .fetch_optional(&env.db.pool)
        .await
        .unwrap()
}

async fn audit_actions(env: &Env, tenant: TenantId, in_tenant: TenantId) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE tenant = $1 AND entity_type = 'tenant' \
           AND entity_id = $2 ORDER BY created_at",
    )
    .bind(in_tenant)
    .bind(tenant.0)
    .fetch_all(&env.db.pool)
    .await
    .unwrap()
}

async fn cancel(env: &Env, tenant: TenantId, grace: chrono::Duration) -> String {
    let workflow_id = deletion::new_workflow_id(tenant);
    let mut tx = env.db.pool.begin().await.unwrap();
    let change = lifecycle::cancel(
        &mut tx,
        &settings(env),
        tenant,
        "stopped paying",
        grace,
        &workflow_id,
        uuid::Uuid::now_v7(),
        TESTER,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(change.tenant.status, TenantStatus::Canceled);
    deletions(env).start(&workflow_id).await.unwrap();
    workflow_id
}

async fn wait_deleted(env: &Env, workflow_id: &str, within: Duration) {
    let deadline = std::time::Instant::now() + within;
    loop {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenant_deletions WHERE workflow_id = $1")
                .bind(workflow_id)
                .fetch_one(&env.db.pool)
                .await
                .unwrap();
        if status == "deleted" {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not deleted within {within:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn suspend_and_reactivate_follow_the_customer_record() {
    let env = Env::start().await;
    let tenant = provisioned(&env, "Suspendable").await;
    let mut tx = env.db.pool.begin().await.unwrap();
    let change = lifecycle::suspend(
        &mut tx,
        &settings(&env),
        tenant,
        "  unpaid invoice ",
        TESTER,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (
            change.status_before,
            change.tenant.status,
            change.customer_record.as_str()
        ),
        (TenantStatus::Active, TenantStatus::Suspended, "updated")
    );
    assert_eq!(
        change.tenant.status_reason.as_deref(),
        Some("unpaid invoice")
    );
    let (inactive, props, tags, _) = customer(&env, tenant).await;
    assert!(!inactive);
    assert_eq!(props["tenant_status"], "suspended");
    assert_eq!(tags, ["PSA Customer", "Suspended"]);

    // Suspending again is refused, and changes nothing.
    let mut tx = env.db.pool.begin().await.unwrap();
    let again = lifecycle::suspend(&mut tx, &settings(&env), tenant, "twice", TESTER)
        .await
        .unwrap_err();
    assert_eq!(again.code(), "tenant_state", "{again}");
    drop(tx);

    let mut tx = env.db.pool.begin().await.unwrap();
    lifecycle::reactivate(&mut tx, &settings(&env), tenant, TESTER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (_, props, tags, _) = customer(&env, tenant).await;
    assert_eq!(props["tenant_status"], "active");
    assert_eq!(tags, ["PSA Customer"]);
    assert_eq!(status_of(&env, tenant).await.as_deref(), Some("active"));
    // Audited in the tenant and in the management tenant.
    assert_eq!(
        audit_actions(&env, tenant, tenant).await,
        ["suspend", "reactivate"]
    );
    assert_eq!(
        audit_actions(&env, tenant, env.mgmt).await,
        ["suspend", "reactivate"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_management_tenant_and_a_run_in_flight_are_refused() {
    let env = Env::start().await;
    for verb in ["suspend", "cancel"] {
        let mut tx = env.db.pool.begin().await.unwrap();
        let e = match verb {
            "suspend" => lifecycle::suspend(&mut tx, &settings(&env), env.mgmt, "no", TESTER)
                .await
                .unwrap_err(),
            _ => lifecycle::cancel(
                &mut tx,
                &settings(&env),
                env.mgmt,
                "no",
                chrono::Duration::days(30),
                "wf",
                uuid::Uuid::now_v7(),
                TESTER,
            )
            .await
            .unwrap_err(),
        };
        assert_eq!(e.code(), "management_tenant", "{e}");
        assert!(
            e.to_string().contains("management tenant can never be"),
            "{e}"
        );
    }
    assert_eq!(status_of(&env, env.mgmt).await.as_deref(), Some("active"));
    // A tenant whose provisioning record says `running`.
    let tenant = provisioned(&env, "In Flight").await;
    sqlx::query("UPDATE tenant_provisioning SET status = 'running' WHERE tenant_id = $1")
        .bind(tenant)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let mut tx = env.db.pool.begin().await.unwrap();
    let e = lifecycle::suspend(&mut tx, &settings(&env), tenant, "no", TESTER)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "provisioning_in_flight", "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn cancel_then_restore_leaves_everything_as_before() {
    let env = Env::start().await;
    let tenant = provisioned(&env, "Restorable").await;
    let before = customer(&env, tenant).await;
    let rows_before = env.rows_of(tenant).await;
    let workflow_id = cancel(&env, tenant, chrono::Duration::hours(1)).await;
    let (inactive, props, tags, contacts) = customer(&env, tenant).await;
    assert!(inactive);
    assert_eq!(props["tenant_status"], "canceled");
    assert!(props["delete_after"].is_string(), "{props}");
    assert_eq!(tags, ["Canceled", "PSA Customer"]);
    assert!(contacts.iter().all(|c| *c), "{contacts:?}");

    let mut tx = env.db.pool.begin().await.unwrap();
    let (change, restored_id) = lifecycle::restore(&mut tx, &settings(&env), tenant, TESTER)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(restored_id, workflow_id);
    assert_eq!(change.tenant.status, TenantStatus::Active);
    assert!(change.tenant.deletion.is_none());
    deletions(&env).restored(&workflow_id).await.unwrap();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        env.workflows
            .client
            .get_workflow_handle::<deletion::TenantDeletionWorkflow>(&workflow_id)
            .get_result(Default::default()),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(r.outcome, deletion::DeletionOutcome::Restored);

    let mut after = customer(&env, tenant).await;
    // The status key stays, now `active`.
    assert_eq!(after.1["tenant_status"], "active");
    after.1.as_object_mut().unwrap().remove("tenant_status");
    assert_eq!(after, before);
    // The tenant's own rows: the same, but the audit log's two new rows.
    let rows_after = env.rows_of(tenant).await;
    let mut expected: std::collections::BTreeMap<String, i64> = rows_before.into_iter().collect();
    *expected.entry("audit_log".into()).or_default() += 2;
    assert_eq!(
        rows_after
            .into_iter()
            .collect::<std::collections::BTreeMap<_, _>>(),
        expected
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_short_grace_deletes_every_row_at_the_deadline_and_keeps_the_customer() {
    let env = Env::start().await;
    let tenant = provisioned(&env, "Short Lived").await;
    let other = provisioned(&env, "Stays").await;
    let other_rows = env.rows_of(other).await;
    let workflow_id = cancel(&env, tenant, chrono::Duration::seconds(3)).await;
    wait_deleted(&env, &workflow_id, Duration::from_secs(90)).await;
    assert_eq!(
        env.rows_of(tenant).await,
        Vec::<(String, i64)>::new(),
        "rows of the deleted tenant are left"
    );
    assert_eq!(
        env.rows_of(other).await,
        other_rows,
        "another tenant was touched"
    );
    let (inactive, props, tags, contacts) = customer(&env, tenant).await;
    assert!(inactive);
    assert_eq!(props["tenant_status"], "deleted");
    assert!(props["deleted_at"].is_string(), "{props}");
    assert_eq!(tags, ["Canceled", "PSA Customer"]);
    assert!(contacts.iter().all(|c| *c));
    // History, not an orphan.
    let report = reconcile::reconcile(
        &env.db.pool,
        &tracking_on(env.mgmt),
        &Default::default(),
        true,
    )
    .await
    .unwrap();
    assert!(report.orphans.is_empty(), "{report:?}");
    // The export taken before the deletion, and the audit row of the deletion.
    let (export_id, rows): (uuid::Uuid, Value) = sqlx::query_as(
        "SELECT export_id, deleted_rows FROM tenant_deletions WHERE workflow_id = $1",
    )
    .bind(&workflow_id)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    let mut conn = env.db.pool.acquire().await.unwrap();
    let export = exports::get(&mut conn, export_id).await.unwrap();
    assert_eq!(export.status, "completed");
    let manifest = export.manifest.unwrap().0;
    assert_eq!(manifest.tables["users"].rows, 1);
    assert_eq!(rows["users"], 1);
    assert!(
        audit_actions(&env, tenant, env.mgmt)
            .await
            .contains(&"delete".to_owned())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn confirm_deletes_before_the_deadline() {
    let env = Env::start().await;
    let tenant = provisioned(&env, "Confirmed").await;
    let workflow_id = cancel(&env, tenant, chrono::Duration::days(30)).await;
    deletions(&env)
        .confirm(&workflow_id, "user:test")
        .await
        .unwrap();
    wait_deleted(&env, &workflow_id, Duration::from_secs(60)).await;
    assert_eq!(status_of(&env, tenant).await, None);
    let confirmed: Option<String> =
        sqlx::query_scalar("SELECT confirmed_by FROM tenant_deletions WHERE workflow_id = $1")
            .bind(&workflow_id)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(confirmed.as_deref(), Some("user:test"));
    // Restoring a deleted tenant: there is nothing to restore.
    let mut tx = env.db.pool.begin().await.unwrap();
    let e = lifecycle::restore(&mut tx, &settings(&env), tenant, TESTER)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "not_found", "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_export_has_every_table_with_the_database_row_counts_and_no_secrets() {
    let env = Env::start().await;
    let tenant = provisioned(&env, "Exported").await;
    // A password, so there is a hash to leave out.
    sqlx::query("UPDATE users SET hashed_password = 'argon2-secret-hash' WHERE tenant = $1")
        .bind(tenant)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let archive_key = psa_workflows::secret::archive_key(&env.db.pool, &env.key)
        .await
        .unwrap();
    let store = exports::ExportStore::local(&env.exports)
        .unwrap()
        .with_key(archive_key);
    let id = uuid::Uuid::now_v7();
    exports::begin(
        &env.db.pool,
        id,
        tenant,
        exports::Purpose::Request,
        "test",
        None,
    )
    .await
    .unwrap();
    let done = exports::run(&env.db.pool, &store, id).await.unwrap();
    let manifest = done.manifest.clone().unwrap().0;
    // It names the schema it was made with: the database's latest migration.
    let latest: i64 = sqlx::query_scalar("SELECT max(version) FROM _sqlx_migrations")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(manifest.schema_version, latest);
    // Every table of the catalog is in the manifest, with the database's row count.
    let db_rows: std::collections::BTreeMap<String, i64> =
        env.rows_of(tenant).await.into_iter().collect();
    let mut conn = env.db.pool.acquire().await.unwrap();
    let tables = psa_models::lifecycle::tenant_tables(&mut conn)
        .await
        .unwrap();
    assert_eq!(manifest.tables.keys().cloned().collect::<Vec<_>>(), tables);
    for (table, entry) in &manifest.tables {
        assert_eq!(
            entry.rows as i64,
            db_rows.get(table).copied().unwrap_or(0),
            "{table}"
        );
    }
    assert!(
        db_rows["users"] >= 1 && db_rows["roles"] >= 1,
        "{db_rows:?}"
    );
    assert!(
        manifest.tables["users"]
            .left_out
            .contains(&"hashed_password".to_owned())
    );
    // In the store the archive is encrypted: nothing of the tenant's can be read there.
    let location = done.location.unwrap();
    let stored = std::fs::read(env.exports.join(&location)).unwrap();
    assert!(stored.starts_with(b"age-encryption.org/v1\n"), "{location}");
    assert!(!String::from_utf8_lossy(&stored).contains("Exported"));
    // Decrypted, it is the manifest and one file per table, checksums matching, no secret.
    let archive = env.exports.join("decrypted.tar.gz");
    let bytes = store.download(&location, &archive).await.unwrap();
    assert_eq!(
        bytes as i64,
        done.bytes.unwrap(),
        "the size a download gives"
    );
    // Without the platform key it cannot be read at all.
    let keyless = exports::ExportStore::local(&env.exports).unwrap();
    assert_eq!(
        keyless
            .download(&location, &archive)
            .await
            .unwrap_err()
            .code(),
        "unavailable"
    );
    store.download(&location, &archive).await.unwrap();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(
        std::fs::File::open(&archive).unwrap(),
    ));
    let mut files = std::collections::BTreeMap::new();
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut body).unwrap();
        files.insert(path, body);
    }
    assert!(files.contains_key("manifest.json"));
    for entry in manifest.tables.values() {
        let body = &files[&entry.file];
        use sha2::Digest;
        assert_eq!(format!("{:x}", sha2::Sha256::digest(body)), entry.sha256);
        assert_eq!(
            body.iter().filter(|b| **b == b'\n').count() as u64,
            entry.rows
        );
        let text = String::from_utf8_lossy(body);
        assert!(!text.contains("argon2-secret-hash"), "{}", entry.file);
        assert!(
            !text.contains("token_hash") && !text.contains("key_hash"),
            "{}",
            entry.file
        );
    }
}
