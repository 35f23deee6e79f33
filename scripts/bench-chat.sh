#!/usr/bin/env bash
# The chat's benchmark: real WebSocket clients (examples/chat_load.rs) against the release
# binary, two instances on one database.
#
#   scripts/bench-chat.sh                                  # SQLite (a fresh file, shared)
#   scripts/bench-chat.sh --database-url postgres://postgres@127.0.0.1:5432/test
#                                                          # PostgreSQL: a fresh database
#                                                          # beside the one named, dropped after
#   options: --sockets N (10000, memory and revocation)  --duration SECONDS (10)
#
# Scenarios:
#   memory      N idle authenticated sockets on one instance: (RSS with them − RSS after
#               minting their tokens) / N; the median of three rounds
#   throughput  64 users' sockets sending back to back, each ack after the durable commit;
#               then send→ack latency at half that rate
#   connect     64 sockets sending `auth` at once, 20 rounds: auth→ready
#   revoke      N sockets, half on each instance; 1 000 of their users invalidated one after
#               the other on the first: on it, whether the close frame is in the client's
#               receive buffer when the HTTP answer is read; on the other, how long after
#   fanout      100 users sending 1 000 messages/s on the first instance, heard on the second
#   webhook     the agent a webhook agent; 64 users each sending a message and waiting for the
#               receiver (in the load generator, answering 204) to get it: deliveries/s and
#               send->delivery latency
#   llm         the agent an openai agent of an endpoint in the load generator; 16 users ask 20
#               questions each: from the endpoint sending the first words to their frame at
#               the user
# Results: printed, and written to bench-results/chat-<backend>-latest.json.
set -euo pipefail
cd "$(dirname "$0")/.."

SOCKETS=10000
DURATION=10
DATABASE_URL=""
while [ $# -gt 0 ]; do
    case "$1" in
        --sockets) SOCKETS="$2"; shift 2 ;;
        --duration) DURATION="$2"; shift 2 ;;
        --database-url) DATABASE_URL="$2"; shift 2 ;;
        *) echo "unknown option $1" >&2; exit 2 ;;
    esac
done

# Each process holds up to N sockets.
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet --bin performchat --example chat_load
. scripts/bench-common.sh
LOAD="$TARGET_DIR/release/examples/chat_load"

fresh_database() {
    if [ -z "$DATABASE_URL" ]; then
        BACKEND=sqlite
        URL="sqlite://$WORK/chat-$1.db"
    else
        BACKEND=postgres
        if [ -n "$PG_DROP" ]; then psql "$PG_DROP" -qc "DROP DATABASE IF EXISTS $PG_NAME WITH (FORCE)" >/dev/null; fi
        PG_NAME="performchat_chat_bench_$(date +%s)_$1"
        psql "$DATABASE_URL" -qc "CREATE DATABASE $PG_NAME" >/dev/null
        PG_DROP="$DATABASE_URL"
        URL="${DATABASE_URL%/*}/$PG_NAME"
    fi
}

# start NAME: a server on the current database; sets PORT_<NAME> and PID_<NAME>. Logs on,
# into a file; the send and mint limits off (the load comes from one key and a few users).
start() {
    local port
    port=$(free_port)
    "$BIN" --database-url "$URL" --json serve --listen "127.0.0.1:$port" \
        --mint-rate 100000000 --mint-burst 100000000 --chat-send-rate 0 \
        >"$WORK/$1.banner" 2>"$WORK/$1.log" &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 100); do grep -q "listening on" "$WORK/$1.log" 2>/dev/null && break; sleep 0.1; done
    grep -q "listening on" "$WORK/$1.log" || { echo "the server did not start:" >&2; cat "$WORK/$1.log" >&2; exit 1; }
    printf -v "PORT_$1" '%s' "$port"
    printf -v "PID_$1" '%s' "$pid"
}

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    PIDS=()
}

key() { # banner file → "--key-id ID --key-secret SECRET"
    python3 -c 'import json,sys; b=json.load(open(sys.argv[1]))["bootstrap"]; print("--key-id", b["keyId"], "--key-secret", b["keySecret"])' "$1"
}

# One database and its servers per scenario, so that none inherits another's state.
# Memory: three rounds, each on a server of its own, and their median: the figure is a
# difference of whole-process RSS, which the allocator's retained pages move by a few
# hundred bytes per socket from one round to the next.
MEMORY_RUNS=""
for round in 1 2 3; do
    fresh_database "memory$round"; start a
    echo "memory: $SOCKETS idle sockets (round $round of 3)"
    MEMORY_RUNS="$MEMORY_RUNS$("$LOAD" memory --http "http://127.0.0.1:$PORT_a" $(key "$WORK/a.banner") --pid "$PID_a" --sockets "$SOCKETS")
"
    stop_all
