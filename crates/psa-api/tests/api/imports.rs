//! Tenant import: a deleted tenant restored from its export, row for row (with the real cancel
//! and deletion on Temporal); a tenant moved to a second installation with an encrypted export,
//! its admin signing in there with the old password and authenticator app; a clone that equals
//! the original modulo ids and sees none of its rows; and archives refused (tampered, cut short,
//! a newer schema, the tenant present, the wrong key) with nothing written.

use std::collections::BTreeMap;
use std::io::Read;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::lifecycle::platform;
use super::mfa::{code, enrol, login, second_step};
use super::provisioning::{body, finished, post, provisioned};
use super::*;

type Rows = BTreeMap<String, Vec<Map<String, Value>>>;

/// Every row of `tenant`, table by table (the catalog's tenant tables), in a stable order.
async fn rows(pool: &sqlx::PgPool, tenant: TenantId) -> Rows {
    let mut conn = pool.acquire().await.unwrap();
    let mut out = Rows::new();
    for table in psa_models::lifecycle::tenant_tables(&mut conn)
        .await
        .unwrap()
    {
        let all: Vec<sqlx::types::Json<Map<String, Value>>> = sqlx::query_scalar(&format!(
            "SELECT to_jsonb(t) FROM \"{table}\" t WHERE tenant = $1 ORDER BY t::text"
        ))
        .bind(tenant)
        .fetch_all(&mut *conn)
        .await
        .unwrap();
        out.insert(table, all.into_iter().map(|j| j.0).collect());
    }
    out
}

/// Only the columns an ordinary export keeps.
fn exported_columns(mut rows: Rows) -> Rows {
    for (table, list) in rows.iter_mut() {
        let kept = psa_models::exports::EXPORTED
            .iter()
            .find(|(t, _)| t == table)
            .map(|(_, c)| *c)
            .unwrap_or_default();
        for row in list.iter_mut() {
            row.retain(|k, _| kept.contains(&k.as_str()));
        }
    }
    rows
}

/// Companies (one naming another in its properties), contacts, tags on both, for `tenant`.
async fn seed(pool: &sqlx::PgPool, tenant: TenantId) {
    for sql in [
        "INSERT INTO companies (tenant, company_id, company_name, properties) \
         SELECT $1, gen_random_uuid(), 'Company ' || i, jsonb_build_object('rank', i) \
         FROM generate_series(1, 20) i",
        "UPDATE companies SET properties = properties || jsonb_build_object('parent_id', \
           (SELECT company_id FROM companies WHERE tenant = $1 AND company_name = 'Company 1')) \
         WHERE tenant = $1 AND company_name LIKE 'Company %'",
        "INSERT INTO contacts (tenant, contact_name_id, full_name, company_id, email) \
         SELECT $1, gen_random_uuid(), 'Person ' || i, \
                (SELECT company_id FROM companies WHERE tenant = $1 AND company_name = 'Company ' || (1 + i % 20)), \
                'person' || i || '@clients.example' \
         FROM generate_series(1, 30) i",
        "INSERT INTO tag_definitions (tenant, tag_id, tag_text, tagged_type) \
         VALUES ($1, gen_random_uuid(), 'VIP', 'company'), ($1, gen_random_uuid(), 'Champion', 'contact')",
        "INSERT INTO tag_mappings (tenant, mapping_id, tag_id, tagged_id, tagged_type) \
         SELECT $1, gen_random_uuid(), d.tag_id, c.company_id, 'company' \
         FROM companies c JOIN tag_definitions d ON d.tenant = c.tenant AND d.tag_text = 'VIP' \
         WHERE c.tenant = $1 AND c.company_name LIKE 'Company %'",
        "INSERT INTO tag_mappings (tenant, mapping_id, tag_id, tagged_id, tagged_type) \
         SELECT $1, gen_random_uuid(), d.tag_id, c.contact_name_id, 'contact' \
         FROM contacts c JOIN tag_definitions d ON d.tenant = c.tenant AND d.tag_text = 'Champion' \
         WHERE c.tenant = $1",
    ] {
        sqlx::query(sql).bind(tenant).execute(pool).await.unwrap();
    }
}

