//! Who is acting, and whether they may: the one place an operation's permission is checked.
//!
//! - A [`Member`] (a user of a tenant, by session or API key) holds the permissions of their
//!   roles (the reference's `resource:action` pairs), in their own tenant only; the platform's
//!   operations (the tenants' lifecycle, webhooks) also need that tenant to be the management
//!   tenant.
//! - An [`Operator`] at the command line holds every permission: running `psa` with the
//!   database's credentials already is that power (the database would let them write anything),
//!   so the check says so instead of pretending to ask. Their name is self-declared.
//! - The platform itself (worker, sweeper, reconcile) acts as its code decides.
//!
//! Every operation begins with [`App::begin`] or [`App::begin_management`]: a transaction
//! confined to the tenant by row-level security, opened only once the permission is held.

use psa_models::audit::Actor;
use psa_models::credentials::Credential;
use psa_models::{Error, Result, TenantId, UserId, db, users};
use sqlx::{PgConnection, Postgres, Transaction};

use crate::App;

/// What a permission is about (the reference's resources).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    Client,
    Contact,
    Tag,
    Tenant,
    User,
    Webhook,
    /// The tenant's single sign-on (`sso:manage`).
    Sso,
    /// The platform's plans (`plan:read`, `plan:manage`; management tenant).
    Plan,
}

/// What a permission allows on its resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Create,
    Read,
    Update,
    Delete,
    /// Everything about the resource (`sso:manage`).
    Manage,
    /// Acting in a tenant as one of its users (`tenant:support`; management tenant).
    Support,
}

/// One permission: `resource:action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission(pub Resource, pub Access);

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Client => "client",
            Resource::Contact => "contact",
            Resource::Tag => "tag",
            Resource::Tenant => "tenant",
            Resource::Plan => "plan",
            Resource::User => "user",
            Resource::Webhook => "webhook",
            Resource::Sso => "sso",
        }
    }
}

impl Access {
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Create => "create",
            Access::Read => "read",
            Access::Update => "update",
            Access::Delete => "delete",
            Access::Manage => "manage",
            Access::Support => "support",
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.0.as_str(), self.1.as_str())
    }
}

/// A user of a tenant, authenticated by a session or an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub tenant: TenantId,
    pub user: UserId,
    pub credential: Credential,
    /// A client-portal user: the tenant's customer, who holds no staff permission here.
    pub client_portal: bool,
    /// Management staff acting as this user in a support session (the `support` module): audited
    /// with both identities, refused what touches credentials.
    pub support: Option<uuid::Uuid>,
}

/// An operator at the command line: the operating-system account and host (self-declared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operator {
    pub account: String,
    pub host: String,
}

impl Operator {
    /// The account this process runs under, at this host.
    pub fn from_environment() -> Operator {
        match Actor::operator_from_environment() {
            Actor::Operator { account, host } => Operator { account, host },
            _ => unreachable!("operator_from_environment names an operator"),
        }
    }
}

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Member(Member),
    Operator(Operator),
    /// The platform's own code path: one of `psa_models::audit::PLATFORM_PARTS`.
    Platform(&'static str),
}

impl Principal {
    /// As the audit log records it.
    pub fn actor(&self) -> Actor {
        match self {
            Principal::Member(Member {
                support: Some(session),
                user,
                ..
            }) => Actor::Support {
                session: *session,
                user: *user,
            },
            Principal::Member(m) => match m.credential {
                Credential::Session(_) => Actor::User { user: m.user },
                Credential::ApiKey(key) => Actor::ApiKey { key, user: m.user },
            },
            Principal::Operator(o) => Actor::Operator {
                account: o.account.clone(),
                host: o.host.clone(),
            },
            Principal::Platform(part) => Actor::Platform(part),
        }
    }

    /// The member, for what only a signed-in user does (their own password, sessions).
    pub fn member(&self) -> Option<&Member> {
        match self {
            Principal::Member(m) => Some(m),
            _ => None,
        }
    }

    /// Refuses (403 `not_in_support_session`) what a support session may not do: read or
    /// change credentials (passwords, second factors, API keys, sessions, single sign-on, the
    /// tenant's sign-in policy and support access). `what` names it in the message.
    pub fn refuse_in_support(&self, what: &str) -> Result<()> {
        match self {
            Principal::Member(Member {
                support: Some(_), ..
            }) => Err(Error::Refused {
                code: "not_in_support_session",
                message: format!(
                    "A support session cannot reach {what}: the user manages their own \
                     credentials"
                )
                .into(),
            }),
            _ => Ok(()),
        }
    }
}

