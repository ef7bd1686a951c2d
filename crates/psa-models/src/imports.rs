//! Reading a tenant's export back (the import's first half): the archive unpacked into a private
//! scratch directory and checked whole before anything is written to the database.
//!
//! An archive is accepted only when: it is a gzip'd tar of `manifest.json` and the files the
//! manifest names (`tables/<table>.jsonl`), nothing else, no path outside those; every file's
//! SHA-256 and row count are the manifest's; its format is one this code reads; and its schema is
//! not newer than this code's (an older one is brought forward by the importer). Everything
//! refused is a validation error on `archive` naming what is wrong.
//!
//! The second half, [`load`], writes the rows back in the caller's transaction, confined to the
//! tenant by row-level security: table by table, a few thousand rows per statement
//! (`jsonb_populate_recordset`, so PostgreSQL reads each value as its column's type), the
//! foreign keys deferred to the end (they form cycles) and checked there. An archive from an
//! older schema is brought forward row by row by [`UPGRADES`]; a column the archive lacks takes
//! its default. Memory stays flat in the archive's size: one batch of rows at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use tokio::io::AsyncBufReadExt;
use uuid::Uuid;

use crate::exports::{EXPORTED, Manifest, SCRUBBED, SealedColumn, Sealer, schema_version};
use crate::{Error, Result, TenantId, db, lifecycle};

/// The formats this code reads.
pub const FORMATS: [&str; 1] = ["psa-tenant-export/1"];

fn refused(message: impl Into<std::borrow::Cow<'static, str>>) -> Error {
    Error::validation("archive", message)
}

/// Whether `name` is a path the archive may hold: `manifest.json`, or `tables/<table>.jsonl`
/// with a table name of lowercase letters, digits and underscores.
fn allowed_entry(name: &str) -> bool {
    if name == "manifest.json" {
        return true;
    }
    name.strip_prefix("tables/")
        .and_then(|rest| rest.strip_suffix(".jsonl"))
        .is_some_and(|table| {
            !table.is_empty()
                && table.len() <= 63
                && table
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        })
}

/// The scratch directories' names (in the system's temporary directory).
pub const SCRATCH_PREFIX: &str = "psa-import-";

/// The first bytes of an age-encrypted file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/";

/// Unpacks the archive file at `path` into `scratch` and checks it, as [`unpack`]: a plain
/// `tar.gz`, or one encrypted to an age X25519 key, opened with `identity` (the contents of an
/// `age-keygen` identity file). Returns its manifest and whether it was encrypted.
pub fn unpack_file(
    path: &Path,
    identity: Option<&secrecy::SecretString>,
    scratch: &Path,
    max_bytes: u64,
) -> Result<(Manifest, bool)> {
    use secrecy::ExposeSecret;
    let mut file =
        BufReader::new(std::fs::File::open(path).map_err(|e| {
            Error::validation("archive", format!("the archive cannot be read: {e}"))
        })?);
    let encrypted = file
        .fill_buf()
        .map_err(Error::internal)?
        .starts_with(AGE_MAGIC);
    if !encrypted {
        if !file
            .fill_buf()
            .map_err(Error::internal)?
            .starts_with(&[0x1f, 0x8b])
        {
            return Err(refused(
                "not an export archive: one is a gzip'd tar (an export's download) or that, \
                 encrypted with age (a move's export)",
            ));
        }
        return Ok((unpack(file, scratch, max_bytes)?, false));
    }
    let identity = identity.ok_or_else(|| {
        Error::validation(
            "identity",
            "The archive is encrypted: give the identity (the age key file) it was encrypted to",
        )
    })?;
    let identities = age::IdentityFile::from_buffer(identity.expose_secret().as_bytes())
        .ok()
        .and_then(|f| f.into_identities().ok())
        .filter(|ids| !ids.is_empty())
        .ok_or_else(|| {
            Error::validation(
                "identity",
                "not an age identity (a key file as age-keygen writes it, AGE-SECRET-KEY-1...)",
            )
        })?;
    let decryptor = age::Decryptor::new_buffered(file)
        .map_err(|e| refused(format!("the encrypted archive is damaged: {e}")))?;
    let plain = decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => Error::validation(
                "identity",
                "This identity does not open the archive: it was encrypted to another key",
            ),
            other => refused(format!("the encrypted archive cannot be opened: {other}")),
        })?;
    Ok((unpack(plain, scratch, max_bytes)?, true))
}

