//! Single sign-on in the console: the sign-in (`/console/sso/{slug}` starts it for an
//! organisation, the email-first sign-in page starts it for an email of a verified domain, and
//! `/console/sso/callback` is where the provider sends the person back), and the administrators'
//! page (`/console/settings/sso`): the provider, who gets in, the verified domains. The rules are
//! `psa_app::sso`, as the API's.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::{Cookie, CookieJar, SameSite};
use psa_app::sso::{Callback, ConnectionView, Input, Refusal};
use psa_models::sso::Domain;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Console, CsrfForm, Nav, Refused, page, page_ok};
use crate::AppState;
use crate::auth::How;
use crate::error::ApiError;
use crate::extract::ClientInfo;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/sso/callback", get(callback))
        .route("/console/sso/{slug}", get(start))
        .route("/console/settings/sso", get(show).post(save))
        .route("/console/settings/sso/test", post(test))
        .route("/console/settings/sso/remove", post(remove))
        .route("/console/settings/sso/domains", post(add_domain))
        .route("/console/settings/sso/domains/verify", post(verify_domain))
        .route("/console/settings/sso/domains/remove", post(remove_domain))
}

/// Where a sign-in through the provider ended without a session: said in plain words.
#[derive(Template)]
#[template(path = "console/sso_refused.html")]
struct RefusedPage {
    nav: Option<Nav>,
    message: &'static str,
}

/// On from a page of this site rather than by a redirect: to the console once signed in (the
/// session cookie is SameSite=Strict, and a redirect that began at the provider's site would
/// not carry it); to the provider from the sign-in form (the console's `form-action 'self'`
/// forbids a form's redirect to another site).
#[derive(Template)]
#[template(path = "console/sso_onward.html")]
pub(super) struct Onward {
    pub(super) nav: Option<Nav>,
    pub(super) title: &'static str,
    pub(super) message: &'static str,
    pub(super) link: &'static str,
    pub(super) target: String,
}

impl Onward {
    /// To the provider at `url`.
    pub(super) fn to_provider(url: &url::Url) -> Onward {
        Onward {
            nav: None,
            title: "Signing in",
            message: "Taking you to your organisation's sign-in.",
            link: "Continue",
            target: url.to_string(),
        }
    }
}

#[derive(Deserialize)]
struct StartQuery {
    /// The email, passed on to the provider so that it need not ask again.
    #[serde(default)]
    login_hint: Option<String>,
}

async fn start(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    Path(slug): Path<String>,
    Query(q): Query<StartQuery>,
) -> Response {
    match crate::sso::target(&state, &client, None, Some(&slug)).await {
        Ok(Some((tenant, _))) => {
            let hint = q
                .login_hint
                .as_deref()
                .map(str::trim)
                .filter(|h| !h.is_empty());
            to_provider(&state, &client, jar, tenant, hint, false).await
        }
        Ok(None) => page(
            StatusCode::NOT_FOUND,
            RefusedPage {
                nav: None,
                message: "This organisation does not sign in through a provider: sign in with \
                          your email and password.",
            },
        ),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "single sign-on failed to start");
            }
            Refused::Page(status, "Not signed in", e.to_string()).into_response()
        }
    }
}

/// The cookie binding a sign-in at a provider to the browser that started it.
fn browser_cookie(state: &AppState) -> &'static str {
    if state.app.delivery.public_url.scheme() == "https" {
        "__Host-psa_sso"
    } else {
        "psa_sso"
    }
}

/// Sends the person to the tenant's provider: by a redirect, or (`page`) from a page that moves
/// on at once (a form's answer may not redirect to another site under `form-action 'self'`).
/// Their browser keeps the sign-in's binding in a cookie (for the browser's session; the sign-in
/// itself lasts five minutes, and the callback removes it).
pub(super) async fn to_provider(
    state: &AppState,
    client: &ClientInfo,
    jar: CookieJar,
    tenant: psa_models::TenantId,
    login_hint: Option<&str>,
    from_page: bool,
) -> Response {
    let started = match psa_app::sso::start(
        &state.app,
        tenant,
        login_hint,
        &client.peer.ip().to_string(),
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "single sign-on failed to start");
            }
            return Refused::Page(status, "Not signed in", e.to_string()).into_response();
        }
    };
    let mut cookie = Cookie::new(
        browser_cookie(state),
        started.browser.expose_secret().to_owned(),
    );
    cookie.set_http_only(true);
    // Lax: the provider's answer is a top-level navigation from its site.
    cookie.set_same_site(SameSite::Lax);
    cookie.set_path("/");
    cookie.set_secure(state.app.delivery.public_url.scheme() == "https");
    let jar = jar.add(cookie);
    if from_page {
        (jar, page(StatusCode::OK, Onward::to_provider(&started.url))).into_response()
    } else {
        (jar, Redirect::to(started.url.as_str())).into_response()
    }
}

