//! Import a tenant (management, `tenant:create`; `psa_app::imports`): upload an export archive,
//! see what it holds and what importing it would do, then import. Between the two steps the
//! upload waits in the export store, encrypted to the platform's key like an export (any
//! replica serves the second step); the import removes it, the worker's housekeeping removes one
//! never imported after a day. An encrypted archive's identity is asked at each step and never
//! kept.

use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::get;
use psa_app::imports::{ImportOptions, Imported, Preview, Upload};
use secrecy::SecretString;

use super::{Console, FieldErrors, Nav, Refused, page, page_ok};
use crate::AppState;
use crate::auth::{Action, Permission, Resource};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new().route(
        "/console/tenants/import",
        // The upload is bounded by PSA_IMPORT_MAX_BYTES as it streams to disk, not by the
        // pages' body limit.
        get(form).post(submit).layer(DefaultBodyLimit::disable()),
    )
}

#[derive(Default)]
struct ImportForm {
    /// The staged upload, once previewed.
    staged: String,
    file_name: String,
    as_new: bool,
    name: String,
    slug: String,
    notify_users: bool,
    invite_users: bool,
    track_customer: bool,
}

/// The preview as shown.
struct Shown {
    preview: Preview,
    rows: Vec<(String, u64)>,
    total: u64,
}

#[derive(Template)]
#[template(path = "console/import_tenant.html")]
struct ImportPage {
    nav: Option<Nav>,
    csrf: String,
    f: ImportForm,
    errors: FieldErrors,
    shown: Option<Shown>,
    done: Option<Imported>,
    done_rows: u64,
    /// The import's (or the preview's) mode, in words.
    mode: &'static str,
    /// The tables the import left out, and why.
    left_out: Vec<(String, String)>,
}

fn blank(console: &Console, f: ImportForm) -> ImportPage {
    ImportPage {
        nav: console.nav("tenants"),
        csrf: console.csrf.clone(),
        f,
        errors: FieldErrors::default(),
        shown: None,
        done: None,
        done_rows: 0,
        mode: "",
        left_out: Vec::new(),
    }
}

async fn form(State(state): State<AppState>, console: Console) -> Result<Response, Refused> {
    // For those who may import: others learn it here, not after uploading.
    let tx = console
        .caller
        .authorize_management(&state, Permission(Resource::Tenant, Action::Create))
        .await?;
    super::done(tx).await?;
    Ok(page_ok(blank(&console, ImportForm::default())))
}

const FIELDS: [&str; 4] = ["archive", "identity", "name", "slug"];

fn unreadable(e: axum::extract::multipart::MultipartError) -> Refused {
    ApiError::from(psa_models::Error::validation(
        "archive",
        format!("the form could not be read: {}", e.body_text()),
    ))
    .into()
}

/// The most a text field of the form may hold (an identity file is well under it).
const MAX_FIELD: usize = 16 * 1024;

/// A text field, at most [`MAX_FIELD`] bytes: the upload is unbounded by the pages' limit, its
/// other fields are not.
async fn text(mut field: axum::extract::multipart::Field<'_>) -> Result<String, Refused> {
    let name = field.name().unwrap_or_default().to_owned();
    let mut bytes = Vec::new();
    while let Some(chunk) = field.chunk().await.map_err(unreadable)? {
        bytes.extend_from_slice(&chunk);
        if bytes.len() > MAX_FIELD {
            return Err(ApiError::from(psa_models::Error::validation(
                "archive",
                format!("the form's {name} is longer than any this form takes"),
            ))
            .into());
        }
    }
    String::from_utf8(bytes).map_err(|_| {
        ApiError::from(psa_models::Error::validation(
            "archive",
            format!("the form's {name} is not text"),
        ))
        .into()
    })
}

