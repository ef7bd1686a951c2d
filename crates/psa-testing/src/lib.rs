//! Test harness: every test gets its own PostgreSQL database, so tests run in parallel, in any
//! order, in any process (nextest runs each test in its own).
//!
//! The server is `DATABASE_URL`'s if set, else the local one (`postgres://postgres@127.0.0.1:5432`).
//! Migrations run once per schema version into a template database (`psa_tpl_<hash>`, built under
//! an advisory lock so concurrent processes build it once); each test database is a copy of it
//! (`CREATE DATABASE .. TEMPLATE`), which takes milliseconds. Test databases are dropped when the
//! `TestDb` is dropped, also when the test panics; set `PSA_TEST_KEEP_DB=1` to keep them.
//!
//! There is no fallback: if the server cannot be reached the test fails, loudly.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// The server's options, pointed at its maintenance database.
pub fn server_options() -> PgConnectOptions {
    let url = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER.to_owned());
    let opts: PgConnectOptions = url
        .parse()
        .unwrap_or_else(|e| panic!("DATABASE_URL is not a PostgreSQL URL: {e}"));
    opts.database("postgres")
}

async fn maintenance() -> PgConnection {
    server_options().connect().await.unwrap_or_else(|e| {
        panic!(
            "cannot connect to PostgreSQL ({e}); start the local server or set DATABASE_URL \
             (tests never skip for a missing server)"
        )
    })
}

fn template_name(migrator: &Migrator) -> String {
    let mut h = DefaultHasher::new();
    for m in migrator.iter() {
        m.version.hash(&mut h);
        m.checksum.hash(&mut h);
    }
    format!("psa_tpl_{:016x}", h.finish())
}

async fn ensure_template(migrator: &Migrator) -> String {
    let name = template_name(migrator);
    let mut conn = maintenance().await;
    sqlx::query("SELECT pg_advisory_lock(hashtext('psa.test_template'))")
        .execute(&mut conn)
        .await
        .expect("advisory lock");
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await
            .expect("query pg_database");
    if !exists {
        let building = format!("{name}_building");
        sqlx::query(&format!("DROP DATABASE IF EXISTS {building} WITH (FORCE)"))
            .execute(&mut conn)
            .await
            .expect("drop stale template");
        sqlx::query(&format!("CREATE DATABASE {building}"))
            .execute(&mut conn)
            .await
            .expect("create template");
        {
            let mut db = server_options()
                .database(&building)
                .connect()
                .await
                .expect("connect to template");
            migrator
                .run(&mut db)
                .await
                .expect("migrations apply to a fresh database");
            db.close().await.expect("close template connection");
        }
        sqlx::query(&format!("ALTER DATABASE {building} RENAME TO {name}"))
            .execute(&mut conn)
            .await
            .expect("publish template");
    }
    sqlx::query("SELECT pg_advisory_unlock(hashtext('psa.test_template'))")
        .execute(&mut conn)
        .await
        .expect("advisory unlock");
    let _ = conn.close().await;
    name
}

/// A private, migrated database for one test.
pub struct TestDb {
    pub pool: PgPool,
    pub name: String,
}

impl TestDb {
    /// A new database with `migrator`'s schema.
    pub async fn new(migrator: &Migrator) -> TestDb {
        Self::with_pool_size(migrator, 8).await
    }

    pub async fn with_pool_size(migrator: &Migrator, max_connections: u32) -> TestDb {
        let template = ensure_template(migrator).await;
        Self::create(Some(&template), max_connections).await
    }

    /// A new database without any schema (to test migrations themselves).
    pub async fn empty() -> TestDb {
        Self::create(None, 2).await
    }

    async fn create(template: Option<&str>, max_connections: u32) -> TestDb {
        let name = format!("psa_test_{}", uuid::Uuid::new_v4().simple());
        let from = template
            .map(|t| format!(" TEMPLATE {t}"))
            .unwrap_or_default();
        let mut conn = maintenance().await;
        // A concurrent template build holds connections to it only under the lock we released;
        // CREATE DATABASE may still see a closing connection, so retry briefly.
        let mut tries = 0;
        loop {
            match sqlx::query(&format!("CREATE DATABASE {name}{from}"))
                .execute(&mut conn)
                .await
            {
                Ok(_) => break,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("create test database: {e}"),
            }
        }
        let _ = conn.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(server_options().database(&name))
            .await
            .expect("connect to test database");
        TestDb { pool, name }
    }

