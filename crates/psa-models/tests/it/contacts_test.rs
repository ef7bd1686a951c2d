use psa_models::companies::{self, NewCompany};
use psa_models::contacts::{self, ContactPatch, CreateOptions, ListFilter, NewContact};
use psa_models::db::PageRequest;
use psa_models::{CompanyId, ContactId, Error};
use serde_json::json;

use super::*;

fn new(name: &str, email: &str) -> NewContact {
    NewContact {
        full_name: name.into(),
        email: email.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_trims_lowercases_and_links() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let company = companies::create(
        &mut conn,
        t,
        NewCompany {
            company_name: "Co".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let mut input = new("  Ada Lovelace ", "  Ada@Example.COM ");
    input.company_id = Some(company.company_id);
    input.role = Some(" Admin ".into());
    input.phone_number = Some("".into());
    let c = contacts::create(&mut conn, t, input, CreateOptions::default())
        .await
        .unwrap();
    assert_eq!(c.full_name, "Ada Lovelace");
    assert_eq!(c.email, "ada@example.com");
    assert_eq!(c.company_id, Some(company.company_id));
    assert_eq!(c.role.as_deref(), Some("Admin"));
    assert_eq!(c.phone_number, None);
    assert_eq!(
        contacts::get(&mut conn, t, c.contact_name_id)
            .await
            .unwrap(),
        c
    );
}

#[tokio::test]
async fn create_failures_in_the_reference_order() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    contacts::create(
        &mut conn,
        t,
        new("First", "taken@example.com"),
        CreateOptions::default(),
    )
    .await
    .unwrap();

    let code = |r: Result<_, Error>| {
        r.map(|_: psa_models::contacts::Contact| ())
            .unwrap_err()
            .code()
    };
    assert_eq!(
        code(contacts::create(&mut conn, t, new("", ""), Default::default()).await),
        "validation_error"
    );
    assert_eq!(
        code(contacts::create(&mut conn, t, new("X", "bad"), Default::default()).await),
        "validation_error"
    );
    // Email checked before the company: a taken email with a missing company is email_exists.
    let mut both = new("X", " TAKEN@example.com");
    both.company_id = Some(CompanyId::new());
    assert_eq!(
        code(contacts::create(&mut conn, t, both, Default::default()).await),
        "email_exists"
    );
    let mut fk = new("X", "free@example.com");
    fk.company_id = Some(CompanyId::new());
    let e = contacts::create(&mut conn, t, fk, Default::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.to_string().as_str()),
        ("foreign_key_error", "The selected company no longer exists")
    );
    assert_eq!(
        count(&db, "contacts", t).await,
        1,
        "nothing written by the failures"
    );
}

#[tokio::test]
async fn a_company_of_another_tenant_is_a_foreign_key_error() {
    let db = db().await;
    let a = seeded_tenant(&db, "A").await;
    let b = seeded_tenant(&db, "B").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let a_company = companies::create(
        &mut conn,
        a,
        NewCompany {
            company_name: "A co".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let mut input = new("Mallory", "m@b.example");
    input.company_id = Some(a_company.company_id);
    let e = contacts::create(&mut conn, b, input, Default::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "foreign_key_error");

    // The database refuses it too, without the model's pre-check.
    let e = sqlx::query("INSERT INTO contacts (tenant, full_name, email, company_id) VALUES ($1, 'M', 'm2@b.example', $2)")
        .bind(b)
        .bind(a_company.company_id)
        .execute(&mut *conn)
        .await
        .unwrap_err();
    assert_eq!(Error::from(e).code(), "foreign_key_error");
}

#[tokio::test]
async fn concurrent_creates_of_one_email_one_wins() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    // Both transactions pass the pre-check before either commits; the unique constraint decides.
    let mut tx1 = db.pool.begin().await.unwrap();
    let mut tx2 = db.pool.begin().await.unwrap();
    let r1 = contacts::create(
        &mut tx1,
        t,
        new("One", "race@example.com"),
        Default::default(),
    )
    .await;
    // The second passes the pre-check (the first is not committed) and waits on the index.
    let second = tokio::spawn(async move {
        contacts::create(
            &mut tx2,
            t,
            new("Two", "RACE@example.com"),
            Default::default(),
        )
        .await
    });
    // Wait until the second transaction is blocked on the first one's lock (the unique index
    // entry), as PostgreSQL reports it: then it has certainly passed the pre-check.
    let mut blocked = false;
    for _ in 0..500 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock' \
               AND cardinality(pg_blocking_pids(pid)) > 0",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if waiting > 0 {
            blocked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert!(
        blocked,
        "the second insert waits on the first transaction's lock"
    );
    assert!(r1.is_ok());
    tx1.commit().await.unwrap();
    let r2 = second.await.unwrap();
    assert!(matches!(r2, Err(Error::EmailExists)), "{r2:?}");
    assert_eq!(count(&db, "contacts", t).await, 1);
}

#[tokio::test]
async fn concurrent_creates_race_through_the_pre_check() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut handles = Vec::new();
    for i in 0..8 {
        let pool = db.pool.clone();
        handles.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let r = contacts::create(
                &mut tx,
                t,
                new(&format!("P{i}"), "same@example.com"),
                Default::default(),
            )
            .await;
            if r.is_ok() {
                tx.commit().await.unwrap();
            }
            r.map(|_| ())
        }));
    }
    let mut ok = 0;
    for h in handles {
        match h.await.unwrap() {
            Ok(()) => ok += 1,
            Err(Error::EmailExists) => {}
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(count(&db, "contacts", t).await, 1);
}

#[tokio::test]
async fn replay_with_the_same_id_returns_the_first_row() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let id = ContactId::new();
    let opts = CreateOptions {
        contact_id: Some(id),
    };
    let a = contacts::create(&mut conn, t, new("Re", "re@example.com"), opts)
        .await
        .unwrap();
    let b = contacts::create(&mut conn, t, new("Re", "re@example.com"), opts)
        .await
        .unwrap();
    assert_eq!(a, b);
    assert_eq!(a.contact_name_id, id);
    assert_eq!(count(&db, "contacts", t).await, 1);
}

