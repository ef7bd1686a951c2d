#!/usr/bin/env bash
# Webhook delivery benchmark (release build): backlog drain in events/s, and commit-to-delivery
# lag (p50/p95) of a steady stream, through a receiver on loopback that verifies every
# signature.
#   bench/webhooks.sh     (BENCH_EVENTS, BENCH_RATE, BENCH_SECONDS, BENCH_CONCURRENCY tune it)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-postgres.sh
ensure_postgres
server_url="${DATABASE_URL%/*}"
db="psa_bench_webhooks_$(date +%s)"
trap 'psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1' EXIT
psql "$DATABASE_URL" -qc "CREATE DATABASE $db" >/dev/null
# The same invocation as bench/scale.sh: built apart, features resolve differently and the
# Temporal SDK is built again.
cargo build --release -q -p psa-cli -p psa-workflows --bin psa --example provision_bench --example webhook_bench
RUST_LOG=warn DATABASE_URL="$server_url/$db" target/release/examples/webhook_bench
