//! Webhook endpoints and their deliveries, for the management tenant (docs/events.md):
//! `webhook:read|create|update|delete`. Every change is audited in the management tenant; a
//! signing secret is minted and sealed here, and shown once (when created or rotated).

use psa_models::audit::{self, Action};
use psa_models::db::{Page, PageRequest};
use psa_models::webhooks::{
    self, AddressPolicy, By, Delivery, DeliveryDetails, DeliveryStatus, Endpoint, EndpointPatch,
    NewEndpoint,
};
use psa_models::{Error, Result, TenantId};
use psa_workflows::secret::{Sealed, SecretKey};
use secrecy::SecretString;
use uuid::Uuid;

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

/// What the webhook operations need from the process's configuration.
#[derive(Clone, Debug, Default)]
pub struct WebhookSettings {
    /// Seals new endpoint secrets (`PSA_SECRET_KEY`, as the workers have it); without it,
    /// endpoints can be listed but not created or rotated.
    pub key: Option<SecretKey>,
    /// Which addresses an endpoint may have.
    pub policy: AddressPolicy,
}

/// An endpoint with its signing secret: the only time the secret is seen.
pub struct WithSecret {
    pub endpoint: Endpoint,
    /// `whsec_...`.
    pub secret: SecretString,
}

/// The sealing key, or `Unavailable` where this process has none.
fn key(app: &App) -> Result<&SecretKey> {
    app.webhooks.key.as_ref().ok_or_else(|| {
        Error::unavailable("This server has no PSA_SECRET_KEY: webhook secrets cannot be sealed")
    })
}

/// A new signing secret for the endpoint `id`, and the same sealed for the database (bound to
/// that endpoint: it opens for no other).
fn new_secret(app: &App, id: Uuid) -> Result<(SecretString, String)> {
    let secret = psa_workflows::webhooks::new_secret();
    let sealed = key(app)?.seal_for(&secret, Sealed::WebhookSecret, &id.to_string());
    Ok((secret, sealed))
}

fn by<'a>(mgmt: TenantId, actor: &'a psa_models::audit::Actor) -> By<'a> {
    By {
        management_tenant: mgmt,
        actor,
    }
}

fn permission(access: Access) -> Permission {
    Permission(Resource::Webhook, access)
}

pub async fn list(app: &App, who: &Principal, paging: &PageRequest) -> Result<Page<Endpoint>> {
    let (mut tx, _) = app.begin_management(who, permission(Access::Read)).await?;
    let page = webhooks::list(&mut tx, paging).await?;
    tx.rollback().await?;
    Ok(page)
}

pub async fn get(app: &App, who: &Principal, id: Uuid) -> Result<Endpoint> {
    let (mut tx, _) = app.begin_management(who, permission(Access::Read)).await?;
    let endpoint = webhooks::get(&mut tx, id).await?;
    tx.rollback().await?;
    Ok(endpoint)
}

/// Adds an endpoint with a new signing secret.
pub async fn create(app: &App, who: &Principal, new: &NewEndpoint) -> Result<WithSecret> {
    let (mut tx, mgmt) = app
        .begin_management(who, permission(Access::Create))
        .await?;
    let id = Uuid::new_v4();
    let (secret, sealed) = new_secret(app, id)?;
    let actor = who.actor();
    let endpoint = webhooks::create(
        &mut tx,
        id,
        new,
        app.webhooks.policy,
        &sealed,
        by(mgmt, &actor),
    )
    .await?;
    tx.commit().await?;
    Ok(WithSecret { endpoint, secret })
}

/// Changes an endpoint's URL, description or event types, or enables or disables it.
pub async fn update(
    app: &App,
    who: &Principal,
    id: Uuid,
    patch: &EndpointPatch,
) -> Result<Endpoint> {
    let (mut tx, mgmt) = app
        .begin_management(who, permission(Access::Update))
        .await?;
    let actor = who.actor();
    let endpoint =
        webhooks::update(&mut tx, id, patch, app.webhooks.policy, by(mgmt, &actor)).await?;
    tx.commit().await?;
    Ok(endpoint)
}

