//! `psa events list` and `psa webhooks add|list|remove|enable|disable|rotate-secret|test|
//! deliveries|retry`: the platform's events and the endpoints they are delivered to
//! (docs/events.md). Changes are audited in the management tenant as `cli:<login>`.

use std::time::Duration;

use clap::{Args, Subcommand};
use psa_models::db::PageRequest;
use psa_models::events::EventType;
use psa_models::webhooks::{self, AddressPolicy, Delivery, DeliveryDetails, Endpoint, Schedule};
use secrecy::ExposeSecret;
use uuid::Uuid;

use crate::config::CliError;
use crate::temporal::WorkflowArgs;

/// Webhook delivery settings (the worker's dispatcher; `psa serve` and `psa webhooks` check
/// endpoint URLs with the same address policy).
#[derive(Args, Clone, Debug)]
pub struct WebhookArgs {
    /// Allow endpoints on private, loopback and link-local addresses (development and tests
    /// only: in production they would reach services inside the platform's network).
    #[arg(long, env = "PSA_WEBHOOK_ALLOW_PRIVATE", default_value_t = false, global = true,
          action = clap::ArgAction::Set)]
    pub webhook_allow_private: bool,
    /// The DNS server the platform's own lookups go to (`IP:PORT`; verifying a tenant's email
    /// domains). Unset: the system's resolver.
    #[arg(long, env = "PSA_DNS_RESOLVER", global = true, value_name = "IP:PORT")]
    pub dns_resolver: Option<std::net::SocketAddr>,
    /// The most one delivery attempt may take, in seconds.
    #[arg(long, env = "PSA_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 10, global = true,
          value_parser = clap::value_parser!(u64).range(1..=60))]
    pub webhook_timeout_seconds: u64,
    /// Delivery attempts in flight at once, per worker.
    #[arg(long, env = "PSA_WEBHOOK_CONCURRENCY", default_value_t = 16, global = true,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub webhook_concurrency: u64,
    /// Seconds between a failed attempt and the next, comma-separated; after the last, the
    /// delivery is failed. Each delay gets up to 20% of jitter.
    #[arg(long, env = "PSA_WEBHOOK_RETRY_DELAYS", default_value = "5,300,1800,7200,18000,36000,36000",
          global = true, value_parser = parse_delays)]
    pub webhook_retry_delays: DelayList,
    /// An endpoint whose every attempt has failed for this many hours is disabled.
    #[arg(long, env = "PSA_WEBHOOK_DISABLE_AFTER_HOURS", default_value_t = 120, global = true,
          value_parser = clap::value_parser!(u64).range(1..=8760))]
    pub webhook_disable_after_hours: u64,
    /// Whether this worker dispatches webhook deliveries.
    #[arg(long, env = "PSA_WEBHOOK_DISPATCH", default_value_t = true, global = true,
          action = clap::ArgAction::Set)]
    pub webhook_dispatch: bool,
}

#[derive(Clone, Debug)]
pub struct DelayList(pub Vec<Duration>);

fn parse_delays(raw: &str) -> Result<DelayList, String> {
    let mut delays = Vec::new();
    for part in raw.split(',').map(str::trim) {
        let s: u64 = part.parse().map_err(|_| {
            format!("PSA_WEBHOOK_RETRY_DELAYS must be seconds separated by commas, not {raw:?}")
        })?;
        if s == 0 || s > 7 * 86_400 {
            return Err("each PSA_WEBHOOK_RETRY_DELAYS delay must be 1 s to 7 days".into());
        }
        delays.push(Duration::from_secs(s));
    }
    if delays.len() > 30 {
        return Err("PSA_WEBHOOK_RETRY_DELAYS has at most 30 delays".into());
    }
    Ok(DelayList(delays))
}

impl WebhookArgs {
    pub fn dns(&self) -> psa_app::dns::Dns {
        psa_app::dns::Dns {
            server: self.dns_resolver,
        }
    }

    pub fn policy(&self) -> AddressPolicy {
        AddressPolicy {
            allow_private: self.webhook_allow_private,
        }
    }