    /// Connection options for this database (for a server under test, a CLI run...).
    pub fn options(&self) -> PgConnectOptions {
        server_options().database(&self.name)
    }

    /// A URL for this database: the server's URL (`DATABASE_URL`, with its password and query
    /// parameters such as `sslmode`) with this database's name.
    pub fn url(&self) -> String {
        let server = std::env::var("DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER.to_owned());
        let mut url =
            url::Url::parse(&server).unwrap_or_else(|e| panic!("DATABASE_URL is not a URL: {e}"));
        url.set_path(&format!("/{}", self.name));
        url.to_string()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if std::env::var_os("PSA_TEST_KEEP_DB").is_some() {
            return;
        }
        let name = self.name.clone();
        // Drop runs inside the test's runtime, which cannot be blocked on; a helper thread with
        // its own runtime does the work. The pool is not closed (its I/O belongs to the blocked
        // runtime): FORCE ends its connections server-side.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            if let Ok(rt) = rt {
                rt.block_on(async move {
                    if let Ok(mut conn) = server_options().connect().await {
                        let _ =
                            sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                                .execute(&mut conn)
                                .await;
                    }
                });
            }
        })
        .join();
    }
}

/// A Temporal dev server for tests: `TEMPORAL_ADDRESS`'s if set, else one started for this
/// process (see `psa_workflows::dev_server`) and stopped on drop.
pub struct TestTemporal {
    pub address: String,
    _server: Option<psa_workflows::dev_server::DevServer>,
}

/// The `temporal` CLI: `TEMPORAL_CLI`, `temporal` on PATH, or the project-local install.
pub fn temporal_cli() -> std::path::PathBuf {
    let local = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/temporal-venv/bin/temporal");
    psa_workflows::dev_server::find_cli(&[local]).unwrap_or_else(|| "temporal".into())
}

impl TestTemporal {
    pub async fn start() -> TestTemporal {
        let cli = temporal_cli();
        if let Ok(address) = std::env::var("TEMPORAL_ADDRESS") {
            assert!(
                psa_workflows::dev_server::wait_healthy(&cli, &address).await,
                "the Temporal server at TEMPORAL_ADDRESS={address} is not healthy"
            );
            return TestTemporal {
                address,
                _server: None,
            };
        }
        let server = psa_workflows::dev_server::DevServer::start(&cli)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{e}; install the Temporal CLI (scripts/test does) or set TEMPORAL_ADDRESS \
                 (tests never skip for a missing server)"
                )
            });
        TestTemporal {
            address: server.address.clone(),
            _server: Some(server),
        }
    }
}

