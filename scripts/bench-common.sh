# Sourced by the scripts that start servers (scripts/bench.sh, bench-chat.sh, bench-audit.sh,
# bench-instructions.sh, schemathesis.sh): a work directory, and on exit every process in
# PIDS stopped, the PostgreSQL database PG_NAME dropped (when PG_DROP names the server to drop
# it on), the work directory removed.

TARGET_DIR="${CARGO_TARGET_DIR:-target}"
BIN="$TARGET_DIR/release/performchat"

WORK=$(mktemp -d)
PIDS=()
PG_DROP=""
PG_NAME=""
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "$PG_DROP" ]; then psql "$PG_DROP" -qc "DROP DATABASE IF EXISTS $PG_NAME WITH (FORCE)" >/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

ensure_wrk() {
    if ! command -v wrk >/dev/null 2>&1; then
        echo "installing wrk from Debian's packages"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    fi
}

banner_key() { # banner file → "KEY_ID KEY_SECRET" of the first start's bootstrap
    python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["bootstrap"]; print(b["keyId"], b["keySecret"])' "$1"
}
