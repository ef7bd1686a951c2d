//! Reading the management tenant's audit log (`tenant:read` there, as the console's audit page):
//! newest first, filtered by who (an actor's text or a user's email, the kind of actor, the
//! actor's id), what and on what. A customer tenant's own log also holds what the platform did
//! to it (operators' accounts and hosts, internal reasons): it is not offered to its users.

use psa_models::audit::{self, Entry, Filter};
use psa_models::{Error, Result};

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

/// A page of entries, newest first; `next_before` asks for the next (older) page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditPage {
    pub items: Vec<Entry>,
    pub next_before: Option<uuid::Uuid>,
}

/// The management tenant's entries older than `before`, at most `limit` (1-200, default 50).
pub async fn list(
    app: &App,
    who: &Principal,
    filter: &Filter,
    before: Option<uuid::Uuid>,
    limit: Option<u32>,
) -> Result<AuditPage> {
    let limit = i64::from(limit.unwrap_or(50));
    if !(1..=200).contains(&limit) {
        return Err(Error::validation("limit", "The limit must be 1-200"));
    }
    let (mut tx, mgmt) = app
        .begin_management(who, Permission(Resource::Tenant, Access::Read))
        .await?;
    let items = audit::list(&mut tx, mgmt, filter, before, limit).await?;
    tx.rollback().await?;
    let next_before = (items.len() as i64 == limit)
        .then(|| items.last().map(|e| e.audit_id))
        .flatten();
    Ok(AuditPage { items, next_before })
}
