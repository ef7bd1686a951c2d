//! Tags: a definition per (text, entity type), reused by exact text, and a mapping per tagged
//! entity. Attaching is idempotent: the same text on the same entity yields the same mapping.
//! New definitions get their colours from the reference's shared hash ([`crate::colors`]).

use std::sync::LazyLock;

use chrono::{DateTime, Utc};
use regex::Regex;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::validate::TagText;
use crate::{Error, MappingId, Result, TagId, TenantId, UserId, colors};

/// The kinds of entity a tag can be attached to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(rename_all = "snake_case")]
#[sqlx(type_name = "text", rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum TaggedType {
    Company,
    Contact,
}

impl TaggedType {
    pub fn as_str(self) -> &'static str {
        match self {
            TaggedType::Company => "company",
            TaggedType::Contact => "contact",
        }
    }
}

/// A row of `tag_definitions`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct TagDefinition {
    pub tenant: TenantId,
    pub tag_id: TagId,
    pub tag_text: String,
    pub tagged_type: TaggedType,
    pub background_color: Option<String>,
    pub text_color: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// A tag on an entity: the mapping with its definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Tag {
    pub tenant: TenantId,
    pub mapping_id: MappingId,
    pub tag_id: TagId,
    pub tag_text: String,
    pub tagged_id: uuid::Uuid,
    pub tagged_type: TaggedType,
    pub background_color: Option<String>,
    pub text_color: Option<String>,
    pub created_by: Option<UserId>,
    pub created_at: DateTime<Utc>,
}

macro_rules! tag_select {
    () => {
        "SELECT m.tenant, m.mapping_id, m.tag_id, d.tag_text, m.tagged_id, m.tagged_type, \
         d.background_color, d.text_color, m.created_by, m.created_at \
         FROM tag_mappings m JOIN tag_definitions d ON d.tenant = m.tenant AND d.tag_id = m.tag_id "
    };
}

/// Input of [`attach`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewTag {
    pub tag_text: String,
    pub tagged_id: uuid::Uuid,
    pub tagged_type: TaggedType,
    /// Colours for a new definition (`#RRGGBB`); generated when absent. Ignored when the
    /// definition already exists.
    #[serde(default)]
    pub background_color: Option<String>,
    #[serde(default)]
    pub text_color: Option<String>,
}

/// Options of [`attach`].
#[derive(Debug, Clone, Copy, Default)]
pub struct AttachOptions {
    /// The user attaching the tag (`tag_mappings.created_by`); `None` for the system.
    pub created_by: Option<UserId>,
    /// The new mapping's id, minted by the caller (the workflow) so that it can later remove the
    /// mapping it created, and only that one: an existing mapping keeps its own id.
    pub mapping_id: Option<MappingId>,
}

/// What [`attach`] did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Attached {
    pub tag: Tag,
    /// Whether the definition was created by this call (rather than reused).
    pub definition_created: bool,
    /// Whether the mapping was created by this call (rather than already present).
    pub mapping_created: bool,
}

static COLOR_RE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^#[0-9A-Fa-f]{6}$").expect("valid regex"));

/// Whether `c` is a colour as definitions hold them (`#RRGGBB`).
pub fn is_color(c: &str) -> bool {
    COLOR_RE.is_match(c)
}

fn color(raw: Option<&str>, field: &'static str) -> Result<Option<String>> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(c) if COLOR_RE.is_match(c) => Ok(Some(c.to_ascii_uppercase())),
        Some(_) => Err(Error::validation(
            field,
            "Colours must be of the form #RRGGBB",
        )),
    }
}

/// Checks that the tagged entity exists in `tenant` (mappings have no foreign key to it).
async fn require_entity(
    conn: &mut PgConnection,
    tenant: TenantId,
    tagged_type: TaggedType,
    id: uuid::Uuid,
) -> Result<()> {
    let sql = match tagged_type {
        TaggedType::Company => {
            "SELECT EXISTS (SELECT 1 FROM companies WHERE tenant = $1 AND company_id = $2)"
        }
        TaggedType::Contact => {
            "SELECT EXISTS (SELECT 1 FROM contacts WHERE tenant = $1 AND contact_name_id = $2)"
        }
    };
    let exists: bool = sqlx::query_scalar(sql)
        .bind(tenant)
        .bind(id)
        .fetch_one(conn)
        .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::ForeignKey {
            field: "tagged_id".into(),
            message: format!("The tagged {} does not exist", tagged_type.as_str()).into(),
        })
    }
}

