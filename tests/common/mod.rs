//! The integration harness: every test starts the real router on a real socket
//! (127.0.0.1:0) against its own fresh database — a new SQLite file, or a new PostgreSQL
//! database when `PERFORMCHAT_TEST_POSTGRES_URL` is set (dropped when the test ends).
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use performchat::app::{App, AppState};
use performchat::clock::Clock;
use performchat::config::Settings;
use performchat::db::Db;
use reqwest::Response;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

pub const POSTGRES_ENV: &str = "PERFORMCHAT_TEST_POSTGRES_URL";

/// A fresh, empty database for one test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    postgres: Option<(String, String)>,
}

impl TestDb {
    pub async fn new() -> TestDb {
        match std::env::var(POSTGRES_ENV) {
            Ok(admin_url) if !admin_url.is_empty() => {
                let name = format!("performchat_test_{}", cuid2::create_id());
                let mut admin = connect_admin(&admin_url).await;
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut admin)
                    .await
                    .unwrap_or_else(|e| panic!("cannot create test database {name}: {e}"));
                let base = admin_url.split('?').next().unwrap();
                let url = format!(
                    "{}/{name}",
                    &base[..base.rfind('/').expect("URL has a path")]
                );
                TestDb {
                    url,
                    _dir: None,
                    postgres: Some((admin_url, name)),
                }
            }
            _ => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("performchat.db").display());
                TestDb {
                    url,
                    _dir: Some(dir),
                    postgres: None,
                }
            }
        }
    }

    pub fn is_postgres(&self) -> bool {
        self.postgres.is_some()
    }

    /// A fresh SQLite file in `dir` (which the caller keeps alive).
    pub fn sqlite_in(dir: &std::path::Path) -> TestDb {
        TestDb {
            url: format!("sqlite://{}", dir.join("performchat.db").display()),
            _dir: None,
            postgres: None,
        }
    }

    /// Runs statements in one transaction on the test database itself, behind the server's
    /// back (as another process would).
    pub async fn execute(&self, statements: &[&str]) {
        use sqlx::Connection as _;
        macro_rules! run_all {
            ($conn:expr) => {{
                let mut conn = $conn;
                let mut tx = conn.begin().await.unwrap();
                for statement in statements {
                    sqlx::query(sqlx::AssertSqlSafe(*statement))
                        .execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{statement}: {e}"));
                }
                tx.commit().await.unwrap();
            }};
        }
        if self.is_postgres() {
            run_all!(sqlx::PgConnection::connect(&self.url).await.unwrap())
        } else {
            run_all!(sqlx::SqliteConnection::connect(&self.url).await.unwrap())
        }
    }

    /// Runs one statement as the PostgreSQL superuser (outside the test's database), with
    /// `{db}` replaced by the test database's name.
    pub async fn postgres_admin(&self, statement: &str) {
        let (admin_url, name) = self.postgres.as_ref().expect("a PostgreSQL test database");
        let mut admin = connect_admin(admin_url).await;
        sqlx::query(sqlx::AssertSqlSafe(statement.replace("{db}", name)))
            .execute(&mut admin)
            .await
            .unwrap_or_else(|e| panic!("{statement}: {e}"));
    }
}

async fn connect_admin(admin_url: &str) -> sqlx::PgConnection {
    use sqlx::Connection as _;
    let options = sqlx::postgres::PgConnectOptions::from_str(admin_url)
        .unwrap_or_else(|e| panic!("{POSTGRES_ENV} is not a PostgreSQL URL: {e}"));
    sqlx::PgConnection::connect_with(&options)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{POSTGRES_ENV} is set, but PostgreSQL cannot be reached there ({e}). Start \
             PostgreSQL, or unset {POSTGRES_ENV} to run the suite on SQLite."
            )
        })
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin_url, name)) = self.postgres.take() {
            // Drop runs inside the test's runtime, which cannot be blocked on: use a thread
            // with its own small runtime.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let mut admin = connect_admin(&admin_url).await;
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&mut admin)
                    .await;
                });
            })
            .join();
        }
    }
}

