//! The tenants (management): the list, a tenant's page and its lifecycle actions. Each action is
//! the API's own function (`crate::lifecycle`): the same permission, rules and audit rows.

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use psa_models::TenantId;
use psa_models::lifecycle::{TenantDetails, TenantStatus};
use psa_models::provisioning::{self, TenantListFilter};
use serde::Deserialize;

use super::{
    Console, CsrfForm, FieldErrors, Nav, Opt, PageId, PageIds, Refused, done, next_link, options,
    page, page_ok, when,
};
use crate::AppState;
use crate::auth::{Action, Permission, Resource};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/tenants", get(tenants))
        .route("/console/tenants/{id}", get(tenant))
        .route("/console/tenants/{id}/suspend", post(suspend))
        .route("/console/tenants/{id}/reactivate", post(reactivate))
        .route("/console/tenants/{id}/cancel", post(cancel))
        .route("/console/tenants/{id}/restore", post(restore))
        .route("/console/tenants/{id}/delete", post(delete))
        .route("/console/tenants/{id}/export", post(export))
        .route("/console/tenants/{id}/slug", post(slug))
        .route("/console/tenants/{id}/plan", post(set_plan))
        .route("/console/tenants/{id}/trial", post(extend_trial))
        .route("/console/tenants/{id}/resend-invite", post(resend_invite))
        .route("/console/search", get(search))
        .route(
            "/console/tenants/{id}/exports/{export_id}/archive",
            get(archive),
        )
}

struct TenantRow {
    id: String,
    name: String,
    slug: String,
    status: String,
    customer_tracking: String,
    created_at: String,
    created_label: String,
    run_status: String,
    run: Option<String>,
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
pub(super) struct ListQuery {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub tracking: String,
    #[serde(default)]
    pub cursor: String,
    /// The customers page's: a plan's code, a subscription's status, `full` (every seat
    /// taken), `7` (trial ending within 7 days).
    #[serde(default)]
    pub plan: String,
    #[serde(default)]
    pub subscription: String,
    #[serde(default)]
    pub seats: String,
    #[serde(default)]
    pub trial: String,
}

impl ListQuery {
    pub fn filter(&self) -> Result<TenantListFilter, ApiError> {
        let status = match self.status.as_str() {
            "" => None,
            s => Some(TenantStatus::parse(s)?),
        };
        Ok(TenantListFilter {
            customer_tracking: Some(self.tracking.clone()).filter(|t| !t.is_empty()),
            name_contains: Some(self.name.trim().to_owned()).filter(|n| !n.is_empty()),
            created_after: None,
            created_before: None,
            status,
            ..Default::default()
        })
    }

    pub fn pairs(&self) -> Vec<(&'static str, &str)> {
        [
            ("name", &self.name),
            ("status", &self.status),
            ("tracking", &self.tracking),
            ("plan", &self.plan),
            ("subscription", &self.subscription),
            ("seats", &self.seats),
            ("trial", &self.trial),
        ]
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k, v.as_str()))
        .collect()
    }
}

pub(super) const STATUSES: [(&str, &str); 4] = [
    ("", "Any"),
    ("active", "Active"),
    ("suspended", "Suspended"),
    ("canceled", "Canceled"),
];

pub(super) const TRACKINGS: [(&str, &str); 6] = [
    ("", "Any"),
    ("tracked", "Tracked"),
    ("partial", "Partial"),
    ("untracked", "Untracked"),
    ("skipped", "Skipped"),
    ("management", "Management"),
];

