#!/usr/bin/env bash
# What the audit trail costs under each --audit-mints setting: mints per second for known
# users (wrk, as scripts/bench.sh's scenario a) and the bytes the trail grows by per million
# mints, each setting on a fresh database with a fresh release server.
#
#   scripts/bench-audit.sh                                  # SQLite
#   scripts/bench-audit.sh --database-url postgres://postgres@127.0.0.1:5432/test
#   options: --duration SECONDS (10)  --connections N (32)
# Results: printed, and written to bench-results/audit-<backend>-latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10
CONNECTIONS=32
DATABASE_URL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --database-url) DATABASE_URL="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cargo build --release --quiet --bin performchat
. scripts/bench-common.sh
ensure_wrk

# The audit trail's size in bytes: its table and indexes (PostgreSQL), or the whole file
# after a checkpoint (SQLite: known users' mints write nothing else).
trail_bytes() {
    if [ "$BACKEND" = sqlite ]; then
        python3 - "${URL#sqlite://}" <<'EOF'
import os, sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(db.execute("PRAGMA page_count").fetchone()[0] * db.execute("PRAGMA page_size").fetchone()[0])
EOF
    else
        psql "$URL" -Atc "SELECT pg_total_relation_size('audit_event')"
    fi
}

RESULTS=()
for setting in all refusals off; do
    if [ -z "$DATABASE_URL" ]; then
        BACKEND=sqlite
        URL="sqlite://$WORK/audit-$setting.db"
    else
        BACKEND=postgres
        if [ -n "${PG_DROP:-}" ]; then psql "$PG_DROP" -qc "DROP DATABASE IF EXISTS $PG_NAME WITH (FORCE)" >/dev/null; fi
        PG_NAME="performchat_audit_bench_$(date +%s)_$setting"
        psql "$DATABASE_URL" -qc "CREATE DATABASE $PG_NAME" >/dev/null
        PG_DROP="$DATABASE_URL"
        URL="${DATABASE_URL%/*}/$PG_NAME"
    fi
    PORT=$(free_port)
    "$BIN" --database-url "$URL" --json serve --listen "127.0.0.1:$PORT" --audit-mints "$setting" \
        --mint-rate 100000000 --mint-burst 100000000 >"$WORK/banner-$setting.json" 2>"$WORK/server-$setting.log" &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    for _ in $(seq 1 100); do grep -q "listening on" "$WORK/server-$setting.log" 2>/dev/null && break; sleep 0.1; done
    read -r KEY_ID KEY_SECRET < <(banner_key "$WORK/banner-$setting.json")
    cat >"$WORK/known.lua" <<EOF
local n = 0
request = function()
    n = n + 1
    local body = '{"keyId":"$KEY_ID","keySecret":"$KEY_SECRET","userId":"user_' .. (n % 1000) .. '","expiresIn":"1h"}'
    return wrk.format("POST", "/rest/v1/auth/token", {["Content-Type"] = "application/json"}, body)
end
EOF
    echo "--audit-mints $setting: warming up"
    wrk -t1 -c"$CONNECTIONS" -d3s -s "$WORK/known.lua" "http://127.0.0.1:$PORT" >/dev/null
    sleep 1
    before=$(trail_bytes)
    echo "--audit-mints $setting: ${DURATION}s of mints for 1 000 known users"
    out=$(wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" -s "$WORK/known.lua" "http://127.0.0.1:$PORT")
    sleep 1
    after=$(trail_bytes)
    kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
    RESULTS+=("$setting $(python3 - "$out" "$before" "$after" <<'EOF'
import re, sys
out, before, after = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
reqs = int(re.search(r"(\d+) requests in", out).group(1))
print(f"{rps:.0f} {reqs} {after - before}")
EOF
)")
done

mkdir -p bench-results
python3 - "$BACKEND" "$DURATION" "$CONNECTIONS" "${RESULTS[@]}" <<'EOF'
import json, os, sys, time
backend, duration, conns = sys.argv[1:4]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
rows = []
for r in sys.argv[4:]:
    setting, rps, reqs, grown = r.split()
    rows.append({"setting": setting, "mints_per_s": float(rps), "mints": int(reqs), "trail_bytes_grown": int(grown),
                 "bytes_per_million_mints": int(grown) * 1_000_000 / int(reqs)})
result = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "backend": backend,
          "machine": f"{os.cpu_count()} cores, {cpu}", "wrk": f"-t1 -c{conns} -d{duration}s, 1 000 known users",
          "settings": rows}
with open(f"bench-results/audit-{backend}-latest.json", "w") as f:
    json.dump(result, f, indent=2)
print(f"\naudit trail cost, {result['date']}, {backend}, {result['machine']}, wrk {result['wrk']}")
for row in rows:
    print(f"--audit-mints {row['setting']:9} {row['mints_per_s']:8.0f} mints/s   "
          f"{row['bytes_per_million_mints'] / 1e6:7.1f} MB per million mints ({row['mints']} mints)")
EOF
