# shellcheck shell=bash
# ensure_prometheus: promtool and the prometheus server, from Debian's `prometheus` package (the
# rules' unit tests, and the alert test that runs a real Prometheus against a real worker).

ensure_prometheus() {
    if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
        return 0
    fi
    echo "Prometheus missing: installing Debian's prometheus package" >&2
    local sudo=""
    [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
}