    pub fn dispatcher(
        &self,
        key: psa_workflows::secret::SecretKey,
    ) -> psa_workflows::webhooks::DispatcherConfig {
        psa_workflows::webhooks::DispatcherConfig {
            policy: self.policy(),
            attempt_timeout: Duration::from_secs(self.webhook_timeout_seconds),
            concurrency: usize::try_from(self.webhook_concurrency).unwrap_or(16),
            schedule: Schedule {
                delays: self.webhook_retry_delays.0.clone(),
                disable_after: Duration::from_secs(self.webhook_disable_after_hours * 3600),
            },
            ..psa_workflows::webhooks::DispatcherConfig::new(key)
        }
    }
}

#[derive(Subcommand)]
pub enum WebhooksCommand {
    /// Add an endpoint; prints its signing secret, this once.
    Add {
        /// Where deliveries are posted (https://...).
        url: String,
        /// Event types to deliver, comma-separated (default: all).
        #[arg(long)]
        types: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The endpoints.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove an endpoint with its deliveries.
    Remove { endpoint: Uuid },
    /// Enable an endpoint (clears its failure record; pending deliveries go out again).
    Enable {
        endpoint: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Disable an endpoint: it is sent nothing (its pending deliveries wait; events written
    /// meanwhile are not queued for it: `psa events list` has them).
    Disable {
        endpoint: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// A new signing secret, printed this once; the previous one signs too for 24 hours.
    RotateSecret {
        endpoint: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// Send a webhook_endpoint.test event to the endpoint (a running worker delivers it).
    Test {
        endpoint: Uuid,
        #[arg(long)]
        json: bool,
    },
    /// The endpoint's deliveries, newest first; or one delivery with every attempt.
    Deliveries {
        endpoint: Uuid,
        /// One delivery, with its attempts.
        #[arg(long)]
        delivery: Option<Uuid>,
        /// pending, delivered or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Attempt a delivery again now.
    Retry {
        endpoint: Uuid,
        delivery: Uuid,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) {
    println!(
        "{}",
        serde_json::to_string(v).expect("JSON values serialise")
    );
}

fn print_endpoint(e: &Endpoint) {
    println!("endpoint    {}", e.endpoint_id);
    println!("url         {}", e.url);
    if !e.description.is_empty() {
        println!("description {}", e.description);
    }
    println!(
        "types       {}",
        if e.event_types.is_empty() {
            "all".to_owned()
        } else {
            e.event_types.join(", ")
        }
    );
    println!(
        "enabled     {}{}",
        e.enabled,
        e.disabled_reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    );
    if let Some(since) = e.failing_since {
        println!("failing     since {}", since.to_rfc3339());
    }
}

fn print_delivery(d: &Delivery) {
    println!(
        "{}  {:<9} {:<26} attempts {:<2} {}{}",
        d.delivery_id,
        format!("{:?}", d.status).to_lowercase(),
        d.event_type,
        d.attempts,
        d.last_response_status
            .map(|s| format!("HTTP {s}"))
            .unwrap_or_default(),
        d.last_error
            .as_deref()
            .filter(|_| d.last_response_status.is_none())
            .unwrap_or_default()
    );
}

fn print_details(d: &DeliveryDetails, json: bool) {
    if json {
        return print_json(d);
    }
    print_delivery(&d.delivery);
    for a in &d.attempt_log {
        println!(
            "  {}  {:>5} ms  {}",
            a.attempted_at.to_rfc3339(),
            a.latency_ms,
            match (a.response_status, a.error.as_deref()) {
                (Some(s), _) => format!("HTTP {s}"),
                (None, Some(e)) => e.to_owned(),
                (None, None) => String::new(),
            }
        );
    }
}

pub async fn webhooks(
    database_url: Option<&str>,
    wf: &WorkflowArgs,
    args: &WebhookArgs,
    command: WebhooksCommand,
) -> Result<(), CliError> {
    let services = crate::app::Services {
        workflow: Some(wf),
        webhooks: Some(args.policy()),
        ..Default::default()
    };
    let app = crate::app::app(database_url, services).await?;
    let who = crate::app::operator();
    let enable = |enabled: bool| webhooks::EndpointPatch {
        enabled: Some(enabled),
        ..Default::default()
    };
    match command {
        WebhooksCommand::Add {
            url,
            types,
            description,
            json,
        } => {
            // Without the key nothing can be sealed: a setting to fix (exit 2).
            wf.key()?;
            let event_types = types
                .as_deref()
                .map(|t| EventType::parse_list(t, "--types"))
                .transpose()?
                .unwrap_or_default()
                .into_iter()
                .map(|t| t.as_str().to_owned())
                .collect();
            let made = psa_app::webhooks::create(
                &app,
                &who,
                &webhooks::NewEndpoint {
                    url,
                    description,
                    event_types,
                },
            )
            .await?;
            print_with_secret(&made.endpoint, made.secret.expose_secret(), json);
        }
        WebhooksCommand::List { json } => {
            let mut all = Vec::new();
            let mut cursor = None;
            loop {
                let page = psa_app::webhooks::list(
                    &app,
                    &who,
                    &PageRequest {
                        limit: Some(200),
                        cursor,
                    },
                )
                .await?;
                all.extend(page.items);
                match page.next_cursor {
                    Some(c) => cursor = Some(c),
                    None => break,
                }
            }
            if json {
                print_json(&all);
            } else if all.is_empty() {
                println!("no webhook endpoints (add one with `psa webhooks add URL`)");
            } else {
                for e in &all {
                    print_endpoint(e);
                    println!();
                }
            }
        }
        WebhooksCommand::Remove { endpoint } => {
            psa_app::webhooks::delete(&app, &who, endpoint).await?;
            println!("removed endpoint {endpoint}");
        }
        WebhooksCommand::Enable { endpoint, json } => {
            let e = psa_app::webhooks::update(&app, &who, endpoint, &enable(true)).await?;
            if json {
                print_json(&e)
            } else {
                print_endpoint(&e)
            }
        }
        WebhooksCommand::Disable { endpoint, json } => {
            let e = psa_app::webhooks::update(&app, &who, endpoint, &enable(false)).await?;
            if json {
                print_json(&e)
            } else {
                print_endpoint(&e)
            }
        }
        WebhooksCommand::RotateSecret { endpoint, json } => {
            wf.key()?;
            let made = psa_app::webhooks::rotate(&app, &who, endpoint).await?;
            print_with_secret(&made.endpoint, made.secret.expose_secret(), json);
        }
        WebhooksCommand::Test { endpoint, json } => {
            let d = psa_app::webhooks::send_test(&app, &who, endpoint).await?;
            if json {
                print_json(&d);
            } else {
                println!(
                    "test delivery {} queued: a running `psa worker` posts it; see \
                     `psa webhooks deliveries {endpoint} --delivery {}`",
                    d.delivery.delivery_id, d.delivery.delivery_id
                );
            }
        }
        WebhooksCommand::Deliveries {
            endpoint,
            delivery,
            status,
            limit,
            json,
        } => {
            if let Some(id) = delivery {
                let d = psa_app::webhooks::delivery(&app, &who, endpoint, id).await?;
                print_details(&d, json);
                return Ok(());
            }
            let status = status
                .as_deref()
                .map(webhooks::DeliveryStatus::parse)
                .transpose()?;
            let page = psa_app::webhooks::deliveries(
                &app,
                &who,
                endpoint,
                status,
                &PageRequest {
                    limit: Some(limit),
                    cursor: None,
                },
            )
            .await?;
            if json {
                print_json(&page);
            } else if page.items.is_empty() {
                println!("no deliveries");
            } else {
                page.items.iter().for_each(print_delivery);
            }
        }
        WebhooksCommand::Retry {
            endpoint,
            delivery,
            json,
        } => {
            let d = psa_app::webhooks::retry(&app, &who, endpoint, delivery).await?;
            print_details(&d, json);
        }
    }
    Ok(())
}

fn print_with_secret(e: &Endpoint, secret: &str, json: bool) {
    if json {
        let mut v = serde_json::to_value(e).expect("JSON values serialise");
        v["secret"] = secret.into();
        print_json(&v);
        return;
    }
    print_endpoint(e);
    println!("secret      {secret}");
    println!("            (shown once: receivers verify the webhook-signature header with it)");
}
