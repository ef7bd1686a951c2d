//! Passkeys (WebAuthn): a signed-in user registers one or more (named, listed, removable); a
//! sign-in uses one as its second factor after the password, or alone (a discoverable
//! credential: phishing-resistant and verified by the device, it counts as both factors).
//!
//! The relying party is the server users reach: its id is `PSA_PUBLIC_URL`'s host, its origin
//! that URL's. Each ceremony is two requests (the options, then the authenticator's answer);
//! the server's half (the challenge) waits in the database in between, so any replica can answer
//! the second, and is used once. Every registration and removal is audited in the tenant.

use psa_models::audit::{self, Action};
use psa_models::passkeys::{self, PasskeyView};
use psa_models::sign_in::{self, Ceremony};
use psa_models::{Error, Result, TenantId, UserId, credentials, db, mfa, users};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use sqlx::{Postgres, Transaction};
use webauthn_rs::prelude::{
    DiscoverableAuthentication, Passkey, PasskeyAuthentication, PasskeyRegistration,
    PublicKeyCredential, RegisterPublicKeyCredential, Url, Webauthn, WebauthnBuilder,
};

use crate::mfa::Proof;
use crate::{App, Principal};

/// The relying party `PSA_PUBLIC_URL` names. WebAuthn binds a passkey to a domain: a server
/// reached by an IP address cannot have any.
fn relying_party(app: &App) -> Result<Webauthn> {
    let url: &Url = &app.delivery.public_url;
    let unavailable = || {
        Error::unavailable(
            "Passkeys need PSA_PUBLIC_URL to name this server by a domain (https://psa.example.com, \
             or http://localhost:8080 on one machine), not an IP address",
        )
    };
    let host = match url.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        _ => return Err(unavailable()),
    };
    WebauthnBuilder::new(&host, url)
        .and_then(|b| b.rp_name("psa").build())
        .map_err(|_| unavailable())
}

/// Whether this server offers passkeys (`PSA_PUBLIC_URL` names it by a domain).
pub fn available(app: &App) -> bool {
    relying_party(app).is_ok()
}

/// The browser's answer, read as the ceremony expects it: a malformed one is a validation error
/// on `credential`.
fn answer<T: DeserializeOwned>(credential: &serde_json::Value) -> Result<T> {
    serde_json::from_value(credential.clone()).map_err(|e| {
        Error::validation(
            "credential",
            format!("This is not a WebAuthn credential as the browser gives it: {e}"),
        )
    })
}

fn stored<T: DeserializeOwned>(value: serde_json::Value) -> Result<T> {
    serde_json::from_value(value).map_err(Error::internal)
}

fn to_json<T: serde::Serialize>(value: &T) -> Result<serde_json::Value> {
    serde_json::to_value(value).map_err(Error::internal)
}

/// A ceremony begun: the token that finishes it and the options for
/// `navigator.credentials.create()` / `.get()` (`{"publicKey": ...}`, binary fields base64url).
#[derive(Debug)]
pub struct Begun {
    pub token: SecretString,
    pub options: serde_json::Value,
}

/// Refuses anyone but a signed-in person (an API key is a machine's): passkeys are a person's.
pub fn require_person(who: &Principal) -> Result<()> {
    session_member(who).map(|_| ())
}

fn session_member(who: &Principal) -> Result<&crate::Member> {
    who.member()
        .filter(|m| matches!(m.credential, credentials::Credential::Session(_)))
        .ok_or_else(|| {
            Error::Forbidden("Only a signed-in person registers a passkey (not an API key)".into())
        })
}

