-- The companies-era schema of the reference (Alga PSA), with its table and column names.
--
-- Rules every tenant-owned table follows (see docs/models.md):
--  * `tenant uuid NOT NULL` is part of the primary key, of every unique constraint and of every
--    foreign key, so the schema can be distributed by Citus on `tenant` and a row can never
--    reference another tenant's row.
--  * every table has a foreign key to `tenants` with ON DELETE CASCADE: deleting the tenant row
--    deletes everything the tenant owns, so a rollback cannot forget a table.
--  * row-level security restricts the `psa_app` role (the API's) to the tenant named by the
--    per-transaction setting `app.current_tenant`.
--  * no ON DELETE RESTRICT: RESTRICT is checked row by row and would break the tenant cascade;
--    NO ACTION is checked at the end of the statement.

CREATE TABLE tenants (
    tenant              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    company_name        text NOT NULL CONSTRAINT tenants_company_name_check
                            CHECK (length(btrim(company_name)) BETWEEN 1 AND 255),
    email               text NOT NULL,
    phone_number        text,
    industry            text,
    payment_platform_id text,
    payment_method_id   text,
    auth_service_id     text,
    plan                text,
    tax_id_number       varchar(255),
    licensed_user_count integer CONSTRAINT tenants_licensed_user_count_check
                            CHECK (licensed_user_count IS NULL OR licensed_user_count >= 0),
    last_license_update timestamptz,
    stripe_event_id     varchar(255),
    -- Ours: marks the platform's management tenant ("nineminds"). `psa management init` creates
    -- at most one (under an advisory lock); a unique index on this column alone would break the
    -- rule that every unique key includes the distribution column.
    is_management       boolean NOT NULL DEFAULT false,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_tenant_stripe_event_id ON tenants (tenant, stripe_event_id);

-- ---------------------------------------------------------------- users and RBAC

CREATE TABLE users (
    tenant                    uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    user_id                   uuid NOT NULL DEFAULT gen_random_uuid(),
    username                  text NOT NULL,
    hashed_password           text NOT NULL,
    first_name                text,
    last_name                 text,
    email                     text NOT NULL,
    date_of_birth             timestamp,
    icon                      text,
    auth_method               text,
    two_factor_enabled        boolean DEFAULT false,
    two_factor_secret         text,
    is_google_user            boolean DEFAULT false,
    rate                      bigint,
    is_inactive               boolean NOT NULL DEFAULT false,
    user_type                 text NOT NULL DEFAULT 'internal'
                                  CONSTRAINT users_user_type_check CHECK (user_type IN ('internal', 'client')),
    contact_id                uuid,
    needs_contact_association boolean DEFAULT false,
    phone                     varchar(255),
    timezone                  varchar(255),
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (tenant, user_id),
    -- Internal users are unique by email per tenant, client-portal users likewise (reference §4.2).
    CONSTRAINT users_tenant_email_user_type_unique UNIQUE (tenant, email, user_type)
);

CREATE TABLE roles (
    tenant      uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    role_id     uuid NOT NULL DEFAULT gen_random_uuid(),
    role_name   text NOT NULL,
    description text,
    msp         boolean NOT NULL DEFAULT true,
    client      boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT roles_pkey PRIMARY KEY (tenant, role_id),
    -- The seeds' natural key: "Admin" exists twice, once for msp and once for the client portal.
    CONSTRAINT roles_tenant_name_scope_unique UNIQUE (tenant, role_name, msp, client)
);

CREATE TABLE permissions (
    tenant        uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    permission_id uuid NOT NULL DEFAULT gen_random_uuid(),
    resource      text NOT NULL,
    action        text NOT NULL,
    description   text,
    msp           boolean NOT NULL DEFAULT true,
    client        boolean NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT permissions_pkey PRIMARY KEY (tenant, permission_id),
    CONSTRAINT permissions_tenant_resource_action_scope_unique UNIQUE (tenant, resource, action, msp, client)
);

CREATE TABLE role_permissions (
    tenant        uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    role_id       uuid NOT NULL,
    permission_id uuid NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT role_permissions_pkey PRIMARY KEY (tenant, role_id, permission_id),
    CONSTRAINT role_permissions_role_fkey FOREIGN KEY (tenant, role_id)
        REFERENCES roles (tenant, role_id) ON DELETE CASCADE,
    CONSTRAINT role_permissions_permission_fkey FOREIGN KEY (tenant, permission_id)
        REFERENCES permissions (tenant, permission_id) ON DELETE CASCADE
);

CREATE TABLE user_roles (
    tenant     uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    user_id    uuid NOT NULL,
    role_id    uuid NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_roles_pkey PRIMARY KEY (tenant, user_id, role_id),
    CONSTRAINT user_roles_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE,
    CONSTRAINT user_roles_role_fkey FOREIGN KEY (tenant, role_id)
        REFERENCES roles (tenant, role_id) ON DELETE CASCADE
);

-- ---------------------------------------------------------------- tax

CREATE TABLE tax_regions (
    tenant      uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    region_code varchar(255) NOT NULL,
    region_name text NOT NULL,
    is_active   boolean NOT NULL DEFAULT true,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tax_regions_pkey PRIMARY KEY (tenant, region_code)
);

CREATE TABLE tax_rates (
    tenant                       uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    tax_rate_id                  uuid NOT NULL DEFAULT gen_random_uuid(),
    tax_percentage               numeric(10, 4) NOT NULL,
    description                  text,
    start_date                   date NOT NULL,
    end_date                     date,
    tax_type                     text CONSTRAINT tax_rates_tax_type_check
                                     CHECK (tax_type IN ('VAT', 'GST', 'Sales Tax')),
    country_code                 char(2),
    is_reverse_charge_applicable boolean DEFAULT false,
    is_composite                 boolean DEFAULT false,
    is_active                    boolean DEFAULT true,
    conditions                   jsonb,
    region_code                  varchar(255) NOT NULL,
    created_at                   timestamptz NOT NULL DEFAULT now(),
    updated_at                   timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tax_rates_pkey PRIMARY KEY (tenant, tax_rate_id),
    CONSTRAINT tax_rates_region_fkey FOREIGN KEY (tenant, region_code)
        REFERENCES tax_regions (tenant, region_code)
);

CREATE TABLE tax_components (
    tenant           uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    tax_component_id uuid NOT NULL DEFAULT gen_random_uuid(),
    tax_rate_id      uuid NOT NULL,
    name             text NOT NULL,
    rate             bigint NOT NULL,
    sequence         integer NOT NULL,
    is_compound      boolean NOT NULL DEFAULT false,
    start_date       date,
    end_date         date,
    conditions       jsonb,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tax_components_pkey PRIMARY KEY (tenant, tax_component_id),
    -- The reference added one component per company created; one per (rate, sequence) is meant.
    CONSTRAINT tax_components_rate_sequence_unique UNIQUE (tenant, tax_rate_id, sequence),
    CONSTRAINT tax_components_rate_fkey FOREIGN KEY (tenant, tax_rate_id)
        REFERENCES tax_rates (tenant, tax_rate_id) ON DELETE CASCADE
);

-- ---------------------------------------------------------------- companies and contacts

CREATE TABLE companies (
    tenant                    uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    company_id                uuid NOT NULL DEFAULT gen_random_uuid(),
    company_name              text NOT NULL,
    url                       text,
    properties                jsonb,
    billing_type              text,
    payment_terms             text,
    preferred_payment_method  text,
    invoice_delivery_method   text,
    credit_limit              bigint,
    auto_invoice              boolean DEFAULT false,
    is_inactive               boolean NOT NULL DEFAULT false,
    client_type               text CONSTRAINT companies_client_type_check
                                  CHECK (client_type IN ('company', 'individual')),
    is_tax_exempt             boolean NOT NULL DEFAULT false,
    tax_exemption_certificate varchar(255),
    tax_id_number             varchar(255),
    notes                     text,
    credit_balance            integer NOT NULL DEFAULT 0,
    billing_cycle             text NOT NULL DEFAULT 'monthly' CONSTRAINT companies_billing_cycle_check
                                  CHECK (billing_cycle IN ('weekly', 'bi-weekly', 'monthly', 'quarterly',
                                                           'semi-annually', 'annually')),
    timezone                  varchar(255),
    -- Documents and invoice templates are not part of this product; the columns are kept so that
    -- tools written against the reference schema still find them.
    notes_document_id         uuid,
    invoice_template_id       uuid,
    billing_contact_id        uuid,
    billing_email             varchar(255),
    region_code               varchar(255),
    account_manager_id        uuid,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT companies_pkey PRIMARY KEY (tenant, company_id),
    CONSTRAINT companies_tenant_company_name_unique UNIQUE (tenant, company_name),
    CONSTRAINT companies_region_fkey FOREIGN KEY (tenant, region_code)
        REFERENCES tax_regions (tenant, region_code) ON DELETE SET NULL (region_code),
    CONSTRAINT companies_account_manager_fkey FOREIGN KEY (tenant, account_manager_id)
        REFERENCES users (tenant, user_id) ON DELETE SET NULL (account_manager_id)
);
CREATE INDEX companies_tenant_inactive_name ON companies (tenant, is_inactive, company_name);
CREATE INDEX companies_tenant_client_type ON companies (tenant, client_type);
CREATE INDEX companies_tenant_url ON companies (tenant, url);
-- One customer company per managed tenant in the management tenant: the managed tenant's UUID is
-- stored in properties.tenant_id (the reference stored the name there and could not enforce this).
CREATE UNIQUE INDEX companies_customer_tenant_unique
    ON companies (tenant, ((properties ->> 'tenant_id')))
    WHERE properties ? 'tenant_id';

CREATE TABLE contacts (
    tenant          uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    contact_name_id uuid NOT NULL DEFAULT gen_random_uuid(),
    full_name       text NOT NULL,
    company_id      uuid,
    phone_number    text,
    email           text NOT NULL CONSTRAINT contacts_email_normalized_check
                        CHECK (email = lower(btrim(email))),
    role            text,
    notes           text,
    approver        boolean,
    is_inactive     boolean NOT NULL DEFAULT false,
    is_client_admin boolean NOT NULL DEFAULT false,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT contacts_pkey PRIMARY KEY (tenant, contact_name_id),
    CONSTRAINT contacts_tenant_email_unique UNIQUE (tenant, email),
    CONSTRAINT contacts_company_fkey FOREIGN KEY (tenant, company_id)
        REFERENCES companies (tenant, company_id)
);
CREATE INDEX contacts_tenant_company ON contacts (tenant, company_id);
CREATE INDEX contacts_tenant_client_admin ON contacts (tenant, is_client_admin);

ALTER TABLE companies ADD CONSTRAINT companies_billing_contact_fkey FOREIGN KEY (tenant, billing_contact_id)
    REFERENCES contacts (tenant, contact_name_id) ON DELETE SET NULL (billing_contact_id);
ALTER TABLE users ADD CONSTRAINT users_contact_fkey FOREIGN KEY (tenant, contact_id)
    REFERENCES contacts (tenant, contact_name_id) ON DELETE SET NULL (contact_id);

CREATE TABLE company_locations (
    tenant              uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    location_id         uuid NOT NULL DEFAULT gen_random_uuid(),
    company_id          uuid NOT NULL,
    location_name       text,
    address_line1       text NOT NULL,
    address_line2       text,
    address_line3       text,
    city                text NOT NULL,
    state_province      text,
    postal_code         text,
    country_code        char(2) NOT NULL,
    country_name        text NOT NULL,
    region_code         varchar(255),
    is_billing_address  boolean NOT NULL DEFAULT false,
    is_shipping_address boolean NOT NULL DEFAULT false,
    is_default          boolean NOT NULL DEFAULT false,
    phone               text,
    fax                 text,
    email               text,
    notes               text,
    is_active           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT company_locations_pkey PRIMARY KEY (tenant, location_id),
    CONSTRAINT company_locations_company_fkey FOREIGN KEY (tenant, company_id)
        REFERENCES companies (tenant, company_id) ON DELETE CASCADE,
    CONSTRAINT company_locations_region_fkey FOREIGN KEY (tenant, region_code)
        REFERENCES tax_regions (tenant, region_code) ON DELETE SET NULL (region_code)
);
CREATE INDEX company_locations_tenant_company ON company_locations (tenant, company_id);

CREATE TABLE company_tax_settings (
    tenant                       uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    company_id                   uuid NOT NULL,
    is_reverse_charge_applicable boolean NOT NULL DEFAULT false,
    CONSTRAINT company_tax_settings_pkey PRIMARY KEY (tenant, company_id),
    CONSTRAINT company_tax_settings_company_fkey FOREIGN KEY (tenant, company_id)
        REFERENCES companies (tenant, company_id) ON DELETE CASCADE
);

CREATE TABLE company_tax_rates (
    tenant               uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    company_tax_rates_id uuid NOT NULL DEFAULT gen_random_uuid(),
    company_id           uuid NOT NULL,
    tax_rate_id          uuid NOT NULL,
    is_default           boolean NOT NULL DEFAULT false,
    location_id          uuid,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT company_tax_rates_pkey PRIMARY KEY (tenant, company_tax_rates_id),
    CONSTRAINT company_tax_rates_company_rate_unique UNIQUE (tenant, company_id, tax_rate_id),
    CONSTRAINT company_tax_rates_company_fkey FOREIGN KEY (tenant, company_id)
        REFERENCES companies (tenant, company_id) ON DELETE CASCADE,
    CONSTRAINT company_tax_rates_rate_fkey FOREIGN KEY (tenant, tax_rate_id)
        REFERENCES tax_rates (tenant, tax_rate_id) ON DELETE CASCADE,
    CONSTRAINT company_tax_rates_location_fkey FOREIGN KEY (tenant, location_id)
        REFERENCES company_locations (tenant, location_id) ON DELETE SET NULL (location_id)
);
-- At most one default rate per company.
CREATE UNIQUE INDEX company_tax_rates_one_default ON company_tax_rates (tenant, company_id) WHERE is_default;

CREATE TABLE company_email_settings (
    tenant                    uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    company_id                uuid NOT NULL,
    email_suffix              text NOT NULL,
    -- Never enabled implicitly: self-registration by email domain was an attack surface.
    self_registration_enabled boolean NOT NULL DEFAULT false,
    -- Nullable, unlike the reference: the workflow creates companies without a user.
    user_id                   uuid,
    created_at                timestamptz NOT NULL DEFAULT now(),
    updated_at                timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT company_email_settings_pkey PRIMARY KEY (tenant, company_id, email_suffix),
    CONSTRAINT company_email_settings_company_fkey FOREIGN KEY (tenant, company_id)
        REFERENCES companies (tenant, company_id) ON DELETE CASCADE,
    CONSTRAINT company_email_settings_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);
CREATE INDEX company_email_settings_suffix ON company_email_settings (tenant, email_suffix, self_registration_enabled);

-- ---------------------------------------------------------------- tags

CREATE TABLE tag_definitions (
    tenant           uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    tag_id           uuid NOT NULL DEFAULT gen_random_uuid(),
    tag_text         text NOT NULL,
    tagged_type      text NOT NULL,
    board_id         uuid,
    background_color varchar(7),
    text_color       varchar(7),
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tag_definitions_pkey PRIMARY KEY (tenant, tag_id),
    CONSTRAINT tag_definitions_tenant_text_type_unique UNIQUE (tenant, tag_text, tagged_type)
);
CREATE INDEX tag_definitions_tenant_type ON tag_definitions (tenant, tagged_type);

CREATE TABLE tag_mappings (
    tenant      uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    mapping_id  uuid NOT NULL DEFAULT gen_random_uuid(),
    tag_id      uuid NOT NULL,
    -- No foreign key to the tagged entity (it may live in one of several tables): the models
    -- check it exists on attach and remove mappings when they delete the entity.
    tagged_id   uuid NOT NULL,
    tagged_type text NOT NULL,
    created_by  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tag_mappings_pkey PRIMARY KEY (tenant, mapping_id),
    CONSTRAINT tag_mappings_tenant_tag_tagged_unique UNIQUE (tenant, tag_id, tagged_id),
    CONSTRAINT tag_mappings_tag_fkey FOREIGN KEY (tenant, tag_id)
        REFERENCES tag_definitions (tenant, tag_id) ON DELETE CASCADE,
    CONSTRAINT tag_mappings_created_by_fkey FOREIGN KEY (tenant, created_by)
        REFERENCES users (tenant, user_id) ON DELETE SET NULL (created_by)
);
CREATE INDEX tag_mappings_tenant_tagged ON tag_mappings (tenant, tagged_id, tagged_type);

-- ---------------------------------------------------------------- tenant set-up

CREATE TABLE tenant_companies (
    tenant     uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    company_id uuid NOT NULL,
    is_default boolean NOT NULL DEFAULT false,
    deleted_at timestamptz,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_companies_pkey PRIMARY KEY (tenant, company_id),
    CONSTRAINT tenant_companies_company_fkey FOREIGN KEY (tenant, company_id)
        REFERENCES companies (tenant, company_id) ON DELETE CASCADE
);
CREATE UNIQUE INDEX tenant_companies_one_default ON tenant_companies (tenant) WHERE is_default;

CREATE TABLE tenant_settings (
    tenant                  uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    onboarding_completed    boolean NOT NULL DEFAULT false,
    onboarding_completed_at timestamptz,
    onboarding_skipped      boolean NOT NULL DEFAULT false,
    onboarding_data         jsonb,
    settings                jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    updated_at              timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_settings_pkey PRIMARY KEY (tenant)
);

CREATE TABLE tenant_email_settings (
    tenant              uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    id                  bigint GENERATED BY DEFAULT AS IDENTITY,
    default_from_domain text,
    custom_domains      jsonb NOT NULL DEFAULT '[]',
    email_provider      text NOT NULL DEFAULT 'smtp' CONSTRAINT tenant_email_settings_provider_check
                            CHECK (email_provider IN ('smtp', 'resend', 'hybrid')),
    provider_configs    jsonb NOT NULL DEFAULT '[]',
    fallback_enabled    boolean NOT NULL DEFAULT true,
    tracking_enabled    boolean NOT NULL DEFAULT false,
    max_daily_emails    integer,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT tenant_email_settings_pkey PRIMARY KEY (tenant, id),
    CONSTRAINT tenant_email_settings_tenant_unique UNIQUE (tenant)
);

-- ---------------------------------------------------------------- ours: credentials and audit

CREATE TABLE api_keys (
    tenant       uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    api_key_id   uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL,
    description  text,
    -- SHA-256 of the key: keys are 256-bit random, so a slow hash adds nothing but latency.
    key_hash     bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT api_keys_pkey PRIMARY KEY (tenant, api_key_id),
    CONSTRAINT api_keys_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);
CREATE INDEX api_keys_hash ON api_keys (key_hash);

CREATE TABLE sessions (
    tenant     uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    session_id uuid NOT NULL DEFAULT gen_random_uuid(),
    user_id    uuid NOT NULL,
    token_hash bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz,
    CONSTRAINT sessions_pkey PRIMARY KEY (tenant, session_id),
    CONSTRAINT sessions_user_fkey FOREIGN KEY (tenant, user_id)
        REFERENCES users (tenant, user_id) ON DELETE CASCADE
);
CREATE INDEX sessions_token_hash ON sessions (token_hash);

CREATE TABLE audit_log (
    tenant      uuid NOT NULL REFERENCES tenants (tenant) ON DELETE CASCADE,
    audit_id    uuid NOT NULL DEFAULT gen_random_uuid(),
    actor       text NOT NULL,
    action      text NOT NULL,
    entity_type text NOT NULL,
    entity_id   uuid,
    details     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT audit_log_pkey PRIMARY KEY (tenant, audit_id)
);
CREATE INDEX audit_log_tenant_entity ON audit_log (tenant, entity_type, entity_id);

-- ---------------------------------------------------------------- row-level security

-- The API's role. NOLOGIN: the API connects as its own user and switches with SET LOCAL ROLE
-- inside each request's transaction, so one pool serves every tenant.
DO $$
BEGIN
    CREATE ROLE psa_app NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL; -- created by another database of the same cluster (roles are cluster-wide)
END
$$;

DO $$
BEGIN
    EXECUTE format('GRANT psa_app TO %I', current_user);
EXCEPTION WHEN others THEN
    NULL; -- a superuser may already SET ROLE to any role
END
$$;

GRANT USAGE ON SCHEMA public TO psa_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO psa_app;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO psa_app;

-- Every table with a tenant column gets the same policy. `current_setting(.., true)` is NULL when
-- never set and '' once a SET LOCAL has ended on a pooled connection; both match no row.
DO $$
DECLARE
    t text;
BEGIN
    FOR t IN
        SELECT c.table_name FROM information_schema.columns c
        JOIN information_schema.tables tb
          ON tb.table_schema = c.table_schema AND tb.table_name = c.table_name
        WHERE c.table_schema = 'public' AND c.column_name = 'tenant' AND tb.table_type = 'BASE TABLE'
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format(
            'CREATE POLICY tenant_isolation ON %I TO psa_app '
            'USING (tenant = nullif(current_setting(''app.current_tenant'', true), '''')::uuid) '
            'WITH CHECK (tenant = nullif(current_setting(''app.current_tenant'', true), '''')::uuid)',
            t);
    END LOOP;
END
$$;
