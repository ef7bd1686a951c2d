//! Tenant exports: one `tar.gz` archive with one JSON Lines file per tenant table (the tables are
//! found from the catalog, so a new table is never forgotten) and `manifest.json` with each
//! file's row count and SHA-256. Only the columns reviewed for export are written ([`EXPORTED`],
//! an allow-list: password hashes, two-factor secrets, token and key digests and mail provider
//! configurations stay out, as does any column nobody has reviewed yet), free-form JSON columns
//! lose their secret-looking keys ([`SCRUBBED`]), and the manifest says what was left out.
//!
//! Archives go to an [`ExportStore`]: a local directory (`PSA_EXPORT_DIR`) or S3-compatible
//! object storage (`PSA_EXPORT_URL=s3://bucket/prefix`, credentials from the standard `AWS_*`
//! variables), through the `object_store` crate. `tenant_exports` records each export.
//!
//! In the store an archive is encrypted ([`ArchiveKey`]: the age format, to the platform's own
//! key (age's hybrid post-quantum recipient), whose secret half is kept sealed with
//! `PSA_SECRET_KEY`): whoever can read the
//! bucket or the directory cannot read a tenant's data. A download is decrypted on the way out,
//! so what a caller gets is the plain `tar.gz`. Archives stored before encryption (`.tar.gz`
//! keys) are still served as they are. The table files are assembled in a scratch directory
//! only this process's user can read, removed when the export ends (and by the worker's
//! housekeeping if a process died mid-export).
//!
//! The rows are read in one read-only repeatable-read transaction: the archive is one
//! consistent picture of the tenant, however long it takes.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use tokio::io::AsyncWriteExt;
use uuid::Uuid;

use crate::{Error, Result, TenantId, lifecycle};

/// The key archives are encrypted to in the store: the platform's age recipient, and
/// its identity to read them back. The identity is kept sealed in `platform_keys` (see
/// `psa_workflows::secret::archive_key`, which makes it on first use).
#[derive(Clone)]
pub struct ArchiveKey {
    recipient: age::pq::Recipient,
    identity: age::pq::Identity,
}

impl ArchiveKey {
    /// The key of `identity`: archives are encrypted to its own public half, so a public key
    /// written into the database by someone else cannot redirect them.
    pub fn new(identity: age::pq::Identity) -> Self {
        Self {
            recipient: identity.to_public(),
            identity,
        }
    }
}

/// The platform's keys by name (`platform_keys`): the public half and the sealed secret half.
pub async fn platform_key(pool: &PgPool, name: &str) -> Result<Option<(String, String)>> {
    Ok(
        sqlx::query_as("SELECT public_key, sealed_secret FROM platform_keys WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?,
    )
}

/// Records a platform key unless one of that name exists (two processes making one at once:
/// the first wins, and both use it).
pub async fn insert_platform_key(
    pool: &PgPool,
    name: &str,
    public_key: &str,
    sealed_secret: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO platform_keys (name, public_key, sealed_secret) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(public_key)
    .bind(sealed_secret)
    .execute(pool)
    .await?;
    Ok(())
}

/// Replaces a platform key's sealed secret (the same key, sealed under a new `PSA_SECRET_KEY`).
pub async fn reseal_platform_key(
    conn: &mut PgConnection,
    name: &str,
    sealed_secret: &str,
) -> Result<()> {
    sqlx::query("UPDATE platform_keys SET sealed_secret = $2, resealed_at = now() WHERE name = $1")
        .bind(name)
        .bind(sealed_secret)
        .execute(conn)
        .await?;
    Ok(())
}

/// Where archives are kept.
#[derive(Clone)]
pub struct ExportStore {
    store: Arc<dyn ObjectStore>,
    /// For messages: the directory or the URL (never credentials).
    location: String,
    /// What archives are encrypted to; without it (no `PSA_SECRET_KEY` here) nothing encrypted
    /// can be written or read.
    key: Option<ArchiveKey>,
}

/// The suffix of an encrypted archive's key in the store.
const ENCRYPTED: &str = ".age";

/// The suffix of an archive encrypted to a recipient's key (a move's, with credentials): served
/// as it is stored, for only the recipient can open it.
const TO_RECIPIENT: &str = ".x25519.age";

/// Where uploads wait between an import's preview and the import.
pub const STAGED: &str = "staged-imports";

/// A staged upload's key: its id and a digest of who uploaded it, so that it is found only by
/// them.
fn staged_key(id: Uuid, owner: &str) -> String {
    let owner = Sha256::digest(owner.as_bytes());
    format!("{STAGED}/{:x}-{id}.age", &owner)
}

/// A stream of an archive's bytes.
pub type ArchiveStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = std::result::Result<bytes::Bytes, std::io::Error>> + Send>,
>;

fn no_key() -> Error {
    Error::Unavailable {
        code: "unavailable",
        message: "PSA_SECRET_KEY is not set here: export archives are encrypted at rest with the \
                  platform key it seals"
            .into(),
    }
}

impl std::fmt::Debug for ExportStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportStore")
            .field("location", &self.location)
            .finish()
    }
}

