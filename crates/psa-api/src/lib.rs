//! The psa HTTP API: the reference's "server actions" for companies, contacts and tags as JSON
//! over HTTP, with bearer authentication, RBAC and database-enforced tenant isolation.
//!
//! Every request that touches tenant data runs in one transaction under the restricted role
//! with the caller's tenant set (see `psa_models::db`), checks the caller's permission with
//! `psa_models::users::has_permission`, and calls the same `psa_models` functions the workflow
//! calls: no business rule lives in a handler.

pub mod api_keys;
pub mod attention;
pub mod audit;
pub mod auth;
pub mod billing;
pub mod companies;
pub mod console;
pub mod contacts;
pub mod customers;
pub mod error;
pub mod extract;
pub mod imports;
pub mod lifecycle;
pub mod limits;
pub mod metrics;
pub mod mfa;
pub mod pages;
pub mod passkeys;
pub mod plans;
pub mod proxies;
pub mod search;
pub mod sso;
pub mod support;
pub mod tags;
pub mod tenants;
pub mod users;
pub mod webhooks;

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use sqlx::PgPool;
use tokio::net::TcpListener;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::error::ApiError;

/// The largest request body accepted (413 above it).
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    /// The operations layer, with the platform's settings and services (Temporal, connected
    /// on first use; exports; mail; webhook sealing).
    pub app: psa_app::App,
    /// The API's pool (the same as `app.pool`): the owner role, or better the API login role
    /// (docs/operations.md); handlers switch to the confined role `psa_app` per transaction.
    pub pool: PgPool,
    pub session_ttl: chrono::Duration,
    /// A session unused this long ends.
    pub session_idle: Duration,
    pub limits: std::sync::Arc<limits::Limits>,
    pub request_timeout: Duration,
}

/// The lifecycle endpoints' settings: the customer tags (as the workers have them), where
/// exports are kept (`None`: exports are not offered by this server), the plan of new tenants
/// that name none, and the secret the billing system signs its webhook with (`None`: refused).
#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    pub customer_tag: psa_models::validate::TagText,
    pub tags: psa_models::lifecycle::LifecycleTags,
    pub store: Option<psa_models::exports::ExportStore>,
    pub default_plan: String,
    pub stripe_webhook_secret: Option<secrecy::SecretString>,
    /// `PSA_IMPORT_MAX_BYTES`: the largest archive an import takes.
    pub import_max_bytes: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        Self {
            customer_tag: psa_models::validate::TagText::parse("PSA Customer").expect("a tag"),
            tags: Default::default(),
            store: None,
            default_plan: psa_models::plans::DEFAULT_PLAN.to_owned(),
            stripe_webhook_secret: None,
            import_max_bytes: psa_app::settings::DEFAULT_IMPORT_MAX_BYTES,
        }
    }
}

impl AppState {
    /// Provisioning's Temporal client, for the worker's workflows (`what` names the feature
    /// when this server has no Temporal settings).
    async fn temporal(
        &self,
        what: &str,
    ) -> Result<&psa_workflows::client::TenantWorkflows, ApiError> {
        Ok(self.app.temporal(what)?.workflows().await?)
    }

    /// Customer repairs (reconcile runs on the worker), through provisioning's Temporal client.
    pub async fn reconciles(&self) -> Result<psa_workflows::reconcile::Reconciles, ApiError> {
        let w = self.temporal("Customer repair").await?;
        Ok(psa_workflows::reconcile::Reconciles {
            client: w.client.clone(),
            task_queue: w.task_queue.clone(),
        })
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "psa", description = "Multi-tenant PSA backend: companies, contacts, tags."),
    modifiers(&BearerAuth),
    tags((name = "auth"), (name = "audit"), (name = "companies"), (name = "contacts"), (name = "tags"), (name = "tenants"), (name = "customers"), (name = "users"), (name = "events"), (name = "webhooks"), (name = "plans"), (name = "billing"), (name = "sso"))
)]
struct ApiDoc;

