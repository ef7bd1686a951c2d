//! Inviting users and resetting passwords: the link is issued in the caller's transaction
//! ([`crate::auth_tokens`]) and delivered by mail, or, where no mail is configured, shown once
//! to the operator who asked for it (the CLI only: the API never shows a link).

use std::time::Duration;

use secrecy::SecretString;
use sqlx::PgConnection;

use crate::auth_tokens::{self, IssueOptions, IssuedLink, Purpose};
use crate::mail::{self, Kind, Mailer, SendError};
use crate::users::{self, NewUser, User, UserType};
use crate::validate::EmailAddress;
use crate::{Error, Result, TenantId, UserId};

/// How links reach people.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// `None`: no mail configured; links are shown to the operator instead.
    pub mailer: Option<Mailer>,
    /// Where users reach `psa serve` (`PSA_PUBLIC_URL`).
    pub public_url: url::Url,
    pub invitation_ttl: Duration,
    pub reset_ttl: Duration,
}

/// The address `psa serve` listens on by default, for links when `PSA_PUBLIC_URL` is not set.
pub const DEFAULT_PUBLIC_URL: &str = "http://localhost:8080";

impl Delivery {
    /// Links without mail, valid for the default times (a laptop, the tests).
    pub fn without_mail(public_url: url::Url) -> Self {
        Delivery {
            mailer: None,
            public_url,
            invitation_ttl: Purpose::Invitation.default_ttl(),
            reset_ttl: Purpose::PasswordReset.default_ttl(),
        }
    }

    pub fn ttl(&self, purpose: Purpose) -> Duration {
        match purpose {
            Purpose::Invitation => self.invitation_ttl,
            Purpose::PasswordReset => self.reset_ttl,
        }
    }

    /// Mails `link` to `user`, or returns the link to show when there is no mailer.
    pub async fn deliver(
        &self,
        kind: Kind,
        tenant_name: &str,
        user: &User,
        link: &IssuedLink,
    ) -> Result<Delivered, SendError> {
        let url = link.url(&self.public_url);
        let Some(mailer) = &self.mailer else {
            return Ok(Delivered::Shown(url));
        };
        let first = user.first_name.as_deref().unwrap_or_default();
        let last = user.last_name.as_deref().unwrap_or_default();
        let email = mail::render(
            kind,
            mail::Context {
                tenant_name,
                first_name: first,
                last_name: last,
                email: &user.email,
                link: &url,
                expires_at: link.expires_at,
            },
        );
        mailer
            .send(format!("{first} {last}").trim(), &user.email, &email)
            .await?;
        Ok(Delivered::Sent)
    }
}

/// Where a link went.
#[derive(Debug)]
pub enum Delivered {
    /// Mailed to the user.
    Sent,
    /// No mail configured: the link, to be shown once to the operator who asked.
    Shown(SecretString),
}

impl Delivered {
    pub fn status(&self) -> &'static str {
        match self {
            Delivered::Sent => "sent",
            Delivered::Shown(_) => "shown",
        }
    }
}

/// An invitation to `user`: its link, issued, not yet delivered.
#[derive(Debug)]
pub struct Invitation {
    pub user: User,
    pub link: IssuedLink,
}

/// A user to invite: `POST /api/v1/users`, `psa user invite`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewInvitee {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
    /// An msp role of the tenant: Admin, Finance, Technician, Project Manager or Dispatcher.
    pub role: String,
}

/// Creates an internal user with one msp role and issues their invitation. `created_by` names
/// the inviter for the token row (`user:<id>` or `cli`).
pub async fn invite(
    conn: &mut PgConnection,
    tenant: TenantId,
    input: &NewInvitee,
    delivery: &Delivery,
    created_by: &str,
) -> Result<Invitation> {
    let NewInvitee {
        first_name,
        last_name,
        email,
        role,
    } = input;
    // Checked first so that a wrong name reads as a validation error of `role` (naming the
    // roles), not as the missing-seeds conflict `create` reports.
    users::role_id(conn, tenant, role, UserType::Internal).await?;
    let created = users::create(
        conn,
        tenant,
        NewUser {
            first_name: first_name.clone(),
            last_name: last_name.clone(),
            email: email.clone(),
            user_type: UserType::Internal,
            roles: vec![role.clone()],
        },
        users::CreateOptions::default(),
    )
    .await?;
    // A taken email is refused by the users' unique key (409 `conflict` on `email`).
    let link = invitation_link(conn, tenant, created.user.user_id, delivery, created_by).await?;
    Ok(Invitation {
        user: created.user,
        link,
    })
}

/// A new invitation for a user who has not set a password yet; the earlier one stops working.
pub async fn reissue(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    delivery: &Delivery,
    created_by: &str,
) -> Result<Invitation> {
    let target = users::get(conn, tenant, user).await?;
    if target.user_type != UserType::Internal {
        return Err(Error::NotFound { entity: "user" });
    }
    if target.is_inactive {
        return Err(Error::conflict(
            None,
            "The user is deactivated: reactivate them before inviting them again",
        ));
    }
    if target.has_password {
        return Err(Error::conflict(
            None,
            "The user has already accepted their invitation and set a password; they can reset it from the sign-in page",
        ));
    }
    let link = invitation_link(conn, tenant, user, delivery, created_by).await?;
    Ok(Invitation { user: target, link })
}

async fn invitation_link(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    delivery: &Delivery,
    created_by: &str,
) -> Result<IssuedLink> {
    auth_tokens::issue(
        conn,
        tenant,
        user,
        IssueOptions {
            purpose: Purpose::Invitation,
            ttl: delivery.invitation_ttl,
            created_by,
            workflow_id: None,
        },
    )
    .await
}

/// How often one account can be sent a reset link: a request within this time of the last link
/// sends nothing (the earlier link still works), so nobody can flood a mailbox or keep
/// invalidating the owner's link.
pub const RESET_COOLDOWN: Duration = Duration::from_secs(5 * 60);

/// A password-reset link for the active internal user with this email, if there is one and no
/// link went to it within [`RESET_COOLDOWN`].
pub async fn reset(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &EmailAddress,
    delivery: &Delivery,
) -> Result<Option<Invitation>> {
    let Some(user) = users::find_by_email(conn, tenant, email).await? else {
        return Ok(None);
    };
    if user.is_inactive {
        return Ok(None);
    }
    let recent: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM user_auth_tokens WHERE tenant = $1 AND user_id = $2 \
           AND purpose = 'password_reset' AND created_at > now() - make_interval(secs => $3))",
    )
    .bind(tenant)
    .bind(user.user_id)
    .bind(RESET_COOLDOWN.as_secs_f64())
    .fetch_one(&mut *conn)
    .await?;
    if recent {
        return Ok(None);
    }
    let link = auth_tokens::issue(
        conn,
        tenant,
        user.user_id,
        IssueOptions {
            purpose: Purpose::PasswordReset,
            ttl: delivery.reset_ttl,
            created_by: "anonymous",
            workflow_id: None,
        },
    )
    .await?;
    Ok(Some(Invitation { user, link }))
}
