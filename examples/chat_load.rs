//! The chat's load generator, for `scripts/bench-chat.sh`: each subcommand runs one scenario
//! against running servers through real WebSocket clients and prints one JSON object.
//!
//! ```text
//! chat_load memory     --http URL --key-id ID --key-secret S --pid PID [--sockets 10000]
//! chat_load throughput --http URL --key-id ID --key-secret S --pid PID [--sockets 64] [--duration 10]
//! chat_load connect    --http URL --key-id ID --key-secret S [--sockets 64] [--rounds 20]
//! chat_load revoke     --http URL --other URL --key-id ID --key-secret S [--sockets 10000] [--revoke 1000]
//! chat_load fanout     --http URL --other URL --key-id ID --key-secret S [--users 100] [--rate 1000] [--duration 10]
//! chat_load webhook    --http URL --key-id ID --key-secret S --port P [--users 64] [--duration 10]
//! chat_load llm        --http URL --key-id ID --key-secret S --port P [--users 16] [--rounds 20]
//! ```
//!
//! `webhook` and `llm` serve on `--port` what the agent under test calls (a webhook receiver;
//! an OpenAI-compatible endpoint): the agent must point there.
//!
//! `--http` is the instance that takes the calls; `--other` a second instance on the same
//! database.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt, stream};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> (String, Args) {
        let mut raw = std::env::args().skip(1);
        let command = raw
            .next()
            .expect("a scenario: memory, throughput, connect, revoke, fanout");
        let mut map = HashMap::new();
        while let Some(name) = raw.next() {
            let name = name.trim_start_matches("--").to_owned();
            map.insert(name, raw.next().expect("every option takes a value"));
        }
        (command, Args(map))
    }

    fn text(&self, name: &str) -> String {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("--{name} is required"))
            .clone()
    }

    fn number(&self, name: &str, default: u64) -> u64 {
        self.0
            .get(name)
            .map(|v| v.parse().expect("a number"))
            .unwrap_or(default)
    }
}

/// A server to call: its HTTP base URL and the key pair that mints.
#[derive(Clone)]
struct Target {
    http: String,
    key_id: String,
    key_secret: String,
    client: reqwest::Client,
}

impl Target {
    fn ws(http: &str) -> String {
        format!("{}/rest/v1/chat/ws", http.replacen("http://", "ws://", 1))
    }

