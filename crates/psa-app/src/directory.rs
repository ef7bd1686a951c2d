//! A tenant's directory: companies, contacts and the tags on them (the reference's `client`,
//! `contact` and `tag` permissions), for the API and the console. Every change is audited in the
//! tenant, with what changed (the fields, before and after).

use psa_models::audit::{self, Action};
use psa_models::companies::{self, Company, CompanyPatch, NewCompany};
use psa_models::contacts::{self, Contact, ContactPatch, NewContact};
use psa_models::tags::{self, AttachOptions, NewTag, Tag, TaggedType};
use psa_models::validate::TagText;
use psa_models::{CompanyId, ContactId, Error, MappingId, Result, TenantId};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::App;
use crate::access::{self, Access, Permission, Principal, Resource};

/// The fields that differ between two versions of a row, `{field: {"from", "to"}}` (the row's
/// own clock left out).
fn changes<T: Serialize>(before: &T, after: &T) -> Value {
    let (Ok(Value::Object(b)), Ok(Value::Object(a))) =
        (serde_json::to_value(before), serde_json::to_value(after))
    else {
        return json!({});
    };
    let mut out = Map::new();
    for (k, to) in a {
        if k == "updated_at" {
            continue;
        }
        let from = b.get(&k).cloned().unwrap_or(Value::Null);
        if from != to {
            out.insert(k, json!({"from": from, "to": to}));
        }
    }
    Value::Object(out)
}

/// The keys of a company's properties that are the platform's: a managed tenant's customer
/// record's link and lifecycle facts (also guarded in the database).
pub const PLATFORM_KEYS: [&str; 4] = ["tenant_id", "tenant_status", "delete_after", "deleted_at"];

/// Whether `tenant` is the management tenant (where customer records live; elsewhere the
/// [`PLATFORM_KEYS`] are plain data).
async fn is_management(conn: &mut sqlx::PgConnection, tenant: TenantId) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT coalesce((SELECT is_management FROM tenants WHERE tenant = $1), false)",
    )
    .bind(tenant)
    .fetch_one(conn)
    .await?)
}

/// Refuses properties that name one of the [`PLATFORM_KEYS`], naming it.
fn refuse_platform_keys(properties: Option<&Map<String, Value>>) -> Result<()> {
    if let Some(k) = properties
        .into_iter()
        .flat_map(|p| p.keys())
        .find(|k| PLATFORM_KEYS.contains(&k.as_str()))
    {
        return Err(Error::validation(
            format!("properties.{k}"),
            format!(
                "properties.{k} is set by the platform only (a managed tenant's customer record)"
            ),
        ));
    }
    Ok(())
}

pub async fn create_company(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    input: NewCompany,
) -> Result<Company> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::Client, Access::Create))
        .await?;
    if is_management(&mut tx, tenant).await? {
        refuse_platform_keys(input.properties.as_ref())?;
    }
    let company = companies::create(&mut tx, tenant, input, Default::default()).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Create,
        "company",
        Some(company.company_id.0),
        json!({"company_name": company.company_name}),
    )
    .await?;
    tx.commit().await?;
    Ok(company)
}

pub async fn update_company(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    id: CompanyId,
    patch: CompanyPatch,
) -> Result<Company> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::Client, Access::Update))
        .await?;
    let management = is_management(&mut tx, tenant).await?;
    if management {
        refuse_platform_keys(patch.properties.as_ref())?;
    }
    let before = companies::get(&mut tx, tenant, id).await?;
    // A canceled or deleted tenant's customer record stays inactive: the lifecycle made it so,
    // and a restore puts back what the cancel changed.
    let ended = before
        .properties
        .as_ref()
        .and_then(|p| p.get("tenant_status"))
        .and_then(Value::as_str)
        .is_some_and(|s| s == "canceled" || s == "deleted");
    if management && ended && patch.is_inactive.is_some_and(|i| i != before.is_inactive) {
        return Err(Error::validation(
            "is_inactive",
            "This is a canceled tenant's customer record: it stays inactive unless the tenant \
             is restored",
        ));
    }
    let after = companies::update(&mut tx, tenant, id, patch).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Update,
        "company",
        Some(id.0),
        json!({"changes": changes(&before, &after)}),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

