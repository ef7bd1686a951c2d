//! `psa customers reconcile`: makes every tenant a tracked customer of the management tenant.
//!
//! It repairs tracking that failed (the management tenant was down) and backfills tenants
//! created before tracking existed, with the same rules as the workflow's activities (one
//! customer company per tenant, found by `properties.tenant_id`; the admin as contact; the tag),
//! so running it twice changes nothing the second time. It also reports customer companies whose
//! tenant no longer exists; it never deletes them (business data may hang on them).

use psa_models::tags::{self, NewTag, TaggedType};
use psa_models::{TenantId, companies, tenants};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::activities::{CustomerCompanyIn, CustomerContactIn, customer_company, customer_contact};
use crate::types::TrackingSettings;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Orphan {
    pub customer_company_id: Uuid,
    pub tenant_id: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Failure {
    pub tenant_id: Uuid,
    pub error: String,
}

#[derive(Debug, Clone, Serialize, Default, PartialEq)]
pub struct ReconcileReport {
    /// Tenants for which at least one customer record was created.
    pub created: usize,
    pub already_tracked: usize,
    pub failed: usize,
    pub orphans: Vec<Orphan>,
    pub dry_run: bool,
    pub failures: Vec<Failure>,
    pub warnings: Vec<String>,
}

/// The tenant's administrator: its oldest active internal user with the msp Admin role.
async fn admin_of(
    conn: &mut sqlx::PgConnection,
    tenant: TenantId,
) -> Result<Option<(String, String, String)>, psa_models::Error> {
    Ok(sqlx::query_as(
        "SELECT coalesce(u.first_name, ''), coalesce(u.last_name, ''), u.email FROM users u \
         JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id \
         JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id \
         WHERE u.tenant = $1 AND u.user_type = 'internal' AND NOT u.is_inactive \
           AND r.role_name = 'Admin' AND r.msp \
         ORDER BY u.created_at, u.user_id LIMIT 1",
    )
    .bind(tenant)
    .fetch_optional(conn)
    .await?)
}

/// Tracks one tenant; returns whether anything was created, and warnings.
async fn track(
    pool: &PgPool,
    mgmt: TenantId,
    tenant: &tenants::Tenant,
    tag: &str,
    dry_run: bool,
) -> Result<(bool, Vec<String>), psa_models::Error> {
    let mut tx = pool.begin().await?;
    let mut created = false;
    let mut warnings = Vec::new();
    let existing = companies::find_by_managed_tenant(&mut tx, mgmt, tenant.tenant).await?;
    let admin = admin_of(&mut tx, tenant.tenant).await?;
    let company_id = match existing {
        Some(c) => c.company_id.0,
        None => {
            created = true;
            if dry_run {
                return Ok((true, warnings));
            }
            let out = customer_company(
                &mut tx,
                &CustomerCompanyIn {
                    management_tenant_id: mgmt.0,
                    company_id: Uuid::new_v4(),
                    tenant_id: tenant.tenant.0,
                    tenant_name: tenant.company_name.clone(),
                },
            )
            .await?;
            warnings.extend(out.warning);
            out.company_id
        }
    };
    if let Some((first, last, email)) = admin {
        let email = psa_models::validate::EmailAddress::parse(&email)?;
        let has_contact = psa_models::contacts::find_by_email(&mut tx, mgmt, &email)
            .await?
            .is_some();
        if !has_contact {
            created = true;
            if !dry_run {
                let out = customer_contact(
                    &mut tx,
                    &CustomerContactIn {
                        management_tenant_id: mgmt.0,
                        contact_id: Uuid::new_v4(),
                        company_id,
                        first_name: first,
                        last_name: last,
                        email: email.as_str().to_owned(),
                    },
                )
                .await?;
                warnings.extend(out.warning);
            }
        }
    } else {
        warnings.push(format!(
            "tenant {} has no active administrator: no customer contact",
            tenant.tenant
        ));
    }
    let tagged = tags::list_for_entity(&mut tx, mgmt, TaggedType::Company, company_id)
        .await?
        .iter()
        .any(|t| t.tag_text == tag);
    if !tagged {
        created = true;
        if !dry_run {
            let attached = tags::attach(
                &mut tx,
                mgmt,
                NewTag {
                    tag_text: tag.to_owned(),
                    tagged_id: company_id,
                    tagged_type: TaggedType::Company,
                    background_color: None,
                    text_color: None,
                },
                Default::default(),
            )
            .await?;
            if attached.mapping_created {
                crate::activities::audit(
                    &mut tx,
                    mgmt,
                    "create",
                    "customer_tag",
                    attached.tag.mapping_id.0,
                    serde_json::json!({"company_id": company_id, "tag_text": tag, "by": "reconcile"}),
                )
                .await?;
            }
        }
    }
    if dry_run {
        tx.rollback().await?;
    } else {
        tx.commit().await?;
    }
    Ok((created, warnings))
}

/// Reconciles every tenant but the management tenant.
pub async fn reconcile(
    pool: &PgPool,
    tracking: &TrackingSettings,
    dry_run: bool,
) -> Result<ReconcileReport, psa_models::Error> {
    let mgmt = TenantId::from(tracking.management_tenant_id.ok_or_else(|| {
        psa_models::Error::validation("NINEMINDS_TENANT_ID", "NINEMINDS_TENANT_ID is not set")
    })?);
    psa_models::validate::TagText::parse(&tracking.tag_name)?;
    let mut conn = pool.acquire().await?;
    if tenants::find(&mut conn, mgmt).await?.is_none() {
        return Err(psa_models::Error::validation(
            "NINEMINDS_TENANT_ID",
            format!("NINEMINDS_TENANT_ID={mgmt} names no tenant"),
        ));
    }
    let all = tenants::list(&mut conn).await?;
    let orphans: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT c.company_id, c.properties ->> 'tenant_id' FROM companies c \
         WHERE c.tenant = $1 AND c.properties ? 'tenant_id' \
           AND NOT EXISTS (SELECT 1 FROM tenants t WHERE t.tenant::text = c.properties ->> 'tenant_id') \
         ORDER BY c.company_name",
    )
    .bind(mgmt)
    .fetch_all(&mut *conn)
    .await?;
    drop(conn);
    let mut report = ReconcileReport {
        dry_run,
        orphans: orphans
            .into_iter()
            .map(|(customer_company_id, tenant_id)| Orphan {
                customer_company_id,
                tenant_id,
            })
            .collect(),
        ..Default::default()
    };
    for tenant in all.iter().filter(|t| t.tenant != mgmt && !t.is_management) {
        match track(pool, mgmt, tenant, &tracking.tag_name, dry_run).await {
            Ok((true, w)) => {
                report.created += 1;
                report.warnings.extend(w);
            }
            Ok((false, w)) => {
                report.already_tracked += 1;
                report.warnings.extend(w);
            }
            Err(e) => {
                tracing::warn!(tenant = %tenant.tenant, error = ?e, "reconcile failed for a tenant");
                report.failed += 1;
                report.failures.push(Failure {
                    tenant_id: tenant.tenant.0,
                    error: e.to_string(),
                });
            }
        }
    }
    Ok(report)
}
