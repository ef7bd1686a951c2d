//! `psa tenant show|suspend|reactivate|cancel|restore|delete|export`: the tenant's lifecycle.

use std::path::PathBuf;

use clap::Args;
use psa_models::exports::{self, ExportStore, Purpose};
use psa_models::lifecycle::{self, Change, TenantDetails};
use psa_models::{TenantId, tenants};
use psa_workflows::deletion::{self, Deletions};

use crate::config::CliError;
use crate::temporal::{TrackingArgs, WorkflowArgs};

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
pub fn parse_grace(raw: &str) -> Result<i64, String> {
    let raw = raw.trim();
    let (n, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: i64 = n
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 30d, 12h, 15m or 45s"))?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(format!(
                "{raw:?} is not a duration like 30d, 12h, 15m or 45s"
            ));
        }
    };
    lifecycle::grace(seconds)
        .map(|_| seconds)
        .map_err(|e| e.to_string())
}

/// The lifecycle settings: the management tenant (NINEMINDS_TENANT_ID, else the database's)
/// and the tags.
pub async fn settings(
    conn: &mut sqlx::PgConnection,
    tracking: &TrackingArgs,
) -> Result<lifecycle::Settings, CliError> {
    let mgmt = match tracking.nineminds_tenant_id {
        Some(id) => id,
        None => {
            tenants::find_management(conn)
                .await?
                .ok_or_else(|| {
                    CliError::Usage(
                        "there is no management tenant: create it with `psa management init`"
                            .into(),
                    )
                })?
                .tenant
        }
    };
    Ok(tracking.lifecycle(mgmt))
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

/// The actor of a CLI change, for the audit log.
pub fn actor() -> String {
    let user = std::env::var("USER").unwrap_or_else(|_| "unknown".into());
    format!("cli:{user}")
}

pub async fn show(
    pool: &sqlx::PgPool,
    tracking: &TrackingArgs,
    tenant: TenantId,
    json: bool,
) -> Result<(), CliError> {
    let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
    let settings = settings(&mut tx, tracking).await?;
    let details = lifecycle::show(&mut tx, &settings, tenant).await?;
    tx.rollback().await.map_err(psa_models::Error::from)?;
    print_details(&details, json);
    Ok(())
}

pub async fn suspend(
    pool: &sqlx::PgPool,
    tracking: &TrackingArgs,
    tenant: TenantId,
    reason: &str,
    json: bool,
) -> Result<(), CliError> {
    let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
    let settings = settings(&mut tx, tracking).await?;
    let change = lifecycle::suspend(&mut tx, &settings, tenant, reason, &actor()).await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    print_change(&change, json, "suspended");
    Ok(())
}

pub async fn reactivate(
    pool: &sqlx::PgPool,
    tracking: &TrackingArgs,
    tenant: TenantId,
    json: bool,
) -> Result<(), CliError> {
    let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
    let settings = settings(&mut tx, tracking).await?;
    let change = lifecycle::reactivate(&mut tx, &settings, tenant, &actor()).await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    print_change(&change, json, "reactivated");
    Ok(())
}

async fn deletions(wf: &WorkflowArgs, pool: &sqlx::PgPool) -> Result<Deletions, CliError> {
    let w = wf.connect(pool.clone()).await?;
    Ok(Deletions {
        client: w.client,
        task_queue: w.task_queue,
        pool: pool.clone(),
    })
}

#[allow(clippy::too_many_arguments)]
pub async fn cancel(
    pool: &sqlx::PgPool,
    wf: &WorkflowArgs,
    tracking: &TrackingArgs,
    tenant: TenantId,
    reason: &str,
    grace_seconds: i64,
    json: bool,
) -> Result<(), CliError> {
    let grace = lifecycle::grace(grace_seconds)?;
    let workflow_id = deletion::new_workflow_id(tenant);
    let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
    let settings = settings(&mut tx, tracking).await?;
    let change = lifecycle::cancel(
        &mut tx,
        &settings,
        tenant,
        reason,
        grace,
        &workflow_id,
        uuid::Uuid::now_v7(),
        &actor(),
    )
    .await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    // The cancel is recorded: if Temporal cannot be reached now, the worker's sweeper starts
    // the deletion's workflow.
    let started = match deletions(wf, pool).await {
        Ok(d) => d.start(&workflow_id).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = &started {
        eprintln!(
            "note: the deletion is recorded but its workflow could not be started now ({e}); the worker starts it within a minute"
        );
    }
    print_change(&change, json, "canceled");
    Ok(())
}

pub async fn restore(
    pool: &sqlx::PgPool,
    wf: &WorkflowArgs,
    tracking: &TrackingArgs,
    tenant: TenantId,
    json: bool,
) -> Result<(), CliError> {
    let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
    let settings = settings(&mut tx, tracking).await?;
    let (change, workflow_id) = lifecycle::restore(&mut tx, &settings, tenant, &actor()).await?;
    tx.commit().await.map_err(psa_models::Error::from)?;
    // The database says restored already; the signal only ends the workflow's wait early.
    if let Ok(d) = deletions(wf, pool).await
        && let Err(e) = d.restored(&workflow_id).await
    {
        tracing::info!(workflow_id, error = %e, "the deletion workflow was not told of the restore; it ends at its deadline without deleting");
    }
    print_change(&change, json, "restored");
    Ok(())
}

/// Confirms a pending deletion and waits (up to `wait`) until it is done.
pub async fn delete(
    pool: &sqlx::PgPool,
    wf: &WorkflowArgs,
    tenant: TenantId,
    wait: std::time::Duration,
    json: bool,
) -> Result<(), CliError> {
    let mut conn = pool.acquire().await.map_err(psa_models::Error::from)?;
    let pending = lifecycle::pending_deletion(&mut conn, tenant)
        .await?
        .ok_or_else(|| {
            CliError::Usage(format!(
                "tenant {tenant} has no pending deletion: cancel it first (`psa tenant cancel`)"
            ))
        })?;
    drop(conn);
    let d = deletions(wf, pool).await?;
    // Started already, unless its starter could not reach Temporal: start it now.
    d.start(&pending.workflow_id)
        .await
        .map_err(|e| CliError::Failed(e.into()))?;
    d.confirm(&pending.workflow_id, &actor())
        .await
        .map_err(|e| CliError::Failed(e.into()))?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        let status: String =
            sqlx::query_scalar("SELECT status FROM tenant_deletions WHERE workflow_id = $1")
                .bind(&pending.workflow_id)
                .fetch_one(pool)
                .await
                .map_err(psa_models::Error::from)?;
        if status == "deleted" {
            break;
        }
        if std::time::Instant::now() >= deadline {
            return Err(CliError::Failed(anyhow::anyhow!(
                "the deletion was confirmed but has not finished within {} s (workflow {}): is a worker running?",
                wait.as_secs(),
                pending.workflow_id
            )));
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"tenant_id": tenant, "status": "deleted", "workflow_id": pending.workflow_id})
        );
    } else {
        eprintln!("deleted tenant {tenant} (workflow {})", pending.workflow_id);
    }
    Ok(())
}

pub async fn export(
    pool: &sqlx::PgPool,
    store: &ExportStore,
    tenant: TenantId,
    out: &std::path::Path,
    json: bool,
) -> Result<(), CliError> {
    let id = uuid::Uuid::now_v7();
    let mut conn = pool.acquire().await.map_err(psa_models::Error::from)?;
    tenants::get(&mut conn, tenant).await?;
    drop(conn);
    exports::begin(pool, id, tenant, Purpose::Request, &actor()).await?;
    let done = exports::run(pool, store, id).await?;
    let key = done.location.clone().unwrap_or_default();
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
