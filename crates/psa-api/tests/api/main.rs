//! Black-box tests of the HTTP API: the real application on a loopback port, over real HTTP,
//! against a real PostgreSQL database of its own.

mod attention;
mod audit_walk;
mod auth;
mod bad_input;
mod billing;
mod companies;
mod console;
mod contacts;
mod imports;
mod isolation;
mod lifecycle;
mod limits;
mod mfa;
mod ops;
mod passkeys;
mod plans;
mod provisioning;
mod rbac;
mod search;
mod sign_in;
mod sso;
mod support;
mod tags;
mod user_admin;
mod webhooks;

use std::time::Duration;

use psa_models::{TenantId, UserId, seeds, tenants, users};
use psa_testing::TestDb;
use reqwest::{Method, StatusCode};
use secrecy::ExposeSecret;
use serde_json::Value;

/// The server configuration of the tests: a free port, generous limits.
pub fn test_config() -> psa_api::Config {
    psa_api::Config {
        dns: Default::default(),
        trusted_proxies: Default::default(),
        bind: "127.0.0.1:0".parse().unwrap(),
        metrics_bind: Some("127.0.0.1:0".parse().unwrap()),
        session_ttl: Duration::from_secs(3600),
        session_idle: Duration::from_secs(3600),
        limits: Default::default(),
        server: Default::default(),
        delivery: psa_models::invitations::Delivery::without_mail(
            url::Url::parse("http://psa.test").unwrap(),
        ),
        lifecycle: psa_api::LifecycleConfig {
            store: Some(
                psa_models::exports::ExportStore::local(
                    &std::env::temp_dir().join(format!("psa-exports-{}", uuid::Uuid::new_v4())),
                )
                .unwrap(),
            ),
            ..Default::default()
        },
        webhooks: psa_api::webhooks::WebhookConfig {
            key: Some(
                psa_workflows::secret::SecretKey::from_base64(
                    &psa_workflows::secret::SecretKey::generate_base64(),
                )
                .unwrap(),
            ),
            // The tests' receivers listen on loopback.
            policy: psa_models::webhooks::AddressPolicy {
                allow_private: true,
            },
        },
    }
}

/// Served at `http://localhost:PORT`, which is its public URL too: where a browser may use
/// passkeys (a relying party needs a domain; localhost is a secure context over http) and where
/// a sign-in provider sends people back. Returns the app, the management and Acme fixtures (the
/// platform of `lifecycle::platform_with`), and the URL the browser opens.
pub async fn on_localhost(
    mut config: psa_api::Config,
) -> (TestApp, TenantFixture, TenantFixture, String) {
    let port = psa_testing::unclaimed_port();
    config.bind = format!("127.0.0.1:{port}").parse().unwrap();
    let local = format!("http://localhost:{port}");
    config.delivery.public_url = url::Url::parse(&local).unwrap();
    let (app, mgmt, acme) = lifecycle::platform_with(config).await;
    (app, mgmt, acme, local)
}

/// The password the fixtures' admins have (set directly: fixtures skip the invitation).
pub const ADMIN_PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub db: TestDb,
    pub base: String,
    /// The API's `/metrics` listener.
    pub metrics_base: String,
    pub http: reqwest::Client,
}

/// A tenant with its admin user and an API key for the admin.
pub struct TenantFixture {
    pub tenant: TenantId,
    pub admin: UserId,
    pub admin_email: String,
    pub admin_password: String,
    pub key: String,
}

impl TestApp {
    pub async fn spawn() -> TestApp {
        Self::spawn_with(Default::default()).await
    }

    /// With these abuse limits.
    pub async fn spawn_with(limits: psa_api::limits::LimitsConfig) -> TestApp {
        let mut app = Self::unserved().await;
        let pool = app.db.pool.clone();
        app.serve(
            pool,
            psa_api::Config {
                dns: Default::default(),
                limits,
                ..test_config()
            },
            None,
        )
        .await;
        app
    }

