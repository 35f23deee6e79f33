//! Messages of a conversation, numbered 1, 2, 3… by `seq` in commit order, each unique by its
//! sender's `client_message_id` within the conversation.

use std::sync::Arc;

use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

use super::{Db, Entity, Pools, Result, StoreError, WriteHealth};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Message {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub client_message_id: String,
    /// `user`, `agent`, `operator` or `system`.
    pub sender_kind: String,
    pub sender_name: Option<String>,
    pub text: String,
    /// `complete`, `streaming` or `failed`.
    pub status: String,
    pub created_at: i64,
    /// An LLM's reply: the tokens of the prompt and of the reply, as the endpoint counted
    /// them (set when the reply completes, if the endpoint said).
    pub prompt_tokens: Option<i64>,
    pub completion_tokens: Option<i64>,
}

macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, client_message_id, sender_kind, sender_name, text, status, \
         created_at, prompt_tokens, completion_tokens"
    };
}

/// A message to store.
#[derive(Clone, Debug)]
pub struct NewMessage<'a> {
    pub id: &'a str,
    pub conversation_id: &'a str,
    pub client_message_id: &'a str,
    pub sender_kind: &'a str,
    pub sender_name: Option<&'a str>,
    pub text: &'a str,
    pub status: &'a str,
    pub now_ms: i64,
}

/// A [`NewMessage`] that owns its fields, to hand to the group-commit task.
#[derive(Debug)]
pub struct OwnedMessage {
    id: String,
    conversation_id: String,
    client_message_id: String,
    sender_kind: String,
    sender_name: Option<String>,
    text: String,
    status: String,
    now_ms: i64,
}

impl NewMessage<'_> {
    fn to_owned_message(&self) -> OwnedMessage {
        OwnedMessage {
            id: self.id.to_owned(),
            conversation_id: self.conversation_id.to_owned(),
            client_message_id: self.client_message_id.to_owned(),
            sender_kind: self.sender_kind.to_owned(),
            sender_name: self.sender_name.map(str::to_owned),
            text: self.text.to_owned(),
            status: self.status.to_owned(),
            now_ms: self.now_ms,
        }
    }
}

/// A message as `append_message` left it.
#[derive(Debug)]
pub struct Appended {
    pub message: Message,
    /// Stored before (the same `client_message_id`): nothing was written.
    pub duplicate: bool,
    /// An agent event for it was queued in the outbox (its agent answers by itself).
    pub event_queued: bool,
}

/// A message just stored, and whether its agent event was queued with it.
#[derive(Debug)]
pub struct Stored {
    message: Message,
    event_queued: bool,
}

/// How a streaming message grows.
#[derive(Debug)]
pub struct Grow<'a> {
    /// Text added at its end.
    pub append: &'a str,
    /// `complete` or `failed`: it ends.
    pub finish: Option<&'a str>,
    /// An LLM's reply: the prompt's and the reply's tokens.
    pub usage: Option<(i64, i64)>,
    /// The longest its text may become, in characters.
    pub max_chars: i64,
    pub now_ms: i64,
}

/// What became of a streaming message asked to grow.
#[derive(Debug)]
pub enum Growth {
    /// Grown (and finished, if asked): the message as it is now.
    Grew(Message),
    /// It had already finished (complete or failed): the message as it is.
    Finished(Message),
    /// The chunk would take its text past the longest a message may be.
    TooLong,
}

/// Which part of a conversation to read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Window {
    /// The newest messages.
    Latest,
    /// Messages with a seq below this one.
    Before(i64),
    /// Messages with a seq above this one.
    After(i64),
}

/// PostgreSQL: stores one message as one statement (its own transaction: one round trip,
/// where BEGIN, the seq's update, the insert, the outbox's insert and COMMIT were five). The
/// update takes the conversation's next seq and locks its row until the commit, so
/// concurrent senders queue there and seqs are gapless and in commit order; a closed or
/// missing conversation updates nothing and so stores nothing (no row). The insert has no
/// `ON CONFLICT`: a `client_message_id` already taken fails the whole statement with a unique
/// violation, so the seq it moved goes back with it. The event of a user's message to an
/// agent that answers by itself is queued in the same statement (the outbox; the rule is
/// `told_of_user_messages!`). Binds: message id, conversation id, client id, sender kind,
/// sender name, text, status, event id, now.
const STORE_ONE: &str = concat!(
    "WITH next AS ( \
         UPDATE conversation SET last_seq = last_seq + 1, updated_at = $9 \
         WHERE id = $2 AND status = 'open' RETURNING last_seq, agent_id), \
     stored AS ( \
         INSERT INTO message (id, conversation_id, seq, client_message_id, sender_kind, \
             sender_name, text, status, created_at) \
         SELECT $1, $2, last_seq, $3, $4, $5, $6, $7, $9 FROM next \
         RETURNING ",
    message_columns!(),
    "), \
     queued AS ( \
         INSERT INTO agent_event \
             (id, agent_id, conversation_id, type, message_id, created_at, next_attempt_at) \
         SELECT $8, a.id, $2, 'message.created', $1, $9, $9 \
         FROM next JOIN agent a ON a.id = next.agent_id \
         WHERE $4 = 'user' AND ",
    told_of_user_messages!(),
    " RETURNING 1) \
     SELECT stored.*, EXISTS (SELECT 1 FROM queued) AS event_queued FROM stored"
);