    async fn mint(&self, user: &str) -> String {
        let res = self
            .client
            .post(format!("{}/rest/v1/auth/token", self.http))
            .json(&json!({"keyId": self.key_id, "keySecret": self.key_secret,
                          "userId": user, "expiresIn": "2h"}))
            .send()
            .await
            .expect("mint");
        assert_eq!(res.status(), 200, "minting for {user}");
        res.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    /// Tokens for `n` users named `{prefix}{i}`, 64 mints at a time.
    async fn mint_many(&self, prefix: &str, n: u64) -> Vec<String> {
        stream::iter(0..n)
            .map(|i| {
                let t = self.clone();
                async move { t.mint(&format!("{prefix}{i}")).await }
            })
            .buffered(64)
            .collect()
            .await
    }

    async fn invalidate(&self, user: &str) {
        let res = self
            .client
            .post(format!("{}/rest/v1/auth/invalidate", self.http))
            .json(&json!({"keyId": self.key_id, "keySecret": self.key_secret, "externalId": user}))
            .send()
            .await
            .expect("invalidate");
        assert_eq!(res.status(), 200, "invalidating {user}");
    }
}

/// Small client buffers: this process holds as many sockets as the server.
async fn connect(url: &str) -> Ws {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut attempt = 0;
    loop {
        match tokio_tungstenite::connect_async_with_config(url, Some(config), true).await {
            Ok((ws, _)) => return ws,
            Err(e) if attempt < 5 => {
                attempt += 1;
                eprintln!("connect failed ({e}), retrying");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("cannot connect to {url}: {e}"),
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send a frame");
}

/// The next JSON frame (pings skipped).
async fn next(ws: &mut Ws) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .expect("a frame within 30 s")
        {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(t.as_str()).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Sends `auth` and waits for `ready`.
async fn authenticate(ws: &mut Ws, token: &str) {
    send(ws, json!({"type": "auth", "token": token})).await;
    let ready = next(ws).await;
    assert_eq!(ready["type"], "ready", "{ready}");
}

/// An authenticated socket with its user's open conversation.
async fn chat_socket(url: &str, token: &str) -> (Ws, String) {
    let mut ws = connect(url).await;
    authenticate(&mut ws, token).await;
    send(&mut ws, json!({"type": "open"})).await;
    let opened = next(&mut ws).await;
    let id = opened["conversation"]["id"].as_str().unwrap().to_owned();
    (ws, id)
}

/// CPU time a process used so far (user + system), from /proc.
fn cpu_time(pid: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("the server's /proc status")
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// p50 and p99 of latencies, in milliseconds.
fn percentiles(samples: &mut [Duration]) -> Value {
    samples.sort();
    let at = |q: f64| {
        if samples.is_empty() {
            return 0.0;
        }
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i].as_secs_f64() * 1000.0
    };
    json!({"samples": samples.len(), "p50_ms": at(0.50), "p99_ms": at(0.99), "max_ms": at(1.0)})
}

#[tokio::main]
async fn main() {
    let (command, args) = Args::parse();
    let target = Target {
        http: args.text("http"),
        key_id: args.text("key-id"),
        key_secret: args.text("key-secret"),
        client: reqwest::Client::new(),
    };
    let result = match command.as_str() {
        "memory" => memory(&target, &args).await,
        "throughput" => throughput(&target, &args).await,
        "connect" => connect_latency(&target, &args).await,
        "revoke" => revoke(&target, &args).await,
        "fanout" => fanout(&target, &args).await,
        "webhook" => webhook(&target, &args).await,
        "llm" => llm(&target, &args).await,
        other => panic!("unknown scenario {other}"),
    };
    println!("{result}");
}

/// Resident memory per idle authenticated socket: (RSS with the sockets − RSS after minting
/// their tokens) / sockets.
async fn memory(target: &Target, args: &Args) -> Value {
    let n = args.number("sockets", 10_000);
    let pid = args.number("pid", 0) as u32;
    let tokens = target.mint_many("idle_", n).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = rss_kib(pid);
    let url = Target::ws(&target.http);
    let sockets: Vec<Ws> = stream::iter(tokens)
        .map(|token| {
            let url = url.clone();
            async move {
                let mut ws = connect(&url).await;
                authenticate(&mut ws, &token).await;
                ws
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kib(pid);
    let per_socket = (after as f64 - before as f64) * 1024.0 / n as f64;
    drop(sockets);
    json!({"scenario": "memory", "sockets": n, "rss_before_kib": before,
           "rss_after_kib": after, "bytes_per_socket": per_socket.round()})
}

/// Acked messages per second, 64 users each sending back to back on their socket; then
/// send→ack latency at half that rate.
async fn throughput(target: &Target, args: &Args) -> Value {
    let n = args.number("sockets", 64);
    let duration = Duration::from_secs(args.number("duration", 10));
    let tokens = target
        .mint_many(&format!("sender_{}_", std::process::id()), n)
        .await;
    let url = Target::ws(&target.http);
    let mut sockets = Vec::new();
    for token in &tokens {
        sockets.push(chat_socket(&url, token).await);
    }
    // Peak: each socket sends its next message once the last one is acked.
    let server = args.number("pid", 0).to_string();
    let cpu_before = (cpu_time(&server), cpu_time("self"));
    let (peak_sockets, peak) = run_senders("peak", sockets, duration, None).await;
    let cpu_after = (cpu_time(&server), cpu_time("self"));
    let per_message = |before: Duration, after: Duration| {
        ((after - before).as_secs_f64() * 1e6 / peak.0.max(1) as f64).round()
    };
    let cpu = json!({"server_us_per_message": per_message(cpu_before.0, cpu_after.0),
                     "load_generator_us_per_message": per_message(cpu_before.1, cpu_after.1)});
    let rate = peak.0 as f64 / duration.as_secs_f64();
    // Half the peak rate, paced per socket.
    let interval = Duration::from_secs_f64(n as f64 / (rate / 2.0));
    let (_, half) = run_senders("half", peak_sockets, duration, Some(interval)).await;
    let (_, mut peak_lat) = peak;
    let (half_count, mut half_lat) = half;
    json!({"scenario": "throughput", "sockets": n, "duration_s": duration.as_secs(),
           "acked_per_s": rate.round(), "peak_latency": percentiles(&mut peak_lat), "cpu": cpu,
           "half_rate_per_s": (half_count as f64 / duration.as_secs_f64()).round(),
           "half_rate_latency": percentiles(&mut half_lat)})
}

type Senders = Vec<(Ws, String)>;

async fn run_senders(
    run: &'static str,
    sockets: Senders,
    duration: Duration,
    pace: Option<Duration>,
) -> (Senders, (u64, Vec<Duration>)) {
    let count = sockets.len() as f64;
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (mut ws, conversation))| {
            tokio::spawn(async move {
                // Paced sockets start spread over one interval, so that the sends arrive
                // at a steady rate rather than all at once, once per interval.
                let start =
                    Instant::now() + pace.map_or(Duration::ZERO, |p| p.mul_f64(i as f64 / count));
                let mut latencies = Vec::new();
                let mut n = 0u64;
                // Unique per run: a clientMessageId sent again would be acked as a duplicate.
                let tag = format!("{run}-{i}");
                while start.elapsed() < duration {
                    let slot = pace.map(|p| start + p * n as u32);
                    if let Some(slot) = slot {
                        tokio::time::sleep_until(slot.into()).await;
                    }
                    let sent = Instant::now();
                    send(&mut ws, json!({"type": "send", "conversationId": conversation,
                        "clientMessageId": format!("{tag}-{n}"), "text": "How do I reset my password?"}))
                        .await;
                    loop {
                        let frame = next(&mut ws).await;
                        if frame["type"] == "ack" {
                            // A repeat would be answered without being stored again.
                            assert_eq!(frame["duplicate"], false, "{frame}");
                            break;
                        }
                        assert_ne!(frame["type"], "error", "{frame}");
                    }
                    latencies.push(sent.elapsed());
                    n += 1;
                }
                // The pushes of our own messages that are still coming.
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_millis(200), ws.next()).await
                {}
                ((ws, conversation), n, latencies)
            })
        })
        .collect();
    let mut sockets = Vec::new();
    let mut count = 0;
    let mut all = Vec::new();
    for t in tasks {
        let (socket, n, latencies) = t.await.unwrap();
        sockets.push(socket);
        count += n;
        all.extend(latencies);
    }
    (sockets, (count, all))
}

/// `auth`→`ready` with `sockets` sockets authenticating at once, `rounds` times.
async fn connect_latency(target: &Target, args: &Args) -> Value {
    let n = args.number("sockets", 64);
    let rounds = args.number("rounds", 20);
    let tokens = Arc::new(target.mint_many("connect_", n).await);
    let url = Target::ws(&target.http);
    let mut samples = Vec::new();
    for _ in 0..rounds {
        // Connected first (TCP and upgrade), then all authenticate at once.
        let mut sockets = Vec::new();
        for _ in 0..n {
            sockets.push(connect(&url).await);
        }
        let barrier = Arc::new(tokio::sync::Barrier::new(n as usize));
        let tasks: Vec<_> = sockets
            .into_iter()
            .enumerate()
            .map(|(i, mut ws)| {
                let barrier = barrier.clone();
                let tokens = tokens.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    let start = Instant::now();
                    authenticate(&mut ws, &tokens[i]).await;
                    let took = start.elapsed();
                    let _ = ws.close(None).await;
                    took
                })
            })
            .collect();
        for t in tasks {
            samples.push(t.await.unwrap());
        }
    }
    json!({"scenario": "connect", "sockets": n, "rounds": rounds,
           "auth_to_ready": percentiles(&mut samples)})
}

/// Reads a socket until the server closes it; the instant of the close frame.
async fn close_instant(mut ws: Ws) -> Option<(u16, Instant)> {
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(Message::Close(Some(close))) => {
                return Some((u16::from(close.code), Instant::now()));
            }
            Ok(_) => continue,
            Err(_) => return None,
        }
    }
    None
}

/// Whether a close frame from the server has reached this machine: it waits in the
/// socket's kernel receive buffer, looked at without taking it (`MSG_PEEK`, on a duplicate of
/// the descriptor, through std's safe `peek`). The stream itself is not read after `ready`,
/// so nothing waits in tungstenite's buffer, and the frames before a close can only be pings
/// (a server's frames are not masked: 2 header bytes, 2 more for a payload of 126 bytes or
/// more). No crate reads a frame header without taking its bytes.
fn close_waiting(ws: &Ws) -> bool {
    let MaybeTlsStream::Plain(tcp) = ws.get_ref() else {
        unreachable!("the benchmark speaks ws://")
    };
    let dup = socket2::SockRef::from(tcp)
        .try_clone()
        .expect("duplicate a socket");
    let mut bytes = [0u8; 512];
    let Ok(n) = std::net::TcpStream::from(dup).peek(&mut bytes) else {
        return false; // WouldBlock: nothing has arrived
    };
    let bytes = &bytes[..n];
    let mut at = 0;
    while at + 2 <= n {
        if bytes[at] & 0x0f == 0x8 {
            return true;
        }
        at += match bytes[at + 1] & 0x7f {
            126 if at + 4 <= n => {
                4 + usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]))
            }
            126 | 127 => return false,
            len => 2 + usize::from(len),
        };
    }
    false
}

