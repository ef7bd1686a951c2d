//! `psa search QUERY`: the tenants a search finds (as the management console's search box).

use crate::config::CliError;

pub async fn run(database_url: Option<&str>, query: &str, json: bool) -> Result<(), CliError> {
    let app = crate::app::app(database_url, Default::default()).await?;
    let found = psa_app::search::search(&app, &crate::app::operator(), query).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&found).expect("search results serialise")
        );
        return Ok(());
    }
    let groups = [
        ("tenants", &found.tenants),
        ("by their people", &found.people),
        ("by their customer company", &found.customers),
    ];
    if groups.iter().all(|(_, hits)| hits.is_empty()) {
        println!("nothing matches {:?}", found.query);
        return Ok(());
    }
    for (title, hits) in groups {
        if hits.is_empty() {
            continue;
        }
        println!("{title}:");
        for h in hits {
            println!(
                "  {}  {:<30} {:<20} {:<10} {} {}",
                h.tenant_id, h.name, h.slug, h.status, h.kind, h.detail
            );
        }
    }
    Ok(())
}
