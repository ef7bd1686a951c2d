//! `psa tenant create|status|list`, `psa customers reconcile` and `psa worker`.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::Duration;

use clap::Subcommand;
use psa_workflows::{AdminUserInput, Step, TenantCreationInput, WorkflowState};
use serde_json::{Value, json};

use crate::config::{self, CliError};
use crate::temporal::WorkflowArgs;

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
        /// Provisions at most one tenant per key (it becomes the workflow id).
        #[arg(long)]
        idempotency_key: Option<String>,
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
    /// Tenants with their customer tracking state.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum CustomersCommand {
    /// Track every tenant that is not yet a customer; report customer companies without tenant.
    Reconcile {
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

/// A tenant with its customer company and whether that company carries the tag.
type TenantRow = (
    uuid::Uuid,
    String,
    chrono::DateTime<chrono::Utc>,
    bool,
    Option<uuid::Uuid>,
    Option<bool>,
);

/// Workflow ids are the idempotency keys: printable, bounded.
fn workflow_id(key: Option<String>) -> Result<String, CliError> {
    match key {
        None => Ok(format!("tenant-creation-{}", uuid::Uuid::new_v4())),
        Some(k) => {
            let k = k.trim().to_owned();
            if k.is_empty()
                || k.len() > 200
                || k.chars().any(|c| c.is_control() || c.is_whitespace())
            {
                return Err(CliError::Usage(
                    "--idempotency-key must be 1-200 printable characters without spaces".into(),
                ));
            }
            Ok(k)
        }
    }
}

fn step_label(step: Step) -> &'static str {
    match step {
        Step::Initializing => "initializing",
        Step::CreatingTenant => "creating tenant",
        Step::RunningOnboardingSeeds => "running onboarding seeds",
        Step::CreatingAdminUser => "creating admin user",
        Step::SettingUpData => "setting up tenant data",
        Step::RollingBack => "rolling back",
        Step::Completed => "completed",
        Step::Failed => "failed",
        Step::RolledBack => "rolled back",
        Step::Cancelled => "cancelled",
    }
}

pub(crate) fn progress_line(state: &WorkflowState) -> String {
    format!(
        "[{:>3}%] {} (customer tracking: {})",
        state.progress,
        step_label(state.step),
        serde_json::to_value(state.customer_tracking.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    )
}

fn print_result(result: &Value, json: bool) {
    if json {
        println!("{result}");
        return;
    }
    let get = |k: &str| {
        result[k]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| "-".into())
    };
    println!("workflow     {}", get("workflow_id"));
    println!("status       {}", get("status"));
    println!("tenant       {}", get("tenant_id"));
    println!("admin user   {}", get("admin_user_id"));
    println!("company      {}", get("company_id"));
    if let Some(p) = result["temporary_password"].as_str() {
        println!("temporary password (shown once): {p}");
    }
    let t = &result["customer_tracking"];
    println!(
        "customer     {} (company {}, contact {}, tag {})",
        t["status"].as_str().unwrap_or("-"),
        t["customer_company_id"].as_str().unwrap_or("-"),
        t["customer_contact_id"].as_str().unwrap_or("-"),
        t["customer_tag_id"].as_str().unwrap_or("-")
    );
    if let Some(e) = t["error"].as_str() {
        println!("customer tracking error: {e} (repair with `psa customers reconcile`)");
    }
    for w in t["warnings"].as_array().into_iter().flatten() {
        println!("customer tracking note: {}", w.as_str().unwrap_or_default());
    }
    if !result["error"].is_null() {
        println!(
            "error in {}: {}",
            result["error"]["step"].as_str().unwrap_or("-"),
            result["error"]["message"].as_str().unwrap_or("-")
        );
    }
    if result["rollback"]["performed"] == true {
        println!("rolled back: {}", result["rollback"]["compensated"]);
        if result["rollback"]["errors"]
            .as_array()
            .is_some_and(|e| !e.is_empty())
        {
            println!("rollback errors: {}", result["rollback"]["errors"]);
        }
    }
}