/// `sockets` idle sockets, half on each instance; `revoke` of their users invalidated one
/// after the other through the first instance. On that instance the close frame should leave
/// before the HTTP answer: when the answer is read, the close frame is looked for in the
/// socket's receive buffer (see [`close_waiting`]); one not there yet is timed from the answer.
/// On the other instance, how long after the answer its close frame is read.
async fn revoke(target: &Target, args: &Args) -> Value {
    let n = args.number("sockets", 10_000);
    let revoked = args.number("revoke", 1_000).min(n);
    let other = args.text("other");
    let tag = std::process::id();
    let tokens = target.mint_many(&format!("revoke_{tag}_"), n).await;
    let urls = [Target::ws(&target.http), Target::ws(&other)];
    let sockets: Vec<(usize, Ws)> = stream::iter(tokens.into_iter().enumerate())
        .map(|(i, token)| {
            let url = urls[i % 2].clone();
            async move {
                let mut ws = connect(&url).await;
                authenticate(&mut ws, &token).await;
                (i, ws)
            }
        })
        .buffer_unordered(128)
        .collect()
        .await;
    // Same instance (even i): kept unread until their user's invalidation is answered.
    let mut same = HashMap::new();
    let mut closes = HashMap::new();
    let mut kept = Vec::new();
    for (i, ws) in sockets {
        if (i as u64) >= revoked {
            kept.push(ws);
        } else if i % 2 == 0 {
            same.insert(i, ws);
        } else {
            closes.insert(i, tokio::spawn(close_instant(ws)));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut answered = HashMap::new();
    let mut same_before_answer = 0;
    let mut late = HashSet::new();
    for i in 0..revoked as usize {
        target.invalidate(&format!("revoke_{tag}_{i}")).await;
        answered.insert(i, Instant::now());
        if let Some(ws) = same.remove(&i) {
            if close_waiting(&ws) {
                same_before_answer += 1;
            } else {
                late.insert(i);
            }
            closes.insert(i, tokio::spawn(close_instant(ws)));
        }
    }
    let mut same_after = Vec::new();
    let mut other_lat = Vec::new();
    for (i, task) in closes {
        let (code, at) = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("closed within 10 s")
            .unwrap()
            .expect("a close frame");
        assert_eq!(code, 4002);
        let answer = answered[&i];
        if late.contains(&i) {
            same_after.push(at.saturating_duration_since(answer));
        } else if i % 2 == 1 {
            other_lat.push(at.saturating_duration_since(answer));
        }
    }
    drop(kept);
    json!({"scenario": "revoke", "sockets": n, "revoked": revoked,
           "same_instance": {"closed_before_http_answer": same_before_answer,
                             "arrived_after_http_answer": percentiles(&mut same_after)},
           "other_instance_after_http_answer": percentiles(&mut other_lat)})
}

/// `users` users each with a sending socket on the first instance and a listening one on the
/// other; `rate` messages per second in all; the time from a send to its push on the other.
async fn fanout(target: &Target, args: &Args) -> Value {
    let users = args.number("users", 100);
    let rate = args.number("rate", 1000);
    let duration = Duration::from_secs(args.number("duration", 10));
    let other = args.text("other");
    let tokens = target
        .mint_many(&format!("fanout_{}_", std::process::id()), users)
        .await;
    let (here, there) = (Target::ws(&target.http), Target::ws(&other));
    let sent_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let mut senders = Vec::new();
    let mut listeners = Vec::new();
    for token in &tokens {
        let (ws, conversation) = chat_socket(&here, token).await;
        let mut listener = connect(&there).await;
        authenticate(&mut listener, token).await;
        senders.push((ws, conversation));
        listeners.push(listener);
    }
    let total = (rate * duration.as_secs()) as usize;
    let listen_tasks: Vec<_> = listeners
        .into_iter()
        .map(|mut ws| {
            let sent_at = sent_at.clone();
            tokio::spawn(async move {
                let mut lags = Vec::new();
                while let Ok(Some(Ok(frame))) =
                    tokio::time::timeout(Duration::from_secs(3), ws.next()).await
                {
                    let Message::Text(t) = frame else { continue };
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    if v["type"] != "message" {
                        continue;
                    }
                    let key = v["message"]["clientMessageId"].as_str().unwrap().to_owned();
                    if let Some(at) = sent_at.lock().unwrap().get(&key) {
                        lags.push(at.elapsed());
                    }
                }
                lags
            })
        })
        .collect();
    let interval = Duration::from_secs_f64(users as f64 / rate as f64);
    let send_tasks: Vec<_> = senders
        .into_iter()
        .enumerate()
        .map(|(i, (ws, conversation))| {
            let sent_at = sent_at.clone();
            let (mut sink, mut stream) = ws.split();
            // Acks and the pushes of our own messages, read as they come.
            let drain = tokio::spawn(async move {
                while let Ok(Some(_)) =
                    tokio::time::timeout(Duration::from_secs(2), stream.next()).await
                {
                }
            });
            tokio::spawn(async move {
                // Spread the users over one interval.
                let start = Instant::now() + interval.mul_f64(i as f64 / users as f64);
                let mut n = 0u32;
                while start.elapsed() < duration {
                    tokio::time::sleep_until((start + interval * n).into()).await;
                    let key = format!("f{i}-{n}");
                    let frame = json!({"type": "send", "conversationId": conversation,
                        "clientMessageId": key, "text": "Where is my order?"});
                    sent_at.lock().unwrap().insert(key, Instant::now());
                    sink.send(Message::text(frame.to_string())).await.unwrap();
                    n += 1;
                }
                let _ = drain.await;
                n
            })
        })
        .collect();
    let mut sent = 0;
    for t in send_tasks {
        sent += t.await.unwrap();
    }
    let mut lags = Vec::new();
    for t in listen_tasks {
        lags.extend(t.await.unwrap());
    }
    json!({"scenario": "fanout", "users": users, "rate_per_s": rate, "planned": total,
           "sent": sent, "received_on_other": lags.len(),
           "send_to_other_instance": percentiles(&mut lags)})
}

/// Serves `app` on 127.0.0.1:`port` in the background.
async fn serve(port: u64, app: axum::Router) {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port as u16))
        .await
        .expect("the --port to serve the agent's calls on");
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
}

