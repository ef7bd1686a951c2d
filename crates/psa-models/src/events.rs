//! Events: what happened to tenants and customers, for other systems (the events API, webhook
//! deliveries).
//!
//! An event is written by [`record`] in the transaction of the change it describes, so it
//! exists if and only if the change committed; a database trigger adds, in that transaction,
//! a delivery for every enabled webhook endpoint that wants its type (docs/events.md).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::PageRequest;
use crate::{Error, Result, TenantId};

/// The types of events, as receivers see them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum EventType {
    #[serde(rename = "tenant.provisioned")]
    TenantProvisioned,
    #[serde(rename = "tenant.provisioning_failed")]
    TenantProvisioningFailed,
    #[serde(rename = "customer.tracked")]
    CustomerTracked,
    #[serde(rename = "customer.tracking_failed")]
    CustomerTrackingFailed,
    #[serde(rename = "customer.repaired")]
    CustomerRepaired,
    #[serde(rename = "tenant.suspended")]
    TenantSuspended,
    #[serde(rename = "tenant.reactivated")]
    TenantReactivated,
    #[serde(rename = "tenant.canceled")]
    TenantCanceled,
    #[serde(rename = "tenant.restored")]
    TenantRestored,
    #[serde(rename = "tenant.deleted")]
    TenantDeleted,
    #[serde(rename = "tenant.imported")]
    TenantImported,
    #[serde(rename = "tenant.plan_changed")]
    TenantPlanChanged,
    #[serde(rename = "tenant.subscription_changed")]
    TenantSubscriptionChanged,
    #[serde(rename = "tenant.trial_ending")]
    TenantTrialEnding,
    #[serde(rename = "tenant.trial_ended")]
    TenantTrialEnded,
    #[serde(rename = "tenant.trial_extended")]
    TenantTrialExtended,
    #[serde(rename = "support_session.started")]
    SupportSessionStarted,
    #[serde(rename = "support_session.ended")]
    SupportSessionEnded,
    #[serde(rename = "webhook_endpoint.disabled")]
    WebhookEndpointDisabled,
    /// Sent to one endpoint on request (`psa webhooks test`), never fanned out.
    #[serde(rename = "webhook_endpoint.test")]
    WebhookEndpointTest,
}

impl EventType {
    pub const ALL: [EventType; 20] = [
        EventType::TenantProvisioned,
        EventType::TenantProvisioningFailed,
        EventType::CustomerTracked,
        EventType::CustomerTrackingFailed,
        EventType::CustomerRepaired,
        EventType::TenantSuspended,
        EventType::TenantReactivated,
        EventType::TenantCanceled,
        EventType::TenantRestored,
        EventType::TenantDeleted,
        EventType::TenantImported,
        EventType::TenantPlanChanged,
        EventType::TenantSubscriptionChanged,
        EventType::TenantTrialEnding,
        EventType::TenantTrialEnded,
        EventType::TenantTrialExtended,
        EventType::SupportSessionStarted,
        EventType::SupportSessionEnded,
        EventType::WebhookEndpointDisabled,
        EventType::WebhookEndpointTest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventType::TenantProvisioned => "tenant.provisioned",
            EventType::TenantProvisioningFailed => "tenant.provisioning_failed",
            EventType::CustomerTracked => "customer.tracked",
            EventType::CustomerTrackingFailed => "customer.tracking_failed",
            EventType::CustomerRepaired => "customer.repaired",
            EventType::TenantSuspended => "tenant.suspended",
            EventType::TenantReactivated => "tenant.reactivated",
            EventType::TenantCanceled => "tenant.canceled",
            EventType::TenantRestored => "tenant.restored",
            EventType::TenantDeleted => "tenant.deleted",
            EventType::TenantImported => "tenant.imported",
            EventType::TenantPlanChanged => "tenant.plan_changed",
            EventType::TenantSubscriptionChanged => "tenant.subscription_changed",
            EventType::TenantTrialEnding => "tenant.trial_ending",
            EventType::TenantTrialEnded => "tenant.trial_ended",
            EventType::TenantTrialExtended => "tenant.trial_extended",
            EventType::SupportSessionStarted => "support_session.started",
            EventType::SupportSessionEnded => "support_session.ended",
            EventType::WebhookEndpointDisabled => "webhook_endpoint.disabled",
            EventType::WebhookEndpointTest => "webhook_endpoint.test",
        }
    }

    /// `field` names the input in the error.
    pub fn parse(raw: &str, field: &'static str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == raw.trim())
            .ok_or_else(|| {
                Error::validation(
                    field,
                    format!(
                        "unknown event type {raw:?}: one of {}",
                        Self::ALL.map(|t| t.as_str()).join(", ")
                    ),
                )
            })
    }

    /// A comma-separated list of types (empty: none).
    pub fn parse_list(raw: &str, field: &'static str) -> Result<Vec<Self>> {
        let mut types = Vec::new();
        for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let t = Self::parse(part, field)?;
            if !types.contains(&t) {
                types.push(t);
            }
        }
        Ok(types)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An event as the events API lists it and a webhook delivery carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    /// Time-ordered (UUIDv7); the deliveries' `webhook-id`: a receiver that has seen it has
    /// seen the event.
    #[sqlx(rename = "event_id")]
    pub id: Uuid,
    #[sqlx(rename = "event_type")]
    #[serde(rename = "type")]
    pub event_type: String,
    /// The tenant it concerns.
    pub tenant_id: Option<Uuid>,
    /// When the change was made (its transaction's time).
    pub created_at: DateTime<Utc>,
    /// The resource as the API shows it (docs/events.md has each type's).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub data: Value,
    /// The page key; not part of the event.
    #[serde(skip)]
    #[sqlx(rename = "tx")]
    pub position: String,
}

