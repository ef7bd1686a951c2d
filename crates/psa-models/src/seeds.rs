//! Onboarding seeds: what every new tenant starts with (the reference's
//! `ee/server/seeds/onboarding/psa/01..05`): roles, permissions, role permissions, the default
//! tax region and its 0% "Non-taxable" rate.
//!
//! Every insert is `ON CONFLICT DO NOTHING` on a natural key, so running the seeds twice (a
//! retried activity) adds nothing. Unlike the reference, role permissions are not deleted and
//! re-inserted: missing grants are added and grants an operator added are kept.

use serde::Serialize;
use sqlx::PgConnection;

use crate::{Result, TenantId};

/// `(name, description, msp, client)`.
pub const ROLES: &[(&str, &str, bool, bool)] = &[
    ("Admin", "Full system administrator access", true, false),
    (
        "Finance",
        "Financial operations and billing management",
        true,
        false,
    ),
    (
        "Technician",
        "Technical support and service delivery",
        true,
        false,
    ),
    (
        "Project Manager",
        "Project oversight and team coordination",
        true,
        false,
    ),
    (
        "Dispatcher",
        "Scheduling and dispatch operations",
        true,
        false,
    ),
    ("Admin", "Client portal administrator", false, true),
    (
        "Finance",
        "Client billing and financial visibility",
        false,
        true,
    ),
    ("User", "Standard client portal user", false, true),
];

const CRUD: &[&str] = &["create", "read", "update", "delete"];

/// MSP permissions: `(resource, actions)`.
const MSP_PERMISSIONS: &[(&str, &[&str])] = &[
    ("asset", CRUD),
    ("billing", CRUD),
    ("client", CRUD),
    ("contact", CRUD),
    (
        "credit",
        &[
            "create",
            "read",
            "update",
            "delete",
            "transfer",
            "reconcile",
        ],
    ),
    ("document", CRUD),
    ("extension", &["read", "write"]),
    ("workflow", &["read", "view", "manage", "publish", "admin"]),
    ("teams_integration", &["read"]),
    ("service", CRUD),
    ("storage", &["read", "write"]),
    (
        "invoice",
        &[
            "create", "read", "update", "delete", "generate", "finalize", "send", "void",
        ],
    ),
    ("profile", CRUD),
    ("project", CRUD),
    ("reports", CRUD),
    ("project_task", CRUD),
    ("tag", CRUD),
    ("technician_dispatch", CRUD),
    ("ticket", CRUD),
    ("timeentry", CRUD),
    (
        "timesheet",
        &[
            "create", "read", "update", "delete", "read_all", "submit", "approve", "reverse",
        ],
    ),
    (
        "user",
        &[
            "create",
            "read",
            "update",
            "delete",
            "invite",
            "reset_password",
        ],
    ),
    ("user_schedule", CRUD),
    ("ticket_settings", CRUD),
    ("user_settings", CRUD),
    ("system_settings", CRUD),
    ("security_settings", CRUD),
    ("timeentry_settings", CRUD),
    ("billing_settings", CRUD),
    ("account_management", &["read", "update", "delete"]),
    ("sla_policy", CRUD),
    ("settings", CRUD),
    // Ours: provisioning tenants and their lifecycle (update: suspend, reactivate, restore,
    // export; delete: cancel, delete), allowed to callers of the management tenant only.
    ("tenant", &["create", "read", "update", "delete", "support"]),
    // Ours: the webhook endpoints that carry the platform's events (management tenant only).
    ("webhook", CRUD),
    // Ours: the tenant's single sign-on (its provider, verified domains), for its Admin.
    ("sso", &["manage"]),
    // Ours: the platform's plans (management tenant only).
    ("plan", &["read", "manage"]),
];

