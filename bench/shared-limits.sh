#!/usr/bin/env bash
# The cost of the sign-in limits that every replica shares (docs/operations.md, "Running many
# replicas"): a sign-in takes two `psa_rate_take` calls (its client address, its account), each
# one statement on the unlogged `rate_limits` table. pgbench runs them as a replica does (one
# connection, then 8 at once), over 10000 keys, and prints the latency per call. Ordinary API
# requests make none of these calls. Needs a PostgreSQL superuser (DATABASE_URL's server, or the
# local one); the database is dropped at the end.
#
#   bench/shared-limits.sh [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-postgres.sh
ensure_postgres
seconds="${1:-10}"
cargo build -q -p psa-cli --bin psa
server_url="${DATABASE_URL%/*}"
db="psa_bench_limits_$(date +%s)"
work="$(mktemp -d)"
psql "$server_url/postgres" -qc "CREATE DATABASE $db"
trap 'psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"; rm -rf "$work"' EXIT
url="$server_url/$db"
DATABASE_URL="$url" target/debug/psa migrate >/dev/null 2>&1
cat > "$work/take.sql" <<'SQL'
\set k random(1, 10000)
SELECT psa_rate_take('login:account:' || :k, 10);
SQL
cat > "$work/select1.sql" <<'SQL'
SELECT 1;
SQL
for clients in 1 8; do
  for script in select1 take; do
    latency=$(pgbench -n -c "$clients" -j "$clients" -T "$seconds" -f "$work/$script.sql" "$url" 2>/dev/null |
      awk -F' = ' '/latency average/ {print $2}')
    echo "$clients connection(s), $script: $latency per call"
  done
done
echo "rows kept: $(psql "$url" -Atc 'SELECT count(*) FROM rate_limits')"