/// Exports `tenant` through the API and downloads the archive.
async fn export(app: &TestApp, key: &str, tenant: TenantId, encrypt_to: Option<&str>) -> Vec<u8> {
    let path = match encrypt_to {
        Some(r) => format!("/api/v1/tenants/{tenant}/export?encrypt_to={r}"),
        None => format!("/api/v1/tenants/{tenant}/export"),
    };
    let (status, done) = app.call(Method::POST, &path, Some(key), None).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["status"], "completed", "{done}");
    let archive = app
        .http
        .get(format!(
            "{}/api/v1/tenants/{tenant}/exports/{}/archive",
            app.base,
            done["export_id"].as_str().unwrap()
        ))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(archive.status(), StatusCode::OK);
    archive.bytes().await.unwrap().to_vec()
}

/// `POST /api/v1/tenants/imports` with the archive as the body.
async fn import(
    app: &TestApp,
    key: &str,
    archive: &[u8],
    query: &str,
    identity: Option<&str>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .post(format!("{}/api/v1/tenants/imports{query}", app.base))
        .bearer_auth(key)
        .header("content-type", "application/gzip")
        .body(archive.to_vec());
    if let Some(i) = identity {
        req = req.header("age-identity", i);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// What the import writes besides the rows: nothing of these may change when it is refused.
async fn written(app: &TestApp) -> [i64; 4] {
    [
        app.count("tenants").await,
        app.count("companies").await,
        app.count("audit_log").await,
        app.count("events").await,
    ]
}

/// A second installation: its own database, migrations and management tenant, served with its
/// own PSA_SECRET_KEY.
async fn installation() -> (TestApp, TenantFixture) {
    let mut app = TestApp::unserved().await;
    let mgmt = app.tenant("Central").await;
    sqlx::query("UPDATE tenants SET is_management = true WHERE tenant = $1")
        .bind(mgmt.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (pool, _) = app.api_login_pool().await;
    app.serve(pool, test_config(), None).await;
    (app, mgmt)
}

/// The customer company of `tenant` in the management tenant `mgmt`: its properties, whether
/// it is inactive and its tags.
async fn customer(
    pool: &sqlx::PgPool,
    mgmt: TenantId,
    tenant: TenantId,
) -> (Value, bool, Vec<String>) {
    let (company, properties, inactive): (uuid::Uuid, Value, bool) = sqlx::query_as(
        "SELECT company_id, properties, is_inactive FROM companies \
         WHERE tenant = $1 AND properties ->> 'tenant_id' = $2::text",
    )
    .bind(mgmt)
    .bind(tenant.to_string())
    .fetch_one(pool)
    .await
    .unwrap();
    let tags: Vec<String> = sqlx::query_scalar(
        "SELECT d.tag_text FROM tag_mappings m JOIN tag_definitions d \
           ON d.tenant = m.tenant AND d.tag_id = m.tag_id \
         WHERE m.tenant = $1 AND m.tagged_id = $2 ORDER BY 1",
    )
    .bind(mgmt)
    .bind(company)
    .fetch_all(pool)
    .await
    .unwrap();
    (properties, inactive, tags)
}

#[tokio::test]
async fn a_deleted_tenant_comes_back_from_its_export_row_for_row() {
    let p = provisioned().await;
    let k = p.mgmt.key.clone();
    let resp = post(&p, Some(&k), None, body("Acme")).await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let run = resp.json::<Value>().await.unwrap()["workflow_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let result = finished(&p, &run).await["result"].clone();
    let tenant: TenantId = serde_json::from_value(result["tenant_id"].clone()).unwrap();
    seed(&p.app.db.pool, tenant).await;
    let before = exported_columns(rows(&p.app.db.pool, tenant).await);
    let archive = export(&p.app, &k, tenant, None).await;

    // Canceled, then deleted at once by its workflow.
    let (status, c) = p
        .app
        .call(
            Method::POST,
            &format!("/api/v1/tenants/{tenant}/cancel"),
            Some(&k),
            Some(json!({"reason": "contract ended"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{c}");
    let (status, d) = p
        .app
        .call(
            Method::DELETE,
            &format!("/api/v1/tenants/{tenant}"),
            Some(&k),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{d}");
    for _ in 0..300 {
        if psa_models::tenants::find(&mut p.app.db.pool.acquire().await.unwrap(), tenant)
            .await
            .unwrap()
            .is_none()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (gone, _, tags) = customer(&p.app.db.pool, p.mgmt.tenant, tenant).await;
    assert_eq!(gone["tenant_status"], "deleted", "{gone}");
    assert!(tags.contains(&"Canceled".to_owned()), "{tags:?}");

    let (status, done) = import(&p.app, &k, &archive, "", None).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["mode"], "restore", "{done}");
    assert_eq!(done["tenant"]["tenant_id"], tenant.to_string());
    assert_eq!(done["tenant"]["status"], "active");
    assert_eq!(done["tables"]["companies"]["rows"], 21, "{done}");
    // Links need their secret, which a plain archive does not hold.
    assert!(
        done["tables"]["user_auth_tokens"]["left_out"].is_string(),
        "{done}"
    );
    let mut after = exported_columns(rows(&p.app.db.pool, tenant).await);
    // The import's own audit row is new; everything else is as it was exported.
    after
        .get_mut("audit_log")
        .unwrap()
        .retain(|r| r["action"] != "import");
    for (table, rows_before) in &before {
        if done["tables"][table]["left_out"].is_string() {
            assert!(after[table].is_empty(), "{table}");
            continue;
        }
        assert_eq!(&after[table], rows_before, "{table} differs");
    }
    // The customer record says it is back.
    let (back, inactive, tags) = customer(&p.app.db.pool, p.mgmt.tenant, tenant).await;
    assert_eq!(back["tenant_status"], "active", "{back}");
    assert!(
        back.get("deleted_at").is_none() && back.get("delete_after").is_none(),
        "{back}"
    );
    assert!(!inactive);
    assert!(!tags.contains(&"Canceled".to_owned()), "{tags:?}");
    assert!(tags.contains(&"PSA Customer".to_owned()), "{tags:?}");
    assert_eq!(done["tenant"]["customer"]["tracking"], "tracked", "{done}");
    // Audited in both tenants, and told.
    for t in [tenant, p.mgmt.tenant] {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM audit_log WHERE tenant = $1 AND action = 'import' \
               AND details ->> 'mode' = 'restore'",
        )
        .bind(t)
        .fetch_one(&p.app.db.pool)
        .await
        .unwrap();
        assert_eq!(n, 1, "audit in {t}");
    }
    let event: Value = sqlx::query_scalar(
        "SELECT data FROM events WHERE event_type = 'tenant.imported' AND tenant_id = $1",
    )
    .bind(tenant)
    .fetch_one(&p.app.db.pool)
    .await
    .unwrap();
    assert_eq!(event["mode"], "restore", "{event}");
    assert_eq!(event["rows"]["contacts"], 30, "{event}");
    // Back as a customer: the retention rules no longer redact what it had before its deletion.
    let store = psa_models::exports::ExportStore::local(
        &std::env::temp_dir().join(format!("psa-exports-{}", uuid::Uuid::new_v4())),
    )
    .unwrap();
    psa_models::retention::expire(&p.app.db.pool, &store, chrono::Duration::zero())
        .await
        .unwrap();
    let email: String =
        sqlx::query_scalar("SELECT admin_email FROM tenant_provisioning WHERE tenant_id = $1")
            .bind(tenant)
            .fetch_one(&p.app.db.pool)
            .await
            .unwrap();
    assert_eq!(email, "pat@acme.example");
    // A second import of the same archive: the tenant is here now.
    let (status, again) = import(&p.app, &k, &archive, "", None).await;
    assert_eq!(
        (status, again["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("tenant_exists")),
        "{again}"
    );
}

#[tokio::test]
async fn a_tenant_moves_to_another_installation_and_its_people_sign_in_as_before() {
    let (app, mgmt, acme) = platform().await;
    seed(&app.db.pool, acme.tenant).await;
    let (status, session) = login(&app, &acme).await;
    assert_eq!(status, StatusCode::OK, "{session}");
    let (secret, _) = enrol(&app, session["token"].as_str().unwrap()).await;
    // The classic kind most receivers' keys are (age deprecates it for new ones).
    #[allow(deprecated)]
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let (status, refused) = app
        .call(
            Method::POST,
            &format!(
                "/api/v1/tenants/{}/export?encrypt_to={recipient}",
                mgmt.tenant
            ),
            Some(&mgmt.key),
            None,
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("management_tenant")),
        "{refused}"
    );
    let sealed = export(&app, &mgmt.key, acme.tenant, Some(&recipient)).await;
    assert!(
        sealed.starts_with(b"age-encryption.org/"),
        "encrypted to the recipient"
    );
    let source = rows(&app.db.pool, acme.tenant).await;

    let (there, central) = installation().await;
    let before = written(&there).await;
    // Without the identity, or with another one: refused, nothing written.
    let (status, e) = import(&there, &central.key, &sealed, "", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(e["error"]["fields"]["identity"].is_string(), "{e}");
    let other = age::pq::Identity::generate();
    let (status, e) = import(
        &there,
        &central.key,
        &sealed,
        "",
        Some(secrecy::ExposeSecret::expose_secret(&other.to_string())),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{e}");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("another key"),
        "{e}"
    );
    assert_eq!(written(&there).await, before);

    let key_line = secrecy::ExposeSecret::expose_secret(&identity.to_string()).to_owned();
    let (status, done) = import(&there, &central.key, &sealed, "", Some(&key_line)).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["mode"], "move", "{done}");
    assert_eq!(done["source"]["credentials"], true, "{done}");
    let moved = rows(&there.db.pool, acme.tenant).await;
    for (table, list) in &source {
        let mut list = list.clone();
        let mut got = moved[table].clone();
        if table == "audit_log" {
            got.retain(|r| r["action"] != "import");
        }
        // Sealed again under this installation's key: equal once opened (the sign-in below).
        for r in list.iter_mut().chain(got.iter_mut()) {
            r.remove("secret_sealed");
        }
        assert_eq!(got, list, "{table} differs after the move");
    }
    // The admin signs in there with the old password and authenticator app.
    let (status, first) = login(&there, &acme).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{first}");
    assert_eq!(first["error"]["code"], "mfa_required", "{first}");
    let token = first["mfa_token"]
        .as_str()
        .expect("a second factor is asked for");
    // The next step's code: the current one was used by the enrolment (a code works once).
    let (status, signed_in) = second_step(&there, token, &code(&secret, 1)).await;
    assert_eq!(status, StatusCode::OK, "{signed_in}");
    assert!(signed_in["token"].is_string(), "{signed_in}");
    // Its API key works there too, and sees its own companies.
    let (status, companies) = there
        .call(
            Method::GET,
            "/api/v1/companies?limit=200",
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{companies}");
    // A customer record in the new installation's management tenant.
    let (record, inactive, tags) = customer(&there.db.pool, central.tenant, acme.tenant).await;
    assert_eq!(record["tenant_name"], "Acme", "{record}");
    assert!(!inactive);
    assert!(tags.contains(&"PSA Customer".to_owned()), "{tags:?}");
    let _ = mgmt;
}

/// Every id in `rows` replaced by its first-seen ordinal: rows equal "modulo ids" compare equal.
fn modulo_ids(rows: &[Map<String, Value>]) -> Vec<String> {
    fn walk(v: &Value, seen: &mut Vec<String>) -> Value {
        match v {
            Value::String(s) if uuid::Uuid::try_parse(s).is_ok() && s.len() == 36 => {
                let n = seen.iter().position(|x| x == s).unwrap_or_else(|| {
                    seen.push(s.clone());
                    seen.len() - 1
                });
                Value::String(format!("id#{n}"))
            }
            Value::Array(a) => Value::Array(a.iter().map(|x| walk(x, seen)).collect()),
            Value::Object(o) => {
                Value::Object(o.iter().map(|(k, x)| (k.clone(), walk(x, seen))).collect())
            }
            other => other.clone(),
        }
    }
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            let mut seen = Vec::new();
            walk(&Value::Object(r.clone()), &mut seen).to_string()
        })
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_clone_equals_the_original_modulo_ids_and_sees_none_of_its_rows() {
    let (app, mgmt, acme) = platform().await;
    seed(&app.db.pool, acme.tenant).await;
    let archive = export(&app, &mgmt.key, acme.tenant, None).await;
    let (status, done) = import(
        &app,
        &mgmt.key,
        &archive,
        "?as_new=true&name=Acme%20Sandbox&slug=acme-sandbox",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["mode"], "clone", "{done}");
    assert_eq!(done["tenant"]["name"], "Acme Sandbox");
    assert_eq!(done["tenant"]["slug"], "acme-sandbox");
    assert_eq!(
        done["tenant"]["customer"]["tracking"], "untracked",
        "{done}"
    );
    let clone: TenantId = serde_json::from_value(done["tenant"]["tenant_id"].clone()).unwrap();
    assert_ne!(clone, acme.tenant);
    let original = exported_columns(rows(&app.db.pool, acme.tenant).await);
    let copy = exported_columns(rows(&app.db.pool, clone).await);
    for table in [
        "companies",
        "contacts",
        "tag_definitions",
        "tag_mappings",
        "roles",
        "role_permissions",
        "user_roles",
        "permissions",
    ] {
        assert_eq!(
            modulo_ids(&copy[table]),
            modulo_ids(&original[table]),
            "{table} of the clone"
        );
    }
    // Users kept, without credentials; keys, sessions and history are the original's alone.
    let users = &copy["users"];
    assert_eq!(users.len(), original["users"].len());
    let hashes: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM users WHERE tenant = $1 AND hashed_password IS NOT NULL",
    )
    .bind(clone)
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(hashes, 0);
    assert!(copy["api_keys"].is_empty() && copy["sessions"].is_empty());
    assert_eq!(copy["audit_log"].len(), 1, "only its import");
    // Every id is new, and the ids point within the clone: a company's parent, a tag's target.
    let ids = |rows: &Rows| -> std::collections::BTreeSet<String> {
        rows["companies"]
            .iter()
            .map(|c| c["company_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (mine, theirs) = (ids(&copy), ids(&original));
    assert!(mine.is_disjoint(&theirs));
    for c in &copy["companies"] {
        if let Some(parent) = c["properties"]["parent_id"].as_str() {
            assert!(mine.contains(parent), "a parent outside the clone");
        }
    }
    let contacts: std::collections::BTreeSet<&str> = copy["contacts"]
        .iter()
        .map(|c| c["contact_name_id"].as_str().unwrap())
        .collect();
    for m in &copy["tag_mappings"] {
        let target = m["tagged_id"].as_str().unwrap();
        assert!(
            mine.contains(target) || contacts.contains(target),
            "a tag on something outside the clone"
        );
    }
    // Row-level security keeps them apart: each tenant sees its own companies only.
    for (t, n) in [
        (acme.tenant, original["companies"].len()),
        (clone, copy["companies"].len()),
    ] {
        let mut tx = psa_models::db::begin_tenant(&app.db.pool, t).await.unwrap();
        let seen: i64 = sqlx::query_scalar("SELECT count(*) FROM companies")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(seen as usize, n, "{t} sees only its own");
    }
    // Acme's own key does not reach the clone's rows.
    let some = copy["companies"][0]["company_id"].as_str().unwrap();
    let (status, _) = app
        .call(
            Method::GET,
            &format!("/api/v1/companies/{some}"),
            Some(&acme.key),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // A second clone without a slug gets a free one.
    let (status, again) = import(&app, &mgmt.key, &archive, "?as_new=true", None).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    assert_eq!(again["tenant"]["slug"], "acme-copy", "{again}");
    assert_eq!(again["tenant"]["name"], "Acme (copy)", "{again}");
}

/// The archive's files, and the archive made again from them.
fn files(archive: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.push((name, bytes));
    }
    out
}

fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::default(),
    ));
    for (name, bytes) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes.as_slice())
            .unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

#[tokio::test]
async fn a_damaged_or_unfit_archive_is_refused_and_nothing_is_written() {
    let (app, mgmt, acme) = platform().await;
    seed(&app.db.pool, acme.tenant).await;
    let archive = export(&app, &mgmt.key, acme.tenant, None).await;
    // Acme is deleted here, as its rows would be (its customer record stays).
    sqlx::query("DELETE FROM tenants WHERE tenant = $1")
        .bind(acme.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let before = written(&app).await;

    let tampered = {
        let mut f = files(&archive);
        let companies = f
            .iter_mut()
            .find(|(n, _)| n == "tables/companies.jsonl")
            .unwrap();
        let at = companies
            .1
            .windows(9)
            .position(|w| w == b"Company 1")
            .unwrap();
        companies.1[at] = b'K';
        pack(&f)
    };
    let newer = {
        let mut f = files(&archive);
        let manifest = f.iter_mut().find(|(n, _)| n == "manifest.json").unwrap();
        let mut m: Value = serde_json::from_slice(&manifest.1).unwrap();
        m["schema_version"] = json!(psa_models::exports::schema_version() + 1);
        manifest.1 = serde_json::to_vec(&m).unwrap();
        pack(&f)
    };
    // Rewritten with its manifest made to match: a plain archive still carries only what an
    // export writes (no password hash planted), and does not claim credentials.
    let with_manifest = |edit: &dyn Fn(&str, &mut Vec<u8>), credentials: bool| {
        let mut f = files(&archive);
        for (name, bytes) in f.iter_mut() {
            edit(name, bytes);
        }
        let digests: Vec<(String, String)> = f
            .iter()
            .map(|(n, b)| {
                (
                    n.clone(),
                    format!("{:x}", <sha2::Sha256 as sha2::Digest>::digest(b)),
                )
            })
            .collect();
        let manifest = f.iter_mut().find(|(n, _)| n == "manifest.json").unwrap();
        let mut m: Value = serde_json::from_slice(&manifest.1).unwrap();
        for (name, digest) in digests {
            if let Some(table) = name
                .strip_prefix("tables/")
                .and_then(|t| t.strip_suffix(".jsonl"))
            {
                m["tables"][table]["sha256"] = json!(digest);
            }
        }
        m["credentials"] = json!(credentials);
        manifest.1 = serde_json::to_vec(&m).unwrap();
        pack(&f)
    };
    let planted = with_manifest(
        &|name, bytes| {
            if name == "tables/users.jsonl" {
                let text = String::from_utf8(bytes.clone()).unwrap();
                *bytes = text
                    .replace(
                        "{\"tenant\"",
                        "{\"hashed_password\":\"$argon2id$planted\",\"tenant\"",
                    )
                    .into_bytes();
            }
        },
        false,
    );
    let claims = with_manifest(&|_, _| {}, true);
    let cut = archive[..archive.len() / 2].to_vec();
    let ours = psa_models::exports::schema_version().to_string();
    let theirs = (psa_models::exports::schema_version() + 1).to_string();
    for (what, bytes, says) in [
        ("tampered", tampered, vec!["SHA-256"]),
        ("cut short", cut, vec!["cut short"]),
        ("newer", newer, vec![ours.as_str(), theirs.as_str()]),
        (
            "not an archive",
            b"hello".to_vec(),
            vec!["not an export archive"],
        ),
        (
            "a planted column",
            planted,
            vec!["hashed_password", "leaves out"],
        ),
        ("credentials in the clear", claims, vec!["not encrypted"]),
    ] {
        let (status, e) = import(&app, &mgmt.key, &bytes, "", None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {e}");
        assert!(e["error"]["fields"]["archive"].is_string(), "{what}: {e}");
        let message = e["error"]["message"].as_str().unwrap();
        for s in says {
            assert!(message.contains(s), "{what}: {message}");
        }
        assert_eq!(written(&app).await, before, "{what} wrote something");
    }
    // Not the management tenant's staff: refused before the archive is read.
    let (status, _) = import(&app, &mgmt.key.replace("psa_", "psa_x"), &archive, "", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let other = app.tenant("Other").await;
    let before = written(&app).await;
    let (status, e) = import(&app, &other.key, &archive, "", None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{e}");
    // Its slug taken by another tenant meanwhile: refused unless a free one is given.
    sqlx::query("UPDATE tenants SET slug = 'acme' WHERE tenant = $1")
        .bind(other.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let (status, e) = import(&app, &mgmt.key, &archive, "", None).await;
    assert_eq!(
        (status, e["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("slug_taken")),
        "{e}"
    );
    assert_eq!(written(&app).await, before);
    // A preview says what an import would do, and writes nothing either.
    let (status, preview) = import(&app, &mgmt.key, &archive, "?dry_run=true", None).await;
    assert_eq!(status, StatusCode::OK, "{preview}");
    assert_eq!(preview["mode"], "restore", "{preview}");
    assert_eq!(preview["source"]["rows"]["companies"], 21, "{preview}");
    assert!(
        !preview["problems"].as_array().unwrap().is_empty(),
        "{preview}"
    );
    assert_eq!(written(&app).await, before);
    let (status, done) = import(&app, &mgmt.key, &archive, "?slug=acme-returns", None).await;
    assert_eq!(status, StatusCode::CREATED, "{done}");
    assert_eq!(done["tenant"]["slug"], "acme-returns");
}

/// In a real browser: the tenants page leads to "Import a tenant"; an empty form is refused on
/// its field; an archive uploaded is previewed (tenant, schema, encryption, rows, what it would
/// be), then imported, and the tenant is there. Every page passes axe and is kept as a
/// screenshot.
#[tokio::test(flavor = "multi_thread")]
async fn in_the_browser_an_archive_is_previewed_then_imported() {
    use super::console::{review, ui};
    let (app, mgmt, acme) = platform().await;
    seed(&app.db.pool, acme.tenant).await;
    let archive = export(&app, &mgmt.key, acme.tenant, None).await;
    let file = std::env::temp_dir().join(format!("acme-{}.tar.gz", uuid::Uuid::new_v4()));
    std::fs::write(&file, &archive).unwrap();
    sqlx::query("DELETE FROM tenants WHERE tenant = $1")
        .bind(acme.tenant)
        .execute(&app.db.pool)
        .await
        .unwrap();
    let browser = psa_testing::Browser::start(1280, 900).await;
    let b = &browser.client;
    ui::sign_in_as(b, &app.base, &mgmt).await;
    ui::wait_text(b, "h1", "What needs attention", 20).await;
    b.goto(&format!("{}/console/tenants", app.base))
        .await
        .unwrap();
    ui::click(b, "a[href='/console/tenants/import']").await;
    ui::wait_text(b, "h1", "Import a tenant", 20).await;
    review(&browser, "import-tenant").await;
    ui::click(b, "button[value=preview]").await;
    ui::wait_text(b, "main", "Choose the archive to import", 20).await;
    review(&browser, "import-tenant-field-error").await;
    b.wait()
        .for_element(fantoccini::Locator::Id("archive"))
        .await
        .unwrap()
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    ui::click(b, "button[value=preview]").await;
    let shown = ui::wait_text(b, "section.card", "What the archive holds", 30).await;
    assert!(
        shown.contains("Acme") && shown.contains("a restore"),
        "{shown}"
    );
    assert!(shown.contains("people set a password again"), "{shown}");
    review(&browser, "import-tenant-preview").await;
    ui::click(b, "button[value=import]").await;
    let done = ui::wait_text(b, "p.notice", "Imported Acme as a restore", 60).await;
    assert!(done.contains("rows"), "{done}");
    review(&browser, "import-tenant-done").await;
    ui::click(b, "a.button[href^='/console/tenants/']").await;
    ui::wait_text(b, "dl.facts", "Tenant ID", 20).await;
    let _ = std::fs::remove_file(&file);
    let back: i64 = sqlx::query_scalar("SELECT count(*) FROM companies WHERE tenant = $1")
        .bind(acme.tenant)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(back, 21);
    let audited: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE action = 'import'")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        audited, 2,
        "audited in the tenant and the management tenant"
    );
}
