//! The workflow's typed surface: what starters send (a parsed request), what the worker decides
//! (its tracking settings), the steps and activities, the state, the result, and the one view of
//! a provisioning run that the CLI and the API show.

use psa_models::provisioning::Record;
use psa_models::validate::{CompanyName, EmailAddress, PersonName, Slug, TagText};
use psa_models::{CompanyId, ContactId, TenantId, UserId};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use psa_models::provisioning::{RunStatus, TrackingState};

/// The new tenant's administrator.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AdminUser {
    pub first_name: PersonName,
    pub last_name: PersonName,
    pub email: EmailAddress,
}

/// Input of the `tenant_creation` workflow: a starter's request, parsed once at the edge (CLI,
/// API) and carried through as domain types. It holds no platform settings: customer tracking is
/// decided by the worker's configuration, whoever starts the run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TenantCreationInput {
    pub tenant_name: CompanyName,
    pub admin_user: AdminUser,
    /// The tenant's own company; none is created when absent.
    pub company_name: Option<CompanyName>,
    pub license_count: Option<i32>,
    /// The starter's one choice about tracking: not for this tenant (remembered, and honoured by
    /// reconcile).
    #[serde(default)]
    pub skip_customer_tracking: bool,
    /// The tenant's slug; absent, one is derived from the name. (Left out of the serialised
    /// request when absent, so requests made before slugs keep their fingerprint.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slug: Option<Slug>,
    /// The plan's code (the starter resolves `PSA_DEFAULT_PLAN` when none is asked for). Absent
    /// in runs started before plans: no subscription is made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<String>,
}

/// A request as strings, the way the CLI's flags and the API's body carry it.
#[derive(Clone, Debug, Default)]
pub struct RawRequest<'a> {
    pub tenant_name: &'a str,
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub company_name: Option<&'a str>,
    pub license_count: Option<i32>,
    pub skip_customer_tracking: bool,
    pub slug: Option<&'a str>,
    pub plan: Option<&'a str>,
}

impl TenantCreationInput {
    /// The request's fingerprint: the same normalised request always hashes the same (an
    /// idempotency key's reuse is checked against it).
    pub fn fingerprint(&self) -> Vec<u8> {
        use sha2::{Digest, Sha256};
        let bytes = serde_json::to_vec(self).expect("a request serialises");
        Sha256::digest(bytes).to_vec()
    }

    /// Parses a request; the error names the offending field as the API's body does.
    pub fn parse(raw: RawRequest<'_>) -> Result<Self, psa_models::Error> {
        let field = |e: psa_models::Error, field: &'static str| match e {
            psa_models::Error::Validation { message, .. } => psa_models::Error::validation(
                field,
                message.replacen("Company name", "Tenant name", 1),
            ),
            other => other,
        };
        let tenant_name =
            CompanyName::parse(raw.tenant_name).map_err(|e| field(e, "tenant_name"))?;
        let first_name =
            PersonName::parse_field(raw.first_name, "admin_user.first_name", "First name")?;
        let last_name =
            PersonName::parse_field(raw.last_name, "admin_user.last_name", "Last name")?;
        let email = EmailAddress::parse_field(raw.email, "admin_user.email")?;
        let company_name = raw
            .company_name
            .filter(|c| !c.trim().is_empty())
            .map(CompanyName::parse)
            .transpose()?;
        if raw.license_count.is_some_and(|n| n < 0) {
            return Err(psa_models::Error::validation(
                "license_count",
                "The licence count must not be negative",
            ));
        }
        Ok(TenantCreationInput {
            tenant_name,
            admin_user: AdminUser {
                first_name,
                last_name,
                email,
            },
            company_name,
            license_count: raw.license_count,
            skip_customer_tracking: raw.skip_customer_tracking,
            slug: raw
                .slug
                .filter(|s| !s.trim().is_empty())
                .map(Slug::parse)
                .transpose()?,
            plan: raw
                .plan
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_ascii_lowercase),
        })
    }
}

