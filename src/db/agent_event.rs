//! The agents' outbox: the events an agent that answers by itself is told of. An event row
//! commits in the transaction of what it tells (a user's message, a conversation opened or
//! closed) when the conversation's agent answers by itself; a worker claims due events for a
//! lease, acts on them, and deletes them once done (or given up: the audit trail keeps every
//! attempt), or moves them to a later attempt.

use super::{Db, Result};

/// An event waiting in the outbox (or being sent).
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct AgentEvent {
    /// Its place in the outbox: a conversation's events go in this order.
    pub n: i64,
    /// The `webhook-id`: the same on every attempt.
    pub id: String,
    pub agent_id: String,
    pub conversation_id: String,
    /// `message.created`, `conversation.opened` or `conversation.closed`.
    #[sqlx(rename = "type")]
    pub kind: String,
    pub message_id: Option<String>,
    pub created_at: i64,
    /// Attempts made, this one included once claimed.
    pub attempts: i64,
    /// The body of its first attempt, sent again by every retry.
    pub body: Option<String>,
}

/// The id of a conversation's `conversation.opened` or `conversation.closed` event.
pub fn event_id_for_conversation(conversation_id: &str, kind: &str) -> String {
    let what = kind.strip_prefix("conversation.").unwrap_or(kind);
    format!("evt_{conversation_id}_{what}")
}

/// An event's id for the message it tells of: `evt_` and the message id without its `msg_`.
/// SQLite's batch insert (`db::message`) writes the same in SQL.
pub fn event_id_for_message(message_id: &str) -> String {
    format!(
        "evt_{}",
        message_id.strip_prefix("msg_").unwrap_or(message_id)
    )
}

/// The condition on `a` (the conversation's agent) under which a user's message queues a
/// `message.created` event: its webhook is enabled, or it is an LLM. [`QUEUE_EVENT`] says the
/// same for one event of any type; the two statements that store messages use this.
macro_rules! told_of_user_messages {
    () => {
        "((a.kind = 'webhook' AND a.webhook_disabled_at IS NULL) OR a.kind = 'openai')"
    };
}

/// Queues an event in the caller's transaction if the conversation's agent is told of it:
/// a `webhook` agent whose webhook is enabled, of every event; an `openai` agent, of a
/// user's message. Answers the rows inserted (0 or 1). Binds: event id, conversation id,
/// type, message id (or NULL), now.
pub(super) const QUEUE_EVENT: &str = "INSERT INTO agent_event \
     (id, agent_id, conversation_id, type, message_id, created_at, next_attempt_at) \
     SELECT $1, a.id, c.id, $3, $4, $5, $5 FROM conversation c JOIN agent a ON a.id = c.agent_id \
     WHERE c.id = $2 AND ((a.kind = 'webhook' AND a.webhook_disabled_at IS NULL) \
       OR (a.kind = 'openai' AND $3 = 'message.created'))";

/// Runs [`QUEUE_EVENT`] on `$tx`; evaluates to whether an event was queued.
macro_rules! queue_event {
    ($tx:expr, $id:expr, $conversation_id:expr, $kind:expr, $message_id:expr, $now:expr) => {
        sqlx::query($crate::db::agent_event::QUEUE_EVENT)
            .bind($id)
            .bind($conversation_id)
            .bind($kind)
            .bind($message_id)
            .bind($now)
            .execute($tx)
            .await?
            .rows_affected()
            > 0
    };
}

macro_rules! event_columns {
    () => {
        "n, id, agent_id, conversation_id, type, message_id, created_at, attempts, body"
    };
}

