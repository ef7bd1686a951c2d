#!/usr/bin/env bash
# Provisioning benchmark (release build): p50/p95 and tenants/s, sequential and with 16 in
# flight, customer tracking on and off in the same run; prints the on/off p50 ratio.
#   bench/provisioning.sh            (BENCH_SEQUENTIAL, BENCH_CONCURRENT, BENCH_IN_FLIGHT tune it)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-postgres.sh
. scripts/lib/ensure-temporal.sh
ensure_postgres
ensure_temporal_cli
trap 'stop_temporal; [ -n "${db:-}" ] && psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1' EXIT
start_temporal_unless_configured
server_url="${DATABASE_URL%/*}"
db="psa_bench_prov_$(date +%s)"
psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
cargo build --release -q -p psa-workflows --example provision_bench
RUST_LOG=warn DATABASE_URL="$server_url/$db" BENCH_TEMPORAL_PID="${PSA_TEMPORAL_PID:-}" BENCH_CLK_TCK="$(getconf CLK_TCK)" \
    target/release/examples/provision_bench