/// The archive's tenant row (checked by [`unpack`]): the one line of `tables/tenants.jsonl`.
pub fn tenant_row(scratch: &Path, manifest: &Manifest) -> Result<Map<String, Value>> {
    let entry = manifest
        .tables
        .get("tenants")
        .filter(|e| e.rows == 1)
        .ok_or_else(|| refused("the archive does not hold exactly one tenant"))?;
    let mut line = String::new();
    BufReader::new(std::fs::File::open(scratch.join(&entry.file)).map_err(Error::internal)?)
        .take(MAX_LINE)
        .read_line(&mut line)
        .map_err(|_| refused("the archive's tenant row is not text"))?;
    serde_json::from_str(&line)
        .map_err(|e| refused(format!("the archive's tenant row is not a row: {e}")))
}

/// The largest `manifest.json` read (a manifest of every table is a few kilobytes).
const MAX_MANIFEST: u64 = 1 << 20;

/// The longest row read back (a row with a large JSON document is well under this).
pub const MAX_LINE: u64 = 16 << 20;

/// A reader that refuses to give more than `left` bytes: what the archive decompresses to is
/// bounded whatever its headers claim.
struct Capped<R> {
    inner: R,
    left: u64,
    max: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n as u64 > self.left {
            return Err(std::io::Error::other(format!(
                "the archive unpacks to more than {} bytes",
                self.max
            )));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

/// Unpacks the plain archive read from `input` (a gzip'd tar) into `scratch` (which must exist
/// and be empty), at most `max_bytes` unpacked, and checks it whole. Returns its manifest.
///
/// The manifest must come first (an export writes it first) and every later entry must be a
/// file it names, so nothing else is ever written; entries are read raw (no long-name or
/// extended headers, which would be read into memory whole: an export's names are short).
pub fn unpack(input: impl Read, scratch: &Path, max_bytes: u64) -> Result<Manifest> {
    let capped = Capped {
        inner: flate2::read::GzDecoder::new(input),
        left: max_bytes,
        max: max_bytes,
    };
    let mut archive = tar::Archive::new(capped);
    let mut seen = BTreeSet::new();
    let mut manifest: Option<Manifest> = None;
    let entries = archive
        .entries()
        .map_err(|e| refused(format!("not a gzip'd tar archive: {e}")))?
        .raw(true);
    for entry in entries {
        let mut entry = entry.map_err(damaged)?;
        if entry.header().entry_type() != tar::EntryType::Regular {
            return Err(refused("the archive holds something other than files"));
        }
        let name = entry
            .path()
            .map_err(|_| refused("a file's name in the archive is not readable"))?
            .to_string_lossy()
            .into_owned();
        if !allowed_entry(&name) {
            return Err(refused(format!(
                "the archive holds {name:?}, which no export writes"
            )));
        }
        let Some(m) = &manifest else {
            if name != "manifest.json" {
                return Err(refused("the archive does not begin with its manifest.json"));
            }
            if entry.size() > MAX_MANIFEST {
                return Err(refused("manifest.json is larger than any export writes"));
            }
            let mut raw = Vec::new();
            entry.read_to_end(&mut raw).map_err(damaged)?;
            manifest = Some(read_manifest(&raw)?);
            seen.insert(name);
            continue;
        };
        if !m.tables.values().any(|t| t.file == name) {
            return Err(refused(format!(
                "the archive holds {name:?}, which its manifest does not name"
            )));
        }
        if !seen.insert(name.clone()) {
            return Err(refused(format!("the archive holds {name:?} twice")));
        }
        let path = scratch.join(&name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::internal)?;
        }
        let mut out = std::fs::File::create(&path).map_err(Error::internal)?;
        std::io::copy(&mut entry, &mut out).map_err(damaged)?;
    }
    let manifest = manifest.ok_or_else(|| refused("the archive has no manifest.json"))?;
    check(scratch, &seen, manifest)
}

fn damaged(e: std::io::Error) -> Error {
    refused(format!("the archive is damaged or cut short: {e}"))
}

/// The manifest, of a format and schema this code reads.
fn read_manifest(raw: &[u8]) -> Result<Manifest> {
    let manifest: Manifest = serde_json::from_slice(raw)
        .map_err(|e| refused(format!("manifest.json is not a manifest: {e}")))?;
    if !FORMATS.contains(&manifest.format.as_str()) {
        return Err(refused(format!(
            "the archive's format is {:?}; this installation reads {}",
            manifest.format,
            FORMATS.join(", ")
        )));
    }
    let ours = schema_version();
    if manifest.schema_version > ours {
        return Err(refused(format!(
            "the archive was made by a newer installation (schema {}); this one has schema {ours}: \
             upgrade it first",
            manifest.schema_version
        )));
    }
    for (table, entry) in &manifest.tables {
        if entry.file != format!("tables/{table}.jsonl") || !allowed_entry(&entry.file) {
            return Err(refused(format!(
                "the manifest names {:?} for table {table:?}",
                entry.file
            )));
        }
    }
    Ok(manifest)
}

/// The unpacked files checked against the manifest: each there, its SHA-256 and rows the
/// manifest's.
fn check(scratch: &Path, seen: &BTreeSet<String>, manifest: Manifest) -> Result<Manifest> {
    for entry in manifest.tables.values() {
        if !seen.contains(&entry.file) {
            return Err(refused(format!(
                "the archive lacks {:?}, which its manifest names",
                entry.file
            )));
        }
        let (sha256, rows) = digest(&scratch.join(&entry.file))?;
        if sha256 != entry.sha256 {
            return Err(refused(format!(
                "{} is not what was exported (its SHA-256 differs from the manifest's)",
                entry.file
            )));
        }
        if rows != entry.rows {
            return Err(refused(format!(
                "{} has {rows} rows; its manifest says {}",
                entry.file, entry.rows
            )));
        }
    }
    Ok(manifest)
}

/// SHA-256 (hex) and line count of a file.
fn digest(path: &PathBuf) -> Result<(String, u64)> {
    let mut reader = BufReader::new(std::fs::File::open(path).map_err(Error::internal)?);
    let mut hash = Sha256::new();
    let mut rows = 0u64;
    loop {
        let buf = reader.fill_buf().map_err(Error::internal)?;
        if buf.is_empty() {
            break;
        }
        rows += buf.iter().filter(|b| **b == b'\n').count() as u64;
        hash.update(buf);
        let n = buf.len();
        reader.consume(n);
    }
    Ok((format!("{:x}", hash.finalize()), rows))
}

/// A change of schema that alters what an archive's rows mean, and the code that brings a row of
/// an older archive forward. A migration that adds a column with a default or a nullable one
/// needs none (a column the archive lacks takes its default); one that renames, splits or
/// reinterprets a column, or adds one that must be filled from others, adds an entry here, and
/// the archive kept in the test data (made by an older version) proves it.
pub struct Upgrade {
    /// The migration that made the change: archives of an older schema are brought forward.
    pub version: i64,
    pub table: &'static str,
    pub apply: fn(&mut Map<String, Value>),
}

/// Every upgrade, oldest first. None yet: archives record their schema since
/// `20261209000002`, and no migration since has changed what a row means.
pub const UPGRADES: &[Upgrade] = &[];

/// Brings a row of `table` from an archive of schema `from` forward to this code's.
fn upgrade(from: i64, table: &str, row: &mut Map<String, Value>) {
    for u in UPGRADES
        .iter()
        .filter(|u| u.version > from && u.table == table)
    {
        (u.apply)(row);
    }
}

/// What a clone leaves out, and why: the original's people's presence and history, and every
/// credential (a clone's users are invited again when asked).
const CLONE_LEAVES: &[(&str, &str)] = &[
    ("api_keys", "API keys belong to the original"),
    ("audit_log", "the clone's history starts at its import"),
    ("sessions", "sessions belong to the original"),
    (
        "sso_identities",
        "sign-in identities belong to the original",
    ),
    (
        "support_sessions",
        "support sessions belong to the original",
    ),
    ("user_auth_tokens", "links belong to the original"),
    ("user_devices", "devices belong to the original"),
    ("user_passkeys", "a clone's users have no credentials"),
    ("user_recovery_codes", "a clone's users have no credentials"),
    ("user_totp", "a clone's users have no credentials"),
];

/// Columns a clone empties: credentials, and ids that name the original elsewhere (its billing
/// account, its verified domains, which one tenant holds).
const CLONE_EMPTIES: &[(&str, &str)] = &[
    ("users", "hashed_password"),
    ("users", "two_factor_secret"),
    ("sso_connections", "client_secret_sealed"),
    ("sso_domains", "verified_at"),
    ("tenant_subscriptions", "billing_customer_id"),
    ("tenant_subscriptions", "billing_subscription_id"),
    ("tenants", "payment_platform_id"),
    ("tenants", "payment_method_id"),
    ("tenants", "stripe_event_id"),
    ("tenants", "auth_service_id"),
];

/// How an import writes an unpacked archive.
pub struct Plan<'a> {
    pub manifest: &'a Manifest,
    /// Where [`unpack`] put it.
    pub dir: &'a Path,
    /// The tenant the rows become: the archive's own, or a new one for a clone.
    pub tenant: TenantId,
    /// A clone: every id remapped, credentials and the original's presence left out.
    pub clone: bool,
    /// Values written over the archive's `tenants` row (a new name or slug, the status).
    pub tenant_row: Map<String, Value>,
    /// Seals a credentials archive's opened secrets under this installation's key; without it
    /// such an archive is refused.
    pub sealer: Option<&'a dyn Sealer>,
    /// The archive came encrypted to a key the importer holds: only such an archive may carry
    /// credentials (a plain one carries what an ordinary export keeps, [`EXPORTED`] columns).
    pub encrypted: bool,
}

