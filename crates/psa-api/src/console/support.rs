//! Support sessions in the console: opened from a tenant's page (its token in a cookie of its
//! own, beside the operator's), ended from the banner, by signing out, or from the tenant page.

use askama::Template;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::cookie::CookieJar;
use secrecy::ExposeSecret;
use serde::Deserialize;

use psa_models::support::Request;
use psa_models::{TenantId, UserId};

use super::{
    Console, CsrfForm, Nav, PageId, PageIds, Refused, page, private_cookie, support_cookie_name,
    when, without,
};
use crate::AppState;
use crate::error::ApiError;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/tenants/{id}/support", post(open))
        .route("/console/tenants/{id}/support/{session}/end", post(end))
        .route("/console/support/end", post(end_here))
        .route("/console/support-access", get(access_page).post(set_access))
}

/// The tenant's own view: support access on or off, the support sessions into it and what
/// they did.
#[derive(Template)]
#[template(path = "console/support_access.html")]
struct AccessPage {
    nav: Option<Nav>,
    csrf: String,
    notice: Option<&'static str>,
    error: Option<String>,
    allowed: bool,
    sessions: Vec<SupportRow>,
    actions: Vec<ActionRow>,
}

/// A support session as the tenant's page and the tenant's own view list it.
pub(super) struct SupportRow {
    pub(super) id: String,
    pub(super) operator: String,
    pub(super) user: String,
    pub(super) reason: String,
    pub(super) started: String,
    /// `open until HH:MM UTC`, or how it ended.
    pub(super) state: String,
    pub(super) open: bool,
}

impl From<psa_models::support::SupportSession> for SupportRow {
    fn from(s: psa_models::support::SupportSession) -> Self {
        SupportRow {
            id: s.support_session_id.to_string(),
            state: s.state_label(),
            open: s.is_open(),
            started: when(s.started_at),
            operator: s.operator,
            user: s.user_email,
            reason: s.reason,
        }
    }
}

struct ActionRow {
    at: String,
    who: String,
    action: String,
    entity: String,
}

async fn access_view(
    state: &AppState,
    console: &Console,
    status: StatusCode,
    notice: Option<&'static str>,
    error: Option<String>,
) -> Result<Response, Refused> {
    let v = psa_app::support::own_view(
        &state.app,
        &console.caller.principal(),
        console.caller.tenant,
    )
    .await
    .map_err(ApiError::from)?;
    Ok(page(
        status,
        AccessPage {
            nav: console.nav("support"),
            csrf: console.csrf.clone(),
            notice,
            error,
            allowed: v.allowed,
            sessions: v.sessions.into_iter().map(SupportRow::from).collect(),
            actions: v
                .actions
                .into_iter()
                .map(|a| ActionRow {
                    at: when(a.created_at),
                    who: format!(
                        "{} as {}",
                        a.actor_id,
                        a.actor_email.unwrap_or_else(|| "a former user".into())
                    ),
                    action: a.action.replace('_', " "),
                    entity: a.entity_type.replace('_', " "),
                })
                .collect(),
        },
    ))
}

async fn access_page(State(state): State<AppState>, console: Console) -> Result<Response, Refused> {
    access_view(&state, &console, StatusCode::OK, None, None).await
}

#[derive(Deserialize)]
struct AccessForm {
    #[serde(default)]
    csrf: String,
    /// The box "allow support sessions" (`yes` when ticked).
    #[serde(default)]
    allowed: Option<String>,
}

async fn set_access(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<AccessForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let allowed = f.allowed.as_deref() == Some("yes");
    match psa_app::support::set_access(
        &state.app,
        &console.caller.principal(),
        console.caller.tenant,
        allowed,
    )
    .await
    {
        Ok(_) => {
            let notice = if allowed {
                "Support access is allowed."
            } else {
                "Support access is off; any support session open was ended."
            };
            access_view(&state, &console, StatusCode::OK, Some(notice), None).await
        }
        Err(psa_models::Error::Forbidden(m)) => {
            access_view(
                &state,
                &console,
                StatusCode::FORBIDDEN,
                None,
                Some(m.into_owned()),
            )
            .await
        }
        Err(e) => Err(ApiError::from(e).into()),
    }
}

#[derive(Deserialize)]
struct OpenForm {
    #[serde(default)]
    csrf: String,
    /// Empty: the tenant's first administrator.
    #[serde(default)]
    user_id: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    minutes: String,
}

/// Opens a support session and the tenant's console in it.
async fn open(
    State(state): State<AppState>,
    console: Console,
    jar: CookieJar,
    PageId(tenant): PageId<TenantId>,
    Form(f): Form<OpenForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let parsed = parse(&f);
    let opened = match parsed {
        Ok(req) => psa_app::support::open(&state.app, &console.caller.principal(), tenant, &req)
            .await
            .map_err(ApiError::from),
        Err(e) => Err(e),
    };
    match opened {
        Ok(o) => {
            let mut cookie = private_cookie(
                &state,
                support_cookie_name(&state),
                o.token.expose_secret().to_owned(),
            );
            // The browser forgets it when the support session ends at its time.
            let left = (o.session.ends_at - chrono::Utc::now())
                .num_seconds()
                .max(0);
            cookie.set_max_age(time::Duration::seconds(left));
            Ok((jar.add(cookie), Redirect::to("/console")).into_response())
        }
        Err(e) => super::tenants::refused(&state, &console, tenant, e).await,
    }
}

fn parse(f: &OpenForm) -> Result<Request, ApiError> {
    let user = match f.user_id.trim() {
        "" => None,
        raw => Some(UserId(uuid::Uuid::parse_str(raw).map_err(|_| {
            ApiError::Model(psa_models::Error::validation(
                "user_id",
                "Choose a user of the tenant",
            ))
        })?)),
    };
    let minutes = match f.minutes.trim() {
        "" => None,
        raw => Some(raw.parse::<u32>().map_err(|_| {
            ApiError::Model(psa_models::Error::validation(
                "minutes",
                "The length is a number of minutes, 1 to 60",
            ))
        })?),
    };
    Ok(Request {
        user,
        reason: f.reason.clone(),
        minutes,
    })
}

/// Ends a support session from the tenant's page (management, `tenant:support`).
async fn end(
    State(state): State<AppState>,
    console: Console,
    PageIds(tenant, session): PageIds<TenantId, uuid::Uuid>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let outcome = psa_app::support::end(&state.app, &console.caller.principal(), tenant, session)
        .await
        .map(|_| "The support session has ended.".to_owned())
        .map_err(ApiError::from);
    super::tenants::after(&state, &console, tenant, outcome).await
}

/// "End now" in the banner.
async fn end_here(
    State(state): State<AppState>,
    console: Console,
    jar: CookieJar,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    leave(&state, &console, jar).await
}

/// Ends the support session this console is in and returns to the operator's own console, on
/// the tenant's page.
pub(super) async fn leave(
    state: &AppState,
    console: &Console,
    jar: CookieJar,
) -> Result<Response, Refused> {
    let Some(s) = &console.support else {
        return Ok(Redirect::to("/console").into_response());
    };
    psa_app::support::end(
        &state.app,
        &console.caller.principal(),
        s.tenant_id,
        s.support_session_id,
    )
    .await
    .map_err(ApiError::from)?;
    Ok((
        without(state, jar, support_cookie_name(state)),
        Redirect::to(&format!("/console/tenants/{}", s.tenant_id)),
    )
        .into_response())
}
