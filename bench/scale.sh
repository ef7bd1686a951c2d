#!/usr/bin/env bash
# Scale benchmark: what provisioning, reconcile and the customer list cost as the platform grows.
# Release build, a tuned Temporal dev server, a fresh database on the local PostgreSQL. Prints
# one table (README "Benchmarks" shows it with the machine it came from).
#
#   bench/scale.sh        (BENCH_SIZES="10000 100000", BENCH_RECONCILE=10000, BENCH_CALLS=30,
#                          BENCH_SEQUENTIAL / BENCH_CONCURRENT / BENCH_IN_FLIGHT as for
#                          bench/provisioning.sh; BENCH_KEEP_DB=1 keeps the database, to
#                          EXPLAIN queries against it afterwards)
#
# 1. provisions one tenant through the real workflow (tracked), the template;
# 2. measures provisioning (tracking on and off, sequential and 16 in flight, CPU per tenant)
#    with no other tenant, then after seeding tenants up to each of BENCH_SIZES: clones of the
#    template (bench/seed-tenants.sql), each with every row provisioning writes, admin user and
#    customer company, contact and tag in the management tenant;
# 3. seeds untracked tenants and times `psa customers reconcile` over them (1/10 and all of
#    BENCH_RECONCILE, for memory against size), then a second run, which must change nothing;
# 4. times the customer list at the largest size: `psa tenant list --json` and
#    `GET /api/v1/companies` (first page, a deep page, a name search).
# Needs a PostgreSQL superuser (DATABASE_URL's server, or the local one) for the seeding.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-postgres.sh
. scripts/lib/ensure-temporal.sh
ensure_postgres
ensure_temporal_cli

SIZES=${BENCH_SIZES:-10000 100000}
RECONCILE=${BENCH_RECONCILE:-10000}
CALLS=${BENCH_CALLS:-30}
export BENCH_SEQUENTIAL=${BENCH_SEQUENTIAL:-40} BENCH_CONCURRENT=${BENCH_CONCURRENT:-96}

# One invocation: built apart, the two would resolve features differently and build the
# Temporal SDK twice.
cargo build --release -q -p psa-cli -p psa-workflows --bin psa --example provision_bench --example webhook_bench
PSA=$PWD/target/release/psa