/// Starts registering a passkey named `name` for the signed-in user (from `address`): the
/// options the browser's authenticator creates it with. A user who has a second factor already
/// proves it is them (`proof`): a session alone may have been taken over, and a passkey signs in
/// by itself. The name and the limit are checked now, before the device makes anything. A
/// discoverable credential is asked for (preferred, not required: a security key without room
/// for one still works as a second factor), and the user's passkeys already registered are
/// excluded.
pub async fn begin_registration(
    app: &App,
    who: &Principal,
    address: &str,
    name: &str,
    proof: Option<Proof<'_>>,
) -> Result<Begun> {
    who.refuse_in_support("passkeys")?;
    let m = session_member(who)?;
    let name = passkeys::name(name)?;
    let rp = relying_party(app)?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    if passkeys::name_taken(&mut tx, m.tenant, m.user, &name).await? {
        return Err(Error::validation(
            "name",
            "You already have a passkey with this name: choose another",
        ));
    }
    crate::mfa::proof_if_enrolled(app, &mut tx, m.tenant, m.user, proof).await?;
    let user = users::get(&mut tx, m.tenant, m.user).await?;
    let existing: Vec<Passkey> = passkeys::records(&mut tx, m.tenant, m.user)
        .await?
        .into_iter()
        .map(|(_, p)| stored(p))
        .collect::<Result<_>>()?;
    tx.rollback().await?;
    if existing.len() as i64 >= passkeys::MAX_PER_USER {
        return Err(Error::validation(
            "name",
            format!(
                "You have {} passkeys already: remove one to add another",
                passkeys::MAX_PER_USER
            ),
        ));
    }
    let display = format!(
        "{} {}",
        user.first_name.as_deref().unwrap_or_default(),
        user.last_name.as_deref().unwrap_or_default()
    );
    let display = match display.trim() {
        "" => user.email.clone(),
        d => d.to_owned(),
    };
    let exclude = existing.iter().map(|p| p.cred_id().clone()).collect();
    let (options, state) = rp
        .start_passkey_registration(m.user.0, &user.email, &display, Some(exclude))
        .map_err(Error::internal)?;
    let mut options = to_json(&options)?;
    options["publicKey"]["authenticatorSelection"]["residentKey"] = "preferred".into();
    let state = serde_json::json!({
        "name": name,
        "proof": crate::mfa::proof_name(proof),
        "registration": to_json(&state)?,
    });
    let mut conn = app.pool.acquire().await?;
    let token = sign_in::begin_ceremony(
        &mut conn,
        Ceremony::Registration,
        Some((m.tenant, m.user)),
        &state,
        address,
    )
    .await?;
    Ok(Begun { token, options })
}

/// A passkey registered, and the recovery codes it came with when the user had none left (shown
/// this once).
#[derive(Debug, Clone)]
pub struct Registered {
    pub passkey: PasskeyView,
    pub recovery_codes: Vec<String>,
}

/// Finishes a registration with the authenticator's answer: the passkey is stored under the
/// name it was begun with. It is a second factor from now on, and this session counts as having
/// passed it (a session that could only enrol one can do everything). The first second factor
/// comes with ten recovery codes. The user is told by email.
pub async fn finish_registration(
    app: &App,
    who: &Principal,
    token: &str,
    credential: &serde_json::Value,
) -> Result<Registered> {
    who.refuse_in_support("passkeys")?;
    let m = session_member(who)?;
    let answer: RegisterPublicKeyCredential = answer(credential)?;
    let rp = relying_party(app)?;
    let expired = || {
        Error::validation(
            "registration_token",
            "This registration has expired or was used: start again",
        )
    };
    let mut conn = app.pool.acquire().await?;
    let (state, owner) = sign_in::take_ceremony(&mut conn, Ceremony::Registration, token)
        .await?
        .ok_or_else(expired)?;
    drop(conn);
    if owner != Some((m.tenant, m.user)) {
        return Err(expired());
    }
    let name = state["name"].as_str().unwrap_or_default().to_owned();
    let proof = state["proof"].as_str().unwrap_or("none").to_owned();
    let state: PasskeyRegistration = stored(state["registration"].clone())?;
    let passkey = rp
        .finish_passkey_registration(&answer, &state)
        .map_err(|e| {
            Error::validation(
                "credential",
                format!("The authenticator's answer was not accepted: {e}"),
            )
        })?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    let view = passkeys::add(
        &mut tx,
        m.tenant,
        m.user,
        &name,
        passkey.cred_id().as_ref(),
        &to_json(&passkey)?,
    )
    .await?;
    let recovery_codes = if mfa::recovery_codes_left(&mut tx, m.tenant, m.user).await? == 0 {
        let codes = mfa::new_recovery_codes();
        mfa::replace_recovery_codes(&mut tx, m.tenant, m.user, &codes).await?;
        codes
    } else {
        Vec::new()
    };
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
        serde_json::json!({
            "method": "passkey",
            "passkey_id": view.passkey_id,
            "name": view.name,
            "recovery_codes": recovery_codes.len(),
            "proof": proof,
        }),
    )
    .await?;
    tx.commit().await?;
    let lines = [
        format!(
            "A passkey named \"{}\" was added to your account.",
            view.name
        ),
        "If it was not you, sign in, remove it (the Second factor page), change your password \
         and sign out your other sessions."
            .to_owned(),
    ];
    crate::mfa::tell(
        app,
        m.tenant,
        m.user,
        "A passkey was added to your psa account",
        &lines,
    )
    .await;
    Ok(Registered {
        passkey: view,
        recovery_codes,
    })
}