/// Users whose sockets read and drop everything (acks, echoes, agent states).
async fn users_with_conversations(target: &Target, prefix: &str, n: u64) -> Vec<(Ws, String)> {
    let tokens = target.mint_many(prefix, n).await;
    let url = Target::ws(&target.http);
    let mut users = Vec::new();
    for token in &tokens {
        users.push(chat_socket(&url, token).await);
    }
    users
}

/// Webhook deliveries: `--users` users each send a message, wait until the webhook receiver
/// (here, answering 204 at once) has it, and send the next, for `--duration` seconds. Each
/// delivery's latency runs from the user's send to its arrival at the receiver.
async fn webhook(target: &Target, args: &Args) -> Value {
    type Waiting = Arc<Mutex<HashMap<String, tokio::sync::oneshot::Sender<Instant>>>>;
    let users = args.number("users", 64);
    let duration = Duration::from_secs(args.number("duration", 10));
    let waiting: Waiting = Arc::default();
    let arrived = waiting.clone();
    let receiver = move |body: axum::body::Bytes| {
        let arrived = arrived.clone();
        async move {
            let at = Instant::now();
            let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if let Some(id) = event["data"]["message"]["clientMessageId"].as_str()
                && let Some(tx) = arrived.lock().unwrap().remove(id)
            {
                let _ = tx.send(at);
            }
            axum::http::StatusCode::NO_CONTENT
        }
    };
    serve(
        args.number("port", 0),
        axum::Router::new().fallback(receiver),
    )
    .await;
    let sockets = users_with_conversations(target, "hook_", users).await;
    let start = Instant::now();
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (ws, conversation))| {
            let waiting = waiting.clone();
            let (mut sink, mut stream) = ws.split();
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut n = 0;
                while start.elapsed() < duration {
                    let key = format!("w{i}-{n}");
                    let (tx, rx) = tokio::sync::oneshot::channel();
                    waiting.lock().unwrap().insert(key.clone(), tx);
                    let frame = json!({"type": "send", "conversationId": conversation,
                        "clientMessageId": key, "text": "Where is my order?"});
                    let sent = Instant::now();
                    sink.send(Message::text(frame.to_string())).await.unwrap();
                    let at = tokio::time::timeout(Duration::from_secs(30), rx)
                        .await
                        .expect("delivered within 30 s")
                        .unwrap();
                    latencies.push(at - sent);
                    n += 1;
                }
                drain.abort();
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.unwrap());
    }
    let elapsed = start.elapsed().as_secs_f64();
    json!({"scenario": "webhook", "users": users, "duration_s": elapsed,
           "delivered": latencies.len(), "delivered_per_s": latencies.len() as f64 / elapsed,
           "send_to_delivery": percentiles(&mut latencies)})
}

