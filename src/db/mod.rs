//! The storage seam: one [`Db`] value over SQLite or PostgreSQL, with functions named in
//! domain terms. Each SQL statement is written once and runs on either backend through
//! [`run!`]; the few places where the dialects differ say so beside the `match`.
//!
//! A bound `LIMIT` is written `LIMIT +$n`. SQLite (3.51) plans a `LIMIT $n` for the value
//! bound at the time and re-prepares the statement whenever that parameter is bound again,
//! that is at every execution: a quarter of the SQLite reader threads' time when the chat's
//! poll read new messages (BENCHMARKS.md, "SQLite statements prepared once"). The unary
//! plus makes the limit an expression SQLite evaluates at run time, as PostgreSQL does.

// The query macros come first: macro_rules are visible only to code after them.

/// Runs one read on whichever pool the [`Db`] holds: the body is compiled once per backend,
/// so each SQL string is written once and type-checked for both. `run!(db, |pool| body)`.
/// Writes go through [`transaction!`].
macro_rules! run {
    ($db:expr, |$pool:ident| $body:expr) => {
        match &$db.pools {
            $crate::db::Pools::Sqlite { read: $pool, .. } => $body,
            $crate::db::Pools::Postgres($pool) => $body,
        }
    };
}

/// Runs a write transaction on whichever backend the [`Db`] holds and evaluates to
/// `Result<T, StoreError>`: `transaction!(db, |tx| { …; value })`. Inside the body `?` ends
/// the transaction with that error (rolled back); otherwise it commits. Every write of the
/// service goes through here, so that one place handles a failed write (see [`on_conn!`]).
macro_rules! transaction {
    ($db:expr, |$tx:ident| $body:expr) => {{
        let db: &$crate::db::Db = $db;
        match &db.pools {
            $crate::db::Pools::Sqlite { write, .. } => {
                // BEGIN IMMEDIATE: a deferred transaction that upgrades to a write can fail
                // with SQLITE_BUSY at once, ignoring busy_timeout.
                on_conn!(write, &db.writes, "BEGIN IMMEDIATE", |$tx| $body)
            }
            $crate::db::Pools::Postgres(pool) => on_conn!(pool, &db.writes, "BEGIN", |$tx| $body),
        }
    }};
}

/// One write transaction on a connection of `pool` (without a BEGIN statement, the body
/// runs on the connection itself, for a statement that is its own transaction). A
/// connection whose write failed in the database (a full disk, a read-only database, a lost
/// connection) is closed rather than returned to the pool: after a failed COMMIT, SQLite may already have rolled back
/// on its own, and the driver's idea of the transaction depth is then wrong for good, so
/// every later BEGIN on that connection would fail until a restart. The next write gets a
/// fresh connection and succeeds as soon as the cause is gone. The outcome also feeds
/// readiness ([`WriteHealth`]).
macro_rules! on_conn {
    ($pool:expr, $health:expr, |$conn:ident| $body:expr) => {
        on_conn!(@run $pool, $health, |conn| {
            let $conn = &mut **conn;
            Ok::<_, $crate::db::StoreError>($body)
        })
    };
    ($pool:expr, $health:expr, $begin:literal, |$tx:ident| $body:expr) => {
        on_conn!(@run $pool, $health, |conn| {
            let mut $tx = sqlx::Connection::begin_with(&mut **conn, $begin).await?;
            #[allow(unused_mut)]
            let value = $body;
            $tx.commit().await?;
            Ok::<_, $crate::db::StoreError>(value)
        })
    };
    (@run $pool:expr, $health:expr, |$c:ident| $work:expr) => {
        async {
            let mut conn = $pool.acquire().await.map_err($crate::db::StoreError::from);
            let outcome = match &mut conn {
                Err(e) => Err(e.clone()),
                Ok($c) => async { $work }.await,
            };
            if let (Ok(conn), Err(e)) = (&mut conn, &outcome) {
                if e.is_database_failure() {
                    conn.close_on_drop();
                }
            }
            $health.record(&outcome);
            outcome
        }
        .await
    };
}

/// Appends a change inside the caller's transaction: `record_change!(&mut *tx, kind, id, now_ms)`.
macro_rules! record_change {
    ($tx:expr, $kind:expr, $subject:expr, $now_ms:expr) => {
        sqlx::query($crate::db::change::RECORD_CHANGE)
            .bind($kind.as_str())
            .bind($subject)
            .bind($now_ms)
            .execute($tx)
            .await?
    };
}

// First: its `queue_event!` is used by the conversation and message modules.
#[macro_use]
pub(crate) mod agent_event;
mod agent;
mod api_key;
mod audit;
pub(crate) mod change;
mod company;
mod conversation;
mod group_commit;
mod message;
mod revoked_token;
mod signing_key;
mod user;

