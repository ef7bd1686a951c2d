//! Core steps failing for good roll everything back; steps failing once after their commit
//! are retried without a second row; cancel rolls back.

use psa_workflows::{ActivityName, FailedStep, Outcome, Step, TrackingState as TrackingStatus};

use super::*;

async fn assert_rolled_back(env: &Env, failing: &str, step: FailedStep) {
    require_failpoints();
    fail::cfg(format!("activity::{failing}"), "return(permanent)").unwrap();
    let result = env.run(env.input("Doomed")).await;
    fail::remove(format!("activity::{failing}"));
    assert_eq!(result.status, Outcome::RolledBack, "{result:?}");
    assert_eq!(result.error.as_ref().unwrap().step, step);
    assert!(
        result.rollback.performed && result.rollback.errors.is_empty(),
        "{:?}",
        result.rollback
    );
    assert!(result.tenant_id.is_none() && result.temporary_password_sealed.is_none());
    let tenants: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT tenant FROM tenants WHERE NOT is_management")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert!(tenants.is_empty(), "tenant rows left: {tenants:?}");
    // Nothing of the tenant anywhere (the tenant id was minted even if its row never existed).
    let state = env.workflows.state(&result.workflow_id).await.unwrap();
    if let Some(t) = state.tenant_id {
        assert_eq!(env.rows_of(t).await, vec![], "rows left behind");
    }
    assert_eq!(
        env.customer_records().await,
        (0, 0, 0),
        "customer records left behind"
    );
    assert_eq!(state.step, Step::RolledBack);
    env.check_replay(&result.workflow_id, &format!("rollback_after_{failing}"))
        .await;
    if result.customer_tracking.customer_company_id.is_some() {
        assert_eq!(result.customer_tracking.status, TrackingStatus::RolledBack);
        assert!(
            result
                .rollback
                .compensated
                .contains(&ActivityName::RemoveCustomerCompany),
            "{:?}",
            result.rollback
        );
    }
}

#[tokio::test]
async fn create_tenant_failing_for_good_rolls_back() {
    let env = Env::start().await;
    assert_rolled_back(&env, "create_tenant", FailedStep::CreateTenant).await;
}

#[tokio::test]
async fn onboarding_seeds_failing_for_good_rolls_back() {
    let env = Env::start().await;
    assert_rolled_back(&env, "run_onboarding_seeds", FailedStep::RunOnboardingSeeds).await;
}

#[tokio::test]
async fn create_admin_user_failing_for_good_rolls_back() {
    let env = Env::start().await;
    assert_rolled_back(&env, "create_admin_user", FailedStep::CreateAdminUser).await;
}

#[tokio::test]
async fn setup_tenant_data_failing_for_good_rolls_back() {
    let env = Env::start().await;
    assert_rolled_back(&env, "setup_tenant_data", FailedStep::SetupTenantData).await;
    // The rollback removed customer records that tracking had created in parallel.
    let audits: Vec<String> = sqlx::query_scalar(
        "SELECT entity_type || ':' || action FROM audit_log WHERE tenant = $1 ORDER BY created_at",
    )
    .bind(env.mgmt)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    assert!(
        audits.contains(&"customer_company:delete".to_owned()),
        "{audits:?}"
    );
}

const ALL: [&str; 7] = [
    "create_tenant",
    "run_onboarding_seeds",
    "create_admin_user",
    "setup_tenant_data",
    "create_customer_company",
    "create_customer_contact",
    "tag_customer_company",
];

