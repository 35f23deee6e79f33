//! Conversations: one end user and one agent of a company. At most one is open per (user,
//! agent); a closed one stays readable.

use super::agent_event::event_id_for_conversation;
use super::{Db, Entity, Result, StoreError};

#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Conversation {
    pub id: String,
    pub company_id: String,
    pub agent_id: String,
    pub user_id: String,
    /// `open` or `closed`.
    pub status: String,
    /// `bot`, `waiting_human` or `human` (see [`Handler`]).
    pub handler: String,
    pub last_seq: i64,
    pub user_read_seq: i64,
    pub agent_read_seq: i64,
    pub created_at: i64,
    pub updated_at: i64,
    pub closed_at: Option<i64>,
}

impl Conversation {
    pub fn is_open(&self) -> bool {
        self.status == OPEN
    }
}

const OPEN: &str = "open";

macro_rules! conversation_columns {
    () => {
        "id, company_id, agent_id, user_id, status, handler, last_seq, user_read_seq, \
         agent_read_seq, created_at, updated_at, closed_at"
    };
}

macro_rules! conversation_select {
    ($rest:literal) => {
        concat!(
            "SELECT ",
            conversation_columns!(),
            " FROM conversation ",
            $rest
        )
    };
}

/// Who answers a conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handler {
    /// Its agent: the company's backend, its bot or an LLM.
    Bot,
    /// Handed to a person, none of whom has answered yet.
    WaitingHuman,
    /// A person.
    Human,
}

impl Handler {
    pub fn as_str(self) -> &'static str {
        match self {
            Handler::Bot => "bot",
            Handler::WaitingHuman => "waiting_human",
            Handler::Human => "human",
        }
    }
}

/// Which side of a conversation read up to a seq.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    User,
    Agent,
}

/// A page of a company's conversations, oldest change first (a sync feed: pass the last
/// one's `(updated_at, id)` as `after` for the next page).
#[derive(Debug, Default)]
pub struct ConversationQuery<'a> {
    pub company_id: &'a str,
    pub agent_id: Option<&'a str>,
    pub status: Option<&'a str>,
    pub handler: Option<Handler>,
    pub updated_since: Option<i64>,
    pub after: Option<(i64, &'a str)>,
    pub limit: i64,
}

impl Db {
    /// The open conversation of (user, agent), made if there is none. Concurrent calls all
    /// get the one that won.
    pub async fn open_conversation(
        &self,
        company_id: &str,
        agent_id: &str,
        user_id: &str,
        new_id: &str,
        now_ms: i64,
    ) -> Result<(Conversation, bool)> {
        let inserted = transaction!(self, |tx| {
            let inserted = sqlx::query_as::<_, Conversation>(concat!(
                "INSERT INTO conversation (id, company_id, agent_id, user_id, status, created_at, \
                 updated_at) VALUES ($1, $2, $3, $4, 'open', $5, $5) \
                 ON CONFLICT (user_id, agent_id) WHERE status = 'open' DO NOTHING RETURNING ",
                conversation_columns!()
            ))
            .bind(new_id)
            .bind(company_id)
            .bind(agent_id)
            .bind(user_id)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if inserted.is_some() {
                let kind = "conversation.opened";
                let event = event_id_for_conversation(new_id, kind);
                // Queued only for a webhook agent.
                let _queued = queue_event!(&mut *tx, &event, new_id, kind, None::<&str>, now_ms);
            }
            inserted
        })?;
        if let Some(c) = inserted {
            return Ok((c, true));
        }
        let open = run!(self, |pool| {
            sqlx::query_as::<_, Conversation>(conversation_select!(
                "WHERE user_id = $1 AND agent_id = $2 AND status = 'open'"
            ))
            .bind(user_id)
            .bind(agent_id)
            .fetch_optional(pool)
            .await
        })?;
        // Closed between the conflict and the read: the caller opens again.
        open.map(|c| (c, false))
            .ok_or_else(|| StoreError::NotFound(Entity::Conversation, String::new()))
    }

