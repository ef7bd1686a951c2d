-- Tenant import: a tenant's rows are written back in one transaction, in any order. The
-- foreign keys between tenant tables form cycles (companies and contacts name each other;
-- users name contacts, companies name users), so they become deferrable: an import defers them
-- to its commit, where each is checked as before. Everywhere else they stay immediate.
DO $$
DECLARE
    c record;
BEGIN
    FOR c IN
        SELECT con.conname, con.conrelid::regclass AS tbl
        FROM pg_constraint con
        WHERE con.contype = 'f' AND NOT con.condeferrable
          AND con.connamespace = current_schema()::regnamespace
          AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = con.conrelid
                        AND a.attname = 'tenant' AND NOT a.attisdropped)
    LOOP
        EXECUTE format('ALTER TABLE %s ALTER CONSTRAINT %I DEFERRABLE INITIALLY IMMEDIATE',
                       c.tbl, c.conname);
    END LOOP;
END
$$;

-- A foreign key's referencing columns are indexed, so removing the row it points at (a tenant's
-- deletion removes all of them; a contact removed empties a company's billing contact) finds
-- its referrers by index. Without these, deleting a tenant of 100k companies and 200k contacts
-- scanned the companies once per contact. Partial: most rows name none.
CREATE INDEX companies_billing_contact ON companies (tenant, billing_contact_id)
    WHERE billing_contact_id IS NOT NULL;
CREATE INDEX companies_account_manager ON companies (tenant, account_manager_id)
    WHERE account_manager_id IS NOT NULL;
CREATE INDEX companies_region ON companies (tenant, region_code) WHERE region_code IS NOT NULL;
CREATE INDEX company_locations_region ON company_locations (tenant, region_code)
    WHERE region_code IS NOT NULL;
CREATE INDEX company_tax_rates_location ON company_tax_rates (tenant, location_id)
    WHERE location_id IS NOT NULL;
CREATE INDEX company_tax_rates_rate ON company_tax_rates (tenant, tax_rate_id);
CREATE INDEX company_email_settings_user ON company_email_settings (tenant, user_id);
CREATE INDEX tax_rates_region ON tax_rates (tenant, region_code) WHERE region_code IS NOT NULL;
CREATE INDEX users_contact ON users (tenant, contact_id) WHERE contact_id IS NOT NULL;
CREATE INDEX tag_mappings_created_by ON tag_mappings (tenant, created_by)
    WHERE created_by IS NOT NULL;
CREATE INDEX role_permissions_permission ON role_permissions (tenant, permission_id);
CREATE INDEX user_roles_role ON user_roles (tenant, role_id);
CREATE INDEX api_keys_user ON api_keys (tenant, user_id);
CREATE INDEX sso_identities_user ON sso_identities (tenant, user_id);
CREATE INDEX support_sessions_user ON support_sessions (tenant, user_id);

-- An imported audit row is history, already checked (and copied to the operator's tenant) when
-- it was first written: the import sets psa.importing for its transaction. The setting alone
-- is not enough (any transaction may set it): the row's tenant must be one this very
-- transaction wrote, so only a tenant being imported skips the check, never a live one.
CREATE OR REPLACE FUNCTION psa_audit_support_copy() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    s support_sessions;
BEGIN
    IF current_setting('psa.importing', true) = 'on'
       AND EXISTS (SELECT 1 FROM tenants t WHERE t.tenant = NEW.tenant
                   AND t.xmin = pg_current_xact_id()::xid) THEN
        RETURN NULL;
    END IF;
    SELECT * INTO s FROM support_sessions
    WHERE tenant = NEW.tenant
      AND support_session_id = (NEW.details ->> 'support_session')::uuid;
    IF NOT FOUND THEN
        -- The copy itself (in the operator's tenant, which holds no such session).
        IF EXISTS (SELECT 1 FROM tenants WHERE tenant = NEW.tenant AND is_management) THEN
            RETURN NULL;
        END IF;
        RAISE EXCEPTION 'a support audit row names no support session of its tenant'
            USING ERRCODE = 'check_violation';
    END IF;
    -- The row must say what the session is: its operator, its user; the session open, or
    -- ending in this transaction; the operator's tenant the management tenant.
    IF NEW.actor_id IS DISTINCT FROM s.operator_name OR NEW.actor_user IS DISTINCT FROM s.user_id
       OR (s.ended_at IS NOT NULL AND s.ended_at <> now())
       OR NOT EXISTS (SELECT 1 FROM tenants WHERE tenant = s.operator_tenant AND is_management)
    THEN
        RAISE EXCEPTION 'a support audit row does not match its support session'
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO audit_log (tenant, actor, actor_kind, actor_id, actor_user, action,
                           entity_type, entity_id, details, created_at)
    VALUES (s.operator_tenant, 'support:' || s.operator_name || ' as user:' || s.user_id,
            'support', s.operator_name, s.user_id, NEW.action, NEW.entity_type, NEW.entity_id,
            NEW.details || jsonb_build_object('tenant_id', NEW.tenant), now());
    RETURN NULL;
END
$$;

-- An export made for a move (`--encrypt-to`) is encrypted to its recipient's key, not the
-- platform's, and carries the credential columns: this platform cannot read it back.
ALTER TABLE tenant_exports ADD COLUMN encrypted_to text;

-- The confined role may not insert tenants (least_privilege): an import writes its one tenant
-- row through this function, which writes only the tenant the transaction is confined to, only
-- inside an import, and never a management tenant (the reason for that rule: a second
-- management tenant). That an import is what calls it rests on the API's code, as every
-- permission check of the confined role does. The columns are those the row names (the
-- others take their defaults, as for every other table an import writes).
CREATE FUNCTION psa_import_tenant(t jsonb) RETURNS void
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    cols text;
BEGIN
    IF current_setting('psa.importing', true) IS DISTINCT FROM 'on' THEN
        RAISE EXCEPTION 'a tenant row is written this way by an import only'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF (t ->> 'tenant')::uuid IS DISTINCT FROM
       NULLIF(current_setting('app.current_tenant', true), '')::uuid THEN
        RAISE EXCEPTION 'an import writes the tenant it is confined to'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF coalesce((t ->> 'is_management')::boolean, false) THEN
        RAISE EXCEPTION 'a management tenant is never imported' USING ERRCODE = 'check_violation';
    END IF;
    SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum) INTO cols
    FROM pg_attribute a
    WHERE a.attrelid = 'tenants'::regclass AND a.attnum > 0 AND NOT a.attisdropped
      AND a.attgenerated = '' AND t ? a.attname;
    EXECUTE format('INSERT INTO tenants (%s) SELECT %s FROM jsonb_populate_record(NULL::tenants, $1)',
                   cols, cols) USING t;
END
$$;
REVOKE ALL ON FUNCTION psa_import_tenant(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_import_tenant(jsonb) TO psa_app;
