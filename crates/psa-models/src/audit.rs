//! The audit log: who did what to which entity of a tenant. Append-only for the API's role.
//!
//! Who did it is an [`Actor`] and what they did an [`Action`], both typed: a door cannot invent
//! a new spelling, and the log can be asked "what did this API key do" without string matching
//! (`actor_kind`, `actor_id`, and for a session or key the user behind it, `actor_user`).

use std::fmt;

use sqlx::PgConnection;
use uuid::Uuid;

use crate::{Error, Result, TenantId, UserId};

/// Who acted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A user, signed in (a session).
    User { user: UserId },
    /// An API key, and the user it belongs to.
    ApiKey { key: Uuid, user: UserId },
    /// An operator at the command line, named by the operating-system account and host it runs
    /// under: self-declared (whoever holds the database credentials can say anything here).
    Operator { account: String, host: String },
    /// The platform itself: the worker's steps, the sweeper, reconcile, a deletion's deadline.
    Platform(&'static str),
    /// Someone not signed in: a failed sign-in, a password-reset request.
    Anonymous,
    /// Management staff in a support session (the `support` module), acting as a user of the
    /// tenant. Recorded as `support:<operator> as user:<id>`, the operator as the support
    /// session names them.
    Support { session: Uuid, user: UserId },
}

/// The kind of an [`Actor`], as `actor_kind` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    User,
    ApiKey,
    Operator,
    Platform,
    Anonymous,
    Support,
}

impl ActorKind {
    pub const ALL: [ActorKind; 6] = [
        ActorKind::User,
        ActorKind::ApiKey,
        ActorKind::Operator,
        ActorKind::Platform,
        ActorKind::Anonymous,
        ActorKind::Support,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActorKind::User => "user",
            ActorKind::ApiKey => "api_key",
            ActorKind::Operator => "operator",
            ActorKind::Platform => "platform",
            ActorKind::Anonymous => "anonymous",
            ActorKind::Support => "support",
        }
    }

    pub fn parse(raw: &str) -> Result<ActorKind> {
        ActorKind::ALL
            .into_iter()
            .find(|k| k.as_str() == raw.trim())
            .ok_or_else(|| {
                Error::validation(
                    "actor_kind",
                    "The actor kind must be user, api_key, operator, platform, anonymous or support",
                )
            })
    }
}

impl Actor {
    /// The operator running this process: `$USER` (else `$LOGNAME`, else "unknown") at the
    /// host's name.
    pub fn operator_from_environment() -> Actor {
        let account = ["USER", "LOGNAME"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| "unknown".into());
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .or_else(|| std::env::var("HOSTNAME").ok())
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".into());
        Actor::Operator { account, host }
    }

    pub fn kind(&self) -> ActorKind {
        match self {
            Actor::User { .. } => ActorKind::User,
            Actor::ApiKey { .. } => ActorKind::ApiKey,
            Actor::Operator { .. } => ActorKind::Operator,
            Actor::Platform(_) => ActorKind::Platform,
            Actor::Anonymous => ActorKind::Anonymous,
            Actor::Support { .. } => ActorKind::Support,
        }
    }

    /// `actor_id`: the user's or key's id, `account@host`, the platform part's name.
    pub fn id(&self) -> String {
        match self {
            Actor::User { user } => user.0.to_string(),
            Actor::ApiKey { key, .. } => key.to_string(),
            Actor::Operator { account, host } => format!("{account}@{host}"),
            Actor::Platform(part) => (*part).to_owned(),
            Actor::Anonymous => String::new(),
            Actor::Support { session, .. } => session.to_string(),
        }
    }

    /// The user behind a session or an API key.
    pub fn user(&self) -> Option<UserId> {
        match self {
            Actor::User { user } | Actor::ApiKey { user, .. } | Actor::Support { user, .. } => {
                Some(*user)
            }
            _ => None,
        }
    }
}

