# shellcheck shell=bash
# ensure_dns: the single sign-on tests verify email domains through a DNS server they run on
# loopback: Debian's dnsmasq (`dnsmasq-base`), installed when missing. Exports PSA_TEST_DNSMASQ.

ensure_dns() {
    local bin
    bin="$(command -v dnsmasq || true)"
    [ -n "$bin" ] || [ ! -x /usr/sbin/dnsmasq ] || bin=/usr/sbin/dnsmasq
    if [ -z "$bin" ]; then
        echo "dnsmasq missing: installing dnsmasq-base (apt)" >&2
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq dnsmasq-base >/dev/null
        bin="$(command -v dnsmasq || echo /usr/sbin/dnsmasq)"
    fi
    PSA_TEST_DNSMASQ="$bin"
    export PSA_TEST_DNSMASQ
}