/// Client-portal permissions. (The reference marked `settings` as both msp and client in one row,
/// which its own role-permission lookup could then not find for client roles; here each scope has
/// its own row.)
const CLIENT_PERMISSIONS: &[(&str, &[&str])] = &[
    ("billing", &["create", "read", "update"]),
    ("client", CRUD),
    ("project", CRUD),
    ("ticket", &["create", "read", "update"]),
    ("time_management", CRUD),
    (
        "user",
        &["create", "read", "update", "delete", "reset_password"],
    ),
    ("settings", CRUD),
    ("document", &["create", "read", "update"]),
];

/// Every seeded permission as `(resource, action, msp)`; `client` is `!msp`.
pub fn permissions() -> Vec<(&'static str, &'static str, bool)> {
    let scoped = |list: &'static [(&'static str, &'static [&'static str])], msp: bool| {
        list.iter()
            .flat_map(move |(r, actions)| actions.iter().map(move |a| (*r, *a, msp)))
    };
    scoped(MSP_PERMISSIONS, true)
        .chain(scoped(CLIENT_PERMISSIONS, false))
        .collect()
}

/// The grants of each role but the MSP Admin (who gets every MSP permission):
/// `(role name, role is msp, ["resource:action", ...])`, permissions in the role's own scope.
pub const ROLE_GRANTS: &[(&str, bool, &[&str])] = &[
    (
        "Finance",
        true,
        &[
            "asset:read",
            "billing:create",
            "billing:read",
            "billing:update",
            "billing:delete",
            "client:create",
            "client:read",
            "client:update",
            "client:delete",
            "contact:create",
            "contact:read",
            "contact:update",
            "contact:delete",
            "credit:create",
            "credit:read",
            "credit:update",
            "credit:delete",
            "credit:transfer",
            "credit:reconcile",
            "document:create",
            "document:read",
            "document:update",
            "document:delete",
            "invoice:create",
            "invoice:read",
            "invoice:update",
            "invoice:delete",
            "invoice:generate",
            "invoice:finalize",
            "invoice:send",
            "invoice:void",
            "profile:create",
            "profile:read",
            "profile:update",
            "project:read",
            "project:update",
            "project_task:read",
            "project_task:update",
            "reports:read",
            "tag:create",
            "tag:read",
            "technician_dispatch:read",
            "ticket:read",
            "ticket:update",
            "timeentry:create",
            "timeentry:read",
            "timeentry:update",
            "timeentry:delete",
            "timesheet:read",
            "timesheet:read_all",
            "timesheet:submit",
            "user:read",
            "user_schedule:read",
            "billing_settings:create",
            "billing_settings:read",
            "billing_settings:update",
            "billing_settings:delete",
        ],
    ),
    (
        "Technician",
        true,
        &[
            "asset:create",
            "asset:read",
            "asset:update",
            "client:read",
            "client:delete",
            "contact:read",
            "contact:delete",
            "document:create",
            "document:read",
            "document:update",
            "profile:read",
            "profile:update",
            "project:read",
            "project_task:create",
            "project_task:read",
            "project_task:update",
            "reports:read",
            "tag:create",
            "tag:read",
            "tag:update",
            "technician_dispatch:read",
            "ticket:create",
            "ticket:read",
            "ticket:update",
            "timeentry:create",
            "timeentry:read",
            "timeentry:update",
            "timesheet:read",
            "timesheet:update",
            "timesheet:read_all",
            "timesheet:submit",
            "user_schedule:read",
            "ticket_settings:read",
            "sla_policy:read",
        ],
    ),
    (
        "Project Manager",
        true,
        &[
            "asset:read",
            "billing:read",
            "client:create",
            "client:read",
            "client:update",
            "contact:create",
            "contact:read",
            "contact:update",
            "document:create",
            "document:read",
            "document:update",
            "invoice:read",
            "profile:read",
            "profile:update",
            "project:create",
            "project:read",
            "project:update",
            "project:delete",
            "project_task:create",
            "project_task:read",
            "project_task:update",
            "project_task:delete",
            "reports:read",
            "tag:create",
            "tag:read",
            "tag:update",
            "technician_dispatch:read",
            "ticket:create",
            "ticket:read",
            "ticket:update",
            "timeentry:create",
            "timeentry:read",
            "timeentry:update",
            "timesheet:read",
            "timesheet:update",
            "timesheet:read_all",
            "timesheet:submit",
            "timesheet:approve",
            "timesheet:reverse",
            "user:read",
            "user:invite",
            "user_schedule:read",
            "user_settings:read",
            "billing_settings:read",
            "sla_policy:read",
            "sla_policy:update",
        ],
    ),
    (
        "Dispatcher",
        true,
        &[
            "asset:read",
            "client:read",
            "contact:read",
            "document:read",
            "profile:read",
            "project:read",
            "project_task:read",
            "reports:read",
            "tag:create",
            "tag:read",
            "tag:update",
            "technician_dispatch:create",
            "technician_dispatch:read",
            "technician_dispatch:update",
            "ticket:create",
            "ticket:read",
            "ticket:update",
            "timeentry:read",
            "timesheet:read",
            "user:read",
            "user_schedule:create",
            "user_schedule:read",
            "user_schedule:update",
            "user_settings:read",
        ],
    ),
    (
        "Admin",
        false,
        &[
            "billing:create",
            "billing:read",
            "billing:update",
            "client:create",
            "client:read",
            "client:update",
            "client:delete",
            "project:create",
            "project:read",
            "project:update",
            "project:delete",
            "ticket:create",
            "ticket:read",
            "ticket:update",
            "time_management:create",
            "time_management:read",
            "time_management:update",
            "time_management:delete",
            "user:create",
            "user:read",
            "user:update",
            "user:delete",
            "user:reset_password",
            "settings:create",
            "settings:read",
            "settings:update",
            "settings:delete",
            "document:create",
            "document:read",
            "document:update",
        ],
    ),
    (
        "Finance",
        false,
        &[
            "billing:read",
            "client:create",
            "client:read",
            "client:update",
            "project:read",
            "ticket:create",
            "ticket:read",
            "ticket:update",
            "time_management:read",
            "user:read",
            "settings:read",
            "document:create",
            "document:read",
            "document:update",
        ],
    ),
    (
        "User",
        false,
        &[
            "client:create",
            "client:read",
            "client:update",
            "project:read",
            "ticket:create",
            "ticket:read",
            "ticket:update",
            "time_management:read",
            "document:create",
            "document:read",
            "document:update",
        ],
    ),
];

