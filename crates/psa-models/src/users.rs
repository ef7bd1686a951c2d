//! Users, their roles, and permission checks.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::validate::EmailAddress;
use crate::{Error, Result, RoleId, TenantId, UserId};

/// `users.user_type`: staff of the tenant (`internal`, the msp side) or client-portal users.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, Default)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UserType {
    #[default]
    Internal,
    Client,
}

/// A row of `users`, without its password hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct User {
    pub tenant: TenantId,
    pub user_id: UserId,
    pub username: String,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub user_type: UserType,
    pub is_inactive: bool,
    /// Whether the user has set a password (an invited user has not).
    pub has_password: bool,
    pub created_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "tenant, user_id, username, email, first_name, last_name, user_type, is_inactive, \
         hashed_password IS NOT NULL AS has_password, created_at"
    };
}

/// Input of [`create`].
#[derive(Debug, Clone, Deserialize)]
pub struct NewUser {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    #[serde(default)]
    pub user_type: UserType,
    /// Names of roles of the user's scope (msp roles for internal users, client roles for
    /// client-portal users) to grant.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// Options of [`create`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// Use this id. If the user already exists (a retried activity whose first run committed),
    /// it is returned as it is.
    pub user_id: Option<UserId>,
}

/// A created user. It has no password: its owner sets one through an invitation link.
#[derive(Debug, Clone)]
pub struct CreatedUser {
    pub user: User,
    pub role_ids: Vec<RoleId>,
}

fn person_name(raw: &str, field: &'static str, label: &str) -> Result<String> {
    crate::validate::PersonName::parse_field(raw, field, label).map(|n| n.as_str().to_owned())
}

/// Validates the name and email of a new user; shared with the workflow's input checks.
pub fn validate_person(
    first: &str,
    last: &str,
    email: &str,
) -> Result<(String, String, EmailAddress)> {
    Ok((
        person_name(first, "first_name", "First name")?,
        person_name(last, "last_name", "Last name")?,
        EmailAddress::parse(email)?,
    ))
}

/// The id of the role `name` of the user type's scope (msp roles for internal users, client
/// roles for client-portal users); a validation error of `role` naming the roles otherwise.
pub(crate) async fn role_id(
    conn: &mut PgConnection,
    tenant: TenantId,
    name: &str,
    user_type: UserType,
) -> Result<RoleId> {
    let id: Option<RoleId> = sqlx::query_scalar(
        "SELECT role_id FROM roles WHERE tenant = $1 AND role_name = $2 AND client = $3 AND msp = NOT $3",
    )
    .bind(tenant)
    .bind(name)
    .bind(user_type == UserType::Client)
    .fetch_optional(&mut *conn)
    .await?;
    id.ok_or_else(|| {
        Error::validation(
            "role",
            format!(
                "There is no role named {name:?}; the roles are: {}",
                role_names_hint(user_type)
            ),
        )
    })
}

