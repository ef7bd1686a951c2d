//! Tenant import over the API (`psa_app::imports`): the archive is the request's body, streamed
//! to a private scratch file (at most `PSA_IMPORT_MAX_BYTES`), checked whole, then written in one
//! transaction.

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use psa_app::imports::{ImportOptions, Imported, Preview, Upload};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::extract::ApiQuery;

/// The header that carries the age identity opening an encrypted archive.
pub const IDENTITY_HEADER: &str = "age-identity";

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ImportQuery {
    /// A clone: a new tenant with new ids, its users without credentials.
    #[serde(default)]
    pub as_new: bool,
    /// The clone's name (default: the original's, with " (copy)").
    pub name: Option<String>,
    /// The tenant's slug, when the archive's is taken (a clone's default: a free one).
    pub slug: Option<String>,
    /// Mail each active user of a restored or moved tenant a link to set a password.
    #[serde(default)]
    pub notify_users: bool,
    /// Mail each active user of a clone an invitation.
    #[serde(default)]
    pub invite_users: bool,
    /// Record a clone as a customer (a restored or moved tenant always is).
    #[serde(default)]
    pub track_customer: bool,
    /// Check the archive and answer what the import would do (200, a preview); write nothing.
    #[serde(default)]
    pub dry_run: bool,
}

/// Import a tenant from an export archive (management, `tenant:create`): the body is the archive
/// as an export's download gives it (`application/gzip`), or a move's encrypted one with its age
/// identity (`AGE-SECRET-KEY-1...`) in the `Age-Identity` header, used for this request only.
/// Restores a deleted tenant or moves one from another installation with its own ids, or clones
/// one (`as_new`). Everything is checked before anything is written (422 on `archive` or
/// `identity` naming what is wrong), and written in one transaction; 409 `tenant_exists` when
/// the tenant is here, `slug_taken` when its slug is another's. Event `tenant.imported`.
#[utoipa::path(post, path = "/api/v1/tenants/imports", tag = "tenants", security(("bearer" = [])),
    params(ImportQuery,
           ("Age-Identity" = Option<String>, Header, description = "The age identity that opens an encrypted archive")),
    request_body(content = Vec<u8>, content_type = "application/gzip"),
    responses((status = 201, body = Imported), (status = 200, body = Preview),
              (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 503, body = ErrorBody)))]
pub async fn import_tenant(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ImportQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let who = caller.principal();
    psa_app::imports::authorize(&state.app, &who).await?;
    let identity = match headers.get(IDENTITY_HEADER) {
        None => None,
        Some(v) => Some(secrecy::SecretString::from(
            v.to_str()
                .map_err(|_| {
                    psa_models::Error::validation("identity", "Age-Identity is not readable text")
                })?
                .to_owned(),
        )),
    };
    let upload =
        Upload::receive(body.into_data_stream(), state.app.settings.import_max_bytes).await?;
    let options = ImportOptions {
        as_new: q.as_new,
        name: q.name,
        slug: q.slug,
        identity,
        notify_users: q.notify_users,
        invite_users: q.invite_users,
        track_customer: q.track_customer,
    };
    if q.dry_run {
        let preview = psa_app::imports::preview(&state.app, &who, &upload.path(), &options).await?;
        return Ok(Json(preview).into_response());
    }
    let done = psa_app::imports::import(&state.app, &who, &upload.path(), &options).await?;
    Ok((StatusCode::CREATED, Json(done)).into_response())
}
