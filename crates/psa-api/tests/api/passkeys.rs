//! Passkeys: registered in the console through Chromium's virtual authenticator (WebDriver's
//! WebAuthn extension) and over the API, used as the second factor and alone, refused for
//! another user's sign-in, removed by their holder and by an administrator's reset; requests
//! that break the rules are refused and write nothing.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::console::{review, ui};
use super::lifecycle::{platform, platform_with};

use super::*;

const PASSWORD: &str = "a passkey and a password";

async fn user_id(app: &TestApp, email: &str) -> uuid::Uuid {
    sqlx::query_scalar("SELECT user_id FROM users WHERE email = $1")
        .bind(email)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

async fn passkeys_of(app: &TestApp, email: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM user_passkeys p JOIN users u USING (tenant, user_id) \
         WHERE u.email = $1",
    )
    .bind(email)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

async fn login(app: &TestApp, email: &str, password: &str) -> (StatusCode, Value) {
    app.call(
        Method::POST,
        "/api/v1/auth/login",
        None,
        Some(json!({"email": email, "password": password})),
    )
    .await
}

/// base64url to bytes and back, in the page (the browser's WebAuthn API takes and gives bytes;
/// the server's JSON carries base64url).
const JS_CODEC: &str = "
    const bytes = s => { const b = s.replace(/-/g, '+').replace(/_/g, '/');
        return Uint8Array.from(atob(b + '='.repeat((4 - b.length % 4) % 4)), c => c.charCodeAt(0)).buffer; };
    const text = buf => buf ? btoa(String.fromCharCode(...new Uint8Array(buf)))
        .replace(/\\+/g, '-').replace(/\\//g, '_').replace(/=+$/, '') : null;";

/// Registers a passkey over the API from the page (the browser's authenticator creates it):
/// the answer's status and body, or the browser's error.
async fn register_over_api(b: &fantoccini::Client, bearer: &str, asked: Value) -> Value {
    let script = format!(
        "{JS_CODEC}
        const [bearer, asked, done] = arguments;
        (async () => {{
            const h = {{'Authorization': 'Bearer ' + bearer, 'Content-Type': 'application/json'}};
            const r0 = await fetch('/api/v1/auth/passkeys/options', {{method: 'POST', headers: h, body: JSON.stringify(asked)}});
            if (!r0.ok) {{ done({{status: r0.status, body: await r0.json()}}); return; }}
            const o = await r0.json();
            const pk = o.options.publicKey;
            pk.challenge = bytes(pk.challenge);
            pk.user.id = bytes(pk.user.id);
            (pk.excludeCredentials || []).forEach(c => c.id = bytes(c.id));
            const c = await navigator.credentials.create({{publicKey: pk}});
            const credential = {{id: c.id, rawId: text(c.rawId), type: c.type,
                response: {{attestationObject: text(c.response.attestationObject),
                            clientDataJSON: text(c.response.clientDataJSON)}},
                extensions: c.getClientExtensionResults()}};
            const r = await fetch('/api/v1/auth/passkeys', {{method: 'POST', headers: h,
                body: JSON.stringify({{registration_token: o.registration_token, credential}})}});
            done({{status: r.status, body: await r.json()}});
        }})().catch(e => done({{error: String(e)}}));"
    );
    b.execute_async(&script, vec![json!(bearer), asked])
        .await
        .unwrap()
}

/// The authenticator's answer to assertion `options` (as the server gave them); `only`: the
/// credential ids (base64url) it may use instead of those the server allowed.
async fn assert_in_page(
    b: &fantoccini::Client,
    options: &Value,
    only: Option<Vec<String>>,
) -> Value {
    let script = format!(
        "{JS_CODEC}
        const [options, only, done] = arguments;
        (async () => {{
            const pk = options.publicKey;
            pk.challenge = bytes(pk.challenge);
            pk.allowCredentials = (only ? only.map(id => ({{type: 'public-key', id}})) : (pk.allowCredentials || []))
                .map(c => ({{type: c.type, id: bytes(c.id)}}));
            const c = await navigator.credentials.get({{publicKey: pk}});
            done({{id: c.id, rawId: text(c.rawId), type: c.type,
                response: {{authenticatorData: text(c.response.authenticatorData),
                            clientDataJSON: text(c.response.clientDataJSON),
                            signature: text(c.response.signature),
                            userHandle: text(c.response.userHandle)}},
                extensions: c.getClientExtensionResults()}});
        }})().catch(e => done({{error: String(e)}}));"
    );
    let out = b
        .execute_async(&script, vec![options.clone(), json!(only)])
        .await
        .unwrap();
    assert!(out.get("error").is_none(), "{out}");
    out
}

/// The latest audit row of `action` in the tenant: its details.
async fn last_audit(app: &TestApp, tenant: TenantId, action: &str) -> Value {
    sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE tenant = $1 AND action = $2 \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tenant)
    .bind(action)
    .fetch_one(&app.db.pool)
    .await
    .unwrap()
}

/// In the browser, at desktop and phone sizes: Acme requires a second factor, so a new user's
/// first sign-in leads to setting one up; they add a passkey (the virtual authenticator holds a
/// discoverable credential for `localhost`) and get recovery codes; signing in again with the
/// password asks for the passkey; then the passkey alone signs in. Every page passes axe and is
/// saved as a screenshot.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_a_passkey_is_added_and_signs_in() {
    let (app, _mgmt, acme, local) = super::on_localhost(test_config()).await;
    let r = app
        .call(
            Method::PATCH,
            "/api/v1/security-policy",
            Some(&acme.key),
            Some(json!({"mfa_required": true})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK);
    for (label, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
        let email = format!("kim-{label}@acme.example");
        super::sign_in::member(&app, acme.tenant, &email, PASSWORD).await;
        let kim = user_id(&app, &email).await;
        let browser = psa_testing::Browser::start(width, height).await;
        let b = &browser.client;
        let authenticator = browser.add_authenticator().await;

        ui::sign_in(b, &local, "", &email, PASSWORD).await;
        ui::wait_text(b, "h1", "Second factor", 20).await;
        ui::wait_text(b, "main", "Passkeys", 20).await;
        review(&browser, &format!("passkey-offered-{label}")).await;
        ui::fill(b, "passkey-name", "Work laptop").await;
        ui::click(b, "form[data-passkey] button[type=submit]").await;
        ui::wait_text(b, "main", "Your recovery codes", 20).await;
        let main = ui::wait_text(b, "main", "Work laptop", 20).await;
        assert!(main.contains("is added"), "{main}");
        review(&browser, &format!("passkey-added-{label}")).await;

        // The authenticator holds one discoverable credential for this server, whose user
        // handle is the user's id; the server keeps its public key.
        let held = browser.authenticator_credentials(&authenticator).await;
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(held[0]["rpId"], "localhost");
        assert_eq!(held[0]["isResidentCredential"], true);
        let handle = held[0]["userHandle"].as_str().unwrap();
        assert_eq!(
            uuid::Uuid::from_slice(&base64url(handle)).unwrap(),
            kim,
            "{held:?}"
        );
        assert_eq!(passkeys_of(&app, &email).await, 1);
        let flag: bool = sqlx::query_scalar(
            "SELECT two_factor_enabled FROM users WHERE tenant = $1 AND user_id = $2",
        )
        .bind(acme.tenant)
        .bind(kim)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert!(flag);
        let audited = last_audit(&app, acme.tenant, "confirm_second_factor").await;
        assert_eq!(audited["method"], "passkey", "{audited}");
        assert_eq!(audited["name"], "Work laptop", "{audited}");
        assert_eq!(audited["recovery_codes"], 10, "{audited}");

        // The password, then the passkey as the second factor.
        ui::sign_out(b).await;
        ui::sign_in(b, &local, "", &email, PASSWORD).await;
        ui::wait_text(b, "h1", "Your passkey", 20).await;
        review(&browser, &format!("sign-in-passkey-second-factor-{label}")).await;
        ui::click(b, "form[data-passkey] button[type=submit]").await;
        ui::wait_text(b, "h1", "Companies", 20).await;
        let by = last_audit(&app, acme.tenant, "login").await;
        assert_eq!(by["by"], "second_factor", "{by}");

        // The passkey alone: no email, no password.
        ui::sign_out(b).await;
        review(&browser, &format!("sign-in-with-passkey-button-{label}")).await;
        ui::click(b, "form[data-passkey] button[type=submit]").await;
        ui::wait_text(b, "h1", "Companies", 20).await;
        let by = last_audit(&app, acme.tenant, "login").await;
        assert_eq!(by["by"], "passkey", "{by}");
        let (second_factor, enrollment_only): (bool, bool) = sqlx::query_as(
            "SELECT second_factor, enrollment_only FROM sessions WHERE tenant = $1 \
             AND user_id = $2 ORDER BY created_at DESC LIMIT 1",
        )
        .bind(acme.tenant)
        .bind(kim)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert!(second_factor && !enrollment_only);
        let used: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
            "SELECT last_used_at FROM user_passkeys WHERE tenant = $1 AND user_id = $2",
        )
        .bind(acme.tenant)
        .bind(kim)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert!(used.is_some());

        // The list, then removing it: the password is asked for.
        b.goto(&format!("{local}/console/account/second-factor"))
            .await
            .unwrap();
        ui::wait_text(b, "main table", "Work laptop", 20).await;
        // With a passkey already, adding another asks for the password too.
        b.find(fantoccini::Locator::Id("passkey-password"))
            .await
            .unwrap();
        review(&browser, &format!("passkeys-listed-{label}")).await;
        ui::fill(b, "remove-password", PASSWORD).await;
        ui::click(b, "form[action$='/passkeys/remove'] button").await;
        ui::wait_text(b, "main", "The passkey is removed.", 20).await;
        assert_eq!(passkeys_of(&app, &email).await, 0);
        let removed = last_audit(&app, acme.tenant, "remove_second_factor").await;
        assert_eq!(removed["proof"], "password", "{removed}");
    }
}

