//! `psa sso set|show|test|remove` and `psa sso domain add|verify|remove|list`: a tenant's
//! single sign-on, for operators helping its IT admin. Each command calls its operation in
//! `psa_app::sso` (the API's and the console's), audited as the operator's.

use std::io::BufRead;

use clap::Subcommand;
use psa_app::sso::{ConnectionView, Input};
use psa_models::TenantId;
use psa_models::sso::Domain;
use secrecy::SecretString;

use crate::config::{CliError, MailArgs};
use crate::temporal::WorkflowArgs;
use crate::webhooks::WebhookArgs;

#[derive(Subcommand)]
pub enum SsoCommand {
    /// Connect the tenant's OpenID Connect provider, or change its connection (the provider
    /// must answer discovery first). Prints the redirect URI to register at the provider.
    Set(SetArgs),
    /// The tenant's connection (never its client secret).
    Show(TenantArgs),
    /// Run the provider's discovery and say what it publishes.
    Test(TenantArgs),
    /// Remove the connection: its users sign in with passwords again (their SSO identities go).
    Remove(TenantArgs),
    /// The email domains the tenant claims, verified by a DNS TXT record.
    Domain {
        #[command(subcommand)]
        command: DomainCommand,
    },
}

#[derive(Subcommand)]
pub enum DomainCommand {
    /// Claim a domain: prints the TXT record to publish at it.
    Add(DomainArgs),
    /// Look the TXT record up (through `PSA_DNS_RESOLVER`, else the system's resolver).
    Verify(DomainArgs),
    /// Give a domain up.
    Remove(DomainArgs),
    /// The tenant's domains and whether each is verified.
    List(TenantArgs),
}

#[derive(clap::Args)]
pub struct TenantArgs {
    /// The tenant's id.
    #[arg(long, value_parser = crate::config::tenant_id)]
    tenant: TenantId,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args)]
pub struct DomainArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// The domain, such as example.com.
    domain: String,
}

#[derive(clap::Args)]
pub struct SetArgs {
    #[command(flatten)]
    tenant: TenantArgs,
    /// The provider's issuer URL (its discovery document is at
    /// `<issuer>/.well-known/openid-configuration`).
    #[arg(long)]
    issuer: String,
    /// What the provider calls this application.
    #[arg(long)]
    client_id: String,
    /// Read the client secret from the first line of standard input (never from the command
    /// line, where the process list and the shell's history would keep it). Without this or
    /// `--public-client`, a connection keeps the secret it has.
    #[arg(long, conflicts_with = "public_client")]
    client_secret_stdin: bool,
    /// No client secret: a public client, with PKCE only.
    #[arg(long)]
    public_client: bool,
    /// The scopes asked for, separated by spaces (openid among them).
    #[arg(long, default_value = "openid email profile")]
    scopes: String,
    /// The ID token's claim holding the person's email.
    #[arg(long, default_value = "email")]
    email_claim: String,
    /// The claim holding their first name.
    #[arg(long, default_value = "given_name")]
    first_name_claim: String,
    /// The claim holding their last name.
    #[arg(long, default_value = "family_name")]
    last_name_claim: String,
    /// Create a user at their first sign-in (otherwise only users already here get in).
    #[arg(long)]
    jit: bool,
    /// The role of a user created at their first sign-in.
    #[arg(long, default_value = "Technician")]
    jit_role: String,
    /// Refuse every other way in (password, authenticator app, passkey) but for the
    /// break-glass users.
    #[arg(long)]
    required: bool,
    /// A user who may still sign in with a password when `--required` (repeatable; at least
    /// one then).
    #[arg(long = "break-glass", value_name = "EMAIL")]
    break_glass: Vec<String>,
    /// Keep the connection but send no one to the provider.
    #[arg(long)]
    disabled: bool,
}

/// A missing connection or domain is the operator's to fix: exit 2.
fn not_found_is_usage(e: psa_models::Error) -> CliError {
    match e {
        psa_models::Error::NotFound { .. } => CliError::Usage(e.to_string()),
        other => other.into(),
    }
}

fn read_secret() -> Result<SecretString, CliError> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| CliError::Usage(format!("cannot read the client secret from stdin: {e}")))?;
    let secret = line.trim_end_matches(['\r', '\n']).to_owned();
    if secret.trim().is_empty() {
        return Err(CliError::Usage(
            "--client-secret-stdin: standard input held no secret".into(),
        ));
    }
    Ok(SecretString::from(secret))
}

fn print_connection(c: &ConnectionView, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(c).expect("a connection serialises")
        );
        return;
    }
    println!("issuer         {}", c.issuer);
    println!("client id      {}", c.client_id);
    println!(
        "client secret  {}",
        if c.has_client_secret {
            "set"
        } else {
            "none (PKCE only)"
        }
    );
    println!("scopes         {}", c.scopes.join(" "));
    println!(
        "claims         email={} first={} last={}",
        c.email_claim, c.first_name_claim, c.last_name_claim
    );
    println!(
        "new users      {}",
        if c.jit {
            format!("created at first sign-in as {}", c.jit_role)
        } else {
            "only users already here".into()
        }
    );
    println!(
        "required       {}",
        if c.required {
            format!("yes; break-glass: {}", c.break_glass.join(", "))
        } else {
            "no".into()
        }
    );
    println!("enabled        {}", if c.enabled { "yes" } else { "no" });
    println!("redirect URI   {}", c.redirect_uri);
}

