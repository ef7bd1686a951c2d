//! `/api/v1/tags`: attach, list and detach tags. Tagging needs `update` on the tagged entity's
//! resource, plus `tag:create` when the text has no definition yet (reference §5.1).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use psa_models::MappingId;
use psa_models::tags::{self, NewTag, Tag, TaggedType};
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::auth::{Action, Caller, Permission, Resource};
use crate::error::{ApiError, ErrorBody};
use crate::extract::{ApiJson, ApiQuery, PathId};

/// The resource whose permissions govern tags on an entity of this type (companies are the
/// `client` resource, as in the reference).
fn entity(t: TaggedType) -> Resource {
    match t {
        TaggedType::Company => Resource::Client,
        TaggedType::Contact => Resource::Contact,
    }
}

/// Attach a tag to a company or contact. 201 when the mapping is new, 200 when it existed.
#[utoipa::path(post, path = "/api/v1/tags", tag = "tags", security(("bearer" = [])),
    request_body = NewTag,
    responses((status = 201, body = Tag), (status = 200, body = Tag), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn attach(
    State(state): State<AppState>,
    caller: Caller,
    ApiJson(input): ApiJson<NewTag>,
) -> Result<(StatusCode, Json<Tag>), ApiError> {
    let (tag, created) = attach_tag(&state, &caller, input).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(tag)))
}

/// Attaches a tag (the API and the console): `update` on the entity, and `tag:create` for a
/// text with no definition yet. Returns the tag and whether the mapping is new.
pub async fn attach_tag(
    state: &AppState,
    caller: &Caller,
    input: NewTag,
) -> Result<(Tag, bool), ApiError> {
    Ok(
        psa_app::directory::attach_tag(&state.app, &caller.principal(), caller.tenant, input)
            .await?,
    )
}

/// Query parameters of the tag list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(inline)]
    pub tagged_type: TaggedType,
    pub tagged_id: uuid::Uuid,
}

/// The tags on one entity.
#[utoipa::path(get, path = "/api/v1/tags", tag = "tags", security(("bearer" = [])),
    params(ListQuery), responses((status = 200, body = Vec<Tag>)))]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<Vec<Tag>>, ApiError> {
    let mut tx = caller
        .authorize(&state, Permission(entity(q.tagged_type), Action::Read))
        .await?;
    let list = tags::list_for_entity(&mut tx, caller.tenant, q.tagged_type, q.tagged_id).await?;
    tx.commit().await?;
    Ok(Json(list))
}

/// Remove a tag from its entity (the definition stays for reuse).
#[utoipa::path(delete, path = "/api/v1/tags/{mapping_id}", tag = "tags", security(("bearer" = [])),
    params(("mapping_id" = uuid::Uuid, Path)),
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn detach(
    State(state): State<AppState>,
    caller: Caller,
    PathId(id): PathId<MappingId>,
) -> Result<StatusCode, ApiError> {
    detach_tag(&state, &caller, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Detaches a tag (`update` on what it tags); returns the mapping as it was.
pub async fn detach_tag(state: &AppState, caller: &Caller, id: MappingId) -> Result<Tag, ApiError> {
    Ok(psa_app::directory::detach_tag(&state.app, &caller.principal(), caller.tenant, id).await?)
}
