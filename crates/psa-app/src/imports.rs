//! Tenant import (`tenant:create`, in the management tenant): an export archive brought back.
//!
//! - **restore**: a tenant this installation knew (its customer record, a deletion or a
//!   provisioning run names it) comes back with its own ids;
//! - **move**: a tenant from another installation comes in with its own ids;
//! - **clone** (`as_new`): a second, isolated tenant with every id remapped, no credentials and
//!   none of the original's sessions, links, keys or history, tracked as a customer only when
//!   asked.
//!
//! The archive is checked whole before anything is written ([`psa_models::imports::unpack`]);
//! the rows, the customer record, the audit rows (in both tenants) and the `tenant.imported`
//! event are one transaction, so an import that fails or is killed half-way writes nothing.
//! Mail to the imported users (reset links, invitations) goes after the commit.
//!
//! A canceled tenant comes back active (its deletion is what the import undoes); a suspended one
//! stays suspended.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use psa_models::audit::{self, Action};
use psa_models::events::{self, EventType};
use psa_models::exports::{Manifest, Scratch};
use psa_models::imports::{self, Plan, TableImport};
use psa_models::lifecycle::{self, TenantDetails};
use psa_models::validate::{CompanyName, Slug};
use psa_models::{Error, Result, TenantId, db};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::App;
use crate::access::{Access, Permission, Principal, Resource};

const CREATE: Permission = Permission(Resource::Tenant, Access::Create);

/// What an import does, as asked.
#[derive(Clone, Debug, Default)]
pub struct ImportOptions {
    /// A clone: a new tenant with new ids.
    pub as_new: bool,
    /// The clone's name (default: the original's, with " (copy)").
    pub name: Option<String>,
    /// The tenant's slug instead of the archive's (a clone's default: a free one made from it).
    pub slug: Option<String>,
    /// The age identity (the contents of an `age-keygen` file) that opens an encrypted archive.
    /// Held for the import only.
    pub identity: Option<SecretString>,
    /// Mail each active user of a restored or moved tenant a link to set a password.
    pub notify_users: bool,
    /// Mail each active user of a clone an invitation.
    pub invite_users: bool,
    /// Track a clone as a customer (a restored or moved tenant always is).
    pub track_customer: bool,
}

/// How the archive came in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Mode {
    Restore,
    Move,
    Clone,
}

impl Mode {
    /// The mode in words, as its JSON says it.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Restore => "restore",
            Mode::Move => "move",
            Mode::Clone => "clone",
        }
    }
}

/// The archive, as its manifest and its tenant row describe it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Source {
    pub export_id: uuid::Uuid,
    pub tenant_id: TenantId,
    pub name: String,
    pub slug: String,
    pub status: String,
    pub exported_at: chrono::DateTime<chrono::Utc>,
    /// The schema it was made with (its installation's latest migration).
    pub schema_version: i64,
    /// This installation's schema.
    pub schema_here: i64,
    /// Encrypted to a recipient's key (opened with the identity given).
    pub encrypted: bool,
    /// Carries credentials (passwords, second factors, keys): only an encrypted archive does.
    pub credentials: bool,
    /// Rows by table.
    pub rows: BTreeMap<String, u64>,
}

/// What importing the archive would do, without doing it (the console's preview).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Preview {
    pub source: Source,
    pub mode: Mode,
    /// What refuses the import as asked (the tenant is here already, its slug is taken).
    pub problems: Vec<String>,
}

/// What an import did.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Imported {
    pub mode: Mode,
    pub tenant: TenantDetails,
    pub source: Source,
    /// By table: rows written, or why none were.
    pub tables: BTreeMap<String, TableImport>,
    /// Users mailed a link to set a password (restore, move) or an invitation (clone).
    pub mailed: u64,
    /// Users the mail could not reach (each can be sent a link again).
    pub mail_failed: u64,
    pub warnings: Vec<String>,
}

/// A private scratch directory for one import (swept by the worker's housekeeping if a
/// process died with it).
fn scratch() -> Result<Scratch> {
    Scratch::private(&format!(
        "{}{}",
        imports::SCRATCH_PREFIX,
        uuid::Uuid::new_v4()
    ))
}

/// An uploaded archive, kept in a private scratch directory until dropped.
pub struct Upload {
    scratch: Scratch,
}

