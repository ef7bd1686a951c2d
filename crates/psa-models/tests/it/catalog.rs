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
    // (A foreign key to a platform table, which has no tenant, such as a subscription's plan,
    // is the platform's reference data: it cannot name a tenant.)
    let offenders: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, con.conname::text FROM pg_constraint con \
         JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND con.contype IN ('p', 'u', 'f') AND c.relname = ANY($1) \
           AND NOT EXISTS (SELECT 1 FROM unnest(con.conkey) k \
                           JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k \
                           WHERE a.attname = 'tenant') \
           AND NOT (con.contype = 'f' AND NOT EXISTS (SELECT 1 FROM pg_attribute r \
                    WHERE r.attrelid = con.confrelid AND r.attname = 'tenant')) \
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
    // A tenant's slug is unique across the platform: it is how a sign-in names the tenant. So
    // is a verified email domain: it is how an email finds its organisation's provider, and a
    // billing subscription: it is how the billing system's events find their tenant.
    let offenders: Vec<_> = offenders
        .into_iter()
        .filter(|(table, key)| {
            !matches!(
                (table.as_str(), key.as_str()),
                ("tenants", "tenants_slug_key")
                    | ("sso_domains", "sso_domains_verified")
                    | (
                        "tenant_subscriptions",
                        "tenant_subscriptions_billing_subscription"
                    )
            )
        })
        .collect();
    assert!(offenders.is_empty(), "keys without tenant: {offenders:?}");

    // Foreign keys of tenant tables must also match on the referenced table's tenant column.
    let fk_offenders: Vec<(String, String)> = sqlx::query_as(
        "SELECT c.relname::text, con.conname::text FROM pg_constraint con \
         JOIN pg_class c ON c.oid = con.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND con.contype = 'f' AND c.relname = ANY($1) \
           AND EXISTS (SELECT 1 FROM pg_attribute r \
                       WHERE r.attrelid = con.confrelid AND r.attname = 'tenant') \
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

/// An import writes a tenant's rows in any order and checks the foreign keys at its end, which
/// needs them deferrable (they form cycles); a deletion removes rows by the thousand, which
/// needs each foreign key's referencing columns indexed (else every removed row scans its
/// referrers).
#[tokio::test]
async fn every_foreign_key_of_a_tenant_table_is_deferrable_and_indexed() {
    let db = db().await;
    let tables = tenant_tables(&db).await;
    let offenders: Vec<(String, String, bool, bool)> = sqlx::query_as(
        "SELECT c.relname::text, con.conname::text, con.condeferrable, \
                EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = con.conrelid \
                        AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] @> con.conkey \
                        AND (i.indkey::int2[])[0:cardinality(con.conkey) - 1] <@ con.conkey) \
         FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND con.contype = 'f' AND c.relname = ANY($1) \
           AND con.confrelid <> 'plans'::regclass",
    )
    .bind(&tables)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let wrong: Vec<_> = offenders
        .iter()
        .filter(|(_, _, deferrable, indexed)| !deferrable || !indexed)
        .collect();
    assert!(offenders.len() > 30, "{offenders:?}");
    assert!(
        wrong.is_empty(),
        "foreign keys not deferrable or not indexed: {wrong:?}"
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
        // Every policy is confined: it applies to the confined role and compares `tenant` with
        // the per-transaction setting, for reads and for writes. A permissive `USING (true)`, or
        // a policy that forgets WITH CHECK, fails here.
        let weak: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT p.polname::text, coalesce(pg_get_expr(p.polqual, p.polrelid), ''), \
                    coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '') \
             FROM pg_policy p WHERE p.polrelid = $1::regclass AND NOT ( \
               p.polpermissive AND p.polcmd = '*' \
               AND p.polroles = ARRAY['psa_app'::regrole::oid] \
               AND pg_get_expr(p.polqual, p.polrelid) = $2 \
               AND pg_get_expr(p.polwithcheck, p.polrelid) = $2)",
        )
        .bind(&table)
        .bind("(tenant = (NULLIF(current_setting('app.current_tenant'::text, true), ''::text))::uuid)")
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert!(
            weak.is_empty(),
            "{table}: policies not confined to the tenant: {weak:?}"
        );
    }
    // The tables the confined role may touch are exactly the tenant tables (which RLS confines).
    let reachable: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind = 'r' \
           AND (has_table_privilege('psa_app', c.oid, 'SELECT') \
                OR has_table_privilege('psa_app', c.oid, 'INSERT') \
                OR has_table_privilege('psa_app', c.oid, 'UPDATE') \
                OR has_table_privilege('psa_app', c.oid, 'DELETE')) ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let confined = tenant_tables(&db).await;
    for table in &reachable {
        assert!(
            confined.contains(table),
            "psa_app can reach {table}, which row-level security does not confine"
        );
    }
}