/// A row of [`STORE_ONE`].
#[derive(sqlx::FromRow)]
struct StoredRow {
    #[sqlx(flatten)]
    message: Message,
    event_queued: bool,
}

/// PostgreSQL: [`STORE_ONE`]. `Conflict` when its `client_message_id` is taken, `NotFound`
/// when the conversation is closed or missing.
async fn store_one(conn: &mut sqlx::PgConnection, m: &NewMessage<'_>) -> Result<Stored> {
    let event_id = super::agent_event::event_id_for_message(m.id);
    let row = sqlx::query_as::<_, StoredRow>(STORE_ONE)
        .bind(m.id)
        .bind(m.conversation_id)
        .bind(m.client_message_id)
        .bind(m.sender_kind)
        .bind(m.sender_name)
        .bind(m.text)
        .bind(m.status)
        .bind(&event_id)
        .bind(m.now_ms)
        .fetch_optional(&mut *conn)
        .await
        .map_err(|e| StoreError::conflict_on(e, Entity::Message, m.client_message_id))?
        .ok_or_else(|| StoreError::NotFound(Entity::Conversation, m.conversation_id.to_owned()))?;
    Ok(Stored {
        message: row.message,
        event_queued: row.event_queued,
    })
}

impl Db {
    /// Stores a message in an open conversation with the next seq, committed before this
    /// returns, with the agent event of a user's message when its agent answers by itself
    /// (in the same transaction: the outbox). The same `client_message_id` again gives the
    /// stored message as a duplicate, never a second row. A conversation that is closed or
    /// missing is `NotFound(Conversation)`.
    pub async fn append_message(&self, m: &NewMessage<'_>) -> Result<Appended> {
        let stored = match &self.pools {
            // SQLite commits one transaction at a time, each with an fsync: messages sent at
            // once are stored by the group-commit task in one transaction, and each sender
            // hears back only after the commit that holds its message.
            Pools::Sqlite {
                message_appends, ..
            } => {
                super::group_commit::submit(message_appends, |reply| (m.to_owned_message(), reply))
                    .await
            }
            // Concurrent transactions queue on the conversation's row lock only.
            Pools::Postgres(pool) => {
                match on_conn!(pool, &self.writes, |conn| store_one(conn, m).await?) {
                    Ok(message) => Ok(Some(message)),
                    Err(StoreError::Conflict(..)) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        };
        match stored {
            Ok(Some(stored)) => Ok(Appended {
                message: stored.message,
                duplicate: false,
                event_queued: stored.event_queued,
            }),
            Ok(None) | Err(StoreError::NotFound(..)) => {
                // Sent before (perhaps before the conversation closed): the stored one.
                match self
                    .find_message_by_client_id(m.conversation_id, m.client_message_id)
                    .await?
                {
                    Some(message) => Ok(Appended {
                        message,
                        duplicate: true,
                        event_queued: false,
                    }),
                    None => Err(StoreError::NotFound(
                        Entity::Conversation,
                        m.conversation_id.to_owned(),
                    )),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Grows a streaming message of the conversation as `grow` says, in one statement.
    /// `NotFound(Message)` when the conversation has no such message.
    pub async fn grow_message(
        &self,
        conversation_id: &str,
        message_id: &str,
        grow: &Grow<'_>,
    ) -> Result<Growth> {
        let grown = transaction!(self, |tx| {
            sqlx::query_as::<_, Message>(concat!(
                "UPDATE message SET text = text || $3, status = COALESCE($4, status), \
                 grown_at = $5, prompt_tokens = COALESCE($7, prompt_tokens), \
                 completion_tokens = COALESCE($8, completion_tokens) \
                 WHERE id = $1 AND conversation_id = $2 AND status = 'streaming' \
                   AND length(text) + length($3) <= $6 RETURNING ",
                message_columns!()
            ))
            .bind(message_id)
            .bind(conversation_id)
            .bind(grow.append)
            .bind(grow.finish)
            .bind(grow.now_ms)
            .bind(grow.max_chars)
            .bind(grow.usage.map(|u| u.0))
            .bind(grow.usage.map(|u| u.1))
            .fetch_optional(&mut *tx)
            .await?
        })?;
        if let Some(message) = grown {
            return Ok(Growth::Grew(message));
        }
        match self.find_message(conversation_id, message_id).await? {
            None => Err(StoreError::NotFound(Entity::Message, message_id.to_owned())),
            Some(message) if message.status != "streaming" => Ok(Growth::Finished(message)),
            Some(_) => Ok(Growth::TooLong),
        }
    }

    /// Finishes as `failed` every streaming message that has not grown since `before_ms`
    /// (or, never grown, was created before it), and returns them.
    pub async fn fail_idle_streams(&self, before_ms: i64) -> Result<Vec<Message>> {
        // Asked every second: a read first (on the partial index of streaming messages), so
        // that an idle server takes no write lock for nothing.
        let any = run!(self, |pool| {
            sqlx::query_scalar::<_, i32>(
                "SELECT 1 FROM message WHERE status = 'streaming' \
                 AND COALESCE(grown_at, created_at) < $1 LIMIT 1",
            )
            .bind(before_ms)
            .fetch_optional(pool)
            .await
        })?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        transaction!(self, |tx| {
            sqlx::query_as::<_, Message>(concat!(
                "UPDATE message SET status = 'failed' \
                 WHERE status = 'streaming' AND COALESCE(grown_at, created_at) < $1 RETURNING ",
                message_columns!()
            ))
            .bind(before_ms)
            .fetch_all(&mut *tx)
            .await?
        })
    }

    /// SQLite only: the highest rowid of the message table. SQLite has one writer, so rowids
    /// grow in commit order, and a reader that remembers the highest it has seen finds every
    /// message committed since (by any process) with [`Db::messages_after_rowid`]. None on
    /// PostgreSQL, where instances hear of messages by NOTIFY instead.
    pub async fn last_message_rowid(&self) -> Result<Option<i64>> {
        match &self.pools {
            Pools::Sqlite { read, .. } => Ok(Some(
                sqlx::query_scalar::<_, Option<i64>>("SELECT max(rowid) FROM message")
                    .fetch_one(read)
                    .await?
                    .unwrap_or(0),
            )),
            Pools::Postgres(_) => Ok(None),
        }
    }

    /// SQLite only (see [`Db::last_message_rowid`]): the messages stored after `rowid`, at most
    /// `limit`, as `(rowid, conversation, user, agent, company, seq)`.
    pub async fn messages_after_rowid(
        &self,
        rowid: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String, String, String, String, i64)>> {
        match &self.pools {
            Pools::Sqlite { read, .. } => Ok(sqlx::query_as(
                "SELECT m.rowid, m.conversation_id, c.user_id, c.agent_id, c.company_id, m.seq \
                 FROM message m JOIN conversation c ON c.id = m.conversation_id \
                 WHERE m.rowid > $1 ORDER BY m.rowid LIMIT +$2",
            )
            .bind(rowid)
            .bind(limit)
            .fetch_all(read)
            .await?),
            Pools::Postgres(_) => Ok(Vec::new()),
        }
    }

    /// SQLite only: those of the messages `ids` that are no longer streaming (finished by
    /// any process). Empty on PostgreSQL, where instances hear of it by NOTIFY.
    pub async fn finished_among(&self, ids: &[&str]) -> Result<Vec<Message>> {
        match &self.pools {
            Pools::Sqlite { read, .. } if !ids.is_empty() => {
                let ids = serde_json::to_string(ids).expect("strings serialise");
                Ok(sqlx::query_as::<_, Message>(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM message WHERE id IN (SELECT value FROM json_each($1)) \
                     AND status <> 'streaming'"
                ))
                .bind(ids)
                .fetch_all(read)
                .await?)
            }
            _ => Ok(Vec::new()),
        }
    }

    /// PostgreSQL only: sends `payload` to the listeners of `channel` (outside any
    /// transaction: see `chat::fanout`). Nothing on SQLite.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        if let Pools::Postgres(pool) = &self.pools {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(pool)
                .await?;
        }
        Ok(())
    }

    /// A message of a conversation by its id.
    pub async fn find_message(
        &self,
        conversation_id: &str,
        message_id: &str,
    ) -> Result<Option<Message>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Message>(concat!(
                "SELECT ",
                message_columns!(),
                " FROM message WHERE id = $1 AND conversation_id = $2"
            ))
            .bind(message_id)
            .bind(conversation_id)
            .fetch_optional(pool)
            .await
        })?)
    }

    pub async fn find_message_by_client_id(
        &self,
        conversation_id: &str,
        client_message_id: &str,
    ) -> Result<Option<Message>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Message>(concat!(
                "SELECT ",
                message_columns!(),
                " FROM message WHERE conversation_id = $1 AND client_message_id = $2"
            ))
            .bind(conversation_id)
            .bind(client_message_id)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// At most `limit` messages of `window`, oldest first, and whether more lie beyond them
    /// (older ones for `Latest` and `Before`, newer ones for `After`).
    pub async fn list_messages(
        &self,
        conversation_id: &str,
        window: Window,
        limit: i64,
    ) -> Result<(Vec<Message>, bool)> {
        let (newer, seq) = match window {
            Window::After(seq) => (true, seq),
            Window::Before(seq) => (false, seq),
            Window::Latest => (false, i64::MAX),
        };
        let mut rows = run!(self, |pool| {
            let query = if newer {
                sqlx::query_as::<_, Message>(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM message WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT +$3"
                ))
            } else {
                sqlx::query_as::<_, Message>(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM message WHERE conversation_id = $1 AND seq < $2 \
                     ORDER BY seq DESC LIMIT +$3"
                ))
            };
            query
                .bind(conversation_id)
                .bind(seq)
                .bind(limit + 1)
                .fetch_all(pool)
                .await
        })?;
        let more = rows.len() as i64 > limit;
        rows.truncate(limit.max(0) as usize);
        if !newer {
            rows.reverse();
        }
        Ok((rows, more))
    }
}

