//! `psa tenant create|status|list|sweep`, `psa customers reconcile` and `psa worker`; the
//! lifecycle commands are in `lifecycle`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Subcommand;
use psa_models::provisioning::{self, RunStatus};
use psa_workflows::client::{ClientError, IdempotencyKey, StartError, TenantWorkflows};
use psa_workflows::{ProvisioningView, RawRequest, TenantCreationInput, WorkflowState};

use secrecy::{ExposeSecret, SecretString};

use crate::config::{self, CliError};
use crate::temporal::{TrackingArgs, WorkflowArgs};

#[derive(Subcommand)]
pub enum TenantCommand {
    /// Provision a tenant (and track it as a customer); waits for the result by default.
    Create {
        #[arg(long)]
        name: String,
        #[arg(long)]
        admin_email: String,
        #[arg(long)]
        first_name: String,
        #[arg(long)]
        last_name: String,
        /// The tenant's own company.
        #[arg(long)]
        company_name: Option<String>,
        #[arg(long)]
        license_count: Option<i32>,
        /// Provisions at most one tenant per key, for good; the same key with a different
        /// request is refused. The API's `Idempotency-Key` names the same run.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Do not record this tenant as a customer (remembered: reconcile honours it).
        #[arg(long)]
        skip_customer_tracking: bool,
        /// Print the workflow id and return at once.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// The state of a provisioning run, or its result once finished.
    Status {
        workflow_id: String,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a provisioning run in flight: it stops before its next step and rolls back what it
    /// built. A run whose tenant is complete is not undone (cancel the tenant instead).
    CancelRun {
        workflow_id: String,
        #[arg(long)]
        reason: String,
    },
    /// Tenants with how they were provisioned and their customer tracking state, oldest first,
    /// a page at a time.
    List {
        /// The tag that marks customer companies (to tell `tracked` from `partial`).
        #[arg(long, env = "CUSTOMER_TAG_NAME", default_value = "PSA Customer")]
        customer_tag_name: String,
        /// Only tenants in this customer tracking state.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(provisioning::CUSTOMER_STATES))]
        tracking: Option<String>,
        /// Only tenants whose name contains this (case-insensitive).
        #[arg(long)]
        name: Option<String>,
        /// Only tenants created at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z).
        #[arg(long)]
        created_after: Option<chrono::DateTime<chrono::Utc>>,
        /// Only tenants created before this time.
        #[arg(long)]
        created_before: Option<chrono::DateTime<chrono::Utc>>,
        /// Only tenants in this status.
        #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["active", "suspended", "canceled"]))]
        status: Option<String>,
        /// Tenants per page (1-200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// The `next_cursor` of the previous page.
        #[arg(long)]
        cursor: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Roll back runs that ended without finishing (terminated, timed out); `psa worker` does
    /// this every minute.
    Sweep {
        #[arg(long)]
        json: bool,
    },
    /// Send the tenant's first administrator a new invitation (the welcome email failed, or its
    /// link expired); the earlier link stops working. Without mail settings, prints the link.
    ResendInvite {
        tenant_id: String,
        #[arg(long)]
        json: bool,
    },
    /// A tenant's status, reason, pending deletion and customer record.
    Show {
        tenant_id: String,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// active -> suspended: its users are refused (sessions and API keys included) until it is
    /// reactivated; the customer company is tagged and marked.
    Suspend {
        tenant_id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// suspended -> active: the users' credentials work again.
    Reactivate {
        tenant_id: String,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// -> canceled: access ends, an export is taken and the tenant is deleted after the grace
    /// period (`restore` stops it, `delete --confirm` deletes at once).
    Cancel {
        tenant_id: String,
        #[arg(long)]
        reason: String,
        /// How long before deletion: 30d, 90d, 12h, 45s.
        #[arg(long, default_value = "30d", value_parser = crate::lifecycle::parse_grace)]
        grace: i64,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// canceled -> where the cancel found it, before the deletion.
    Restore {
        tenant_id: String,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// Delete a canceled tenant now instead of at its deadline (waits until it is deleted).
    Delete {
        tenant_id: String,
        /// Required: deletion cannot be undone (an export was taken at the cancel).
        #[arg(long)]
        confirm: bool,
        /// Seconds to wait for the deletion.
        #[arg(long, default_value_t = 120)]
        wait_seconds: u64,
        #[arg(long)]
        json: bool,
    },
    /// Export the tenant's data (one JSON Lines file per table and a manifest, in a tar.gz) into
    /// the export store, and copy the archive to PATH.
    Export {
        tenant_id: String,
        #[arg(long, value_name = "PATH")]
        out: std::path::PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CustomersCommand {
    /// Track every tenant that is not yet a customer; report customer companies without tenant.
    Reconcile {
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn progress_line(state: &WorkflowState) -> String {
    format!(
        "[{:>3}%] {} (customer tracking: {})",
        state.progress,
        state.step.label(),
        state.customer_tracking.status.as_str()
    )
}

fn or_dash<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_else(|| "-".into())
}

fn print_view(view: &ProvisioningView, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(view).expect("the view serialises")
        );
        return;
    }
    println!("workflow     {}", view.workflow_id);
    println!("status       {}", view.status.as_str());
    if let Some(r) = &view.result {
        println!("tenant       {}", or_dash(r.tenant_id));
        println!("admin user   {}", or_dash(r.admin_user_id));
        println!("company      {}", or_dash(r.company_id));
        let w = &r.welcome_email;
        match &w.error {
            Some(e) => println!("welcome email {} ({e})", w.status.as_str()),
            None => println!("welcome email {}", w.status.as_str()),
        }
        let t = &r.customer_tracking;
        println!(
            "customer     {} (company {}, contact {}, tag {})",
            t.status.as_str(),
            or_dash(t.customer_company_id),
            or_dash(t.customer_contact_id),
            or_dash(t.customer_tag_id)
        );
        if let Some(s) = &r.tracking_settings {
            println!(
                "tracking     by the worker's settings: enabled {}, management tenant {}, tag {:?}",
                s.enabled,
                or_dash(s.management_tenant_id),
                s.tag_name.as_str()
            );
        }
        if let Some(e) = &t.error {
            println!("customer tracking error: {e}");
        }
        for w in &t.warnings {
            println!("customer tracking note: {w}");
        }
        if let Some(e) = &r.error {
            println!("error in {}: {}", e.step.as_str(), e.message);
        }
        if r.rollback.performed {
            let done: Vec<&str> = r.rollback.compensated.iter().map(|c| c.as_str()).collect();
            println!("rolled back: {}", done.join(", "));
            if !r.rollback.errors.is_empty() {
                println!("rollback errors: {}", r.rollback.errors.join("; "));
            }
        }
    } else if let Some(state) = &view.state {
        println!("progress     {}", progress_line(state));
    }
    if let Some(record) = &view.record {
        let now = record.customer_tracking;
        let at_run = view.result.as_ref().map(|r| r.customer_tracking.status);
        if at_run.is_some_and(|s| s != now) {
            println!("customer now {} (since the run)", now.as_str());
        }
        if now == provisioning::TrackingState::Failed {
            println!("repair with `psa customers reconcile`");
        }
    }
    if let Some(n) = &view.notice {
        println!("note: {n}");
    }
}

/// The invitation link a finished run sealed for its starter (worker without mail).
async fn invitation_link(
    workflows: &TenantWorkflows,
    wf: &WorkflowArgs,
    id: &str,
) -> Result<Option<SecretString>, CliError> {
    let Some(key) = wf.key_if_set() else {
        return Ok(None);
    };
    let result = workflows.result(id).await.map_err(temporal_error)?;
    Ok(result.invitation_link(key))
}

/// A failure to read a run that may pass: the database or Temporal away for a while.
fn is_transient(e: &ClientError) -> bool {
    match e {
        ClientError::Database(d) => d.is_transient(),
        ClientError::Unreachable { .. } => true,
        _ => false,
    }
}

fn start_error(e: StartError) -> CliError {
    match e {
        StartError::KeyReused { .. } => CliError::Usage(e.to_string()),
        StartError::Database(d) => d.into(),
        StartError::Temporal(t) => temporal_error(t),
    }
}

fn temporal_error(e: ClientError) -> CliError {
    match e {
        ClientError::NotFound(_) => CliError::Usage(e.to_string()),
        ClientError::Database(d) => d.into(),
        other => CliError::Failed(anyhow::Error::new(other)),
    }
}

/// Follows a run until it finishes, printing progress on stderr; says (once) when no worker
/// polls the task queue and keeps waiting.
async fn follow(
    workflows: &TenantWorkflows,
    id: &str,
    show_progress: bool,
) -> Result<ProvisioningView, CliError> {
    let mut last = String::new();
    let mut told_no_worker = false;
    let mut told_unreachable = false;
    loop {
        // The run goes on while the database or Temporal is away (its steps retry): so does the
        // waiting, saying once what it waits for.
        let view = match workflows.view(id).await {
            Ok(v) => v,
            Err(e) if is_transient(&e) => {
                if !told_unreachable {
                    eprintln!(
                        "waiting: {e}; the run {id} goes on and retries (Ctrl-C stops waiting; follow it with `psa tenant status {id}`)"
                    );
                    told_unreachable = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            Err(e) => return Err(temporal_error(e)),
        };
        if view.finished {
            return Ok(view);
        }
        let line = match (&view.state, &view.notice) {
            (Some(state), _) => progress_line(state),
            (None, Some(notice)) if !told_no_worker => {
                told_no_worker = true;
                format!(
                    "waiting: {notice}; or stop waiting (Ctrl-C) and follow it with `psa tenant status {id}`"
                )
            }
            _ => String::new(),
        };
        if show_progress && !line.is_empty() && line != last {
            eprintln!("{line}");
            last = line;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub async fn tenant(
    database_url: Option<&str>,
    wf: &WorkflowArgs,
    mail: &config::MailArgs,
    exports: &crate::lifecycle::ExportArgs,
    command: TenantCommand,
) -> Result<(), CliError> {
    use crate::lifecycle as lc;
    match command {
        TenantCommand::Show {
            tenant_id,
            tracking,
            json,
        } => {
            let tenant = crate::user::parse_tenant(&tenant_id)?;
            let pool = config::pool(database_url, 2).await?;
            lc::show(&pool, &tracking, tenant, json).await
        }
        TenantCommand::Suspend {
            tenant_id,
            reason,
            tracking,
            json,
        } => {
            let tenant = crate::user::parse_tenant(&tenant_id)?;
            let pool = config::pool(database_url, 2).await?;
            lc::suspend(&pool, &tracking, tenant, &reason, json).await
        }
        TenantCommand::Reactivate {
            tenant_id,
            tracking,
            json,
        } => {
            let tenant = crate::user::parse_tenant(&tenant_id)?;
            let pool = config::pool(database_url, 2).await?;
            lc::reactivate(&pool, &tracking, tenant, json).await
        }
        TenantCommand::Cancel {
            tenant_id,
            reason,
            grace,
            tracking,
            json,
        } => {
            let tenant = crate::user::parse_tenant(&tenant_id)?;
            let pool = config::pool(database_url, 2).await?;
            lc::cancel(&pool, wf, &tracking, tenant, &reason, grace, json).await
        }
        TenantCommand::Restore {
            tenant_id,
            tracking,
            json,
        } => {
            let tenant = crate::user::parse_tenant(&tenant_id)?;
            let pool = config::pool(database_url, 2).await?;
            lc::restore(&pool, wf, &tracking, tenant, json).await
        }
        TenantCommand::Delete {
            tenant_id,
            confirm,
            wait_seconds,
            json,
        } => {
            let tenant = crate::user::parse_tenant(&tenant_id)?;
            if !confirm {
                return Err(CliError::Usage(
                    "deleting a tenant cannot be undone: add --confirm".into(),
                ));
            }
            let pool = config::pool(database_url, 2).await?;
            lc::delete(&pool, wf, tenant, Duration::from_secs(wait_seconds), json).await
        }
        TenantCommand::Export {
            tenant_id,
            out,
            json,
        } => {
            let tenant = crate::user::parse_tenant(&tenant_id)?;
            let store = exports.store()?;
            let pool = config::pool(database_url, 2).await?;
            lc::export(&pool, &store, tenant, &out, json).await
        }
        TenantCommand::ResendInvite { tenant_id, json } => {
            let tenant = crate::user::parse_tenant(&tenant_id)?;
            let delivery = mail.delivery()?;
            let pool = config::pool(database_url, 2).await?;
            let mut tx = pool.begin().await.map_err(psa_models::Error::from)?;
            let admin = psa_models::users::first_admin(&mut tx, tenant)
                .await?
                .ok_or_else(|| {
                    CliError::Usage(format!(
                        "tenant {tenant} does not exist or has no active administrator"
                    ))
                })?;
            crate::user::send_invitation(
                tx,
                tenant,
                admin.user_id,
                &delivery,
                psa_models::mail::Kind::Welcome,
                json,
            )
            .await
        }
        TenantCommand::Create {
            name,
            admin_email,
            first_name,
            last_name,
            company_name,
            license_count,
            idempotency_key,
            skip_customer_tracking,
            no_wait,
            json,
        } => {
            let input = TenantCreationInput::parse(RawRequest {
                tenant_name: &name,
                first_name: &first_name,
                last_name: &last_name,
                email: &admin_email,
                company_name: company_name.as_deref(),
                license_count,
                skip_customer_tracking,
            })?;
            let key = idempotency_key
                .as_deref()
                .map(IdempotencyKey::parse)
                .transpose()?;
            let pool = config::pool(database_url, 2).await?;
            let workflows = wf.connect(pool).await?;
            let (id, starter) = workflows
                .start_run(input, key.as_ref(), "cli")
                .await
                .map_err(start_error)?;
            if no_wait {
                if json {
                    println!("{}", serde_json::json!({"workflow_id": id}));
                } else {
                    println!("started {id}");
                }
                return Ok(());
            }
            let show_progress = !json || std::io::stderr().is_terminal();
            if show_progress {
                eprintln!("provisioning {id}");
            }
            let view = follow(&workflows, &id, show_progress)
                .await
                .inspect_err(|_| {
                    eprintln!("the run {id} was started and goes on: follow it with `psa tenant status {id}`");
                })?;
            let Some(result) = &view.result else {
                print_view(&view, json);
                return Err(CliError::Reported);
            };
            // Without mail, the admin's invitation link, to this starter only, once.
            let link = if starter {
                invitation_link(&workflows, wf, &id).await?
            } else {
                None
            };
            if json {
                let mut out = serde_json::to_value(result).expect("the result serialises");
                out["invitation_link"] =
                    serde_json::json!(link.as_ref().map(|l| l.expose_secret()));
                println!("{out}");
            } else {
                print_view(&view, false);
                if let Some(l) = &link {
                    println!(
                        "invitation   {} (shown once; give it to the admin: it sets their password)",
                        l.expose_secret()
                    );
                }
            }
            if result.status == psa_workflows::Outcome::Completed
                && result.welcome_email.status == psa_workflows::WelcomeStatus::Disabled
                && link.is_none()
            {
                eprintln!(
                    "note: the invitation link is not shown here ({}); send a new one with `psa tenant resend-invite {}`",
                    if starter {
                        "PSA_SECRET_KEY is not set, or differs from the worker's"
                    } else {
                        "this run was started earlier, and its starter was shown the link"
                    },
                    or_dash(result.tenant_id)
                );
            }
            if result.status == psa_workflows::Outcome::Completed {
                Ok(())
            } else {
                Err(CliError::Reported)
            }
        }
        TenantCommand::Status { workflow_id, json } => {
            let pool = config::pool(database_url, 2).await?;
            let workflows = wf.connect(pool).await?;
            let view = workflows.view(&workflow_id).await.map_err(temporal_error)?;
            print_view(&view, json);
            Ok(())
        }
        TenantCommand::CancelRun {
            workflow_id,
            reason,
        } => {
            let pool = config::pool(database_url, 2).await?;
            let workflows = wf.connect(pool).await?;
            workflows
                .cancel(&workflow_id, &reason)
                .await
                .map_err(temporal_error)?;
            eprintln!(
                "cancel requested: {workflow_id} stops before its next step and rolls back (follow it with `psa tenant status {workflow_id}`)"
            );
            Ok(())
        }
        TenantCommand::List {
            customer_tag_name,
            tracking,
            name,
            created_after,
            created_before,
            status,
            limit,
            cursor,
            json,
        } => {
            let status = status
                .as_deref()
                .map(psa_models::lifecycle::TenantStatus::parse)
                .transpose()?;
            let pool = config::pool(database_url, 2).await?;
            let mut conn = pool.acquire().await.map_err(psa_models::Error::from)?;
            let page = provisioning::list_tenants(
                &mut conn,
                customer_tag_name.trim(),
                &provisioning::TenantListFilter {
                    customer_tracking: tracking,
                    name_contains: name,
                    created_after,
                    created_before,
                    status,
                },
                &psa_models::db::PageRequest {
                    limit: Some(limit),
                    cursor,
                },
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&page).expect("the page serialises")
                );
            } else {
                println!(
                    "{:<36}  {:<20}  {:<9}  {:<10}  {:<11}  {:<50}  NAME",
                    "TENANT", "CREATED", "STATUS", "CUSTOMER", "PROVISIONED", "WORKFLOW"
                );
                for t in &page.items {
                    let created = t.created_at.format("%Y-%m-%d %H:%M:%S").to_string();
                    println!(
                        "{:<36}  {:<20}  {:<9}  {:<10}  {:<11}  {:<50}  {}",
                        t.tenant_id,
                        created,
                        t.status.as_str(),
                        t.customer_tracking,
                        t.provisioning_status.map_or("-", RunStatus::as_str),
                        t.workflow_id.as_deref().unwrap_or("-"),
                        t.name
                    );
                }
                if let Some(next) = &page.next_cursor {
                    println!("more: psa tenant list --cursor {next}");
                }
            }
            Ok(())
        }
        TenantCommand::Sweep { json } => {
            let pool = config::pool(database_url, 2).await?;
            let workflows = wf.connect(pool).await?;
            let report = psa_workflows::sweep::sweep(&workflows, psa_workflows::sweep::MIN_AGE)
                .await
                .map_err(temporal_error)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&report).expect("the report serialises")
                );
            } else {
                println!(
                    "checked {} running runs; {} cut off and rolled back; {} finished late",
                    report.checked,
                    report.cut_off.len(),
                    report.finished.len()
                );
                for c in &report.cut_off {
                    println!(
                        "cut off: {} (tenant {}, Temporal: {})",
                        c.workflow_id,
                        or_dash(c.tenant_id),
                        c.temporal_status
                    );
                }
                for e in &report.errors {
                    println!("error: {e}");
                }
            }
            if report.errors.is_empty() {
                Ok(())
            } else {
                Err(CliError::Reported)
            }
        }
    }
}

pub async fn customers(
    database_url: Option<&str>,
    command: CustomersCommand,
) -> Result<(), CliError> {
    let CustomersCommand::Reconcile {
        tracking,
        dry_run,
        json,
    } = command;
    let tags = tracking.lifecycle_tags();
    let tracking = tracking.settings();
    if tracking.management_tenant_id.is_none() {
        return Err(CliError::Usage("NINEMINDS_TENANT_ID is not set".into()));
    }
    let connections = psa_workflows::reconcile::CONCURRENCY as u32 + 1;
    let pool = config::pool(database_url, connections).await?;
    let report = psa_workflows::reconcile::reconcile(&pool, &tracking, &tags, dry_run).await?;
    if json {
        println!(
            "{}",
            serde_json::to_value(&report).map_err(|e| CliError::Failed(e.into()))?
        );
    } else {
        let verb = if dry_run {
            "would create records for"
        } else {
            "created records for"
        };
        println!(
            "{verb} {} tenants; {} already tracked; {} failed; {} left alone",
            report.created,
            report.already_tracked,
            report.failed,
            report.left_alone.len()
        );
        for f in &report.failures {
            println!("failed: tenant {}: {}", f.tenant_id, f.error);
        }
        for l in &report.left_alone {
            let why = match l.reason {
                psa_workflows::reconcile::LeftReason::InFlight => {
                    "its provisioning run is in flight"
                }
                psa_workflows::reconcile::LeftReason::Skipped => {
                    "provisioned with --skip-customer-tracking"
                }
                psa_workflows::reconcile::LeftReason::Incomplete => {
                    "its provisioning run did not complete (the sweeper removes it)"
                }
            };
            println!(
                "left alone: tenant {} ({why}; run {})",
                l.tenant_id, l.workflow_id
            );
        }
        for w in &report.warnings {
            println!("note: {w}");
        }
        for o in &report.orphans {
            println!(
                "orphan: customer company {} names tenant {}, which no longer exists",
                o.customer_company_id, o.tenant_id
            );
        }
    }
    if report.failed > 0 {
        Err(CliError::Reported)
    } else {
        Ok(())
    }
}

/// Whether the worker reaches its database and Temporal (3 s each).
async fn dependencies_up(w: &TenantWorkflows) -> (bool, bool) {
    let database = tokio::time::timeout(
        Duration::from_secs(3),
        sqlx::query("SELECT 1").execute(&w.pool),
    )
    .await;
    let temporal = tokio::time::timeout(Duration::from_secs(3), w.worker_polling()).await;
    (matches!(database, Ok(Ok(_))), matches!(temporal, Ok(Ok(_))))
}

/// `GET /readyz` of the worker: 200 when the database and Temporal both answer, 503 naming which
/// does not (`/healthz` only says the process lives).
async fn worker_ready(w: &TenantWorkflows) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    match dependencies_up(w).await {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "temporal unreachable"),
        (true, true) => (StatusCode::OK, "ready"),
    }
}

/// How often the worker checks its dependencies for `psa_worker_dependency_up`.
const PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// Keeps `psa_worker_dependency_up{dependency="database"|"temporal"}` (1 or 0) current: the
/// alerts on an unreachable database or Temporal read it, whatever step is running or not. A
/// dependency counts as down after two failed checks in a row (one slow answer is not an
/// outage); going down and coming back are each logged once.
async fn probe_dependencies(w: TenantWorkflows) {
    let mut tick = tokio::time::interval(PROBE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = [0u32; 2];
    let mut down = [false; 2];
    loop {
        tick.tick().await;
        let (database, temporal) = dependencies_up(&w).await;
        for (i, (dependency, up)) in [("database", database), ("temporal", temporal)]
            .into_iter()
            .enumerate()
        {
            failures[i] = if up { 0 } else { failures[i] + 1 };
            let now_down = failures[i] >= 2;
            if now_down && !down[i] {
                tracing::warn!(dependency, "the worker cannot reach a dependency");
            } else if !now_down && down[i] {
                tracing::info!(dependency, "the worker reaches the dependency again");
            }
            down[i] = now_down;
            metrics::gauge!("psa_worker_dependency_up", "dependency" => dependency)
                .set(if now_down { 0.0 } else { 1.0 });
        }
    }
}

#[allow(clippy::too_many_arguments)]
/// `psa worker`: validates configuration, serves /metrics and /healthz, sweeps cut-off runs,
/// polls the task queue.
pub async fn worker(
    database_url: Option<&str>,
    wf: &WorkflowArgs,
    mail: &config::MailArgs,
    exports: &crate::lifecycle::ExportArgs,
    webhook_args: &crate::webhooks::WebhookArgs,
    tracking_args: &TrackingArgs,
    db: &config::DbTimeoutArgs,
    metrics_bind: SocketAddr,
    sweep_interval: Duration,
) -> Result<(), CliError> {
    let tracking = tracking_args.settings();
    let store = exports.store()?;
    let key = wf.key()?;
    let delivery = mail.delivery()?;
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let pool = config::pool_with(database_url, 16, Some(db.timeouts())).await?;
    psa_workflows::worker::check_tracking(&pool, &tracking)
        .await
        .map_err(|e| match e {
            psa_workflows::worker::WorkerError::Config(m) => CliError::Usage(m),
            psa_workflows::worker::WorkerError::Failed(m) => CliError::Failed(anyhow::anyhow!(m)),
        })?;
    let workflows = wf.connect(pool.clone()).await?;
    let handle = psa_api::metrics::handle();
    psa_workflows::activities::init_metrics();
    psa_workflows::webhooks::init_metrics();
    let listener = tokio::net::TcpListener::bind(metrics_bind)
        .await
        .map_err(|e| {
            CliError::Failed(
                anyhow::Error::new(e).context(format!("cannot listen on {metrics_bind}")),
            )
        })?;
    let ready = workflows.clone();
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(psa_api::metrics::render))
        .with_state(handle)
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .route(
            "/readyz",
            axum::routing::get(move || {
                let w = ready.clone();
                async move { worker_ready(&w).await }
            }),
        );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tokio::spawn(probe_dependencies(workflows.clone()));
    let sweeper = workflows.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(sweep_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) =
                psa_workflows::sweep::sweep(&sweeper, psa_workflows::sweep::MIN_AGE).await
            {
                tracing::warn!(error = %e, "sweep of cut-off provisioning runs failed; will retry");
            }
            if let Err(e) = psa_workflows::deletion::start_pending(&sweeper).await {
                tracing::warn!(error = %e, "starting recorded deletions failed; will retry");
            }
            psa_workflows::deletion::observe_lifecycle(&sweeper.pool).await;
            psa_workflows::webhooks::observe(&sweeper.pool).await;
        }
    });
    // Webhook deliveries: this worker's dispatcher shares the work with every other worker's.
    let (stop_dispatch, dispatch_stopped) = tokio::sync::oneshot::channel::<()>();
    if webhook_args.webhook_dispatch {
        let dispatcher = psa_workflows::webhooks::Dispatcher::new(
            pool.clone(),
            webhook_args.dispatcher(key.clone()),
        )
        .map_err(|e| CliError::Failed(anyhow::anyhow!(e)))?;
        tokio::spawn(dispatcher.run(async move {
            let _ = dispatch_stopped.await;
        }));
    }
    tracing::info!(
        task_queue = %wf.task_queue,
        address = %wf.temporal_address,
        webhook_dispatch = webhook_args.webhook_dispatch,
        metrics = %metrics_bind,
        tracking_enabled = tracking.enabled,
        management_tenant = ?tracking.management_tenant_id,
        mail = delivery.mailer.as_ref().map_or("disabled (links go to the starter)", |m| m.host()),
        "psa worker running"
    );
    psa_workflows::worker::run(
        workflows.client,
        &wf.task_queue,
        psa_workflows::worker::WorkerConfig {
            pool,
            key,
            tracking,
            delivery,
            lifecycle: psa_workflows::worker::LifecycleConfig {
                tags: tracking_args.lifecycle_tags(),
                store,
            },
        },
        async move {
            crate::serve::shutdown_signal().await;
            let _ = stop_dispatch.send(());
        },
    )
    .await
    .map_err(|e| CliError::Failed(anyhow::anyhow!(e.to_string())))
}
