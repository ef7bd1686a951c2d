//! The platform's settings, read once at start-up by the process (`psa serve`, `psa worker`,
//! any `psa` command) and passed down: where the customer records live, how they are tagged,
//! the default grace of a cancel.

use psa_models::TenantId;
use psa_models::lifecycle::LifecycleTags;
use psa_models::validate::TagText;

/// The default grace period of a cancel, before the tenant is deleted.
pub const DEFAULT_GRACE: chrono::Duration = chrono::Duration::days(30);

#[derive(Clone, Debug)]
pub struct Settings {
    /// `NINEMINDS_TENANT_ID`; `None`: the database's management tenant (`tenants.is_management`).
    pub management_tenant_id: Option<TenantId>,
    /// `ENABLE_CUSTOMER_TRACKING`: new tenants are recorded as customers of the management tenant.
    pub customer_tracking: bool,
    /// `CUSTOMER_TAG_NAME`: the tag that tells `tracked` from `partial`.
    pub customer_tag: TagText,
    /// `CUSTOMER_SUSPENDED_TAG_NAME`, `CUSTOMER_CANCELED_TAG_NAME`.
    pub lifecycle_tags: LifecycleTags,
    /// The grace of a cancel that names none.
    pub default_grace: chrono::Duration,
    /// `PSA_DEFAULT_PLAN`: the plan of a new tenant that names none.
    pub default_plan: String,
    /// `PSA_STRIPE_WEBHOOK_SECRET`: the secret Stripe signs its webhook deliveries with; `None`:
    /// the billing webhook is refused (503).
    pub stripe_webhook_secret: Option<secrecy::SecretString>,
    /// `PSA_IMPORT_MAX_BYTES`: the largest archive an import takes, as uploaded and unpacked.
    pub import_max_bytes: u64,
}

/// The default of [`Settings::import_max_bytes`]: 16 GiB.
pub const DEFAULT_IMPORT_MAX_BYTES: u64 = 16 << 30;

impl Default for Settings {
    fn default() -> Self {
        Settings {
            management_tenant_id: None,
            customer_tracking: true,
            customer_tag: TagText::parse("PSA Customer").expect("a valid tag"),
            lifecycle_tags: LifecycleTags::default(),
            default_grace: DEFAULT_GRACE,
            default_plan: psa_models::plans::DEFAULT_PLAN.to_owned(),
            stripe_webhook_secret: None,
            import_max_bytes: DEFAULT_IMPORT_MAX_BYTES,
        }
    }
}

impl Settings {
    /// The lifecycle settings with the management tenant `mgmt`.
    pub fn lifecycle(&self, mgmt: TenantId) -> psa_models::lifecycle::Settings {
        psa_models::lifecycle::Settings {
            management_tenant_id: mgmt,
            customer_tag: self.customer_tag.clone(),
            tags: self.lifecycle_tags.clone(),
        }
    }

    /// The workers' customer tracking settings.
    pub fn tracking(&self) -> psa_workflows::TrackingSettings {
        psa_workflows::TrackingSettings {
            enabled: self.customer_tracking,
            management_tenant_id: self.management_tenant_id,
            tag_name: self.customer_tag.clone(),
        }
    }
}
