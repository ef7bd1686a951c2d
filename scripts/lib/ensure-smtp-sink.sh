# shellcheck shell=bash
# ensure_smtp_sink: exports PSA_TEST_SMTP_PYTHON, a Python with aiosmtpd (from PyPI, into .tools/):
# the tests' SMTP server on loopback, which stores every message it receives in a maildir.

AIOSMTPD_VERSION=1.4.6

ensure_smtp_sink() {
    if [ -n "${PSA_TEST_SMTP_PYTHON:-}" ] && "$PSA_TEST_SMTP_PYTHON" -c 'import aiosmtpd' 2>/dev/null; then
        return 0
    fi
    local py=".tools/smtp-venv/bin/python"
    if ! "$py" -c 'import aiosmtpd' 2>/dev/null; then
        echo "SMTP test server missing: installing aiosmtpd $AIOSMTPD_VERSION into .tools/" >&2
        python3 -m venv .tools/smtp-venv
        .tools/smtp-venv/bin/pip install -q "aiosmtpd==$AIOSMTPD_VERSION"
    fi
    PSA_TEST_SMTP_PYTHON="$PWD/$py"
    export PSA_TEST_SMTP_PYTHON
}
