//! The customers as business staff see them: each customer tenant (every tenant but the
//! management tenant) with its status, customer tracking state, licence count, active users,
//! the admin contact and the tags on its customer company. One page at a time, in the tenant
//! list's order and with its filters; the console's customers page, its CSV download and
//! `GET /api/v1/customers` all read it here.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::db::{Page, PageRequest};
use crate::lifecycle::TenantStatus;
use crate::provisioning::{self, RunStatus, TenantListFilter};
use crate::tags::{self, TaggedType};
use crate::{Result, TenantId};

/// The customer company's contact for the tenant's administrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AdminContact {
    pub contact_name_id: Uuid,
    pub full_name: String,
    pub email: String,
}

/// A tag on the customer company, in its definition's colours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CustomerTag {
    pub tag_text: String,
    pub background_color: Option<String>,
    pub text_color: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Customer {
    pub tenant_id: Uuid,
    pub name: String,
    /// The name its people sign in with.
    pub slug: String,
    /// `active`, `suspended` or `canceled`.
    pub status: TenantStatus,
    pub created_at: DateTime<Utc>,
    /// `tracked`, `partial`, `untracked` or `skipped`.
    pub customer_tracking: String,
    pub customer_company_id: Option<Uuid>,
    pub admin_contact: Option<AdminContact>,
    /// The tenant's active staff users.
    pub active_users: i64,
    /// The seats bought (the reference's licence count); absent: as many as the plan allows.
    pub license_count: Option<i32>,
    /// Its plan's code (absent: a tenant without a subscription).
    pub plan: Option<String>,
    pub subscription_status: Option<crate::plans::SubscriptionStatus>,
    /// Staff invited or active: each takes a seat until deactivated.
    pub seats_used: i64,
    /// The seats it may use; absent: no limit.
    pub seats_allowed: Option<i32>,
    pub tags: Vec<CustomerTag>,
    pub workflow_id: Option<String>,
    pub provisioning_status: Option<RunStatus>,
}

#[derive(sqlx::FromRow)]
struct Facts {
    tenant_id: Uuid,
    licensed_user_count: Option<i32>,
    active_users: i64,
    admin_contact_id: Option<Uuid>,
    admin_contact_name: Option<String>,
    admin_contact_email: Option<String>,
    plan_code: Option<String>,
    subscription_status: Option<crate::plans::SubscriptionStatus>,
    seats_used: i64,
    seats_allowed: Option<i32>,
}

/// A page of customers. `conn` is a transaction of the management tenant `mgmt`'s caller,
/// already authorised to read tenants; it is left in `mgmt`'s context.
pub async fn list(
    conn: &mut PgConnection,
    mgmt: TenantId,
    customer_tag: &str,
    filter: &TenantListFilter,
    paging: &PageRequest,
) -> Result<Page<Customer>> {
    crate::db::leave_tenant(conn).await?;
    let page = provisioning::list_tenants(conn, customer_tag, filter, paging).await?;
    let rows: Vec<_> = page
        .items
        .into_iter()
        .filter(|t| !t.is_management)
        .collect();
    let tenant_ids: Vec<Uuid> = rows.iter().map(|t| t.tenant_id).collect();
    let company_ids: Vec<Option<Uuid>> = rows.iter().map(|t| t.customer_company_id).collect();
    let facts: Vec<Facts> = sqlx::query_as(
        "SELECT tenant_id, licensed_user_count, active_users, admin_contact_id, \
         admin_contact_name, admin_contact_email, plan_code, subscription_status, seats_used, \
         seats_allowed FROM psa_customer_facts($1, $2)",
    )
    .bind(&tenant_ids)
    .bind(&company_ids)
    .fetch_all(&mut *conn)
    .await?;
    crate::db::enter_tenant(conn, mgmt).await?;
    let companies: Vec<Uuid> = company_ids.iter().flatten().copied().collect();
    let tags = tags::list_for_entities(conn, mgmt, TaggedType::Company, &companies).await?;
    let items = rows
        .into_iter()
        .map(|t| {
            let f = facts.iter().find(|f| f.tenant_id == t.tenant_id);
            Customer {
                admin_contact: f.and_then(|f| {
                    Some(AdminContact {
                        contact_name_id: f.admin_contact_id?,
                        full_name: f.admin_contact_name.clone()?,
                        email: f.admin_contact_email.clone()?,
                    })
                }),
                active_users: f.map_or(0, |f| f.active_users),
                license_count: f.and_then(|f| f.licensed_user_count),
                plan: f.and_then(|f| f.plan_code.clone()),
                subscription_status: f.and_then(|f| f.subscription_status),
                seats_used: f.map_or(0, |f| f.seats_used),
                seats_allowed: f.and_then(|f| f.seats_allowed),
                tags: tags
                    .iter()
                    .filter(|g| Some(g.tagged_id) == t.customer_company_id)
                    .map(|g| CustomerTag {
                        tag_text: g.tag_text.clone(),
                        background_color: g.background_color.clone(),
                        text_color: g.text_color.clone(),
                    })
                    .collect(),
                tenant_id: t.tenant_id,
                name: t.name,
                slug: t.slug,
                status: t.status,
                created_at: t.created_at,
                customer_tracking: t.customer_tracking,
                customer_company_id: t.customer_company_id,
                workflow_id: t.workflow_id,
                provisioning_status: t.provisioning_status,
            }
        })
        .collect();
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 16] = [
    "tenant_id",
    "name",
    "slug",
    "status",
    "created_at",
    "admin_contact_name",
    "admin_contact_email",
    "active_users",
    "license_count",
    "customer_tracking",
    "tags",
    "customer_company_id",
    "plan",
    "subscription_status",
    "seats_used",
    "seats_allowed",
];

/// A text cell a spreadsheet would run as a formula (`=`, `+`, `-`, `@`, tab, carriage return
/// first) gets a leading apostrophe: names come from customers.
fn cell(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    }
}

impl Customer {
    /// The customer as a CSV record, in [`CSV_HEADER`]'s order.
    pub fn csv_record(&self) -> [String; 16] {
        [
            self.tenant_id.to_string(),
            cell(&self.name),
            self.slug.clone(),
            self.status.to_string(),
            self.created_at.to_rfc3339(),
            self.admin_contact
                .as_ref()
                .map_or_else(String::new, |c| cell(&c.full_name)),
            self.admin_contact
                .as_ref()
                .map_or_else(String::new, |c| cell(&c.email)),
            self.active_users.to_string(),
            self.license_count
                .map_or_else(String::new, |n| n.to_string()),
            self.customer_tracking.clone(),
            cell(
                &self
                    .tags
                    .iter()
                    .map(|t| t.tag_text.as_str())
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            self.customer_company_id
                .map_or_else(String::new, |c| c.to_string()),
            self.plan.clone().unwrap_or_default(),
            self.subscription_status
                .map_or_else(String::new, |s| s.as_str().to_owned()),
            self.seats_used.to_string(),
            self.seats_allowed
                .map_or_else(String::new, |n| n.to_string()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::cell;

    #[test]
    fn formula_like_cells_are_defused() {
        assert_eq!(cell("=HYPERLINK(\"x\")"), "'=HYPERLINK(\"x\")");
        assert_eq!(cell("-1+2"), "'-1+2");
        assert_eq!(cell("@SUM"), "'@SUM");
        assert_eq!(cell("Acme"), "Acme");
    }
}
