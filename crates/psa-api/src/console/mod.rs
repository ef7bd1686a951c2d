//! The console: server-rendered pages for operators and staff, another face over the same
//! models and permissions as the JSON API (docs/console.md).
//!
//! A session lives in an HttpOnly, SameSite=Strict cookie (Secure when the server speaks TLS);
//! only the console's routes read it, so the JSON API stays bearer-only. Every form carries a
//! CSRF token derived from the session token, checked on every POST. Templates are askama,
//! checked at compile time, autoescaped.

mod account;
mod audit;
mod customers;
mod directory;
mod events;
mod imports;
mod provision;
mod security;
mod sso;
mod support;
mod tenants;
mod users;

use askama::Template;
use axum::extract::{Form, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use psa_models::TenantId;
use psa_models::validate::EmailAddress;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::AppState;
use crate::auth::{Action, Caller, How, Permission, Resource};
use crate::error::ApiError;
use crate::extract::ClientInfo;

const COOKIE: &str = "psa_console";

/// Under an https `PSA_PUBLIC_URL` the cookie carries the `__Host-` prefix: the browser then
/// keeps it only if it is Secure, for `/`, and set by this host alone (no subdomain can plant or
/// overwrite it).
const HOST_COOKIE: &str = "__Host-psa_console";

/// The session cookie's name on this server.
fn cookie_name(state: &AppState) -> &'static str {
    if state.app.delivery.public_url.scheme() == "https" {
        HOST_COOKIE
    } else {
        COOKIE
    }
}

/// A support session's cookie: beside the operator's own, which it does not replace, so that
/// ending the support session returns the operator to their console.
const SUPPORT_COOKIE: &str = "psa_support";
const HOST_SUPPORT_COOKIE: &str = "__Host-psa_support";

fn support_cookie_name(state: &AppState) -> &'static str {
    if state.app.delivery.public_url.scheme() == "https" {
        HOST_SUPPORT_COOKIE
    } else {
        SUPPORT_COOKIE
    }
}