    /// A test database and a client, no server yet (fixtures can be made first).
    pub async fn unserved() -> TestApp {
        TestApp {
            db: TestDb::new(&psa_models::MIGRATOR).await,
            base: String::new(),
            metrics_base: String::new(),
            http: reqwest::Client::new(),
        }
    }

    /// A pool logged in as the API is in production (docs/operations.md, "Database roles"): a
    /// login role that is a member of `psa_api` and `psa_app`, nothing more. Returns the pool
    /// and the role's name.
    pub async fn api_login_pool(&self) -> (sqlx::PgPool, String) {
        let role = format!("psa_api_login_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!(
            "CREATE ROLE {role} LOGIN PASSWORD 'login-role-pw' IN ROLE psa_app, psa_api"
        ))
        .execute(&self.db.pool)
        .await
        .unwrap();
        let mut url = url::Url::parse(&self.db.url()).unwrap();
        url.set_username(&role).unwrap();
        url.set_password(Some("login-role-pw")).unwrap();
        let pool = psa_models::db::connect(url.as_str(), 4).await.unwrap();
        (pool, role)
    }

    /// Starts the API on `pool` (this database's, or another role's) with `config`.
    pub async fn serve(
        &mut self,
        pool: sqlx::PgPool,
        config: psa_api::Config,
        provisioning: Option<psa_api::tenants::Provisioning>,
    ) {
        let server = psa_api::Application::build_with(config, pool, provisioning)
            .await
            .expect("bind");
        self.base = format!("http://127.0.0.1:{}", server.port());
        if let Some(m) = server.metrics_addr() {
            self.metrics_base = format!("http://{m}");
        }
        tokio::spawn(server.run_until(std::future::pending()));
    }

    pub async fn tenant(&self, name: &str) -> TenantFixture {
        let tenant = TenantId::new();
        let mut tx = self.db.pool.begin().await.unwrap();
        let email = format!("admin@{}.example", name.to_lowercase());
        tenants::create(
            &mut tx,
            tenant,
            tenants::NewTenant {
                name: name.into(),
                email: email.clone(),
                company_name: Some(format!("{name} MSP")),
                licensed_user_count: None,
                slug: None,
            },
            Default::default(),
        )
        .await
        .unwrap();
        seeds::run(&mut tx, tenant).await.unwrap();
        let admin = users::create_admin(&mut tx, tenant, "Ad", "Min", &email, Default::default())
            .await
            .unwrap();
        let hash =
            psa_models::password::hash(&secrecy::SecretString::from(ADMIN_PASSWORD.to_owned()))
                .await
                .unwrap();
        users::set_password_hash(&mut tx, tenant, admin.user.user_id, &hash)
            .await
            .unwrap();
        let key = psa_api::auth::create_api_key(&mut tx, tenant, admin.user.user_id, Some("tests"))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        TenantFixture {
            tenant,
            admin: admin.user.user_id,
            admin_email: email,
            admin_password: ADMIN_PASSWORD.to_owned(),
            key: key.key.expose_secret().to_owned(),
        }
    }

    /// A user of `tenant` with one msp role, and an API key for it.
    pub async fn user_with_role(&self, tenant: TenantId, role: &str) -> String {
        let mut tx = self.db.pool.begin().await.unwrap();
        let u = users::create(
            &mut tx,
            tenant,
            users::NewUser {
                first_name: role.into(),
                last_name: "User".into(),
                email: format!("{}@staff.example", role.to_lowercase().replace(' ', "-")),
                user_type: users::UserType::Internal,
                roles: vec![role.into()],
            },
            Default::default(),
        )
        .await
        .unwrap();
        let key = psa_api::auth::create_api_key(&mut tx, tenant, u.user.user_id, None)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        key.key.expose_secret().to_owned()
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        (status, json)
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }
}

/// Asserts an error response: status and code, and returns the body.
#[track_caller]
pub fn assert_error(resp: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(resp.0, status, "{}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "{}", resp.1);
    assert!(resp.1["error"]["message"].is_string());
}
