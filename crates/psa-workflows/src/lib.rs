//! The tenant creation workflow on Temporal.
//!
//! A new tenant is created with its own company, onboarding seeds, admin user and settings (the
//! core chain), while, in parallel, it is recorded as a customer in the management tenant: a
//! company named after it, its admin as a contact, and a tag (customer tracking). Tracking never
//! fails the tenant: its failures are recorded and repaired by `psa customers reconcile`. A core
//! step that fails for good rolls everything back. See docs/workflow.md.
//!
//! The `tenant_deletion` workflow ([`deletion`]) ends a canceled tenant's life: an export, the
//! grace period, then the deletion (docs/operations.md, "The tenant lifecycle").
//!
//! The `tenant_trial` and `tenant_payment_grace` workflows ([`deadlines`]) keep a subscription's
//! deadlines: a trial's reminder and end, a payment's grace.
//!
//! The worker also dispatches webhook deliveries of the platform's events ([`webhooks`],
//! docs/events.md).

pub mod activities;
pub mod client;
pub mod deadlines;
pub mod deletion;
pub mod dev_server;
pub mod failure;
pub mod metrics;
pub mod reconcile;
pub mod secret;
pub mod sweep;
pub mod types;
pub mod webhooks;
pub mod worker;
pub mod workflow;

pub use types::*;