/// The console's routes (under `/console`) and its stylesheet.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console", get(home))
        .route("/console/sign-in", get(sign_in_form).post(sign_in))
        .route("/console/sign-in/choose", post(choose_tenant))
        .route("/console/sign-in/code", post(sign_in_code))
        .route(
            "/console/sign-in/code/passkey-options",
            post(second_factor_passkey),
        )
        .route("/console/sign-in/passkey/options", post(passkey_options))
        .route("/console/sign-in/passkey", post(passkey_sign_in))
        .route("/console/sign-out", post(sign_out))
        .merge(tenants::routes())
        .merge(provision::routes())
        .merge(imports::routes())
        .merge(customers::routes())
        .merge(directory::routes())
        .merge(users::routes())
        .merge(events::routes())
        .merge(audit::routes())
        .merge(account::routes())
        .merge(security::routes())
        .merge(sso::routes())
        .merge(support::routes())
        .route(
            "/assets/console.js",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=3600"),
                    ],
                    include_str!("../../assets/console.js"),
                )
            }),
        )
        .route(
            "/assets/console.css",
            get(|| async {
                (
                    [
                        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                        (header::CACHE_CONTROL, "public, max-age=3600"),
                    ],
                    include_str!("../../assets/console.css"),
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
    /// The session token: a long-lived response (the progress stream) checks it again.
    session_token: SecretString,
    pub csrf: String,
    pub tenant_name: String,
    pub management: bool,
    /// May see the tenant's users (`user:read`): the navigation shows the page.
    pub sees_users: bool,
    /// Manages the tenant's single sign-on (`sso:manage`): the navigation shows the page.
    pub manages_sso: bool,
    /// The support session this console acts in (its banner), if any.
    pub support: Option<psa_models::support::SupportSession>,
}

/// Why a console request was refused: to the sign-in page, or a page saying so.
pub enum Refused {
    SignIn,
    /// The session may only set up a second factor: to that page.
    Enrol,
    Page(StatusCode, &'static str, String),
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        match self {
            Refused::SignIn => Redirect::to("/console/sign-in").into_response(),
            Refused::Enrol => Redirect::to("/console/account/second-factor").into_response(),
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
            ApiError::MfaEnrollmentRequired => Refused::Enrol,
            ApiError::TenantInactive => {
                Refused::Page(StatusCode::FORBIDDEN, "Access suspended", e.to_string())
            }
            ApiError::Forbidden(m) => Refused::Page(StatusCode::FORBIDDEN, "Not allowed", m),
            other => {
                let status = other.status();
                let message = if status.is_server_error() {
                    tracing::error!(error = %other.log_safe(), "console request failed");
                    match other {
                        // Temporal or a setting away: its message says which, and no secret.
                        ApiError::Unavailable(m) => m,
                        _ => "Something went wrong on our side, and what you asked may not have \
                              been done. Reload the page to see where things are, then try \
                              again."
                            .into(),
                    }
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
        let path = parts.uri.path();
        // A support session's cookie, while it holds, is who the console acts as; once it has
        // ended, the operator's own session again.
        let support = match jar.get(support_cookie_name(state)) {
            Some(c) => match Caller::from_token(state, c.value(), path).await {
                Ok(caller) if caller.support.is_some() => Some((c.value().to_owned(), caller)),
                _ => None,
            },
            None => None,
        };
        let (token, caller) = match support {
            Some(found) => found,
            None => {
                let token = jar
                    .get(cookie_name(state))
                    .map(|c| c.value().to_owned())
                    .ok_or(Refused::SignIn)?;
                let caller = Caller::from_token(state, &token, path).await?;
                (token, caller)
            }
        };
        // Read in the caller's own confined transaction (the API's role sees no other tenant).
        let mut tx = psa_models::db::begin_tenant(&state.pool, caller.tenant)
            .await
            .map_err(ApiError::from)?;
        let tenant = psa_models::tenants::find(&mut tx, caller.tenant)
            .await
            .map_err(ApiError::from)?
            .ok_or(Refused::SignIn)?;
        let sees_users = caller
            .may(&mut tx, Permission(Resource::User, Action::Read))
            .await?;
        let manages_sso = caller
            .may(&mut tx, Permission(Resource::Sso, Action::Manage))
            .await?;
        tx.rollback().await.map_err(ApiError::from)?;
        let support = psa_app::support::current(&state.app, &caller.principal())
            .await
            .map_err(ApiError::from)?;
        Ok(Console {
            support,
            csrf: csrf_token(&token),
            session_token: SecretString::from(token.clone()),
            tenant_name: tenant.company_name,
            management: tenant.is_management,
            sees_users,
            manages_sso,
            caller,
        })
    }
}

impl Console {
    /// The caller again, from the session token: `None` once the session ended, expired or
    /// went idle, or its tenant is no longer active.
    pub(crate) async fn still_signed_in(&self, state: &AppState) -> Option<Caller> {
        use secrecy::ExposeSecret;
        // Not a use: the session's idle clock runs on while only the stream is open.
        Caller::from_token_as(
            state,
            self.session_token.expose_secret(),
            psa_models::credentials::Use::NotRecorded,
            "/console",
        )
        .await
        .ok()
    }

    fn nav(&self, current: &'static str) -> Option<Nav> {
        Some(Nav {
            current,
            csrf: self.csrf.clone(),
            tenant_name: self.tenant_name.clone(),
            management: self.management,
            sees_users: self.sees_users,
            manages_sso: self.manages_sso,
            support: self.support.as_ref().map(|s| SupportBanner {
                operator: s.operator.clone(),
                user: s.user_email.clone(),
                ends_at: s.ends_at.format("%H:%M UTC").to_string(),
            }),
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
    pub sees_users: bool,
    pub manages_sso: bool,
    /// In a support session: the banner on every page.
    pub support: Option<SupportBanner>,
}

/// "Support session by OPERATOR as USER, ends at HH:MM. End now".
pub struct SupportBanner {
    pub operator: String,
    pub user: String,
    pub ends_at: String,
}

fn page(status: StatusCode, template: impl Template) -> Response {
    match template.render() {
        Ok(html) => {
            let mut r = (status, axum::response::Html(html)).into_response();
            let h = r.headers_mut();
            // Pages may show what only this user may see: never cached, never framed. Style
            // attributes carry tag colours (validated hex); no inline script is allowed.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'none'; style-src 'self'; style-src-attr 'unsafe-inline'; \
                     script-src 'self'; connect-src 'self'; \
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
    /// The organisation a link named (its slug, or an id): signs in there directly.
    tenant: String,
    email: String,
    /// This server offers passkeys: "Sign in with a passkey".
    passkeys: bool,
}

impl SignInPage {
    /// The password is asked for once the email is known (and is not sent to a provider), or
    /// when a link named the organisation.
    fn asks_password(&self) -> bool {
        !self.tenant.is_empty() || !self.email.is_empty()
    }
}

/// The sign-in form again, saying why (the organisation and email kept as typed).
fn sign_in_again(
    state: &AppState,
    status: StatusCode,
    message: String,
    tenant: &str,
    email: &str,
) -> Response {
    page(
        status,
        SignInPage {
            nav: None,
            error: Some(message),
            tenant: tenant.to_owned(),
            email: email.to_owned(),
            passkeys: psa_app::passkeys::available(&state.app),
        },
    )
}

/// The password matched in several organisations: the person picks one.
#[derive(Template)]
#[template(path = "console/choose_tenant.html")]
struct ChooseTenantPage {
    nav: Option<Nav>,
    email: String,
    choice: String,
    tenants: Vec<crate::error::TenantChoice>,
}

/// Where a signed-in user starts: the tenants for the management tenant's staff, their
/// companies for everyone else.
/// The start: what needs attention for the management tenant's staff, Companies for everyone
/// else.
async fn home(State(state): State<AppState>, console: Console) -> Result<Response, Refused> {
    if !console.management {
        return Ok(Redirect::to("/console/companies").into_response());
    }
    let found = psa_app::attention::gather(&state.app, &console.caller.principal())
        .await
        .map_err(ApiError::from)?;
    Ok(page_ok(Dashboard {
        nav: console.nav("home"),
        total: found.total,
        counted: found.tenants.first().map(|c| when(c.counted_at)),
        tenants: found
            .tenants
            .iter()
            .map(|c| {
                (
                    c.status.clone(),
                    c.plan.clone().unwrap_or_else(|| "no plan".into()),
                    c.tenants,
                )
            })
            .collect(),
        lists: found
            .lists
            .into_iter()
            .map(|l| DashboardList {
                kind: l.kind,
                title: l.title,
                more: l.more,
                items: l
                    .items
                    .into_iter()
                    .map(|i| DashboardItem {
                        name: i.name,
                        detail: i.detail,
                        at: i.at.map(when).unwrap_or_default(),
                        fix: i.fix,
                    })
                    .collect(),
            })
            .collect(),
    }))
}

/// The management console's start page.
#[derive(Template)]
#[template(path = "console/dashboard.html")]
struct Dashboard {
    nav: Option<Nav>,
    total: usize,
    /// When the worker last counted the tenants.
    counted: Option<String>,
    /// Status, plan, how many.
    tenants: Vec<(String, String, i64)>,
    lists: Vec<DashboardList>,
}

struct DashboardList {
    kind: &'static str,
    title: &'static str,
    more: bool,
    items: Vec<DashboardItem>,
}

struct DashboardItem {
    name: String,
    detail: String,
    at: String,
    fix: String,
}

#[derive(Deserialize, Default)]
struct SignInQuery {
    /// The organisation's slug (`/console/sign-in?org=acme`).
    #[serde(default)]
    org: String,
    /// The organisation's id (links made before slugs).
    #[serde(default)]
    tenant: String,
}

/// The sign-in form: email and password; a link may name the organisation (`?org=SLUG`: the
/// page after setting a password links so), and the email stays out of addresses.
async fn sign_in_form(
    State(state): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<SignInQuery>,
) -> Response {
    page(
        StatusCode::OK,
        SignInPage {
            nav: None,
            error: None,
            tenant: if q.org.is_empty() { q.tenant } else { q.org },
            email: String::new(),
            passkeys: psa_app::passkeys::available(&state.app),
        },
    )
}

#[derive(Deserialize)]
struct SignInForm {
    /// The organisation a link named; empty: the email finds it.
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    email: String,
    /// None: the first step (the email alone), which sends an email of a domain that signs in
    /// through its provider there, and asks the others for their password.
    #[serde(default)]
    password: Option<SecretString>,
}

/// Whether a form without a session came from one of this server's own pages: a browser says
/// where a request comes from (`Sec-Fetch-Site`, else `Origin`). Another site must not sign a
/// visitor in to an account of its choosing, nor make them ask for reset links.
pub(crate) fn same_origin(headers: &axum::http::HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        return matches!(site.as_bytes(), b"same-origin" | b"none");
    }
    match (headers.get(header::ORIGIN), headers.get(header::HOST)) {
        (Some(origin), Some(host)) => origin
            .to_str()
            .ok()
            .and_then(|o| o.split_once("://").map(|(_, rest)| rest.to_owned()))
            .is_some_and(|o| host.to_str().is_ok_and(|h| h.eq_ignore_ascii_case(&o))),
        // No browser said otherwise (a script, curl): nothing to forge.
        _ => true,
    }
}

fn cross_site() -> Response {
    Refused::Page(
        StatusCode::FORBIDDEN,
        "Form expired",
        "This form was not sent from this console: open the sign-in page and try again.".into(),
    )
    .into_response()
}

/// The console's sign-in: the API's login (rate limits, timing, audit), then the cookie.
async fn sign_in(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    jar: CookieJar,
    Form(form): Form<SignInForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let again = |status: StatusCode, message: String| {
        sign_in_again(&state, status, message, &form.tenant, &form.email)
    };
    let Some(password) = form.password.clone() else {
        return email_first(&state, &client, jar, &form.email).await;
    };
    let request = crate::auth::LoginRequest {
        tenant: Some(form.tenant.clone()),
        tenant_id: None,
        email: form.email.clone(),
        password,
    };
    match crate::auth::sign_in(&state, &client, request).await {
        Ok(session) => signed_in(&state, jar, session),
        Err(ApiError::MfaRequired(c)) => {
            second_factor_page(StatusCode::OK, c.token, &c.methods, None)
        }
        Err(ApiError::TenantRequired(tenants)) => {
            // The choice is kept here, so the password is not sent again.
            let choice = match EmailAddress::parse(&form.email) {
                Ok(email) => begin_choice(&state, &email, &tenants, client.peer).await,
                Err(_) => Err(ApiError::Unauthorized),
            };
            match choice {
                Ok(choice) => page(
                    StatusCode::OK,
                    ChooseTenantPage {
                        nav: None,
                        email: form.email.clone(),
                        choice,
                        tenants,
                    },
                ),
                Err(e) => again(e.status(), e.to_string()),
            }
        }
        Err(ApiError::Unauthorized) => again(
            StatusCode::UNAUTHORIZED,
            "The email or password is not right.".into(),
        ),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "console sign-in failed");
            }
            again(status, e.to_string())
        }
    }
}

/// The first step of a sign-in: an email of a domain an organisation verified, whose provider
/// is enabled, goes there; any other is asked for its password (the same page whether the
/// account exists or not).
async fn email_first(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    email: &str,
) -> Response {
    let email = email.trim();
    if EmailAddress::parse(email).is_err() {
        return page(
            StatusCode::UNPROCESSABLE_ENTITY,
            SignInPage {
                nav: None,
                error: Some("Type your work email, such as pat@example.com.".into()),
                tenant: String::new(),
                email: String::new(),
                passkeys: psa_app::passkeys::available(&state.app),
            },
        );
    }
    match crate::sso::target(state, client, Some(email), None).await {
        Ok(Some((tenant, _))) => {
            sso::to_provider(state, client, jar, tenant, Some(email), true).await
        }
        Ok(None) => page(
            StatusCode::OK,
            SignInPage {
                nav: None,
                error: None,
                tenant: String::new(),
                email: email.to_owned(),
                passkeys: psa_app::passkeys::available(&state.app),
            },
        ),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "console single sign-on failed to start");
            }
            sign_in_again(state, status, e.to_string(), "", "")
        }
    }
}

/// The session cookie for a session just opened, and on to the console.
fn signed_in(state: &AppState, jar: CookieJar, session: crate::auth::LoginResponse) -> Response {
    (session_jar(state, jar, session), Redirect::to("/console")).into_response()
}

/// The session cookie for a session just opened.
pub(crate) fn session_jar(
    state: &AppState,
    jar: CookieJar,
    session: crate::auth::LoginResponse,
) -> CookieJar {
    jar.add(private_cookie(state, cookie_name(state), session.token))
}

/// A console cookie holding a secret: HttpOnly, SameSite=Strict, for the whole site, Secure
/// wherever users reach the server over https (PSA_PUBLIC_URL).
pub(crate) fn private_cookie(
    state: &AppState,
    name: &'static str,
    value: String,
) -> Cookie<'static> {
    let mut cookie = Cookie::new(name, value);
    cookie.set_http_only(true);
    cookie.set_same_site(SameSite::Strict);
    cookie.set_path("/");
    cookie.set_secure(state.app.delivery.public_url.scheme() == "https");
    cookie
}

/// `jar` without the cookie `name` (as [`private_cookie`] set it).
fn without(state: &AppState, jar: CookieJar, name: &'static str) -> CookieJar {
    let mut gone = Cookie::from(name);
    gone.set_path("/");
    gone.set_secure(state.app.delivery.public_url.scheme() == "https");
    jar.remove(gone)
}

async fn begin_choice(
    state: &AppState,
    email: &EmailAddress,
    tenants: &[crate::error::TenantChoice],
    peer: std::net::SocketAddr,
) -> Result<String, ApiError> {
    let ids: Vec<TenantId> = tenants.iter().map(|t| t.id).collect();
    let mut conn = state.pool.acquire().await?;
    let token =
        psa_models::sign_in::begin_choice(&mut conn, email, &ids, &peer.ip().to_string()).await?;
    Ok(token.expose_secret().to_owned())
}

/// The second step of a sign-in: a code from the authenticator app, a recovery code, or a
/// passkey (whichever the user has).
#[derive(Template)]
#[template(path = "console/second_factor.html")]
struct SecondFactorPage {
    nav: Option<Nav>,
    error: Option<String>,
    mfa_token: String,
    totp: bool,
    recovery: bool,
    passkey: bool,
}

fn second_factor_page(
    status: StatusCode,
    mfa_token: String,
    methods: &[&str],
    error: Option<String>,
) -> Response {
    page(
        status,
        SecondFactorPage {
            nav: None,
            error,
            mfa_token,
            totp: methods.contains(&"totp"),
            recovery: methods.contains(&"recovery_code"),
            passkey: methods.contains(&"passkey"),
        },
    )
}

/// The second-factor page again, for the sign-in `mfa_token` carries (its user's methods).
async fn second_factor_again(
    state: &AppState,
    status: StatusCode,
    mfa_token: &str,
    error: String,
) -> Response {
    let methods = async {
        let mut conn = state.pool.acquire().await?;
        let Some((tenant, user)) =
            psa_models::sign_in::second_factor_of(&mut conn, mfa_token.trim()).await?
        else {
            return Ok(Vec::new());
        };
        drop(conn);
        let mut tx = psa_models::db::begin_tenant(&state.pool, tenant).await?;
        let methods = psa_models::mfa::methods(&mut tx, tenant, user).await?;
        tx.rollback().await?;
        Ok::<_, psa_models::Error>(methods)
    }
    .await;
    match methods {
        Ok(methods) if !methods.is_empty() => {
            second_factor_page(status, mfa_token.to_owned(), &methods, Some(error))
        }
        // The sign-in ended (used, expired, out of attempts): from the start.
        Ok(_) => sign_in_again(state, status, error, "", ""),
        Err(e) => ApiError::from(e).into_response(),
    }
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    mfa_token: String,
    #[serde(default)]
    code: SecretString,
    /// A passkey's answer (JSON), set by the page's script.
    #[serde(default)]
    credential: String,
}

/// The code, or the passkey, for a sign-in whose password was right.
async fn sign_in_code(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    jar: CookieJar,
    Form(form): Form<CodeForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let passkey = if form.credential.trim().is_empty() {
        None
    } else {
        match serde_json::from_str::<serde_json::Value>(&form.credential) {
            Ok(v) => Some(v),
            Err(_) => {
                return second_factor_again(
                    &state,
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &form.mfa_token,
                    "The browser's answer could not be read: try the passkey again.".into(),
                )
                .await;
            }
        }
    };
    let answer = match &passkey {
        Some(p) => crate::mfa::Answer::Passkey(p),
        None => crate::mfa::Answer::Code(form.code.expose_secret()),
    };
    match crate::mfa::complete(&state, &client, &form.mfa_token, answer).await {
        Ok(session) => signed_in(&state, jar, session),
        Err(ApiError::InvalidCode) => {
            second_factor_again(
                &state,
                StatusCode::UNAUTHORIZED,
                &form.mfa_token,
                "That code is not right: try the current one, or a recovery code.".into(),
            )
            .await
        }
        Err(e @ ApiError::InvalidMfaToken) => {
            sign_in_again(&state, StatusCode::UNAUTHORIZED, e.to_string(), "", "")
        }
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "console sign-in failed");
            }
            second_factor_again(&state, status, &form.mfa_token, e.to_string()).await
        }
    }
}

