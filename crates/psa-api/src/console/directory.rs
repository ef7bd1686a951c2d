//! Companies, contacts and their tags, for any tenant's staff: the API's model functions and
//! permissions (`client:*`, `contact:*`, tags through `crate::tags`), in the caller's tenant.

use std::collections::HashMap;

use askama::Template;
use axum::Router;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use psa_models::companies::{self, Company, CompanyPatch, NewCompany};
use psa_models::contacts::{self, Contact, ContactPatch, NewContact};
use psa_models::db::PageRequest;
use psa_models::tags::{self, NewTag, TaggedType};
use psa_models::validate::ClientType;
use psa_models::{CompanyId, ContactId, MappingId};
use serde::Deserialize;

use super::{
    Badge, Console, CsrfForm, FieldErrors, Nav, Opt, PageId, Refused, badge, done, next_link,
    options, page, page_ok,
};
use crate::AppState;
use crate::auth::{Action, Permission, Resource};
use crate::error::ApiError;

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/console/companies", get(companies_list))
        .route(
            "/console/companies/new",
            get(company_new).post(company_create),
        )
        .route(
            "/console/companies/{id}",
            get(company_show).post(company_update),
        )
        .route("/console/companies/{id}/delete", post(company_delete))
        .route("/console/companies/{id}/tags", post(company_tag))
        .route("/console/contacts", get(contacts_list))
        .route(
            "/console/contacts/new",
            get(contact_new).post(contact_create),
        )
        .route(
            "/console/contacts/{id}",
            get(contact_show).post(contact_update),
        )
        .route("/console/contacts/{id}/tags", post(contact_tag))
        .route("/console/tags/{mapping}/detach", post(detach))
}

/// Fixed notices a redirect may ask for (never text from the address bar).
fn notice(done: &str) -> Option<String> {
    match done {
        "created" => Some("Created.".into()),
        "saved" => Some("Saved.".into()),
        "deleted" => Some("The company was deleted.".into()),
        "tagged" => Some("Tag attached.".into()),
        "untagged" => Some("Tag removed.".into()),
        _ => None,
    }
}

/// The tags of a page of companies or contacts, by entity, read in the page's transaction.
async fn tags_by_entity(
    conn: &mut sqlx::PgConnection,
    tenant: psa_models::TenantId,
    kind: TaggedType,
    ids: &[uuid::Uuid],
) -> Result<HashMap<uuid::Uuid, Vec<Badge>>, Refused> {
    let mut by: HashMap<uuid::Uuid, Vec<Badge>> = HashMap::new();
    for t in &tags::list_for_entities(conn, tenant, kind, ids)
        .await
        .map_err(ApiError::from)?
    {
        by.entry(t.tagged_id).or_default().push(badge(t));
    }
    Ok(by)
}

// ---- companies ----

struct CompanyRow {
    id: String,
    name: String,
    kind: &'static str,
    billing_email: String,
    inactive: bool,
    tags: Vec<Badge>,
}

#[derive(Template)]
#[template(path = "console/companies.html")]
struct CompaniesPage {
    nav: Option<Nav>,
    notice: Option<String>,
    name: String,
    statuses: Vec<Opt>,
    rows: Vec<CompanyRow>,
    next: Option<String>,
    can_create: bool,
}

#[derive(Deserialize, Default)]
struct CompaniesQuery {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    done: String,
}

fn kind_label(k: Option<ClientType>) -> &'static str {
    match k {
        Some(ClientType::Individual) => "individual",
        _ => "company",
    }
}

