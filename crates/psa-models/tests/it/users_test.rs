use psa_models::auth_tokens::{self, Purpose};
use psa_models::invitations::{self, Delivery, NewInvitee};
use psa_models::users::{self, CreateOptions, NewUser, UserType};
use psa_models::validate::EmailAddress;
use psa_models::{UserId, identity, password};
use secrecy::{ExposeSecret, SecretString};

use super::*;

#[tokio::test]
async fn admin_user_has_the_admin_role_and_no_password() {
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

    // What the sign-in finds by email (any case).
    let found = psa_models::sign_in::candidates(
        &mut conn,
        &EmailAddress::parse("GRACE@navy.example").unwrap(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!((found[0].tenant, found[0].user), (t, created.user.user_id));
    let hash = found[0].hash.clone();
    assert_eq!(
        hash, None,
        "no usable password until the invitation is accepted"
    );
    let listed = users::list(&mut conn, t).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].status, users::UserStatus::Invited);
    assert_eq!(listed[0].roles, vec!["Admin".to_owned()]);

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
async fn replay_returns_the_same_user_and_adds_no_row() {
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
    assert_eq!(a.user, b.user);
    assert_eq!(count(&db, "users", t).await, 1);
    assert_eq!(count(&db, "user_roles", t).await, 1);
}

fn delivery() -> Delivery {
    Delivery::without_mail(url::Url::parse("https://psa.example.com").unwrap())
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s.to_owned())
}

fn token_of(link: &SecretString) -> String {
    link.expose_secret().rsplit('#').next().unwrap().to_owned()
}

#[tokio::test]
async fn an_invitation_works_once_and_only_the_newest_works() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let d = delivery();
    let input = NewInvitee {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "ada@acme.example".into(),
        role: "Technician".into(),
    };
    let first = invitations::invite(&mut conn, t, &input, &d, "cli")
        .await
        .unwrap();
    let url = first.link.url(&d.public_url);
    assert!(
        url.expose_secret()
            .starts_with("https://psa.example.com/invite#psa_i_")
    );
    let first_token = token_of(&url);
    // The token is stored only as a digest.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM user_auth_tokens WHERE position(convert_to($1, 'UTF8') in token_hash) > 0",
    )
    .bind(&first_token)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    assert_eq!(stored, 0);
    // Inviting the same email again is refused; an unknown role names the roles.
    let again = invitations::invite(&mut conn, t, &input, &d, "cli")
        .await
        .unwrap_err();
    assert_eq!(again.code(), "conflict");
    let bad_role = NewInvitee {
        email: "x@acme.example".into(),
        role: "Boss".into(),
        ..input.clone()
    };
    let e = invitations::invite(&mut conn, t, &bad_role, &d, "cli")
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("role"));
    assert!(e.to_string().contains("Technician"), "{e}");

    let second = invitations::reissue(&mut conn, t, first.user.user_id, &d, "cli")
        .await
        .unwrap();
    let second_token = token_of(&second.link.url(&d.public_url));
    let e = auth_tokens::find(&mut conn, Purpose::Invitation, &first_token)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("replaced by a newer one"), "{e}");
    let found = auth_tokens::find(&mut conn, Purpose::Invitation, &second_token)
        .await
        .unwrap();
    assert_eq!(found.user, first.user.user_id);
    assert_eq!(found.tenant, t);
    // The token of one purpose is not valid for the other.
    assert!(
        auth_tokens::find(&mut conn, Purpose::PasswordReset, &second_token)
            .await
            .is_err()
    );
    assert!(
        auth_tokens::find(&mut conn, Purpose::Invitation, "psa_i_garbage")
            .await
            .is_err()
    );

    let hash = password::hash(&secret("correct horse battery staple"))
        .await
        .unwrap();
    auth_tokens::redeem(&mut conn, &found, Purpose::Invitation, &hash)
        .await
        .unwrap();
    let e = auth_tokens::find(&mut conn, Purpose::Invitation, &second_token)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already been used"), "{e}");
    assert_eq!(e.code(), "invalid_link");
    let stored = psa_models::sign_in::candidates(
        &mut conn,
        &EmailAddress::parse("ada@acme.example").unwrap(),
        None,
    )
    .await
    .unwrap()
    .remove(0)
    .hash;
    assert!(
        password::verify(&secret("correct horse battery staple"), &stored.unwrap())
            .await
            .unwrap()
    );
    // An invitation is for a first password: once one is set, an open invitation is spent.
    let reset = invitations::reset(
        &mut conn,
        t,
        &EmailAddress::parse("ada@acme.example").unwrap(),
        &d,
    )
    .await
    .unwrap()
    .expect("a reset link for an active user");
    assert_eq!(reset.link.purpose, Purpose::PasswordReset);
    assert!(
        invitations::reset(
            &mut conn,
            t,
            &EmailAddress::parse("ada@acme.example").unwrap(),
            &d
        )
        .await
        .unwrap()
        .is_none(),
        "one reset link per cool-down"
    );
    // Accepted: no new invitation.
    let e = invitations::reissue(&mut conn, t, first.user.user_id, &d, "cli")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("already accepted"), "{e}");
    assert_eq!(
        users::summary(&mut conn, t, first.user.user_id)
            .await
            .unwrap()
            .status,
        users::UserStatus::Active
    );
}

