//! Plans, and each tenant's subscription to one: the seats it may use, whether it is trying
//! the platform out, and what the billing system last said.
//!
//! Seats are enforced here, where internal users are made and reactivated ([`ensure_room`]),
//! so every door (the API, the console, the CLI, a first sign-in through single sign-on) meets
//! the same limit. The check locks the tenant's subscription row: two invitations at the last
//! seat are taken one after the other, and the second finds the seat gone.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::db::double_option;
use crate::{Error, Result, TenantId};

/// A plan (a platform row: every tenant reads the plans, the management tenant manages them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Plan {
    /// Lowercase letters, digits and `-` (`standard`, `pro-2027`).
    pub code: String,
    pub name: String,
    /// The most seats a subscription to it may have; absent: unlimited.
    pub seat_limit: Option<i32>,
    /// Days a new subscription tries it before paying; 0: no trial.
    pub trial_days: i32,
    pub features: Vec<String>,
    /// The billing system's prices that mean this plan (Stripe price ids).
    pub billing_price_ids: Vec<String>,
    /// A retired plan keeps its tenants but takes no new ones.
    pub active: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A new plan.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewPlan {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub seat_limit: Option<i32>,
    #[serde(default)]
    pub trial_days: i32,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub billing_price_ids: Vec<String>,
}

/// A change to a plan: what is given changes.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PlanPatch {
    #[serde(default)]
    pub name: Option<String>,
    /// A number, or `null` for unlimited.
    #[serde(default, deserialize_with = "double_option")]
    #[cfg_attr(feature = "openapi", schema(value_type = Option<i32>))]
    pub seat_limit: Option<Option<i32>>,
    #[serde(default)]
    pub trial_days: Option<i32>,
    #[serde(default)]
    pub features: Option<Vec<String>>,
    #[serde(default)]
    pub billing_price_ids: Option<Vec<String>>,
    /// `false` retires the plan; `true` offers it again.
    #[serde(default)]
    pub active: Option<bool>,
}

const PLAN_COLUMNS: &str = "code, name, seat_limit, trial_days, features, billing_price_ids, \
                            active, created_at, updated_at";

/// A plan's code as typed, normalised (lowercase), or a validation error on `code`.
pub fn code(raw: &str) -> Result<String> {
    let c = raw.trim().to_ascii_lowercase();
    let ok = !c.is_empty()
        && c.len() <= 63
        && c.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !c.starts_with('-');
    if ok {
        Ok(c)
    } else {
        Err(Error::validation(
            "code",
            "A plan's code is 1-63 lowercase letters, digits or -, such as pro or team-2027",
        ))
    }
}

fn name(raw: &str) -> Result<String> {
    crate::validate::PersonName::parse_field(raw, "name", "A plan's name")
        .map(|n| n.as_str().to_owned())
}

fn seat_limit(n: Option<i32>) -> Result<Option<i32>> {
    match n {
        Some(n) if !(1..=1_000_000).contains(&n) => Err(Error::validation(
            "seat_limit",
            "A plan has at least one seat (at most 1000000), or no limit",
        )),
        other => Ok(other),
    }
}

fn trial_days(n: i32) -> Result<i32> {
    if (0..=365).contains(&n) {
        Ok(n)
    } else {
        Err(Error::validation(
            "trial_days",
            "A trial lasts 0-365 days (0: no trial)",
        ))
    }
}

fn words(field: &'static str, items: &[String], what: &str) -> Result<Vec<String>> {
    if items.len() > 50 {
        return Err(Error::validation(field, format!("At most 50 {what}")));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let w = item.trim();
        if w.is_empty() || w.len() > 255 || w.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Error::validation(
                field,
                format!("Each of the {what} is a word of 1-255 characters, without spaces"),
            ));
        }
        if !out.iter().any(|o| o == w) {
            out.push(w.to_owned());
        }
    }
    Ok(out)
}

/// The plans, offered ones first then retired ones, each by code.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Plan>> {
    Ok(sqlx::query_as(&format!(
        "SELECT {PLAN_COLUMNS} FROM plans ORDER BY NOT active, code"
    ))
    .fetch_all(conn)
    .await?)
}

