//! `psa customers`: the management tenant's customer records.

use clap::Subcommand;

use crate::config::{self, CliError};
use crate::temporal::TrackingArgs;

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

pub async fn customers(
    database_url: Option<&str>,
    command: CustomersCommand,
) -> Result<(), CliError> {
    let CustomersCommand::Reconcile {
        tracking,
        dry_run,
        json,
    } = command;
    if tracking.nineminds_tenant_id.is_none() {
        return Err(CliError::Usage("NINEMINDS_TENANT_ID is not set".into()));
    }
    let connections = psa_workflows::reconcile::CONCURRENCY as u32 + 1;
    let pool = config::pool(database_url, connections).await?;
    let delivery = psa_models::invitations::Delivery::without_mail(
        url::Url::parse(psa_models::invitations::DEFAULT_PUBLIC_URL).expect("a valid URL"),
    );
    let app = psa_app::App::new(pool, tracking.app_settings(), delivery);
    let report = psa_app::customers::reconcile(&app, &crate::app::operator(), dry_run).await?;
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
