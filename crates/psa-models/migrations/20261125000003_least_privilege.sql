-- Least privilege for the API's confined role `psa_app`:
--  * the migrations' bookkeeping is not its business;
--  * it cannot mark a tenant as the management tenant (only `psa management init`, on the
--    owner role, does);
--  * the audit log is append-only for it: a request can add what it did, never rewrite or erase
--    what was done.
REVOKE ALL ON _sqlx_migrations FROM psa_app;
-- Tenants are created and deleted by the worker and the CLI (owner role) only: an INSERT would
-- let a transaction make a second management tenant, a DELETE would cascade the audit log away.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON tenants FROM psa_app;
GRANT UPDATE (company_name, email, phone_number, industry, payment_platform_id, payment_method_id,
              auth_service_id, plan, tax_id_number, licensed_user_count, last_license_update,
              stripe_event_id, updated_at)
    ON tenants TO psa_app;
REVOKE UPDATE, DELETE, TRUNCATE ON audit_log FROM psa_app;
-- Tables added after the first migration get the grants they need explicitly (none so far:
-- tenant_provisioning is a platform table the confined role does not see).
