//! Every change is audited, whichever route it came by. Each non-GET operation of the API (as
//! the router documents it) and each form the console accepts (as its route tables declare
//! them) is called for real, against a server on the API's production login role; a trigger on
//! every table notes which transaction changed which table, and every transaction a request
//! committed that changed a row must have written an `audit_log` row too. A route added
//! without a step here fails the test, so the walk cannot go stale.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use psa_models::auth_tokens::{self, IssueOptions, Purpose};
use psa_models::{TenantId, UserId};
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use super::console::{
    client, cookie, csrf_in, hidden_in, location, post_form, post_multipart, sign_in, text,
    totp_key_in,
};
use super::provisioning::{Provisioned, provisioned_with};
use super::*;

/// Notes (transaction, table, login role) for every row written, except updates that only
/// touch bookkeeping columns (a credential's last use).
const TRACK: &str = r#"
CREATE TABLE audit_walk_changes (
    id bigserial PRIMARY KEY,
    txid xid8 NOT NULL,
    tbl text NOT NULL,
    login text NOT NULL
);
CREATE FUNCTION audit_walk_note() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public AS $$
DECLARE
    changed text[];
BEGIN
    IF TG_OP = 'UPDATE' THEN
        SELECT array_agg(n.key) INTO changed
        FROM jsonb_each(to_jsonb(NEW)) n
        WHERE n.value IS DISTINCT FROM to_jsonb(OLD) -> n.key;
        IF changed IS NULL OR changed <@ ARRAY['last_seen_at', 'last_used_at'] THEN
            RETURN NULL;
        END IF;
    END IF;
    INSERT INTO audit_walk_changes (txid, tbl, login)
    VALUES (pg_current_xact_id(), TG_TABLE_NAME, session_user);
    RETURN NULL;
END $$;
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
          AND c.relname NOT IN ('audit_walk_changes', '_sqlx_migrations')
    LOOP
        EXECUTE format(
            'CREATE TRIGGER audit_walk AFTER INSERT OR UPDATE OR DELETE ON %I '
            'FOR EACH ROW EXECUTE FUNCTION audit_walk_note()', t);
    END LOOP;
END $$;
"#;

/// The platform's records of its own runs (a provisioning run, an export, a deletion): the
/// request that starts one commits its audit row first, so that no run starts unaudited, and the
/// run's record is written after. A transaction that only writes these is audited by its
/// request's audit row; any other change must carry its own.
const BOOKKEEPING: [&str; 3] = ["tenant_provisioning", "tenant_exports", "tenant_deletions"];

/// A sign-in half done (the password matched in several organisations; the person chooses):
/// it lives 5 minutes, is used once, and the sign-in it completes is audited as a login. And
/// the shared sign-in limits' counters (`rate_limits`): every attempt takes from them, and the
/// attempt itself is audited (a login, or a failed one).
const EPHEMERAL: [&str; 2] = ["login_challenges", "rate_limits"];

/// The walk: what each route did, and the routes it covered.
struct Walk<'a> {
    p: &'a Provisioned,
    /// The last change already looked at.
    seen: i64,
    covered: BTreeSet<(String, String)>,
    unaudited: Vec<String>,
    /// Routes that changed nothing (a step that wrote nothing proves nothing).
    idle: Vec<String>,
}

