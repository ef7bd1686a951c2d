//! The schema's invariants, read from the catalog so that a new table cannot escape them.

use super::*;

#[tokio::test]
async fn every_key_and_foreign_key_of_a_tenant_table_includes_tenant() {
    let db = db().await;
    let tables = tenant_tables(&db).await;
    assert!(
        tables.len() >= 23,
        "expected the whole schema, found {tables:?}"
    );
    // Primary keys, unique constraints, foreign keys, and unique indexes without a constraint.
    let offenders: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, con.conname::text FROM pg_constraint con \
         JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND con.contype IN ('p', 'u', 'f') AND c.relname = ANY($1) \
           AND NOT EXISTS (SELECT 1 FROM unnest(con.conkey) k \
                           JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k \
                           WHERE a.attname = 'tenant') \
         UNION ALL \
         SELECT c.relname::text, i.relname::text FROM pg_index x \
         JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_class c ON c.oid = x.indrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND x.indisunique AND c.relname = ANY($1) \
           AND NOT EXISTS (SELECT 1 FROM unnest(x.indkey) k \
                           JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k \
                           WHERE a.attname = 'tenant')",
    )
    .bind(&tables)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(offenders.is_empty(), "keys without tenant: {offenders:?}");

    // Foreign keys of tenant tables must also match on the referenced table's tenant column.
    let fk_offenders: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, con.conname::text FROM pg_constraint con \
         JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND con.contype = 'f' AND c.relname = ANY($1) \
           AND NOT EXISTS (SELECT 1 FROM unnest(con.confkey) k \
                           JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k \
                           WHERE a.attname = 'tenant')",
    )
    .bind(&tables)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        fk_offenders.is_empty(),
        "foreign keys not matching on tenant: {fk_offenders:?}"
    );
}

#[tokio::test]
async fn every_tenant_table_cascades_from_tenants_and_has_row_level_security() {
    let db = db().await;
    for table in tenant_tables(&db).await {
        if table == "tenants" {
            continue;
        }
        let cascades: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_constraint con \
             WHERE con.conrelid = $1::regclass AND con.contype = 'f' \
               AND con.confrelid = 'tenants'::regclass AND con.confdeltype = 'c')",
        )
        .bind(&table)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(
            cascades,
            "{table} has no ON DELETE CASCADE foreign key to tenants"
        );
    }
    for table in tenant_tables(&db).await {
        let (rls, policies): (bool, i64) = sqlx::query_as(
            "SELECT c.relrowsecurity, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) \
             FROM pg_class c WHERE c.oid = $1::regclass",
        )
        .bind(&table)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert!(
            rls && policies >= 1,
            "{table}: row-level security {rls}, {policies} policies"
        );
    }
}

#[tokio::test]
async fn migrations_are_idempotent() {
    let db = db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    psa_models::MIGRATOR.run(&mut *conn).await.unwrap();
    psa_models::MIGRATOR.run(&mut *conn).await.unwrap();
    let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(applied as usize, psa_models::MIGRATOR.iter().count());
}
