-- Name searches ("contains", `ILIKE '%...%'`) over the management tenant's customers and the
-- tenant list: without an index each one reads every company (about 200 ms at 100k customers,
-- bench/scale.sh); trigram indexes answer them from the index. pg_trgm is a trusted extension:
-- the database owner that runs the migrations may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;
CREATE INDEX companies_name_trgm ON companies USING gin (company_name gin_trgm_ops);
CREATE INDEX tenants_name_trgm ON tenants USING gin (company_name gin_trgm_ops);

-- The contact list's order (name, then id): with this index a page at any depth is read in
-- order instead of sorting every contact of the tenant (100k customer admins in the
-- management tenant).
CREATE INDEX contacts_tenant_name ON contacts (tenant, full_name, contact_name_id);
