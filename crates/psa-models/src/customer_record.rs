//! A managed tenant's customer record in the management tenant: its company (named after the
//! tenant, `properties.tenant_id` the link), its administrator as a contact, and the customer
//! tag; and the undo of each. The rules live here once, for the provisioning workflow's
//! activities, reconcile, the deletion and the sweeper of cut-off runs (which add only what
//! Temporal needs: heartbeats, fail points, retry classification, metrics).
//!
//! Every write takes the managed tenant's customer-record lock first
//! ([`provisioning::lock_customer_record`]), reuses what a retry or an earlier run already
//! wrote (ids are minted by the caller), never takes over what another tenant owns, and is
//! audited in the management tenant.

use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgConnection;

use crate::audit::{Action, Actor};
use crate::companies::{self, NewCompany};
use crate::contacts::{self, NewContact};
use crate::tags::{self, NewTag, TaggedType};
use crate::validate::{CompanyName, EmailAddress, FullName, TagText};
use crate::{CompanyId, ContactId, MappingId, TenantId, provisioning};

async fn audit(
    conn: &mut PgConnection,
    tenant: TenantId,
    actor: &Actor,
    action: Action,
    entity_type: &str,
    entity_id: uuid::Uuid,
    details: serde_json::Value,
) -> Result<(), crate::Error> {
    crate::audit::record(
        conn,
        tenant,
        actor,
        action,
        entity_type,
        Some(entity_id),
        details,
    )
    .await
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerCompanyIn {
    /// The run writing the record; `None` for reconcile.
    pub workflow_id: Option<String>,
    pub management_tenant_id: TenantId,
    /// Minted by the workflow.
    pub company_id: CompanyId,
    pub tenant_id: TenantId,
    pub tenant_name: CompanyName,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerCompanyOut {
    pub company_id: CompanyId,
    pub created: bool,
    pub warning: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerContactIn {
    pub workflow_id: Option<String>,
    pub management_tenant_id: TenantId,
    /// The managed tenant (its customer record is what the contact belongs to).
    pub tenant_id: TenantId,
    pub contact_id: ContactId,
    pub company_id: CompanyId,
    pub full_name: FullName,
    pub email: EmailAddress,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerContactOut {
    pub contact_id: ContactId,
    pub created: bool,
    /// An existing company-less contact was linked to the customer company.
    pub linked: bool,
    pub warning: Option<String>,
}

/// The customer company's name: the tenant's name, unless a company of another tenant (or no
/// tenant) already has it; then the name gets the tenant's short id, and a warning says so.
pub async fn company(
    conn: &mut PgConnection,
    input: &CustomerCompanyIn,
) -> Result<CustomerCompanyOut, crate::Error> {
    let mgmt = input.management_tenant_id;
    let managed = input.tenant_id;
    provisioning::lock_customer_record(conn, managed).await?;
    if let Some(existing) = companies::find_by_managed_tenant(conn, mgmt, managed).await? {
        // A retry (the same minted id), or a tenant tracked before: reuse, never take over.
        let created = existing.company_id == input.company_id;
        return Ok(CustomerCompanyOut {
            company_id: existing.company_id,
            created,
            warning: None,
        });
    }
    let tenant_name = input.tenant_name.as_str();
    let mut name = tenant_name.to_owned();
    let mut warning = None;
    if let Some(taken) = companies::find_by_name(conn, mgmt, &name).await? {
        let short = &managed.0.simple().to_string()[..8];
        let renamed: String = format!("{name} ({short})");
        warning = Some(format!(
            "a company named {name:?} already exists in the management tenant ({}); the customer company was named {renamed:?}",
            taken.company_id
        ));
        name = renamed;
    }
    crate::db::as_platform(conn).await?;
    let properties = json!({
        "tenant_id": managed.to_string(),
        "tenant_name": tenant_name,
        "subscription_type": "psa",
    });
    let company = companies::create(
        conn,
        mgmt,
        NewCompany {
            company_name: name,
            notes: Some(format!("PSA Customer - Tenant: {tenant_name} ({managed})")),
            properties: properties.as_object().cloned(),
            ..Default::default()
        },
        companies::CreateOptions {
            company_id: Some(input.company_id),
            skip_tax_settings: false,
            skip_email_suffix: true,
        },
    )
    .await?;
    audit(
        conn,
        mgmt,
        actor(&input.workflow_id),
        Action::Create,
        "customer_company",
        company.company_id.0,
        json!({"tenant_id": managed}),
    )
    .await?;
    Ok(CustomerCompanyOut {
        company_id: company.company_id,
        created: true,
        warning,
    })
}

/// Who writes a record: a provisioning run (which names itself), or reconcile.
fn actor(workflow_id: &Option<String>) -> &'static Actor {
    if workflow_id.is_some() {
        &Actor::Platform("provisioning")
    } else {
        &Actor::Platform("reconcile")
    }
}

/// The customer contact: created for the admin; if the email is already a contact of the
/// management tenant, that contact is kept (never modified beyond linking a company-less contact
/// to the customer company, which the run's record remembers), and a warning says so.
pub async fn contact(
    conn: &mut PgConnection,
    input: &CustomerContactIn,
) -> Result<CustomerContactOut, crate::Error> {
    let mgmt = input.management_tenant_id;
    provisioning::lock_customer_record(conn, input.tenant_id).await?;
    let email = &input.email;
    if let Some(existing) = contacts::find_by_email(conn, mgmt, email).await? {
        if existing.contact_name_id == input.contact_id {
            return Ok(CustomerContactOut {
                contact_id: existing.contact_name_id,
                created: true,
                linked: false,
                warning: None,
            });
        }
        return match existing.company_id {
            Some(c) if c == input.company_id => Ok(CustomerContactOut {
                contact_id: existing.contact_name_id,
                created: false,
                linked: true,
                warning: None,
            }),
            None => {
                contacts::update(
                    conn,
                    mgmt,
                    existing.contact_name_id,
                    contacts::ContactPatch {
                        company_id: Some(Some(input.company_id)),
                        ..Default::default()
                    },
                )
                .await?;
                if let Some(wf) = &input.workflow_id {
                    provisioning::note_linked_contact(conn, wf, existing.contact_name_id.0).await?;
                }
                audit(
                    conn,
                    mgmt,
                    actor(&input.workflow_id),
                    Action::Link,
                    "customer_contact",
                    existing.contact_name_id.0,
                    json!({"company_id": input.company_id}),
                )
                .await?;
                Ok(CustomerContactOut {
                    contact_id: existing.contact_name_id,
                    created: false,
                    linked: true,
                    warning: Some(format!(
                        "{email} was already a contact without company; it was linked to the customer company",
                        email = email.as_str()
                    )),
                })
            }
            Some(other) => Ok(CustomerContactOut {
                contact_id: existing.contact_name_id,
                created: false,
                linked: false,
                warning: Some(format!(
                    "{} is already a contact of company {other} in the management tenant; it was left there unchanged",
                    email.as_str()
                )),
            }),
        };
    }
    let contact = contacts::create(
        conn,
        mgmt,
        NewContact {
            full_name: input.full_name.as_str().to_owned(),
            email: email.as_str().to_owned(),
            company_id: Some(input.company_id),
            role: Some("Admin".into()),
            notes: Some("Primary admin for PSA tenant".into()),
            ..Default::default()
        },
        contacts::CreateOptions {
            contact_id: Some(input.contact_id),
        },
    )
    .await?;
    audit(
        conn,
        mgmt,
        actor(&input.workflow_id),
        Action::Create,
        "customer_contact",
        contact.contact_name_id.0,
        json!({"company_id": input.company_id}),
    )
    .await?;
    Ok(CustomerContactOut {
        contact_id: contact.contact_name_id,
        created: true,
        linked: false,
        warning: None,
    })
}

/// Tags the customer company (reusing the definition; the mapping gets the minted id when new).
pub async fn tag(
    conn: &mut PgConnection,
    mgmt: TenantId,
    company_id: CompanyId,
    tag: &TagText,
    mapping_id: Option<MappingId>,
    actor: &Actor,
) -> Result<tags::Attached, crate::Error> {
    let attached = tags::attach(
        conn,
        mgmt,
        NewTag {
            tag_text: tag.as_str().to_owned(),
            tagged_id: company_id.0,
            tagged_type: TaggedType::Company,
            background_color: None,
            text_color: None,
        },
        tags::AttachOptions {
            created_by: None,
            mapping_id,
        },
    )
    .await?;
    if attached.mapping_created {
        audit(
            conn,
            mgmt,
            actor,
            Action::Create,
            "customer_tag",
            attached.tag.mapping_id.0,
            json!({"company_id": company_id, "tag_text": tag.as_str()}),
        )
        .await?;
    }
    Ok(attached)
}

/// The undo operations, shared by the workflow's compensations and the sweeper of cut-off runs.
/// Each removes only what the run created (named by the ids it minted or its record), and
/// removing what is not there is success: they are idempotent.
pub mod undo {
    use super::*;

    /// Audits a removal that happened; one that found nothing to remove is success too.
    async fn removed(
        conn: &mut PgConnection,
        mgmt: TenantId,
        actor: &Actor,
        entity_type: &str,
        id: uuid::Uuid,
        result: Result<(), crate::Error>,
    ) -> Result<(), crate::Error> {
        match result {
            Ok(()) => {
                audit(
                    conn,
                    mgmt,
                    actor,
                    Action::Delete,
                    entity_type,
                    id,
                    json!({"reason": "rollback"}),
                )
                .await
            }
            Err(crate::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn remove_customer_tag(
        conn: &mut PgConnection,
        mgmt: TenantId,
        mapping: MappingId,
        actor: &Actor,
    ) -> Result<(), crate::Error> {
        let result = tags::detach(conn, mgmt, mapping).await;
        removed(conn, mgmt, actor, "customer_tag", mapping.0, result).await
    }

    /// Unlinks the existing contact that the run's record says it linked (it existed before the
    /// run, so it is kept).
    pub async fn unlink_customer_contact(
        conn: &mut PgConnection,
        mgmt: TenantId,
        workflow_id: &str,
        company: CompanyId,
        actor: &Actor,
    ) -> Result<(), crate::Error> {
        let Some(contact) = provisioning::get(conn, workflow_id)
            .await?
            .and_then(|r| r.linked_contact_id)
        else {
            return Ok(());
        };
        let n = sqlx::query(
            "UPDATE contacts SET company_id = NULL, updated_at = now() \
             WHERE tenant = $1 AND contact_name_id = $2 AND company_id = $3",
        )
        .bind(mgmt)
        .bind(contact)
        .bind(company)
        .execute(&mut *conn)
        .await?
        .rows_affected();
        if n > 0 {
            audit(
                conn,
                mgmt,
                actor,
                Action::Unlink,
                "customer_contact",
                contact,
                json!({"reason": "rollback"}),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn remove_customer_contact(
        conn: &mut PgConnection,
        mgmt: TenantId,
        contact: ContactId,
        actor: &Actor,
    ) -> Result<(), crate::Error> {
        if contacts::delete(conn, mgmt, contact).await? {
            audit(
                conn,
                mgmt,
                actor,
                Action::Delete,
                "customer_contact",
                contact.0,
                json!({"reason": "rollback"}),
            )
            .await?;
        }
        Ok(())
    }

    pub async fn remove_customer_company(
        conn: &mut PgConnection,
        mgmt: TenantId,
        company: CompanyId,
        actor: &Actor,
    ) -> Result<(), crate::Error> {
        crate::db::as_platform(conn).await?;
        let result = companies::delete(conn, mgmt, company).await;
        removed(conn, mgmt, actor, "customer_company", company.0, result).await
    }
}
