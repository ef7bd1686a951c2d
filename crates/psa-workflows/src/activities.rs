//! The workflow's activities: thin calls into psa-models, one transaction each.
//!
//! Exactly-once effects from at-least-once execution: every id is minted by the workflow and
//! recorded in history, and every model call finds the row a previous attempt committed (see
//! psa-models' `CreateOptions`), so an activity that ran twice (the worker died after its commit)
//! adds nothing. Errors are classified once ([`to_activity_error`]): transient database failures
//! are retried with backoff; everything else fails the step for good and triggers the rollback.
//!
//! Fail points (`--features failpoints`, `FAILPOINTS` env): `activity::<name>` fails before the
//! commit, `activity::<name>::after_commit` after it; `return(permanent)` is non-retryable,
//! `return(transient)` or `return` retryable.

use std::sync::Arc;
use std::time::Instant;

use psa_models::companies::{self, NewCompany};
use psa_models::contacts::{self, NewContact};
use psa_models::tags::{self, NewTag, TaggedType};
use psa_models::validate::EmailAddress;
use psa_models::{CompanyId, ContactId, MappingId, TenantId, UserId, seeds, tenants, users};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use temporalio_macros::activities;
use temporalio_sdk::ApplicationFailure;
use temporalio_sdk::activities::{ActivityContext, ActivityError};
use uuid::Uuid;

use crate::secret::SecretKey;

/// Classifies a model error: transient failures are retried, the rest are final.
pub fn to_activity_error(e: psa_models::Error) -> ActivityError {
    if e.is_transient() {
        tracing::warn!(error = ?e, "transient failure, will retry");
        ActivityError::application(ApplicationFailure::new(format!(
            "transient database failure: {e}"
        )))
    } else {
        let message = match e.field() {
            Some(f) if !f.is_empty() => format!("{e} ({f})"),
            _ => e.to_string(),
        };
        ActivityError::application(
            ApplicationFailure::builder(message)
                .type_name(e.code().to_owned())
                .non_retryable(true)
                .build(),
        )
    }
}

/// Evaluates the fail point `name` (a no-op without the `failpoints` feature).
#[cfg_attr(not(feature = "failpoints"), allow(unused_variables))]
fn failpoint(name: &str) -> Result<(), ActivityError> {
    fail::fail_point!(name, |arg: Option<String>| {
        if arg.as_deref() == Some("permanent") {
            Err(ActivityError::application(
                ApplicationFailure::builder(format!("fail point {name} (permanent)"))
                    .type_name("failpoint".to_owned())
                    .non_retryable(true)
                    .build(),
            ))
        } else {
            Err(ActivityError::application(ApplicationFailure::new(
                format!("fail point {name} (transient)"),
            )))
        }
    });
    Ok(())
}

/// The activities and what they share: the owner-role pool (the worker writes into two tenants,
/// so row-level security does not restrict it) and the key that seals the admin's password.
pub struct TenantActivities {
    pub pool: PgPool,
    pub key: SecretKey,
}

/// Runs `body` in one transaction with the fail points around the commit, and times it.
async fn transaction<T, F>(
    pool: &PgPool,
    activity: &'static str,
    body: F,
) -> Result<T, ActivityError>
where
    F: for<'c> AsyncFnOnce(&'c mut PgConnection) -> Result<T, psa_models::Error>,
{
    let start = Instant::now();
    let result = async {
        let mut tx: Transaction<'_, Postgres> = pool
            .begin()
            .await
            .map_err(|e| to_activity_error(e.into()))?;
        let out = body(&mut tx).await.map_err(to_activity_error)?;
        failpoint(&format!("activity::{activity}"))?;
        tx.commit().await.map_err(|e| to_activity_error(e.into()))?;
        failpoint(&format!("activity::{activity}::after_commit"))?;
        Ok(out)
    }
    .await;
    let outcome = if result.is_ok() { "ok" } else { "error" };
    metrics::histogram!("psa_activity_duration_seconds", "activity" => activity, "outcome" => outcome)
        .record(start.elapsed().as_secs_f64());
    result
}

