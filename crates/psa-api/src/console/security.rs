//! The signed-in user's sign-in security: their second factor (an authenticator app set up by
//! scanning a QR code and confirming a code, its recovery codes shown once, removal with the
//! password) and their sessions (where and when each was opened and used; sign out one, or
//! every other). The operations are `psa_app::mfa` and `psa_app::sessions`, as the API's.

use askama::Template;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use psa_app::mfa::Standing;
use psa_models::credentials::SessionView;
use secrecy::SecretString;
use serde::Deserialize;

use super::{Console, CsrfForm, Nav, PageId, Refused, page, page_ok};
use crate::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/account/second-factor", get(show))
        .route("/console/account/second-factor/start", post(start))
        .route("/console/account/second-factor/confirm", post(confirm))
        .route("/console/account/second-factor/remove", post(remove))
        .route("/console/account/passkeys/options", post(passkey_options))
        .route("/console/account/passkeys", post(add_passkey))
        .route("/console/account/passkeys/remove", post(remove_passkey))
        .route("/console/account/sessions", get(sessions))
        .route("/console/account/sessions/{id}/end", post(end_one))
        .route("/console/account/sessions/end-others", post(end_others))
}

#[derive(Template)]
#[template(path = "console/second_factor_setup.html")]
struct SecondFactorSetup {
    nav: Option<Nav>,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    /// `none`, `enrolling` or `enrolled`.
    state: &'static str,
    secret: String,
    /// The QR code of the `otpauth` URI, as SVG (made here from the URI: nothing a user wrote).
    qr_svg: String,
    recovery_codes_left: i64,
    /// Shown once, after confirming.
    recovery_codes: Vec<String>,
    /// This server offers passkeys (`PSA_PUBLIC_URL` names it by a domain).
    passkeys_available: bool,
    /// The user has a second factor: adding another asks for the password.
    has_factor: bool,
    passkeys: Vec<PasskeyRow>,
}

struct PasskeyRow {
    id: String,
    name: String,
    created: String,
    last_used: String,
}

fn qr(uri: &str) -> Result<String, ApiError> {
    let code = qrcode::QrCode::new(uri.as_bytes()).map_err(ApiError::internal)?;
    Ok(code
        .render::<qrcode::render::svg::Color>()
        .min_dimensions(220, 220)
        .quiet_zone(true)
        .build())
}

async fn setup_page(
    state: &AppState,
    console: &Console,
    notice: Option<String>,
    error: Option<String>,
) -> Result<SecondFactorSetup, Refused> {
    let standing = psa_app::mfa::standing(&state.app, &console.caller.principal())
        .await
        .map_err(ApiError::from)?;
    let passkeys = psa_app::passkeys::list_own(&state.app, &console.caller.principal())
        .await
        .map_err(ApiError::from)?;
    let mut p = SecondFactorSetup {
        nav: console.nav("security"),
        csrf: console.csrf.clone(),
        notice,
        error,
        state: "none",
        secret: String::new(),
        qr_svg: String::new(),
        recovery_codes_left: 0,
        recovery_codes: Vec::new(),
        passkeys_available: psa_app::passkeys::available(&state.app),
        has_factor: !passkeys.is_empty() || matches!(standing, Standing::Enrolled { .. }),
        passkeys: passkeys
            .into_iter()
            .map(|p| PasskeyRow {
                id: p.passkey_id.to_string(),
                name: p.name,
                created: when(p.created_at),
                last_used: p.last_used_at.map_or_else(|| "never".into(), when),
            })
            .collect(),
    };
    match standing {
        Standing::None => {}
        Standing::Enrolling(e) => {
            p.state = "enrolling";
            p.qr_svg = qr(&e.otpauth_uri)?;
            p.secret = e.secret;
        }
        Standing::Enrolled {
            recovery_codes_left,
        } => {
            p.state = "enrolled";
            p.recovery_codes_left = recovery_codes_left;
        }
    }
    Ok(p)
}

