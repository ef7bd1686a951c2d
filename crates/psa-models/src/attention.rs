//! What needs attention on the platform this morning: the management console's start page,
//! `GET /api/v1/attention` and `psa attention`.
//!
//! Each list is one query on a partial index made for it (migration `attention`), at most
//! [`LIMIT`] items, oldest problem first where age matters; every item says what to do and where
//! (`fix`, a console path).

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Result, db};

/// Items per list.
pub const LIMIT: i64 = 50;

/// How far back failures are looked for, and how far ahead deadlines.
pub const WINDOW_DAYS: i64 = 7;

/// The kinds of list, in the order they are shown.
pub const KINDS: [(&str, &str); 7] = [
    (
        "failed_runs",
        "Provisioning runs that failed or were cut off (7 days)",
    ),
    (
        "customer_records",
        "Customers whose record is partial or missing",
    ),
    ("welcome_emails", "Welcome emails that failed"),
    ("deletions_due", "Deletions due within 7 days"),
    ("webhook_endpoints", "Webhook endpoints failing or disabled"),
    ("trials_ending", "Trials ending within 7 days"),
    ("past_due", "Past-due subscriptions"),
];

/// One thing that needs attention.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Item {
    /// The tenant it is about (none for a webhook endpoint).
    pub tenant_id: Option<Uuid>,
    /// The tenant's name, or the endpoint's description.
    pub name: String,
    /// What is wrong, in a few words.
    pub detail: String,
    /// When it happened, or is due.
    pub at: Option<DateTime<Utc>>,
    /// Where it is fixed: a console page.
    pub fix: String,
}

/// One list.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct List {
    /// `failed_runs`, `customer_records`, `welcome_emails`, `deletions_due`,
    /// `webhook_endpoints`, `trials_ending`, `past_due`.
    pub kind: &'static str,
    pub title: &'static str,
    /// At most 50.
    pub items: Vec<Item>,
    /// More than the 50 shown.
    pub more: bool,
}

/// Customer tenants of one status and plan.
#[derive(Debug, Clone, Serialize, PartialEq, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TenantCount {
    pub status: String,
    /// None: no subscription.
    pub plan: Option<String>,
    pub tenants: i64,
    /// When the worker counted them (every minute).
    pub counted_at: DateTime<Utc>,
}

/// The dashboard.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Attention {
    pub generated_at: DateTime<Utc>,
    /// Every list, empty ones too.
    pub lists: Vec<List>,
    /// How many items need attention (across the lists, as shown).
    pub total: usize,
    /// The customer tenants by status and plan, as the worker last counted them (empty until
    /// a worker has run).
    pub tenants: Vec<TenantCount>,
}

impl Attention {
    pub fn needs_attention(&self) -> bool {
        self.total > 0
    }
}

type Row = (Option<Uuid>, String, String, Option<DateTime<Utc>>, String);