/// Customer tracking settings: the worker's configuration (`ENABLE_CUSTOMER_TRACKING`,
/// `NINEMINDS_TENANT_ID`, `CUSTOMER_TAG_NAME`), resolved by each run through its first activity
/// and recorded in its history, state, result and provisioning record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrackingSettings {
    pub enabled: bool,
    pub management_tenant_id: Option<TenantId>,
    pub tag_name: TagText,
}

/// The tenant's own steps, in order: the core chain. Progress is derived from this list.
pub const CORE_STEPS: [Step; 4] = [
    Step::CreatingTenant,
    Step::RunningOnboardingSeeds,
    Step::CreatingAdminUser,
    Step::SettingUpData,
];

/// Where the workflow is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    #[default]
    Initializing,
    CreatingTenant,
    RunningOnboardingSeeds,
    CreatingAdminUser,
    SettingUpData,
    /// After the tenant's own steps, which it cannot fail: the admin's invitation.
    SendingWelcomeEmail,
    RollingBack,
    Completed,
    Failed,
    RolledBack,
    Cancelled,
}

impl Step {
    /// 0-100: the core steps share 10..90 evenly; rolling back is 90; an end is 100.
    pub fn progress(self) -> u8 {
        match CORE_STEPS.iter().position(|s| *s == self) {
            Some(i) => (10 + i * 80 / CORE_STEPS.len()) as u8,
            None => match self {
                Step::Initializing => 0,
                Step::RollingBack | Step::SendingWelcomeEmail => 90,
                _ => 100,
            },
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Step::Initializing => "initializing",
            Step::CreatingTenant => "creating tenant",
            Step::RunningOnboardingSeeds => "running onboarding seeds",
            Step::CreatingAdminUser => "creating admin user",
            Step::SettingUpData => "setting up tenant data",
            Step::SendingWelcomeEmail => "sending the welcome email",
            Step::RollingBack => "rolling back",
            Step::Completed => "completed",
            Step::Failed => "failed",
            Step::RolledBack => "rolled back",
            Step::Cancelled => "cancelled",
        }
    }

    /// The activity a core step runs.
    pub fn activity(self) -> Option<ActivityName> {
        Some(match self {
            Step::CreatingTenant => ActivityName::CreateTenant,
            Step::RunningOnboardingSeeds => ActivityName::RunOnboardingSeeds,
            Step::CreatingAdminUser => ActivityName::CreateAdminUser,
            Step::SettingUpData => ActivityName::SetupTenantData,
            _ => return None,
        })
    }
}

/// Every activity, by the name it is registered under (and the fail points use:
/// `activity::<name>`). A unit test keeps these equal to the registered names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ActivityName {
    BeginProvisioning,
    CreateTenant,
    RunOnboardingSeeds,
    CreateAdminUser,
    SetupTenantData,
    CreateCustomerCompany,
    CreateCustomerContact,
    TagCustomerCompany,
    /// The customer record in one step (company, contact and tag): runs since the
    /// `local-steps` patch.
    CreateCustomerRecord,
    RemoveCustomerTag,
    UnlinkCustomerContact,
    RemoveCustomerContact,
    RemoveCustomerCompany,
    RemoveCustomerRecord,
    RollbackTenant,
    SendWelcomeEmail,
    FinishProvisioning,
}

