-- Events: what happened to tenants and customers, written in the transaction of the change
-- (an event exists if and only if its change committed), and the webhook deliveries that carry
-- them to other systems. Platform tables, like tenant_provisioning: they name tenants
-- (`tenant_id`, no foreign key: a deleted tenant's events stay) and are read by the management
-- tenant's callers only.

CREATE TABLE events (
    -- UUIDv7: time-ordered; also the deliveries' `webhook-id`.
    event_id    uuid PRIMARY KEY,
    -- The writing transaction. Events are listed in (tx, event_id) order and only once every
    -- transaction before the oldest one still running has ended: an event committed late by a
    -- transaction that began early can never appear behind a consumer's cursor.
    tx          xid8 NOT NULL DEFAULT pg_current_xact_id(),
    event_type  text NOT NULL CONSTRAINT events_type_check
                    CHECK (event_type ~ '^[a-z_]+\.[a-z_]+$'),
    tenant_id   uuid,
    data        jsonb NOT NULL,
    -- What the event records, once: a retried activity finds its event written.
    dedup_key   text UNIQUE CONSTRAINT events_dedup_key_check CHECK (length(dedup_key) <= 300),
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX events_order ON events (tx, event_id);

-- The events API's horizon: the oldest transaction of this database still running (as the
-- caller's snapshot sees it), else the snapshot's end. Events at or after it may still be
-- joined by events that commit later with a smaller `tx`, so they are not listed yet.
-- Transactions of other databases on the same server (Temporal's, say) do not hold it back:
-- those known from pg_locks to belong to another database are left out; one that cannot be
-- placed counts, so the horizon errs towards waiting, never towards a gap.
CREATE FUNCTION psa_events_horizon() RETURNS xid8
LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(min(x), pg_snapshot_xmax(pg_current_snapshot()))
    FROM pg_snapshot_xip(pg_current_snapshot()) AS x
    WHERE (x::text::numeric % 4294967296) NOT IN (
        SELECT l.transactionid::text::numeric FROM pg_locks l
        JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'transactionid' AND l.mode = 'ExclusiveLock' AND l.granted
          AND a.datid IS DISTINCT FROM (SELECT oid FROM pg_database
                                        WHERE datname = current_database()))
$$;
CREATE INDEX events_type_order ON events (event_type, tx, event_id);
CREATE INDEX events_tenant ON events (tenant_id, tx, event_id);

CREATE TABLE webhook_endpoints (
    endpoint_id     uuid PRIMARY KEY,
    url             text NOT NULL CONSTRAINT webhook_endpoints_url_check
                        CHECK (length(url) BETWEEN 8 AND 2048),
    description     text NOT NULL DEFAULT '' CONSTRAINT webhook_endpoints_description_check
                        CHECK (length(description) <= 500),
    -- The event types delivered; empty: all of them.
    event_types     text[] NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    disabled_reason text,
    -- The signing secret (`whsec_...`), sealed with PSA_SECRET_KEY; after a rotation the
    -- previous one signs too (a second signature) until it expires, so receivers can switch.
    secret_sealed          text NOT NULL,
    previous_secret_sealed text,
    previous_secret_until  timestamptz,
    -- Since when every attempt has failed (NULL: the last one succeeded); an endpoint failing
    -- long enough is disabled.
    failing_since   timestamptz,
    created_by      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE webhook_deliveries (
    delivery_id     uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    endpoint_id     uuid NOT NULL REFERENCES webhook_endpoints ON DELETE CASCADE,
    event_id        uuid NOT NULL REFERENCES events,
    -- pending: to be attempted at next_attempt_at; delivered; failed: the schedule ran out (a
    -- retry makes it pending again).
    status          text NOT NULL DEFAULT 'pending' CONSTRAINT webhook_deliveries_status_check
                        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts        integer NOT NULL DEFAULT 0,
    -- A dispatcher claims a due delivery by moving this past its attempt's timeout: a
    -- dispatcher killed mid-attempt leaves it due again then.
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- The current claim: only its holder records the outcome (a claim whose lease ran out,
    -- or a delivery replayed meanwhile, no longer decides anything).
    claim_token     uuid,
    last_attempt_at timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries (endpoint_id, created_at, delivery_id);

CREATE TABLE webhook_attempts (
    attempt_id      uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    delivery_id     uuid NOT NULL REFERENCES webhook_deliveries ON DELETE CASCADE,
    attempted_at    timestamptz NOT NULL DEFAULT now(),
    -- The response's status; NULL when none came (timeout, refused address, connection).
    response_status integer,
    latency_ms      integer NOT NULL,
    error           text,
    -- The start of the response body, no more.
    response_excerpt text CONSTRAINT webhook_attempts_excerpt_check
                        CHECK (length(response_excerpt) <= 512)
);
CREATE INDEX webhook_attempts_delivery ON webhook_attempts (delivery_id, attempted_at);

-- Fan-out in the event's transaction: a delivery per enabled endpoint that wants the type (a
-- test event goes only to the endpoint tested, added by its writer).
CREATE FUNCTION psa_events_fan_out() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    INSERT INTO webhook_deliveries (endpoint_id, event_id)
    SELECT e.endpoint_id, NEW.event_id FROM webhook_endpoints e
    WHERE NEW.event_type <> 'webhook_endpoint.test' AND e.enabled
      AND (cardinality(e.event_types) = 0 OR NEW.event_type = ANY (e.event_types));
    IF FOUND THEN
        PERFORM pg_notify('psa_webhook_deliveries', '');
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER events_fan_out AFTER INSERT ON events FOR EACH ROW EXECUTE FUNCTION psa_events_fan_out();

-- Events are written outside any tenant's context (the confined role psa_app cannot: a query
-- confined to one tenant must not speak for the platform).
GRANT SELECT, INSERT ON events TO psa_api;
GRANT SELECT, INSERT, UPDATE, DELETE ON webhook_endpoints TO psa_api;
GRANT SELECT, INSERT, UPDATE ON webhook_deliveries TO psa_api;
GRANT SELECT ON webhook_attempts TO psa_api;

-- Management admins manage webhook endpoints (`webhook:*`), granted to the roles that may
-- create tenants; reading events is `tenant:read`.
INSERT INTO permissions (tenant, resource, action, description, msp, client)
SELECT p.tenant, 'webhook', a.action, 'webhook ' || a.action, true, false
FROM permissions p CROSS JOIN (VALUES ('create'), ('read'), ('update'), ('delete')) a (action)
WHERE p.resource = 'tenant' AND p.action = 'create' AND p.msp
ON CONFLICT DO NOTHING;
INSERT INTO role_permissions (tenant, role_id, permission_id)
SELECT rp.tenant, rp.role_id, n.permission_id
FROM role_permissions rp
JOIN permissions p ON p.tenant = rp.tenant AND p.permission_id = rp.permission_id
JOIN permissions n ON n.tenant = rp.tenant AND n.resource = 'webhook' AND n.msp
WHERE p.resource = 'tenant' AND p.action = 'create' AND p.msp
ON CONFLICT DO NOTHING;
