//! `psa tenant show|suspend|reactivate|cancel|restore|delete|export`: the tenant's lifecycle.

use std::path::PathBuf;

use clap::Args;
use psa_app::App;
use psa_models::TenantId;
use psa_models::exports::ExportStore;
use psa_models::lifecycle::{self, Change, TenantDetails};

use crate::app::operator;
use crate::config::CliError;

/// Where exports go: `PSA_EXPORT_URL` (S3-compatible) or `PSA_EXPORT_DIR`.
#[derive(Args, Clone, Debug)]
pub struct ExportArgs {
    /// Directory of the export archives (when PSA_EXPORT_URL is not set).
    #[arg(
        long,
        env = "PSA_EXPORT_DIR",
        default_value = "psa-exports",
        global = true
    )]
    pub export_dir: PathBuf,
    /// S3-compatible object storage for the archives, `s3://bucket/prefix` (credentials from
    /// the AWS_* variables).
    #[arg(long, env = "PSA_EXPORT_URL", global = true)]
    pub export_url: Option<String>,
    /// The largest archive an import takes, in bytes, as uploaded and as unpacked.
    #[arg(long, env = "PSA_IMPORT_MAX_BYTES", default_value_t = psa_app::settings::DEFAULT_IMPORT_MAX_BYTES, global = true)]
    pub import_max_bytes: u64,
}

impl ExportArgs {
    pub fn store(&self) -> Result<ExportStore, CliError> {
        Ok(ExportStore::from_settings(
            self.export_url.as_deref(),
            &self.export_dir,
        )?)
    }
}

/// A grace period: a number and a unit, `45s`, `15m`, `12h`, `30d`.
pub fn parse_grace(raw: &str) -> Result<chrono::Duration, String> {
    let raw = raw.trim();
    let (n, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 30d, 12h, 15m or 45s"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(format!(
                "{raw:?} is not a duration like 30d, 12h, 15m or 45s"
            ));
        }
    };
    lifecycle::grace(seconds).map_err(|e| e.to_string())
}

pub fn print_details(d: &TenantDetails, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(d).expect("the details serialise")
        );
        return;
    }
    println!("tenant      {} ({})", d.name, d.tenant_id);
    println!(
        "slug        {} (sign-in: /console/sign-in?org={})",
        d.slug, d.slug
    );
    println!(
        "status      {}{}",
        d.status,
        d.status_reason
            .as_deref()
            .map(|r| format!(": {r}"))
            .unwrap_or_default()
    );
    if let Some(at) = d.status_changed_at {
        println!("changed     {}", at.to_rfc3339());
    }
    println!("created     {}", d.created_at.to_rfc3339());
    if let Some(sub) = &d.subscription {
        print_subscription(sub);
    }
    match &d.deletion {
        Some(del) => println!(
            "deletion    at {} (workflow {}; `psa tenant restore` stops it)",
            del.delete_after.to_rfc3339(),
            del.workflow_id
        ),
        None => println!("deletion    none"),
    }
    match d.customer.customer_company_id {
        Some(c) => println!(
            "customer    {} ({}{})",
            c,
            d.customer.tracking,
            if d.customer.is_inactive == Some(true) {
                ", inactive"
            } else {
                ""
            }
        ),
        None => println!("customer    none (untracked: `psa customers reconcile` adds it)"),
    }
}

pub fn print_change(c: &Change, json: bool, verb: &str) {
    if json {
        println!(
            "{}",
            serde_json::to_string(c).expect("the change serialises")
        );
        return;
    }
    eprintln!(
        "{} {}: {} -> {}{}",
        verb,
        c.tenant.name,
        c.status_before,
        c.tenant.status,
        if c.customer_record == "absent" {
            " (no customer record: `psa customers reconcile` adds it with this state)"
        } else {
            " (customer record updated)"
        }
    );
    print_details(&c.tenant, false);
}

pub async fn show(app: &App, tenant: TenantId, json: bool) -> Result<(), CliError> {
    let details = psa_app::tenants::show(app, &operator(), tenant).await?;
    print_details(&details, json);
    Ok(())
}

pub async fn suspend(
    app: &App,
    tenant: TenantId,
    reason: &str,
    json: bool,
) -> Result<(), CliError> {
    let change = psa_app::tenants::suspend(app, &operator(), tenant, reason).await?;
    print_change(&change, json, "suspended");
    Ok(())
}

pub async fn reactivate(app: &App, tenant: TenantId, json: bool) -> Result<(), CliError> {
    let change = psa_app::tenants::reactivate(app, &operator(), tenant).await?;
    print_change(&change, json, "reactivated");
    Ok(())
}

/// Cancels the tenant; when Temporal cannot be reached the cancel is recorded all the same and
/// the worker starts the deletion (docs/operations.md, "When Temporal is down").
pub async fn cancel(
    app: &App,
    tenant: TenantId,
    reason: &str,
    grace: Option<chrono::Duration>,
    json: bool,
) -> Result<(), CliError> {
    let change = psa_app::tenants::cancel(app, &operator(), tenant, reason, grace).await?;
    print_change(&change, json, "canceled");
    Ok(())
}

pub async fn restore(app: &App, tenant: TenantId, json: bool) -> Result<(), CliError> {
    let change = psa_app::tenants::restore(app, &operator(), tenant).await?;
    print_change(&change, json, "restored");
    Ok(())
}