impl ExportStore {
    /// A local directory, created when missing.
    pub fn local(dir: &FsPath) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::validation(
                "PSA_EXPORT_DIR",
                format!("PSA_EXPORT_DIR={} cannot be created: {e}", dir.display()),
            )
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir).map_err(|e| {
            Error::validation(
                "PSA_EXPORT_DIR",
                format!("PSA_EXPORT_DIR={} cannot be used: {e}", dir.display()),
            )
        })?;
        Ok(Self {
            store: Arc::new(store),
            location: dir.display().to_string(),
            key: None,
        })
    }

    /// S3-compatible object storage: `s3://bucket[/prefix]`, with the `AWS_*` variables
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ENDPOINT` for a
    /// non-AWS service).
    pub fn s3(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url)
            .ok()
            .filter(|u| u.scheme() == "s3" && u.host_str().is_some())
            .ok_or_else(|| {
                Error::validation(
                    "PSA_EXPORT_URL",
                    "PSA_EXPORT_URL must look like s3://bucket/prefix",
                )
            })?;
        let bucket = parsed.host_str().unwrap_or_default().to_owned();
        let store = object_store::aws::AmazonS3Builder::from_env()
            .with_bucket_name(&bucket)
            .build()
            .map_err(|e| {
                Error::validation(
                    "PSA_EXPORT_URL",
                    format!("the S3 export store is unusable: {e}"),
                )
            })?;
        let prefix = parsed.path().trim_matches('/');
        let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
            Arc::new(store)
        } else {
            Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
        };
        Ok(Self {
            store,
            location: format!("s3://{bucket}/{prefix}"),
            key: None,
        })
    }

    /// The store configured by `PSA_EXPORT_URL` if set, else the directory.
    pub fn from_settings(url: Option<&str>, dir: &FsPath) -> Result<Self> {
        match url.filter(|u| !u.trim().is_empty()) {
            Some(u) => Self::s3(u.trim()),
            None => Self::local(dir),
        }
    }

    pub fn location(&self) -> &str {
        &self.location
    }

    /// Archives are encrypted to `key` (and decrypted with it).
    pub fn with_key(mut self, key: ArchiveKey) -> Self {
        self.key = Some(key);
        self
    }

    /// Whether an archive can be written here (checked before anything is read or recorded).
    pub fn can_write(&self) -> Result<()> {
        self.key.as_ref().map(|_| ()).ok_or_else(no_key)
    }

    /// Whether the archive at `key` can be read here (an encrypted one needs the archive key).
    pub fn can_read(&self, key: &str) -> Result<()> {
        if key.ends_with(ENCRYPTED) && !key.ends_with(TO_RECIPIENT) {
            self.can_write()
        } else {
            Ok(())
        }
    }

    /// Streams an archive out of the store: the plain `tar.gz`, decrypted on the way (one
    /// encrypted to a recipient stays encrypted).
    pub async fn open(&self, key: &str) -> Result<ArchiveStream> {
        use tokio_util::compat::{FuturesAsyncReadCompatExt, TokioAsyncReadCompatExt};
        let got = self
            .store
            .get(&Path::from(key))
            .await
            .map_err(store_error)?;
        let raw = got.into_stream().map_err(std::io::Error::other);
        if !key.ends_with(ENCRYPTED) || key.ends_with(TO_RECIPIENT) {
            return Ok(Box::pin(raw));
        }
        let archive_key = self.key.as_ref().ok_or_else(no_key)?;
        let reader = tokio_util::io::StreamReader::new(raw).compat();
        let decryptor = age::Decryptor::new_async_buffered(reader)
            .await
            .map_err(|e| Error::internal(ArchiveError(e.to_string())))?;
        let plain = decryptor
            .decrypt_async(std::iter::once(&archive_key.identity as &dyn age::Identity))
            .map_err(|e| Error::internal(ArchiveError(e.to_string())))?;
        Ok(Box::pin(tokio_util::io::ReaderStream::new(plain.compat())))
    }

    /// Keeps an uploaded archive between an import's preview and the import (the console's
    /// two steps, which any replica may serve): encrypted to the platform's key like an
    /// export, under [`STAGED`], for `owner` (who uploaded it) alone. Returns its id.
    pub async fn stage(&self, file: &FsPath, owner: &str) -> Result<Uuid> {
        let archive_key = self.key.clone().ok_or_else(no_key)?;
        let id = Uuid::new_v4();
        let sealed = file.with_extension("staged.age");
        let (from, to) = (file.to_owned(), sealed.clone());
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let encryptor = age::Encryptor::with_recipients(std::iter::once(
                &archive_key.recipient as &dyn age::Recipient,
            ))
            .map_err(std::io::Error::other)?;
            let mut out = encryptor.wrap_output(std::fs::File::create(&to)?)?;
            std::io::copy(&mut std::fs::File::open(&from)?, &mut out)?;
            out.finish()?.sync_all()
        })
        .await
        .map_err(Error::internal)?
        .map_err(Error::internal)?;
        let put = self.put_file(&staged_key(id, owner), &sealed).await;
        let _ = tokio::fs::remove_file(&sealed).await;
        put?;
        Ok(id)
    }

    /// An upload `owner` staged back, decrypted, into the local file `out` (another's is not
    /// found).
    pub async fn unstage(&self, id: Uuid, owner: &str, out: &FsPath) -> Result<()> {
        self.download(&staged_key(id, owner), out).await.map_err(|e| match e {
            Error::NotFound { .. } => Error::validation(
                "archive",
                "The uploaded archive is no longer kept (it was imported, or is over a day old): upload it again",
            ),
            other => other,
        })?;
        Ok(())
    }

    /// Removes an upload `owner` staged.
    pub async fn remove_staged(&self, id: Uuid, owner: &str) -> Result<()> {
        self.remove(&staged_key(id, owner)).await
    }

    /// Removes the staged uploads older than `age` (an import previewed and never made);
    /// returns how many went.
    pub async fn sweep_staged(&self, age: std::time::Duration) -> Result<usize> {
        let cutoff = Utc::now() - chrono::Duration::from_std(age).unwrap_or_default();
        let old: Vec<Path> = self
            .store
            .list(Some(&Path::from(STAGED)))
            .try_filter(|m| futures::future::ready(m.last_modified < cutoff))
            .map_ok(|m| m.location)
            .try_collect()
            .await
            .map_err(store_error)?;
        for location in &old {
            self.remove(location.as_ref()).await?;
        }
        Ok(old.len())
    }

    /// Uploads the local file at `path` to `key`.
    async fn put_file(&self, key: &str, path: &FsPath) -> Result<()> {
        let mut upload =
            object_store::buffered::BufWriter::new(self.store.clone(), Path::from(key));
        let mut file = tokio::fs::File::open(path).await.map_err(Error::internal)?;
        tokio::io::copy(&mut file, &mut upload)
            .await
            .map_err(Error::internal)?;
        upload.shutdown().await.map_err(Error::internal)?;
        Ok(())
    }

    /// Removes an archive from the store; one already gone is removed too.
    pub async fn remove(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(store_error(e)),
        }
    }

    /// Copies an archive out of the store into a local file.
    pub async fn download(&self, key: &str, out: &FsPath) -> Result<u64> {
        // Opened first: an archive that cannot be read leaves no empty file behind.
        let mut stream = self.open(key).await?;
        let mut file = tokio::fs::File::create(out).await.map_err(|e| {
            Error::validation("out", format!("{} cannot be written: {e}", out.display()))
        })?;
        let mut n = 0u64;
        while let Some(chunk) = stream.try_next().await.map_err(Error::internal)? {
            n += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(Error::internal)?;
        }
        file.flush().await.map_err(Error::internal)?;
        Ok(n)
    }
}

/// An archive in the store that cannot be decrypted (another platform key, a damaged object).
#[derive(Debug, thiserror::Error)]
#[error("the export archive cannot be decrypted: {0}")]
struct ArchiveError(String);

fn store_error(e: object_store::Error) -> Error {
    match e {
        object_store::Error::NotFound { .. } => Error::NotFound {
            entity: "export archive",
        },
        other => Error::internal(other),
    }
}

/// Why an export was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "text", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Purpose {
    /// An operator asked for it.
    Request,
    /// Taken before a deletion.
    Deletion,
}

/// The schema this code writes and reads: its latest migration's version.
pub fn schema_version() -> i64 {
    crate::MIGRATOR
        .iter()
        .map(|m| m.version)
        .max()
        .unwrap_or_default()
}

/// One table in the manifest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TableEntry {
    pub file: String,
    pub rows: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// Columns left out (secrets, and any not reviewed for export: [`EXPORTED`]).
    pub left_out: Vec<String>,
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Manifest {
    /// `psa-tenant-export/1`.
    pub format: String,
    /// The schema of the installation that made it: its latest migration's version. An
    /// importer brings an older archive forward and refuses a newer one. 0: made before the
    /// version was recorded.
    #[serde(default)]
    pub schema_version: i64,
    pub export_id: Uuid,
    pub tenant_id: TenantId,
    pub tenant_name: String,
    pub created_at: DateTime<Utc>,
    pub tables: std::collections::BTreeMap<String, TableEntry>,
    /// Whether the rows carry every column, credentials included (sealed ones opened): only an
    /// archive encrypted to a recipient's key does (`psa tenant export --encrypt-to`).
    #[serde(default)]
    pub credentials: bool,
}

/// An export's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Export {
    pub export_id: Uuid,
    pub tenant_id: TenantId,
    pub requested_by: String,
    pub purpose: Purpose,
    /// `running`, `completed` or `failed`.
    pub status: String,
    /// The archive's key in the export store.
    pub location: Option<String>,
    /// The size of the archive a download gives (the plain `tar.gz`).
    pub bytes: Option<i64>,
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub manifest: Option<sqlx::types::Json<Manifest>>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub completed_at: Option<DateTime<Utc>>,
    /// The age X25519 recipient a move's archive is encrypted to (it carries credentials and
    /// only that key's holder can read it); `None`: an ordinary export.
    pub encrypted_to: Option<String>,
}

const COLUMNS: &str = "export_id, tenant_id, requested_by, purpose, status, location, bytes, \
                       manifest, error, created_at, completed_at, encrypted_to";

/// What is exported of each tenant table, reviewed once, column by column: an allow-list, so a
/// column added later (perhaps a secret) stays out until someone decides otherwise, and a table
/// added later is exported empty (its columns all listed as left out) until it is reviewed
/// here. A test keeps this list equal to the tenant tables.
///
/// Left out on purpose: password hashes and two-factor secrets (`users`), every token and key
/// digest (`sessions`, `api_keys`, `user_auth_tokens`), and the mail providers' configurations
/// (`tenant_email_settings.provider_configs`: provider API keys). JSON columns in
/// [`SCRUBBED`] are exported without their secret-looking keys.
pub const EXPORTED: &[(&str, &[&str])] = &[
    (
        "api_keys",
        &[
            "tenant",
            "api_key_id",
            "user_id",
            "description",
            "created_at",
            "last_used_at",
            "revoked_at",
            "expires_at",
        ],
    ),
    (
        "audit_log",
        &[
            "tenant",
            "audit_id",
            "actor",
            "action",
            "entity_type",
            "entity_id",
            "details",
            "created_at",
            "actor_kind",
            "actor_id",
            "actor_user",
        ],
    ),
    (
        "companies",
        &[
            "tenant",
            "company_id",
            "company_name",
            "url",
            "properties",
            "billing_type",
            "payment_terms",
            "preferred_payment_method",
            "invoice_delivery_method",
            "credit_limit",
            "auto_invoice",
            "is_inactive",
            "client_type",
            "is_tax_exempt",
            "tax_exemption_certificate",
            "tax_id_number",
            "notes",
            "credit_balance",
            "billing_cycle",
            "timezone",
            "notes_document_id",
            "invoice_template_id",
            "billing_contact_id",
            "billing_email",
            "region_code",
            "account_manager_id",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "company_email_settings",
        &[
            "tenant",
            "company_id",
            "email_suffix",
            "self_registration_enabled",
            "user_id",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "company_locations",
        &[
            "tenant",
            "location_id",
            "company_id",
            "location_name",
            "address_line1",
            "address_line2",
            "address_line3",
            "city",
            "state_province",
            "postal_code",
            "country_code",
            "country_name",
            "region_code",
            "is_billing_address",
            "is_shipping_address",
            "is_default",
            "phone",
            "fax",
            "email",
            "notes",
            "is_active",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "company_tax_rates",
        &[
            "tenant",
            "company_tax_rates_id",
            "company_id",
            "tax_rate_id",
            "is_default",
            "location_id",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "company_tax_settings",
        &["tenant", "company_id", "is_reverse_charge_applicable"],
    ),
    (
        "contacts",
        &[
            "tenant",
            "contact_name_id",
            "full_name",
            "company_id",
            "phone_number",
            "email",
            "role",
            "notes",
            "approver",
            "is_inactive",
            "is_client_admin",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "permissions",
        &[
            "tenant",
            "permission_id",
            "resource",
            "action",
            "description",
            "msp",
            "client",
            "created_at",
        ],
    ),
    (
        "role_permissions",
        &["tenant", "role_id", "permission_id", "created_at"],
    ),
    (
        "roles",
        &[
            "tenant",
            "role_id",
            "role_name",
            "description",
            "msp",
            "client",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "sessions",
        &[
            "tenant",
            "session_id",
            "user_id",
            "created_at",
            "expires_at",
            "revoked_at",
            "last_seen_at",
            "address",
            "user_agent",
            "enrollment_only",
            "second_factor",
            "support_session_id",
        ],
    ),
    (
        "sso_connections",
        &[
            "tenant",
            "connection_id",
            "protocol",
            "issuer",
            "client_id",
            "scopes",
            "email_claim",
            "first_name_claim",
            "last_name_claim",
            "jit",
            "jit_role",
            "required",
            "break_glass",
            "enabled",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "sso_domains",
        &[
            "tenant",
            "domain",
            "verified_at",
            "checked_at",
            "created_at",
        ],
    ),
    (
        "sso_identities",
        &[
            "tenant",
            "connection_id",
            "subject",
            "user_id",
            "created_at",
            "last_login_at",
        ],
    ),
    (
        "support_sessions",
        &[
            "tenant",
            "support_session_id",
            "user_id",
            "operator_tenant",
            "operator_user_id",
            "operator_name",
            "operator_session_id",
            "operator_api_key_id",
            "reason",
            "started_at",
            "ends_at",
            "ended_at",
            "end_reason",
        ],
    ),
    (
        "tag_definitions",
        &[
            "tenant",
            "tag_id",
            "tag_text",
            "tagged_type",
            "board_id",
            "background_color",
            "text_color",
            "created_at",
        ],
    ),
    (
        "tag_mappings",
        &[
            "tenant",
            "mapping_id",
            "tag_id",
            "tagged_id",
            "tagged_type",
            "created_by",
            "created_at",
        ],
    ),
    (
        "tax_components",
        &[
            "tenant",
            "tax_component_id",
            "tax_rate_id",
            "name",
            "rate",
            "sequence",
            "is_compound",
            "start_date",
            "end_date",
            "conditions",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "tax_rates",
        &[
            "tenant",
            "tax_rate_id",
            "tax_percentage",
            "description",
            "start_date",
            "end_date",
            "tax_type",
            "country_code",
            "is_reverse_charge_applicable",
            "is_composite",
            "is_active",
            "conditions",
            "region_code",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "tax_regions",
        &[
            "tenant",
            "region_code",
            "region_name",
            "is_active",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "tenant_companies",
        &[
            "tenant",
            "company_id",
            "is_default",
            "deleted_at",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "tenant_email_settings",
        &[
            "tenant",
            "id",
            "default_from_domain",
            "custom_domains",
            "email_provider",
            "fallback_enabled",
            "tracking_enabled",
            "max_daily_emails",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "tenant_settings",
        &[
            "tenant",
            "onboarding_completed",
            "onboarding_completed_at",
            "onboarding_skipped",
            "onboarding_data",
            "settings",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "tenant_subscriptions",
        &[
            "tenant",
            "plan_code",
            "status",
            "seats",
            "trial_ends_at",
            "current_period_end",
            "past_due_since",
            "billing_customer_id",
            "billing_subscription_id",
            "billing_event_at",
            "created_at",
            "updated_at",
        ],
    ),
    (
        "tenants",
        &[
            "tenant",
            "company_name",
            "email",
            "phone_number",
            "industry",
            "payment_platform_id",
            "payment_method_id",
            "auth_service_id",
            "plan",
            "tax_id_number",
            "licensed_user_count",
            "last_license_update",
            "stripe_event_id",
            "is_management",
            "created_at",
            "updated_at",
            "status",
            "status_reason",
            "status_changed_at",
            "slug",
            "mfa_required",
            "support_access",
        ],
    ),
    (
        "user_auth_tokens",
        &[
            "tenant",
            "token_id",
            "user_id",
            "purpose",
            "created_at",
            "expires_at",
            "used_at",
            "revoked_at",
            "created_by",
            "workflow_id",
            "sent_at",
        ],
    ),
    (
        "user_roles",
        &["tenant", "user_id", "role_id", "created_at"],
    ),
    (
        "user_devices",
        &["tenant", "user_id", "first_seen_at", "last_seen_at"],
    ),
    (
        "user_passkeys",
        &[
            "tenant",
            "passkey_id",
            "user_id",
            "name",
            "created_at",
            "last_used_at",
        ],
    ),
    (
        "user_recovery_codes",
        &["tenant", "code_id", "user_id", "used_at", "created_at"],
    ),
    (
        "user_totp",
        &[
            "tenant",
            "user_id",
            "confirmed_at",
            "last_step",
            "created_at",
        ],
    ),
    (
        "users",
        &[
            "tenant",
            "user_id",
            "username",
            "first_name",
            "last_name",
            "email",
            "date_of_birth",
            "icon",
            "auth_method",
            "two_factor_enabled",
            "is_google_user",
            "rate",
            "is_inactive",
            "user_type",
            "contact_id",
            "needs_contact_association",
            "phone",
            "timezone",
            "created_at",
            "updated_at",
            "password_changed_at",
        ],
    ),
];

/// JSON columns free-form enough to hold a credential: exported without any key whose name
/// looks like one (see [`scrub`]).
pub const SCRUBBED: &[(&str, &str)] = &[
    ("tenant_settings", "settings"),
    ("tenant_settings", "onboarding_data"),
    ("companies", "properties"),
];

/// The columns of `table` the export keeps: the reviewed ones it has.
fn exported(table: &str, columns: Vec<String>) -> (Vec<String>, Vec<String>) {
    let allowed = EXPORTED
        .iter()
        .find(|(t, _)| *t == table)
        .map_or(&[][..], |(_, c)| *c);
    columns
        .into_iter()
        .partition(|c| allowed.contains(&c.as_str()))
}

/// Removes, at any depth, the object keys that name a credential (`secret`, `password`,
/// `token`, `api_key`, `apikey`, `credential`, `private_key`), whatever their case.
pub fn scrub(value: &mut serde_json::Value) {
    const WORDS: [&str; 7] = [
        "secret",
        "password",
        "token",
        "api_key",
        "apikey",
        "credential",
        "private_key",
    ];
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|k, _| {
                let k = k.to_ascii_lowercase();
                !WORDS.iter().any(|w| k.contains(w))
            });
            map.values_mut().for_each(scrub);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(scrub),
        _ => {}
    }
}

/// Columns sealed under the installation's `PSA_SECRET_KEY`: an archive that carries
/// credentials holds them opened (the archive is encrypted to its recipient instead), and an
/// import seals them again under its own installation's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealedColumn {
    /// `user_totp.secret_sealed`, bound to `tenant/user`.
    TotpSecret,
    /// `sso_connections.client_secret_sealed`, bound to the tenant.
    SsoClientSecret,
}

impl SealedColumn {
    /// The sealed column of `table`, if it has one.
    pub fn of(table: &str) -> Option<(SealedColumn, &'static str)> {
        match table {
            "user_totp" => Some((SealedColumn::TotpSecret, "secret_sealed")),
            "sso_connections" => Some((SealedColumn::SsoClientSecret, "client_secret_sealed")),
            _ => None,
        }
    }

    /// The row a value of this column is sealed to (its associated data), from the row.
    pub fn row(self, row: &serde_json::Map<String, serde_json::Value>) -> String {
        let field = |k: &str| row.get(k).and_then(|v| v.as_str()).unwrap_or_default();
        match self {
            SealedColumn::TotpSecret => format!("{}/{}", field("tenant"), field("user_id")),
            SealedColumn::SsoClientSecret => field("tenant").to_owned(),
        }
    }
}

/// Opens and seals the [`SealedColumn`]s (the installation's `PSA_SECRET_KEY`).
pub trait Sealer: Send + Sync {
    fn open(&self, column: SealedColumn, row: &str, sealed: &str) -> Result<String>;
    fn seal(&self, column: SealedColumn, row: &str, plain: &str) -> String;
}

/// The export `id` (outside any tenant context: a platform table).
pub async fn get(conn: &mut PgConnection, id: Uuid) -> Result<Export> {
    sqlx::query_as::<_, Export>(&format!(
        "SELECT {COLUMNS} FROM tenant_exports WHERE export_id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound { entity: "export" })
}

/// Records an export as running (its own short transaction, so a failure can be recorded too).
pub async fn begin(
    pool: &PgPool,
    id: Uuid,
    tenant: TenantId,
    purpose: Purpose,
    requested_by: &str,
    encrypted_to: Option<&Recipient>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO tenant_exports (export_id, tenant_id, requested_by, purpose, encrypted_to) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (export_id) DO NOTHING",
    )
    .bind(id)
    .bind(tenant)
    .bind(requested_by)
    .bind(purpose)
    .bind(encrypted_to.map(|r| r.to_string()))
    .execute(pool)
    .await?;
    Ok(())
}

/// The key a move's archive is encrypted to: an age X25519 recipient (`age1...`, as
/// `age-keygen` prints it) or a post-quantum one (`age1pq1...`, `age-keygen -pq`).
#[derive(Clone)]
pub enum Recipient {
    /// Classic X25519, which age deprecates for new keys but which most keys in use are: a move
    /// is made to the key its receiver has.
    #[allow(deprecated)]
    X25519(age::x25519::Recipient),
    Pq(age::pq::Recipient),
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::X25519(r) => r.fmt(f),
            Recipient::Pq(r) => r.fmt(f),
        }
    }
}

impl Recipient {
    pub fn parse(raw: &str, field: &'static str) -> Result<Recipient> {
        let raw = raw.trim();
        #[allow(deprecated)]
        if let Ok(r) = raw.parse::<age::x25519::Recipient>() {
            return Ok(Recipient::X25519(r));
        }
        raw.parse::<age::pq::Recipient>()
            .map(Recipient::Pq)
            .map_err(|_| {
                Error::validation(
                    field,
                    "not an age recipient (a public key starting age1..., as age-keygen prints it)",
                )
            })
    }

    fn boxed(self) -> Box<dyn age::Recipient + Send> {
        match self {
            Recipient::X25519(r) => Box::new(r),
            Recipient::Pq(r) => Box::new(r),
        }
    }
}

/// Takes the export `id` of `tenant` (recorded with [`begin`]) into the store and records the
/// outcome. Idempotent: an export already completed is returned as it is, one that failed or
/// was cut off is taken again.
pub async fn run(pool: &PgPool, store: &ExportStore, id: Uuid) -> Result<Export> {
    run_sealed(pool, store, id, None).await
}

/// [`run`], for an export that may carry credentials (encrypted to a recipient): `sealer` opens
/// the sealed columns.
pub async fn run_sealed(
    pool: &PgPool,
    store: &ExportStore,
    id: Uuid,
    sealer: Option<&dyn Sealer>,
) -> Result<Export> {
    let mut conn = pool.acquire().await?;
    let current = get(&mut conn, id).await?;
    drop(conn);
    if current.status == "completed" {
        return Ok(current);
    }
    let to = match &current.encrypted_to {
        None => None,
        Some(r) => {
            let recipient = Recipient::parse(r, "encrypt_to")?;
            let sealer = sealer.ok_or_else(|| Error::Unavailable {
                code: "unavailable",
                message: "PSA_SECRET_KEY is not set here: an export that carries credentials \
                          opens the secrets it seals"
                    .into(),
            })?;
            Some((recipient, sealer))
        }
    };
    match write(pool, store, id, current.tenant_id, to).await {
        Ok((key, bytes, manifest)) => {
            sqlx::query(
                "UPDATE tenant_exports SET status = 'completed', location = $2, bytes = $3, \
                        manifest = $4, error = NULL, completed_at = now() WHERE export_id = $1",
            )
            .bind(id)
            .bind(&key)
            .bind(bytes as i64)
            .bind(sqlx::types::Json(&manifest))
            .execute(pool)
            .await?;
        }
        Err(e) => {
            sqlx::query(
                "UPDATE tenant_exports SET status = 'failed', error = $2 WHERE export_id = $1",
            )
            .bind(id)
            .bind(e.to_string())
            .execute(pool)
            .await?;
            return Err(e);
        }
    }
    let mut conn = pool.acquire().await?;
    get(&mut conn, id).await
}

/// The scratch directories' names (in the system's temporary directory).
pub const SCRATCH_PREFIX: &str = "psa-export-";

/// Removes the scratch directories named with one of `prefixes` (an export's
/// [`SCRATCH_PREFIX`], an import's) that a process killed midway left behind, once older than
/// `age`; returns how many went.
pub fn sweep_scratch(prefixes: &[&str], age: std::time::Duration) -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = prefixes.iter().any(|p| name.starts_with(p))
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|e| e > age);
        if stale && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// A writer that counts what passes through it.
struct Counted<W> {
    inner: W,
    bytes: u64,
}

impl<W: std::io::Write> std::io::Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A scratch directory in the system's temporary directory that only this process's user can
/// read (0700: a tenant's whole data passes through it), removed when dropped (and by the
/// worker's housekeeping, [`sweep_scratch`], when a process died with it).
pub struct Scratch(PathBuf);

impl Scratch {
    /// A new private directory named `name` (which starts with a prefix the housekeeping
    /// sweeps).
    pub fn private(name: &str) -> Result<Scratch> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(Error::internal)?;
        // Created now (not left over from an earlier process): the mode is as asked.
        Ok(Scratch(dir))
    }

    pub fn path(&self) -> &FsPath {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn write(
    pool: &PgPool,
    store: &ExportStore,
    id: Uuid,
    tenant: TenantId,
    to: Option<(Recipient, &dyn Sealer)>,
) -> Result<(String, u64, Manifest)> {
    // Before anything is read: without the key nothing could be stored.
    let archive_key = store.key.clone().ok_or_else(no_key)?;
    let credentials = to.is_some();
    // A run taken again after a crash finds its old directory: it starts afresh.
    let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("{SCRATCH_PREFIX}{id}")));
    let scratch = Scratch::private(&format!("{SCRATCH_PREFIX}{id}"))?;
    std::fs::create_dir(scratch.0.join("tables")).map_err(Error::internal)?;
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    sqlx::query("SET LOCAL statement_timeout = '1h'")
        .execute(&mut *tx)
        .await?;
    // Confined to the tenant: the API's role sees exactly its rows, and so does the owner's.
    crate::db::enter_tenant(&mut tx, tenant).await?;
    let name: String = sqlx::query_scalar("SELECT company_name FROM tenants WHERE tenant = $1")
        .bind(tenant)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(Error::NotFound { entity: "tenant" })?;
    let mut manifest = Manifest {
        format: "psa-tenant-export/1".into(),
        schema_version: schema_version(),
        export_id: id,
        tenant_id: tenant,
        tenant_name: name,
        created_at: Utc::now(),
        tables: Default::default(),
        credentials,
    };
    for table in lifecycle::tenant_tables(&mut tx).await? {
        let columns: Vec<String> = sqlx::query_scalar(
            "SELECT attname::text FROM pg_attribute \
             WHERE attrelid = to_regclass(quote_ident($1)) AND attnum > 0 AND NOT attisdropped \
             ORDER BY attnum",
        )
        .bind(&table)
        .fetch_all(&mut *tx)
        .await?;
        // A move's archive keeps every column; only an ordinary export leaves some out.
        let (kept, left_out) = if credentials {
            (columns, Vec::new())
        } else {
            exported(&table, columns)
        };
        let sealed =
            SealedColumn::of(&table).filter(|(_, c)| credentials && kept.iter().any(|k| k == c));
        let scrubbed: Vec<&str> = SCRUBBED
            .iter()
            .filter(|(t, c)| !credentials && *t == table && kept.iter().any(|k| k == c))
            .map(|(_, c)| *c)
            .collect();
        let select = kept
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let file = format!("tables/{table}.jsonl");
        let mut out = tokio::io::BufWriter::new(
            tokio::fs::File::create(scratch.0.join(&file))
                .await
                .map_err(Error::internal)?,
        );
        let mut hash = Sha256::new();
        let mut rows = 0u64;
        // Rows in a stable order (the table's own), each one JSON object per line.
        let sql = format!(
            "SELECT row_to_json(r)::text FROM (SELECT {select} FROM \"{table}\" WHERE tenant = $1 \
             ORDER BY 1, 2) r"
        );
        let mut stream = sqlx::query_scalar::<_, String>(&sql)
            .bind(tenant)
            .fetch(&mut *tx);
        while let Some(line) = stream.try_next().await? {
            let line = if scrubbed.is_empty() && sealed.is_none() {
                line
            } else {
                let mut row: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(&line).map_err(Error::internal)?;
                for c in &scrubbed {
                    if let Some(v) = row.get_mut(*c) {
                        scrub(v);
                    }
                }
                if let (Some((column, name)), Some((_, sealer))) = (sealed, &to)
                    && let Some(value) = row.get(name).and_then(|v| v.as_str())
                {
                    let plain = sealer.open(column, &column.row(&row), value)?;
                    row.insert(name.to_owned(), plain.into());
                }
                serde_json::Value::Object(row).to_string()
            };
            hash.update(line.as_bytes());
            hash.update(b"\n");
            out.write_all(line.as_bytes())
                .await
                .map_err(Error::internal)?;
            out.write_all(b"\n").await.map_err(Error::internal)?;
            rows += 1;
        }
        drop(stream);
        out.flush().await.map_err(Error::internal)?;
        manifest.tables.insert(
            table,
            TableEntry {
                file,
                rows,
                sha256: format!("{:x}", hash.finalize()),
                left_out,
            },
        );
    }
    tx.commit().await?;

    let manifest_json = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
    tokio::fs::write(scratch.0.join("manifest.json"), &manifest_json)
        .await
        .map_err(Error::internal)?;
    let archive = scratch.0.join("export.tar.gz.age");
    let dir = scratch.0.clone();
    let recipient: Box<dyn age::Recipient + Send> = match to {
        Some((r, _)) => r.boxed(),
        None => Box::new(archive_key.recipient.clone()),
    };
    let entries: Vec<String> = std::iter::once("manifest.json".to_owned())
        .chain(manifest.tables.values().map(|t| t.file.clone()))
        .collect();
    let archive_path = archive.clone();
    // tar, then gzip, then age, in one pass: the plain archive never touches the disk. The
    // plain size is counted on the way (it is what a download gives).
    let plain_bytes = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let encryptor = age::Encryptor::with_recipients(std::iter::once(
            recipient.as_ref() as &dyn age::Recipient
        ))
        .map_err(std::io::Error::other)?;
        let sealed = encryptor.wrap_output(std::fs::File::create(&archive_path)?)?;
        let counted = Counted {
            inner: sealed,
            bytes: 0,
        };
        let gz = flate2::write::GzEncoder::new(counted, flate2::Compression::default());
        let mut tar = tar::Builder::new(gz);
        for entry in entries {
            tar.append_path_with_name(dir.join(&entry), &entry)?;
        }
        let counted = tar.into_inner()?.finish()?;
        let bytes = counted.bytes;
        counted.inner.finish()?.sync_all()?;
        Ok(bytes)
    })
    .await
    .map_err(Error::internal)?
    .map_err(Error::internal)?;

    let key = if credentials {
        format!("{tenant}/{id}.tar.gz{TO_RECIPIENT}")
    } else {
        format!("{tenant}/{id}.tar.gz{ENCRYPTED}")
    };
    // What a download gives: the plain archive, or the recipient's encrypted one as stored.
    let bytes = if credentials {
        tokio::fs::metadata(&archive)
            .await
            .map_err(Error::internal)?
            .len()
    } else {
        plain_bytes
    };
    store.put_file(&key, &archive).await?;
    Ok((key, bytes, manifest))
}
