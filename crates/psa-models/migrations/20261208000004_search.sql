-- Search from the management console: a tenant by its name, slug or id, by one of its staff's
-- email addresses, or by its customer company's name. Substring matches through trigram
-- indexes, so that a search stays fast with a hundred thousand tenants.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX tenants_name_search ON tenants USING gin (lower(company_name) gin_trgm_ops);
CREATE INDEX tenants_slug_search ON tenants USING gin (slug gin_trgm_ops);
CREATE INDEX users_email_search ON users USING gin (lower(email) gin_trgm_ops)
    WHERE user_type = 'internal';
-- Emails that start with the query, in order (a word in every address must not sort them all).
CREATE INDEX users_email_prefix ON users (lower(email) text_pattern_ops)
    WHERE user_type = 'internal';
CREATE INDEX companies_name_search ON companies USING gin (lower(company_name) gin_trgm_ops)
    WHERE properties ? 'tenant_id';

-- The matches for `q` (already trimmed and validated; lower-cased here, as the indexes are), at
-- most `per_kind` (capped at 50) of each kind: `id` (the whole id), `name`, `slug`, `user` (a
-- staff member's email), `customer` (the customer company's name in the management tenant), one
-- row per tenant and kind, with whether the text matched exactly or as a prefix (the caller
-- orders by them). A whole id is looked up as an id only. The caller is a management caller
-- with `tenant:read` (checked before): the function reads across tenants.
CREATE FUNCTION psa_search_tenants(raw text, per_kind integer)
RETURNS TABLE (kind text, tenant_id uuid, name text, slug text, status text, detail text,
               exact boolean, prefix boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = public, pg_temp SET standard_conforming_strings = on AS $fn$
    WITH p AS (
        SELECT q, esc || '%' AS prefix, '%' || esc || '%' AS pattern,
               least(greatest(per_kind, 1), 50) AS lim,
               -- A whole id is looked up by the key (a text comparison would read every tenant).
               CASE WHEN q ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                    THEN q::uuid END AS id
        FROM (SELECT lower(raw) AS q) l,
             LATERAL (SELECT replace(replace(replace(l.q, '\', '\\'), '%', '\%'), '_', '\_') AS esc) e
    )
    (SELECT 'id', t.tenant, t.company_name, t.slug, t.status, t.tenant::text, true, true
       FROM tenants t, p WHERE t.tenant = p.id AND NOT t.is_management)
    UNION ALL
    (SELECT 'name', t.tenant, t.company_name, t.slug, t.status, t.company_name,
            lower(t.company_name) = p.q, lower(t.company_name) LIKE p.prefix
       FROM tenants t, p
      WHERE p.id IS NULL AND lower(t.company_name) LIKE p.pattern AND NOT t.is_management
      ORDER BY 7 DESC, 8 DESC, t.company_name
      LIMIT (SELECT lim FROM p))
    UNION ALL
    (SELECT 'slug', t.tenant, t.company_name, t.slug, t.status, t.slug,
            t.slug = p.q, t.slug LIKE p.prefix
       FROM tenants t, p
      WHERE p.id IS NULL AND t.slug LIKE p.pattern AND NOT t.is_management
      ORDER BY 7 DESC, 8 DESC, t.slug
      LIMIT (SELECT lim FROM p))
    UNION ALL
    -- One row per tenant: a tenant with many matching staff does not crowd out the others. The
    -- candidates are bounded (a word in every address, such as the domain, would otherwise sort
    -- them all): the addresses that start with the query, in order, and a few hundred others.
    (SELECT * FROM (
        SELECT DISTINCT ON (t.tenant) 'user', t.tenant, t.company_name, t.slug, t.status, c.email,
               lower(c.email) = p.q AS exact, lower(c.email) LIKE p.prefix AS prefix
          FROM ((SELECT u.tenant, u.email FROM users u, p
                  WHERE p.id IS NULL AND u.user_type = 'internal' AND lower(u.email) LIKE p.prefix
                  ORDER BY lower(u.email) LIMIT 200)
                UNION
                (SELECT u.tenant, u.email FROM users u, p
                  WHERE p.id IS NULL AND u.user_type = 'internal' AND lower(u.email) LIKE p.pattern
                  LIMIT 200)) c
          JOIN tenants t ON t.tenant = c.tenant, p
         WHERE NOT t.is_management
         ORDER BY t.tenant, 7 DESC, 8 DESC, c.email) people
      ORDER BY exact DESC, prefix DESC, email
      LIMIT (SELECT lim FROM p))
    UNION ALL
    (SELECT 'customer', t.tenant, t.company_name, t.slug, t.status, c.company_name,
            lower(c.company_name) = p.q, lower(c.company_name) LIKE p.prefix
       FROM companies c
       JOIN tenants m ON m.tenant = c.tenant AND m.is_management
       JOIN tenants t ON t.tenant = CASE
               WHEN c.properties ->> 'tenant_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
               THEN (c.properties ->> 'tenant_id')::uuid END, p
      WHERE p.id IS NULL AND c.properties ? 'tenant_id' AND lower(c.company_name) LIKE p.pattern
      ORDER BY 7 DESC, 8 DESC, c.company_name
      LIMIT (SELECT lim FROM p))
$fn$;
REVOKE ALL ON FUNCTION psa_search_tenants(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_search_tenants(text, integer) TO psa_api;