/// LLM replies: `--users` users each ask `--rounds` questions one after the other; the
/// OpenAI-compatible endpoint served here answers at once (headers and the role chunk, as
/// OpenAI's does), sends the first words 50 ms later (the model's time to first token), then
/// four more chunks 20 ms apart. Measured: from the moment the endpoint sends the first words
/// to the arrival at the user's socket of the first frame that carries them.
async fn llm(target: &Target, args: &Args) -> Value {
    type FirstChunks = Arc<Mutex<HashMap<String, Instant>>>;
    let users = args.number("users", 16);
    let rounds = args.number("rounds", 20);
    let first_chunks: FirstChunks = Arc::default();
    let sent_first = first_chunks.clone();
    let endpoint = move |body: axum::body::Bytes| {
        let sent_first = sent_first.clone();
        async move {
            let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let asked = request["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned();
            let chunk = |text: &str| {
                format!(
                    "data: {}\n\n",
                    json!({"choices": [{"index": 0, "delta": {"content": text}}]})
                )
            };
            let role = format!(
                "data: {}\n\n",
                json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})
            );
            let pieces: Vec<String> = [role]
                .into_iter()
                .chain(
                    ["Your ", "order ", "ships ", "today", "."]
                        .iter()
                        .map(|t| chunk(t)),
                )
                .chain(["data: [DONE]\n\n".to_owned()])
                .collect();
            let body = stream::iter(pieces.into_iter().enumerate()).then(move |(i, piece)| {
                let (sent_first, asked) = (sent_first.clone(), asked.clone());
                async move {
                    match i {
                        0 => {}
                        1 => {
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            sent_first.lock().unwrap().insert(asked, Instant::now());
                        }
                        _ => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                    Ok::<_, std::io::Error>(axum::body::Bytes::from(piece))
                }
            });
            (
                [("content-type", "text/event-stream")],
                axum::body::Body::from_stream(body),
            )
        }
    };
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(endpoint));
    serve(args.number("port", 0), app).await;
    let sockets = users_with_conversations(target, "llm_", users).await;
    let tasks: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, (mut ws, conversation))| {
            let first_chunks = first_chunks.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut finished = HashSet::new();
                let mut repeats = 0;
                for round in 0..rounds {
                    let question = format!("question {i}-{round}");
                    send(
                        &mut ws,
                        json!({"type": "send", "conversationId": conversation,
                        "clientMessageId": format!("q{i}-{round}"), "text": question}),
                    )
                    .await;
                    let mut first = None;
                    loop {
                        let frame = next(&mut ws).await;
                        if frame["type"] == "message"
                            && frame["message"]["status"] == "complete"
                            && !finished.insert(frame["message"]["id"].to_string())
                        {
                            // A reply's final form twice: counted, and not this round's end.
                            repeats += 1;
                            continue;
                        }
                        let from_agent = frame["type"] == "message"
                            && frame["message"]["sender"]["kind"] == "agent";
                        // The reply's message starts empty; its words come in deltas.
                        let words = (from_agent && frame["message"]["text"] != "")
                            || (frame["type"] == "delta" && frame["text"] != "");
                        if words && first.is_none() {
                            first = Some(Instant::now());
                        }
                        if from_agent && frame["message"]["status"] == "complete" {
                            break;
                        }
                    }
                    let sent = first_chunks.lock().unwrap().remove(&question);
                    if let (Some(sent), Some(first)) = (sent, first) {
                        latencies.push(first - sent);
                    }
                }
                (latencies, repeats)
            })
        })
        .collect();
    let (mut latencies, mut repeated) = (Vec::new(), 0);
    for t in tasks {
        let (each, repeats) = t.await.unwrap();
        latencies.extend(each);
        repeated += repeats;
    }
    json!({"scenario": "llm", "users": users, "rounds": rounds, "replies": latencies.len(),
           "repeated_final_messages": repeated,
           "first_words_to_user": percentiles(&mut latencies)})
}
