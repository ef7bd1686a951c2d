-- Passkeys (WebAuthn): a user's public-key credentials, each named by its holder. `passkey` is
-- webauthn-rs's record of it (the public key, the signature counter, the credential id): no
-- secret, the private key never leaves the authenticator. A passkey alone (discoverable
-- sign-in) finds its row before any tenant is known by its credential id and the user handle
-- the authenticator keeps (the user's id): a credential id copied into another registration
-- cannot stand in for its owner's.
CREATE TABLE user_passkeys (
    tenant        uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    passkey_id    uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id       uuid NOT NULL,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    credential_id bytea NOT NULL,
    passkey       jsonb NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    CONSTRAINT user_passkeys_pkey PRIMARY KEY (tenant, passkey_id),
    CONSTRAINT user_passkeys_credential_key UNIQUE (tenant, credential_id),
    CONSTRAINT user_passkeys_name_key UNIQUE (tenant, user_id, name),
    CONSTRAINT user_passkeys_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);
ALTER TABLE user_passkeys ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_passkeys TO psa_app
    USING (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON user_passkeys TO psa_app;

CREATE INDEX user_passkeys_credential ON user_passkeys (credential_id);

-- Whose passkey a credential id is, for a sign-in with a passkey alone: the row of that
-- credential and user handle, of an active internal user only.
CREATE FUNCTION psa_passkey_owner(credential bytea, handle uuid)
RETURNS TABLE (tenant uuid, user_id uuid, passkey_id uuid)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT p.tenant, p.user_id, p.passkey_id
    FROM user_passkeys p JOIN users u ON u.tenant = p.tenant AND u.user_id = p.user_id
    WHERE p.credential_id = credential AND p.user_id = handle
      AND u.user_type = 'internal' AND NOT u.is_inactive
    LIMIT 1
$$;
REVOKE ALL ON FUNCTION psa_passkey_owner(bytea, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_passkey_owner(bytea, uuid) TO psa_api;

-- The server's half of a WebAuthn ceremony (its challenge), between its two requests: any
-- replica may answer the second. `passkey_sign_in`: a sign-in with a passkey alone (no email
-- yet); `passkey_registration`: a signed-in user adding one; a `second_factor` challenge keeps
-- the assertion it asked for in `ceremony` (cleared by the next attempt, so each is answered
-- once).
ALTER TABLE login_challenges DROP CONSTRAINT login_challenges_purpose_check;
ALTER TABLE login_challenges ADD CONSTRAINT login_challenges_purpose_check
    CHECK (purpose IN ('choose_tenant', 'second_factor', 'passkey_sign_in',
                       'passkey_registration'));
ALTER TABLE login_challenges ALTER COLUMN email DROP NOT NULL;
ALTER TABLE login_challenges ADD COLUMN ceremony jsonb;
