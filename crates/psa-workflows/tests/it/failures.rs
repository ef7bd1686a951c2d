//! Core steps failing for good roll everything back; steps failing once after their commit
//! are retried without a second row; cancel rolls back.

use psa_workflows::{ActivityName, FailedStep, Outcome, Step, TrackingState as TrackingStatus};

use super::*;

async fn assert_rolled_back(env: &Env, failing: &str, step: FailedStep) {
    require_failpoints();
    fail::cfg(format!("activity::{failing}"), "return(permanent)").unwrap();
    let result = env.run(env.input("Doomed")).await;
    fail::remove(format!("activity::{failing}"));
    env.assert_fired(&result.workflow_id, &[&format!("activity::{failing}")]);
    assert_eq!(result.status, Outcome::RolledBack, "{result:?}");
    assert_eq!(result.error.as_ref().unwrap().step, step);
    assert!(
        result.rollback.performed && result.rollback.errors.is_empty(),
        "{:?}",
        result.rollback
    );
    assert!(result.tenant_id.is_none() && result.invitation_link_sealed.is_none());
    let tenants: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT tenant FROM tenants WHERE NOT is_management")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert!(tenants.is_empty(), "tenant rows left: {tenants:?}");
    // Nothing of the tenant anywhere: the record names the id the run minted, also when the
    // tenant row was never created.
    let record = env.record(&result.workflow_id).await;
    assert_eq!(record.status, psa_workflows::RunStatus::RolledBack);
    assert_eq!(
        env.rows_of(record.tenant_id.unwrap()).await,
        vec![],
        "rows left behind"
    );
    assert_eq!(
        env.customer_records().await,
        (0, 0, 0),
        "customer records left behind"
    );
    let state = env.workflows.state(&result.workflow_id).await.unwrap();
    assert_eq!(state.step, Step::RolledBack);
    env.check_replay(&result.workflow_id, &format!("rollback_after_{failing}"))
        .await;
    let tracking = &result.customer_tracking;
    let mut expected = vec![ActivityName::RollbackTenant];
    if step == FailedStep::CreateTenant {
        // Tracking never starts for a tenant that was never created.
        assert_eq!(tracking.status, TrackingStatus::Skipped, "{tracking:?}");
        assert!(tracking.customer_company_id.is_none());
    } else {
        // Tracking ran to its end beside the core chain; the rollback removed all of it.
        assert_eq!(tracking.status, TrackingStatus::RolledBack, "{tracking:?}");
        assert!(tracking.customer_company_id.is_some() && tracking.customer_tag_id.is_some());
        expected = vec![
            ActivityName::RemoveCustomerRecord,
            ActivityName::RollbackTenant,
        ];
    }
    assert_eq!(result.rollback.compensated, expected);
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
    "begin_provisioning",
    "create_tenant",
    "run_onboarding_seeds",
    "create_admin_user",
    "setup_tenant_data",
    "create_customer_record",
    "finish_provisioning",
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
    let points: Vec<String> = ALL
        .iter()
        .map(|n| format!("activity::{n}::after_commit"))
        .collect();
    env.assert_fired(
        &result.workflow_id,
        &points.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    for name in ALL {
        assert_eq!(
            env.attempts(&result.workflow_id, name),
            2,
            "{name}: retried once"
        );
    }
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
    // The retried admin user is the one the invitation names.
    assert!(result.invitation_link(&env.key).is_some());
    let invited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_auth_tokens WHERE tenant = $1 AND user_id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(result.admin_user_id.unwrap())
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(invited, 1);
}

#[tokio::test]
async fn a_transient_failure_is_retried_not_rolled_back() {
    require_failpoints();
    let env = Env::start().await;
    fail::cfg("activity::run_onboarding_seeds", "2*return(transient)").unwrap();
    let result = env.run(env.input("Blip")).await;
    assert_eq!(result.status, Outcome::Completed, "{result:?}");
    assert!(!result.rollback.performed);
    assert_eq!(
        env.attempts(&result.workflow_id, "run_onboarding_seeds"),
        3,
        "two transient failures, then success"
    );
}

#[tokio::test]
async fn cancel_rolls_back() {
    let (env, id, result) = cancel_during(
        "create_admin_user",
        Some(Step::CreatingAdminUser),
        Some("user_roles"),
    )
    .await;
    env.check_replay(&id, "cancel").await;
    assert!(
        result
            .error
            .as_ref()
            .unwrap()
            .message
            .contains("operator changed their mind")
    );
}

#[tokio::test]
async fn a_tenant_committed_and_then_failed_for_good_is_rolled_back() {
    require_failpoints();
    let env = Env::start().await;
    fail::cfg("activity::create_tenant::after_commit", "return(permanent)").unwrap();
    let result = env.run(env.input("Halfway")).await;
    env.assert_fired(
        &result.workflow_id,
        &["activity::create_tenant::after_commit"],
    );
    assert_eq!(result.status, Outcome::RolledBack, "{result:?}");
    assert_eq!(
        result.rollback.compensated,
        vec![ActivityName::RollbackTenant]
    );
    let tenant = env.record(&result.workflow_id).await.tenant_id.unwrap();
    assert_eq!(env.rows_of(tenant).await, vec![]);
    assert_eq!(env.customer_records().await, (0, 0, 0));
}

#[tokio::test]
async fn customer_records_committed_and_then_failed_for_good_are_rolled_back() {
    require_failpoints();
    let env = Env::start().await;
    // The customer record is committed, then its step fails for good; later the last core step
    // commits and fails for good too: both are undone.
    fail::cfg(
        "activity::create_customer_record::after_commit",
        "return(permanent)",
    )
    .unwrap();
    fail::cfg(
        "activity::setup_tenant_data::after_commit",
        "return(permanent)",
    )
    .unwrap();
    let result = env.run(env.input("Halfway")).await;
    env.assert_fired(
        &result.workflow_id,
        &[
            "activity::create_customer_record::after_commit",
            "activity::setup_tenant_data::after_commit",
        ],
    );
    assert_eq!(result.status, Outcome::RolledBack, "{result:?}");
    assert_eq!(
        result.rollback.compensated,
        vec![
            ActivityName::RemoveCustomerRecord,
            ActivityName::RollbackTenant
        ],
        "the record step was attempted, so its undo runs although the step reported failure"
    );
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE NOT is_management")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 0);
    assert_eq!(env.customer_records().await, (0, 0, 0));
    let deleted: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant = $1 AND entity_type = 'customer_company' AND action = 'delete'",
    )
    .bind(env.mgmt)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(
        deleted, 1,
        "the committed company was really there, and removed"
    );
}

