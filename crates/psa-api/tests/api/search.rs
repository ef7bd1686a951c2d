//! Search from the management tenant: a tenant found by its name, slug, id, a staff member's
//! email and its customer company's name, at the API and in the console; nobody else may search.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::*;

async fn search(app: &TestApp, key: &str, q: &str) -> (StatusCode, Value) {
    let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
    app.call(
        Method::GET,
        &format!("/api/v1/search?q={q}"),
        Some(key),
        None,
    )
    .await
}

fn ids(hits: &Value) -> Vec<String> {
    hits.as_array()
        .unwrap()
        .iter()
        .map(|h| h["tenant_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_tenant_is_found_by_each_of_its_keys() {
    let (app, mgmt, acme) = super::lifecycle::platform_with(test_config()).await;
    let globex = app.tenant("Globex").await;
    let k = mgmt.key.as_str();
    let acme_id = acme.tenant.to_string();
    // Acme's customer company in the management tenant gets a name of its own.
    sqlx::query(
        "UPDATE companies SET company_name = 'Acme Holdings International' \
         WHERE tenant = $1 AND properties ->> 'tenant_id' = $2",
    )
    .bind(mgmt.tenant)
    .bind(&acme_id)
    .execute(&app.db.pool)
    .await
    .unwrap();

    // By part of its name, any case: Acme, not Globex, and never the management tenant.
    let (status, r) = search(&app, k, "ACM").await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(ids(&r["tenants"]), [acme_id.as_str()], "{r}");
    assert_eq!(r["tenants"][0]["slug"], "acme");
    assert_eq!(r["query"], "acm");
    let (_, r) = search(&app, k, "mgmt").await;
    assert!(r["tenants"].as_array().unwrap().is_empty(), "{r}");
    // By its slug, its whole id, a staff member's email, its customer company's name.
    let (_, r) = search(&app, k, "globex").await;
    assert_eq!(ids(&r["tenants"]), [globex.tenant.to_string()], "{r}");
    let (_, r) = search(&app, k, &acme_id).await;
    assert_eq!(ids(&r["tenants"]), [acme_id.as_str()], "{r}");
    assert_eq!(r["tenants"][0]["kind"], "id");
    let (_, r) = search(&app, k, "admin@acme.exa").await;
    assert_eq!(ids(&r["people"]), [acme_id.as_str()], "{r}");
    assert_eq!(r["people"][0]["detail"], "admin@acme.example");
    let (_, r) = search(&app, k, "holdings intern").await;
    assert_eq!(ids(&r["customers"]), [acme_id.as_str()], "{r}");
    assert_eq!(r["customers"][0]["detail"], "Acme Holdings International");
    // LIKE's wildcards are searched for, not obeyed.
    let (_, r) = search(&app, k, "%_%").await;
    for group in ["tenants", "people", "customers"] {
        assert!(r[group].as_array().unwrap().is_empty(), "{r}");
    }

    // Too short, too long: 422 naming `q`.
    for q in ["ac", " ", &"x".repeat(201)] {
        let r = search(&app, k, q).await;
        assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
        assert!(r.1["error"]["fields"]["q"].is_string(), "{}", r.1);
    }
    let r = app.call(Method::GET, "/api/v1/search", Some(k), None).await;
    assert_error(&r, StatusCode::UNPROCESSABLE_ENTITY, "validation_error");
    // A customer tenant's admin may not search the platform, whatever the query.
    let r = app
        .call(Method::GET, "/api/v1/search", Some(&acme.key), None)
        .await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
    let r = search(&app, &acme.key, "globex").await;
    assert_error(&r, StatusCode::FORBIDDEN, "forbidden");
}

/// The console's header search box finds a tenant and leads to its page. Reviewed (axe) and
/// saved, on a desktop and a phone.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_the_search_box_finds_a_tenant() {
    use super::console::{review, ui};
    let (app, mgmt, acme) = super::lifecycle::platform_with(test_config()).await;
    app.tenant("AcmeLabs").await;
    for (width, height, name) in [(1280, 900, "search"), (390, 844, "search-phone")] {
        let browser = psa_testing::Browser::start(width, height).await;
        let b = &browser.client;
        ui::sign_in_as(b, &app.base, &mgmt).await;
        ui::wait_text(b, "h1", "", 20).await;
        ui::fill(b, "nav-q", "acme").await;
        ui::click(b, "form.search button[type=submit]").await;
        ui::wait_text(b, "main", "Tenants", 20).await;
        ui::wait_text(b, "main", "AcmeLabs", 5).await;
        review(&browser, name).await;
        ui::click(b, &format!("a[href='/console/tenants/{}']", acme.tenant)).await;
        ui::wait_text(b, "main", "Tenant ID", 20).await;
        let url = b.current_url().await.unwrap();
        assert!(url.path().ends_with(&acme.tenant.to_string()), "{url}");
        b.goto(&format!("{}/console/search?q=nobody-at-all", app.base))
            .await
            .unwrap();
        ui::wait_text(b, "main", "Nothing matches", 20).await;
    }
}