/// What the page's script gets back from a passkey's options: the options (and the token that
/// finishes the ceremony, when there is one), or why not.
pub(crate) fn passkey_json(
    outcome: Result<(Option<String>, serde_json::Value), ApiError>,
) -> Response {
    match outcome {
        Ok((token, options)) => {
            Json(serde_json::json!({"token": token, "options": options})).into_response()
        }
        Err(e) => {
            let status = e.status();
            let message = if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "console passkey options failed");
                match e {
                    ApiError::Unavailable(m) => m,
                    _ => "Something went wrong on our side: try again.".into(),
                }
            } else {
                e.to_string()
            };
            (status, Json(serde_json::json!({"error": message}))).into_response()
        }
    }
}

#[derive(Deserialize)]
struct MfaTokenForm {
    #[serde(default)]
    mfa_token: String,
}

/// The options of a passkey as the second factor (the page's script asks).
async fn second_factor_passkey(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    Form(form): Form<MfaTokenForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let outcome = async {
        state.limits.login_from(client.peer.ip()).await?;
        let options = psa_app::passkeys::ask_second_factor(&state.app, &form.mfa_token)
            .await?
            .ok_or(ApiError::InvalidMfaToken)?;
        Ok((None, options))
    }
    .await;
    passkey_json(outcome)
}

