//! `psa plan create|list|update|retire`: the platform's plans, for operators. Each command
//! calls its operation in `psa_app::plans`, audited as the operator's.

use clap::Subcommand;
use psa_models::plans::{NewPlan, Plan, PlanPatch};

use crate::config::CliError;

#[derive(Subcommand)]
pub enum PlanCommand {
    /// Make a plan.
    Create {
        /// Lowercase letters, digits and `-`: `pro`, `team-2027`.
        code: String,
        #[arg(long)]
        name: String,
        /// The most seats a tenant on it may have; absent: unlimited.
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1_000_000))]
        seat_limit: Option<i32>,
        /// Days a new tenant tries it before paying; 0: no trial.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(i32).range(0..=365))]
        trial_days: i32,
        /// A feature it includes (repeatable).
        #[arg(long = "feature")]
        features: Vec<String>,
        /// A billing system's price id that means this plan (repeatable).
        #[arg(long = "price")]
        prices: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// The plans, offered ones first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Change a plan: what is given changes.
    Update {
        code: String,
        #[arg(long)]
        name: Option<String>,
        #[arg(long, value_parser = clap::value_parser!(i32).range(1..=1_000_000),
              conflicts_with = "unlimited")]
        seat_limit: Option<i32>,
        /// No seat limit.
        #[arg(long)]
        unlimited: bool,
        #[arg(long, value_parser = clap::value_parser!(i32).range(0..=365))]
        trial_days: Option<i32>,
        /// The features (repeatable; replaces them).
        #[arg(long = "feature")]
        features: Option<Vec<String>>,
        /// The price ids (repeatable; replaces them).
        #[arg(long = "price")]
        prices: Option<Vec<String>>,
        #[arg(long)]
        json: bool,
    },
    /// Retire a plan: its tenants keep it, no new tenant gets it.
    Retire {
        code: String,
        #[arg(long)]
        json: bool,
    },
}

fn print_plan(p: &Plan, json: bool) {
    if json {
        println!("{}", serde_json::to_string(p).expect("a plan serialises"));
        return;
    }
    println!(
        "{:<16} {:<24} seats {:<10} trial {:>3} d  {}{}",
        p.code,
        p.name,
        p.seat_limit
            .map_or_else(|| "unlimited".to_owned(), |n| n.to_string()),
        p.trial_days,
        if p.active { "offered" } else { "retired" },
        if p.features.is_empty() {
            String::new()
        } else {
            format!("  [{}]", p.features.join(", "))
        }
    );
}

/// A missing plan is the operator's mistake: exit 2.
fn usage(e: psa_models::Error) -> CliError {
    match e {
        psa_models::Error::NotFound { .. } | psa_models::Error::Conflict { .. } => {
            CliError::Usage(e.to_string())
        }
        other => other.into(),
    }
}

pub async fn run(database_url: Option<&str>, command: PlanCommand) -> Result<(), CliError> {
    let app = crate::app::app(database_url, Default::default()).await?;
    let who = crate::app::operator();
    match command {
        PlanCommand::Create {
            code,
            name,
            seat_limit,
            trial_days,
            features,
            prices,
            json,
        } => {
            let plan = psa_app::plans::create(
                &app,
                &who,
                &NewPlan {
                    code,
                    name,
                    seat_limit,
                    trial_days,
                    features,
                    billing_price_ids: prices,
                },
            )
            .await
            .map_err(usage)?;
            print_plan(&plan, json);
        }
        PlanCommand::List { json } => {
            let plans = psa_app::plans::list(&app, &who).await?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string(&plans).expect("plans serialise")
                );
            } else {
                for p in &plans {
                    print_plan(p, false);
                }
            }
        }
        PlanCommand::Update {
            code,
            name,
            seat_limit,
            unlimited,
            trial_days,
            features,
            prices,
            json,
        } => {
            let patch = PlanPatch {
                name,
                seat_limit: if unlimited {
                    Some(None)
                } else {
                    seat_limit.map(Some)
                },
                trial_days,
                features,
                billing_price_ids: prices,
                active: None,
            };
            let plan = psa_app::plans::update(&app, &who, &code, &patch)
                .await
                .map_err(usage)?;
            print_plan(&plan, json);
        }
        PlanCommand::Retire { code, json } => {
            let patch = PlanPatch {
                active: Some(false),
                ..Default::default()
            };
            let plan = psa_app::plans::update(&app, &who, &code, &patch)
                .await
                .map_err(usage)?;
            print_plan(&plan, json);
        }
    }
    Ok(())
}