#[derive(Deserialize)]
struct CallbackQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

async fn callback(
    State(state): State<AppState>,
    client: ClientInfo,
    jar: CookieJar,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let refused = |r: Refusal| {
        page(
            StatusCode::FORBIDDEN,
            RefusedPage {
                nav: None,
                message: r.message(),
            },
        )
    };
    if let Err(e) = state.limits.login_from(client.peer.ip()).await {
        return e.into_response();
    }
    let cb = Callback {
        state: q.state,
        code: q.code,
        error: q.error,
        error_description: q.error_description,
    };
    let browser = jar
        .get(browser_cookie(&state))
        .map(|c| c.value().to_owned());
    // Used once, whatever the outcome.
    let jar = jar.remove(Cookie::build(browser_cookie(&state)).path("/"));
    let finished = psa_app::sso::finish(
        &state.app,
        cb,
        browser.as_deref(),
        &client.peer.ip().to_string(),
    )
    .await;
    let verified = match finished {
        Ok(Ok(v)) => v,
        Ok(Err(r)) => return (jar, refused(r)).into_response(),
        Err(e) => {
            let e = ApiError::from(e);
            tracing::error!(error = %e.log_safe(), "single sign-on failed");
            return (jar, Refused::from(e)).into_response();
        }
    };
    let session = crate::auth::open_session_in(
        &state,
        &client,
        verified.tx,
        verified.tenant,
        verified.user,
        How::Sso,
    )
    .await;
    match session {
        Ok(session) => {
            let jar = super::session_jar(&state, jar, session);
            (
                jar,
                page(
                    StatusCode::OK,
                    Onward {
                        nav: None,
                        title: "Signed in",
                        message: "You are signed in.",
                        link: "Continue to the console",
                        target: "/console".into(),
                    },
                ),
            )
                .into_response()
        }
        Err(e @ ApiError::TenantInactive) => (
            jar,
            Refused::Page(StatusCode::FORBIDDEN, "Access suspended", e.to_string()),
        )
            .into_response(),
        Err(e) => (jar, Refused::from(e)).into_response(),
    }
}

#[derive(Template)]
#[template(path = "console/sso_settings.html")]
struct SettingsPage {
    nav: Option<Nav>,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    /// The connection as saved (or as typed, after an error).
    c: ConnectionView,
    exists: bool,
    roles: Vec<String>,
    domains: Vec<Domain>,
}

fn blank(state: &AppState) -> ConnectionView {
    ConnectionView {
        issuer: String::new(),
        client_id: String::new(),
        has_client_secret: false,
        scopes: vec!["openid".into(), "email".into(), "profile".into()],
        email_claim: "email".into(),
        first_name_claim: "given_name".into(),
        last_name_claim: "family_name".into(),
        jit: false,
        jit_role: "Technician".into(),
        required: false,
        break_glass: Vec::new(),
        enabled: true,
        redirect_uri: psa_app::sso::redirect_uri(&state.app),
    }
}

async fn settings_page(
    state: &AppState,
    console: &Console,
    notice: Option<String>,
    error: Option<String>,
    typed: Option<ConnectionView>,
) -> Result<SettingsPage, Refused> {
    let who = console.caller.principal();
    let tenant = console.caller.tenant;
    let saved = psa_app::sso::show(&state.app, &who, tenant)
        .await
        .map_err(ApiError::from)?;
    let domains = psa_app::sso::domains(&state.app, &who, tenant)
        .await
        .map_err(ApiError::from)?;
    let mut tx = psa_models::db::begin_tenant(&state.pool, tenant)
        .await
        .map_err(ApiError::from)?;
    let roles: Vec<String> = sqlx::query_scalar(
        "SELECT role_name FROM roles WHERE tenant = $1 AND msp ORDER BY role_name",
    )
    .bind(tenant)
    .fetch_all(&mut *tx)
    .await
    .map_err(ApiError::from)?;
    tx.rollback().await.map_err(ApiError::from)?;
    let exists = saved.is_some();
    Ok(SettingsPage {
        nav: console.nav("sso"),
        csrf: console.csrf.clone(),
        notice,
        error,
        c: typed.or(saved).unwrap_or_else(|| blank(state)),
        exists,
        roles,
        domains,
    })
}

async fn show(State(state): State<AppState>, console: Console) -> Result<Response, Refused> {
    Ok(page_ok(
        settings_page(&state, &console, None, None, None).await?,
    ))
}

