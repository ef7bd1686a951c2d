//! PostgreSQL over TLS: a private cluster with `ssl=on` and a certificate from a CA this test
//! makes; `psa` connects with `sslmode=verify-full`, refuses a server its CA did not sign, and
//! the session is encrypted.

use std::path::Path;
use std::process::Command;

use super::{psa, stderr};

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
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

/// Runs a server tool as the `postgres` OS user when we are root (PostgreSQL refuses root).
fn pg(bindir: &Path, tool: &str) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bindir.join(tool));
        c
    } else {
        Command::new(bindir.join(tool))
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A CA and a server certificate for 127.0.0.1 signed by it, with openssl.
fn make_certs(dir: &Path, name: &str) {
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

struct Cluster {
    bindir: std::path::PathBuf,
    data: std::path::PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg(&self.bindir, "pg_ctl")
            .args(["-D"])
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .output();
    }
}

#[tokio::test]
async fn postgres_over_tls_is_verified_and_encrypted() {
    let dir = std::env::temp_dir().join(format!("psa-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir, "good");
    make_certs(&dir, "other");
    let bindir = pg_bindir();
    if is_root() {
        run(Command::new("chown").args(["-R", "postgres"]).arg(&dir));
    }
    run(Command::new("chmod")
        .arg("600")
        .arg(dir.join("good-server.key")));
    run(Command::new("chmod").arg("755").arg(&dir));
    let data = dir.join("data");
    run(pg(&bindir, "initdb")
        .args(["-U", "postgres", "--auth=trust", "-D"])
        .arg(&data));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = format!(
        "-p {port} -k {} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        dir.display(),
        dir.join("good-server.pem").display(),
        dir.join("good-server.key").display()
    );
    run(pg(&bindir, "pg_ctl")
        .arg("-D")
        .arg(&data)
        .args(["-o", &options, "-l"])
        .arg(dir.join("log"))
        .args(["-w", "start"]));
    let _cluster = Cluster {
        bindir: bindir.clone(),
        data,
    };
    let url = |mode: &str, ca: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{port}/postgres?sslmode={mode}&sslrootcert={}",
            dir.join(format!("{ca}-ca.pem")).display()
        )
    };
    // psa connects with full verification and works.
    let ok = psa(Some(&url("verify-full", "good")), &["migrate", "--json"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    // A server certificate from another CA is refused.
    let refused = psa(Some(&url("verify-full", "other")), &["migrate", "--json"]);
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(
        stderr(&refused).contains("cannot connect to PostgreSQL"),
        "{}",
        stderr(&refused)
    );
    // And the session really is encrypted.
    let pool = psa_models::db::connect(&url("verify-full", "good"), 1)
        .await
        .unwrap();
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the connection is over TLS");
    pool.close().await;
    drop(_cluster);
    let _ = std::fs::remove_dir_all(&dir);
}