/// The tenants (management): searchable, filterable, a page at a time.
async fn tenants(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<ListQuery>,
) -> Result<Response, Refused> {
    let mut tx = console
        .caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Read))
        .await?;
    psa_models::db::leave_tenant(&mut tx)
        .await
        .map_err(ApiError::from)?;
    let page = match q.filter() {
        Ok(filter) => {
            provisioning::list_tenants(
                &mut tx,
                state.app.settings.customer_tag.as_str(),
                &filter,
                &psa_models::db::PageRequest {
                    limit: Some(50),
                    cursor: Some(q.cursor.clone()).filter(|c| !c.is_empty()),
                },
            )
            .await
        }
        Err(ApiError::Model(e)) => Err(e),
        Err(e) => return Err(e.into()),
    };
    done(tx).await?;
    let (rows, next, error) = match page {
        Ok(p) => (p.items, p.next_cursor, None),
        Err(e @ psa_models::Error::Validation { .. }) => (Vec::new(), None, Some(e.to_string())),
        Err(e) => return Err(ApiError::from(e).into()),
    };
    Ok(page_ok(TenantsPage {
        nav: console.nav("tenants"),
        error,
        name: q.name.clone(),
        statuses: options(&STATUSES, &q.status),
        trackings: options(&TRACKINGS, &q.tracking),
        tenants: rows
            .into_iter()
            .map(|t| TenantRow {
                id: t.tenant_id.to_string(),
                name: t.name,
                slug: t.slug,
                status: t.status.to_string(),
                customer_tracking: t.customer_tracking,
                created_at: t.created_at.to_rfc3339(),
                created_label: when(t.created_at),
                run_status: t
                    .provisioning_status
                    .map_or("none", |s| s.as_str())
                    .to_owned(),
                run: t.workflow_id,
            })
            .collect(),
        next: next_link("/console/tenants", &q.pairs(), next),
    }))
}

/// The last export made from this page, with its download link.
struct ExportDone {
    link: String,
    bytes: i64,
}

#[derive(Template)]
#[template(path = "console/tenant.html")]
struct TenantPage {
    nav: Option<Nav>,
    error: Option<String>,
    notice: Option<String>,
    export: Option<ExportDone>,
    t: TenantDetails,
    created: String,
    delete_after: Option<String>,
    csrf: String,
    can_suspend: bool,
    can_reactivate: bool,
    can_cancel: bool,
    can_restore: bool,
    /// Trialing: its trial can be extended.
    can_extend: bool,
    /// Its trial ended unconverted: it cannot be reactivated until it is extended or converted.
    trial_over: bool,
    /// The plans the tenant may be put on (offered ones, and its own).
    plans: Vec<psa_models::plans::Plan>,
    /// Its staff, with status and last sign-in.
    people: Vec<Person>,
    /// The caller may open support sessions (`tenant:support`) and the tenant is one to open
    /// them into; `support_refused` says why none can be opened now.
    can_support: bool,
    support_refused: Option<&'static str>,
    support_sessions: Vec<super::support::SupportRow>,
    /// Its timeline (newest first), the source it is filtered to ("" for all), the older page.
    timeline: Vec<TimelineRow>,
    timeline_kind: String,
    older: Option<String>,
    runs: Vec<psa_models::timeline::Run>,
    exports: Vec<psa_models::timeline::PastExport>,
}

struct TimelineRow {
    at: String,
    source: &'static str,
    what: String,
    who: String,
    entity: String,
}

struct Person {
    id: String,
    email: String,
    name: String,
    roles: String,
    status: &'static str,
    last_sign_in: String,
    admin: bool,
}

fn tenant_page(console: &Console, t: TenantDetails) -> TenantPage {
    let trialing = t
        .subscription
        .as_ref()
        .filter(|s| s.status == psa_models::plans::SubscriptionStatus::Trialing);
    let trial_over =
        trialing.is_some_and(|s| s.trial_ends_at.is_some_and(|e| e <= chrono::Utc::now()));
    TenantPage {
        nav: console.nav("tenants"),
        error: None,
        notice: None,
        export: None,
        created: when(t.created_at),
        delete_after: t.deletion.as_ref().map(|d| when(d.delete_after)),
        csrf: console.csrf.clone(),
        // The management tenant has no lifecycle: none of the forms it would refuse.
        can_suspend: t.status == TenantStatus::Active && !t.is_management,
        can_reactivate: t.status == TenantStatus::Suspended && !trial_over,
        can_cancel: t.status != TenantStatus::Canceled && !t.is_management,
        can_extend: trialing.is_some() && t.status != TenantStatus::Canceled,
        trial_over,
        plans: Vec::new(),
        can_restore: t.status == TenantStatus::Canceled,
        people: Vec::new(),
        can_support: false,
        support_refused: if t.status != TenantStatus::Active {
            Some("It is not active: support sessions need an active tenant.")
        } else if t.support_access != "allowed" {
            Some("Its administrators have turned support access off.")
        } else {
            None
        },
        support_sessions: Vec::new(),
        timeline: Vec::new(),
        timeline_kind: String::new(),
        older: None,
        runs: Vec::new(),
        exports: Vec::new(),
        t,
    }
}

