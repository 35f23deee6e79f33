//! Conversations and messages: open, list, read history, send, mark read, close.

use super::rules::{ClientMessageId, MessageText, SenderKind};
use crate::app::AppState;
use crate::auth::jwt::Claims;
use crate::db::{
    Appended, AuditEvent, Conversation, ConversationQuery, Entity, Grow, Growth, Handler, Message,
    NewMessage, Side, StoreError, Window,
};
use crate::error::{Error, Result};
use crate::token::Caller;

/// The end user a chat token names: one user of one company, talking with one agent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatUser {
    pub company_id: String,
    pub user_id: String,
    pub agent_id: String,
}

impl From<&Claims> for ChatUser {
    fn from(c: &Claims) -> Self {
        ChatUser {
            company_id: c.company_id.clone(),
            user_id: c.sub.clone(),
            agent_id: c.agent_id.clone(),
        }
    }
}

/// How many messages `open` returns.
pub const OPEN_MESSAGES: i64 = 50;

/// The one answer for a conversation the caller may not see and for an id nobody has, so
/// that ids of other tenants cannot be probed.
fn no_such_conversation() -> Error {
    Error::NotFound("no such conversation".to_owned())
}

/// Opens the user's conversation with the token's agent, or resumes the open one; with its
/// newest messages, oldest first.
pub async fn open(state: &AppState, user: &ChatUser) -> Result<(Conversation, Vec<Message>)> {
    let now = state.clock.now_ms();
    // Closed between a conflict and its read: open again (once is enough in practice).
    let mut attempt = 0;
    let (conversation, created) = loop {
        let new_id = format!("conv_{}", cuid2::create_id());
        match state
            .db
            .open_conversation(
                &user.company_id,
                &user.agent_id,
                &user.user_id,
                &new_id,
                now,
            )
            .await
        {
            Err(StoreError::NotFound(Entity::Conversation, _)) if attempt < 3 => attempt += 1,
            other => break other?,
        }
    };
    if created {
        audit(state, "conversation.opened", &conversation, None, now).await?;
        // A webhook agent hears of it (if it is one, the event was queued with it).
        state.agents.wake();
    }
    let (mut messages, _) = state
        .db
        .list_messages(&conversation.id, Window::Latest, OPEN_MESSAGES)
        .await?;
    state.chat.live.fill(&mut messages);
    Ok((conversation, messages))
}

/// The user's conversations with the token's agent, newest first.
pub async fn list_for_user(
    state: &AppState,
    user: &ChatUser,
    before: Option<(i64, &str)>,
    limit: i64,
) -> Result<Vec<Conversation>> {
    Ok(state
        .db
        .list_user_conversations(&user.user_id, &user.agent_id, before, limit)
        .await?)
}

/// A conversation of this user with the token's agent.
pub async fn user_conversation(
    state: &AppState,
    user: &ChatUser,
    id: &str,
) -> Result<Conversation> {
    state
        .db
        .find_conversation(id)
        .await?
        .filter(|c| {
            c.company_id == user.company_id
                && c.user_id == user.user_id
                && c.agent_id == user.agent_id
        })
        .ok_or_else(no_such_conversation)
}

