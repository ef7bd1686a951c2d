-- The tenant's lifecycle: active, suspended, canceled (pending deletion); deletion removes it.
-- docs/operations.md ("The tenant lifecycle") describes the states and the rules.

ALTER TABLE tenants
    ADD COLUMN status            text NOT NULL DEFAULT 'active'
                                     CONSTRAINT tenants_status_check
                                     CHECK (status IN ('active', 'suspended', 'canceled')),
    ADD COLUMN status_reason     text CONSTRAINT tenants_status_reason_check
                                     CHECK (status_reason IS NULL OR length(status_reason) BETWEEN 1 AND 500),
    ADD COLUMN status_changed_at timestamptz;
-- The management tenant never leaves `active` (the models refuse; this is the last line).
ALTER TABLE tenants ADD CONSTRAINT tenants_management_active_check
    CHECK (NOT is_management OR status = 'active');
CREATE INDEX tenants_status ON tenants (status, created_at, tenant) WHERE status <> 'active';

-- The API changes a tenant's status (management callers only, checked in the API) in the
-- tenant's own confined transaction.
GRANT UPDATE (status, status_reason, status_changed_at) ON tenants TO psa_app;

-- A deletion: one row per cancel, kept after the tenant is gone (a platform table like
-- tenant_provisioning: no `tenant` column, no foreign key, not visible to `psa_app`). Its
-- workflow waits for `delete_after`, a confirmation or a restore.
CREATE TABLE tenant_deletions (
    workflow_id    text PRIMARY KEY CONSTRAINT tenant_deletions_workflow_id_check
                       CHECK (length(workflow_id) BETWEEN 1 AND 255),
    tenant_id      uuid NOT NULL,
    tenant_name    text NOT NULL,
    reason         text NOT NULL,
    requested_by   text NOT NULL,
    requested_at   timestamptz NOT NULL DEFAULT now(),
    delete_after   timestamptz NOT NULL,
    -- pending: waiting for the deadline; restored: the tenant was restored before it; deleted.
    status         text NOT NULL DEFAULT 'pending' CONSTRAINT tenant_deletions_status_check
                       CHECK (status IN ('pending', 'restored', 'deleted')),
    -- What the cancel changed (status before it, the customer company's and contacts' state),
    -- so that a restore puts back exactly that.
    undo           jsonb NOT NULL DEFAULT '{}',
    -- When its workflow was started (NULL: the worker's sweeper starts it).
    started_at     timestamptz,
    confirmed_by   text,
    -- The export taken before deletion (minted at the cancel).
    export_id      uuid NOT NULL,
    -- Rows removed, by table, when it was deleted.
    deleted_rows   jsonb,
    ended_at       timestamptz,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- At most one pending deletion per tenant.
CREATE UNIQUE INDEX tenant_deletions_pending ON tenant_deletions (tenant_id) WHERE status = 'pending';
CREATE INDEX tenant_deletions_tenant ON tenant_deletions (tenant_id, requested_at DESC);

-- An export of a tenant's data: one archive in the export store (PSA_EXPORT_DIR or S3), a row
-- here to find it and its manifest. A platform table too: an export outlives its tenant.
CREATE TABLE tenant_exports (
    export_id     uuid PRIMARY KEY,
    tenant_id     uuid NOT NULL,
    requested_by  text NOT NULL,
    -- `request` (an operator asked), `deletion` (taken before a deletion).
    purpose       text NOT NULL CONSTRAINT tenant_exports_purpose_check
                      CHECK (purpose IN ('request', 'deletion')),
    status        text NOT NULL DEFAULT 'running' CONSTRAINT tenant_exports_status_check
                      CHECK (status IN ('running', 'completed', 'failed')),
    -- The archive's key in the store.
    location      text,
    bytes         bigint,
    manifest      jsonb,
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);
CREATE INDEX tenant_exports_tenant ON tenant_exports (tenant_id, created_at DESC);

GRANT SELECT, INSERT, UPDATE ON tenant_deletions, tenant_exports TO psa_api;

-- A suspended or canceled tenant's credentials are refused: the function says whose tenant is
-- not active, and the API answers 403 `tenant_inactive` (the credential stays valid, so
-- reactivation gives access back without new ones).
DROP FUNCTION psa_authenticate(text, bytea, double precision);
CREATE FUNCTION psa_authenticate(kind text, digest bytea, session_idle_seconds double precision)
RETURNS TABLE (tenant uuid, user_id uuid, credential_id uuid, client_portal boolean, stale boolean,
               tenant_status text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT s.tenant, s.user_id, s.session_id, u.user_type = 'client',
           s.last_seen_at < now() - interval '1 minute', t.status
    FROM sessions s JOIN users u ON u.tenant = s.tenant AND u.user_id = s.user_id
                    JOIN tenants t ON t.tenant = s.tenant
    WHERE kind = 'session' AND s.token_hash = digest AND s.revoked_at IS NULL
      AND s.expires_at > now()
      AND s.last_seen_at > now() - make_interval(secs => session_idle_seconds)
      AND NOT u.is_inactive
    UNION ALL
    SELECT k.tenant, k.user_id, k.api_key_id, u.user_type = 'client',
           k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute', t.status
    FROM api_keys k JOIN users u ON u.tenant = k.tenant AND u.user_id = k.user_id
                    JOIN tenants t ON t.tenant = k.tenant
    WHERE kind = 'api_key' AND k.key_hash = digest AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now()) AND NOT u.is_inactive
$$;
REVOKE ALL ON FUNCTION psa_authenticate(text, bytea, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_authenticate(text, bytea, double precision) TO psa_api;

-- Operators of the management tenant change tenants' status (`tenant:update`) and cancel and
-- delete them (`tenant:delete`): the permissions join `tenant:create` and `tenant:read` in every
-- tenant that has those, granted to the roles that may create tenants.
INSERT INTO permissions (tenant, resource, action, description, msp, client)
SELECT p.tenant, 'tenant', a.action, 'tenant ' || a.action, true, false
FROM permissions p CROSS JOIN (VALUES ('update'), ('delete')) a (action)
WHERE p.resource = 'tenant' AND p.action = 'create' AND p.msp
ON CONFLICT DO NOTHING;
INSERT INTO role_permissions (tenant, role_id, permission_id)
SELECT rp.tenant, rp.role_id, n.permission_id
FROM role_permissions rp
JOIN permissions p ON p.tenant = rp.tenant AND p.permission_id = rp.permission_id
JOIN permissions n ON n.tenant = rp.tenant AND n.resource = 'tenant' AND n.action IN ('update', 'delete') AND n.msp
WHERE p.resource = 'tenant' AND p.action = 'create' AND p.msp
ON CONFLICT DO NOTHING;

-- The management tenant, found by index (the tenant list and provisioning look it up).
CREATE INDEX tenants_management ON tenants (tenant) WHERE is_management;

-- The tenant list, for the CLI (owner) and for the API's management callers (the API's login
-- role, which sees no tenant but its caller's otherwise): one pass in the order of the
-- (created_at, tenant) index, each tenant's customer company, tag and run found by index (the
-- customer company through the partial unique index on properties.tenant_id, whose predicate
-- the join repeats), stopping at the page's end: a page costs the same at any depth and with
-- any number of tenants (bench/scale.sh).
CREATE FUNCTION psa_tenant_list(tag_name text, after_created timestamptz, after_tenant uuid,
                                name_pattern text, created_from timestamptz,
                                created_until timestamptz, tracking text, for_status text,
                                max_rows integer)
RETURNS TABLE (tenant_id uuid, name text, created_at timestamptz, is_management boolean,
               status text, customer_company_id uuid, customer_tagged boolean,
               workflow_id text, provisioning_status text, skip_customer_tracking boolean,
               customer_tracking text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT t.tenant, t.company_name, t.created_at, t.is_management, t.status,
           c.company_id, coalesce(g.tagged, false),
           p.workflow_id, p.status, p.skip_customer_tracking, s.customer_tracking
    FROM tenants t
    -- LIMIT 1 (there is at most one) keeps this a lookup per tenant: flattened into a join, the
    -- planner, unaware that the management tenant holds most companies, read them all per page.
    LEFT JOIN LATERAL (SELECT company_id FROM companies
                       WHERE tenant = (SELECT tenant FROM tenants WHERE is_management LIMIT 1)
                         AND properties ? 'tenant_id'
                         AND properties ->> 'tenant_id' = t.tenant::text LIMIT 1) c ON true
    LEFT JOIN LATERAL (SELECT true AS tagged FROM tag_mappings m JOIN tag_definitions d
                         ON d.tenant = m.tenant AND d.tag_id = m.tag_id
                       WHERE m.tenant = (SELECT tenant FROM tenants WHERE is_management LIMIT 1)
                         AND m.tagged_id = c.company_id AND d.tag_text = tag_name LIMIT 1) g ON true
    LEFT JOIN LATERAL (SELECT r.workflow_id, r.status, r.skip_customer_tracking
                       FROM tenant_provisioning r WHERE r.tenant_id = t.tenant
                       ORDER BY r.requested_at DESC LIMIT 1) p ON true
    CROSS JOIN LATERAL (SELECT CASE WHEN t.is_management THEN 'management'
                               WHEN c.company_id IS NULL AND p.skip_customer_tracking THEN 'skipped'
                               WHEN c.company_id IS NULL THEN 'untracked'
                               WHEN g.tagged THEN 'tracked' ELSE 'partial' END
                          AS customer_tracking) s
    -- Bounds are always present (open ones as +-infinity), so the plan, made before the
    -- values are known, reads the index from the cursor on.
    WHERE (t.created_at, t.tenant) > (coalesce(after_created, '-infinity'),
                                      coalesce(after_tenant, '00000000-0000-0000-0000-000000000000'))
      AND t.created_at >= coalesce(created_from, '-infinity')
      AND t.created_at < coalesce(created_until, 'infinity')
      AND (name_pattern IS NULL OR t.company_name ILIKE name_pattern)
      AND (tracking IS NULL OR s.customer_tracking = tracking)
      AND (for_status IS NULL OR t.status = for_status)
    ORDER BY t.created_at, t.tenant
    LIMIT max_rows
$$;
REVOKE ALL ON FUNCTION psa_tenant_list(text, timestamptz, uuid, text, timestamptz, timestamptz, text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_tenant_list(text, timestamptz, uuid, text, timestamptz, timestamptz, text, text, integer) TO psa_api;