/// What an import did with one table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TableImport {
    /// Rows written.
    pub rows: u64,
    /// Why the table's rows were not written, when they were not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub left_out: Option<String>,
}

/// A clone's ids: the original tenant's becomes the clone's, every other id a new one derived
/// from it and the clone's (SHA-256 of both, as a custom UUID), so each id maps the same way wherever it
/// appears (keys, foreign keys, tag mappings' `tagged_id`, ids inside JSON) without a table of
/// them in memory.
struct Remap {
    from: Uuid,
    to: Uuid,
}

impl Remap {
    fn id(&self, old: Uuid) -> Uuid {
        if old == self.from {
            self.to
        } else {
            let digest = Sha256::new()
                .chain_update(self.to.as_bytes())
                .chain_update(old.as_bytes())
                .finalize();
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            uuid::Builder::from_custom_bytes(bytes).into_uuid()
        }
    }

    /// Every id in `value`: a string that is a UUID, at any depth.
    fn value(&self, value: &mut Value) {
        match value {
            Value::String(s) if s.len() == 36 => {
                if let Ok(u) = Uuid::try_parse(s) {
                    *s = self.id(u).to_string();
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.value(v)),
            Value::Object(map) => map.values_mut().for_each(|v| self.value(v)),
            _ => {}
        }
    }
}

/// A column of a table here.
struct Column {
    name: String,
    /// Holds ids (uuid, uuid[]) or JSON that may: remapped in a clone.
    ids: bool,
    /// Must be given: NOT NULL without a default.
    required: bool,
}

async fn columns(conn: &mut PgConnection, table: &str) -> Result<Vec<Column>> {
    let rows: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT a.attname::text, t.typname::text, a.attnotnull AND NOT a.atthasdef \
         FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid \
         WHERE a.attrelid = to_regclass(quote_ident($1)) AND a.attnum > 0 AND NOT a.attisdropped \
           AND a.attgenerated = '' ORDER BY a.attnum",
    )
    .bind(table)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(name, ty, required)| Column {
            name,
            ids: matches!(ty.as_str(), "uuid" | "_uuid" | "json" | "jsonb"),
            required,
        })
        .collect())
}

