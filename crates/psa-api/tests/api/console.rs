//! The console over real HTTP (the browser tests drive the same pages): sign-in sets an
//! HttpOnly, SameSite=Strict session cookie; pages are no-store with a strict CSP; the tenants
//! page is for the management tenant only; a form without this session's CSRF token is refused.

use reqwest::StatusCode;
use reqwest::header::{CACHE_CONTROL, CONTENT_SECURITY_POLICY, COOKIE, LOCATION, SET_COOKIE};

use super::lifecycle::platform;
use super::*;

pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub(crate) async fn sign_in(app: &TestApp, t: &TenantFixture, password: &str) -> reqwest::Response {
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
pub(crate) fn cookie(r: &reqwest::Response) -> String {
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

/// A page's HTML, whatever its status.
pub(crate) async fn text(app: &TestApp, path: &str, cookie: Option<&str>) -> String {
    get(app, path, cookie).await.text().await.unwrap()
}

pub(crate) fn csrf_in(html: &str) -> String {
    hidden_in(html, "csrf")
}

/// The value of the page's hidden field `name` (a CSRF token, a sign-in's choice or code token).
pub(crate) fn hidden_in(html: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let at = html
        .find(&marker)
        .unwrap_or_else(|| panic!("a {name} field in {html}"))
        + marker.len();
    html[at..].split('"').next().unwrap().to_owned()
}

/// The key an authenticator app is to type in, as the second-factor page shows it.
pub(crate) fn totp_key_in(html: &str) -> String {
    html.split("<code class=\"secret\">")
        .nth(1)
        .expect("the key to type in")
        .split('<')
        .next()
        .unwrap()
        .to_owned()
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
    // The email first (it may lead to the organisation's provider); a link naming the
    // organisation asks for the password at once.
    assert!(html.contains(">Continue</button>"), "{html}");
    assert!(!html.contains("name=\"password\""), "{html}");
    let html = text(&app, "/console/sign-in?org=acme", None).await;
    assert!(
        html.contains("<label for=\"password\">Password</label>"),
        "{html}"
    );
    // Another site cannot sign a visitor in to an account of its choosing.
    let r = client()
        .post(format!("{}/console/sign-in", app.base))
        .header("sec-fetch-site", "cross-site")
        .form(&[
            ("tenant", mgmt.tenant.to_string()),
            ("email", mgmt.admin_email.clone()),
            ("password", mgmt.admin_password.clone()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.headers().get(SET_COOKIE).is_none());
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");

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

/// In a real headless Chromium: sign in through the form, the tenants page, a tenant's page, a
/// search; a screenshot of each page (desktop and phone) under target/console-screenshots/, and
/// an axe scan of each with no serious or critical violation.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_sign_in_and_tenants_pass_axe() {
    let (app, mgmt, _) = platform().await;
    for (label, width, height) in [("desktop", 1280, 900), ("phone", 390, 844)] {
        let browser = psa_testing::Browser::start(width, height).await;
        let b = &browser.client;
        // Not signed in: the console sends the browser to its sign-in page.
        b.goto(&format!("{}/console", app.base)).await.unwrap();
        ui::wait_text(b, "h1", "Sign in", 20).await;
        assert!(
            b.current_url()
                .await
                .unwrap()
                .path()
                .ends_with("/console/sign-in")
        );
        review(&browser, &format!("sign-in-{label}")).await;
        ui::sign_in_as(b, &app.base, &mgmt).await;
        // The management console starts on what needs attention.
        ui::wait_text(b, "h1", "What needs attention", 20).await;
        review(&browser, &format!("attention-{label}")).await;
        b.goto(&format!("{}/console/tenants", app.base))
            .await
            .unwrap();
        ui::wait_text(b, "h1", "Tenants", 20).await;
        ui::wait_text(b, "tbody", "Acme", 20).await;
        review(&browser, &format!("tenants-{label}")).await;
        ui::click(b, "tbody a[href^='/console/tenants/']").await;
        ui::wait_text(b, "dl.facts", "Tenant ID", 20).await;
        review(&browser, &format!("tenant-{label}")).await;
        b.goto(&format!("{}/console/tenants", app.base))
            .await
            .unwrap();
        ui::fill(b, "name", "nobody-is-called-this").await;
        ui::click(b, "form.filters button").await;
        ui::wait_text(b, "main", "No tenant matches.", 20).await;
    }
}

pub(crate) async fn post_form(
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

/// A console form with a file (`multipart/form-data`), its fields first, in order, as a browser
/// sends them.
pub(crate) async fn post_multipart(
    app: &TestApp,
    session: &str,
    path: &str,
    fields: &[(&str, &str)],
    file: (&str, &str, &[u8]),
) -> reqwest::Response {
    let boundary = format!("psa-{}", uuid::Uuid::new_v4().simple());
    let mut body = Vec::new();
    for (k, v) in fields {
        body.extend(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n")
                .as_bytes(),
        );
    }
    let (name, file_name, bytes) = file;
    body.extend(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"; \
             filename=\"{file_name}\"\r\nContent-Type: application/gzip\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend(bytes);
    body.extend(format!("\r\n--{boundary}--\r\n").as_bytes());
    client()
        .post(format!("{}{path}", app.base))
        .header(COOKIE, session)
        .header(
            reqwest::header::CONTENT_TYPE,
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap()
}

pub(crate) fn location(r: &reqwest::Response) -> String {
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
    assert_eq!(location(&r), "/console/companies");
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
    let html = text(&app, &page_of, Some(&session)).await;
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
    let html = text(&app, &path, Some(&session)).await;
    assert!(html.contains(">VIP</span>"), "{html}");
    assert!(html.contains("style=\"background-color: #"), "{html}");
    let list = text(&app, "/console/companies?name=initech", Some(&session)).await;
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
    let html = text(&app, &path, Some(&session)).await;
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
    let contacts = text(&app, "/console/contacts", Some(&session)).await;
    assert!(
        contacts.contains(">Peter Gibbons</a>") && contacts.contains(">Initech Ltd</a>"),
        "{contacts}"
    );
    let found = text(&app, "/console/contacts?name=GIBB", Some(&session)).await;
    assert!(found.contains(">Peter Gibbons</a>"), "{found}");
    let none = text(&app, "/console/contacts?name=lumbergh", Some(&session)).await;
    assert!(none.contains("No contacts."), "{none}");
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
    // A name a spreadsheet would run as a formula, and five seats (the licence count).
    sqlx::query("UPDATE tenants SET company_name = '=HYPERLINK(1)' WHERE tenant = $1")
        .bind(acme.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let mut tx = app.db.pool.begin().await.unwrap();
    psa_models::plans::start(&mut tx, acme.tenant, "standard", Some(5))
        .await
        .unwrap();
    tx.commit().await.unwrap();
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
        lines[1].starts_with(&format!("{},'=HYPERLINK(1),acme,active,", acme.tenant)),
        "{csv}"
    );
    assert!(
        lines[1].contains(&format!(",{},1,5,tracked,PSA Customer,", acme.admin_email)),
        "{csv}"
    );
    assert!(lines[1].ends_with(",standard,active,1,5"), "{csv}");

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
    let html = text(&app, &page_of, Some(&session)).await;
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

/// A platform with provisioning: Temporal, a worker in this process without mail (so the
/// invitation link comes back sealed to its starter), the API on its production login role.
struct Provisioning {
    app: TestApp,
    mgmt: TenantFixture,
    _temporal: psa_testing::TestTemporal,
    _worker: psa_workflows::worker::Background,
}

async fn with_provisioning() -> Provisioning {
    use psa_workflows::secret::SecretKey;
    let temporal = psa_testing::TestTemporal::start().await;
    let queue = format!("console-{}", uuid::Uuid::new_v4().simple());
    let key = SecretKey::generate_base64();
    let mut app = TestApp::unserved().await;
    let mgmt = app.tenant("Mgmt").await;
    sqlx::query("UPDATE tenants SET is_management = true WHERE tenant = $1")
        .bind(mgmt.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (pool, _) = app.api_login_pool().await;
    let mut config = test_config();
    config.webhooks.key = Some(SecretKey::from_base64(&key).unwrap());
    let provisioning = psa_api::tenants::Provisioning::new(
        temporal.address.clone(),
        "default".into(),
        queue.clone(),
        pool.clone(),
    );
    app.serve(pool, config, Some(provisioning)).await;
    // Links in what the worker makes point at this server.
    let delivery =
        psa_models::invitations::Delivery::without_mail(url::Url::parse(&app.base).unwrap());
    let worker = psa_workflows::worker::Background::start(
        &temporal.address,
        &queue,
        psa_workflows::worker::WorkerConfig {
            pool: app.db.pool.clone(),
            key: SecretKey::from_base64(&key).unwrap(),
            tracking: psa_workflows::TrackingSettings {
                enabled: true,
                management_tenant_id: Some(mgmt.tenant),
                tag_name: psa_models::validate::TagText::parse("PSA Customer").unwrap(),
            },
            delivery,
            lifecycle: psa_workflows::worker::LifecycleConfig::in_dir(
                &std::env::temp_dir().join(format!("psa-exports-{}", uuid::Uuid::new_v4())),
            )
            .unwrap(),
        },
    )
    .expect("worker started");
    Provisioning {
        app,
        mgmt,
        _temporal: temporal,
        _worker: worker,
    }
}

pub(crate) mod ui {
    //! Small steps of a user in the browser.
    use std::time::{Duration, Instant};

    use fantoccini::{Client, Locator};

    pub async fn fill(b: &Client, id: &str, text: &str) {
        let field = b.wait().for_element(Locator::Id(id)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    pub async fn click(b: &Client, css: &str) {
        b.wait()
            .for_element(Locator::Css(css))
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }

    /// The text of `css` once it contains `wanted` (pages load and reload under it).
    pub async fn wait_text(b: &Client, css: &str, wanted: &str, secs: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            let text = match b.find(Locator::Css(css)).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(wanted) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{css} never showed {wanted:?}; it shows {text:?} at {:?}",
                b.current_url().await.map(|u| u.to_string())
            );
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    }

    /// Signs in by email and password; `org` (a slug or an id) as a sign-in link names it.
    /// Without one, the email comes first (it may lead to the organisation's provider), then
    /// the password.
    pub async fn sign_in(b: &Client, base: &str, org: &str, email: &str, password: &str) {
        if org.is_empty() {
            b.goto(&format!("{base}/console/sign-in")).await.unwrap();
            fill(b, "email", email).await;
            click(b, "form.card button[type=submit]").await;
        } else {
            b.goto(&format!("{base}/console/sign-in?org={org}"))
                .await
                .unwrap();
            fill(b, "email", email).await;
        }
        fill(b, "password", password).await;
        click(b, "form.card button[type=submit]").await;
    }

    /// Signs in as a fixture tenant's admin.
    pub async fn sign_in_as(b: &Client, base: &str, t: &super::TenantFixture) {
        sign_in(b, base, "", &t.admin_email, &t.admin_password).await;
    }

    pub async fn sign_out(b: &Client) {
        click(b, "form.signout button").await;
        wait_text(b, "h1", "Sign in", 20).await;
    }
}

/// Every page is checked the same way: no serious or critical axe violation, and a screenshot.
pub(crate) async fn review(browser: &psa_testing::Browser, name: &str) {
    let violations = browser.axe().await;
    assert!(violations.is_empty(), "{name}: {violations:?}");
    browser.screenshot(name).await;
}

/// The product in a real browser, end to end: an operator provisions a tenant and watches the
/// progress page reach "completed", finds it on the customers page with its tag; a forced
/// failure shows its rollback; the new admin accepts the invitation, signs in, makes a company
/// (a bad email first); the operator suspends the tenant and its admin is refused. Every page
/// passes axe and is saved as a screenshot; then again at phone size.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_provision_invite_work_and_suspend() {
    use fantoccini::Locator;
    let p = with_provisioning().await;
    let base = p.app.base.clone();
    let mgmt = &p.mgmt;
    let browser = psa_testing::Browser::start(1280, 900).await;
    let b = &browser.client;
    ui::sign_in_as(b, &base, mgmt).await;
    ui::wait_text(b, "h1", "What needs attention", 20).await;

    // New tenant: a bad email first, shown next to its field; nothing started.
    b.goto(&format!("{base}/console/tenants/new"))
        .await
        .unwrap();
    ui::wait_text(b, "h1", "New tenant", 20).await;
    review(&browser, "new-tenant").await;
    ui::fill(b, "tenant_name", "Globex").await;
    ui::fill(b, "first_name", "Hank").await;
    ui::fill(b, "last_name", "Scorpio").await;
    ui::fill(b, "email", "hank at globex").await;
    ui::fill(b, "license_count", "12").await;
    ui::click(b, "form.card button[type=submit]").await;
    ui::wait_text(b, "#email-error", "mail", 20).await;
    review(&browser, "new-tenant-field-error").await;
    assert_eq!(p.app.count("tenant_provisioning").await, 0);
    ui::fill(b, "email", "hank@globex.example").await;
    ui::click(b, "form.card button[type=submit]").await;

    // The progress page follows the run to its end, then shows the invitation link.
    ui::wait_text(b, "h1", "Provisioning Globex", 20).await;
    browser.screenshot("progress-running").await;
    ui::wait_text(b, "#result", "Result: completed", 120).await;
    let steps = b
        .find(Locator::Id("progress"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(steps.matches("done").count(), 7, "{steps}");
    review(&browser, "progress-completed").await;
    let link = b
        .find(Locator::Id("invitation-link"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .expect("the invitation link");
    assert!(link.starts_with(&format!("{base}/invite#")), "{link}");
    let globex: TenantId =
        sqlx::query_scalar("SELECT tenant FROM tenants WHERE company_name = 'Globex'")
            .fetch_one(&p.app.db.pool)
            .await
            .unwrap();

    // On the customers page, with its tag.
    b.goto(&format!("{base}/console/customers")).await.unwrap();
    let row = ui::wait_text(b, "tbody", "Globex", 20).await;
    assert!(
        row.contains("PSA Customer") && row.contains("tracked"),
        "{row}"
    );
    assert!(
        row.contains("hank@globex.example") && row.contains("/ 12"),
        "{row}"
    );
    review(&browser, "customers").await;

    // A repair preview of everything: nothing to do.
    ui::click(b, "form.card button.secondary").await;
    ui::wait_text(
        b,
        "main",
        "Preview: 0 customer(s) would get new records",
        60,
    )
    .await;
    review(&browser, "customer-repair").await;

    // A forced failure: the run rolls back and the page says what it undid.
    fail::cfg("activity::setup_tenant_data", "return(permanent)").unwrap();
    b.goto(&format!("{base}/console/tenants/new"))
        .await
        .unwrap();
    ui::fill(b, "tenant_name", "Doomed").await;
    ui::fill(b, "first_name", "Dee").await;
    ui::fill(b, "last_name", "Oomed").await;
    ui::fill(b, "email", "dee@doomed.example").await;
    ui::click(b, "form.card button[type=submit]").await;
    let result = ui::wait_text(b, "#result", "Rolled back", 120).await;
    fail::remove("activity::setup_tenant_data");
    assert!(result.contains("setup tenant data failed"), "{result}");
    assert!(result.contains("rollback tenant"), "{result}");
    let headline = ui::wait_text(b, "#headline", "rolled back", 5).await;
    assert!(
        headline.contains("nothing of the tenant is left"),
        "{headline}"
    );
    review(&browser, "progress-rolled-back").await;

    // The tenant page (every action its state allows), then sign out.
    b.goto(&format!("{base}/console/tenants/{globex}"))
        .await
        .unwrap();
    ui::wait_text(b, "main", "Cancel the tenant", 20).await;
    review(&browser, "tenant").await;
    ui::sign_out(b).await;

    // The new admin accepts the invitation and signs in from the page that follows.
    b.goto(&link).await.unwrap();
    ui::wait_text(b, "h1", "Choose your password", 20).await;
    review(&browser, "invitation").await;
    ui::fill(b, "password", "globex staff only please").await;
    ui::fill(b, "password_confirm", "globex staff only please").await;
    ui::click(b, "#set-password button").await;
    ui::wait_text(b, "h1", "Your password is set", 20).await;
    review(&browser, "password-set").await;
    ui::click(b, "main a").await;
    ui::wait_text(b, "h1", "Sign in", 20).await;
    // The organisation comes from the link (its slug); the email is typed (it stays out of URLs).
    let org = b
        .find(Locator::Css("input[name=tenant]"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert_eq!(org, "globex");
    review(&browser, "sign-in-org").await;
    ui::fill(b, "email", "hank@globex.example").await;
    ui::fill(b, "password", "globex staff only please").await;
    ui::click(b, "form.card button[type=submit]").await;
    // Not a management user: the console opens on their companies.
    ui::wait_text(b, "h1", "Companies", 20).await;
    review(&browser, "companies").await;

    // A company with a bad email: the field error; then fixed.
    ui::click(b, "a.button").await;
    ui::wait_text(b, "h1", "New company", 20).await;
    review(&browser, "company-new").await;
    ui::fill(b, "company_name", "Initrode").await;
    ui::fill(b, "billing_email", "billing@").await;
    ui::click(b, "form.card button[type=submit]").await;
    ui::wait_text(b, "#billing_email-error", "email", 20).await;
    review(&browser, "company-field-error").await;
    ui::fill(b, "billing_email", "billing@initrode.example").await;
    ui::click(b, "form.card button[type=submit]").await;
    ui::wait_text(b, "main", "Created.", 20).await;
    ui::fill(b, "tag_text", "Prospect").await;
    ui::click(b, "form.inline-form button").await;
    ui::wait_text(b, "main", "Tag attached.", 20).await;
    review(&browser, "company").await;
    b.goto(&format!("{base}/console/contacts/new"))
        .await
        .unwrap();
    ui::wait_text(b, "h1", "New contact", 20).await;
    review(&browser, "contact-new").await;
    b.goto(&format!("{base}/console/contacts")).await.unwrap();
    ui::wait_text(b, "h1", "Contacts", 20).await;
    review(&browser, "contacts").await;
    // The tenant's own admin manages its users (invitations need mail: refused here, said so).
    b.goto(&format!("{base}/console/users")).await.unwrap();
    ui::wait_text(b, "main", "(you)", 20).await;
    review(&browser, "users").await;
    ui::fill(b, "first_name", "Frank").await;
    ui::fill(b, "last_name", "Grimes").await;
    ui::fill(b, "email", "frank@globex.example").await;
    ui::click(b, "form.card button[type=submit]").await;
    ui::wait_text(b, "form.card", "sends no email", 20).await;
    b.goto(&format!("{base}/console/account/password"))
        .await
        .unwrap();
    ui::wait_text(b, "h1", "Change your password", 20).await;
    review(&browser, "password").await;
    ui::sign_out(b).await;
    b.goto(&format!("{base}/console/forgot-password"))
        .await
        .unwrap();
    ui::wait_text(b, "h1", "Forgotten password", 20).await;
    review(&browser, "forgot-password").await;

    // The operator starts on what needs attention: the run that rolled back above.
    ui::sign_in_as(b, &base, mgmt).await;
    ui::wait_text(b, "h1", "What needs attention", 20).await;
    ui::wait_text(b, "main", "Doomed", 20).await;
    review(&browser, "attention-populated").await;
    // A support session into Globex from its page: its console, as its administrator, under a
    // banner; credentials out of reach; "End now" returns to the operator's own console.
    b.goto(&format!("{base}/console/tenants/{globex}"))
        .await
        .unwrap();
    ui::wait_text(b, "main", "Open a support session", 20).await;
    ui::fill(
        b,
        "support-reason",
        "Ticket 42: the company list looks wrong",
    )
    .await;
    ui::click(b, "form[action$='/support'] button").await;
    let banner = ui::wait_text(b, ".support-banner", "Support session by", 20).await;
    assert!(banner.contains(&mgmt.admin_email), "{banner}");
    ui::wait_text(b, "h1", "Companies", 20).await;
    review(&browser, "support-session").await;
    b.goto(&format!("{base}/console/account/sessions"))
        .await
        .unwrap();
    ui::wait_text(b, "main", "A support session cannot reach", 20).await;
    b.goto(&format!("{base}/console")).await.unwrap();
    ui::click(b, ".support-banner button").await;
    ui::wait_text(b, "dl.facts", "Tenant ID", 20).await;
    ui::wait_text(b, "main", "Ticket 42", 20).await;
    review(&browser, "tenant-after-support").await;
    // The operator suspends Globex; its admin's next sign-in is refused.
    b.goto(&format!("{base}/console/tenants/{globex}"))
        .await
        .unwrap();
    ui::fill(b, "reason", "unpaid invoices").await;
    ui::click(b, "form[action$='/suspend'] button").await;
    ui::wait_text(b, "main", "Globex is now suspended.", 20).await;
    // Events, a webhook endpoint (its secret shown once), the audit log.
    b.goto(&format!("{base}/console/events")).await.unwrap();
    ui::wait_text(b, "tbody", "tenant.suspended", 20).await;
    review(&browser, "events").await;
    b.goto(&format!("{base}/console/webhooks")).await.unwrap();
    ui::wait_text(b, "h1", "Webhook endpoints", 20).await;
    ui::fill(b, "url", "http://127.0.0.1:9/psa-events").await;
    ui::fill(b, "description", "billing system").await;
    ui::click(b, "input[value='tenant.suspended']").await;
    review(&browser, "webhooks").await;
    ui::click(b, "form.card button[type=submit]").await;
    ui::wait_text(b, "main", "Endpoint added.", 20).await;
    let secret = b
        .find(Locator::Id("signing-secret"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(secret.starts_with("whsec_"), "{secret}");
    ui::click(b, "form[action$='/test'] button").await;
    ui::wait_text(b, "main", "A test event is on its way.", 20).await;
    review(&browser, "webhook").await;
    b.goto(&format!("{base}/console/audit")).await.unwrap();
    ui::wait_text(b, "tbody", "suspend", 20).await;
    review(&browser, "audit").await;
    ui::sign_out(b).await;
    ui::sign_in(
        b,
        &base,
        "globex",
        "hank@globex.example",
        "globex staff only please",
    )
    .await;
    let refusal = ui::wait_text(b, "main", "suspended", 20).await;
    assert!(
        refusal.contains("contact the platform's support"),
        "{refusal}"
    );
    review(&browser, "sign-in-suspended").await;
    drop(browser);

    // The same pages on a phone.
    let phone = psa_testing::Browser::start(390, 844).await;
    let b = &phone.client;
    ui::sign_in_as(b, &base, mgmt).await;
    ui::wait_text(b, "h1", "What needs attention", 20).await;
    let run: String = sqlx::query_scalar(
        "SELECT workflow_id FROM tenant_provisioning WHERE tenant_name = 'Globex'",
    )
    .fetch_one(&p.app.db.pool)
    .await
    .unwrap();
    for (path, heading, name) in [
        (
            "/console/tenants/new".to_owned(),
            "New tenant",
            "new-tenant-phone",
        ),
        (
            format!("/console/provisioning/{run}"),
            "Provisioning Globex",
            "progress-phone",
        ),
        (
            "/console/customers".to_owned(),
            "Customers",
            "customers-phone",
        ),
        (
            format!("/console/tenants/{globex}"),
            "Globex",
            "tenant-phone",
        ),
        (
            "/console/companies".to_owned(),
            "Companies",
            "companies-phone",
        ),
        ("/console/events".to_owned(), "Events", "events-phone"),
        (
            "/console/webhooks".to_owned(),
            "Webhook endpoints",
            "webhooks-phone",
        ),
        ("/console/audit".to_owned(), "Audit log", "audit-phone"),
    ] {
        b.goto(&format!("{base}{path}")).await.unwrap();
        ui::wait_text(b, "h1", heading, 20).await;
        review(&phone, name).await;
    }
}

/// A tenant's admin manages its users from the console: invitations by email (a real SMTP
/// server), roles, deactivation; the API's rules hold (nobody deactivates themselves); their
/// own password changes with field errors; a forgotten password is asked for from the sign-in.
#[tokio::test]
async fn users_and_passwords_from_the_console() {
    let (app, smtp, acme) = super::user_admin::app_with_mail().await;
    let session = cookie(&sign_in(&app, &acme, &acme.admin_password).await);
    let r = get(&app, "/console/users", Some(&session)).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(html.contains("(you)"), "{html}");
    assert!(!html.contains(&format!("/console/users/{}/deactivate", acme.admin)));
    let csrf = csrf_in(&html);
    let users = || app.count("users");
    let before = users().await;

    let invite = |email: &'static str, csrf: String| {
        [
            ("csrf", csrf),
            ("first_name", "Ada".to_owned()),
            ("last_name", "Lovelace".to_owned()),
            ("email", email.to_owned()),
            ("role", "Technician".to_owned()),
        ]
    };
    let r = client()
        .post(format!("{}/console/users", app.base))
        .header(COOKIE, &session)
        .form(&invite("ada@", csrf.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("id=\"email-error\""));
    let r = client()
        .post(format!("{}/console/users", app.base))
        .header(COOKIE, &session)
        .form(&invite("ada@acme.example", String::new()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(users().await, before);
    let r = client()
        .post(format!("{}/console/users", app.base))
        .header(COOKIE, &session)
        .form(&invite("ada@acme.example", csrf.clone()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console/users?done=invited");
    assert_eq!(users().await, before + 1);
    assert_eq!(
        smtp.wait_for(1, std::time::Duration::from_secs(10))
            .await
            .len(),
        1
    );
    let ada: UserId =
        sqlx::query_scalar("SELECT user_id FROM users WHERE email = 'ada@acme.example'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    let html = text(&app, "/console/users?done=invited", Some(&session)).await;
    assert!(html.contains("Invited: the invitation email is on its way."));
    assert!(
        html.contains(&format!("/console/users/{ada}/resend")),
        "{html}"
    );

    let r = post_form(
        &app,
        &session,
        &format!("/console/users/{ada}/role"),
        &[("csrf", &csrf), ("role", "Finance")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let html = text(&app, "/console/users", Some(&session)).await;
    assert!(
        html.contains("<option value=\"Finance\" selected>"),
        "{html}"
    );
    let r = post_form(
        &app,
        &session,
        &format!("/console/users/{ada}/role"),
        &[("csrf", &csrf), ("role", "Overlord")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let r = post_form(
        &app,
        &session,
        &format!("/console/users/{ada}/resend"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(location(&r), "/console/users?done=resent");
    assert_eq!(
        smtp.wait_for(2, std::time::Duration::from_secs(10))
            .await
            .len(),
        2
    );
    let r = post_form(
        &app,
        &session,
        &format!("/console/users/{ada}/deactivate"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(location(&r), "/console/users?done=deactivated");
    let inactive: bool = sqlx::query_scalar("SELECT is_inactive FROM users WHERE user_id = $1")
        .bind(ada)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert!(inactive);
    // The API's rule: nobody deactivates themselves, even with a hand-made form.
    let r = post_form(
        &app,
        &session,
        &format!("/console/users/{}/deactivate", acme.admin),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("You cannot deactivate yourself")
    );
    let audited: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM audit_log WHERE tenant = $1 AND entity_id = $2 \
           AND action IN ('invite', 'change_role', 'resend_invite', 'deactivate')",
    )
    .bind(acme.tenant)
    .bind(ada.0)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, 4);

    // The own password: the current one must be right, the new one strong and typed twice.
    let change = |current: &'static str, new: &'static str, again: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("current_password", current.to_owned()),
            ("new_password", new.to_owned()),
            ("new_password_confirm", again.to_owned()),
        ]
    };
    let post = |form: [(&'static str, String); 4]| {
        let (base, session) = (app.base.clone(), session.clone());
        async move {
            client()
                .post(format!("{base}/console/account/password"))
                .header(COOKIE, session)
                .form(&form)
                .send()
                .await
                .unwrap()
        }
    };
    let r = post(change(
        "wrong wrong wrong",
        "a fresh long passphrase",
        "a fresh long passphrase",
    ))
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("id=\"current_password-error\"")
    );
    let r = post(change(
        ADMIN_PASSWORD,
        "a fresh long passphrase",
        "a different one",
    ))
    .await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("id=\"new_password_confirm-error\"")
    );
    let r = post(change(ADMIN_PASSWORD, "short", "short")).await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("id=\"new_password-error\"")
    );
    let r = post(change(
        ADMIN_PASSWORD,
        "a fresh long passphrase",
        "a fresh long passphrase",
    ))
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Password changed."));
    assert_eq!(
        sign_in(&app, &acme, ADMIN_PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );

    // Forgotten: the same answer for any account; a mail for this one.
    let html = text(&app, "/console/sign-in", None).await;
    assert!(html.contains("/console/forgot-password"));
    for email in [acme.admin_email.as_str(), "nobody@acme.example"] {
        let r = client()
            .post(format!("{}/console/forgot-password", app.base))
            .form(&[
                ("tenant", acme.tenant.to_string()),
                ("email", email.to_owned()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.text().await.unwrap().contains("If this account exists"));
    }
    let mails = smtp.wait_for(3, std::time::Duration::from_secs(10)).await;
    assert_eq!(mails.len(), 3);
    assert!(
        psa_testing::link_in(&mails[2])
            .unwrap()
            .contains("/reset-password#")
    );
}

/// Events, webhook endpoints (created with their secret shown once, tested, retried,
/// disabled, rotated, removed with a confirmation) and the audit log that records it all.
#[tokio::test]
async fn events_webhooks_and_audit_from_the_console() {
    let (app, mgmt, acme) = platform().await;
    let session = cookie(&sign_in(&app, &mgmt, &mgmt.admin_password).await);
    let html = text(&app, "/console/webhooks", Some(&session)).await;
    assert!(html.contains("No endpoints yet."));
    let csrf = csrf_in(&html);
    let r = post_form(
        &app,
        &session,
        "/console/webhooks",
        &[("csrf", &csrf), ("url", "ftp://x")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("id=\"url-error\""));
    let r = post_form(
        &app,
        &session,
        "/console/webhooks",
        &[
            ("csrf", &csrf),
            ("url", "http://127.0.0.1:9/hooks"),
            ("description", "billing"),
            ("event_type", "tenant.suspended"),
            ("event_type", "tenant.reactivated"),
        ],
    )
    .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("id=\"signing-secret\" readonly value=\"whsec_"),
        "{html}"
    );
    assert!(
        html.contains("tenant.suspended, tenant.reactivated"),
        "{html}"
    );
    let id: uuid::Uuid = sqlx::query_scalar("SELECT endpoint_id FROM webhook_endpoints")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    let page_of = format!("/console/webhooks/{id}");
    let html = text(&app, &page_of, Some(&session)).await;
    assert!(!html.contains("whsec_"), "the secret is shown once");

    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/test"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(location(&r), format!("{page_of}?done=test"));
    let html = text(&app, &page_of, Some(&session)).await;
    assert!(html.contains("webhook_endpoint.test"), "{html}");
    // A delivery that gave up gets a retry button, and the retry queues it again.
    sqlx::query("UPDATE webhook_deliveries SET status = 'failed'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let html = text(&app, &format!("{page_of}?status=failed"), Some(&session)).await;
    let at = html.find("/retry\"").expect("a retry button");
    let start = html[..at].rfind("action=\"").unwrap() + 8;
    let retry = format!("{}/retry", &html[start..at]);
    let r = post_form(&app, &session, &retry, &[("csrf", "")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = post_form(&app, &session, &retry, &[("csrf", &csrf)]).await;
    assert_eq!(location(&r), format!("{page_of}?done=retry"));
    let pending: String = sqlx::query_scalar("SELECT status FROM webhook_deliveries")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(pending, "pending");

    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/disable"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(location(&r), format!("{page_of}?done=disabled"));
    let html = text(&app, "/console/webhooks", Some(&session)).await;
    assert!(html.contains(">disabled"), "{html}");
    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/enable"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(location(&r), format!("{page_of}?done=enabled"));
    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/rotate"),
        &[("csrf", &csrf)],
    )
    .await;
    assert!(r.text().await.unwrap().contains("value=\"whsec_"));
    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/delete"),
        &[("csrf", &csrf)],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(app.count("webhook_endpoints").await, 1);
    let r = post_form(
        &app,
        &session,
        &format!("{page_of}/delete"),
        &[("csrf", &csrf), ("confirm", "yes")],
    )
    .await;
    assert_eq!(location(&r), "/console/webhooks?done=deleted");
    assert_eq!(app.count("webhook_endpoints").await, 0);

    // The events page shows what happened, newest first; a suspension becomes one too.
    let html = text(
        &app,
        &format!("/console/tenants/{}", acme.tenant),
        Some(&session),
    )
    .await;
    assert!(html.contains("Suspend"));
    post_form(
        &app,
        &session,
        &format!("/console/tenants/{}/suspend", acme.tenant),
        &[("csrf", &csrf), ("reason", "unpaid")],
    )
    .await;
    let html = text(&app, "/console/events", Some(&session)).await;
    let rows = &html[html.find("<tbody>").unwrap()..];
    let html = rows.to_owned();
    let suspended = html.find("tenant.suspended").expect("the suspension event");
    let test = html.find("webhook_endpoint.test").expect("the test event");
    assert!(suspended < test, "newest first");
    let html = text(
        &app,
        "/console/events?type=tenant.suspended",
        Some(&session),
    )
    .await;
    let html = html[html.find("<tbody>").unwrap()..].to_owned();
    assert!(
        !html.contains("webhook_endpoint.test") && html.contains(">Acme</a>"),
        "{html}"
    );

    // The audit log: who did it (by email), filterable.
    let html = text(&app, "/console/audit", Some(&session)).await;
    assert!(html.contains(&mgmt.admin_email), "{html}");
    assert!(html.contains("<code>suspend</code>"), "{html}");
    let html = text(&app, "/console/audit?action=suspend", Some(&session)).await;
    assert!(
        html.contains("<code>suspend</code>") && !html.contains("<code>login</code>"),
        "{html}"
    );
    let html = text(&app, "/console/audit?actor=nobody%40x", Some(&session)).await;
    assert!(html.contains("Nothing recorded matches."));
    // Not for a customer's staff.
    let r = post_form(
        &app,
        &session,
        &format!("/console/tenants/{}/reactivate", acme.tenant),
        &[("csrf", &csrf)],
    )
    .await;
    assert!(r.text().await.unwrap().contains("Acme is now active."));
    let theirs = cookie(&sign_in(&app, &acme, &acme.admin_password).await);
    for page in ["/console/events", "/console/webhooks", "/console/audit"] {
        assert_eq!(
            get(&app, page, Some(&theirs)).await.status(),
            StatusCode::FORBIDDEN,
            "{page}"
        );
    }
}

/// Repair from the API and the console: a preview writes nothing and says what it would make;
/// the repair itself (run by the worker) makes the customer record; both are audited.
#[tokio::test(flavor = "multi_thread")]
async fn repair_previews_then_creates_customer_records() {
    let p = with_provisioning().await;
    let stray = p.app.tenant("Stray").await;
    let mgmt_companies = || {
        let pool = p.app.db.pool.clone();
        let mgmt = p.mgmt.tenant;
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM companies WHERE tenant = $1")
                .bind(mgmt)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let before = mgmt_companies().await;
    let key = Some(p.mgmt.key.as_str());
    let (status, started) = p
        .app
        .call(
            Method::POST,
            "/api/v1/customers/repairs",
            key,
            Some(serde_json::json!({"tenant_id": stray.tenant, "dry_run": true})),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{started}");
    let id = started["workflow_id"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let report = loop {
        let (status, body) = p
            .app
            .call(
                Method::GET,
                &format!("/api/v1/customers/repairs/{id}"),
                key,
                None,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["status"] != "running" {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(report["status"], "completed", "{report}");
    assert_eq!(report["report"]["dry_run"], true);
    assert_eq!(report["report"]["created"], 1);
    assert_eq!(
        report["report"]["repairs"][0]["what"],
        serde_json::json!(["company", "contact", "tag"])
    );
    assert_eq!(mgmt_companies().await, before, "a preview writes nothing");
    let (status, _) = p
        .app
        .call(
            Method::GET,
            "/api/v1/customers/repairs/customer-reconcile-nope",
            key,
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // Not a customer: the management tenant (422), a tenant that does not exist (404);
    // nothing started, nothing audited.
    for (tenant, want) in [
        (p.mgmt.tenant.to_string(), StatusCode::UNPROCESSABLE_ENTITY),
        (uuid::Uuid::new_v4().to_string(), StatusCode::NOT_FOUND),
    ] {
        let (status, body) = p
            .app
            .call(
                Method::POST,
                "/api/v1/customers/repairs",
                key,
                Some(serde_json::json!({"tenant_id": tenant, "dry_run": false})),
            )
            .await;
        assert_eq!(status, want, "{body}");
    }

    // From the console, for real.
    let session = cookie(&sign_in(&p.app, &p.mgmt, &p.mgmt.admin_password).await);
    let html = text(
        &p.app,
        "/console/customers?tracking=untracked",
        Some(&session),
    )
    .await;
    assert!(
        html.contains(">Stray</a>") && html.contains("Repair…"),
        "{html}"
    );
    let csrf = csrf_in(&html);
    let r = post_form(
        &p.app,
        &session,
        "/console/customers/repairs",
        &[("csrf", &csrf), ("tenant_id", &stray.tenant.to_string())],
    )
    .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let page_of = location(&r);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let html = text(&p.app, &page_of, Some(&session)).await;
        if html.contains("Done: 1 customer(s) got new records") {
            assert!(
                html.contains(">Stray</a></td><td>company, contact, tag<"),
                "{html}"
            );
            break;
        }
        assert!(!html.contains("failed"), "{html}");
        assert!(std::time::Instant::now() < deadline, "{html}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(mgmt_companies().await, before + 1);
    let html = text(&p.app, "/console/customers?name=Stray", Some(&session)).await;
    assert!(
        html.contains(">tracked") && html.contains(">PSA Customer</span>"),
        "{html}"
    );
    let audited: Vec<String> = sqlx::query_scalar(
        "SELECT action FROM audit_log WHERE tenant = $1 AND entity_type = 'customers' ORDER BY created_at",
    )
    .bind(p.mgmt.tenant)
    .fetch_all(&p.app.db.pool)
    .await
    .unwrap();
    assert_eq!(audited, ["preview_repair", "repair"]);
}

/// Cancel, restore and delete now from a tenant's page, with the deletion workflow on the
/// worker: the confirmations are required, restore puts the tenant back, delete-now removes it.
#[tokio::test(flavor = "multi_thread")]
async fn cancel_restore_and_delete_from_the_console() {
    let p = with_provisioning().await;
    let gone = p.app.tenant("Goner").await;
    let session = cookie(&sign_in(&p.app, &p.mgmt, &p.mgmt.admin_password).await);
    let page_of = format!("/console/tenants/{}", gone.tenant);
    let html = text(&p.app, &page_of, Some(&session)).await;
    let csrf = csrf_in(&html);
    let status = || {
        let pool = p.app.db.pool.clone();
        let t = gone.tenant;
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM tenants WHERE tenant = $1")
                .bind(t)
                .fetch_optional(&pool)
                .await
                .unwrap()
        }
    };
    let cancel = [
        ("csrf", csrf.as_str()),
        ("reason", "contract ended"),
        ("grace_days", "7"),
        ("confirm", "yes"),
    ];
    let r = post_form(&p.app, &session, &format!("{page_of}/cancel"), &cancel).await;
    assert_eq!(r.status(), StatusCode::OK);
    let html = r.text().await.unwrap();
    assert!(
        html.contains("Goner is canceled; its data is deleted on"),
        "{html}"
    );
    assert!(html.contains(">Restore</button>") && html.contains(">Delete now</button>"));
    assert_eq!(status().await.as_deref(), Some("canceled"));
    let r = post_form(
        &p.app,
        &session,
        &format!("{page_of}/restore"),
        &[("csrf", &csrf)],
    )
    .await;
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Goner is restored and active again.")
    );
    assert_eq!(status().await.as_deref(), Some("active"));

    let r = post_form(&p.app, &session, &format!("{page_of}/cancel"), &cancel).await;
    assert_eq!(r.status(), StatusCode::OK);
    let r = post_form(
        &p.app,
        &session,
        &format!("{page_of}/delete"),
        &[("csrf", &csrf), ("confirm_name", "goner")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("name exactly to delete it")
    );
    assert_eq!(status().await.as_deref(), Some("canceled"));
    let r = post_form(
        &p.app,
        &session,
        &format!("{page_of}/delete"),
        &[("csrf", &csrf), ("confirm_name", "Goner")],
    )
    .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.text().await.unwrap().contains("Deletion confirmed"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while status().await.is_some() {
        assert!(std::time::Instant::now() < deadline, "not deleted");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        get(&p.app, &page_of, Some(&session)).await.status(),
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn under_https_the_cookie_is_host_only_and_browsers_stay_on_https() {
    // Over plain http (a laptop): no HSTS, the plain cookie name.
    let (plain, mgmt, _) = platform().await;
    let r = sign_in(&plain, &mgmt, &mgmt.admin_password).await;
    assert!(r.headers().get("strict-transport-security").is_none());
    assert!(cookie(&r).starts_with("psa_console="));

    // PSA_PUBLIC_URL https: the __Host- cookie (Secure, Path=/, no Domain) and HSTS on every
    // answer, the API's too.
    let mut app = TestApp::unserved().await;
    let t = app.tenant("Acme").await;
    let mut config = test_config();
    config.delivery.public_url = url::Url::parse("https://psa.test").unwrap();
    let (pool, _) = app.api_login_pool().await;
    app.serve(pool, config, None).await;
    let r = sign_in(&app, &t, &t.admin_password).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let set = r.headers()[SET_COOKIE].to_str().unwrap().to_owned();
    assert!(set.starts_with("__Host-psa_console="), "{set}");
    assert!(
        set.contains("Secure") && set.contains("Path=/") && !set.contains("Domain"),
        "{set}"
    );
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=31536000; includeSubDomains"
    );
    let session = cookie(&r);
    let r = get(&app, "/console/users", Some(&session)).await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers().contains_key("strict-transport-security"));
    let (status, _) = app
        .call(
            reqwest::Method::GET,
            "/api/v1/companies",
            Some(&t.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    // The plain name is not read under https.
    let plain_name = session.replacen("__Host-psa_console", "psa_console", 1);
    let r = get(&app, "/console/users", Some(&plain_name)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}
