//! The signed-in user's own password, and the forgotten-password request: the API's functions
//! (`crate::auth`), with their limits, strength rules and audit. Accepting an invitation and
//! setting a password from a mailed link are the pages in `crate::pages`.

use askama::Template;
use axum::Router;
use axum::extract::{ConnectInfo, Form, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{Console, FieldErrors, Nav, Refused, page, page_ok};
use crate::AppState;
use crate::auth::{ChangePasswordRequest, PasswordResetRequest};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/account/password", get(password_form).post(change))
        .route("/console/forgot-password", get(forgot_form).post(forgot))
}

#[derive(Template)]
#[template(path = "console/password.html")]
struct PasswordPage {
    nav: Option<Nav>,
    csrf: String,
    notice: Option<String>,
    errors: FieldErrors,
}

async fn password_form(console: Console) -> Response {
    page_ok(PasswordPage {
        nav: console.nav("account"),
        csrf: console.csrf.clone(),
        notice: None,
        errors: FieldErrors::default(),
    })
}

#[derive(Deserialize)]
struct ChangeForm {
    #[serde(default)]
    csrf: String,
    current_password: SecretString,
    new_password: SecretString,
    new_password_confirm: SecretString,
    /// The box "also revoke my API keys" (`yes` when ticked).
    #[serde(default)]
    revoke_api_keys: Option<String>,
}

async fn change(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<ChangeForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let revoke_api_keys = f.revoke_api_keys.as_deref() == Some("yes");
    let outcome = if f.new_password.expose_secret() != f.new_password_confirm.expose_secret() {
        Err(ApiError::Model(psa_models::Error::validation(
            "new_password_confirm",
            "The two new passwords differ",
        )))
    } else {
        let req = ChangePasswordRequest {
            current_password: f.current_password,
            new_password: f.new_password,
            revoke_api_keys,
        };
        crate::auth::change_own_password(&state, &console.caller, &req).await
    };
    match outcome {
        Ok(()) => Ok(page_ok(PasswordPage {
            nav: console.nav("account"),
            csrf: console.csrf.clone(),
            notice: Some(if revoke_api_keys {
                "Password changed. Your other sessions were signed out and your API keys revoked."
            } else {
                "Password changed. Your other sessions were signed out."
            }
            .into()),
            errors: FieldErrors::default(),
        })),
        Err(e) => {
            let status = e.status();
            let errors = FieldErrors::from_error(
                e,
                &["current_password", "new_password", "new_password_confirm"],
            )?;
            Ok(page(
                status,
                PasswordPage {
                    nav: console.nav("account"),
                    csrf: console.csrf.clone(),
                    notice: None,
                    errors,
                },
            ))
        }
    }
}

#[derive(Template)]
#[template(path = "console/forgot.html")]
struct ForgotPage {
    nav: Option<Nav>,
    tenant: String,
    email: String,
    notice: Option<String>,
    error: Option<String>,
}

async fn forgot_form() -> Response {
    page_ok(ForgotPage {
        nav: None,
        tenant: String::new(),
        email: String::new(),
        notice: None,
        error: None,
    })
}

#[derive(Deserialize)]
struct ForgotForm {
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    email: String,
}

async fn forgot(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: axum::http::HeaderMap,
    Form(f): Form<ForgotForm>,
) -> Response {
    if !super::same_origin(&headers) {
        return super::cross_site();
    }
    let again = |status: StatusCode, notice: Option<String>, error: Option<String>| {
        page(
            status,
            ForgotPage {
                nav: None,
                tenant: f.tenant.clone(),
                email: f.email.clone(),
                notice,
                error,
            },
        )
    };
    let req = PasswordResetRequest {
        tenant: Some(f.tenant.clone()),
        tenant_id: None,
        email: f.email.clone(),
    };
    match crate::auth::ask_password_reset(&state, peer, &req).await {
        Ok(message) => again(StatusCode::OK, Some(message), None),
        Err(e) => {
            let status = e.status();
            if status.is_server_error() {
                tracing::error!(error = %e.log_safe(), "console password reset request failed");
            }
            again(status, None, Some(e.to_string()))
        }
    }
}
