//! What changes a user's standing and the credentials that hang on it together: the user row
//! (`users`), its sessions and API keys (`credentials`), its invitation and reset links
//! (`auth_tokens`). Those modules depend on `users`, never the other way; what needs all of
//! them lives here.

use sqlx::PgConnection;

use crate::users::{self, UserSummary};
use crate::{Result, TenantId, UserId, auth_tokens, credentials};

/// Deactivates or reactivates an internal user. A deactivated user's sessions, API keys and
/// open links stop working at once (authentication checks `is_inactive`), and are ended, so
/// reactivating does not bring any of them back: the user signs in again and makes new keys. The
/// last active administrator cannot be deactivated.
pub async fn set_inactive(
    conn: &mut PgConnection,
    tenant: TenantId,
    user: UserId,
    inactive: bool,
) -> Result<UserSummary> {
    let summary = users::set_inactive_flag(conn, tenant, user, inactive).await?;
    if inactive {
        credentials::revoke_sessions_of(conn, tenant, user).await?;
        credentials::revoke_api_keys_of(conn, tenant, user).await?;
        auth_tokens::revoke_open(conn, tenant, user).await?;
    }
    Ok(summary)
}