/// A compensation that fails for good is reported, not dropped: the run is `failed`, with the
/// compensation's error, and the other compensations still ran.
#[tokio::test]
async fn a_compensation_failing_for_good_fails_the_run_and_says_what_is_left() {
    require_failpoints();
    let env = Env::start().await;
    fail::cfg("activity::setup_tenant_data", "return(permanent)").unwrap();
    fail::cfg("activity::remove_customer_record", "return(permanent)").unwrap();
    let result = env.run(env.input("Stuck")).await;
    env.assert_fired(&result.workflow_id, &["activity::remove_customer_record"]);
    assert_eq!(result.status, Outcome::Failed, "{result:?}");
    assert_eq!(result.rollback.errors.len(), 1, "{:?}", result.rollback);
    assert!(
        result.rollback.errors[0].starts_with("remove_customer_record: fail point"),
        "{:?}",
        result.rollback.errors
    );
    assert!(
        result
            .rollback
            .compensated
            .contains(&ActivityName::RollbackTenant)
    );
    assert_eq!(
        env.customer_records().await,
        (1, 1, 1),
        "the record the failed compensation should have removed is left, and said so"
    );
    assert_eq!(
        env.record(&result.workflow_id).await.status,
        psa_workflows::RunStatus::Failed
    );
}

