# shellcheck shell=bash
# ensure_postgres: make sure the tests can reach a PostgreSQL 15+ server, exporting DATABASE_URL.
# Order: DATABASE_URL as given; the local server on 127.0.0.1:5432 (trust auth, user postgres);
# the installed cluster, started; the OS package, installed and started (password auth, user
# postgres, password postgres).

pg_up() {
    psql "$1" -Atqc 'select 1' >/dev/null 2>&1
}

ensure_postgres() {
    if [ -n "${DATABASE_URL:-}" ]; then
        pg_up "$DATABASE_URL" || { echo "DATABASE_URL is set but the server does not answer" >&2; return 1; }
        return 0
    fi
    local local_url="postgres://postgres@127.0.0.1:5432/postgres"
    if command -v psql >/dev/null 2>&1 && pg_up "$local_url"; then
        export DATABASE_URL="$local_url"
        return 0
    fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        echo "PostgreSQL server missing: installing it from the OS packages" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql >/dev/null
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    if command -v pg_ctlcluster >/dev/null 2>&1; then
        pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
            || pg_ctlcluster "$version" main start 2>/dev/null || true
    fi
    for _ in $(seq 1 30); do
        pg_up "$local_url" && { export DATABASE_URL="$local_url"; return 0; }
        # A packaged cluster allows local connections by password: give postgres one.
        if runuser -u postgres -- psql -Atqc "ALTER USER postgres PASSWORD 'postgres'" >/dev/null 2>&1; then
            local pw_url="postgres://postgres:postgres@127.0.0.1:5432/postgres"
            if pg_up "$pw_url"; then
                export DATABASE_URL="$pw_url"
                return 0
            fi
        fi
        sleep 1
    done
    echo "cannot reach or start a PostgreSQL server; set DATABASE_URL" >&2
    return 1
}
