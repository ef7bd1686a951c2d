//! Single sign-on against a real OpenID Connect provider on loopback (oidc-provider, driven in
//! Chromium) and a real DNS server (dnsmasq): a tenant's administrator configures the provider
//! and verifies the email domain; a person types their email and is signed in through the
//! provider, created at the first sign-in and matched by subject the next (after the provider
//! rotated its key); `jit` off refuses an uninvited person; `required` refuses the password but
//! for the break-glass administrator; bad configuration is refused and the client secret never
//! shows.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::console::{review, ui};
use super::*;

const SECRET: &str = "the-client-secret-at-the-provider";

/// The app on localhost (its public URL, where the provider sends people back) with DNS
/// lookups going to `dns`, and a provider that knows this app as client `psa`.
async fn platform_with_provider(
    dns: std::net::SocketAddr,
) -> (
    TestApp,
    TenantFixture,
    TenantFixture,
    String,
    psa_testing::OidcProvider,
) {
    let mut config = test_config();
    config.dns = psa_app::dns::Dns { server: Some(dns) };
    let (app, mgmt, acme, local) = super::on_localhost(config).await;
    let provider = psa_testing::OidcProvider::start(
        json!([{
            "client_id": "psa",
            "client_secret": SECRET,
            "redirect_uris": [format!("{local}/console/sso/callback")],
        }]),
        json!({
            "kim": {"email": "kim@acme.test", "email_verified": true,
                    "given_name": "Kim", "family_name": "Lee"},
            "lou": {"email": "lou@acme.test", "email_verified": true,
                    "given_name": "Lou", "family_name": "Reed"},
            "unverified": {"email": "pat@acme.test", "email_verified": false,
                           "given_name": "Pat", "family_name": "Doe"},
            "outsider": {"email": "out@elsewhere.test", "email_verified": true,
                         "given_name": "Out", "family_name": "Sider"},
            "huge": {"email": format!("{}@acme.test", "h".repeat(300)), "email_verified": true,
                     "given_name": "H".repeat(5000), "family_name": "Uge"},
        }),
        psa_testing::OidcProvider::new_key("first"),
    )
    .await;
    (app, mgmt, acme, local, provider)
}

async fn connect(app: &TestApp, key: &str, issuer: &str, extra: Value) -> (StatusCode, Value) {
    let mut body = json!({"issuer": issuer, "client_id": "psa", "client_secret": SECRET});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    app.call(Method::PUT, "/api/v1/sso/connection", Some(key), Some(body))
        .await
}