/// The signed-in user's passkeys.
pub async fn list_own(app: &App, who: &Principal) -> Result<Vec<PasskeyView>> {
    who.refuse_in_support("passkeys")?;
    let m = member(who)?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    let list = passkeys::list(&mut tx, m.tenant, m.user).await?;
    tx.rollback().await?;
    Ok(list)
}

/// Removes one of the signed-in user's passkeys (a person's session, proven by the password or
/// a current code; audited; the user is told by email). With it gone and no other second
/// factor, a tenant that requires one asks to set one up at the next sign-in.
pub async fn remove_own(
    app: &App,
    who: &Principal,
    passkey: uuid::Uuid,
    proof: Proof<'_>,
) -> Result<()> {
    who.refuse_in_support("passkeys")?;
    let m = session_member(who)?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    crate::mfa::check_proof(app, &mut tx, m.tenant, m.user, proof).await?;
    let name = passkeys::remove(&mut tx, m.tenant, m.user, passkey)
        .await?
        .ok_or(Error::NotFound { entity: "passkey" })?;
    audit::record(
        &mut tx,
        m.tenant,
        &who.actor(),
        Action::RemoveSecondFactor,
        "user",
        Some(m.user.0),
        serde_json::json!({
            "method": "passkey",
            "passkey_id": passkey,
            "name": name,
            "proof": crate::mfa::proof_name(Some(proof)),
        }),
    )
    .await?;
    tx.commit().await?;
    let lines = [
        format!("The passkey named \"{name}\" was removed from your account."),
        "If it was not you, change your password and sign out your other sessions.".to_owned(),
    ];
    crate::mfa::tell(
        app,
        m.tenant,
        m.user,
        "A passkey was removed from your psa account",
        &lines,
    )
    .await;
    Ok(())
}

/// Asks for a passkey as the second factor of the sign-in `mfa_token` carries: the options for
/// `navigator.credentials.get()`, limited to that user's passkeys. `None`: the token is unknown,
/// used or expired. A user without passkeys is a validation error.
pub async fn ask_second_factor(app: &App, mfa_token: &str) -> Result<Option<serde_json::Value>> {
    let rp = relying_party(app)?;
    let mfa_token = mfa_token.trim();
    let mut conn = app.pool.acquire().await?;
    let Some((tenant, user)) = sign_in::second_factor_of(&mut conn, mfa_token).await? else {
        return Ok(None);
    };
    drop(conn);
    let mut tx = db::begin_tenant(&app.pool, tenant).await?;
    let keys: Vec<Passkey> = passkeys::records(&mut tx, tenant, user)
        .await?
        .into_iter()
        .map(|(_, p)| stored(p))
        .collect::<Result<_>>()?;
    tx.rollback().await?;
    if keys.is_empty() {
        return Err(Error::validation(
            "mfa_token",
            "This account has no passkey: use a code from the authenticator app",
        ));
    }
    let (options, state) = rp
        .start_passkey_authentication(&keys)
        .map_err(Error::internal)?;
    let mut conn = app.pool.acquire().await?;
    if !sign_in::ask_passkey(&mut conn, mfa_token, &to_json(&state)?).await? {
        return Ok(None);
    }
    Ok(Some(to_json(&options)?))
}

