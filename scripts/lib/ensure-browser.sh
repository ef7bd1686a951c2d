# shellcheck shell=bash
# ensure_browser: the console's browser tests need Chromium and its WebDriver (Debian's
# `chromium` and `chromium-driver`, installed when missing) and axe-core (npm, pinned by
# tests/console/package-lock.json, with the OpenID Connect provider the SSO tests run). Exports PSA_TEST_CHROMEDRIVER, PSA_TEST_CHROMIUM and
# PSA_TEST_AXE_JS.

ensure_browser() {
    if ! command -v chromedriver >/dev/null 2>&1 || ! command -v chromium >/dev/null 2>&1; then
        echo "Chromium missing: installing chromium and chromium-driver (apt)" >&2
        local sudo=""
        [ "$(id -u)" = 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium chromium-driver >/dev/null
    fi
    PSA_TEST_CHROMEDRIVER="$(command -v chromedriver)"
    PSA_TEST_CHROMIUM="$(command -v chromium)"
    if [ ! -f tests/console/node_modules/axe-core/axe.min.js ] \
        || [ ! -f tests/console/node_modules/oidc-provider/package.json ]; then
        echo "axe-core or oidc-provider missing: npm ci in tests/console" >&2
        (cd tests/console && npm ci --silent --no-audit --no-fund)
    fi
    PSA_TEST_AXE_JS="$PWD/tests/console/node_modules/axe-core/axe.min.js"
    export PSA_TEST_CHROMEDRIVER PSA_TEST_CHROMIUM PSA_TEST_AXE_JS
}
