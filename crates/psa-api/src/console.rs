//! The console: server-rendered pages for operators and staff, another face over the same
//! models and permissions as the JSON API (docs/console.md).
//!
//! A session lives in an HttpOnly, SameSite=Strict cookie (Secure when the server speaks TLS);
//! only the console's routes read it, so the JSON API stays bearer-only. Every form carries a
//! CSRF token derived from the session token, checked on every POST. Templates are askama,
//! checked at compile time, autoescaped.

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use psa_models::TenantId;
use psa_models::provisioning::{self, TenantListFilter};
use secrecy::SecretString;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::{Action, Caller, Permission, Resource};
use crate::error::ApiError;

const COOKIE: &str = "psa_console";

/// The console's routes (under `/console`) and its stylesheet.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::to("/console/tenants") }),
        )
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-out", post(sign_out))
        .route("/console/tenants", get(tenants))
        .route("/console/tenants/{id}", get(tenant))
        .route("/console/tenants/{id}/suspend", post(suspend))
        .route("/console/tenants/{id}/reactivate", post(reactivate))
        .route(
            "/assets/console.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=3600"),
                    ],
                    include_str!("../assets/console.css"),
                )
            }),
        )
}

/// The CSRF token of a session: derived from its secret token, so a page from another origin
/// (which cannot read the HttpOnly cookie) cannot know it.
fn csrf_token(session_token: &str) -> String {
    let digest = Sha256::digest(format!("psa-console-csrf:{session_token}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// A signed-in console user: the API's caller, from the session cookie.
pub struct Console {
    pub caller: Caller,
    pub csrf: String,
    pub tenant_name: String,
    pub management: bool,
}

/// Why a console request was refused: to the sign-in page, or a page saying so.
pub enum Refused {
    SignIn,
    Page(StatusCode, &'static str, String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignIn => Redirect::to("/console/sign-in").into_response(),
            Refused::Page(status, title, message) => page(
                status,
                ErrorPage {
                    nav: None,
                    title,
                    message,
                },
            ),
        }
    }
}

impl From<ApiError> for Refused {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Unauthorized => Refused::SignIn,
            ApiError::TenantInactive => {
                Refused::Page(StatusCode::FORBIDDEN, "Access suspended", e.to_string())
            }
            ApiError::Forbidden(m) => Refused::Page(StatusCode::FORBIDDEN, "Not allowed", m),
            other => {
                let status = other.status();
                let message = if status.is_server_error() {
                    tracing::error!(error = %other, "console request failed");
                    "Something went wrong on our side; nothing was changed. Try again.".into()
                } else {
                    other.to_string()
                };
                Refused::Page(status, "Not done", message)
            }
        }
    }
}

impl FromRequestParts<AppState> for Console {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let jar = CookieJar::from_headers(&parts.headers);
        let token = jar
            .get(COOKIE)
            .map(|c| c.value().to_owned())
            .ok_or(Refused::SignIn)?;
        let caller = Caller::from_token(state, &token).await?;
        // Read in the caller's own confined transaction (the API's role sees no other tenant).
        let mut tx = psa_models::db::begin_tenant(&state.pool, caller.tenant)
            .await
            .map_err(ApiError::from)?;
        let tenant = psa_models::tenants::find(&mut tx, caller.tenant)
            .await
            .map_err(ApiError::from)?
            .ok_or(Refused::SignIn)?;
        tx.rollback()
            .await
            .map_err(|e| ApiError::from(psa_models::Error::from(e)))?;
        Ok(Console {
            csrf: csrf_token(&token),
            tenant_name: tenant.company_name,
            management: tenant.is_management,
            caller,
        })
    }
}

impl Console {
    fn nav(&self, current: &'static str) -> Option<Nav> {
        Some(Nav {
            current,
            csrf: self.csrf.clone(),
            tenant_name: self.tenant_name.clone(),
            management: self.management,
        })
    }