async fn companies_list(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<CompaniesQuery>,
) -> Result<Response, Refused> {
    let mut tx = console
        .caller
        .authorize(&state, Permission(Resource::Client, Action::Read))
        .await?;
    let can_create = console
        .caller
        .may(&mut tx, Permission(Resource::Client, Action::Create))
        .await?;
    let page = companies::list(
        &mut tx,
        console.caller.tenant,
        &companies::ListFilter {
            is_inactive: match q.status.as_str() {
                "active" => Some(false),
                "inactive" => Some(true),
                _ => None,
            },
            name: Some(q.name.trim().to_owned()).filter(|n| !n.is_empty()),
        },
        &PageRequest {
            limit: Some(50),
            cursor: Some(q.cursor.clone()).filter(|c| !c.is_empty()),
        },
    )
    .await
    .map_err(ApiError::from)?;
    let ids: Vec<uuid::Uuid> = page.items.iter().map(|c| c.company_id.0).collect();
    let mut tags =
        tags_by_entity(&mut tx, console.caller.tenant, TaggedType::Company, &ids).await?;
    done(tx).await?;
    Ok(page_ok(CompaniesPage {
        nav: console.nav("companies"),
        notice: notice(&q.done),
        name: q.name.clone(),
        statuses: options(
            &[("", "Any"), ("active", "Active"), ("inactive", "Inactive")],
            &q.status,
        ),
        rows: page
            .items
            .into_iter()
            .map(|c| CompanyRow {
                tags: tags.remove(&c.company_id.0).unwrap_or_default(),
                id: c.company_id.to_string(),
                name: c.company_name,
                kind: kind_label(c.client_type),
                billing_email: c.billing_email.unwrap_or_default(),
                inactive: c.is_inactive,
            })
            .collect(),
        next: next_link(
            "/console/companies",
            &[("name", &q.name), ("status", &q.status)],
            page.next_cursor,
        ),
        can_create,
    }))
}

/// A company's form as sent (and as shown again after a refusal).
#[derive(Deserialize, Default)]
struct CompanyForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    company_name: String,
    #[serde(default)]
    client_type: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    billing_email: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    is_inactive: Option<String>,
}

const COMPANY_FIELDS: [&str; 5] = [
    "company_name",
    "client_type",
    "url",
    "billing_email",
    "notes",
];

impl CompanyForm {
    fn of(c: &Company) -> CompanyForm {
        CompanyForm {
            csrf: String::new(),
            company_name: c.company_name.clone(),
            client_type: kind_label(c.client_type).to_owned(),
            url: c.url.clone().unwrap_or_default(),
            billing_email: c.billing_email.clone().unwrap_or_default(),
            notes: c.notes.clone().unwrap_or_default(),
            is_inactive: c.is_inactive.then(|| "yes".to_owned()),
        }
    }

    fn client_type(&self) -> Result<ClientType, ApiError> {
        match self.client_type.as_str() {
            "" | "company" => Ok(ClientType::Company),
            "individual" => Ok(ClientType::Individual),
            _ => Err(psa_models::Error::validation(
                "client_type",
                "The type is company or individual",
            )
            .into()),
        }
    }

    fn kinds(&self) -> Vec<Opt> {
        options(
            &[("company", "Company"), ("individual", "Individual")],
            if self.client_type.is_empty() {
                "company"
            } else {
                &self.client_type
            },
        )
    }
}