impl ActivityName {
    pub const ALL: [ActivityName; 17] = [
        ActivityName::BeginProvisioning,
        ActivityName::CreateTenant,
        ActivityName::RunOnboardingSeeds,
        ActivityName::CreateAdminUser,
        ActivityName::SetupTenantData,
        ActivityName::CreateCustomerCompany,
        ActivityName::CreateCustomerContact,
        ActivityName::TagCustomerCompany,
        ActivityName::CreateCustomerRecord,
        ActivityName::RemoveCustomerTag,
        ActivityName::UnlinkCustomerContact,
        ActivityName::RemoveCustomerContact,
        ActivityName::RemoveCustomerCompany,
        ActivityName::RemoveCustomerRecord,
        ActivityName::RollbackTenant,
        ActivityName::SendWelcomeEmail,
        ActivityName::FinishProvisioning,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ActivityName::BeginProvisioning => "begin_provisioning",
            ActivityName::CreateTenant => "create_tenant",
            ActivityName::RunOnboardingSeeds => "run_onboarding_seeds",
            ActivityName::CreateAdminUser => "create_admin_user",
            ActivityName::SetupTenantData => "setup_tenant_data",
            ActivityName::CreateCustomerCompany => "create_customer_company",
            ActivityName::CreateCustomerContact => "create_customer_contact",
            ActivityName::TagCustomerCompany => "tag_customer_company",
            ActivityName::CreateCustomerRecord => "create_customer_record",
            ActivityName::RemoveCustomerRecord => "remove_customer_record",
            ActivityName::RemoveCustomerTag => "remove_customer_tag",
            ActivityName::UnlinkCustomerContact => "unlink_customer_contact",
            ActivityName::RemoveCustomerContact => "remove_customer_contact",
            ActivityName::RemoveCustomerCompany => "remove_customer_company",
            ActivityName::RollbackTenant => "rollback_tenant",
            ActivityName::SendWelcomeEmail => "send_welcome_email",
            ActivityName::FinishProvisioning => "finish_provisioning",
        }
    }

    /// Whether the activity undoes a step (its failure may leave data behind).
    pub fn is_compensation(self) -> bool {
        matches!(
            self,
            ActivityName::RemoveCustomerTag
                | ActivityName::UnlinkCustomerContact
                | ActivityName::RemoveCustomerContact
                | ActivityName::RemoveCustomerCompany
                | ActivityName::RemoveCustomerRecord
                | ActivityName::RollbackTenant
        )
    }

    /// Whether the activity writes one part of the customer record (counted in the tracking step
    /// metrics; `create_customer_record` counts each of these parts).
    pub fn is_tracking(self) -> bool {
        matches!(
            self,
            ActivityName::CreateCustomerCompany
                | ActivityName::CreateCustomerContact
                | ActivityName::TagCustomerCompany
        )
    }
}

impl std::fmt::Display for ActivityName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What failed a run: a core activity, or a cancel request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FailedStep {
    BeginProvisioning,
    CreateTenant,
    RunOnboardingSeeds,
    CreateAdminUser,
    SetupTenantData,
    Cancel,
}

impl FailedStep {
    pub fn of(activity: ActivityName) -> FailedStep {
        match activity {
            ActivityName::CreateTenant => FailedStep::CreateTenant,
            ActivityName::RunOnboardingSeeds => FailedStep::RunOnboardingSeeds,
            ActivityName::CreateAdminUser => FailedStep::CreateAdminUser,
            ActivityName::SetupTenantData => FailedStep::SetupTenantData,
            _ => FailedStep::BeginProvisioning,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            FailedStep::BeginProvisioning => "begin_provisioning",
            FailedStep::CreateTenant => "create_tenant",
            FailedStep::RunOnboardingSeeds => "run_onboarding_seeds",
            FailedStep::CreateAdminUser => "create_admin_user",
            FailedStep::SetupTenantData => "setup_tenant_data",
            FailedStep::Cancel => "cancel",
        }
    }
}

/// Customer tracking as the run did it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
pub struct CustomerTracking {
    pub status: TrackingState,
    pub customer_company_id: Option<CompanyId>,
    pub customer_contact_id: Option<ContactId>,
    pub customer_tag_id: Option<uuid::Uuid>,
    pub error: Option<String>,
    /// What the collision rules decided (docs/workflow.md), when they applied.
    #[serde(default)]
    pub warnings: Vec<String>,
}

/// The welcome email's status: `sent`; `failed` (retries exhausted: `psa tenant resend-invite`
/// repairs it); `disabled` (the worker has no mail settings: the link went to the starter
/// instead); `pending` until the run's tenant is complete (a rolled-back run stays `pending`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WelcomeStatus {
    #[default]
    Pending,
    Sent,
    Failed,
    Disabled,
}

impl WelcomeStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            WelcomeStatus::Pending => "pending",
            WelcomeStatus::Sent => "sent",
            WelcomeStatus::Failed => "failed",
            WelcomeStatus::Disabled => "disabled",
        }
    }
}

/// The welcome email as the run did it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
pub struct WelcomeEmail {
    pub status: WelcomeStatus,
    pub error: Option<String>,
}