/// The options of a sign-in with a passkey alone (the page's script asks).
async fn passkey_options(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let outcome = crate::passkeys::begin_sign_in(&state, &client)
        .await
        .map(|b| (Some(b.token.expose_secret().to_owned()), b.options));
    passkey_json(outcome)
}

#[derive(Deserialize)]
struct PasskeyForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    credential: String,
}

/// A sign-in with a passkey alone: the session, or the sign-in page saying why not.
async fn passkey_sign_in(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    jar: CookieJar,
    Form(form): Form<PasskeyForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let again =
        |status: StatusCode, message: String| sign_in_again(&state, status, message, "", "");
    let Ok(credential) = serde_json::from_str::<serde_json::Value>(&form.credential) else {
        return again(
            StatusCode::UNPROCESSABLE_ENTITY,
            "This browser gave no passkey (signing in with one needs JavaScript): try again, or \
             sign in with your email and password."
                .into(),
        );
    };
    match crate::passkeys::finish_sign_in(&state, &client, &form.token, &credential).await {
        Ok(session) => signed_in(&state, jar, session),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "console passkey sign-in failed");
            }
            again(status, e.to_string())
        }
    }
}

#[derive(Deserialize)]
struct ChooseForm {
    #[serde(default)]
    choice: String,
    #[serde(default)]
    tenant: String,
}