impl Upload {
    /// Receives an archive from `chunks` (a request's body, a form's file field), at most
    /// `max_bytes` of it: more is refused (422 on `archive`) and nothing is kept.
    pub async fn receive<E: std::fmt::Display>(
        mut chunks: impl futures::Stream<Item = std::result::Result<bytes::Bytes, E>> + Unpin,
        max_bytes: u64,
    ) -> Result<Upload> {
        use futures::StreamExt;
        use tokio::io::AsyncWriteExt;
        let scratch = scratch()?;
        let mut file = tokio::io::BufWriter::new(
            tokio::fs::File::create(scratch.path().join("archive"))
                .await
                .map_err(Error::internal)?,
        );
        let mut bytes = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| {
                Error::validation("archive", format!("the upload was cut short: {e}"))
            })?;
            bytes += chunk.len() as u64;
            if bytes > max_bytes {
                return Err(Error::validation(
                    "archive",
                    format!("the archive is larger than {max_bytes} bytes (PSA_IMPORT_MAX_BYTES)"),
                ));
            }
            file.write_all(&chunk).await.map_err(Error::internal)?;
        }
        file.flush().await.map_err(Error::internal)?;
        if bytes == 0 {
            return Err(Error::validation("archive", "No archive was sent"));
        }
        Ok(Upload { scratch })
    }

    pub fn path(&self) -> PathBuf {
        self.scratch.path().join("archive")
    }
}

/// Keeps `upload` in the export store until the import (the console's preview, then import:
/// any replica may serve the second step), for `who` alone. Returns its id.
pub async fn stage(app: &App, who: &Principal, upload: &Upload) -> Result<uuid::Uuid> {
    app.export_store()?
        .stage(&upload.path(), &who.actor().to_string())
        .await
}

/// An upload `who` staged, to preview or import again.
pub async fn staged(app: &App, who: &Principal, id: uuid::Uuid) -> Result<Upload> {
    authorize(app, who).await?;
    let scratch = scratch()?;
    app.export_store()?
        .unstage(
            id,
            &who.actor().to_string(),
            &scratch.path().join("archive"),
        )
        .await?;
    Ok(Upload { scratch })
}

/// Removes an upload `who` staged (its import made).
pub async fn unstage(app: &App, who: &Principal, id: uuid::Uuid) -> Result<()> {
    app.export_store()?
        .remove_staged(id, &who.actor().to_string())
        .await
}

/// Refuses a caller who may not import (`tenant:create` in the management tenant), before an
/// upload is received.
pub async fn authorize(app: &App, who: &Principal) -> Result<()> {
    let (tx, _) = app.begin_management(who, CREATE).await?;
    tx.rollback().await?;
    Ok(())
}

/// An archive unpacked and checked, with what it says of itself.
struct Unpacked {
    scratch: Scratch,
    manifest: Manifest,
    tenant_row: Map<String, Value>,
    encrypted: bool,
}

impl Unpacked {
    fn source(&self) -> Source {
        let field = |k: &str| {
            self.tenant_row
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Source {
            export_id: self.manifest.export_id,
            tenant_id: self.manifest.tenant_id,
            name: self.manifest.tenant_name.clone(),
            slug: field("slug"),
            status: field("status"),
            exported_at: self.manifest.created_at,
            schema_version: self.manifest.schema_version,
            schema_here: psa_models::exports::schema_version(),
            encrypted: self.encrypted,
            credentials: self.manifest.credentials,
            rows: self
                .manifest
                .tables
                .iter()
                .map(|(t, e)| (t.clone(), e.rows))
                .collect(),
        }
    }
}

/// Unpacks the archive at `path` (plain, or encrypted to the identity given) and checks it.
async fn unpack(app: &App, path: &Path, identity: Option<&SecretString>) -> Result<Unpacked> {
    let scratch = scratch()?;
    let dir = scratch.path().to_owned();
    let path = path.to_owned();
    let identity = identity.map(|i| SecretString::from(i.expose_secret().to_owned()));
    let max = app.settings.import_max_bytes;
    let (manifest, encrypted) = tokio::task::spawn_blocking(move || {
        imports::unpack_file(&path, identity.as_ref(), &dir, max)
    })
    .await
    .map_err(Error::internal)??;
    let tenant_row = imports::tenant_row(scratch.path(), &manifest)?;
    Ok(Unpacked {
        scratch,
        manifest,
        tenant_row,
        encrypted,
    })
}

/// Whether this installation knew the tenant: a restore, else a move.
async fn known(
    conn: &mut sqlx::PgConnection,
    app: &App,
    mgmt: TenantId,
    tenant: TenantId,
) -> Result<bool> {
    let settings = app.lifecycle(mgmt);
    db::enter_tenant(conn, mgmt).await?;
    if psa_models::companies::find_by_managed_tenant(conn, settings.management_tenant_id, tenant)
        .await?
        .is_some()
    {
        return Ok(true);
    }
    db::leave_tenant(conn).await?;
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM tenant_deletions WHERE tenant_id = $1) \
             OR EXISTS (SELECT 1 FROM tenant_provisioning WHERE tenant_id = $1)",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?)
}

