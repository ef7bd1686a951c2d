-- Support sessions: management staff acting in a tenant as one of its users, with the tenant's
-- consent, for a bounded time, every write audited with both identities in both tenants.

-- The tenant's consent: its administrators can turn support access off.
ALTER TABLE tenants ADD COLUMN support_access text NOT NULL DEFAULT 'allowed'
    CONSTRAINT tenants_support_access_check CHECK (support_access IN ('allowed', 'disabled'));
GRANT UPDATE (support_access) ON tenants TO psa_app;

-- One support session, in the tenant it reaches into (its admins see it; it goes with the
-- tenant). The operator is named as they were when it opened: their tenant (the management
-- tenant), their user and email (a member) or `account@host` (the command line), and the
-- credential they opened it with: the support session holds only while that one does.
CREATE TABLE support_sessions (
    tenant              uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    support_session_id  uuid NOT NULL DEFAULT gen_random_uuid(),
    -- The tenant's user the operator acts as.
    user_id             uuid NOT NULL,
    operator_tenant     uuid NOT NULL,
    operator_user_id    uuid,
    operator_name       text NOT NULL CONSTRAINT support_sessions_operator_name_check
                            CHECK (length(operator_name) BETWEEN 1 AND 320),
    operator_session_id uuid,
    operator_api_key_id uuid,
    reason              text NOT NULL CONSTRAINT support_sessions_reason_check
                            CHECK (length(reason) BETWEEN 1 AND 500),
    started_at          timestamptz NOT NULL DEFAULT now(),
    ends_at             timestamptz NOT NULL,
    ended_at            timestamptz,
    -- Why it ended: `ended` (by the operator, from inside or from the tenant page), `expired`,
    -- `operator_signed_out` (their own session or key ended), `tenant_suspended` (or canceled),
    -- `revoked` (its session was ended another way: the user's "sign out everywhere"),
    -- `access_disabled` (the tenant's administrators turned support access off).
    end_reason          text CONSTRAINT support_sessions_end_reason_check
                            CHECK (end_reason IN ('ended', 'expired', 'operator_signed_out',
                                                  'tenant_suspended', 'revoked',
                                                  'access_disabled')),
    CONSTRAINT support_sessions_pkey PRIMARY KEY (tenant, support_session_id),
    CONSTRAINT support_sessions_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE,
    CONSTRAINT support_sessions_ended_check CHECK ((ended_at IS NULL) = (end_reason IS NULL)),
    CONSTRAINT support_sessions_length_check
        CHECK (ends_at > started_at AND ends_at <= started_at + interval '60 minutes')
);
-- The tenant page's list, newest first; the sweeper's open sessions.
CREATE INDEX support_sessions_tenant_started ON support_sessions (tenant, started_at DESC);
CREATE INDEX support_sessions_open ON support_sessions (ends_at) WHERE ended_at IS NULL;

ALTER TABLE support_sessions ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON support_sessions TO psa_app
    USING (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid);
-- Once opened, only its end is written, once.
GRANT SELECT, INSERT ON support_sessions TO psa_app;
GRANT UPDATE (ended_at, end_reason) ON support_sessions TO psa_app;
CREATE FUNCTION support_sessions_end_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.ended_at IS NOT NULL THEN
        RAISE EXCEPTION 'support session % has ended already', OLD.support_session_id
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER support_sessions_end_once BEFORE UPDATE ON support_sessions
    FOR EACH ROW EXECUTE FUNCTION support_sessions_end_once();

-- The session whose token the operator holds: a session of the user, marked.
ALTER TABLE sessions ADD COLUMN support_session_id uuid;
ALTER TABLE sessions ADD CONSTRAINT sessions_support_session_fkey
    FOREIGN KEY (tenant, support_session_id)
    REFERENCES support_sessions (tenant, support_session_id) ON DELETE CASCADE;
CREATE INDEX sessions_support_session ON sessions (tenant, support_session_id)
    WHERE support_session_id IS NOT NULL;

-- The audit actor `support`: the operator (`actor_id`, their name) acting as a user of the
-- tenant (`actor_user`).
ALTER TABLE audit_log DROP CONSTRAINT audit_log_actor_kind_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_actor_kind_check
    CHECK (actor_kind IN ('user', 'api_key', 'operator', 'platform', 'anonymous', 'support'));
ALTER TABLE audit_log DROP CONSTRAINT audit_log_actor_user_check;
ALTER TABLE audit_log ADD CONSTRAINT audit_log_actor_user_check
    CHECK ((actor_kind IN ('user', 'api_key', 'support')) = (actor_user IS NOT NULL));

-- Every audit row a support session writes in its tenant is copied to the operator's tenant,
-- in the same transaction, naming the tenant: the management tenant's audit has the whole
-- trail without trusting the code path that wrote it. A support row that does not match an open
-- support session of its tenant is refused (the copy itself, in the management tenant, names
-- none of its sessions).
CREATE FUNCTION psa_audit_support_copy() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    s support_sessions;
BEGIN
    SELECT * INTO s FROM support_sessions
    WHERE tenant = NEW.tenant
      AND support_session_id = (NEW.details ->> 'support_session')::uuid;
    IF NOT FOUND THEN
        -- The copy itself (in the operator's tenant, which holds no such session).
        IF EXISTS (SELECT 1 FROM tenants WHERE tenant = NEW.tenant AND is_management) THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'a support audit row names no support session of its tenant'
            USING ERRCODE = 'check_violation';
    END IF;
    -- The row must say what the session is: its operator, its user; the session open, or
    -- ending in this transaction; the operator's tenant the management tenant.
    IF NEW.actor_id IS DISTINCT FROM s.operator_name OR NEW.actor_user IS DISTINCT FROM s.user_id
       OR (s.ended_at IS NOT NULL AND s.ended_at <> now())
       OR NOT EXISTS (SELECT 1 FROM tenants WHERE tenant = s.operator_tenant AND is_management)
    THEN
        RAISE EXCEPTION 'a support audit row does not match its support session'
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO audit_log (tenant, actor, actor_kind, actor_id, actor_user, action,
                           entity_type, entity_id, details, created_at)
    VALUES (s.operator_tenant, 'support:' || s.operator_name || ' as user:' || s.user_id,
            'support', s.operator_name, s.user_id, NEW.action, NEW.entity_type, NEW.entity_id,
            NEW.details || jsonb_build_object('tenant_id', NEW.tenant), now());
    RETURN NULL;
END
$$;
CREATE TRIGGER audit_log_support_copy AFTER INSERT ON audit_log
    FOR EACH ROW WHEN (NEW.actor_kind = 'support')
    EXECUTE FUNCTION psa_audit_support_copy();

-- Whether the operator a support session was opened by still may: their credential not ended,
-- not expired, and (when `idle_seconds` is given: the API knows its idle limit, the worker's
-- sweep does not) not idle. Working in the support session keeps the operator's session alive
-- (`psa_touch_credential` below): it is the operator's activity.
CREATE FUNCTION psa_support_operator_holds(ss support_sessions, idle_seconds double precision)
RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT (ss.operator_session_id IS NULL OR EXISTS (
                SELECT 1 FROM sessions o
                WHERE o.tenant = ss.operator_tenant AND o.session_id = ss.operator_session_id
                  AND o.revoked_at IS NULL AND o.expires_at > now()
                  AND (idle_seconds IS NULL
                       OR o.last_seen_at > now() - make_interval(secs => idle_seconds))))
       AND (ss.operator_api_key_id IS NULL OR EXISTS (
                SELECT 1 FROM api_keys k
                WHERE k.tenant = ss.operator_tenant AND k.api_key_id = ss.operator_api_key_id
                  AND k.revoked_at IS NULL AND (k.expires_at IS NULL OR k.expires_at > now())))
       -- A member still active, still holding `tenant:support` (a role taken away, a user
       -- deactivated: their support sessions end).
       AND (ss.operator_user_id IS NULL OR EXISTS (
                SELECT 1 FROM users u
                JOIN user_roles ur ON ur.tenant = u.tenant AND ur.user_id = u.user_id
                JOIN roles r ON r.tenant = ur.tenant AND r.role_id = ur.role_id AND r.msp
                JOIN role_permissions rp ON rp.tenant = r.tenant AND rp.role_id = r.role_id
                JOIN permissions p ON p.tenant = rp.tenant AND p.permission_id = rp.permission_id
                                  AND p.msp
                WHERE u.tenant = ss.operator_tenant AND u.user_id = ss.operator_user_id
                  AND NOT u.is_inactive AND u.user_type = 'internal'
                  AND p.resource = 'tenant' AND p.action = 'support'))
$$;
REVOKE ALL ON FUNCTION psa_support_operator_holds(support_sessions, double precision) FROM PUBLIC;

CREATE OR REPLACE FUNCTION psa_touch_credential(kind text, for_tenant uuid, id uuid)
RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    UPDATE sessions SET last_seen_at = now()
    WHERE kind = 'session' AND tenant = for_tenant AND session_id = id;
    UPDATE sessions o SET last_seen_at = now()
    FROM sessions s JOIN support_sessions ss
         ON ss.tenant = s.tenant AND ss.support_session_id = s.support_session_id
    WHERE kind = 'session' AND s.tenant = for_tenant AND s.session_id = id
      AND o.tenant = ss.operator_tenant AND o.session_id = ss.operator_session_id;
    UPDATE api_keys SET last_used_at = now()
    WHERE kind = 'api_key' AND tenant = for_tenant AND api_key_id = id;
$$;

-- A support session's token holds while the support session is open and the operator's own
-- credential holds (not ended, not expired); its own session row has the usual checks.
DROP FUNCTION psa_authenticate(text, bytea, double precision);
CREATE FUNCTION psa_authenticate(kind text, digest bytea, session_idle_seconds double precision)
RETURNS TABLE (tenant uuid, user_id uuid, credential_id uuid, client_portal boolean, stale boolean,
               tenant_status text, enrollment_only boolean, support_session_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT s.tenant, s.user_id, s.session_id, u.user_type = 'client',
           s.last_seen_at < now() - interval '1 minute', t.status, s.enrollment_only,
           s.support_session_id
    FROM sessions s JOIN users u ON u.tenant = s.tenant AND u.user_id = s.user_id
                    JOIN tenants t ON t.tenant = s.tenant
    WHERE kind = 'session' AND s.token_hash = digest AND s.revoked_at IS NULL
      AND s.expires_at > now()
      AND s.last_seen_at > now() - make_interval(secs => session_idle_seconds)
      AND NOT u.is_inactive
      AND (s.support_session_id IS NULL OR EXISTS (
          SELECT 1 FROM support_sessions ss
          WHERE ss.tenant = s.tenant AND ss.support_session_id = s.support_session_id
            AND ss.ended_at IS NULL AND ss.ends_at > now()
            AND psa_support_operator_holds(ss, session_idle_seconds)))
    UNION ALL
    SELECT k.tenant, k.user_id, k.api_key_id, u.user_type = 'client',
           k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute', t.status, false,
           NULL::uuid
    FROM api_keys k JOIN users u ON u.tenant = k.tenant AND u.user_id = k.user_id
                    JOIN tenants t ON t.tenant = k.tenant
    WHERE kind = 'api_key' AND k.key_hash = digest AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now()) AND NOT u.is_inactive
$$;
REVOKE ALL ON FUNCTION psa_authenticate(text, bytea, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_authenticate(text, bytea, double precision) TO psa_api;

-- `tenant:support` for the tenants seeded before it (new tenants get it from the seeds), held
-- by their Admin role; only the management tenant's is ever honoured.
INSERT INTO permissions (tenant, resource, action, description, msp, client)
SELECT DISTINCT p.tenant, 'tenant', 'support', 'support tenant', true, false
FROM permissions p WHERE p.resource = 'tenant' AND p.action = 'read'
ON CONFLICT DO NOTHING;
INSERT INTO role_permissions (tenant, role_id, permission_id)
SELECT r.tenant, r.role_id, n.permission_id
FROM roles r
JOIN permissions n ON n.tenant = r.tenant AND n.resource = 'tenant' AND n.action = 'support'
WHERE r.role_name = 'Admin' AND r.msp
ON CONFLICT DO NOTHING;
