//! The console over real HTTP (the browser tests drive the same pages): sign-in sets an
//! HttpOnly, SameSite=Strict session cookie; pages are no-store with a strict CSP; the tenants
//! page is for the management tenant only; a form without this session's CSRF token is refused.

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};

use super::lifecycle::platform;
use super::*;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn sign_in(app: &TestApp, t: &TenantFixture, password: &str) -> reqwest::Response {
    client()
        .post(format!("{}/console/sign-in", app.base))
        .form(&[
            ("tenant", t.tenant.to_string()),
            ("email", t.admin_email.clone()),
            ("password", password.to_owned()),
        ])
        .send()
        .await
        .unwrap()
}

/// The session cookie a successful sign-in set (`name=value`).
fn cookie(r: &reqwest::Response) -> String {
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().unwrap().to_owned()
}

async fn get(app: &TestApp, path: &str, cookie: Option<&str>) -> reqwest::Response {
    let mut req = client().get(format!("{}{path}", app.base));
    if let Some(c) = cookie {
        req = req.header(COOKIE, c);
    }
    req.send().await.unwrap()
}

fn csrf_in(html: &str) -> String {
    let at = html.find("name=\"csrf\" value=\"").expect("a csrf field") + 19;
    html[at..].split('"').next().unwrap().to_owned()
}

