//! The audit log: who did what to which entity of a tenant. Append-only for the API's role.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Result, TenantId};

/// Appends a row to `tenant`'s audit log, if that tenant exists (a failed login may name any
/// tenant id; a row for a tenant that does not exist would fail its foreign key).
pub async fn record(
    conn: &mut PgConnection,
    tenant: TenantId,
    actor: &str,
    action: &str,
    entity_type: &str,
    entity_id: Option<Uuid>,
    details: serde_json::Value,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO audit_log (tenant, actor, action, entity_type, entity_id, details) \
         SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM tenants WHERE tenant = $1)",
    )
    .bind(tenant)
    .bind(actor)
    .bind(action)
    .bind(entity_type)
    .bind(entity_id)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// An audit row as the audit log page shows it: the actor's email when the actor is one of the
/// tenant's users.
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
pub struct Entry {
    pub audit_id: Uuid,
    pub actor: String,
    pub actor_email: Option<String>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<Uuid>,
    pub details: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Filters of [`list`]; empty ones do not filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// An actor (`user:<id>`, `cli:<login>`) or part of a user's email, case-insensitive.
    pub actor: String,
    pub action: String,
    pub entity_type: String,
}

/// `tenant`'s audit log, newest first: `limit` rows older than the row `before`.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    filter: &Filter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Entry>> {
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "SELECT a.audit_id, a.actor, u.email AS actor_email, a.action, a.entity_type, \
         a.entity_id, a.details, a.created_at FROM audit_log a \
         LEFT JOIN users u ON u.tenant = a.tenant AND a.actor = 'user:' || u.user_id::text \
         WHERE a.tenant = ",
    );
    q.push_bind(tenant);
    if let Some(b) = before {
        q.push(" AND (a.created_at, a.audit_id) < (SELECT created_at, audit_id FROM audit_log WHERE tenant = ")
            .push_bind(tenant)
            .push(" AND audit_id = ")
            .push_bind(b)
            .push(")");
    }
    let actor = filter.actor.trim();
    if !actor.is_empty() {
        q.push(" AND (a.actor = ")
            .push_bind(actor.to_owned())
            .push(" OR u.email ILIKE ")
            .push_bind(crate::db::contains_pattern(actor))
            .push(")");
    }
    if !filter.action.trim().is_empty() {
        q.push(" AND a.action = ")
            .push_bind(filter.action.trim().to_owned());
    }
    if !filter.entity_type.trim().is_empty() {
        q.push(" AND a.entity_type = ")
            .push_bind(filter.entity_type.trim().to_owned());
    }
    q.push(" ORDER BY a.created_at DESC, a.audit_id DESC LIMIT ")
        .push_bind(limit);
    Ok(q.build_query_as::<Entry>()
        .persistent(false)
        .fetch_all(conn)
        .await?)
}