#[tokio::test]
async fn an_expired_link_and_a_deactivated_user_are_refused() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let d = delivery();
    let input = NewInvitee {
        first_name: "Ada".into(),
        last_name: "Lovelace".into(),
        email: "ada@acme.example".into(),
        role: "Technician".into(),
    };
    let inv = invitations::invite(&mut conn, t, &input, &d, "cli")
        .await
        .unwrap();
    let token = token_of(&inv.link.url(&d.public_url));
    sqlx::query("UPDATE user_auth_tokens SET expires_at = now() - interval '1 second'")
        .execute(&mut *conn)
        .await
        .unwrap();
    let e = auth_tokens::find(&mut conn, Purpose::Invitation, &token)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");

    let inv = invitations::reissue(&mut conn, t, inv.user.user_id, &d, "cli")
        .await
        .unwrap();
    let token = token_of(&inv.link.url(&d.public_url));
    let found = auth_tokens::find(&mut conn, Purpose::Invitation, &token)
        .await
        .unwrap();
    identity::set_inactive(&mut conn, t, inv.user.user_id, true)
        .await
        .unwrap();
    assert!(
        auth_tokens::find(&mut conn, Purpose::Invitation, &token)
            .await
            .is_err()
    );
    assert!(
        auth_tokens::redeem(&mut conn, &found, Purpose::Invitation, "x")
            .await
            .is_err(),
        "a link found before the deactivation is refused too"
    );
    let e = invitations::reissue(&mut conn, t, inv.user.user_id, &d, "cli")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("deactivated"), "{e}");
    // A reset for a deactivated or unknown user issues nothing.
    for email in ["ada@acme.example", "nobody@acme.example"] {
        let r = invitations::reset(&mut conn, t, &EmailAddress::parse(email).unwrap(), &d)
            .await
            .unwrap();
        assert!(r.is_none());
    }
}

#[tokio::test]
async fn the_last_active_admin_stays_an_admin() {
    let db = db().await;
    let t = seeded_tenant(&db, "Acme").await;
    let mut conn = db.pool.acquire().await.unwrap();
    let a = users::create_admin(
        &mut conn,
        t,
        "A",
        "Admin",
        "a@acme.example",
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    let e = users::set_role(&mut conn, t, a, "Technician")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("last active administrator"), "{e}");
    let e = identity::set_inactive(&mut conn, t, a, true)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("last active administrator"), "{e}");
    let b = users::create_admin(
        &mut conn,
        t,
        "B",
        "Admin",
        "b@acme.example",
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    let demoted = users::set_role(&mut conn, t, a, "Technician")
        .await
        .unwrap();
    assert_eq!(demoted.roles, vec!["Technician".to_owned()]);
    let e = identity::set_inactive(&mut conn, t, b, true)
        .await
        .unwrap_err();
    assert_eq!(e.code(), "conflict");
    let e = users::set_role(&mut conn, t, a, "Boss").await.unwrap_err();
    assert_eq!(e.field(), Some("role"));
    // Two changes at once cannot both pass the check: the second waits for the first, then sees
    // that it would leave no administrator.
    let c = users::create_admin(
        &mut conn,
        t,
        "C",
        "Admin",
        "c@acme.example",
        Default::default(),
    )
    .await
    .unwrap()
    .user
    .user_id;
    let mut first = db.pool.begin().await.unwrap();
    identity::set_inactive(&mut first, t, b, true)
        .await
        .unwrap();
    let pool = db.pool.clone();
    let second = tokio::spawn(async move {
        let mut tx = pool.begin().await.unwrap();
        let r = users::set_role(&mut tx, t, c, "Technician").await;
        tx.commit().await.unwrap();
        r
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !second.is_finished(),
        "the second change waits for the first"
    );
    first.commit().await.unwrap();
    let e = second.await.unwrap().unwrap_err();
    assert!(e.to_string().contains("last active administrator"), "{e}");
    identity::set_inactive(&mut conn, t, b, false)
        .await
        .unwrap();

    let off = identity::set_inactive(&mut conn, t, a, true).await.unwrap();
    assert_eq!(off.status, users::UserStatus::Inactive);
    let on = identity::set_inactive(&mut conn, t, a, false)
        .await
        .unwrap();
    assert_eq!(on.status, users::UserStatus::Invited);
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
