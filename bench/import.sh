#!/usr/bin/env bash
# Tenant export and import benchmark: a tenant with SCALE x (100000 companies, 200000 contacts,
# 300000 tag mappings), exported with `psa tenant export`, deleted, and imported back with
# `psa tenant import` (the same operations as the API and the console). Prints each way's
# wall-clock seconds and peak memory (the process's maximum resident set, from /usr/bin/time),
# at SCALE 1 and at half of it: memory flat in the archive's size means the two peaks are close.
# Debug build, as the other benchmarks. Needs a PostgreSQL superuser (DATABASE_URL's server, or
# the local one); the databases and files are removed at the end.
#
#   bench/import.sh            # half, then full size
#   SCALES="1" bench/import.sh # full size only
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/ensure-postgres.sh
ensure_postgres
cargo build -q -p psa-cli --bin psa
server_url="${DATABASE_URL%/*}"
work="$(mktemp -d)"
dbs=()
cleanup() {
  for d in "${dbs[@]}"; do psql "$server_url/postgres" -qc "DROP DATABASE IF EXISTS $d WITH (FORCE)" >/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
export PSA_SECRET_KEY="$(head -c 32 /dev/urandom | base64)"
export PSA_EXPORT_DIR="$work/store"
tenant=00000000-0000-0000-0000-0000000000b1
for scale in ${SCALES:-0.5 1}; do
  companies=$(python3 -c "print(int(100000 * $scale))")
  db="psa_bench_import_$(date +%s%N)"
  dbs+=("$db")
  psql "$server_url/postgres" -qc "CREATE DATABASE $db"
  url="$server_url/$db"
  DATABASE_URL="$url" target/debug/psa migrate >/dev/null
  # The management tenant as deployed (seeded: the import records the customer in it).
  DATABASE_URL="$url" target/debug/psa management init --name Management >/dev/null
  psql "$url" -q -v ON_ERROR_STOP=1 -v n="$companies" -v t="'$tenant'" <<'SQL'
INSERT INTO tenants (tenant, company_name, email, slug) VALUES (:t, 'Bench', 'admin@bench.example', 'bench');
INSERT INTO companies (tenant, company_id, company_name, url, properties)
SELECT :t, md5('c' || i)::uuid, 'Company ' || i, 'https://c' || i || '.example',
       jsonb_build_object('rank', i, 'region', 'r' || i % 7)
FROM generate_series(1, :n) i;
INSERT INTO contacts (tenant, contact_name_id, full_name, company_id, email, phone_number)
SELECT :t, md5('p' || i)::uuid, 'Person ' || i, md5('c' || (1 + i % :n))::uuid,
       'person' || i || '@c' || (1 + i % :n) || '.example', '+1 555 ' || i
FROM generate_series(1, 2 * :n) i;
INSERT INTO tag_definitions (tenant, tag_id, tag_text, tagged_type)
SELECT :t, md5('d' || i)::uuid, 'Tag ' || i, CASE WHEN i <= 5 THEN 'company' ELSE 'contact' END
FROM generate_series(1, 10) i;
INSERT INTO tag_mappings (tenant, mapping_id, tag_id, tagged_id, tagged_type)
SELECT :t, md5('m' || i)::uuid, md5('d' || (1 + i % 5))::uuid, md5('c' || (1 + i % :n))::uuid, 'company'
FROM generate_series(1, :n) i;
INSERT INTO tag_mappings (tenant, mapping_id, tag_id, tagged_id, tagged_type)
SELECT :t, md5('n' || i)::uuid, md5('d' || (6 + i % 5))::uuid, md5('p' || (1 + i % (2 * :n)))::uuid, 'contact'
FROM generate_series(1, 2 * :n) i;
ANALYZE;
SQL
  rows=$(psql "$url" -Atc "SELECT (SELECT count(*) FROM companies WHERE tenant = '$tenant') || ' companies, ' || (SELECT count(*) FROM contacts WHERE tenant = '$tenant') || ' contacts, ' || (SELECT count(*) FROM tag_mappings WHERE tenant = '$tenant') || ' tag mappings'")
  archive="$work/bench-$scale.tar.gz"
  /usr/bin/time -f "%e %M" -o "$work/export.time" env DATABASE_URL="$url" target/debug/psa tenant export "$tenant" --out "$archive" 2>/dev/null
  read -r export_s export_kb < "$work/export.time"
  psql "$url" -qc "DELETE FROM tenants WHERE tenant = '$tenant'"
  /usr/bin/time -f "%e %M" -o "$work/import.time" env DATABASE_URL="$url" target/debug/psa tenant import --file "$archive" >/dev/null
  read -r import_s import_kb < "$work/import.time"
  back=$(psql "$url" -Atc "SELECT (SELECT count(*) FROM companies WHERE tenant = '$tenant') + (SELECT count(*) FROM contacts WHERE tenant = '$tenant') + (SELECT count(*) FROM tag_mappings WHERE tenant = '$tenant')")
  echo "scale $scale: $rows; archive $(du -k "$archive" | cut -f1) KiB"
  echo "  export: ${export_s} s, peak ${export_kb} KiB"
  echo "  import: ${import_s} s, peak ${import_kb} KiB ($back rows back)"
done