/// A conversation of the caller's company.
pub async fn company_conversation(
    state: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<Conversation> {
    state
        .db
        .find_conversation(id)
        .await?
        .filter(|c| c.company_id == caller.company_id)
        .ok_or_else(no_such_conversation)
}

/// A company's conversations by last change, oldest first.
pub async fn list_for_company(
    state: &AppState,
    query: &ConversationQuery<'_>,
) -> Result<Vec<Conversation>> {
    Ok(state.db.list_company_conversations(query).await?)
}

/// At most `limit` messages of `window`, oldest first, and whether there are more.
pub async fn history(
    state: &AppState,
    conversation: &Conversation,
    window: Window,
    limit: i64,
) -> Result<(Vec<Message>, bool)> {
    let (mut messages, more) = state
        .db
        .list_messages(&conversation.id, window, limit)
        .await?;
    // A streamed reply mid-way: with the text pushed since its last checkpoint.
    state.chat.live.fill(&mut messages);
    Ok((messages, more))
}

/// A stored message, and whether it had been stored before (the same clientMessageId).
pub struct Sent {
    pub message: Message,
    pub duplicate: bool,
}

/// Stores a message, committed before this returns. The same `client_message_id` again
/// gives the stored message, never a second one. `streaming` starts a streamed reply: a
/// message with status `streaming` and the text so far (perhaps empty), which [`grow`]
/// extends and finishes.
pub async fn send(
    state: &AppState,
    conversation: &Conversation,
    sender: SenderKind,
    sender_name: Option<&str>,
    client_message_id: &ClientMessageId,
    text: &MessageText,
    streaming: bool,
) -> Result<Sent> {
    if sender == SenderKind::User
        && let Err(wait) = state.limits.chat_send(&conversation.user_id)
    {
        return Err(Error::RateLimited {
            message: "sending too many messages per second: slow down",
            retry_after_s: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        });
    }
    let id = message_id(state.clock.now_ms());
    let new = NewMessage {
        id: &id,
        conversation_id: &conversation.id,
        client_message_id: client_message_id.as_str(),
        sender_kind: sender.as_str(),
        sender_name,
        text: text.as_str(),
        status: if streaming { "streaming" } else { "complete" },
        now_ms: state.clock.now_ms(),
    };
    match state.db.append_message(&new).await {
        Ok(Appended {
            message,
            duplicate,
            event_queued,
        }) => {
            if !duplicate {
                state
                    .metrics
                    .chat_messages
                    .get_or_create(&crate::metrics::NameLabels {
                        name: sender.as_str(),
                    })
                    .inc();
                // Committed: every socket of the user hears of it, here and on the other
                // instances (the sender's own too, after its ack).
                super::fanout::committed(state, conversation, &message);
                if event_queued {
                    // A webhook agent's event: the worker sends it now, and the user sees
                    // the agent thinking unless a person handles the conversation.
                    state.agents.wake();
                    if conversation.handler == Handler::Bot.as_str() {
                        super::fanout::agent_state(state, conversation, "thinking");
                    }
                }
                // A person's reply takes the conversation, unless it is theirs already (the
                // caller read it for this request: no write for the common case).
                if sender == SenderKind::Operator
                    && conversation.handler != Handler::Human.as_str()
                    && let Err(e) = taken_by_person(state, conversation).await
                {
                    // Stored and delivered: the handler follows at the next reply.
                    tracing::warn!(error = %e, "cannot hand the conversation to the person");
                }
            }
            Ok(Sent { message, duplicate })
        }
        Err(StoreError::NotFound(Entity::Conversation, _)) => Err(Error::ConversationClosed),
        Err(e) => Err(e.into()),
    }
}

/// How a streamed reply ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Finish {
    Complete,
    Failed,
}

impl Finish {
    pub fn as_str(self) -> &'static str {
        match self {
            Finish::Complete => "complete",
            Finish::Failed => "failed",
        }
    }
}

/// Appends `append` to a streamed reply of the conversation, and finishes it if asked. The
/// chunk is stored, then reaches the user's sockets as a `delta`; the finished reply as its
/// final `message`.
pub async fn grow(
    state: &AppState,
    conversation: &Conversation,
    message_id: &str,
    append: &MessageText,
    finish: Option<Finish>,
) -> Result<Message> {
    let message = store_growth(state, conversation, message_id, append, finish, None).await?;
    super::fanout::grown(state, conversation, &message, append.as_str());
    Ok(message)
}

/// A streamed reply's text already pushed ([`stream_ahead`]) reaches the database: `unsaved`
/// is appended (and the reply finished, with its token `usage`, if asked; its final
/// `message` then reaches the user's sockets).
pub async fn checkpoint(
    state: &AppState,
    conversation: &Conversation,
    message_id: &str,
    unsaved: &MessageText,
    finish: Option<Finish>,
    usage: Option<(i64, i64)>,
) -> Result<Message> {
    let message = store_growth(state, conversation, message_id, unsaved, finish, usage).await?;
    super::fanout::grown(state, conversation, &message, "");
    Ok(message)
}

