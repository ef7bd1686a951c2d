-- What needs attention: the management console's start page, `GET /api/v1/attention` and
-- `psa attention`. Each list is one query on an index made for it.

-- Whether a run's welcome email reached its administrator: `pending` until the run finishes,
-- then `sent`, `failed` (they never got their link: resend it), `disabled` (no mail here: the
-- starter was shown the link), `resent` (an operator sent a new invitation since it failed).
ALTER TABLE tenant_provisioning ADD COLUMN welcome_email text
    CONSTRAINT tenant_provisioning_welcome_email_check
    CHECK (welcome_email IN ('pending', 'sent', 'failed', 'disabled', 'resent'));
GRANT UPDATE (welcome_email) ON tenant_provisioning TO psa_api;

CREATE INDEX tenant_provisioning_failed_recently ON tenant_provisioning (ended_at DESC)
    WHERE status IN ('rolled_back', 'failed', 'cut_off');
CREATE INDEX tenant_provisioning_tracking_failed ON tenant_provisioning (ended_at DESC)
    WHERE status = 'completed' AND customer_tracking = 'failed';
CREATE INDEX tenant_provisioning_welcome_failed ON tenant_provisioning (ended_at DESC)
    WHERE welcome_email = 'failed';
CREATE INDEX tenant_deletions_due ON tenant_deletions (delete_after) WHERE status = 'pending';
CREATE INDEX webhook_endpoints_attention ON webhook_endpoints (failing_since)
    WHERE failing_since IS NOT NULL OR NOT enabled;
CREATE INDEX tenant_subscriptions_trial_ends ON tenant_subscriptions (trial_ends_at)
    WHERE status = 'trialing';
CREATE INDEX tenant_subscriptions_past_due ON tenant_subscriptions (past_due_since)
    WHERE status = 'past_due';

-- Across tenants, for the API's confined role (management callers only, checked in the API):
-- trials ending before `until` (or ended, still trialing) and past-due subscriptions.
CREATE FUNCTION psa_attention_subscriptions(until timestamptz, lim integer)
RETURNS TABLE (kind text, tenant uuid, name text, plan_code text, at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = public, pg_temp AS $$
    (SELECT 'trials_ending', s.tenant, t.company_name, s.plan_code, s.trial_ends_at
     FROM tenant_subscriptions s JOIN tenants t ON t.tenant = s.tenant
     WHERE s.status = 'trialing' AND s.trial_ends_at < until
     ORDER BY s.trial_ends_at LIMIT least(lim, 500))
    UNION ALL
    (SELECT 'past_due', s.tenant, t.company_name, s.plan_code, s.past_due_since
     FROM tenant_subscriptions s JOIN tenants t ON t.tenant = s.tenant
     WHERE s.status = 'past_due'
     ORDER BY s.past_due_since LIMIT least(lim, 500))
$$;

-- The customer tenants by status and plan, as the worker last counted them (every minute:
-- counting 100000 tenants takes longer than the start page may).
CREATE TABLE tenant_counts (
    status     text NOT NULL,
    plan_code  text,
    tenants    bigint NOT NULL,
    counted_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT ON tenant_counts TO psa_api;

REVOKE ALL ON FUNCTION psa_attention_subscriptions(timestamptz, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION psa_attention_subscriptions(timestamptz, integer) TO psa_api;

-- The tenant seen whole: the management tenant's audit rows about a tenant (its support
-- sessions' copies name it in their details; the lifecycle's rows as their entity).
CREATE INDEX audit_log_about_tenant ON audit_log (tenant, ((details ->> 'tenant_id')), created_at DESC)
    WHERE details ? 'tenant_id';
