//! Customer tracking failures never fail the tenant; reconcile repairs them exactly once.
//! Name and email collisions in the management tenant lose no data.

use psa_models::companies::{self, NewCompany};
use psa_models::contacts::{self, NewContact};
use psa_workflows::{Outcome, TrackingStatus, reconcile};

use super::*;

#[tokio::test]
async fn tracking_failure_keeps_the_tenant_and_reconcile_repairs_it_once() {
    require_failpoints();
    let env = Env::start().await;
    fail::cfg("activity::create_customer_company", "return(permanent)").unwrap();
    let result = env.run(env.input("Resilient")).await;
    fail::remove("activity::create_customer_company");
    assert_eq!(result.status, Outcome::Completed, "{result:?}");
    assert_eq!(result.customer_tracking.status, TrackingStatus::Failed);
    assert!(
        result
            .customer_tracking
            .error
            .as_deref()
            .unwrap()
            .contains("create_customer_company")
    );
    assert!(result.tenant_id.is_some() && !result.rollback.performed);
    assert_eq!(env.customer_records().await, (0, 0, 0));

    // A tenant created before tracking existed is backfilled too.
    let mut input = env.input("Legacy");
    input.tracking.enabled = false;
    env.run(input).await;

    let settings = env.input("x").tracking;
    let dry = reconcile::reconcile(&env.db.pool, &settings, true)
        .await
        .unwrap();
    assert_eq!(
        (dry.created, dry.already_tracked, dry.failed, dry.dry_run),
        (2, 0, 0, true)
    );
    assert_eq!(
        env.customer_records().await,
        (0, 0, 0),
        "a dry run writes nothing"
    );

    let first = reconcile::reconcile(&env.db.pool, &settings, false)
        .await
        .unwrap();
    assert_eq!(
        (first.created, first.already_tracked, first.failed),
        (2, 0, 0),
        "{first:?}"
    );
    assert_eq!(env.customer_records().await, (2, 2, 2));
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant = $1 AND action = 'create' \
         AND entity_type IN ('customer_company', 'customer_contact', 'customer_tag')",
    )
    .bind(env.mgmt)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited, 6,
        "an audit row per customer record created by reconcile"
    );
    let second = reconcile::reconcile(&env.db.pool, &settings, false)
        .await
        .unwrap();
    assert_eq!(
        (second.created, second.already_tracked, second.failed),
        (0, 2, 0),
        "{second:?}"
    );
    assert_eq!(env.customer_records().await, (2, 2, 2));
    let uuid_stored: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM companies WHERE tenant = $1 AND properties ->> 'tenant_id' = $2)")
        .bind(env.mgmt)
        .bind(result.tenant_id.unwrap().to_string())
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(uuid_stored);

    // A deleted tenant leaves an orphan customer company: reported, not deleted.
    let mut conn = env.db.pool.acquire().await.unwrap();
    psa_models::tenants::delete(
        &mut conn,
        psa_models::TenantId::from(result.tenant_id.unwrap()),
    )
    .await
    .unwrap();
    let third = reconcile::reconcile(&env.db.pool, &settings, false)
        .await
        .unwrap();
    assert_eq!(third.orphans.len(), 1);
    assert_eq!(
        third.orphans[0].tenant_id,
        result.tenant_id.unwrap().to_string()
    );
    assert_eq!(env.customer_records().await.0, 2);
}

#[tokio::test]
async fn tag_failure_is_reported_and_the_rest_is_kept() {
    require_failpoints();
    let env = Env::start().await;
    fail::cfg("activity::tag_customer_company", "return(permanent)").unwrap();
    let result = env.run(env.input("Tagless")).await;
    assert_eq!(result.status, Outcome::Completed);
    assert_eq!(result.customer_tracking.status, TrackingStatus::Failed);
    assert!(
        result.customer_tracking.customer_contact_id.is_some(),
        "the contact ran in parallel and stayed"
    );
    assert_eq!(env.customer_records().await, (1, 1, 0));
}

#[tokio::test]
async fn name_and_email_collisions_lose_no_data() {
    let env = Env::start().await;
    let mut conn = env.db.pool.acquire().await.unwrap();
    // A prospect company already named like the new tenant, and the admin already a contact of it.
    let prospect = companies::create(
        &mut conn,
        env.mgmt,
        NewCompany {
            company_name: "Collide".into(),
            notes: Some("prospect".into()),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let existing = contacts::create(
        &mut conn,
        env.mgmt,
        NewContact {
            full_name: "Ada Prospect".into(),
            email: "ada@collide.example.com".into(),
            company_id: Some(prospect.company_id),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    drop(conn);
    let result = env.run(env.input("Collide")).await;
    let t = &result.customer_tracking;
    assert_eq!(
        (result.status, t.status),
        (Outcome::Completed, TrackingStatus::Completed),
        "{t:?}"
    );
    assert_eq!(t.warnings.len(), 2, "{t:?}");
    let mut conn = env.db.pool.acquire().await.unwrap();
    let customer = companies::get(
        &mut conn,
        env.mgmt,
        psa_models::CompanyId::from(t.customer_company_id.unwrap()),
    )
    .await
    .unwrap();
    assert_ne!(customer.company_id, prospect.company_id);
    assert!(
        customer.company_name.starts_with("Collide ("),
        "{}",
        customer.company_name
    );
    // The prospect and its contact are untouched; the contact is reported as the customer contact.
    assert_eq!(
        companies::get(&mut conn, env.mgmt, prospect.company_id)
            .await
            .unwrap(),
        prospect
    );
    assert_eq!(
        contacts::get(&mut conn, env.mgmt, existing.contact_name_id)
            .await
            .unwrap(),
        existing
    );
    assert_eq!(t.customer_contact_id, Some(existing.contact_name_id.0));
}