/// Confirms a pending deletion and waits (up to `wait`) until it is done. When the deletion's
/// workflow could not be told (Temporal down), the confirmation is recorded and the worker
/// tells it: the command says so and does not wait.
pub async fn delete(
    app: &App,
    tenant: TenantId,
    wait: std::time::Duration,
    json: bool,
) -> Result<(), CliError> {
    let done = psa_app::tenants::delete_now(app, &operator(), tenant).await?;
    let workflow_id = &done.workflow_id;
    if !done.signalled {
        if json {
            println!(
                "{}",
                serde_json::json!({"tenant_id": tenant, "status": "confirmed", "workflow_id": workflow_id})
            );
        }
        eprintln!(
            "deletion of tenant {tenant} confirmed and recorded; the workflow service cannot be reached now, so the worker carries it out when it can (workflow {workflow_id})"
        );
        return Ok(());
    }
    let deadline = std::time::Instant::now() + wait;
    loop {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenant_deletions WHERE workflow_id = $1")
                .bind(workflow_id)
                .fetch_one(&app.pool)
                .await?;
        if status == "deleted" {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(CliError::Failed(anyhow::anyhow!(
                "the deletion was confirmed but has not finished within {} s (workflow {}): is a worker running?",
                wait.as_secs(),
                workflow_id
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"tenant_id": tenant, "status": "deleted", "workflow_id": workflow_id})
        );
    } else {
        eprintln!("deleted tenant {tenant} (workflow {workflow_id})");
    }
    Ok(())
}

/// Exports the tenant into the export store (audited) and copies the archive to `out`.
pub async fn export(
    app: &App,
    tenant: TenantId,
    out: &std::path::Path,
    encrypt_to: Option<&psa_models::exports::Recipient>,
    json: bool,
) -> Result<(), CliError> {
    let who = operator();
    let done = psa_app::tenants::export(app, &who, tenant, encrypt_to).await?;
    let (done, key) = psa_app::tenants::download_export(app, &who, tenant, done.export_id).await?;
    let store = app.export_store()?;
    store.download(&key, out).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&done).expect("the export serialises")
        );
    } else {
        let rows: u64 = done
            .manifest
            .as_ref()
            .map(|m| m.tables.values().map(|t| t.rows).sum())
            .unwrap_or_default();
        eprintln!(
            "exported tenant {tenant}: {rows} rows, {} bytes -> {} (kept in {} as {key})",
            done.bytes.unwrap_or_default(),
            out.display(),
            store.location()
        );
    }
    Ok(())
}

/// `psa tenant import`: the archive at `file` imported (or, `dry_run`, what would be).
pub async fn import(
    app: &App,
    file: &std::path::Path,
    options: &psa_app::imports::ImportOptions,
    dry_run: bool,
    json: bool,
) -> Result<(), CliError> {
    let who = operator();
    if dry_run {
        let preview = psa_app::imports::preview(app, &who, file, options).await?;
        if json {
            println!(
                "{}",
                serde_json::to_string(&preview).expect("a preview serialises")
            );
        } else {
            print_source(&preview.source);
            println!("would be   a {}", preview.mode.as_str());
            for p in &preview.problems {
                println!("refused    {p}");
            }
        }
        return Ok(());
    }
    let done = psa_app::imports::import(app, &who, file, options).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&done).expect("an import serialises")
        );
        return Ok(());
    }
    print_source(&done.source);
    println!(
        "imported   {} ({}, slug {}) as a {}, {}",
        done.tenant.tenant_id,
        done.tenant.name,
        done.tenant.slug,
        done.mode.as_str(),
        done.tenant.status
    );
    for (table, t) in &done.tables {
        match &t.left_out {
            Some(why) => println!("  {table:<24} left out: {why}"),
            None if t.rows > 0 => println!("  {table:<24} {}", t.rows),
            None => {}
        }
    }
    println!("customer   {}", done.tenant.customer.tracking);
    if done.mailed + done.mail_failed > 0 {
        println!(
            "mailed     {} users ({} could not be reached)",
            done.mailed, done.mail_failed
        );
    }
    for w in &done.warnings {
        eprintln!("warning: {w}");
    }
    Ok(())
}

fn print_source(s: &psa_app::imports::Source) {
    let rows: u64 = s.rows.values().sum();
    println!(
        "archive    export {} of tenant {} ({}, slug {}), {} rows, made {}",
        s.export_id,
        s.tenant_id,
        s.name,
        s.slug,
        rows,
        s.exported_at.format("%Y-%m-%d %H:%M UTC")
    );
    println!(
        "schema     {} (this installation: {}){}{}",
        s.schema_version,
        s.schema_here,
        if s.encrypted { ", encrypted" } else { "" },
        if s.credentials {
            ", with credentials"
        } else {
            ""
        }
    );
}

/// A tenant's plan and seats, as `psa tenant show` and `psa tenant set-plan` print them.
pub fn print_subscription(s: &psa_models::plans::Subscription) {
    let allowed = s
        .seats_allowed
        .map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    println!(
        "plan        {} ({}), {}",
        s.plan,
        s.plan_name,
        s.status.as_str()
    );
    println!(
        "seats       {} / {allowed} in use{}",
        s.seats_used,
        if s.over() { " (over)" } else { "" }
    );
    if let Some(at) = s.trial_ends_at {
        println!("trial ends  {}", at.to_rfc3339());
    }
}