/// What one message's sender waits for from the group-commit task: None when its
/// `client_message_id` was taken or its conversation is not open.
type Outcome = Result<Option<Stored>>;
pub type MessageAppend = (OwnedMessage, oneshot::Sender<Outcome>);

/// Stores a batch in order in one SQLite transaction, sent as one multi-statement query of
/// a fixed text (prepared once, kept by the connection) with the batch as one JSON argument.
/// Each statement sent separately was a round trip to SQLite's worker thread, and under load
/// each round trip waited for that thread to be scheduled, which cost more than the work; a
/// text that varied with the batch was parsed again every time; a row per message was a
/// wake-up per message. The `INSERT … SELECT` numbers the new messages of each conversation
/// after its last seq (`row_number()` in batch order) and leaves out closed conversations and
/// client ids already taken; the second `INSERT` queues the event of each user's message to
/// an agent that answers by itself (`told_of_user_messages!`; its id as
/// `agent_event::event_id_for_message` makes it); the `UPDATE` moves each
/// conversation's last seq to its newest message; the `SELECT` answers the seq of every
/// message stored and whether its event was queued, in one row. The batch is walked with
/// `jsonb_each`, whose rows `->>` reads without parsing them again (as in `group_commit`).
/// SQLite's own SQL (JSON functions, a window function in an insert): PostgreSQL stores each
/// message in its own transaction (`store_one`), where concurrent transactions queue on the
/// conversation's row only.
const STORE_BATCH: &str = concat!(
    "BEGIN IMMEDIATE; \
     INSERT INTO message (id, conversation_id, seq, client_message_id, sender_kind, \
         sender_name, text, status, created_at) \
     SELECT m.value ->> 0, m.value ->> 1, \
         c.last_seq + row_number() OVER (PARTITION BY m.value ->> 1 ORDER BY m.key), \
         m.value ->> 2, m.value ->> 3, m.value ->> 4, m.value ->> 5, m.value ->> 6, m.value ->> 7 \
     FROM jsonb_each($1) AS m JOIN conversation c ON c.id = m.value ->> 1 AND c.status = 'open' \
     WHERE NOT EXISTS (SELECT 1 FROM message \
         WHERE conversation_id = m.value ->> 1 AND client_message_id = m.value ->> 2); \
     INSERT INTO agent_event \
         (id, agent_id, conversation_id, type, message_id, created_at, next_attempt_at) \
     SELECT 'evt_' || substr(m.value ->> 0, 5), a.id, c.id, 'message.created', m.value ->> 0, \
         m.value ->> 7, m.value ->> 7 \
     FROM jsonb_each($1) AS m JOIN conversation c ON c.id = m.value ->> 1 \
         JOIN agent a ON a.id = c.agent_id \
     WHERE m.value ->> 3 = 'user' AND ",
    told_of_user_messages!(),
    " AND EXISTS (SELECT 1 FROM message WHERE id = m.value ->> 0); \
     UPDATE conversation \
     SET last_seq = (SELECT max(seq) FROM message WHERE conversation_id = conversation.id), \
         updated_at = $2 \
     WHERE id IN (SELECT value ->> 1 FROM jsonb_each($1)) \
       AND last_seq < (SELECT max(seq) FROM message WHERE conversation_id = conversation.id); \
     SELECT json_group_array(json_array(id, seq, EXISTS (SELECT 1 FROM agent_event e \
         WHERE e.id = 'evt_' || substr(message.id, 5)))) FROM message \
     WHERE id IN (SELECT value ->> 0 FROM jsonb_each($1)); \
     COMMIT"
);