/// The definition with exactly this text for this type, if any (the API checks `tag:create`
/// only when there is none).
pub async fn find_definition(
    conn: &mut PgConnection,
    tenant: TenantId,
    text: &TagText,
    tagged_type: TaggedType,
) -> Result<Option<TagDefinition>> {
    Ok(sqlx::query_as::<_, TagDefinition>(
        "SELECT tenant, tag_id, tag_text, tagged_type, background_color, text_color, created_at \
         FROM tag_definitions WHERE tenant = $1 AND tag_text = $2 AND tagged_type = $3",
    )
    .bind(tenant)
    .bind(text.as_str())
    .bind(tagged_type)
    .fetch_optional(conn)
    .await?)
}

/// Attaches a tag to an entity: reuses the definition with the same exact text and type or
/// creates one, then maps it to the entity unless it already is. Safe under concurrency (both
/// inserts are `ON CONFLICT DO NOTHING` on the natural keys) and idempotent.
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn attach(
    conn: &mut PgConnection,
    tenant: TenantId,
    input: NewTag,
    options: AttachOptions,
) -> Result<Attached> {
    let text = TagText::parse(&input.tag_text)?;
    let background = color(input.background_color.as_deref(), "background_color")?;
    let text_color = color(input.text_color.as_deref(), "text_color")?;
    require_entity(conn, tenant, input.tagged_type, input.tagged_id).await?;

    let (generated_bg, generated_text) = colors::tag_colors(text.as_str());
    let created: Option<TagId> = sqlx::query_scalar(
        "INSERT INTO tag_definitions (tenant, tag_text, tagged_type, background_color, text_color) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (tenant, tag_text, tagged_type) DO NOTHING \
         RETURNING tag_id",
    )
    .bind(tenant)
    .bind(text.as_str())
    .bind(input.tagged_type)
    .bind(background.unwrap_or(generated_bg))
    .bind(text_color.unwrap_or(generated_text))
    .fetch_optional(&mut *conn)
    .await?;
    let definition_created = created.is_some();
    let tag_id = match created {
        Some(id) => id,
        None => {
            find_definition(conn, tenant, &text, input.tagged_type)
                .await?
                .ok_or(Error::NotFound {
                    entity: "tag definition",
                })?
                .tag_id
        }
    };
    let mapping: Option<MappingId> = sqlx::query_scalar(
        "INSERT INTO tag_mappings (tenant, tag_id, tagged_id, tagged_type, created_by, mapping_id) \
         VALUES ($1, $2, $3, $4, $5, coalesce($6, gen_random_uuid())) \
         ON CONFLICT (tenant, tag_id, tagged_id) DO NOTHING \
         RETURNING mapping_id",
    )
    .bind(tenant)
    .bind(tag_id)
    .bind(input.tagged_id)
    .bind(input.tagged_type)
    .bind(options.created_by)
    .bind(options.mapping_id)
    .fetch_optional(&mut *conn)
    .await?;
    let mapping_created = mapping.is_some();
    let tag = sqlx::query_as::<_, Tag>(concat!(
        tag_select!(),
        "WHERE m.tenant = $1 AND m.tag_id = $2 AND m.tagged_id = $3"
    ))
    .bind(tenant)
    .bind(tag_id)
    .bind(input.tagged_id)
    .fetch_one(conn)
    .await?;
    Ok(Attached {
        tag,
        definition_created,
        mapping_created,
    })
}

/// The tags on one entity, by text.
pub async fn list_for_entity(
    conn: &mut PgConnection,
    tenant: TenantId,
    tagged_type: TaggedType,
    tagged_id: uuid::Uuid,
) -> Result<Vec<Tag>> {
    Ok(sqlx::query_as::<_, Tag>(concat!(
        tag_select!(),
        "WHERE m.tenant = $1 AND m.tagged_type = $2 AND m.tagged_id = $3 ORDER BY d.tag_text, m.mapping_id"
    ))
    .bind(tenant)
    .bind(tagged_type)
    .bind(tagged_id)
    .fetch_all(conn)
    .await?)
}