/// A company with a default agent and one key, as a test's main tenant.
#[derive(Clone, Debug)]
pub struct Tenant {
    pub company: String,
    pub agent: String,
    pub key_id: String,
    pub key_secret: String,
}

pub struct TestApp {
    pub base: String,
    pub addr: SocketAddr,
    pub client: reqwest::Client,
    pub db: Db,
    pub state: AppState,
    pub clock: Clock,
    pub tenant: Tenant,
    stop: CancellationToken,
    // Last: the database outlives the server's pools.
    pub test_db: TestDb,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(Settings::default()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_on(TestDb::new().await, settings).await
}

/// The app on a database the test prepared.
pub async fn spawn_app_on(test_db: TestDb, settings: Settings) -> TestApp {
    let db = Db::connect(&test_db.url)
        .await
        .expect("connect test database");
    let clock = Clock::default();
    let stop = CancellationToken::new();
    let app = App::build(db.clone(), settings, clock.clone())
        .await
        .expect("start app");
    let state = app.state().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server_stop = stop.clone();
    // The server's own shutdown path: cancelled when the test's `TestApp` is dropped.
    tokio::spawn(async move {
        app.run_until_stopped(listener, async move { server_stop.cancelled().await })
            .await
            .unwrap();
    });
    let mut app = TestApp {
        base: format!("http://{addr}"),
        addr,
        client: reqwest::Client::new(),
        db,
        state,
        clock,
        tenant: Tenant {
            company: String::new(),
            agent: String::new(),
            key_id: String::new(),
            key_secret: String::new(),
        },
        stop,
        test_db,
    };
    app.tenant = app.add_tenant("company_xyz", "agent_abc").await;
    app
}

impl TestApp {
    /// Starts the server's shutdown (as SIGTERM does).
    pub fn shut_down(&self) {
        self.stop.cancel();
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl TestApp {
    /// Creates a company with one (default) agent named "Support Agent" and one key.
    pub async fn add_tenant(&self, company: &str, agent: &str) -> Tenant {
        let now = self.clock.now_ms();
        self.db.insert_company(company, "Acme", now).await.unwrap();
        self.db
            .insert_agent(agent, company, "Support Agent", true, false, now)
            .await
            .unwrap();
        let secret = performchat::auth::KeySecret::generate();
        let key_id = performchat::auth::api_key::new_key_id();
        self.db
            .insert_api_key(&key_id, company, &secret.hash(), now)
            .await
            .unwrap();
        // Servers learn of new keys through the change feed.
        self.synced().await;
        Tenant {
            company: company.into(),
            agent: agent.into(),
            key_id,
            key_secret: secret.expose().into(),
        }
    }

    /// A GET of the company side, with the main tenant's key pair as HTTP Basic credentials.
    pub async fn company_get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .basic_auth(&self.tenant.key_id, Some(&self.tenant.key_secret))
            .send()
            .await
            .unwrap()
    }

    /// The chat socket's URL.
    pub fn ws_url(&self) -> String {
        self.url("/rest/v1/chat/ws").replacen("http://", "ws://", 1)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// `body` plus the tenant's key pair.
    pub fn with_key(&self, tenant: &Tenant, mut body: Value) -> Value {
        body["keyId"] = json!(tenant.key_id);
        body["keySecret"] = json!(tenant.key_secret);
        body
    }

    pub async fn post(&self, path: &str, body: &Value) -> Response {
        self.client
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// POST /rest/v1/auth/token with the main tenant's key pair added to `body`.
    pub async fn mint(&self, body: Value) -> Response {
        self.post("/rest/v1/auth/token", &self.with_key(&self.tenant, body))
            .await
    }

    /// Mints for `user_id` with the main tenant and returns the 200 body.
    pub async fn mint_ok(&self, user_id: &str) -> Value {
        self.mint_as(&self.tenant, user_id).await
    }

    /// Mints for `user_id` with `tenant`'s key and returns the 200 body.
    pub async fn mint_as(&self, tenant: &Tenant, user_id: &str) -> Value {
        let body = json!({"userId": user_id, "expiresIn": "1h"});
        let res = self
            .post("/rest/v1/auth/token", &self.with_key(tenant, body))
            .await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    pub async fn token_for(&self, user_id: &str) -> String {
        self.mint_ok(user_id).await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    pub async fn me(&self, token: &str) -> Response {
        self.client
            .get(self.url("/rest/v1/auth/me"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
    }

    pub async fn invalidate(&self, tenant: &Tenant, body: Value) -> Response {
        self.post("/rest/v1/auth/invalidate", &self.with_key(tenant, body))
            .await
    }

    pub async fn introspect(&self, tenant: &Tenant, token: &str) -> Value {
        let res = self
            .post(
                "/rest/v1/auth/introspect",
                &self.with_key(tenant, json!({"token": token})),
            )
            .await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// Moves the server's clock forward, then lets its change feed read the log at the new
    /// time (a feed last read "hours ago" would make verification fail closed).
    pub async fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
        self.state.tokens.wake();
        for _ in 0..200 {
            if self.state.tokens.staleness_ms(&self.clock) < 1000 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the change feed did not catch up with the clock");
    }

    /// Waits (bounded) until the running server has applied every change in the log.
    pub async fn synced(&self) {
        let target = self.db.latest_change_seq().await.unwrap();
        self.state.tokens.wake();
        for _ in 0..200 {
            if self.state.tokens.seq() >= target {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the change feed did not reach seq {target}");
    }
}

/// Asserts an error answer: status, code, and that the message mentions `says`.
pub async fn assert_error(res: Response, status: u16, code: &str, says: &str) -> Value {
    assert_eq!(res.status(), status, "status");
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(says),
        "message {message:?} should mention {says:?}"
    );
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    assert_eq!(body["error"].as_object().unwrap().len(), 2, "{body}");
    body
}

/// A time as every JSON answer and every `--json` output writes it: RFC 3339 in UTC with
/// milliseconds (`2024-05-01T12:00:00.000Z`). Panics on anything else.
pub fn wire_time(value: &Value) -> time::OffsetDateTime {
    let text = value
        .as_str()
        .unwrap_or_else(|| panic!("{value} is not a time string"));
    assert!(
        text.len() == 24 && text.as_bytes()[19] == b'.' && text.ends_with('Z'),
        "{text} is not RFC 3339 UTC with milliseconds"
    );
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

/// Whether `value` is a wire time (see [`wire_time`]) within a minute of now.
pub fn is_recent_wire_time(value: &Value) -> bool {
    (time::OffsetDateTime::now_utc() - wire_time(value)).abs() < time::Duration::minutes(1)
}

/// The claims of a JWT, read without verification.
pub fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The real `performchat` binary, serving on a free port.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Everything the server printed on stdout before it listened.
    pub stdout: String,
    /// Lines of stderr (logs), collected in the background.
    pub logs: mpsc::Receiver<String>,
}

pub fn performchat(database_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_performchat"));
    cmd.env("PERFORMCHAT_DATABASE_URL", database_url)
        .env_remove("PERFORMCHAT_LISTEN")
        .stdin(Stdio::null());
    cmd
}

/// Runs a CLI command to completion and returns its stdout; panics with its stderr if it fails.
pub fn cli(database_url: &str, args: &[&str]) -> String {
    let out = performchat(database_url).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "performchat {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Creates the company `company_acme` ("Acme") with the CLI.
pub fn create_acme(database_url: &str) -> Value {
    cli_json(
        database_url,
        &[
            "company",
            "create",
            "--name",
            "Acme",
            "--id",
            "company_acme",
        ],
    )
}

/// Runs a CLI command with --json and parses its output.
pub fn cli_json(database_url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&cli(database_url, &all)).unwrap()
}

impl Server {
    pub fn start(database_url: &str, extra: &[&str]) -> Server {
        Server::start_with_env(database_url, extra, &[])
    }

    /// Starts it with these environment variables too.
    pub fn start_with_env(database_url: &str, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut child = performchat(database_url)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(extra)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start performchat");
        let (tx, logs) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (out_tx, out_rx) = mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = out_tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let mut seen = Vec::new();
        let base = loop {
            let line = logs
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .unwrap_or_else(|_| panic!("server did not start; it said: {seen:#?}"));
            if let Some(at) = line.find("listening on http://") {
                let rest = &line[at + "listening on ".len()..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || ".:/[]".contains(c)))
                    .unwrap_or(rest.len());
                break rest[..end].to_owned();
            }
            seen.push(line);
        };
        // The banner is printed before the server listens; its reader thread may lag.
        let mut printed = Vec::new();
        while let Ok(line) = out_rx.recv_timeout(Duration::from_millis(300)) {
            printed.push(line);
        }
        let stdout = printed.join("\n");
        Server {
            child,
            base,
            stdout,
            logs,
        }
    }

    /// The chat socket's URL.
    pub fn ws_url(&self) -> String {
        self.url("/rest/v1/chat/ws").replacen("http://", "ws://", 1)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A PostgreSQL server of the test's own (initdb in a temp dir, its own port), so that a test
/// can stop and restart it without touching anybody else's database.
pub struct PrivatePostgres {
    pub url: String,
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|versions| {
                let mut v: Vec<_> = versions.filter_map(Result::ok).map(|e| e.path().join("bin")).collect();
                v.sort();
                v.pop()
            })
            .filter(|b| b.join("initdb").exists())
            .expect("PostgreSQL server binaries (Debian package postgresql) are needed under /usr/lib/postgresql");
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // initdb refuses to run as root: run the server as the postgres user then.
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        if as_root {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let pg = PrivatePostgres {
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            bin,
            data,
            port,
            _dir: dir,
        };
        let initdb = pg.bin.join("initdb");
        let mut cmd = pg.command(&initdb);
        cmd.args(["-D"])
            .arg(&pg.data)
            .args(["-U", "postgres", "--auth=trust", "-N"]);
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        pg.up();
        pg
    }

    fn command(&self, program: &std::path::Path) -> Command {
        let as_root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.starts_with(b"0"));
        if as_root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        }
    }

    fn pg_ctl(&self, args: &[&str]) {
        let socket_dir = self.data.parent().unwrap().display().to_string();
        let options = format!(
            "-p {} -k {socket_dir} -c listen_addresses=127.0.0.1 -c fsync=on",
            self.port
        );
        let out = self
            .command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-o", &options, "-w", "-t", "30"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "pg_ctl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    pub fn up(&self) {
        self.pg_ctl(&[
            "start",
            "-l",
            &self
                .data
                .parent()
                .unwrap()
                .join("log")
                .display()
                .to_string(),
        ]);
    }

    /// Stops it the hard way (no shutdown checkpoint), as a crash would.
    pub fn down(&self) {
        self.pg_ctl(&["stop", "-m", "immediate"]);
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let _ = self
            .command(&self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["stop", "-m", "immediate"])
            .output();
    }
}

/// A JWT with exactly the given header text and claims, HS256-signed with `secret`: for
/// forging tokens the server must refuse (or, with its own key, accept).
pub fn forge(header: &str, claims: &Value, secret: &[u8]) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &jsonwebtoken::EncodingKey::from_secret(secret),
        jsonwebtoken::Algorithm::HS256,
    )
    .unwrap();
    format!("{message}.{sig}")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A chat socket client (tokio-tungstenite), as a widget would use it.
pub struct ChatClient {
    pub ws: Ws,
    /// Frames pushed before the answer `ready` waited for, handed out first by `next`.
    early: std::collections::VecDeque<Value>,
}

impl ChatClient {
    /// Connects to a `ws://…/rest/v1/chat/ws` URL.
    pub async fn connect(url: &str) -> ChatClient {
        let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        ChatClient {
            ws,
            early: Default::default(),
        }
    }

    /// Connects and authenticates; returns the `ready` frame.
    pub async fn ready(url: &str, token: &str) -> (ChatClient, Value) {
        let mut c = ChatClient::connect(url).await;
        c.send(json!({"type": "auth", "token": token, "id": 1}))
            .await;
        let ready = c.next().await;
        assert_eq!(ready["type"], "ready", "{ready}");
        // A round trip: the socket has joined the hub and serves (a test that moves the
        // clock next must not race the socket's first deadline).
        // Frames pushed meanwhile (a reply stored as the socket joined) are kept for `next`.
        c.send(json!({"type": "ping", "id": "joined"})).await;
        let mut early = std::collections::VecDeque::new();
        loop {
            let frame = c.next().await;
            if frame == json!({"type": "pong", "id": "joined"}) {
                break;
            }
            assert!(
                frame.get("id").is_none(),
                "an answer before the pong: {frame}"
            );
            early.push_back(frame);
        }
        c.early = early;
        (c, ready)
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .unwrap();
    }

    /// The next JSON frame (within 5 s), skipping pings.
    pub async fn next(&mut self) -> Value {
        if let Some(frame) = self.early.pop_front() {
            return frame;
        }
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(5), self.ws.next())
                .await
                .expect("a frame within 5 s")
                .expect("the socket is open")
                .expect("a frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Reads until the server closes; returns the code and reason (within `within`).
    pub async fn closed_within(&mut self, within: Duration) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let msg = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .expect("closed in time");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (u16::from(frame.code), frame.reason.to_string());
                }
                Some(Ok(Message::Close(None))) | None | Some(Err(_)) => {
                    panic!("closed without a close code")
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    pub async fn closed(&mut self) -> (u16, String) {
        self.closed_within(Duration::from_secs(5)).await
    }
}

/// A server-sent event stream (the company's feed), read event by event.
pub struct EventStream {
    response: reqwest::Response,
    buffer: String,
}

impl EventStream {
    pub fn new(response: reqwest::Response) -> EventStream {
        EventStream {
            response,
            buffer: String::new(),
        }
    }

    /// The next event's name and JSON data (keep-alive comments skipped); None once the
    /// stream ends. Fails after `within`.
    pub async fn next_within(&mut self, within: Duration) -> Option<(String, Value)> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let mut name = String::from("message");
                let mut data = None;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = v.trim().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data = Some(serde_json::from_str(v.trim()).unwrap());
                    }
                }
                match data {
                    Some(data) => return Some((name, data)),
                    None => continue, // a comment
                }
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .expect("an event in time")
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => return None,
            }
        }
    }

    pub async fn next(&mut self) -> (String, Value) {
        self.next_within(Duration::from_secs(5))
            .await
            .expect("the stream is open")
    }
}

/// A webhook endpoint for tests: records every request it gets (in order) and answers each
/// with the next scripted answer, or 204 when none is left.
pub struct WebhookReceiver {
    pub url: String,
    got: tokio::sync::mpsc::UnboundedReceiver<Delivery>,
    answers: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<Answer>>>,
}

/// One request a [`WebhookReceiver`] got.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub headers: axum::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Delivery {
    pub fn id(&self) -> &str {
        self.headers["webhook-id"].to_str().unwrap()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// How a [`WebhookReceiver`] answers one request.
#[derive(Clone, Debug)]
pub enum Answer {
    Status(u16, Value),
    /// Never answers (the request waits until the sender gives up).
    Hang,
}

impl WebhookReceiver {
    pub async fn start() -> WebhookReceiver {
        use axum::response::IntoResponse;
        let (tx, got) = tokio::sync::mpsc::unbounded_channel();
        let answers = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<
            Answer,
        >::new()));
        let script = answers.clone();
        let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (tx, script) = (tx.clone(), script.clone());
            async move {
                let _ = tx.send(Delivery {
                    headers,
                    body: body.to_vec(),
                });
                let answer = script.lock().unwrap().pop_front();
                match answer {
                    None => axum::http::StatusCode::NO_CONTENT.into_response(),
                    Some(Answer::Status(status, body)) => (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        axum::Json(body),
                    )
                        .into_response(),
                    Some(Answer::Hang) => std::future::pending().await,
                }
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hooks/chat", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        WebhookReceiver { url, got, answers }
    }

    /// Answers the next requests, in order, with these.
    pub fn answer(&self, answers: impl IntoIterator<Item = Answer>) {
        self.answers.lock().unwrap().extend(answers);
    }

    /// The next request, within `within`.
    pub async fn next_within(&mut self, within: Duration) -> Delivery {
        tokio::time::timeout(within, self.got.recv())
            .await
            .expect("a webhook request in time")
            .expect("the receiver runs")
    }

    pub async fn next(&mut self) -> Delivery {
        self.next_within(Duration::from_secs(5)).await
    }

    /// Whether a request comes within `within`.
    pub async fn quiet_for(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.got.recv()).await.is_err()
    }
}

/// An OpenAI-compatible endpoint for tests: `POST …/chat/completions` records each request
/// and answers it with the next scripted reply, byte for byte as the real ones stream
/// (chunked server-sent events), with delays, or a status, or a cut connection.
pub struct FakeLlm {
    /// Its base URL, up to `/v1`.
    pub base_url: String,
    got: tokio::sync::mpsc::UnboundedReceiver<LlmRequest>,
    script: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<LlmReply>>>,
}

/// One request a [`FakeLlm`] got.
#[derive(Clone, Debug)]
pub struct LlmRequest {
    pub headers: axum::http::HeaderMap,
    pub body: Value,
}

/// How a [`FakeLlm`] answers one request.
#[derive(Clone, Debug)]
pub enum LlmReply {
    /// These pieces of the body, each after its delay; then the body ends (`cut`: the
    /// connection breaks instead).
    Stream {
        pieces: Vec<(Duration, String)>,
        cut: bool,
    },
    /// A status with a JSON error body, and a `Retry-After` if given.
    Status(u16, Option<u64>),
}

impl LlmReply {
    /// A whole reply: `texts` as content chunks (`gap` apart), a usage chunk, `[DONE]`.
    pub fn text(texts: &[&str], gap: Duration) -> LlmReply {
        let mut pieces = vec![(
            Duration::ZERO,
            sse(json!({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})),
        )];
        for (i, text) in texts.iter().enumerate() {
            let delay = if i == 0 { Duration::ZERO } else { gap };
            pieces.push((delay, content(text)));
        }
        pieces.push((
            Duration::ZERO,
            sse(json!({"choices": [], "usage": {"prompt_tokens": 11, "completion_tokens": texts.len(), "total_tokens": 11 + texts.len()}})),
        ));
        pieces.push((Duration::ZERO, "data: [DONE]\n\n".to_owned()));
        LlmReply::Stream { pieces, cut: false }
    }
}

/// One server-sent event of a JSON chunk.
pub fn sse(chunk: Value) -> String {
    format!("data: {chunk}\n\n")
}

/// A content chunk as OpenAI streams it.
pub fn content(text: &str) -> String {
    sse(
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk",
               "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]}),
    )
}

impl FakeLlm {
    pub async fn start() -> FakeLlm {
        use axum::response::IntoResponse;
        let (tx, got) = tokio::sync::mpsc::unbounded_channel();
        let script = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::<
            LlmReply,
        >::new()));
        let replies = script.clone();
        let handler = move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let (tx, replies) = (tx.clone(), replies.clone());
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let _ = tx.send(LlmRequest { headers, body });
                let reply = replies.lock().unwrap().pop_front();
                match reply {
                    None => {
                        (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "no script").into_response()
                    }
                    Some(LlmReply::Status(status, retry_after)) => {
                        let mut response = (
                            axum::http::StatusCode::from_u16(status).unwrap(),
                            axum::Json(json!({"error": {"message": "scripted", "type": "test"}})),
                        )
                            .into_response();
                        if let Some(s) = retry_after {
                            response
                                .headers_mut()
                                .insert("retry-after", s.to_string().parse().unwrap());
                        }
                        response
                    }
                    Some(LlmReply::Stream { pieces, cut }) => {
                        let stream = futures_util::stream::unfold(
                            (pieces.into_iter(), cut),
                            |(mut pieces, cut)| async move {
                                match pieces.next() {
                                    Some((delay, piece)) => {
                                        tokio::time::sleep(delay).await;
                                        let chunk =
                                            Ok::<_, std::io::Error>(axum::body::Bytes::from(piece));
                                        Some((chunk, (pieces, cut)))
                                    }
                                    None if cut => {
                                        // What was sent has arrived; then the line drops.
                                        tokio::time::sleep(Duration::from_millis(100)).await;
                                        Some((Err(std::io::Error::other("cut")), (pieces, false)))
                                    }
                                    None => None,
                                }
                            },
                        );
                        (
                            [("content-type", "text/event-stream")],
                            axum::body::Body::from_stream(stream),
                        )
                            .into_response()
                    }
                }
            }
        };
        let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}/v1", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeLlm {
            base_url,
            got,
            script,
        }
    }

    /// Answers the next requests, in order, with these.
    pub fn reply(&self, replies: impl IntoIterator<Item = LlmReply>) {
        self.script.lock().unwrap().extend(replies);
    }

    pub async fn next(&mut self) -> LlmRequest {
        tokio::time::timeout(Duration::from_secs(5), self.got.recv())
            .await
            .expect("a request to the LLM in time")
            .expect("the fake LLM runs")
    }

    /// Whether a request comes within `within`.
    pub async fn quiet_for(&mut self, within: Duration) -> bool {
        tokio::time::timeout(within, self.got.recv()).await.is_err()
    }
}