#[tokio::test]
async fn sign_in_list_tenants_and_sign_out_with_csrf() {
    let (app, mgmt, acme) = platform().await;
    // Not signed in: to the sign-in page, which is never cached and allows no inline script.
    let r = get(&app, "/console/tenants", None).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()[LOCATION], "/console/sign-in");
    let r = get(&app, "/console/sign-in", None).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()[CACHE_CONTROL], "no-store");
    assert!(
        r.headers()[CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("default-src 'none'")
    );
    let html = r.text().await.unwrap();
    assert!(html.contains("<label for=\"password\">Password</label>"));

    // A wrong password: the same page, with the message, no cookie.
    let r = sign_in(&app, &mgmt, "not the password").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert!(r.text().await.unwrap().contains("is not right"));

    let r = sign_in(&app, &mgmt, &mgmt.admin_password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = cookie(&r);
    let r = get(&app, "/console/tenants", Some(&session)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains(">Acme</a></td>"), "{html}");
    assert!(html.contains("aria-current=\"page\""));
    let r = get(
        &app,
        "/console/tenants?name=nobody-is-called-this",
        Some(&session),
    )
    .await;
    assert!(r.text().await.unwrap().contains("No tenant matches."));
    // Input is escaped, never markup.
    let r = get(&app, "/console/tenants?name=%3Cscript%3E", Some(&session)).await;
    let html = r.text().await.unwrap();
    assert!(
        html.contains("&#60;script&#62;") || html.contains("&lt;script&gt;"),
        "{html}"
    );

    // The tenant's page, and a suspension from it: the same rules and audit as the API's.
    let page_of = format!("/console/tenants/{}", acme.tenant);
    let r = get(&app, &page_of, Some(&session)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let tenant_html = r.text().await.unwrap();
    assert!(tenant_html.contains(">Suspend</button>"), "{tenant_html}");
    let post = |path: String, fields: Vec<(&'static str, String)>| {
        let session = session.clone();
        let base = app.base.clone();
        async move {
            client()
                .post(format!("{base}{path}"))
                .header(COOKIE, session)
                .form(&fields)
                .send()
                .await
                .unwrap()
        }
    };
    let r = post(
        format!("{page_of}/suspend"),
        vec![("csrf", "f".repeat(64)), ("reason", "unpaid".into())],
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::FORBIDDEN,
        "no CSRF token, no change"
    );
    let status = |t: TenantId| {
        let pool = app.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tenants WHERE tenant = $1")
                .bind(t)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    assert_eq!(status(acme.tenant).await, "active");
    let csrf = csrf_in(&tenant_html);
    let r = post(
        format!("{page_of}/suspend"),
        vec![("csrf", csrf.clone()), ("reason", "  ".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("class=\"error\""));
    assert_eq!(status(acme.tenant).await, "active");
    let r = post(
        format!("{page_of}/suspend"),
        vec![("csrf", csrf.clone()), ("reason", "unpaid invoice".into())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("Acme is now suspended."), "{html}");
    assert!(html.contains(">Reactivate</button>"));
    assert_eq!(status(acme.tenant).await, "suspended");
    // Its admin cannot sign in now.
    let r = sign_in(&app, &acme, &acme.admin_password).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(SET_COOKIE).is_none());
    let r = post(format!("{page_of}/reactivate"), vec![("csrf", csrf)]).await;
    assert!(r.text().await.unwrap().contains("Acme is now active."));
    assert_eq!(status(acme.tenant).await, "active");
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant = $1 AND action IN ('suspend', 'reactivate') \
           AND actor = $2",
    )
    .bind(mgmt.tenant)
    .bind(format!("user:{}", mgmt.admin))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 2);

    // Sign-out without this session's CSRF token: refused, the session stays.
    let r = client()
        .post(format!("{}/console/sign-out", app.base))
        .header(COOKIE, &session)
        .form(&[("csrf", "0".repeat(64))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        get(&app, "/console/tenants", Some(&session)).await.status(),
        StatusCode::OK
    );
    let r = client()
        .post(format!("{}/console/sign-out", app.base))
        .header(COOKIE, &session)
        .form(&[("csrf", csrf_in(&html))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    // The session ended on the server, not only in the browser.
    assert_eq!(
        get(&app, "/console/tenants", Some(&session)).await.status(),
        StatusCode::SEE_OTHER
    );

    // A customer tenant's admin signs in, but the tenants page is the management tenant's.
    let r = sign_in(&app, &acme, &acme.admin_password).await;
    let theirs = cookie(&r);
    let r = get(&app, "/console/tenants", Some(&theirs)).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Only the management tenant")
    );
}

/// In a real headless Chromium: sign in through the form, the tenants page, a search; a
/// screenshot of each page (desktop and phone) under target/console-screenshots/, and an axe
/// scan of each with no serious or critical violation.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_sign_in_and_tenants_pass_axe() {
    use fantoccini::Locator;
    let (app, mgmt, _) = platform().await;
    for (label, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
        let browser = psa_testing::Browser::start(width, height).await;
        let b = &browser.client;
        b.goto(&format!("{}/console", app.base)).await.unwrap();
        assert!(
            b.current_url()
                .await
                .unwrap()
                .path()
                .ends_with("/console/sign-in")
        );
        assert!(browser.axe().await.is_empty(), "{:?}", browser.axe().await);
        browser.screenshot(&format!("sign-in-{label}")).await;
        b.find(Locator::Id("tenant"))
            .await
            .unwrap()
            .send_keys(&mgmt.tenant.to_string())
            .await
            .unwrap();
        b.find(Locator::Id("email"))
            .await
            .unwrap()
            .send_keys(&mgmt.admin_email)
            .await
            .unwrap();
        b.find(Locator::Id("password"))
            .await
            .unwrap()
            .send_keys(&mgmt.admin_password)
            .await
            .unwrap();
        b.find(Locator::Css("form.card button[type=submit]"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !b
            .current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/console/tenants")
        {
            assert!(std::time::Instant::now() < deadline, "not signed in");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        b.wait().for_element(Locator::Css("table")).await.unwrap();
        let text = b
            .find(Locator::Css("main"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("Acme"), "{text}");
        let violations = browser.axe().await;
        assert!(violations.is_empty(), "{violations:?}");
        browser.screenshot(&format!("tenants-{label}")).await;
        b.find(Locator::LinkText("Acme"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while !b
            .current_url()
            .await
            .unwrap()
            .path()
            .contains("/console/tenants/")
        {
            assert!(std::time::Instant::now() < deadline, "no tenant page");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        b.wait()
            .for_element(Locator::Css("dl.facts"))
            .await
            .unwrap();
        let violations = browser.axe().await;
        assert!(violations.is_empty(), "{violations:?}");
        browser.screenshot(&format!("tenant-{label}")).await;
        b.goto(&format!("{}/console/tenants", app.base))
            .await
            .unwrap();
        b.find(Locator::Id("name"))
            .await
            .unwrap()
            .send_keys("nobody-is-called-this")
            .await
            .unwrap();
        b.find(Locator::Css("form.filters button"))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            // The element may go stale as the new page loads: read again.
            let text = match b.find(Locator::Css("main")).await {
                Ok(main) => main.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains("No tenant matches.") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "{text}");
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
}