/// Removes an endpoint with its deliveries.
pub async fn delete(app: &App, who: &Principal, id: Uuid) -> Result<()> {
    let (mut tx, mgmt) = app
        .begin_management(who, permission(Access::Delete))
        .await?;
    let actor = who.actor();
    webhooks::delete(&mut tx, id, by(mgmt, &actor)).await?;
    tx.commit().await?;
    Ok(())
}

/// How long the previous secret keeps signing after a rotation.
pub const ROTATION_OVERLAP: chrono::Duration = chrono::Duration::hours(24);

/// A new signing secret; the previous one keeps signing for [`ROTATION_OVERLAP`].
pub async fn rotate(app: &App, who: &Principal, id: Uuid) -> Result<WithSecret> {
    let (mut tx, mgmt) = app
        .begin_management(who, permission(Access::Update))
        .await?;
    let (secret, sealed) = new_secret(app, id)?;
    let actor = who.actor();
    let endpoint =
        webhooks::rotate_secret(&mut tx, id, &sealed, ROTATION_OVERLAP, by(mgmt, &actor)).await?;
    tx.commit().await?;
    Ok(WithSecret { endpoint, secret })
}

/// Sends a `webhook_endpoint.test` event to this endpoint only.
pub async fn send_test(app: &App, who: &Principal, id: Uuid) -> Result<DeliveryDetails> {
    let (mut tx, mgmt) = app
        .begin_management(who, permission(Access::Update))
        .await?;
    let actor = who.actor();
    let d = webhooks::send_test(&mut tx, id, by(mgmt, &actor)).await?;
    tx.commit().await?;
    Ok(d)
}

/// The endpoint's deliveries, newest first.
pub async fn deliveries(
    app: &App,
    who: &Principal,
    endpoint: Uuid,
    status: Option<DeliveryStatus>,
    paging: &PageRequest,
) -> Result<Page<Delivery>> {
    let (mut tx, _) = app.begin_management(who, permission(Access::Read)).await?;
    let page = webhooks::deliveries(&mut tx, endpoint, status, paging).await?;
    tx.rollback().await?;
    Ok(page)
}

/// A delivery with its attempts.
pub async fn delivery(
    app: &App,
    who: &Principal,
    endpoint: Uuid,
    id: Uuid,
) -> Result<DeliveryDetails> {
    let (mut tx, _) = app.begin_management(who, permission(Access::Read)).await?;
    let d = webhooks::delivery(&mut tx, endpoint, id).await?;
    tx.rollback().await?;
    Ok(d)
}

/// Sends a delivery again, under the same `webhook-id`.
pub async fn retry(
    app: &App,
    who: &Principal,
    endpoint: Uuid,
    id: Uuid,
) -> Result<DeliveryDetails> {
    let (mut tx, mgmt) = app
        .begin_management(who, permission(Access::Update))
        .await?;
    let actor = who.actor();
    let d = webhooks::retry(&mut tx, endpoint, id, by(mgmt, &actor)).await?;
    tx.commit().await?;
    Ok(d)
}

/// What a reseal moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Resealed {
    /// Sealed values moved to the current key (and bound to their row).
    pub resealed: u64,
    /// Values already current.
    pub current: u64,
}