/// Cancel stops at the next cancel point, whichever step it arrives in, and rolls back what was
/// built (nothing, when it arrives before the first step). The request is seen by the next step
/// itself (`psa tenant cancel-run` records it in the database before it signals): local steps
/// run several to a workflow task, which the signal reaches only when it ends.
///
/// A core step is held by a table lock the test takes on the table the step writes first (the
/// step waits on PostgreSQL, not on a blocked thread) and releases once the cancel has been
/// received; the first activity, which starts too soon after the run to be gated so, is held by
/// a fail point sleeping 6 s.
async fn cancel_during(
    activity: &str,
    step: Option<Step>,
    gate: Option<&str>,
) -> (Env, String, psa_workflows::TenantCreationResult) {
    require_failpoints();
    let env = Env::start().await;
    let mut lock = None;
    match gate {
        Some(table) => {
            let mut tx = env.db.pool.begin().await.unwrap();
            sqlx::query(&format!("LOCK TABLE {table} IN EXCLUSIVE MODE"))
                .execute(&mut *tx)
                .await
                .unwrap();
            lock = Some(tx);
        }
        None => fail::cfg(format!("activity::{activity}"), "1*sleep(6000)").unwrap(),
    }
    let id = env.start_run(env.input("Cancel Point")).await;
    let mut reached = false;
    for _ in 0..400 {
        let waiting = || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND wait_event_type = 'Lock'",
            )
            .fetch_one(&env.db.pool)
            .await
            .unwrap()
                > 0
        };
        let at = match (env.workflows.state(&id).await, step) {
            (Ok(s), Some(step)) => s.step == step && waiting().await,
            // Before the first step: the run answers, and waits in its first activity.
            (Ok(s), None) => s.step == Step::Initializing,
            _ => false,
        };
        if at {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(reached, "the run reached {activity}");
    env.workflows
        .cancel(&id, "operator changed their mind")
        .await
        .unwrap();
    let mut received = false;
    for _ in 0..400 {
        if env
            .workflows
            .state(&id)
            .await
            .is_ok_and(|s| s.cancel_requested)
        {
            received = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(received, "the cancel was received during {activity}");
    if let Some(tx) = lock {
        tx.commit().await.unwrap();
    }
    let result = env.workflows.result(&id).await.unwrap();
    assert_eq!(result.status, Outcome::Cancelled, "{result:?}");
    assert_eq!(result.error.as_ref().unwrap().step, FailedStep::Cancel);
    let tenant = env.record(&id).await.tenant_id.unwrap();
    assert_eq!(
        env.rows_of(tenant).await,
        vec![],
        "nothing of the tenant is left"
    );
    assert_eq!(env.customer_records().await, (0, 0, 0));
    // A step that saw the cancel request wrote nothing; its undo (registered before it) ran as
    // a no-op, and none failed.
    assert!(result.rollback.errors.is_empty(), "{:?}", result.rollback);
    (env, id, result)
}

#[tokio::test]
async fn cancel_before_the_first_step() {
    cancel_during("begin_provisioning", None, None).await;
}

#[tokio::test]
async fn cancel_during_create_tenant() {
    cancel_during("create_tenant", Some(Step::CreatingTenant), Some("tenants")).await;
}

#[tokio::test]
async fn cancel_during_onboarding_seeds() {
    cancel_during(
        "run_onboarding_seeds",
        Some(Step::RunningOnboardingSeeds),
        Some("roles"),
    )
    .await;
}

#[tokio::test]
async fn cancel_during_setup_tenant_data() {
    cancel_during(
        "setup_tenant_data",
        Some(Step::SettingUpData),
        Some("tenant_email_settings"),
    )
    .await;
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
            .contains(&ActivityName::RemoveCustomerRecord),
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

/// A real database failure in the middle of a step (its connection killed by the server) is
/// classified transient: the step is retried, nothing is rolled back, and no row is doubled.
#[tokio::test]
async fn a_connection_killed_during_a_step_is_retried_not_rolled_back() {
    require_failpoints();
    let env = Env::start().await;
    // Hold the seeds step's first attempt open, inside its transaction, before the commit.
    fail::cfg("activity::run_onboarding_seeds", "1*sleep(3000)").unwrap();
    let id = env.start_run(env.input("Killed")).await;
    let mut killed = 0;
    for _ in 0..200 {
        killed = sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND state = 'idle in transaction' \
               AND query LIKE 'INSERT INTO tax_rates%' AND pid <> pg_backend_pid()) t",
        )
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
        if killed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(killed > 0, "the step's connection was found and terminated");
    let result = env.workflows.result(&id).await.unwrap();
    assert_eq!(result.status, Outcome::Completed, "{result:?}");
    assert!(!result.rollback.performed);
    assert!(
        env.attempts(&id, "run_onboarding_seeds") >= 2,
        "the step was retried"
    );
    assert!(
        env.history(&id).contains("transient database failure"),
        "classified transient"
    );
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM roles WHERE tenant = $1")
        .bind(result.tenant_id.unwrap())
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(roles, 8, "seeded once");
}