async fn details(
    state: &AppState,
    console: &Console,
    id: TenantId,
) -> Result<TenantDetails, Refused> {
    let mut tx = console
        .caller
        .authorize_management(state, Permission(Resource::Tenant, Action::Read))
        .await?;
    let details =
        psa_models::lifecycle::show(&mut tx, &state.app.lifecycle(console.caller.tenant), id)
            .await
            .map_err(ApiError::from)?;
    done(tx).await?;
    Ok(details)
}

#[derive(Deserialize, Default)]
struct TimelineFilter {
    /// `event`, `audit`, `platform`; empty: all.
    #[serde(default)]
    kind: String,
    #[serde(default)]
    before: String,
}

/// A tenant: status, customer record, people, support sessions, timeline, runs, exports, the
/// actions its state allows.
async fn tenant(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Query(f): Query<TimelineFilter>,
) -> Result<Response, Refused> {
    let t = details(&state, &console, id).await?;
    let mut p = full_page(&state, &console, t).await;
    if !f.kind.is_empty() || !f.before.is_empty() {
        psa_models::timeline::Source::parse_list(&f.kind).map_err(ApiError::from)?;
        let before = match f.before.as_str() {
            "" => None,
            raw => Some(
                chrono::DateTime::parse_from_rfc3339(raw)
                    .map_err(|_| {
                        ApiError::from(psa_models::Error::validation(
                            "before",
                            "`before` is a time (RFC 3339)",
                        ))
                    })?
                    .with_timezone(&chrono::Utc),
            ),
        };
        with_timeline(&state, &console, &mut p, &f.kind, before).await;
    }
    Ok(page_ok(p))
}

#[derive(Deserialize)]
struct ReasonForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
}

#[derive(Deserialize)]
struct CancelForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    grace_days: String,
    #[serde(default)]
    confirm: String,
}

#[derive(Deserialize)]
struct DeleteForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    confirm_name: String,
}

/// The tenant's page with the plans it may be put on (for those who may read plans), its people,
/// support sessions, runs, exports and timeline.
async fn full_page(state: &AppState, console: &Console, t: TenantDetails) -> TenantPage {
    let current = t.subscription.as_ref().map(|s| s.plan.clone());
    let plans = psa_app::plans::list(&state.app, &console.caller.principal())
        .await
        .map(|all| {
            all.into_iter()
                .filter(|p| p.active || Some(&p.code) == current.as_ref())
                .collect()
        })
        .unwrap_or_default();
    let who = console.caller.principal();
    let id = t.tenant_id;
    let people = psa_app::tenants::people(&state.app, &who, id)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|u| Person {
            id: u.user_id.0.to_string(),
            name: [u.first_name.as_deref(), u.last_name.as_deref()]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join(" "),
            admin: u.roles.iter().any(|r| r == "Admin"),
            roles: u.roles.join(", "),
            status: match u.status {
                psa_models::users::UserStatus::Invited => "invited",
                psa_models::users::UserStatus::Active => "active",
                psa_models::users::UserStatus::Inactive => "inactive",
            },
            last_sign_in: u.last_sign_in_at.map_or_else(|| "never".to_owned(), when),
            email: u.email,
        })
        .collect();
    let support_sessions = psa_app::support::list(&state.app, &who, id)
        .await
        .unwrap_or_default()
        .into_iter()
        .take(10)
        .map(super::support::SupportRow::from)
        .collect();
    let can_support = !t.is_management && may_support(state, console).await;
    let (runs, exports) = psa_app::tenants::history(&state.app, &who, id)
        .await
        .unwrap_or_default();
    let mut page = TenantPage {
        plans,
        people,
        support_sessions,
        can_support,
        runs,
        exports,
        ..tenant_page(console, t)
    };
    with_timeline(state, console, &mut page, "", None).await;
    page
}