/// Rows per statement, and the most bytes of JSON one may carry.
const BATCH_ROWS: usize = 2000;
const BATCH_BYTES: usize = 4 << 20;

/// Writes the unpacked archive into the database, in the caller's transaction (which it
/// confines to the plan's tenant and leaves confined). Returns what it did, table by table.
/// Rows that do not fit (a foreign key to nothing, a duplicate, a value of the wrong type) are
/// a validation error naming the table; the caller rolls back.
pub async fn load(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
) -> Result<BTreeMap<String, TableImport>> {
    if plan.manifest.credentials && !plan.encrypted {
        return Err(refused(
            "the archive says it carries credentials but is not encrypted: only a move's \
             export (encrypted to a key) does",
        ));
    }
    sqlx::query("SET CONSTRAINTS ALL DEFERRED")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SET LOCAL statement_timeout = '1h'")
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT set_config('psa.importing', 'on', true)")
        .execute(&mut *conn)
        .await?;
    db::enter_tenant(conn, plan.tenant).await?;
    let here: BTreeSet<String> = lifecycle::tenant_tables(conn).await?.into_iter().collect();
    // The tenant's row first: the others name it (the order is otherwise free, the keys being
    // checked at the end).
    let mut tables: Vec<&String> = plan.manifest.tables.keys().collect();
    tables.sort_by_key(|t| (t.as_str() != "tenants", t.as_str()));
    if tables.first().is_none_or(|t| t.as_str() != "tenants") {
        return Err(refused("the archive has no tenants table"));
    }
    let remap = plan.clone.then_some(Remap {
        from: plan.manifest.tenant_id.0,
        to: plan.tenant.0,
    });
    let mut report = BTreeMap::new();
    for table in tables {
        let entry = &plan.manifest.tables[table];
        if let Some((_, why)) = CLONE_LEAVES.iter().find(|(t, _)| plan.clone && t == table) {
            report.insert(table.clone(), left(why));
            continue;
        }
        if !here.contains(table) {
            return Err(refused(format!(
                "the archive holds table {table}, which this installation does not have"
            )));
        }
        let columns = columns(conn, table).await?;
        let written = write_table(conn, plan, table, entry, &columns, remap.as_ref()).await?;
        report.insert(table.clone(), written);
    }
    // The deferred keys, checked now: a row that names nothing is refused here, by table.
    sqlx::query("SET CONSTRAINTS ALL IMMEDIATE")
        .execute(&mut *conn)
        .await
        .map_err(|e| not_fitting("", e))?;
    Ok(report)
}