#[tokio::test]
async fn update_and_list() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let a = contacts::create(
        &mut conn,
        t,
        new("Alice", "alice@example.com"),
        Default::default(),
    )
    .await
    .unwrap();
    contacts::create(
        &mut conn,
        t,
        new("Bob", "bob@example.com"),
        Default::default(),
    )
    .await
    .unwrap();
    let co = companies::create(
        &mut conn,
        t,
        NewCompany {
            company_name: "Co".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();

    let patch: ContactPatch =
        serde_json::from_value(json!({"email": " ALICE2@Example.com", "company_id": co.company_id, "phone_number": "+1 555"})).unwrap();
    let u = contacts::update(&mut conn, t, a.contact_name_id, patch)
        .await
        .unwrap();
    assert_eq!(u.email, "alice2@example.com");
    assert_eq!(u.company_id, Some(co.company_id));
    assert_eq!(u.full_name, "Alice");

    // Its own email is not a conflict; another's is.
    let patch: ContactPatch =
        serde_json::from_value(json!({"email": "alice2@example.com"})).unwrap();
    contacts::update(&mut conn, t, a.contact_name_id, patch)
        .await
        .unwrap();
    let patch: ContactPatch = serde_json::from_value(json!({"email": "Bob@example.com"})).unwrap();
    assert!(matches!(
        contacts::update(&mut conn, t, a.contact_name_id, patch).await,
        Err(Error::EmailExists)
    ));
    let patch: ContactPatch =
        serde_json::from_value(json!({"company_id": CompanyId::new()})).unwrap();
    assert_eq!(
        contacts::update(&mut conn, t, a.contact_name_id, patch)
            .await
            .unwrap_err()
            .code(),
        "foreign_key_error"
    );
    let patch: ContactPatch = serde_json::from_value(json!({"full_name": ""})).unwrap();
    assert_eq!(
        contacts::update(&mut conn, t, a.contact_name_id, patch)
            .await
            .unwrap_err()
            .field(),
        Some("full_name")
    );
    let patch: ContactPatch = serde_json::from_value(json!({"company_id": null})).unwrap();
    assert_eq!(
        contacts::update(&mut conn, t, a.contact_name_id, patch)
            .await
            .unwrap()
            .company_id,
        None
    );
    assert_eq!(
        contacts::update(&mut conn, t, ContactId::new(), ContactPatch::default())
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );

    let page = contacts::list(
        &mut conn,
        t,
        &ListFilter::default(),
        &PageRequest {
            limit: Some(1),
            cursor: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(page.items[0].full_name, "Alice");
    let next = contacts::list(
        &mut conn,
        t,
        &ListFilter::default(),
        &PageRequest {
            limit: Some(1),
            cursor: page.next_cursor,
        },
    )
    .await
    .unwrap();
    assert_eq!(next.items[0].full_name, "Bob");
    assert!(next.next_cursor.is_none());

    // A search by part of the name or the email, case-insensitive; `%` is a character.
    for (needle, want) in [
        ("LIC", vec!["Alice"]),
        ("%", vec![]),
        ("", vec!["Alice", "Bob"]),
    ] {
        let found = contacts::list(
            &mut conn,
            t,
            &ListFilter {
                name: Some(needle.into()),
                ..ListFilter::default()
            },
            &PageRequest::default(),
        )
        .await
        .unwrap();
        let names: Vec<_> = found.items.iter().map(|c| c.full_name.as_str()).collect();
        assert_eq!(names, want, "{needle:?}");
    }
    let by_email = contacts::list(
        &mut conn,
        t,
        &ListFilter {
            name: Some(page.items[0].email.to_uppercase()),
            ..ListFilter::default()
        },
        &PageRequest::default(),
    )
    .await
    .unwrap();
    assert_eq!(by_email.items.len(), 1);
}
