#!/usr/bin/env bash
# Benchmark: POST /api/v1/companies through the API (release build) against the same rows
# inserted with raw SQL (pgbench), in one run on this machine. Prints req/s, p50, p99 and the
# ratio API/raw. Not a test: numbers, for the closing notes and regressions.
#
#   bench/api-companies.sh [seconds=20] [concurrency=32]
#
# Needs PostgreSQL (DATABASE_URL's server, or the local one), wrk and pgbench (installed from the
# OS packages when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-20}
CONC=${2:-32}

. scripts/lib/ensure-postgres.sh
ensure_postgres
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; }
command -v pgbench >/dev/null || export PATH="$PATH:$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"

cargo build --release -q -p psa-cli
PSA=target/release/psa

work=$(mktemp -d)
db="psa_bench_$(date +%s)"
server_url="${DATABASE_URL%/*}"
psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
export DATABASE_URL="$server_url/$db"
cleanup() {
    [ -n "${server_pid:-}" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
    psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    rm -rf "$work"
}
trap cleanup EXIT

$PSA migrate >/dev/null
init=$($PSA management init --name Bench --admin-email bench@bench.example --first-name B --last-name M --json)
tenant=$(echo "$init" | python3 -c 'import json,sys; print(json.load(sys.stdin)["tenant_id"])')
user=$(echo "$init" | python3 -c 'import json,sys; print(json.load(sys.stdin)["admin_user_id"])')
# A tenant that has been in use: 20k companies and fresh statistics. On empty tables the
# planner (and PostgreSQL's cached foreign-key check plans, which live as long as a connection)
# may pick a tenant-only index that degrades as the table grows; production tables have stats.
psql "$DATABASE_URL" -qc "INSERT INTO companies (tenant, company_name, url) SELECT '$tenant', 'seed-' || g, 'https://seed-' || g || '.example.com' FROM generate_series(1, 20000) g" -c ANALYZE
key=$($PSA api-key create --tenant "$tenant" --user "$user" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
RUST_LOG=warn PSA_DB_POOL_SIZE=${PSA_DB_POOL_SIZE:-10} PSA_BIND="127.0.0.1:$port" $PSA serve >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done

cat >"$work/post.lua" <<LUA
-- Each wrk thread numbers its own requests; names stay unique across threads and runs.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
local counter = 0
local run = tostring(os.time())
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
request = function()
  counter = counter + 1
  local body = '{"company_name":"api-' .. run .. '-' .. tid .. '-' .. counter .. '","url":"https://www.bench-' .. counter .. '.example.com"}'
  return wrk.format(nil, "/api/v1/companies", nil, body)
end
LUA
# Warm up (new backends, caches) so the measured run sees a steady state, as pgbench's does.
wrk -t2 -c"$CONC" -d3s -s "$work/post.lua" "http://127.0.0.1:$port" >/dev/null
echo "API: POST /api/v1/companies, $CONC connections, ${DURATION}s"
wrk -t2 -c"$CONC" -d"${DURATION}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port" >"$work/wrk.txt"
api_rps=$(awk '/Requests\/sec/ {print $2}' "$work/wrk.txt")
api_p50=$(awk '$1=="50%" {print $2}' "$work/wrk.txt")
api_p99=$(awk '$1=="99%" {print $2}' "$work/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$work/wrk.txt")
kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
api_rows=$(psql "$DATABASE_URL" -Atc "SELECT count(*) FROM companies WHERE company_name LIKE 'api-%'")

# The same rows, raw: the company, its tax settings, its default tax rate, its email suffix.
rate=$(psql "$DATABASE_URL" -Atc "SELECT tax_rate_id FROM tax_rates WHERE tenant = '$tenant' LIMIT 1")
cat >"$work/raw.sql" <<SQL
\set n random(1, 2000000000)
BEGIN;
INSERT INTO companies (tenant, company_id, company_name, url, properties, client_type)
  VALUES ('$tenant', gen_random_uuid(), 'raw-' || :client_id || '-' || :n || '-' || txid_current(),
          'https://www.bench-' || :n || '.example.com',
          jsonb_build_object('website', 'https://www.bench-' || :n || '.example.com'), 'company')
  RETURNING company_id AS cid \gset
INSERT INTO company_tax_settings (tenant, company_id) VALUES ('$tenant', :cid);
INSERT INTO company_tax_rates (tenant, company_id, tax_rate_id, is_default) VALUES ('$tenant', :cid, '$rate', true);
INSERT INTO company_email_settings (tenant, company_id, email_suffix) VALUES ('$tenant', :cid, 'bench-' || :n || '.example.com');
COMMIT;
SQL
pgbench -n -M prepared -c "$CONC" -j 2 -T 3 -f "$work/raw.sql" "$DATABASE_URL" >/dev/null 2>&1 || true
echo "raw SQL: pgbench, $CONC clients, ${DURATION}s"
(cd "$work" && pgbench -n -M prepared -c "$CONC" -j 2 -T "$DURATION" -f raw.sql -l --log-prefix=raw "$DATABASE_URL" >"$work/pgbench.txt" 2>&1) || { cat "$work/pgbench.txt" >&2; exit 1; }
raw_tps=$(awk '/^tps/ {print $3; exit}' "$work/pgbench.txt")
[ -n "$raw_tps" ] || { cat "$work/pgbench.txt" >&2; exit 1; }
read -r raw_p50 raw_p99 < <(cat "$work"/raw.* | awk '{print $3}' | sort -n | awk '{a[NR]=$1} END {printf "%.2fms %.2fms\n", a[int(NR*0.5)]/1000, a[int(NR*0.99)]/1000}')

printf '\n%-8s %12s %10s %10s\n' "" "req/s" "p50" "p99"
printf '%-8s %12s %10s %10s\n' "API" "$api_rps" "$api_p50" "$api_p99"
printf '%-8s %12s %10s %10s\n' "raw SQL" "$raw_tps" "$raw_p50" "$raw_p99"
python3 -c "print(f'ratio API/raw: {float(\"$api_rps\")/float(\"$raw_tps\"):.2f}')"
echo "API rows written: $api_rows; non-2xx responses: ${non2xx:-0}"
