//! API keys: made for a user of a tenant, shown once, revoked by id. `user:update` in the
//! key's tenant (an administrator's power over the tenant's users).

use chrono::{DateTime, Utc};
use psa_models::audit::{self, Action};
use psa_models::credentials::{self, ApiKeySummary, NewApiKey};
use psa_models::{Result, TenantId, UserId};

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

const MANAGE: Permission = Permission(Resource::User, Access::Update);

/// A new key for `user` of `tenant`, valid until `expires_at` (or until revoked).
pub async fn create(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    user: UserId,
    description: Option<&str>,
    expires_at: Option<DateTime<Utc>>,
) -> Result<NewApiKey> {
    who.refuse_in_support("API keys")?;
    // A member makes keys for themselves only: a key acts with its user's permissions, and an
    // administrator minting one for someone else could act as them.
    if let Principal::Member(m) = who
        && m.user != user
    {
        return Err(psa_models::Error::forbidden(
            "An API key is made by its own user (or an operator)",
        ));
    }
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let key = credentials::create_api_key_until(
        &mut tx,
        tenant,
        user,
        description,
        expires_at,
        &who.actor(),
    )
    .await?;
    tx.commit().await?;
    Ok(key)
}

/// Revokes the key `api_key_id`; `false` when there is no such active key (in the actor's
/// reach: a member's own tenant).
pub async fn revoke(app: &App, who: &Principal, api_key_id: uuid::Uuid) -> Result<bool> {
    who.refuse_in_support("API keys")?;
    let tenant = match who {
        Principal::Member(m) => m.tenant,
        // The key's tenant, read outside any tenant (an operator may revoke any key).
        _ => {
            let found: Option<TenantId> =
                sqlx::query_scalar("SELECT tenant FROM api_keys WHERE api_key_id = $1")
                    .bind(api_key_id)
                    .fetch_optional(&app.pool)
                    .await?;
            match found {
                Some(t) => t,
                None => return Ok(false),
            }
        }
    };
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let revoked = credentials::revoke_api_key(&mut tx, api_key_id, &who.actor()).await?;
    tx.commit().await?;
    Ok(revoked)
}

/// The tenant's API keys, of one user when given, with when each was last used (`user:update`:
/// the tenant's administrators).
pub async fn list(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    user: Option<UserId>,
) -> Result<Vec<ApiKeySummary>> {
    who.refuse_in_support("API keys")?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    let keys = credentials::list_api_keys(&mut tx, tenant, user).await?;
    tx.rollback().await?;
    Ok(keys)
}

/// Revokes every API key of `user` in one action (a lost laptop, a leaving employee); returns
/// how many were active. Audited once, with the count.
pub async fn revoke_all_of(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    user: UserId,
) -> Result<u64> {
    who.refuse_in_support("API keys")?;
    let mut tx = app.begin(who, tenant, MANAGE).await?;
    psa_models::users::get(&mut tx, tenant, user).await?;
    let n = credentials::revoke_api_keys_of(&mut tx, tenant, user).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Revoke,
        "user",
        Some(user.0),
        serde_json::json!({"api_keys_revoked": n}),
    )
    .await?;
    tx.commit().await?;
    Ok(n)
}
