//! `psa migrate`: applies the database migrations (idempotent).

use crate::config::{self, CliError};

pub async fn run(database_url: Option<&str>, json: bool) -> Result<(), CliError> {
    let pool = config::pool(database_url, 1).await?;
    let before = applied(&pool).await;
    psa_models::MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| CliError::Failed(anyhow::Error::new(e).context("migrations failed")))?;
    let after = applied(&pool).await;
    let newly = after.saturating_sub(before);
    if json {
        println!("{}", serde_json::json!({"applied": newly, "total": after}));
    } else {
        println!("migrations: {newly} applied, {after} in total");
    }
    Ok(())
}

/// How many migrations the database has recorded (0 before the first run).
async fn applied(pool: &sqlx::PgPool) -> usize {
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM _sqlx_migrations WHERE success")
        .fetch_one(pool)
        .await
        .map(|n| n as usize)
        .unwrap_or(0)
}
