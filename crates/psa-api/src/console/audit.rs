//! The audit log (management): who did what from the management tenant (lifecycle actions,
//! provisioning repairs, webhooks, users, sign-ins), newest first, filterable. Read in the
//! caller's own tenant, as `tenant:read` allows.

use askama::Template;
use axum::Router;
use axum::extract::{Query, State};
use axum::response::Response;
use axum::routing::get;
use psa_models::audit::{self, Filter};
use serde::Deserialize;
use uuid::Uuid;

use super::{Console, Nav, Refused, done, page_ok, path_id, when};
use crate::AppState;
use crate::auth::{Action, Permission, Resource};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new().route("/console/audit", get(audit_log))
}

struct Row {
    time: String,
    actor: String,
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
    action: String,
    entity_type: String,
    rows: Vec<Row>,
    older: Option<String>,
}

#[derive(Deserialize, Default)]
struct AuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    entity_type: String,
    #[serde(default)]
    before: String,
}

const PAGE: i64 = 50;

async fn audit_log(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<AuditQuery>,
) -> Result<Response, Refused> {
    let before = match q.before.as_str() {
        "" => None,
        b => Some(path_id::<Uuid>(b, "audit entry")?),
    };
    let mut tx = console
        .caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Read))
        .await?;
    let rows = audit::list(
        &mut tx,
        console.caller.tenant,
        &Filter {
            actor: q.actor.clone(),
            action: q.action.clone(),
            entity_type: q.entity_type.clone(),
        },
        before,
        PAGE,
    )
    .await
    .map_err(ApiError::from)?;
    done(tx).await?;
    let older = (rows.len() as i64 == PAGE).then(|| {
        let last = rows
            .last()
            .map(|r| r.audit_id.to_string())
            .unwrap_or_default();
        format!(
            "/console/audit?{}",
            form_urlencoded::Serializer::new(String::new())
                .append_pair("actor", &q.actor)
                .append_pair("action", &q.action)
                .append_pair("entity_type", &q.entity_type)
                .append_pair("before", &last)
                .finish()
        )
    });
    Ok(page_ok(AuditPage {
        nav: console.nav("audit"),
        rows: rows
            .into_iter()
            .map(|r| Row {
                time: when(r.created_at),
                actor: r.actor_email.unwrap_or(r.actor),
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
        action: q.action,
        entity_type: q.entity_type,
        older,
    }))
}
