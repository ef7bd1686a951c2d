//! Tenant isolation enforced by the database: under the API's role, with `app.current_tenant`
//! set, a query without a tenant filter sees only that tenant, and writes into another tenant
//! are refused.

use psa_models::companies::{self, NewCompany};
use psa_models::db;

use super::*;

#[tokio::test]
async fn unfiltered_queries_see_only_the_current_tenant() {
    let db = super::db().await;
    let a = seeded_tenant(&db, "A").await;
    let b = seeded_tenant(&db, "B").await;
    let mut conn = db.pool.acquire().await.unwrap();
    for (t, n) in [(a, "A client"), (b, "B client")] {
        companies::create(
            &mut conn,
            t,
            NewCompany {
                company_name: n.into(),
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    }
    drop(conn);

    let mut tx = db::begin_tenant(&db.pool, a).await.unwrap();
    let names: Vec<String> = sqlx::query_scalar("SELECT company_name FROM companies ORDER BY 1")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(names, ["A MSP", "A client"]);
    let tenants_seen: Vec<TenantId> = sqlx::query_scalar("SELECT tenant FROM tenants")
        .fetch_all(&mut *tx)
        .await
        .unwrap();
    assert_eq!(tenants_seen, [a]);
    for table in tenant_tables(&db).await {
        let foreign: i64 =
            sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant <> $1"))
                .bind(a)
                .fetch_one(&mut *tx)
                .await
                .unwrap();
        assert_eq!(foreign, 0, "{table} leaks another tenant's rows");
    }
    // Updates and deletes without a tenant filter touch only A.
    let n = sqlx::query("UPDATE companies SET notes = 'touched'")
        .execute(&mut *tx)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(n, 2);
    tx.commit().await.unwrap();
    let touched_b: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM companies WHERE tenant = $1 AND notes = 'touched'",
    )
    .bind(b)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(touched_b, 0);
}

#[tokio::test]
async fn writes_into_another_tenant_are_refused() {
    let db = super::db().await;
    let a = seeded_tenant(&db, "A").await;
    let b = seeded_tenant(&db, "B").await;
    let mut tx = db::begin_tenant(&db.pool, a).await.unwrap();
    let e = sqlx::query("INSERT INTO companies (tenant, company_name) VALUES ($1, 'Intruder')")
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42501"),
        "{e}"
    );
    drop(tx);
    // Through the model too: the row reaches the insert (no tax lookup to fail first) and row-level
    // security refuses it.
    let mut tx = db::begin_tenant(&db.pool, a).await.unwrap();
    let r = companies::create(
        &mut tx,
        b,
        NewCompany {
            company_name: "Intruder".into(),
            ..Default::default()
        },
        companies::CreateOptions {
            skip_tax_settings: true,
            skip_email_suffix: true,
            ..Default::default()
        },
    )
    .await;
    match &r {
        Err(psa_models::Error::Database(e)) => assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("42501"),
            "{e}"
        ),
        other => panic!("expected the row-level security refusal, got {other:?}"),
    }
    drop(tx);
    assert_eq!(
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM companies WHERE company_name = 'Intruder'"
        )
        .fetch_one(&db.pool)
        .await
        .unwrap(),
        0
    );
    // Moving a row of A into B is refused as well.
    let mut tx = db::begin_tenant(&db.pool, a).await.unwrap();
    let e = sqlx::query("UPDATE companies SET tenant = $1")
        .bind(b)
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(
        e.as_database_error().and_then(|d| d.code()).as_deref(),
        Some("42501"),
        "{e}"
    );
}

#[tokio::test]
async fn without_a_tenant_context_the_role_sees_nothing() {
    let db = super::db().await;
    seeded_tenant(&db, "A").await;
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL ROLE psa_app")
        .execute(&mut *tx)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM roles")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    assert_eq!(n, 0);
    drop(tx);
    // A pooled connection whose SET LOCAL has ended reports '' for the setting: still nothing.
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql(
        "BEGIN; SELECT set_config('app.current_tenant', gen_random_uuid()::text, true); COMMIT;",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("SET ROLE psa_app")
        .execute(&mut *conn)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM roles")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(n, 0);
    sqlx::query("RESET ROLE").execute(&mut *conn).await.unwrap();
}
