# shellcheck shell=bash
# ensure_webhook_verifier: exports PSA_TEST_WEBHOOK_PYTHON, a Python with standardwebhooks (the
# Standard Webhooks reference library, from PyPI, into .tools/): the event tests' receiver
# verifies every delivery's signature with it, not with psa's own code.

STANDARDWEBHOOKS_VERSION=1.1.0

ensure_webhook_verifier() {
    if [ -n "${PSA_TEST_WEBHOOK_PYTHON:-}" ] && "$PSA_TEST_WEBHOOK_PYTHON" -c 'import standardwebhooks' 2>/dev/null; then
        return 0
    fi
    local py=".tools/webhook-venv/bin/python"
    if ! "$py" -c 'import standardwebhooks' 2>/dev/null; then
        echo "webhook test receiver missing: installing standardwebhooks $STANDARDWEBHOOKS_VERSION into .tools/" >&2
        python3 -m venv .tools/webhook-venv
        .tools/webhook-venv/bin/pip install -q "standardwebhooks==$STANDARDWEBHOOKS_VERSION"
    fi
    PSA_TEST_WEBHOOK_PYTHON="$PWD/$py"
    export PSA_TEST_WEBHOOK_PYTHON
}
