//! The platform's events (docs/events.md), for the management tenant (`tenant:read`): a page
//! after a cursor, or one event.

use psa_models::Result;
use psa_models::db::PageRequest;
use psa_models::events::{self, Event, EventFilter, EventPage};

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

const READ: Permission = Permission(Resource::Tenant, Access::Read);

/// The events after the page's cursor, oldest first.
pub async fn list(
    app: &App,
    who: &Principal,
    filter: &EventFilter,
    page: &PageRequest,
) -> Result<EventPage> {
    let (mut tx, _) = app.begin_management(who, READ).await?;
    let page = events::list(&mut tx, filter, page).await?;
    tx.rollback().await?;
    Ok(page)
}

/// One event.
pub async fn get(app: &App, who: &Principal, id: uuid::Uuid) -> Result<Event> {
    let (mut tx, _) = app.begin_management(who, READ).await?;
    psa_models::db::leave_tenant(&mut tx).await?;
    let event = events::get(&mut tx, id).await?;
    tx.rollback().await?;
    Ok(event)
}
