//! Customer tracking failures never fail the tenant; reconcile repairs them exactly once.
//! Name and email collisions in the management tenant lose no data.

use psa_models::companies::{self, NewCompany};
use psa_models::contacts::{self, NewContact};
use psa_workflows::{Outcome, RunStatus, TrackingState as TrackingStatus, reconcile};

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
    env.check_replay(&result.workflow_id, "tracking_failure")
        .await;

    // A tenant created before tracking existed (no provisioning record) is backfilled too.
    legacy_tenant(&env, "Legacy").await;

    let settings = tracking_on(env.mgmt);
    let dry = reconcile::reconcile(&env.db.pool, &settings, &Default::default(), true)
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

    let first = reconcile::reconcile(&env.db.pool, &settings, &Default::default(), false)
        .await
        .unwrap();
    assert_eq!(
        (first.created, first.already_tracked, first.failed),
        (2, 0, 0),
        "{first:?}"
    );
    assert_eq!(env.customer_records().await, (2, 2, 2));
    // The run's record now says the customer record was repaired, and the status shows it.
    assert_eq!(
        env.record(&result.workflow_id).await.customer_tracking,
        TrackingStatus::Repaired
    );
    let view = env.workflows.view(&result.workflow_id).await.unwrap();
    assert_eq!(
        view.record.unwrap().customer_tracking,
        TrackingStatus::Repaired
    );
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
    let second = reconcile::reconcile(&env.db.pool, &settings, &Default::default(), false)
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
    psa_models::tenants::delete(&mut conn, result.tenant_id.unwrap())
        .await
        .unwrap();
    let third = reconcile::reconcile(&env.db.pool, &settings, &Default::default(), false)
        .await
        .unwrap();
    assert_eq!(third.orphans.len(), 1);
    assert_eq!(
        third.orphans[0].tenant_id,
        result.tenant_id.unwrap().to_string()
    );
    assert_eq!(env.customer_records().await.0, 2);
}

/// The record is one transaction: a failure in its last part (the tag) leaves none of it, says
/// which part failed, and reconcile writes the whole record.
#[tokio::test]
async fn a_tag_failure_leaves_none_of_the_record_and_reconcile_writes_it() {
    require_failpoints();
    let env = Env::start().await;
    fail::cfg("activity::tag_customer_company", "return(permanent)").unwrap();
    let result = env.run(env.input("Tagless")).await;
    fail::remove("activity::tag_customer_company");
    assert_eq!(result.status, Outcome::Completed);
    let t = &result.customer_tracking;
    assert_eq!(t.status, TrackingStatus::Failed);
    assert!(
        t.error.as_deref().unwrap().contains("tag_customer_company"),
        "{t:?}"
    );
    assert!(t.customer_company_id.is_none() && t.customer_contact_id.is_none());
    assert_eq!(env.customer_records().await, (0, 0, 0));
    let repaired = reconcile::reconcile(
        &env.db.pool,
        &tracking_on(env.mgmt),
        &Default::default(),
        false,
    )
    .await
    .unwrap();
    assert_eq!((repaired.created, repaired.failed), (1, 0), "{repaired:?}");
    assert_eq!(env.customer_records().await, (1, 1, 1));
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
    let customer = companies::get(&mut conn, env.mgmt, t.customer_company_id.unwrap())
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
    assert_eq!(t.customer_contact_id, Some(existing.contact_name_id));
}

