//! Support sessions: management staff acting in a tenant as one of its users, for a reason and
//! a bounded time (at most an hour), with the tenant's consent (`tenants.support_access`).
//!
//! A support session is a row of the tenant's `support_sessions` and an ordinary session of the
//! user marked with it, whose token the operator holds. The token holds while the support
//! session is open and the operator's own credential holds (`psa_authenticate`). Every audit row
//! written with it names both identities (`support:<operator> as user:<id>`) and is copied, by
//! the database, to the operator's tenant. What a support session may not do (credentials) the
//! operations layer refuses.
//!
//! It ends when ended ([`end`]), when the tenant is suspended or canceled or turns support
//! access off ([`end_all_of_tenant`]), and at its time or when the operator's credential ends: the token
//! stops working at once, and the worker's sweep ([`close_lapsed`]) records the end and its
//! event.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::audit::{self, Action, Actor};
use crate::events::{self, EventType};
use crate::{Error, Result, TenantId, UserId, credentials, db};

/// The longest a support session may last, and its default.
pub const MAX_MINUTES: u32 = 60;
pub const DEFAULT_MINUTES: u32 = 30;

/// Who opens a support session, as it records them.
#[derive(Debug, Clone)]
pub struct Opener {
    /// The management tenant.
    pub tenant: TenantId,
    /// A member: their user and the credential the support session depends on.
    pub user: Option<UserId>,
    pub session: Option<Uuid>,
    pub api_key: Option<Uuid>,
    /// Their email (a member) or `account@host` (the command line).
    pub name: String,
}

/// What a support session is asked with.
#[derive(Debug, Clone)]
pub struct Request {
    /// The user to act as; `None`: the tenant's first administrator.
    pub user: Option<UserId>,
    pub reason: String,
    /// 1..=60; `None`: 30.
    pub minutes: Option<u32>,
}

/// Why a support session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    Ended,
    Expired,
    OperatorSignedOut,
    TenantSuspended,
    Revoked,
    AccessDisabled,
}

impl EndReason {
    pub fn as_str(self) -> &'static str {
        match self {
            EndReason::Ended => "ended",
            EndReason::Expired => "expired",
            EndReason::OperatorSignedOut => "operator_signed_out",
            EndReason::TenantSuspended => "tenant_suspended",
            EndReason::Revoked => "revoked",
            EndReason::AccessDisabled => "access_disabled",
        }
    }
}

/// A support session as the tenant page, the API and its events show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SupportSession {
    pub support_session_id: Uuid,
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub tenant_id: TenantId,
    /// The user acted as.
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub user_id: UserId,
    pub user_email: String,
    /// The operator: their email, or `account@host` for the command line.
    pub operator: String,
    pub reason: String,
    pub started_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    /// `ended`, `expired`, `operator_signed_out`, `tenant_suspended`, `revoked`,
    /// `access_disabled`.
    pub end_reason: Option<String>,
}

impl SupportSession {
    /// Open now: not ended and before its end (the sweep may not have recorded a lapse yet).
    pub fn is_open(&self) -> bool {
        self.ended_at.is_none() && self.ends_at > Utc::now()
    }

    /// Its state in words: `open until HH:MM UTC`, or how it ended (`tenant suspended`); one
    /// whose time passed before the sweep recorded it has `expired`.
    pub fn state_label(&self) -> String {
        if self.is_open() {
            format!("open until {}", self.ends_at.format("%H:%M UTC"))
        } else {
            self.end_reason
                .as_deref()
                .unwrap_or(EndReason::Expired.as_str())
                .replace('_', " ")
        }
    }
}

/// A support session just opened, with its token (shown once).
#[derive(Debug)]
pub struct Opened {
    pub session: SupportSession,
    pub token: SecretString,
}

const COLUMNS: &str = "s.support_session_id, s.tenant AS tenant_id, s.user_id, \
    u.email AS user_email, s.operator_name AS operator, s.reason, s.started_at, s.ends_at, \
    s.ended_at, s.end_reason";