/// The default tax region's code.
pub const DEFAULT_REGION: &str = "DEFAULT";

/// How many rows each seed inserted (0 everywhere on a second run).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SeedReport {
    pub roles: u64,
    pub permissions: u64,
    pub role_permissions: u64,
    pub tax_regions: u64,
    pub tax_rates: u64,
}

/// Runs the onboarding seeds for `tenant`.
#[tracing::instrument(skip_all, fields(%tenant))]
pub async fn run(conn: &mut PgConnection, tenant: TenantId) -> Result<SeedReport> {
    let mut report = SeedReport::default();

    let (names, descriptions, msp, client): (Vec<_>, Vec<_>, Vec<_>, Vec<_>) = ROLES.iter().fold(
        Default::default(),
        |(mut n, mut d, mut m, mut c), (name, desc, is_msp, is_client)| {
            n.push(*name);
            d.push(*desc);
            m.push(*is_msp);
            c.push(*is_client);
            (n, d, m, c)
        },
    );
    report.roles = sqlx::query(
        "INSERT INTO roles (tenant, role_name, description, msp, client) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::bool[], $5::bool[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&names)
    .bind(&descriptions)
    .bind(&msp)
    .bind(&client)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    let perms = permissions();
    let resources: Vec<&str> = perms.iter().map(|p| p.0).collect();
    let actions: Vec<&str> = perms.iter().map(|p| p.1).collect();
    let msp: Vec<bool> = perms.iter().map(|p| p.2).collect();
    let descriptions: Vec<String> = perms
        .iter()
        .map(|(r, a, m)| format!("{a} {r}{}", if *m { "" } else { " (client portal)" }))
        .collect();
    report.permissions = sqlx::query(
        "INSERT INTO permissions (tenant, resource, action, msp, client, description) \
         SELECT $1, g.resource, g.action, g.msp, NOT g.msp, g.description \
         FROM UNNEST($2::text[], $3::text[], $4::bool[], $5::text[]) AS g(resource, action, msp, description) \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&resources)
    .bind(&actions)
    .bind(&msp)
    .bind(&descriptions)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    report.role_permissions = sqlx::query(
        "INSERT INTO role_permissions (tenant, role_id, permission_id) \
         SELECT $1, r.role_id, p.permission_id FROM roles r JOIN permissions p \
           ON p.tenant = r.tenant AND p.msp AND NOT p.client \
         WHERE r.tenant = $1 AND r.role_name = 'Admin' AND r.msp AND NOT r.client \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    let mut role_names = Vec::new();
    let mut role_msp = Vec::new();
    let mut g_resources = Vec::new();
    let mut g_actions = Vec::new();
    for (role, is_msp, grants) in ROLE_GRANTS {
        for grant in *grants {
            let (resource, action) = grant.split_once(':').expect("resource:action");
            role_names.push(*role);
            role_msp.push(*is_msp);
            g_resources.push(resource);
            g_actions.push(action);
        }
    }
    report.role_permissions += sqlx::query(
        "INSERT INTO role_permissions (tenant, role_id, permission_id) \
         SELECT $1, r.role_id, p.permission_id \
         FROM UNNEST($2::text[], $3::bool[], $4::text[], $5::text[]) AS g(role_name, msp, resource, action) \
         JOIN roles r ON r.tenant = $1 AND r.role_name = g.role_name AND r.msp = g.msp AND r.client = NOT g.msp \
         JOIN permissions p ON p.tenant = $1 AND p.resource = g.resource AND p.action = g.action \
              AND p.msp = g.msp AND p.client = NOT g.msp \
         ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(&role_names)
    .bind(&role_msp)
    .bind(&g_resources)
    .bind(&g_actions)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    report.tax_regions = sqlx::query(
        "INSERT INTO tax_regions (tenant, region_code, region_name, is_active) \
         VALUES ($1, $2, 'Default Tax Region', true) ON CONFLICT DO NOTHING",
    )
    .bind(tenant)
    .bind(DEFAULT_REGION)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    report.tax_rates = sqlx::query(
        "INSERT INTO tax_rates (tenant, tax_percentage, description, start_date, region_code, is_active) \
         SELECT $1, 0, 'Non-taxable', current_date, $2, true \
         WHERE NOT EXISTS (SELECT 1 FROM tax_rates WHERE tenant = $1 AND tax_percentage = 0 \
                           AND description = 'Non-taxable')",
    )
    .bind(tenant)
    .bind(DEFAULT_REGION)
    .execute(&mut *conn)
    .await?
    .rows_affected();

    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_grant_names_a_seeded_permission_and_role() {
        let perms: HashSet<_> = permissions().into_iter().collect();
        for (role, msp, grants) in ROLE_GRANTS {
            assert!(ROLES.iter().any(|r| r.0 == *role && r.2 == *msp), "{role}");
            for g in *grants {
                let (r, a) = g.split_once(':').unwrap();
                assert!(perms.contains(&(r, a, *msp)), "{role}: {g}");
            }
        }
    }

    #[test]
    fn no_duplicates() {
        let perms = permissions();
        assert_eq!(perms.iter().collect::<HashSet<_>>().len(), perms.len());
        let roles: HashSet<_> = ROLES.iter().map(|r| (r.0, r.2, r.3)).collect();
        assert_eq!(roles.len(), ROLES.len());
    }
}
