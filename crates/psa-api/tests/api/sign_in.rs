//! Sign-in by email: the email finds its organisation (one match signs in, several are offered
//! to choose from, naming only those where the password matched), slugs name organisations in
//! sign-in links and can be changed by the management tenant, and an unknown email costs what a
//! known one does.

use std::time::{Duration, Instant};

use reqwest::header::{LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::console::hidden_in;
use super::lifecycle::platform;
use super::*;

/// A user with `email` and `password` in `tenant` (as if they had accepted an invitation).
pub(crate) async fn member(app: &TestApp, tenant: TenantId, email: &str, password: &str) {
    let mut tx = psa_models::db::begin_tenant(&app.db.pool, tenant)
        .await
        .unwrap();
    let u = users::create(
        &mut tx,
        tenant,
        users::NewUser {
            first_name: "Pat".into(),
            last_name: "Shared".into(),
            email: email.into(),
            user_type: users::UserType::Internal,
            roles: vec!["Technician".into()],
        },
        Default::default(),
    )
    .await
    .unwrap();
    let hash = psa_models::password::hash(&secrecy::SecretString::from(password.to_owned()))
        .await
        .unwrap();
    users::set_password_hash(&mut tx, tenant, u.user.user_id, &hash)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn login(app: &TestApp, body: Value) -> (StatusCode, Value) {
    app.call(Method::POST, "/api/v1/auth/login", None, Some(body))
        .await
}

/// The tenant a session belongs to.
async fn tenant_of(app: &TestApp, token: &str) -> TenantId {
    let digest = sha2::Sha256::digest(token.as_bytes()).to_vec();
    sqlx::query_scalar("SELECT tenant FROM sessions WHERE token_hash = $1")
        .bind(digest)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

use sha2::Digest;

async fn slug_of(app: &TestApp, tenant: TenantId) -> String {
    sqlx::query_scalar("SELECT slug FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_email_finds_its_tenant_and_a_shared_email_chooses() {
    let (app, mgmt, acme) = platform().await;
    let beta = app.tenant("Beta").await;
    let gamma = app.tenant("Gamma").await;
    // Slugs from the names.
    assert_eq!(slug_of(&app, acme.tenant).await, "acme");
    assert_eq!(slug_of(&app, beta.tenant).await, "beta");

    // An email in one tenant: email and password are enough.
    let (status, body) = login(
        &app,
        json!({"email": acme.admin_email, "password": acme.admin_password}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        tenant_of(&app, body["token"].as_str().unwrap()).await,
        acme.tenant
    );

    // The same email in three tenants, the same password in two of them.
    let shared = "pat@shared.example";
    let password = "one password for two places";
    member(&app, acme.tenant, shared, password).await;
    member(&app, beta.tenant, shared, password).await;
    member(&app, gamma.tenant, shared, "another password, elsewhere").await;
    let (status, body) = login(&app, json!({"email": shared, "password": password})).await;
    assert_error(
        &(status, body.clone()),
        StatusCode::CONFLICT,
        "tenant_required",
    );
    let offered: Vec<(String, String)> = body["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["slug"].as_str().unwrap().to_owned(),
                t["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    // Only where the password matched: not Gamma.
    assert_eq!(
        offered,
        [
            ("acme".to_owned(), "Acme".to_owned()),
            ("beta".to_owned(), "Beta".to_owned())
        ]
    );
    // Named by slug, by id, or by the old field: that tenant.
    for (named, expected) in [
        (json!({"tenant": "beta"}), beta.tenant),
        (json!({"tenant": acme.tenant.to_string()}), acme.tenant),
        (json!({"tenant_id": beta.tenant}), beta.tenant),
    ] {
        let mut req = json!({"email": shared, "password": password});
        req.as_object_mut()
            .unwrap()
            .extend(named.as_object().unwrap().clone());
        let (status, body) = login(&app, req).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(
            tenant_of(&app, body["token"].as_str().unwrap()).await,
            expected
        );
    }
    // Gamma's own password signs in to Gamma alone.
    let (status, body) = login(
        &app,
        json!({"email": shared, "password": "another password, elsewhere"}),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        tenant_of(&app, body["token"].as_str().unwrap()).await,
        gamma.tenant
    );

    // Wrong password, unknown email, unknown slug, a tenant where the email is not: 401.
    for req in [
        json!({"email": shared, "password": "not the password at all"}),
        json!({"email": "nobody@nowhere.example", "password": password}),
        json!({"email": shared, "password": password, "tenant": "no-such-org"}),
        json!({"email": shared, "password": password, "tenant": mgmt.tenant.to_string()}),
    ] {
        assert_error(
            &login(&app, req).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
    }
    // A wrong password is audited in each tenant the email is in (once per window), and in the
    // tenant named by id; an unknown email or slug writes nothing.
    // (Written just after each answer.)
    let mut expected = vec![acme.tenant, beta.tenant, gamma.tenant, mgmt.tenant];
    expected.sort_by_key(|t| t.0);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let failed: Vec<TenantId> = sqlx::query_scalar(
            "SELECT tenant FROM audit_log WHERE action = 'login_failed' \
               AND details ->> 'email' = $1 ORDER BY tenant",
        )
        .bind(shared)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        if failed == expected || Instant::now() > deadline {
            assert_eq!(failed, expected);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Forgotten password by email alone: a link for each organisation the email signs in to.
#[tokio::test]
async fn a_reset_by_email_alone_mails_a_link_per_organisation() {
    let (app, smtp, acme) = super::user_admin::app_with_mail().await;
    let beta = app.tenant("Beta").await;
    let shared = "pat@shared.example";
    member(&app, acme.tenant, shared, "one password for two places").await;
    member(&app, beta.tenant, shared, "one password for two places").await;
    let unknown = app
        .call(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(json!({"email": "nobody@nowhere.example"})),
        )
        .await;
    let known = app
        .call(
            Method::POST,
            "/api/v1/auth/password-reset",
            None,
            Some(json!({"email": shared})),
        )
        .await;
    // The same answer either way.
    assert_eq!(known.0, StatusCode::ACCEPTED);
    assert_eq!(known, unknown);
    let mails = smtp.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 2);
    let mut subjects: Vec<String> = mails
        .iter()
        .map(|m| psa_testing::header_of(m, "Subject").unwrap())
        .collect();
    subjects.sort();
    assert!(
        subjects[0].contains("Acme") && subjects[1].contains("Beta"),
        "{subjects:?}"
    );
}

#[tokio::test]
async fn slugs_follow_the_rules_and_only_the_management_tenant_changes_them() {
    let (app, mgmt, acme) = platform().await;
    let path = format!("/api/v1/tenants/{}", acme.tenant);
    let m = Some(mgmt.key.as_str());
    let audit_rows = || app.count("audit_log");
    let before = audit_rows().await;
    for (slug, message) in [
        ("Acme Corp", "lowercase"),
        ("ac", "3 to 63"),
        ("-acme", "hyphen"),
        (&"a".repeat(64), "3 to 63"),
        ("mgmt", "taken"),
        ("6b0c1d8e-2f43-4a8e-9b61-0f3c2d1e4a5b", "organisation id"),
    ] {
        let r = app
            .call(Method::PATCH, &path, m, Some(json!({"slug": slug})))
            .await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        let said = r.1["error"]["fields"]["slug"].as_str().unwrap_or_default();
        assert!(said.contains(message), "{slug}: {}", r.1);
    }
    assert_eq!(slug_of(&app, acme.tenant).await, "acme");
    assert_eq!(audit_rows().await, before, "nothing written");
    // A customer tenant's own admin may not.
    let r = app
        .call(
            Method::PATCH,
            &path,
            Some(&acme.key),
            Some(json!({"slug": "acme-corp"})),
        )
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");

    let (status, details) = app
        .call(Method::PATCH, &path, m, Some(json!({"slug": "acme-corp"})))
        .await;
    assert_eq!(status, StatusCode::OK, "{details}");
    assert_eq!(details["slug"], "acme-corp");
    let audited: Value = sqlx::query_scalar(
        "SELECT details FROM audit_log WHERE tenant = $1 AND action = 'update' \
           AND entity_type = 'tenant' AND entity_id = $2",
    )
    .bind(mgmt.tenant)
    .bind(acme.tenant.0)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        audited["slug"],
        json!({"before": "acme", "after": "acme-corp"})
    );
    // The tenant list and the tenant say so; the new slug signs in, the old one does not.
    let (_, list) = app.call(Method::GET, "/api/v1/tenants", m, None).await;
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["slug"] == "acme-corp"),
        "{list}"
    );
    let creds = |tenant: &str| json!({"email": acme.admin_email, "password": acme.admin_password, "tenant": tenant});
    assert_eq!(login(&app, creds("acme-corp")).await.0, StatusCode::OK);
    assert_eq!(login(&app, creds("acme")).await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_email_takes_as_long_as_a_known_one() {
    let app = TestApp::spawn_with(psa_api::limits::LimitsConfig {
        login_per_minute_per_address: 10_000,
        login_per_minute_per_account: 10_000,
        ..Default::default()
    })
    .await;
    let t = app.tenant("Acme").await;
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..15 {
        for (email, out) in [
            (t.admin_email.clone(), &mut known),
            (format!("nobody-{i}@acme.example"), &mut unknown),
        ] {
            let started = Instant::now();
            let (status, _) = login(
                &app,
                json!({"email": email, "password": "a wrong password, surely"}),
            )
            .await;
            out.push(started.elapsed());
            assert_eq!(status, StatusCode::UNAUTHORIZED);
            // Each attempt on a quiet server (a failure is recorded after its answer): what one
            // caller measures.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2].as_secs_f64()
    };
    let (k, u) = (median(&mut known), median(&mut unknown));
    println!(
        "median sign-in: known email {:.1} ms, unknown {:.1} ms",
        k * 1e3,
        u * 1e3
    );
    assert!((k - u).abs() / k.max(u) < 0.2, "known {k} s, unknown {u} s");
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The console: email and password, "Choose your organisation" for a shared email (the choice
/// kept server-side and good once), and `?org=` straight to one.
#[tokio::test]
async fn the_console_signs_in_by_email_and_offers_the_choice() {
    let (app, _mgmt, acme) = platform().await;
    let beta = app.tenant("Beta").await;
    let shared = "pat@shared.example";
    let password = "one password for two places";
    member(&app, acme.tenant, shared, password).await;
    member(&app, beta.tenant, shared, password).await;
    let sign_in = |fields: Vec<(&'static str, String)>| {
        let base = app.base.clone();
        async move {
            client()
                .post(format!("{base}/console/sign-in"))
                .form(&fields)
                .send()
                .await
                .unwrap()
        }
    };
    let r = sign_in(vec![
        ("tenant", String::new()),
        ("email", shared.to_owned()),
        ("password", password.to_owned()),
    ])
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("Choose your organisation"), "{html}");
    assert!(!html.contains(password), "the password is not sent back");
    assert!(html.contains(">Acme</button>") && html.contains(">Beta</button>"));
    let choice = hidden_in(&html, "choice");
    let choose = |tenant: TenantId| {
        let (base, choice) = (app.base.clone(), choice.clone());
        async move {
            client()
                .post(format!("{base}/console/sign-in/choose"))
                .form(&[("choice", choice), ("tenant", tenant.to_string())])
                .send()
                .await
                .unwrap()
        }
    };
    // A tenant the choice did not offer is refused (and uses the choice up).
    let r = choose(TenantId::new()).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let r = choose(beta.tenant).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "used once");

    // Again, choosing Beta: a session there.
    let r = sign_in(vec![
        ("tenant", String::new()),
        ("email", shared.to_owned()),
        ("password", password.to_owned()),
    ])
    .await;
    let html = r.text().await.unwrap();
    let choice = hidden_in(&html, "choice");
    let r = client()
        .post(format!("{}/console/sign-in/choose", app.base))
        .form(&[("choice", choice), ("tenant", beta.tenant.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let cookie = r.headers()[SET_COOKIE]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let token = cookie.split('=').nth(1).unwrap();
    assert_eq!(tenant_of(&app, token).await, beta.tenant);

    // ?org=acme names the organisation: no choice asked.
    let page = client()
        .get(format!("{}/console/sign-in?org=acme", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("name=\"tenant\" value=\"acme\""), "{page}");
    let r = sign_in(vec![
        ("tenant", "acme".to_owned()),
        ("email", shared.to_owned()),
        ("password", password.to_owned()),
    ])
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console");
}
