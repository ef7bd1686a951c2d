//! `/api/v1/users` and the password endpoints: invitations by email (a real SMTP server on
//! loopback), roles, deactivation, password change and reset.

use std::time::Duration;

use psa_testing::{SmtpSink, link_in};
use reqwest::{Method, StatusCode};
use serde_json::json;

use super::*;

/// The API mailing through a fresh SMTP server, and a tenant with its admin.
pub(crate) async fn app_with_mail() -> (TestApp, SmtpSink, TenantFixture) {
    app_with_mail_and(Default::default()).await
}

/// [`app_with_mail`] with these abuse limits.
pub(crate) async fn app_with_mail_and(
    limits: psa_api::limits::LimitsConfig,
) -> (TestApp, SmtpSink, TenantFixture) {
    let smtp = SmtpSink::start().await;
    let mut app = TestApp::unserved().await;
    let t = app.tenant("Acme").await;
    let pool = app.db.pool.clone();
    let delivery = psa_models::invitations::Delivery {
        mailer: Some(
            psa_models::mail::Mailer::new(
                &secrecy::SecretString::from(smtp.url()),
                "psa <noreply@psa.test>",
            )
            .unwrap(),
        ),
        ..test_config().delivery
    };
    app.serve(
        pool,
        psa_api::Config {
            dns: Default::default(),
            delivery,
            limits,
            ..test_config()
        },
        None,
    )
    .await;
    (app, smtp, t)
}

fn invitee(email: &str, role: &str) -> serde_json::Value {
    json!({"first_name": "Ada", "last_name": "Lovelace", "email": email, "role": role})
}

fn token_in(link: &str) -> String {
    link.rsplit('#').next().unwrap().to_owned()
}

async fn login(app: &TestApp, tenant: TenantId, email: &str, password: &str) -> StatusCode {
    app.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"tenant_id": tenant, "email": email, "password": password})),
    )
    .await
    .0
}

