# shellcheck shell=bash
# ensure_openapi_client: exports PSA_TEST_OPENAPI_VENV, a virtualenv (from PyPI, into .tools/) with
# openapi-python-client and what its generated clients import: a test generates a client from
# docs/openapi.json and pages through a list with it against a running server.

OPENAPI_PYTHON_CLIENT_VERSION=0.29.1

ensure_openapi_client() {
    local venv=".tools/openapi-venv"
    if [ ! -x "$venv/bin/openapi-python-client" ] || ! "$venv/bin/python" -c 'import dateutil' 2>/dev/null; then
        echo "openapi-python-client missing: installing it into .tools/" >&2
        python3 -m venv "$venv"
        "$venv/bin/pip" install -q "openapi-python-client==$OPENAPI_PYTHON_CLIENT_VERSION" "python-dateutil==2.9.0.post0"
    fi
    PSA_TEST_OPENAPI_VENV="$PWD/$venv"
    export PSA_TEST_OPENAPI_VENV
}