    /// Refuses a form whose CSRF token is not this session's.
    fn check_csrf(&self, sent: &str) -> Result<(), Refused> {
        let ok = sent.len() == self.csrf.len()
            && sent
                .bytes()
                .zip(self.csrf.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if ok {
            Ok(())
        } else {
            Err(Refused::Page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form was not sent from this console session (or the session changed): \
                 reload the page and try again."
                    .into(),
            ))
        }
    }
}

/// What the layout shows of the signed-in user.
pub struct Nav {
    pub current: &'static str,
    pub csrf: String,
    pub tenant_name: String,
    pub management: bool,
}

fn page(status: StatusCode, template: impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut r = (status, axum::response::Html(html)).into_response();
            let h = r.headers_mut();
            // Pages may show what only this user may see: never cached, never framed.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                     form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
                ),
            );
            h.insert(
                header::REFERRER_POLICY,
                HeaderValue::from_static("same-origin"),
            );
            r
        }
        Err(e) => {
            tracing::error!(error = %e, "a console template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be shown",
            )
                .into_response()
        }
    }
}

#[derive(Template)]
#[template(path = "console/error.html")]
struct ErrorPage {
    nav: Option<Nav>,
    title: &'static str,
    message: String,
}

#[derive(Template)]
#[template(path = "console/sign_in.html")]
struct SignInPage {
    nav: Option<Nav>,
    error: Option<String>,
    tenant: String,
    email: String,
}

async fn sign_in_form() -> Response {
    page(
        StatusCode::OK,
        SignInPage {
            nav: None,
            error: None,
            tenant: String::new(),
            email: String::new(),
        },
    )
}

#[derive(Deserialize)]
struct SignInForm {
    tenant: String,
    email: String,
    password: SecretString,
}

