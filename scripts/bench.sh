#!/usr/bin/env bash
# The load benchmark: performchat against the HTTP ceiling, over loopback, with wrk.
#
#   scripts/bench.sh                                  # SQLite (a fresh file)
#   scripts/bench.sh --database-url postgres://postgres@127.0.0.1:5432/test
#                                                     # PostgreSQL: a fresh database is made
#                                                     # beside the one named, and dropped after
#   options: --duration SECONDS (10)  --connections N (32)  --users N (1000000, for the
#            memory figure; 0 skips it)
#
# Scenarios, one at a time, at 8, 32 and 128 connections (with the CPU each request took in
# the server and in wrk, and the machine's idle share: a wait shows as a gap between them),
# and at half the peak rate (at --connections) for the latency figure:
#   a. mint for known users   POST /rest/v1/auth/token, 10 000 userIds all seen before
#   b. mint for new users     every request a userId never seen (a durable insert each)
#   c. verify                 GET /rest/v1/auth/me with valid tokens
# Then the chat's scenarios (scripts/bench-chat.sh, on the same kind of database).
# The ceiling is examples/ceiling.rs: a minimal hyper server answering the same routes with
# constant bodies of the same sizes. Results: printed, and written to bench-results/.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=10
CONNECTIONS=32
USERS=1000000
DATABASE_URL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION="$2"; shift 2 ;;
        --connections) CONNECTIONS="$2"; shift 2 ;;
        --users) USERS="$2"; shift 2 ;;
        --database-url) DATABASE_URL="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

cargo build --release --quiet --bin performchat --example ceiling
. scripts/bench-common.sh
ensure_wrk
CEILING="$TARGET_DIR/release/examples/ceiling"

if [ -z "$DATABASE_URL" ]; then
    BACKEND=sqlite
    URL="sqlite://$WORK/bench.db"
else
    BACKEND=postgres
    PG_NAME="performchat_bench_$(date +%s)"
    psql "$DATABASE_URL" -qc "CREATE DATABASE $PG_NAME" >/dev/null
    PG_DROP="$DATABASE_URL"
    URL="${DATABASE_URL%/*}/$PG_NAME"
fi

PORT=$(free_port)
# Logs stay on (one line per request, as in production), into a file. The per-key mint limit
# stays switched on (its cost is part of every mint) but set far above what one machine can
# reach, since the whole load comes from one key.
"$BIN" --database-url "$URL" --json serve --listen "127.0.0.1:$PORT" \
    --mint-rate 100000000 --mint-burst 100000000 >"$WORK/banner.json" 2>"$WORK/server.log" &