fn role_names_hint(user_type: UserType) -> String {
    let client = user_type == UserType::Client;
    crate::seeds::ROLES
        .iter()
        .filter(|(_, _, msp, _)| *msp != client)
        .map(|(name, ..)| *name)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Creates a user without a password, with the given roles.
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    input: NewUser,
    options: CreateOptions,
) -> Result<CreatedUser> {
    let (first, last, email) = validate_person(&input.first_name, &input.last_name, &input.email)?;
    let mut role_ids = Vec::with_capacity(input.roles.len());
    for name in &input.roles {
        // A missing role is the seeds' fault (a conflict); a database that went away while
        // looking is not, and stays the transient failure it is (a provisioning step retries it).
        role_ids.push(
            role_id(conn, tenant, name, input.user_type)
                .await
                .map_err(|e| match e {
                    Error::Validation { .. } => Error::conflict(
                        Some("roles"),
                        format!(
                            "{name} role not found. Onboarding seeds may not have run properly."
                        ),
                    ),
                    other => other,
                })?,
        );
    }
    let id = options.user_id.unwrap_or_default();
    // A new staff user takes a seat (one already made, by an earlier attempt, has it).
    if input.user_type == UserType::Internal {
        // The seats locked first: an earlier attempt still running has committed its user, or
        // has not begun, by the time this one looks.
        if crate::plans::lock_seats(conn, tenant).await? {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM users WHERE tenant = $1 AND user_id = $2)",
            )
            .bind(tenant)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
            if !exists {
                crate::plans::room_left(conn, tenant).await?;
            }
        }
    }
    let inserted = sqlx::query_as::<_, User>(concat!(
        "INSERT INTO users (tenant, user_id, username, first_name, last_name, email, user_type) \
         VALUES ($1, $2, $3, $4, $5, $3, $6) ON CONFLICT (tenant, user_id) DO NOTHING RETURNING ",
        columns!()
    ))
    .bind(tenant)
    .bind(id)
    .bind(email.as_str())
    .bind(&first)
    .bind(&last)
    .bind(input.user_type)
    .fetch_optional(&mut *conn)
    .await?;
    let user = match inserted {
        Some(u) => u,
        None => get(conn, tenant, id).await?,
    };
    for role in &role_ids {
        sqlx::query(
            "INSERT INTO user_roles (tenant, user_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(tenant)
        .bind(id)
        .bind(role)
        .execute(&mut *conn)
        .await?;
    }
    Ok(CreatedUser { user, role_ids })
}

/// Creates the tenant's first administrator: an internal user with the msp Admin role.
pub async fn create_admin(
    conn: &mut PgConnection,
    tenant: TenantId,
    first_name: &str,
    last_name: &str,
    email: &str,
    options: CreateOptions,
) -> Result<CreatedUser> {
    create(
        conn,
        tenant,
        NewUser {
            first_name: first_name.to_owned(),
            last_name: last_name.to_owned(),
            email: email.to_owned(),
            user_type: UserType::Internal,
            roles: vec!["Admin".to_owned()],
        },
        options,
    )
    .await
}

/// The tenant's administrator: its oldest active internal user with the msp Admin role, as
/// (first name, last name, email).
pub async fn tenant_admin(
    conn: &mut PgConnection,
    tenant: TenantId,
) -> Result<Option<(String, String, String)>> {
    Ok(first_admin(conn, tenant).await?.map(|u| {
        (
            u.first_name.unwrap_or_default(),
            u.last_name.unwrap_or_default(),
            u.email,
        )
    }))
}

/// The tenant's first administrator: its oldest active internal user with the msp Admin role
/// (the one provisioning created, unless it was deactivated).
pub async fn first_admin(conn: &mut PgConnection, tenant: TenantId) -> Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE tenant = $1 AND user_id = ( \
           SELECT u.user_id FROM users u \
           JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
           JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
           WHERE u.tenant = $1 AND u.user_type = 'internal' AND NOT u.is_inactive \
             AND r.role_name = 'Admin' AND r.msp \
           ORDER BY u.created_at, u.user_id LIMIT 1)"
    ))
    .bind(tenant)
    .fetch_optional(conn)
    .await?)
}

/// The user `id` of `tenant`.
pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: UserId) -> Result<User> {
    sqlx::query_as::<_, User>(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE tenant = $1 AND user_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound { entity: "user" })
}

/// Whether the user may perform `action` on `resource`, as the reference's `hasPermission`:
/// client-portal users are judged by their client roles and client permissions only, internal
/// users by msp ones. Inactive users may do nothing.
pub async fn has_permission(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    resource: &str,
    action: &str,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS ( \
           SELECT 1 FROM users u \
           JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
           JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
           JOIN role_permissions rp ON rp.tenant = r.tenant AND rp.role_id = r.role_id \
           JOIN permissions p ON p.tenant = rp.tenant AND p.permission_id = rp.permission_id \
           WHERE u.tenant = $1 AND u.user_id = $2 AND NOT u.is_inactive \
             AND p.resource = $3 AND p.action = $4 \
             AND CASE WHEN u.user_type = 'client' THEN r.client AND p.client \
                      ELSE r.msp AND p.msp END)",
    )
    .bind(tenant)
    .bind(user)
    .bind(resource)
    .bind(action)
    .fetch_one(conn)
    .await?)
}

