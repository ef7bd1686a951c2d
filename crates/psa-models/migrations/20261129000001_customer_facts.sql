-- The customers page and `GET /api/v1/customers`: for a page of tenants, what business staff
-- report on besides the tenant list's columns: the licence count, the tenant's active staff
-- users (not deactivated, invitation accepted), and the admin contact on its customer company in the management tenant. A definer
-- function because the API's role reads one tenant at a time (row-level security); the API
-- calls it only for a management caller with `tenant:read`, like psa_tenant_list.
CREATE FUNCTION psa_customer_facts(tenant_ids uuid[], customer_company_ids uuid[])
RETURNS TABLE (tenant_id uuid, licensed_user_count integer, active_users bigint,
               admin_contact_id uuid, admin_contact_name text, admin_contact_email text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
    SELECT t.tenant, t.licensed_user_count,
           (SELECT count(*) FROM users u
             WHERE u.tenant = t.tenant AND NOT u.is_inactive AND u.user_type = 'internal'
               AND u.hashed_password IS NOT NULL),
           c.contact_name_id, c.full_name, c.email
    FROM unnest(tenant_ids, customer_company_ids) AS ids(tenant, company)
    JOIN tenants t ON t.tenant = ids.tenant
    LEFT JOIN LATERAL (
        SELECT k.contact_name_id, k.full_name, k.email FROM contacts k
        WHERE k.tenant = (SELECT tenant FROM tenants WHERE is_management LIMIT 1)
          AND k.company_id = ids.company
        ORDER BY k.is_client_admin DESC, k.created_at, k.contact_name_id LIMIT 1) c ON true
$fn$;
REVOKE ALL ON FUNCTION psa_customer_facts(uuid[], uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_customer_facts(uuid[], uuid[]) TO psa_api;

-- The audit log page reads a tenant's log newest first.
CREATE INDEX audit_log_tenant_created ON audit_log (tenant, created_at DESC, audit_id DESC);
