use psa_models::companies::{self, NewCompany};
use psa_models::contacts::{self, NewContact};
use psa_models::tags::{self, NewTag, TaggedType};
use psa_models::tenants::{AdminInput, CreateOptions};
use psa_models::{CompanyId, users};

use super::*;

#[tokio::test]
async fn create_makes_the_tenant_its_company_and_main_office() {
    let db = db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let id = TenantId::new();
    let company_id = CompanyId::new();
    let input = NewTenant {
        name: " Initech ".into(),
        email: "Bill@Initech.example".into(),
        company_name: Some("Initech Services".into()),
        licensed_user_count: Some(10),
        slug: None,
    };
    let created = tenants::create(
        &mut conn,
        id,
        input.clone(),
        CreateOptions {
            company_id: Some(company_id),
            is_management: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(created.tenant.company_name, "Initech");
    assert_eq!(created.tenant.email, "bill@initech.example");
    assert_eq!(created.tenant.licensed_user_count, Some(10));
    let company = created.company.unwrap();
    assert_eq!(company.company_id, company_id);
    assert_eq!(company.properties.as_ref().unwrap()["type"], "msp");
    assert_eq!(
        company.properties.as_ref().unwrap()["is_system_company"],
        true
    );
    let (name, email, country, default): (String, String, String, bool) = sqlx::query_as(
        "SELECT location_name, email, country_code, is_default FROM company_locations WHERE tenant = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (name.as_str(), email.as_str(), country.as_str(), default),
        ("Main Office", "bill@initech.example", "XX", true)
    );

    // A replay with the same ids adds nothing.
    let again = tenants::create(
        &mut conn,
        id,
        input,
        CreateOptions {
            company_id: Some(company_id),
            is_management: false,
        },
    )
    .await
    .unwrap();
    assert_eq!(again.tenant, created.tenant);
    assert_eq!(count(&db, "companies", id).await, 1);
    assert_eq!(count(&db, "company_locations", id).await, 1);

    // setup_tenant_data, twice.
    for _ in 0..2 {
        let steps = tenants::setup_tenant_data(&mut conn, id, Some(company_id))
            .await
            .unwrap();
        assert_eq!(
            steps,
            [
                "tenant_email_settings",
                "tenant_settings",
                "tenant_companies"
            ]
        );
    }
    let provider: String =
        sqlx::query_scalar("SELECT email_provider FROM tenant_email_settings WHERE tenant = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(provider, "resend");
    assert_eq!(count(&db, "tenant_settings", id).await, 1);
    assert_eq!(count(&db, "tenant_companies", id).await, 1);
}

#[tokio::test]
async fn create_validates() {
    let db = db().await;
    let mut conn = db.pool.acquire().await.unwrap();
    let cases = [
        (
            NewTenant {
                name: "".into(),
                email: "a@b.example".into(),
                ..Default::default()
            },
            "tenant_name",
        ),
        (
            NewTenant {
                name: "T".into(),
                email: "nope".into(),
                ..Default::default()
            },
            "email",
        ),
        (
            NewTenant {
                name: "T".into(),
                email: "a@b.example".into(),
                licensed_user_count: Some(-1),
                ..Default::default()
            },
            "license_count",
        ),
        (
            NewTenant {
                name: "T".into(),
                email: "a@b.example".into(),
                company_name: Some("x".repeat(300)),
                ..Default::default()
            },
            "company_name",
        ),
    ];
    for (input, field) in cases {
        let e = tenants::create(&mut conn, TenantId::new(), input, Default::default())
            .await
            .unwrap_err();
        assert_eq!((e.code(), e.field()), ("validation_error", Some(field)));
    }
    assert_eq!(e_count(&db).await, 0);
}

async fn e_count(db: &psa_testing::TestDb) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn seeds_are_complete_and_idempotent() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let again = psa_models::seeds::run(&mut conn, t).await.unwrap();
    assert_eq!(again, Default::default(), "a second run inserts nothing");

    assert_eq!(count(&db, "roles", t).await, 8);
    let perms = psa_models::seeds::permissions().len() as i64;
    assert_eq!(count(&db, "permissions", t).await, perms);
    let msp_perms: i64 =
        sqlx::query_scalar("SELECT count(*) FROM permissions WHERE tenant = $1 AND msp")
            .bind(t)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    let admin_grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM role_permissions rp JOIN roles r USING (tenant, role_id) \
         WHERE rp.tenant = $1 AND r.role_name = 'Admin' AND r.msp",
    )
    .bind(t)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(admin_grants, msp_perms);
    let expected_other: i64 = psa_models::seeds::ROLE_GRANTS
        .iter()
        .map(|g| g.2.len() as i64)
        .sum();
    assert_eq!(
        count(&db, "role_permissions", t).await,
        admin_grants + expected_other
    );
    let (region, pct, desc): (String, rust_decimal::Decimal, String) = sqlx::query_as(
        "SELECT region_code, tax_percentage, description FROM tax_rates WHERE tenant = $1",
    )
    .bind(t)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (region.as_str(), pct, desc.as_str()),
        ("DEFAULT", rust_decimal::Decimal::ZERO, "Non-taxable")
    );
    assert_eq!(count(&db, "tax_regions", t).await, 1);
}

