-- The customers page's filters by subscription: a plan, the subscription's status, every seat
-- taken, a trial ending before some time. The tenant list gains them (the old signature goes).
DROP FUNCTION psa_tenant_list(text, timestamptz, uuid, text, timestamptz, timestamptz, text,
                              text, integer);
CREATE FUNCTION psa_tenant_list(tag_name text, after_created timestamptz,
                                after_tenant uuid, name_pattern text,
                                created_from timestamptz, created_until timestamptz,
                                tracking text, for_status text, max_rows integer,
                                for_plan text, for_subscription text, seats_full boolean,
                                trial_ends_before timestamptz)
RETURNS TABLE (tenant_id uuid, name text, created_at timestamptz, is_management boolean,
               status text, customer_company_id uuid, customer_tagged boolean,
               workflow_id text, provisioning_status text, skip_customer_tracking boolean,
               customer_tracking text)
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
DECLARE
    q text;
BEGIN
    IF tracking IS NULL THEN
        -- A page: each tenant's customer company, tag and run found by index (LIMIT 1: there
        -- is at most one), for the page's tenants only.
        q := $q$
        SELECT t.tenant, t.company_name, t.created_at, t.is_management, t.status,
               c.company_id, coalesce(g.tagged, false),
               p.workflow_id, p.status, p.skip_customer_tracking, s.customer_tracking
        FROM tenants t
        LEFT JOIN LATERAL (SELECT company_id FROM companies
                           WHERE tenant = (SELECT tenant FROM tenants WHERE is_management LIMIT 1)
                             AND properties ? 'tenant_id'
                             AND properties ->> 'tenant_id' = t.tenant::text LIMIT 1) c ON true
        LEFT JOIN LATERAL (SELECT true AS tagged FROM tag_mappings m JOIN tag_definitions d
                             ON d.tenant = m.tenant AND d.tag_id = m.tag_id
                           WHERE m.tenant = (SELECT tenant FROM tenants WHERE is_management LIMIT 1)
                             AND m.tagged_id = c.company_id AND d.tag_text = $1 LIMIT 1) g ON true
        LEFT JOIN LATERAL (SELECT r.workflow_id, r.status, r.skip_customer_tracking
                           FROM tenant_provisioning r WHERE r.tenant_id = t.tenant
                           ORDER BY r.requested_at DESC LIMIT 1) p ON true
        CROSS JOIN LATERAL (SELECT CASE WHEN t.is_management THEN 'management'
                                   WHEN c.company_id IS NULL AND p.skip_customer_tracking THEN 'skipped'
                                   WHEN c.company_id IS NULL THEN 'untracked'
                                   WHEN g.tagged THEN 'tracked' ELSE 'partial' END
                              AS customer_tracking) s
        WHERE true$q$;
    ELSE
        -- A tracking filter must look at every tenant's customer records: read as whole sets
        -- and hashed (materialized, so the planner cannot turn them back into a lookup per
        -- tenant, or a hash rebuilt per tenant).
        q := $q$
        WITH customers AS MATERIALIZED (
            SELECT (c.properties ->> 'tenant_id')::uuid AS for_tenant, c.company_id,
                   EXISTS (SELECT 1 FROM tag_mappings m JOIN tag_definitions d
                             ON d.tenant = m.tenant AND d.tag_id = m.tag_id
                           WHERE m.tenant = c.tenant AND m.tagged_id = c.company_id
                             AND d.tag_text = $1) AS tagged
            FROM companies c
            WHERE c.tenant = (SELECT tenant FROM tenants WHERE is_management LIMIT 1)
              AND c.properties ? 'tenant_id'),
        runs AS MATERIALIZED (
            SELECT DISTINCT ON (r.tenant_id) r.tenant_id, r.workflow_id, r.status,
                   r.skip_customer_tracking
            FROM tenant_provisioning r ORDER BY r.tenant_id, r.requested_at DESC)
        SELECT t.tenant, t.company_name, t.created_at, t.is_management, t.status,
               c.company_id, coalesce(c.tagged, false),
               p.workflow_id, p.status, p.skip_customer_tracking, s.customer_tracking
        FROM tenants t
        LEFT JOIN customers c ON c.for_tenant = t.tenant
        LEFT JOIN runs p ON p.tenant_id = t.tenant
        CROSS JOIN LATERAL (SELECT CASE WHEN t.is_management THEN 'management'
                                   WHEN c.company_id IS NULL AND p.skip_customer_tracking THEN 'skipped'
                                   WHEN c.company_id IS NULL THEN 'untracked'
                                   WHEN c.tagged THEN 'tracked' ELSE 'partial' END
                              AS customer_tracking) s
        WHERE s.customer_tracking = $7$q$;
    END IF;
    IF after_created IS NOT NULL THEN
        q := q || ' AND (t.created_at, t.tenant) > ($2, $3)';
    END IF;
    IF name_pattern IS NOT NULL THEN
        q := q || ' AND t.company_name ILIKE $4';
    END IF;
    IF created_from IS NOT NULL THEN
        q := q || ' AND t.created_at >= $5';
    END IF;
    IF created_until IS NOT NULL THEN
        q := q || ' AND t.created_at < $6';
    END IF;
    IF for_status IS NOT NULL THEN
        q := q || ' AND t.status = $8';
    END IF;
    IF for_plan IS NOT NULL THEN
        q := q || ' AND EXISTS (SELECT 1 FROM tenant_subscriptions ss
                                WHERE ss.tenant = t.tenant AND ss.plan_code = $10)';
    END IF;
    IF for_subscription IS NOT NULL THEN
        q := q || ' AND EXISTS (SELECT 1 FROM tenant_subscriptions ss
                                WHERE ss.tenant = t.tenant AND ss.status = $11)';
    END IF;
    IF seats_full THEN
        -- Every seat taken (or more: seats lowered below those in use).
        q := q || ' AND EXISTS (SELECT 1 FROM tenant_subscriptions ss
                                JOIN plans pp ON pp.code = ss.plan_code
                                WHERE ss.tenant = t.tenant
                                  AND coalesce(ss.seats, pp.seat_limit) <=
                                      (SELECT count(*) FROM users u
                                       WHERE u.tenant = t.tenant AND u.user_type = ''internal''
                                         AND NOT u.is_inactive))';
    END IF;
    IF trial_ends_before IS NOT NULL THEN
        q := q || ' AND EXISTS (SELECT 1 FROM tenant_subscriptions ss
                                WHERE ss.tenant = t.tenant AND ss.status = ''trialing''
                                  AND ss.trial_ends_at < $13)';
    END IF;
    q := q || ' ORDER BY t.created_at, t.tenant LIMIT $9';
    RETURN QUERY EXECUTE q USING tag_name, after_created, after_tenant, name_pattern,
                                 created_from, created_until, tracking, for_status, max_rows,
                                 for_plan, for_subscription, seats_full, trial_ends_before;
END
$fn$;
REVOKE ALL ON FUNCTION psa_tenant_list(text, timestamptz, uuid, text, timestamptz, timestamptz,
    text, text, integer, text, text, boolean, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_tenant_list(text, timestamptz, uuid, text, timestamptz, timestamptz,
    text, text, integer, text, text, boolean, timestamptz) TO psa_api;
