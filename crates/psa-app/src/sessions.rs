//! A signed-in user's own sessions: sign out (this session) and sign out everywhere. No
//! permission beyond being the user; both are audited in the user's tenant.

use psa_models::audit::{self, Action};
use psa_models::credentials::{self, Credential};
use psa_models::{Error, Result, db};

use crate::App;
use crate::access::Principal;

/// Ends the member's current session. An API key is not a session: it is revoked instead.
pub async fn sign_out(app: &App, who: &Principal) -> Result<()> {
    let m = who
        .member()
        .ok_or_else(|| Error::validation("session", "Only a signed-in user has a session"))?;
    let Credential::Session(session) = m.credential else {
        return Err(Error::validation(
            "session",
            "API keys are revoked with `psa api-key revoke`, not logged out",
        ));
    };
    // Signing out of a support session ends it (with its trail and event).
    if let Some(support) = m.support {
        crate::support::end(app, who, m.tenant, support).await?;
        return Ok(());
    }
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    credentials::revoke_session(&mut tx, m.tenant, session).await?;
    audit::record(
        &mut tx,
        m.tenant,
        &who.actor(),
        Action::Logout,
        "user",
        Some(m.user.0),
        serde_json::json!({"session_id": session}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ends every session of the member ("log out everywhere": a lost device, a shared computer);
/// API keys are not affected. Returns how many ended.
pub async fn sign_out_everywhere(app: &App, who: &Principal) -> Result<u64> {
    who.refuse_in_support("the user's sessions")?;
    let m = who
        .member()
        .ok_or_else(|| Error::validation("session", "Only a signed-in user has sessions"))?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    let n = credentials::revoke_sessions_of(&mut tx, m.tenant, m.user).await?;
    audit::record(
        &mut tx,
        m.tenant,
        &who.actor(),
        Action::LogoutAll,
        "user",
        Some(m.user.0),
        serde_json::json!({"sessions": n}),
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}

/// The signed-in user's open sessions (this one marked `current`).
pub async fn list_own(app: &App, who: &Principal) -> Result<Vec<credentials::SessionView>> {
    who.refuse_in_support("the user's sessions")?;
    let m = who
        .member()
        .ok_or_else(|| Error::validation("session", "Only a signed-in user has sessions"))?;
    let current = match m.credential {
        credentials::Credential::Session(id) => Some(id),
        credentials::Credential::ApiKey(_) => None,
    };
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    let list = credentials::sessions_of(&mut tx, m.tenant, m.user, current).await?;
    tx.rollback().await?;
    Ok(list)
}

/// Ends one of the signed-in user's sessions (audited); 404 when it is not theirs or ended.
pub async fn end_own(app: &App, who: &Principal, session: uuid::Uuid) -> Result<()> {
    who.refuse_in_support("the user's sessions")?;
    let m = who
        .member()
        .ok_or_else(|| Error::validation("session", "Only a signed-in user has sessions"))?;
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    if !credentials::revoke_session_of(&mut tx, m.tenant, m.user, session).await? {
        return Err(Error::NotFound { entity: "session" });
    }
    audit::record(
        &mut tx,
        m.tenant,
        &who.actor(),
        Action::RevokeSession,
        "session",
        Some(session),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Ends every session of the signed-in user but this one ("sign out everywhere else").
pub async fn end_others(app: &App, who: &Principal) -> Result<u64> {
    who.refuse_in_support("the user's sessions")?;
    let m = who
        .member()
        .ok_or_else(|| Error::validation("session", "Only a signed-in user has sessions"))?;
    let credentials::Credential::Session(current) = m.credential else {
        return Err(Error::validation(
            "session",
            "Only a session has other sessions",
        ));
    };
    let mut tx = db::begin_tenant(&app.pool, m.tenant).await?;
    let n = credentials::revoke_other_sessions(&mut tx, m.tenant, m.user, current).await?;
    audit::record(
        &mut tx,
        m.tenant,
        &who.actor(),
        Action::LogoutAll,
        "user",
        Some(m.user.0),
        serde_json::json!({"sessions": n, "kept": current}),
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}
