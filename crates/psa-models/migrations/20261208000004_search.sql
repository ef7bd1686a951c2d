-- Search from the management console: a tenant by its name, slug or id, by one of its staff's
-- email addresses, or by its customer company's name. Substring matches through trigram
-- indexes, so that a search stays fast with a hundred thousand tenants.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

CREATE INDEX tenants_name_search ON tenants USING gin (lower(company_name) gin_trgm_ops);
CREATE INDEX tenants_slug_search ON tenants USING gin (slug gin_trgm_ops);
CREATE INDEX users_email_search ON users USING gin (lower(email) gin_trgm_ops)
    WHERE user_type = 'internal';
CREATE INDEX companies_name_search ON companies USING gin (lower(company_name) gin_trgm_ops)
    WHERE properties ? 'tenant_id';

-- The matches for `q` (lower case, already validated), at most `per_kind` of each kind:
-- `id` (the whole id), `name`, `slug`, `user` (a staff member's email), `customer` (the customer
-- company's name in the management tenant). Exact and prefix matches first; a whole id is
-- looked up as an id only. The caller is a
-- management caller with `tenant:read` (checked before): the function reads across tenants.
CREATE FUNCTION psa_search_tenants(q text, per_kind integer)
RETURNS TABLE (kind text, tenant_id uuid, name text, slug text, status text, detail text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $fn$
    WITH p AS (
        SELECT q, '%' || replace(replace(replace(q, '\', '\\'), '%', '\%'), '_', '\_') || '%' AS pattern,
               -- A whole id is looked up by the key (a text comparison would read every tenant).
               CASE WHEN q ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                    THEN q::uuid END AS id
    )
    (SELECT 'id', t.tenant, t.company_name, t.slug, t.status, t.tenant::text
       FROM tenants t, p WHERE t.tenant = p.id AND NOT t.is_management)
    UNION ALL
    (SELECT 'name', t.tenant, t.company_name, t.slug, t.status, t.company_name
       FROM tenants t, p
      WHERE p.id IS NULL AND lower(t.company_name) LIKE p.pattern AND NOT t.is_management
      ORDER BY lower(t.company_name) = p.q DESC, lower(t.company_name) LIKE p.q || '%' DESC,
               t.company_name
      LIMIT per_kind)
    UNION ALL
    (SELECT 'slug', t.tenant, t.company_name, t.slug, t.status, t.slug
       FROM tenants t, p
      WHERE p.id IS NULL AND t.slug LIKE p.pattern AND NOT t.is_management
      ORDER BY t.slug = p.q DESC, t.slug LIKE p.q || '%' DESC, t.slug
      LIMIT per_kind)
    UNION ALL
    (SELECT 'user', t.tenant, t.company_name, t.slug, t.status, u.email
       FROM users u JOIN tenants t ON t.tenant = u.tenant, p
      WHERE p.id IS NULL AND u.user_type = 'internal' AND lower(u.email) LIKE p.pattern
        AND NOT t.is_management
      ORDER BY lower(u.email) = p.q DESC, u.email
      LIMIT per_kind)
    UNION ALL
    (SELECT 'customer', t.tenant, t.company_name, t.slug, t.status, c.company_name
       FROM companies c
       JOIN tenants m ON m.tenant = c.tenant AND m.is_management
       JOIN tenants t ON t.tenant = CASE
               WHEN c.properties ->> 'tenant_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
               THEN (c.properties ->> 'tenant_id')::uuid END, p
      WHERE p.id IS NULL AND c.properties ? 'tenant_id' AND lower(c.company_name) LIKE p.pattern
      ORDER BY lower(c.company_name) = p.q DESC, c.company_name
      LIMIT per_kind)
$fn$;
REVOKE ALL ON FUNCTION psa_search_tenants(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_search_tenants(text, integer) TO psa_api;