struct BearerAuth;

/// Operation ids are the handlers' names (`list`, `create`, ...), which repeat across
/// resources; OpenAPI wants them unique (clients are generated from them): each is prefixed
/// with its tag, `companies_list`.
struct UniqueOperationIds;

impl utoipa::Modify for UniqueOperationIds {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                let tag = op
                    .tags
                    .as_ref()
                    .and_then(|t| t.first().cloned())
                    .unwrap_or_default();
                if let Some(id) = &op.operation_id
                    && !tag.is_empty()
                    && !id.starts_with(&format!("{tag}_"))
                {
                    op.operation_id = Some(format!("{tag}_{id}"));
                }
            }
        }
    }
}

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The documented API routes and their OpenAPI document, generated together.
pub fn api_routes() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let router = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(auth::login))
        .routes(routes!(audit::list))
        .routes(routes!(api_keys::list_api_keys))
        .routes(routes!(api_keys::revoke_api_key))
        .routes(routes!(api_keys::revoke_api_keys_of_user))
        .routes(routes!(auth::logout))
        .routes(routes!(mfa::second_factor))
        .routes(routes!(mfa::begin_totp, mfa::remove_totp))
        .routes(routes!(mfa::confirm_totp))
        .routes(routes!(mfa::sessions))
        .routes(routes!(mfa::end_session))
        .routes(routes!(mfa::policy, mfa::set_policy))
        .routes(routes!(mfa::reset))
        .routes(routes!(passkeys::registration_options))
        .routes(routes!(passkeys::register, passkeys::list))
        .routes(routes!(passkeys::remove))
        .routes(routes!(passkeys::mfa_options))
        .routes(routes!(passkeys::sign_in_options))
        .routes(routes!(passkeys::sign_in))
        .routes(routes!(sso::show, sso::set, sso::remove))
        .routes(routes!(sso::test))
        .routes(routes!(sso::domains, sso::add_domain))
        .routes(routes!(sso::verify_domain))
        .routes(routes!(sso::remove_domain))
        .routes(routes!(sso::start))
        .routes(routes!(plans::list, plans::create))
        .routes(routes!(plans::update))
        .routes(routes!(plans::set_plan))
        .routes(routes!(plans::extend_trial))
        .routes(routes!(billing::stripe_webhook))
        .routes(routes!(auth::logout_everywhere))
        .routes(routes!(auth::accept_invitation))
        .routes(routes!(auth::change_password))
        .routes(routes!(auth::request_password_reset))
        .routes(routes!(auth::accept_password_reset))
        .routes(routes!(users::list, users::invite))
        .routes(routes!(users::update))
        .routes(routes!(users::deactivate))
        .routes(routes!(users::reactivate))
        .routes(routes!(users::resend_invite))
        .routes(routes!(tenants::resend_invite))
        .routes(routes!(companies::create, companies::list))
        .routes(routes!(
            companies::get,
            companies::update,
            companies::delete
        ))
        .routes(routes!(contacts::create, contacts::list))
        .routes(routes!(contacts::get, contacts::update))
        .routes(routes!(tags::attach, tags::list))
        .routes(routes!(tags::detach))
        .routes(routes!(tenants::create, lifecycle::list))
        .routes(routes!(tenants::status))
        .routes(routes!(
            lifecycle::show,
            lifecycle::update,
            lifecycle::delete
        ))
        .routes(routes!(lifecycle::suspend))
        .routes(routes!(lifecycle::reactivate))
        .routes(routes!(lifecycle::cancel))
        .routes(routes!(lifecycle::restore))
        .routes(routes!(lifecycle::export))
        .routes(routes!(lifecycle::get_export))
        .routes(routes!(lifecycle::archive))
        .routes(routes!(imports::import_tenant))
        .routes(routes!(search::search))
        .routes(routes!(attention::attention))
        .routes(routes!(tenants::timeline))
        .routes(routes!(
            support::open_support_session,
            support::list_support_sessions
        ))
        .routes(routes!(support::end_support_session))
        .routes(routes!(support::own_support))
        .routes(routes!(customers::list))
        .routes(routes!(customers::export_csv))
        .routes(routes!(customers::repair))
        .routes(routes!(customers::get_repair))
        .routes(routes!(webhooks::list_events))
        .routes(routes!(webhooks::get_event))
        .routes(routes!(webhooks::list, webhooks::create))
        .routes(routes!(webhooks::get, webhooks::update, webhooks::delete))
        .routes(routes!(webhooks::rotate_secret))
        .routes(routes!(webhooks::test))
        .routes(routes!(webhooks::deliveries))
        .routes(routes!(webhooks::delivery))
        .routes(routes!(webhooks::retry));
    let (router, mut doc) = router.split_for_parts();
    utoipa::Modify::modify(&UniqueOperationIds, &mut doc);
    (router, doc)
}