/// The CLI run off the test's runtime, which is the in-process server's: a CLI blocking it
/// could wait on a database lock the server holds across an await. Its stdout.
pub async fn cli_off_runtime(database_url: &str, args: &[&str]) -> String {
    let url = database_url.to_owned();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(&url, &args)
    })
    .await
    .unwrap()
}

/// [`cli_off_runtime`] with `--json`, parsed.
pub async fn cli_json_off_runtime(database_url: &str, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    serde_json::from_str(&cli_off_runtime(database_url, &all).await).unwrap()
}

/// A user's socket with their conversation open: (socket, conversation id).
pub async fn user_socket(app: &TestApp, user: &str) -> (ChatClient, String) {
    let token = app.token_for(user).await;
    let (mut socket, _) = ChatClient::ready(&app.ws_url(), &token).await;
    socket.send(json!({"type": "open", "id": "o"})).await;
    let opened = socket.next().await;
    assert_eq!(opened["type"], "conversation", "{opened}");
    let id = opened["conversation"]["id"].as_str().unwrap().to_owned();
    (socket, id)
}

/// Sends a user message (`client_id` as its `clientMessageId` and its frame's `id`).
pub async fn say(socket: &mut ChatClient, conversation: &str, client_id: &str, text: &str) {
    socket
        .send(
            json!({"type": "send", "id": client_id, "conversationId": conversation,
                     "clientMessageId": client_id, "text": text}),
        )
        .await;
}

