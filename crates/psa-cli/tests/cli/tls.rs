//! TLS to PostgreSQL and to Temporal, against real servers on loopback with certificates from a
//! CA the tests make: PostgreSQL with `ssl=on`; Temporal behind a TLS terminator (the dev server
//! speaks plain gRPC only).

use std::path::Path;
use std::process::Command;

use super::{psa, stderr};

#[tokio::test]
async fn postgres_over_tls_is_verified_and_encrypted() {
    let cluster = psa_testing::PrivateCluster::start(
        |dir| {
            psa_testing::make_certs(dir, "good");
            psa_testing::make_certs(dir, "other");
            // The server refuses a key file others can read.
            let key = dir.join("good-server.key");
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .unwrap();
        },
        "",
    );
    let dir = cluster.dir.clone();
    let ssl = format!(
        "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
        dir.join("good-server.pem").display(),
        dir.join("good-server.key").display()
    );
    cluster.stop();
    let cluster = cluster.with_options(&ssl);
    cluster.resume();
    let url = |mode: &str, ca: &str| {
        format!(
            "postgres://postgres@127.0.0.1:{}/postgres?sslmode={mode}&sslrootcert={}",
            cluster.port,
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
}

/// A TLS terminator on loopback in front of `upstream` (the dev server's plain gRPC port),
/// offering HTTP/2 by ALPN as a TLS Temporal frontend does. Returns its address.
async fn tls_terminator(dir: &Path, name: &str, upstream: String) -> String {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join(format!("{name}-server.pem")))
            .unwrap()
            .map(|c| c.unwrap())
            .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join(format!("{name}-server.key"))).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (acceptor, upstream) = (acceptor.clone(), upstream.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut plain) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
            });
        }
    });
    address
}

/// `psa` reads the Temporal SDKs' own variables: with `TEMPORAL_TLS_SERVER_CA_CERT_PATH` it
/// speaks TLS and verifies the frontend against that CA; a frontend signed by another CA, or
/// plain gRPC against a TLS port, is refused with a clear message. (Multi-threaded: the
/// terminator serves while this thread waits on `psa`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporal_over_tls_reads_the_sdk_environment() {
    let temporal = psa_testing::TestTemporal::start().await;
    let db = psa_testing::TestDb::new(&psa_models::MIGRATOR).await;
    let dir = std::env::temp_dir().join(format!("psa-ttls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    psa_testing::make_certs(&dir, "good");
    psa_testing::make_certs(&dir, "other");
    let front = tls_terminator(&dir, "good", temporal.address.clone()).await;
    let status = |ca: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_psa"));
        c.args(["tenant", "status", "tenant-creation-over-tls"])
            .env("DATABASE_URL", db.url())
            .env("TEMPORAL_ADDRESS", &front)
            .env("RUST_LOG", "warn")
            .env_remove("TEMPORAL_TLS")
            .env_remove("TEMPORAL_API_KEY");
        if let Some(ca) = ca {
            c.env(
                "TEMPORAL_TLS_SERVER_CA_CERT_PATH",
                dir.join(format!("{ca}-ca.pem")),
            );
        }
        c.output().unwrap()
    };
    // Over TLS the frontend answers: the run is unknown (exit 2), not unreachable (exit 1).
    let ok = status(Some("good"));
    assert_eq!(ok.status.code(), Some(2), "{}", stderr(&ok));
    assert!(
        stderr(&ok).contains("no provisioning run"),
        "{}",
        stderr(&ok)
    );
    for (ca, why) in [
        (Some("other"), "another CA"),
        (None, "plain gRPC on a TLS port"),
    ] {
        let refused = status(ca);
        assert_eq!(
            refused.status.code(),
            Some(1),
            "{why}: {}",
            stderr(&refused)
        );
        assert!(
            stderr(&refused).contains(&format!("cannot reach Temporal at {front}")),
            "{why}: {}",
            stderr(&refused)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
