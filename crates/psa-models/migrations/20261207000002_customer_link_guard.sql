-- A managed tenant's customer record belongs to the platform: the link (`properties.tenant_id`)
-- and the lifecycle facts on it (`tenant_status`, `delete_after`, `deleted_at`) are written by
-- the platform's own code paths only, and a customer record is removed with its tenant's
-- lifecycle, never by staff. The API's confined role (`psa_app`, every API and console request)
-- is refused unless the transaction is one of those paths (`psa.platform`, set by
-- `psa_models::db::as_platform`); the worker and the command line run as the owner role.
-- A guard against staff-driven code paths, not a privilege: `psa.platform` is an ordinary
-- setting that any code running as `psa_app` could set.
CREATE FUNCTION companies_customer_link_guard() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    platform_keys CONSTANT text[] := ARRAY['tenant_id', 'tenant_status', 'delete_after', 'deleted_at'];
    k text;
BEGIN
    -- Customer records live in the management tenant; elsewhere these keys are plain data.
    IF current_user <> 'psa_app' OR current_setting('psa.platform', true) = 'on'
       OR NOT EXISTS (SELECT 1 FROM tenants t
                      WHERE t.tenant = (CASE WHEN TG_OP = 'DELETE' THEN OLD.tenant ELSE NEW.tenant END)
                        AND t.is_management) THEN
        RETURN CASE WHEN TG_OP = 'DELETE' THEN OLD ELSE NEW END;
    END IF;
    IF TG_OP = 'DELETE' THEN
        IF OLD.properties ? 'tenant_id' THEN
            RAISE EXCEPTION 'a customer record is removed with its tenant''s lifecycle'
                USING ERRCODE = 'P0001', CONSTRAINT = 'companies_customer_record',
                      DETAIL = OLD.properties ->> 'tenant_id';
        END IF;
        RETURN OLD;
    END IF;
    FOREACH k IN ARRAY platform_keys LOOP
        IF (CASE WHEN TG_OP = 'INSERT' THEN NULL ELSE OLD.properties -> k END)
           IS DISTINCT FROM (NEW.properties -> k) THEN
            RAISE EXCEPTION 'properties.% is the platform''s', k
                USING ERRCODE = 'P0001', CONSTRAINT = 'companies_customer_link', DETAIL = k;
        END IF;
    END LOOP;
    RETURN NEW;
END
$$;

CREATE TRIGGER companies_customer_link_guard
    BEFORE INSERT OR UPDATE OR DELETE ON companies
    FOR EACH ROW EXECUTE FUNCTION companies_customer_link_guard();
