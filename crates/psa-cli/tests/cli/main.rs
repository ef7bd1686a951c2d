//! The `psa` binary, run as an operator would, against a real PostgreSQL.

use std::process::{Command, Output};

use psa_testing::TestDb;

fn psa(db_url: Option<&str>, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psa"));
    cmd.args(args)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn");
    if let Some(url) = db_url {
        cmd.env("DATABASE_URL", url);
    }
    cmd.output().expect("run psa")
}

fn stdout_json(out: &Output) -> serde_json::Value {
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("last stdout line is not JSON ({e}): {text}"))
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn migrate_applies_once_and_is_idempotent() {
    let db = TestDb::empty().await;
    let first = psa(Some(&db.url()), &["migrate", "--json"]);
    assert!(first.status.success(), "{}", stderr(&first));
    let total = stdout_json(&first)["total"].as_u64().unwrap();
    assert!(total >= 1);
    assert_eq!(stdout_json(&first)["applied"], total);
    let second = psa(Some(&db.url()), &["migrate", "--json"]);
    assert!(second.status.success());
    assert_eq!(stdout_json(&second)["applied"], 0);
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tablename = 'companies'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(tables, 1);
}

#[tokio::test]
async fn management_init_creates_once_and_prints_the_id() {
    let db = TestDb::new(&psa_models::MIGRATOR).await;
    let url = db.url();
    let first = psa(
        Some(&url),
        &[
            "management",
            "init",
            "--name",
            "Nine Minds LLC",
            "--admin-email",
            "Ops@NineMinds.example",
            "--first-name",
            "Op",
            "--last-name",
            "Erator",
            "--json",
        ],
    );
    assert!(first.status.success(), "{}", stderr(&first));
    let j = stdout_json(&first);
    assert_eq!(j["created"], true);
    let id = j["tenant_id"].as_str().unwrap().to_owned();
    assert_eq!(j["temporary_password"].as_str().unwrap().len(), 16);
    assert!(
        !stderr(&first).contains(j["temporary_password"].as_str().unwrap()),
        "password not in logs"
    );

    let second = psa(
        Some(&url),
        &["management", "init", "--name", "Other", "--json"],
    );
    assert!(second.status.success());
    let j = stdout_json(&second);
    assert_eq!(
        (j["created"].as_bool(), j["tenant_id"].as_str()),
        (Some(false), Some(id.as_str()))
    );
    assert!(j.get("temporary_password").is_none());

    let human = psa(Some(&url), &["management", "init", "--name", "Other"]);
    assert!(String::from_utf8_lossy(&human.stdout).contains(&format!("NINEMINDS_TENANT_ID={id}")));

    let (name, is_management): (String, bool) =
        sqlx::query_as("SELECT company_name, is_management FROM tenants")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((name.as_str(), is_management), ("Nine Minds LLC", true));
}

#[tokio::test]
async fn usage_and_configuration_errors_exit_2_and_write_nothing() {
    let db = TestDb::new(&psa_models::MIGRATOR).await;
    let url = db.url();

    let out = psa(None, &["migrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DATABASE_URL"), "{}", stderr(&out));
    assert_eq!(
        stderr(&out).trim().lines().count(),
        1,
        "one clear line: {}",
        stderr(&out)
    );

    let out = psa(Some("mysql://nope"), &["migrate"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("DATABASE_URL"));

    let out = psa(
        Some(&url),
        &[
            "management",
            "init",
            "--name",
            "X",
            "--admin-email",
            "not-an-email",
            "--first-name",
            "A",
            "--last-name",
            "B",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("email"), "{}", stderr(&out));

    let out = psa(Some(&url), &["management", "init", "--name", "   "]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("name"), "{}", stderr(&out));

    let out = psa(
        Some(&url),
        &[
            "management",
            "init",
            "--name",
            "X",
            "--admin-email",
            "a@b.example",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap requires the names with an email"
    );

    let out = psa(Some(&url), &["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_psa"));
    let out = cmd
        .args(["migrate"])
        .env("DATABASE_URL", &url)
        .env("PSA_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("PSA_LOG_FORMAT"));

    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(tenants, 0);
}

#[tokio::test]
async fn an_unreachable_database_exits_1() {
    let out = psa(Some("postgres://nobody@127.0.0.1:1/none"), &["migrate"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot connect"));
}