fn left(why: &str) -> TableImport {
    TableImport {
        rows: 0,
        left_out: Some(why.to_owned()),
    }
}

/// One table's rows, batch by batch.
async fn write_table(
    conn: &mut PgConnection,
    plan: &Plan<'_>,
    table: &str,
    entry: &crate::exports::TableEntry,
    columns: &[Column],
    remap: Option<&Remap>,
) -> Result<TableImport> {
    let file = tokio::fs::File::open(plan.dir.join(&entry.file))
        .await
        .map_err(Error::internal)?;
    let mut reader = tokio::io::BufReader::with_capacity(1 << 16, file);
    let mut line = Vec::new();
    let source = plan.manifest.tenant_id.0.to_string();
    let sealed = SealedColumn::of(table).filter(|_| plan.manifest.credentials && !plan.clone);
    // What an ordinary export keeps of this table: all a plain archive may carry, and all a
    // clone keeps (whatever the archive), its free-form JSON without secret-looking keys.
    let reviewed: &[&str] = EXPORTED
        .iter()
        .find(|(t, _)| *t == table)
        .map_or(&[][..], |(_, c)| *c);
    let scrubbed: Vec<&str> = SCRUBBED
        .iter()
        .filter(|(t, _)| plan.clone && *t == table)
        .map(|(_, c)| *c)
        .collect();
    let empties: Vec<&str> = CLONE_EMPTIES
        .iter()
        .filter(|(t, _)| plan.clone && *t == table)
        .map(|(_, c)| *c)
        .collect();
    // The columns written: those of the first row, which every row must have.
    let mut names: Option<Vec<String>> = None;
    let mut batch = String::new();
    let mut in_batch = 0usize;
    let mut rows = 0u64;
    while next_line(&mut reader, &mut line, &entry.file).await? {
        let mut row: Map<String, Value> = serde_json::from_slice(&line).map_err(|e| {
            refused(format!(
                "{} holds a line that is not a row: {e}",
                entry.file
            ))
        })?;
        upgrade(plan.manifest.schema_version, table, &mut row);
        if plan.clone {
            row.retain(|k, _| reviewed.contains(&k.as_str()));
            for c in &scrubbed {
                if let Some(v) = row.get_mut(*c) {
                    crate::exports::scrub(v);
                }
            }
        } else if !plan.manifest.credentials
            && let Some(extra) = row.keys().find(|k| !reviewed.contains(&k.as_str()))
        {
            return Err(refused(format!(
                "the archive's {table} carries column {extra}, which an export leaves out"
            )));
        }
        // A support session open when the tenant was exported is over: the operator's session
        // it hung on is not here.
        if table == "support_sessions" && row.get("ended_at").is_some_and(Value::is_null) {
            row.insert("ended_at".into(), json!(plan.manifest.created_at));
            row.insert(
                "end_reason".into(),
                crate::support::EndReason::Revoked.as_str().into(),
            );
        }
        if row.get("tenant").and_then(Value::as_str) != Some(source.as_str()) {
            return Err(refused(format!(
                "{} holds a row of another tenant than the archive's",
                entry.file
            )));
        }
        if names.is_none() {
            let keys: Vec<String> = row.keys().cloned().collect();
            if let Some(unknown) = keys.iter().find(|k| !columns.iter().any(|c| &c.name == *k)) {
                return Err(refused(format!(
                    "the archive's {table} has column {unknown}, which this installation does not have"
                )));
            }
            let missing: Vec<&str> = columns
                .iter()
                .filter(|c| c.required && !keys.contains(&c.name))
                .map(|c| c.name.as_str())
                .collect();
            if !missing.is_empty() {
                // Left out by a plain export on purpose (credentials): those rows mean nothing
                // without them. Anything else missing is a schema this code cannot bring forward.
                if missing
                    .iter()
                    .all(|m| entry.left_out.iter().any(|l| l == m))
                {
                    return Ok(left("its credentials are not in a plain archive"));
                }
                return Err(refused(format!(
                    "the archive's {table} lacks column {}, which this installation requires",
                    missing.join(", ")
                )));
            }
            names = Some(keys);
        }
        let names = names.as_deref().unwrap_or_default();
        if row.len() != names.len() || !names.iter().all(|n| row.contains_key(n)) {
            return Err(refused(format!(
                "{} holds rows with different columns",
                entry.file
            )));
        }
        if table == "tenants" {
            if rows > 0 {
                return Err(refused("the archive holds more than one tenant"));
            }
            if row.get("is_management").and_then(Value::as_bool) == Some(true) {
                return Err(refused(
                    "the archive is of a management tenant, which is never imported",
                ));
            }
        }
        if let Some(remap) = remap {
            for c in columns.iter().filter(|c| c.ids) {
                if let Some(v) = row.get_mut(&c.name) {
                    remap.value(v);
                }
            }
            for c in &empties {
                if let Some(v) = row.get_mut(*c) {
                    *v = Value::Null;
                }
            }
        }
        row.insert("tenant".into(), plan.tenant.0.to_string().into());
        if table == "tenants" {
            for (k, v) in &plan.tenant_row {
                row.insert(k.clone(), v.clone());
            }
        }
        if let Some((column, name)) = sealed
            && let Some(plain) = row.get(name).and_then(Value::as_str)
        {
            let sealer = plan.sealer.ok_or_else(|| Error::Unavailable {
                code: "unavailable",
                message: "PSA_SECRET_KEY is not set here: the archive's credentials are sealed \
                          under it when imported"
                    .into(),
            })?;
            let sealed_value = sealer.seal(column, &column.row(&row), plain);
            row.insert(name.to_owned(), sealed_value.into());
        }
        if table == "tenants" {
            // The confined role may not insert tenants: the one row goes through the function
            // the migration `imports` made for this.
            sqlx::query("SELECT psa_import_tenant($1::text::jsonb)")
                .bind(Value::Object(row).to_string())
                .execute(&mut *conn)
                .await
                .map_err(|e| not_fitting(table, e))?;
            rows += 1;
            continue;
        }
        batch.push(if in_batch == 0 { '[' } else { ',' });
        batch.push_str(&Value::Object(row).to_string());
        in_batch += 1;
        rows += 1;
        if in_batch >= BATCH_ROWS || batch.len() >= BATCH_BYTES {
            insert(conn, table, names, &mut batch).await?;
            in_batch = 0;
        }
    }
    if in_batch > 0 {
        insert(
            conn,
            table,
            names.as_deref().unwrap_or_default(),
            &mut batch,
        )
        .await?;
    }
    Ok(TableImport {
        rows,
        left_out: None,
    })
}

