use psa_models::companies::{self, NewCompany};
use psa_models::contacts::{self, NewContact};
use psa_models::tags::{self, NewTag, TaggedType};
use psa_models::validate::TagText;
use psa_models::{CompanyId, MappingId};

use super::*;

fn tag(text: &str, id: uuid::Uuid, ty: TaggedType) -> NewTag {
    NewTag {
        tag_text: text.into(),
        tagged_id: id,
        tagged_type: ty,
        background_color: None,
        text_color: None,
    }
}

#[tokio::test]
async fn attach_reuses_definitions_and_is_idempotent() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let a = companies::create(
        &mut conn,
        t,
        NewCompany {
            company_name: "A".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let b = companies::create(
        &mut conn,
        t,
        NewCompany {
            company_name: "B".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();

    let first = tags::attach(
        &mut conn,
        t,
        tag(" PSA Customer ", a.company_id.0, TaggedType::Company),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(first.definition_created && first.mapping_created);
    assert_eq!(first.tag.tag_text, "PSA Customer");
    assert_eq!(first.tag.background_color.as_deref(), Some("#BEC5F4"));
    assert_eq!(first.tag.text_color.as_deref(), Some("#2C3E50"));
    assert_eq!(first.tag.created_by, None);

    let again = tags::attach(
        &mut conn,
        t,
        tag("PSA Customer", a.company_id.0, TaggedType::Company),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(!again.definition_created && !again.mapping_created);
    assert_eq!(again.tag, first.tag);

    let other = tags::attach(
        &mut conn,
        t,
        tag("PSA Customer", b.company_id.0, TaggedType::Company),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(!other.definition_created && other.mapping_created);
    assert_eq!(other.tag.tag_id, first.tag.tag_id);

    // Exact text: a different case is a different definition.
    let lower = tags::attach(
        &mut conn,
        t,
        tag("psa customer", a.company_id.0, TaggedType::Company),
        Default::default(),
    )
    .await
    .unwrap();
    assert!(lower.definition_created);
    assert_eq!(count(&db, "tag_definitions", t).await, 2);
    assert_eq!(count(&db, "tag_mappings", t).await, 3);

    let listed = tags::list_for_entity(&mut conn, t, TaggedType::Company, a.company_id.0)
        .await
        .unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|t| t.tag_text.as_str())
            .collect::<Vec<_>>(),
        ["PSA Customer", "psa customer"]
    );
    assert!(
        tags::find_definition(
            &mut conn,
            t,
            &TagText::parse("PSA Customer").unwrap(),
            TaggedType::Company
        )
        .await
        .unwrap()
        .is_some()
    );
    assert!(
        tags::find_definition(
            &mut conn,
            t,
            &TagText::parse("PSA Customer").unwrap(),
            TaggedType::Contact
        )
        .await
        .unwrap()
        .is_none()
    );
}

#[tokio::test]
async fn supplied_colours_created_by_and_contacts() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let c = contacts::create(
        &mut conn,
        t,
        NewContact {
            full_name: "C".into(),
            email: "c@x.example".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let mut input = tag("Champion", c.contact_name_id.0, TaggedType::Contact);
    input.background_color = Some("#00ff00".into());
    let admin =
        psa_models::users::create_admin(&mut conn, t, "A", "B", "ab@x.example", Default::default())
            .await
            .unwrap();
    let r = tags::attach(
        &mut conn,
        t,
        input,
        tags::AttachOptions {
            created_by: Some(admin.user.user_id),
            mapping_id: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(r.tag.background_color.as_deref(), Some("#00FF00"));
    assert_eq!(r.tag.text_color.as_deref(), Some("#2C3E50"));
    assert_eq!(r.tag.created_by, Some(admin.user.user_id));
}

#[tokio::test]
async fn attach_failures() {
    let db = db().await;
    let a = seeded_tenant(&db, "A").await;
    let b = seeded_tenant(&db, "B").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let a_co = companies::create(
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
    let e = tags::attach(
        &mut conn,
        b,
        tag("X", a_co.company_id.0, TaggedType::Company),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code(), e.field()),
        ("foreign_key_error", Some("tagged_id"))
    );
    let e = tags::attach(
        &mut conn,
        a,
        tag("X", CompanyId::new().0, TaggedType::Company),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "foreign_key_error");
    let e = tags::attach(
        &mut conn,
        a,
        tag("é", a_co.company_id.0, TaggedType::Company),
        Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(
        (e.code(), e.field()),
        ("validation_error", Some("tag_text"))
    );
    let mut bad = tag("X", a_co.company_id.0, TaggedType::Company);
    bad.text_color = Some("blue".into());
    assert_eq!(
        tags::attach(&mut conn, a, bad, Default::default())
            .await
            .unwrap_err()
            .field(),
        Some("text_color")
    );
    assert_eq!(
        count(&db, "tag_definitions", a).await + count(&db, "tag_definitions", b).await,
        0
    );
}

#[tokio::test]
async fn detach_and_get() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let c = companies::create(
        &mut conn,
        t,
        NewCompany {
            company_name: "A".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let r = tags::attach(
        &mut conn,
        t,
        tag("VIP", c.company_id.0, TaggedType::Company),
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(
        tags::get(&mut conn, t, r.tag.mapping_id).await.unwrap(),
        r.tag
    );
    tags::detach(&mut conn, t, r.tag.mapping_id).await.unwrap();
    assert_eq!(
        tags::detach(&mut conn, t, r.tag.mapping_id)
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert_eq!(
        tags::get(&mut conn, t, MappingId::new())
            .await
            .unwrap_err()
            .code(),
        "not_found"
    );
    assert!(
        tags::list_for_entity(&mut conn, t, TaggedType::Company, c.company_id.0)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn concurrent_attaches_make_one_definition_and_one_mapping() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let c = companies::create(
        &mut conn,
        t,
        NewCompany {
            company_name: "A".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    drop(conn);
    let mut handles = Vec::new();
    for _ in 0..6 {
        let pool = db.pool.clone();
        let id = c.company_id.0;
        handles.push(tokio::spawn(async move {
            let mut tx = pool.begin().await.unwrap();
            let r = tags::attach(
                &mut tx,
                t,
                tag("Hot", id, TaggedType::Company),
                Default::default(),
            )
            .await
            .unwrap();
            tx.commit().await.unwrap();
            r.tag.mapping_id
        }));
    }
    let mut ids = std::collections::HashSet::new();
    for h in handles {
        ids.insert(h.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
    assert_eq!(count(&db, "tag_definitions", t).await, 1);
    assert_eq!(count(&db, "tag_mappings", t).await, 1);
}
