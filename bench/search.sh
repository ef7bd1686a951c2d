#!/usr/bin/env bash
# Search benchmark: `psa_search_tenants` (GET /api/v1/search, the console's search box, `psa
# search`) over 100000 synthetic tenants (bench/seed-search.sql): server-side execution time,
# p50 and p95 of 30 runs per query, for a common word, two words, a slug, an email, a customer
# company, nothing, a word in every email (`example`), and a whole id. Needs a PostgreSQL superuser (DATABASE_URL's server, or the
# local one); the database is dropped at the end.
#
#   bench/search.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-postgres.sh
ensure_postgres
cargo build -q -p psa-cli --bin psa
server_url="${DATABASE_URL%/*}"
db="psa_bench_search_$(date +%s)"
psql "$server_url/postgres" -qc "CREATE DATABASE $db"
trap 'psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)"' EXIT
DATABASE_URL="$server_url/$db" target/debug/psa migrate >/dev/null
psql "$server_url/$db" -q -v ON_ERROR_STOP=1 -f bench/seed-search.sql
id=$(psql "$server_url/$db" -Atc "SELECT tenant FROM tenants WHERE slug = 'c-777'")
[ -n "$id" ] || { echo "the seed made no tenant c-777" >&2; exit 1; }
printf '%-40s %10s %10s\n' query p50 p95
for q in "acme" "hooli sys" "c-4217" "admin4217@" "customer 4217" "zzzz-nothing" "example" "$id"; do
  for _ in $(seq 1 30); do
    psql "$server_url/$db" -Atc \
      "EXPLAIN (ANALYZE, FORMAT JSON) SELECT * FROM psa_search_tenants('$q', 20)" |
      python3 -c "import json,sys; print(json.load(sys.stdin)[0]['Execution Time'])"
  done | sort -n | awk -v q="$q" '{a[NR]=$1} END {printf "%-40s %7.1f ms %7.1f ms\n", q, a[int(NR*0.5)], a[int(NR*0.95)]}'
done
