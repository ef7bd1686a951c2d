//! The tenant's users, for its admins (`user:*`): invite with a role, resend an invitation,
//! change a role, deactivate and reactivate, through the API's own functions (`crate::users`):
//! the same rules (the last admin stays, nobody deactivates themselves), mail and audit.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use psa_models::UserId;
use psa_models::invitations::NewInvitee;
use psa_models::users::UserStatus;
use serde::Deserialize;

use super::{Console, CsrfForm, FieldErrors, Nav, Opt, PageId, PageIdAnd, Refused, page};
use crate::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/users", get(users).post(invite))
        .route("/console/users/{id}/role", post(role))
        .route("/console/users/security-policy", post(security_policy))
        .route("/console/users/{id}/{change}", post(one_click))
}

/// The staff roles a user can be given (the onboarding seeds' msp roles).
fn roles(chosen: &str) -> Vec<Opt> {
    psa_models::seeds::ROLES
        .iter()
        .filter(|(_, _, msp, _)| *msp)
        .map(|(name, _, _, _)| Opt {
            value: name,
            label: name,
            selected: *name == chosen,
        })
        .collect()
}

struct UserRow {
    id: String,
    name: String,
    email: String,
    roles: Vec<Opt>,
    status: &'static str,
    is_me: bool,
    /// Has a second factor.
    second_factor: bool,
    /// The user's active API keys, and when one was last used ("" when none or never).
    keys: usize,
    keys_last_used: String,
}

#[derive(Deserialize, Default)]
struct InviteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    first_name: String,
    #[serde(default)]
    last_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    role: String,
}

#[derive(Template)]
#[template(path = "console/users.html")]
struct UsersPage {
    nav: Option<Nav>,
    /// The organisation's slug (its sign-in link).
    organisation: String,
    /// Every user must have a second factor.
    mfa_required: bool,
    csrf: String,
    notice: Option<String>,
    error: Option<String>,
    rows: Vec<UserRow>,
    f: InviteForm,
    invite_roles: Vec<Opt>,
    errors: FieldErrors,
    /// Its plan and seats; `None` without a subscription.
    seats: Option<psa_models::plans::Subscription>,
}

impl UsersPage {
    /// Every seat is taken: the page offers no invitation (it would be refused).
    fn full(&self) -> bool {
        self.seats.as_ref().is_some_and(|s| s.full())
    }
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: String,
}

fn notice(done: &str) -> Option<String> {
    match done {
        "invited" => Some("Invited: the invitation email is on its way.".into()),
        "resent" => Some("A new invitation went out; the previous link no longer works.".into()),
        "role" => Some("Role changed.".into()),
        "deactivated" => Some("Deactivated: the user's sessions and API keys stop working.".into()),
        "reactivated" => Some(
            "Reactivated. Their earlier sessions and API keys stay ended: they sign in again."
                .into(),
        ),
        "keys-revoked" => Some("The user's API keys are revoked: they stop working now.".into()),
        "mfa-reset" => Some(
            "The user's second factor is removed and their sessions ended: they set one up again \
             at their next sign-in."
                .into(),
        ),
        "policy" => Some("The sign-in policy is saved.".into()),
        _ => None,
    }
}

/// A key that still works: neither revoked nor expired.
fn usable(k: &psa_models::credentials::ApiKeySummary) -> bool {
    k.revoked_at.is_none() && k.expires_at.is_none_or(|at| at > chrono::Utc::now())
}

async fn users_page(
    state: &AppState,
    console: &Console,
    f: InviteForm,
    errors: FieldErrors,
) -> Result<UsersPage, Refused> {
    let list = crate::users::list_users(state, &console.caller).await?;
    // The keys are for those who may manage users (`user:update`); others see no key column.
    let keys = match psa_app::api_keys::list(
        &state.app,
        &console.caller.principal(),
        console.caller.tenant,
        None,
    )
    .await
    {
        Ok(keys) => keys,
        // Not theirs to see: no permission, or a support session (no credentials).
        Err(psa_models::Error::Forbidden(_) | psa_models::Error::Refused { .. }) => Vec::new(),
        Err(e) => return Err(ApiError::from(e).into()),
    };
    let organisation = {
        let mut conn = state.pool.acquire().await.map_err(ApiError::from)?;
        psa_models::tenants::slugs(&mut conn, &[console.caller.tenant])
            .await
            .map_err(ApiError::from)?
            .remove(&console.caller.tenant)
            .unwrap_or_default()
    };
    let mfa_required = psa_app::mfa::policy(
        &state.app,
        &console.caller.principal(),
        console.caller.tenant,
    )
    .await
    .map_err(ApiError::from)?;
    let seats = psa_app::plans::own_subscription(
        &state.app,
        &console.caller.principal(),
        console.caller.tenant,
    )
    .await
    .map_err(ApiError::from)?;
    Ok(UsersPage {
        seats,
        nav: console.nav("users"),
        organisation,
        mfa_required,
        csrf: console.csrf.clone(),
        notice: None,
        error: None,
        rows: list
            .into_iter()
            .map(|u| {
                let role = u.roles.first().cloned().unwrap_or_default();
                UserRow {
                    id: u.user_id.to_string(),
                    name: [u.first_name.as_deref(), u.last_name.as_deref()]
                        .into_iter()
                        .flatten()
                        .collect::<Vec<_>>()
                        .join(" "),
                    roles: roles(&role),
                    email: u.email,
                    status: match u.status {
                        UserStatus::Invited => "invited",
                        UserStatus::Active => "active",
                        UserStatus::Inactive => "inactive",
                    },
                    is_me: u.user_id == console.caller.user,
                    second_factor: u.two_factor_enabled,
                    keys: keys
                        .iter()
                        .filter(|k| k.user_id == u.user_id && usable(k))
                        .count(),
                    keys_last_used: keys
                        .iter()
                        .filter(|k| k.user_id == u.user_id && usable(k))
                        .filter_map(|k| k.last_used_at)
                        .max()
                        .map(super::when)
                        .unwrap_or_default(),
                }
            })
            .collect(),
        invite_roles: roles(if f.role.is_empty() {
            "Technician"
        } else {
            &f.role
        }),
        f,
        errors,
    })
}

