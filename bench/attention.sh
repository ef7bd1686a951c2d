#!/usr/bin/env bash
# What-needs-attention benchmark: `psa attention --json` (the same lists as the management
# console's start page and GET /api/v1/attention, in one transaction) over 100000 synthetic
# tenants (bench/seed-search.sql, then bench/seed-attention.sql: a provisioning record and a
# subscription for each, ~1% in each problem state). Prints the wall-clock p50 and p95 of 30
# runs of the command (process start and connection included: the page's own time is less),
# and the server-side time of each list's query. The tenants by status and plan are read as the
# worker counted them (every minute): the count itself is timed apart. Needs a PostgreSQL superuser (DATABASE_URL's
# server, or the local one); the database is dropped at the end.
#
#   bench/attention.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-postgres.sh
ensure_postgres
cargo build -q -p psa-cli --bin psa
server_url="${DATABASE_URL%/*}"
db="psa_bench_attention_$(date +%s)"
psql "$server_url/postgres" -qc "CREATE DATABASE $db"
trap 'psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
url="$server_url/$db"
DATABASE_URL="$url" target/debug/psa migrate >/dev/null
psql "$url" -q -v ON_ERROR_STOP=1 -f bench/seed-search.sql
psql "$url" -q -v ON_ERROR_STOP=1 -f bench/seed-attention.sql
# The worker's count (every minute), timed.
psql "$url" -qc "VACUUM ANALYZE"
start=$(date +%s%N)
psql "$url" -qc "INSERT INTO tenant_counts (status, plan_code, tenants) SELECT t.status, s.plan_code, count(*) FROM tenants t LEFT JOIN tenant_subscriptions s ON s.tenant = t.tenant WHERE NOT t.is_management GROUP BY 1, 2"
echo "the worker's count of tenants by status and plan: $(( ($(date +%s%N) - start) / 1000000 )) ms (psql included)"
# Exit 1: something needs attention (it does, by construction).
set +e
DATABASE_URL="$url" target/debug/psa attention --json > /tmp/psa-attention.json
code=$?
set -e
[ "$code" = 1 ] || { echo "psa attention exited $code, expected 1" >&2; exit 1; }
python3 - <<'PY'
import json
a = json.load(open('/tmp/psa-attention.json'))
print('lists: ' + ', '.join(f"{l['kind']} {len(l['items'])}{'+' if l['more'] else ''}" for l in a['lists']))
print('tenants by status and plan: ' + ', '.join(f"{c['status']}/{c['plan']} {c['tenants']}" for c in a['tenants']))
PY
for _ in $(seq 1 30); do
  start=$(date +%s%N)
  DATABASE_URL="$url" target/debug/psa attention --json >/dev/null || true
  echo $(( ($(date +%s%N) - start) / 1000 ))
done | sort -n | awk '{a[NR]=$1/1000} END {printf "psa attention --json: p50 %.1f ms, p95 %.1f ms (30 runs)\n", a[int(NR*0.5)], a[int(NR*0.95)]}'
# Each list's query, as the server plans and runs it (the plan's first line names its index).
psql "$url" -At -v ON_ERROR_STOP=1 <<'SQL'
\timing off
SELECT 'plans: ' || string_agg(indexname, ', ') FROM pg_indexes
WHERE indexname IN ('tenant_provisioning_failed_recently', 'tenant_provisioning_tracking_failed',
                    'tenant_provisioning_welcome_failed', 'tenant_deletions_due',
                    'tenant_subscriptions_trial_ends', 'tenant_subscriptions_past_due');
SQL
for q in \
  "SELECT * FROM tenant_provisioning WHERE status IN ('rolled_back','failed','cut_off') AND ended_at > now() - interval '7 days' ORDER BY ended_at DESC LIMIT 51" \
  "SELECT * FROM tenant_provisioning WHERE status = 'completed' AND customer_tracking = 'failed' ORDER BY ended_at DESC LIMIT 51" \
  "SELECT * FROM tenant_provisioning WHERE welcome_email = 'failed' ORDER BY ended_at DESC LIMIT 51" \
  "SELECT * FROM tenant_deletions WHERE status = 'pending' AND delete_after < now() + interval '7 days' ORDER BY delete_after LIMIT 51" \
  "SELECT * FROM psa_attention_subscriptions(now() + interval '7 days', 51)" \
  "SELECT * FROM tenant_counts"; do
  for _ in $(seq 1 10); do
    psql "$url" -Atc "EXPLAIN (ANALYZE, FORMAT JSON) $q" |
      python3 -c "import json,sys; print(json.load(sys.stdin)[0]['Execution Time'])"
  done | sort -n | awk -v q="${q:0:70}" '{a[NR]=$1} END {printf "%7.2f ms  %s\n", a[int(NR*0.5)], q}'
done