/// The reason's rules: 1-500 characters once trimmed.
pub fn validate_reason(raw: &str) -> Result<String> {
    let reason = raw.trim();
    if reason.is_empty() {
        return Err(Error::validation(
            "reason",
            "Say why the support session is needed",
        ));
    }
    if reason.chars().count() > 500 {
        return Err(Error::validation(
            "reason",
            "The reason is at most 500 characters",
        ));
    }
    Ok(reason.to_owned())
}

/// The length's rules: 1 to 60 minutes.
pub fn validate_minutes(minutes: Option<u32>) -> Result<u32> {
    match minutes.unwrap_or(DEFAULT_MINUTES) {
        m @ 1..=MAX_MINUTES => Ok(m),
        _ => Err(Error::validation(
            "minutes",
            format!("A support session lasts 1 to {MAX_MINUTES} minutes"),
        )),
    }
}

/// The tenant's consent.
pub async fn access_allowed(conn: &mut PgConnection, tenant: TenantId) -> Result<bool> {
    db::enter_tenant(conn, tenant).await?;
    let access: Option<String> =
        sqlx::query_scalar("SELECT support_access FROM tenants WHERE tenant = $1")
            .bind(tenant)
            .fetch_optional(conn)
            .await?;
    Ok(access.ok_or(Error::NotFound { entity: "tenant" })? == "allowed")
}

/// Sets the tenant's consent; returns what it was.
pub async fn set_access(conn: &mut PgConnection, tenant: TenantId, allowed: bool) -> Result<bool> {
    let before = access_allowed(conn, tenant).await?;
    sqlx::query("UPDATE tenants SET support_access = $2 WHERE tenant = $1")
        .bind(tenant)
        .bind(if allowed { "allowed" } else { "disabled" })
        .execute(conn)
        .await?;
    Ok(before)
}

/// Opens a support session into `tenant` (in its context): refused when the tenant is not
/// active (409 `tenant_state`), has turned support access off (403 `support_access_disabled`),
/// or the user is not an active staff user of it (422 on `user_id`). Audited in the tenant (and
/// by the database in the operator's), with its event.
pub async fn open(
    conn: &mut PgConnection,
    tenant: TenantId,
    opener: &Opener,
    req: &Request,
) -> Result<Opened> {
    let reason = validate_reason(&req.reason)?;
    let minutes = validate_minutes(req.minutes)?;
    db::enter_tenant(conn, tenant).await?;
    let (status, access, management): (String, String, bool) = sqlx::query_as(
        "SELECT status, support_access, is_management FROM tenants WHERE tenant = $1 \
         FOR SHARE",
    )
    .bind(tenant)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound { entity: "tenant" })?;
    if management {
        return Err(Error::InvalidState {
            code: "management_tenant",
            message: "Support sessions reach into customers' tenants, not the management tenant"
                .into(),
        });
    }
    if status != "active" {
        return Err(Error::InvalidState {
            code: "tenant_state",
            message: format!("The tenant is {status}: a support session needs it active").into(),
        });
    }
    if access != "allowed" {
        return Err(Error::Refused {
            code: "support_access_disabled",
            message: "The tenant has turned support access off: its administrators can turn \
                      it on again in their sign-in policy"
                .into(),
        });
    }
    let user = match req.user {
        Some(id) => {
            let u = crate::users::get(conn, tenant, id)
                .await
                .map_err(|_| Error::validation("user_id", "No such user in the tenant"))?;
            if u.is_inactive || u.user_type != crate::users::UserType::Internal {
                return Err(Error::validation(
                    "user_id",
                    "A support session acts as an active staff user of the tenant",
                ));
            }
            u
        }
        None => crate::users::first_admin(conn, tenant)
            .await?
            .ok_or_else(|| {
                Error::validation(
                    "user_id",
                    "The tenant has no active administrator: name the user to act as",
                )
            })?,
    };
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO support_sessions (tenant, user_id, operator_tenant, operator_user_id, \
                                       operator_name, operator_session_id, operator_api_key_id, \
                                       reason, ends_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, now() + make_interval(mins => $9)) \
         RETURNING support_session_id",
    )
    .bind(tenant)
    .bind(user.user_id)
    .bind(opener.tenant)
    .bind(opener.user)
    .bind(&opener.name)
    .bind(opener.session)
    .bind(opener.api_key)
    .bind(&reason)
    .bind(i32::try_from(minutes).unwrap_or(DEFAULT_MINUTES as i32))
    .fetch_one(&mut *conn)
    .await?;
    let token = credentials::new_token(credentials::SESSION_PREFIX);
    sqlx::query(
        "INSERT INTO sessions (tenant, user_id, token_hash, expires_at, support_session_id) \
         SELECT tenant, user_id, $3, ends_at, support_session_id FROM support_sessions \
         WHERE tenant = $1 AND support_session_id = $2",
    )
    .bind(tenant)
    .bind(id)
    .bind(credentials::digest(token.expose_secret()))
    .execute(&mut *conn)
    .await?;
    let session = get(conn, tenant, id).await?;
    audit::record(
        conn,
        tenant,
        &Actor::Support {
            session: id,
            user: user.user_id,
        },
        Action::StartSupportSession,
        "support_session",
        Some(id),
        serde_json::json!({"reason": reason, "minutes": minutes,
                           "ends_at": session.ends_at}),
    )
    .await?;
    record_event(conn, EventType::SupportSessionStarted, &session).await?;
    Ok(Opened { session, token })
}