#[derive(Deserialize)]
struct ConnectionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    issuer: String,
    #[serde(default)]
    client_id: String,
    #[serde(default)]
    client_secret: String,
    /// "none": a public client (PKCE only); the secret field is then ignored.
    #[serde(default)]
    public_client: Option<String>,
    #[serde(default)]
    scopes: String,
    #[serde(default)]
    email_claim: String,
    #[serde(default)]
    first_name_claim: String,
    #[serde(default)]
    last_name_claim: String,
    #[serde(default)]
    jit: Option<String>,
    #[serde(default)]
    jit_role: String,
    #[serde(default)]
    required: Option<String>,
    #[serde(default)]
    break_glass: String,
    #[serde(default)]
    enabled: Option<String>,
}

async fn save(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<ConnectionForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let break_glass: Vec<String> = f
        .break_glass
        .split([',', '\n', ' '])
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(str::to_owned)
        .collect();
    let scopes: Vec<String> = f.scopes.split_whitespace().map(str::to_owned).collect();
    let client_secret = if f.public_client.is_some() {
        Some(SecretString::from(String::new()))
    } else if f.client_secret.trim().is_empty() {
        None
    } else {
        Some(SecretString::from(f.client_secret.clone()))
    };
    let input = Input {
        issuer: f.issuer.clone(),
        client_id: f.client_id.clone(),
        client_secret,
        scopes: Some(scopes.clone()),
        email_claim: Some(f.email_claim.clone()),
        first_name_claim: Some(f.first_name_claim.clone()),
        last_name_claim: Some(f.last_name_claim.clone()),
        jit: f.jit.is_some(),
        jit_role: Some(f.jit_role.clone()),
        required: f.required.is_some(),
        break_glass: break_glass.clone(),
        enabled: f.enabled.is_some(),
    };
    let who = console.caller.principal();
    match psa_app::sso::set(&state.app, &who, console.caller.tenant, input).await {
        Ok(_) => Ok(page_ok(
            settings_page(
                &state,
                &console,
                Some("Saved. Sign-ins now go through the provider.".into()),
                None,
                None,
            )
            .await?,
        )),
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status();
            let mut typed = blank(&state);
            typed.issuer = f.issuer;
            typed.client_id = f.client_id;
            typed.scopes = scopes;
            typed.email_claim = f.email_claim;
            typed.first_name_claim = f.first_name_claim;
            typed.last_name_claim = f.last_name_claim;
            typed.jit = f.jit.is_some();
            typed.jit_role = f.jit_role;
            typed.required = f.required.is_some();
            typed.break_glass = break_glass;
            typed.enabled = f.enabled.is_some();
            let p = settings_page(&state, &console, None, Some(e.to_string()), Some(typed)).await?;
            Ok(page(status, p))
        }
    }
}

/// A page after an action: the notice, or the error with its status.
async fn after(
    state: &AppState,
    console: &Console,
    outcome: Result<String, psa_models::Error>,
) -> Result<Response, Refused> {
    match outcome {
        Ok(notice) => Ok(page_ok(
            settings_page(state, console, Some(notice), None, None).await?,
        )),
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status();
            let p = settings_page(state, console, None, Some(e.to_string()), None).await?;
            Ok(page(status, p))
        }
    }
}

async fn test(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let who = console.caller.principal();
    let outcome = psa_app::sso::test(&state.app, &who, console.caller.tenant)
        .await
        .map(|r| {
            format!(
                "The provider answers: issuer {}, {} signing key(s), sign-in at {}.",
                r.issuer, r.signing_keys, r.authorization_endpoint
            )
        });
    after(&state, &console, outcome).await
}

async fn remove(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let who = console.caller.principal();
    let outcome = psa_app::sso::remove(&state.app, &who, console.caller.tenant)
        .await
        .map(|()| "Single sign-on is removed: your users sign in with their passwords.".to_owned());
    after(&state, &console, outcome).await
}

#[derive(Deserialize)]
struct DomainForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    domain: String,
}

async fn add_domain(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<DomainForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let who = console.caller.principal();
    let outcome = psa_app::sso::add_domain(&state.app, &who, console.caller.tenant, &f.domain)
        .await
        .map(|d| {
            format!(
                "Publish a TXT record at {} with the value {}, then verify.",
                d.domain, d.txt_record
            )
        });
    after(&state, &console, outcome).await
}

async fn verify_domain(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<DomainForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let who = console.caller.principal();
    let outcome = psa_app::sso::verify_domain(&state.app, &who, console.caller.tenant, &f.domain)
        .await
        .map(|d| {
            format!(
                "{} is verified: its emails sign in through your provider.",
                d.domain
            )
        });
    after(&state, &console, outcome).await
}

async fn remove_domain(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<DomainForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let who = console.caller.principal();
    let outcome = psa_app::sso::remove_domain(&state.app, &who, console.caller.tenant, &f.domain)
        .await
        .map(|()| format!("{} is removed.", f.domain.trim()));
    after(&state, &console, outcome).await
}