fn base64url(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .unwrap()
}

/// Over the API, with the browser's authenticator: a user whose tenant requires a second factor
/// registers a passkey from an enrolment-only session (which then may do everything, and gets
/// recovery codes); another user's passkey cannot answer this user's second step (401
/// `invalid_passkey`, audited) nor can an answer be replayed; the holder removes a passkey, and
/// an administrator's reset removes them all, after which the authenticator's passkey signs in
/// nowhere.
#[tokio::test(flavor = "multi_thread")]
async fn over_the_api_a_passkey_is_only_its_users() {
    let (app, _mgmt, acme, local) = super::on_localhost(test_config()).await;
    let r = app
        .call(
            Method::PATCH,
            "/api/v1/security-policy",
            Some(&acme.key),
            Some(json!({"mfa_required": true})),
        )
        .await;
    assert_eq!(r.0, StatusCode::OK);
    let (kim, lee) = ("kim@acme.example", "lee@acme.example");
    super::sign_in::member(&app, acme.tenant, kim, PASSWORD).await;
    super::sign_in::member(&app, acme.tenant, lee, PASSWORD).await;
    let browser = psa_testing::Browser::start(1280, 900).await;
    let b = &browser.client;
    let authenticator = browser.add_authenticator().await;
    // A page of this server, for the page's origin.
    b.goto(&format!("{local}/console/sign-in")).await.unwrap();

    // Both register over the API from enrolment-only sessions.
    let mut bearer = std::collections::HashMap::new();
    for email in [kim, lee] {
        let (status, session) = login(&app, email, PASSWORD).await;
        assert_eq!(status, StatusCode::OK, "{session}");
        let token = session["token"].as_str().unwrap().to_owned();
        let r = app
            .call(Method::GET, "/api/v1/companies", Some(&token), None)
            .await;
        assert_error(&r, StatusCode::FORBIDDEN, "mfa_enrollment_required");
        let out = register_over_api(b, &token, json!({"name": "Laptop"})).await;
        assert_eq!(out["status"], 201, "{out}");
        assert!(out.get("error").is_none(), "{out}");
        assert_eq!(out["body"]["passkey"]["name"], "Laptop");
        assert_eq!(out["body"]["recovery_codes"].as_array().unwrap().len(), 10);
        // The session passed a second factor by registering one.
        let r = app
            .call(Method::GET, "/api/v1/companies", Some(&token), None)
            .await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        let (status, list) = app
            .call(Method::GET, "/api/v1/auth/passkeys", Some(&token), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(list["data"].as_array().unwrap().len(), 1, "{list}");
        // Another passkey needs the password now (a session alone may have been taken over);
        // and the same authenticator cannot register for the same user twice (excluded).
        let again = register_over_api(b, &token, json!({"name": "Phone"})).await;
        assert_eq!(again["status"], 422, "{again}");
        assert!(
            again["body"]["error"]["fields"]["password"].is_string(),
            "{again}"
        );
        let again =
            register_over_api(b, &token, json!({"name": "Phone", "password": "wrong"})).await;
        assert_eq!(again["status"], 422, "{again}");
        let again =
            register_over_api(b, &token, json!({"name": "Laptop", "password": PASSWORD})).await;
        assert_eq!(again["status"], 422, "{again}");
        assert!(
            again["body"]["error"]["fields"]["name"].is_string(),
            "{again}"
        );
        let again = register_over_api(
            b,
            &token,
            json!({"name": "Laptop again", "password": PASSWORD}),
        )
        .await;
        assert!(
            again["error"]
                .as_str()
                .unwrap_or_default()
                .contains("InvalidStateError"),
            "{again}"
        );
        bearer.insert(email, token);
    }
    let held = browser.authenticator_credentials(&authenticator).await;
    assert_eq!(held.len(), 2, "{held:?}");
    let lee_id = user_id(&app, lee).await;
    let credential_of = |user: uuid::Uuid| {
        held.iter()
            .find(|c| {
                uuid::Uuid::from_slice(&base64url(c["userHandle"].as_str().unwrap())).unwrap()
                    == user
            })
            .map(|c| c["credentialId"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let lees = credential_of(lee_id);

    // Kim's password: the second step names the methods kim has.
    let r = login(&app, kim, PASSWORD).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "mfa_required");
    assert_eq!(
        r.1["methods"],
        json!(["recovery_code", "passkey"]),
        "{}",
        r.1
    );
    let mfa_token = r.1["mfa_token"].as_str().unwrap().to_owned();
    let (status, asked) = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/passkey",
            None,
            Some(json!({"mfa_token": mfa_token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    assert_eq!(
        asked["options"]["publicKey"]["allowCredentials"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // Lee's passkey signs kim's challenge: not kim's, refused and audited.
    let lees_answer = assert_in_page(b, &asked["options"], Some(vec![lees.clone()])).await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa",
            None,
            Some(json!({"mfa_token": mfa_token, "passkey": lees_answer})),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_passkey");
    let failed = last_audit(&app, acme.tenant, "second_factor_failed").await;
    assert_eq!(failed["method"], "passkey", "{failed}");
    // That attempt used the challenge: an answer now needs new options.
    let (status, asked) = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/passkey",
            None,
            Some(json!({"mfa_token": mfa_token})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{asked}");
    let kims_answer = assert_in_page(b, &asked["options"], None).await;
    let (status, session) = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa",
            None,
            Some(json!({"mfa_token": mfa_token, "passkey": kims_answer})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{session}");
    // The same answer again, for a new sign-in: its challenge was another's.
    let r = login(&app, kim, PASSWORD).await;
    let fresh = r.1["mfa_token"].as_str().unwrap().to_owned();
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/passkey",
            None,
            Some(json!({"mfa_token": fresh})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa",
            None,
            Some(json!({"mfa_token": fresh, "passkey": kims_answer})),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_passkey");

    // Lee removes theirs: no second factor left, so the recovery codes go too.
    let (_, list) = app
        .call(
            Method::GET,
            "/api/v1/auth/passkeys",
            Some(&bearer[lee]),
            None,
        )
        .await;
    let id = list["data"][0]["passkey_id"].as_str().unwrap().to_owned();
    // Proof is needed, and an API key removes none.
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/passkeys/{id}"),
            Some(&bearer[lee]),
            Some(json!({})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/passkeys/{id}"),
            Some(&acme.key),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    assert_eq!(passkeys_of(&app, lee).await, 1);
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/passkeys/{id}"),
            Some(&bearer[lee]),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_eq!(r.0, StatusCode::NO_CONTENT, "{}", r.1);
    let removed = last_audit(&app, acme.tenant, "remove_second_factor").await;
    assert_eq!(removed["proof"], "password", "{removed}");
    assert_eq!(passkeys_of(&app, lee).await, 0);
    let (flag, codes): (bool, i64) = sqlx::query_as(
        "SELECT u.two_factor_enabled, (SELECT count(*) FROM user_recovery_codes c \
           WHERE c.tenant = u.tenant AND c.user_id = u.user_id) \
         FROM users u WHERE u.user_id = $1",
    )
    .bind(lee_id)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert!(!flag && codes == 0, "{flag} {codes}");
    let r = app
        .call(
            Method::DELETE,
            &format!("/api/v1/auth/passkeys/{id}"),
            Some(&bearer[lee]),
            Some(json!({"password": PASSWORD})),
        )
        .await;
    assert_error(&r, StatusCode::NOT_FOUND, "not_found");

    // An administrator resets kim's second factors: the passkey goes, kim's sessions end, and
    // the authenticator's passkey signs in nowhere.
    let kim_id = user_id(&app, kim).await;
    let r = app
        .call(
            Method::POST,
            &format!("/api/v1/users/{kim_id}/reset-mfa"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1["removed"], true);
    assert_eq!(passkeys_of(&app, kim).await, 0);
    let r = app
        .call(
            Method::GET,
            "/api/v1/companies",
            Some(session["token"].as_str().unwrap()),
            None,
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "unauthorized");
    let (status, begun) = app
        .call(Method::POST, "/api/v1/auth/passkey/options", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{begun}");
    let answer = assert_in_page(b, &begun["options"], Some(vec![credential_of(kim_id)])).await;
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/passkey",
            None,
            Some(json!({"passkey_token": begun["passkey_token"], "credential": answer})),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_passkey");
}

/// Requests that break the rules: each refused with the field named (or 401/403/503), and
/// nothing written.
#[tokio::test]
async fn passkey_requests_that_break_the_rules_are_refused_and_write_nothing() {
    let (app, _mgmt, acme) = platform().await;
    let (status, session) = login(&app, &acme.admin_email, &acme.admin_password).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let token = session["token"].as_str().unwrap().to_owned();

    // An API key is a machine's: it registers no passkey.
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/passkeys/options",
            Some(&acme.key),
            Some(json!({"name": "Laptop"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let audit_before = app.count("audit_log").await;
    // The name is checked before the device makes anything.
    for name in [json!("  "), json!("x".repeat(65)), json!("tab\there")] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/auth/passkeys/options",
                Some(&token),
                Some(json!({"name": name})),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert!(r.1["error"]["fields"]["name"].is_string(), "{}", r.1);
    }
    // The options name this server (PSA_PUBLIC_URL's host) and ask for a discoverable key.
    let (status, begun) = app
        .call(
            Method::POST,
            "/api/v1/auth/passkeys/options",
            Some(&token),
            Some(json!({"name": "Laptop"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{begun}");
    let pk = &begun["options"]["publicKey"];
    assert_eq!(pk["rp"]["id"], "psa.test", "{pk}");
    assert_eq!(pk["user"]["name"], acme.admin_email.as_str());
    assert_eq!(pk["authenticatorSelection"]["residentKey"], "preferred");
    assert_eq!(pk["authenticatorSelection"]["userVerification"], "required");
    let registration = begun["registration_token"].as_str().unwrap();
    let fake = json!({
        "id": "AAAA", "rawId": "AAAA", "type": "public-key",
        "response": {"attestationObject": "AAAA", "clientDataJSON": "AAAA"},
        "extensions": {}
    });
    for (body, field) in [
        (
            json!({"registration_token": registration, "credential": {"id": 1}}),
            "credential",
        ),
        (
            json!({"registration_token": "psa_passkey_nope", "credential": fake}),
            "registration_token",
        ),
        // Well-formed, but no authenticator made it: the ceremony refuses it (and is used up).
        (
            json!({"registration_token": registration, "credential": fake}),
            "credential",
        ),
        (
            json!({"registration_token": registration, "credential": fake}),
            "registration_token",
        ),
    ] {
        let r = app
            .call(
                Method::POST,
                "/api/v1/auth/passkeys",
                Some(&token),
                Some(body),
            )
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert!(
            r.1["error"]["fields"][field].is_string(),
            "{field}: {}",
            r.1
        );
    }
    assert_eq!(passkeys_of(&app, &acme.admin_email).await, 0);
    assert_eq!(app.count("audit_log").await, audit_before);

    // A passkey sign-in: a malformed answer is 422, one that is no registered passkey 401, and
    // its token works once.
    let (status, begun) = app
        .call(Method::POST, "/api/v1/auth/passkey/options", None, None)
        .await;
    assert_eq!(status, StatusCode::OK, "{begun}");
    assert!(
        begun["options"]["publicKey"]
            .get("allowCredentials")
            .is_none_or(|a| a.as_array().is_some_and(|a| a.is_empty())),
        "{begun}"
    );
    let passkey_token = begun["passkey_token"].as_str().unwrap();
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/passkey",
            None,
            Some(json!({"passkey_token": passkey_token, "credential": "not one"})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let assertion = json!({
        "id": "AAAA", "rawId": "AAAA", "type": "public-key",
        "response": {"authenticatorData": "AAAA", "clientDataJSON": "AAAA", "signature": "AAAA",
                     "userHandle": "AAAAAAAAAAAAAAAAAAAAAA"},
        "extensions": {}
    });
    for _ in 0..2 {
        let r = app
            .call(
                Method::POST,
                "/api/v1/auth/passkey",
                None,
                Some(json!({"passkey_token": passkey_token, "credential": assertion})),
            )
            .await;
        assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_passkey");
    }

    // The second step: an unknown token, a user without passkeys, both a code and a passkey, a
    // passkey never asked for.
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/passkey",
            None,
            Some(json!({"mfa_token": "psa_mfa_nope"})),
        )
        .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "invalid_mfa_token");
    let (_secret, _codes) = super::mfa::enrol(&app, &token).await;
    let r = login(&app, &acme.admin_email, &acme.admin_password).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "mfa_required");
    assert_eq!(r.1["methods"], json!(["totp", "recovery_code"]), "{}", r.1);
    let mfa_token = r.1["mfa_token"].as_str().unwrap().to_owned();
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa/passkey",
            None,
            Some(json!({"mfa_token": mfa_token})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa",
            None,
            Some(json!({"mfa_token": mfa_token, "code": "123456", "passkey": assertion})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/mfa",
            None,
            Some(json!({"mfa_token": mfa_token, "passkey": assertion})),
        )
        .await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    assert!(r.1["error"]["fields"]["passkey"].is_string(), "{}", r.1);
}

/// A server reached by an IP address has no relying party: passkeys are refused with the reason
/// (503), and the sign-in page offers none.
#[tokio::test]
async fn without_a_domain_there_are_no_passkeys() {
    let mut config = test_config();
    config.delivery.public_url = url::Url::parse("http://127.0.0.1:8080").unwrap();
    let (app, _mgmt, acme) = platform_with(config).await;
    let (_, session) = login(&app, &acme.admin_email, &acme.admin_password).await;
    let token = session["token"].as_str().unwrap();
    let r = app
        .call(
            Method::POST,
            "/api/v1/auth/passkeys/options",
            Some(token),
            Some(json!({"name": "Laptop"})),
        )
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert!(
        r.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("PSA_PUBLIC_URL"),
        "{}",
        r.1
    );
    let r = app
        .call(Method::POST, "/api/v1/auth/passkey/options", None, None)
        .await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    let html = super::console::text(&app, "/console/sign-in", None).await;
    assert!(!html.contains("Sign in with a passkey"), "{html}");
}