/// The page's timeline: of one source (`kind`, "" for all), older than `before`.
async fn with_timeline(
    state: &AppState,
    console: &Console,
    page: &mut TenantPage,
    kind: &str,
    before: Option<chrono::DateTime<chrono::Utc>>,
) {
    let id = page.t.tenant_id;
    let sources = psa_models::timeline::Source::parse_list(kind).unwrap_or_default();
    let Ok(found) = psa_app::tenants::timeline(
        &state.app,
        &console.caller.principal(),
        id,
        &sources,
        before,
        Some(50),
    )
    .await
    else {
        return;
    };
    page.timeline_kind = kind.to_owned();
    page.older = found.next_before.map(|b| {
        let mut q = form_urlencoded::Serializer::new(String::new());
        if !kind.is_empty() {
            q.append_pair("kind", kind);
        }
        q.append_pair("before", &b.to_rfc3339());
        format!("/console/tenants/{id}?{}#timeline", q.finish())
    });
    page.timeline = found
        .items
        .into_iter()
        .map(|e| TimelineRow {
            at: e.at.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
            source: e.source.as_str(),
            what: e.what.replace('_', " "),
            who: e.who,
            entity: e.entity,
        })
        .collect();
}

/// Whether the caller holds `tenant:support` (a failure to check offers nothing).
async fn may_support(state: &AppState, console: &Console) -> bool {
    let Ok(mut tx) = psa_models::db::begin_tenant(&state.pool, console.caller.tenant).await else {
        return false;
    };
    console
        .caller
        .may(&mut tx, Permission(Resource::Tenant, Action::Support))
        .await
        .unwrap_or(false)
}

/// Shows the tenant after an action: its new state with `notice`, or (`Err` from the action)
/// the model's refusal above the forms, with nothing changed.
pub(super) async fn after(
    state: &AppState,
    console: &Console,
    id: TenantId,
    outcome: Result<String, ApiError>,
) -> Result<Response, Refused> {
    match outcome {
        Ok(notice) => {
            let mut p = full_page(state, console, details(state, console, id).await?).await;
            p.notice = Some(notice);
            Ok(page_ok(p))
        }
        Err(e) => refused(state, console, id, e).await,
    }
}

pub(super) async fn refused(
    state: &AppState,
    console: &Console,
    id: TenantId,
    e: ApiError,
) -> Result<Response, Refused> {
    let status = e.status();
    let message = FieldErrors::from_error(e, &[])?.general.unwrap_or_default();
    let mut p = full_page(state, console, details(state, console, id).await?).await;
    p.error = Some(message);
    Ok(page(status, p))
}

async fn suspend(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<ReasonForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let outcome =
        psa_app::tenants::suspend(&state.app, &console.caller.principal(), id, &form.reason)
            .await
            .map_err(ApiError::from)
            .map(|c| format!("{} is now {}.", c.tenant.name, c.tenant.status));
    after(&state, &console, id, outcome).await
}

#[derive(Deserialize)]
struct SlugForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    slug: String,
}

async fn slug(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<SlugForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let outcome =
        psa_app::tenants::set_slug(&state.app, &console.caller.principal(), id, &form.slug)
            .await
            .map_err(ApiError::from)
            .map(|t| {
                format!(
                    "{} now signs in at /console/sign-in?org={}.",
                    t.name, t.slug
                )
            });
    after(&state, &console, id, outcome).await
}

#[derive(Deserialize)]
struct PlanForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    plan: String,
    #[serde(default)]
    seats: String,
}