fn blank_to_none(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

struct ContactRow {
    id: String,
    name: String,
    email: String,
}

#[derive(Template)]
#[template(path = "console/company.html")]
struct CompanyPage {
    nav: Option<Nav>,
    csrf: String,
    /// `None` for the new-company form.
    id: Option<String>,
    title: String,
    notice: Option<String>,
    f: CompanyForm,
    kinds: Vec<Opt>,
    errors: FieldErrors,
    tags: Vec<Badge>,
    tag_error: Option<String>,
    contacts: Vec<ContactRow>,
    can_edit: bool,
    can_delete: bool,
}

impl CompanyPage {
    fn new(console: &Console, f: CompanyForm, errors: FieldErrors) -> CompanyPage {
        CompanyPage {
            nav: console.nav("companies"),
            csrf: console.csrf.clone(),
            id: None,
            title: "New company".into(),
            notice: None,
            kinds: f.kinds(),
            f,
            errors,
            tags: Vec::new(),
            tag_error: None,
            contacts: Vec::new(),
            can_edit: true,
            can_delete: false,
        }
    }
}

async fn company_new(State(state): State<AppState>, console: Console) -> Result<Response, Refused> {
    let tx = console
        .caller
        .authorize(&state, Permission(Resource::Client, Action::Create))
        .await?;
    done(tx).await?;
    Ok(page_ok(CompanyPage::new(
        &console,
        CompanyForm::default(),
        FieldErrors::default(),
    )))
}

async fn company_create(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<CompanyForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let created: Result<Company, ApiError> = async {
        let input = NewCompany {
            company_name: f.company_name.clone(),
            client_type: Some(f.client_type()?),
            url: blank_to_none(&f.url),
            notes: blank_to_none(&f.notes),
            billing_email: blank_to_none(&f.billing_email),
            is_inactive: Some(f.is_inactive.is_some()),
            ..NewCompany::default()
        };
        Ok(psa_app::directory::create_company(
            &state.app,
            &console.caller.principal(),
            console.caller.tenant,
            input,
        )
        .await?)
    }
    .await;
    match created {
        Ok(c) => Ok(
            Redirect::to(&format!("/console/companies/{}?done=created", c.company_id))
                .into_response(),
        ),
        Err(e) => {
            let errors = FieldErrors::from_error(e, &COMPANY_FIELDS)?;
            Ok(page(
                StatusCode::UNPROCESSABLE_ENTITY,
                CompanyPage::new(&console, f, errors),
            ))
        }
    }
}

/// A company's page: its form filled in from `f` (the stored company, or what was sent).
async fn company_page(
    state: &AppState,
    console: &Console,
    id: CompanyId,
    f: Option<CompanyForm>,
    errors: FieldErrors,
) -> Result<CompanyPage, Refused> {
    let mut tx = console
        .caller
        .authorize(state, Permission(Resource::Client, Action::Read))
        .await?;
    let c = companies::get(&mut tx, console.caller.tenant, id)
        .await
        .map_err(ApiError::from)?;
    let can_edit = console
        .caller
        .may(&mut tx, Permission(Resource::Client, Action::Update))
        .await?;
    let can_delete = console
        .caller
        .may(&mut tx, Permission(Resource::Client, Action::Delete))
        .await?;
    let tags = tags::list_for_entity(&mut tx, console.caller.tenant, TaggedType::Company, id.0)
        .await
        .map_err(ApiError::from)?;
    let sees_contacts = console
        .caller
        .may(&mut tx, Permission(Resource::Contact, Action::Read))
        .await?;
    let contacts = if sees_contacts {
        contacts::list(
            &mut tx,
            console.caller.tenant,
            &contacts::ListFilter {
                company_id: Some(id),
                is_inactive: None,
                name: None,
            },
            &PageRequest {
                limit: Some(200),
                cursor: None,
            },
        )
        .await
        .map_err(ApiError::from)?
        .items
    } else {
        Vec::new()
    };
    done(tx).await?;
    let f = f.unwrap_or_else(|| CompanyForm::of(&c));
    Ok(CompanyPage {
        nav: console.nav("companies"),
        csrf: console.csrf.clone(),
        id: Some(c.company_id.to_string()),
        title: c.company_name.clone(),
        notice: None,
        kinds: f.kinds(),
        f,
        errors,
        tags: tags.iter().map(badge).collect(),
        tag_error: None,
        contacts: contacts
            .into_iter()
            .map(|c| ContactRow {
                id: c.contact_name_id.to_string(),
                name: c.full_name,
                email: c.email,
            })
            .collect(),
        can_edit,
        can_delete,
    })
}

#[derive(Deserialize, Default)]
struct DoneQuery {
    #[serde(default)]
    done: String,
}

async fn company_show(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<CompanyId>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, Refused> {
    let mut p = company_page(&state, &console, id, None, FieldErrors::default()).await?;
    p.notice = notice(&q.done);
    Ok(page_ok(p))
}

async fn company_update(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<CompanyId>,
    Form(f): Form<CompanyForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let saved: Result<Company, ApiError> = async {
        let patch = CompanyPatch {
            company_name: Some(f.company_name.clone()),
            client_type: Some(f.client_type()?),
            url: Some(blank_to_none(&f.url)),
            notes: Some(blank_to_none(&f.notes)),
            billing_email: Some(blank_to_none(&f.billing_email)),
            is_inactive: Some(f.is_inactive.is_some()),
            ..CompanyPatch::default()
        };
        Ok(psa_app::directory::update_company(
            &state.app,
            &console.caller.principal(),
            console.caller.tenant,
            id,
            patch,
        )
        .await?)
    }
    .await;
    match saved {
        Ok(c) => Ok(
            Redirect::to(&format!("/console/companies/{}?done=saved", c.company_id))
                .into_response(),
        ),
        Err(e) => {
            let errors = FieldErrors::from_error(e, &COMPANY_FIELDS)?;
            let p = company_page(&state, &console, id, Some(f), errors).await?;
            Ok(page(StatusCode::UNPROCESSABLE_ENTITY, p))
        }
    }
}

async fn company_delete(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<CompanyId>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let deleted: Result<(), ApiError> = async {
        Ok(psa_app::directory::delete_company(
            &state.app,
            &console.caller.principal(),
            console.caller.tenant,
            id,
        )
        .await?)
    }
    .await;
    match deleted {
        Ok(()) => Ok(Redirect::to("/console/companies?done=deleted").into_response()),
        Err(e) => {
            let errors = FieldErrors::from_error(e, &[])?;
            let mut p = company_page(&state, &console, id, None, FieldErrors::default()).await?;
            p.errors = errors;
            Ok(page(StatusCode::CONFLICT, p))
        }
    }
}

#[derive(Deserialize)]
struct TagForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    tag_text: String,
}

/// Attaches a tag through the API's own rules; a refusal (its status and message) shows next
/// to the tag field.
async fn attach(
    state: &AppState,
    console: &Console,
    kind: TaggedType,
    id: uuid::Uuid,
    text: &str,
) -> Result<Result<(), (StatusCode, String)>, Refused> {
    let input = NewTag {
        tag_text: text.to_owned(),
        tagged_id: id,
        tagged_type: kind,
        background_color: None,
        text_color: None,
    };
    match crate::tags::attach_tag(state, &console.caller, input).await {
        Ok(_) => Ok(Ok(())),
        Err(ApiError::Forbidden(m)) => Ok(Err((StatusCode::FORBIDDEN, m))),
        Err(e) => {
            let status = e.status();
            let errors = FieldErrors::from_error(e, &[])?;
            Ok(Err((status, errors.general.unwrap_or_default())))
        }
    }
}

async fn company_tag(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<CompanyId>,
    Form(f): Form<TagForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    match attach(&state, &console, TaggedType::Company, id.0, &f.tag_text).await? {
        Ok(()) => Ok(Redirect::to(&format!("/console/companies/{id}?done=tagged")).into_response()),
        Err((status, message)) => {
            let mut p = company_page(&state, &console, id, None, FieldErrors::default()).await?;
            p.tag_error = Some(message);
            Ok(page(status, p))
        }
    }
}

/// Removes a tag and goes back to what it tagged.
async fn detach(
    State(state): State<AppState>,
    console: Console,
    PageId(mapping): PageId<MappingId>,
    Form(f): Form<CsrfForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let tag = crate::tags::detach_tag(&state, &console.caller, mapping).await?;
    let back = match tag.tagged_type {
        TaggedType::Company => format!("/console/companies/{}?done=untagged", tag.tagged_id),
        TaggedType::Contact => format!("/console/contacts/{}?done=untagged", tag.tagged_id),
    };
    Ok(Redirect::to(&back).into_response())
}

// ---- contacts ----

struct ContactListRow {
    id: String,
    name: String,
    email: String,
    company: String,
    company_id: Option<String>,
    inactive: bool,
    tags: Vec<Badge>,
}

#[derive(Template)]
#[template(path = "console/contacts.html")]
struct ContactsPage {
    nav: Option<Nav>,
    notice: Option<String>,
    name: String,
    statuses: Vec<Opt>,
    rows: Vec<ContactListRow>,
    next: Option<String>,
    can_create: bool,
}

#[derive(Deserialize, Default)]
struct ContactsQuery {
    #[serde(default)]
    name: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    cursor: String,
    #[serde(default)]
    done: String,
}

async fn contacts_list(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<ContactsQuery>,
) -> Result<Response, Refused> {
    let mut tx = console
        .caller
        .authorize(&state, Permission(Resource::Contact, Action::Read))
        .await?;
    let can_create = console
        .caller
        .may(&mut tx, Permission(Resource::Contact, Action::Create))
        .await?;
    let page = contacts::list(
        &mut tx,
        console.caller.tenant,
        &contacts::ListFilter {
            company_id: None,
            is_inactive: match q.status.as_str() {
                "active" => Some(false),
                "inactive" => Some(true),
                _ => None,
            },
            name: Some(q.name.trim().to_owned()).filter(|n| !n.is_empty()),
        },
        &PageRequest {
            limit: Some(50),
            cursor: Some(q.cursor.clone()).filter(|c| !c.is_empty()),
        },
    )
    .await
    .map_err(ApiError::from)?;
    let sees_companies = console
        .caller
        .may(&mut tx, Permission(Resource::Client, Action::Read))
        .await?;
    let names: HashMap<CompanyId, String> = if sees_companies {
        let ids: Vec<CompanyId> = page.items.iter().filter_map(|c| c.company_id).collect();
        companies::names(&mut tx, console.caller.tenant, &ids)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .collect()
    } else {
        HashMap::new()
    };
    let ids: Vec<uuid::Uuid> = page.items.iter().map(|c| c.contact_name_id.0).collect();
    let mut tags =
        tags_by_entity(&mut tx, console.caller.tenant, TaggedType::Contact, &ids).await?;
    done(tx).await?;
    Ok(page_ok(ContactsPage {
        nav: console.nav("contacts"),
        notice: notice(&q.done),
        name: q.name.clone(),
        statuses: options(
            &[("", "Any"), ("active", "Active"), ("inactive", "Inactive")],
            &q.status,
        ),
        rows: page
            .items
            .into_iter()
            .map(|c| ContactListRow {
                tags: tags.remove(&c.contact_name_id.0).unwrap_or_default(),
                id: c.contact_name_id.to_string(),
                company: c
                    .company_id
                    .and_then(|id| names.get(&id).cloned())
                    .unwrap_or_default(),
                company_id: c.company_id.map(|c| c.to_string()),
                name: c.full_name,
                email: c.email,
                inactive: c.is_inactive,
            })
            .collect(),
        next: next_link(
            "/console/contacts",
            &[("name", &q.name), ("status", &q.status)],
            page.next_cursor,
        ),
        can_create,
    }))
}

#[derive(Deserialize, Default)]
struct ContactForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    full_name: String,
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone_number: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    company_id: String,
    #[serde(default)]
    notes: String,
    #[serde(default)]
    is_inactive: Option<String>,
}