async fn show(State(state): State<AppState>, console: Console) -> Result<Response, Refused> {
    Ok(page_ok(setup_page(&state, &console, None, None).await?))
}

/// A form that may carry the user's password: what adding a second factor asks of a user who
/// has one.
#[derive(Deserialize)]
struct ProvenForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    name: String,
}

/// The proof a form carries: the password, checked with the sign-in limits; none when empty.
async fn proof_in(
    state: &AppState,
    console: &Console,
    password: &str,
) -> Result<Option<psa_app::mfa::Proof<'static>>, ApiError> {
    if password.is_empty() {
        return Ok(None);
    }
    crate::auth::verify_own_password(state, &console.caller, &SecretString::from(password)).await?;
    Ok(Some(psa_app::mfa::Proof::PasswordChecked))
}

async fn start(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<ProvenForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let begun = match proof_in(&state, &console, &f.password).await {
        Ok(proof) => psa_app::mfa::begin_totp(&state.app, &console.caller.principal(), proof)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match begun {
        Ok(_) => Ok(page_ok(setup_page(&state, &console, None, None).await?)),
        Err(e) => {
            let status = e.status();
            let p = setup_page(&state, &console, None, Some(e.to_string())).await?;
            Ok(page(status, p))
        }
    }
}

#[derive(Deserialize)]
struct CodeForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    code: String,
}

async fn confirm(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<CodeForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    match psa_app::mfa::confirm_totp(&state.app, &console.caller.principal(), &f.code).await {
        Ok(codes) => {
            let mut p = setup_page(
                &state,
                &console,
                Some("Your authenticator app is set up: sign-ins now ask for its code.".into()),
                None,
            )
            .await?;
            p.recovery_codes = codes;
            Ok(page_ok(p))
        }
        Err(e) => {
            let e = ApiError::from(e);
            let status = e.status();
            let p = setup_page(&state, &console, None, Some(e.to_string())).await?;
            Ok(page(status, p))
        }
    }
}

#[derive(Deserialize)]
struct RemoveForm {
    #[serde(default)]
    csrf: String,
    password: SecretString,
}

async fn remove(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<RemoveForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let outcome = match crate::auth::verify_own_password(&state, &console.caller, &f.password).await
    {
        Ok(()) => psa_app::mfa::remove_own(
            &state.app,
            &console.caller.principal(),
            psa_app::mfa::Proof::PasswordChecked,
        )
        .await
        .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    let (status, notice, error) = match outcome {
        Ok(()) => (
            StatusCode::OK,
            Some("The authenticator app and its recovery codes are removed.".to_owned()),
            None,
        ),
        Err(e) => (e.status(), None, Some(e.to_string())),
    };
    let p = setup_page(&state, &console, notice, error).await?;
    Ok(page(status, p))
}

/// The options of a passkey registration (the page's script asks; JSON back).
async fn passkey_options(
    State(state): State<AppState>,
    console: Console,
    client: crate::extract::ClientInfo,
    Form(f): Form<ProvenForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let outcome = async {
        let proof = proof_in(&state, &console, &f.password).await?;
        let b = psa_app::passkeys::begin_registration(
            &state.app,
            &console.caller.principal(),
            &client.peer.ip().to_string(),
            &f.name,
            proof,
        )
        .await?;
        use secrecy::ExposeSecret;
        Ok((Some(b.token.expose_secret().to_owned()), b.options))
    }
    .await;
    Ok(super::passkey_json(outcome))
}

#[derive(Deserialize)]
struct AddPasskeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    credential: String,
}

