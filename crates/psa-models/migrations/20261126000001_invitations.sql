-- Users are invited, not handed a password: a new user has no usable password until they set
-- one through a single-use link (an invitation, or a password reset for a user who forgot
-- theirs).
ALTER TABLE users ALTER COLUMN hashed_password DROP NOT NULL;
ALTER TABLE users ADD COLUMN password_changed_at timestamptz;

-- Single-use tokens behind invitation and password-reset links. Only the SHA-256 digest of a
-- token is kept (a 256-bit random value needs no slow hash). A token is valid while it is
-- neither used, revoked (superseded by a newer one of the same purpose, or its user
-- deactivated) nor expired.
CREATE TABLE user_auth_tokens (
    tenant      uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    token_id    uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id     uuid NOT NULL,
    purpose     text NOT NULL CHECK (purpose IN ('invitation', 'password_reset')),
    token_hash  bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    used_at     timestamptz,
    revoked_at  timestamptz,
    -- Who issued it: `workflow:<id>`, `user:<id>`, `cli`, `anonymous` (a reset request).
    created_by  text NOT NULL,
    -- The provisioning run that issued it (its welcome email), and when the email went out: a
    -- retried activity finds the email it already sent instead of sending a second one.
    workflow_id text,
    sent_at     timestamptz,
    CONSTRAINT user_auth_tokens_pkey PRIMARY KEY (tenant, token_id),
    CONSTRAINT user_auth_tokens_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);
-- Not unique, like sessions_token_hash: every key of a tenant table includes the tenant, and a
-- collision of two 256-bit random values does not happen.
CREATE INDEX user_auth_tokens_hash ON user_auth_tokens (token_hash);
CREATE INDEX user_auth_tokens_user ON user_auth_tokens (tenant, user_id, purpose)
    WHERE used_at IS NULL AND revoked_at IS NULL;
CREATE INDEX user_auth_tokens_workflow ON user_auth_tokens (workflow_id) WHERE workflow_id IS NOT NULL;

ALTER TABLE user_auth_tokens ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_auth_tokens TO psa_app
    USING (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE ON user_auth_tokens TO psa_app;

-- The holder of a link is not signed in and names no tenant: this finds the token's tenant and
-- user across tenants, for the API's login role, without showing any other row. It returns the
-- token's state so the holder learns why a link no longer works (expired, used, superseded);
-- nothing about accounts.
CREATE FUNCTION psa_find_user_token(for_purpose text, digest bytea)
RETURNS TABLE (tenant uuid, token_id uuid, user_id uuid, state text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT t.tenant, t.token_id, t.user_id,
           CASE WHEN t.used_at IS NOT NULL THEN 'used'
                -- An invitation sets a first password only.
                WHEN t.purpose = 'invitation' AND u.hashed_password IS NOT NULL THEN 'used'
                WHEN t.revoked_at IS NOT NULL THEN 'revoked'
                WHEN t.expires_at <= now() THEN 'expired'
                WHEN u.is_inactive THEN 'revoked'
                ELSE 'valid' END
    FROM user_auth_tokens t JOIN users u ON u.tenant = t.tenant AND u.user_id = t.user_id
    WHERE t.purpose = for_purpose AND t.token_hash = digest
$$;
REVOKE ALL ON FUNCTION psa_find_user_token(text, bytea) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_find_user_token(text, bytea) TO psa_api;


-- Links that ended (used, revoked or expired) over 30 days ago are of no use to anyone; the API
-- purges them with the sessions.
CREATE FUNCTION psa_purge_user_tokens() RETURNS bigint
LANGUAGE sql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    WITH gone AS (
        DELETE FROM user_auth_tokens
        WHERE coalesce(used_at, revoked_at, expires_at) < now() - interval '30 days'
        RETURNING 1)
    SELECT count(*) FROM gone
$$;
REVOKE ALL ON FUNCTION psa_purge_user_tokens() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_purge_user_tokens() TO psa_api;