impl Db {
    /// Deletes the events `done` with (delivered, answered, given up: their attempts stay in
    /// the audit trail), then claims up to `limit` due events (each the oldest of its
    /// conversation, so that a conversation's events are handled in order) until
    /// `lease_until`, counting the attempt; one transaction for both, so that a busy outbox
    /// costs one commit per round rather than one per event. An event claimed by one worker
    /// is not due for any other until its lease ends: if the worker dies, the event is taken
    /// again then, with the same id (so is one done but not yet deleted). On PostgreSQL, a
    /// row another instance claimed meanwhile fails the outer condition when it is checked
    /// again after that instance's commit, so it is claimed once.
    pub async fn claim_agent_events(
        &self,
        done: &[i64],
        now_ms: i64,
        lease_until: i64,
        limit: i64,
    ) -> Result<Vec<AgentEvent>> {
        // A read first (on the index of due times): the worker asks every second, and an
        // idle server should take no write lock for nothing.
        if done.is_empty() {
            let any = run!(self, |pool| {
                sqlx::query_scalar::<_, i32>(
                    "SELECT 1 FROM agent_event WHERE next_attempt_at <= $1 LIMIT 1",
                )
                .bind(now_ms)
                .fetch_optional(pool)
                .await
            })?;
            if any.is_none() {
                return Ok(Vec::new());
            }
        }
        let mut claimed = transaction!(self, |tx| {
            if !done.is_empty() {
                let mut delete = sqlx::QueryBuilder::new("DELETE FROM agent_event WHERE n IN (");
                let mut list = delete.separated(", ");
                for n in done {
                    list.push_bind(*n);
                }
                delete.push(")");
                // Not kept as a prepared statement: its text varies with the number of ids.
                delete.build().persistent(false).execute(&mut *tx).await?;
            }
            sqlx::query_as::<_, AgentEvent>(concat!(
                "UPDATE agent_event SET attempts = attempts + 1, next_attempt_at = $2 \
                 WHERE next_attempt_at <= $1 AND n IN ( \
                   SELECT e.n FROM agent_event e \
                   WHERE e.next_attempt_at <= $1 \
                     AND NOT EXISTS (SELECT 1 FROM agent_event p \
                       WHERE p.conversation_id = e.conversation_id AND p.n < e.n) \
                   ORDER BY e.next_attempt_at, e.n LIMIT +$3) \
                 RETURNING ",
                event_columns!()
            ))
            .bind(now_ms)
            .bind(lease_until)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        })?;
        claimed.sort_by_key(|e| e.n);
        Ok(claimed)
    }

    /// An attempt failed: the next one is due at `next_attempt_at`, with the same body.
    pub async fn agent_event_retry_at(
        &self,
        n: i64,
        next_attempt_at: i64,
        body: Option<&str>,
        error: &str,
    ) -> Result<()> {
        transaction!(self, |tx| {
            sqlx::query(
                "UPDATE agent_event SET next_attempt_at = $2, body = COALESCE(body, $3), \
                 last_error = $4 WHERE n = $1",
            )
            .bind(n)
            .bind(next_attempt_at)
            .bind(body)
            .bind(error)
            .execute(&mut *tx)
            .await?;
        })
    }

    /// Keeps a claimed event the caller's until `lease_until` (an LLM reply that streams
    /// longer than its first lease).
    pub async fn extend_agent_event_lease(&self, n: i64, lease_until: i64) -> Result<()> {
        transaction!(self, |tx| {
            sqlx::query("UPDATE agent_event SET next_attempt_at = $2 WHERE n = $1")
                .bind(n)
                .bind(lease_until)
                .execute(&mut *tx)
                .await?;
        })
    }

    /// The agent's webhook answered 410 Gone: it is disabled (no event is queued or sent
    /// until its URL is set again) and every event still waiting for it is given up. Returns
    /// those events (the one that got the 410 among them), or nothing when another attempt
    /// disabled it first.
    pub async fn disable_webhook(&self, agent_id: &str, now_ms: i64) -> Result<Vec<AgentEvent>> {
        transaction!(self, |tx| {
            let disabled = sqlx::query(
                "UPDATE agent SET webhook_disabled_at = $2 \
                 WHERE id = $1 AND webhook_disabled_at IS NULL",
            )
            .bind(agent_id)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if disabled == 0 {
                Vec::new()
            } else {
                sqlx::query_as::<_, AgentEvent>(concat!(
                    "DELETE FROM agent_event WHERE agent_id = $1 RETURNING ",
                    event_columns!()
                ))
                .bind(agent_id)
                .fetch_all(&mut *tx)
                .await?
            }
        })
    }
}