/// Reads the next line of `file` into `line` (without its newline), at most [`MAX_LINE`]
/// bytes; `false` at the end.
async fn next_line(
    reader: &mut tokio::io::BufReader<tokio::fs::File>,
    line: &mut Vec<u8>,
    file: &str,
) -> Result<bool> {
    use tokio::io::AsyncReadExt;
    line.clear();
    let n = (&mut *reader)
        .take(MAX_LINE + 1)
        .read_until(b'\n', line)
        .await
        .map_err(Error::internal)?;
    if n == 0 {
        return Ok(false);
    }
    if line.last() == Some(&b'\n') {
        line.pop();
    } else if n as u64 > MAX_LINE {
        return Err(refused(format!(
            "{file} holds a row longer than {MAX_LINE} bytes"
        )));
    }
    Ok(true)
}

/// Inserts the batch (a JSON array being built, without its closing bracket) and empties it.
async fn insert(
    conn: &mut PgConnection,
    table: &str,
    names: &[String],
    batch: &mut String,
) -> Result<()> {
    batch.push(']');
    let list = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "INSERT INTO \"{table}\" ({list}) SELECT {list} \
         FROM jsonb_populate_recordset(NULL::\"{table}\", $1::text::jsonb)"
    );
    sqlx::query(&sql)
        .bind(batch.as_str())
        .execute(conn)
        .await
        .map_err(|e| not_fitting(table, e))?;
    batch.clear();
    Ok(())
}