/// At the provider's login form (its development interaction): the login names the account.
async fn at_the_provider(b: &fantoccini::Client, login: &str) {
    use fantoccini::Locator;
    let field = match b
        .wait()
        .for_element(Locator::Css("input[name=login]"))
        .await
    {
        Ok(field) => field,
        Err(e) => panic!(
            "no login form at the provider ({e}): at {} showing {}",
            b.current_url().await.unwrap(),
            b.find(Locator::Css("body"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        ),
    };
    // (Filled in with the email typed at psa, passed on as the login hint.)
    field.clear().await.unwrap();
    field.send_keys(login).await.unwrap();
    b.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys("anything")
        .await
        .unwrap();
    b.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// Ends the browser's session at the provider (its cookies are on the provider's origin), so
/// that the next sign-in there asks who it is again.
async fn forget_the_provider(b: &fantoccini::Client, issuer: &str) {
    b.goto(&format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap();
    b.delete_all_cookies().await.unwrap();
}

/// Types the email on the sign-in page and continues.
async fn email_first(b: &fantoccini::Client, local: &str, email: &str) {
    b.goto(&format!("{local}/console/sign-in")).await.unwrap();
    ui::fill(b, "email", email).await;
    ui::click(b, "form.card button[type=submit]").await;
}

/// Claims `domain` for the tenant of `key` and verifies it through a DNS server started at
/// `dns` (kept running by the returned handle).
async fn verified(
    app: &TestApp,
    key: &str,
    dns: std::net::SocketAddr,
    domain: &str,
) -> psa_testing::DnsServer {
    let (status, d) = app
        .call(
            Method::POST,
            "/api/v1/sso/domains",
            Some(key),
            Some(json!({"domain": domain})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    let server =
        psa_testing::DnsServer::start(dns, &[(domain, d["txt_record"].as_str().unwrap())]).await;
    let (status, d) = app
        .call(
            Method::POST,
            &format!("/api/v1/sso/domains/{domain}/verify"),
            Some(key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    server
}

async fn count(app: &TestApp, sql: &str, bind: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(bind)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// The whole path in Chromium: the administrator connects the provider and verifies acme.test
/// through DNS; kim types their email, is sent to the provider, signs in there and lands in the
/// console, created with the connection's role; the provider rotates its signing key and kim's
/// second sign-in is matched by subject. Pages reviewed (axe) and saved.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_a_person_signs_in_through_their_provider() {
    let dns_addr = psa_testing::DnsServer::free_addr();
    let (app, _mgmt, acme, local, mut provider) = platform_with_provider(dns_addr).await;
    let (status, c) = connect(
        &app,
        &acme.key,
        &provider.issuer,
        json!({"jit": true, "jit_role": "Technician"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(c["has_client_secret"], true);
    assert!(!c.to_string().contains(SECRET), "{c}");
    assert_eq!(c["redirect_uri"], format!("{local}/console/sso/callback"));
    let (status, report) = app
        .call(
            Method::POST,
            "/api/v1/sso/connection/test",
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(report["signing_keys"], 1);

    // The domain: its TXT record is not there yet, then it is.
    let (status, d) = app
        .call(
            Method::POST,
            "/api/v1/sso/domains",
            Some(&acme.key),
            Some(json!({"domain": "Acme.Test"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{d}");
    assert_eq!(d["domain"], "acme.test");
    let record = d["txt_record"].as_str().unwrap().to_owned();
    assert!(record.starts_with("psa-verification="), "{record}");
    let dns = psa_testing::DnsServer::start(dns_addr, &[("acme.test", "v=spf1 -all")]).await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/sso/domains/acme.test/verify",
            Some(&acme.key),
            None,
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    drop(dns);
    let _dns = psa_testing::DnsServer::start(
        dns_addr,
        &[("acme.test", "v=spf1 -all"), ("acme.test", &record)],
    )
    .await;
    let (status, d) = app
        .call(
            Method::POST,
            "/api/v1/sso/domains/acme.test/verify",
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert!(d["verified_at"].is_string(), "{d}");

    let browser = psa_testing::Browser::start(1280, 900).await;
    let b = &browser.client;
    b.goto(&format!("{local}/console/sign-in")).await.unwrap();
    ui::wait_text(b, "h1", "Sign in", 20).await;
    review(&browser, "sign-in-email-first").await;
    email_first(b, &local, "kim@acme.test").await;
    at_the_provider(b, "kim").await;
    ui::wait_text(b, "h1", "Companies", 30).await;
    let kim = count(
        &app,
        "SELECT count(*) FROM users WHERE email = $1 AND user_type = 'internal'",
        "kim@acme.test",
    )
    .await;
    assert_eq!(kim, 1);
    let role: String = sqlx::query_scalar(
        "SELECT r.role_name FROM users u JOIN user_roles ur USING (tenant, user_id) \
         JOIN roles r USING (tenant, role_id) WHERE u.email = 'kim@acme.test'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(role, "Technician");
    let login: Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE tenant = $1 AND action = 'login' \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(acme.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(login["by"], "sso", "{login}");

    // The provider rotates its signing key: the next sign-in verifies against the new one and
    // is matched by subject.
    ui::sign_out(b).await;
    provider
        .rotate_key(psa_testing::OidcProvider::new_key("second"))
        .await;
    email_first(b, &local, "kim@acme.test").await;
    at_the_provider(b, "kim").await;
    ui::wait_text(b, "h1", "Companies", 30).await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM users WHERE email = $1",
            "kim@acme.test"
        )
        .await,
        1
    );
    let logins: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM sso_identities WHERE subject = 'kim' AND last_login_at IS NOT NULL",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(logins, 1);

    // The administrator's page.
    ui::sign_out(b).await;
    ui::sign_in(b, &local, "acme", &acme.admin_email, &acme.admin_password).await;
    ui::wait_text(b, "h1", "Companies", 20).await;
    b.goto(&format!("{local}/console/settings/sso"))
        .await
        .unwrap();
    ui::wait_text(b, "main", "acme.test", 20).await;
    review(&browser, "sso-settings").await;
    let html = b.source().await.unwrap();
    assert!(!html.contains(SECRET));

    // An email the provider has not verified is refused, and nothing is created.
    ui::sign_out(b).await;
    forget_the_provider(b, &provider.issuer).await;
    email_first(b, &local, "pat@acme.test").await;
    at_the_provider(b, "unverified").await;
    ui::wait_text(b, "h1", "Not signed in", 30).await;
    review(&browser, "sso-refused").await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM users WHERE email = $1",
            "pat@acme.test"
        )
        .await,
        0
    );
    // The callback's state is used once: the same answer again is refused.
    let url = b.current_url().await.unwrap();
    assert!(url.path().ends_with("/console/sso/callback"), "{url}");
    b.goto(url.as_str()).await.unwrap();
    ui::wait_text(b, "main", "expired or was already used", 20).await;
}

/// ID tokens a provider should never send, each spoiled in one way (another audience, expired,
/// signed by another key, another nonce), are each refused: the person reads that the answer
/// could not be trusted, the audit row says why, and no user, identity or session is written.
#[tokio::test(flavor = "multi_thread")]
async fn an_id_token_that_does_not_verify_is_refused() {
    let dns_addr = psa_testing::DnsServer::free_addr();
    let (app, _mgmt, acme, local, provider) = platform_with_provider(dns_addr).await;
    let (status, c) = connect(&app, &acme.key, &provider.issuer, json!({"jit": true})).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let _dns = verified(&app, &acme.key, dns_addr, "acme.test").await;
    let sessions = app.count("sessions").await;
    let browser = psa_testing::Browser::start(1280, 900).await;
    let b = &browser.client;
    for (mode, why) in [
        ("audience", "audience"),
        ("expired", "expired"),
        ("signature", "signature"),
        ("nonce", "nonce"),
    ] {
        let r = app
            .http
            .post(format!("{}/test/tamper?mode={mode}", provider.issuer))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        forget_the_provider(b, &provider.issuer).await;
        b.goto(&format!("{local}/console/sso/acme")).await.unwrap();
        at_the_provider(b, "kim").await;
        ui::wait_text(b, "h1", "Not signed in", 30).await;
        ui::wait_text(b, "main", "could not be trusted", 5).await;
        let failed: Value = sqlx::query_scalar(
            "SELECT details FROM audit_log WHERE tenant = $1 AND action = 'login_failed' \
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(acme.tenant)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        let reason = failed["reason"].as_str().unwrap_or_default().to_lowercase();
        assert!(reason.contains(why), "{mode}: {failed}");
        assert_eq!(
            count(
                &app,
                "SELECT count(*) FROM users WHERE email = $1",
                "kim@acme.test"
            )
            .await,
            0,
            "{mode}"
        );
        assert_eq!(app.count("sso_identities").await, 0, "{mode}");
        assert_eq!(app.count("sessions").await, sessions, "{mode}");
    }
    // Claims too large to be anyone's email are not taken: no user is made of them.
    forget_the_provider(b, &provider.issuer).await;
    b.goto(&format!("{local}/console/sso/acme")).await.unwrap();
    at_the_provider(b, "huge").await;
    ui::wait_text(b, "h1", "Not signed in", 30).await;
    assert_eq!(app.count("sso_identities").await, 0);
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM users WHERE email LIKE $1",
            "hhh%"
        )
        .await,
        0
    );
    // An email of a domain the tenant has not verified links to no one and makes no one.
    forget_the_provider(b, &provider.issuer).await;
    b.goto(&format!("{local}/console/sso/acme")).await.unwrap();
    at_the_provider(b, "outsider").await;
    ui::wait_text(
        b,
        "main",
        "not of a domain this organisation has verified",
        30,
    )
    .await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM users WHERE email = $1",
            "out@elsewhere.test"
        )
        .await,
        0
    );
    // The provider's answer taken to a browser that did not start the sign-in (here: the
    // binding cookie gone, as in another browser) is refused.
    forget_the_provider(b, &provider.issuer).await;
    b.goto(&format!("{local}/console/sso/acme")).await.unwrap();
    b.wait()
        .for_element(fantoccini::Locator::Css("input[name=login]"))
        .await
        .unwrap();
    let at_provider = b.current_url().await.unwrap();
    b.goto(&format!("{local}/console/sign-in")).await.unwrap();
    b.delete_cookie("psa_sso").await.unwrap();
    b.goto(at_provider.as_str()).await.unwrap();
    at_the_provider(b, "kim").await;
    ui::wait_text(b, "main", "started in another browser", 30).await;
    assert_eq!(app.count("sso_identities").await, 0);
    assert_eq!(app.count("sessions").await, sessions);
    // And the provider, unspoiled, lets kim in.
    forget_the_provider(b, &provider.issuer).await;
    b.goto(&format!("{local}/console/sso/acme")).await.unwrap();
    at_the_provider(b, "kim").await;
    ui::wait_text(b, "h1", "Companies", 30).await;
}

/// `jit` off: a person the provider knows but who is not a user here is refused (nothing
/// created); an invited one gets in. `required`: the password is refused for everyone but the
/// break-glass administrator, over the API and in the console.
#[tokio::test(flavor = "multi_thread")]
async fn who_gets_in_is_the_tenants_choice() {
    let dns_addr = psa_testing::DnsServer::free_addr();
    let (app, _mgmt, acme, local, provider) = platform_with_provider(dns_addr).await;
    let (status, c) = connect(&app, &acme.key, &provider.issuer, json!({"jit": false})).await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let _dns = verified(&app, &acme.key, dns_addr, "acme.test").await;
    // Lou exists here (invited earlier) with a password; kim does not.
    super::sign_in::member(&app, acme.tenant, "lou@acme.test", "lou's own password").await;
    let browser = psa_testing::Browser::start(390, 844).await;
    let b = &browser.client;
    // By the organisation's link: /console/sso/{slug}.
    b.goto(&format!("{local}/console/sso/acme")).await.unwrap();
    at_the_provider(b, "kim").await;
    ui::wait_text(b, "h1", "Not signed in", 30).await;
    ui::wait_text(b, "main", "not allowed in this organisation", 5).await;
    review(&browser, "sso-not-allowed-phone").await;
    assert_eq!(
        count(
            &app,
            "SELECT count(*) FROM users WHERE email = $1",
            "kim@acme.test"
        )
        .await,
        0
    );
    let failed: Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE tenant = $1 AND action = 'login_failed' \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(acme.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(failed["method"], "sso", "{failed}");
    forget_the_provider(b, &provider.issuer).await;
    b.goto(&format!("{local}/console/sso/acme")).await.unwrap();
    at_the_provider(b, "lou").await;
    ui::wait_text(b, "h1", "Companies", 30).await;

    let lou_sessions = "SELECT count(*) FROM sessions s JOIN users u USING (tenant, user_id) \
                        WHERE u.email = $1";
    assert_eq!(count(&app, lou_sessions, "lou@acme.test").await, 1);
    // Required, with the admin as break-glass: the sessions opened another way end.
    let (status, c) = connect(
        &app,
        &acme.key,
        &provider.issuer,
        json!({"required": true, "break_glass": [acme.admin_email]}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    assert_eq!(count(&app, lou_sessions, "lou@acme.test").await, 0);
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": "lou@acme.test", "password": "lou's own password"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "sso_required");
    // Nor does a reset link give lou a password (it would work once SSO is no longer required).
    let lou: psa_models::UserId =
        sqlx::query_scalar("SELECT user_id FROM users WHERE email = 'lou@acme.test'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let hash_before: Option<String> =
        sqlx::query_scalar("SELECT hashed_password FROM users WHERE user_id = $1")
            .bind(lou)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let link = {
        let mut tx = psa_models::db::begin_tenant(&app.db.pool, acme.tenant)
            .await
            .unwrap();
        let issued = psa_models::auth_tokens::issue(
            &mut tx,
            acme.tenant,
            lou,
            psa_models::auth_tokens::IssueOptions {
                purpose: psa_models::auth_tokens::Purpose::PasswordReset,
                ttl: std::time::Duration::from_secs(3600),
                created_by: "test",
                workflow_id: None,
            },
        )
        .await
        .unwrap();
        tx.commit().await.unwrap();
        secrecy::ExposeSecret::expose_secret(&issued.token).to_owned()
    };
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/password-reset/accept",
            None,
            Some(json!({"token": link, "password": "a brand new long password 42"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "sso_required");
    let hash_after: Option<String> =
        sqlx::query_scalar("SELECT hashed_password FROM users WHERE user_id = $1")
            .bind(lou)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(hash_before, hash_after);
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(json!({"email": acme.admin_email, "password": acme.admin_password})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    ui::sign_out(b).await;
    ui::sign_in(b, &local, "acme", "lou@acme.test", "lou's own password").await;
    ui::wait_text(b, "main", "identity provider", 20).await;
    // The API's start, for API clients.
    let (status, started) = app
        .call(
            Method::POST,
            "/api/v1/auth/sso/start",
            None,
            Some(json!({"tenant": "acme"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    // The console's start, which binds the sign-in to the browser that opens it.
    let url = started["authorization_url"].as_str().unwrap();
    assert_eq!(url, format!("{local}/console/sso/acme"));
    let direct = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = direct.get(url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.starts_with("psa_sso=") && cookie.contains("HttpOnly"),
        "{cookie}"
    );
    assert!(cookie.contains("SameSite=Lax"), "{cookie}");
    let to = r.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with(&provider.issuer), "{to}");
    for part in [
        "code_challenge_method=S256",
        "state=psa_sso_",
        "nonce=",
        "client_id=psa",
    ] {
        assert!(to.contains(part), "{part} in {to}");
    }
    let (status, started) = app
        .call(
            Method::POST,
            "/api/v1/auth/sso/start",
            None,
            Some(json!({"email": "Lou@acme.test"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{started}");
    assert_eq!(
        started["authorization_url"],
        format!("{local}/console/sso/acme?login_hint=Lou%40acme.test")
    );
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/sso/start",
            None,
            Some(json!({"email": "someone@elsewhere.test"})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");
}

/// Bad configuration is refused, naming the field, and nothing is written; a consumer domain
/// and another tenant's verified domain are refused; the client secret never appears in
/// answers or the audit log.
#[tokio::test]
async fn sso_settings_that_break_the_rules_are_refused() {
    let dns_addr = psa_testing::DnsServer::free_addr();
    let (app, _mgmt, acme, _local, provider) = platform_with_provider(dns_addr).await;
    let dead = format!(
        "http://127.0.0.1:{}",
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    );
    for (issuer, extra, field) in [
        ("https://", json!({}), "issuer"),
        ("http://sso.example.com", json!({}), "issuer"),
        (dead.as_str(), json!({}), "issuer"),
        // Answers, but not with a discovery document.
        (app.base.as_str(), json!({}), "issuer"),
        (
            provider.issuer.as_str(),
            json!({"scopes": ["email"]}),
            "scopes",
        ),
        (
            provider.issuer.as_str(),
            json!({"jit_role": "Nobody"}),
            "jit_role",
        ),
        (
            provider.issuer.as_str(),
            json!({"jit_role": "Admin"}),
            "jit_role",
        ),
        (
            provider.issuer.as_str(),
            json!({"required": true}),
            "break_glass",
        ),
        (
            provider.issuer.as_str(),
            json!({"break_glass": ["ghost@acme.example"]}),
            "break_glass",
        ),
        (
            provider.issuer.as_str(),
            json!({"email_claim": "e mail"}),
            "email_claim",
        ),
    ] {
        let r = connect(&app, &acme.key, issuer, extra.clone()).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert!(
            r.1["error"]["fields"][field].is_string(),
            "{issuer} {extra}: {}",
            r.1
        );
    }
    assert_eq!(app.count("sso_connections").await, 0);
    let r = app
        .call(Method::GET, "/api/v1/sso/connection", Some(&acme.key), None)
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    let (status, _) = connect(&app, &acme.key, &provider.issuer, json!({})).await;
    assert_eq!(status, StatusCode::OK);
    // Another client id does not take the kept secret along: it must be given again.
    let r = app
        .call(
            Method::PUT,
            "/api/v1/sso/connection",
            Some(&acme.key),
            Some(json!({"issuer": provider.issuer, "client_id": "another"})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(
        r.1["error"]["fields"]["client_secret"].is_string(),
        "{}",
        r.1
    );
    let audit: Vec<String> = sqlx::query_scalar("SELECT details::text FROM audit_log")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert!(audit.iter().all(|a| !a.contains(SECRET)));
    let stored: String = sqlx::query_scalar("SELECT client_secret_sealed FROM sso_connections")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(!stored.contains(SECRET));

    // Domains: a public mail service, a malformed one; one verified by another tenant.
    for bad in ["gmail.com", "not a domain", "acme", "@acme.test"] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/sso/domains",
                Some(&acme.key),
                Some(json!({"domain": bad})),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    }
    let (_, d) = app
        .call(
            Method::POST,
            "/api/v1/sso/domains",
            Some(&acme.key),
            Some(json!({"domain": "acme.test"})),
        )
        .await;
    let _dns = psa_testing::DnsServer::start(
        dns_addr,
        &[("acme.test", d["txt_record"].as_str().unwrap())],
    )
    .await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/sso/domains/acme.test/verify",
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let beta = app.tenant("Beta").await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/sso/domains",
            Some(&beta.key),
            Some(json!({"domain": "acme.test"})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Another organisation"),
        "{}",
        r.1
    );
}