/// The console's sign-in: the API's login (rate limits, timing, audit), then the cookie.
async fn sign_in(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    jar: CookieJar,
    Form(form): Form<SignInForm>,
) -> Response {
    let again = |status: StatusCode, message: String| {
        page(
            status,
            SignInPage {
                nav: None,
                error: Some(message),
                tenant: form.tenant.clone(),
                email: form.email.clone(),
            },
        )
    };
    let Ok(tenant) = uuid::Uuid::parse_str(form.tenant.trim()) else {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The organisation ID is a UUID like 6b0c1d8e-2f43-4a8e-9b61-0f3c2d1e4a5b".into(),
        );
    };
    let request = crate::auth::LoginRequest {
        tenant_id: TenantId(tenant),
        email: form.email.clone(),
        password: form.password.clone(),
    };
    match crate::auth::sign_in(&state, peer, request).await {
        Ok(session) => {
            let mut cookie = Cookie::new(COOKIE, session.token);
            cookie.set_http_only(true);
            cookie.set_same_site(SameSite::Strict);
            cookie.set_path("/");
            // Secure wherever users reach the server over https (PSA_PUBLIC_URL).
            cookie.set_secure(state.delivery.public_url.scheme() == "https");
            (jar.add(cookie), Redirect::to("/console")).into_response()
        }
        Err(ApiError::Unauthorized) => again(
            StatusCode::UNAUTHORIZED,
            "The organisation, email or password is not right.".into(),
        ),
        Err(e) => {
            let status = e.status();
            again(status, e.to_string())
        }
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// Ends the session (server side too) and clears the cookie.
async fn sign_out(
    State(state): State<AppState>,
    console: Console,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    if let crate::auth::Credential::Session(id) = console.caller.credential {
        let mut tx = psa_models::db::begin_tenant(&state.pool, console.caller.tenant)
            .await
            .map_err(ApiError::from)?;
        psa_models::credentials::revoke_session(&mut tx, console.caller.tenant, id)
            .await
            .map_err(ApiError::from)?;
        tx.commit()
            .await
            .map_err(|e| ApiError::from(psa_models::Error::from(e)))?;
    }
    let mut gone = Cookie::from(COOKIE);
    gone.set_path("/");
    Ok((jar.remove(gone), Redirect::to("/console/sign-in")).into_response())
}

struct Opt {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

fn options(all: &[(&'static str, &'static str)], chosen: &str) -> Vec<Opt> {
    all.iter()
        .map(|(value, label)| Opt {
            value,
            label,
            selected: *value == chosen,
        })
        .collect()
}

struct TenantRow {
    id: String,
    name: String,
    status: String,
    customer_tracking: String,
    created_at: String,
    created_label: String,
    run: String,
}

#[derive(Template)]
#[template(path = "console/tenants.html")]
struct TenantsPage {
    nav: Option<Nav>,
    error: Option<String>,
    name: String,
    statuses: Vec<Opt>,
    trackings: Vec<Opt>,
    tenants: Vec<TenantRow>,
    next: Option<String>,
}

#[derive(Deserialize, Default)]
struct TenantsQuery {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    tracking: String,
    #[serde(default)]
    cursor: String,
}

/// The tenants (management): searchable, filterable, a page at a time.
async fn tenants(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<TenantsQuery>,
) -> Result<Response, Refused> {
    let mut tx = console
        .caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Read))
        .await?;
    psa_models::db::leave_tenant(&mut tx)
        .await
        .map_err(ApiError::from)?;
    let status = match q.status.as_str() {
        "" => None,
        s => Some(psa_models::lifecycle::TenantStatus::parse(s).map_err(ApiError::from)?),
    };
    let filter = TenantListFilter {
        customer_tracking: Some(q.tracking.clone()).filter(|t| !t.is_empty()),
        name_contains: Some(q.name.trim().to_owned()).filter(|n| !n.is_empty()),
        created_after: None,
        created_before: None,
        status,
    };
    let page = provisioning::list_tenants(
        &mut tx,
        state.lifecycle.customer_tag.as_str(),
        &filter,
        &psa_models::db::PageRequest {
            limit: Some(50),
            cursor: Some(q.cursor.clone()).filter(|c| !c.is_empty()),
        },
    )
    .await;
    tx.rollback()
        .await
        .map_err(|e| ApiError::from(psa_models::Error::from(e)))?;
    let (rows, next, error) = match page {
        Ok(p) => (p.items, p.next_cursor, None),
        Err(e @ psa_models::Error::Validation { .. }) => (Vec::new(), None, Some(e.to_string())),
        Err(e) => return Err(ApiError::from(e).into()),
    };
    let next = next.map(|c| {
        let query: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("name", &q.name)
            .append_pair("status", &q.status)
            .append_pair("tracking", &q.tracking)
            .append_pair("cursor", &c)
            .finish();
        format!("/console/tenants?{query}")
    });
    Ok(page_ok(TenantsPage {
        nav: console.nav("tenants"),
        error,
        name: q.name.clone(),
        statuses: options(
            &[
                ("", "Any"),
                ("active", "Active"),
                ("suspended", "Suspended"),
                ("canceled", "Canceled"),
            ],
            &q.status,
        ),
        trackings: options(
            &[
                ("", "Any"),
                ("tracked", "Tracked"),
                ("partial", "Partial"),
                ("untracked", "Untracked"),
                ("skipped", "Skipped"),
                ("management", "Management"),
            ],
            &q.tracking,
        ),
        tenants: rows
            .into_iter()
            .map(|t| TenantRow {
                id: t.tenant_id.to_string(),
                name: t.name,
                status: t.status.to_string(),
                customer_tracking: t.customer_tracking,
                created_at: t.created_at.to_rfc3339(),
                created_label: t.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
                run: match (t.workflow_id, t.provisioning_status) {
                    (Some(w), Some(s)) => format!("{} ({w})", s.as_str()),
                    _ => "none".into(),
                },
            })
            .collect(),
        next,
    }))
}

fn page_ok(template: impl Template) -> Response {
    page(StatusCode::OK, template)
}

#[derive(Template)]
#[template(path = "console/tenant.html")]
struct TenantPage {
    nav: Option<Nav>,
    error: Option<String>,
    notice: Option<String>,
    t: psa_models::lifecycle::TenantDetails,
    status: String,
    reason: Option<String>,
    created: String,
    csrf: String,
    can_suspend: bool,
    can_reactivate: bool,
}