/// Moves every stored sealed secret to the current key (`psa secrets reseal`, after adding a new
/// `PSA_SECRET_KEY` and keeping the old one in `PSA_SECRET_KEY_PREVIOUS`): each is opened with
/// whichever key sealed it and sealed again, bound to its row (webhook endpoints' secrets, the
/// platform's own keys, authenticator-app secrets, single sign-on client secrets), in one
/// transaction; audited in the management tenant. Afterwards the previous key can be dropped.
pub async fn reseal(app: &App, who: &Principal) -> Result<Resealed> {
    let key = key(app)?;
    let (mut tx, mgmt) = app
        .begin_management(who, permission(Access::Update))
        .await?;
    let mut out = Resealed::default();
    for (id, secret, previous) in webhooks::sealed_secrets(&mut tx).await? {
        let row = id.to_string();
        let again = |sealed: &str| -> Result<String> {
            let open = key
                .open_for(sealed, Sealed::WebhookSecret, &row)
                .map_err(|e| Error::internal(ResealError(id, e.to_string())))?;
            Ok(key.seal_for(&open, Sealed::WebhookSecret, &row))
        };
        let stale =
            !key.is_current(&secret) || previous.as_deref().is_some_and(|p| !key.is_current(p));
        if !stale {
            out.current += 1;
            continue;
        }
        let previous = previous.as_deref().map(again).transpose()?;
        webhooks::reseal(&mut tx, id, &again(&secret)?, previous.as_deref()).await?;
        out.resealed += 1;
    }
    // The platform's own keys (the export archives' key): resealed, so the archives themselves
    // stay as they are.
    psa_models::db::leave_tenant(&mut tx).await?;
    let keys: Vec<(String, String)> =
        sqlx::query_as("SELECT name, sealed_secret FROM platform_keys ORDER BY name FOR UPDATE")
            .fetch_all(&mut *tx)
            .await
            .map_err(Error::from)?;
    for (name, sealed) in keys {
        if key.is_current(&sealed) {
            out.current += 1;
            continue;
        }
        let open = key
            .open_for(&sealed, Sealed::PlatformKey, &name)
            .map_err(|e| Error::internal(PlatformKeyError(name.clone(), e.to_string())))?;
        let again = key.seal_for(&open, Sealed::PlatformKey, &name);
        psa_models::exports::reseal_platform_key(&mut tx, &name, &again).await?;
        out.resealed += 1;
    }
    // Users' authenticator-app secrets, each bound to its user.
    let totps: Vec<(psa_models::TenantId, psa_models::UserId, String)> = sqlx::query_as(
        "SELECT tenant, user_id, secret_sealed FROM user_totp ORDER BY tenant, user_id FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(Error::from)?;
    for (tenant, user, sealed) in totps {
        if key.is_current(&sealed) {
            out.current += 1;
            continue;
        }
        let row = format!("{tenant}/{user}");
        let open = key
            .open_for(&sealed, Sealed::TotpSecret, &row)
            .map_err(|e| Error::internal(PlatformKeyError(row.clone(), e.to_string())))?;
        sqlx::query("UPDATE user_totp SET secret_sealed = $3 WHERE tenant = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user)
            .bind(key.seal_for(&open, Sealed::TotpSecret, &row))
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        out.resealed += 1;
    }
    // Tenants' single sign-on client secrets, each bound to its tenant.
    let sso: Vec<(psa_models::TenantId, String)> = sqlx::query_as(
        "SELECT tenant, client_secret_sealed FROM sso_connections \
         WHERE client_secret_sealed IS NOT NULL ORDER BY tenant FOR UPDATE",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(Error::from)?;
    for (tenant, sealed) in sso {
        if key.is_current(&sealed) {
            out.current += 1;
            continue;
        }
        let row = tenant.to_string();
        let open = key
            .open_for(&sealed, Sealed::SsoClientSecret, &row)
            .map_err(|e| Error::internal(PlatformKeyError(row.clone(), e.to_string())))?;
        sqlx::query("UPDATE sso_connections SET client_secret_sealed = $2 WHERE tenant = $1")
            .bind(tenant)
            .bind(key.seal_for(&open, Sealed::SsoClientSecret, &row))
            .execute(&mut *tx)
            .await
            .map_err(Error::from)?;
        out.resealed += 1;
    }
    audit::record(
        &mut tx,
        mgmt,
        &who.actor(),
        Action::Reseal,
        "sealed_secrets",
        None,
        serde_json::json!({"resealed": out.resealed, "current": out.current,
                           "key_id": key.current_id()}),
    )
    .await?;
    tx.commit().await?;
    Ok(out)
}

/// A platform key or a user's secret that no configured key opens.
#[derive(Debug, thiserror::Error)]
#[error("the sealed secret of {0} cannot be opened with the configured keys: {1}")]
struct PlatformKeyError(String, String);

/// A sealed secret no configured key opens.
#[derive(Debug, thiserror::Error)]
#[error("the secret of webhook endpoint {0} cannot be opened with the configured keys: {1}")]
struct ResealError(Uuid, String);
