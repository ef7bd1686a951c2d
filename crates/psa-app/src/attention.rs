//! What needs attention on the platform (`psa_models::attention`), for the management tenant's
//! staff with `tenant:read`: the console's start page, `GET /api/v1/attention`, `psa attention`.

use psa_models::Result;
use psa_models::attention::{self, Attention};

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

/// Every list, read in one transaction.
pub async fn gather(app: &App, who: &Principal) -> Result<Attention> {
    let (mut tx, _) = app
        .begin_management(who, Permission(Resource::Tenant, Access::Read))
        .await?;
    let found = attention::gather(&mut tx).await?;
    tx.rollback().await?;
    Ok(found)
}