async fn store_batch(
    conn: &mut sqlx::SqliteConnection,
    batch: &[MessageAppend],
) -> Result<Vec<Outcome>> {
    use std::collections::{HashMap, HashSet};
    // A client id repeated within the batch: only its first message is stored; the others
    // read it afterwards, as any repeat does.
    let mut seen = HashSet::new();
    let rows: Vec<_> = batch
        .iter()
        .filter(|(m, _)| seen.insert((m.conversation_id.as_str(), m.client_message_id.as_str())))
        .map(|(m, _)| {
            (
                &m.id,
                &m.conversation_id,
                &m.client_message_id,
                &m.sender_kind,
                &m.sender_name,
                &m.text,
                &m.status,
                m.now_ms,
            )
        })
        .collect();
    let rows = serde_json::to_string(&rows).expect("strings and numbers serialise");
    let now_ms = batch.iter().map(|(m, _)| m.now_ms).max().unwrap_or(0);
    // `fetch_all`, not `fetch_one`: sqlx stops a query at the row it was asked for, and the
    // `COMMIT` after it would never run.
    let stored = sqlx::query_scalar::<_, String>(STORE_BATCH)
        .bind(rows)
        .bind(now_ms)
        .fetch_all(&mut *conn)
        .await;
    let seqs: HashMap<String, (i64, bool)> = match stored {
        Ok(json) => {
            serde_json::from_str::<Vec<(String, i64, u8)>>(json.first().map_or("[]", |j| j))
                .map_err(|e| StoreError::from(sqlx::Error::Decode(e.into())))?
                .into_iter()
                .map(|(id, seq, queued)| (id, (seq, queued == 1)))
                .collect()
        }
        Err(e) => {
            // A statement failed: the ones after it (COMMIT included) did not run.
            let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
            return Err(e.into());
        }
    };
    Ok(batch
        .iter()
        .map(|(m, _)| {
            Ok(seqs.get(&m.id).map(|&(seq, event_queued)| Stored {
                message: Message {
                    id: m.id.clone(),
                    conversation_id: m.conversation_id.clone(),
                    seq,
                    client_message_id: m.client_message_id.clone(),
                    sender_kind: m.sender_kind.clone(),
                    sender_name: m.sender_name.clone(),
                    text: m.text.clone(),
                    status: m.status.clone(),
                    created_at: m.now_ms,
                    prompt_tokens: None,
                    completion_tokens: None,
                },
                event_queued,
            }))
        })
        .collect())
}