#[tokio::test]
async fn delete_leaves_nothing_in_any_tenant_table() {
    let db = db().await;
    let doomed = seeded_tenant(&db, "Doomed").await;
    let survivor = seeded_tenant(&db, "Survivor").await;
    let mut conn = db.pool.acquire().await.unwrap();
    for t in [doomed, survivor] {
        let admin = users::create_admin(
            &mut conn,
            t,
            "Ad",
            "Min",
            "admin@x.example",
            Default::default(),
        )
        .await
        .unwrap();
        tenants::setup_tenant_data(&mut conn, t, None)
            .await
            .unwrap();
        let co = companies::create(
            &mut conn,
            t,
            NewCompany {
                company_name: "Client".into(),
                url: Some("client.example.com".into()),
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
        let ct = contacts::create(
            &mut conn,
            t,
            NewContact {
                full_name: "C".into(),
                email: "c@client.example.com".into(),
                company_id: Some(co.company_id),
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
        sqlx::query("UPDATE companies SET billing_contact_id = $2, account_manager_id = $3 WHERE tenant = $1")
            .bind(t)
            .bind(ct.contact_name_id)
            .bind(admin.user.user_id)
            .execute(&mut *conn)
            .await
            .unwrap();
        for (id, ty) in [
            (co.company_id.0, TaggedType::Company),
            (ct.contact_name_id.0, TaggedType::Contact),
        ] {
            tags::attach(
                &mut conn,
                t,
                NewTag {
                    tag_text: "Key".into(),
                    tagged_id: id,
                    tagged_type: ty,
                    background_color: None,
                    text_color: None,
                },
                tags::AttachOptions {
                    created_by: Some(admin.user.user_id),
                    mapping_id: None,
                },
            )
            .await
            .unwrap();
        }
        sqlx::query(
            "INSERT INTO audit_log (tenant, actor, actor_kind, actor_id, action, entity_type) \
             VALUES ($1, 'platform:test', 'platform', 'test', 'create', 'company')",
        )
        .bind(t)
        .execute(&mut *conn)
        .await
        .unwrap();
    }
    let tables = tenant_tables(&db).await;
    let mut populated = 0;
    for table in &tables {
        if count(&db, table, doomed).await > 0 {
            populated += 1;
        }
    }
    assert!(
        populated >= 20,
        "the fixture should touch most tables, touched {populated} of {}",
        tables.len()
    );

    assert!(tenants::delete(&mut conn, doomed).await.unwrap());
    for table in &tables {
        assert_eq!(
            count(&db, table, doomed).await,
            0,
            "{table} still has rows of the deleted tenant"
        );
    }
    assert!(
        count(&db, "companies", survivor).await >= 2,
        "the other tenant is untouched"
    );
    assert_eq!(count(&db, "tag_mappings", survivor).await, 2);
    assert!(
        !tenants::delete(&mut conn, doomed).await.unwrap(),
        "deleting again is a no-op"
    );
}

#[tokio::test]
async fn management_init_creates_once() {
    let db = db().await;
    let mut tx = db.pool.begin().await.unwrap();
    let admin = AdminInput {
        first_name: "Nine".into(),
        last_name: "Minds".into(),
        email: "ops@nineminds.example".into(),
    };
    let first = tenants::init_management(&mut tx, "Nine Minds LLC", Some(admin))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(first.created && first.tenant.is_management);
    let (created_admin, created) = first.admin.unwrap();
    assert!(created);
    assert_eq!(created_admin.email, "ops@nineminds.example");
    assert_eq!(count(&db, "roles", first.tenant.tenant).await, 8);
    assert_eq!(count(&db, "tax_rates", first.tenant.tenant).await, 1);

    let mut tx = db.pool.begin().await.unwrap();
    let second = tenants::init_management(&mut tx, "Another Name", None)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(!second.created);
    assert_eq!(second.tenant.tenant, first.tenant.tenant);
    assert_eq!(e_count(&db).await, 1);

    // Run again with an administrator who does not exist yet: they are added; with one who
    // does, nothing changes.
    let mut tx = db.pool.begin().await.unwrap();
    let other = AdminInput {
        first_name: "Second".into(),
        last_name: "Admin".into(),
        email: "second@nineminds.example".into(),
    };
    let third = tenants::init_management(&mut tx, "Nine Minds LLC", Some(other.clone()))
        .await
        .unwrap();
    let again = tenants::init_management(&mut tx, "Nine Minds LLC", Some(other))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let (added, created) = third.admin.unwrap();
    assert!(created && !third.created);
    let (same, created) = again.admin.unwrap();
    assert!(!created);
    assert_eq!(same.user_id, added.user_id);
    assert_eq!(count(&db, "users", first.tenant.tenant).await, 2);
}

#[tokio::test]
async fn one_customer_company_per_managed_tenant() {
    let db = db().await;
    let m = seeded_tenant(&db, "Mgmt").await;
    let managed = TenantId::new();
    let mut conn = db.pool.acquire().await.unwrap();
    let props = |name: &str| {
        serde_json::json!({"tenant_id": managed.to_string(), "tenant_name": name, "subscription_type": "psa"})
            .as_object()
            .cloned()
    };
    companies::create(
        &mut conn,
        m,
        NewCompany {
            company_name: "One".into(),
            properties: props("One"),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let e = companies::create(
        &mut conn,
        m,
        NewCompany {
            company_name: "Two".into(),
            properties: props("Two"),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code(), e.field()),
        ("conflict", Some("properties.tenant_id"))
    );
    let found = companies::find_by_managed_tenant(&mut conn, m, managed)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.company_name, "One");
}

#[tokio::test]
async fn the_tenant_list_pages_and_filters() {
    use psa_models::db::PageRequest;
    use psa_models::provisioning::{TenantListFilter, list_tenants};
    let db = db().await;
    let mut tx = db.pool.begin().await.unwrap();
    let mgmt = tenants::init_management(&mut tx, "Nine Minds LLC", None)
        .await
        .unwrap()
        .tenant
        .tenant;
    tx.commit().await.unwrap();
    let mut ids = vec![mgmt];
    for name in ["Acme", "Globex", "Initech", "100% Pure", "Umbrella"] {
        ids.push(seeded_tenant(&db, name).await);
    }
    // One of them tracked: a customer company in the management tenant (untagged: partial).
    let mut conn = db.pool.acquire().await.unwrap();
    companies::create(
        &mut conn,
        mgmt,
        NewCompany {
            company_name: "Globex".into(),
            properties: serde_json::json!({"tenant_id": ids[2]})
                .as_object()
                .cloned(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let list = |filter: TenantListFilter, limit: u32, cursor: Option<String>| {
        let pool = db.pool.clone();
        async move {
            let mut conn = pool.acquire().await.unwrap();
            list_tenants(
                &mut conn,
                "PSA Customer",
                &filter,
                &PageRequest {
                    limit: Some(limit),
                    cursor,
                },
            )
            .await
        }
    };
    // Pages of 2, oldest first, every tenant once, and the last page says there is no more.
    let mut seen = Vec::new();
    let mut cursor = None;
    loop {
        let page = list(TenantListFilter::default(), 2, cursor).await.unwrap();
        assert!(page.items.len() <= 2);
        seen.extend(page.items.iter().map(|t| t.tenant_id));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, ids.iter().map(|t| t.0).collect::<Vec<_>>());

    let states = |f: TenantListFilter| async {
        list(f, 200, None)
            .await
            .unwrap()
            .items
            .into_iter()
            .map(|t| (t.name, t.customer_tracking))
            .collect::<Vec<_>>()
    };
    let by = |state: &str| TenantListFilter {
        customer_tracking: Some(state.into()),
        ..Default::default()
    };
    assert_eq!(
        states(by("partial")).await,
        [("Globex".to_owned(), "partial".to_owned())]
    );
    assert_eq!(states(by("management")).await.len(), 1);
    assert_eq!(states(by("untracked")).await.len(), 4);
    // A tracking filter is answered by a different query (whole sets, not a lookup per
    // tenant): it agrees with the states of the unfiltered list, in the same order, and pages
    // with the same cursors, combined with the other filters.
    let unfiltered = states(TenantListFilter::default()).await;
    for state in ["management", "tracked", "partial", "untracked", "skipped"] {
        let expected: Vec<_> = unfiltered
            .iter()
            .filter(|t| t.1 == state)
            .cloned()
            .collect();
        assert_eq!(states(by(state)).await, expected, "{state}");
        let mut paged = Vec::new();
        let mut cursor = None;
        loop {
            let page = list(by(state), 1, cursor).await.unwrap();
            paged.extend(
                page.items
                    .into_iter()
                    .map(|t| (t.name, t.customer_tracking)),
            );
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        assert_eq!(paged, expected, "{state}, a page at a time");
    }
    let untracked_named = TenantListFilter {
        customer_tracking: Some("untracked".into()),
        name_contains: Some("ini".into()),
        ..Default::default()
    };
    assert_eq!(
        states(untracked_named).await,
        [("Initech".to_owned(), "untracked".to_owned())]
    );
    // A name search is case-insensitive, and `%` is a character, not a wildcard.
    let named = |n: &str| TenantListFilter {
        name_contains: Some(n.into()),
        ..Default::default()
    };
    assert_eq!(
        states(named("INI")).await,
        [("Initech".to_owned(), "untracked".to_owned())]
    );
    assert_eq!(states(named("0% p")).await.len(), 1);
    assert_eq!(states(named("%")).await.len(), 1);
    // A created range.
    let all = list(TenantListFilter::default(), 200, None)
        .await
        .unwrap()
        .items;
    let range = TenantListFilter {
        created_after: Some(all[2].created_at),
        created_before: Some(all[4].created_at),
        ..Default::default()
    };
    assert_eq!(states(range).await.len(), 2);
    // Bad input names the problem.
    let e = list(by("lost"), 10, None).await.unwrap_err();
    assert_eq!(e.field(), Some("customer_tracking"));
    let e = list(TenantListFilter::default(), 10, Some("garbage".into()))
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("cursor"));
    let e = list(TenantListFilter::default(), 0, None)
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("limit"));
}

/// Two tenants of the same name created at once get different slugs (the second waits for the
/// first to commit), and a slug asked for that another has is refused on its field.
#[tokio::test(flavor = "multi_thread")]
async fn same_named_tenants_created_at_once_get_their_own_slugs() {
    let db = db().await;
    let create = |pool: sqlx::PgPool| async move {
        let mut tx = pool.begin().await.unwrap();
        let created = tenants::create(
            &mut tx,
            TenantId::new(),
            NewTenant {
                name: "Twin Peaks".into(),
                email: "admin@twin.example".into(),
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
        // Both transactions are open at the same time.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        tx.commit().await.unwrap();
        created.tenant.slug
    };
    let (a, b) = tokio::join!(
        tokio::spawn(create(db.pool.clone())),
        tokio::spawn(create(db.pool.clone()))
    );
    let mut slugs = vec![a.unwrap(), b.unwrap()];
    slugs.sort();
    assert_eq!(slugs, ["twin-peaks", "twin-peaks-2"]);
    let mut conn = db.pool.acquire().await.unwrap();
    let e = tenants::create(
        &mut conn,
        TenantId::new(),
        NewTenant {
            name: "Other".into(),
            email: "admin@other.example".into(),
            slug: Some("twin-peaks".into()),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.field(), Some("slug"), "{e}");
}
