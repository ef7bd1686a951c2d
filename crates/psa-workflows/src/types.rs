//! The workflow's input, state and result: what callers (CLI, API) and the worker exchange.

use serde::{Deserialize, Serialize};

/// The new tenant's administrator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdminUserInput {
    pub first_name: String,
    pub last_name: String,
    pub email: String,
}

/// Customer tracking settings, resolved by the starter from its configuration and recorded in
/// the workflow's input (and so in history): a replay sees the settings the run started with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackingSettings {
    pub enabled: bool,
    pub management_tenant_id: Option<uuid::Uuid>,
    pub tag_name: String,
}

/// Input of the `tenant_creation` workflow.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantCreationInput {
    pub tenant_name: String,
    pub admin_user: AdminUserInput,
    /// The tenant's own company; none is created when absent.
    pub company_name: Option<String>,
    pub license_count: Option<i32>,
    #[serde(default)]
    pub skip_customer_tracking: bool,
    pub tracking: TrackingSettings,
}

impl TenantCreationInput {
    /// The checks a starter makes before starting a workflow (the activities make them again).
    pub fn validate(&self) -> Result<(), psa_models::Error> {
        psa_models::tenants::validate(&psa_models::tenants::NewTenant {
            name: self.tenant_name.clone(),
            email: self.admin_user.email.clone(),
            company_name: self.company_name.clone(),
            licensed_user_count: self.license_count,
        })?;
        psa_models::users::validate_person(
            &self.admin_user.first_name,
            &self.admin_user.last_name,
            &self.admin_user.email,
        )?;
        if self.tracking.enabled && !self.skip_customer_tracking {
            psa_models::validate::TagText::parse(&self.tracking.tag_name)?;
            if self.tracking.management_tenant_id.is_none() {
                return Err(psa_models::Error::validation(
                    "NINEMINDS_TENANT_ID",
                    "customer tracking is enabled but NINEMINDS_TENANT_ID is not set",
                ));
            }
        }
        Ok(())
    }
}

/// Where the workflow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    #[default]
    Initializing,
    CreatingTenant,
    RunningOnboardingSeeds,
    CreatingAdminUser,
    SettingUpData,
    RollingBack,
    Completed,
    Failed,
    RolledBack,
    Cancelled,
}

/// Customer tracking outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TrackingStatus {
    #[default]
    Pending,
    Running,
    Completed,
    Failed,
    Skipped,
    Disabled,
    /// Its records were removed by a rollback of the tenant.
    RolledBack,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct CustomerTracking {
    pub status: TrackingStatus,
    pub customer_company_id: Option<uuid::Uuid>,
    pub customer_contact_id: Option<uuid::Uuid>,
    pub customer_tag_id: Option<uuid::Uuid>,
    /// The tag mapping (needed to remove the tag on rollback).
    pub customer_tag_mapping_id: Option<uuid::Uuid>,
    pub error: Option<String>,
    /// What the collision rules decided (docs/workflow.md), when they applied.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The state query's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct WorkflowState {
    pub step: Step,
    pub progress: u8,
    pub tenant_id: Option<uuid::Uuid>,
    pub admin_user_id: Option<uuid::Uuid>,
    pub company_id: Option<uuid::Uuid>,
    pub customer_tracking: CustomerTracking,
    pub error: Option<String>,
    pub cancel_requested: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct RollbackReport {
    pub performed: bool,
    pub compensated: Vec<String>,
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepError {
    pub step: String,
    pub message: String,
}

/// Final status of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    Failed,
    RolledBack,
    Cancelled,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Failed => "failed",
            Outcome::RolledBack => "rolled_back",
            Outcome::Cancelled => "cancelled",
        }
    }
}

/// The workflow's result, as stored in Temporal: the password only sealed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantCreationResult {
    pub workflow_id: String,
    pub status: Outcome,
    pub tenant_id: Option<uuid::Uuid>,
    pub admin_user_id: Option<uuid::Uuid>,
    pub company_id: Option<uuid::Uuid>,
    /// The temporary password, sealed with `PSA_SECRET_KEY` (see [`crate::secret`]).
    pub temporary_password_sealed: Option<String>,
    pub created_at: String,
    pub customer_tracking: CustomerTracking,
    pub rollback: RollbackReport,
    pub error: Option<StepError>,
}

impl TenantCreationResult {
    /// The result as callers see it (`psa tenant create --json`, the API): the password opened
    /// with `key` (null without a key or for a run that did not complete).
    pub fn public(&self, key: Option<&crate::secret::SecretKey>) -> serde_json::Value {
        use secrecy::ExposeSecret;
        let password = match (key, &self.temporary_password_sealed) {
            (Some(k), Some(sealed)) => k.open(sealed).ok().map(|p| p.expose_secret().to_owned()),
            _ => None,
        };
        let t = &self.customer_tracking;
        serde_json::json!({
            "workflow_id": self.workflow_id,
            "status": self.status,
            "tenant_id": self.tenant_id,
            "admin_user_id": self.admin_user_id,
            "company_id": self.company_id,
            "temporary_password": password,
            "created_at": self.created_at,
            "customer_tracking": {
                "status": t.status,
                "customer_company_id": t.customer_company_id,
                "customer_contact_id": t.customer_contact_id,
                "customer_tag_id": t.customer_tag_id,
                "error": t.error,
                "warnings": t.warnings,
            },
            "rollback": self.rollback,
            "error": self.error,
        })
    }
}
