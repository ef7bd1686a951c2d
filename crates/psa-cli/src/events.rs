//! `psa events list`: what happened to tenants and customers (docs/events.md), a page at a time.

use clap::Subcommand;
use psa_models::TenantId;
use psa_models::db::PageRequest;
use psa_models::events::{EventFilter, EventType};
use uuid::Uuid;

use crate::config::CliError;
use crate::webhooks::print_json;

#[derive(Subcommand)]
pub enum EventsCommand {
    /// The events, oldest first, a page at a time (`--after` the previous page's cursor).
    List {
        /// Only these types, comma-separated (e.g. tenant.suspended,tenant.canceled).
        #[arg(long = "type")]
        event_type: Option<String>,
        /// Only the events of this tenant.
        #[arg(long)]
        tenant: Option<Uuid>,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        after: Option<String>,
        /// Events per page (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(database_url: Option<&str>, command: EventsCommand) -> Result<(), CliError> {
    let EventsCommand::List {
        event_type,
        tenant,
        after,
        limit,
        json,
    } = command;
    let types = event_type
        .as_deref()
        .map(|t| EventType::parse_list(t, "--type"))
        .transpose()?
        .unwrap_or_default();
    let app = crate::app::app(database_url, Default::default()).await?;
    let page = psa_app::events::list(
        &app,
        &crate::app::operator(),
        &EventFilter {
            types,
            tenant_id: tenant.map(TenantId),
        },
        &PageRequest {
            limit: Some(limit),
            cursor: after,
        },
    )
    .await?;
    if json {
        print_json(&page);
        return Ok(());
    }
    for e in &page.items {
        println!(
            "{}  {}  {:<26} {}",
            e.created_at.to_rfc3339(),
            e.id,
            e.event_type,
            e.tenant_id.map(|t| t.to_string()).unwrap_or_default()
        );
    }
    match (&page.next_cursor, page.has_more) {
        (Some(c), true) => println!("more: psa events list --after {c}"),
        (Some(c), false) => println!(
            "({} events; caught up: later, `psa events list --after {c}` shows what came since)",
            page.items.len()
        ),
        (None, _) => println!("no events yet"),
    }
    Ok(())
}
