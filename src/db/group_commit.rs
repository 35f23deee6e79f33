//! SQLite's group commit of the mint path's writes: first-seen users (each caller answered
//! only once the commit holding its row is on disk) and audit events (from the audit
//! writer's batches). One task takes every job waiting and stores them all in one `BEGIN
//! IMMEDIATE` transaction, sent to SQLite as one query of a fixed text (prepared once) with
//! the rows as two JSON arguments: one round trip to sqlx's SQLite thread and one fsync per
//! batch, whatever it holds.
//!
//! Why not one transaction per kind, or one statement per round trip, as before: a new
//! user's mint waited for its own commit and for the audit writer's commit of the previous
//! mints on the same single write connection (two fsyncs, and BEGIN, INSERT, COMMIT as three
//! round trips each, every one a wake-up of another thread); an off-CPU profile showed the
//! SQLite thread mostly waiting for its next statement while both request workers idled
//! (BENCHMARKS.md). PostgreSQL needs none of this: concurrent transactions commit in
//! parallel there and each insert stays its own statement.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::user::PendingUser;
use super::{AuditEvent, Result, StoreError, User, WriteHealth};

/// One caller's write, with the channel its answer goes back on.
pub enum Job {
    User(PendingUser, oneshot::Sender<Result<User>>),
    Audit(Arc<Vec<AuditEvent>>, oneshot::Sender<Result<()>>),
}

/// How many jobs one transaction takes at most (an audit job holds up to the audit writer's
/// batch of events).
const GROUP_COMMIT_MAX: usize = 256;

/// The users of `$1` (`[[new id, company id, external id, now], …]`) that are not there yet
/// are inserted (`ON CONFLICT DO NOTHING`: a user made by another request, or twice in the
/// batch, keeps the row that won); the events of `$2` are appended in order; the last
/// statement answers the row of every user of `$1`, new or not, as one JSON array. The
/// `WHERE true` is SQLite's rule for an upsert on an `INSERT … SELECT` (it tells the
/// `ON CONFLICT` from a join's `ON`). `jsonb_each`, not `json_each`: its `value` of a row is
/// SQLite's binary JSON, which `->>` reads as it is, where `json_each` gives each row back
/// as text that every `->>` parses again; that parsing was 44 % of the SQLite thread's time
/// (BENCHMARKS.md, "Rows walked as binary JSON").
const STORE_BATCH: &str = "BEGIN IMMEDIATE; \
     INSERT INTO app_user (id, company_id, external_id, token_version, created_at) \
     SELECT value ->> 0, value ->> 1, value ->> 2, 0, value ->> 3 \
     FROM jsonb_each($1) WHERE true ORDER BY key \
     ON CONFLICT (company_id, external_id) DO NOTHING; \
     INSERT INTO audit_event \
         (at, kind, outcome, company_id, key_id, user_id, agent_id, jti, client_ip, detail) \
     SELECT value ->> 0, value ->> 1, value ->> 2, value ->> 3, value ->> 4, value ->> 5, \
         value ->> 6, value ->> 7, value ->> 8, value ->> 9 \
     FROM jsonb_each($2) ORDER BY key; \
     SELECT json_group_array(json_array(u.id, u.company_id, u.external_id, u.token_version, \
         u.invalidated_at)) \
     FROM app_user u WHERE (u.company_id, u.external_id) IN \
         (SELECT value ->> 1, value ->> 2 FROM jsonb_each($1)); \
     COMMIT";

/// Starts the task; it ends when every sender (every `Db` clone) is dropped.
pub(super) fn spawn(write: SqlitePool, health: Arc<WriteHealth>) -> mpsc::Sender<Job> {
    let (tx, mut rx) = mpsc::channel::<Job>(4 * GROUP_COMMIT_MAX);
    tokio::spawn(async move {
        let mut jobs = Vec::with_capacity(GROUP_COMMIT_MAX);
        while rx.recv_many(&mut jobs, GROUP_COMMIT_MAX).await > 0 {
            let outcome = on_conn!(&write, &health, |conn| store(conn, &jobs).await?);
            answer(jobs.drain(..), outcome);
        }
    });
    tx
}

/// Hands a job to a group-commit task (this one, or the messages') and waits for its commit.
pub(super) async fn submit<J, T>(
    queue: &mpsc::Sender<J>,
    job: impl FnOnce(oneshot::Sender<Result<T>>) -> J,
) -> Result<T> {
    let closed = || StoreError::Unavailable(Arc::new(sqlx::Error::PoolClosed));
    let (reply, answer) = oneshot::channel();
    queue.send(job(reply)).await.map_err(|_| closed())?;
    answer.await.map_err(|_| closed())?
}

/// The users' rows by (company id, external id).
type Stored = HashMap<(String, String), User>;

async fn store(conn: &mut sqlx::SqliteConnection, jobs: &[Job]) -> Result<Stored> {
    let mut users = Vec::new();
    let mut events = Vec::new();
    for job in jobs {
        match job {
            Job::User(p, _) => users.push((&p.new_id, &p.company_id, &p.external_id, p.now_ms)),
            Job::Audit(batch, _) => events.extend(batch.iter().map(|e| {
                (
                    e.at,
                    &e.kind,
                    &e.outcome,
                    &e.company_id,
                    &e.key_id,
                    &e.user_id,
                    &e.agent_id,
                    &e.jti,
                    &e.client_ip,
                    &e.detail,
                )
            })),
        }
    }
    let users = serde_json::to_string(&users).expect("strings and numbers serialise");
    let events = serde_json::to_string(&events).expect("strings and numbers serialise");
    // `fetch_all`, not `fetch_one`: sqlx stops a query at the row it was asked for, and the
    // `COMMIT` after it would never run.
    let rows = match sqlx::query_scalar::<_, String>(STORE_BATCH)
        .bind(users)
        .bind(events)
        .fetch_all(&mut *conn)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            // A statement failed: the ones after it (COMMIT included) did not run.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(e.into());
        }
    };
    let rows: Vec<(String, String, String, i64, Option<i64>)> =
        serde_json::from_str(rows.first().map_or("[]", |j| j))
            .map_err(|e| StoreError::from(sqlx::Error::Decode(e.into())))?;
    Ok(rows
        .into_iter()
        .map(
            |(id, company_id, external_id, token_version, invalidated_at)| {
                let key = (company_id.clone(), external_id.clone());
                let user = User {
                    id,
                    company_id,
                    external_id,
                    token_version,
                    invalidated_at,
                };
                (key, user)
            },
        )
        .collect())
}

fn answer(jobs: impl Iterator<Item = Job>, outcome: Result<Stored>) {
    for job in jobs {
        match (job, &outcome) {
            (Job::User(p, reply), Ok(users)) => {
                let user = users
                    .get(&(p.company_id, p.external_id))
                    .cloned()
                    // The row was committed in this transaction or before it: not finding it
                    // is a broken invariant, reported rather than answered as a user.
                    .ok_or_else(|| {
                        StoreError::from(sqlx::Error::Protocol(
                            "a first-seen user was not found after its commit".into(),
                        ))
                    });
                let _ = reply.send(user);
            }
            (Job::Audit(_, reply), Ok(_)) => {
                let _ = reply.send(Ok(()));
            }
            (Job::User(_, reply), Err(e)) => {
                let _ = reply.send(Err(e.clone()));
            }
            (Job::Audit(_, reply), Err(e)) => {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}