done
MEMORY=$(printf '%s' "$MEMORY_RUNS" | python3 -c '
import json, sys
runs = [json.loads(l) for l in sys.stdin if l.strip()]
print(json.dumps({"scenario": "memory", "sockets": runs[0]["sockets"],
                  "bytes_per_socket": sorted(r["bytes_per_socket"] for r in runs)[len(runs) // 2],
                  "runs": runs}))')

fresh_database throughput; start a
echo "throughput: 64 sockets, ${DURATION}s at peak, ${DURATION}s at half rate"
THROUGHPUT=$("$LOAD" throughput --http "http://127.0.0.1:$PORT_a" $(key "$WORK/a.banner") --pid "$PID_a" --duration "$DURATION")
echo "connect: 64 sockets at once, 20 rounds"
CONNECT=$("$LOAD" connect --http "http://127.0.0.1:$PORT_a" $(key "$WORK/a.banner"))
stop_all

fresh_database revoke; start a; start b
echo "revoke: $SOCKETS sockets on two instances, 1 000 users invalidated"
REVOKE=$("$LOAD" revoke --http "http://127.0.0.1:$PORT_a" --other "http://127.0.0.1:$PORT_b" $(key "$WORK/a.banner") --sockets "$SOCKETS" --revoke 1000)
stop_all

fresh_database fanout; start a; start b
echo "fanout: 1 000 messages/s on one instance, heard on the other"
FANOUT=$("$LOAD" fanout --http "http://127.0.0.1:$PORT_a" --other "http://127.0.0.1:$PORT_b" $(key "$WORK/a.banner") --users 100 --rate 1000 --duration "$DURATION")
stop_all

agent() { # banner file → the bootstrap agent's id
    python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bootstrap"]["agentId"])' "$1"
}

fresh_database webhook; start a
HOOK_PORT=$(free_port)
"$BIN" --database-url "$URL" agent update "$(agent "$WORK/a.banner")" --kind webhook \
    --webhook-url "http://127.0.0.1:$HOOK_PORT/hook" >/dev/null
echo "webhook: 64 users, each waiting for its delivery, ${DURATION}s"
WEBHOOK=$("$LOAD" webhook --http "http://127.0.0.1:$PORT_a" $(key "$WORK/a.banner") --port "$HOOK_PORT" --duration "$DURATION")
stop_all

fresh_database llm; start a
LLM_PORT=$(free_port)
"$BIN" --database-url "$URL" agent update "$(agent "$WORK/a.banner")" --kind openai \
    --llm-base-url "http://127.0.0.1:$LLM_PORT/v1" --llm-model bench >/dev/null
echo "llm: 16 users, 20 questions each"
LLM=$("$LOAD" llm --http "http://127.0.0.1:$PORT_a" $(key "$WORK/a.banner") --port "$LLM_PORT")
stop_all

mkdir -p bench-results
python3 - "$BACKEND" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$MEMORY" "$THROUGHPUT" "$CONNECT" "$REVOKE" "$FANOUT" "$WEBHOOK" "$LLM" <<'EOF'
import json, os, sys
backend, stamp = sys.argv[1:3]
memory, throughput, connect, revoke, fanout, webhook, llm = (json.loads(a) for a in sys.argv[3:10])
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "")
result = {"date": stamp, "backend": backend, "machine": f"{os.cpu_count()} cores, {cpu}",
          "memory": memory, "throughput": throughput, "connect": connect, "revoke": revoke, "fanout": fanout,
          "webhook": webhook, "llm": llm}
with open(f"bench-results/chat-{backend}-latest.json", "w") as f:
    json.dump(result, f, indent=2)
def mark(ok): return "ok" if ok else "MISS"
r = revoke
rounds = ", ".join("%.2f" % (m["bytes_per_socket"] / 1024) for m in memory["runs"])
lines = [
    f"performchat chat benchmark, {stamp}, {backend}, {result['machine']}",
    f"memory      {memory['bytes_per_socket'] / 1024:.2f} KiB per idle socket (median of {rounds} KiB; {memory['sockets']} sockets; goal < 4 KiB: {mark(memory['bytes_per_socket'] < 4096)})",
    f"throughput  {throughput['acked_per_s']:.0f} acked messages/s (64 sockets; goal >= 20 000 on SQLite: {mark(throughput['acked_per_s'] >= 20000)}), "
    f"p99 send->ack {throughput['peak_latency']['p99_ms']:.2f} ms at peak, {throughput['half_rate_latency']['p99_ms']:.2f} ms at {throughput['half_rate_per_s']:.0f}/s (goal <= 5 ms: {mark(throughput['half_rate_latency']['p99_ms'] <= 5)}); CPU per message: server {throughput['cpu']['server_us_per_message']:.0f} µs, load generator {throughput['cpu']['load_generator_us_per_message']:.0f} µs",
    f"connect     auth->ready p50 {connect['auth_to_ready']['p50_ms']:.2f} ms, p99 {connect['auth_to_ready']['p99_ms']:.2f} ms (64 at once; goal <= 5 ms: {mark(connect['auth_to_ready']['p99_ms'] <= 5)})",
    f"revoke      same instance: {r['same_instance']['closed_before_http_answer']} of {r['revoked'] // 2 + r['revoked'] % 2} close frames had reached the client when it read the HTTP answer; "
    f"other instance: p50 {r['other_instance_after_http_answer']['p50_ms']:.1f} ms, p99 {r['other_instance_after_http_answer']['p99_ms']:.1f} ms after it ({r['sockets']} sockets open)",
    f"fanout      {fanout['received_on_other']} of {fanout['sent']} heard on the other instance; send->push there p50 {fanout['send_to_other_instance']['p50_ms']:.1f} ms, p99 {fanout['send_to_other_instance']['p99_ms']:.1f} ms at {fanout['rate_per_s']}/s (goal p99 <= 50 ms: {mark(fanout['send_to_other_instance']['p99_ms'] <= 50)})",
    f"webhook     {webhook['delivered_per_s']:.0f} deliveries/s ({webhook['users']} users, each waiting for its own); send->delivery p50 {webhook['send_to_delivery']['p50_ms']:.1f} ms, p99 {webhook['send_to_delivery']['p99_ms']:.1f} ms",
    f"llm         first words sent->at the user p50 {llm['first_words_to_user']['p50_ms']:.2f} ms, p99 {llm['first_words_to_user']['p99_ms']:.2f} ms ({llm['replies']} replies, {llm['users']} users; goal <= 5 ms: {mark(llm['first_words_to_user']['p99_ms'] <= 5)})",
]
print("\n" + "\n".join(lines))
with open(f"bench-results/chat-{backend}-latest.txt", "w") as f:
    f.write("\n".join(lines) + "\n")
EOF
