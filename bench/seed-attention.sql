-- What needs attention, at scale (bench/attention.sh), on bench/seed-search.sql's 100000 tenants:
-- a provisioning record for each (a year of runs: most completed and well, some rolled back or
-- cut off, some with a failed customer record or welcome email), a subscription for each (some
-- trialing, some past due), canceled tenants with their deletions, and webhook endpoints.
INSERT INTO tenant_provisioning (workflow_id, tenant_id, tenant_name, admin_email, requested_by,
                                 status, customer_tracking, welcome_email, error, requested_at,
                                 ended_at)
SELECT 'tenant-creation-' || md5('t'||i)::uuid, md5('t'||i)::uuid, 'Tenant ' || i,
       'admin' || i || '@c' || i || '.example', 'bench',
       CASE WHEN i % 97 = 0 THEN 'rolled_back' WHEN i % 331 = 0 THEN 'cut_off' ELSE 'completed' END,
       CASE WHEN i % 89 = 0 THEN 'failed' ELSE 'completed' END,
       CASE WHEN i % 83 = 0 THEN 'failed' ELSE 'sent' END,
       CASE WHEN i % 97 = 0 THEN 'setup_tenant_data: bench' END,
       now() - make_interval(mins => i * 5), now() - make_interval(mins => i * 5 - 1)
FROM generate_series(1, 100000) i;
INSERT INTO tenant_subscriptions (tenant, plan_code, status, trial_ends_at, past_due_since)
SELECT md5('t'||i)::uuid, 'standard',
       CASE WHEN i % 20 = 0 THEN 'trialing' WHEN i % 101 = 0 THEN 'past_due' ELSE 'active' END,
       CASE WHEN i % 20 = 0 THEN now() + make_interval(hours => i % 2000) END,
       CASE WHEN i % 101 = 0 AND i % 20 <> 0 THEN now() - make_interval(hours => i % 500) END
FROM generate_series(1, 100000) i;
UPDATE tenants SET status = 'canceled', status_reason = 'bench'
WHERE slug IN (SELECT 'c-' || i FROM generate_series(1, 100000) i WHERE i % 211 = 0);
INSERT INTO tenant_deletions (workflow_id, tenant_id, tenant_name, reason, requested_by,
                              delete_after, export_id)
SELECT 'tenant-deletion-' || md5('t'||i)::uuid, md5('t'||i)::uuid, 'Tenant ' || i, 'bench',
       'bench', now() + make_interval(hours => i % 1500), gen_random_uuid()
FROM generate_series(1, 100000) i WHERE i % 211 = 0;
INSERT INTO webhook_endpoints (endpoint_id, url, description, enabled, failing_since,
                               secret_sealed, created_by)
SELECT gen_random_uuid(), 'https://hooks' || i || '.example/psa', 'endpoint ' || i, i % 10 <> 0,
       CASE WHEN i % 7 = 0 THEN now() - interval '2 hours' END, 'sealed', 'bench'
FROM generate_series(1, 40) i;
ANALYZE;