/// The state query's answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
pub struct WorkflowState {
    pub step: Step,
    pub progress: u8,
    pub tenant_id: Option<TenantId>,
    pub admin_user_id: Option<UserId>,
    pub company_id: Option<CompanyId>,
    /// The worker's settings this run uses (known once the run has begun).
    pub tracking_settings: Option<TrackingSettings>,
    pub customer_tracking: CustomerTracking,
    /// Runs started before the welcome email existed have none (`pending`).
    #[serde(default)]
    pub welcome_email: WelcomeEmail,
    pub error: Option<String>,
    pub cancel_requested: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default, ToSchema)]
pub struct RollbackReport {
    pub performed: bool,
    /// The compensations that ran, in order.
    pub compensated: Vec<ActivityName>,
    /// Compensations that failed for good: what may be left behind.
    pub errors: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StepError {
    pub step: FailedStep,
    pub message: String,
}

/// How a run ended, by its own account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Completed,
    /// A compensation failed for good (see `rollback.errors`).
    Failed,
    RolledBack,
    Cancelled,
}

impl Outcome {
    /// The step a run that ended this way shows.
    pub fn step(self) -> Step {
        match self {
            Outcome::Completed => Step::Completed,
            Outcome::Failed => Step::Failed,
            Outcome::RolledBack => Step::RolledBack,
            Outcome::Cancelled => Step::Cancelled,
        }
    }

    pub fn as_str(self) -> &'static str {
        RunStatus::from(self).as_str()
    }
}

impl From<Outcome> for RunStatus {
    fn from(o: Outcome) -> RunStatus {
        match o {
            Outcome::Completed => RunStatus::Completed,
            Outcome::Failed => RunStatus::Failed,
            Outcome::RolledBack => RunStatus::RolledBack,
            Outcome::Cancelled => RunStatus::Cancelled,
        }
    }
}

/// The workflow's result, as stored in Temporal. It holds no usable credential: without mail,
/// the admin's invitation link is sealed with `PSA_SECRET_KEY` for the starter who waits for
/// the run (see [`TenantCreationResult::invitation_link`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TenantCreationResult {
    pub workflow_id: String,
    pub status: Outcome,
    pub tenant_id: Option<TenantId>,
    pub admin_user_id: Option<UserId>,
    pub company_id: Option<CompanyId>,
    pub created_at: String,
    pub tracking_settings: Option<TrackingSettings>,
    pub customer_tracking: CustomerTracking,
    #[serde(default)]
    pub welcome_email: WelcomeEmail,
    /// The invitation link when the worker sends no mail, sealed (see [`crate::secret`]).
    #[serde(default)]
    pub invitation_link_sealed: Option<String>,
    pub rollback: RollbackReport,
    pub error: Option<StepError>,
}

/// A run's result as callers see it (`psa tenant create --json`, the API). It never carries a
/// credential.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProvisioningResult {
    pub workflow_id: String,
    pub status: Outcome,
    pub tenant_id: Option<TenantId>,
    pub admin_user_id: Option<UserId>,
    pub company_id: Option<CompanyId>,
    pub created_at: String,
    pub tracking_settings: Option<TrackingSettings>,
    pub customer_tracking: CustomerTracking,
    pub welcome_email: WelcomeEmail,
    pub rollback: RollbackReport,
    pub error: Option<StepError>,
}

impl TenantCreationResult {
    /// The admin's invitation link, for the one starter who waited for this run to finish
    /// (`psa tenant create`, `psa demo`) when the worker sends no mail: opened with `key`. No
    /// other read of a run shows it; it stops working once used, superseded or expired.
    pub fn invitation_link(&self, key: &crate::secret::SecretKey) -> Option<secrecy::SecretString> {
        self.invitation_link_sealed.as_deref().and_then(|sealed| {
            key.open_for(
                sealed,
                crate::secret::Sealed::InvitationLink,
                &self.workflow_id,
            )
            .ok()
        })
    }