/// "Choose your organisation": the choice redeemed (once, within 5 minutes, only for an
/// organisation it offered) opens the session there.
async fn choose_tenant(
    State(state): State<AppState>,
    client: ClientInfo,
    headers: axum::http::HeaderMap,
    jar: CookieJar,
    Form(form): Form<ChooseForm>,
) -> Response {
    if !same_origin(&headers) {
        return cross_site();
    }
    let again =
        |status: StatusCode, message: String| sign_in_again(&state, status, message, "", "");
    let outcome = async {
        state.limits.login_from(client.peer.ip()).await?;
        let tenant = uuid::Uuid::parse_str(form.tenant.trim())
            .map(TenantId)
            .map_err(|_| ApiError::Unauthorized)?;
        let mut conn = state.pool.acquire().await?;
        let email = psa_models::sign_in::redeem_choice(&mut conn, form.choice.trim(), tenant)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        // Only the organisation chosen (by its id, which no slug can look like).
        let user = psa_models::sign_in::candidates(&mut conn, &email, Some(&tenant.to_string()))
            .await?
            .into_iter()
            .find(|c| c.tenant == tenant)
            .ok_or(ApiError::Unauthorized)?;
        drop(conn);
        crate::auth::open_session(&state, &client, user.tenant, user.user, How::Password).await
    }
    .await;
    match outcome {
        Ok(session) => signed_in(&state, jar, session),
        Err(ApiError::MfaRequired(c)) => {
            second_factor_page(StatusCode::OK, c.token, &c.methods, None)
        }
        Err(ApiError::Unauthorized) => again(
            StatusCode::UNAUTHORIZED,
            "That choice has expired or was already used: sign in again.".into(),
        ),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "console sign-in failed");
            }
            again(status, e.to_string())
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    pub(crate) csrf: String,
}

