//! Contacts.
//!
//! Creation follows the reference's exact order of checks and its four error kinds
//! (`validation_error`, `email_exists`, `foreign_key_error`, and a system error):
//! 1. name and email both empty, 2. name empty, 3. email empty, 4. email malformed,
//! 5. email already used by a contact of the tenant, 6. company missing from the tenant.
//!
//! Emails are stored trimmed and lower-cased, so uniqueness is case-insensitive; the database's
//! unique constraint settles races between concurrent creates (the loser gets `email_exists`).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::db::{Page, PageRequest, double_option, page};
use crate::validate::{EmailAddress, FullName, optional_text};
use crate::{CompanyId, ContactId, Error, Result, TenantId};

/// A row of `contacts`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Contact {
    pub tenant: TenantId,
    pub contact_name_id: ContactId,
    pub full_name: String,
    pub company_id: Option<CompanyId>,
    pub email: String,
    pub phone_number: Option<String>,
    pub role: Option<String>,
    pub notes: Option<String>,
    pub is_inactive: bool,
    pub is_client_admin: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

macro_rules! columns {
    () => {
        "tenant, contact_name_id, full_name, company_id, email, phone_number, role, notes, \
         is_inactive, is_client_admin, created_at, updated_at"
    };
}

/// Input of [`create`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct NewContact {
    #[serde(default)]
    pub full_name: String,
    #[serde(default)]
    pub email: String,
    #[serde(default)]
    pub company_id: Option<CompanyId>,
    #[serde(default)]
    pub phone_number: Option<String>,
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
    #[serde(default)]
    pub is_inactive: Option<bool>,
    #[serde(default)]
    pub is_client_admin: Option<bool>,
}

/// Options of [`create`].
#[derive(Debug, Clone, Copy, Default)]
pub struct CreateOptions {
    /// Use this id; if a contact with this id already exists it is returned unchanged (a replay).
    pub contact_id: Option<ContactId>,
}

const MAX_NOTES: usize = 10_000;

fn single_line(raw: Option<&str>, field: &'static str, max: usize) -> Result<Option<String>> {
    let v = optional_text(raw, field, max)?;
    if v.as_deref()
        .is_some_and(|s| s.chars().any(char::is_control))
    {
        return Err(Error::validation(
            field,
            format!("{field} must not contain control characters"),
        ));
    }
    Ok(v)
}

/// Steps 1-4 of the reference's checks: the ones that need no database.
pub fn validate_name_and_email(full_name: &str, email: &str) -> Result<(FullName, EmailAddress)> {
    let (name_empty, email_empty) = (full_name.trim().is_empty(), email.trim().is_empty());
    if name_empty && email_empty {
        return Err(Error::validation(
            "full_name",
            "Full name and email address are required",
        ));
    }
    let name = FullName::parse(full_name)?;
    let email = EmailAddress::parse(email)?;
    Ok((name, email))
}

async fn email_taken(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &EmailAddress,
    except: Option<ContactId>,
) -> Result<bool> {
    Ok(sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM contacts WHERE tenant = $1 AND email = $2 \
         AND ($3::uuid IS NULL OR contact_name_id <> $3))",
    )
    .bind(tenant)
    .bind(email.as_str())
    .bind(except)
    .fetch_one(conn)
    .await?)
}

async fn require_company(
    conn: &mut PgConnection,
    tenant: TenantId,
    company: CompanyId,
) -> Result<()> {
    let exists: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM companies WHERE tenant = $1 AND company_id = $2)",
    )
    .bind(tenant)
    .bind(company)
    .fetch_one(conn)
    .await?;
    if exists {
        Ok(())
    } else {
        Err(Error::ForeignKey {
            field: "company_id".into(),
            message: "The selected company no longer exists".into(),
        })
    }
}

/// Creates a contact (see the module documentation for the order of checks).
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn create(
    conn: &mut PgConnection,
    tenant: TenantId,
    input: NewContact,
    options: CreateOptions,
) -> Result<Contact> {
    if let Some(id) = options.contact_id
        && let Some(existing) = find(conn, tenant, id).await?
    {
        return Ok(existing);
    }
    let (name, email) = validate_name_and_email(&input.full_name, &input.email)?;
    let phone = single_line(input.phone_number.as_deref(), "phone_number", 50)?;
    let role = single_line(input.role.as_deref(), "role", 255)?;
    let notes = optional_text(input.notes.as_deref(), "notes", MAX_NOTES)?;
    if email_taken(conn, tenant, &email, None).await? {
        return Err(Error::EmailExists);
    }
    if let Some(company) = input.company_id {
        require_company(conn, tenant, company).await?;
    }
    let contact = sqlx::query_as::<_, Contact>(concat!(
        "INSERT INTO contacts (tenant, contact_name_id, full_name, company_id, email, phone_number, \
         role, notes, is_inactive, is_client_admin) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING ",
        columns!()
    ))
    .bind(tenant)
    .bind(options.contact_id.unwrap_or_default())
    .bind(name.as_str())
    .bind(input.company_id)
    .bind(email.as_str())
    .bind(phone)
    .bind(role)
    .bind(notes)
    .bind(input.is_inactive.unwrap_or(false))
    .bind(input.is_client_admin.unwrap_or(false))
    .fetch_one(conn)
    .await?;
    Ok(contact)
}

