#!/usr/bin/env bash
# Runs schemathesis (from PyPI) against the server's own OpenAPI document: every operation,
# all checks (no 5xx, documented statuses and content types, responses that match their
# schemas, schema-valid data accepted, schema-invalid data refused), all phases.
#   scripts/schemathesis.sh [--max-examples N]
set -euo pipefail
cd "$(dirname "$0")/.."
EXAMPLES=50
[ "${1:-}" = "--max-examples" ] && EXAMPLES="$2"

if ! command -v schemathesis >/dev/null 2>&1; then
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore 'schemathesis>=4,<5'
fi

cargo build --quiet --bin performchat
. scripts/bench-common.sh
PORT=$(free_port)
# Failed-authentication blocking is off: schemathesis sends thousands of made-up key pairs.
"$TARGET_DIR/debug/performchat" --database-url "sqlite://$WORK/st.db" --json serve \
    --listen "127.0.0.1:$PORT" --auth-failures-per-minute 0 >"$WORK/banner.json" 2>"$WORK/server.log" &
SERVER=$!
PIDS+=("$SERVER")
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/server.log" 2>/dev/null && break; sleep 0.1; done

# Real credentials for both security schemes (tests/schemathesis/schemathesis.toml reads
# them from the environment), so that the operations behind them are tested past their
# 401: the bootstrap key pair as HTTP Basic, and a token minted with it as the bearer.
read -r KEY_ID KEY_SECRET < <(banner_key "$WORK/banner.json")
mint() { # userId → "TOKEN USER_ID": a token for that user, and the user's internal id
    curl -sf -X POST "http://127.0.0.1:$PORT/rest/v1/auth/token" -H 'Content-Type: application/json' \
        -d "{\"keyId\":\"$KEY_ID\",\"keySecret\":\"$KEY_SECRET\",\"userId\":\"$1\",\"expiresIn\":\"24h\"}" \
        | python3 -c 'import json,sys; r=json.load(sys.stdin); print(r["token"], r["user"]["id"])'
}
USER_EXTERNAL_ID=schemathesis
read -r TOKEN USER_ID < <(mint "$USER_EXTERNAL_ID")
# Another user's token, for the revocation operation to revoke (tests/schemathesis/hooks.py).
read -r REVOCABLE _ < <(mint schemathesis-revoked)
# A conversation of that token's user, and a streamed reply in it, for the operations whose
# path names them (made-up ids only ever reach their 404).
CONVERSATION=$(curl -sf -X POST "http://127.0.0.1:$PORT/rest/v1/chat/conversations" -H "Authorization: Bearer $TOKEN" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["conversation"]["id"])')
STREAMING=$(curl -sf -X POST "http://127.0.0.1:$PORT/rest/v1/agent/conversations/$CONVERSATION/messages" \
    -u "$KEY_ID:$KEY_SECRET" -H 'Content-Type: application/json' -d '{"text":"","status":"streaming"}' \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["message"]["id"])')
export PERFORMCHAT_ST_KEY_ID="$KEY_ID" PERFORMCHAT_ST_KEY_SECRET="$KEY_SECRET" PERFORMCHAT_ST_TOKEN="$TOKEN" \
    PERFORMCHAT_ST_CONVERSATION="$CONVERSATION" PERFORMCHAT_ST_STREAMING="$STREAMING" \
    PERFORMCHAT_ST_REVOCABLE="$REVOCABLE" PERFORMCHAT_ST_USER_ID="$USER_ID" \
    PERFORMCHAT_ST_USER_EXTERNAL_ID="$USER_EXTERNAL_ID"

schemathesis --config-file tests/schemathesis/schemathesis.toml run \
    "http://127.0.0.1:$PORT/rest/v1/openapi.json" --max-examples "$EXAMPLES" --seed 1
kill -0 "$SERVER" || { echo "the server died under schemathesis:" >&2; cat "$WORK/server.log" >&2; exit 1; }
