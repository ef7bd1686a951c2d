//! The audit log (management): who did what from the management tenant (lifecycle actions,
//! provisioning repairs, webhooks, users, sign-ins), newest first, filterable. Read in the
//! caller's own tenant, as `tenant:read` allows.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use psa_models::audit::{self, ActorKind, Filter};
use serde::Deserialize;
use uuid::Uuid;

use super::{Console, Nav, Opt, Refused, page_ok, query_id, when};
use crate::AppState;
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/audit", get(audit_log))
}

struct Row {
    time: String,
    actor: String,
    /// The audit log of this actor alone.
    actor_link: String,
    action: String,
    entity: String,
    tenant_link: Option<String>,
    details: String,
}

#[derive(Template)]
#[template(path = "console/audit.html")]
struct AuditPage {
    nav: Option<Nav>,
    actor: String,
    actor_id: String,
    kinds: Vec<Opt>,
    actions: Vec<Opt>,
    entity_type: String,
    rows: Vec<Row>,
    older: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    actor_kind: String,
    #[serde(default)]
    actor_id: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    entity_type: String,
    #[serde(default)]
    before: String,
}

const PAGE: i64 = 50;

fn kind_label(kind: ActorKind) -> &'static str {
    match kind {
        ActorKind::User => "User (signed in)",
        ActorKind::ApiKey => "API key",
        ActorKind::Operator => "Operator (command line)",
        ActorKind::Platform => "The platform",
        ActorKind::Anonymous => "Not signed in",
        ActorKind::Support => "Support session",
    }
}

/// Who, as a person reads it: a user's email (and the key it used), the operator's account,
/// the platform's part.
fn who(e: &audit::Entry) -> String {
    let email = e.actor_email.clone();
    match e.actor_kind {
        ActorKind::User => email.unwrap_or_else(|| e.actor.clone()),
        ActorKind::ApiKey => format!(
            "{} (API key {})",
            email.unwrap_or_else(|| "a former user".into()),
            e.actor_id
        ),
        ActorKind::Operator => format!("operator {}", e.actor_id),
        ActorKind::Platform => format!("platform: {}", e.actor_id),
        ActorKind::Anonymous => "not signed in".into(),
        ActorKind::Support => format!(
            "support: {} as {}",
            e.actor_id,
            email.unwrap_or_else(|| {
                e.actor_user
                    .map_or_else(|| "a user".to_owned(), |u| format!("user {u}"))
            })
        ),
    }
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs.iter().filter(|(_, v)| !v.is_empty()) {
        q.append_pair(k, v);
    }
    format!("/console/audit?{}", q.finish())
}

async fn audit_log(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<AuditQuery>,
) -> Result<Response, Refused> {
    let before = match q.before.as_str() {
        "" => None,
        b => Some(query_id::<Uuid>(b, "audit entry")?),
    };
    let kind = match q.actor_kind.as_str() {
        "" => None,
        k => Some(ActorKind::parse(k).map_err(ApiError::from)?),
    };
    let rows = psa_app::audit::list(
        &state.app,
        &console.caller.principal(),
        &Filter {
            actor: q.actor.clone(),
            actor_kind: kind,
            actor_id: q.actor_id.clone(),
            action: q.action.clone(),
            entity_type: q.entity_type.clone(),
        },
        before,
        Some(PAGE as u32),
    )
    .await
    .map_err(ApiError::from)?
    .items;
    let older = (rows.len() as i64 == PAGE).then(|| {
        let last = rows
            .last()
            .map(|r| r.audit_id.to_string())
            .unwrap_or_default();
        query(&[
            ("actor", &q.actor),
            ("actor_kind", &q.actor_kind),
            ("actor_id", &q.actor_id),
            ("action", &q.action),
            ("entity_type", &q.entity_type),
            ("before", &last),
        ])
    });
    let kinds = std::iter::once(Opt {
        value: "",
        label: "Anyone",
        selected: kind.is_none(),
    })
    .chain(ActorKind::ALL.into_iter().map(|k| Opt {
        value: k.as_str(),
        label: kind_label(k),
        selected: kind == Some(k),
    }))
    .collect();
    let actions = std::iter::once(Opt {
        value: "",
        label: "Any",
        selected: q.action.is_empty(),
    })
    .chain(audit::Action::ALL.iter().map(|a| Opt {
        value: a.as_str(),
        label: a.as_str(),
        selected: a.as_str() == q.action,
    }))
    .collect();
    Ok(page_ok(AuditPage {
        nav: console.nav("audit"),
        rows: rows
            .into_iter()
            .map(|r| Row {
                time: when(r.created_at),
                actor: who(&r),
                actor_link: query(&[
                    ("actor_kind", r.actor_kind.as_str()),
                    ("actor_id", &r.actor_id),
                ]),
                tenant_link: r
                    .entity_id
                    .filter(|_| r.entity_type == "tenant")
                    .map(|t| format!("/console/tenants/{t}")),
                entity: match r.entity_id {
                    Some(id) => format!("{} {id}", r.entity_type),
                    None => r.entity_type,
                },
                action: r.action,
                details: if r.details == serde_json::json!({}) {
                    String::new()
                } else {
                    r.details.to_string()
                },
            })
            .collect(),
        actor: q.actor,
        actor_id: q.actor_id,
        kinds,
        actions,
        entity_type: q.entity_type,
        older,
    }))
}
