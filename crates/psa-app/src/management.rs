//! The platform's management tenant: made once, by an operator, with its first administrator.

use chrono::{DateTime, Utc};
use psa_models::audit::{self, Action};
use psa_models::tenants::{self, AdminInput, ManagementInit};
use psa_models::{Error, Result, invitations};
use secrecy::SecretString;

use crate::App;
use crate::access::Principal;

/// What [`init`] did, with the administrator's invitation link (shown once: there is nobody to
/// mail it to yet).
pub struct Initialised {
    pub init: ManagementInit,
    pub link: Option<(SecretString, DateTime<Utc>)>,
}

/// Creates the management tenant unless it exists, with `admin` unless a user has that email;
/// an administrator without a password yet (new, or invited before) gets a new link. Only an
/// operator (the database's credentials) does this: nobody can sign in before it exists.
pub async fn init(
    app: &App,
    who: &Principal,
    name: &str,
    admin: Option<AdminInput>,
) -> Result<Initialised> {
    if !matches!(who, Principal::Operator(_)) {
        return Err(Error::forbidden(
            "The management tenant is made by an operator (`psa management init`)",
        ));
    }
    let mut tx = app.pool.begin().await?;
    let init = tenants::init_management(&mut tx, name, admin).await?;
    let id = init.tenant.tenant;
    let mut link = None;
    if let Some((user, created)) = &init.admin
        && !user.has_password
        && !user.is_inactive
    {
        let actor = who.actor();
        let issued =
            invitations::reissue(&mut tx, id, user.user_id, &app.delivery, &actor.to_string())
                .await?;
        audit::record(
            &mut tx,
            id,
            &actor,
            if *created {
                Action::Invite
            } else {
                Action::ResendInvite
            },
            "user",
            Some(user.user_id.0),
            serde_json::json!({"email": user.email, "role": "Admin"}),
        )
        .await?;
        link = Some((
            issued.link.url(&app.delivery.public_url),
            issued.link.expires_at,
        ));
    }
    tx.commit().await?;
    Ok(Initialised { init, link })
}

/// The demo's management tenant (`psa demo`, in a database of its own): made like [`init`],
/// its administrator given a generated password, returned to be shown once (so the
/// console can be tried at once, with no mail server). Audited as a password reset.
pub async fn init_demo(
    app: &App,
    who: &Principal,
    name: &str,
    admin: Option<AdminInput>,
) -> Result<(psa_models::TenantId, Option<SecretString>)> {
    if !matches!(who, Principal::Operator(_)) {
        return Err(Error::forbidden(
            "The demo is run by an operator (`psa demo`)",
        ));
    }
    let mut tx = app.pool.begin().await?;
    let init = tenants::init_management(&mut tx, name, admin).await?;
    let id = init.tenant.tenant;
    let password = match &init.admin {
        Some((user, _)) => {
            let password = psa_models::password::generate();
            let hash = psa_models::password::hash(&password).await?;
            psa_models::users::set_password_hash(&mut tx, id, user.user_id, &hash).await?;
            audit::record(
                &mut tx,
                id,
                &who.actor(),
                Action::ResetPassword,
                "user",
                Some(user.user_id.0),
                serde_json::json!({"generated": true, "by": "psa demo"}),
            )
            .await?;
            Some(password)
        }
        _ => None,
    };
    tx.commit().await?;
    Ok((id, password))
}