const CONTACT_FIELDS: [&str; 6] = [
    "full_name",
    "email",
    "phone_number",
    "role",
    "company_id",
    "notes",
];

impl ContactForm {
    fn of(c: &Contact) -> ContactForm {
        ContactForm {
            csrf: String::new(),
            full_name: c.full_name.clone(),
            email: c.email.clone(),
            phone_number: c.phone_number.clone().unwrap_or_default(),
            role: c.role.clone().unwrap_or_default(),
            company_id: c.company_id.map(|c| c.to_string()).unwrap_or_default(),
            notes: c.notes.clone().unwrap_or_default(),
            is_inactive: c.is_inactive.then(|| "yes".to_owned()),
        }
    }

    fn company(&self) -> Result<Option<CompanyId>, ApiError> {
        match self.company_id.trim() {
            "" => Ok(None),
            raw => uuid::Uuid::parse_str(raw)
                .map(|u| Some(CompanyId::from(u)))
                .map_err(|_| {
                    psa_models::Error::validation("company_id", "Choose a company from the list")
                        .into()
                }),
        }
    }
}

#[derive(Template)]
#[template(path = "console/contact.html")]
struct ContactPage {
    nav: Option<Nav>,
    csrf: String,
    id: Option<String>,
    title: String,
    notice: Option<String>,
    f: ContactForm,
    companies: Vec<(String, String, bool)>,
    errors: FieldErrors,
    tags: Vec<Badge>,
    tag_error: Option<String>,
    can_edit: bool,
}

