-- Synthetic tenants for bench/search.sh: 100000 customer tenants with two staff each and their
-- customer companies in a management tenant (rows only: what search reads).
INSERT INTO tenants (tenant, company_name, email, slug, is_management)
VALUES ('00000000-0000-0000-0000-000000000001', 'Management', 'ops@mgmt.example', 'mgmt', true);
INSERT INTO tenants (tenant, company_name, email, slug)
SELECT md5('t'||i)::uuid, initcap(w1.w || ' ' || w2.w) || ' ' || i, 'admin@c' || i || '.example', 'c-' || i
FROM generate_series(1, 100000) i,
LATERAL (SELECT (ARRAY['acme','globex','initech','umbrella','hooli','stark','wayne','wonka','tyrell','cyberdyne'])[1 + i % 10] AS w) w1,
LATERAL (SELECT (ARRAY['labs','systems','holdings','partners','group','services','it','consulting'])[1 + (i / 10) % 8] AS w) w2;
INSERT INTO users (tenant, username, email, user_type)
SELECT md5('t'||i)::uuid, 'admin' || i, 'admin' || i || '@c' || i || '.example', 'internal'
FROM generate_series(1, 100000) i;
INSERT INTO users (tenant, username, email, user_type)
SELECT md5('t'||i)::uuid, 'tech' || i, 'tech.person' || i || '@c' || i || '.example', 'internal'
FROM generate_series(1, 100000) i;
INSERT INTO companies (tenant, company_name, properties)
SELECT '00000000-0000-0000-0000-000000000001', 'Customer ' || i || ' Ltd', jsonb_build_object('tenant_id', md5('t'||i)::uuid)
FROM generate_series(1, 100000) i;
ANALYZE;