/// The contact `id` of `tenant`.
pub async fn get(conn: &mut PgConnection, tenant: TenantId, id: ContactId) -> Result<Contact> {
    find(conn, tenant, id)
        .await?
        .ok_or(Error::NotFound { entity: "contact" })
}

/// The contact `id` of `tenant`, if it exists.
pub async fn find(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ContactId,
) -> Result<Option<Contact>> {
    Ok(sqlx::query_as::<_, Contact>(concat!(
        "SELECT ",
        columns!(),
        " FROM contacts WHERE tenant = $1 AND contact_name_id = $2"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The contact of `tenant` with this email (compared as stored: trimmed, lower-case).
pub async fn find_by_email(
    conn: &mut PgConnection,
    tenant: TenantId,
    email: &EmailAddress,
) -> Result<Option<Contact>> {
    Ok(sqlx::query_as::<_, Contact>(concat!(
        "SELECT ",
        columns!(),
        " FROM contacts WHERE tenant = $1 AND email = $2"
    ))
    .bind(tenant)
    .bind(email.as_str())
    .fetch_optional(conn)
    .await?)
}

/// Filters of [`list`].
#[derive(Debug, Clone, Default, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ListFilter {
    pub company_id: Option<CompanyId>,
    pub is_inactive: Option<bool>,
    /// Only contacts whose name or email contains this, case-insensitive.
    #[serde(default)]
    pub name: Option<String>,
}

/// The contacts of `tenant` by name, a page at a time.
pub async fn list(
    conn: &mut PgConnection,
    tenant: TenantId,
    filter: &ListFilter,
    paging: &PageRequest,
) -> Result<Page<Contact>> {
    let limit = paging.limit()?;
    let cursor = paging.decode_cursor()?;
    let rows = sqlx::query_as::<_, Contact>(concat!(
        "SELECT ",
        columns!(),
        " FROM contacts WHERE tenant = $1 \
          AND ($2::text IS NULL OR (full_name, contact_name_id) > ($2, $3)) \
          AND ($4::uuid IS NULL OR company_id = $4) \
          AND ($5::boolean IS NULL OR is_inactive = $5) \
          AND ($7::text IS NULL OR full_name ILIKE $7 OR email ILIKE $7) \
          ORDER BY full_name, contact_name_id LIMIT $6"
    ))
    .bind(tenant)
    .bind(cursor.as_ref().map(|c| c.0.as_str()))
    .bind(cursor.as_ref().map(|c| c.1))
    .bind(filter.company_id)
    .bind(filter.is_inactive)
    .bind(limit + 1)
    .bind(
        filter
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(crate::db::contains_pattern),
    )
    // A search's best plan depends on its pattern: planned for each.
    .persistent(filter.name.is_none())
    .fetch_all(conn)
    .await?;
    Ok(page(rows, limit, |c| {
        (c.full_name.clone(), c.contact_name_id.0)
    }))
}

/// A partial update of the whitelisted fields; `null` clears a nullable field.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ContactPatch {
    #[serde(default)]
    pub full_name: Option<String>,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default, deserialize_with = "double_option")]
    pub company_id: Option<Option<CompanyId>>,
    #[serde(default, deserialize_with = "double_option")]
    pub phone_number: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub role: Option<Option<String>>,
    #[serde(default, deserialize_with = "double_option")]
    pub notes: Option<Option<String>>,
    #[serde(default)]
    pub is_inactive: Option<bool>,
    #[serde(default)]
    pub is_client_admin: Option<bool>,
}

