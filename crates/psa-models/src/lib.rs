//! The shared models of psa: companies, contacts, tags, tenants, users and roles.
//!
//! Every operation takes the caller's connection (usually `&mut *transaction`), the tenant it
//! acts in, its input and its options, like the reference's
//! `CompanyModel.createCompany(input, tenant, trx, options)`. The models know nothing of HTTP,
//! Temporal or the calling user: the API checks permissions before calling them, the workflow
//! calls them with no user at all. The caller owns the transaction, so a use-case composes several
//! operations into one commit.

pub mod attention;
pub mod audit;
pub mod auth_tokens;
pub mod billing;
pub mod colors;
pub mod companies;
pub mod contacts;
pub mod credentials;
pub mod customer_record;
pub mod customers;
pub mod db;
pub mod deadlines;
pub mod email_suffix;
mod error;
pub mod events;
pub mod exports;
pub mod identity;
mod ids;
pub mod imports;
pub mod invitations;
pub mod lifecycle;
pub mod mail;
pub mod mfa;
pub mod passkeys;
pub mod password;
pub mod plans;
pub mod provisioning;
pub mod retention;
pub mod search;
pub mod seeds;
pub mod sign_in;
pub mod sso;
pub mod support;
pub mod tags;
pub mod tenants;
pub mod timeline;
pub mod users;
pub mod validate;
pub mod webhooks;

pub use error::{Error, Result};
pub use ids::{CompanyId, ContactId, LocationId, MappingId, RoleId, TagId, TenantId, UserId};

/// The embedded schema migrations, applied by `psa migrate`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");
