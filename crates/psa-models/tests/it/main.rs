//! Database tests of the shared models, each on its own database (see psa-testing).

mod audit_test;
mod catalog;
mod companies_test;
mod contacts_test;
mod credentials_test;
mod errors;
mod isolation;
mod plans_test;
mod props;
mod retention_test;
mod tags_test;
mod tenants_test;
mod users_test;

pub use psa_models::tenants::{self, NewTenant};
pub use psa_models::{TenantId, seeds};
use psa_testing::TestDb;

pub async fn db() -> TestDb {
    TestDb::new(&psa_models::MIGRATOR).await
}

/// A tenant with its onboarding seeds, as the workflow leaves it.
pub async fn seeded_tenant(db: &TestDb, name: &str) -> TenantId {
    let id = TenantId::new();
    let mut tx = db.pool.begin().await.unwrap();
    tenants::create(
        &mut tx,
        id,
        NewTenant {
            name: name.into(),
            email: format!("admin@{}.example", name.to_lowercase().replace(' ', "-")),
            company_name: Some(format!("{name} MSP")),
            licensed_user_count: Some(5),
            slug: None,
        },
        Default::default(),
    )
    .await
    .unwrap();
    seeds::run(&mut tx, id).await.unwrap();
    tx.commit().await.unwrap();
    id
}

/// Rows of `table` belonging to `tenant`, counted as the owner (no RLS).
pub async fn count(db: &TestDb, table: &str, tenant: TenantId) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table} WHERE tenant = $1"))
        .bind(tenant)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// Every table of the schema with a `tenant` column, from the catalog.
pub async fn tenant_tables(db: &TestDb) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant' AND NOT a.attisdropped \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}
