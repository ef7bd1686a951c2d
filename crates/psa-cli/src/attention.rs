//! `psa attention`: what needs attention on the platform; exit 1 when anything does.

use crate::config::CliError;

pub async fn run(database_url: Option<&str>, json: bool) -> Result<(), CliError> {
    let app = crate::app::app(database_url, Default::default()).await?;
    let found = psa_app::attention::gather(&app, &crate::app::operator()).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&found).expect("the attention lists serialise")
        );
    } else if !found.needs_attention() {
        println!("nothing needs attention");
    } else {
        for list in found.lists.iter().filter(|l| !l.items.is_empty()) {
            println!(
                "{} ({}{}):",
                list.title,
                list.items.len(),
                if list.more { "+" } else { "" }
            );
            for item in &list.items {
                println!(
                    "  {:<30} {}  {}  {}",
                    item.name,
                    item.at
                        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
                        .unwrap_or_default(),
                    item.detail,
                    item.fix
                );
            }
        }
    }
    if found.needs_attention() {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}