pub async fn delete_company(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    id: CompanyId,
) -> Result<()> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::Client, Access::Delete))
        .await?;
    let before = companies::get(&mut tx, tenant, id).await?;
    let managed = before
        .properties
        .as_ref()
        .and_then(|p| p.get("tenant_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(managed) = managed
        && is_management(&mut tx, tenant).await?
    {
        return Err(Error::conflict(
            None,
            format!(
                "{} is the customer record of tenant {managed}: it is removed with the tenant's \
                 lifecycle (cancel the tenant), not deleted",
                before.company_name
            ),
        ));
    }
    companies::delete(&mut tx, tenant, id).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Delete,
        "company",
        Some(id.0),
        json!({"company_name": before.company_name}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn create_contact(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    input: NewContact,
) -> Result<Contact> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::Contact, Access::Create))
        .await?;
    let contact = contacts::create(&mut tx, tenant, input, Default::default()).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Create,
        "contact",
        Some(contact.contact_name_id.0),
        json!({"full_name": contact.full_name, "company_id": contact.company_id}),
    )
    .await?;
    tx.commit().await?;
    Ok(contact)
}

pub async fn update_contact(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    id: ContactId,
    patch: ContactPatch,
) -> Result<Contact> {
    let mut tx = app
        .begin(who, tenant, Permission(Resource::Contact, Access::Update))
        .await?;
    let before = contacts::get(&mut tx, tenant, id).await?;
    let after = contacts::update(&mut tx, tenant, id, patch).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Update,
        "contact",
        Some(id.0),
        json!({"changes": changes(&before, &after)}),
    )
    .await?;
    tx.commit().await?;
    Ok(after)
}

/// The permission a tag's entity asks for.
fn entity(t: TaggedType) -> Resource {
    match t {
        TaggedType::Company => Resource::Client,
        TaggedType::Contact => Resource::Contact,
    }
}

/// Attaches a tag: `update` on the entity, and `tag:create` for a text with no definition yet.
/// Returns the tag and whether the mapping is new (only a new one is audited).
pub async fn attach_tag(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    input: NewTag,
) -> Result<(Tag, bool)> {
    let text = TagText::parse(&input.tag_text)?;
    let mut tx = app
        .begin(
            who,
            tenant,
            Permission(entity(input.tagged_type), Access::Update),
        )
        .await?;
    if tags::find_definition(&mut tx, tenant, &text, input.tagged_type)
        .await?
        .is_none()
        && !access::may(&mut tx, who, Permission(Resource::Tag, Access::Create)).await?
    {
        return Err(Error::forbidden(
            "You can only select from existing tags (tag:create is required)",
        ));
    }
    let attached = tags::attach(
        &mut tx,
        tenant,
        input,
        AttachOptions {
            created_by: who.member().map(|m| m.user),
            mapping_id: None,
        },
    )
    .await?;
    if attached.mapping_created {
        audit::record(
            &mut tx,
            tenant,
            &who.actor(),
            Action::Create,
            "tag",
            Some(attached.tag.mapping_id.0),
            json!({"tag_text": attached.tag.tag_text, "tagged_type": attached.tag.tagged_type,
                   "tagged_id": attached.tag.tagged_id}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok((attached.tag, attached.mapping_created))
}

/// Detaches a tag (`update` on what it tags; the definition stays); returns the mapping as it
/// was.
pub async fn detach_tag(
    app: &App,
    who: &Principal,
    tenant: TenantId,
    id: MappingId,
) -> Result<Tag> {
    // The permission depends on what the mapping tags: read it first, confined to the tenant.
    let mut tx = app.begin_unchecked(who, tenant).await?;
    let tag = tags::get(&mut tx, tenant, id).await?;
    access::require(
        &mut tx,
        who,
        Permission(entity(tag.tagged_type), Access::Update),
    )
    .await?;
    tags::detach(&mut tx, tenant, id).await?;
    audit::record(
        &mut tx,
        tenant,
        &who.actor(),
        Action::Delete,
        "tag",
        Some(id.0),
        json!({"tag_text": tag.tag_text, "tagged_type": tag.tagged_type,
               "tagged_id": tag.tagged_id}),
    )
    .await?;
    tx.commit().await?;
    Ok(tag)
}