work=$(mktemp -d)
server_url="${DATABASE_URL%/*}"
db="psa_bench_scale_$(date +%s)"
cleanup() {
    for pid in ${worker_pid:-} ${server_pid:-}; do kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; done
    stop_temporal
    if [ -n "${BENCH_KEEP_DB:-}" ]; then
        echo "kept the database: $server_url/$db" >&2
    else
        psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
start_temporal_unless_configured
psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
export DATABASE_URL="$server_url/$db"
export PSA_SECRET_KEY RUST_LOG=warn
PSA_SECRET_KEY=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')
sql() { psql "$DATABASE_URL" -Atq -v ON_ERROR_STOP=1 "$@"; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
now() { python3 -c 'import time; print(time.time())'; }

$PSA migrate >/dev/null
init=$($PSA management init --name "Nine Minds LLC" --admin-email ops@nineminds.example \
    --first-name Ops --last-name Admin --json)
mgmt=$(echo "$init" | json '["tenant_id"]')
mgmt_admin=$(echo "$init" | json '["admin_user_id"]')
export NINEMINDS_TENANT_ID=$mgmt

# The template: one tenant provisioned by the real workflow, with customer tracking.
PSA_WORKER_METRICS_BIND=127.0.0.1:0 TEMPORAL_TASK_QUEUE=scale-template $PSA worker >"$work/worker.log" 2>&1 &
worker_pid=$!
template=$(TEMPORAL_TASK_QUEUE=scale-template $PSA tenant create --name "Scale Template Tenant" \
    --admin-email scale-admin@template.example --first-name Scale --last-name Admin \
    --company-name "Scale Template Services" --json 2>/dev/null | json '["tenant_id"]')
kill "$worker_pid"; wait "$worker_pid" 2>/dev/null || true; worker_pid=""
rows_per_tenant=$(sql -c "SELECT sum((xpath('/row/c/text()', query_to_xml(format('SELECT count(*) AS c FROM %I WHERE tenant = %L', table_name, '$template'), false, true, '')))[1]::text::int) FROM information_schema.columns WHERE table_schema = 'public' AND column_name = 'tenant'")

summary="$work/provisioning.txt"
provision() {
    echo "provisioning with $(sql -c 'SELECT count(*) - 1 FROM tenants') tenants..." >&2
    BENCH_LABEL=$1 BENCH_SUMMARY=$summary BENCH_TEMPORAL_PID="${PSA_TEMPORAL_PID:-}" \
        BENCH_CLK_TCK="$(getconf CLK_TCK)" target/release/examples/provision_bench >"$work/provision-$1.txt"
}
seeded=0
seed() { # count tracked|untracked
    local t0
    t0=$(now)
    psql "$DATABASE_URL" -q -v ON_ERROR_STOP=1 -v template="$template" -v mgmt="$mgmt" \
        -v first=$((seeded + 1)) -v count="$1" -v tracked="$([ "$2" = tracked ] && echo true || echo false)" \
        -f bench/seed-tenants.sql >/dev/null
    seeded=$((seeded + $1))
    echo "seeded $1 $2 tenants in $(python3 -c "print(f'{$(now) - $t0:.0f}')") s" >&2
}
tenants() { sql -c "SELECT count(*) - 1 FROM tenants"; }
db_size() { sql -c "SELECT pg_database_size(current_database())"; }

provision 0
bytes_rows=()
for size in $SIZES; do
    need=$((size - $(tenants)))
    if [ "$need" -gt 0 ]; then
        before=$(db_size)
        seed "$need" tracked
        bytes_rows+=("$need $(( ($(db_size) - before) / need ))")
    fi
    provision "$size"

    # Reconcile once, after the first size: untracked tenants beside the tracked ones.
    if [ -z "${reconciled:-}" ]; then
        reconciled=1
        for n in $((RECONCILE / 10)) "$RECONCILE"; do
            seed "$n" untracked
            python3 - "$PSA" "$n" >>"$work/reconcile.txt" <<'PY'
import json, resource, subprocess, sys, time
psa, n = sys.argv[1], int(sys.argv[2])
def run():
    t = time.perf_counter()
    out = subprocess.run([psa, "customers", "reconcile", "--json"], check=True, capture_output=True).stdout
    return json.loads(out), time.perf_counter() - t
first, secs = run()
rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
second, secs2 = run()
print(f"{n} {first['created']} {secs:.2f} {first['created'] / secs:.0f} {rss:.1f} "
      f"{second['created']} {second['already_tracked']} {secs2:.2f} {first['failed'] + second['failed']}")
PY
        done
    fi
done

# The customer list at the largest size.
largest=$(tenants)
key=$($PSA api-key create --tenant "$mgmt" --user "$mgmt_admin" --json | json '["key"]')
port=$(free_port)
PSA_BIND="127.0.0.1:$port" $PSA serve >"$work/serve.log" 2>&1 &
server_pid=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.1; done
deep=$((largest * 9 / 10))
cursor() { python3 -c 'import base64,json,sys; print(base64.urlsafe_b64encode(json.dumps([sys.argv[1], sys.argv[2]]).encode()).decode().rstrip("="))' "$1" "$2"; }
IFS='|' read -r tkey tid < <(sql -c "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), tenant FROM tenants ORDER BY created_at, tenant OFFSET $deep LIMIT 1")
IFS='|' read -r ckey cid < <(sql -c "SELECT company_name, company_id FROM companies WHERE tenant = '$mgmt' ORDER BY company_name, company_id OFFSET $deep LIMIT 1")
tenant_cursor=$(cursor "$tkey" "$tid")
company_cursor=$(cursor "$ckey" "$cid")
python3 - "$PSA" "$port" "$key" "$CALLS" "$tenant_cursor" "$company_cursor" >"$work/lists.txt" <<'PY'
import json, statistics, subprocess, sys, time, urllib.request
psa, port, key, calls, tcur, ccur = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6]
# A call slower than this is reported as such, not repeated.
LIMIT = 60
def cli(*args):
    t = time.perf_counter()
    out = subprocess.run([psa, "tenant", "list", "--json", *args], check=True, capture_output=True,
                         timeout=LIMIT).stdout
    return time.perf_counter() - t, len(json.loads(out)["items"])
def api(query):
    req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/companies?{query}",
                                 headers={"Authorization": f"Bearer {key}"})
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=LIMIT) as r:
        body = json.load(r)
    return time.perf_counter() - t, len(body["items"])