impl ContactPage {
    /// The new-contact form, as first shown or sent back with its errors.
    async fn new(
        tx: &mut sqlx::PgConnection,
        console: &Console,
        f: ContactForm,
        errors: FieldErrors,
    ) -> Result<ContactPage, Refused> {
        Ok(ContactPage {
            nav: console.nav("contacts"),
            csrf: console.csrf.clone(),
            id: None,
            title: "New contact".into(),
            notice: None,
            companies: company_choices(tx, console, &f.company_id).await?,
            f,
            errors,
            tags: Vec::new(),
            tag_error: None,
            can_edit: true,
        })
    }
}

/// The companies a contact can belong to (the first 200 by name; the list's own page has them
/// all), with the chosen one kept even when it is further down.
async fn company_choices(
    tx: &mut sqlx::PgConnection,
    console: &Console,
    chosen: &str,
) -> Result<Vec<(String, String, bool)>, Refused> {
    let sees_companies = console
        .caller
        .may(tx, Permission(Resource::Client, Action::Read))
        .await?;
    let mut list = Vec::new();
    if sees_companies {
        let page = companies::list(
            tx,
            console.caller.tenant,
            &companies::ListFilter::default(),
            &PageRequest {
                limit: Some(200),
                cursor: None,
            },
        )
        .await
        .map_err(ApiError::from)?;
        list = page
            .items
            .into_iter()
            .map(|c| {
                let id = c.company_id.to_string();
                let selected = id == chosen;
                (id, c.company_name, selected)
            })
            .collect();
        if !chosen.is_empty()
            && !list.iter().any(|(_, _, s)| *s)
            && let Ok(u) = uuid::Uuid::parse_str(chosen)
            && let Ok(c) = companies::get(tx, console.caller.tenant, CompanyId::from(u)).await
        {
            list.insert(0, (chosen.to_owned(), c.company_name, true));
        }
    }
    Ok(list)
}