/// Test certificates made with `openssl`: a CA (`<name>-ca.pem`) and a server certificate for
/// 127.0.0.1 signed by it (`<name>-server.pem`, key `<name>-server.key`), in `dir`.
pub fn make_certs(dir: &std::path::Path, name: &str) {
    use std::process::Command;
    let run = |cmd: &mut Command| {
        let out = cmd.output().expect("openssl runs");
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let p = |f: &str| dir.join(format!("{name}-{f}"));
    run(Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
        ])
        .arg(format!("/CN={name} test CA"))
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")));
    run(Command::new("openssl")
        .args([
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")));
    std::fs::write(p("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-CAcreateserial")
        .arg("-extfile")
        .arg(p("ext"))
        .arg("-out")
        .arg(p("server.pem")));
}

/// A real SMTP server on loopback for the mail tests: aiosmtpd (PyPI), storing every message it
/// receives in a maildir that the test reads. `PSA_TEST_SMTP_PYTHON` names a Python with
/// aiosmtpd (scripts/test installs one into .tools/); a missing one fails the test loudly.
pub struct SmtpSink {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

fn smtp_python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("PSA_TEST_SMTP_PYTHON") {
        return p.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/smtp-venv/bin/python")
}

impl SmtpSink {
    pub async fn start() -> SmtpSink {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir = std::env::temp_dir().join(format!("psa-smtp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("maildir");
        let mut sink = SmtpSink {
            port,
            dir,
            child: None,
        };
        sink.restart().await;
        sink
    }

    /// `smtp://127.0.0.1:PORT` (plain SMTP, allowed to loopback only).
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Stops the server: the port refuses connections (a mail server that is down).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server (again) on the same port and maildir.
    pub async fn restart(&mut self) {
        self.stop();
        let python = smtp_python();
        let child = std::process::Command::new(&python)
            .args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{}", self.port))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(self.dir.join("mail"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the SMTP test server with {} ({e}): run scripts/test, which \
                     installs aiosmtpd, or set PSA_TEST_SMTP_PYTHON (tests never skip)",
                    python.display()
                )
            });
        self.child = Some(child);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the SMTP test server did not listen on port {}", self.port);
    }

    /// Every message received so far, raw (RFC 5322), oldest first.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, std::path::PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|d| std::fs::read_dir(self.dir.join("mail").join(d)).ok())
            .flatten()
            .filter_map(|e| e.ok())
            .map(|e| {
                let modified = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (modified, e.path())
            })
            .collect();
        files.sort();
        files
            .into_iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Waits (up to `timeout`) until at least `n` messages arrived; returns them all.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> Vec<String> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let m = self.messages();
            if m.len() >= n || std::time::Instant::now() > deadline {
                return m;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real webhook receiver on loopback for the event tests: `receiver/webhook_receiver.py`,
/// which verifies every delivery's signature with the Standard Webhooks reference library
/// (PyPI `standardwebhooks`), records it, and answers 500 to the first `fail_first` attempts of
/// each event when told. `PSA_TEST_WEBHOOK_PYTHON` names a Python with that library
/// (scripts/test installs one into .tools/); a missing one fails the test loudly.
pub struct WebhookReceiver {
    pub port: u16,
    dir: std::path::PathBuf,
    child: Option<std::process::Child>,
}

/// One request the receiver got.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Received {
    /// `webhook-id`.
    pub id: String,
    /// Which request for this id it was (1 the first).
    pub attempt: u32,
    /// Whether the signature verified with one of the receiver's secrets.
    pub verified: bool,
    /// What the receiver answered.
    pub status: u16,
    pub body: serde_json::Value,
    pub headers: std::collections::HashMap<String, String>,
}

impl Received {
    pub fn event_type(&self) -> &str {
        self.body["type"].as_str().unwrap_or_default()
    }
}

fn webhook_python() -> std::path::PathBuf {
    if let Ok(p) = std::env::var("PSA_TEST_WEBHOOK_PYTHON") {
        return p.into();
    }
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.tools/webhook-venv/bin/python")
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let dir =
            std::env::temp_dir().join(format!("psa-webhooks-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("receiver dir");
        let python = webhook_python();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("receiver/webhook_receiver.py");
        let child = std::process::Command::new(&python)
            .arg(&script)
            .arg(&dir)
            .arg(port.to_string())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start the webhook test receiver with {} ({e}): run scripts/test, \
                     which installs standardwebhooks, or set PSA_TEST_WEBHOOK_PYTHON (tests \
                     never skip)",
                    python.display()
                )
            });
        let receiver = WebhookReceiver {
            port,
            dir,
            child: Some(child),
        };
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return receiver;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("the webhook test receiver did not listen on port {port}");
    }

    /// `http://127.0.0.1:PORT/hooks`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks", self.port)
    }

    /// The secrets a delivery may verify with (the endpoint's, and during a rotation both).
    pub fn set_secrets(&self, secrets: &[&str]) {
        std::fs::write(self.dir.join("secret"), secrets.join("\n")).expect("secret file");
    }

    /// Answer 500 to the first `n` attempts of each event.
    pub fn fail_first(&self, n: u32) {
        std::fs::write(self.dir.join("fail_first"), n.to_string()).expect("fail_first file");
    }

    /// Wait this long before answering each request.
    pub fn delay(&self, seconds: f64) {
        std::fs::write(self.dir.join("delay"), seconds.to_string()).expect("delay file");
    }

    /// Every request so far, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        let text = std::fs::read_to_string(self.dir.join("received.jsonl")).unwrap_or_default();
        // Complete records only: the receiver may be appending one right now.
        let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| serde_json::from_str(l).expect("a receiver record"))
            .collect()
    }

    /// Waits (up to `timeout`) until `done` holds for the requests received; returns them.
    pub async fn wait_until(
        &self,
        timeout: std::time::Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let r = self.received();
            if done(&r) || std::time::Instant::now() > deadline {
                return r;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The text part of a mailed message, decoded.
pub fn text_of(raw: &str) -> Option<String> {
    let parsed = mailparse::parse_mail(raw.as_bytes()).ok()?;
    let mut parts = vec![&parsed];
    let mut i = 0;
    while i < parts.len() {
        let p = parts[i];
        parts.extend(p.subparts.iter());
        i += 1;
    }
    parts
        .iter()
        .find(|p| p.ctype.mimetype == "text/plain")?
        .get_body()
        .ok()
}

/// The link in a mailed message (`<public>/invite#...` or `/reset-password#...`), read from its
/// text part.
pub fn link_in(raw: &str) -> Option<String> {
    text_of(raw)?
        .split_whitespace()
        .find(|w| w.contains("/invite#") || w.contains("/reset-password#"))
        .map(str::to_owned)
}

/// A header of a mailed message (decoded).
pub fn header_of(raw: &str, name: &str) -> Option<String> {
    use mailparse::MailHeaderMap;
    mailparse::parse_mail(raw.as_bytes())
        .ok()?
        .headers
        .get_first_value(name)
}

/// A PostgreSQL cluster of one test's own, on loopback, for tests that stop the server or
/// configure it (TLS): the installed server binaries (`/usr/lib/postgresql/*/bin`), a data
/// directory under the system temp dir, trust authentication. Stopped and removed on drop.
pub struct PrivateCluster {
    pub dir: std::path::PathBuf,
    pub port: u16,
    bindir: std::path::PathBuf,
    options: String,
}

fn pg_bindir() -> std::path::PathBuf {
    let mut dirs: Vec<_> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries under /usr/lib/postgresql (scripts/test installs them)")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("an initdb")
}

/// Whether the tests run as root (PostgreSQL's tools then run as the `postgres` user).
pub fn is_root() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn run_ok(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl PrivateCluster {
    /// A new cluster in a fresh directory; `prepare` runs on that directory before `initdb`
    /// (certificates, ...). `options` are extra server options (`-c ssl=on ...`).
    pub fn start(prepare: impl FnOnce(&std::path::Path), options: &str) -> PrivateCluster {
        let dir = std::env::temp_dir().join(format!("psa-pg-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        prepare(&dir);
        if is_root() {
            run_ok(
                std::process::Command::new("chown")
                    .args(["-R", "postgres"])
                    .arg(&dir),
            );
        }
        run_ok(std::process::Command::new("chmod").arg("755").arg(&dir));
        let bindir = pg_bindir();
        run_ok(
            Self::tool(&bindir, "initdb")
                .args(["-U", "postgres", "--auth=trust", "--no-sync", "-D"])
                .arg(dir.join("data")),
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = PrivateCluster {
            options: format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off {options}",
                dir.display()
            ),
            dir,
            port,
            bindir,
        };
        cluster.resume();
        cluster
    }

    fn tool(bindir: &std::path::Path, tool: &str) -> std::process::Command {
        if is_root() {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
            c
        } else {
            std::process::Command::new(bindir.join(tool))
        }
    }

    /// With more server options from the next [`PrivateCluster::resume`] on.
    pub fn with_options(mut self, options: &str) -> PrivateCluster {
        self.options = format!("{} {options}", self.options);
        self
    }

    /// `postgres://postgres@127.0.0.1:PORT/postgres` plus `query` (`?sslmode=...`).
    pub fn url(&self, query: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres{query}",
            self.port
        )
    }

    /// Stops the server at once (`-m immediate`: connections are cut, like a crash).
    pub fn stop(&self) {
        run_ok(
            Self::tool(&self.bindir, "pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-m", "immediate", "-w", "stop"]),
        );
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn resume(&self) {
        run_ok(
            Self::tool(&self.bindir, "pg_ctl")
                .arg("-D")
                .arg(self.dir.join("data"))
                .args(["-o", &self.options, "-l"])
                .arg(self.dir.join("log"))
                .args(["-w", "start"]),
        );
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        let _ = Self::tool(&self.bindir, "pg_ctl")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A real headless Chromium for the console's tests, driven over WebDriver (Debian's
/// `chromium-driver`; scripts/test installs both and axe-core, and sets
/// `PSA_TEST_CHROMEDRIVER`, `PSA_TEST_CHROMIUM`, `PSA_TEST_AXE_JS`). Missing, the test fails
/// loudly: it never skips.
///
/// Nothing it starts outlives it, also when the test fails: dropping it ends the WebDriver
/// session (Chromium quits), kills the driver's process group and any process still using the
/// browser's own profile directory (under `target/psa-test-browsers/`, which scripts/test
/// checks is unused when the run ends), and removes that directory.
pub struct Browser {
    pub client: fantoccini::Client,
    /// Held for its `Drop`: the driver and the browser end with this value.
    _process: BrowserProcess,
    screenshots: std::path::PathBuf,
}

/// The driver and the browser it starts, ended when dropped.
struct BrowserProcess {
    driver: std::process::Child,
    port: u16,
    session: Option<String>,
    profile: std::path::PathBuf,
}

impl Browser {
    /// A browser window of `width` x `height` (1280 x 900 for the desktop, 390 x 844 for a
    /// phone); screenshots go to `target/console-screenshots/`.
    pub async fn start(width: u32, height: u32) -> Browser {
        let driver_bin =
            std::env::var("PSA_TEST_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".to_owned());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        // Its own process group, so that the driver and the browsers it starts end together.
        use std::os::unix::process::CommandExt as _;
        let profile = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/psa-test-browsers")
            .join(uuid::Uuid::new_v4().simple().to_string());
        std::fs::create_dir_all(&profile).expect("a browser profile directory");
        // Absolute and without `..`: chromedriver finds the browser's DevTools port in it.
        let profile = profile
            .canonicalize()
            .expect("the profile directory's path");
        let driver = std::process::Command::new(&driver_bin)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {driver_bin} ({e}): run scripts/test, which installs Chromium \
                     and chromium-driver, or set PSA_TEST_CHROMEDRIVER (tests never skip)"
                )
            });
        let mut process = BrowserProcess {
            driver,
            port,
            session: None,
            profile,
        };
        let mut caps = serde_json::Map::new();
        let mut chrome = serde_json::json!({
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     format!("--window-size={width},{height}"),
                     format!("--user-data-dir={}", process.profile.display())]
        });
        if let Ok(bin) = std::env::var("PSA_TEST_CHROMIUM") {
            chrome["binary"] = bin.into();
        }
        caps.insert("goog:chromeOptions".into(), chrome);
        let url = format!("http://127.0.0.1:{port}");
        // Two TLS backends are linked into the tests: the WebDriver client is told which.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut client = None;
        for _ in 0..100 {
            let mut builder = fantoccini::ClientBuilder::rustls().expect("a TLS connector");
            match builder.capabilities(caps.clone()).connect(&url).await {
                Ok(c) => {
                    client = Some(c);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        let client = client.expect("chromedriver accepted a session");
        process.session = client.session_id().await.ok().flatten();
        let screenshots = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../target/console-screenshots");
        std::fs::create_dir_all(&screenshots).expect("screenshot dir");
        Browser {
            client,
            _process: process,
            screenshots,
        }
    }

    /// Saves a screenshot of the page as `target/console-screenshots/NAME.png`.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("a screenshot");
        std::fs::write(self.screenshots.join(format!("{name}.png")), png).expect("saved");
    }

    /// Runs axe-core on the page; returns its serious and critical violations (id: help, and
    /// the first offending element).
    pub async fn axe(&self) -> Vec<String> {
        let path = std::env::var("PSA_TEST_AXE_JS").unwrap_or_else(|_| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../../tests/console/node_modules/axe-core/axe.min.js")
                .display()
                .to_string()
        });
        let source = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read axe-core at {path} ({e}): run scripts/test (npm ci in tests/console)"
            )
        });
        self.client
            .execute(&source, vec![])
            .await
            .expect("axe-core loads");
        let result = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                    .then(r => done(r.violations
                        .filter(v => v.impact === 'serious' || v.impact === 'critical')
                        .map(v => v.id + ': ' + v.help + ' (' + (v.nodes[0] ? v.nodes[0].target.join(' ') : '') + ')')))
                    .catch(e => done(['axe failed: ' + e]));",
                vec![],
            )
            .await
            .expect("axe-core runs");
        serde_json::from_value(result).expect("a list of violations")
    }
}