/// Reads every list, outside any tenant's context (the caller checked the permission).
pub async fn gather(conn: &mut PgConnection) -> Result<Attention> {
    db::leave_tenant(conn).await?;
    let now = Utc::now();
    let since = now - Duration::days(WINDOW_DAYS);
    let until = now + Duration::days(WINDOW_DAYS);
    let lim = LIMIT + 1;
    let mut lists = Vec::new();
    for (kind, title) in KINDS {
        let rows: Vec<Row> = match kind {
            "failed_runs" => {
                sqlx::query_as(
                    "SELECT tenant_id, tenant_name, \
                            status || coalesce(': ' || left(error, 200), ''), ended_at, \
                            '/console/provisioning/' || workflow_id \
                     FROM tenant_provisioning \
                     WHERE status IN ('rolled_back', 'failed', 'cut_off') AND ended_at > $1 \
                     ORDER BY ended_at DESC LIMIT $2",
                )
                .bind(since)
                .bind(lim)
                .fetch_all(&mut *conn)
                .await?
            }
            "customer_records" => {
                sqlx::query_as(
                    "SELECT tenant_id, tenant_name, \
                            'customer tracking failed' || coalesce(': ' || left(error, 200), ''), \
                            ended_at, '/console/tenants/' || tenant_id \
                     FROM tenant_provisioning \
                     WHERE status = 'completed' AND customer_tracking = 'failed' \
                     ORDER BY ended_at DESC LIMIT $1",
                )
                .bind(lim)
                .fetch_all(&mut *conn)
                .await?
            }
            "welcome_emails" => {
                sqlx::query_as(
                    "SELECT tenant_id, tenant_name, \
                            'the welcome email to ' || admin_email || ' failed', ended_at, \
                            '/console/tenants/' || tenant_id \
                     FROM tenant_provisioning WHERE welcome_email = 'failed' \
                     ORDER BY ended_at DESC LIMIT $1",
                )
                .bind(lim)
                .fetch_all(&mut *conn)
                .await?
            }
            "deletions_due" => {
                sqlx::query_as(
                    "SELECT tenant_id, tenant_name, 'deleted unless restored: ' || reason, \
                            delete_after, '/console/tenants/' || tenant_id \
                     FROM tenant_deletions WHERE status = 'pending' AND delete_after < $1 \
                     ORDER BY delete_after LIMIT $2",
                )
                .bind(until)
                .bind(lim)
                .fetch_all(&mut *conn)
                .await?
            }
            "webhook_endpoints" => {
                sqlx::query_as(
                    "SELECT NULL::uuid, coalesce(nullif(description, ''), \
                                                 'endpoint ' || left(endpoint_id::text, 8)), \
                            CASE WHEN NOT enabled \
                                 THEN 'disabled' || coalesce(': ' || disabled_reason, '') \
                                 ELSE 'every delivery failing' END, \
                            failing_since, '/console/webhooks/' || endpoint_id \
                     FROM webhook_endpoints WHERE failing_since IS NOT NULL OR NOT enabled \
                     ORDER BY failing_since NULLS LAST LIMIT $1",
                )
                .bind(lim)
                .fetch_all(&mut *conn)
                .await?
            }
            "trials_ending" | "past_due" => {
                sqlx::query_as(
                    "SELECT tenant, name, \
                            CASE kind WHEN 'trials_ending' THEN 'trial on ' || plan_code \
                                      ELSE 'payment overdue on ' || plan_code END, \
                            at, '/console/tenants/' || tenant \
                     FROM psa_attention_subscriptions($1, $2::integer) WHERE kind = $3",
                )
                .bind(until)
                .bind(lim)
                .bind(kind)
                .fetch_all(&mut *conn)
                .await?
            }
            other => unreachable!("a list without a query: {other}"),
        };
        let more = rows.len() > LIMIT as usize;
        lists.push(List {
            kind,
            title,
            more,
            items: rows
                .into_iter()
                .take(LIMIT as usize)
                .map(|(tenant_id, name, detail, at, fix)| Item {
                    tenant_id,
                    name,
                    detail,
                    at,
                    fix,
                })
                .collect(),
        });
    }
    let tenants = sqlx::query_as::<_, TenantCount>(
        "SELECT status, plan_code AS plan, tenants, counted_at FROM tenant_counts \
         ORDER BY status, plan_code NULLS LAST",
    )
    .fetch_all(&mut *conn)
    .await?;
    let total = lists.iter().map(|l| l.items.len()).sum();
    Ok(Attention {
        generated_at: now,
        lists,
        total,
        tenants,
    })
}

/// Counts the customer tenants by status and plan into `tenant_counts` (the worker's
/// housekeeping, every minute); returns them. Workers running it at once take turns.
pub async fn refresh_counts(pool: &sqlx::PgPool) -> Result<Vec<TenantCount>> {
    let mut tx = pool.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('psa.tenant_counts'))")
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM tenant_counts")
        .execute(&mut *tx)
        .await?;
    let counts = sqlx::query_as::<_, TenantCount>(
        "INSERT INTO tenant_counts (status, plan_code, tenants) \
         SELECT t.status, s.plan_code, count(*) \
         FROM tenants t LEFT JOIN tenant_subscriptions s ON s.tenant = t.tenant \
         WHERE NOT t.is_management GROUP BY t.status, s.plan_code \
         RETURNING status, plan_code AS plan, tenants, counted_at",
    )
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(counts)
}
