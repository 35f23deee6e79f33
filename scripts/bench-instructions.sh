#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a figure that does not move with
# what else the machine is doing, for changes too small to show in requests/s on a shared
# two-core machine (see BENCHMARKS.md "A log line's cost, counted in instructions").
#
#   scripts/bench-instructions.sh [--requests N (2000)] [--bin PATH (the release build)]
#
# The release server runs under callgrind on a fresh SQLite file, logs on (into a file), the
# mint limit set out of reach. One keep-alive connection sends N mints for 100 known users,
# then N `GET /rest/v1/auth/me`; the counters are zeroed before each series and dumped after
# it (a second later, so that the audit writer's and the log thread's share is in), and each
# series' instructions, every thread's, are divided by N. SHA-256 runs in its portable code
# under valgrind (the CPU's SHA extensions are hidden from it), so the HMAC's share is larger
# here than on the machine itself.
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS=2000
BIN_OVERRIDE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --requests) REQUESTS="$2"; shift 2 ;;
        --bin) BIN_OVERRIDE="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

. scripts/bench-common.sh
if [ -n "$BIN_OVERRIDE" ]; then
    BIN="$BIN_OVERRIDE"
else
    cargo build --release --quiet --bin performchat
fi
if ! command -v valgrind >/dev/null 2>&1; then
    echo "installing valgrind from Debian's packages"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
fi

PORT=$(free_port)
valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.%p" \
    "$BIN" --database-url "sqlite://$WORK/bench.db" --json serve --listen "127.0.0.1:$PORT" \
    --mint-rate 100000000 --mint-burst 100000000 >"$WORK/banner.json" 2>"$WORK/server.log" &
SERVER_PID=$!
PIDS+=("$SERVER_PID")
for _ in $(seq 1 600); do grep -q "listening on" "$WORK/server.log" 2>/dev/null && break; sleep 0.2; done
grep -q "listening on" "$WORK/server.log" || { echo "the server did not start:" >&2; cat "$WORK/server.log" >&2; exit 1; }

python3 - "$PORT" "$WORK/banner.json" "$REQUESTS" "$SERVER_PID" <<'EOF'
import http.client, json, subprocess, sys, time
port, banner, n, pid = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4]
key = json.load(open(banner))["bootstrap"]
conn = http.client.HTTPConnection("127.0.0.1", port)

def mint(i):
    body = json.dumps({"keyId": key["keyId"], "keySecret": key["keySecret"],
                       "userId": f"user_{i % 100}", "expiresIn": "1h"})
    conn.request("POST", "/rest/v1/auth/token", body, {"Content-Type": "application/json"})
    answer = conn.getresponse()
    data = answer.read()
    assert answer.status == 200, data
    return json.loads(data)["token"]

tokens = [mint(i) for i in range(100)]

def me(i):
    conn.request("GET", "/rest/v1/auth/me", headers={"Authorization": "Bearer " + tokens[i % 100]})
    answer = conn.getresponse()
    assert answer.status == 200, answer.read()
    answer.read()

for name, request in (("mint", mint), ("me", me)):
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
    for i in range(n):
        request(i)
    time.sleep(1)
    subprocess.run(["callgrind_control", f"--dump={name}", pid], check=True, capture_output=True)
EOF

python3 - "$WORK" "$REQUESTS" <<'EOF'
import glob, os, re, sys
work, n = sys.argv[1], int(sys.argv[2])
totals = {}
for path in glob.glob(os.path.join(work, "callgrind.*")):
    text = open(path, errors="replace").read()
    # `callgrind_control --dump=NAME` writes a part whose trigger is "dump NAME".
    trigger = re.search(r"^desc: Trigger: dump (\w+)$", text, re.M)
    summary = re.search(r"^summary: (\d+)", text, re.M)
    if trigger and summary:
        totals[trigger.group(1)] = totals.get(trigger.group(1), 0) + int(summary.group(1))
for name, label in (("mint", "mint, known user"), ("me", "verify (/me)")):
    print(f"{label:18} {totals[name] / n:>10,.0f} instructions per request ({n} requests)")
EOF
