//! `psa sso`: an operator connects a tenant's provider (a real OpenID Connect provider on
//! loopback), claims and verifies its domain through a real DNS server, and removes it all;
//! the client secret is read from stdin and shows nowhere; bad input exits 2 with nothing
//! written.

use std::io::Write;
use std::process::Stdio;

use serde_json::json;

use crate::workflow::{Setup, code, last_json};

const SECRET: &str = "the-client-secret-at-the-provider";

fn with_stdin(mut c: std::process::Command, input: &str) -> std::process::Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

fn stdout_and_err(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn an_operator_connects_a_tenants_provider_and_verifies_its_domain() {
    let s = Setup::new().await;
    let provider = psa_testing::OidcProvider::start(
        json!([{"client_id": "psa", "client_secret": SECRET,
                "redirect_uris": ["https://psa.test/console/sso/callback"]}]),
        json!({}),
        psa_testing::OidcProvider::new_key("cli"),
    )
    .await;
    let dns = psa_testing::DnsServer::free_addr();
    let sso = |args: &[&str]| {
        let mut all = vec!["sso"];
        all.extend_from_slice(args);
        let mut c = s.cmd(&all);
        c.env("PSA_WEBHOOK_ALLOW_PRIVATE", "true")
            .env("PSA_DNS_RESOLVER", dns.to_string())
            .env("PSA_PUBLIC_URL", "https://psa.test");
        c
    };
    let t = s.mgmt.as_str();
    let connections = || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM sso_connections")
            .fetch_one(&s.db.pool)
            .await
            .unwrap()
    };

    // Refused, exit 2, nothing written: an issuer that does not answer, `--required` without a
    // break-glass user, a role that does not exist.
    let dead = format!("http://127.0.0.1:{}", psa_testing::unclaimed_port());
    for (extra, word) in [
        (vec!["--issuer", dead.as_str()], "issuer"),
        (
            vec!["--issuer", provider.issuer.as_str(), "--required"],
            "break_glass",
        ),
        (
            vec!["--issuer", provider.issuer.as_str(), "--jit-role", "Nobody"],
            "jit_role",
        ),
    ] {
        let mut args = vec![
            "set",
            "--tenant",
            t,
            "--client-id",
            "psa",
            "--client-secret-stdin",
        ];
        args.extend(extra);
        let out = with_stdin(sso(&args), &format!("{SECRET}\n"));
        assert_eq!(code(&out), 2, "{}", stdout_and_err(&out));
        assert!(
            stdout_and_err(&out).contains(word),
            "{}",
            stdout_and_err(&out)
        );
        assert!(!stdout_and_err(&out).contains(SECRET));
    }
    assert_eq!(connections().await, 0);
    // A secret asked for but not given.
    let out = with_stdin(
        sso(&[
            "set",
            "--tenant",
            t,
            "--issuer",
            &provider.issuer,
            "--client-id",
            "psa",
            "--client-secret-stdin",
        ]),
        "",
    );
    assert_eq!(code(&out), 2, "{}", stdout_and_err(&out));
    assert_eq!(connections().await, 0);

    // Connected: the redirect URI to register is printed; the secret shows nowhere.
    let out = with_stdin(
        sso(&[
            "set",
            "--tenant",
            t,
            "--issuer",
            &provider.issuer,
            "--client-id",
            "psa",
            "--client-secret-stdin",
            "--jit",
            "--json",
        ]),
        &format!("{SECRET}\n"),
    );
    assert!(out.status.success(), "{}", stdout_and_err(&out));
    assert!(!stdout_and_err(&out).contains(SECRET));
    let c = last_json(&out);
    assert_eq!(c["redirect_uri"], "https://psa.test/console/sso/callback");
    assert_eq!(c["has_client_secret"], true);
    assert_eq!(c["jit"], true);
    let sealed: String = sqlx::query_scalar("SELECT client_secret_sealed FROM sso_connections")
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
    assert!(!sealed.contains(SECRET));
    let out = sso(&["show", "--tenant", t]).output().unwrap();
    assert!(out.status.success(), "{}", stdout_and_err(&out));
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(shown.contains("client secret  set"), "{shown}");
    assert!(!shown.contains(SECRET));
    let out = sso(&["test", "--tenant", t, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stdout_and_err(&out));
    assert_eq!(last_json(&out)["signing_keys"], 1);

    // The domain: a public mail service refused; acme.test claimed, then verified once its
    // TXT record is published.
    let out = sso(&["domain", "add", "--tenant", t, "gmail.com"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stdout_and_err(&out));
    let out = sso(&["domain", "add", "--tenant", t, "acme.test", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout_and_err(&out));
    let record = last_json(&out)["txt_record"].as_str().unwrap().to_owned();
    let _dns = psa_testing::DnsServer::start(dns, &[("acme.test", &record)]).await;
    let out = sso(&["domain", "verify", "--tenant", t, "acme.test", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout_and_err(&out));
    assert!(last_json(&out)["verified_at"].is_string());
    let out = sso(&["domain", "list", "--tenant", t]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("acme.test  verified"),
        "{}",
        stdout_and_err(&out)
    );

    // Given up and removed; removing again is the operator's mistake.
    let out = sso(&["domain", "remove", "--tenant", t, "acme.test"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout_and_err(&out));
    let out = sso(&["remove", "--tenant", t]).output().unwrap();
    assert!(out.status.success(), "{}", stdout_and_err(&out));
    let out = sso(&["remove", "--tenant", t]).output().unwrap();
    assert_eq!(code(&out), 2, "{}", stdout_and_err(&out));
    assert_eq!(connections().await, 0);

    // Every change audited as the operator's; the secret in no audit row.
    let audit: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT action, entity_type, details::text FROM audit_log \
         WHERE entity_type LIKE 'sso%' ORDER BY created_at",
    )
    .fetch_all(&s.db.pool)
    .await
    .unwrap();
    let actions: Vec<(&str, &str)> = audit
        .iter()
        .map(|(a, t, _)| (a.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        actions,
        [
            ("create", "sso_connection"),
            ("test", "sso_connection"),
            ("create", "sso_domain"),
            ("verify", "sso_domain"),
            ("delete", "sso_domain"),
            ("delete", "sso_connection"),
        ],
        "{audit:?}"
    );
    assert!(audit.iter().all(|(_, _, d)| !d.contains(SECRET)));
}