/// A support session of the tenant (in its context).
pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: Uuid) -> Result<SupportSession> {
    db::enter_tenant(conn, tenant).await?;
    sqlx::query_as::<_, SupportSession>(&format!(
        "SELECT {COLUMNS} FROM support_sessions s \
         JOIN users u ON u.tenant = s.tenant AND u.user_id = s.user_id \
         WHERE s.tenant = $1 AND s.support_session_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound {
        entity: "support session",
    })
}

/// The tenant's support sessions, newest first.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    limit: i64,
) -> Result<Vec<SupportSession>> {
    db::enter_tenant(conn, tenant).await?;
    Ok(sqlx::query_as::<_, SupportSession>(&format!(
        "SELECT {COLUMNS} FROM support_sessions s \
         JOIN users u ON u.tenant = s.tenant AND u.user_id = s.user_id \
         WHERE s.tenant = $1 ORDER BY s.started_at DESC LIMIT $2"
    ))
    .bind(tenant)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Ends a support session (in its tenant's context): its token stops working, the end is
/// audited with both identities (`ended_by` says who ended it) and its event written. Returns
/// it, and whether this call ended it (false: it had ended already, and nothing changed).
pub async fn end(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: Uuid,
    reason: EndReason,
    ended_by: &str,
) -> Result<(SupportSession, bool)> {
    db::enter_tenant(conn, tenant).await?;
    let ended: Option<UserId> = sqlx::query_scalar(
        "UPDATE support_sessions SET ended_at = now(), end_reason = $3 \
         WHERE tenant = $1 AND support_session_id = $2 AND ended_at IS NULL RETURNING user_id",
    )
    .bind(tenant)
    .bind(id)
    .bind(reason.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(user) = ended else {
        return Ok((get(conn, tenant, id).await?, false));
    };
    sqlx::query(
        "UPDATE sessions SET revoked_at = now() \
         WHERE tenant = $1 AND support_session_id = $2 AND revoked_at IS NULL",
    )
    .bind(tenant)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    let session = get(conn, tenant, id).await?;
    audit::record(
        conn,
        tenant,
        &Actor::Support { session: id, user },
        Action::EndSupportSession,
        "support_session",
        Some(id),
        serde_json::json!({"end_reason": reason.as_str(), "ended_by": ended_by}),
    )
    .await?;
    record_event(conn, EventType::SupportSessionEnded, &session).await?;
    Ok((session, true))
}

/// Ends every open support session of a tenant (being suspended or canceled, or refusing
/// support access), in the caller's transaction; returns how many.
pub async fn end_all_of_tenant(
    conn: &mut PgConnection,
    tenant: TenantId,
    reason: EndReason,
    ended_by: &str,
) -> Result<usize> {
    db::enter_tenant(conn, tenant).await?;
    let open: Vec<Uuid> = sqlx::query_scalar(
        "SELECT support_session_id FROM support_sessions WHERE tenant = $1 AND ended_at IS NULL",
    )
    .bind(tenant)
    .fetch_all(&mut *conn)
    .await?;
    for id in &open {
        end(conn, tenant, *id, reason, ended_by).await?;
    }
    Ok(open.len())
}

/// Records the end of every support session that lapsed (its time passed, the operator's
/// credential or its own session ended, its tenant is no longer active): their tokens already
/// stopped working; this writes the end, its audit rows and event. Each in its own transaction,
/// taken `SKIP LOCKED`, so that several workers can run it. Returns how many it ended.
pub async fn close_lapsed(pool: &sqlx::PgPool) -> Result<usize> {
    let candidates: Vec<(TenantId, Uuid)> = sqlx::query_as(
        "SELECT s.tenant, s.support_session_id FROM support_sessions s \
         JOIN tenants t ON t.tenant = s.tenant \
         WHERE s.ended_at IS NULL \
           AND (s.ends_at <= now() OR t.status <> 'active' OR NOT psa_support_operator_holds(s, NULL) \
                OR NOT EXISTS (SELECT 1 FROM sessions x WHERE x.tenant = s.tenant \
                                 AND x.support_session_id = s.support_session_id \
                                 AND x.revoked_at IS NULL)) \
         ORDER BY s.ends_at LIMIT 500",
    )
    .fetch_all(pool)
    .await?;
    let mut closed = 0;
    for (tenant, id) in candidates {
        let mut tx = pool.begin().await?;
        type Why = (bool, bool, bool, bool);
        let why: Option<Why> = sqlx::query_as(
            "SELECT s.ends_at <= now(), t.status <> 'active', psa_support_operator_holds(s, NULL), \
                    EXISTS (SELECT 1 FROM sessions x WHERE x.tenant = s.tenant \
                              AND x.support_session_id = s.support_session_id \
                              AND x.revoked_at IS NULL) \
             FROM support_sessions s JOIN tenants t ON t.tenant = s.tenant \
             WHERE s.tenant = $1 AND s.support_session_id = $2 AND s.ended_at IS NULL \
             FOR UPDATE OF s SKIP LOCKED",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let reason = match why {
            None => continue,
            Some((true, _, _, _)) => EndReason::Expired,
            Some((_, true, _, _)) => EndReason::TenantSuspended,
            Some((_, _, false, _)) => EndReason::OperatorSignedOut,
            Some((_, _, _, false)) => EndReason::Revoked,
            Some(_) => continue,
        };
        if end(&mut tx, tenant, id, reason, "platform:support-sweep")
            .await?
            .1
        {
            closed += 1;
        }
        tx.commit().await?;
    }
    Ok(closed)
}

async fn record_event(
    conn: &mut PgConnection,
    kind: EventType,
    session: &SupportSession,
) -> Result<()> {
    db::leave_tenant(conn).await?;
    events::record(
        conn,
        kind,
        Some(session.tenant_id),
        serde_json::to_value(session).map_err(Error::internal)?,
        Some(&format!(
            "support_session/{}/{kind}",
            session.support_session_id
        )),
    )
    .await?;
    db::enter_tenant(conn, session.tenant_id).await?;
    Ok(())
}
