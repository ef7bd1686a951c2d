//! Search for the management tenant's staff (`tenant:read`): a tenant by its name, slug or id,
//! a staff member's email address, or its customer company's name.

use psa_models::search::{self, Results};
use psa_models::{Result, db};

use crate::access::{Access, Permission, Resource};
use crate::{App, Principal};

/// Searches every tenant for `q` (3-200 characters; 422 on `q` otherwise).
pub async fn search(app: &App, who: &Principal, q: &str) -> Result<Results> {
    let (mut tx, _) = app
        .begin_management(who, Permission(Resource::Tenant, Access::Read))
        .await?;
    db::leave_tenant(&mut tx).await?;
    let out = search::search(&mut tx, q).await?;
    tx.rollback().await?;
    Ok(out)
}