#[tokio::test]
async fn every_activity_failing_once_after_its_commit_still_makes_one_of_every_row() {
    require_failpoints();
    let env = Env::start().await;
    for name in ALL {
        fail::cfg(
            format!("activity::{name}::after_commit"),
            "1*return(transient)",
        )
        .unwrap();
    }
    let result = env.run(env.input("Twice")).await;
    assert_eq!(result.status, Outcome::Completed, "{result:?}");
    assert_eq!(
        result.customer_tracking.status,
        TrackingStatus::Completed,
        "{:?}",
        result.customer_tracking
    );
    let tenant = result.tenant_id.unwrap();
    let rows: std::collections::HashMap<String, i64> =
        env.rows_of(tenant).await.into_iter().collect();
    for (table, n) in [
        ("tenants", 1),
        ("companies", 1),
        ("company_locations", 1),
        ("roles", 8),
        ("users", 1),
        ("user_roles", 1),
        ("tax_rates", 1),
        ("tenant_settings", 1),
        ("tenant_companies", 1),
    ] {
        assert_eq!(rows.get(table).copied(), Some(n), "{table}: {rows:?}");
    }
    assert_eq!(
        rows["permissions"] as usize,
        psa_models::seeds::permissions().len()
    );
    assert_eq!(env.customer_records().await, (1, 1, 1));
    // The retried admin user got a fresh password: the sealed one in the result is the valid one.
    let password = env
        .key
        .open(result.temporary_password_sealed.as_deref().unwrap())
        .unwrap();
    let hash: String = sqlx::query_scalar("SELECT hashed_password FROM users WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(
        psa_models::password::verify(&password, &hash)
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn a_transient_failure_is_retried_not_rolled_back() {
    require_failpoints();
    let env = Env::start().await;
    fail::cfg("activity::run_onboarding_seeds", "2*return(transient)").unwrap();
    let result = env.run(env.input("Blip")).await;
    assert_eq!(result.status, Outcome::Completed, "{result:?}");
    assert!(!result.rollback.performed);
}

#[tokio::test]
async fn cancel_rolls_back() {
    require_failpoints();
    let env = Env::start().await;
    // Hold the admin-user step long enough to cancel during it.
    fail::cfg("activity::create_admin_user", "sleep(3000)").unwrap();
    let id = &env.start_run(env.input("Cancelled")).await;
    for _ in 0..100 {
        if env
            .workflows
            .state(id)
            .await
            .map(|s| s.step == Step::CreatingAdminUser)
            .unwrap_or(false)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    env.workflows
        .cancel(id, "operator changed their mind")
        .await
        .unwrap();
    let result = env.workflows.result(id).await.unwrap();
    assert_eq!(result.status, Outcome::Cancelled, "{result:?}");
    env.check_replay(id, "cancel").await;
    assert!(
        result
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("operator changed their mind")
    );
    assert!(
        result
            .rollback
            .compensated
            .contains(&ActivityName::RollbackTenant)
    );
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE NOT is_management")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 0);
    assert_eq!(env.customer_records().await, (0, 0, 0));
}

#[tokio::test]
async fn steps_that_committed_and_then_failed_for_good_are_rolled_back_too() {
    require_failpoints();
    let env = Env::start().await;
    // The tenant row and the customer company are committed, then their activities fail for good.
    fail::cfg("activity::create_tenant::after_commit", "return(permanent)").unwrap();
    fail::cfg(
        "activity::create_customer_company::after_commit",
        "return(permanent)",
    )
    .unwrap();
    let result = env.run(env.input("Halfway")).await;
    assert_eq!(result.status, Outcome::RolledBack, "{result:?}");
    assert!(
        result
            .rollback
            .compensated
            .contains(&ActivityName::RollbackTenant),
        "{:?}",
        result.rollback
    );
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE NOT is_management")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 0);
    assert_eq!(env.customer_records().await, (0, 0, 0));
}

#[tokio::test]
async fn rollback_unlinks_an_existing_contact_it_linked_and_keeps_it() {
    require_failpoints();
    let env = Env::start().await;
    // The admin was already a contact of the management tenant, without a company.
    let mut conn = env.db.pool.acquire().await.unwrap();
    let existing = psa_models::contacts::create(
        &mut conn,
        env.mgmt,
        psa_models::contacts::NewContact {
            full_name: "Ada Earlier".into(),
            email: "ada@linked.example.com".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    drop(conn);
    fail::cfg("activity::setup_tenant_data", "return(permanent)").unwrap();
    let result = env.run(env.input("Linked")).await;
    assert_eq!(result.status, Outcome::RolledBack, "{result:?}");
    assert!(
        result
            .rollback
            .compensated
            .contains(&ActivityName::UnlinkCustomerContact),
        "{:?}",
        result.rollback
    );
    let mut conn = env.db.pool.acquire().await.unwrap();
    let after = psa_models::contacts::get(&mut conn, env.mgmt, existing.contact_name_id)
        .await
        .unwrap();
    assert_eq!(after.company_id, None, "unlinked");
    assert_eq!(after.full_name, "Ada Earlier", "kept as it was");
    assert_eq!(
        env.customer_records().await,
        (0, 1, 0),
        "only the pre-existing contact remains"
    );
}