impl<'a> Walk<'a> {
    async fn new(p: &'a Provisioned) -> Walk<'a> {
        sqlx::raw_sql(TRACK).execute(&p.app.db.pool).await.unwrap();
        Walk {
            p,
            seen: 0,
            covered: BTreeSet::new(),
            unaudited: Vec::new(),
            idle: Vec::new(),
        }
    }

    async fn last_change(&self) -> i64 {
        sqlx::query_scalar("SELECT coalesce(max(id), 0) FROM audit_walk_changes WHERE login = $1")
            .bind(&self.p.api_role)
            .fetch_one(&self.p.app.db.pool)
            .await
            .unwrap()
    }

    /// Looks at what the API wrote since the last step, once it has settled (a reset email
    /// goes out after the answer: nothing new for two polls), and books it under `route`.
    async fn check(&mut self, route: (&str, &str), writes: bool) {
        let name = format!("{} {}", route.0, route.1);
        self.settle(&name, writes).await;
        self.covered
            .insert((route.0.to_owned(), route.1.to_owned()));
    }

    async fn settle(&mut self, name: &str, writes: bool) {
        let mut last = self.last_change().await;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut quiet = 0;
        while quiet < 2 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(150)).await;
            let now = self.last_change().await;
            quiet = if now == last { quiet + 1 } else { 0 };
            last = now;
        }
        // Each transaction with the first change it made, in order.
        let txs: Vec<(i64, Vec<String>)> = sqlx::query_as(
            "SELECT min(id), array_agg(DISTINCT tbl ORDER BY tbl) FROM audit_walk_changes \
             WHERE id > $1 AND id <= $2 AND login = $3 GROUP BY txid ORDER BY min(id)",
        )
        .bind(self.seen)
        .bind(last)
        .bind(&self.p.api_role)
        .fetch_all(&self.p.app.db.pool)
        .await
        .unwrap();
        self.seen = last;
        let txs: Vec<(i64, Vec<String>)> = txs
            .into_iter()
            .map(|(first, tables)| {
                let kept = tables
                    .into_iter()
                    .filter(|t| !EPHEMERAL.contains(&t.as_str()))
                    .collect::<Vec<_>>();
                (first, kept)
            })
            .filter(|(_, tables)| !tables.is_empty())
            .collect();
        let audited = |tables: &[String]| tables.iter().any(|t| t == "audit_log");
        for (first, tables) in &txs {
            // A run's record passes only after its request's audit row was written.
            let bookkeeping = tables.iter().all(|t| BOOKKEEPING.contains(&t.as_str()))
                && txs
                    .iter()
                    .any(|(other, tables)| other < first && audited(tables));
            if !(audited(tables) || bookkeeping) {
                self.unaudited.push(format!("{name} changed {tables:?}"));
            }
        }
        if writes && txs.is_empty() {
            self.idle.push(name.to_owned());
        }
    }

    /// An API call on `template` (its ids filled in as `path`) that must answer `expected`.
    async fn api(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
        expected: StatusCode,
    ) -> Value {
        let key = (!key.is_empty()).then_some(key);
        let (status, answer) = self.p.app.call(method.clone(), path, key, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        self.check((method.as_str(), template), true).await;
        answer
    }

    /// A call on `template` (as `path`) that must answer `expected` and keep nothing (a
    /// refusal, or a ceremony's challenge): no audit row is due.
    async fn unwritten(
        &mut self,
        method: Method,
        template: &str,
        path: &str,
        key: &str,
        body: Option<Value>,
        expected: StatusCode,
    ) -> Value {
        let key = (!key.is_empty()).then_some(key);
        let (status, answer) = self.p.app.call(method.clone(), path, key, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        self.check((method.as_str(), template), false).await;
        answer
    }

    /// A passkey on record for `user` (its ceremonies need an authenticator, which the browser
    /// tests have): written as a fixture, for the routes that remove one.
    async fn passkey_of(&mut self, tenant: TenantId, user: UserId) -> uuid::Uuid {
        let id = sqlx::query_scalar(
            "INSERT INTO user_passkeys (tenant, user_id, name, credential_id, passkey) \
             VALUES ($1, $2, $3, $4, '{}') RETURNING passkey_id",
        )
        .bind(tenant)
        .bind(user)
        .bind(format!("Key {}", uuid::Uuid::new_v4().simple()))
        .bind(uuid::Uuid::new_v4().as_bytes().to_vec())
        .fetch_one(&self.p.app.db.pool)
        .await
        .unwrap();
        self.settle("a passkey fixture", false).await;
        id
    }

    /// A console form posted on `template` (as `path`) that must answer `expected` and keep
    /// nothing.
    async fn form_unwritten(
        &mut self,
        template: &str,
        path: &str,
        session: &str,
        fields: &[(&str, &str)],
        expected: StatusCode,
    ) -> reqwest::Response {
        let r = post_form(&self.p.app, session, path, fields).await;
        assert_eq!(r.status(), expected, "POST {path}");
        self.check(("POST", template), false).await;
        r
    }

    /// A console form posted on `template` (as `path`) that must answer `expected`.
    async fn form(
        &mut self,
        template: &str,
        path: &str,
        session: &str,
        fields: &[(&str, &str)],
        expected: StatusCode,
    ) -> reqwest::Response {
        let r = post_form(&self.p.app, session, path, fields).await;
        if r.status() != expected {
            let status = r.status();
            panic!(
                "POST {path}: {status}, expected {expected}: {}",
                r.text().await.unwrap()
            );
        }
        self.check(("POST", template), true).await;
        r
    }
}

/// Every route outside the OpenAPI document that accepts a change (the console's forms, the
/// link pages, anything else routed by hand), from the route tables in the crate's source:
/// `.route("PATH", ...post(...))`, and the same for put, patch and delete.
fn hand_routed() -> BTreeSet<(String, String)> {
    fn sources(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                sources(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = Vec::new();
    sources(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut files,
    );
    let mut routes = BTreeSet::new();
    for file in files {
        let source = std::fs::read_to_string(&file).unwrap();
        assert!(
            !source.contains(".route_service(") && !source.contains(".nest("),
            "{}: routes this walk cannot read",
            file.display()
        );
        for part in source.split(".route(").skip(1) {
            // The call's text: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = part
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '(' => 1,
                        ')' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let call = &part[..end];
            assert!(
                !calls(call, "any") && !calls(call, "on"),
                "a route for any method: {call}"
            );
            let methods: Vec<&str> = ["post", "put", "patch", "delete"]
                .into_iter()
                .filter(|m| calls(call, m))
                .collect();
            if methods.is_empty() {
                continue;
            }
            let path = match call.trim_start().strip_prefix('"') {
                Some(rest) => rest.split('"').next().unwrap().to_owned(),
                // The link pages name their path by purpose.
                None if call.contains("Purpose::Invitation.page()") => {
                    Purpose::Invitation.page().to_owned()
                }
                None if call.contains("Purpose::PasswordReset.page()") => {
                    Purpose::PasswordReset.page().to_owned()
                }
                None => panic!("a route whose path this walk cannot read: {call}"),
            };
            for m in methods {
                routes.insert((m.to_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// Whether `text` calls the function `name` (`name(` not inside a longer identifier).
fn calls(text: &str, name: &str) -> bool {
    let needle = format!("{name}(");
    text.match_indices(&needle).any(|(i, _)| {
        !text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_')
    })
}

/// A link for `user`, issued as the platform would mail it.
async fn link(app: &TestApp, tenant: TenantId, user: UserId, purpose: Purpose) -> String {
    let mut tx = psa_models::db::begin_tenant(&app.db.pool, tenant)
        .await
        .unwrap();
    let issued = auth_tokens::issue(
        &mut tx,
        tenant,
        user,
        IssueOptions {
            purpose,
            ttl: Duration::from_secs(3600),
            created_by: "cli",
            workflow_id: None,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    issued.token.expose_secret().to_owned()
}

async fn user_id(app: &TestApp, tenant: TenantId, email: &str) -> UserId {
    sqlx::query_scalar("SELECT user_id FROM users WHERE tenant = $1 AND email = $2")
        .bind(tenant)
        .bind(email)
        .fetch_one(&app.db.pool)
        .await
        .unwrap()
}

/// Provisions a tenant through the API's step and waits until the worker has finished it.
async fn provision(w: &mut Walk<'_>, name: &str) -> TenantId {
    provision_on(w, name, None).await
}

/// A tenant provisioned on `plan` (`None`: the default plan).
async fn provision_on(w: &mut Walk<'_>, name: &str, plan: Option<&str>) -> TenantId {
    let key = w.p.mgmt.key.clone();
    let started = w
        .api(
            Method::POST,
            "/api/v1/tenants",
            "/api/v1/tenants",
            &key,
            Some(json!({
                "tenant_name": name,
                "admin_user": {"first_name": "Pat", "last_name": "Lee",
                               "email": format!("pat@{}.example", name.to_lowercase().replace(' ', "-"))},
                "plan": plan,
            })),
            StatusCode::ACCEPTED,
        )
        .await;
    finished(w.p, started["workflow_id"].as_str().unwrap(), name).await
}

async fn finished(p: &Provisioned, workflow: &str, name: &str) -> TenantId {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = p
            .app
            .call(
                Method::GET,
                &format!("/api/v1/tenants/provisioning/{workflow}"),
                Some(&p.mgmt.key),
                None,
            )
            .await;
        if s["finished"] == true {
            assert_eq!(s["result"]["status"], "completed", "{s}");
            break;
        }
        assert!(Instant::now() < deadline, "{name} not provisioned: {s}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sqlx::query_scalar("SELECT tenant FROM tenants WHERE company_name = $1")
        .bind(name)
        .fetch_one(&p.app.db.pool)
        .await
        .unwrap()
}

async fn wait_until_gone(p: &Provisioned, tenant: TenantId) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>("SELECT count(*) FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .fetch_one(&p.app.db.pool)
        .await
        .unwrap()
        > 0
    {
        assert!(Instant::now() < deadline, "{tenant} not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_that_changes_a_row_writes_an_audit_row() {
    let p = provisioned_with(Default::default(), Some(STRIPE_SECRET)).await;
    let mut w = Walk::new(&p).await;
    let app = &p.app;
    let mgmt = &p.mgmt;
    let key = mgmt.key.clone();
    let receiver = psa_testing::WebhookReceiver::start().await;

    // The API, by the management tenant's admin.
    api_directory(&mut w, &key).await;
    api_users_and_credentials(&mut w, &key).await;
    api_webhooks(&mut w, &key, &receiver.url()).await;
    api_tenants(&mut w, &key).await;
    let provider = psa_testing::OidcProvider::start(
        json!([{"client_id": "psa", "client_secret": "walk-secret",
                "redirect_uris": [format!("{}/console/sso/callback", app.base)]}]),
        json!({}),
        psa_testing::OidcProvider::new_key("walk"),
    )
    .await;
    api_sso(&mut w, &key, &provider.issuer).await;
    api_plans(&mut w, &key).await;

    // The console, by the same admin.
    let session = cookie(&sign_in(app, mgmt, &mgmt.admin_password).await);
    w.check(("POST", "/console/sign-in"), true).await;
    choose_organisation(&mut w).await;
    let csrf = csrf_in(&text(app, "/console/companies/new", Some(&session)).await);
    console_directory(&mut w, &session, &csrf).await;
    console_users_and_links(&mut w, &session, &csrf).await;
    console_security(&mut w, &session, &csrf).await;
    console_passkeys(&mut w, &session, &csrf).await;
    console_sso(&mut w, &session, &csrf, &provider.issuer).await;
    console_webhooks(&mut w, &session, &csrf, &receiver.url()).await;
    console_tenants(&mut w, &session, &csrf).await;
    w.form(
        "/console/sign-out",
        "/console/sign-out",
        &session,
        &[("csrf", &csrf)],
        StatusCode::SEE_OTHER,
    )
    .await;
    // Anything still on its way after the last step is looked at too.
    tokio::time::sleep(Duration::from_secs(1)).await;
    w.settle("after the walk", false).await;

    assert!(
        w.unaudited.is_empty(),
        "changes without an audit row:\n{}",
        w.unaudited.join("\n")
    );
    assert!(
        w.idle.is_empty(),
        "steps that changed nothing: {:?}",
        w.idle
    );
    // Every route was walked: the API's from its document, the console's from its source.
    let (_, doc) = psa_api::api_routes();
    let doc = serde_json::to_value(&doc).unwrap();
    let mut routes: BTreeSet<(String, String)> = super::ops::documented(&doc)
        .into_iter()
        .filter(|(m, _)| m != "GET")
        .collect();
    routes.extend(hand_routed());
    assert!(
        routes.len() > 50,
        "the route tables were not read: {routes:?}"
    );
    let missing: Vec<_> = routes.difference(&w.covered).collect();
    assert!(
        missing.is_empty(),
        "routes the walk does not call: {missing:?}"
    );
    let stale: Vec<_> = w.covered.difference(&routes).collect();
    assert!(
        stale.is_empty(),
        "steps for routes that no longer exist: {stale:?}"
    );
}

/// A password that matches in two organisations: the console offers the choice, and the choice
/// opens the session.
async fn choose_organisation(w: &mut Walk<'_>) {
    let app = &w.p.app;
    let other = app.tenant("Elsewhere").await;
    let (email, password) = (&w.p.mgmt.admin_email, &w.p.mgmt.admin_password);
    // The management admin's email, with the same password, in a second organisation.
    super::sign_in::member(app, other.tenant, email, password).await;
    w.settle("the fixture", false).await;
    let r = client()
        .post(format!("{}/console/sign-in", app.base))
        .form(&[("tenant", ""), ("email", email), ("password", password)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    w.check(("POST", "/console/sign-in"), false).await;
    let html = r.text().await.unwrap();
    let choice = hidden_in(&html, "choice");
    let r = client()
        .post(format!("{}/console/sign-in/choose", app.base))
        .form(&[("choice", choice), ("tenant", other.tenant.to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    w.check(("POST", "/console/sign-in/choose"), true).await;
}

/// The code an authenticator app with `secret` (base32) shows `offset` steps from now.
fn totp(secret: &str, offset: u64) -> String {
    let bytes = psa_models::mfa::decoded(secret).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    psa_models::mfa::code_at(&bytes, now + offset * psa_models::mfa::STEP).unwrap()
}

/// A user sets up an authenticator app, signs in with it, ends a session, removes it; an admin
/// resets it; the tenant's policy goes on and off.
async fn api_second_factor(w: &mut Walk<'_>, key: &str, email: &str, password: &str, user: UserId) {
    let app = &w.p.app;
    let login = json!({"email": email, "password": password});
    let (status, first) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(login.clone()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    w.check(("POST", "/api/v1/auth/login"), true).await;
    let first = first["token"].as_str().unwrap().to_owned();
    let secret = w
        .api(
            Method::POST,
            "/api/v1/auth/mfa/totp",
            "/api/v1/auth/mfa/totp",
            &first,
            None,
            StatusCode::CREATED,
        )
        .await["secret"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::POST,
        "/api/v1/auth/mfa/totp/confirm",
        "/api/v1/auth/mfa/totp/confirm",
        &first,
        Some(json!({"code": totp(&secret, 0)})),
        StatusCode::OK,
    )
    .await;
    // The password now opens nothing: its challenge is a sign-in half done.
    let (status, half) = app
        .call(Method::POST, "/api/v1/auth/login", None, Some(login))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{half}");
    w.check(("POST", "/api/v1/auth/login"), false).await;
    let second = w
        .api(
            Method::POST,
            "/api/v1/auth/mfa",
            "/api/v1/auth/mfa",
            "",
            Some(json!({"mfa_token": half["mfa_token"], "code": totp(&secret, 1)})),
            StatusCode::OK,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, list) = app
        .call(Method::GET, "/api/v1/auth/sessions", Some(&second), None)
        .await;
    let other = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["current"] == false)
        .unwrap()["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::DELETE,
        "/api/v1/auth/sessions/{id}",
        &format!("/api/v1/auth/sessions/{other}"),
        &second,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    w.api(
        Method::DELETE,
        "/api/v1/auth/mfa/totp",
        "/api/v1/auth/mfa/totp",
        &second,
        Some(json!({"password": password})),
        StatusCode::NO_CONTENT,
    )
    .await;
    api_passkeys(w, &second, password, user).await;
    w.api(
        Method::POST,
        "/api/v1/users/{id}/reset-mfa",
        &format!("/api/v1/users/{user}/reset-mfa"),
        key,
        None,
        StatusCode::OK,
    )
    .await;
    for on in [true, false] {
        w.api(
            Method::PATCH,
            "/api/v1/security-policy",
            "/api/v1/security-policy",
            key,
            Some(json!({"mfa_required": on})),
            StatusCode::OK,
        )
        .await;
    }
}

/// Passkeys over the API: each route walked (the ceremonies keep only their challenge, and a
/// refused answer nothing), and a passkey removed by its holder (audited).
async fn api_passkeys(w: &mut Walk<'_>, session: &str, password: &str, user: UserId) {
    let fake = json!({"id": "AAAA", "rawId": "AAAA", "type": "public-key",
                      "response": {"attestationObject": "AAAA", "clientDataJSON": "AAAA"},
                      "extensions": {}});
    let begun = w
        .unwritten(
            Method::POST,
            "/api/v1/auth/passkeys/options",
            "/api/v1/auth/passkeys/options",
            session,
            Some(json!({"name": "Laptop"})),
            StatusCode::OK,
        )
        .await;
    w.unwritten(
        Method::POST,
        "/api/v1/auth/passkeys",
        "/api/v1/auth/passkeys",
        session,
        Some(json!({"registration_token": begun["registration_token"], "credential": fake})),
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    w.unwritten(
        Method::POST,
        "/api/v1/auth/mfa/passkey",
        "/api/v1/auth/mfa/passkey",
        "",
        Some(json!({"mfa_token": "psa_mfa_unknown"})),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let begun = w
        .unwritten(
            Method::POST,
            "/api/v1/auth/passkey/options",
            "/api/v1/auth/passkey/options",
            "",
            None,
            StatusCode::OK,
        )
        .await;
    w.unwritten(
        Method::POST,
        "/api/v1/auth/passkey",
        "/api/v1/auth/passkey",
        "",
        Some(
            json!({"passkey_token": begun["passkey_token"], "credential": {
            "id": "AAAA", "rawId": "AAAA", "type": "public-key",
            "response": {"authenticatorData": "AAAA", "clientDataJSON": "AAAA",
                         "signature": "AAAA", "userHandle": null},
            "extensions": {}}}),
        ),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    let tenant = w.p.mgmt.tenant;
    let id = w.passkey_of(tenant, user).await;
    w.api(
        Method::DELETE,
        "/api/v1/auth/passkeys/{id}",
        &format!("/api/v1/auth/passkeys/{id}"),
        session,
        Some(json!({"password": password})),
        StatusCode::NO_CONTENT,
    )
    .await;
}

/// The console's passkey forms: each walked (the options keep only a challenge, refusals
/// nothing), and a passkey removed (audited).
async fn console_passkeys(w: &mut Walk<'_>, session: &str, csrf: &str) {
    let app = &w.p.app;
    w.form_unwritten(
        "/console/account/passkeys/options",
        "/console/account/passkeys/options",
        session,
        &[("csrf", csrf), ("name", "Laptop")],
        StatusCode::OK,
    )
    .await;
    w.form_unwritten(
        "/console/account/passkeys",
        "/console/account/passkeys",
        session,
        &[
            ("csrf", csrf),
            ("token", "psa_passkey_unknown"),
            ("name", "Laptop"),
            ("credential", ""),
        ],
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let (tenant, user) = (w.p.mgmt.tenant, w.p.mgmt.admin);
    let id = w.passkey_of(tenant, user).await.to_string();
    let password = w.p.mgmt.admin_password.clone();
    w.form(
        "/console/account/passkeys/remove",
        "/console/account/passkeys/remove",
        session,
        &[("csrf", csrf), ("passkey", &id), ("password", &password)],
        StatusCode::OK,
    )
    .await;
    // The sign-in's: a passkey alone, and as the second factor.
    let r = client()
        .post(format!("{}/console/sign-in/passkey/options", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    w.check(("POST", "/console/sign-in/passkey/options"), false)
        .await;
    let token = r.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = client()
        .post(format!("{}/console/sign-in/passkey", app.base))
        .form(&[("token", token.as_str()), ("credential", "{}")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    w.check(("POST", "/console/sign-in/passkey"), false).await;
    let r = client()
        .post(format!("{}/console/sign-in/code/passkey-options", app.base))
        .form(&[("mfa_token", "psa_mfa_unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    w.check(("POST", "/console/sign-in/code/passkey-options"), false)
        .await;
}

/// Plans over the API: one made and changed, and a provisioned tenant put on it.
async fn api_plans(w: &mut Walk<'_>, key: &str) {
    w.api(
        Method::POST,
        "/api/v1/plans",
        "/api/v1/plans",
        key,
        Some(
            json!({"code": "walk", "name": "Walk", "seat_limit": 50, "trial_days": 14,
                    "billing_price_ids": ["price_walk"]}),
        ),
        StatusCode::CREATED,
    )
    .await;
    w.api(
        Method::PATCH,
        "/api/v1/plans/{code}",
        "/api/v1/plans/walk",
        key,
        Some(json!({"name": "Walk plan"})),
        StatusCode::OK,
    )
    .await;
    let tenant = provision(w, "Plan Walk").await;
    w.api(
        Method::POST,
        "/api/v1/tenants/{id}/subscription",
        &format!("/api/v1/tenants/{tenant}/subscription"),
        key,
        Some(json!({"plan": "walk", "seats": 10})),
        StatusCode::OK,
    )
    .await;
    // The console's new tenant (on the walk plan) is trialing: the API extends its trial below.
    let trialing = provision_on(w, "Trial Walk", Some("walk")).await;
    w.api(
        Method::POST,
        "/api/v1/tenants/{id}/trial/extend",
        &format!("/api/v1/tenants/{trialing}/trial/extend"),
        key,
        Some(json!({"days": 7})),
        StatusCode::OK,
    )
    .await;
    // A support session into the Plan Walk tenant, opened and ended.
    let opened = w
        .api(
            Method::POST,
            "/api/v1/tenants/{id}/support-sessions",
            &format!("/api/v1/tenants/{tenant}/support-sessions"),
            key,
            Some(json!({"reason": "walk", "minutes": 5})),
            StatusCode::CREATED,
        )
        .await;
    let sid = opened["support_session"]["support_session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::POST,
        "/api/v1/tenants/{id}/support-sessions/{session_id}/end",
        &format!("/api/v1/tenants/{tenant}/support-sessions/{sid}/end"),
        key,
        None,
        StatusCode::OK,
    )
    .await;
    // The billing system's word on the Plan Walk tenant: signed, applied, audited.
    let body = serde_json::to_vec(&json!({
        "id": "evt_walk", "object": "event", "type": "customer.subscription.updated",
        "created": chrono::Utc::now().timestamp(),
        "data": {"object": {"id": "sub_walk", "object": "subscription", "customer": "cus_walk",
            "status": "active", "metadata": {"tenant_id": tenant.to_string()},
            "items": {"data": [{"quantity": 20, "price": {"id": "price_walk"}}]}}}
    }))
    .unwrap();
    let t = chrono::Utc::now().timestamp();
    let mut mac =
        <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(STRIPE_SECRET.as_bytes()).unwrap();
    hmac::Mac::update(&mut mac, format!("{t}.").as_bytes());
    hmac::Mac::update(&mut mac, &body);
    let signature = hex::encode(hmac::Mac::finalize(mac).into_bytes());
    let r =
        w.p.app
            .http
            .post(format!("{}/api/v1/billing/stripe/webhook", w.p.app.base))
            .header("Stripe-Signature", format!("t={t},v1={signature}"))
            .body(body)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    w.check(("POST", "/api/v1/billing/stripe/webhook"), true)
        .await;
}

/// The secret the walk's server checks Stripe's signatures with.
const STRIPE_SECRET: &str = "whsec_walk";

/// Single sign-on over the API: the connection set, tested and removed; a domain added,
/// verified through the DNS server and given up; a sign-in started (it keeps only its state).
async fn api_sso(w: &mut Walk<'_>, key: &str, issuer: &str) {
    w.api(
        Method::PUT,
        "/api/v1/sso/connection",
        "/api/v1/sso/connection",
        key,
        Some(json!({"issuer": issuer, "client_id": "psa", "client_secret": "walk-secret"})),
        StatusCode::OK,
    )
    .await;
    w.api(
        Method::POST,
        "/api/v1/sso/connection/test",
        "/api/v1/sso/connection/test",
        key,
        None,
        StatusCode::OK,
    )
    .await;
    let d = w
        .api(
            Method::POST,
            "/api/v1/sso/domains",
            "/api/v1/sso/domains",
            key,
            Some(json!({"domain": "walk.example"})),
            StatusCode::CREATED,
        )
        .await;
    let dns = psa_testing::DnsServer::start(
        w.p.dns,
        &[("walk.example", d["txt_record"].as_str().unwrap())],
    )
    .await;
    w.api(
        Method::POST,
        "/api/v1/sso/domains/{domain}/verify",
        "/api/v1/sso/domains/walk.example/verify",
        key,
        None,
        StatusCode::OK,
    )
    .await;
    drop(dns);
    w.unwritten(
        Method::POST,
        "/api/v1/auth/sso/start",
        "/api/v1/auth/sso/start",
        "",
        Some(json!({"email": "someone@walk.example"})),
        StatusCode::OK,
    )
    .await;
    w.api(
        Method::DELETE,
        "/api/v1/sso/domains/{domain}",
        "/api/v1/sso/domains/walk.example",
        key,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    w.api(
        Method::DELETE,
        "/api/v1/sso/connection",
        "/api/v1/sso/connection",
        key,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
}

/// The same from the console's single sign-on page.
async fn console_sso(w: &mut Walk<'_>, session: &str, csrf: &str, issuer: &str) {
    w.form(
        "/console/settings/sso",
        "/console/settings/sso",
        session,
        &[
            ("csrf", csrf),
            ("issuer", issuer),
            ("client_id", "psa"),
            ("client_secret", "walk-secret"),
            ("scopes", "openid email profile"),
            ("jit_role", "Technician"),
            ("enabled", "on"),
        ],
        StatusCode::OK,
    )
    .await;
    w.form(
        "/console/settings/sso/test",
        "/console/settings/sso/test",
        session,
        &[("csrf", csrf)],
        StatusCode::OK,
    )
    .await;
    w.form(
        "/console/settings/sso/domains",
        "/console/settings/sso/domains",
        session,
        &[("csrf", csrf), ("domain", "console.walk.example")],
        StatusCode::OK,
    )
    .await;
    let token: String =
        sqlx::query_scalar("SELECT token FROM sso_domains WHERE domain = 'console.walk.example'")
            .fetch_one(&w.p.app.db.pool)
            .await
            .unwrap();
    let _dns = psa_testing::DnsServer::start(
        w.p.dns,
        &[("console.walk.example", &format!("psa-verification={token}"))],
    )
    .await;
    w.form(
        "/console/settings/sso/domains/verify",
        "/console/settings/sso/domains/verify",
        session,
        &[("csrf", csrf), ("domain", "console.walk.example")],
        StatusCode::OK,
    )
    .await;
    w.form(
        "/console/settings/sso/domains/remove",
        "/console/settings/sso/domains/remove",
        session,
        &[("csrf", csrf), ("domain", "console.walk.example")],
        StatusCode::OK,
    )
    .await;
    w.form(
        "/console/settings/sso/remove",
        "/console/settings/sso/remove",
        session,
        &[("csrf", csrf)],
        StatusCode::OK,
    )
    .await;
}

/// The console's own pages: an authenticator app set up, a sign-in with its code, removed; the
/// sessions page; the users page's policy.
async fn console_security(w: &mut Walk<'_>, session: &str, csrf: &str) {
    let app = &w.p.app;
    let page = w
        .form(
            "/console/account/second-factor/start",
            "/console/account/second-factor/start",
            session,
            &[("csrf", csrf)],
            StatusCode::OK,
        )
        .await
        .text()
        .await
        .unwrap();
    let secret = totp_key_in(&page);
    w.form(
        "/console/account/second-factor/confirm",
        "/console/account/second-factor/confirm",
        session,
        &[("csrf", csrf), ("code", &totp(&secret, 0))],
        StatusCode::OK,
    )
    .await;
    // Signing in again asks for the code.
    let mgmt = &w.p.mgmt;
    let r = client()
        .post(format!("{}/console/sign-in", app.base))
        .form(&[
            ("tenant", mgmt.tenant.to_string()),
            ("email", mgmt.admin_email.clone()),
            ("password", mgmt.admin_password.clone()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    w.check(("POST", "/console/sign-in"), false).await;
    let html = r.text().await.unwrap();
    let token = hidden_in(&html, "mfa_token");
    let r = client()
        .post(format!("{}/console/sign-in/code", app.base))
        .form(&[("mfa_token", token), ("code", totp(&secret, 1))])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    w.check(("POST", "/console/sign-in/code"), true).await;
    w.form(
        "/console/account/second-factor/remove",
        "/console/account/second-factor/remove",
        session,
        &[("csrf", csrf), ("password", &mgmt.admin_password)],
        StatusCode::OK,
    )
    .await;
    // The code sign-in's session, ended from the sessions page; then every other one.
    let other: uuid::Uuid = sqlx::query_scalar(
        "SELECT session_id FROM sessions WHERE user_id = $1 AND revoked_at IS NULL \
         ORDER BY created_at DESC LIMIT 1",
    )
    .bind(mgmt.admin)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    w.form(
        "/console/account/sessions/{id}/end",
        &format!("/console/account/sessions/{other}/end"),
        session,
        &[("csrf", csrf)],
        StatusCode::SEE_OTHER,
    )
    .await;
    let (status, _) = app
        .call(
            Method::POST,
            "/api/v1/auth/login",
            None,
            Some(
                json!({"tenant": mgmt.tenant.to_string(), "email": mgmt.admin_email,
                        "password": mgmt.admin_password}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    w.settle("a second sign-in", false).await;
    w.form(
        "/console/account/sessions/end-others",
        "/console/account/sessions/end-others",
        session,
        &[("csrf", csrf)],
        StatusCode::OK,
    )
    .await;
    for on in [Some("yes"), None] {
        let mut fields = vec![("csrf", csrf)];
        if let Some(v) = on {
            fields.push(("mfa_required", v));
        }
        w.form(
            "/console/users/security-policy",
            "/console/users/security-policy",
            session,
            &fields,
            StatusCode::SEE_OTHER,
        )
        .await;
    }
    for on in [None, Some("yes")] {
        let mut fields = vec![("csrf", csrf)];
        if let Some(v) = on {
            fields.push(("allowed", v));
        }
        w.form(
            "/console/support-access",
            "/console/support-access",
            session,
            &fields,
            StatusCode::OK,
        )
        .await;
    }
}

async fn api_directory(w: &mut Walk<'_>, key: &str) {
    let company = w
        .api(
            Method::POST,
            "/api/v1/companies",
            "/api/v1/companies",
            key,
            Some(json!({"company_name": "Walkers Ltd"})),
            StatusCode::CREATED,
        )
        .await["company_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::PATCH,
        "/api/v1/companies/{company_id}",
        &format!("/api/v1/companies/{company}"),
        key,
        Some(json!({"notes": "met at the fair"})),
        StatusCode::OK,
    )
    .await;
    let contact = w
        .api(
            Method::POST,
            "/api/v1/contacts",
            "/api/v1/contacts",
            key,
            Some(
                json!({"full_name": "Wanda Walker", "email": "wanda@walkers.example",
                        "company_id": company}),
            ),
            StatusCode::CREATED,
        )
        .await["contact_name_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::PATCH,
        "/api/v1/contacts/{contact_name_id}",
        &format!("/api/v1/contacts/{contact}"),
        key,
        Some(json!({"role": "Buyer"})),
        StatusCode::OK,
    )
    .await;
    let mapping = w
        .api(
            Method::POST,
            "/api/v1/tags",
            "/api/v1/tags",
            key,
            Some(json!({"tag_text": "Prospect", "tagged_id": company, "tagged_type": "company"})),
            StatusCode::CREATED,
        )
        .await["mapping_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::DELETE,
        "/api/v1/tags/{mapping_id}",
        &format!("/api/v1/tags/{mapping}"),
        key,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let spare = w
        .api(
            Method::POST,
            "/api/v1/companies",
            "/api/v1/companies",
            key,
            Some(json!({"company_name": "Short Lived"})),
            StatusCode::CREATED,
        )
        .await["company_id"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::DELETE,
        "/api/v1/companies/{company_id}",
        &format!("/api/v1/companies/{spare}"),
        key,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
}

async fn api_users_and_credentials(w: &mut Walk<'_>, key: &str) {
    let app = &w.p.app;
    let tenant = w.p.mgmt.tenant;
    let email = "walker@mgmt.example";
    w.api(
        Method::POST,
        "/api/v1/users",
        "/api/v1/users",
        key,
        Some(
            json!({"first_name": "Wal", "last_name": "Ker", "email": email,
                    "role": "Technician"}),
        ),
        StatusCode::CREATED,
    )
    .await;
    let user = user_id(app, tenant, email).await;
    let users = format!("/api/v1/users/{user}");
    w.api(
        Method::POST,
        "/api/v1/users/{id}/resend-invite",
        &format!("{users}/resend-invite"),
        key,
        None,
        StatusCode::OK,
    )
    .await;
    let token = link(app, tenant, user, Purpose::Invitation).await;
    let password = "walking through the audit";
    let session = w
        .api(
            Method::POST,
            "/api/v1/auth/invitations/accept",
            "/api/v1/auth/invitations/accept",
            "",
            Some(json!({"token": token, "password": password})),
            StatusCode::OK,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::PATCH,
        "/api/v1/users/{id}",
        &users,
        key,
        Some(json!({"role": "Finance"})),
        StatusCode::OK,
    )
    .await;
    let new_password = "a second walk through";
    w.api(
        Method::POST,
        "/api/v1/auth/password",
        "/api/v1/auth/password",
        &session,
        Some(json!({"current_password": password, "new_password": new_password})),
        StatusCode::NO_CONTENT,
    )
    .await;
    let login = json!({"tenant_id": tenant, "email": email, "password": new_password});
    let session = w
        .api(
            Method::POST,
            "/api/v1/auth/login",
            "/api/v1/auth/login",
            "",
            Some(login.clone()),
            StatusCode::OK,
        )
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    w.api(
        Method::POST,
        "/api/v1/auth/logout",
        "/api/v1/auth/logout",
        &session,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    let (_, again) = app
        .call(Method::POST, "/api/v1/auth/login", None, Some(login))
        .await;
    w.check(("POST", "/api/v1/auth/login"), true).await;
    w.api(
        Method::POST,
        "/api/v1/auth/logout-all",
        "/api/v1/auth/logout-all",
        again["token"].as_str().unwrap(),
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    w.api(
        Method::POST,
        "/api/v1/auth/password-reset",
        "/api/v1/auth/password-reset",
        "",
        Some(json!({"tenant_id": tenant, "email": email})),
        StatusCode::ACCEPTED,
    )
    .await;
    let token = link(app, tenant, user, Purpose::PasswordReset).await;
    w.api(
        Method::POST,
        "/api/v1/auth/password-reset/accept",
        "/api/v1/auth/password-reset/accept",
        "",
        Some(json!({"token": token, "password": "a third walk, after a reset"})),
        StatusCode::OK,
    )
    .await;
    api_second_factor(w, key, email, "a third walk, after a reset", user).await;

    // Keys: one revoked by id, the rest of the user's at once.
    app.user_with_role(tenant, "Dispatcher").await;
    let dispatcher = user_id(app, tenant, "dispatcher@staff.example").await;
    let key_id: uuid::Uuid =
        sqlx::query_scalar("SELECT api_key_id FROM api_keys WHERE tenant = $1 AND user_id = $2")
            .bind(tenant)
            .bind(dispatcher)
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    w.api(
        Method::DELETE,
        "/api/v1/api-keys/{id}",
        &format!("/api/v1/api-keys/{key_id}"),
        key,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
    app.user_with_role(tenant, "Project Manager").await;
    let manager = user_id(app, tenant, "project-manager@staff.example").await;
    w.api(
        Method::POST,
        "/api/v1/users/{id}/revoke-api-keys",
        &format!("/api/v1/users/{manager}/revoke-api-keys"),
        key,
        None,
        StatusCode::OK,
    )
    .await;
    w.api(
        Method::POST,
        "/api/v1/users/{id}/deactivate",
        &format!("{users}/deactivate"),
        key,
        None,
        StatusCode::OK,
    )
    .await;
    w.api(
        Method::POST,
        "/api/v1/users/{id}/reactivate",
        &format!("{users}/reactivate"),
        key,
        None,
        StatusCode::OK,
    )
    .await;
}

async fn api_webhooks(w: &mut Walk<'_>, key: &str, url: &str) {
    let endpoint = w
        .api(
            Method::POST,
            "/api/v1/webhook-endpoints",
            "/api/v1/webhook-endpoints",
            key,
            Some(json!({"url": url})),
            StatusCode::CREATED,
        )
        .await["endpoint_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("/api/v1/webhook-endpoints/{endpoint}");
    w.api(
        Method::PATCH,
        "/api/v1/webhook-endpoints/{id}",
        &path,
        key,
        Some(json!({"description": "billing"})),
        StatusCode::OK,
    )
    .await;
    w.api(
        Method::POST,
        "/api/v1/webhook-endpoints/{id}/rotate-secret",
        &format!("{path}/rotate-secret"),
        key,
        None,
        StatusCode::OK,
    )
    .await;
    w.api(
        Method::POST,
        "/api/v1/webhook-endpoints/{id}/test",
        &format!("{path}/test"),
        key,
        None,
        StatusCode::ACCEPTED,
    )
    .await;
    let delivery: uuid::Uuid = sqlx::query_scalar(
        "SELECT delivery_id FROM webhook_deliveries WHERE endpoint_id = $1::uuid LIMIT 1",
    )
    .bind(&endpoint)
    .fetch_one(&w.p.app.db.pool)
    .await
    .unwrap();
    w.api(
        Method::POST,
        "/api/v1/webhook-endpoints/{id}/deliveries/{delivery_id}/retry",
        &format!("{path}/deliveries/{delivery}/retry"),
        key,
        None,
        StatusCode::ACCEPTED,
    )
    .await;
    w.api(
        Method::DELETE,
        "/api/v1/webhook-endpoints/{id}",
        &path,
        key,
        None,
        StatusCode::NO_CONTENT,
    )
    .await;
}

async fn api_tenants(w: &mut Walk<'_>, key: &str) {
    let tenant = provision(w, "Walk Api").await;
    let path = format!("/api/v1/tenants/{tenant}");
    w.api(
        Method::PATCH,
        "/api/v1/tenants/{id}",
        &path,
        key,
        Some(json!({"slug": "walk-api-renamed"})),
        StatusCode::OK,
    )
    .await;
    let steps: [(&str, Option<Value>, StatusCode); 6] = [
        ("resend-invite", None, StatusCode::OK),
        ("suspend", Some(json!({"reason": "unpaid"})), StatusCode::OK),
        ("reactivate", None, StatusCode::OK),
        ("export", None, StatusCode::CREATED),
        (
            "cancel",
            Some(json!({"reason": "contract ended", "grace_seconds": 3600})),
            StatusCode::OK,
        ),
        ("restore", None, StatusCode::OK),
    ];
    let mut export = Value::Null;
    for (step, body, expected) in steps {
        let answer = w
            .api(
                Method::POST,
                &format!("/api/v1/tenants/{{id}}/{step}"),
                &format!("{path}/{step}"),
                key,
                body,
                expected,
            )
            .await;
        if step == "export" {
            export = answer;
        }
    }
    let archive =
        w.p.app
            .http
            .get(format!(
                "{}{path}/exports/{}/archive",
                w.p.app.base,
                export["export_id"].as_str().unwrap()
            ))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    w.api(
        Method::POST,
        "/api/v1/customers/repairs",
        "/api/v1/customers/repairs",
        key,
        Some(json!({"tenant_id": tenant, "dry_run": true})),
        StatusCode::ACCEPTED,
    )
    .await;
    let (status, body) =
        w.p.app
            .call(
                Method::POST,
                &format!("{path}/cancel"),
                Some(key),
                Some(json!({"reason": "for good"})),
            )
            .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    w.check(("POST", "/api/v1/tenants/{id}/cancel"), true).await;
    w.api(
        Method::DELETE,
        "/api/v1/tenants/{id}",
        &path,
        key,
        None,
        StatusCode::ACCEPTED,
    )
    .await;
    wait_until_gone(w.p, tenant).await;
    // The deleted tenant restored from its export.
    let r =
        w.p.app
            .http
            .post(format!("{}/api/v1/tenants/imports", w.p.app.base))
            .bearer_auth(key)
            .body(archive.to_vec())
            .send()
            .await
            .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    w.check(("POST", "/api/v1/tenants/imports"), true).await;
}

async fn console_directory(w: &mut Walk<'_>, session: &str, csrf: &str) {
    let r = w
        .form(
            "/console/companies/new",
            "/console/companies/new",
            session,
            &[
                ("csrf", csrf),
                ("company_name", "Console Walkers"),
                ("client_type", "company"),
            ],
            StatusCode::SEE_OTHER,
        )
        .await;
    let page = location(&r).split('?').next().unwrap().to_owned();
    w.form(
        "/console/companies/{id}",
        &page,
        session,
        &[
            ("csrf", csrf),
            ("company_name", "Console Walkers Ltd"),
            ("client_type", "company"),
        ],
        StatusCode::SEE_OTHER,
    )
    .await;
    w.form(
        "/console/companies/{id}/tags",
        &format!("{page}/tags"),
        session,
        &[("csrf", csrf), ("tag_text", "VIP")],
        StatusCode::SEE_OTHER,
    )
    .await;
    let company = page.rsplit('/').next().unwrap().to_owned();
    let mapping: uuid::Uuid = sqlx::query_scalar(
        "SELECT mapping_id FROM tag_mappings WHERE tagged_id = $1::uuid LIMIT 1",
    )
    .bind(&company)
    .fetch_one(&w.p.app.db.pool)
    .await
    .unwrap();
    w.form(
        "/console/tags/{mapping}/detach",
        &format!("/console/tags/{mapping}/detach"),
        session,
        &[("csrf", csrf)],
        StatusCode::SEE_OTHER,
    )
    .await;
    let r = w
        .form(
            "/console/contacts/new",
            "/console/contacts/new",
            session,
            &[
                ("csrf", csrf),
                ("full_name", "Connie Walker"),
                ("email", "connie@walkers.example"),
                ("company_id", &company),
            ],
            StatusCode::SEE_OTHER,
        )
        .await;
    let contact = location(&r).split('?').next().unwrap().to_owned();
    w.form(
        "/console/contacts/{id}",
        &contact,
        session,
        &[
            ("csrf", csrf),
            ("full_name", "Connie Walker"),
            ("email", "connie@walkers.example"),
            ("role", "Owner"),
        ],
        StatusCode::SEE_OTHER,
    )
    .await;
    w.form(
        "/console/contacts/{id}/tags",
        &format!("{contact}/tags"),
        session,
        &[("csrf", csrf), ("tag_text", "Decision maker")],
        StatusCode::SEE_OTHER,
    )
    .await;
    let r = w
        .form(
            "/console/companies/new",
            "/console/companies/new",
            session,
            &[
                ("csrf", csrf),
                ("company_name", "Gone Soon"),
                ("client_type", "company"),
            ],
            StatusCode::SEE_OTHER,
        )
        .await;
    let gone = location(&r).split('?').next().unwrap().to_owned();
    w.form(
        "/console/companies/{id}/delete",
        &format!("{gone}/delete"),
        session,
        &[("csrf", csrf)],
        StatusCode::SEE_OTHER,
    )
    .await;
}

async fn console_users_and_links(w: &mut Walk<'_>, session: &str, csrf: &str) {
    let app = &w.p.app;
    let tenant = w.p.mgmt.tenant;
    let email = "console.walker@mgmt.example";
    w.form(
        "/console/users",
        "/console/users",
        session,
        &[
            ("csrf", csrf),
            ("first_name", "Con"),
            ("last_name", "Sole"),
            ("email", email),
            ("role", "Technician"),
        ],
        StatusCode::SEE_OTHER,
    )
    .await;
    let user = user_id(app, tenant, email).await;
    let page = format!("/console/users/{user}");
    w.form(
        "/console/users/{id}/role",
        &format!("{page}/role"),
        session,
        &[("csrf", csrf), ("role", "Finance")],
        StatusCode::SEE_OTHER,
    )
    .await;
    for change in [
        "resend",
        "revoke-keys",
        "reset-mfa",
        "deactivate",
        "reactivate",
    ] {
        w.form(
            "/console/users/{id}/{change}",
            &format!("{page}/{change}"),
            session,
            &[("csrf", csrf)],
            StatusCode::SEE_OTHER,
        )
        .await;
    }
    // The link pages: an invitation accepted, then a reset.
    let token = link(app, tenant, user, Purpose::Invitation).await;
    let password = "consoles walk too";
    let set = |token: String| {
        vec![
            ("token", token),
            ("password", password.to_owned()),
            ("password_confirm", password.to_owned()),
        ]
    };
    let page_of = |purpose: Purpose| format!("{}{}", app.base, purpose.page());
    let r = client()
        .post(page_of(Purpose::Invitation))
        .form(&set(token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    w.check(("POST", Purpose::Invitation.page()), true).await;
    // Asked for (before any link of this purpose: the cooldown would send nothing), then used.
    let r = client()
        .post(format!("{}/console/forgot-password", app.base))
        .form(&[("tenant", tenant.to_string()), ("email", email.to_owned())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    w.check(("POST", "/console/forgot-password"), true).await;
    let token = link(app, tenant, user, Purpose::PasswordReset).await;
    let r = client()
        .post(page_of(Purpose::PasswordReset))
        .form(&set(token))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    w.check(("POST", Purpose::PasswordReset.page()), true).await;

    // The admin's own password, changed and changed back.
    let admin = w.p.mgmt.admin_password.clone();
    for (current, new) in [
        (admin.as_str(), "the admin walks on"),
        ("the admin walks on", &admin),
    ] {
        w.form(
            "/console/account/password",
            "/console/account/password",
            session,
            &[
                ("csrf", csrf),
                ("current_password", current),
                ("new_password", new),
                ("new_password_confirm", new),
            ],
            StatusCode::OK,
        )
        .await;
    }
}

async fn console_webhooks(w: &mut Walk<'_>, session: &str, csrf: &str, url: &str) {
    w.form(
        "/console/webhooks",
        "/console/webhooks",
        session,
        &[("csrf", csrf), ("url", url), ("description", "console")],
        StatusCode::CREATED,
    )
    .await;
    let endpoint: uuid::Uuid = sqlx::query_scalar(
        "SELECT endpoint_id FROM webhook_endpoints WHERE description = 'console'",
    )
    .fetch_one(&w.p.app.db.pool)
    .await
    .unwrap();
    let page = format!("/console/webhooks/{endpoint}");
    w.form(
        "/console/webhooks/{id}/rotate",
        &format!("{page}/rotate"),
        session,
        &[("csrf", csrf)],
        StatusCode::OK,
    )
    .await;
    for change in ["test", "disable", "enable"] {
        w.form(
            "/console/webhooks/{id}/{change}",
            &format!("{page}/{change}"),
            session,
            &[("csrf", csrf)],
            StatusCode::SEE_OTHER,
        )
        .await;
    }
    let delivery: uuid::Uuid = sqlx::query_scalar(
        "SELECT delivery_id FROM webhook_deliveries WHERE endpoint_id = $1 LIMIT 1",
    )
    .bind(endpoint)
    .fetch_one(&w.p.app.db.pool)
    .await
    .unwrap();
    w.form(
        "/console/webhooks/{id}/deliveries/{delivery}/retry",
        &format!("{page}/deliveries/{delivery}/retry"),
        session,
        &[("csrf", csrf)],
        StatusCode::SEE_OTHER,
    )
    .await;
    w.form(
        "/console/webhooks/{id}/delete",
        &format!("{page}/delete"),
        session,
        &[("csrf", csrf), ("confirm", "yes")],
        StatusCode::SEE_OTHER,
    )
    .await;
}

async fn console_tenants(w: &mut Walk<'_>, session: &str, csrf: &str) {
    let r = w
        .form(
            "/console/tenants/new",
            "/console/tenants/new",
            session,
            &[
                ("csrf", csrf),
                ("key", &uuid::Uuid::new_v4().simple().to_string()),
                ("tenant_name", "Walk Console"),
                ("first_name", "Cy"),
                ("last_name", "Walk"),
                ("email", "cy@walk-console.example"),
                ("plan", "walk"),
            ],
            StatusCode::SEE_OTHER,
        )
        .await;
    let workflow = location(&r).rsplit('/').next().unwrap().to_owned();
    let tenant = finished(w.p, &workflow, "Walk Console").await;
    w.form(
        "/console/customers/repairs",
        "/console/customers/repairs",
        session,
        &[
            ("csrf", csrf),
            ("tenant_id", &tenant.to_string()),
            ("dry_run", "on"),
        ],
        StatusCode::SEE_OTHER,
    )
    .await;
    let page = format!("/console/tenants/{tenant}");
    w.form(
        "/console/tenants/{id}/slug",
        &format!("{page}/slug"),
        session,
        &[("csrf", csrf), ("slug", "walk-console-renamed")],
        StatusCode::OK,
    )
    .await;
    w.form(
        "/console/tenants/{id}/plan",
        &format!("{page}/plan"),
        session,
        &[("csrf", csrf), ("plan", "walk"), ("seats", "12")],
        StatusCode::OK,
    )
    .await;
    w.form(
        "/console/tenants/{id}/trial",
        &format!("{page}/trial"),
        session,
        &[("csrf", csrf), ("days", "5")],
        StatusCode::OK,
    )
    .await;
    // A support session from the tenant's page: ended from its banner, then another from the
    // tenant's page.
    let support = [("csrf", csrf), ("reason", "walk"), ("minutes", "5")];
    let r = w
        .form(
            "/console/tenants/{id}/support",
            &format!("{page}/support"),
            session,
            &support,
            StatusCode::SEE_OTHER,
        )
        .await;
    let token = r
        .headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("psa_support="))
        .and_then(|v| v.split(';').next())
        .expect("the support session's cookie")
        .to_owned();
    let inside = format!("{session}; psa_support={token}");
    let inside_csrf = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
        format!("psa-console-csrf:{token}").as_bytes(),
    ));
    w.form(
        "/console/support/end",
        "/console/support/end",
        &inside,
        &[("csrf", &inside_csrf)],
        StatusCode::SEE_OTHER,
    )
    .await;
    w.form(
        "/console/tenants/{id}/support",
        &format!("{page}/support"),
        session,
        &support,
        StatusCode::SEE_OTHER,
    )
    .await;
    let open: uuid::Uuid = sqlx::query_scalar(
        "SELECT support_session_id FROM support_sessions WHERE tenant = $1 AND ended_at IS NULL",
    )
    .bind(tenant)
    .fetch_one(&w.p.app.db.pool)
    .await
    .unwrap();
    w.form(
        "/console/tenants/{id}/support/{session}/end",
        &format!("{page}/support/{open}/end"),
        session,
        &[("csrf", csrf)],
        StatusCode::OK,
    )
    .await;
    w.form(
        "/console/tenants/{id}/resend-invite",
        &format!("{page}/resend-invite"),
        session,
        &[("csrf", csrf)],
        StatusCode::OK,
    )
    .await;
    let reason = [("csrf", csrf), ("reason", "unpaid")];
    let cancel = [
        ("csrf", csrf),
        ("reason", "contract ended"),
        ("grace_days", "7"),
        ("confirm", "yes"),
    ];
    let steps: [(&str, &[(&str, &str)]); 5] = [
        ("suspend", &reason),
        ("reactivate", &[("csrf", csrf)]),
        ("export", &[("csrf", csrf)]),
        ("cancel", &cancel),
        ("restore", &[("csrf", csrf)]),
    ];
    for (step, fields) in steps {
        w.form(
            &format!("/console/tenants/{{id}}/{step}"),
            &format!("{page}/{step}"),
            session,
            fields,
            StatusCode::OK,
        )
        .await;
    }
    let export: uuid::Uuid = sqlx::query_scalar(
        "SELECT export_id FROM tenant_exports WHERE tenant_id = $1 AND status = 'completed' \
           AND purpose = 'request' ORDER BY created_at DESC LIMIT 1",
    )
    .bind(tenant)
    .fetch_one(&w.p.app.db.pool)
    .await
    .unwrap();
    let download = client()
        .get(format!("{}{page}/exports/{export}/archive", w.p.app.base))
        .header(reqwest::header::COOKIE, session)
        .send()
        .await
        .unwrap();
    assert_eq!(
        download.status(),
        StatusCode::OK,
        "{:?}",
        download.headers()
    );
    let archive = download.bytes().await.unwrap();
    let r = post_form(&w.p.app, session, &format!("{page}/cancel"), &cancel).await;
    assert_eq!(r.status(), StatusCode::OK);
    w.check(("POST", "/console/tenants/{id}/cancel"), true)
        .await;
    w.form(
        "/console/tenants/{id}/delete",
        &format!("{page}/delete"),
        session,
        &[("csrf", csrf), ("confirm_name", "Walk Console")],
        StatusCode::OK,
    )
    .await;
    wait_until_gone(w.p, tenant).await;
    // The deleted tenant restored from its export, through the console's form.
    let r = post_multipart(
        &w.p.app,
        session,
        "/console/tenants/import",
        &[("csrf", csrf), ("mode", "same"), ("step", "import")],
        ("archive", "walk-console.tar.gz", &archive),
    )
    .await;
    assert_eq!(
        r.status(),
        StatusCode::CREATED,
        "{}",
        r.text().await.unwrap()
    );
    w.check(("POST", "/console/tenants/import"), true).await;
}