/// Updates a contact with the create rules: a valid email unique in the tenant (itself
/// excepted), a company of the same tenant.
#[tracing::instrument(skip_all, fields(%tenant, %id))]
pub async fn update(
    conn: &mut PgConnection,
    tenant: TenantId,
    id: ContactId,
    patch: ContactPatch,
) -> Result<Contact> {
    let current = sqlx::query_as::<_, Contact>(concat!(
        "SELECT ",
        columns!(),
        " FROM contacts WHERE tenant = $1 AND contact_name_id = $2 FOR UPDATE"
    ))
    .bind(tenant)
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound { entity: "contact" })?;

    let full_name = match &patch.full_name {
        Some(n) => FullName::parse(n)?.as_str().to_owned(),
        None => current.full_name.clone(),
    };
    let email = match &patch.email {
        Some(e) => {
            let e = EmailAddress::parse(e)?;
            if email_taken(conn, tenant, &e, Some(id)).await? {
                return Err(Error::EmailExists);
            }
            e.as_str().to_owned()
        }
        None => current.email.clone(),
    };
    let company_id = match patch.company_id {
        None => current.company_id,
        Some(None) => None,
        Some(Some(c)) => {
            require_company(conn, tenant, c).await?;
            Some(c)
        }
    };
    let text = |cur: &Option<String>, p: Option<Option<String>>, field, max| match p {
        None => Ok(cur.clone()),
        Some(v) => single_line(v.as_deref(), field, max),
    };
    let phone = text(
        &current.phone_number,
        patch.phone_number,
        "phone_number",
        50,
    )?;
    let role = text(&current.role, patch.role, "role", 255)?;
    let notes = match patch.notes {
        None => current.notes.clone(),
        Some(v) => optional_text(v.as_deref(), "notes", MAX_NOTES)?,
    };
    let contact = sqlx::query_as::<_, Contact>(concat!(
        "UPDATE contacts SET full_name = $3, email = $4, company_id = $5, phone_number = $6, \
         role = $7, notes = $8, is_inactive = $9, is_client_admin = $10, updated_at = now() \
         WHERE tenant = $1 AND contact_name_id = $2 RETURNING ",
        columns!()
    ))
    .bind(tenant)
    .bind(id)
    .bind(full_name)
    .bind(email)
    .bind(company_id)
    .bind(phone)
    .bind(role)
    .bind(notes)
    .bind(patch.is_inactive.unwrap_or(current.is_inactive))
    .bind(patch.is_client_admin.unwrap_or(current.is_client_admin))
    .fetch_one(conn)
    .await?;
    Ok(contact)
}

/// Deletes a contact and its tag mappings. Used by rollbacks; idempotent (`false` when there was
/// nothing to delete).
#[tracing::instrument(skip_all, fields(%tenant, %id))]
pub async fn delete(conn: &mut PgConnection, tenant: TenantId, id: ContactId) -> Result<bool> {
    crate::tags::detach_all(conn, tenant, crate::tags::TaggedType::Contact, id.0).await?;
    let n = sqlx::query("DELETE FROM contacts WHERE tenant = $1 AND contact_name_id = $2")
        .bind(tenant)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, email: &str) -> std::result::Result<(), String> {
        validate_name_and_email(name, email)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn order_of_checks_and_messages() {
        assert_eq!(
            check("", "").unwrap_err(),
            "Full name and email address are required"
        );
        assert_eq!(
            check("  ", " \t").unwrap_err(),
            "Full name and email address are required"
        );
        assert_eq!(check("", "a@b.co").unwrap_err(), "Full name is required");
        assert_eq!(check("", "garbage").unwrap_err(), "Full name is required");
        assert_eq!(check("Ann", "").unwrap_err(), "Email address is required");
        assert_eq!(
            check("Ann", "ann@").unwrap_err(),
            "Please enter a valid email address"
        );
        assert_eq!(
            check("Ann", "ann@example").unwrap_err(),
            "Please enter a valid email address"
        );
        assert_eq!(
            check("Ann", "a b@example.com").unwrap_err(),
            "Please enter a valid email address"
        );
        assert_eq!(
            check("Ann", "a@@example.com").unwrap_err(),
            "Please enter a valid email address"
        );
        assert!(check("Ann", " Ann@Example.COM ").is_ok());
    }

    #[test]
    fn email_is_trimmed_and_lower_cased() {
        let (_, e) = validate_name_and_email("Ann", "  Ann.Lee@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "ann.lee@example.com");
    }

    #[test]
    fn field_names() {
        assert_eq!(
            validate_name_and_email("", "a@b.co").unwrap_err().field(),
            Some("full_name")
        );
        assert_eq!(
            validate_name_and_email("A", "x").unwrap_err().field(),
            Some("email")
        );
        assert_eq!(
            single_line(Some("+1\n555"), "phone_number", 50)
                .unwrap_err()
                .field(),
            Some("phone_number")
        );
        assert_eq!(single_line(Some("  "), "role", 5).unwrap(), None);
        assert!(single_line(Some("abcdef"), "role", 5).is_err());
    }
}