/// What the confined role cannot do even inside its own tenant: rewrite the audit log, make its
/// tenant the management tenant, touch the migrations' bookkeeping or the provisioning records.
#[tokio::test]
async fn the_confined_role_cannot_rewrite_history_or_promote_itself() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut tx = psa_models::db::begin_tenant(&db.pool, t).await.unwrap();
    sqlx::query(
        "INSERT INTO audit_log (tenant, actor, actor_kind, actor_id, action, entity_type) \
         VALUES ($1, 'platform:x', 'platform', 'x', 'y', 'z')",
    )
    .bind(t)
    .execute(&mut *tx)
    .await
    .expect("appending to the audit log is allowed");
    tx.commit().await.unwrap();
    for sql in [
        "UPDATE audit_log SET action = 'nothing happened'",
        "DELETE FROM audit_log",
        "UPDATE tenants SET is_management = true",
        "DELETE FROM tenants",
        "INSERT INTO tenants (tenant, company_name, email, is_management) \
         VALUES (nullif(current_setting('app.current_tenant', true), '')::uuid, 'X', 'x@x.example', true)",
        "SELECT count(*) FROM _sqlx_migrations",
        "DELETE FROM _sqlx_migrations",
        "SELECT count(*) FROM tenant_provisioning",
    ] {
        let mut tx = psa_models::db::begin_tenant(&db.pool, t).await.unwrap();
        let e = sqlx::query(sql).execute(&mut *tx).await.unwrap_err();
        assert_eq!(
            e.as_database_error().and_then(|d| d.code()).as_deref(),
            Some("42501"),
            "{sql}: {e}"
        );
    }
    // Its own tenant's name it may still change.
    let mut tx = psa_models::db::begin_tenant(&db.pool, t).await.unwrap();
    sqlx::query("UPDATE tenants SET company_name = 'Acme Renamed'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
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

/// Every tenant table, and every column of it, has been reviewed for export: a new table or a
/// renamed column fails here until `exports::EXPORTED` says what leaves with an export (a new
/// column not listed there is simply left out, which is the safe default).
#[tokio::test]
async fn the_export_allow_list_covers_every_tenant_table() {
    let db = db().await;
    let mut tables = tenant_tables(&db).await;
    tables.sort();
    let mut listed: Vec<String> = psa_models::exports::EXPORTED
        .iter()
        .map(|(t, _)| (*t).to_owned())
        .collect();
    listed.sort();
    assert_eq!(listed, tables, "tenant tables vs exports::EXPORTED");
    for (table, columns) in psa_models::exports::EXPORTED {
        let actual: Vec<String> = sqlx::query_scalar(
            "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass(quote_ident($1)) \
               AND attnum > 0 AND NOT attisdropped",
        )
        .bind(table)
        .fetch_all(&db.pool)
        .await
        .unwrap();
        for c in *columns {
            assert!(
                actual.iter().any(|a| a == c),
                "{table}.{c} is listed but does not exist"
            );
        }
        for secret in [
            "hashed_password",
            "two_factor_secret",
            "key_hash",
            "token_hash",
            "provider_configs",
        ] {
            assert!(
                !columns.contains(&secret),
                "{table}.{secret} must not be exported"
            );
        }
    }
    // Secret-looking keys leave free-form JSON, at any depth.
    let mut v = serde_json::json!({"url": "u", "Api_Key": "k",
        "nested": [{"client_secret": "s", "name": "n", "refreshToken": "t"}]});
    psa_models::exports::scrub(&mut v);
    assert_eq!(
        v,
        serde_json::json!({"url": "u", "nested": [{"name": "n"}]})
    );
}
