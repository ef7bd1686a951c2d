//! Server-rendered pages: where invitation and password-reset links land. Templates are
//! minijinja (autoescaped); the only script is a static file, so the Content-Security-Policy
//! allows no inline code.

use std::sync::LazyLock;

use axum::Router;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use psa_models::auth_tokens::Purpose;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use crate::AppState;
use crate::error::ApiError;

static TEMPLATES: LazyLock<minijinja::Environment<'static>> = LazyLock::new(|| {
    let mut env = minijinja::Environment::new();
    for (name, source) in [
        (
            "layout.html",
            include_str!("../templates/pages/layout.html"),
        ),
        (
            "set_password.html",
            include_str!("../templates/pages/set_password.html"),
        ),
        ("done.html", include_str!("../templates/pages/done.html")),
    ] {
        env.add_template(name, source)
            .expect("the page templates are valid");
    }
    env
});

/// The page routes (no authentication: the link's token is the credential).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            Purpose::Invitation.page(),
            get(|| async { form(Purpose::Invitation, None, Some(""), StatusCode::OK) })
                .post(|s, c, f| submit(Purpose::Invitation, s, c, f)),
        )
        .route(
            Purpose::PasswordReset.page(),
            get(|| async { form(Purpose::PasswordReset, None, Some(""), StatusCode::OK) })
                .post(|s, c, f| submit(Purpose::PasswordReset, s, c, f)),
        )
        .route(
            "/assets/set-password.js",
            get(|| async {
                asset(
                    "text/javascript; charset=utf-8",
                    include_str!("../assets/set-password.js"),
                )
            }),
        )
        .route(
            "/assets/psa.css",
            get(|| async { asset("text/css; charset=utf-8", include_str!("../assets/psa.css")) }),
        )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut r = body.into_response();
    r.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    r
}

/// An HTML page with the headers every page carries (and the router adds `nosniff` to all):
/// no inline script, no framing, no referrer
/// (the page's address never leaks to another site).
fn page(status: StatusCode, html: String) -> Response {
    let mut r = (status, axum::response::Html(html)).into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    r
}

fn render(name: &str, values: minijinja::Value) -> String {
    TEMPLATES
        .get_template(name)
        .and_then(|t| t.render(values))
        .expect("the page templates render")
}

/// The set-password form; `token` is put back after a refused attempt (the address bar no
/// longer has it).
fn form(
    purpose: Purpose,
    error: Option<&str>,
    token: Option<&str>,
    status: StatusCode,
) -> Response {
    let (heading, intro, button) = match purpose {
        Purpose::Invitation => (
            "Choose your password",
            "Welcome to psa. Choose the password you will sign in with.",
            "Set password",
        ),
        Purpose::PasswordReset => (
            "Choose a new password",
            "Choose a new password. Every other session of your account will be signed out.",
            "Set new password",
        ),
    };
    page(
        status,
        render(
            "set_password.html",
            minijinja::context! {
                heading, intro, button, error, token,
                action => purpose.page(),
                script => "/assets/set-password.js",
            },
        ),
    )
}

/// The form's fields.
#[derive(Deserialize)]
pub struct SetPasswordForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    password_confirm: String,
}

async fn submit(
    purpose: Purpose,
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    Form(f): Form<SetPasswordForm>,
) -> Response {
    if f.password != f.password_confirm {
        return form(
            purpose,
            Some("The two passwords differ."),
            Some(&f.token),
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let token = SecretString::from(f.token);
    let password = SecretString::from(f.password);
    match crate::auth::set_password_by_link(&state, peer.ip(), purpose, &token, &password).await {
        Ok(redeemed) => done(&redeemed),
        Err(e) => {
            let status = e.status();
            // A link that no longer works cannot be retried with another password: no form, only
            // the reason.
            let keep = if matches!(e, ApiError::Model(psa_models::Error::InvalidLink(_))) {
                None
            } else {
                Some(token.expose_secret())
            };
            let message = if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "setting a password failed");
                "Something went wrong on our side. Try again in a moment.".to_owned()
            } else {
                e.to_string()
            };
            form(purpose, Some(&message), keep, status)
        }
    }
}

/// The success page. It opens no session: the user signs in with the new password (a session
/// cookie would be a live credential that nothing here reads yet).
fn done(redeemed: &crate::auth::Redeemed) -> Response {
    // Straight into this organisation, whichever others the email is in.
    let sign_in = format!(
        "/console/sign-in?{}",
        form_urlencoded::Serializer::new(String::new())
            .append_pair("org", &redeemed.tenant_slug)
            .finish()
    );
    page(
        StatusCode::OK,
        render(
            "done.html",
            minijinja::context! {
                tenant_name => &redeemed.tenant_name,
                email => &redeemed.email,
                sign_in,
            },
        ),
    )
}
