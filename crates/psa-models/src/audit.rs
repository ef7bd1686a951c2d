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
