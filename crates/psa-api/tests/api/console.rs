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
    assert!(html.contains("<td>Acme</td>"), "{html}");
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