fn tenant_page(
    console: &Console,
    t: psa_models::lifecycle::TenantDetails,
    notice: Option<String>,
    error: Option<String>,
) -> TenantPage {
    use psa_models::lifecycle::TenantStatus;
    TenantPage {
        nav: console.nav("tenants"),
        error,
        notice,
        status: t.status.to_string(),
        reason: t.status_reason.clone(),
        created: t.created_at.format("%Y-%m-%d %H:%M UTC").to_string(),
        csrf: console.csrf.clone(),
        can_suspend: t.status == TenantStatus::Active,
        can_reactivate: t.status == TenantStatus::Suspended,
        t,
    }
}

fn tenant_id(raw: &str) -> Result<TenantId, Refused> {
    uuid::Uuid::parse_str(raw).map(TenantId).map_err(|_| {
        Refused::Page(
            StatusCode::NOT_FOUND,
            "Not found",
            "There is no such tenant.".into(),
        )
    })
}

/// A tenant: status, customer record, the actions its state allows.
async fn tenant(
    State(state): State<AppState>,
    console: Console,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Result<Response, Refused> {
    let id = tenant_id(&id)?;
    let mut tx = console
        .caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Read))
        .await?;
    let details = psa_models::lifecycle::show(
        &mut tx,
        &state.lifecycle.settings(console.caller.tenant),
        id,
    )
    .await
    .map_err(ApiError::from)?;
    tx.rollback()
        .await
        .map_err(|e| ApiError::from(psa_models::Error::from(e)))?;
    Ok(page_ok(tenant_page(&console, details, None, None)))
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// Suspend, with the same model, permission and audit as `POST /api/v1/tenants/{id}/suspend`.
async fn suspend(
    State(state): State<AppState>,
    console: Console,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<ReasonForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let id = tenant_id(&id)?;
    change(&state, &console, id, Lifecycle::Suspend(form.reason)).await
}

/// Reactivate, as `POST /api/v1/tenants/{id}/reactivate`.
async fn reactivate(
    State(state): State<AppState>,
    console: Console,
    axum::extract::Path(id): axum::extract::Path<String>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let id = tenant_id(&id)?;
    change(&state, &console, id, Lifecycle::Reactivate).await
}

/// A lifecycle change asked from the console.
enum Lifecycle {
    Suspend(String),
    Reactivate,
}

/// Runs a lifecycle change in the caller's transaction (`tenant:update`, management only) and
/// shows the tenant again: with the change, or with the model's refusal next to it.
async fn change(
    state: &AppState,
    console: &Console,
    id: TenantId,
    what: Lifecycle,
) -> Result<Response, Refused> {
    let settings = state.lifecycle.settings(console.caller.tenant);
    let actor = console.caller.actor();
    let mut tx = console
        .caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Update))
        .await?;
    let done = match &what {
        Lifecycle::Suspend(reason) => {
            psa_models::lifecycle::suspend(&mut tx, &settings, id, reason, &actor).await
        }
        Lifecycle::Reactivate => {
            psa_models::lifecycle::reactivate(&mut tx, &settings, id, &actor).await
        }
    };
    match done {
        Ok(c) => {
            tx.commit()
                .await
                .map_err(|e| ApiError::from(psa_models::Error::from(e)))?;
            let notice = format!("{} is now {}.", c.tenant.name, c.tenant.status);
            Ok(page_ok(tenant_page(console, c.tenant, Some(notice), None)))
        }
        Err(
            e @ (psa_models::Error::Validation { .. } | psa_models::Error::InvalidState { .. }),
        ) => {
            drop(tx);
            let mut tx = psa_models::db::begin_tenant(&state.pool, console.caller.tenant)
                .await
                .map_err(ApiError::from)?;
            let details = psa_models::lifecycle::show(&mut tx, &settings, id)
                .await
                .map_err(ApiError::from)?;
            Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                tenant_page(console, details, None, Some(e.to_string())),
            ))
        }
        Err(e) => Err(ApiError::from(e).into()),
    }
}