/// The whole application.
pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout;
    // Reached over https (PSA_PUBLIC_URL): browsers are told to come back over https only,
    // for a year, so a first plain-http request cannot be intercepted to strip it.
    let hsts = (state.app.delivery.public_url.scheme() == "https")
        .then(|| axum::http::HeaderValue::from_static("max-age=31536000; includeSubDomains"));
    let (api, doc) = api_routes();
    let doc = std::sync::Arc::new(doc);
    Router::new()
        .merge(api)
        .merge(pages::routes())
        .merge(console::routes())
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route(
            "/api/openapi.json",
            get(move || async move { Json(doc.as_ref().clone()) }),
        )
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            timeout,
            request_timeout,
        ))
        .layer(axum::middleware::from_fn(metrics::track))
        // API answers are one user's data, some carry a token or a password: no cache (browser,
        // proxy) may keep them.
        .layer(
            tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            ),
        )
        // Nothing the server sends (a CSV, an archive, a page) is to be read as another type.
        .layer(
            tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                axum::http::header::X_CONTENT_TYPE_OPTIONS,
                axum::http::HeaderValue::from_static("nosniff"),
            ),
        )
        .layer(
            tower_http::set_header::SetResponseHeaderLayer::if_not_present(
                axum::http::header::STRICT_TRANSPORT_SECURITY,
                move |_: &axum::http::Response<_>| hsts.clone(),
            ),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                ApiError::internal(anyhow::anyhow!("handler panicked")).into_response()
            },
        ))
}

/// `/metrics`, on a listener of its own (`PSA_METRICS_BIND`): what the API measures (routes,
/// statuses, latencies, failed sign-ins) is for the platform's Prometheus, not for the public
/// port.
pub fn metrics_router() -> Router {
    Router::new().route(
        "/metrics",
        get(metrics::render).with_state(metrics::handle()),
    )
}

/// Requests that may take up to an hour.
const LONG_RUNNING: [&str; 2] = ["/api/v1/tenants/imports", "/console/tenants/import"];

/// Answers 503 `timeout` for a request that takes longer than the configured limit; its
/// transaction is dropped, so it rolls back and writes nothing.
async fn request_timeout(
    State(limit): State<Duration>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    // An import streams a whole tenant in and writes it: it has its own limits (the archive's
    // size, the database's statement timeout), not a page's.
    let limit = if LONG_RUNNING.contains(&req.uri().path()) {
        limit.max(Duration::from_secs(3600))
    } else {
        limit
    };
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

/// `GET /readyz`: the database answers, and Temporal too when provisioning is configured.
async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    if let Err(e) = sqlx::query("SELECT 1").execute(&state.pool).await {
        tracing::warn!(error = %e, "readiness: database unreachable");
        return (StatusCode::SERVICE_UNAVAILABLE, "database unreachable");
    }
    if let Some(p) = state.app.temporal.as_deref()
        && !tenants::temporal_ready(p).await
    {
        return (StatusCode::SERVICE_UNAVAILABLE, "temporal unreachable");
    }
    (StatusCode::OK, "ready")
}