pub(crate) async fn audit(
    conn: &mut PgConnection,
    tenant: TenantId,
    action: &str,
    entity_type: &str,
    entity_id: Uuid,
    details: serde_json::Value,
) -> Result<(), psa_models::Error> {
    sqlx::query(
        "INSERT INTO audit_log (tenant, actor, action, entity_type, entity_id, details) \
         VALUES ($1, 'workflow:tenant_creation', $2, $3, $4, $5)",
    )
    .bind(tenant)
    .bind(action)
    .bind(entity_type)
    .bind(entity_id)
    .bind(details)
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts a tracking step attempt. Failures are split by kind: a `transient_failure` is the
/// management tenant's database unreachable or failing over (what the connection alert watches),
/// a `permanent_failure` a rule or data problem.
fn tracking_step<T>(step: &'static str, result: &Result<T, ActivityError>) {
    let outcome = match result {
        Ok(_) => "success",
        Err(ActivityError::Application(f)) if f.is_non_retryable() => "permanent_failure",
        Err(_) => "transient_failure",
    };
    metrics::counter!("psa_customer_tracking_steps_total", "step" => step, "outcome" => outcome)
        .increment(1);
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTenantIn {
    pub tenant_id: Uuid,
    pub company_id: Uuid,
    pub tenant_name: String,
    pub admin_email: String,
    pub company_name: Option<String>,
    pub license_count: Option<i32>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateTenantOut {
    pub tenant_id: Uuid,
    pub company_id: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateAdminIn {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateAdminOut {
    pub user_id: Uuid,
    /// Sealed with `PSA_SECRET_KEY`: activity results are stored in history.
    pub temporary_password_sealed: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetupIn {
    pub tenant_id: Uuid,
    pub company_id: Option<Uuid>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerCompanyIn {
    pub management_tenant_id: Uuid,
    /// Minted by the workflow.
    pub company_id: Uuid,
    pub tenant_id: Uuid,
    pub tenant_name: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerCompanyOut {
    pub company_id: Uuid,
    pub created: bool,
    pub warning: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerContactIn {
    pub management_tenant_id: Uuid,
    pub contact_id: Uuid,
    pub company_id: Uuid,
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CustomerContactOut {
    pub contact_id: Uuid,
    pub created: bool,
    /// An existing company-less contact was linked to the customer company.
    pub linked: bool,
    pub warning: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagIn {
    pub management_tenant_id: Uuid,
    pub company_id: Uuid,
    pub tag_text: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TagOut {
    pub tag_id: Uuid,
    pub mapping_id: Uuid,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemoveIn {
    pub management_tenant_id: Uuid,
    /// A record this run created (its minted id), or the tag mapping it added.
    pub id: Uuid,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnlinkIn {
    pub management_tenant_id: Uuid,
    /// An existing contact this run linked to the customer company.
    pub contact_id: Uuid,
    pub company_id: Uuid,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct OutcomeIn {
    pub outcome: String,
    pub tracking_status: String,
    pub tracking_rolled_back: bool,
    pub duration_seconds: f64,
}

/// The customer company's name: the tenant's name, unless a company of another tenant (or no
/// tenant) already has it; then the name gets the tenant's short id, and a warning says so.
pub(crate) async fn customer_company(
    conn: &mut PgConnection,
    input: &CustomerCompanyIn,
) -> Result<CustomerCompanyOut, psa_models::Error> {
    let mgmt = TenantId::from(input.management_tenant_id);
    let managed = TenantId::from(input.tenant_id);
    if let Some(existing) = companies::find_by_managed_tenant(conn, mgmt, managed).await? {
        // A retry, or a tenant tracked before (reconcile): reuse.
        let created = existing.company_id.0 == input.company_id;
        return Ok(CustomerCompanyOut {
            company_id: existing.company_id.0,
            created,
            warning: None,
        });
    }
    let mut name = input.tenant_name.trim().to_owned();
    let mut warning = None;
    if let Some(taken) = companies::find_by_name(conn, mgmt, &name).await? {
        let short = &input.tenant_id.simple().to_string()[..8];
        let renamed: String = format!("{name} ({short})");
        warning = Some(format!(
            "a company named {name:?} already exists in the management tenant ({}); the customer company was named {renamed:?}",
            taken.company_id
        ));
        name = renamed;
    }
    let properties = json!({
        "tenant_id": managed.to_string(),
        "tenant_name": input.tenant_name.trim(),
        "subscription_type": "psa",
    });
    let company = companies::create(
        conn,
        mgmt,
        NewCompany {
            company_name: name,
            notes: Some(format!(
                "PSA Customer - Tenant: {} ({managed})",
                input.tenant_name.trim()
            )),
            properties: properties.as_object().cloned(),
            ..Default::default()
        },
        companies::CreateOptions {
            company_id: Some(CompanyId::from(input.company_id)),
            skip_tax_settings: false,
            skip_email_suffix: true,
        },
    )
    .await?;
    audit(
        conn,
        mgmt,
        "create",
        "customer_company",
        company.company_id.0,
        json!({"tenant_id": managed}),
    )
    .await?;
    Ok(CustomerCompanyOut {
        company_id: company.company_id.0,
        created: true,
        warning,
    })
}

/// The customer contact: created for the admin; if the email is already a contact of the
/// management tenant, that contact is kept (never modified beyond linking a company-less contact
/// to the customer company), and a warning says so.
pub(crate) async fn customer_contact(
    conn: &mut PgConnection,
    input: &CustomerContactIn,
) -> Result<CustomerContactOut, psa_models::Error> {
    let mgmt = TenantId::from(input.management_tenant_id);
    let email = EmailAddress::parse(&input.email)?;
    if let Some(existing) = contacts::find_by_email(conn, mgmt, &email).await? {
        if existing.contact_name_id.0 == input.contact_id {
            return Ok(CustomerContactOut {
                contact_id: existing.contact_name_id.0,
                created: true,
                linked: false,
                warning: None,
            });
        }
        return match existing.company_id {
            Some(c) if c.0 == input.company_id => Ok(CustomerContactOut {
                contact_id: existing.contact_name_id.0,
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
                        company_id: Some(Some(CompanyId::from(input.company_id))),
                        ..Default::default()
                    },
                )
                .await?;
                audit(
                    conn,
                    mgmt,
                    "link",
                    "customer_contact",
                    existing.contact_name_id.0,
                    json!({"company_id": input.company_id}),
                )
                .await?;
                Ok(CustomerContactOut {
                    contact_id: existing.contact_name_id.0,
                    created: false,
                    linked: true,
                    warning: Some(format!(
                        "{email} was already a contact without company; it was linked to the customer company",
                        email = email.as_str()
                    )),
                })
            }
            Some(other) => Ok(CustomerContactOut {
                contact_id: existing.contact_name_id.0,
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
            full_name: format!("{} {}", input.first_name.trim(), input.last_name.trim()),
            email: email.as_str().to_owned(),
            company_id: Some(CompanyId::from(input.company_id)),
            role: Some("Admin".into()),
            notes: Some("Primary admin for PSA tenant".into()),
            ..Default::default()
        },
        contacts::CreateOptions {
            contact_id: Some(ContactId::from(input.contact_id)),
        },
    )
    .await?;
    audit(
        conn,
        mgmt,
        "create",
        "customer_contact",
        contact.contact_name_id.0,
        json!({"company_id": input.company_id}),
    )
    .await?;
    Ok(CustomerContactOut {
        contact_id: contact.contact_name_id.0,
        created: true,
        linked: false,
        warning: None,
    })
}

#[activities]
impl TenantActivities {
    #[activity(name = "create_tenant")]
    pub async fn create_tenant(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CreateTenantIn,
    ) -> Result<CreateTenantOut, ActivityError> {
        transaction(&self.pool, "create_tenant", async move |conn| {
            let created = tenants::create(
                conn,
                TenantId::from(input.tenant_id),
                tenants::NewTenant {
                    name: input.tenant_name.clone(),
                    email: input.admin_email.clone(),
                    company_name: input.company_name.clone(),
                    licensed_user_count: input.license_count,
                },
                tenants::CreateOptions {
                    company_id: Some(CompanyId::from(input.company_id)),
                    is_management: false,
                },
            )
            .await?;
            Ok(CreateTenantOut {
                tenant_id: input.tenant_id,
                company_id: created.company.map(|c| c.company_id.0),
            })
        })
        .await
    }

    #[activity(name = "run_onboarding_seeds")]
    pub async fn run_onboarding_seeds(
        self: Arc<Self>,
        _ctx: ActivityContext,
        tenant_id: Uuid,
    ) -> Result<(), ActivityError> {
        transaction(&self.pool, "run_onboarding_seeds", async move |conn| {
            seeds::run(conn, TenantId::from(tenant_id))
                .await
                .map(|_| ())
        })
        .await
    }

    #[activity(name = "create_admin_user")]
    pub async fn create_admin_user(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CreateAdminIn,
    ) -> Result<CreateAdminOut, ActivityError> {
        let key = self.key.clone();
        transaction(&self.pool, "create_admin_user", async move |conn| {
            let created = users::create_admin(
                conn,
                TenantId::from(input.tenant_id),
                &input.first_name,
                &input.last_name,
                &input.email,
                users::CreateOptions {
                    user_id: Some(UserId::from(input.user_id)),
                },
            )
            .await?;
            Ok(CreateAdminOut {
                user_id: created.user.user_id.0,
                temporary_password_sealed: key.seal(&created.temporary_password),
            })
        })
        .await
    }

    #[activity(name = "setup_tenant_data")]
    pub async fn setup_tenant_data(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: SetupIn,
    ) -> Result<(), ActivityError> {
        transaction(&self.pool, "setup_tenant_data", async move |conn| {
            tenants::setup_tenant_data(
                conn,
                TenantId::from(input.tenant_id),
                input.company_id.map(CompanyId::from),
            )
            .await
            .map(|_| ())
        })
        .await
    }

    #[activity(name = "create_customer_company")]
    pub async fn create_customer_company(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CustomerCompanyIn,
    ) -> Result<CustomerCompanyOut, ActivityError> {
        let r = transaction(&self.pool, "create_customer_company", async move |conn| {
            customer_company(conn, &input).await
        })
        .await;
        tracking_step("create_customer_company", &r);
        r
    }

    #[activity(name = "create_customer_contact")]
    pub async fn create_customer_contact(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: CustomerContactIn,
    ) -> Result<CustomerContactOut, ActivityError> {
        let r = transaction(&self.pool, "create_customer_contact", async move |conn| {
            customer_contact(conn, &input).await
        })
        .await;
        tracking_step("create_customer_contact", &r);
        r
    }

    #[activity(name = "tag_customer_company")]
    pub async fn tag_customer_company(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: TagIn,
    ) -> Result<TagOut, ActivityError> {
        let r = transaction(&self.pool, "tag_customer_company", async move |conn| {
            let mgmt = TenantId::from(input.management_tenant_id);
            let attached = tags::attach(
                conn,
                mgmt,
                NewTag {
                    tag_text: input.tag_text.clone(),
                    tagged_id: input.company_id,
                    tagged_type: TaggedType::Company,
                    background_color: None,
                    text_color: None,
                },
                Default::default(),
            )
            .await?;
            if attached.mapping_created {
                audit(
                    conn,
                    mgmt,
                    "create",
                    "customer_tag",
                    attached.tag.mapping_id.0,
                    json!({"company_id": input.company_id, "tag_text": input.tag_text}),
                )
                .await?;
            }
            Ok(TagOut {
                tag_id: attached.tag.tag_id.0,
                mapping_id: attached.tag.mapping_id.0,
            })
        })
        .await;
        tracking_step("tag_customer_company", &r);
        r
    }

    /// Compensation: removes the customer tag mapping. Idempotent.
    #[activity(name = "remove_customer_tag")]
    pub async fn remove_customer_tag(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RemoveIn,
    ) -> Result<(), ActivityError> {
        transaction(&self.pool, "remove_customer_tag", async move |conn| {
            let mgmt = TenantId::from(input.management_tenant_id);
            match tags::detach(conn, mgmt, MappingId::from(input.id)).await {
                Ok(()) => {
                    audit(
                        conn,
                        mgmt,
                        "delete",
                        "customer_tag",
                        input.id,
                        json!({"reason": "rollback"}),
                    )
                    .await
                }
                Err(psa_models::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Compensation: deletes the customer contact this run created (by its minted id).
    /// Idempotent.
    #[activity(name = "remove_customer_contact")]
    pub async fn remove_customer_contact(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RemoveIn,
    ) -> Result<(), ActivityError> {
        transaction(&self.pool, "remove_customer_contact", async move |conn| {
            let mgmt = TenantId::from(input.management_tenant_id);
            if contacts::delete(conn, mgmt, ContactId::from(input.id)).await? {
                audit(
                    conn,
                    mgmt,
                    "delete",
                    "customer_contact",
                    input.id,
                    json!({"reason": "rollback"}),
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// Compensation: unlinks an existing contact this run linked to the customer company (it
    /// existed before the run, so it is kept). Idempotent.
    #[activity(name = "unlink_customer_contact")]
    pub async fn unlink_customer_contact(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: UnlinkIn,
    ) -> Result<(), ActivityError> {
        transaction(&self.pool, "unlink_customer_contact", async move |conn| {
            let mgmt = TenantId::from(input.management_tenant_id);
            let n = sqlx::query(
                "UPDATE contacts SET company_id = NULL, updated_at = now() \
                 WHERE tenant = $1 AND contact_name_id = $2 AND company_id = $3",
            )
            .bind(mgmt)
            .bind(input.contact_id)
            .bind(input.company_id)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            if n > 0 {
                audit(
                    conn,
                    mgmt,
                    "unlink",
                    "customer_contact",
                    input.contact_id,
                    json!({"reason": "rollback"}),
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// Compensation: deletes the customer company this run created (and its tag mappings).
    /// Idempotent.
    #[activity(name = "remove_customer_company")]
    pub async fn remove_customer_company(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: RemoveIn,
    ) -> Result<(), ActivityError> {
        transaction(&self.pool, "remove_customer_company", async move |conn| {
            let mgmt = TenantId::from(input.management_tenant_id);
            match companies::delete(conn, mgmt, CompanyId::from(input.id)).await {
                Ok(()) => {
                    audit(
                        conn,
                        mgmt,
                        "delete",
                        "customer_company",
                        input.id,
                        json!({"reason": "rollback"}),
                    )
                    .await
                }
                Err(psa_models::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// Compensation: deletes the tenant and everything it owns. Idempotent.
    #[activity(name = "rollback_tenant")]
    pub async fn rollback_tenant(
        self: Arc<Self>,
        _ctx: ActivityContext,
        tenant_id: Uuid,
    ) -> Result<(), ActivityError> {
        transaction(&self.pool, "rollback_tenant", async move |conn| {
            tenants::delete(conn, TenantId::from(tenant_id))
                .await
                .map(|_| ())
        })
        .await
    }

    /// Records the run's outcome in the worker's metrics (workflow code itself must stay free of
    /// side effects: it is replayed).
    #[activity(name = "record_outcome")]
    pub async fn record_outcome(
        self: Arc<Self>,
        _ctx: ActivityContext,
        input: OutcomeIn,
    ) -> Result<(), ActivityError> {
        metrics::counter!("psa_tenant_creations_total", "outcome" => input.outcome.clone())
            .increment(1);
        metrics::histogram!("psa_tenant_creation_duration_seconds", "outcome" => input.outcome)
            .record(input.duration_seconds);
        metrics::counter!("psa_customer_tracking_total", "status" => input.tracking_status)
            .increment(1);
        if input.tracking_rolled_back {
            metrics::counter!("psa_customer_tracking_rollbacks_total").increment(1);
        }
        Ok(())
    }
}