/// Ends the session (server side too) and clears the cookie.
async fn sign_out(
    State(state): State<AppState>,
    console: Console,
    jar: CookieJar,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    // Signing out of a support session ends it and returns to the operator's own console.
    if console.support.is_some() {
        return support::leave(&state, &console, jar).await;
    }
    if let crate::auth::Credential::Session(_) = console.caller.credential {
        psa_app::sessions::sign_out(&state.app, &console.caller.principal())
            .await
            .map_err(ApiError::from)?;
    }
    Ok((
        without(&state, jar, cookie_name(&state)),
        Redirect::to("/console/sign-in"),
    )
        .into_response())
}

pub(crate) struct Opt {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

pub(crate) fn options(all: &[(&'static str, &'static str)], chosen: &str) -> Vec<Opt> {
    all.iter()
        .map(|(value, label)| Opt {
            value,
            label,
            selected: *value == chosen,
        })
        .collect()
}

fn page_ok(template: impl Template) -> Response {
    page(StatusCode::OK, template)
}

/// Ends a read-only transaction.
async fn done(tx: sqlx::Transaction<'static, sqlx::Postgres>) -> Result<(), Refused> {
    tx.rollback().await.map_err(|e| ApiError::from(e).into())
}

/// The page for what does not exist.
fn not_found(what: &str) -> Refused {
    Refused::Page(
        StatusCode::NOT_FOUND,
        "Not found",
        format!("There is no such {what}."),
    )
}

/// An id given in the query string (`?before=`); anything else is a page that does not exist.
fn query_id<T: From<uuid::Uuid>>(raw: &str, what: &str) -> Result<T, Refused> {
    uuid::Uuid::parse_str(raw)
        .map(T::from)
        .map_err(|_| not_found(what))
}

/// The id of the page's resource, from the path, typed; a malformed one is a page that does
/// not exist (as an unknown one is).
pub(crate) struct PageId<T>(pub T);

/// Two ids from the path.
pub(crate) struct PageIds<A, B>(pub A, pub B);

/// An id and the word after it (`/console/users/{id}/{what}`).
pub(crate) struct PageIdAnd<T>(pub T, pub String);

impl<S, T> axum::extract::FromRequestParts<S> for PageIdAnd<T>
where
    S: Send + Sync,
    T: From<uuid::Uuid>,
{
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        let raw = axum::extract::Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found("page"))?
            .0;
        match raw.as_slice() {
            [(_, id), (_, what)] => uuid::Uuid::parse_str(id)
                .map(|id| PageIdAnd(T::from(id), what.clone()))
                .map_err(|_| not_found("page")),
            _ => Err(not_found("page")),
        }
    }
}