#[derive(Deserialize, Default)]
struct NewContactQuery {
    #[serde(default)]
    company: String,
}

async fn contact_new(
    State(state): State<AppState>,
    console: Console,
    Query(q): Query<NewContactQuery>,
) -> Result<Response, Refused> {
    let mut tx = console
        .caller
        .authorize(&state, Permission(Resource::Contact, Action::Create))
        .await?;
    let f = ContactForm {
        company_id: q.company.clone(),
        ..ContactForm::default()
    };
    let p = ContactPage::new(&mut tx, &console, f, FieldErrors::default()).await?;
    done(tx).await?;
    Ok(page_ok(p))
}

async fn contact_create(
    State(state): State<AppState>,
    console: Console,
    Form(f): Form<ContactForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let created: Result<Contact, ApiError> = async {
        let input = NewContact {
            full_name: f.full_name.clone(),
            email: f.email.clone(),
            company_id: f.company()?,
            phone_number: blank_to_none(&f.phone_number),
            role: blank_to_none(&f.role),
            notes: blank_to_none(&f.notes),
            is_inactive: Some(f.is_inactive.is_some()),
            is_client_admin: None,
        };
        Ok(psa_app::directory::create_contact(
            &state.app,
            &console.caller.principal(),
            console.caller.tenant,
            input,
        )
        .await?)
    }
    .await;
    match created {
        Ok(c) => Ok(Redirect::to(&format!(
            "/console/contacts/{}?done=created",
            c.contact_name_id
        ))
        .into_response()),
        Err(e) => {
            let errors = FieldErrors::from_error(e, &CONTACT_FIELDS)?;
            let mut tx = console
                .caller
                .authorize(&state, Permission(Resource::Contact, Action::Create))
                .await?;
            let p = ContactPage::new(&mut tx, &console, f, errors).await?;
            done(tx).await?;
            Ok(page(StatusCode::UNPROCESSABLE_ENTITY, p))
        }
    }
}