/// A tenant made directly in the database, as before tracking existed: no provisioning record.
async fn legacy_tenant(env: &Env, name: &str) -> psa_models::TenantId {
    let tenant = psa_models::TenantId::new();
    let mut tx = env.db.pool.begin().await.unwrap();
    psa_models::tenants::create(
        &mut tx,
        tenant,
        psa_models::tenants::NewTenant {
            name: name.into(),
            email: format!("admin@{}.example", name.to_lowercase()),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    psa_models::seeds::run(&mut tx, tenant).await.unwrap();
    psa_models::users::create_admin(
        &mut tx,
        tenant,
        "Leg",
        "Acy",
        &format!("admin@{}.example", name.to_lowercase()),
        Default::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    tenant
}

#[tokio::test]
async fn reconcile_leaves_runs_in_flight_and_skipped_tenants_alone() {
    require_failpoints();
    let env = Env::start().await;
    // A tenant provisioned with --skip-customer-tracking: the choice is remembered.
    let mut input = env.input("Skipper");
    input.skip_customer_tracking = true;
    let skipped = env.run(input).await;
    assert_eq!(skipped.customer_tracking.status, TrackingStatus::Skipped);
    // A run in flight: its customer company step is held.
    fail::cfg("activity::create_customer_company", "sleep(4000)").unwrap();
    let id = env.start_run(env.input("Inflight")).await;
    let mut tenant = None;
    for _ in 0..200 {
        let exists: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tenants WHERE company_name = 'Inflight')",
        )
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
        if exists {
            tenant = env.record(&id).await.tenant_id;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tenant = tenant.expect("the in-flight tenant row exists");
    let report = reconcile::reconcile(
        &env.db.pool,
        &tracking_on(env.mgmt),
        &Default::default(),
        false,
    )
    .await
    .unwrap();
    assert_eq!((report.created, report.failed), (0, 0), "{report:?}");
    let mut left: Vec<_> = report
        .left_alone
        .iter()
        .map(|l| (l.tenant_id.0, l.reason))
        .collect();
    left.sort_by_key(|l| l.0 == tenant);
    assert_eq!(
        left,
        vec![
            (skipped.tenant_id.unwrap().0, reconcile::LeftReason::Skipped),
            (tenant, reconcile::LeftReason::InFlight)
        ]
    );
    fail::remove("activity::create_customer_company");
    let done = env.workflows.result(&id).await.unwrap();
    assert_eq!(
        (done.status, done.customer_tracking.status),
        (Outcome::Completed, TrackingStatus::Completed),
        "the run tracked its own tenant: {done:?}"
    );
    assert_eq!(env.customer_records().await, (1, 1, 1));
}

#[tokio::test]
async fn a_rollback_leaves_customer_records_it_did_not_create() {
    require_failpoints();
    let env = Env::start().await;
    // Hold the tenant's creation, so that a customer record for it can exist first (made by an
    // operator, or by a tool): a company naming the tenant, tagged, with the admin as contact.
    fail::cfg("activity::create_tenant", "sleep(3000)").unwrap();
    fail::cfg("activity::setup_tenant_data", "return(permanent)").unwrap();
    let id = env.start_run(env.input("Prior")).await;
    let mut tenant = None;
    for _ in 0..200 {
        if let Some(t) = sqlx::query_scalar::<_, Option<uuid::Uuid>>(
            "SELECT tenant_id FROM tenant_provisioning WHERE workflow_id = $1",
        )
        .bind(&id)
        .fetch_optional(&env.db.pool)
        .await
        .unwrap()
        .flatten()
        {
            tenant = Some(t);
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tenant = tenant.expect("the run recorded its tenant id");
    let mut conn = env.db.pool.acquire().await.unwrap();
    let mut props = serde_json::Map::new();
    props.insert("tenant_id".into(), tenant.to_string().into());
    let prior = companies::create(
        &mut conn,
        env.mgmt,
        NewCompany {
            company_name: "Prior Customer".into(),
            properties: Some(props),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let contact = contacts::create(
        &mut conn,
        env.mgmt,
        NewContact {
            full_name: "Ada Prior".into(),
            email: "ada@prior.example.com".into(),
            company_id: Some(prior.company_id),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let tag = psa_models::tags::attach(
        &mut conn,
        env.mgmt,
        psa_models::tags::NewTag {
            tag_text: "PSA Customer".into(),
            tagged_id: prior.company_id.0,
            tagged_type: psa_models::tags::TaggedType::Company,
            background_color: None,
            text_color: None,
        },
        Default::default(),
    )
    .await
    .unwrap();
    drop(conn);
    fail::remove("activity::create_tenant");
    let result = env.workflows.result(&id).await.unwrap();
    assert_eq!(result.status, Outcome::RolledBack, "{result:?}");
    assert_eq!(
        result.customer_tracking.customer_company_id,
        Some(prior.company_id),
        "the run reused the existing customer company"
    );
    // Everything that existed before the run is as it was.
    let mut conn = env.db.pool.acquire().await.unwrap();
    assert_eq!(
        companies::get(&mut conn, env.mgmt, prior.company_id)
            .await
            .unwrap(),
        prior
    );
    assert_eq!(
        contacts::get(&mut conn, env.mgmt, contact.contact_name_id)
            .await
            .unwrap()
            .company_id,
        Some(prior.company_id),
        "the contact link that existed was not undone"
    );
    let tags = psa_models::tags::list_for_entity(
        &mut conn,
        env.mgmt,
        psa_models::tags::TaggedType::Company,
        prior.company_id.0,
    )
    .await
    .unwrap();
    assert_eq!(
        tags.iter().map(|t| t.mapping_id).collect::<Vec<_>>(),
        vec![tag.tag.mapping_id],
        "the tag mapping that existed was not removed"
    );
    assert_eq!(
        env.rows_of(tenant).await,
        vec![],
        "the tenant itself is gone"
    );
}

#[tokio::test]
async fn a_run_cut_off_is_rolled_back_by_the_sweeper_and_never_tracked_by_reconcile() {
    require_failpoints();
    let env = Env::start().await;
    // The last core step keeps failing transiently (retried for minutes): the run is half-built.
    fail::cfg("activity::setup_tenant_data", "return(transient)").unwrap();
    let id = env.start_run(env.input("Cutoff")).await;
    let mut tenant = None;
    for _ in 0..400 {
        let state = env.workflows.state(&id).await.unwrap();
        if state.step == psa_workflows::Step::SettingUpData
            && state.customer_tracking.status == TrackingStatus::Completed
        {
            tenant = state.tenant_id;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let tenant = tenant.expect("the run reached its last step with tracking done");
    assert_eq!(env.customer_records().await, (1, 1, 1));
    // An operator terminates it.
    env.temporal_cli(&["workflow", "terminate", "-w", &id, "--reason", "test"]);
    let view = env.workflows.view(&id).await.unwrap();
    assert_eq!(
        (view.finished, view.status),
        (true, RunStatus::CutOff),
        "{view:?}"
    );
    assert!(
        view.notice.as_deref().unwrap().contains("sweeper"),
        "{view:?}"
    );
    // Reconcile does not record the half-built tenant as a customer.
    let report = reconcile::reconcile(
        &env.db.pool,
        &tracking_on(env.mgmt),
        &Default::default(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.created, 0, "{report:?}");
    // The sweeper rolls it back completely.
    let swept = psa_workflows::sweep::sweep(&env.workflows, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(swept.cut_off.len(), 1, "{swept:?}");
    assert_eq!(swept.cut_off[0].tenant_id, Some(tenant.0));
    assert_eq!(swept.cut_off[0].temporal_status, "Terminated");
    assert_eq!(
        env.rows_of(tenant).await,
        vec![],
        "nothing of the tenant is left"
    );
    assert_eq!(env.customer_records().await, (0, 0, 0));
    let record = env.record(&id).await;
    assert_eq!(record.status, RunStatus::CutOff);
    assert_eq!(record.customer_tracking, TrackingStatus::RolledBack);
    // A second pass finds nothing more.
    let again = psa_workflows::sweep::sweep(&env.workflows, Duration::ZERO)
        .await
        .unwrap();
    assert!(again.cut_off.is_empty(), "{again:?}");
    fail::remove("activity::setup_tenant_data");
}

/// Reconcile walks the tenants a page at a time: every tenant is reached across page
/// boundaries (pages of 2 here), once, and a second run has nothing to do.
#[tokio::test]
async fn reconcile_reaches_every_tenant_page_by_page() {
    let env = Env::start().await;
    let mut created = Vec::new();
    for name in [
        "Page One",
        "Page Two",
        "Page Three",
        "Page Four",
        "Page Five",
    ] {
        let id = psa_models::TenantId::new();
        let mut tx = env.db.pool.begin().await.unwrap();
        psa_models::tenants::create(
            &mut tx,
            id,
            psa_models::tenants::NewTenant {
                name: name.into(),
                email: format!("admin@{}.example", name.to_lowercase().replace(' ', "-")),
                company_name: None,
                licensed_user_count: None,
                slug: None,
            },
            Default::default(),
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        created.push(id);
    }
    let settings = tracking_on(env.mgmt);
    let first = reconcile::reconcile_paged(&env.db.pool, &settings, &Default::default(), false, 2)
        .await
        .unwrap();
    assert_eq!((first.created, first.failed), (5, 0), "{first:?}");
    let second = reconcile::reconcile_paged(&env.db.pool, &settings, &Default::default(), false, 2)
        .await
        .unwrap();
    assert_eq!(
        (second.created, second.already_tracked),
        (0, 5),
        "{second:?}"
    );
    let tracked: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM companies WHERE tenant = $1 AND properties ->> 'tenant_id' = ANY($2)",
    )
    .bind(env.mgmt)
    .bind(created.iter().map(|t| t.0.to_string()).collect::<Vec<_>>())
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(tracked, 5);
}

/// Reconcile tracks several tenants at once: more tenants than it runs in parallel, some of
/// them sharing an admin email (one contact in the management tenant), all tracked, none failed.
#[tokio::test(flavor = "multi_thread")]
async fn reconcile_in_parallel_tracks_tenants_that_share_a_contact() {
    let env = Env::start().await;
    let n = reconcile::CONCURRENCY * 2 + 3;
    let mut created = Vec::new();
    for i in 0..n {
        let id = psa_models::TenantId::new();
        let mut tx = env.db.pool.begin().await.unwrap();
        // A third of them share one admin.
        let email = if i % 3 == 0 {
            "shared-admin@parallel.example".to_owned()
        } else {
            format!("admin-{i}@parallel.example")
        };
        psa_models::tenants::create(
            &mut tx,
            id,
            psa_models::tenants::NewTenant {
                name: format!("Parallel {i}"),
                email: email.clone(),
                company_name: None,
                licensed_user_count: None,
                slug: None,
            },
            Default::default(),
        )
        .await
        .unwrap();
        psa_models::seeds::run(&mut tx, id).await.unwrap();
        psa_models::users::create_admin(&mut tx, id, "Pat", "Admin", &email, Default::default())
            .await
            .unwrap();
        tx.commit().await.unwrap();
        created.push(id);
    }
    let settings = tracking_on(env.mgmt);
    let first = reconcile::reconcile(&env.db.pool, &settings, &Default::default(), false)
        .await
        .unwrap();
    assert_eq!((first.created, first.failed), (n, 0), "{first:?}");
    let second = reconcile::reconcile(&env.db.pool, &settings, &Default::default(), false)
        .await
        .unwrap();
    assert_eq!(
        (second.created, second.already_tracked),
        (0, n),
        "{second:?}"
    );
    let (companies, shared): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM companies WHERE tenant = $1 AND properties ->> 'tenant_id' = ANY($2)), \
                (SELECT count(*) FROM contacts WHERE tenant = $1 AND email = 'shared-admin@parallel.example')",
    )
    .bind(env.mgmt)
    .bind(created.iter().map(|t| t.0.to_string()).collect::<Vec<_>>())
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!((companies, shared), (n as i64, 1));
}