/// Puts the tenant on a plan with some seats (empty: as many as the plan allows).
async fn set_plan(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<PlanForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let seats = match form.seats.trim() {
        "" => Ok(None),
        n => n.parse::<i32>().map(Some).map_err(|_| {
            ApiError::from(psa_models::Error::validation(
                "seats",
                "The seats are a whole number (empty: as many as the plan allows)",
            ))
        }),
    };
    let outcome = match seats {
        Ok(seats) => psa_app::plans::set_plan(
            &state.app,
            &console.caller.principal(),
            id,
            &form.plan,
            seats,
        )
        .await
        .map_err(ApiError::from)
        .map(|s| {
            format!(
                "Now on {} ({}), {} seats.",
                s.plan_name,
                s.status.as_str(),
                s.seats_allowed
                    .map_or_else(|| "unlimited".to_owned(), |n| n.to_string())
            )
        }),
        Err(e) => Err(e),
    };
    after(&state, &console, id, outcome).await
}

#[derive(Template)]
#[template(path = "console/search.html")]
struct SearchPage {
    nav: Option<Nav>,
    q: String,
    error: Option<String>,
    /// The query as searched, once searched.
    searched: Option<String>,
    groups: Vec<SearchGroup>,
}

struct SearchGroup {
    title: &'static str,
    /// The heading of the column saying what matched.
    matched: &'static str,
    hits: Vec<psa_models::search::Hit>,
}

#[derive(Deserialize, Default)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// The tenants a search finds, grouped by what matched (the header's search box).
async fn search(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<SearchQuery>,
) -> Result<Response, Refused> {
    let (results, error) = if q.q.trim().is_empty() {
        (None, None)
    } else {
        match psa_app::search::search(&state.app, &console.caller.principal(), &q.q).await {
            Ok(r) => (Some(r), None),
            Err(e @ psa_models::Error::Validation { .. }) => (None, Some(e.to_string())),
            Err(e) => return Err(ApiError::from(e).into()),
        }
    };
    let searched = results.as_ref().map(|r| r.query.clone());
    let groups = results
        .map(|r| {
            [
                ("Tenants", "Matched", r.tenants),
                ("By their people", "Email", r.people),
                ("By their customer company", "Company", r.customers),
            ]
            .into_iter()
            .filter(|(_, _, hits)| !hits.is_empty())
            .map(|(title, matched, hits)| SearchGroup {
                title,
                matched,
                hits,
            })
            .collect()
        })
        .unwrap_or_default();
    Ok(page(
        StatusCode::OK,
        SearchPage {
            nav: console.nav("search"),
            q: q.q,
            error,
            searched,
            groups,
        },
    ))
}

#[derive(Deserialize)]
struct ExtendForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    days: String,
}

/// Extends the tenant's trial by some days.
async fn extend_trial(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<ExtendForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let days = form
        .days
        .trim()
        .parse::<i64>()
        .map_err(|_| {
            psa_models::Error::validation("days", "The days are a whole number from 1 to 365")
        })
        .and_then(psa_models::deadlines::extension_days);
    let outcome = match days {
        Ok(days) => psa_app::plans::extend_trial(&state.app, &console.caller.principal(), id, days)
            .await
            .map_err(ApiError::from)
            .map(|x| {
                let ends = x.subscription.trial_ends_at.map_or_else(String::new, when);
                if x.reactivated {
                    format!("The trial now ends {ends}; the tenant is active again.")
                } else {
                    format!("The trial now ends {ends}.")
                }
            }),
        Err(e) => Err(ApiError::from(e)),
    };
    after(&state, &console, id, outcome).await
}

async fn reactivate(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let outcome = psa_app::tenants::reactivate(&state.app, &console.caller.principal(), id)
        .await
        .map_err(ApiError::from)
        .map(|c| format!("{} is now {}.", c.tenant.name, c.tenant.status));
    after(&state, &console, id, outcome).await
}

