//! Second factors: an authenticator app set up and confirmed, the sign-in's second step (a code
//! accepted once, a recovery code once, five wrong codes end the attempt), the tenant's policy
//! forcing enrolment before anything else, an administrator's reset, and the user's sessions.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::lifecycle::platform;
use super::*;

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The code an app with `secret` (base32) shows `offset` steps from now.
pub(crate) fn code(secret: &str, offset: i64) -> String {
    let bytes = psa_models::mfa::decoded(secret).unwrap();
    let t = (now() as i64 + offset * psa_models::mfa::STEP as i64) as u64;
    psa_models::mfa::code_at(&bytes, t).unwrap()
}

pub(crate) async fn login(app: &TestApp, t: &TenantFixture) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": t.admin_email, "password": t.admin_password})),
    )
    .await
}

pub(crate) async fn second_step(app: &TestApp, token: &str, code: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/api/v1/auth/mfa",
        None,
        Some(json!({"mfa_token": token, "code": code})),
    )
    .await
}

/// A session for the fixture's admin, then an authenticator app set up on it; returns the
/// secret and the recovery codes.
pub(crate) async fn enrol(app: &TestApp, session: &str) -> (String, Vec<String>) {
    let (status, e) = app
        .call(Method::POST, "/api/v1/auth/mfa/totp", Some(session), None)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{e}");
    let secret = e["secret"].as_str().unwrap().to_owned();
    assert!(
        e["otpauth_uri"]
            .as_str()
            .unwrap()
            .starts_with("otpauth://totp/psa:"),
        "{e}"
    );
    // A wrong code, a malformed one: refused, nothing confirmed.
    for bad in ["000000", "12345", "abcdef"] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/auth/mfa/totp/confirm",
                Some(session),
                Some(json!({"code": bad})),
            )
            .await;
        if bad != code(&secret, 0) {
            assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        }
    }
    let (status, codes) = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/totp/confirm",
            Some(session),
            Some(json!({"code": code(&secret, 0)})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{codes}");
    let codes: Vec<String> = codes["recovery_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(codes.len(), 10);
    (secret, codes)
}

#[tokio::test]
async fn an_authenticator_app_guards_the_sign_in() {
    // Generous sign-in limits: this test makes more attempts a minute than the defaults allow.
    let (app, _mgmt, acme) = super::lifecycle::platform_with(psa_api::Config {
        dns: Default::default(),
        limits: psa_api::limits::LimitsConfig {
            login_per_minute_per_address: 1000,
            login_per_minute_per_account: 1000,
            ..Default::default()
        },
        ..test_config()
    })
    .await;
    let (status, body) = login(&app, &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = body["token"].as_str().unwrap().to_owned();
    let (secret, recovery) = enrol(&app, &session).await;
    // The secret is kept sealed, never in plain text.
    let stored: String =
        sqlx::query_scalar("SELECT secret_sealed FROM user_totp WHERE user_id = $1")
            .bind(acme.admin)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(stored.starts_with("psa2.") && !stored.contains(&secret));
    let flagged: bool =
        sqlx::query_scalar("SELECT two_factor_enabled FROM users WHERE user_id = $1")
            .bind(acme.admin)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(flagged, "the reference's flag follows the enrolment");
    // The users list says who has one (what an administrator checks before requiring it).
    let (_, users) = app
        .call(Method::GET, "/api/v1/users", Some(&acme.key), None)
        .await;
    let me = users["data"]
        .as_array()
        .or_else(|| users.as_array())
        .unwrap()
        .iter()
        .find(|u| u["email"] == acme.admin_email.as_str())
        .cloned()
        .unwrap();
    assert_eq!(me["two_factor_enabled"], true, "{users}");

    // The password alone is no longer a sign-in.
    let (status, body) = login(&app, &acme).await;
    assert_error(
        &(status, body.clone()),
        StatusCode::UNAUTHORIZED,
        "mfa_required",
    );
    assert_eq!(body["methods"], json!(["totp", "recovery_code"]));
    let token = body["mfa_token"].as_str().unwrap().to_owned();
    // The code the enrolment used cannot be used again (its step is spent); the next one works.
    assert_error(
        &second_step(&app, &token, &code(&secret, 0)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_code",
    );
    let (status, signed) = second_step(&app, &token, &code(&secret, 1)).await;
    assert_eq!(status, StatusCode::OK, "{signed}");
    // The token is used up; the same code again in another sign-in is a replay.
    assert_error(
        &second_step(&app, &token, &code(&secret, 1)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    );
    let token = login(&app, &acme).await.1["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        &second_step(&app, &token, &code(&secret, 1)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_code",
    );
    // A recovery code works once (typed in capitals, with spaces: as people type).
    let typed = recovery[0].to_uppercase().replace('-', " ");
    let (status, _) = second_step(&app, &token, &typed).await;
    assert_eq!(status, StatusCode::OK);
    let token = login(&app, &acme).await.1["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        &second_step(&app, &token, &recovery[0]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_code",
    );
    // Five wrong codes end the attempt: the right code then does not help.
    for _ in 0..4 {
        assert_error(
            &second_step(&app, &token, "999999").await,
            StatusCode::UNAUTHORIZED,
            "invalid_code",
        );
    }
    assert_error(
        &second_step(&app, &token, &recovery[1]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    );
    let failures: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE action = 'second_factor_failed' AND tenant = $1",
    )
    .bind(acme.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(failures, 7, "every wrong code is audited");
    // An expired or forged token.
    assert_error(
        &second_step(&app, "psa_mfa_forged", &recovery[1]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_token",
    );
    // Signed in again, with another recovery code.
    let token = login(&app, &acme).await.1["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, session) = second_step(&app, &token, &recovery[1]).await;
    assert_eq!(status, StatusCode::OK);
    let session = session["token"].as_str().unwrap().to_owned();

    // Removing it takes the password (or a code); then the password signs in alone again.
    let r = app
        .call(
            Method::DELETE,
            "/api/v1/auth/mfa/totp",
            Some(&session),
            Some(json!({"password": "not the password"})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let r = app
        .call(
            Method::DELETE,
            "/api/v1/auth/mfa/totp",
            Some(&session),
            Some(json!({"password": acme.admin_password})),
        )
        .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{}", r.1);
    assert_eq!(login(&app, &acme).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_tenant_that_requires_a_second_factor_lets_a_user_without_one_only_enrol() {
    let (app, _mgmt, acme) = platform().await;
    let key = Some(acme.key.as_str());
    let r = app
        .call(
            Method::PATCH,
            "/api/v1/security-policy",
            key,
            Some(json!({"mfa_required": true})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let audited: Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE tenant = $1 AND action = 'update' AND entity_type = 'tenant'",
    )
    .bind(acme.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited["mfa_required"],
        json!({"before": false, "after": true})
    );

    let (status, body) = login(&app, &acme).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session = body["token"].as_str().unwrap().to_owned();
    for path in [
        "/api/v1/companies",
        "/api/v1/users",
        "/api/v1/auth/sessions",
    ] {
        let r = app.call(Method::GET, path, Some(&session), None).await;
        assert_error(&r, StatusCode::FORBIDDEN, "mfa_enrollment_required");
    }
    // API keys are machines: not affected.
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", key, None)
            .await
            .0,
        StatusCode::OK
    );
    let (secret, _) = enrol(&app, &session).await;
    assert!(!secret.is_empty());
    // Confirming lifts it for this session.
    let r = app
        .call(Method::GET, "/api/v1/companies", Some(&session), None)
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
}

#[tokio::test]
async fn an_administrator_resets_a_lost_second_factor_and_the_sessions_end() {
    let (app, smtp, acme) = super::user_admin::app_with_mail().await;
    let tech_key = app.user_with_role(acme.tenant, "Technician").await;
    let (_, body) = login(&app, &acme).await;
    let session = body["token"].as_str().unwrap().to_owned();
    enrol(&app, &session).await;
    // Only those who manage users may.
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/users/{}/reset-mfa", acme.admin),
            Some(&tech_key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/users/{}/reset-mfa", acme.admin),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1["removed"], true);
    // The session ended; the password alone signs in again; the user was told.
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", Some(&session), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(login(&app, &acme).await.0, StatusCode::OK);
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert!(
        mails.iter().any(|m| psa_testing::header_of(m, "Subject")
            .unwrap()
            .contains("second factor was reset")),
        "{mails:?}"
    );
}

#[tokio::test]
async fn people_see_their_sessions_and_end_them() {
    let (app, _mgmt, acme) = platform().await;
    let open = || async {
        let r = app
            .http
            .post(format!("{}/api/v1/auth/login", app.base))
            .header("user-agent", "Firefox on the test bench")
            .json(&json!({"email": acme.admin_email, "password": acme.admin_password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (laptop, phone) = (open().await, open().await);
    let (status, list) = app
        .call(Method::GET, "/api/v1/auth/sessions", Some(&laptop), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let sessions = list["data"].as_array().unwrap();
    assert_eq!(sessions.len(), 2, "{list}");
    assert_eq!(sessions.iter().filter(|s| s["current"] == true).count(), 1);
    assert!(
        sessions
            .iter()
            .all(|s| s["user_agent"] == "Firefox on the test bench" && s["address"] == "127.0.0.1")
    );
    let other = sessions.iter().find(|s| s["current"] == false).unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Not another user's session, not a made-up one.
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/sessions/{}", uuid::Uuid::new_v4()),
            Some(&laptop),
            None,
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/sessions/{other}"),
            Some(&laptop),
            None,
        )
        .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT);
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", Some(&phone), None)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.call(Method::GET, "/api/v1/companies", Some(&laptop), None)
            .await
            .0,
        StatusCode::OK
    );
}

/// In the browser, at desktop and phone sizes: an email in two organisations chooses one; that
/// organisation requires a second factor, so the console leads to setting one up (QR code, key,
/// code, recovery codes); the sessions page; signing in again asks for the code. Every page
/// passes axe and is saved as a screenshot.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_a_second_factor_is_set_up_and_asked_for() {
    use super::console::{review, ui};
    use fantoccini::Locator;
    let (app, _mgmt, acme) = platform().await;
    let beta = app.tenant("Beta").await;
    let r = app
        .call(
            Method::PATCH,
            "/api/v1/security-policy",
            Some(&acme.key),
            Some(json!({"mfa_required": true})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK);
    let password = "one password for two places";
    for (label, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
        let email = format!("pat-{label}@shared.example");
        super::sign_in::member(&app, acme.tenant, &email, password).await;
        super::sign_in::member(&app, beta.tenant, &email, password).await;
        let browser = psa_testing::Browser::start(width, height).await;
        let b = &browser.client;
        ui::sign_in(b, &app.base, "", &email, password).await;
        ui::wait_text(b, "h1", "Choose your organisation", 20).await;
        review(&browser, &format!("choose-organisation-{label}")).await;
        ui::click(b, "ul.choices li:first-child button").await;
        // Acme requires a second factor: the console leads to setting one up.
        ui::wait_text(b, "h1", "Second factor", 20).await;
        review(&browser, &format!("second-factor-required-{label}")).await;
        ui::click(b, "form[action$='/start'] button").await;
        ui::wait_text(b, "main", "Scan this code", 20).await;
        review(&browser, &format!("second-factor-scan-{label}")).await;
        let secret = b
            .find(Locator::Css("code.secret"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        ui::fill(b, "code", &code(&secret, 0)).await;
        ui::click(b, "form[action$='/confirm'] button").await;
        ui::wait_text(b, "main", "Your recovery codes", 20).await;
        review(&browser, &format!("second-factor-codes-{label}")).await;
        b.goto(&format!("{}/console/account/sessions", app.base))
            .await
            .unwrap();
        ui::wait_text(b, "h1", "Your sessions", 20).await;
        review(&browser, &format!("sessions-{label}")).await;
        ui::sign_out(b).await;
        ui::sign_in(b, &app.base, "acme", &email, password).await;
        ui::wait_text(b, "h1", "Your code", 20).await;
        review(&browser, &format!("sign-in-code-{label}")).await;
        ui::fill(b, "code", &code(&secret, 1)).await;
        ui::click(b, "form.card button[type=submit]").await;
        ui::wait_text(b, "h1", "Companies", 20).await;
    }
}

/// A sign-in from a device not seen lately (another browser, or the same one on another
/// network) is told to the user by email; the first sign-in ever, and the same device again,
/// are not.
#[tokio::test]
async fn a_sign_in_from_a_new_device_is_told_to_the_user() {
    let (app, smtp, acme) = super::user_admin::app_with_mail().await;
    let sign_in_with = |agent: &'static str| {
        let (base, email, password) = (
            app.base.clone(),
            acme.admin_email.clone(),
            acme.admin_password.clone(),
        );
        async move {
            let r = reqwest::Client::new()
                .post(format!("{base}/api/v1/auth/login"))
                .header("user-agent", agent)
                .json(&json!({"email": email, "password": password}))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
    };
    sign_in_with("Firefox/140 on the desk").await;
    sign_in_with("Firefox/140 on the desk").await;
    sign_in_with("Safari on a phone found in a taxi").await;
    smtp.wait_for(1, Duration::from_secs(10)).await;
    // Give a wrongly sent second notice the time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails: Vec<String> = smtp
        .messages()
        .into_iter()
        .filter(|m| {
            psa_testing::header_of(m, "Subject").is_some_and(|s| s.contains("A new sign-in"))
        })
        .collect();
    assert_eq!(mails.len(), 1, "{mails:?}");
    let text = psa_testing::text_of(&mails[0])
        .unwrap()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    assert!(text.contains("Safari on a phone found in a taxi"), "{text}");
    assert!(text.contains("from the address 127.0.0.1"), "{text}");
    assert!(!mails[0].contains(&acme.admin_password));
}

/// Ten wrong codes in a row, across as many sign-ins as it takes, lock the second factor for a
/// while (429, the right code refused too) and the user is told by email.
#[tokio::test]
async fn wrong_codes_across_sign_ins_lock_the_second_factor_and_the_user_is_told() {
    // Generous sign-in limits: the lock is what is under test.
    let (app, smtp, acme) = super::user_admin::app_with_mail_and(psa_api::limits::LimitsConfig {
        login_per_minute_per_address: 1000,
        login_per_minute_per_account: 1000,
        ..Default::default()
    })
    .await;
    let session = login(&app, &acme).await.1["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (secret, _) = enrol(&app, &session).await;
    for _ in 0..psa_models::mfa::MAX_FAILURES {
        let (status, body) = login(&app, &acme).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        let token = body["mfa_token"].as_str().unwrap();
        assert_error(
            &second_step(&app, token, "000001").await,
            StatusCode::UNAUTHORIZED,
            "invalid_code",
        );
    }
    let token = login(&app, &acme).await.1["mfa_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(
        &second_step(&app, &token, &code(&secret, 1)).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    );
    let mails = smtp.wait_for(1, Duration::from_secs(10)).await;
    assert!(
        mails.iter().any(|m| psa_testing::header_of(m, "Subject")
            .unwrap()
            .contains("second factor is locked")),
        "{mails:?}"
    );
}