/// A command of WebDriver's WebAuthn extension (`/session/{id}/webauthn/...`).
#[derive(Debug)]
struct WebAuthnCommand {
    method: http::Method,
    path: String,
    body: Option<serde_json::Value>,
}

impl fantoccini::wd::WebDriverCompatibleCommand for WebAuthnCommand {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/webauthn/{}",
            session_id.unwrap_or_default(),
            self.path
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (
            self.method.clone(),
            self.body.as_ref().map(|b| b.to_string()),
        )
    }
}

impl Browser {
    /// Gives the browser a virtual authenticator (WebDriver's WebAuthn extension), as a laptop
    /// or phone has one: internal, CTAP2, holding discoverable credentials, verifying its user
    /// (who always agrees). Returns its id.
    pub async fn add_authenticator(&self) -> String {
        let id = self
            .client
            .issue_cmd(WebAuthnCommand {
                method: http::Method::POST,
                path: "authenticator".into(),
                body: Some(serde_json::json!({
                    "protocol": "ctap2",
                    "transport": "internal",
                    "hasResidentKey": true,
                    "hasUserVerification": true,
                    "isUserConsenting": true,
                    "isUserVerified": true,
                })),
            })
            .await
            .expect("a virtual authenticator");
        id.as_str().expect("its id").to_owned()
    }

