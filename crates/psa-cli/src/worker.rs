//! `psa worker`: the wiring of the worker process. What it runs is assembled in psa-workflows
//! (`psa_workflows::worker`: the workflows and activities it polls for, its housekeeping loop,
//! its dependency probes); here are its configuration, its metrics and health listener and the
//! webhook dispatcher it starts beside them.

use std::net::SocketAddr;
use std::time::Duration;

use psa_workflows::client::TenantWorkflows;

use crate::config::{self, CliError};
use crate::temporal::{TrackingArgs, WorkflowArgs};

/// `GET /readyz` of the worker: 200 when the database and Temporal both answer, 503 naming which
/// does not (`/healthz` only says the process lives).
async fn worker_ready(w: &TenantWorkflows) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    match psa_workflows::worker::dependencies_up(w).await {
        (false, _) => (StatusCode::SERVICE_UNAVAILABLE, "database unreachable"),
        (true, false) => (StatusCode::SERVICE_UNAVAILABLE, "temporal unreachable"),
        (true, true) => (StatusCode::OK, "ready"),
    }
}

/// The subscriptions' deadlines the worker keeps.
#[derive(clap::Args, Debug, Clone)]
pub struct DeadlineArgs {
    /// Days before a trial's end that its tenant's administrators are reminded.
    #[arg(long, env = "PSA_TRIAL_REMINDER_DAYS", default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(0..=365))]
    pub trial_reminder_days: u32,
    /// Days a payment may be overdue before the tenant is suspended (`payment overdue`).
    #[arg(long, env = "PSA_PAST_DUE_GRACE_DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(0..=365))]
    pub past_due_grace_days: u32,
}

impl DeadlineArgs {
    pub fn settings(&self) -> psa_workflows::deadlines::DeadlineSettings {
        psa_workflows::deadlines::DeadlineSettings {
            trial_reminder: chrono::Duration::days(i64::from(self.trial_reminder_days)),
            past_due_grace: chrono::Duration::days(i64::from(self.past_due_grace_days)),
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
    retention_days: u32,
    deadlines: &DeadlineArgs,
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
    psa_workflows::metrics::init();
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
    tokio::spawn(psa_workflows::worker::probe_dependencies(workflows.clone()));
    tokio::spawn(psa_workflows::worker::housekeeping(
        workflows.clone(),
        sweep_interval,
        psa_workflows::worker::Retention {
            store: store.clone(),
            keep: chrono::Duration::days(i64::from(retention_days)),
        },
    ));
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
                deadlines: deadlines.settings(),
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