/// The tenant an import writes, and the values written over its row.
struct Target {
    tenant: TenantId,
    mode: Mode,
    row: Map<String, Value>,
}

/// Decides where the archive goes, or why it cannot: the tenant is here already (409
/// `tenant_exists`), its slug is another's (409 `slug_taken`), a slug or name given breaks the
/// rules (422).
async fn target(
    conn: &mut sqlx::PgConnection,
    app: &App,
    mgmt: TenantId,
    unpacked: &Unpacked,
    options: &ImportOptions,
) -> Result<Target> {
    let source = unpacked.source();
    let given_slug = options.slug.as_deref().map(Slug::parse).transpose()?;
    let mut row = Map::new();
    db::leave_tenant(conn).await?;
    if options.as_new {
        let name = match &options.name {
            Some(n) => CompanyName::parse(n)?,
            None => CompanyName::parse(&format!("{} (copy)", source.name))
                .or_else(|_| CompanyName::parse(&source.name))?,
        };
        let slug = match given_slug {
            Some(s) => {
                psa_models::tenants::ensure_slug_free(conn, &s).await?;
                s
            }
            None => free_slug(conn, &source.slug).await?,
        };
        row.insert("company_name".into(), name.as_str().into());
        row.insert("slug".into(), slug.as_str().into());
        row.insert("status".into(), "active".into());
        row.insert("status_reason".into(), Value::Null);
        let now = chrono::Utc::now();
        row.insert("status_changed_at".into(), json!(now));
        row.insert("created_at".into(), json!(now));
        row.insert("updated_at".into(), json!(now));
        return Ok(Target {
            tenant: TenantId::new(),
            mode: Mode::Clone,
            row,
        });
    }
    if options.name.is_some() {
        return Err(Error::validation(
            "name",
            "A name is given to a clone only (as_new): a restored or moved tenant keeps its own",
        ));
    }
    let tenant = source.tenant_id;
    // Looked for in its own context: the API's confined role sees a tenant only there.
    db::enter_tenant(conn, tenant).await?;
    let present = psa_models::tenants::find(conn, tenant).await?.is_some();
    db::leave_tenant(conn).await?;
    if present {
        return Err(exists());
    }
    match given_slug {
        Some(s) => {
            psa_models::tenants::ensure_slug_free(conn, &s).await?;
            row.insert("slug".into(), s.as_str().into());
        }
        None => {
            let slug = Slug::parse(&source.slug)?;
            if psa_models::tenants::slug_taken(conn, &slug).await? {
                return Err(Error::InvalidState {
                    code: "slug_taken",
                    message: format!(
                        "Another tenant here has the slug {slug}: give the imported tenant a free one"
                    )
                    .into(),
                });
            }
        }
    }
    // A canceled tenant's deletion is what the import undoes: it comes back active.
    if source.status == "canceled" {
        row.insert("status".into(), "active".into());
        row.insert("status_reason".into(), Value::Null);
        row.insert("status_changed_at".into(), json!(chrono::Utc::now()));
    }
    let mode = if known(conn, app, mgmt, tenant).await? {
        Mode::Restore
    } else {
        Mode::Move
    };
    Ok(Target { tenant, mode, row })
}

fn exists() -> Error {
    Error::InvalidState {
        code: "tenant_exists",
        message: "A tenant with the archive's id exists in this installation: only a deleted \
                  tenant is restored (import it as a new tenant to copy it)"
            .into(),
    }
}

/// The first free slug of `base-copy`, `base-copy-2`, ...
async fn free_slug(conn: &mut sqlx::PgConnection, base: &str) -> Result<Slug> {
    for n in 1..100 {
        let raw = if n == 1 {
            format!("{base}-copy")
        } else {
            format!("{base}-copy-{n}")
        };
        let Ok(slug) = Slug::parse(&raw) else {
            break;
        };
        if !psa_models::tenants::slug_taken(conn, &slug).await? {
            return Ok(slug);
        }
    }
    Err(Error::validation(
        "slug",
        "No free slug could be made from the archive's: give one",
    ))
}

