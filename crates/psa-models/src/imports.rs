//! Reading a tenant's export back (the import's first half): the archive unpacked into a private
//! scratch directory and checked whole before anything is written to the database.
//!
//! An archive is accepted only when: it is a gzip'd tar of `manifest.json` and the files the
//! manifest names (`tables/<table>.jsonl`), nothing else, no path outside those; every file's
//! SHA-256 and row count are the manifest's; its format is one this code reads; and its schema is
//! not newer than this code's (an older one is brought forward by the importer). Everything
//! refused is a validation error on `archive` naming what is wrong.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::exports::{Manifest, schema_version};
use crate::{Error, Result};

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

/// Unpacks the plain archive read from `input` (a gzip'd tar) into `scratch` (which must exist
/// and be empty), at most `max_bytes` unpacked, and checks it whole. Returns its manifest.
pub fn unpack(input: impl Read, scratch: &Path, max_bytes: u64) -> Result<Manifest> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(input));
    let mut seen = BTreeSet::new();
    let mut total = 0u64;
    let entries = archive
        .entries()
        .map_err(|e| refused(format!("not a gzip'd tar archive: {e}")))?;
    for entry in entries {
        let mut entry =
            entry.map_err(|e| refused(format!("the archive is damaged or cut short: {e}")))?;
        if !entry.header().entry_type().is_file() {
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
        if !seen.insert(name.clone()) {
            return Err(refused(format!("the archive holds {name:?} twice")));
        }
        total = total.saturating_add(entry.size());
        if total > max_bytes {
            return Err(refused(format!(
                "the archive unpacks to more than {max_bytes} bytes"
            )));
        }
        let path = scratch.join(&name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(Error::internal)?;
        }
        let mut out = std::fs::File::create(&path).map_err(Error::internal)?;
        std::io::copy(&mut entry, &mut out)
            .map_err(|e| refused(format!("the archive is damaged or cut short: {e}")))?;
    }
    check(scratch, &seen)
}

/// The unpacked archive checked against its manifest.
fn check(scratch: &Path, seen: &BTreeSet<String>) -> Result<Manifest> {
    if !seen.contains("manifest.json") {
        return Err(refused("the archive has no manifest.json"));
    }
    let raw = std::fs::read(scratch.join("manifest.json")).map_err(Error::internal)?;
    let manifest: Manifest = serde_json::from_slice(&raw)
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
    let named: BTreeSet<String> = manifest
        .tables
        .values()
        .map(|t| t.file.clone())
        .chain(std::iter::once("manifest.json".to_owned()))
        .collect();
    if let Some(extra) = seen.difference(&named).next() {
        return Err(refused(format!(
            "the archive holds {extra:?}, which its manifest does not name"
        )));
    }
    for (table, entry) in &manifest.tables {
        if !seen.contains(&entry.file) || entry.file != format!("tables/{table}.jsonl") {
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
    fn a_row_count_that_differs_is_refused() {
        let bytes = archive(|_, m| m.tables.get_mut("companies").unwrap().rows = 3);
        assert!(message(unpacked(&bytes)).contains("has 2 rows"));
    }
}