/// Checks a passkey's answer to the assertion a second-factor step asked for (`ceremony`): true
/// when it is right and one of the user's passkeys (its counter is written in `conn`, the
/// caller's tenant transaction). A malformed answer is a validation error.
pub async fn check_second_factor(
    app: &App,
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    user: UserId,
    ceremony: Option<serde_json::Value>,
    credential: &serde_json::Value,
) -> Result<bool> {
    let answer: PublicKeyCredential = answer(credential)?;
    let Some(state) = ceremony else {
        return Err(Error::validation(
            "passkey",
            "Ask for the passkey first (POST /api/v1/auth/mfa/passkey), then answer it",
        ));
    };
    let rp = relying_party(app)?;
    let state: PasskeyAuthentication = stored(state)?;
    let Ok(result) = rp.finish_passkey_authentication(&answer, &state) else {
        return Ok(false);
    };
    let Some((id, record)) =
        passkeys::by_credential_for_update(conn, tenant, user, result.cred_id().as_ref()).await?
    else {
        return Ok(false);
    };
    used(conn, tenant, id, record, &result).await
}

/// Records a verified use of a passkey (its `record` read under lock): refused when its
/// signature counter did not move past the one stored, which a cloned authenticator (or the
/// same answer twice) shows; a passkey without a counter (synchronised ones) always reports 0.
async fn used(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
    id: uuid::Uuid,
    record: serde_json::Value,
    result: &webauthn_rs::prelude::AuthenticationResult,
) -> Result<bool> {
    let stored_counter = record["cred"]["counter"].as_u64().unwrap_or(0);
    if result.counter() > 0 && u64::from(result.counter()) <= stored_counter {
        tracing::warn!(%tenant, passkey = %id, "a passkey's counter went backwards: refused");
        return Ok(false);
    }
    let mut key: Passkey = stored(record)?;
    key.update_credential(result);
    passkeys::used(conn, tenant, id, &to_json(&key)?).await?;
    Ok(true)
}

/// Starts a sign-in with a passkey alone (from `address`): the options for
/// `navigator.credentials.get()`, with no account named (the authenticator offers the passkeys
/// it holds for this server).
pub async fn begin_sign_in(app: &App, address: &str) -> Result<Begun> {
    let rp = relying_party(app)?;
    let (mut options, state) = rp
        .start_discoverable_authentication()
        .map_err(Error::internal)?;
    // A button press, not the browser's autofill: the modal dialog.
    options.mediation = None;
    let mut conn = app.pool.acquire().await?;
    let token = sign_in::begin_ceremony(
        &mut conn,
        Ceremony::SignIn,
        None,
        &to_json(&state)?,
        address,
    )
    .await?;
    Ok(Begun {
        token,
        options: to_json(&options)?,
    })
}

/// A passkey sign-in that verified: whose it is, and the tenant's transaction holding its
/// counter's update (committed with the session).
pub struct Verified {
    pub tenant: TenantId,
    pub user: UserId,
    pub tx: Transaction<'static, Postgres>,
}

/// Finishes a sign-in with a passkey alone: `None` when the token is unknown, used or expired,
/// or the answer is not a registered passkey of an active user, rightly signed and verified by
/// the device. A malformed answer is a validation error.
pub async fn finish_sign_in(
    app: &App,
    token: &str,
    credential: &serde_json::Value,
) -> Result<Option<Verified>> {
    let answer: PublicKeyCredential = answer(credential)?;
    let rp = relying_party(app)?;
    let mut conn = app.pool.acquire().await?;
    let Some((state, _)) = sign_in::take_ceremony(&mut conn, Ceremony::SignIn, token).await? else {
        return Ok(None);
    };
    let state: DiscoverableAuthentication = stored(state)?;
    let Ok((handle, credential_id)) = rp.identify_discoverable_authentication(&answer) else {
        return Ok(None);
    };
    // The user handle the authenticator keeps is the user's id: with the credential id, it
    // names one passkey.
    let Some((tenant, user, passkey_id)) =
        passkeys::owner(&mut conn, credential_id, handle).await?
    else {
        return Ok(None);
    };
    drop(conn);
    let mut tx = db::begin_tenant(&app.pool, tenant).await?;
    let Some(record) = passkeys::record_for_update(&mut tx, tenant, user, passkey_id).await? else {
        return Ok(None);
    };
    let key: Passkey = stored(record.clone())?;
    let Ok(result) = rp.finish_discoverable_authentication_v2(&answer, state, &key) else {
        return Ok(None);
    };
    if !used(&mut tx, tenant, passkey_id, record, &result).await? {
        return Ok(None);
    }
    Ok(Some(Verified { tenant, user, tx }))
}

fn member(who: &Principal) -> Result<&crate::Member> {
    who.member()
        .ok_or_else(|| Error::validation("session", "Only a signed-in user has passkeys"))
}