impl<S, T> axum::extract::FromRequestParts<S> for PageId<T>
where
    S: Send + Sync,
    T: From<uuid::Uuid>,
{
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match crate::extract::path_ids(parts, state).await.as_deref() {
            Some([id]) => Ok(PageId(T::from(*id))),
            _ => Err(not_found("page")),
        }
    }
}

impl<S, A, B> axum::extract::FromRequestParts<S> for PageIds<A, B>
where
    S: Send + Sync,
    A: From<uuid::Uuid>,
    B: From<uuid::Uuid>,
{
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, Self::Rejection> {
        match crate::extract::path_ids(parts, state).await.as_deref() {
            Some([a, b]) => Ok(PageIds(A::from(*a), B::from(*b))),
            _ => Err(not_found("page")),
        }
    }
}

/// The model's refusal of a form, shown on the form: next to its field when it names one that
/// the form has, above the form otherwise.
#[derive(Default)]
pub(crate) struct FieldErrors {
    pub general: Option<String>,
    fields: Vec<(String, String)>,
}

impl FieldErrors {
    /// Sorts an error: a refusal of what was asked is shown on the form (`Ok`): next to the
    /// field it names, or above the form (a rule, a state, no mail configured, a dependency
    /// away). Who may not and what is not there, and faults, become the error page (`Err`).
    fn from_error(e: ApiError, form_fields: &[&str]) -> Result<FieldErrors, Refused> {
        let mut errors = FieldErrors::default();
        if let ApiError::Model(m) = &e
            && let Some(f) = m.field().map(|f| f.rsplit('.').next().unwrap_or(f))
            && form_fields.contains(&f)
        {
            errors.fields.push((f.to_owned(), m.to_string()));
            return Ok(errors);
        }
        match e {
            ApiError::Unauthorized
            | ApiError::Forbidden(_)
            | ApiError::TenantInactive
            | ApiError::NotFound
            | ApiError::Model(psa_models::Error::NotFound { .. }) => Err(e.into()),
            ApiError::Unavailable(_) | ApiError::MailFailed(_) => {
                errors.general = Some(e.to_string());
                Ok(errors)
            }
            e if e.status().is_client_error() => {
                errors.general = Some(e.to_string());
                Ok(errors)
            }
            e => Err(e.into()),
        }
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, m)| m.as_str())
    }

    pub fn any(&self) -> bool {
        self.general.is_some() || !self.fields.is_empty()
    }
}