cases = [
    ("psa tenant list --json (first page)", lambda: cli()),
    ("psa tenant list --json (deep page)", lambda: cli("--cursor", tcur)),
    ("psa tenant list --json --name 'Tenant 01234'", lambda: cli("--name", "Tenant 01234")),
    ("psa tenant list --json --tracking untracked", lambda: cli("--tracking", "untracked")),
    ("GET /api/v1/companies (first page)", lambda: api("limit=50")),
    ("GET /api/v1/companies (deep page)", lambda: api(f"limit=50&cursor={ccur}")),
    ("GET /api/v1/companies?name=Tenant 01234", lambda: api("name=Tenant%2001234")),
]
for name, call in cases:
    try:
        call()  # warm: plans, caches
    except (subprocess.TimeoutExpired, TimeoutError, OSError):
        print(f"{name}|>{LIMIT * 1000}|-", flush=True)
        continue
    samples = [call() for _ in range(calls)]
    p50 = statistics.median(s[0] for s in samples) * 1000
    print(f"{name}|{p50:.1f}|{samples[0][1]}")
PY

# The table.
pg_version=$(sql -c "SHOW server_version")
echo
echo "psa scale benchmark, $(date -u +%Y-%m-%d), $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB, PostgreSQL $pg_version"
echo "template tenant: $rows_per_tenant rows in its tenant tables"
echo
echo "Provisioning (${BENCH_SEQUENTIAL} sequential and ${BENCH_CONCURRENT} with ${BENCH_IN_FLIGHT:-16} in flight per setting; CPU = worker + Temporal + PostgreSQL)"
printf '%-9s %-8s %9s %9s %7s %11s %11s %7s %13s   %s\n' "tenants" tracking "seq p50" "seq p95" "seq/s" "16 fl. p50" "16 fl. p95" "/s" "CPU s/tenant" "(psa / Temporal / PostgreSQL)"
while read -r label setting a b c d e f g h i j; do
    printf '%-9s %-8s %7sms %7sms %7s %9sms %9sms %7s %13s   (%s / %s / %s)\n' "$label" "$setting" "$a" "$b" "$c" "$d" "$e" "$f" "$g" "$h" "$i" "$j"
done <"$summary"
python3 - "$summary" <<'PY'
import sys
rows = [l.split() for l in open(sys.argv[1])]
on = {r[0]: r for r in rows if r[1] == "on"}
off = {r[0]: r for r in rows if r[1] == "off"}
base = on["0"]
for label, r in on.items():
    if label != "0":
        print(f"p50 with {label} tenants / empty (tracking on): sequential {float(r[2]) / float(base[2]):.2f}, "
              f"16 in flight {float(r[5]) / float(base[5]):.2f}")
for label in on:
    print(f"CPU per tenant, tracking on / off, {label} tenants: {float(on[label][8]) / float(off[label][8]):.3f}")
PY
echo
echo "Reconcile (psa customers reconcile over untracked tenants, beside the tracked ones)"
printf '%-10s %8s %9s %10s %9s   %s\n' seeded created seconds tenants/s "peak RSS" "second run"
while read -r n created secs rate rss created2 already2 secs2 failed; do
    printf '%-10s %8s %8ss %10s %7sMB   created %s, already tracked %s, %ss; failed %s\n' \
        "$n" "$created" "$secs" "$rate" "$rss" "$created2" "$already2" "$secs2" "$failed"
done <"$work/reconcile.txt"
echo
echo "Customer list with $largest tenants ($((largest)) customer companies in the management tenant), p50 of $CALLS calls"
while IFS='|' read -r name p50 items; do
    printf '%-48s %8s ms  (%s items)\n' "$name" "$p50" "$items"
done <"$work/lists.txt"
echo
echo "Database bytes per tenant (pg_database_size delta / seeded tenants)"
for r in "${bytes_rows[@]}"; do
    read -r n b <<<"$r"
    printf '  %-8s seeded: %s bytes/tenant\n' "$n" "$b"
done