/// What importing the archive at `path` would do (`tenant:create`); nothing is written.
pub async fn preview(
    app: &App,
    who: &Principal,
    path: &Path,
    options: &ImportOptions,
) -> Result<Preview> {
    authorize(app, who).await?;
    let unpacked = unpack(app, path, options.identity.as_ref()).await?;
    let (mut tx, mgmt) = app.begin_management(who, CREATE).await?;
    let mut problems = Vec::new();
    let mode = match target(&mut tx, app, mgmt, &unpacked, options).await {
        Ok(t) => t.mode,
        Err(
            e @ (Error::InvalidState { .. } | Error::Validation { .. } | Error::Conflict { .. }),
        ) => {
            problems.push(e.to_string());
            if options.as_new {
                Mode::Clone
            } else if known(&mut tx, app, mgmt, unpacked.manifest.tenant_id).await? {
                Mode::Restore
            } else {
                Mode::Move
            }
        }
        Err(e) => return Err(e),
    };
    tx.rollback().await?;
    Ok(Preview {
        source: unpacked.source(),
        mode,
        problems,
    })
}

/// Imports the archive at `path` (`tenant:create`).
pub async fn import(
    app: &App,
    who: &Principal,
    path: &Path,
    options: &ImportOptions,
) -> Result<Imported> {
    // Who may is checked before the archive is even read.
    authorize(app, who).await?;
    if options.invite_users && !options.as_new {
        return Err(Error::validation(
            "invite_users",
            "Users are invited again in a clone (as_new); a restored or moved tenant's users are \
             sent a link to set a password (notify_users)",
        ));
    }
    if options.notify_users && options.as_new {
        return Err(Error::validation(
            "notify_users",
            "A clone's users are invited (invite_users), not sent a reset link",
        ));
    }
    if (options.notify_users || options.invite_users) && app.delivery.mailer.is_none() {
        return Err(crate::users::mail_not_configured());
    }
    let unpacked = unpack(app, path, options.identity.as_ref()).await?;
    let sealer = app
        .webhooks
        .key
        .as_ref()
        .map(|k| k as &dyn psa_models::exports::Sealer);
    let (mut tx, mgmt) = app.begin_management(who, CREATE).await?;
    let target = target(&mut tx, app, mgmt, &unpacked, options).await?;
    // The customer company's name: the clone's, else the archive's.
    let name = target
        .row
        .get("company_name")
        .and_then(Value::as_str)
        .unwrap_or(&unpacked.manifest.tenant_name)
        .to_owned();
    let tables = imports::load(
        &mut tx,
        &Plan {
            manifest: &unpacked.manifest,
            dir: unpacked.scratch.path(),
            tenant: target.tenant,
            clone: target.mode == Mode::Clone,
            tenant_row: target.row,
            sealer,
            encrypted: unpacked.encrypted,
        },
    )
    .await?;
    let settings = app.lifecycle(mgmt);
    let mut warnings = Vec::new();
    if target.mode != Mode::Clone || options.track_customer {
        warnings.extend(track(&mut tx, &settings, target.tenant, &name).await?);
    }
    let source = unpacked.source();
    let rows: BTreeMap<&String, u64> = tables.iter().map(|(t, i)| (t, i.rows)).collect();
    let details = json!({
        "mode": target.mode, "export_id": source.export_id, "source_tenant_id": source.tenant_id,
        "schema_version": source.schema_version, "encrypted": source.encrypted,
        "credentials": source.credentials, "rows": rows,
    });
    let actor = who.actor();
    db::enter_tenant(&mut tx, target.tenant).await?;
    audit::record(
        &mut tx,
        target.tenant,
        &actor,
        Action::Import,
        "tenant",
        Some(target.tenant.0),
        details.clone(),
    )
    .await?;
    db::enter_tenant(&mut tx, mgmt).await?;
    audit::record(
        &mut tx,
        mgmt,
        &actor,
        Action::Import,
        "tenant",
        Some(target.tenant.0),
        details,
    )
    .await?;
    let tenant = lifecycle::show(&mut tx, &settings, target.tenant).await?;
    db::leave_tenant(&mut tx).await?;
    events::record(
        &mut tx,
        EventType::TenantImported,
        Some(target.tenant),
        json!({
            "tenant_id": target.tenant, "name": tenant.name, "slug": tenant.slug,
            "status": tenant.status, "mode": target.mode,
            "source": {"tenant_id": source.tenant_id, "export_id": source.export_id,
                       "exported_at": source.exported_at, "schema_version": source.schema_version},
            "rows": rows, "customer": tenant.customer,
        }),
        None,
    )
    .await?;
    tx.commit().await?;
    drop(unpacked);
    let (mailed, mail_failed) = if options.notify_users || options.invite_users {
        mail_users(app, &tenant, options.invite_users).await?
    } else {
        (0, 0)
    };
    Ok(Imported {
        mode: target.mode,
        tenant,
        source,
        tables,
        mailed,
        mail_failed,
        warnings,
    })
}