pub async fn get(conn: &mut PgConnection, raw_code: &str) -> Result<Plan> {
    let c = code(raw_code).map_err(|_| Error::NotFound { entity: "plan" })?;
    sqlx::query_as(&format!("SELECT {PLAN_COLUMNS} FROM plans WHERE code = $1"))
        .bind(c)
        .fetch_optional(conn)
        .await?
        .ok_or(Error::NotFound { entity: "plan" })
}

/// Makes a plan (its code must be new).
pub async fn create(conn: &mut PgConnection, p: &NewPlan) -> Result<Plan> {
    let c = code(&p.code)?;
    let n = name(&p.name)?;
    let limit = seat_limit(p.seat_limit)?;
    let days = trial_days(p.trial_days)?;
    let features = words("features", &p.features, "features")?;
    let prices = words("billing_price_ids", &p.billing_price_ids, "price ids")?;
    let made: Option<Plan> = sqlx::query_as(&format!(
        "INSERT INTO plans (code, name, seat_limit, trial_days, features, billing_price_ids) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code) DO NOTHING RETURNING {PLAN_COLUMNS}"
    ))
    .bind(&c)
    .bind(n)
    .bind(limit)
    .bind(days)
    .bind(&features)
    .bind(&prices)
    .fetch_optional(&mut *conn)
    .await?;
    made.ok_or_else(|| Error::conflict(Some("code"), format!("There is a plan {c} already")))
}

/// Changes a plan; returns it before and after.
pub async fn update(
    conn: &mut PgConnection,
    raw_code: &str,
    patch: &PlanPatch,
) -> Result<(Plan, Plan)> {
    let before: Plan = {
        let c = code(raw_code).map_err(|_| Error::NotFound { entity: "plan" })?;
        sqlx::query_as(&format!(
            "SELECT {PLAN_COLUMNS} FROM plans WHERE code = $1 FOR UPDATE"
        ))
        .bind(c)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(Error::NotFound { entity: "plan" })?
    };
    let n = patch.name.as_deref().map(name).transpose()?;
    let limit = match patch.seat_limit {
        Some(l) => seat_limit(l)?,
        None => before.seat_limit,
    };
    let days = patch.trial_days.map(trial_days).transpose()?;
    let features = patch
        .features
        .as_deref()
        .map(|f| words("features", f, "features"))
        .transpose()?;
    let prices = patch
        .billing_price_ids
        .as_deref()
        .map(|p| words("billing_price_ids", p, "price ids"))
        .transpose()?;
    let after: Plan = sqlx::query_as(&format!(
        "UPDATE plans SET name = coalesce($2, name), seat_limit = $3, \
           trial_days = coalesce($4, trial_days), features = coalesce($5, features), \
           billing_price_ids = coalesce($6, billing_price_ids), active = coalesce($7, active), \
           updated_at = now() \
         WHERE code = $1 RETURNING {PLAN_COLUMNS}"
    ))
    .bind(&before.code)
    .bind(n)
    .bind(limit)
    .bind(days)
    .bind(features)
    .bind(prices)
    .bind(patch.active)
    .fetch_one(&mut *conn)
    .await?;
    Ok((before, after))
}

/// Where a subscription is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum SubscriptionStatus {
    Trialing,
    Active,
    PastDue,
    Canceled,
}

impl SubscriptionStatus {
    pub const ALL: [SubscriptionStatus; 4] = [
        SubscriptionStatus::Trialing,
        SubscriptionStatus::Active,
        SubscriptionStatus::PastDue,
        SubscriptionStatus::Canceled,
    ];

