//! `psa tenant create|status|list|sweep`, `psa customers reconcile` and `psa worker`; the
//! lifecycle commands are in `lifecycle`.

use std::io::IsTerminal;
use std::time::Duration;

use clap::Subcommand;
use psa_models::TenantId;
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
        /// The name its people sign in with (`/console/sign-in?org=SLUG`): lowercase a-z, 0-9
        /// and hyphens, 3-63 characters; derived from the name when absent.
        #[arg(long)]
        slug: Option<String>,
        /// The plan's code (an offered plan; default `standard`). `--license-count` is its
        /// seats.
        #[arg(long, env = "PSA_DEFAULT_PLAN")]
        plan: Option<String>,
        /// Print the workflow id and return at once.
        #[arg(long)]
        no_wait: bool,
        #[arg(long)]
        json: bool,
    },
    /// Put a tenant on a plan with some seats (absent: as many as the plan allows); a plan
    /// without a trial ends a trial. Audited; the event `tenant.plan_changed`.
    SetPlan {
        #[arg(value_parser = config::tenant_id)]
        tenant_id: TenantId,
        #[arg(long)]
        plan: String,
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..))]
        seats: Option<i32>,
        #[arg(long)]
        json: bool,
    },
    /// Extend a tenant's trial by some days (from its end, or from now when it has ended); a
    /// suspension for the trial's end is lifted. Audited; the event `tenant.trial_extended`.
    ExtendTrial {
        #[arg(value_parser = config::tenant_id)]
        tenant_id: TenantId,
        #[arg(long, value_parser = clap::value_parser!(i64).range(1..=365))]
        days: i64,
        #[arg(long)]
        json: bool,
    },
    /// Open a support session into a tenant: act as one of its users (default: its first
    /// administrator) for a reason and 1-60 minutes. Prints a bearer token (shown once) for the
    /// API; every write is audited with both identities. The events `support_session.started`
    /// and `.ended`.
    Support {
        #[arg(value_parser = config::tenant_id)]
        tenant_id: TenantId,
        #[arg(long)]
        reason: String,
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=60))]
        minutes: Option<u32>,
        /// The user's id (default: the tenant's first administrator).
        #[arg(long)]
        user: Option<uuid::Uuid>,
        #[arg(long)]
        json: bool,
    },
    /// A tenant's timeline, newest first: its events, its audit log and the management tenant's
    /// rows about it.
    Timeline {
        #[arg(value_parser = config::tenant_id)]
        tenant_id: TenantId,
        /// Only these sources: event, audit, platform (comma-separated).
        #[arg(long)]
        kind: Option<String>,
        /// 1-200.
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// A tenant's support sessions, newest first.
    SupportSessions {
        #[arg(value_parser = config::tenant_id)]
        tenant_id: TenantId,
        #[arg(long)]
        json: bool,
    },
    /// End a support session now.
    SupportEnd {
        #[arg(value_parser = config::tenant_id)]
        tenant_id: TenantId,
        support_session_id: uuid::Uuid,
    },
    /// Give a tenant a new slug (the name its people sign in with); audited.
    SetSlug {
        #[arg(value_parser = config::tenant_id)]
        tenant_id: TenantId,
        slug: String,
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
        #[arg(value_parser = crate::config::tenant_id)]
        tenant_id: TenantId,
        #[arg(long)]
        json: bool,
    },
    /// A tenant's status, reason, pending deletion and customer record.
    Show {
        #[arg(value_parser = crate::config::tenant_id)]
        tenant_id: TenantId,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// active -> suspended: its users are refused (sessions and API keys included) until it is
    /// reactivated; the customer company is tagged and marked.
    Suspend {
        #[arg(value_parser = crate::config::tenant_id)]
        tenant_id: TenantId,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// suspended -> active: the users' credentials work again.
    Reactivate {
        #[arg(value_parser = crate::config::tenant_id)]
        tenant_id: TenantId,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// -> canceled: access ends, an export is taken and the tenant is deleted after the grace
    /// period (`restore` stops it, `delete --confirm` deletes at once).
    Cancel {
        #[arg(value_parser = crate::config::tenant_id)]
        tenant_id: TenantId,
        #[arg(long)]
        reason: String,
        /// How long before deletion: 30d, 90d, 12h, 45s (default: the platform's, 30 days).
        #[arg(long, value_parser = crate::lifecycle::parse_grace)]
        grace: Option<chrono::Duration>,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// canceled -> where the cancel found it, before the deletion.
    Restore {
        #[arg(value_parser = crate::config::tenant_id)]
        tenant_id: TenantId,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// Delete a canceled tenant now instead of at its deadline (waits until it is deleted).
    Delete {
        #[arg(value_parser = crate::config::tenant_id)]
        tenant_id: TenantId,
        /// Required: deletion cannot be undone (an export was taken at the cancel).
        #[arg(long)]
        confirm: bool,
        /// Seconds to wait for the deletion.
        #[arg(long, default_value_t = 120)]
        wait_seconds: u64,
        #[arg(long)]
        json: bool,
    },
    /// Bring a tenant in from an export archive: restore a deleted one, move one from another
    /// installation (with its own ids), or clone one as a new tenant (--as-new). Checked whole
    /// before anything is written; written in one transaction.
    Import {
        /// The archive: an export's download (tar.gz), or a move's encrypted one.
        #[arg(long, value_name = "ARCHIVE")]
        file: std::path::PathBuf,
        /// A new tenant with new ids, its users without credentials (a sandbox copy).
        #[arg(long)]
        as_new: bool,
        /// The clone's name (default: the original's, with " (copy)").
        #[arg(long, requires = "as_new")]
        name: Option<String>,
        /// The tenant's slug, when the archive's is taken (a clone's default: a free one).
        #[arg(long)]
        slug: Option<String>,
        /// The age identity file (age-keygen's) that opens an encrypted archive.
        #[arg(long, value_name = "FILE")]
        identity: Option<std::path::PathBuf>,
        /// Mail each active user a link to set their password (a plain archive carries none).
        #[arg(long, conflicts_with = "as_new")]
        notify_users: bool,
        /// Mail each active user of the clone an invitation.
        #[arg(long, requires = "as_new")]
        invite_users: bool,
        /// Record the clone as a customer of the management tenant (a restored or moved tenant
        /// always is).
        #[arg(long, requires = "as_new")]
        track_customer: bool,
        /// Check the archive and say what the import would do; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[command(flatten)]
        tracking: TrackingArgs,
        #[arg(long)]
        json: bool,
    },
    /// Export the tenant's data (one JSON Lines file per table and a manifest, in a tar.gz) into
    /// the export store, and copy the archive to PATH.
    Export {
        #[arg(value_parser = crate::config::tenant_id)]
        tenant_id: TenantId,
        #[arg(long, value_name = "PATH")]
        out: std::path::PathBuf,
        /// For a move: encrypt the archive to this age public key (age1..., from age-keygen),
        /// and carry every column, passwords and second factors included; only the key's
        /// identity opens it (`psa tenant import --identity`).
        #[arg(long, value_name = "RECIPIENT")]
        encrypt_to: Option<String>,
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
    use crate::app::{Services, app};
    use crate::lifecycle as lc;
    // The lifecycle's commands: the platform's settings (when the command takes them) and
    // Temporal, connected only if an operation needs it.
    let lifecycle_app = |settings: Option<&TrackingArgs>| {
        crate::app::with_temporal(database_url, settings.cloned(), wf)
    };
    match command {
        TenantCommand::Show {
            tenant_id,
            tracking,
            json,
        } => lc::show(&lifecycle_app(Some(&tracking)).await?, tenant_id, json).await,
        TenantCommand::Suspend {
            tenant_id,
            reason,
            tracking,
            json,
        } => {
            let app = lifecycle_app(Some(&tracking)).await?;
            lc::suspend(&app, tenant_id, &reason, json).await
        }
        TenantCommand::Reactivate {
            tenant_id,
            tracking,
            json,
        } => lc::reactivate(&lifecycle_app(Some(&tracking)).await?, tenant_id, json).await,
        TenantCommand::Cancel {
            tenant_id,
            reason,
            grace,
            tracking,
            json,
        } => {
            let app = lifecycle_app(Some(&tracking)).await?;
            lc::cancel(&app, tenant_id, &reason, grace, json).await
        }
        TenantCommand::Restore {
            tenant_id,
            tracking,
            json,
        } => lc::restore(&lifecycle_app(Some(&tracking)).await?, tenant_id, json).await,
        TenantCommand::Delete {
            tenant_id,
            confirm,
            wait_seconds,
            json,
        } => {
            if !confirm {
                return Err(CliError::Usage(
                    "deleting a tenant cannot be undone: add --confirm".into(),
                ));
            }
            let app = lifecycle_app(None).await?;
            lc::delete(&app, tenant_id, Duration::from_secs(wait_seconds), json).await
        }
        TenantCommand::Import {
            file,
            as_new,
            name,
            slug,
            identity,
            notify_users,
            invite_users,
            track_customer,
            dry_run,
            tracking,
            json,
        } => {
            let identity = match identity {
                None => None,
                Some(path) => Some(secrecy::SecretString::from(
                    std::fs::read_to_string(&path).map_err(|e| {
                        CliError::Usage(format!("--identity {}: {e}", path.display()))
                    })?,
                )),
            };
            let options = psa_app::imports::ImportOptions {
                as_new,
                name,
                slug,
                identity,
                notify_users,
                invite_users,
                track_customer,
            };
            let services = Services {
                settings: Some(&tracking),
                workflow: Some(wf),
                mail: Some(mail),
                ..Default::default()
            };
            let mut app = app(database_url, services).await?;
            std::sync::Arc::make_mut(&mut app.settings).import_max_bytes = exports.import_max_bytes;
            lc::import(&app, &file, &options, dry_run, json).await
        }
        TenantCommand::Export {
            tenant_id,
            out,
            encrypt_to,
            json,
        } => {
            let encrypt_to = encrypt_to
                .as_deref()
                .map(|r| psa_models::exports::Recipient::parse(r, "--encrypt-to"))
                .transpose()?;
            // The workflow's settings carry PSA_SECRET_KEY, which opens the archive key.
            let services = Services {
                exports: Some(exports.store()?),
                workflow: Some(wf),
                ..Default::default()
            };
            let app = app(database_url, services).await?;
            lc::export(&app, tenant_id, &out, encrypt_to.as_ref(), json).await
        }
        TenantCommand::ResendInvite { tenant_id, json } => {
            let services = Services {
                mail: Some(mail),
                ..Default::default()
            };
            let app = app(database_url, services).await?;
            let done = psa_app::tenants::resend_admin_invite(
                &app,
                &crate::app::operator(),
                tenant_id,
                psa_app::users::LinkDelivery::MailOrShow,
            )
            .await?;
            crate::user::print_invited(tenant_id, &done, json);
            Ok(())
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
            slug,
            plan,
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
                slug: slug.as_deref(),
                plan: plan.as_deref(),
            })?;
            let key = idempotency_key
                .as_deref()
                .map(IdempotencyKey::parse)
                .transpose()?;
            // Connected first, so that an unreachable Temporal is said as such (exit 1) and a
            // malformed address is a usage error (exit 2).
            let app = app(database_url, Services::default()).await?;
            let workflows = wf.connect(app.pool.clone()).await?;
            let app = app.with_temporal(psa_app::Temporal::connected(
                workflows.clone(),
                wf.temporal_address.clone(),
                wf.temporal_namespace.clone(),
            ));
            let who = crate::app::operator();
            let (id, starter) = psa_app::tenants::provision(
                &app,
                &who,
                input,
                key.as_ref(),
                &who.actor().to_string(),
            )
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
        TenantCommand::SetPlan {
            tenant_id,
            plan,
            seats,
            json,
        } => {
            let app = lifecycle_app(None).await?;
            let sub =
                psa_app::plans::set_plan(&app, &crate::app::operator(), tenant_id, &plan, seats)
                    .await
                    .map_err(|e| match e {
                        psa_models::Error::NotFound { .. } => {
                            CliError::Usage(format!("no tenant {tenant_id} with a subscription"))
                        }
                        other => other.into(),
                    })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&sub).expect("a subscription serialises")
                );
            } else {
                lc::print_subscription(&sub);
            }
            Ok(())
        }
        TenantCommand::ExtendTrial {
            tenant_id,
            days,
            json,
        } => {
            let app = lifecycle_app(None).await?;
            let by = psa_models::deadlines::extension_days(days)?;
            let out = psa_app::plans::extend_trial(&app, &crate::app::operator(), tenant_id, by)
                .await
                .map_err(|e| match e {
                    psa_models::Error::NotFound { .. } => {
                        CliError::Usage(format!("no tenant {tenant_id} with a subscription"))
                    }
                    other => other.into(),
                })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"subscription": out.subscription,
                                       "reactivated": out.reactivated})
                );
            } else {
                lc::print_subscription(&out.subscription);
                if out.reactivated {
                    println!("reactivated (it had been suspended because its trial ended)");
                }
            }
            Ok(())
        }
        TenantCommand::Support {
            tenant_id,
            reason,
            minutes,
            user,
            json,
        } => {
            let app = lifecycle_app(None).await?;
            let req = psa_models::support::Request {
                user: user.map(psa_models::UserId),
                reason,
                minutes,
            };
            let opened =
                psa_app::support::open(&app, &crate::app::operator(), tenant_id, &req).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"token": opened.token.expose_secret(),
                                       "support_session": opened.session})
                );
            } else {
                print_support(std::slice::from_ref(&opened.session));
                println!(
                    "token        {} (shown once; a bearer token for the API until {})",
                    opened.token.expose_secret(),
                    opened.session.ends_at.format("%H:%M UTC")
                );
            }
            Ok(())
        }
        TenantCommand::Timeline {
            tenant_id,
            kind,
            limit,
            json,
        } => {
            let sources =
                psa_models::timeline::Source::parse_list(kind.as_deref().unwrap_or_default())?;
            let app = lifecycle_app(None).await?;
            let page = psa_app::tenants::timeline(
                &app,
                &crate::app::operator(),
                tenant_id,
                &sources,
                None,
                Some(limit),
            )
            .await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&page).expect("a timeline serialises")
                );
            } else {
                for e in &page.items {
                    println!(
                        "{}  {:<8} {:<32} {} {}",
                        e.at.format("%Y-%m-%d %H:%M:%S"),
                        e.source.as_str(),
                        e.what,
                        e.who,
                        e.entity
                    );
                }
            }
            Ok(())
        }
        TenantCommand::SupportSessions { tenant_id, json } => {
            let app = lifecycle_app(None).await?;
            let list = psa_app::support::list(&app, &crate::app::operator(), tenant_id).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&list).expect("support sessions serialise")
                );
            } else if list.is_empty() {
                println!("no support sessions");
            } else {
                print_support(&list);
            }
            Ok(())
        }
        TenantCommand::SupportEnd {
            tenant_id,
            support_session_id,
        } => {
            let app = lifecycle_app(None).await?;
            let s =
                psa_app::support::end(&app, &crate::app::operator(), tenant_id, support_session_id)
                    .await?;
            print_support(std::slice::from_ref(&s));
            Ok(())
        }
        TenantCommand::SetSlug {
            tenant_id,
            slug,
            json,
        } => {
            let app = lifecycle_app(None).await?;
            let details =
                psa_app::tenants::set_slug(&app, &crate::app::operator(), tenant_id, &slug).await?;
            lc::print_details(&details, json);
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
            let mut conn = pool.acquire().await?;
            let page = provisioning::list_tenants(
                &mut conn,
                customer_tag_name.trim(),
                &provisioning::TenantListFilter {
                    customer_tracking: tracking,
                    name_contains: name,
                    created_after,
                    created_before,
                    status,
                    ..Default::default()
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
                    "{:<36}  {:<24}  {:<20}  {:<9}  {:<10}  {:<11}  {:<50}  NAME",
                    "TENANT", "SLUG", "CREATED", "STATUS", "CUSTOMER", "PROVISIONED", "WORKFLOW"
                );
                for t in &page.items {
                    let created = t.created_at.format("%Y-%m-%d %H:%M:%S").to_string();
                    println!(
                        "{:<36}  {:<24}  {:<20}  {:<9}  {:<10}  {:<11}  {:<50}  {}",
                        t.tenant_id,
                        t.slug,
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

/// Support sessions, one line each.
fn print_support(list: &[psa_models::support::SupportSession]) {
    for s in list {
        let state = s.state_label();
        println!(
            "{}  {}  by {} as {}  {}  ({})",
            s.support_session_id,
            s.started_at.format("%Y-%m-%d %H:%M UTC"),
            s.operator,
            s.user_email,
            state,
            s.reason
        );
    }
}