/// The internal user of `tenant` with this email, active or not.
pub async fn find_by_email(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &EmailAddress,
) -> Result<Option<User>> {
    Ok(sqlx::query_as::<_, User>(concat!(
        "SELECT ",
        columns!(),
        " FROM users WHERE tenant = $1 AND email = $2 AND user_type = 'internal'"
    ))
    .bind(tenant)
    .bind(email.as_str())
    .fetch_optional(conn)
    .await?)
}

/// The user's password hash; `None` until they set a password.
pub async fn password_hash(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Option<String>> {
    let row: Option<Option<String>> =
        sqlx::query_scalar("SELECT hashed_password FROM users WHERE tenant = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user)
            .fetch_optional(conn)
            .await?;
    row.ok_or(Error::NotFound { entity: "user" })
}

/// Stores a new password hash (already strength-checked and hashed by the caller).
pub async fn set_password_hash(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    hashed: &str,
) -> Result<()> {
    let n = sqlx::query(
        "UPDATE users SET hashed_password = $3, password_changed_at = now(), updated_at = now() \
         WHERE tenant = $1 AND user_id = $2",
    )
    .bind(tenant)
    .bind(user)
    .bind(hashed)
    .execute(conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(Error::NotFound { entity: "user" });
    }
    Ok(())
}

/// Where a user stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UserStatus {
    /// Invited: no password set yet.
    Invited,
    Active,
    /// Deactivated: cannot sign in; sessions and API keys do not work.
    Inactive,
}

/// A user as the user list shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserSummary {
    #[cfg_attr(feature = "openapi", schema(value_type = uuid::Uuid))]
    pub user_id: UserId,
    pub email: String,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    /// The user's msp roles, by name.
    pub roles: Vec<String>,
    #[sqlx(try_from = "String")]
    pub status: UserStatus,
    /// Has a second factor (an authenticator app).
    pub two_factor_enabled: bool,
    pub created_at: DateTime<Utc>,
    /// Their last sign-in (as the audit log records it), if any.
    pub last_sign_in_at: Option<DateTime<Utc>>,
}

impl TryFrom<String> for UserStatus {
    type Error = String;
    fn try_from(s: String) -> std::result::Result<Self, String> {
        match s.as_str() {
            "invited" => Ok(UserStatus::Invited),
            "active" => Ok(UserStatus::Active),
            "inactive" => Ok(UserStatus::Inactive),
            _ => Err(format!("unknown user status {s}")),
        }
    }
}

const SUMMARY: &str = "SELECT u.user_id, u.email, u.first_name, u.last_name, \
       coalesce(array_agg(r.role_name ORDER BY r.role_name) FILTER (WHERE r.role_id IS NOT NULL), '{}') AS roles, \
       CASE WHEN u.is_inactive THEN 'inactive' WHEN u.hashed_password IS NULL THEN 'invited' ELSE 'active' END AS status, \
       u.two_factor_enabled, u.created_at, \
       (SELECT max(a.created_at) FROM audit_log a \
        WHERE a.tenant = u.tenant AND a.actor_kind = 'user' AND a.actor_id = u.user_id::text \
          AND a.action = 'login') AS last_sign_in_at \
     FROM users u \
     LEFT JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
     LEFT JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id AND r.msp \
     WHERE u.tenant = $1 AND u.user_type = 'internal'";

/// The tenant's staff (internal users), oldest first.
pub async fn list(conn: &mut PgConnection, tenant: TenantId) -> Result<Vec<UserSummary>> {
    Ok(sqlx::query_as::<_, UserSummary>(&format!(
        "{SUMMARY} GROUP BY u.tenant, u.user_id ORDER BY u.created_at, u.user_id"
    ))
    .bind(tenant)
    .fetch_all(conn)
    .await?)
}

/// One of the tenant's staff.
pub async fn summary(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<UserSummary> {
    sqlx::query_as::<_, UserSummary>(&format!(
        "{SUMMARY} AND u.user_id = $2 GROUP BY u.tenant, u.user_id"
    ))
    .bind(tenant)
    .bind(user)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound { entity: "user" })
}