    /// `field` names the input in the error.
    pub fn parse(raw: &str, field: &'static str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|s| s.as_str() == raw.trim())
            .ok_or_else(|| {
                Error::validation(
                    field,
                    format!(
                        "{field} must be one of {}",
                        Self::ALL.map(|s| s.as_str()).join(", ")
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubscriptionStatus::Trialing => "trialing",
            SubscriptionStatus::Active => "active",
            SubscriptionStatus::PastDue => "past_due",
            SubscriptionStatus::Canceled => "canceled",
        }
    }
}

/// A tenant's subscription, with its plan and the seats in use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Subscription {
    pub tenant_id: TenantId,
    pub plan: String,
    pub plan_name: String,
    pub status: SubscriptionStatus,
    /// The seats bought; absent: as many as the plan allows.
    pub seats: Option<i32>,
    /// The seats the tenant may use (the seats bought, else the plan's limit); absent: no limit.
    pub seats_allowed: Option<i32>,
    /// Its internal users invited or active (each takes a seat until deactivated).
    pub seats_used: i64,
    pub trial_ends_at: Option<DateTime<Utc>>,
    pub current_period_end: Option<DateTime<Utc>>,
    pub past_due_since: Option<DateTime<Utc>>,
    pub billing_customer_id: Option<String>,
    pub billing_subscription_id: Option<String>,
    pub updated_at: DateTime<Utc>,
}

/// Whether `used` seats fill `allowed` (no limit: never).
pub fn seats_full(used: i64, allowed: Option<i32>) -> bool {
    allowed.is_some_and(|a| used >= i64::from(a))
}

/// Whether more seats are in use than allowed (seats lowered below those in use).
pub fn seats_over(used: i64, allowed: Option<i32>) -> bool {
    allowed.is_some_and(|a| used > i64::from(a))
}

impl Subscription {
    /// Every seat taken: no one more can be invited or reactivated.
    pub fn full(&self) -> bool {
        seats_full(self.seats_used, self.seats_allowed)
    }

    /// More seats in use than allowed.
    pub fn over(&self) -> bool {
        seats_over(self.seats_used, self.seats_allowed)
    }
}

const SUBSCRIPTION: &str = "SELECT s.tenant AS tenant_id, s.plan_code AS plan, p.name AS plan_name, \
       s.status, s.seats, coalesce(s.seats, p.seat_limit) AS seats_allowed, \
       (SELECT count(*) FROM users u WHERE u.tenant = s.tenant AND u.user_type = 'internal' \
          AND NOT u.is_inactive) AS seats_used, \
       s.trial_ends_at, s.current_period_end, s.past_due_since, s.billing_customer_id, \
       s.billing_subscription_id, s.updated_at \
     FROM tenant_subscriptions s CROSS JOIN LATERAL psa_plan(s.plan_code) p";

/// The tenant's subscription (in its context); `None` for a tenant without one (the
/// management tenant).
pub async fn subscription(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<Subscription>> {
    Ok(
        sqlx::query_as(&format!("{SUBSCRIPTION} WHERE s.tenant = $1"))
            .bind(tenant)
            .fetch_optional(conn)
            .await?,
    )
}

/// Audits a change to the tenant's subscription in the tenant and in the management tenant
/// `mgmt` (where the entry names the tenant); leaves the transaction outside any tenant.
pub async fn audit_change(
    conn: &mut PgConnection,
    tenant: TenantId,
    mgmt: TenantId,
    actor: &crate::audit::Actor,
    action: crate::audit::Action,
    change: serde_json::Value,
) -> Result<()> {
    for (t, id) in [(tenant, None), (mgmt, Some(tenant.0))] {
        crate::db::enter_tenant(conn, t).await?;
        crate::audit::record(conn, t, actor, action, "subscription", id, change.clone()).await?;
    }
    crate::db::leave_tenant(conn).await
}

/// Checks `seats` against `plan`'s limit.
pub fn seats_for(plan: &Plan, seats: Option<i32>) -> Result<Option<i32>> {
    match (seats, plan.seat_limit) {
        (Some(n), _) if n < 1 => Err(Error::validation("seats", "A tenant has at least one seat")),
        (Some(n), Some(limit)) if n > limit => Err(Error::validation(
            "seats",
            format!("The plan {} allows at most {limit} seats", plan.code),
        )),
        (seats, _) => Ok(seats),
    }
}

/// The plan new tenants get when none is named, as `PSA_DEFAULT_PLAN` says.
pub const DEFAULT_PLAN: &str = "standard";

/// Starts the new tenant's subscription to `plan_code`, trialing for the plan's trial days
/// when it has some. Idempotent: an existing subscription is kept. (Run as the platform: it
/// reads the plans table.)
pub async fn start(
    conn: &mut PgConnection,
    tenant: TenantId,
    plan_code: &str,
    seats: Option<i32>,
) -> Result<Subscription> {
    // Again (a retried step): what the first attempt made stands.
    if let Some(existing) = subscription(conn, tenant).await? {
        return Ok(existing);
    }
    // The plan was checked when the request was made; retired since, it is still the one asked
    // for (refusing now would roll back a tenant mid-way).
    let plan = match get(conn, plan_code).await {
        Err(Error::NotFound { .. }) => {
            return Err(Error::validation(
                "plan",
                format!("There is no plan {}", plan_code.trim()),
            ));
        }
        other => other?,
    };
    let seats = seats_for(&plan, seats)?;
    let trialing = plan.trial_days > 0;
    sqlx::query(
        "INSERT INTO tenant_subscriptions (tenant, plan_code, status, seats, trial_ends_at) \
         VALUES ($1, $2, $3, $4, now() + make_interval(days => $5)) \
         ON CONFLICT (tenant) DO NOTHING",
    )
    .bind(tenant)
    .bind(&plan.code)
    .bind(if trialing {
        SubscriptionStatus::Trialing
    } else {
        SubscriptionStatus::Active
    })
    .bind(seats)
    .bind(trialing.then_some(plan.trial_days))
    .execute(&mut *conn)
    .await?;
    mirror_licence_count(conn, tenant).await?;
    subscription(conn, tenant).await?.ok_or(Error::NotFound {
        entity: "subscription",
    })
}

/// An offered plan by code: a missing or retired one is refused on `plan`.
pub async fn offered(conn: &mut PgConnection, plan_code: &str) -> Result<Plan> {
    match get(conn, plan_code).await {
        Ok(p) if p.active => Ok(p),
        Ok(p) => Err(Error::validation(
            "plan",
            format!("The plan {} is retired: it takes no new tenants", p.code),
        )),
        Err(Error::NotFound { .. }) => Err(Error::validation(
            "plan",
            format!("There is no plan {}", plan_code.trim()),
        )),
        Err(e) => Err(e),
    }
}

/// The reference's `tenants.licensed_user_count` follows the seats bought.
pub(crate) async fn mirror_licence_count(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query(
        "UPDATE tenants t SET licensed_user_count = s.seats, last_license_update = now() \
         FROM tenant_subscriptions s WHERE s.tenant = t.tenant AND t.tenant = $1 \
           AND t.licensed_user_count IS DISTINCT FROM s.seats",
    )
    .bind(tenant)
    .execute(conn)
    .await?;
    Ok(())
}

/// The plan a tenant may be put on: an offered one, or `current` (kept even when retired).
/// Read outside any tenant's context (plans are the platform's).
pub async fn choosable(
    conn: &mut PgConnection,
    plan_code: &str,
    current: Option<&str>,
) -> Result<Plan> {
    match get(conn, plan_code).await {
        Ok(p) if p.active || Some(p.code.as_str()) == current => Ok(p),
        _ => offered(conn, plan_code).await,
    }
}

/// Puts the tenant on `plan` with `seats` (absent: as many as the plan allows), in the
/// tenant's context. A plan without a trial ends a trial (the tenant converted). Seats below
/// those in use are allowed (no one is cut off; new users wait for room). Returns the
/// subscription before and after.
pub async fn set_plan(
    conn: &mut PgConnection,
    tenant: TenantId,
    plan: &Plan,
    seats: Option<i32>,
) -> Result<(Subscription, Subscription)> {
    if !lock_seats(conn, tenant).await? {
        return Err(Error::NotFound {
            entity: "subscription",
        });
    }
    let before = subscription(conn, tenant).await?.ok_or(Error::NotFound {
        entity: "subscription",
    })?;
    let seats = seats_for(plan, seats)?;
    sqlx::query(
        "UPDATE tenant_subscriptions SET plan_code = $2, seats = $3, \
           status = CASE WHEN status = 'trialing' AND $4 = 0 THEN 'active' ELSE status END, \
           trial_ends_at = CASE WHEN status = 'trialing' AND $4 = 0 THEN NULL \
                                ELSE trial_ends_at END, \
           updated_at = now() \
         WHERE tenant = $1",
    )
    .bind(tenant)
    .bind(&plan.code)
    .bind(seats)
    .bind(plan.trial_days)
    .execute(&mut *conn)
    .await?;
    mirror_licence_count(conn, tenant).await?;
    let after = subscription(conn, tenant).await?.ok_or(Error::NotFound {
        entity: "subscription",
    })?;
    Ok((before, after))
}

/// Gives a tenant without a subscription one to `plan` (active; in the tenant's context).
pub async fn subscribe(
    conn: &mut PgConnection,
    tenant: TenantId,
    plan: &Plan,
    seats: Option<i32>,
) -> Result<Subscription> {
    let seats = seats_for(plan, seats)?;
    sqlx::query(
        "INSERT INTO tenant_subscriptions (tenant, plan_code, status, seats) \
         VALUES ($1, $2, 'active', $3) ON CONFLICT (tenant) DO NOTHING",
    )
    .bind(tenant)
    .bind(&plan.code)
    .bind(seats)
    .execute(&mut *conn)
    .await?;
    mirror_licence_count(conn, tenant).await?;
    subscription(conn, tenant).await?.ok_or(Error::NotFound {
        entity: "subscription",
    })
}

/// Locks the tenant's subscription (its seats) until the transaction ends; whether it has one.
/// Taken before anything about users is read, so that what is read after is what the holder
/// before committed.
pub async fn lock_seats(conn: &mut PgConnection, tenant: TenantId) -> Result<bool> {
    // Waited for a while only: an invitation holds the lock while its mail goes out.
    let previous: String = sqlx::query_scalar("SELECT current_setting('lock_timeout')")
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(format!("{}ms", SEAT_LOCK_WAIT.as_millis()))
        .execute(&mut *conn)
        .await?;
    let locked = sqlx::query("SELECT 1 FROM tenant_subscriptions WHERE tenant = $1 FOR UPDATE")
        .bind(tenant)
        .fetch_optional(&mut *conn)
        .await;
    let locked = match locked {
        Ok(row) => row.is_some(),
        Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("55P03") => {
            return Err(Error::unavailable(
                "Another change to this organisation's users is under way: try again in a moment",
            ));
        }
        Err(e) => return Err(e.into()),
    };
    sqlx::query("SELECT set_config('lock_timeout', $1, true)")
        .bind(previous)
        .execute(&mut *conn)
        .await?;
    Ok(locked)
}

/// How long a change to a tenant's users waits for its seats (another holds them): then 503.
pub const SEAT_LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Refuses one more internal user when every seat is taken (409 `seat_limit_reached`, saying
/// used / allowed). Locks the subscription until the transaction ends, so that two users
/// added at the last seat are counted one after the other. A tenant without a subscription,
/// or whose seats are unlimited, always has room.
pub async fn ensure_room(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    if lock_seats(conn, tenant).await? {
        room_left(conn, tenant).await
    } else {
        Ok(())
    }
}

/// [`ensure_room`]'s check, for a caller that holds the seats already ([`lock_seats`]).
pub async fn room_left(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    let Some(s) = subscription(conn, tenant).await? else {
        return Ok(());
    };
    match s.seats_allowed {
        Some(allowed) if s.full() => Err(Error::InvalidState {
            code: "seat_limit_reached",
            message: format!(
                "Every seat is taken ({} / {allowed}): deactivate a user, or ask for more seats",
                s.seats_used
            )
            .into(),
        }),
        _ => Ok(()),
    }
}
