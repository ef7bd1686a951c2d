-- `psa tenant list` pages through tenants by creation time (keyset on created_at, tenant).
CREATE INDEX tenants_created_at ON tenants (created_at, tenant);