fn print_domain(d: &Domain, json: bool) {
    if json {
        println!("{}", serde_json::to_string(d).expect("a domain serialises"));
    } else {
        match d.verified_at {
            Some(at) => println!("{}  verified {at}", d.domain),
            None => println!(
                "{}  not verified: publish TXT \"{}\"",
                d.domain, d.txt_record
            ),
        }
    }
}

pub async fn run(
    database_url: Option<&str>,
    wf: &WorkflowArgs,
    mail: &MailArgs,
    webhooks: &WebhookArgs,
    command: SsoCommand,
) -> Result<(), CliError> {
    let services = crate::app::Services {
        workflow: Some(wf),
        mail: Some(mail),
        webhooks: Some(webhooks.policy()),
        dns: Some(psa_app::dns::Dns {
            server: webhooks.dns_resolver,
        }),
        ..Default::default()
    };
    let who = crate::app::operator();
    match command {
        SsoCommand::Set(a) => {
            let client_secret = if a.public_client {
                Some(SecretString::from(String::new()))
            } else if a.client_secret_stdin {
                // Sealed with PSA_SECRET_KEY: without it, a setting to fix (exit 2).
                wf.key()?;
                Some(read_secret()?)
            } else {
                None
            };
            let app = crate::app::app(database_url, services).await?;
            let input = Input {
                issuer: a.issuer,
                client_id: a.client_id,
                client_secret,
                scopes: Some(a.scopes.split_whitespace().map(str::to_owned).collect()),
                email_claim: Some(a.email_claim),
                first_name_claim: Some(a.first_name_claim),
                last_name_claim: Some(a.last_name_claim),
                jit: a.jit,
                jit_role: Some(a.jit_role),
                required: a.required,
                break_glass: a.break_glass,
                enabled: !a.disabled,
            };
            let c = psa_app::sso::set(&app, &who, a.tenant.tenant, input)
                .await
                .map_err(not_found_is_usage)?;
            print_connection(&c, a.tenant.json);
        }
        SsoCommand::Show(t) => {
            let app = crate::app::app(database_url, services).await?;
            match psa_app::sso::show(&app, &who, t.tenant).await? {
                Some(c) => print_connection(&c, t.json),
                None if t.json => println!("null"),
                None => println!("tenant {} has no single sign-on connection", t.tenant),
            }
        }
        SsoCommand::Test(t) => {
            let app = crate::app::app(database_url, services).await?;
            let r = psa_app::sso::test(&app, &who, t.tenant)
                .await
                .map_err(not_found_is_usage)?;
            if t.json {
                println!(
                    "{}",
                    serde_json::to_string(&r).expect("a report serialises")
                );
            } else {
                println!("issuer         {}", r.issuer);
                println!("sign-in at     {}", r.authorization_endpoint);
                if let Some(token) = &r.token_endpoint {
                    println!("tokens at      {token}");
                }
                println!(
                    "keys at        {} ({} signing key(s))",
                    r.jwks_uri, r.signing_keys
                );
                if !r.scopes_supported.is_empty() {
                    println!("scopes         {}", r.scopes_supported.join(" "));
                }
            }
        }
        SsoCommand::Remove(t) => {
            let app = crate::app::app(database_url, services).await?;
            psa_app::sso::remove(&app, &who, t.tenant)
                .await
                .map_err(not_found_is_usage)?;
            if t.json {
                println!(
                    "{}",
                    serde_json::json!({"tenant_id": t.tenant, "removed": true})
                );
            } else {
                println!("single sign-on removed for tenant {}", t.tenant);
            }
        }
        SsoCommand::Domain { command } => {
            let app = crate::app::app(database_url, services).await?;
            match command {
                DomainCommand::Add(d) => {
                    let done = psa_app::sso::add_domain(&app, &who, d.tenant.tenant, &d.domain)
                        .await
                        .map_err(not_found_is_usage)?;
                    print_domain(&done, d.tenant.json);
                }
                DomainCommand::Verify(d) => {
                    let done = psa_app::sso::verify_domain(&app, &who, d.tenant.tenant, &d.domain)
                        .await
                        .map_err(not_found_is_usage)?;
                    print_domain(&done, d.tenant.json);
                }
                DomainCommand::Remove(d) => {
                    psa_app::sso::remove_domain(&app, &who, d.tenant.tenant, &d.domain)
                        .await
                        .map_err(not_found_is_usage)?;
                    if d.tenant.json {
                        println!(
                            "{}",
                            serde_json::json!({"domain": d.domain, "removed": true})
                        );
                    } else {
                        println!("{} given up", d.domain);
                    }
                }
                DomainCommand::List(t) => {
                    let list = psa_app::sso::domains(&app, &who, t.tenant).await?;
                    if t.json {
                        println!(
                            "{}",
                            serde_json::to_string(&list).expect("domains serialise")
                        );
                    } else if list.is_empty() {
                        println!("tenant {} claims no domain", t.tenant);
                    } else {
                        for d in &list {
                            print_domain(d, false);
                        }
                    }
                }
            }
        }
    }
    Ok(())
}