SERVER_PID=$!
SERVED_BY=$SERVER_PID # the process whose CPU run_wrk measures (then the ceiling)
PIDS+=("$SERVER_PID")
for _ in $(seq 1 100); do grep -q "listening on" "$WORK/server.log" 2>/dev/null && break; sleep 0.1; done
grep -q "listening on" "$WORK/server.log" || { echo "the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }
read -r KEY_ID KEY_SECRET < <(banner_key "$WORK/banner.json")
BASE="http://127.0.0.1:$PORT"

# Rate limiting for the half-rate runs: each connection waits between its requests.
cat >"$WORK/pace.lua" <<'EOF'
local interval_ms = tonumber(os.getenv("PACE_MS") or "0")
delay = function() return interval_ms end
EOF

cat >"$WORK/known.lua" <<EOF
dofile("$WORK/pace.lua")
local n = 0
request = function()
    n = n + 1
    local body = '{"keyId":"$KEY_ID","keySecret":"$KEY_SECRET","userId":"user_' .. (n % 10000) .. '","expiresIn":"1h"}'
    return wrk.format("POST", "/rest/v1/auth/token", {["Content-Type"] = "application/json"}, body)
end
EOF

cat >"$WORK/new.lua" <<EOF
dofile("$WORK/pace.lua")
local n = 0
local tag = ""
init = function(args) math.randomseed(os.time() + math.floor(os.clock() * 1000000)); tag = tostring(math.random(1, 2^30)) .. "_" .. tostring(math.random(1, 2^30)) end
request = function()
    n = n + 1
    local body = '{"keyId":"$KEY_ID","keySecret":"$KEY_SECRET","userId":"new_' .. tag .. '_' .. n .. '","expiresIn":"1h"}'
    return wrk.format("POST", "/rest/v1/auth/token", {["Content-Type"] = "application/json"}, body)
end
EOF

# CPU time a process has used, in clock ticks (user + system).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# The machine's idle and total ticks so far (every core).
idle_ticks() { awk '/^cpu / {print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9}' /proc/stat; }

# wrk's summary → "rps p50_ms p99_ms non2xx requests server_cpu_us wrk_cpu_us idle_share",
# the CPU figures per request.
run_wrk() { # script url duration [pace_ms] [connections]
    local out server_before server_after idle_before idle_after wrk_cpu
    server_before=$(cpu_ticks "$SERVED_BY")
    idle_before=$(idle_ticks)
    out=$( { TIMEFORMAT='%U %S'; time PACE_MS="${4:-0}" wrk -t2 -c"${5:-$CONNECTIONS}" -d"${3}s" --latency -s "$1" "$2"; } 2>"$WORK/wrk.time")
    server_after=$(cpu_ticks "$SERVED_BY")
    idle_after=$(idle_ticks)
    wrk_cpu=$(tail -n 1 "$WORK/wrk.time")
    python3 - "$out" "$server_before" "$server_after" "$wrk_cpu" "$idle_before" "$idle_after" "$(getconf CLK_TCK)" <<'EOF'
import re, sys
out, s0, s1, wrk_cpu, i0, i1, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], sys.argv[6], int(sys.argv[7])
def ms(v, unit):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
p50 = ms(*re.search(r"50%\s+([\d.]+)(us|ms|s)", out).groups())
p99 = ms(*re.search(r"99%\s+([\d.]+)(us|ms|s)", out).groups())
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
reqs = int(re.search(r"(\d+) requests in", out).group(1))
server_us = (s1 - s0) / hz * 1e6 / max(reqs, 1)
wrk_us = sum(float(x) for x in wrk_cpu.split()) * 1e6 / max(reqs, 1)
idle0, total0 = map(int, i0.split())
idle1, total1 = map(int, i1.split())
idle = (idle1 - idle0) / max(total1 - total0, 1)
print(f"{rps:.0f} {p50:.3f} {p99:.3f} {bad.group(1) if bad else 0} {reqs} {server_us:.1f} {wrk_us:.1f} {idle:.3f}")
EOF
}

echo "warming up: 10 000 known users"
wrk -t2 -c"$CONNECTIONS" -d5s -s "$WORK/known.lua" "$BASE" >/dev/null

echo "minting tokens for the verify scenario"
python3 - "$BASE" "$KEY_ID" "$KEY_SECRET" "$WORK/tokens.lua" <<'EOF'
import json, sys, urllib.request
base, key_id, secret, out = sys.argv[1:5]
tokens = []
for i in range(200):
    body = json.dumps({"keyId": key_id, "keySecret": secret, "userId": f"user_{i}", "expiresIn": "24h"}).encode()
    req = urllib.request.Request(base + "/rest/v1/auth/token", body, {"Content-Type": "application/json"})
    tokens.append(json.load(urllib.request.urlopen(req))["token"])
with open(out, "w") as f:
    f.write("tokens = {" + ",".join(f'"{t}"' for t in tokens) + "}\n")
