//! Retention: export archives and their records go once older than the period (a pending
//! deletion's export stays); a tenant deleted longer ago than the period loses its personal
//! data from the platform's records.

use psa_models::exports::ExportStore;
use psa_models::retention;

use super::*;

#[tokio::test]
async fn old_exports_go_and_a_deleted_tenants_personal_data_is_redacted() {
    let db = db().await;
    let dir = std::env::temp_dir().join(format!("psa-retention-{}", uuid::Uuid::new_v4()));
    let store = ExportStore::local(&dir).unwrap();
    let gone = TenantId::new();
    let keep = chrono::Duration::days(30);
    let export = |name: &str, age_days: i64| {
        let (pool, name) = (db.pool.clone(), name.to_owned());
        let dir = dir.clone();
        async move {
            std::fs::write(dir.join(&name), b"archive").unwrap();
            let id = uuid::Uuid::now_v7();
            sqlx::query(
                "INSERT INTO tenant_exports (export_id, tenant_id, requested_by, purpose, status, \
                                             location, created_at) \
                 VALUES ($1, $2, 'test', 'request', 'completed', $3, \
                         now() - make_interval(days => $4))",
            )
            .bind(id)
            .bind(gone)
            .bind(&name)
            .bind(age_days as i32)
            .execute(&pool)
            .await
            .unwrap();
            id
        }
    };
    let old = export("old.tar.gz", 40).await;
    let recent = export("recent.tar.gz", 5).await;
    let held = export("held.tar.gz", 40).await;
    // A pending deletion holds its export however old; a deletion ended 40 days ago has its
    // tenant's personal data redacted.
    for (wf, status, export, ended_days) in [
        ("wf-pending", "pending", held, None::<i32>),
        ("wf-deleted", "deleted", recent, Some(40)),
    ] {
        sqlx::query(
            "INSERT INTO tenant_deletions (workflow_id, tenant_id, tenant_name, reason, \
                 requested_by, delete_after, status, export_id, ended_at) \
             VALUES ($1, $2, 'Gone Co', 'left', 'test', now(), $3, $4, \
                     now() - make_interval(days => $5))",
        )
        .bind(wf)
        .bind(if status == "pending" {
            TenantId::new()
        } else {
            gone
        })
        .bind(status)
        .bind(export)
        .bind(ended_days.unwrap_or(0))
        .execute(&db.pool)
        .await
        .unwrap();
    }
    sqlx::query(
        "INSERT INTO tenant_provisioning (workflow_id, tenant_id, tenant_name, admin_email, \
                                          requested_by) \
         VALUES ('tenant-creation-gone', $1, 'Gone Co', 'pat@gone.example', 'test')",
    )
    .bind(gone)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO events (event_id, event_type, tenant_id, data) VALUES ($1, 'tenant.created', $2, \
         '{\"name\": \"Gone Co\", \"admin\": {\"email\": \"pat@gone.example\", \"full_name\": \"Pat Gone\"}}')",
    )
    .bind(uuid::Uuid::now_v7())
    .bind(gone)
    .execute(&db.pool)
    .await
    .unwrap();

    // The billing system's events: one from 40 days ago goes, one from today stays.
    sqlx::query(
        "INSERT INTO billing_events (event_id, event_type, created, outcome, received_at) VALUES \
         ('evt_old', 'invoice.paid', now() - interval '40 days', 'applied', \
          now() - interval '40 days'), \
         ('evt_new', 'invoice.paid', now(), 'applied', now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();

    let done = retention::expire(&db.pool, &store, keep).await.unwrap();
    assert_eq!(
        done,
        retention::Expired {
            exports: 1,
            tenants_redacted: 1,
            billing_events: 1,
        }
    );
    let kept: Vec<String> = sqlx::query_scalar("SELECT event_id FROM billing_events")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(kept, ["evt_new"]);
    let left: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT export_id FROM tenant_exports ORDER BY 1")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected = vec![recent, held];
    expected.sort();
    assert_eq!(
        left, expected,
        "the old export went, the recent and the held stayed"
    );
    assert!(!left.contains(&old));
    assert!(!dir.join("old.tar.gz").exists());
    assert!(dir.join("held.tar.gz").exists() && dir.join("recent.tar.gz").exists());
    let email: String =
        sqlx::query_scalar("SELECT admin_email FROM tenant_provisioning WHERE tenant_id = $1")
            .bind(gone)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(email, "redacted");
    let data: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM events WHERE tenant_id = $1")
            .bind(gone)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        data,
        serde_json::json!({"name": "Gone Co", "admin": {"email": "redacted", "full_name": "redacted"}})
    );
    // A second pass has nothing left to do.
    assert_eq!(
        retention::expire(&db.pool, &store, keep).await.unwrap(),
        retention::Expired::default()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A "delete now" still pending an hour after its confirmation is stuck, though its deadline is
/// weeks away: the overdue count (the alert `PsaTenantDeletionOverdue`) says so.
#[tokio::test]
async fn a_confirmed_deletion_still_pending_an_hour_later_is_overdue() {
    let db = db().await;
    for (wf, delete_after_days, confirmed_hours_ago) in [
        ("wf-waiting", 30, None),
        ("wf-confirmed-now", 30, Some(0)),
        ("wf-confirmed-stuck", 30, Some(2)),
        ("wf-past-deadline", -1, None),
    ] {
        sqlx::query(
            "INSERT INTO tenant_deletions (workflow_id, tenant_id, tenant_name, reason, \
                 requested_by, delete_after, status, export_id, confirmed_at, confirmed_by) \
             VALUES ($1, $2, 'Gone Co', 'left', 'test', now() + make_interval(days => $3), \
                     'pending', $4, now() - make_interval(hours => $5), \
                     CASE WHEN $5::int IS NULL THEN NULL ELSE 'user:test' END)",
        )
        .bind(wf)
        .bind(TenantId::new())
        .bind(delete_after_days)
        .bind(uuid::Uuid::now_v7())
        .bind(confirmed_hours_ago)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        psa_models::lifecycle::deletion_backlog(&mut conn)
            .await
            .unwrap(),
        (4, 2)
    );
}
