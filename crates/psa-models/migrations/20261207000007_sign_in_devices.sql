-- The devices a user signs in from (a browser on a network), so that a sign-in from a new one
-- can be told to them. Only a digest of the two is kept; a device not seen for 90 days is new
-- again.
CREATE TABLE user_devices (
    tenant        uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    user_id       uuid NOT NULL,
    device_hash   bytea NOT NULL,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_devices_pkey PRIMARY KEY (tenant, user_id, device_hash),
    CONSTRAINT user_devices_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);
ALTER TABLE user_devices ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON user_devices TO psa_app
    USING (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid)
    WITH CHECK (tenant = nullif(current_setting('app.current_tenant', true), '')::uuid);
GRANT SELECT, INSERT, UPDATE, DELETE ON user_devices TO psa_app;
