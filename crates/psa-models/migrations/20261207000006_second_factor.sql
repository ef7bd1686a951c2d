-- A second factor. TOTP (RFC 6238): the secret sealed with PSA_SECRET_KEY; `last_step` is the
-- time step of the last code accepted, so a code is accepted once (a replay in its window is
-- refused); `failed_attempts` wrong codes in a row lock it (`locked_until`), whatever sign-in
-- they came through. Recovery codes: ten per enrolment, stored as SHA-256 (79 random bits
-- each), each used once.
CREATE TABLE user_totp (
    tenant        uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    user_id       uuid NOT NULL,
    secret_sealed text NOT NULL,
    confirmed_at  timestamptz,
    last_step     bigint,
    failed_attempts integer NOT NULL DEFAULT 0,
    locked_until  timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_totp_pkey PRIMARY KEY (tenant, user_id),
    CONSTRAINT user_totp_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);
CREATE TABLE user_recovery_codes (
    tenant    uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    code_id   uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id   uuid NOT NULL,
    code_hash bytea NOT NULL,
    used_at   timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_recovery_codes_pkey PRIMARY KEY (tenant, code_id),
    CONSTRAINT user_recovery_codes_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);
CREATE INDEX user_recovery_codes_user ON user_recovery_codes (tenant, user_id) WHERE used_at IS NULL;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['user_totp', 'user_recovery_codes'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO psa_app '
            'USING (tenant = nullif(current_setting(''app.current_tenant'', true), '''')::uuid) '
            'WITH CHECK (tenant = nullif(current_setting(''app.current_tenant'', true), '''')::uuid)', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO psa_app', t);
    END LOOP;
END $$;

-- The tenant's policy: its users must have a second factor. On for the management tenant (it can
-- suspend or delete every customer); its admins may change it (audited).
ALTER TABLE tenants ADD COLUMN mfa_required boolean NOT NULL DEFAULT false;
UPDATE tenants SET mfa_required = true WHERE is_management;
GRANT UPDATE (mfa_required) ON tenants TO psa_app;

-- Sessions people can see: where and with what they were opened. A session opened by a user of
-- a tenant that requires a second factor, who has none yet, may only enrol one
-- (`enrollment_only`); confirming the enrolment lifts it.
ALTER TABLE sessions ADD COLUMN address text;
ALTER TABLE sessions ADD COLUMN user_agent text;
ALTER TABLE sessions ADD COLUMN enrollment_only boolean NOT NULL DEFAULT false;
ALTER TABLE sessions ADD COLUMN second_factor boolean NOT NULL DEFAULT false;

-- The second step of a sign-in: the password was right, a code is due. Single use, 5 minutes, at
-- most 5 wrong codes.
ALTER TABLE login_challenges DROP CONSTRAINT login_challenges_purpose_check;
ALTER TABLE login_challenges ADD CONSTRAINT login_challenges_purpose_check
    CHECK (purpose IN ('choose_tenant', 'second_factor'));
ALTER TABLE login_challenges ADD COLUMN user_id uuid;
ALTER TABLE login_challenges ADD COLUMN attempts integer NOT NULL DEFAULT 0;

-- The credential's session flags, for the API's login role.
DROP FUNCTION psa_authenticate(text, bytea, double precision);
CREATE FUNCTION psa_authenticate(kind text, digest bytea, session_idle_seconds double precision)
RETURNS TABLE (tenant uuid, user_id uuid, credential_id uuid, client_portal boolean, stale boolean,
               tenant_status text, enrollment_only boolean)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT s.tenant, s.user_id, s.session_id, u.user_type = 'client',
           s.last_seen_at < now() - interval '1 minute', t.status, s.enrollment_only
    FROM sessions s JOIN users u ON u.tenant = s.tenant AND u.user_id = s.user_id
                    JOIN tenants t ON t.tenant = s.tenant
    WHERE kind = 'session' AND s.token_hash = digest AND s.revoked_at IS NULL
      AND s.expires_at > now()
      AND s.last_seen_at > now() - make_interval(secs => session_idle_seconds)
      AND NOT u.is_inactive
    UNION ALL
    SELECT k.tenant, k.user_id, k.api_key_id, u.user_type = 'client',
           k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute', t.status, false
    FROM api_keys k JOIN users u ON u.tenant = k.tenant AND u.user_id = k.user_id
                    JOIN tenants t ON t.tenant = k.tenant
    WHERE kind = 'api_key' AND k.key_hash = digest AND k.revoked_at IS NULL
      AND (k.expires_at IS NULL OR k.expires_at > now()) AND NOT u.is_inactive
$$;
REVOKE ALL ON FUNCTION psa_authenticate(text, bytea, double precision) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_authenticate(text, bytea, double precision) TO psa_api;