async fn contact_page(
    state: &AppState,
    console: &Console,
    id: ContactId,
    f: Option<ContactForm>,
    errors: FieldErrors,
) -> Result<ContactPage, Refused> {
    let mut tx = console
        .caller
        .authorize(state, Permission(Resource::Contact, Action::Read))
        .await?;
    let c = contacts::get(&mut tx, console.caller.tenant, id)
        .await
        .map_err(ApiError::from)?;
    let can_edit = console
        .caller
        .may(&mut tx, Permission(Resource::Contact, Action::Update))
        .await?;
    let tags = tags::list_for_entity(&mut tx, console.caller.tenant, TaggedType::Contact, id.0)
        .await
        .map_err(ApiError::from)?;
    let f = f.unwrap_or_else(|| ContactForm::of(&c));
    let companies = company_choices(&mut tx, console, &f.company_id).await?;
    done(tx).await?;
    Ok(ContactPage {
        nav: console.nav("contacts"),
        csrf: console.csrf.clone(),
        id: Some(c.contact_name_id.to_string()),
        title: c.full_name.clone(),
        notice: None,
        f,
        companies,
        errors,
        tags: tags.iter().map(badge).collect(),
        tag_error: None,
        can_edit,
    })
}

async fn contact_show(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<ContactId>,
    Query(q): Query<DoneQuery>,
) -> Result<Response, Refused> {
    let mut p = contact_page(&state, &console, id, None, FieldErrors::default()).await?;
    p.notice = notice(&q.done);
    Ok(page_ok(p))
}

async fn contact_update(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<ContactId>,
    Form(f): Form<ContactForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    let saved: Result<Contact, ApiError> = async {
        let patch = ContactPatch {
            full_name: Some(f.full_name.clone()),
            email: Some(f.email.clone()),
            company_id: Some(f.company()?),
            phone_number: Some(blank_to_none(&f.phone_number)),
            role: Some(blank_to_none(&f.role)),
            notes: Some(blank_to_none(&f.notes)),
            is_inactive: Some(f.is_inactive.is_some()),
            is_client_admin: None,
        };
        Ok(psa_app::directory::update_contact(
            &state.app,
            &console.caller.principal(),
            console.caller.tenant,
            id,
            patch,
        )
        .await?)
    }
    .await;
    match saved {
        Ok(c) => Ok(Redirect::to(&format!(
            "/console/contacts/{}?done=saved",
            c.contact_name_id
        ))
        .into_response()),
        Err(e) => {
            let errors = FieldErrors::from_error(e, &CONTACT_FIELDS)?;
            let p = contact_page(&state, &console, id, Some(f), errors).await?;
            Ok(page(StatusCode::UNPROCESSABLE_ENTITY, p))
        }
    }
}

async fn contact_tag(
    State(state): State<AppState>,
    console: Console,
    PageId(id): PageId<ContactId>,
    Form(f): Form<TagForm>,
) -> Result<Response, Refused> {
    console.check_csrf(&f.csrf)?;
    match attach(&state, &console, TaggedType::Contact, id.0, &f.tag_text).await? {
        Ok(()) => Ok(Redirect::to(&format!("/console/contacts/{id}?done=tagged")).into_response()),
        Err((status, message)) => {
            let mut p = contact_page(&state, &console, id, None, FieldErrors::default()).await?;
            p.tag_error = Some(message);
            Ok(page(status, p))
        }
    }
}