/// The tags on many entities of one type at once (a page of a list), by entity then text.
pub async fn list_for_entities(
    conn: &mut PgConnection,
    tenant: TenantId,
    tagged_type: TaggedType,
    tagged_ids: &[uuid::Uuid],
) -> Result<Vec<Tag>> {
    Ok(sqlx::query_as::<_, Tag>(concat!(
        tag_select!(),
        "WHERE m.tenant = $1 AND m.tagged_type = $2 AND m.tagged_id = ANY($3) \
         ORDER BY m.tagged_id, d.tag_text, m.mapping_id"
    ))
    .bind(tenant)
    .bind(tagged_type)
    .bind(tagged_ids)
    .fetch_all(conn)
    .await?)
}

/// One mapping with its definition.
pub async fn get(conn: &mut PgConnection, tenant: TenantId, mapping: MappingId) -> Result<Tag> {
    sqlx::query_as::<_, Tag>(concat!(
        tag_select!(),
        "WHERE m.tenant = $1 AND m.mapping_id = $2"
    ))
    .bind(tenant)
    .bind(mapping)
    .fetch_optional(conn)
    .await?
    .ok_or(Error::NotFound { entity: "tag" })
}

/// Removes one mapping (the definition stays for reuse).
#[tracing::instrument(skip_all, fields(%tenant, %mapping))]
pub async fn detach(conn: &mut PgConnection, tenant: TenantId, mapping: MappingId) -> Result<()> {
    let n = sqlx::query("DELETE FROM tag_mappings WHERE tenant = $1 AND mapping_id = $2")
        .bind(tenant)
        .bind(mapping)
        .execute(conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::NotFound { entity: "tag" });
    }
    Ok(())
}

/// Removes every mapping on one entity; returns how many there were.
pub async fn detach_all(
    conn: &mut PgConnection,
    tenant: TenantId,
    tagged_type: TaggedType,
    tagged_id: uuid::Uuid,
) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM tag_mappings WHERE tenant = $1 AND tagged_type = $2 AND tagged_id = $3",
    )
    .bind(tenant)
    .bind(tagged_type)
    .bind(tagged_id)
    .execute(conn)
    .await?
    .rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        let msg = |s: &str| TagText::parse(s).unwrap_err().to_string();
        assert_eq!(
            TagText::parse("  PSA Customer ").unwrap().as_str(),
            "PSA Customer"
        );
        assert_eq!(msg(""), "Tag text is required");
        assert_eq!(msg("   "), "Tag text is required");
        assert_eq!(
            msg(&"x".repeat(51)),
            "Tag text too long (max 50 characters)"
        );
        assert!(TagText::parse(&"x".repeat(50)).is_ok());
        assert_eq!(msg("café"), "Tag text contains invalid characters");
        assert_eq!(msg("a\nb"), "Tag text contains invalid characters");
        assert_eq!(msg("back`tick"), "Tag text contains invalid characters");
        assert!(TagText::parse("VIP! (gold) #1 <a>, 50% & more: \"x\" 'y' ./?").is_ok());
    }

    #[test]
    fn colour_rules() {
        assert_eq!(
            color(Some("#abcdef"), "c").unwrap().as_deref(),
            Some("#ABCDEF")
        );
        assert_eq!(color(Some(""), "c").unwrap(), None);
        for bad in ["abcdef", "#abcde", "#abcdefg", "#ghijkl", "red"] {
            assert_eq!(
                color(Some(bad), "background_color").unwrap_err().field(),
                Some("background_color")
            );
        }
    }

    #[test]
    fn tagged_type_wire_names() {
        assert_eq!(
            serde_json::to_string(&TaggedType::Company).unwrap(),
            "\"company\""
        );
        assert!(serde_json::from_str::<TaggedType>("\"ticket\"").is_err());
    }
}
