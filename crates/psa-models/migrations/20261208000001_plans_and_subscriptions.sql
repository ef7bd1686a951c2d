-- Plans and each tenant's subscription to one: what it may use (seats), whether it is trying
-- the platform out, and what the billing system last said.

-- The platform's plans (a platform table: no tenant, managed from the management tenant).
CREATE TABLE plans (
    code             text PRIMARY KEY CHECK (code ~ '^[a-z0-9][a-z0-9-]{0,62}$'),
    name             text NOT NULL CHECK (char_length(btrim(name)) BETWEEN 1 AND 100),
    -- The most seats a subscription to it may have; NULL: unlimited.
    seat_limit       integer CHECK (seat_limit IS NULL OR seat_limit BETWEEN 1 AND 1000000),
    -- Days a new subscription tries it out before paying; 0: no trial.
    trial_days       integer NOT NULL DEFAULT 0 CHECK (trial_days BETWEEN 0 AND 365),
    features         text[] NOT NULL DEFAULT '{}',
    -- The billing system's prices that mean this plan (Stripe's price ids).
    billing_price_ids text[] NOT NULL DEFAULT '{}',
    -- A retired plan keeps its tenants but takes no new ones.
    active           boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- The management tenant's callers make and change plans (outside any tenant's context).
GRANT SELECT, INSERT, UPDATE ON plans TO psa_api;

-- A tenant's own transaction (as psa_app, which reaches tenant tables only) reads its plan's name
-- and seat limit through this: the platform's reference data, nothing of another tenant.
CREATE FUNCTION psa_plan(for_code text) RETURNS TABLE (name text, seat_limit integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT p.name, p.seat_limit FROM plans p WHERE p.code = for_code
$$;
REVOKE ALL ON FUNCTION psa_plan(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_plan(text) TO psa_app, psa_api;

-- Every installation starts with one plan, unlimited and without a trial: what tenants had
-- before plans existed (PSA_DEFAULT_PLAN names it until an operator makes others).
INSERT INTO plans (code, name) VALUES ('standard', 'Standard');

CREATE TABLE tenant_subscriptions (
    tenant                   uuid PRIMARY KEY REFERENCES tenants (tenant) ON DELETE CASCADE,
    plan_code                text NOT NULL REFERENCES plans (code),
    status                   text NOT NULL DEFAULT 'active'
        CHECK (status IN ('trialing', 'active', 'past_due', 'canceled')),
    -- The seats bought; NULL: as many as the plan allows.
    seats                    integer CHECK (seats IS NULL OR seats >= 1),
    trial_ends_at            timestamptz,
    current_period_end       timestamptz,
    past_due_since           timestamptz,
    billing_customer_id      text CHECK (char_length(billing_customer_id) <= 255),
    billing_subscription_id  text CHECK (char_length(billing_subscription_id) <= 255),
    -- The `created` of the last billing event applied: an older one arriving late is not.
    billing_event_at         timestamptz,
    created_at               timestamptz NOT NULL DEFAULT now(),
    updated_at               timestamptz NOT NULL DEFAULT now(),
    CHECK (status <> 'trialing' OR trial_ends_at IS NOT NULL)
);
CREATE UNIQUE INDEX tenant_subscriptions_billing
    ON tenant_subscriptions (tenant, billing_subscription_id)
    WHERE billing_subscription_id IS NOT NULL;
ALTER TABLE tenant_subscriptions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_subscriptions TO psa_app
    USING (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON tenant_subscriptions TO psa_app;

-- Every customer tenant gets its subscription: the standard plan, active, its licence count as
-- its seats (the reference's tenants.licensed_user_count mirrors it from now on).
INSERT INTO tenant_subscriptions (tenant, plan_code, status, seats)
SELECT tenant, 'standard', 'active', nullif(greatest(licensed_user_count, 0), 0)
FROM tenants WHERE NOT is_management;

-- Plans are managed from the management tenant (`plan:read`, `plan:manage`; the API allows them
-- to management callers only), granted to the Admin role of every tenant like the rest of the
-- platform's permissions (new tenants get them from the seeds).
INSERT INTO permissions (tenant, resource, action, description, msp, client)
SELECT DISTINCT p.tenant, 'plan', a.action, 'plan ' || a.action, true, false
FROM permissions p CROSS JOIN (VALUES ('read'), ('manage')) AS a (action)
ON CONFLICT DO NOTHING;
INSERT INTO role_permissions (tenant, role_id, permission_id)
SELECT r.tenant, r.role_id, n.permission_id
FROM roles r
JOIN permissions n ON n.tenant = r.tenant AND n.resource = 'plan'
WHERE r.role_name = 'Admin' AND r.msp
ON CONFLICT DO NOTHING;

-- The customers page's facts grow the plan, its status and the seats (used: staff invited or
-- active, who each take a seat until deactivated; allowed: the seats bought, else the plan's
-- limit, NULL for none).
DROP FUNCTION psa_customer_facts(uuid[], uuid[]);
CREATE FUNCTION psa_customer_facts(tenant_ids uuid[], customer_company_ids uuid[])
RETURNS TABLE (tenant_id uuid, licensed_user_count integer, active_users bigint,
               admin_contact_id uuid, admin_contact_name text, admin_contact_email text,
               plan_code text, subscription_status text, seats_used bigint,
               seats_allowed integer)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
    SELECT t.tenant, t.licensed_user_count,
           (SELECT count(*) FROM users u
             WHERE u.tenant = t.tenant AND NOT u.is_inactive AND u.user_type = 'internal'
               AND u.hashed_password IS NOT NULL),
           c.contact_name_id, c.full_name, c.email,
           s.plan_code, s.status,
           (SELECT count(*) FROM users u
             WHERE u.tenant = t.tenant AND NOT u.is_inactive AND u.user_type = 'internal'),
           coalesce(s.seats, p.seat_limit)
    FROM unnest(tenant_ids, customer_company_ids) AS ids(tenant, company)
    JOIN tenants t ON t.tenant = ids.tenant
    LEFT JOIN tenant_subscriptions s ON s.tenant = t.tenant
    LEFT JOIN plans p ON p.code = s.plan_code
    LEFT JOIN LATERAL (
        SELECT k.contact_name_id, k.full_name, k.email FROM contacts k
        WHERE k.tenant = (SELECT tenant FROM tenants WHERE is_management LIMIT 1)
          AND k.company_id = ids.company
        ORDER BY k.is_client_admin DESC, k.created_at, k.contact_name_id LIMIT 1) c ON true
$fn$;
REVOKE ALL ON FUNCTION psa_customer_facts(uuid[], uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_customer_facts(uuid[], uuid[]) TO psa_api;