    /// The result for a caller.
    pub fn public(&self) -> ProvisioningResult {
        ProvisioningResult {
            workflow_id: self.workflow_id.clone(),
            status: self.status,
            tenant_id: self.tenant_id,
            admin_user_id: self.admin_user_id,
            company_id: self.company_id,
            welcome_email: self.welcome_email.clone(),
            created_at: self.created_at.clone(),
            tracking_settings: self.tracking_settings.clone(),
            customer_tracking: self.customer_tracking.clone(),
            rollback: self.rollback.clone(),
            error: self.error.clone(),
        }
    }

    /// The state a finished run ended in (read from its result: no worker needed).
    pub fn final_state(&self) -> WorkflowState {
        let step = self.status.step();
        WorkflowState {
            step,
            progress: step.progress(),
            tenant_id: self.tenant_id,
            admin_user_id: self.admin_user_id,
            company_id: self.company_id,
            tracking_settings: self.tracking_settings.clone(),
            customer_tracking: self.customer_tracking.clone(),
            welcome_email: self.welcome_email.clone(),
            error: self
                .error
                .as_ref()
                .map(|e| format!("{}: {}", e.step.as_str(), e.message)),
            cancel_requested: self.status == Outcome::Cancelled,
        }
    }
}

/// One provisioning run as every face shows it (`GET /api/v1/tenants/provisioning/{id}`,
/// `psa tenant status`, `psa tenant create`): Temporal's view (state while running, result once
/// finished) joined with the database's provisioning record, which outlives Temporal's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ProvisioningView {
    pub workflow_id: String,
    pub finished: bool,
    pub status: RunStatus,
    pub state: Option<WorkflowState>,
    pub result: Option<ProvisioningResult>,
    /// The provisioning record; `record.customer_tracking` is the customer record's current
    /// state (e.g. `repaired` after reconcile).
    pub record: Option<Record>,
    /// What an operator should know and do: no worker polling, a cut-off run awaiting cleanup.
    pub notice: Option<String>,
}

#[cfg(test)]
mod tests {

    use super::*;

    #[test]
    fn progress_comes_from_the_step_list() {
        let p: Vec<u8> = CORE_STEPS.iter().map(|s| s.progress()).collect();
        assert_eq!(p, [10, 30, 50, 70]);
        assert_eq!(Step::Initializing.progress(), 0);
        assert_eq!(Step::Completed.progress(), 100);
        for s in CORE_STEPS {
            assert!(s.activity().is_some());
        }
    }

    #[test]
    fn requests_are_parsed_once_with_field_names() {
        let raw = RawRequest {
            tenant_name: "  Acme ",
            first_name: "Ada",
            last_name: "Lovelace",
            email: " Ada@Example.COM ",
            ..Default::default()
        };
        let input = TenantCreationInput::parse(raw.clone()).unwrap();
        assert_eq!(input.tenant_name.as_str(), "Acme");
        assert_eq!(input.admin_user.email.as_str(), "ada@example.com");
        let bad = |r: RawRequest<'_>| {
            TenantCreationInput::parse(r)
                .unwrap_err()
                .field()
                .map(str::to_owned)
        };
        assert_eq!(
            bad(RawRequest {
                tenant_name: " ",
                ..raw.clone()
            })
            .as_deref(),
            Some("tenant_name")
        );
        assert_eq!(
            bad(RawRequest {
                email: "nope",
                ..raw.clone()
            })
            .as_deref(),
            Some("admin_user.email")
        );
        assert_eq!(
            bad(RawRequest {
                first_name: "",
                ..raw.clone()
            })
            .as_deref(),
            Some("admin_user.first_name")
        );
        assert_eq!(
            bad(RawRequest {
                license_count: Some(-1),
                ..raw.clone()
            })
            .as_deref(),
            Some("license_count")
        );
        // The same request normalised the same way hashes the same.
        let again = TenantCreationInput::parse(RawRequest {
            tenant_name: "Acme",
            email: "ada@example.com",
            ..raw
        })
        .unwrap();
        assert_eq!(input.fingerprint(), again.fingerprint());
        // A value that crossed Temporal is parsed again on the way in.
        let mut json = serde_json::to_value(&input).unwrap();
        json["admin_user"]["email"] = serde_json::json!("not an email");
        assert!(serde_json::from_value::<TenantCreationInput>(json).is_err());
    }
}
