-- Sign-in by email. Tenants get a slug: the short name people type or follow in a sign-in link
-- (`/console/sign-in?org=SLUG`): lowercase a-z, 0-9 and hyphens, 3-63 characters, no hyphen at
-- either end, unique. Existing tenants get one derived from their name.

-- The slug a name suggests (before making it unique).
CREATE FUNCTION psa_slug_base(name text) RETURNS text
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN length(b) >= 3 THEN b WHEN b = '' THEN 'org' ELSE b || '-org' END
    FROM (SELECT trim(both '-' FROM left(trim(both '-' FROM
              regexp_replace(translate(lower(name),
                                       'àáâãäåāăąæçćčďèéêëēėęěğìíîïīįıłñńňòóôõöøōőœŕřśšşťùúûüūůűųýÿźżž',
                                       'aaaaaaaaaacccdeeeeeeeegiiiiiiilnnnooooooooorrssstuuuuuuuuyyzzz'),
                             '[^a-z0-9]+', '-', 'g')), 56)) AS b) s
$$;

-- The first free slug of `base`, `base-2`, `base-3`, ... Two tenants of the same name created
-- at once would both find `base` free: the caller's transaction holds a lock on the base until
-- it commits, so the second waits and finds the next one.
CREATE FUNCTION psa_free_slug(base text) RETURNS text
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    candidate text := base;
    n integer := 1;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('psa_free_slug:' || base));
    WHILE EXISTS (SELECT 1 FROM tenants WHERE slug = candidate) LOOP
        n := n + 1;
        candidate := base || '-' || n;
    END LOOP;
    RETURN candidate;
END $$;

ALTER TABLE tenants ADD COLUMN slug text;
DO $$
DECLARE
    t record;
BEGIN
    FOR t IN SELECT tenant, company_name FROM tenants ORDER BY created_at, tenant LOOP
        UPDATE tenants SET slug = psa_free_slug(psa_slug_base(t.company_name))
        WHERE tenant = t.tenant;
    END LOOP;
END $$;
ALTER TABLE tenants ALTER COLUMN slug SET NOT NULL;
ALTER TABLE tenants ADD CONSTRAINT tenants_slug_key UNIQUE (slug);
-- Never shaped like a tenant id: a sign-in names a tenant by either, and must not mistake one
-- tenant's slug for another's id.
ALTER TABLE tenants ADD CONSTRAINT tenants_slug_format
    CHECK (slug ~ '^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$'
           AND slug !~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$');
-- Management callers change another tenant's slug in that tenant's confined context.
GRANT UPDATE (slug) ON tenants TO psa_app;

-- Whether a slug is taken (by any tenant: the API's confined role sees only its own).
CREATE FUNCTION psa_slug_taken(candidate text) RETURNS boolean
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT EXISTS (SELECT 1 FROM tenants WHERE slug = candidate)
$$;

-- The slugs of these tenants (the tenant list and the customers' CSV name them).
CREATE FUNCTION psa_tenant_slugs(tenant_ids uuid[]) RETURNS TABLE (tenant uuid, slug text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT t.tenant, t.slug FROM tenants t WHERE t.tenant = ANY (tenant_ids)
$$;

-- Who may sign in with this email: the active internal users with it, in every tenant or in
-- the one named (by id or slug), oldest tenant first, at most 11 (more than 10 is refused: the
-- hashes checked per sign-in stay bounded). Only the exact email asked for is ever returned.
CREATE FUNCTION psa_login_candidates(for_email text, for_tenant text)
RETURNS TABLE (tenant uuid, slug text, name text, user_id uuid, hashed_password text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT t.tenant, t.slug, t.company_name, u.user_id, u.hashed_password
    FROM users u JOIN tenants t ON t.tenant = u.tenant
    WHERE u.email = for_email AND u.user_type = 'internal' AND NOT u.is_inactive
      AND (for_tenant IS NULL OR t.slug = for_tenant
           OR (for_tenant ~ '^[0-9a-fA-F-]{36}$' AND t.tenant::text = lower(for_tenant)))
    ORDER BY t.created_at, t.tenant
    LIMIT 11
$$;
CREATE INDEX users_email_sign_in ON users (email) WHERE user_type = 'internal' AND NOT is_inactive;

REVOKE ALL ON FUNCTION psa_free_slug(text), psa_slug_taken(text), psa_tenant_slugs(uuid[]),
    psa_login_candidates(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_slug_taken(text), psa_tenant_slugs(uuid[]),
    psa_login_candidates(text, text) TO psa_api;

-- A sign-in half done: the password matched in several tenants and the person chooses one
-- (`choose_tenant`), kept server-side so the password is not sent again. The token is stored
-- as its SHA-256, lives 5 minutes, and is used once.
CREATE TABLE login_challenges (
    challenge_id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    token_hash bytea NOT NULL UNIQUE,
    purpose text NOT NULL CHECK (purpose IN ('choose_tenant')),
    email text NOT NULL,
    tenants uuid[] NOT NULL,
    address text NOT NULL,
    expires_at timestamptz NOT NULL,
    used_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_challenges_expires ON login_challenges (expires_at);
GRANT SELECT, INSERT, UPDATE, DELETE ON login_challenges TO psa_api;
