#!/usr/bin/env bash
# Provisioning against the engine's floor, in one run on one tuned dev server: the bare Temporal
# workflow of provisioning's shape (../shared/bench/temporal-floor, or FLOOR_DIR: remote and
# local activities, sequential and 16 in flight, one transaction without Temporal), then
# bench/provisioning.sh's benchmark of this tree, and of BASELINE_BIN too when set (a
# provision_bench binary built from an earlier commit, to compare before and after).
#   bench/provisioning-vs-floor.sh       (release builds; about 2 min once built)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-postgres.sh
. scripts/lib/ensure-temporal.sh
ensure_postgres
ensure_temporal_cli
floor_dir="${FLOOR_DIR:-../shared/bench/temporal-floor}"
floor_target="${TMPDIR:-/tmp}/psa-floor"
(cd "$floor_dir" && cargo build --release -q --target-dir "$floor_target")
cargo build --release -q -p psa-workflows --example provision_bench
port=47233
"$TEMPORAL_CLI" server start-dev --ip 127.0.0.1 --port "$port" --headless --log-level error \
    --http-port "$(free_port)" --metrics-port "$(free_port)" \
    --dynamic-config-value history.transferProcessorMaxPollRPS=10000 >/dev/null 2>&1 &
temporal_pid=$!
server_url="${DATABASE_URL%/*}"
trap 'kill $temporal_pid ${floor_worker:-} 2>/dev/null; for d in psa_floor_bench psa_bench_cmp_a psa_bench_cmp_b; do psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null 2>&1; done' EXIT
until "$TEMPORAL_CLI" operator cluster health --address "127.0.0.1:$port" 2>/dev/null | grep -q SERVING; do sleep 0.2; done

psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS psa_floor_bench WITH (FORCE)" -c "CREATE DATABASE psa_floor_bench" >/dev/null
psql "$server_url/psa_floor_bench" -qc "CREATE TABLE steps(wf text, step int)"
export PG_URL="$server_url/psa_floor_bench"
floor="$floor_target/release/bench"
TEMPORAL_ADDRESS="http://127.0.0.1:$port" "$floor" worker >/dev/null 2>&1 &
floor_worker=$!
sleep 2
echo "== the floor: 7 sequential steps beside 1 -> 2 in parallel, one row each"
export TEMPORAL_ADDRESS="http://127.0.0.1:$port"
"$floor" drive --wf shaped --k 7 --sql --n 40
"$floor" drive --wf shaped --k 7 --sql --local --n 40
"$floor" drive --wf shaped --k 7 --sql --n 192 --conc 16
"$floor" drive --wf shaped --k 7 --sql --local --n 192 --conc 16
"$floor" direct --tx 1 --n 30
kill $floor_worker; wait $floor_worker 2>/dev/null || true; floor_worker=

run() {
    local label=$1 bin=$2 db=$3
    psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db" >/dev/null
    echo "== psa: $label"
    TEMPORAL_ADDRESS="127.0.0.1:$port" RUST_LOG=warn DATABASE_URL="$server_url/$db" \
        BENCH_TEMPORAL_PID=$temporal_pid BENCH_CLK_TCK="$(getconf CLK_TCK)" BENCH_LABEL="$label" "$bin"
}
if [ -n "${BASELINE_BIN:-}" ]; then
    run baseline "$BASELINE_BIN" psa_bench_cmp_a
fi
run "this tree" target/release/examples/provision_bench psa_bench_cmp_b
