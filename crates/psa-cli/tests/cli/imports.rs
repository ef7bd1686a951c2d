//! `psa tenant import` as an operator runs it: every archive kept in `tests/data` (made by an
//! earlier version, one per schema) imports into today's schema; an import killed with SIGKILL
//! half-way leaves nothing, and run again it completes; bad input exits 2.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::workflow::{Setup, last_json};

/// The archives earlier versions made (`scripts/make-import-fixture`).
fn kept_archives() -> Vec<std::path::PathBuf> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let mut found: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("tenant-export-")
        })
        .collect();
    found.sort();
    assert!(!found.is_empty(), "no archive kept in {}", dir.display());
    found
}

#[tokio::test]
async fn every_archive_an_earlier_version_made_still_imports() {
    for archive in kept_archives() {
        let s = Setup::new().await;
        let file = archive.to_str().unwrap();
        let out = s.run(&["tenant", "import", "--file", file, "--dry-run", "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let preview = last_json(&out);
        assert_eq!(preview["mode"], "move", "{preview}");
        assert!(
            preview["source"]["schema_version"].as_i64().unwrap()
                <= psa_models::exports::schema_version()
        );
        let out = s.run(&["tenant", "import", "--file", file, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let done = last_json(&out);
        assert_eq!(done["tables"]["companies"]["rows"], 5, "{done}");
        assert_eq!(done["tables"]["contacts"]["rows"], 8, "{done}");
        assert_eq!(done["tables"]["tag_mappings"]["rows"], 3, "{done}");
        let tenant: uuid::Uuid = done["tenant"]["tenant_id"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        // What the rows mean survived: a company's parent, the administrator and their role.
        let parent: String = sqlx::query_scalar(
            "SELECT p.company_name FROM companies c JOIN companies p \
               ON p.tenant = c.tenant AND p.company_id = (c.properties ->> 'parent_id')::uuid \
             WHERE c.tenant = $1 AND c.company_name = 'Client 3'",
        )
        .bind(tenant)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        assert_eq!(parent, "Client 1", "{}", archive.display());
        let admin: String = sqlx::query_scalar(
            "SELECT r.role_name FROM users u JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
             JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
             WHERE u.tenant = $1 AND u.email = 'owner@fixture.example'",
        )
        .bind(tenant)
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        assert_eq!(admin, "Admin");
    }
}

/// What an import writes: none of it may be there after one that was killed.
async fn written(pool: &sqlx::PgPool, tenant: &str) -> (i64, i64, i64, i64) {
    let tenant: uuid::Uuid = tenant.parse().unwrap();
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM tenants WHERE tenant = $1), \
                (SELECT count(*) FROM companies WHERE tenant = $1), \
                (SELECT count(*) FROM audit_log WHERE action = 'import'), \
                (SELECT count(*) FROM events WHERE event_type = 'tenant.imported')",
    )
    .bind(tenant)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn an_import_killed_half_way_leaves_nothing_and_run_again_completes() {
    let s = Setup::new().await;
    let tenant = uuid::Uuid::new_v4().to_string();
    for sql in [
        "INSERT INTO tenants (tenant, company_name, email, slug) \
         VALUES ($1::uuid, 'Bulk', 'admin@bulk.example', 'bulk')",
        "INSERT INTO companies (tenant, company_id, company_name) \
         SELECT $1::uuid, gen_random_uuid(), 'Company ' || i FROM generate_series(1, 40000) i",
        "INSERT INTO contacts (tenant, contact_name_id, full_name, email) \
         SELECT $1::uuid, gen_random_uuid(), 'Person ' || i, 'p' || i || '@bulk.example' \
         FROM generate_series(1, 40000) i",
    ] {
        sqlx::query(sql)
            .bind(&tenant)
            .execute(&s.db.pool)
            .await
            .unwrap();
    }
    let archive = std::env::temp_dir().join(format!("bulk-{tenant}.tar.gz"));
    let file = archive.to_str().unwrap();
    let out = s.run(&["tenant", "export", &tenant, "--out", file]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    sqlx::query("DELETE FROM tenants WHERE tenant = $1::uuid")
        .bind(&tenant)
        .execute(&s.db.pool)
        .await
        .unwrap();
    assert_eq!(written(&s.db.pool, &tenant).await, (0, 0, 0, 0));

    let mut child = s
        .cmd(&["tenant", "import", "--file", file])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Killed once its rows are being written.
    let writing = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                   AND pid <> pg_backend_pid() AND state = 'active' \
                   AND query LIKE '%jsonb_populate_recordset%'";
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n: i64 = sqlx::query_scalar(writing)
            .fetch_one(&s.db.pool)
            .await
            .unwrap();
        if n > 0 {
            break;
        }
        assert!(Instant::now() < deadline, "the import never wrote");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the import ended before it was killed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The server ends its session (the statement in flight, then the dead connection).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND pid <> pg_backend_pid() AND application_name = 'psa'",
        )
        .fetch_one(&s.db.pool)
        .await
        .unwrap();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the killed import's session stayed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(written(&s.db.pool, &tenant).await, (0, 0, 0, 0));

    let out = s.run(&["tenant", "import", "--file", file, "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = last_json(&out);
    assert_eq!(done["tables"]["companies"]["rows"], 40000, "{done}");
    assert_eq!(written(&s.db.pool, &tenant).await, (1, 40000, 2, 1));

    // Bad input: exit 2, a message naming the problem, nothing written.
    for (args, says) in [
        (vec!["--file", file, "--name", "X"], "--as-new"),
        (vec!["--file", file, "--invite-users"], "--as-new"),
        (
            vec!["--file", "/nonexistent/archive.tar.gz"],
            "cannot be read",
        ),
        (
            vec!["--file", file, "--as-new", "--slug", "Not A Slug!"],
            "slug",
        ),
        (vec!["--file", file], "exists"),
    ] {
        let mut all = vec!["tenant", "import"];
        all.extend(args.iter().copied());
        let out = s.run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    assert_eq!(written(&s.db.pool, &tenant).await, (1, 40000, 2, 1));
    let _ = std::fs::remove_file(&archive);
}
