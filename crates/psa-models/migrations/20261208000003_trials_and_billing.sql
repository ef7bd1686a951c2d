-- Trials and the billing system's word: what the subscription watchers (the `tenant_trial` and
-- `tenant_payment_grace` workflows) need to be idempotent and to be found when one is missing,
-- and the billing events already applied.

ALTER TABLE tenant_subscriptions
    -- The trial end a reminder was sent for (an extension moves the end: a new reminder).
    ADD COLUMN trial_reminded_for timestamptz,
    -- The trial end that was carried out (the tenant suspended, or told it ended).
    ADD COLUMN trial_ended_for timestamptz,
    -- The trial end, and the start of the payment trouble, that a watcher is waiting for
    -- (written by the watcher's own step): a subscription whose watcher is missing (its starter
    -- could not reach Temporal, the end moved after the watcher ended) is found by the sweep.
    ADD COLUMN trial_watch_for timestamptz,
    ADD COLUMN payment_watch_for timestamptz,
    -- Set when the platform itself suspended the tenant, and why: only such a suspension is
    -- lifted when its cause ends (a conversion, an extension, a payment); an operator's stays.
    ADD COLUMN suspended_for text CHECK (suspended_for IN ('trial_ended', 'payment_overdue')),
    -- The `created` of the last invoice event applied (`billing_event_at` is the last
    -- subscription event's): an invoice's word on payment and a subscription's full state are
    -- ordered each on their own, so that a late subscription update still brings its plan.
    ADD COLUMN billing_invoice_event_at timestamptz;

-- A billing subscription belongs to one tenant: it is how the billing system's events find it.
DROP INDEX tenant_subscriptions_billing;
CREATE UNIQUE INDEX tenant_subscriptions_billing_subscription
    ON tenant_subscriptions (billing_subscription_id)
    WHERE billing_subscription_id IS NOT NULL;

-- The billing system's events (Stripe's), by their id: a replay is answered and changes
-- nothing. A platform table: the webhook acts for no tenant until the event names one.
CREATE TABLE billing_events (
    event_id     text PRIMARY KEY CHECK (char_length(event_id) BETWEEN 1 AND 255),
    event_type   text NOT NULL CHECK (char_length(event_type) <= 255),
    -- The event's own time (Stripe's `created`): events are applied in this order.
    created      timestamptz NOT NULL,
    -- The tenant it was applied to, when one was found (no foreign key: the record outlives a
    -- deleted tenant).
    tenant_id    uuid,
    -- applied | stale | ignored | unmatched | rejected
    outcome      text NOT NULL,
    detail       text,
    received_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX billing_events_received ON billing_events (received_at);
GRANT SELECT, INSERT, UPDATE ON billing_events TO psa_api;

-- The tenant a billing event is for: the one whose subscription the billing system calls
-- `subscription_id`, else `named` (the subscription's metadata) when it is a customer tenant
-- whose own billing subscription is not another live one (a second subscription naming a tenant
-- must not take it over: an old one's cancellation would cancel the tenant). The webhook reads
-- it before it knows which tenant to enter.
CREATE FUNCTION psa_billing_tenant(subscription_id text, named uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT coalesce(
        (SELECT s.tenant FROM tenant_subscriptions s
          WHERE s.billing_subscription_id = subscription_id),
        (SELECT t.tenant FROM tenants t
           LEFT JOIN tenant_subscriptions s ON s.tenant = t.tenant
          WHERE t.tenant = named AND NOT t.is_management
            AND (s.billing_subscription_id IS NULL OR s.status = 'canceled')))
$$;
REVOKE ALL ON FUNCTION psa_billing_tenant(text, uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_billing_tenant(text, uuid) TO psa_api;

-- The management tenant, for the platform's code paths that act for no caller (the billing
-- webhook) and so have no tenant to read it in.
CREATE FUNCTION psa_management_tenant() RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT t.tenant FROM tenants t WHERE t.is_management ORDER BY t.created_at LIMIT 1
$$;
REVOKE ALL ON FUNCTION psa_management_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_management_tenant() TO psa_api, psa_app;

-- The plan whose billing prices include `price_id`.
CREATE FUNCTION psa_plan_for_price(price_id text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    SELECT p.code FROM plans p WHERE price_id = ANY (p.billing_price_ids) ORDER BY p.active DESC, p.code LIMIT 1
$$;
REVOKE ALL ON FUNCTION psa_plan_for_price(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_plan_for_price(text) TO psa_app, psa_api;
