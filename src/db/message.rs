//! Messages of a conversation, numbered 1, 2, 3… by `seq` in commit order, each unique by its
//! sender's `client_message_id` within the conversation.

use super::{Db, Entity, Result, StoreError};

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
}

macro_rules! message_columns {
    () => {
        "id, conversation_id, seq, client_message_id, sender_kind, sender_name, text, status, \
         created_at"
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

impl Db {
    /// Stores a message in an open conversation with the next seq, committed before this
    /// returns. The same `client_message_id` again gives the stored message and `true`
    /// (a duplicate), never a second row. A conversation that is closed or missing is
    /// `NotFound(Conversation)`.
    pub async fn append_message(&self, m: &NewMessage<'_>) -> Result<(Message, bool)> {
        let stored = transaction!(self, |tx| {
            // Taking the seq locks the conversation's row until commit: concurrent senders
            // queue here, so seqs are gapless and in commit order.
            let seq = sqlx::query_scalar::<_, i64>(
                "UPDATE conversation SET last_seq = last_seq + 1, updated_at = $2 \
                 WHERE id = $1 AND status = 'open' RETURNING last_seq",
            )
            .bind(m.conversation_id)
            .bind(m.now_ms)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| {
                StoreError::NotFound(Entity::Conversation, m.conversation_id.to_owned())
            })?;
            sqlx::query_as::<_, Message>(concat!(
                "INSERT INTO message (id, conversation_id, seq, client_message_id, sender_kind, \
                 sender_name, text, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (conversation_id, client_message_id) DO NOTHING RETURNING ",
                message_columns!()
            ))
            .bind(m.id)
            .bind(m.conversation_id)
            .bind(seq)
            .bind(m.client_message_id)
            .bind(m.sender_kind)
            .bind(m.sender_name)
            .bind(m.text)
            .bind(m.status)
            .bind(m.now_ms)
            .fetch_optional(&mut *tx)
            .await?
            // A duplicate: undo the seq (the whole transaction rolls back).
            .ok_or_else(|| StoreError::Conflict(Entity::Message, m.client_message_id.to_owned()))?
        });
        match stored {
            Ok(message) => Ok((message, false)),
            Err(StoreError::Conflict(..) | StoreError::NotFound(..)) => {
                // Sent before (perhaps before the conversation closed): the stored one.
                match self
                    .find_message_by_client_id(m.conversation_id, m.client_message_id)
                    .await?
                {
                    Some(message) => Ok((message, true)),
                    None => Err(StoreError::NotFound(
                        Entity::Conversation,
                        m.conversation_id.to_owned(),
                    )),
                }
            }
            Err(e) => Err(e),
        }
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
                    " FROM message WHERE conversation_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"
                ))
            } else {
                sqlx::query_as::<_, Message>(concat!(
                    "SELECT ",
                    message_columns!(),
                    " FROM message WHERE conversation_id = $1 AND seq < $2 \
                     ORDER BY seq DESC LIMIT $3"
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