async fn users(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<DoneQuery>,
) -> Result<Response, Refused> {
    let mut p = users_page(
        &state,
        &console,
        InviteForm::default(),
        FieldErrors::default(),
    )
    .await?;
    p.notice = notice(&q.done);
    Ok(page(StatusCode::OK, p))
}

const FIELDS: [&str; 4] = ["first_name", "last_name", "email", "role"];

async fn invite(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<InviteForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let input = NewInvitee {
        first_name: f.first_name.clone(),
        last_name: f.last_name.clone(),
        email: f.email.clone(),
        role: f.role.clone(),
    };
    match crate::users::invite_user(&state, &console.caller, &input).await {
        Ok(_) => Ok(Redirect::to("/console/users?done=invited").into_response()),
        Err(e) => {
            let status = e.status();
            let errors = FieldErrors::from_error(e, &FIELDS)?;
            let p = users_page(&state, &console, f, errors).await?;
            Ok(page(status, p))
        }
    }
}

/// After a change to one user: back to the list with a notice, or the list with the refusal.
async fn after(
    state: &AppState,
    console: &Console,
    outcome: Result<&'static str, ApiError>,
) -> Result<Response, Refused> {
    match outcome {
        Ok(done) => Ok(Redirect::to(&format!("/console/users?done={done}")).into_response()),
        Err(e) => {
            let status = e.status();
            let message = FieldErrors::from_error(e, &[])?.general.unwrap_or_default();
            let mut p = users_page(
                state,
                console,
                InviteForm::default(),
                FieldErrors::default(),
            )
            .await?;
            p.error = Some(message);
            Ok(page(status, p))
        }
    }
}

#[derive(Deserialize)]
struct RoleForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    role: String,
}

async fn role(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<UserId>,
    Form(f): Form<RoleForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let outcome = crate::users::change_role(&state, &console.caller, id, &f.role)
        .await
        .map(|_| "role");
    after(&state, &console, outcome).await
}

#[derive(Deserialize)]
struct PolicyForm {
    #[serde(default)]
    csrf: String,
    /// The box "require a second factor" (`yes` when ticked).
    #[serde(default)]
    mfa_required: Option<String>,
}

async fn security_policy(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<PolicyForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let outcome = psa_app::mfa::set_policy(
        &state.app,
        &console.caller.principal(),
        console.caller.tenant,
        f.mfa_required.as_deref() == Some("yes"),
    )
    .await
    .map(|_| "policy")
    .map_err(ApiError::from);
    after(&state, &console, outcome).await
}

/// The one-click changes of a user: `resend` the invitation, `deactivate`, `reactivate`.
async fn one_click(
    State(state): State<AppState>,
    console: Console,
    PageIdAnd(id, what): PageIdAnd<UserId>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let (state, caller) = (&state, &console.caller);
    let outcome = match what.as_str() {
        "resend" => crate::users::resend(state, caller, id)
            .await
            .map(|_| "resent"),
        "deactivate" => crate::users::set_inactive(state, caller, id, true)
            .await
            .map(|_| "deactivated"),
        "reactivate" => crate::users::set_inactive(state, caller, id, false)
            .await
            .map(|_| "reactivated"),
        "revoke-keys" => {
            psa_app::api_keys::revoke_all_of(&state.app, &caller.principal(), caller.tenant, id)
                .await
                .map(|_| "keys-revoked")
                .map_err(ApiError::from)
        }
        "reset-mfa" => psa_app::mfa::reset(&state.app, &caller.principal(), caller.tenant, id)
            .await
            .map(|_| "mfa-reset")
            .map_err(ApiError::from),
        _ => return Err(super::not_found("page")),
    };
    after(state, &console, outcome).await
}
