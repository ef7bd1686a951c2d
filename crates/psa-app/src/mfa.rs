//! Second factors, as their holder and the tenant's administrators manage them: an
//! authenticator app (TOTP) set up and confirmed by its first code, which gives ten recovery
//! codes; removed by its holder (with the password or a code) or reset by an administrator (the
//! user's sessions end, and they are told by email); and the tenant's policy that every user
//! must have one. Every change is audited in the tenant.

use psa_models::audit::{self, Action};
use psa_models::{Error, Result, TenantId, UserId, credentials, db, mfa, users};
use psa_workflows::secret::{Sealed, SecretKey};
use secrecy::{ExposeSecret, SecretString};

use crate::access::{Access, Permission, Resource};
use crate::{App, Principal};

const MANAGE: Permission = Permission(Resource::User, Access::Update);

fn key(app: &App) -> Result<&SecretKey> {
    app.webhooks.key.as_ref().ok_or_else(|| {
        Error::unavailable(
            "This server has no PSA_SECRET_KEY: an authenticator app's secret cannot be kept",
        )
    })
}

/// The row a user's TOTP secret is sealed for: it opens for that user only (`psa secrets
/// reseal` uses the same).
fn row(tenant: TenantId, user: UserId) -> String {
    format!("{tenant}/{user}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

/// An enrolment begun: the secret to type in, and the URI to scan.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrolling {
    /// Base32, for typing into the app.
    pub secret: String,
    /// `otpauth://totp/...`: what the QR code holds.
    pub otpauth_uri: String,
}

/// Starts setting up an authenticator app for the signed-in user: a new secret (nothing is
/// required of them until it is confirmed). A confirmed one must be removed first; a user who
/// has a passkey proves it is them first.
pub async fn begin_totp(app: &App, who: &Principal, proof: Option<Proof<'_>>) -> Result<Enrolling> {
    who.refuse_in_support("second factors")?;
    let m = member(who)?;
    let key = key(app)?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    if mfa::enrolment(&mut tx, m.tenant, m.user)
        .await?
        .is_some_and(|e| e.confirmed)
    {
        return Err(Error::conflict(
            None,
            "An authenticator app is already set up: remove it first to set up another",
        ));
    }
    proof_if_enrolled(app, &mut tx, m.tenant, m.user, proof).await?;
    let user = users::get(&mut tx, m.tenant, m.user).await?;
    let secret = mfa::new_secret();
    let encoded = mfa::encoded(&secret);
    let sealed = key.seal_for(
        &SecretString::from(encoded.clone()),
        Sealed::TotpSecret,
        &row(m.tenant, m.user),
    );
    mfa::begin(&mut tx, m.tenant, m.user, &sealed).await?;
    audit::record(
        &mut tx,
        m.tenant,
        &who.actor(),
        Action::EnrollSecondFactor,
        "user",
        Some(m.user.0),
        serde_json::json!({"method": "totp"}),
    )
    .await?;
    tx.commit().await?;
    Ok(Enrolling {
        otpauth_uri: mfa::otpauth_uri(&secret, &user.email)?,
        secret: encoded,
    })
}

/// The user's TOTP secret, opened.
async fn secret_of(
    app: &App,
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    user: UserId,
) -> Result<Option<(Vec<u8>, bool)>> {
    let Some(e) = mfa::enrolment(conn, tenant, user).await? else {
        return Ok(None);
    };
    let opened = key(app)?
        .open_for(&e.secret_sealed, Sealed::TotpSecret, &row(tenant, user))
        .map_err(Error::internal)?;
    Ok(Some((mfa::decoded(opened.expose_secret())?, e.confirmed)))
}

/// Where the signed-in user stands: no app, one being set up (its secret and URI again, to
/// show the QR code once more), or one confirmed (with the recovery codes left).
#[derive(Debug, Clone)]
pub enum Standing {
    None,
    Enrolling(Enrolling),
    Enrolled { recovery_codes_left: i64 },
}

pub async fn standing(app: &App, who: &Principal) -> Result<Standing> {
    who.refuse_in_support("second factors")?;
    let m = member(who)?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    let out = match mfa::enrolment(&mut tx, m.tenant, m.user).await? {
        None => Standing::None,
        Some(e) if e.confirmed => Standing::Enrolled {
            recovery_codes_left: mfa::recovery_codes_left(&mut tx, m.tenant, m.user).await?,
        },
        Some(_) => {
            let user = users::get(&mut tx, m.tenant, m.user).await?;
            let (secret, _) =
                secret_of(app, &mut tx, m.tenant, m.user)
                    .await?
                    .ok_or(Error::NotFound {
                        entity: "second factor",
                    })?;
            Standing::Enrolling(Enrolling {
                otpauth_uri: mfa::otpauth_uri(&secret, &user.email)?,
                secret: mfa::encoded(&secret),
            })
        }
    };
    tx.rollback().await?;
    Ok(out)
}

/// Confirms the app with its first code: from now on it is the user's second factor, and this
/// session counts as having passed it. Returns the ten recovery codes (shown this once).
pub async fn confirm_totp(app: &App, who: &Principal, code: &str) -> Result<Vec<String>> {
    who.refuse_in_support("second factors")?;
    let m = member(who)?;
    let code = mfa::totp_code(code)
        .ok_or_else(|| Error::validation("code", "The code is the 6 digits the app shows"))?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    let Some((secret, confirmed)) = secret_of(app, &mut tx, m.tenant, m.user).await? else {
        return Err(Error::conflict(
            None,
            "Set up an authenticator app first (POST /api/v1/auth/mfa/totp)",
        ));
    };
    if confirmed {
        return Err(Error::conflict(
            None,
            "The authenticator app is already set up",
        ));
    }
    let step = mfa::matching_step(&secret, &code, now())?.ok_or_else(|| {
        Error::validation(
            "code",
            "The code is not right: check the app's clock and try the next one",
        )
    })?;
    mfa::use_step(&mut tx, m.tenant, m.user, step).await?;
    let codes = mfa::new_recovery_codes();
    mfa::confirm(&mut tx, m.tenant, m.user, &codes).await?;
    if let credentials::Credential::Session(session) = m.credential {
        credentials::passed_second_factor(&mut tx, m.tenant, session).await?;
    }
    audit::record(
        &mut tx,
        m.tenant,
        &who.actor(),
        Action::ConfirmSecondFactor,
        "user",
        Some(m.user.0),
        serde_json::json!({"method": "totp", "recovery_codes": codes.len()}),
    )
    .await?;
    tx.commit().await?;
    Ok(codes)
}

/// The outcome of checking a second-factor code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    /// Right: `totp` or `recovery_code` (what it used up is written in the caller's
    /// transaction, with the count of wrong codes cleared).
    Passed(&'static str),
    /// Wrong (counted, in its own transaction); `locked` when this one locked the factor.
    Wrong { locked: bool },
    /// Too many wrong codes: no code is checked until then.
    Locked(chrono::DateTime<chrono::Utc>),
}

/// Checks a second-factor code of the user: a TOTP code (once per step) or an unused recovery
/// code (used now), unless too many wrong ones locked it. A wrong code is counted in its own
/// transaction (the caller's rolls back); the user is told by email when one locks it.
pub async fn check_code(
    app: &App,
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    user: UserId,
    code: &str,
) -> Result<Checked> {
    if let Some(until) = mfa::locked_until(conn, tenant, user).await? {
        return Ok(Checked::Locked(until));
    }
    let passed = if let Some(code) = mfa::totp_code(code) {
        match secret_of(app, conn, tenant, user).await? {
            Some((secret, true)) => match mfa::matching_step(&secret, &code, now())? {
                Some(step) if mfa::use_step(conn, tenant, user, step).await? => Some("totp"),
                _ => None,
            },
            _ => None,
        }
    } else if let Some(code) = mfa::recovery_code(code) {
        mfa::use_recovery_code(conn, tenant, user, &code)
            .await?
            .then_some("recovery_code")
    } else {
        None
    };
    if let Some(method) = passed {
        mfa::clear_failures(conn, tenant, user).await?;
        return Ok(Checked::Passed(method));
    }
    let mut tx = db::begin_tenant(&app.pool, tenant).await?;
    let locked = mfa::note_failure(&mut tx, tenant, user).await?;
    tx.commit().await?;
    if locked {
        let lines = [
            format!(
                "Several wrong codes were given for your account's second factor: it refuses \
                 codes for {} minutes.",
                mfa::LOCK_MINUTES
            ),
            "Whoever gave them knew your password: change it now, and sign out your other \
             sessions (the console's Sessions page)."
                .to_owned(),
        ];
        tell(
            app,
            tenant,
            user,
            "Your psa second factor is locked for a while",
            &lines,
        )
        .await;
    }
    Ok(Checked::Wrong { locked })
}

/// How the signed-in user proved it is them, to remove their second factor.
#[derive(Debug, Clone, Copy)]
pub enum Proof<'a> {
    /// Their password, already checked by the door (with the sign-in limits).
    PasswordChecked,
    /// A current code (checked here, counted like any code).
    Code(&'a str),
}

/// Checks `proof` of the user in `conn` (their tenant's transaction): a password the door
/// checked, or a current code (counted like any code). A wrong code is a validation error on
/// `code`.
pub(crate) async fn check_proof(
    app: &App,
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    user: UserId,
    proof: Proof<'_>,
) -> Result<()> {
    let Proof::Code(code) = proof else {
        return Ok(());
    };
    match check_code(app, conn, tenant, user, code).await? {
        Checked::Passed(_) => Ok(()),
        Checked::Wrong { .. } => Err(Error::validation(
            "code",
            "That code is not right: nothing was changed",
        )),
        Checked::Locked(until) => Err(Error::validation(
            "code",
            format!(
                "Too many wrong codes: try again after {}",
                until.format("%H:%M UTC")
            ),
        )),
    }
}

/// What a change to a user's second factors needs when they already have one: proof that it is
/// them (a session alone may have been taken over).
pub(crate) async fn proof_if_enrolled(
    app: &App,
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    user: UserId,
    proof: Option<Proof<'_>>,
) -> Result<()> {
    if !mfa::has_second_factor(conn, tenant, user).await? {
        return Ok(());
    }
    let proof = proof.ok_or_else(|| {
        Error::validation(
            "password",
            "You have a second factor already: confirm with your password (or a code) to add another",
        )
    })?;
    check_proof(app, conn, tenant, user, proof).await
}

/// How the proof is recorded in the audit row.
pub(crate) fn proof_name(proof: Option<Proof<'_>>) -> &'static str {
    match proof {
        Some(Proof::PasswordChecked) => "password",
        Some(Proof::Code(_)) => "code",
        None => "none",
    }
}

/// Removes the signed-in user's second factor, proven by their password or a current code.
pub async fn remove_own(app: &App, who: &Principal, proof: Proof<'_>) -> Result<()> {
    who.refuse_in_support("second factors")?;
    let m = member(who)?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    check_proof(app, &mut tx, m.tenant, m.user, proof).await?;
    if !mfa::remove_totp(&mut tx, m.tenant, m.user).await? {
        return Err(Error::NotFound {
            entity: "second factor",
        });
    }
    let how = proof_name(Some(proof));
    audit::record(
        &mut tx,
        m.tenant,
        &who.actor(),
        Action::RemoveSecondFactor,
        "user",
        Some(m.user.0),
        serde_json::json!({"proof": how}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Mails the user a notice about their account (a second factor reset or locked, a sign-in from
/// a new device), when mail is configured; a failure is logged, never the caller's.
pub async fn tell(app: &App, tenant: TenantId, user: UserId, subject: &str, lines: &[String]) {
    let Some(mailer) = &app.delivery.mailer else {
        return;
    };
    let found = async {
        let mut tx = db::begin_tenant(&app.pool, tenant).await?;
        let u = users::get(&mut tx, tenant, user).await?;
        let name = psa_models::tenants::get(&mut tx, tenant)
            .await?
            .company_name;
        tx.rollback().await?;
        Ok::<_, Error>((u, name))
    }
    .await;
    let (u, tenant_name) = match found {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(%tenant, %user, error = %e, "a notice to the user was not sent");
            return;
        }
    };
    let first = u.first_name.clone().unwrap_or_default();
    let email = psa_models::mail::notice(&tenant_name, &first, subject, lines);
    let name = format!("{} {}", first, u.last_name.as_deref().unwrap_or_default());
    if let Err(e) = mailer.send(name.trim(), &u.email, &email).await {
        tracing::warn!(%tenant, %user, error = %e, "a notice to the user was not sent");
    }
}

/// An administrator removes a user's second factors (a lost phone): the user's sessions end, the
/// user is told by email when mail is configured. Returns whether there was one.
pub async fn reset(app: &App, who: &Principal, tenant: TenantId, user: UserId) -> Result<bool> {
    who.refuse_in_support("second factors")?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let target = users::get(&mut tx, tenant, user).await?;
    let removed = mfa::remove_all(&mut tx, tenant, user).await?;
    let sessions = credentials::revoke_sessions_of(&mut tx, tenant, user).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::ResetSecondFactor,
        "user",
        Some(user.0),
        serde_json::json!({"removed": removed, "sessions_ended": sessions}),
    )
    .await?;
    tx.commit().await?;
    let lines = [
        format!(
            "An administrator removed the second factor of {}.",
            target.email
        ),
        "Your sessions were ended. At your next sign-in, set up an authenticator app again."
            .to_owned(),
    ];
    tell(
        app,
        tenant,
        user,
        "Your psa second factor was reset",
        &lines,
    )
    .await;
    Ok(removed)
}

/// Whether the tenant requires a second factor of its users.
pub async fn policy(app: &App, who: &Principal, tenant: TenantId) -> Result<bool> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::User, Access::Read))
        .await?;
    let on = mfa::required(&mut tx, tenant).await?;
    tx.rollback().await?;
    Ok(on)
}

/// Sets the tenant's policy (its administrators): audited with before and after. Users without
/// a second factor are asked to set one up at their next sign-in.
pub async fn set_policy(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    required: bool,
) -> Result<bool> {
    who.refuse_in_support("second factors")?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let before = mfa::set_required(&mut tx, tenant, required).await?;
    if before != required {
        audit::record(
            &mut tx,
            tenant,
            &who.actor(),
            Action::Update,
            "tenant",
            Some(tenant.0),
            serde_json::json!({"mfa_required": {"before": before, "after": required}}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(required)
}

fn member(who: &Principal) -> Result<&crate::Member> {
    who.member()
        .ok_or_else(|| Error::validation("session", "Only a signed-in user has a second factor"))
}
