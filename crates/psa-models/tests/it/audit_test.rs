//! The audit log: an entry is written in its tenant or the change fails (never a silent skip),
//! and who did it is typed: kind and id, found again by either.

use psa_models::audit::{self, Action, Actor, ActorKind, Filter};
use psa_models::db;

use super::*;

fn operator() -> Actor {
    Actor::Operator {
        account: "ops".into(),
        host: "bastion".into(),
    }
}

#[tokio::test]
async fn an_entry_outside_the_transactions_tenant_is_an_error_not_a_skip() {
    let db = db().await;
    let a = seeded_tenant(&db, "Audited A").await;
    let b = seeded_tenant(&db, "Audited B").await;
    let note = || serde_json::json!({});
    // In its own tenant's context: written.
    let mut tx = db::begin_tenant(&db.pool, a).await.unwrap();
    audit::record(
        &mut tx,
        a,
        &operator(),
        Action::Update,
        "company",
        None,
        note(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Confined to A, an entry for B cannot be written: the call fails.
    let mut tx = db::begin_tenant(&db.pool, a).await.unwrap();
    let e = audit::record(
        &mut tx,
        b,
        &operator(),
        Action::Update,
        "company",
        None,
        note(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "internal", "{e}");
    drop(tx);
    // A tenant that does not exist: an error for `record`, a `false` for what an
    // unauthenticated caller reports.
    let nobody = TenantId::new();
    let mut conn = db.pool.acquire().await.unwrap();
    assert!(
        audit::record(
            &mut conn,
            nobody,
            &operator(),
            Action::Delete,
            "y",
            None,
            note()
        )
        .await
        .is_err()
    );
    assert!(
        !audit::record_if_tenant_exists(
            &mut conn,
            nobody,
            &Actor::Anonymous,
            Action::LoginFailed,
            "user",
            None,
            note()
        )
        .await
        .unwrap()
    );
    let rows: Vec<(uuid::Uuid, String)> = sqlx::query_as(
        "SELECT tenant, action FROM audit_log WHERE actor_kind IN ('operator', 'anonymous')",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows, vec![(a.0, "update".to_owned())]);
}

#[tokio::test]
async fn actors_are_stored_by_kind_and_id_and_found_by_either() {
    let db = db().await;
    let t = seeded_tenant(&db, "Typed Actors").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let ada = psa_models::users::create_admin(
        &mut conn,
        t,
        "Ada",
        "Lovelace",
        "ada@example.com",
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    let key = uuid::Uuid::now_v7();
    let actors = [
        Actor::User { user: ada },
        Actor::ApiKey { key, user: ada },
        operator(),
        Actor::Platform("sweeper"),
        Actor::Anonymous,
    ];
    let mut tx = db::begin_tenant(&db.pool, t).await.unwrap();
    for actor in &actors {
        audit::record(
            &mut tx,
            t,
            actor,
            Action::Update,
            "company",
            None,
            serde_json::json!({}),
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let list = |kind: Option<ActorKind>, id: &str| {
        let (pool, id) = (db.pool.clone(), id.to_owned());
        async move {
            let mut tx = db::begin_tenant(&pool, t).await.unwrap();
            audit::list(
                &mut tx,
                t,
                &Filter {
                    actor_kind: kind,
                    actor_id: id,
                    ..Default::default()
                },
                None,
                50,
            )
            .await
            .unwrap()
        }
    };
    // "What did this API key do": the key's entry alone, naming its user.
    let by_key = list(Some(ActorKind::ApiKey), &key.to_string()).await;
    assert_eq!(by_key.len(), 1);
    assert_eq!(by_key[0].actor_user, Some(ada.0));
    assert_eq!(by_key[0].actor_email.as_deref(), Some("ada@example.com"));
    // "What did Ada do": her session's entry and her key's.
    let by_ada = list(None, &ada.0.to_string()).await;
    let kinds: Vec<ActorKind> = by_ada.iter().map(|e| e.actor_kind).collect();
    assert_eq!(by_ada.len(), 2, "{kinds:?}");
    assert!(kinds.contains(&ActorKind::User) && kinds.contains(&ActorKind::ApiKey));
    // Operators from the command line, by kind; one by account@host.
    assert_eq!(list(Some(ActorKind::Operator), "").await.len(), 1);
    assert_eq!(
        list(None, "ops@bastion").await[0].actor,
        "operator:ops@bastion"
    );
    assert_eq!(list(Some(ActorKind::Platform), "sweeper").await.len(), 1);
    // Each row keeps the actor's text beside its columns (older spellings are mapped by the
    // migration's trigger: the next test).
    // (One transaction wrote them all: compared as sets.)
    let mut texts: Vec<String> =
        sqlx::query_scalar("SELECT actor FROM audit_log WHERE tenant = $1 AND action = 'update'")
            .bind(t)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let mut expected: Vec<String> = actors.iter().map(ToString::to_string).collect();
    texts.sort();
    expected.sort();
    assert_eq!(texts, expected);
}

#[tokio::test]
async fn a_row_written_by_the_previous_version_gets_its_actor_columns() {
    let db = db().await;
    let t = seeded_tenant(&db, "Rolling").await;
    let user = uuid::Uuid::now_v7();
    // During a rolling upgrade an old binary writes only `actor`.
    for actor in [
        format!("user:{user}"),
        "cli:root".to_owned(),
        "cli".to_owned(),
        "anonymous".to_owned(),
        "sweeper".to_owned(),
        "workflow:tenant_creation".to_owned(),
    ] {
        sqlx::query(
            "INSERT INTO audit_log (tenant, actor, action, entity_type) VALUES ($1, $2, 'x', 'y')",
        )
        .bind(t)
        .bind(&actor)
        .execute(&db.pool)
        .await
        .unwrap();
    }
    let rows: Vec<(String, String, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT actor_kind, actor_id, actor_user FROM audit_log WHERE tenant = $1 \
           AND action = 'x' ORDER BY created_at, audit_id",
    )
    .bind(t)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let mut rows = rows;
    rows.sort();
    let mut expected = vec![
        ("user".to_owned(), user.to_string(), Some(user)),
        ("operator".to_owned(), "root".to_owned(), None),
        ("operator".to_owned(), "unknown".to_owned(), None),
        ("anonymous".to_owned(), String::new(), None),
        ("platform".to_owned(), "sweeper".to_owned(), None),
        ("platform".to_owned(), "provisioning".to_owned(), None),
    ];
    expected.sort();
    assert_eq!(rows, expected);
}