impl App {
    /// A transaction confined to `tenant`, once `who` holds `permission` there (403 otherwise,
    /// before anything is read or written). A member acts in their own tenant only: another
    /// tenant is not found, as it would not be through row-level security.
    pub async fn begin(
        &self,
        who: &Principal,
        tenant: TenantId,
        permission: Permission,
    ) -> Result<Transaction<'static, Postgres>> {
        if let Principal::Member(m) = who
            && m.tenant != tenant
        {
            return Err(Error::NotFound { entity: "Tenant" });
        }
        let mut tx = db::begin_tenant(&self.pool, tenant).await?;
        require(&mut tx, who, permission).await?;
        Ok(tx)
    }

    /// A transaction confined to `tenant` whose permission the operation checks itself, with
    /// [`require`], because it depends on what it reads first (a tag mapping's entity). A member
    /// still acts in their own tenant only.
    pub async fn begin_unchecked(
        &self,
        who: &Principal,
        tenant: TenantId,
    ) -> Result<Transaction<'static, Postgres>> {
        if let Principal::Member(m) = who
            && m.tenant != tenant
        {
            return Err(Error::NotFound { entity: "Tenant" });
        }
        db::begin_tenant(&self.pool, tenant).await
    }

    /// Like [`App::begin`], in the management tenant, for the platform's operations: a
    /// member's tenant must be the management tenant (as the database marks it); for an
    /// operator, the configured one or the database's. Returns the management tenant too.
    pub async fn begin_management(
        &self,
        who: &Principal,
        permission: Permission,
    ) -> Result<(Transaction<'static, Postgres>, TenantId)> {
        let mgmt = match who {
            Principal::Member(m) => m.tenant,
            _ => self.management_tenant().await?,
        };
        let mut tx = self.begin(who, mgmt, permission).await?;
        let is_management: bool = sqlx::query_scalar(
            "SELECT coalesce((SELECT is_management FROM tenants WHERE tenant = $1), false)",
        )
        .bind(mgmt)
        .fetch_one(&mut *tx)
        .await?;
        if !is_management {
            return Err(match who {
                Principal::Member(_) => {
                    Error::forbidden("Only the management tenant may manage tenants")
                }
                // The configured id names another tenant: a setting to fix.
                _ => Error::InvalidState {
                    code: "not_management_tenant",
                    message: format!(
                        "NINEMINDS_TENANT_ID is {mgmt}, which is not the management tenant"
                    )
                    .into(),
                },
            });
        }
        Ok((tx, mgmt))
    }

    /// The management tenant: `NINEMINDS_TENANT_ID`, else the database's.
    pub async fn management_tenant(&self) -> Result<TenantId> {
        if let Some(id) = self.settings.management_tenant_id {
            return Ok(id);
        }
        // Through the definer function: a caller without a tenant (the billing webhook, on the
        // API's confined login) sees no tenant's row.
        let found: Option<TenantId> = sqlx::query_scalar("SELECT psa_management_tenant()")
            .fetch_one(&self.pool)
            .await?;
        found.ok_or_else(|| Error::InvalidState {
            code: "no_management_tenant",
            message: "There is no management tenant: create it with `psa management init`".into(),
        })
    }
}

/// Whether `who` holds `permission` (to offer what needs it); a failure to check is an error,
/// not a "no".
pub async fn may(conn: &mut PgConnection, who: &Principal, permission: Permission) -> Result<bool> {
    match require(conn, who, permission).await {
        Ok(()) => Ok(true),
        Err(Error::Forbidden(_)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Fails with `Forbidden` unless `who` holds `permission` (for checks inside an operation's
/// transaction, where the permission depends on the input). `conn` is in the member's tenant.
pub async fn require(
    conn: &mut PgConnection,
    who: &Principal,
    permission: Permission,
) -> Result<()> {
    let m = match who {
        Principal::Member(m) => m,
        // Holding the database's credentials is every permission already (see the module).
        Principal::Operator(_) => return Ok(()),
        // The platform's own code path decides what it does.
        Principal::Platform(_) => return Ok(()),
    };
    if m.client_portal {
        return Err(Error::forbidden(
            "Client portal users have no access to this API",
        ));
    }
    let Permission(resource, access) = permission;
    if users::has_permission(conn, m.tenant, m.user, resource.as_str(), access.as_str()).await? {
        Ok(())
    } else {
        Err(Error::forbidden(format!(
            "Permission denied: {permission} is required"
        )))
    }
}
