-- The provisioning record: one row per tenant creation run, so the platform remembers how each
-- tenant was provisioned without asking Temporal (whose history is purged after its retention).
--
-- A platform table, not a tenant-owned one: it names the tenant in `tenant_id` (no foreign key:
-- the record outlives a tenant that was rolled back) and has no `tenant` column, so row-level
-- security does not apply and the API's confined role `psa_app` gets no grant on it. Under Citus
-- it is a reference table.
--
-- Written by the starter (the idempotency claim: key and request hash, status `requested`) and
-- then by the workflow's own activities (settings the run used, ids it minted, outcome); read by
-- `psa tenant list|status`, the API's provisioning status, reconcile and the cut-off sweeper.
CREATE TABLE tenant_provisioning (
    workflow_id             text PRIMARY KEY
                                CONSTRAINT tenant_provisioning_workflow_id_check
                                CHECK (length(workflow_id) BETWEEN 1 AND 255),
    -- Minted by the run; NULL until the run's first activity has recorded it.
    tenant_id               uuid,
    tenant_name             text NOT NULL,
    admin_email             text NOT NULL,
    idempotency_key         text,
    -- SHA-256 of the normalised request: the same key with a different request is refused.
    request_hash            bytea,
    requested_by            text NOT NULL,
    status                  text NOT NULL DEFAULT 'requested'
                                CONSTRAINT tenant_provisioning_status_check
                                CHECK (status IN ('requested', 'running', 'completed', 'rolled_back',
                                                  'failed', 'cancelled', 'cut_off')),
    -- The starter's per-run choice, and the worker's settings the run resolved.
    skip_customer_tracking  boolean NOT NULL DEFAULT false,
    tracking_enabled        boolean,
    management_tenant_id    uuid,
    customer_tag_name       text,
    -- The customer record's current state: what the run did, then what reconcile repaired.
    customer_tracking       text NOT NULL DEFAULT 'pending'
                                CONSTRAINT tenant_provisioning_customer_tracking_check
                                CHECK (customer_tracking IN ('pending', 'running', 'completed', 'failed',
                                                             'skipped', 'disabled', 'rolled_back',
                                                             'repaired')),
    -- Ids the run minted for its customer records (what a rollback may remove, and only that).
    customer_company_id     uuid,
    customer_contact_id     uuid,
    customer_tag_mapping_id uuid,
    -- An existing contact the run linked to its customer company (unlinked on rollback).
    linked_contact_id       uuid,
    error                   text,
    requested_at            timestamptz NOT NULL DEFAULT now(),
    started_at              timestamptz,
    ended_at                timestamptz,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX tenant_provisioning_tenant ON tenant_provisioning (tenant_id, requested_at DESC);
-- Runs not yet ended: what the sweeper and reconcile's in-flight check look at.
CREATE INDEX tenant_provisioning_open ON tenant_provisioning (requested_at)
    WHERE status IN ('requested', 'running');