/// Pushes the next `text` of a streamed reply (`offset` characters into it) to the user's
/// sockets before it is stored: a reader mid-reply gets it from `ChatState::live` until a
/// [`checkpoint`] stores it. For replies that stream faster than each piece can be stored
/// (an LLM's): what a crash loses is the text since the last checkpoint, and the reply ends
/// `failed` with the text stored.
pub fn stream_ahead(
    state: &AppState,
    conversation: &Conversation,
    message: &Message,
    offset: usize,
    text: &str,
) {
    super::fanout::delta(state, conversation, message, offset, text);
}

async fn store_growth(
    state: &AppState,
    conversation: &Conversation,
    message_id: &str,
    append: &MessageText,
    finish: Option<Finish>,
    usage: Option<(i64, i64)>,
) -> Result<Message> {
    let grow = Grow {
        append: append.as_str(),
        finish: finish.map(Finish::as_str),
        usage,
        max_chars: super::rules::MAX_TEXT_CHARS as i64,
        now_ms: state.clock.now_ms(),
    };
    match state
        .db
        .grow_message(&conversation.id, message_id, &grow)
        .await
    {
        Ok(Growth::Grew(message)) => Ok(message),
        Ok(Growth::Finished(message)) => Err(Error::MessageNotStreaming(message.status)),
        Ok(Growth::TooLong) => Err(Error::invalid(format!(
            "append would make the message longer than {} characters",
            super::rules::MAX_TEXT_CHARS
        ))),
        Err(StoreError::NotFound(Entity::Message, _)) => {
            Err(Error::NotFound("no such message".to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

/// Finishes as `failed`, with the text they have, the streamed replies that have not grown
/// for `idle_ms`, and tells the user's sockets. Returns how many. Run periodically.
pub async fn fail_idle_streams(state: &AppState, idle_ms: i64) -> Result<usize> {
    let failed = state
        .db
        .fail_idle_streams(state.clock.now_ms() - idle_ms)
        .await?;
    for message in &failed {
        if let Some(conversation) = state.db.find_conversation(&message.conversation_id).await? {
            super::fanout::grown(state, &conversation, message, "");
        }
    }
    Ok(failed.len())
}

/// A new message id: the time in milliseconds (hex), then 12 random characters. Ids made
/// after one another sort after one another, so each insert lands on the last page of the
/// id index, where random ids each dirtied a page of their own in every commit.
fn message_id(now_ms: i64) -> String {
    format!("msg_{:011x}{}", now_ms.max(0), crate::ids::random(12))
}

/// Records how far `side` has read.
pub async fn mark_read(
    state: &AppState,
    conversation: &Conversation,
    side: Side,
    seq: i64,
) -> Result<()> {
    if seq < 0 || seq > conversation.last_seq {
        return Err(Error::invalid(format!(
            "seq must be from 0 to the conversation's last seq ({})",
            conversation.last_seq
        )));
    }
    Ok(state.db.mark_read(&conversation.id, side, seq).await?)
}

/// The agent (or a person answering for it) started or stopped typing: the user's sockets
/// hear of it, on every instance. Nothing is stored.
pub fn agent_typing(state: &AppState, conversation: &Conversation, typing: bool) {
    super::fanout::typing(state, conversation, typing);
}

/// The user started or stopped typing: the company's feeds hear of it, on every instance.
/// Nothing is stored.
pub fn user_typing(state: &AppState, conversation: &Conversation, typing: bool) {
    super::fanout::user_typing(state, conversation, typing);
}

/// Closes a conversation for good (the user's next `open` starts a new one).
pub async fn close(
    state: &AppState,
    caller: &Caller,
    conversation: &Conversation,
) -> Result<Conversation> {
    let now = state.clock.now_ms();
    let (closed, was_open) = state
        .db
        .close_conversation(&conversation.id, now)
        .await?
        .ok_or_else(no_such_conversation)?;
    if was_open {
        super::fanout::closed(state, &closed);
        state.agents.wake();
        audit(
            state,
            "conversation.closed",
            &closed,
            Some(&caller.key_id),
            now,
        )
        .await?;
    }
    Ok(closed)
}

/// What the user reads when their conversation is handed to a person.
const HANDOFF_TEXT: &str = "You're being connected to a person, who will reply here.";

/// Hands an open conversation to a person: it waits for one (`waiting_human`, which the
/// company lists), and the user's sockets show it (`agent_state` `handoff`, and a `system`
/// message saying so). One already with a person, or waiting for one, stays as it is.
pub async fn hand_off(
    state: &AppState,
    caller: &Caller,
    conversation: &Conversation,
) -> Result<Conversation> {
    let handed = hand_to_person(state, Some(&caller.key_id), conversation, HANDOFF_TEXT).await?;
    still_open(state, conversation, handed).await
}

/// Moves a conversation from its agent to waiting for a person, and tells the user in
/// `text` (a `system` message) if it moved.
async fn hand_to_person(
    state: &AppState,
    key_id: Option<&str>,
    conversation: &Conversation,
    text: &str,
) -> Result<Option<Conversation>> {
    let handed = hand(
        state,
        key_id,
        conversation,
        [Handler::Bot, Handler::Bot],
        Handler::WaitingHuman,
    )
    .await?;
    if let Some(handed) = &handed {
        let text = MessageText::parse("text", text).expect("a valid text");
        let id = ClientMessageId::generate();
        send(state, handed, SenderKind::System, None, &id, &text, false).await?;
    }
    Ok(handed)
}

/// What the user reads when their agent failed to answer and a person will.
const AGENT_FAILED_TEXT: &str = "The assistant can't answer right now. You're being connected to a person, who will reply here.";

/// The agent failed to answer (its webhook gave up or is gone, its LLM failed): the user's
/// sockets get `agent_state` `error`, then, if `hand_off`, the conversation waits for a
/// person (`handoff`, with a `system` message saying so). Nothing changes for a
/// conversation that is closed, gone, or already with a person.
pub async fn agent_failed(state: &AppState, conversation_id: &str, hand_off: bool) -> Result<()> {
    let Some(conversation) = state.db.find_conversation(conversation_id).await? else {
        return Ok(());
    };
    if !conversation.is_open() || conversation.handler != Handler::Bot.as_str() {
        return Ok(());
    }
    super::fanout::agent_state(state, &conversation, "error");
    if hand_off {
        hand_to_person(state, None, &conversation, AGENT_FAILED_TEXT).await?;
    }
    Ok(())
}

/// What became of a bot's answer.
#[derive(Debug, Default)]
pub struct BotReplied {
    /// Replies stored and delivered (or stored by an earlier attempt of the same event).
    pub delivered: usize,
    /// Why some or all of it was not delivered.
    pub not_delivered: Option<String>,
}

/// A bot's answer to an event of the conversation: each text becomes the agent's message
/// (its `clientMessageId` made from the event id and its place, so that the same answer
/// again stores nothing twice), and `handoff` hands the conversation to a person. While a
/// person handles the conversation (or it waits for one) nothing is delivered.
pub async fn bot_replied(
    state: &AppState,
    conversation_id: &str,
    event_id: &str,
    agent_name: &str,
    texts: &[String],
    handoff: bool,
) -> Result<BotReplied> {
    let mut outcome = BotReplied::default();
    let Some(conversation) = state.db.find_conversation(conversation_id).await? else {
        return Ok(outcome);
    };
    if !conversation.is_open() {
        outcome.not_delivered = Some("the conversation is closed".to_owned());
        return Ok(outcome);
    }
    if conversation.handler != Handler::Bot.as_str() {
        outcome.not_delivered = Some(format!(
            "a person handles the conversation ({})",
            conversation.handler
        ));
        return Ok(outcome);
    }
    let mut invalid = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        let text = match MessageText::parse(&format!("replies[{i}].text"), text) {
            Ok(text) => text,
            Err(e) => {
                invalid.push(e);
                continue;
            }
        };
        let id = ClientMessageId::parse(&format!("{event_id}.{i}"))
            .expect("event ids are letters, digits and '_'");
        match send(
            state,
            &conversation,
            SenderKind::Agent,
            Some(agent_name),
            &id,
            &text,
            false,
        )
        .await
        {
            Ok(_) => outcome.delivered += 1,
            Err(Error::ConversationClosed) => {
                invalid.push("the conversation closed meanwhile".to_owned());
                break;
            }
            Err(e) => return Err(e),
        }
    }
    if handoff {
        hand_to_person(state, None, &conversation, HANDOFF_TEXT).await?;
    }
    if !invalid.is_empty() {
        outcome.not_delivered = Some(invalid.join("; "));
    }
    Ok(outcome)
}

/// Gives a conversation back to its agent from a person (or from waiting for one): the
/// user's sockets get `agent_state` `bot`. One with its agent stays as it is.
pub async fn release(
    state: &AppState,
    caller: &Caller,
    conversation: &Conversation,
) -> Result<Conversation> {
    let released = hand(
        state,
        Some(&caller.key_id),
        conversation,
        [Handler::WaitingHuman, Handler::Human],
        Handler::Bot,
    )
    .await?;
    still_open(state, conversation, released).await
}

/// Moves a conversation from either handler of `from` to `to`; if it moved, tells the
/// user's sockets (`agent_state`) and the audit trail, and returns it.
async fn hand(
    state: &AppState,
    key_id: Option<&str>,
    conversation: &Conversation,
    from: [Handler; 2],
    to: Handler,
) -> Result<Option<Conversation>> {
    let now = state.clock.now_ms();
    let Some(moved) = state
        .db
        .hand_conversation(&conversation.id, from, to, now)
        .await?
    else {
        return Ok(None);
    };
    let (word, kind) = match to {
        Handler::WaitingHuman => ("handoff", "conversation.handed_off"),
        Handler::Human => ("human", "conversation.taken"),
        Handler::Bot => ("bot", "conversation.released"),
    };
    super::fanout::agent_state(state, &moved, word);
    audit(state, kind, &moved, key_id, now).await?;
    Ok(Some(moved))
}

/// A person's first reply takes the conversation (`human`): the user's sockets get
/// `agent_state` `human`.
async fn taken_by_person(state: &AppState, conversation: &Conversation) -> Result<()> {
    let from = [Handler::Bot, Handler::WaitingHuman];
    hand(state, None, conversation, from, Handler::Human).await?;
    Ok(())
}

/// The conversation as a move left it, or, when nothing moved, as it is now if still open.
async fn still_open(
    state: &AppState,
    conversation: &Conversation,
    moved: Option<Conversation>,
) -> Result<Conversation> {
    if let Some(moved) = moved {
        return Ok(moved);
    }
    match state.db.find_conversation(&conversation.id).await? {
        Some(c) if c.is_open() => Ok(c),
        Some(_) => Err(Error::ConversationClosed),
        None => Err(no_such_conversation()),
    }
}

/// Records what happened to a conversation in the audit trail (its id in `detail`).
async fn audit(
    state: &AppState,
    kind: &str,
    conversation: &Conversation,
    key_id: Option<&str>,
    now: i64,
) -> Result<()> {
    state
        .audit
        .record(AuditEvent {
            at: now,
            kind: kind.to_owned(),
            outcome: "ok".to_owned(),
            company_id: conversation.company_id.clone(),
            key_id: key_id.map(str::to_owned),
            user_id: Some(conversation.user_id.clone()),
            agent_id: Some(conversation.agent_id.clone()),
            detail: Some(conversation.id.clone()),
            ..AuditEvent::default()
        })
        .await
}