    /// The credentials a virtual authenticator holds (each with `credentialId`, `rpId`,
    /// `isResidentCredential`, `userHandle`, `signCount`).
    pub async fn authenticator_credentials(&self, authenticator: &str) -> Vec<serde_json::Value> {
        let list = self
            .client
            .issue_cmd(WebAuthnCommand {
                method: http::Method::GET,
                path: format!("authenticator/{authenticator}/credentials"),
                body: None,
            })
            .await
            .expect("the authenticator's credentials");
        serde_json::from_value(list).expect("a list of credentials")
    }

    /// Removes a virtual authenticator (its credentials go with it: another device).
    pub async fn remove_authenticator(&self, authenticator: &str) {
        self.client
            .issue_cmd(WebAuthnCommand {
                method: http::Method::DELETE,
                path: format!("authenticator/{authenticator}"),
                body: None,
            })
            .await
            .expect("the authenticator removed");
    }
}

impl Drop for BrowserProcess {
    fn drop(&mut self) {
        stop_browser(
            &mut self.driver,
            self.port,
            self.session.as_deref(),
            &self.profile,
        );
    }
}

/// Ends a browser without the async runtime (it runs in `Drop`, also while a test unwinds):
/// the session is deleted over plain HTTP (Chromium quits), then the driver's process group is
/// killed, then any process still naming the profile directory (a browser child that left the
/// group), and the directory is removed.
fn stop_browser(
    driver: &mut std::process::Child,
    port: u16,
    session: Option<&str>,
    profile: &std::path::Path,
) {
    use std::io::{Read as _, Write as _};
    if let Some(id) = session
        && let Ok(mut conn) = std::net::TcpStream::connect(("127.0.0.1", port))
    {
        let _ = conn.set_read_timeout(Some(std::time::Duration::from_secs(5)));
        let _ = write!(
            conn,
            "DELETE /session/{id} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        let _ = conn.read_to_end(&mut Vec::new());
    }
    // SAFETY: kill(2) with a negative pid signals the driver's process group; no memory is
    // involved.
    unsafe {
        libc::kill(-(driver.id() as i32), libc::SIGKILL);
    }
    let _ = driver.kill();
    let _ = driver.wait();
    let needle = profile.display().to_string();
    for _ in 0..50 {
        let left = processes_naming(&needle);
        if left.is_empty() {
            break;
        }
        for pid in left {
            // SAFETY: as above, one process.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = std::fs::remove_dir_all(profile);
}

/// The processes whose command line contains `needle`.
fn processes_naming(needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains(needle)
            .then_some(pid)
    })
    .collect()
}

/// A child process in a process group of its own, killed together with everything it started
/// when dropped (also when the test fails), unless it has ended and been waited for.
pub struct Spawned(std::process::Child);

impl Spawned {
    pub fn spawn(cmd: &mut std::process::Command) -> std::io::Result<Spawned> {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0).spawn().map(Spawned)
    }
}