/// Serialises the changes that could leave a tenant without an administrator (role changes and
/// deactivations of one tenant): row locks cannot, as two requests would lock different rows.
async fn lock_admin_changes(conn: &mut PgConnection, tenant: TenantId) -> Result<()> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('psa.admins'), hashtext($1::text))")
        .bind(tenant)
        .execute(conn)
        .await?;
    Ok(())
}

/// Fails unless another active internal user of the tenant holds the msp Admin role: a tenant
/// must never be left without an administrator. Callers hold [`lock_admin_changes`].
async fn keep_an_admin(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    message: &'static str,
) -> Result<()> {
    let others: Vec<UserId> = sqlx::query_scalar(
        "SELECT u.user_id FROM users u \
         JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
         JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
         WHERE u.tenant = $1 AND u.user_id <> $2 AND u.user_type = 'internal' \
           AND NOT u.is_inactive AND r.role_name = 'Admin' AND r.msp",
    )
    .bind(tenant)
    .bind(user)
    .fetch_all(conn)
    .await?;
    if others.is_empty() {
        return Err(Error::conflict(None, message));
    }
    Ok(())
}

async fn is_admin(conn: &mut PgConnection, tenant: TenantId, user: UserId) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_roles ur \
           JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
           WHERE ur.tenant = $1 AND ur.user_id = $2 AND r.role_name = 'Admin' AND r.msp)",
    )
    .bind(tenant)
    .bind(user)
    .fetch_one(conn)
    .await?)
}

/// Gives an internal user exactly one msp role, `role` (its other msp roles are removed). The
/// last active administrator keeps the Admin role.
pub async fn set_role(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    role: &str,
) -> Result<UserSummary> {
    lock_admin_changes(conn, tenant).await?;
    let target = get(conn, tenant, user).await?;
    if target.user_type != UserType::Internal {
        return Err(Error::NotFound { entity: "user" });
    }
    let role_id = role_id(conn, tenant, role, UserType::Internal).await?;
    if role != "Admin" && !target.is_inactive && is_admin(conn, tenant, user).await? {
        keep_an_admin(
            conn,
            tenant,
            user,
            "The tenant's last active administrator cannot lose the Admin role",
        )
        .await?;
    }
    sqlx::query(
        "DELETE FROM user_roles ur USING roles r \
         WHERE ur.tenant = $1 AND ur.user_id = $2 AND r.tenant = ur.tenant \
           AND r.role_id = ur.role_id AND r.msp AND ur.role_id <> $3",
    )
    .bind(tenant)
    .bind(user)
    .bind(role_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "INSERT INTO user_roles (tenant, user_id, role_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(user)
    .bind(role_id)
    .execute(&mut *conn)
    .await?;
    summary(conn, tenant, user).await
}

/// Marks an internal user inactive or active again; the last active administrator cannot be
/// deactivated. What must end with it (sessions, open links) is ended by
/// `identity::set_inactive`, the one door for this.
pub(crate) async fn set_inactive_flag(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    inactive: bool,
) -> Result<UserSummary> {
    lock_admin_changes(conn, tenant).await?;
    let target = get(conn, tenant, user).await?;
    if target.user_type != UserType::Internal {
        return Err(Error::NotFound { entity: "user" });
    }
    if !inactive && target.is_inactive {
        crate::plans::ensure_room(conn, tenant).await?;
    }
    if inactive && !target.is_inactive && is_admin(conn, tenant, user).await? {
        keep_an_admin(
            conn,
            tenant,
            user,
            "The tenant's last active administrator cannot be deactivated",
        )
        .await?;
    }
    sqlx::query(
        "UPDATE users SET is_inactive = $3, updated_at = now() WHERE tenant = $1 AND user_id = $2",
    )
    .bind(tenant)
    .bind(user)
    .bind(inactive)
    .execute(&mut *conn)
    .await?;
    summary(conn, tenant, user).await
}