/// Cancel: the grace period in days, and a ticked confirmation (its users lose access now, its
/// data is deleted at the end of the period).
async fn cancel(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<CancelForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let days = match form.grace_days.trim() {
        "" => Ok(state.app.settings.default_grace.num_days()),
        d => d.parse::<i64>().map_err(|_| {
            ApiError::Model(psa_models::Error::validation(
                "grace_days",
                "The grace period is a whole number of days",
            ))
        }),
    };
    let outcome = match days {
        Err(e) => Err(e),
        Ok(_) if form.confirm != "yes" => Err(ApiError::Model(psa_models::Error::validation(
            "confirm",
            "Tick the confirmation to cancel the tenant",
        ))),
        Ok(days) => async {
            let grace = psa_models::lifecycle::grace(days.saturating_mul(86_400))?;
            psa_app::tenants::cancel(
                &state.app,
                &console.caller.principal(),
                id,
                &form.reason,
                Some(grace),
            )
            .await
        }
        .await
        .map_err(ApiError::from)
        .map(|c| {
            format!(
                "{} is canceled; its data is deleted on {} unless restored.",
                c.tenant.name,
                c.tenant
                    .deletion
                    .as_ref()
                    .map_or_else(String::new, |d| when(d.delete_after))
            )
        }),
    };
    after(&state, &console, id, outcome).await
}

async fn restore(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let outcome = psa_app::tenants::restore(&state.app, &console.caller.principal(), id)
        .await
        .map_err(ApiError::from)
        .map(|c| {
            format!(
                "{} is restored and {} again.",
                c.tenant.name, c.tenant.status
            )
        });
    after(&state, &console, id, outcome).await
}

/// Delete now: the operator types the tenant's name to confirm.
async fn delete(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<DeleteForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    let t = details(&state, &console, id).await?;
    if form.confirm_name.trim() != t.name {
        let e = ApiError::Model(psa_models::Error::validation(
            "confirm_name",
            "Type the tenant's name exactly to delete it",
        ));
        return refused(&state, &console, id, e).await;
    }
    match psa_app::tenants::delete_now(&state.app, &console.caller.principal(), id).await {
        Ok(done) => {
            let mut p = full_page(&state, &console, t).await;
            p.notice = Some(if done.signalled {
                format!(
                    "Deletion confirmed: {} is being deleted now (run {}); its customer \
                     company stays, marked deleted.",
                    p.t.name, done.workflow_id
                )
            } else {
                format!(
                    "Deletion confirmed and recorded: {} is deleted as soon as the workflow \
                     service answers (the worker carries it out; run {}).",
                    p.t.name, done.workflow_id
                )
            });
            p.can_restore = false;
            Ok(page_ok(p))
        }
        Err(e) => refused(&state, &console, id, e.into()).await,
    }
}

async fn export(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(form): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&form.csrf)?;
    match psa_app::tenants::export(&state.app, &console.caller.principal(), id, None).await {
        Ok(e) if e.status == "completed" => {
            let mut p = full_page(&state, &console, details(&state, &console, id).await?).await;
            p.notice = Some("The export is ready.".into());
            p.export = Some(ExportDone {
                link: format!(
                    "/console/tenants/{}/exports/{}/archive",
                    e.tenant_id, e.export_id
                ),
                bytes: e.bytes.unwrap_or(0),
            });
            Ok(page_ok(p))
        }
        Ok(e) => {
            let message = format!(
                "The export failed: {}",
                e.error.as_deref().unwrap_or("no reason recorded")
            );
            let mut p = full_page(&state, &console, details(&state, &console, id).await?).await;
            p.error = Some(message);
            Ok(page(StatusCode::SERVICE_UNAVAILABLE, p))
        }
        Err(e) => refused(&state, &console, id, e.into()).await,
    }
}

async fn archive(
    State(state): State<AppState>,
    console: Console,
    PageIds(id, export_id): PageIds<TenantId, uuid::Uuid>,
) -> Result<Response, Refused> {
    Ok(crate::lifecycle::archive_download(&state, &console.caller, id, export_id).await?)
}

/// Sends the tenant's first administrator a new invitation (its welcome email failed, or the
/// link expired): mailed; refused without mail settings.
async fn resend_invite(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<TenantId>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let outcome = psa_app::tenants::resend_admin_invite(
        &state.app,
        &console.caller.principal(),
        id,
        psa_app::users::LinkDelivery::Mail,
    )
    .await
    .map(|done| format!("A new invitation went to {}.", done.user.email))
    .map_err(ApiError::from);
    after(&state, &console, id, outcome).await
}
