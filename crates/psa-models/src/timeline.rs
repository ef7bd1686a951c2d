//! A tenant's timeline, newest first: its events, its own audit log, and what the management
//! tenant's audit log records about it (the lifecycle, plans, support sessions), merged; with
//! its provisioning runs and exports, the tenant page's "seen whole".

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Error, Result, TenantId, db};

/// Where an entry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// An event about the tenant (`events`).
    Event,
    /// The tenant's own audit log.
    Audit,
    /// The management tenant's audit log, about the tenant.
    Platform,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Event => "event",
            Source::Audit => "audit",
            Source::Platform => "platform",
        }
    }

    /// A comma-separated list of sources (empty: all).
    pub fn parse_list(raw: &str) -> Result<Vec<Source>> {
        raw.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(Source::parse)
            .collect()
    }

    pub fn parse(raw: &str) -> Result<Source> {
        [Source::Event, Source::Audit, Source::Platform]
            .into_iter()
            .find(|s| s.as_str() == raw.trim())
            .ok_or_else(|| Error::validation("kind", "The kind is event, audit or platform"))
    }
}

/// One entry.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entry {
    pub at: DateTime<Utc>,
    pub source: Source,
    /// The event's type (`tenant.suspended`) or the audit row's action (`invite`).
    pub what: String,
    /// Who (an audit row's actor) and on what (its entity); empty for an event.
    pub who: String,
    pub entity: String,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
}

type Row = (DateTime<Utc>, String, String, String, serde_json::Value);

/// At most `limit` (1-200) entries older than `before`, newest first, of the sources asked
/// (empty: all). `conn` may be in any tenant's context; it is left in the management tenant's.
pub async fn of_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
    mgmt: TenantId,
    sources: &[Source],
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<Vec<Entry>> {
    if !(1..=200).contains(&limit) {
        return Err(Error::validation("limit", "The limit must be 1-200"));
    }
    let wants = |s: Source| sources.is_empty() || sources.contains(&s);
    let mut entries: Vec<Entry> = Vec::new();
    let mut push = |source: Source, rows: Vec<Row>| {
        entries.extend(
            rows.into_iter()
                .map(|(at, what, who, entity, details)| Entry {
                    at,
                    source,
                    what,
                    who,
                    entity,
                    details,
                }),
        );
    };
    if wants(Source::Event) {
        db::leave_tenant(conn).await?;
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT created_at, event_type, '', '', data FROM events \
             WHERE tenant_id = $1 AND ($2::timestamptz IS NULL OR created_at < $2) \
             ORDER BY event_id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        push(Source::Event, rows);
    }
    let audit = "SELECT created_at, action, actor, \
                        entity_type || coalesce(' ' || entity_id::text, ''), details \
                 FROM audit_log WHERE tenant = $1";
    if wants(Source::Audit) && tenant != mgmt {
        db::enter_tenant(conn, tenant).await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "{audit} AND ($2::timestamptz IS NULL OR created_at < $2) \
             ORDER BY created_at DESC, audit_id DESC LIMIT $3"
        ))
        .bind(tenant)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        push(Source::Audit, rows);
    }
    if wants(Source::Platform) {
        db::enter_tenant(conn, mgmt).await?;
        let rows: Vec<Row> = sqlx::query_as(&format!(
            "({audit} AND entity_type = 'tenant' AND entity_id = $2 \
               AND ($3::timestamptz IS NULL OR created_at < $3) \
              ORDER BY created_at DESC LIMIT $4) \
             UNION ALL \
             ({audit} AND details ? 'tenant_id' AND details ->> 'tenant_id' = $2::text \
               AND NOT (entity_type = 'tenant' AND entity_id IS NOT DISTINCT FROM $2) \
               AND ($3::timestamptz IS NULL OR created_at < $3) \
              ORDER BY created_at DESC LIMIT $4)"
        ))
        .bind(mgmt)
        .bind(tenant.0)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
        push(Source::Platform, rows);
    } else {
        db::enter_tenant(conn, mgmt).await?;
    }
    entries.sort_by_key(|e| std::cmp::Reverse(e.at));
    entries.truncate(usize::try_from(limit).unwrap_or(0));
    Ok(entries)
}

/// A provisioning run of the tenant, as its page lists them.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Run {
    pub workflow_id: String,
    pub status: String,
    pub customer_tracking: String,
    pub welcome_email: Option<String>,
    pub requested_by: String,
    pub requested_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
}

/// Every provisioning run of the tenant, newest first (outside any tenant's context).
pub async fn runs(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<Run>> {
    db::leave_tenant(conn).await?;
    Ok(sqlx::query_as::<_, Run>(
        "SELECT workflow_id, status, customer_tracking, welcome_email, requested_by, \
                requested_at, ended_at, error \
         FROM tenant_provisioning WHERE tenant_id = $1 ORDER BY requested_at DESC LIMIT 50",
    )
    .bind(tenant.0)
    .fetch_all(conn)
    .await?)
}

/// A past export of the tenant.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PastExport {
    pub export_id: Uuid,
    /// `request` or `deletion`.
    pub purpose: String,
    pub status: String,
    pub bytes: Option<i64>,
    pub requested_by: String,
    pub created_at: DateTime<Utc>,
}

/// The tenant's exports, newest first (outside any tenant's context).
pub async fn exports(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<PastExport>> {
    db::leave_tenant(conn).await?;
    Ok(sqlx::query_as::<_, PastExport>(
        "SELECT export_id, purpose, status, bytes, requested_by, created_at \
         FROM tenant_exports WHERE tenant_id = $1 ORDER BY created_at DESC LIMIT 50",
    )
    .bind(tenant.0)
    .fetch_all(conn)
    .await?)
}
