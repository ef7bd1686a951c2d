use psa_models::companies::{self, CompanyPatch, CreateOptions, ListFilter, NewCompany};
use psa_models::contacts::{self, NewContact};
use psa_models::db::PageRequest;
use psa_models::tags::{self, NewTag, TaggedType};
use psa_models::{CompanyId, Error};
use serde_json::json;

use super::*;

fn new(name: &str) -> NewCompany {
    NewCompany {
        company_name: name.into(),
        ..Default::default()
    }
}

#[tokio::test]
async fn create_stores_the_row_tax_settings_and_email_suffix() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut tx = db.pool.begin().await.unwrap();
    let mut input = new("  Globex  ");
    input.url = Some("https://WWW.Globex.example.com/about".into());
    input.billing_email = Some(" Billing@Globex.Example.com ".into());
    let c = companies::create(&mut tx, t, input, CreateOptions::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(c.company_name, "Globex");
    assert_eq!(
        c.client_type,
        Some(psa_models::validate::ClientType::Company)
    );
    assert_eq!(
        c.url.as_deref(),
        Some("https://WWW.Globex.example.com/about")
    );
    assert_eq!(
        c.properties,
        Some(json!({"website": "https://WWW.Globex.example.com/about"}))
    );
    assert_eq!(
        c.billing_email.as_deref(),
        Some("billing@globex.example.com")
    );
    assert!(!c.is_inactive);

    let (suffix, self_reg): (String, bool) = sqlx::query_as(
        "SELECT email_suffix, self_registration_enabled FROM company_email_settings WHERE tenant = $1 AND company_id = $2",
    )
    .bind(t)
    .bind(c.company_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(suffix, "globex.example.com");
    assert!(!self_reg);

    // Default tax settings: the seeded 0% rate, one default rate row, one component per rate.
    let (rate_desc, is_default): (String, bool) = sqlx::query_as(
        "SELECT r.description, ctr.is_default FROM company_tax_rates ctr \
         JOIN tax_rates r ON r.tenant = ctr.tenant AND r.tax_rate_id = ctr.tax_rate_id \
         WHERE ctr.tenant = $1 AND ctr.company_id = $2",
    )
    .bind(t)
    .bind(c.company_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((rate_desc.as_str(), is_default), ("Non-taxable", true));
    assert_eq!(count(&db, "company_tax_settings", t).await, 1);
    let mut tx = db.pool.begin().await.unwrap();
    companies::create(&mut tx, t, new("Initech"), CreateOptions::default())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(count(&db, "company_tax_settings", t).await, 2);
    assert_eq!(
        count(&db, "tax_components", t).await,
        1,
        "one component per rate, not per company"
    );
}

#[tokio::test]
async fn create_options_skip_and_replay() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let id = CompanyId::new();
    let opts = CreateOptions {
        company_id: Some(id),
        skip_tax_settings: true,
        skip_email_suffix: true,
    };
    let mut input = new("Umbrella");
    input.url = Some("umbrella.example.org".into());
    let mut tx = db.pool.begin().await.unwrap();
    let first = companies::create(&mut tx, t, input.clone(), opts)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(first.company_id, id);
    let mut tx = db.pool.begin().await.unwrap();
    let again = companies::create(&mut tx, t, input, opts).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        first, again,
        "a replay with the same id returns the stored row"
    );
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM companies WHERE tenant = $1 AND company_name = 'Umbrella'",
    )
    .bind(t)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(n, 1);
    let suffixes: i64 =
        sqlx::query_scalar("SELECT count(*) FROM company_email_settings WHERE company_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(suffixes, 0);
    let tax: i64 =
        sqlx::query_scalar("SELECT count(*) FROM company_tax_settings WHERE company_id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(tax, 0);
}

#[tokio::test]
async fn create_failures() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    companies::create(&mut conn, t, new("Dup"), CreateOptions::default())
        .await
        .unwrap();

    let e = companies::create(&mut conn, t, new(" Dup "), CreateOptions::default())
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.field()), ("conflict", Some("company_name")));
    assert!(
        !e.to_string().contains("duplicate key"),
        "no database text: {e}"
    );

    let e = companies::create(&mut conn, t, new(""), CreateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.field()),
        ("validation_error", Some("company_name"))
    );

    let mut bad = new("X");
    bad.account_manager_id = Some(psa_models::UserId::new());
    let e = companies::create(&mut conn, t, bad, CreateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.field()),
        ("foreign_key_error", Some("account_manager_id"))
    );

    let mut bad = new("X");
    bad.region_code = Some("NOWHERE".into());
    let e = companies::create(&mut conn, t, bad, CreateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.field()),
        ("foreign_key_error", Some("region_code"))
    );

    // A tenant without seeds has no tax rate to default to.
    let bare = TenantId::new();
    tenants::create(
        &mut conn,
        bare,
        NewTenant {
            name: "Bare".into(),
            email: "a@bare.example".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let e = companies::create(&mut conn, bare, new("Y"), CreateOptions::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains("No active tax rates"));

    // Same name in another tenant is fine.
    let other = seeded_tenant(&db, "Other").await;
    companies::create(&mut conn, other, new("Dup"), CreateOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn get_list_and_cursor() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    for i in 0..7 {
        companies::create(
            &mut conn,
            t,
            new(&format!("C{i}")),
            CreateOptions::default(),
        )
        .await
        .unwrap();
    }
    let mut names = Vec::new();
    let mut cursor = None;
    let mut pages = 0;
    loop {
        let page = companies::list(
            &mut conn,
            t,
            &ListFilter::default(),
            &PageRequest {
                limit: Some(3),
                cursor,
            },
        )
        .await
        .unwrap();
        pages += 1;
        names.extend(page.items.iter().map(|c| c.company_name.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    // 7 companies + the tenant's own one, 3 a page.
    assert_eq!(pages, 3);
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    assert_eq!(names.len(), 8);

    let e = companies::list(
        &mut conn,
        t,
        &ListFilter::default(),
        &PageRequest {
            limit: Some(0),
            cursor: None,
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.field(), Some("limit"));
    let e = companies::list(
        &mut conn,
        t,
        &ListFilter::default(),
        &PageRequest {
            limit: None,
            cursor: Some("garbage!".into()),
        },
    )
    .await
    .unwrap_err();
    assert_eq!(e.field(), Some("cursor"));

    let e = companies::get(&mut conn, t, CompanyId::new())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "not_found");
}

#[tokio::test]
async fn update_rules() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let mut input = new("Hooli");
    input.properties = Some(json!({"industry": "tech"}).as_object().unwrap().clone());
    input.billing_email = Some("ap@hooli.example".into());
    input.notes = Some("keep".into());
    let c = companies::create(&mut conn, t, input, CreateOptions::default())
        .await
        .unwrap();
    let contact = contacts::create(
        &mut conn,
        t,
        NewContact {
            full_name: "Gavin".into(),
            email: "gavin@hooli.example".into(),
            company_id: Some(c.company_id),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();

    // A website in properties sets url; properties merge; absent fields are kept.
    let patch: CompanyPatch =
        serde_json::from_value(json!({"properties": {"website": "https://hooli.example"}}))
            .unwrap();
    let u = companies::update(&mut conn, t, c.company_id, patch)
        .await
        .unwrap();
    assert_eq!(u.url.as_deref(), Some("https://hooli.example"));
    assert_eq!(
        u.properties,
        Some(json!({"industry": "tech", "website": "https://hooli.example"}))
    );
    assert_eq!(u.billing_email.as_deref(), Some("ap@hooli.example"));
    assert_eq!(u.notes.as_deref(), Some("keep"));

    // An explicit url overwrites the website; "" clears notes; null clears billing_email.
    let patch: CompanyPatch = serde_json::from_value(
        json!({"url": "https://new.hooli.example", "notes": "", "billing_email": null}),
    )
    .unwrap();
    let u = companies::update(&mut conn, t, c.company_id, patch)
        .await
        .unwrap();
    assert_eq!(u.url.as_deref(), Some("https://new.hooli.example"));
    assert_eq!(
        u.properties.as_ref().unwrap()["website"],
        "https://new.hooli.example"
    );
    assert_eq!(u.notes, None);
    assert_eq!(u.billing_email, None);
    assert!(u.updated_at >= c.updated_at);

    // Clearing the url clears the website.
    let patch: CompanyPatch = serde_json::from_value(json!({"url": null})).unwrap();
    let u = companies::update(&mut conn, t, c.company_id, patch)
        .await
        .unwrap();
    assert_eq!(u.url, None);
    assert!(u.properties.as_ref().unwrap().get("website").is_none());

    // Deactivating deactivates its contacts.
    let patch: CompanyPatch = serde_json::from_value(json!({"is_inactive": true})).unwrap();
    companies::update(&mut conn, t, c.company_id, patch)
        .await
        .unwrap();
    assert!(
        contacts::get(&mut conn, t, contact.contact_name_id)
            .await
            .unwrap()
            .is_inactive
    );

    // Failures.
    let patch: CompanyPatch = serde_json::from_value(json!({"company_name": "  "})).unwrap();
    let e = companies::update(&mut conn, t, c.company_id, patch)
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("company_name"));
    let patch: CompanyPatch = serde_json::from_value(json!({"url": "ftp://x"})).unwrap();
    assert_eq!(
        companies::update(&mut conn, t, c.company_id, patch)
            .await
            .unwrap_err()
            .field(),
        Some("url")
    );
    let patch: CompanyPatch = serde_json::from_value(json!({"company_name": "Acme MSP"})).unwrap();
    assert_eq!(
        companies::update(&mut conn, t, c.company_id, patch)
            .await
            .unwrap_err()
            .code(),
        "conflict"
    );
    let e = companies::update(&mut conn, t, CompanyId::new(), CompanyPatch::default())
        .await
        .unwrap_err();
    assert_eq!(e.code(), "not_found");
    assert!(
        serde_json::from_value::<CompanyPatch>(json!({"tenant": "x"})).is_err(),
        "unknown fields refused"
    );
}

#[tokio::test]
async fn delete_removes_tag_mappings_and_refuses_while_contacts_remain() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let c = companies::create(&mut conn, t, new("Tagged"), CreateOptions::default())
        .await
        .unwrap();
    tags::attach(
        &mut conn,
        t,
        NewTag {
            tag_text: "VIP".into(),
            tagged_id: c.company_id.0,
            tagged_type: TaggedType::Company,
            background_color: None,
            text_color: None,
        },
        Default::default(),
    )
    .await
    .unwrap();
    let contact = contacts::create(
        &mut conn,
        t,
        NewContact {
            full_name: "P".into(),
            email: "p@tagged.example".into(),
            company_id: Some(c.company_id),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();

    let e = companies::delete(&mut conn, t, c.company_id)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert_eq!(
        count(&db, "tag_mappings", t).await,
        1,
        "nothing removed on refusal"
    );

    contacts::delete(&mut conn, t, contact.contact_name_id)
        .await
        .unwrap();
    companies::delete(&mut conn, t, c.company_id).await.unwrap();
    assert_eq!(count(&db, "tag_mappings", t).await, 0);
    assert_eq!(
        count(&db, "tag_definitions", t).await,
        1,
        "the definition stays for reuse"
    );
    assert!(matches!(
        companies::delete(&mut conn, t, c.company_id).await,
        Err(Error::NotFound { .. })
    ));
}

/// Names are stored in Unicode NFC, and invisible format characters are refused: "Acme" and
/// "Acme" with a zero-width space, or "Café" typed two ways, cannot both exist.
#[tokio::test]
async fn look_alike_names_cannot_both_exist() {
    let db = super::db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut tx = db.pool.begin().await.unwrap();
    let create = |name: &str| NewCompany {
        company_name: name.into(),
        ..Default::default()
    };
    let first = companies::create(&mut tx, t, create("Café Rouge"), Default::default())
        .await
        .unwrap();
    assert_eq!(first.company_name, "Café Rouge");
    // The same name with a combining accent: the same name, a conflict.
    let decomposed = companies::create(&mut tx, t, create("Cafe\u{301} Rouge"), Default::default())
        .await
        .unwrap_err();
    assert_eq!(decomposed.code(), "conflict", "{decomposed:?}");
    tx.rollback().await.unwrap();
    for invisible in [
        "Café Rouge\u{200b}",
        "\u{202e}Café Rouge",
        "Café\u{2060} Rouge",
        "Caf\u{ad}é Rouge",
        "\u{feff}Café Rouge",
    ] {
        let mut tx = db.pool.begin().await.unwrap();
        let e = companies::create(&mut tx, t, create(invisible), Default::default())
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.field()),
            ("validation_error", Some("company_name")),
            "{invisible:?}: {e:?}"
        );
    }
    use unicode_normalization::UnicodeNormalization;
    let e = psa_models::validate::EmailAddress::parse("ANN\u{301}A@Example.com").unwrap();
    let nfc: String = "ann\u{301}a@example.com".nfc().collect();
    assert_eq!(e.as_str(), nfc);
    assert!(psa_models::validate::EmailAddress::parse("a\u{200b}@example.com").is_err());
    assert!(
        psa_models::validate::PersonName::parse_field("Ada\u{200d}", "first_name", "First name")
            .is_err()
    );
}