#[tokio::test]
async fn an_admin_invites_a_user_who_signs_in_and_can_be_cut_off() {
    let (app, smtp, t) = app_with_mail().await;
    let admin = Some(t.key.as_str());
    // A Technician may not invite (user:create), and nothing is sent.
    let tech = app.user_with_role(t.tenant, "Technician").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&tech),
            Some(invitee("ada@acme.example", "Finance")),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    // Bad input names the problem and writes nothing.
    let r = app
        .call(
            Method::POST,
            "/api/v1/users",
            admin,
            Some(invitee("ada@acme.example", "Boss")),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(
        r.1["error"]["fields"]["role"]
            .as_str()
            .unwrap()
            .contains("Finance")
    );
    assert_eq!(smtp.messages().len(), 0);

    let (status, invited) = app
        .call(
            Method::POST,
            "/api/v1/users",
            admin,
            Some(invitee(" Ada@Acme.example ", "Finance")),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{invited}");
    assert_eq!(invited["user"]["status"], "invited");
    assert_eq!(invited["user"]["roles"], json!(["Finance"]));
    assert!(
        !invited.to_string().contains("psa_i_"),
        "the API never shows the link"
    );
    let user_id = invited["user"]["user_id"].as_str().unwrap().to_owned();
    let r = app
        .call(
            Method::POST,
            "/api/v1/users",
            admin,
            Some(invitee("ada@acme.example", "Finance")),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");

    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 1);
    assert!(
        psa_testing::header_of(&mails[0], "Subject")
            .unwrap()
            .contains("Acme")
    );
    let token = token_in(&link_in(&mails[0]).unwrap());
    // A user without a password cannot log in with any password.
    assert_eq!(
        login(&app, t.tenant, "ada@acme.example", "").await,
        StatusCode::UNAUTHORIZED
    );
    let (status, session) = app
        .call(
            Method::POST,
            "/api/v1/auth/invitations/accept",
            None,
            Some(json!({"token": token, "password": "quiet lanterns over harbour"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let ada = session["token"].as_str().unwrap().to_owned();

    let r = app
        .call(Method::GET, "/api/v1/users", Some(&tech), None)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let pm = app.user_with_role(t.tenant, "Project Manager").await;
    let (status, list) = app
        .call(Method::GET, "/api/v1/users", Some(&pm), None)
        .await;
    assert_eq!(status, StatusCode::OK, "user:read is enough to list");
    let row = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user_id"] == user_id.as_str())
        .unwrap()
        .clone();
    assert_eq!(row["status"], "active");

    // Role change: Finance -> Technician; the Technician cannot change roles.
    let path = format!("/api/v1/users/{user_id}");
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(&tech),
            Some(json!({"role": "Admin"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let (status, changed) = app
        .call(
            Method::PATCH,
            &path,
            admin,
            Some(json!({"role": "Technician"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{changed}");
    assert_eq!(changed["roles"], json!(["Technician"]));

    // Deactivation cuts the session and API keys at once, for good.
    let ada_id: uuid::Uuid = sqlx::query_scalar(
        "SELECT user_id FROM users WHERE tenant = $1 AND email = 'ada@acme.example'",
    )
    .bind(t.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let mut conn = app.db.pool.acquire().await.unwrap();
    let ada_key = psa_models::credentials::create_api_key(
        &mut conn,
        t.tenant,
        psa_models::UserId(ada_id),
        None,
    )
    .await
    .unwrap();
    drop(conn);
    let ada_key = secrecy::ExposeSecret::expose_secret(&ada_key.key).to_owned();
    for credential in [&ada, &ada_key] {
        let (status, _) = app
            .call(
                Method::GET,
                "/api/v1/contacts",
                Some(credential.as_str()),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, off) = app
        .call(Method::POST, &format!("{path}/deactivate"), admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{off}");
    assert_eq!(off["status"], "inactive");
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(&ada), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        login(
            &app,
            t.tenant,
            "ada@acme.example",
            "quiet lanterns over harbour"
        )
        .await,
        StatusCode::UNAUTHORIZED
    );
    let (status, on) = app
        .call(Method::POST, &format!("{path}/reactivate"), admin, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{on}");
    assert_eq!(on["status"], "active");
    for credential in [&ada, &ada_key] {
        let (status, _) = app
            .call(
                Method::GET,
                "/api/v1/contacts",
                Some(credential.as_str()),
                None,
            )
            .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "ended sessions and revoked keys stay ended"
        );
    }
    assert_eq!(
        login(
            &app,
            t.tenant,
            "ada@acme.example",
            "quiet lanterns over harbour"
        )
        .await,
        StatusCode::OK
    );

    // The last admin cannot be demoted or deactivated, nor can callers deactivate themselves.
    let own = format!("/api/v1/users/{}", t.admin);
    let r = app
        .call(
            Method::PATCH,
            &own,
            admin,
            Some(json!({"role": "Technician"})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    let r = app
        .call(Method::POST, &format!("{own}/deactivate"), admin, None)
        .await;
    assert_error(&r, StatusCode::CONFLICT, "conflict");
    // Another tenant's user is not found.
    let other = app.tenant("Other").await;
    let r = app
        .call(
            Method::POST,
            &format!("{path}/deactivate"),
            Some(&other.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let actions: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE tenant = $1 AND entity_id = $2 ORDER BY created_at",
    )
    .bind(t.tenant)
    .bind(uuid::Uuid::parse_str(&user_id).unwrap())
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    // The session the accepted invitation opened is a sign-in like any other (`login`).
    assert_eq!(
        actions,
        [
            "invite",
            "accept_invitation",
            "login",
            "change_role",
            "deactivate",
            "reactivate",
            "login"
        ]
    );
}

#[tokio::test]
async fn password_change_and_reset() {
    let (app, smtp, t) = app_with_mail().await;
    let (_, first) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(
                json!({"tenant_id": t.tenant, "email": t.admin_email, "password": ADMIN_PASSWORD}),
            ),
        )
        .await;
    let (_, second) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(
                json!({"tenant_id": t.tenant, "email": t.admin_email, "password": ADMIN_PASSWORD}),
            ),
        )
        .await;
    let (s1, s2) = (
        first["token"].as_str().unwrap(),
        second["token"].as_str().unwrap(),
    );
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            Some(s1),
            Some(change("wrong", "brisk autumn kettle song")),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(r.1["error"]["fields"]["current_password"].is_string());
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            Some(s1),
            Some(change(ADMIN_PASSWORD, "short")),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(
        r.1["error"]["fields"]["new_password"]
            .as_str()
            .unwrap()
            .contains("12")
    );
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            Some(s1),
            Some(change(ADMIN_PASSWORD, "brisk autumn kettle song")),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(s1), None)
        .await;
    assert_eq!(status, StatusCode::OK, "the session that changed it stays");
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(s2), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the other sessions end");
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(&t.key), None)
        .await;
    assert_eq!(status, StatusCode::OK, "API keys stay unless asked");
    assert_eq!(
        login(&app, t.tenant, &t.admin_email, ADMIN_PASSWORD).await,
        StatusCode::UNAUTHORIZED
    );

    // A reset request answers the same for an account that exists and one that does not.
    let reset = |email: &str| json!({"tenant_id": t.tenant, "email": email});
    let known = app
        .call(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(reset(&t.admin_email)),
        )
        .await;
    let unknown = app
        .call(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(reset("nobody@acme.example")),
        )
        .await;
    assert_eq!(known.0, StatusCode::ACCEPTED);
    assert_eq!(known, unknown);
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    // Asking again at once sends nothing more: the first link still works, and nobody can flood
    // the mailbox or keep replacing the owner's link.
    let again = app
        .call(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(reset(&t.admin_email)),
        )
        .await;
    assert_eq!(again, known);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        smtp.messages().len(),
        1,
        "only the existing account is mailed, once"
    );
    let link = link_in(&mails[0]).unwrap();
    assert!(link.contains("/reset-password#psa_r_"), "{link}");
    // The reset page sets the password through the form, as a browser posts it.
    let post_form = |password: &'static str| {
        app.http
            .post(format!("{}/reset-password", app.base))
            .form(&[
                ("token", token_in(&link)),
                ("password", password.to_owned()),
                ("password_confirm", password.to_owned()),
            ])
            .send()
    };
    let page = post_form("mellow river stones").await.unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    assert!(page.headers().get("set-cookie").is_none());
    assert!(page.text().await.unwrap().contains("Your password is set"));
    assert_eq!(
        login(&app, t.tenant, &t.admin_email, "mellow river stones").await,
        StatusCode::OK
    );
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(s1), None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a reset ends every session"
    );
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(&t.key), None)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "a reset revokes the user's API keys too"
    );

    // The same link again: the page says why it no longer works.
    let again = post_form("mellow river stones 2").await.unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
    let body = again.text().await.unwrap();
    assert!(body.contains("already been used"), "{body}");
    // Only the reason: no form to try another password with, no second message.
    assert!(
        !body.contains("<form") && !body.contains("needs the whole link"),
        "{body}"
    );
}

#[tokio::test]
async fn without_mail_the_api_shows_no_link() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/users",
            Some(&t.key),
            Some(invitee("ada@acme.example", "Finance")),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "mail_not_configured");
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(json!({"tenant_id": t.tenant, "email": t.admin_email})),
        )
        .await;
    assert_error(&r, StatusCode::CONFLICT, "mail_not_configured");
    assert_eq!(app.count("users").await, 1, "nothing written");
    assert_eq!(app.count("user_auth_tokens").await, 0);
}

#[tokio::test]
async fn a_password_change_can_revoke_the_users_api_keys() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    // A voluntary change revokes the user's keys when asked to.
    let mut tx = app.db.pool.begin().await.unwrap();
    let key = psa_models::credentials::create_api_key(&mut tx, t.tenant, t.admin, Some("new"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let key = secrecy::ExposeSecret::expose_secret(&key.key).to_owned();
    let (status, session) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"tenant_id": t.tenant, "email": t.admin_email,
                        "password": ADMIN_PASSWORD})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let (status, body) = app
        .call(
            Method::POST,
            "/api/v1/auth/password",
            session["token"].as_str(),
            Some(json!({"current_password": ADMIN_PASSWORD,
                        "new_password": "quiet harbour lantern", "revoke_api_keys": true})),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(&key), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "revoked with the change");
    let revoked: serde_json::Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE tenant = $1 AND action = 'change_password' \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(t.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    // Both of the user's keys: the one made above and the fixture's.
    assert_eq!(revoked["api_keys_revoked"], 2);
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(&t.key), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn admins_see_when_keys_were_used_and_revoke_them_one_or_all() {
    let app = TestApp::spawn().await;
    let t = app.tenant("Acme").await;
    let k = Some(t.key.as_str());
    let tech = app.user_with_role(t.tenant, "Technician").await;
    // Used once, so its last use is on record.
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(&tech), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, list) = app.call(Method::GET, "/api/v1/api-keys", k, None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let keys = list["data"].as_array().unwrap();
    assert_eq!(keys.len(), 2, "{list}");
    let tech_key = keys
        .iter()
        .find(|k| k["email"] == "technician@staff.example")
        .unwrap();
    assert!(tech_key["last_used_at"].is_string(), "{tech_key}");
    assert!(tech_key.get("key").is_none() && tech_key.get("key_hash").is_none());
    let tech_user = tech_key["user_id"].as_str().unwrap().to_owned();
    // Only the tenant's administrators see them.
    let (status, _) = app
        .call(Method::GET, "/api/v1/api-keys", Some(&tech), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // All of a user's keys in one action.
    let (status, body) = app
        .call(
            Method::POST,
            &format!("/api/v1/users/{tech_user}/revoke-api-keys"),
            k,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["revoked"], 1);
    let (status, _) = app
        .call(Method::GET, "/api/v1/contacts", Some(&tech), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // One key: another of the admin's.
    let mut tx = app.db.pool.begin().await.unwrap();
    let spare = psa_models::credentials::create_api_key(&mut tx, t.tenant, t.admin, Some("spare"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let path = format!("/api/v1/api-keys/{}", spare.api_key_id);
    assert_eq!(
        app.call(Method::DELETE, &path, k, None).await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.call(Method::DELETE, &path, k, None).await.0,
        StatusCode::NOT_FOUND
    );
    let audited: Vec<(String, String)> = sqlx::query_as(
        "SELECT action, entity_type FROM audit_log WHERE tenant = $1 AND action = 'revoke' \
         ORDER BY created_at",
    )
    .bind(t.tenant)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited,
        [
            ("revoke".to_owned(), "user".to_owned()),
            ("revoke".to_owned(), "api_key".to_owned())
        ]
    );
}