/// A tag as shown: its text in its definition's colours (the reference's shared hash), only
/// when they are plain hex colours.
pub(crate) struct Badge {
    pub text: String,
    pub style: String,
    pub mapping_id: String,
}

impl Badge {
    fn of(
        text: &str,
        background: Option<&str>,
        foreground: Option<&str>,
        mapping: String,
    ) -> Badge {
        // Checked again when shown: the style attribute takes nothing but a colour.
        let hex = |c: Option<&str>| {
            c.filter(|c| psa_models::tags::is_color(c))
                .map(str::to_owned)
        };
        let style = match (hex(background), hex(foreground)) {
            (Some(bg), Some(fg)) => format!("background-color: {bg}; color: {fg}"),
            (Some(bg), None) => format!("background-color: {bg}"),
            _ => String::new(),
        };
        Badge {
            text: text.to_owned(),
            style,
            mapping_id: mapping,
        }
    }
}

fn badge(t: &psa_models::tags::Tag) -> Badge {
    Badge::of(
        &t.tag_text,
        t.background_color.as_deref(),
        t.text_color.as_deref(),
        t.mapping_id.to_string(),
    )
}

/// A link to the next page of a list, keeping its filters.
fn next_link(path: &str, filters: &[(&str, &str)], cursor: Option<String>) -> Option<String> {
    cursor.map(|c| {
        let mut query = form_urlencoded::Serializer::new(String::new());
        for (k, v) in filters {
            query.append_pair(k, v);
        }
        query.append_pair("cursor", &c);
        format!("{path}?{}", query.finish())
    })
}

fn when(t: chrono::DateTime<chrono::Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}