/// Writes an event in the caller's transaction. `dedup_key` names what the event records once
/// (`{workflow_id}/{type}`): written again (a retried activity), it is not repeated. Returns
/// the new event's id (that of the one written before, for a repeat, is not looked up).
pub async fn record(
    conn: &mut PgConnection,
    event_type: EventType,
    tenant: Option<TenantId>,
    data: Value,
    dedup_key: Option<&str>,
) -> Result<Uuid> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO events (event_id, event_type, tenant_id, data, dedup_key) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (dedup_key) DO NOTHING",
    )
    .bind(id)
    .bind(event_type.as_str())
    .bind(tenant)
    .bind(data)
    .bind(dedup_key)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only these types (empty: all).
    pub types: Vec<EventType>,
    pub tenant_id: Option<TenantId>,
}

/// A page of events. Unlike other lists, `next_cursor` is given on the last page too (the
/// position after its last event, or the cursor asked with when there is nothing new): a
/// consumer keeps it and asks again later, and gets exactly the events written since.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventPage {
    pub items: Vec<Event>,
    /// Where the next request starts (`after`); absent only when there are no events yet.
    pub next_cursor: Option<String>,
    /// Whether more events are there now (false: caught up; ask again later).
    pub has_more: bool,
}

/// The events, oldest first, a page at a time. A page holds only events whose transaction and
/// every transaction of this database before it have ended, so paging on from a cursor never
/// skips an event that commits later (docs/events.md, "Ordering").
pub async fn list(
    conn: &mut PgConnection,
    filter: &EventFilter,
    paging: &PageRequest,
) -> Result<EventPage> {
    let limit = paging.limit()?;
    let after = match paging.decode_cursor()? {
        None => None,
        Some((tx, id)) => {
            if tx.is_empty() || tx.len() > 20 || !tx.bytes().all(|b| b.is_ascii_digit()) {
                return Err(Error::validation("cursor", "The cursor is invalid"));
            }
            Some((tx, id))
        }
    };
    let types: Vec<&str> = filter.types.iter().map(|t| t.as_str()).collect();
    crate::db::leave_tenant(conn).await?;
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "SELECT event_id, event_type, tenant_id, created_at, data, tx::text AS tx FROM events \
         WHERE tx < (SELECT psa_events_horizon())",
    );
    if let Some((tx, id)) = &after {
        q.push(" AND (tx, event_id) > (")
            .push_bind(tx.clone())
            .push("::xid8, ")
            .push_bind(*id)
            .push(")");
    }
    if !types.is_empty() {
        q.push(" AND event_type = ANY(").push_bind(types).push(")");
    }
    if let Some(t) = filter.tenant_id {
        q.push(" AND tenant_id = ").push_bind(t);
    }
    q.push(" ORDER BY tx, event_id LIMIT ").push_bind(limit + 1);
    let mut items = q.build_query_as::<Event>().fetch_all(conn).await?;
    let has_more = items.len() > usize::try_from(limit).unwrap_or(usize::MAX);
    items.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    let next_cursor = match items.last() {
        Some(e) => Some(crate::db::encode_cursor(&e.position, e.id)),
        None => paging.cursor.clone().filter(|c| !c.is_empty()),
    };
    Ok(EventPage {
        items,
        next_cursor,
        has_more,
    })
}

/// The latest events, newest first (the console's list): `limit` of them before the event
/// `before` (event ids are time-ordered UUIDv7). Unlike [`list`], no horizon: a reader of the
/// latest events wants them as they commit, and does not page on from here.
pub async fn recent(
    conn: &mut PgConnection,
    filter: &EventFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<Event>> {
    let types: Vec<&str> = filter.types.iter().map(|t| t.as_str()).collect();
    crate::db::leave_tenant(conn).await?;
    let mut q = sqlx::QueryBuilder::<sqlx::Postgres>::new(
        "SELECT event_id, event_type, tenant_id, created_at, data, tx::text AS tx FROM events \
         WHERE true",
    );
    if let Some(b) = before {
        q.push(" AND event_id < ").push_bind(b);
    }
    if !types.is_empty() {
        q.push(" AND event_type = ANY(").push_bind(types).push(")");
    }
    if let Some(t) = filter.tenant_id {
        q.push(" AND tenant_id = ").push_bind(t);
    }
    q.push(" ORDER BY event_id DESC LIMIT ").push_bind(limit);
    Ok(q.build_query_as::<Event>().fetch_all(conn).await?)
}

/// The event `id`.
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Event> {
    sqlx::query_as::<_, Event>(
        "SELECT event_id, event_type, tenant_id, created_at, data, tx::text AS tx FROM events \
         WHERE event_id = $1",
    )
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound { entity: "event" })
}