impl std::ops::Deref for Spawned {
    type Target = std::process::Child;
    fn deref(&self) -> &std::process::Child {
        &self.0
    }
}

impl std::ops::DerefMut for Spawned {
    fn deref_mut(&mut self) -> &mut std::process::Child {
        &mut self.0
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        // The whole group, also when its leader has ended: what it started may still run. First
        // SIGTERM, so that a child that owns a server in a session of its own (`psa demo`'s
        // PostgreSQL) can stop it; then SIGKILL for whatever is left.
        let group = -(self.0.id() as i32);
        // SAFETY: kill(2) on the child's own process group; no memory is involved.
        unsafe {
            libc::kill(group, libc::SIGTERM);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while std::time::Instant::now() < deadline && !matches!(self.0.try_wait(), Ok(Some(_))) {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // SAFETY: as above.
        unsafe {
            libc::kill(group, libc::SIGKILL);
        }
        let _ = self.0.wait();
    }
}

/// A DNS server on loopback answering TXT records the test chose (Debian's dnsmasq, which
/// scripts/test installs; `PSA_TEST_DNSMASQ` names another). It ends when dropped.
pub struct DnsServer {
    pub addr: std::net::SocketAddr,
    _process: Spawned,
}

impl DnsServer {
    /// A free port for a DNS server started later (the server under test is told it first).
    pub fn free_addr() -> std::net::SocketAddr {
        format!("127.0.0.1:{}", unclaimed_port()).parse().unwrap()
    }

    /// Serves `records` (`(domain, text)`: a TXT record each) and nothing else, at `addr`.
    pub async fn start(addr: std::net::SocketAddr, records: &[(&str, &str)]) -> DnsServer {
        let bin = std::env::var("PSA_TEST_DNSMASQ").unwrap_or_else(|_| "dnsmasq".to_owned());
        let port = addr.port();
        let mut cmd = std::process::Command::new(&bin);
        cmd.args([
            "--keep-in-foreground",
            "--conf-file=/dev/null",
            "--no-resolv",
            "--no-hosts",
            "--pid-file=",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
        ])
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
        if is_root() {
            cmd.arg("--user=root");
        }
        for (domain, text) in records {
            cmd.arg(format!("--txt-record={domain},{text}"));
        }
        let process = Spawned::spawn(&mut cmd).unwrap_or_else(|e| {
            panic!(
                "cannot start {bin} ({e}): run scripts/test, which installs dnsmasq-base, or set \
                 PSA_TEST_DNSMASQ (tests never skip)"
            )
        });
        // Answering once it answers over TCP too (dnsmasq listens on both).
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return DnsServer {
                    addr,
                    _process: process,
                };
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!("dnsmasq did not listen on {addr}");
    }
}

/// An OpenID Connect provider on loopback (panva's certified `oidc-provider`, from
/// tests/console/node_modules, run by tests/console/oidc-provider.mjs): clients, accounts and
/// the signing key as the test says. Its development login form takes any password; the login
/// names the account. It ends when dropped (its stdin closes too).
pub struct OidcProvider {
    pub issuer: String,
    pub port: u16,
    process: Option<Spawned>,
    config: serde_json::Value,
}

impl OidcProvider {
    /// A new RSA signing key (a private JWK) with key id `kid`.
    pub fn new_key(kid: &str) -> serde_json::Value {
        let out = std::process::Command::new(node())
            .args([
                "-e",
                "const {generateKeyPairSync} = require('crypto');\
                 const {privateKey} = generateKeyPairSync('rsa', {modulusLength: 2048});\
                 const j = privateKey.export({format: 'jwk'});\
                 j.kid = process.argv[1]; j.alg = 'RS256'; j.use = 'sig';\
                 console.log(JSON.stringify(j));",
                kid,
            ])
            .output()
            .expect("node makes a key");
        serde_json::from_slice(&out.stdout).expect("a JWK")
    }

    /// Starts the provider with `clients` (`{"client_id", "client_secret"?, "redirect_uris"}`),
    /// `accounts` (login -> claims) and signing `key`.
    pub async fn start(
        clients: serde_json::Value,
        accounts: serde_json::Value,
        key: serde_json::Value,
    ) -> OidcProvider {
        let port = unclaimed_port();
        let mut p = OidcProvider {
            issuer: format!("http://127.0.0.1:{port}"),
            port,
            process: None,
            config: serde_json::json!({
                "port": port, "clients": clients, "accounts": accounts, "key": key
            }),
        };
        p.restart().await;
        p
    }

    /// Starts it again with another signing key (its sessions are lost, as on any restart).
    pub async fn rotate_key(&mut self, key: serde_json::Value) {
        self.config["key"] = key;
        self.restart().await;
    }

    async fn restart(&mut self) {
        self.process = None;
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/console/oidc-provider.mjs");
        let process = Spawned::spawn(
            std::process::Command::new(node())
                .arg(&script)
                .arg(self.config.to_string())
                .current_dir(script.parent().unwrap())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::inherit()),
        )
        .unwrap_or_else(|e| {
            panic!("cannot start the OpenID Connect provider with node ({e}): tests never skip")
        });
        self.process = Some(process);
        let discovery = format!("{}/.well-known/openid-configuration", self.issuer);
        for _ in 0..400 {
            if let Ok(r) = reqwest_free_get(&discovery).await
                && r
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        panic!(
            "the OpenID Connect provider did not answer at {discovery}: run scripts/test (npm ci \
             in tests/console installs oidc-provider)"
        );
    }
}

/// A port free now (TCP and UDP) for a server started later, outside the system's ephemeral
/// range: a port the system handed out for `:0` and that was let go is soon handed out again,
/// to another test's listener or to any outgoing connection, before the server binds it.
pub fn unclaimed_port() -> u16 {
    use std::hash::{BuildHasher, Hasher};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 12_000) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok()
        {
            return port;
        }
    }
}

fn node() -> String {
    std::env::var("PSA_TEST_NODE").unwrap_or_else(|_| "node".to_owned())
}

/// Whether `url` answers 200 (a plain HTTP/1.1 GET over loopback, without an HTTP client
/// crate here).
async fn reqwest_free_get(url: &str) -> std::io::Result<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let u = url::Url::parse(url).map_err(std::io::Error::other)?;
    let addr = format!(
        "{}:{}",
        u.host_str().unwrap_or("127.0.0.1"),
        u.port_or_known_default().unwrap_or(80)
    );
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(
        format!(
            "GET {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            u.path(),
            u.host_str().unwrap_or_default()
        )
        .as_bytes(),
    )
    .await?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).await?;
    Ok(head.starts_with(b"HTTP/1.1 200"))
}
