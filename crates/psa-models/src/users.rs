//! Users, their roles, and permission checks.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::validate::EmailAddress;
use crate::{Error, Result, RoleId, TenantId, UserId, password};

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
    pub created_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "tenant, user_id, username, email, first_name, last_name, user_type, is_inactive, created_at"
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
    /// its password is replaced by a new temporary one, which is returned: the first one was
    /// never seen by anybody.
    pub user_id: Option<UserId>,
}

/// A created user and its temporary password.
#[derive(Debug, Clone)]
pub struct CreatedUser {
    pub user: User,
    pub role_ids: Vec<RoleId>,
    pub temporary_password: SecretString,
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

/// Creates a user with a generated temporary password (argon2id-hashed) and the given roles.
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    input: NewUser,
    options: CreateOptions,
) -> Result<CreatedUser> {
    let (first, last, email) = validate_person(&input.first_name, &input.last_name, &input.email)?;
    let scope_is_client = input.user_type == UserType::Client;
    let mut role_ids = Vec::with_capacity(input.roles.len());
    for name in &input.roles {
        let id: Option<RoleId> = sqlx::query_scalar(
            "SELECT role_id FROM roles WHERE tenant = $1 AND role_name = $2 AND client = $3 AND msp = NOT $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(scope_is_client)
        .fetch_optional(&mut *conn)
        .await?;
        role_ids.push(id.ok_or_else(|| {
            Error::conflict(
                Some("roles"),
                format!("{name} role not found. Onboarding seeds may not have run properly."),
            )
        })?);
    }

    let temporary_password = password::generate();
    let hashed = password::hash(&temporary_password).await?;
    let id = options.user_id.unwrap_or_default();
    let inserted = sqlx::query_as::<_, User>(concat!(
        "INSERT INTO users (tenant, user_id, username, hashed_password, first_name, last_name, email, user_type) \
         VALUES ($1, $2, $3, $4, $5, $6, $3, $7) ON CONFLICT (tenant, user_id) DO NOTHING RETURNING ",
        columns!()
    ))
    .bind(tenant)
    .bind(id)
    .bind(email.as_str())
    .bind(&hashed)
    .bind(&first)
    .bind(&last)
    .bind(input.user_type)
    .fetch_optional(&mut *conn)
    .await?;
    let user = match inserted {
        Some(u) => u,
        None => {
            sqlx::query_as::<_, User>(concat!(
                "UPDATE users SET hashed_password = $3, updated_at = now() \
             WHERE tenant = $1 AND user_id = $2 RETURNING ",
                columns!()
            ))
            .bind(tenant)
            .bind(id)
            .bind(&hashed)
            .fetch_one(&mut *conn)
            .await?
        }
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
    Ok(CreatedUser {
        user,
        role_ids,
        temporary_password,
    })
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
    Ok(sqlx::query_as(
        "SELECT coalesce(u.first_name, ''), coalesce(u.last_name, ''), u.email FROM users u \
         JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
         JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
         WHERE u.tenant = $1 AND u.user_type = 'internal' AND NOT u.is_inactive \
           AND r.role_name = 'Admin' AND r.msp \
         ORDER BY u.created_at, u.user_id LIMIT 1",
    )
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

/// The active internal user of `tenant` with this email, with its password hash (for login).
pub async fn find_for_login(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &EmailAddress,
) -> Result<Option<(User, String)>> {
    let row: Option<(UserId, String)> = sqlx::query_as(
        "SELECT user_id, hashed_password FROM users \
         WHERE tenant = $1 AND email = $2 AND user_type = 'internal' AND NOT is_inactive",
    )
    .bind(tenant)
    .bind(email.as_str())
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        None => Ok(None),
        Some((id, hash)) => Ok(Some((get(conn, tenant, id).await?, hash))),
    }
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