/// Frames up to and including the first that `last` accepts, each with when it came.
pub async fn frames_until(
    socket: &mut ChatClient,
    last: impl Fn(&Value) -> bool,
) -> Vec<(std::time::Instant, Value)> {
    let mut frames = Vec::new();
    loop {
        let frame = socket.next().await;
        let done = last(&frame);
        frames.push((std::time::Instant::now(), frame));
        if done {
            return frames;
        }
    }
}

/// An `agent_state` frame saying `state`.
pub fn is_state(frame: &Value, state: &str) -> bool {
    frame["type"] == "agent_state" && frame["state"] == state
}

/// A `message` frame from a sender of this kind.
pub fn is_message_from(frame: &Value, kind: &str) -> bool {
    frame["type"] == "message" && frame["message"]["sender"]["kind"] == kind
}

/// The company's audit events of one kind, once there are at least `n` (the trail is
/// written in the background).
pub async fn audit_events_of(app: &TestApp, kind: &str, n: usize) -> Vec<Value> {
    let mut events = Vec::new();
    for _ in 0..100 {
        let res = app.company_get("/rest/v1/audit?limit=1000").await;
        assert_eq!(res.status(), 200);
        events = res.json::<Value>().await.unwrap()["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == kind)
            .cloned()
            .collect();
        if events.len() >= n {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("fewer than {n} {kind} events in the audit trail: {events:#?}");
}

/// Something a test needs from outside the crate is missing (a runtime, a browser): under CI
/// (`.ci/run` installs it and sets `required_by`) a failure, elsewhere a `NOT RUN` notice.
/// Returns false.
pub fn missing_tool(required_by: &str, what: &str) -> bool {
    let hint = format!("{what} (install it as .ci/run does)");
    assert!(std::env::var_os(required_by).is_none(), "{hint}");
    eprintln!("NOT RUN: {hint}");
    false
}