    /// The open conversations of (user, agent), with their last seq: where a socket's
    /// delivery starts.
    pub async fn open_conversation_seqs(
        &self,
        user_id: &str,
        agent_id: &str,
    ) -> Result<Vec<(String, i64)>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, (String, i64)>(
                "SELECT id, last_seq FROM conversation \
                 WHERE user_id = $1 AND agent_id = $2 AND status = 'open'",
            )
            .bind(user_id)
            .bind(agent_id)
            .fetch_all(pool)
            .await
        })?)
    }

    /// The last seq of each of these conversations that still exists.
    pub async fn conversation_seqs(&self, ids: &[String]) -> Result<Vec<(String, i64)>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        Ok(run!(self, |pool| {
            let mut query =
                sqlx::QueryBuilder::new("SELECT id, last_seq FROM conversation WHERE id IN (");
            let mut list = query.separated(", ");
            for id in ids {
                list.push_bind(id.as_str());
            }
            query.push(")");
            // Not kept as a prepared statement: its text varies with the number of ids.
            query
                .build_query_as::<(String, i64)>()
                .persistent(false)
                .fetch_all(pool)
                .await
        })?)
    }

    pub async fn find_conversation(&self, id: &str) -> Result<Option<Conversation>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Conversation>(conversation_select!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// A user's conversations with one agent, newest first; `before` is the
    /// `(created_at, id)` of the last one of the previous page.
    pub async fn list_user_conversations(
        &self,
        user_id: &str,
        agent_id: &str,
        before: Option<(i64, &str)>,
        limit: i64,
    ) -> Result<Vec<Conversation>> {
        let (before_at, before_id) = before.unwrap_or((i64::MAX, ""));
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Conversation>(conversation_select!(
                "WHERE user_id = $1 AND agent_id = $2 \
                 AND (created_at < $3 OR (created_at = $3 AND id < $4) OR $4 = '') \
                 ORDER BY created_at DESC, id DESC LIMIT +$5"
            ))
            .bind(user_id)
            .bind(agent_id)
            .bind(before_at)
            .bind(before_id)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?)
    }

    /// A company's conversations by last change, oldest first.
    pub async fn list_company_conversations(
        &self,
        q: &ConversationQuery<'_>,
    ) -> Result<Vec<Conversation>> {
        let (after_at, after_id) = q.after.unwrap_or((i64::MIN, ""));
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Conversation>(conversation_select!(
                "WHERE company_id = $1 AND ($2 IS NULL OR agent_id = $2) \
                 AND ($3 IS NULL OR status = $3) AND updated_at >= $4 \
                 AND (updated_at > $5 OR (updated_at = $5 AND id > $6)) \
                 AND ($8 IS NULL OR handler = $8) \
                 ORDER BY updated_at, id LIMIT +$7"
            ))
            .bind(q.company_id)
            .bind(q.agent_id)
            .bind(q.status)
            .bind(q.updated_since.unwrap_or(i64::MIN))
            .bind(after_at)
            .bind(after_id)
            .bind(q.limit)
            .bind(q.handler.map(Handler::as_str))
            .fetch_all(pool)
            .await
        })?)
    }

    /// Closes a conversation; closing a closed one changes nothing. None: no such id; the
    /// flag says whether it was open (this call closed it).
    pub async fn close_conversation(
        &self,
        id: &str,
        now_ms: i64,
    ) -> Result<Option<(Conversation, bool)>> {
        transaction!(self, |tx| {
            let closed = sqlx::query_as::<_, Conversation>(concat!(
                "UPDATE conversation SET status = 'closed', closed_at = $2, updated_at = $2 \
                 WHERE id = $1 AND status = 'open' RETURNING ",
                conversation_columns!()
            ))
            .bind(id)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            match closed {
                Some(closed) => {
                    let kind = "conversation.closed";
                    let event = event_id_for_conversation(id, kind);
                    // Queued only for a webhook agent.
                    let _queued = queue_event!(&mut *tx, &event, id, kind, None::<&str>, now_ms);
                    Some((closed, true))
                }
                None => sqlx::query_as::<_, Conversation>(conversation_select!("WHERE id = $1"))
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|c| (c, false)),
            }
        })
    }

    /// Moves an open conversation to `to` from either handler of `from`, and returns it;
    /// None when it is closed, missing, or with neither (nothing changed).
    pub async fn hand_conversation(
        &self,
        id: &str,
        from: [Handler; 2],
        to: Handler,
        now_ms: i64,
    ) -> Result<Option<Conversation>> {
        transaction!(self, |tx| {
            sqlx::query_as::<_, Conversation>(concat!(
                "UPDATE conversation SET handler = $2, updated_at = $3 \
                 WHERE id = $1 AND status = 'open' \
                   AND handler IN ($4, $5) RETURNING ",
                conversation_columns!()
            ))
            .bind(id)
            .bind(to.as_str())
            .bind(now_ms)
            .bind(from[0].as_str())
            .bind(from[1].as_str())
            .fetch_optional(&mut *tx)
            .await?
        })
    }

    /// Records that `side` read up to `seq` (never backwards, never past the last message).
    pub async fn mark_read(&self, id: &str, side: Side, seq: i64) -> Result<()> {
        transaction!(self, |tx| {
            let query = match side {
                Side::User => sqlx::query(
                    "UPDATE conversation \
                     SET user_read_seq = CASE WHEN $2 < last_seq THEN $2 ELSE last_seq END \
                     WHERE id = $1 AND user_read_seq < $2",
                ),
                Side::Agent => sqlx::query(
                    "UPDATE conversation \
                     SET agent_read_seq = CASE WHEN $2 < last_seq THEN $2 ELSE last_seq END \
                     WHERE id = $1 AND agent_read_seq < $2",
                ),
            };
            query.bind(id).bind(seq).execute(&mut *tx).await?;
        })
    }
}