/// Configuration of [`Application::build`].
#[derive(Clone, Debug)]
pub struct Config {
    pub bind: SocketAddr,
    /// Where `/metrics` is served (`PSA_METRICS_BIND`); `None`: nowhere.
    pub metrics_bind: Option<SocketAddr>,
    pub session_ttl: Duration,
    /// A session unused this long ends (its holder logs in again).
    pub session_idle: Duration,
    pub limits: limits::LimitsConfig,
    pub server: ServerLimits,
    /// Mail and links (`PSA_SMTP_URL`, `PSA_PUBLIC_URL`, link lifetimes).
    pub delivery: psa_models::invitations::Delivery,
    pub lifecycle: LifecycleConfig,
    pub webhooks: webhooks::WebhookConfig,
    /// Where DNS lookups go (`PSA_DNS_RESOLVER`; verifying a tenant's domains).
    pub dns: psa_app::dns::Dns,
    /// `PSA_TRUSTED_PROXIES`: the load balancers whose forwarding headers name the client.
    pub trusted_proxies: proxies::TrustedProxies,
}

/// What one connection and one request may take of the server.
#[derive(Clone, Copy, Debug)]
pub struct ServerLimits {
    /// A client must send its request headers within this (slow-header attacks hold a
    /// connection otherwise).
    pub header_read_timeout: Duration,
    /// A request is answered 503 `timeout` once it has taken this long.
    pub request_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    pub max_connections: usize,
}