EOF
cat >"$WORK/me.lua" <<EOF
dofile("$WORK/pace.lua")
dofile("$WORK/tokens.lua")
local n = 0
request = function()
    n = n + 1
    return wrk.format("GET", "/rest/v1/auth/me", {["Authorization"] = "Bearer " .. tokens[(n % #tokens) + 1]})
end
EOF

# Response sizes, for the ceiling's constant bodies.
TOKEN_BYTES=$(curl -s -X POST "$BASE/rest/v1/auth/token" -H 'Content-Type: application/json' \
    -d "{\"keyId\":\"$KEY_ID\",\"keySecret\":\"$KEY_SECRET\",\"userId\":\"user_1\",\"expiresIn\":\"1h\"}" | wc -c)
FIRST_TOKEN=$(python3 -c 'import re,sys; print(re.search(r"\"([^\"]+)\"", open(sys.argv[1]).read()).group(1))' "$WORK/tokens.lua")
ME_BYTES=$(curl -s "$BASE/rest/v1/auth/me" -H "Authorization: Bearer $FIRST_TOKEN" | wc -c)

declare -A R
LEVELS=(8 32 128)
for s in known new verify; do
    case $s in known) script=known.lua ;; new) script=new.lua ;; verify) script=me.lua ;; esac
    for c in "${LEVELS[@]}"; do
        [ "$c" = "$CONNECTIONS" ] && continue
        echo "scenario $s: $c connections"
        R[${s}_$c]=$(run_wrk "$WORK/$script" "$BASE" "$DURATION" 0 "$c")
    done
    echo "scenario $s: peak"
    R[$s]=$(run_wrk "$WORK/$script" "$BASE" "$DURATION")
    R[${s}_$CONNECTIONS]=${R[$s]}
    peak=$(echo "${R[$s]}" | cut -d' ' -f1)
    pace=$(python3 -c "print(max(1, round($CONNECTIONS * 1000 / ($peak / 2))))")
    echo "scenario $s: at half the peak rate"
    R[${s}_half]=$(run_wrk "$WORK/$script" "$BASE" "$DURATION" "$pace")
done
RSS_AFTER_RUNS=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")

# Memory after USERS distinct users: keep minting new users until that many exist.
RSS_MILLION=""
if [ "$USERS" -gt 0 ]; then
    echo "memory: minting tokens for $USERS distinct users"
    minted=$(echo "${R[new]}" | cut -d' ' -f5)
    minted=$((minted + $(echo "${R[new_half]}" | cut -d' ' -f5)))
    while [ "$minted" -lt "$USERS" ]; do
        got=$(run_wrk "$WORK/new.lua" "$BASE" 20 | cut -d' ' -f5)
        minted=$((minted + got))
        echo "  $minted users"
    done
    RSS_MILLION=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
fi
kill "$SERVER_PID"

CPORT=$(free_port)
"$CEILING" "127.0.0.1:$CPORT" "$TOKEN_BYTES" "$ME_BYTES" >/dev/null &
SERVED_BY=$!
PIDS+=("$!")
sleep 0.5
echo "ceiling"
CEIL_POST=$(run_wrk "$WORK/known.lua" "http://127.0.0.1:$CPORT" "$DURATION")
CEIL_GET=$(run_wrk "$WORK/me.lua" "http://127.0.0.1:$CPORT" "$DURATION")
for c in "${LEVELS[@]}"; do
    [ "$c" = "$CONNECTIONS" ] && continue
    R[ceil_post_$c]=$(run_wrk "$WORK/known.lua" "http://127.0.0.1:$CPORT" "$DURATION" 0 "$c")
    R[ceil_get_$c]=$(run_wrk "$WORK/me.lua" "http://127.0.0.1:$CPORT" "$DURATION" 0 "$c")
done
R[ceil_post_$CONNECTIONS]=$CEIL_POST
R[ceil_get_$CONNECTIONS]=$CEIL_GET
LEVEL_ROWS=()
for c in "${LEVELS[@]}"; do
    for s in known new verify ceil_post ceil_get; do
        LEVEL_ROWS+=("$s:$c:${R[${s}_$c]// /,}")
    done
done

mkdir -p bench-results
STAMP=$(date -u +%Y-%m-%dT%H:%M:%SZ)
python3 - "$STAMP" "$BACKEND" "$DURATION" "$CONNECTIONS" "$USERS" "$RSS_AFTER_RUNS" "$RSS_MILLION" \
    "$CEIL_POST" "$CEIL_GET" "${R[known]}" "${R[known_half]}" "${R[new]}" "${R[new_half]}" \
    "${R[verify]}" "${R[verify_half]}" "${LEVEL_ROWS[@]}" <<'EOF'
import json, os, platform, sys
(stamp, backend, duration, conns, users, rss_runs, rss_million, ceil_post, ceil_get,
 known, known_half, new, new_half, verify, verify_half) = sys.argv[1:16]
def parse(s):
    rps, p50, p99, bad, reqs, server_us, wrk_us, idle = s.replace(",", " ").split()
    return {"rps": float(rps), "p50_ms": float(p50), "p99_ms": float(p99), "non_2xx": int(bad), "requests": int(reqs),
            "server_cpu_us_per_request": float(server_us), "wrk_cpu_us_per_request": float(wrk_us), "machine_idle_share": float(idle)}
levels = {}
for row in sys.argv[16:]:
    name, c, figures = row.split(":", 2)
    levels.setdefault(name, {})[int(c)] = parse(figures)
ceil_post, ceil_get = parse(ceil_post), parse(ceil_get)
rows = [
    ("a. mint, known users", parse(known), parse(known_half), ceil_post, 0.60),
    ("b. mint, new users", parse(new), parse(new_half), ceil_post, 0.30),
    ("c. verify (/me)", parse(verify), parse(verify_half), ceil_get, 0.75),
]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
result = {
    "date": stamp, "backend": backend, "machine": f"{os.cpu_count()} cores, {cpu}",
    "command": "scripts/bench.sh" + ("" if backend == "sqlite" else " --database-url …"),
    "duration_s": int(duration), "connections": int(conns),
    "ceiling": {"post": ceil_post, "get": ceil_get},
    "scenarios": [
        {"name": n, "peak": peak, "half_rate": half, "ratio": peak["rps"] / ceil["rps"], "target_ratio": target}
        for n, peak, half, ceil, target in rows
    ],
    "by_connections": levels,
    "rss_kib_after_scenarios": int(rss_runs),
    "users_for_memory": int(users),
    "rss_kib_after_users": int(rss_million) if rss_million else None,
}
os.makedirs("bench-results", exist_ok=True)
with open(f"bench-results/{backend}-latest.json", "w") as f:
    json.dump(result, f, indent=2)
lines = [f"performchat load benchmark, {stamp}, {backend}, {result['machine']}",
         f"wrk -t2 -c{conns} -d{duration}s over loopback; ceiling: {ceil_post['rps']:.0f} req/s (POST), {ceil_get['rps']:.0f} req/s (GET)",
         "",
         f"{'scenario':24} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'ratio':>6} {'target':>7} {'p99 @ half':>11} {'errors':>7}"]
for s in result["scenarios"]:
    p, h = s["peak"], s["half_rate"]
    ok = "ok" if s["ratio"] >= s["target_ratio"] else "MISS"
    lines.append(f"{s['name']:24} {p['rps']:9.0f} {p['p50_ms']:8.2f} {p['p99_ms']:8.2f} {s['ratio']:6.0%} {s['target_ratio']:5.0%} {ok:>4} {h['p99_ms']:7.2f} ms {p['non_2xx'] + h['non_2xx']:7}")
lines.append("")
lines.append("by connections (peak rate): req/s, p50, CPU µs per request in the server | in wrk, the machine's idle share")
names = {"known": "a. mint, known users", "new": "b. mint, new users", "verify": "c. verify (/me)",
         "ceil_post": "ceiling POST", "ceil_get": "ceiling GET"}
for name, label in names.items():
    cells = []
    for c, f in sorted(levels.get(name, {}).items()):
        cells.append(f"{c:>3}: {f['rps']:7.0f} {f['p50_ms']:6.2f} ms {f['server_cpu_us_per_request']:5.1f}|{f['wrk_cpu_us_per_request']:4.1f} µs {f['machine_idle_share']:4.0%} idle")
    lines.append(f"{label:22} " + "   ".join(cells))
lines.append("")
lines.append(f"resident memory after the scenarios: {int(rss_runs) / 1024:.1f} MiB")
if rss_million:
    lines.append(f"resident memory after {int(users):,} distinct users: {int(rss_million) / 1024:.1f} MiB (target < 64 MiB)")
text = "\n".join(lines)
print("\n" + text)
with open(f"bench-results/{backend}-latest.txt", "w") as f:
    f.write(text + "\n")
EOF

echo
echo "the chat's scenarios"
if [ -z "$DATABASE_URL" ]; then
    scripts/bench-chat.sh --duration "$DURATION"
else
    scripts/bench-chat.sh --duration "$DURATION" --database-url "$DATABASE_URL"
fi
