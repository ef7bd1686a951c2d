-- Seeds tenants in bulk for bench/scale.sh by cloning a tenant that the real workflow
-- provisioned (the template): every row it owns in every tenant table (found from the catalog,
-- so a new table is cloned too), its provisioning record and, when tracked, its customer
-- records in the management tenant (company, tax and email settings, contact, tag mapping,
-- audit rows). Each clone is what provisioning would have written, with its own ids, name,
-- admin email and creation time.
--
--   psql -v template=UUID -v mgmt=UUID -v first=N -v count=N -v tracked=true|false -f bench/seed-tenants.sql
--
-- Clone n gets tenant id md5('psa-seed-' || n)::uuid, name 'Seed Tenant 0000n' and admin
-- 'admin-n@seed.example'; every other id is md5(new tenant || old id), so references between
-- the rows stay consistent. Needs a superuser (foreign keys are not checked row by row:
-- session_replication_role = replica); for a throwaway benchmark database only.
\set ON_ERROR_STOP on
SET session_replication_role = replica;
SET client_min_messages = warning;

CREATE PROCEDURE pg_temp.seed_tenants(tpl uuid, mgmt uuid, first_n int, n int, tracked boolean)
LANGUAGE plpgsql AS $$
DECLARE
    batch constant int := 2000;
    tpl_name text;
    tpl_email text;
    tpl_wf text;
    -- The template's customer records in the management tenant.
    owned uuid[];
    t record;
    a record;
    cols text;
    exprs text;
    pk text[];
    expr text;
    lo int;
BEGIN
    SELECT company_name INTO STRICT tpl_name FROM tenants WHERE tenant = tpl;
    SELECT email INTO STRICT tpl_email FROM users WHERE tenant = tpl;
    SELECT workflow_id, array_remove(ARRAY[customer_company_id, customer_contact_id,
                                           customer_tag_mapping_id], NULL)
        INTO STRICT tpl_wf, owned
        FROM tenant_provisioning WHERE tenant_id = tpl;
    lo := first_n;
    WHILE lo < first_n + n LOOP
        DROP TABLE IF EXISTS pg_temp.seed_map;
        CREATE TEMP TABLE seed_map AS
            SELECT g AS n,
                   md5('psa-seed-' || g)::uuid AS tenant,
                   'Seed Tenant ' || lpad(g::text, 6, '0') AS name,
                   'admin-' || g || '@seed.example' AS email,
                   'seed-' || g AS wf,
                   -- Spread over the past: one tenant every 5 minutes.
                   make_interval(mins => 5 * (1000000 - g)) AS age
            FROM generate_series(lo, least(lo + batch, first_n + n) - 1) g;
        FOR t IN
            SELECT rel.relname AS name,
                   EXISTS (SELECT 1 FROM pg_attribute att WHERE att.attrelid = rel.oid
                           AND att.attname = 'tenant' AND NOT att.attisdropped) AS has_tenant
            FROM pg_class rel JOIN pg_namespace s ON s.oid = rel.relnamespace
            WHERE s.nspname = 'public' AND rel.relkind = 'r' AND rel.relname NOT LIKE '\_sqlx%'
        LOOP
            SELECT array_agg(att.attname::text) INTO pk
            FROM pg_index i JOIN pg_attribute att ON att.attrelid = i.indrelid AND att.attnum = ANY (i.indkey)
            WHERE i.indrelid = format('public.%I', t.name)::regclass AND i.indisprimary;
            cols := '';
            exprs := '';
            FOR a IN
                SELECT att.attname AS col, format_type(att.atttypid, att.atttypmod) AS typ
                FROM pg_attribute att
                WHERE att.attrelid = format('public.%I', t.name)::regclass
                  AND att.attnum > 0 AND NOT att.attisdropped AND att.attgenerated = ''
                ORDER BY att.attnum
            LOOP
                expr := format('r.%I', a.col);
                IF a.col = 'tenant' THEN
                    -- The tenant's own rows move to the clone; the management tenant's stay.
                    expr := 'CASE WHEN r.tenant = $1 THEN m.tenant ELSE r.tenant END';
                ELSIF a.typ = 'uuid' THEN
                    -- The template's ids are all its own; of the management tenant's, only its
                    -- customer records and the cloned rows' keys are.
                    expr := format('CASE WHEN r.%1$I = $1 THEN m.tenant'
                                   ' WHEN %2$s OR r.%1$I = ANY ($3) OR %3$L'
                                   ' THEN md5(m.tenant::text || r.%1$I::text)::uuid ELSE r.%1$I END',
                                   a.col,
                                   CASE WHEN t.has_tenant THEN 'r.tenant IS DISTINCT FROM $2' ELSE 'false' END,
                                   a.col = ANY (pk));
                ELSIF a.typ = 'bytea' THEN
                    expr := format('sha256(r.%I || uuid_send(m.tenant))', a.col);
                ELSIF a.typ IN ('text', 'character varying(255)', 'jsonb') THEN
                    expr := format('replace(replace(replace(replace(r.%I::text, $4, m.wf), $5, m.email),'
                                   ' $6, m.name), $1::text, m.tenant::text)::%s', a.col, a.typ);
                ELSIF a.typ = 'timestamp with time zone' THEN
                    expr := format('r.%I - m.age', a.col);
                END IF;
                IF t.name = 'tenant_provisioning' AND NOT tracked THEN
                    expr := CASE a.col
                        WHEN 'tracking_enabled' THEN 'false'
                        WHEN 'customer_tracking' THEN '''disabled'''
                        WHEN 'customer_company_id' THEN 'NULL'
                        WHEN 'customer_contact_id' THEN 'NULL'
                        WHEN 'customer_tag_mapping_id' THEN 'NULL'
                        ELSE expr END;
                END IF;
                cols := cols || format('%I, ', a.col);
                exprs := exprs || expr || ', ';
            END LOOP;
            cols := left(cols, -2);
            exprs := left(exprs, -2);
            IF t.name = 'tenant_provisioning' THEN
                EXECUTE format('INSERT INTO %I (%s) SELECT %s FROM %I r CROSS JOIN seed_map m'
                               ' WHERE r.tenant_id = $1', t.name, cols, exprs, t.name)
                    USING tpl, mgmt, owned, tpl_wf, tpl_email, tpl_name;
            ELSIF t.has_tenant THEN
                -- The template's rows, and (tracked) the management tenant's rows that are its
                -- customer records or name them.
                EXECUTE format('INSERT INTO %I (%s) SELECT %s FROM %I r CROSS JOIN seed_map m'
                               ' WHERE r.tenant = $1 OR ($7 AND r.tenant = $2 AND ('
                               'SELECT bool_or(v = ANY ($3) OR v = $1) FROM unnest(ARRAY[%s]::uuid[]) v))',
                               t.name, cols, exprs, t.name,
                               (SELECT string_agg(format('r.%I', att.attname), ', ')
                                FROM pg_attribute att
                                WHERE att.attrelid = format('public.%I', t.name)::regclass
                                  AND att.attnum > 0 AND NOT att.attisdropped
                                  AND att.atttypid = 'uuid'::regtype AND att.attname <> 'tenant'))
                    USING tpl, mgmt, owned, tpl_wf, tpl_email, tpl_name, tracked;
            END IF;
        END LOOP;
        COMMIT;
        lo := lo + batch;
    END LOOP;
END
$$;

CALL pg_temp.seed_tenants(:'template', :'mgmt', :first, :count, :tracked);
-- Statistics and visibility maps, as tables in use have them (and no autovacuum of the seeded
-- rows during the measurements).
VACUUM ANALYZE;