impl Default for ServerLimits {
    fn default() -> Self {
        ServerLimits {
            header_read_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

/// The API bound to its listener; tests bind port 0 and read [`Application::port`].
pub struct Application {
    listener: TcpListener,
    router: Router,
    server: ServerLimits,
    metrics: Option<TcpListener>,
    trusted_proxies: std::sync::Arc<proxies::TrustedProxies>,
}

impl Application {
    pub async fn build(config: Config, pool: PgPool) -> std::io::Result<Self> {
        Self::build_with(config, pool, None).await
    }

    /// With tenant provisioning through Temporal.
    pub async fn build_with(
        config: Config,
        pool: PgPool,
        provisioning: Option<psa_app::Temporal>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.bind).await?;
        let metrics = match config.metrics_bind {
            Some(addr) => Some(TcpListener::bind(addr).await?),
            None => None,
        };
        // The hash unknown emails are checked against, made now: made on the first such login it
        // would make that login slower than the rest (and tell that the email is unknown).
        let _ = tokio::task::spawn_blocking(|| std::sync::LazyLock::force(&auth::DUMMY_HASH)).await;
        let settings = psa_app::Settings {
            customer_tag: config.lifecycle.customer_tag.clone(),
            lifecycle_tags: config.lifecycle.tags.clone(),
            default_plan: config.lifecycle.default_plan.clone(),
            stripe_webhook_secret: config.lifecycle.stripe_webhook_secret.clone(),
            import_max_bytes: config.lifecycle.import_max_bytes,
            ..Default::default()
        };
        // Without PSA_SECRET_KEY (or when the archive key cannot be opened with it) no archive
        // can be written or decrypted here, and the store says so when asked; with it, archives
        // are encrypted to the platform's key.
        let exports = match (config.lifecycle.store, &config.webhooks.key) {
            (Some(store), Some(key)) => {
                match psa_workflows::secret::archive_key(&pool, key).await {
                    Ok(archive_key) => Some(store.with_key(archive_key)),
                    // Everything else works; exports answer 503 saying why until a restart.
                    Err(e) => {
                        tracing::error!(error = %e, "the export archives' key is unusable: exports are refused");
                        Some(store)
                    }
                }
            }
            (store, _) => store,
        };
        let mut app = psa_app::App::new(pool.clone(), settings, config.delivery)
            .with_webhooks(config.webhooks)
            .with_dns(config.dns);
        if let Some(store) = exports {
            app = app.with_exports(store);
        }
        if let Some(temporal) = provisioning {
            app = app.with_temporal(temporal);
        }
        // The sign-in limits every replica shares live in the database.
        let shared = pool.clone();
        let state = AppState {
            app,
            pool,
            session_ttl: chrono::Duration::from_std(config.session_ttl)
                .unwrap_or(chrono::Duration::hours(12)),
            limits: std::sync::Arc::new(limits::Limits::new(config.limits, shared.clone())),
            request_timeout: config.server.request_timeout,
            session_idle: config.session_idle,
        };
        let limits = std::sync::Arc::downgrade(&state.limits);
        let purge_pool = state.pool.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let Some(l) = limits.upgrade() else { break };
                l.forget_idle().await;
                // Sessions that ended over a day ago are of no use to anyone.
                if let Ok(mut conn) = purge_pool.acquire().await {
                    if let Err(e) = psa_models::credentials::purge_sessions(&mut conn).await {
                        tracing::warn!(error = %e, "purging old sessions failed");
                    }
                    if let Err(e) = psa_models::auth_tokens::purge(&mut conn).await {
                        tracing::warn!(error = %e, "purging old links failed");
                    }
                    // Sign-ins half done (a choice, a code due) that ended a day ago: their email
                    // and address are kept no longer.
                    if let Err(e) = psa_models::sign_in::purge(&mut conn).await {
                        tracing::warn!(error = %e, "purging old sign-in challenges failed");
                    }
                }
            }
        });
        Ok(Self {
            listener,
            router: router(state),
            server: config.server,
            metrics,
            trusted_proxies: std::sync::Arc::new(config.trusted_proxies),
        })
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Where `/metrics` is served, if anywhere.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serves until `shutdown` resolves, then finishes the requests in flight (30 s at most).
    /// Each connection must send its headers within `header_read_timeout`; at most
    /// `max_connections` are open at once (the rest wait in the listen queue).
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        // The metrics listener lives as long as the API: stopped when it stops.
        let metrics = self.metrics.map(|listener| {
            tokio::spawn(async move {
                if let Err(e) = axum::serve(listener, metrics_router()).await {
                    tracing::error!(error = %e, "the metrics listener failed");
                }
            })
        });
        // HTTP/1.1 only: protocol detection (for HTTP/2) would read the first bytes with no
        // deadline, so a client sending nothing could hold a connection slot for ever. With
        // HTTP/1 the header read timeout runs from the first byte a request needs.
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.server.header_read_timeout);
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let permits = std::sync::Arc::new(tokio::sync::Semaphore::new(
            self.server.max_connections.max(1),
        ));
        tokio::pin!(shutdown);
        loop {
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
                () = &mut shutdown => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait a little, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            // The client's address, once for every reader (limits, audit, sessions): the peer's,
            // or behind a trusted proxy the one its headers name.
            let trusted = self.trusted_proxies.clone();
            let service = tower::ServiceExt::map_request(
                self.router.clone(),
                move |mut req: axum::http::Request<hyper::body::Incoming>| {
                    let client = trusted.client(peer, req.headers());
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(client));
                    req
                },
            );
            let service = hyper_util::service::TowerToHyperService::new(service);
            let builder = builder.clone();
            let watcher = graceful.watcher();
            tokio::spawn(async move {
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let _ = watcher.watch(conn).await;
                drop(permit);
            });
        }
        tokio::select! {
            () = graceful.shutdown() => {}
            () = tokio::time::sleep(Duration::from_secs(30)) => {
                tracing::warn!("requests still in flight after 30 s: stopping anyway");
            }
        }
        if let Some(m) = metrics {
            m.abort();
        }
        Ok(())
    }
}