/// The actor's text: `user:<id>`, `api_key:<key>/<user>`, `operator:<account>@<host>`,
/// `platform:<part>`, `anonymous`. Stored as `actor`.
impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Actor::ApiKey { key, user } => write!(f, "api_key:{key}/{}", user.0),
            Actor::Anonymous => f.write_str("anonymous"),
            Actor::Support { session, user } => {
                write!(f, "support:session {session} as user:{}", user.0)
            }
            other => write!(f, "{}:{}", other.kind().as_str(), other.id()),
        }
    }
}

/// What was done: the audit log's `action`. One list, so a door cannot spell one differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update,
    Delete,
    Link,
    Unlink,
    // Sign-in and credentials.
    Login,
    LoginFailed,
    Logout,
    LogoutAll,
    ChangePassword,
    RequestPasswordReset,
    AcceptInvitation,
    ResetPassword,
    Revoke,
    // Users.
    Invite,
    ResendInvite,
    ChangeRole,
    Deactivate,
    Reactivate,
    // The tenant's lifecycle.
    Suspend,
    Cancel,
    Restore,
    ConfirmDelete,
    ExtendTrial,
    Export,
    DownloadExport,
    Import,
    // Customers and runs.
    Repair,
    PreviewRepair,
    CutOff,
    // Webhooks.
    RotateSecret,
    RetryDelivery,
    Test,
    /// Stored secrets moved to the current sealing key.
    Reseal,
    EnrollSecondFactor,
    ConfirmSecondFactor,
    RemoveSecondFactor,
    ResetSecondFactor,
    SecondFactorFailed,
    RevokeSession,
    // Single sign-on.
    Verify,
    // Support sessions.
    StartSupportSession,
    EndSupportSession,
}

