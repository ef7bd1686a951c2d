-- Single sign-on per tenant (OpenID Connect; SAML later: `protocol`). One connection per tenant:
-- the provider (its issuer, discovered at `/.well-known/openid-configuration`), this
-- installation's client there (the secret sealed with PSA_SECRET_KEY, bound to the tenant; none:
-- a public client, PKCE only), the claims read, and what the tenant decided: `jit` creates a
-- user at their first sign-in (with `jit_role`), `required` refuses every other way in
-- (password, code, passkey) but for the `break_glass` users.
CREATE TABLE sso_connections (
    tenant               uuid PRIMARY KEY REFERENCES tenants (tenant) ON DELETE CASCADE,
    connection_id        uuid NOT NULL DEFAULT gen_random_uuid(),
    protocol             text NOT NULL DEFAULT 'oidc' CHECK (protocol IN ('oidc')),
    issuer               text NOT NULL CHECK (char_length(issuer) BETWEEN 1 AND 500),
    client_id            text NOT NULL CHECK (char_length(client_id) BETWEEN 1 AND 500),
    client_secret_sealed text,
    scopes               text[] NOT NULL DEFAULT ARRAY['openid', 'email', 'profile'],
    email_claim          text NOT NULL DEFAULT 'email',
    first_name_claim     text NOT NULL DEFAULT 'given_name',
    last_name_claim      text NOT NULL DEFAULT 'family_name',
    jit                  boolean NOT NULL DEFAULT false,
    jit_role             text NOT NULL DEFAULT 'Technician',
    required             boolean NOT NULL DEFAULT false,
    break_glass          uuid[] NOT NULL DEFAULT '{}',
    enabled              boolean NOT NULL DEFAULT true,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sso_connections_connection_key UNIQUE (tenant, connection_id)
);

-- The email domains a tenant claims: verified by a DNS TXT record `psa-verification=<token>` at
-- the domain. A domain verified by one tenant cannot be verified by another; an email of a
-- verified domain is sent to that tenant's provider.
CREATE TABLE sso_domains (
    tenant      uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    domain      text NOT NULL CHECK (domain ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$'),
    token       text NOT NULL,
    verified_at timestamptz,
    checked_at  timestamptz,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT sso_domains_pkey PRIMARY KEY (tenant, domain)
);
CREATE UNIQUE INDEX sso_domains_verified ON sso_domains (domain) WHERE verified_at IS NOT NULL;

-- Who a provider's subject is here: matched first by it, the first time by verified email.
CREATE TABLE sso_identities (
    tenant        uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    connection_id uuid NOT NULL,
    subject       text NOT NULL CHECK (char_length(subject) BETWEEN 1 AND 255),
    user_id       uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_login_at timestamptz,
    CONSTRAINT sso_identities_pkey PRIMARY KEY (tenant, connection_id, subject),
    CONSTRAINT sso_identities_user_key UNIQUE (tenant, connection_id, user_id),
    CONSTRAINT sso_identities_connection_fkey FOREIGN KEY (tenant, connection_id)
        REFERENCES sso_connections (tenant, connection_id) ON DELETE CASCADE,
    CONSTRAINT sso_identities_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['sso_connections', 'sso_domains', 'sso_identities'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO psa_app '
            'USING (tenant = nullif(current_setting(''app.current_tenant'', true), '''')::uuid) '
            'WITH CHECK (tenant = nullif(current_setting(''app.current_tenant'', true), '''')::uuid)', t);
        EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %I TO psa_app', t);
    END LOOP;
END $$;

-- Which tenant an email's domain signs in through (before any tenant is known): only a verified
-- domain of a tenant with an enabled connection.
CREATE FUNCTION psa_sso_for_domain(for_domain text)
RETURNS TABLE (tenant uuid, slug text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT t.tenant, t.slug
    FROM sso_domains d JOIN sso_connections c ON c.tenant = d.tenant
                       JOIN tenants t ON t.tenant = d.tenant
    WHERE d.domain = lower(for_domain) AND d.verified_at IS NOT NULL AND c.enabled
$$;
-- Whether another tenant verified this domain.
CREATE FUNCTION psa_sso_domain_taken(for_domain text, by_tenant uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM sso_domains
                   WHERE domain = lower(for_domain) AND verified_at IS NOT NULL
                     AND tenant <> by_tenant)
$$;
-- Whether a user must sign in through their tenant's provider (it is required, enabled, and
-- they are not one of its break-glass users): one fact about one user, nothing of the rest.
CREATE FUNCTION psa_sso_refuses(for_tenant uuid, for_user uuid) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT coalesce((SELECT c.required AND c.enabled AND NOT (for_user = ANY (c.break_glass))
                     FROM sso_connections c WHERE c.tenant = for_tenant), false)
$$;
-- The tenant a sign-in link names (`/console/sso/{slug}`): by slug or id.
CREATE FUNCTION psa_tenant_named(name text) RETURNS TABLE (tenant uuid, slug text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT t.tenant, t.slug FROM tenants t
    WHERE t.slug = name
       OR (name ~ '^[0-9a-fA-F-]{36}$' AND t.tenant::text = lower(name))
$$;
REVOKE ALL ON FUNCTION psa_sso_for_domain(text), psa_sso_domain_taken(text, uuid),
    psa_sso_refuses(uuid, uuid), psa_tenant_named(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_sso_for_domain(text), psa_sso_domain_taken(text, uuid),
    psa_sso_refuses(uuid, uuid), psa_tenant_named(text) TO psa_api;

-- The sign-in half done while the person is at their provider: `state` is the token, the
-- ceremony keeps the PKCE verifier and the nonce.
ALTER TABLE login_challenges DROP CONSTRAINT login_challenges_purpose_check;
ALTER TABLE login_challenges ADD CONSTRAINT login_challenges_purpose_check
    CHECK (purpose IN ('choose_tenant', 'second_factor', 'passkey_sign_in',
                       'passkey_registration', 'sso'));

-- Tenant admins manage their single sign-on (`sso:manage`), granted to the Admin role of every
-- tenant (new tenants get it from the seeds).
INSERT INTO permissions (tenant, resource, action, description, msp, client)
SELECT DISTINCT p.tenant, 'sso', 'manage', 'sso manage', true, false
FROM permissions p
ON CONFLICT DO NOTHING;
INSERT INTO role_permissions (tenant, role_id, permission_id)
SELECT r.tenant, r.role_id, n.permission_id
FROM roles r
JOIN permissions n ON n.tenant = r.tenant AND n.resource = 'sso' AND n.action = 'manage'
WHERE r.role_name = 'Admin' AND r.msp
ON CONFLICT DO NOTHING;

-- Adding and verifying a domain, and opening a session, ask these inside the tenant's
-- transaction (as psa_app): whether another tenant verified the domain, and whether the tenant
-- requires its provider of a user. Neither tells anything about another tenant but that one fact.
GRANT EXECUTE ON FUNCTION psa_sso_domain_taken(text, uuid), psa_sso_refuses(uuid, uuid) TO psa_app;