pub use agent::{Agent, AgentUpdate, LlmUpdate, NewAgent, WebhookSecret};
pub use agent_event::{AgentEvent, event_id_for_message};
pub use api_key::{ApiKey, KeyPolicy};
pub use audit::{AuditEvent, AuditQuery, MINTED};
pub use change::{Change, ChangeKind, Snapshot};
pub use company::Company;
pub use conversation::{Conversation, ConversationQuery, Handler, Side};
pub use message::{Appended, Grow, Growth, Message, NewMessage, Window};
pub use signing_key::StoredSigningKey;
pub use user::{User, UserRef};

mod error;
pub(crate) use error::is_unavailable;
pub use error::{Entity, Result, StoreError, WriteHealth};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqliteSynchronous};

/// The token version of an erased user: every token minted for them is older.
pub const ERASED: i64 = i64::MAX;

/// How long a request waits for a database connection before it answers 503.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

/// A pooled connection idle for this long is checked with a ping before it is handed out.
const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

/// The options every pool shares. sqlx pings each connection before every acquire by
/// default: one more round trip (to SQLite's worker thread, or over the network to
/// PostgreSQL) before every query, which under load cost as much as the query itself.
/// Only a connection that sat idle is checked (as HikariCP does); a connection that fails
/// in use is dropped by `on_conn!` anyway.
fn pool_options<DB: sqlx::Database>(max_connections: u32) -> sqlx::pool::PoolOptions<DB> {
    sqlx::pool::PoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= CHECK_IDLE_AFTER {
                    sqlx::Connection::ping(conn).await?;
                }
                Ok(true)
            })
        })
}

/// The database: its pools, and whether its last write succeeded.
#[derive(Clone, Debug)]
pub struct Db {
    pub(crate) pools: Pools,
    pub(crate) writes: Arc<WriteHealth>,
}

#[derive(Clone, Debug)]
pub(crate) enum Pools {
    /// SQLite has one writer at a time. Writes go through a one-connection pool so that
    /// this process never contends with itself; other processes (the CLI) wait on
    /// `busy_timeout`. Reads use a separate pool and never block on the writer (WAL).
    Sqlite {
        read: SqlitePool,
        write: SqlitePool,
        /// The group-commit task that inserts first-seen users and audit events (see
        /// `group_commit`).
        group_commit: tokio::sync::mpsc::Sender<group_commit::Job>,
        /// The group-commit task that stores messages (see `append_message`).
        message_appends: tokio::sync::mpsc::Sender<message::MessageAppend>,
    },
    Postgres(PgPool),
}

/// Which backend a URL selects, without connecting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of_url(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Backend::Postgres)
        } else {
            anyhow::bail!(
                "unsupported database URL: expected sqlite://PATH or postgres://USER@HOST/DB"
            )
        }
    }
}

impl Db {
    /// Connects and applies pending migrations.
    pub async fn connect(url: &str) -> anyhow::Result<Db> {
        let writes = Arc::new(WriteHealth::default());
        let pools = match Backend::of_url(url)? {
            Backend::Sqlite => {
                let options = SqliteConnectOptions::from_str(url)
                    .context("invalid SQLite database URL")?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    // FULL: a commit is on disk before the client hears 200, so neither a
                    // kill -9 nor a power cut loses an answered user.
                    .synchronous(SqliteSynchronous::Full)
                    .busy_timeout(Duration::from_secs(5))
                    // 512 KiB of page cache per connection (SQLite's default is 2 MiB): the hot
                    // rows are cached above the database anyway.
                    .pragma("cache_size", "-512")
                    // Statement journals (a multi-row write that may fail half-way keeps
                    // the pages it changed) in memory, not in a temporary file: they were
                    // 14 % of the CPU of storing messages.
                    .pragma("temp_store", "memory")
                    .foreign_keys(true);
                let write = pool_options::<sqlx::Sqlite>(1)
                    .connect_with(options.clone())
                    .await
                    .with_context(|| format!("cannot open SQLite database {}", redact_url(url)))?;
                sqlx::migrate!("./migrations/sqlite")
                    .run(&write)
                    .await
                    .context("cannot apply SQLite migrations")?;
                let read = pool_options::<sqlx::Sqlite>(4)
                    .connect_with(options.read_only(true))
                    .await
                    .context("cannot open SQLite database for reading")?;
                let group_commit = group_commit::spawn(write.clone(), writes.clone());
                let message_appends = message::spawn_group_commit(write.clone(), writes.clone());
                Pools::Sqlite {
                    read,
                    write,
                    group_commit,
                    message_appends,
                }
            }
            Backend::Postgres => {
                let options = PgConnectOptions::from_str(url)
                    .context("invalid PostgreSQL database URL")?
                    .application_name("performchat");
                let pool = pool_options::<sqlx::Postgres>(16)
                    .connect_with(options)
                    .await
                    .with_context(|| format!("cannot connect to {}", redact_url(url)))?;
                sqlx::migrate!("./migrations/postgres")
                    .run(&pool)
                    .await
                    .context("cannot apply PostgreSQL migrations")?;
                Pools::Postgres(pool)
            }
        };
        Ok(Db { pools, writes })
    }