impl Action {
    pub const ALL: &[Action] = &[
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Link,
        Action::Unlink,
        Action::Login,
        Action::LoginFailed,
        Action::Logout,
        Action::LogoutAll,
        Action::ChangePassword,
        Action::RequestPasswordReset,
        Action::AcceptInvitation,
        Action::ResetPassword,
        Action::Revoke,
        Action::Invite,
        Action::ResendInvite,
        Action::ChangeRole,
        Action::Deactivate,
        Action::Reactivate,
        Action::Suspend,
        Action::Cancel,
        Action::Restore,
        Action::ConfirmDelete,
        Action::ExtendTrial,
        Action::Export,
        Action::DownloadExport,
        Action::Import,
        Action::Repair,
        Action::PreviewRepair,
        Action::CutOff,
        Action::RotateSecret,
        Action::RetryDelivery,
        Action::Test,
        Action::Reseal,
        Action::EnrollSecondFactor,
        Action::ConfirmSecondFactor,
        Action::RemoveSecondFactor,
        Action::ResetSecondFactor,
        Action::SecondFactorFailed,
        Action::RevokeSession,
        Action::Verify,
        Action::StartSupportSession,
        Action::EndSupportSession,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Update => "update",
            Action::Delete => "delete",
            Action::Link => "link",
            Action::Unlink => "unlink",
            Action::Login => "login",
            Action::LoginFailed => "login_failed",
            Action::Logout => "logout",
            Action::LogoutAll => "logout_all",
            Action::ChangePassword => "change_password",
            Action::RequestPasswordReset => "request_password_reset",
            Action::AcceptInvitation => "accept_invitation",
            Action::ResetPassword => "reset_password",
            Action::Revoke => "revoke",
            Action::Invite => "invite",
            Action::ResendInvite => "resend_invite",
            Action::ChangeRole => "change_role",
            Action::Deactivate => "deactivate",
            Action::Reactivate => "reactivate",
            Action::Suspend => "suspend",
            Action::Cancel => "cancel",
            Action::Restore => "restore",
            Action::ConfirmDelete => "confirm_delete",
            Action::ExtendTrial => "extend_trial",
            Action::Export => "export",
            Action::DownloadExport => "download_export",
            Action::Import => "import",
            Action::Repair => "repair",
            Action::PreviewRepair => "preview_repair",
            Action::CutOff => "cut_off",
            Action::RotateSecret => "rotate_secret",
            Action::RetryDelivery => "retry_delivery",
            Action::Test => "test",
            Action::Reseal => "reseal",
            Action::EnrollSecondFactor => "enroll_second_factor",
            Action::ConfirmSecondFactor => "confirm_second_factor",
            Action::RemoveSecondFactor => "remove_second_factor",
            Action::ResetSecondFactor => "reset_second_factor",
            Action::SecondFactorFailed => "second_factor_failed",
            Action::RevokeSession => "revoke_session",
            Action::Verify => "verify",
            Action::StartSupportSession => "start_support_session",
            Action::EndSupportSession => "end_support_session",
        }
    }

    pub fn parse(raw: &str) -> Result<Action> {
        Action::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == raw.trim())
            .ok_or_else(|| Error::validation("action", "Unknown audit action"))
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Appends a row to `tenant`'s audit log; an error when the tenant is not visible to this
/// transaction (it does not exist, or the transaction is confined to another tenant), so that no
/// change commits without its entry.
pub async fn record(
    conn: &mut PgConnection,
    tenant: TenantId,
    actor: &Actor,
    action: Action,
    entity_type: &str,
    entity_id: Option<Uuid>,
    details: serde_json::Value,
) -> Result<()> {
    let written = if let Actor::Support { session, user } = actor {
        // Both identities, as the support session names them; the database copies the row to
        // the operator's tenant (migration `support_sessions`).
        let mut details = details;
        if let Some(map) = details.as_object_mut() {
            map.insert("support_session".into(), serde_json::json!(session));
        }
        sqlx::query(
            "INSERT INTO audit_log (tenant, actor, actor_kind, actor_id, actor_user, action, \
                                    entity_type, entity_id, details) \
             SELECT $1, 'support:' || s.operator_name || ' as user:' || s.user_id, 'support', \
                    s.operator_name, s.user_id, $4, $5, $6, $7 \
             FROM support_sessions s \
             WHERE s.tenant = $1 AND s.support_session_id = $2 AND s.user_id = $3",
        )
        .bind(tenant)
        .bind(session)
        .bind(user)
        .bind(action.as_str())
        .bind(entity_type)
        .bind(entity_id)
        .bind(details)
        .execute(conn)
        .await?
        .rows_affected()
    } else {
        sqlx::query(
            "INSERT INTO audit_log (tenant, actor, actor_kind, actor_id, actor_user, action, \
                                entity_type, entity_id, details) \
         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 \
         WHERE EXISTS (SELECT 1 FROM tenants WHERE tenant = $1)",
        )
        .bind(tenant)
        .bind(actor.to_string())
        .bind(actor.kind().as_str())
        .bind(actor.id())
        .bind(actor.user())
        .bind(action.as_str())
        .bind(entity_type)
        .bind(entity_id)
        .bind(details)
        .execute(conn)
        .await?
        .rows_affected()
    };
    // The tenant is not visible: it does not exist, or the transaction's tenant context is
    // another tenant's. A change must not commit without its entry, so this is an error, never
    // a silent skip.
    if written != 1 {
        return Err(Error::internal(AuditNotWritten {
            tenant,
            action: action.as_str(),
        }));
    }
    Ok(())
}

/// Appends a row to `tenant`'s audit log if that tenant exists, and says whether it did: for
/// what an unauthenticated caller reports (a failed login may name any tenant id), where a
/// tenant that is not there is the caller's mistake, not the platform's.
pub async fn record_if_tenant_exists(
    conn: &mut PgConnection,
    tenant: TenantId,
    actor: &Actor,
    action: Action,
    entity_type: &str,
    entity_id: Option<Uuid>,
    details: serde_json::Value,
) -> Result<bool> {
    match record(conn, tenant, actor, action, entity_type, entity_id, details).await {
        Ok(()) => Ok(true),
        Err(Error::Internal(e)) if e.is::<AuditNotWritten>() => Ok(false),
        Err(e) => Err(e),
    }
}

