use psa_models::users::{self, CreateOptions, NewUser, UserType};
use psa_models::validate::EmailAddress;
use psa_models::{UserId, password};
use secrecy::ExposeSecret;

use super::*;

#[tokio::test]
async fn admin_user_has_the_admin_role_and_a_hashed_temporary_password() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let created = users::create_admin(
        &mut conn,
        t,
        " Grace ",
        "Hopper",
        " Grace@Navy.example ",
        Default::default(),
    )
    .await
    .unwrap();
    assert_eq!(created.user.email, "grace@navy.example");
    assert_eq!(created.user.username, "grace@navy.example");
    assert_eq!(created.user.first_name.as_deref(), Some("Grace"));
    assert_eq!(created.user.user_type, UserType::Internal);
    let pw = created.temporary_password.expose_secret();
    assert_eq!(pw.len(), password::GENERATED_LENGTH);

    let (found, hash) = users::find_for_login(
        &mut conn,
        t,
        &EmailAddress::parse("GRACE@navy.example").unwrap(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(found, created.user);
    assert!(hash.starts_with("$argon2id$") && !hash.contains(pw));
    assert!(
        password::verify(&created.temporary_password, &hash)
            .await
            .unwrap()
    );

    let role: String = sqlx::query_scalar(
        "SELECT r.role_name FROM user_roles ur JOIN roles r USING (tenant, role_id) WHERE ur.tenant = $1 AND ur.user_id = $2 AND r.msp",
    )
    .bind(t)
    .bind(created.user.user_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(role, "Admin");
}

#[tokio::test]
async fn replay_resets_the_password_and_adds_no_row() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let id = UserId::new();
    let opts = CreateOptions { user_id: Some(id) };
    let a = users::create_admin(&mut conn, t, "A", "B", "ab@x.example", opts)
        .await
        .unwrap();
    let b = users::create_admin(&mut conn, t, "A", "B", "ab@x.example", opts)
        .await
        .unwrap();
    assert_eq!(a.user.user_id, b.user.user_id);
    assert_ne!(
        a.temporary_password.expose_secret(),
        b.temporary_password.expose_secret()
    );
    assert_eq!(count(&db, "users", t).await, 1);
    assert_eq!(count(&db, "user_roles", t).await, 1);
    let (_, hash) =
        users::find_for_login(&mut conn, t, &EmailAddress::parse("ab@x.example").unwrap())
            .await
            .unwrap()
            .unwrap();
    assert!(
        password::verify(&b.temporary_password, &hash)
            .await
            .unwrap(),
        "the latest password works"
    );
    assert!(
        !password::verify(&a.temporary_password, &hash)
            .await
            .unwrap(),
        "the unseen first one does not"
    );
}

#[tokio::test]
async fn failures() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    users::create_admin(&mut conn, t, "A", "B", "dup@x.example", Default::default())
        .await
        .unwrap();
    let e = users::create_admin(&mut conn, t, "C", "D", "DUP@x.example", Default::default())
        .await
        .unwrap_err();
    assert_eq!((e.code(), e.field()), ("conflict", Some("email")));
    for (first, last, email, field) in [
        ("", "B", "a@x.example", "first_name"),
        ("A", " ", "a@x.example", "last_name"),
        ("A", "B", "x", "email"),
    ] {
        let e = users::create_admin(&mut conn, t, first, last, email, Default::default())
            .await
            .unwrap_err();
        assert_eq!(e.field(), Some(field));
    }
    // No seeds, no Admin role.
    let bare = TenantId::new();
    tenants::create(
        &mut conn,
        bare,
        NewTenant {
            name: "Bare".into(),
            email: "b@bare.example".into(),
            ..Default::default()
        },
        Default::default(),
    )
    .await
    .unwrap();
    let e = users::create_admin(
        &mut conn,
        bare,
        "A",
        "B",
        "a@bare.example",
        Default::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(e.code(), "conflict");
    assert!(e.to_string().contains("Admin role not found"));
    assert_eq!(count(&db, "users", bare).await, 0);
}

#[tokio::test]
async fn has_permission_follows_roles_and_the_msp_client_split() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let admin = users::create_admin(
        &mut conn,
        t,
        "A",
        "D",
        "admin@x.example",
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    let tech = users::create(
        &mut conn,
        t,
        NewUser {
            first_name: "T".into(),
            last_name: "E".into(),
            email: "tech@x.example".into(),
            user_type: UserType::Internal,
            roles: vec!["Technician".into()],
        },
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    let portal = users::create(
        &mut conn,
        t,
        NewUser {
            first_name: "P".into(),
            last_name: "U".into(),
            email: "portal@x.example".into(),
            user_type: UserType::Client,
            roles: vec!["Admin".into()],
        },
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    let can = |u, r: &'static str, a: &'static str| {
        let pool = db.pool.clone();
        async move {
            let mut c = pool.acquire().await.unwrap();
            users::has_permission(&mut c, t, u, r, a).await.unwrap()
        }
    };
    assert!(can(admin, "client", "create").await);
    assert!(can(admin, "tag", "create").await);
    assert!(can(admin, "contact", "update").await);
    assert!(can(tech, "client", "read").await);
    assert!(!can(tech, "client", "create").await);
    assert!(!can(tech, "contact", "create").await);
    assert!(can(tech, "tag", "create").await);
    // The client-portal Admin holds client-scope permissions only.
    assert!(can(portal, "client", "create").await);
    assert!(
        !can(portal, "contact", "read").await,
        "msp permission, client user"
    );
    assert!(!can(portal, "tag", "create").await);
    assert!(!can(UserId::new(), "client", "read").await);
    // Another tenant's user id has no permission here.
    let other = seeded_tenant(&db, "Other").await;
    let stranger = users::create_admin(
        &mut conn,
        other,
        "S",
        "T",
        "s@x.example",
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    assert!(!can(stranger, "client", "read").await);
    // Inactive users can do nothing.
    sqlx::query("UPDATE users SET is_inactive = true WHERE tenant = $1 AND user_id = $2")
        .bind(t)
        .bind(admin)
        .execute(&mut *conn)
        .await
        .unwrap();
    assert!(!can(admin, "client", "read").await);
}