    /// One round trip, for readiness.
    pub async fn ping(&self) -> Result<()> {
        run!(self, |pool| {
            sqlx::query_scalar::<_, i32>("SELECT 1")
                .fetch_one(pool)
                .await
        })?;
        Ok(())
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        match &self.pools {
            Pools::Postgres(_) => Backend::Postgres,
            Pools::Sqlite { .. } => Backend::Sqlite,
        }
    }

    /// PostgreSQL only: listens on `channel` until `stop`, reconnecting with a backoff (100 ms,
    /// doubling to 2 s). `connected` runs on every (re)connection (what was sent while
    /// nobody listened is lost: the caller looks for it), `heard` on every payload. Returns
    /// at once on SQLite.
    pub async fn listen(
        &self,
        channel: &str,
        stop: tokio_util::sync::CancellationToken,
        connected: impl Fn(),
        heard: impl Fn(&str),
    ) {
        let Pools::Postgres(pool) = &self.pools else {
            return;
        };
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = async {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(channel).await?;
                connected();
                loop {
                    heard(listener.recv().await?.payload());
                }
                #[allow(unreachable_code)]
                Ok::<(), sqlx::Error>(())
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                result = attempt => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, channel, "listener disconnected");
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Whether the last write failed because the database refused it (and none has
    /// succeeded since). While it has, readiness probes with a write of its own.
    pub fn writes_failing(&self) -> bool {
        self.writes.failing()
    }

    /// Commits one small write, for readiness: it fails while the disk is full or the
    /// database refuses writes, and its success clears [`Db::writes_failing`].
    pub async fn probe_write(&self, now_ms: i64) -> Result<()> {
        transaction!(self, |tx| {
            sqlx::query(
                "INSERT INTO write_probe (id, at) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET at = excluded.at",
            )
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        })
    }

    /// (pool name, open connections, idle connections), for metrics.
    pub fn pool_stats(&self) -> Vec<(&'static str, u32, usize)> {
        match &self.pools {
            Pools::Sqlite { read, write, .. } => vec![
                ("sqlite_read", read.size(), read.num_idle()),
                ("sqlite_write", write.size(), write.num_idle()),
            ],
            Pools::Postgres(pool) => vec![("postgres", pool.size(), pool.num_idle())],
        }
    }

    pub async fn close(&self) {
        match &self.pools {
            Pools::Sqlite { read, write, .. } => {
                read.close().await;
                write.close().await;
            }
            Pools::Postgres(pool) => pool.close().await,
        }
    }
}

/// A database URL fit for a log line or an error message: the password, if any, is hidden.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &url[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_folders_hold_the_same_file_names() {
        let names = |dir: &str| {
            let mut v: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let sqlite = names(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/sqlite"));
        let postgres = names(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"));
        assert!(!sqlite.is_empty());
        assert_eq!(sqlite, postgres);
    }

    #[test]
    fn bound_limits_are_written_with_a_unary_plus() {
        // See the module's doc: `LIMIT $n` makes SQLite prepare the statement at every run.
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src/db");
        // Spelt in two pieces, so that this file's own line does not match.
        let bare = concat!("LIMIT ", "$");
        let mut read = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = std::fs::read_to_string(&path).unwrap();
            read += 1;
            for (n, line) in text.lines().enumerate() {
                let comment = line.trim_start().starts_with("//");
                assert!(
                    comment || !line.contains(bare),
                    "{}:{}: write LIMIT +$n",
                    path.display(),
                    n + 1
                );
            }
        }
        assert!(read > 10, "read {read} files of {dir}");
    }

    #[test]
    fn passwords_are_hidden_in_database_urls() {
        assert_eq!(
            redact_url("postgres://app:hunter2@db:5432/pc"),
            "postgres://app:***@db:5432/pc"
        );
        assert_eq!(redact_url("postgres://app@db/pc"), "postgres://app@db/pc");
        assert_eq!(
            redact_url("sqlite://performchat.db"),
            "sqlite://performchat.db"
        );
    }

    #[test]
    fn urls_select_their_backend() {
        assert_eq!(Backend::of_url("sqlite://x.db").unwrap(), Backend::Sqlite);
        assert_eq!(Backend::of_url("sqlite::memory:").unwrap(), Backend::Sqlite);
        assert_eq!(
            Backend::of_url("postgresql://h/d").unwrap(),
            Backend::Postgres
        );
        assert!(Backend::of_url("mysql://h/d").is_err());
    }
}