async fn submit(
    State(state): State<AppState>,
    console: Console,
    mut multipart: Multipart,
) -> Result<Response, Refused> {
    let who = console.caller.principal();
    // Who may not import learns it before anything of the form is read.
    psa_app::imports::authorize(&state.app, &who)
        .await
        .map_err(ApiError::from)?;
    let mut f = ImportForm::default();
    let mut csrf_checked = false;
    let mut upload: Option<Upload> = None;
    let mut identity = String::new();
    let mut step = String::new();
    let mut errors = FieldErrors::default();
    while let Some(field) = multipart.next_field().await.map_err(unreadable)? {
        let name = field.name().unwrap_or_default().to_owned();
        if name == "archive" {
            // Fields come in the page's order, the token first: nothing is received from a form
            // this session did not send, nor from someone who may not import.
            if !csrf_checked {
                console.check_csrf("")?;
            }
            let file_name = field.file_name().unwrap_or_default().to_owned();
            if file_name.is_empty() {
                continue;
            }
            match Upload::receive(field, state.app.settings.import_max_bytes).await {
                Ok(u) => {
                    f.file_name = file_name;
                    upload = Some(u);
                }
                Err(e) => errors = FieldErrors::from_error(e.into(), &FIELDS)?,
            }
            continue;
        }
        let value = text(field).await?;
        match name.as_str() {
            "csrf" => {
                console.check_csrf(&value)?;
                csrf_checked = true;
            }
            "staged" => f.staged = value,
            "file_name" => f.file_name = value,
            "identity" => identity = value,
            "mode" => f.as_new = value == "clone",
            "name" => f.name = value,
            "slug" => f.slug = value,
            "notify_users" => f.notify_users = true,
            "invite_users" => f.invite_users = true,
            "track_customer" => f.track_customer = true,
            "step" => step = value,
            _ => {}
        }
    }
    if !csrf_checked {
        console.check_csrf("")?;
    }
    if errors.any() {
        return Ok(refused(&console, f, errors));
    }
    let options = ImportOptions {
        as_new: f.as_new,
        name: Some(f.name.trim().to_owned()).filter(|n| !n.is_empty() && f.as_new),
        slug: Some(f.slug.trim().to_owned()).filter(|s| !s.is_empty()),
        identity: Some(identity.trim().to_owned())
            .filter(|i| !i.is_empty())
            .map(SecretString::from),
        notify_users: f.notify_users && !f.as_new,
        invite_users: f.invite_users && f.as_new,
        track_customer: f.track_customer && f.as_new,
    };
    // The archive: the one just uploaded (kept for the next step), or the one kept before.
    let staged_before = uuid::Uuid::parse_str(f.staged.trim()).ok();
    let archive = match (upload, staged_before) {
        (Some(u), _) => {
            match psa_app::imports::stage(&state.app, &who, &u).await {
                Ok(id) => f.staged = id.to_string(),
                Err(e) => return sorted(&console, f, e),
            }
            u
        }
        (None, Some(id)) => match psa_app::imports::staged(&state.app, &who, id).await {
            Ok(u) => u,
            Err(e) => {
                f.staged.clear();
                return sorted(&console, f, e);
            }
        },
        (None, None) => {
            return sorted(
                &console,
                f,
                psa_models::Error::validation("archive", "Choose the archive to import"),
            );
        }
    };
    if step != "import" {
        return match psa_app::imports::preview(&state.app, &who, &archive.path(), &options).await {
            Ok(preview) => {
                let rows: Vec<(String, u64)> = preview
                    .source
                    .rows
                    .iter()
                    .filter(|(_, n)| **n > 0)
                    .map(|(t, n)| (t.clone(), *n))
                    .collect();
                let total = rows.iter().map(|(_, n)| n).sum();
                let mut p = blank(&console, f);
                p.mode = preview.mode.as_str();
                p.shown = Some(Shown {
                    preview,
                    rows,
                    total,
                });
                Ok(page_ok(p))
            }
            Err(e) => sorted(&console, f, e),
        };
    }
    match psa_app::imports::import(&state.app, &who, &archive.path(), &options).await {
        Ok(done) => {
            if let Some(id) = staged_before.or_else(|| uuid::Uuid::parse_str(&f.staged).ok()) {
                // Kept a day at most anyway: a failure to remove it now is only logged.
                if let Err(e) = psa_app::imports::unstage(&state.app, &who, id).await {
                    tracing::warn!(error = %e, "cannot remove a staged upload");
                }
            }
            let mut p = blank(&console, ImportForm::default());
            p.done_rows = done.tables.values().map(|t| t.rows).sum();
            p.mode = done.mode.as_str();
            p.left_out = done
                .tables
                .iter()
                .filter_map(|(t, i)| i.left_out.clone().map(|why| (t.clone(), why)))
                .collect();
            p.done = Some(done);
            Ok(page(StatusCode::CREATED, p))
        }
        Err(e) => sorted(&console, f, e),
    }
}

/// The form again with the model's refusal on it (or the error page for who may not).
fn sorted(console: &Console, f: ImportForm, e: psa_models::Error) -> Result<Response, Refused> {
    let errors = FieldErrors::from_error(e.into(), &FIELDS)?;
    Ok(refused(console, f, errors))
}

fn refused(console: &Console, f: ImportForm, errors: FieldErrors) -> Response {
    let mut p = blank(console, f);
    p.errors = errors;
    page(StatusCode::UNPROCESSABLE_ENTITY, p)
}