/// An audit entry that could not be written in its tenant (see [`record`]).
#[derive(Debug, thiserror::Error)]
#[error(
    "the audit entry {action:?} could not be written in tenant {tenant} (no such tenant in this transaction's view)"
)]
struct AuditNotWritten {
    tenant: TenantId,
    action: &'static str,
}

/// An audit row as the audit log shows it: the actor's email when the actor is one of the
/// tenant's users (by session or API key).
#[derive(Debug, Clone, PartialEq, serde::Serialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Entry {
    pub audit_id: Uuid,
    /// The actor's text: `user:<id>`, `api_key:<key>/<user>`, `operator:<account>@<host>`,
    /// `platform:<part>`, `anonymous`.
    pub actor: String,
    #[sqlx(try_from = "String")]
    pub actor_kind: ActorKind,
    /// The user's or key's id, `account@host`, the platform part's name ("" for anonymous).
    pub actor_id: String,
    /// The user behind a session or an API key.
    pub actor_user: Option<Uuid>,
    pub actor_email: Option<String>,
    pub action: String,
    pub entity_type: String,
    pub entity_id: Option<Uuid>,
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub details: serde_json::Value,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `actor_kind` as read back (the column's check keeps it one of these).
impl TryFrom<String> for ActorKind {
    type Error = Error;
    fn try_from(s: String) -> Result<ActorKind> {
        ActorKind::parse(&s)
    }
}

/// Filters of [`list`]; empty ones do not filter.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// An actor's text (`user:<id>`, `operator:<account>@<host>`), or part of a user's email,
    /// case-insensitive.
    pub actor: String,
    pub actor_kind: Option<ActorKind>,
    /// With or without `actor_kind`: the id part of the actor (a user's or key's id,
    /// `account@host`, a platform part).
    pub actor_id: String,
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
        "SELECT a.audit_id, a.actor, a.actor_kind, a.actor_id, a.actor_user, \
         u.email AS actor_email, a.action, a.entity_type, \
         a.entity_id, a.details, a.created_at FROM audit_log a \
         LEFT JOIN users u ON u.tenant = a.tenant AND u.user_id = a.actor_user \
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
    if let Some(kind) = filter.actor_kind {
        q.push(" AND a.actor_kind = ").push_bind(kind.as_str());
    }
    let actor_id = filter.actor_id.trim();
    if !actor_id.is_empty() {
        // A user's id matches their sessions' entries and their API keys' (whose actor_id is
        // the key's): "what did this user do" is one filter.
        q.push(" AND (a.actor_id = ")
            .push_bind(actor_id.to_owned())
            .push(" OR a.actor_user::text = ")
            .push_bind(actor_id.to_ascii_lowercase())
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

/// How often a failed sign-in with the same email from the same address is written to the
/// audit log: what an unauthenticated caller can make the platform write is bounded (the rest
/// are counted by `psa_login_failures_total` and logged).
pub const LOGIN_FAILURE_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// A failed sign-in in `tenant`'s log (actor `anonymous`, action `login_failed`), unless one for
/// the same email and address was written within [`LOGIN_FAILURE_WINDOW`], or the tenant does
/// not exist (a caller may name any id). Returns whether a row was written.
pub async fn record_login_failure(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &str,
    address: &str,
) -> Result<bool> {
    let recent: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM audit_log WHERE tenant = $1 AND action = 'login_failed' \
           AND created_at > now() - make_interval(secs => $2) \
           AND details ->> 'email' = $3 AND details ->> 'address' = $4)",
    )
    .bind(tenant)
    .bind(LOGIN_FAILURE_WINDOW.num_seconds() as f64)
    .bind(email)
    .bind(address)
    .fetch_one(&mut *conn)
    .await?;
    if recent {
        return Ok(false);
    }
    record_if_tenant_exists(
        conn,
        tenant,
        &Actor::Anonymous,
        Action::LoginFailed,
        "user",
        None,
        serde_json::json!({"email": email, "address": address,
                           "window_minutes": LOGIN_FAILURE_WINDOW.num_minutes()}),
    )
    .await
}