async fn add_passkey(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<AddPasskeyForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let outcome = match serde_json::from_str::<serde_json::Value>(&f.credential) {
        Ok(credential) => psa_app::passkeys::finish_registration(
            &state.app,
            &console.caller.principal(),
            &f.token,
            &credential,
        )
        .await
        .map_err(ApiError::from),
        Err(_) => Err(ApiError::Model(psa_models::Error::validation(
            "credential",
            "This browser gave no passkey (adding one needs JavaScript and a device that \
             supports passkeys)",
        ))),
    };
    match outcome {
        Ok(done) => {
            let notice = format!(
                "The passkey \"{}\" is added: it signs you in, alone or after your password.",
                done.passkey.name
            );
            let mut p = setup_page(&state, &console, Some(notice), None).await?;
            p.recovery_codes = done.recovery_codes;
            Ok(page_ok(p))
        }
        Err(e) => {
            let status = e.status();
            let p = setup_page(&state, &console, None, Some(e.to_string())).await?;
            Ok(page(status, p))
        }
    }
}

#[derive(Deserialize)]
struct RemovePasskeyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    passkey: String,
    #[serde(default)]
    password: String,
}

async fn remove_passkey(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<RemovePasskeyForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let outcome = async {
        let id = uuid::Uuid::parse_str(f.passkey.trim()).map_err(|_| {
            ApiError::Model(psa_models::Error::validation(
                "passkey",
                "Choose the passkey to remove",
            ))
        })?;
        let proof = proof_in(&state, &console, &f.password)
            .await?
            .ok_or_else(|| {
                ApiError::Model(psa_models::Error::validation(
                    "password",
                    "Your password is needed to remove a passkey",
                ))
            })?;
        psa_app::passkeys::remove_own(&state.app, &console.caller.principal(), id, proof).await?;
        Ok::<_, ApiError>(())
    }
    .await;
    let (status, notice, error) = match outcome {
        Ok(()) => (
            StatusCode::OK,
            Some("The passkey is removed.".to_owned()),
            None,
        ),
        Err(e) => (e.status(), None, Some(e.to_string())),
    };
    let p = setup_page(&state, &console, notice, error).await?;
    Ok(page(status, p))
}

struct SessionRow {
    id: String,
    created: String,
    last_seen: String,
    address: String,
    agent: String,
    second_factor: bool,
    current: bool,
}

#[derive(Template)]
#[template(path = "console/sessions.html")]
struct SessionsPage {
    nav: Option<Nav>,
    csrf: String,
    notice: Option<String>,
    rows: Vec<SessionRow>,
}

fn when(at: chrono::DateTime<chrono::Utc>) -> String {
    at.format("%Y-%m-%d %H:%M UTC").to_string()
}

async fn sessions_page(
    state: &AppState,
    console: &Console,
    notice: Option<String>,
) -> Result<SessionsPage, Refused> {
    let list: Vec<SessionView> =
        psa_app::sessions::list_own(&state.app, &console.caller.principal())
            .await
            .map_err(ApiError::from)?;
    Ok(SessionsPage {
        nav: console.nav("sessions"),
        csrf: console.csrf.clone(),
        notice,
        rows: list
            .into_iter()
            .map(|s| SessionRow {
                id: s.session_id.to_string(),
                created: when(s.created_at),
                last_seen: when(s.last_seen_at),
                address: s.address.unwrap_or_else(|| "unknown".into()),
                agent: s.user_agent.unwrap_or_else(|| "unknown".into()),
                second_factor: s.second_factor,
                current: s.current,
            })
            .collect(),
    })
}

async fn sessions(State(state): State<AppState>, console: Console) -> Result<Response, Refused> {
    Ok(page_ok(sessions_page(&state, &console, None).await?))
}

async fn end_one(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<uuid::Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    psa_app::sessions::end_own(&state.app, &console.caller.principal(), id)
        .await
        .map_err(ApiError::from)?;
    Ok(Redirect::to("/console/account/sessions").into_response())
}

async fn end_others(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let n = psa_app::sessions::end_others(&state.app, &console.caller.principal())
        .await
        .map_err(ApiError::from)?;
    let notice = format!("{n} other session(s) signed out.");
    Ok(page_ok(
        sessions_page(&state, &console, Some(notice)).await?,
    ))
}