/// How many messages one SQLite transaction takes at most. Not every message waiting: while
/// one batch commits, the acks of the one before leave and their senders' next messages
/// arrive, so a smaller batch keeps the writer and the sockets busy at the same time. With
/// 64 senders sending back to back, 32 acked about 15 % more messages per second than 256
/// (three runs each, BENCHMARKS.md).
const GROUP_COMMIT_MAX: usize = 32;

/// SQLite's group-commit task for messages: takes every message waiting, stores them in
/// order in one `BEGIN IMMEDIATE` transaction (a closed conversation or a duplicate
/// concerns its own message only), commits once, then answers each sender. Ends when every
/// `Db` is dropped.
pub(super) fn spawn_group_commit(
    write: SqlitePool,
    health: Arc<WriteHealth>,
) -> mpsc::Sender<MessageAppend> {
    let (tx, mut rx) = mpsc::channel::<MessageAppend>(4 * GROUP_COMMIT_MAX);
    tokio::spawn(async move {
        let mut batch = Vec::with_capacity(GROUP_COMMIT_MAX);
        while rx.recv_many(&mut batch, GROUP_COMMIT_MAX).await > 0 {
            // The transaction is in the query itself (see `store_batch`).
            let outcome = on_conn!(&write, &health, |conn| store_batch(conn, &batch).await?);
            match outcome {
                Ok(results) => {
                    for ((_, reply), result) in batch.drain(..).zip(results) {
                        let _ = reply.send(result);
                    }
                }
                Err(e) => {
                    for (_, reply) in batch.drain(..) {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        }
    });
    tx
}
