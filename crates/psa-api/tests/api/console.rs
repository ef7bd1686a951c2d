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

async fn post_form(
    app: &TestApp,
    session: &str,
    path: &str,
    fields: &[(&str, &str)],
) -> reqwest::Response {
    client()
        .post(format!("{}{path}", app.base))
        .header(COOKIE, session)
        .form(fields)
        .send()
        .await
        .unwrap()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()[LOCATION].to_str().unwrap().to_owned()
}

/// A customer tenant's staff work on their companies, contacts and tags: the model's refusals
/// show next to their fields and nothing is written until the input is right; every form is
/// refused without the session's CSRF token; the management pages are not theirs.
#[tokio::test]
async fn companies_contacts_and_tags_from_the_console() {
    let (app, _mgmt, acme) = platform().await;
    let session = cookie(&sign_in(&app, &acme, &acme.admin_password).await);
    let r = get(&app, "/console", Some(&session)).await;
    assert_eq!(location(&r), "/console/tenants");
    for page in ["/console/customers", "/console/tenants/new"] {
        let r = get(&app, page, Some(&session)).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{page}");
    }
    let r = get(&app, "/console/companies", Some(&session)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(!html.contains("href=\"/console/customers\""), "{html}");
    let csrf = csrf_in(&html);
    let companies = || app.count("companies");
    let before = companies().await;

    // A bad billing email: the field says so, nothing is written.
    let bad = [
        ("csrf", csrf.as_str()),
        ("company_name", "Initech"),
        ("client_type", "company"),
        ("billing_email", "accounts at initech"),
    ];
    let r = post_form(&app, &session, "/console/companies/new", &bad).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"billing_email-error\""), "{html}");
    assert!(html.contains("aria-invalid=\"true\""));
    assert!(html.contains("value=\"Initech\""), "what was typed stays");
    assert_eq!(companies().await, before);
    // Without the CSRF token: refused, nothing written.
    let mut forged = bad;
    forged[0] = ("csrf", "");
    forged[3] = ("billing_email", "ap@initech.example");
    let r = post_form(&app, &session, "/console/companies/new", &forged).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(companies().await, before);
    // Fixed: created, and its page says so.
    let mut good = bad;
    good[3] = ("billing_email", "ap@initech.example");
    let r = post_form(&app, &session, "/console/companies/new", &good).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page_of = location(&r);
    assert!(page_of.ends_with("?done=created"), "{page_of}");
    assert_eq!(companies().await, before + 1);
    let path = page_of.split('?').next().unwrap().to_owned();
    let html = get(&app, &page_of, Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(html.contains("Created."));
    assert!(html.contains("value=\"ap@initech.example\""));

    // Edit with a bad website: the field error, the stored company unchanged.
    let r = post_form(
        &app,
        &session,
        &path,
        &[
            ("csrf", &csrf),
            ("company_name", "Initech Ltd"),
            ("url", "not a url at all"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("id=\"url-error\""));
    let name: String = sqlx::query_scalar(
        "SELECT company_name FROM companies WHERE tenant = $1 AND company_name LIKE 'Initech%'",
    )
    .bind(acme.tenant)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(name, "Initech");
    let r = post_form(
        &app,
        &session,
        &path,
        &[
            ("csrf", &csrf),
            ("company_name", "Initech Ltd"),
            ("billing_email", ""),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);

    // Tags: attached in the shared-hash colours, listed, removed.
    let r = post_form(
        &app,
        &session,
        &format!("{path}/tags"),
        &[("csrf", &csrf), ("tag_text", "VIP")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = get(&app, &path, Some(&session)).await.text().await.unwrap();
    assert!(html.contains(">VIP</span>"), "{html}");
    assert!(html.contains("style=\"background-color: #"), "{html}");
    let list = get(&app, "/console/companies?name=initech", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        list.contains(">Initech Ltd</a>") && list.contains(">VIP</span>"),
        "{list}"
    );
    let at = html.find("/console/tags/").unwrap();
    let detach = html[at..].split('"').next().unwrap().to_owned();
    let r = post_form(&app, &session, &detach, &[("csrf", "nope")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post_form(&app, &session, &detach, &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = get(&app, &path, Some(&session)).await.text().await.unwrap();
    assert!(!html.contains(">VIP</span>"));

    // A contact with a bad email, then right; the company cannot be deleted while it has one.
    let company_id = path.rsplit('/').next().unwrap().to_owned();
    let contact = |email: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("full_name", "Peter Gibbons".to_owned()),
            ("email", email.to_owned()),
            ("company_id", company_id.clone()),
        ]
    };
    let r = client()
        .post(format!("{}/console/contacts/new", app.base))
        .header(COOKIE, &session)
        .form(&contact("peter@"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = r.text().await.unwrap();
    assert!(html.contains("id=\"email-error\""), "{html}");
    let r = client()
        .post(format!("{}/console/contacts/new", app.base))
        .header(COOKIE, &session)
        .form(&contact("peter@initech.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let contacts = get(&app, "/console/contacts", Some(&session))
        .await
        .text()
        .await
        .unwrap();
    assert!(
        contacts.contains(">Peter Gibbons</a>") && contacts.contains(">Initech Ltd</a>"),
        "{contacts}"
    );
    let r = post_form(
        &app,
        &session,
        &format!("{path}/delete"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(r.text().await.unwrap().contains("class=\"error\""));
    assert_eq!(companies().await, before + 1);
}

/// The customers page, its CSV and the API's list tell the same: the customer with its tag,
/// admin contact, users and tracking state; the management tenant is not a customer.
#[tokio::test]
async fn customers_page_csv_and_api_agree() {
    let (app, mgmt, acme) = platform().await;
    // A name a spreadsheet would run as a formula, and a licence count.
    sqlx::query("UPDATE tenants SET company_name = '=HYPERLINK(1)', licensed_user_count = 5 WHERE tenant = $1")
        .bind(acme.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let session = cookie(&sign_in(&app, &mgmt, &mgmt.admin_password).await);
    let r = get(&app, "/console/customers", Some(&session)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains(">=HYPERLINK(1)</a>"), "{html}");
    assert!(html.contains(">PSA Customer</span>"), "{html}");
    assert!(html.contains(&acme.admin_email), "{html}");
    assert!(html.contains(">tracked"), "{html}");
    assert!(html.contains("1 / 5"), "{html}");
    assert!(
        !html.contains(">Mgmt</a>"),
        "the management tenant is no customer"
    );
    let r = get(
        &app,
        "/console/customers?tracking=untracked",
        Some(&session),
    )
    .await;
    assert!(r.text().await.unwrap().contains("No customer matches."));

    let r = get(&app, "/console/customers.csv?name=HYPER", Some(&session)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    assert!(
        r.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .contains("attachment")
    );
    let csv = r.text().await.unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines[0], psa_models::customers::CSV_HEADER.join(","));
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(
        lines[1].starts_with(&format!("{},'=HYPERLINK(1),active,", acme.tenant)),
        "{csv}"
    );
    assert!(
        lines[1].contains(&format!(",{},1,5,tracked,PSA Customer,", acme.admin_email)),
        "{csv}"
    );

    let (status, body) = app
        .call(
            Method::GET,
            "/api/v1/customers",
            Some(mgmt.key.as_str()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let items = body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{body}");
    assert_eq!(items[0]["tenant_id"], acme.tenant.to_string());
    assert_eq!(items[0]["admin_contact"]["email"], acme.admin_email);
    assert_eq!(items[0]["active_users"], 1);
    assert_eq!(items[0]["license_count"], 5);
    assert_eq!(items[0]["customer_tracking"], "tracked");
    assert_eq!(items[0]["tags"][0]["tag_text"], "PSA Customer");
    let r = app
        .http
        .get(format!("{}/api/v1/customers/export.csv", app.base))
        .bearer_auth(&mgmt.key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), csv);
    // A customer's own staff may not list customers.
    let (status, _) = app
        .call(
            Method::GET,
            "/api/v1/customers",
            Some(acme.key.as_str()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, body) = app
        .call(
            Method::GET,
            "/api/v1/customers?status=sleeping",
            Some(mgmt.key.as_str()),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");

    // The lifecycle forms' confirmations: cancel needs the tick, delete the exact name.
    let page_of = format!("/console/tenants/{}", acme.tenant);
    let html = get(&app, &page_of, Some(&session))
        .await
        .text()
        .await
        .unwrap();
    let csrf = csrf_in(&html);
    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/cancel"),
        &[("csrf", &csrf), ("reason", "churned"), ("grace_days", "7")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("Tick the confirmation"));
    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/cancel"),
        &[
            ("csrf", &csrf),
            ("reason", "churned"),
            ("grace_days", "a week"),
            ("confirm", "yes"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("whole number of days"));
    let status: String = sqlx::query_scalar("SELECT status FROM tenants WHERE tenant = $1")
        .bind(acme.tenant)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(status, "active");
    // Export from the page, then its download.
    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/export"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("The export is ready."), "{html}");
    let end = html.find("/archive\"").unwrap() + "/archive".len();
    let start = html[..end].rfind("href=\"").unwrap() + 6;
    let link = html[start..end].to_owned();
    let r = get(&app, &link, Some(&session)).await;
    assert_eq!(r.status(), StatusCode::OK, "{link}");
    assert_eq!(r.headers()["content-type"], "application/gzip");
    assert!(r.bytes().await.unwrap().len() > 100);
}