/// A database's refusal of the archive's rows, as the importer's error: the tenant or its slug
/// present already is a conflict, anything else a validation error naming the table.
fn not_fitting(table: &str, e: sqlx::Error) -> Error {
    let Some(db) = e.as_database_error() else {
        return Error::Database(e);
    };
    match db.constraint() {
        Some("tenants_pkey") => Error::InvalidState {
            code: "tenant_exists",
            message: "A tenant with the archive's id exists in this installation".into(),
        },
        Some("tenants_slug_key") => Error::Conflict {
            field: Some("slug".into()),
            message: "Another tenant has the archive's slug: give a free one".into(),
        },
        Some("sso_domains_verified") => Error::Conflict {
            field: None,
            message: "A domain the archive's tenant verified is verified by another tenant here"
                .into(),
        },
        constraint => {
            let what = if table.is_empty() {
                "the archive's rows".to_owned()
            } else {
                format!("the archive's {table}")
            };
            // The database's own words may quote the archive's values (a credential, in a
            // move's archive): the log gets the code, the caller what kind of misfit it is.
            let code = db.code().unwrap_or_default().into_owned();
            tracing::warn!(table, %code, constraint, "an imported row does not fit");
            let why = match code.as_str() {
                "23503" => format!(
                    "a row names one that is not there ({})",
                    constraint.unwrap_or("a foreign key")
                ),
                "23505" => format!(
                    "a row repeats another's key ({})",
                    constraint.unwrap_or("a unique key")
                ),
                "23502" => "a row lacks a value its column requires".to_owned(),
                "23514" => format!("a row breaks a rule ({})", constraint.unwrap_or("a check")),
                c if c.starts_with("22") => "a value does not fit its column's type".to_owned(),
                _ => format!("the database refused it ({code})"),
            };
            refused(format!("{what} do not fit this installation: {why}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exports::TableEntry;

    /// An archive as an export writes it, with `edit` applied to the files before packing.
    fn archive(edit: impl FnOnce(&mut Vec<(String, Vec<u8>)>, &mut Manifest)) -> Vec<u8> {
        let rows =
            b"{\"tenant\":\"t\",\"company_id\":\"c\"}\n{\"tenant\":\"t\",\"company_id\":\"d\"}\n";
        let mut manifest = Manifest {
            format: "psa-tenant-export/1".into(),
            schema_version: schema_version(),
            export_id: uuid::Uuid::nil(),
            tenant_id: crate::TenantId(uuid::Uuid::nil()),
            tenant_name: "Acme".into(),
            created_at: chrono::Utc::now(),
            tables: Default::default(),
            credentials: false,
        };
        manifest.tables.insert(
            "companies".into(),
            TableEntry {
                file: "tables/companies.jsonl".into(),
                rows: 2,
                sha256: format!("{:x}", Sha256::digest(rows)),
                left_out: Vec::new(),
            },
        );
        let mut files = vec![("tables/companies.jsonl".to_owned(), rows.to_vec())];
        edit(&mut files, &mut manifest);
        files.insert(
            0,
            (
                "manifest.json".into(),
                serde_json::to_vec(&manifest).unwrap(),
            ),
        );
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

    fn scratch() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("psa-import-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn unpacked(bytes: &[u8]) -> Result<Manifest> {
        let dir = scratch();
        let out = unpack(bytes, &dir, 1 << 20);
        std::fs::remove_dir_all(&dir).unwrap();
        out
    }

    fn message(r: Result<Manifest>) -> String {
        match r {
            Err(Error::Validation { field, message }) => {
                assert_eq!(field, "archive");
                message.into_owned()
            }
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn an_archive_as_exported_is_read() {
        let m = unpacked(&archive(|_, _| {})).unwrap();
        assert_eq!(m.tables["companies"].rows, 2);
        assert_eq!(m.tenant_name, "Acme");
    }

    #[test]
    fn a_tampered_file_is_refused() {
        let bytes = archive(|files, _| files[0].1[3] = b'X');
        assert!(message(unpacked(&bytes)).contains("SHA-256"));
    }

    #[test]
    fn a_truncated_archive_is_refused() {
        let bytes = archive(|_, _| {});
        let cut = &bytes[..bytes.len() / 2];
        assert!(message(unpacked(cut)).contains("damaged or cut short"));
    }

    #[test]
    fn a_newer_schema_is_refused_naming_both() {
        let bytes = archive(|_, m| m.schema_version = schema_version() + 1);
        let said = message(unpacked(&bytes));
        assert!(said.contains(&(schema_version() + 1).to_string()), "{said}");
        assert!(said.contains(&schema_version().to_string()), "{said}");
    }

    #[test]
    fn files_the_manifest_does_not_name_or_paths_outside_are_refused() {
        let bytes = archive(|files, _| files.push(("tables/users.jsonl".into(), b"{}\n".to_vec())));
        assert!(message(unpacked(&bytes)).contains("does not name"));
        for name in [
            "../evil.jsonl",
            "tables/../../x.jsonl",
            "/etc/passwd",
            "notes.txt",
        ] {
            assert!(!allowed_entry(name), "{name}");
        }
        let bytes = archive(|files, _| files.clear());
        assert!(message(unpacked(&bytes)).contains("lacks"));
    }

    #[test]
    fn only_regular_files_after_the_manifest_are_taken() {
        // A table file before the manifest.
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(3);
        header.set_mode(0o600);
        header.set_cksum();
        tar.append_data(&mut header, "tables/companies.jsonl", &b"{}\n"[..])
            .unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        assert!(message(unpacked(&bytes)).contains("begin with its manifest"));
        // A link where a table file would be.
        let bytes = archive(|files, _| files.clear());
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            Vec::new(),
            flate2::Compression::default(),
        ));
        for entry in tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]))
            .entries()
            .unwrap()
        {
            let mut entry = entry.unwrap();
            let mut header = entry.header().clone();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            tar.append_data(&mut header, entry.path().unwrap(), &data[..])
                .unwrap();
        }
        let mut link = tar::Header::new_gnu();
        link.set_entry_type(tar::EntryType::Symlink);
        link.set_size(0);
        link.set_cksum();
        tar.append_link(&mut link, "tables/companies.jsonl", "/etc/passwd")
            .unwrap();
        let bytes = tar.into_inner().unwrap().finish().unwrap();
        assert!(message(unpacked(&bytes)).contains("other than files"));
    }

    #[test]
    fn more_than_the_limit_unpacked_is_refused() {
        let bytes = archive(|_, _| {});
        let dir = scratch();
        let out = unpack(&bytes[..], &dir, 600);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(message(out).contains("more than 600 bytes"));
    }

    #[test]
    fn a_row_count_that_differs_is_refused() {
        let bytes = archive(|_, m| m.tables.get_mut("companies").unwrap().rows = 3);
        assert!(message(unpacked(&bytes)).contains("has 2 rows"));
    }
}