/// The tenant's customer record, by reconcile's rules (one company per tenant, found by its id;
/// the tenant's first administrator as its contact; the customer tag), in the import's
/// transaction: an existing record is made true ([`lifecycle::record_returned`]), a missing one
/// created with the tenant's state. Each write in the tenant context it belongs to, so the API's
/// confined role can make it. Returns warnings.
async fn track(
    conn: &mut sqlx::PgConnection,
    settings: &lifecycle::Settings,
    tenant: TenantId,
    name: &str,
) -> Result<Vec<String>> {
    use psa_models::customer_record::{self, CustomerCompanyIn, CustomerContactIn};
    use psa_models::validate::{EmailAddress, FullName};
    let mgmt = settings.management_tenant_id;
    let mut warnings = Vec::new();
    let found = lifecycle::record_returned(conn, settings, tenant).await?;
    db::enter_tenant(conn, mgmt).await?;
    let company = match psa_models::companies::find_by_managed_tenant(conn, mgmt, tenant).await? {
        Some(c) if found => c.company_id,
        _ => {
            let out = customer_record::company(
                conn,
                &CustomerCompanyIn {
                    workflow_id: None,
                    management_tenant_id: mgmt,
                    company_id: psa_models::CompanyId::new(),
                    tenant_id: tenant,
                    tenant_name: CompanyName::parse(name)?,
                },
            )
            .await?;
            warnings.extend(out.warning);
            lifecycle::apply_to_new_record(conn, settings, tenant, out.company_id).await?;
            out.company_id
        }
    };
    db::enter_tenant(conn, tenant).await?;
    match psa_models::users::tenant_admin(conn, tenant).await? {
        Some((first, last, email)) => {
            let email = EmailAddress::parse(&email)?;
            db::enter_tenant(conn, mgmt).await?;
            if psa_models::contacts::find_by_email(conn, mgmt, &email)
                .await?
                .is_none()
            {
                let full_name = FullName::parse(&format!("{first} {last}"))
                    .or_else(|_| FullName::parse(email.as_str()))?;
                let out = customer_record::contact(
                    conn,
                    &CustomerContactIn {
                        workflow_id: None,
                        management_tenant_id: mgmt,
                        tenant_id: tenant,
                        contact_id: psa_models::ContactId::new(),
                        company_id: company,
                        full_name,
                        email,
                    },
                )
                .await?;
                warnings.extend(out.warning);
            }
        }
        None => warnings.push("the tenant has no active administrator: no customer contact".into()),
    }
    db::enter_tenant(conn, mgmt).await?;
    customer_record::tag(
        conn,
        mgmt,
        company,
        &settings.customer_tag,
        None,
        &psa_models::audit::Actor::Platform("import"),
    )
    .await?;
    Ok(warnings)
}

/// Mails each active internal user of the imported tenant a link: an invitation (a clone's) or
/// a link to set a password. Each in its own transaction: one that fails leaves the others.
async fn mail_users(app: &App, tenant: &TenantDetails, invite: bool) -> Result<(u64, u64)> {
    let id = tenant.tenant_id;
    let mut tx = db::begin_tenant(&app.pool, id).await?;
    let users: Vec<(psa_models::UserId, String)> = sqlx::query_as(
        "SELECT user_id, email FROM users WHERE tenant = $1 AND NOT is_inactive \
           AND user_type = 'internal' ORDER BY email",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.rollback().await?;
    let (mut mailed, mut failed) = (0, 0);
    for (user, email) in users {
        let mut tx = db::begin_tenant(&app.pool, id).await?;
        let link = if invite {
            psa_models::invitations::reissue(&mut tx, id, user, &app.delivery, "platform:import")
                .await
                .map(Some)
        } else {
            match psa_models::validate::EmailAddress::parse(&email) {
                Ok(e) => psa_models::invitations::reset(&mut tx, id, &e, &app.delivery).await,
                Err(e) => Err(e),
            }
        };
        let kind = if invite {
            psa_models::mail::Kind::Invitation
        } else {
            psa_models::mail::Kind::PasswordReset
        };
        let sent = match link {
            Ok(Some(link)) => app
                .delivery
                .deliver(kind, &tenant.name, &link.user, &link.link)
                .await
                .map_err(|e| tracing::warn!(tenant = %id, error = %e, "import mail failed"))
                .is_ok(),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(tenant = %id, error = %e, "import link not issued");
                false
            }
        };
        if sent {
            tx.commit().await?;
            mailed += 1;
        } else {
            tx.rollback().await?;
            failed += 1;
        }
    }
    Ok((mailed, failed))
}