pub async fn tenant(
    database_url: Option<&str>,
    wf: &WorkflowArgs,
    command: TenantCommand,
) -> Result<(), CliError> {
    match command {
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
            let tracking = wf.tracking()?;
            let key = wf.key_if_set()?;
            let input = TenantCreationInput {
                tenant_name: name,
                admin_user: AdminUserInput {
                    first_name,
                    last_name,
                    email: admin_email,
                },
                company_name,
                license_count,
                skip_customer_tracking,
                tracking,
            };
            input.validate()?;
            let id = workflow_id(idempotency_key)?;
            let workflows = wf.connect().await?;
            workflows
                .start(&id, input)
                .await
                .map_err(|e| CliError::Failed(e.into()))?;
            if no_wait {
                if json {
                    println!("{}", json!({"workflow_id": id}));
                } else {
                    println!("started {id}");
                }
                return Ok(());
            }
            let show_progress = !json || std::io::stderr().is_terminal();
            if show_progress {
                eprintln!("provisioning {id}");
            }
            let mut last = String::new();
            let result = loop {
                let status = workflows
                    .status(&id)
                    .await
                    .map_err(|e| CliError::Failed(e.into()))?;
                if let Some(state) = &status.state {
                    let line = progress_line(state);
                    if show_progress && line != last {
                        eprintln!("{line}");
                        last = line;
                    }
                }
                if status.finished {
                    break status.result.ok_or_else(|| {
                        CliError::Failed(anyhow::anyhow!("workflow {id} ended without a result"))
                    })?;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            let public = result.public(key.as_ref());
            print_result(&public, json);
            if key.is_none() && result.temporary_password_sealed.is_some() {
                eprintln!(
                    "note: PSA_SECRET_KEY is not set here, so the temporary password cannot be shown"
                );
            }
            if result.status == psa_workflows::Outcome::Completed {
                Ok(())
            } else {
                Err(CliError::Reported)
            }
        }
        TenantCommand::Status { workflow_id, json } => {
            let key = wf.key_if_set()?;
            let workflows = wf.connect().await?;
            let status = workflows.status(&workflow_id).await.map_err(|e| match e {
                psa_workflows::client::ClientError::NotFound(_) => CliError::Usage(e.to_string()),
                other => CliError::Failed(other.into()),
            })?;
            let out = json!({
                "workflow_id": workflow_id,
                "finished": status.finished,
                "state": status.state,
                "result": status.result.as_ref().map(|r| r.public(key.as_ref())),
            });
            if json {
                println!("{out}");
            } else if let Some(r) = &out["result"].as_object() {
                print_result(&Value::Object((*r).clone()), false);
            } else if let Some(state) = &status.state {
                println!("{}", progress_line(state));
            } else {
                println!("{workflow_id}: finished without a result");
            }
            Ok(())
        }
        TenantCommand::List { json } => {
            let tracking = wf.tracking()?;
            let pool = config::pool(database_url, 2).await?;
            let rows: Vec<TenantRow> = sqlx::query_as(
                "SELECT t.tenant, t.company_name, t.created_at, t.is_management, c.company_id, \
                        EXISTS (SELECT 1 FROM tag_mappings m JOIN tag_definitions d ON d.tenant = m.tenant AND d.tag_id = m.tag_id \
                                WHERE m.tenant = c.tenant AND m.tagged_id = c.company_id AND d.tag_text = $2) \
                 FROM tenants t LEFT JOIN companies c ON c.tenant = $1 AND c.properties ->> 'tenant_id' = t.tenant::text \
                 ORDER BY t.created_at, t.tenant",
            )
            .bind(tracking.management_tenant_id)
            .bind(&tracking.tag_name)
            .fetch_all(&pool)
            .await
            .map_err(psa_models::Error::from)?;
            let items: Vec<Value> = rows
                .iter()
                .map(|(id, name, created, mgmt, company, tagged)| {
                    let state = if *mgmt {
                        "management"
                    } else {
                        match (company, tagged) {
                            (Some(_), Some(true)) => "tracked",
                            (Some(_), _) => "partial",
                            (None, _) => "untracked",
                        }
                    };
                    json!({"tenant_id": id, "name": name, "created_at": created, "customer_tracking": state, "customer_company_id": company})
                })
                .collect();
            if json {
                println!("{}", Value::Array(items));
            } else {
                for i in &items {
                    println!(
                        "{}  {:<10}  {}",
                        i["tenant_id"].as_str().unwrap_or_default(),
                        i["customer_tracking"].as_str().unwrap_or_default(),
                        i["name"].as_str().unwrap_or_default()
                    );
                }
            }
            Ok(())
        }
    }
}

pub async fn customers(
    database_url: Option<&str>,
    wf: &WorkflowArgs,
    command: CustomersCommand,
) -> Result<(), CliError> {
    let CustomersCommand::Reconcile { dry_run, json } = command;
    let tracking = wf.tracking()?;
    if tracking.management_tenant_id.is_none() {
        return Err(CliError::Usage("NINEMINDS_TENANT_ID is not set".into()));
    }
    let pool = config::pool(database_url, 2).await?;
    let report = psa_workflows::reconcile::reconcile(&pool, &tracking, dry_run).await?;
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
            "{verb} {} tenants; {} already tracked; {} failed",
            report.created, report.already_tracked, report.failed
        );
        for f in &report.failures {
            println!("failed: tenant {}: {}", f.tenant_id, f.error);
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

/// `psa worker`: validates configuration, serves /metrics and /healthz, polls the task queue.
pub async fn worker(
    database_url: Option<&str>,
    wf: &WorkflowArgs,
    metrics_bind: &str,
) -> Result<(), CliError> {
    let metrics_bind: SocketAddr = metrics_bind.parse().map_err(|_| {
        CliError::Usage(format!(
            "PSA_WORKER_METRICS_BIND must be host:port, not {metrics_bind:?}"
        ))
    })?;
    let tracking = wf.tracking()?;
    let key = wf.key()?;
    #[cfg(feature = "failpoints")]
    let _failpoints = fail::FailScenario::setup();
    let pool = config::pool(database_url, 16).await?;
    psa_workflows::worker::check_tracking(&pool, &tracking)
        .await
        .map_err(|e| match e {
            psa_workflows::worker::WorkerError::Config(m) => CliError::Usage(m),
            psa_workflows::worker::WorkerError::Failed(m) => CliError::Failed(anyhow::anyhow!(m)),
        })?;
    let workflows = wf.connect().await?;
    let handle = psa_api::metrics::handle();
    let listener = tokio::net::TcpListener::bind(metrics_bind)
        .await
        .map_err(|e| {
            CliError::Failed(
                anyhow::Error::new(e).context(format!("cannot listen on {metrics_bind}")),
            )
        })?;
    let app = axum::Router::new()
        .route("/metrics", axum::routing::get(psa_api::metrics::render))
        .with_state(handle)
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    tracing::info!(task_queue = %wf.task_queue, address = %wf.temporal_address, metrics = %metrics_bind, "psa worker running");
    psa_workflows::worker::run(
        workflows.client,
        &wf.task_queue,
        pool,
        key,
        crate::serve::shutdown_signal(),
    )
    .await
    .map_err(|e| CliError::Failed(anyhow::anyhow!(e.to_string())))
}
