//! `GET /rest/v1/chat/ws`: the chat over one WebSocket, as `docs/chat-protocol.md` describes
//! it. JSON text frames, one object each; the first must be `auth` (the token never travels
//! in the URL, which lands in access logs). This file is the transport: it reads and writes
//! frames and calls the chat's operations, which the REST handlers call too.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message as Frame, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Map, Value};

use super::chat::{ConversationBody, MessageBody, client_message_id, required_text, window_of};
use super::me::{MeResponse, describe};
use crate::app::AppState;
use crate::auth::jwt::Claims;
use crate::chat::hub::{Control, Push, Socket};
use crate::chat::rules::{self, SenderKind};
use crate::chat::{self, ChatUser};
use crate::clock::rfc3339_s;
use crate::db::{Conversation, Side};
use crate::error::Error;
use crate::token::{self, Death};

/// The largest frame a client may send; a larger one closes the socket with 1009.
const MAX_FRAME: usize = 64 * 1024;
const AUTH_WITHIN: Duration = Duration::from_secs(10);
/// How often the same `typing` state is passed on again at most.
const TYPING_REPEAT: Duration = Duration::from_secs(3);
/// What a socket reads at once. A frame longer than what is buffered makes room for its
/// whole length on top, and the buffer keeps that room for the socket's life: the `auth`
/// frame (a JWT) grows it to about a kilobyte plus this. 256: one read for most client
/// frames, two for a long message.
const READ_BUFFER: usize = 256;
/// What a socket gathers before it writes (see `chat_socket`).
const WRITE_BUFFER: usize = 2048;
/// How long a closing socket waits for its client to take the close frame.
const CLOSE_WITHIN: Duration = Duration::from_secs(5);

/// Close codes (docs/chat-protocol.md), with the reason sent beside each.
pub mod close {
    pub const GOING_AWAY: (u16, &str) = (1001, "going_away");
    pub const TOO_BIG: (u16, &str) = (1009, "message_too_big");
    pub const TOKEN_EXPIRED: (u16, &str) = (4001, "token_expired");
    pub const TOKEN_REVOKED: (u16, &str) = (4002, "token_revoked");
    pub const ACCESS_REVOKED: (u16, &str) = (4003, "access_revoked");
    pub const TOKEN_INVALID: (u16, &str) = (4004, "token_invalid");
    pub const PROTOCOL_ERROR: (u16, &str) = (4008, "protocol_error");
    pub const TOO_SLOW: (u16, &str) = (4009, "too_slow");
    pub const UNAVAILABLE: (u16, &str) = (4013, "unavailable");

    pub fn reason(code: u16) -> &'static str {
        [
            GOING_AWAY,
            TOO_BIG,
            TOKEN_EXPIRED,
            TOKEN_REVOKED,
            ACCESS_REVOKED,
            TOKEN_INVALID,
            PROTOCOL_ERROR,
            TOO_SLOW,
            UNAVAILABLE,
        ]
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("", |(_, r)| r)
    }
}

fn close_for(death: Death) -> (u16, &'static str) {
    match death {
        Death::Invalid(_) => close::TOKEN_INVALID,
        Death::Expired => close::TOKEN_EXPIRED,
        Death::Revoked(_) => close::TOKEN_REVOKED,
        Death::AccessRevoked(_) => close::ACCESS_REVOKED,
        Death::Unavailable => close::UNAVAILABLE,
    }
}

/// Frames the server sends. Each reply carries the `id` of the frame it answers.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Out<'a> {
    Ready {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        #[serde(flatten)]
        me: MeResponse,
    },
    Conversation {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        conversation: ConversationBody,
        messages: Vec<MessageBody>,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        message: MessageBody,
        duplicate: bool,
    },
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        #[serde(rename = "conversationId")]
        conversation_id: &'a str,
        messages: Vec<MessageBody>,
        #[serde(rename = "hasMore")]
        has_more: bool,
    },
    Refreshed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        #[serde(rename = "expiresAt")]
        expires_at: String,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a Value>,
        code: &'a str,
        message: String,
        /// Seconds to wait, with `rate_limited`.
        #[serde(rename = "retryAfter", skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
    },
    Message {
        #[serde(rename = "conversationId")]
        conversation_id: &'a str,
        message: MessageBody,
    },
    Delta {
        #[serde(rename = "conversationId")]
        conversation_id: &'a str,
        #[serde(rename = "messageId")]
        message_id: &'a str,
        offset: usize,
        text: &'a str,
    },
    ConversationClosed {
        #[serde(rename = "conversationId")]
        conversation_id: &'a str,
    },
    Typing {
        #[serde(rename = "conversationId")]
        conversation_id: &'a str,
        state: &'a str,
    },
    AgentState {
        #[serde(rename = "conversationId")]
        conversation_id: &'a str,
        state: &'a str,
    },
    Expiring {
        #[serde(rename = "expiresAt")]
        expires_at: String,
    },
}

fn text(out: &Out<'_>) -> Frame {
    Frame::Text(Utf8Bytes::from(
        serde_json::to_string(out).expect("frames serialise"),
    ))
}

fn error_frame<'a>(id: Option<&'a Value>, e: &Error) -> Out<'a> {
    let (code, retry_after) = match e {
        Error::RateLimited { retry_after_s, .. } => ("rate_limited", Some(*retry_after_s)),
        Error::NotFound(_) => ("not_found", None),
        Error::ConversationClosed => ("conversation_closed", None),
        Error::Unavailable => ("unavailable", None),
        Error::TokenInvalid(_) | Error::TokenExpired | Error::TokenRevoked(_) => {
            ("token_invalid", None)
        }
        Error::Internal(_) => ("internal", None),
        _ => ("invalid_request", None),
    };
    if let Error::Internal(cause) = e {
        tracing::error!(error = %format!("{cause:#}"), "chat socket request failed");
    }
    Out::Error {
        id,
        code,
        message: e.client_message(),
        retry_after,
    }
}

/// Upgrades to the chat socket, with small buffers: an idle socket should cost kilobytes,
/// and axum's defaults are 128 KiB each way. The read buffer is what tungstenite reads at
/// once (a longer frame is read in several reads), allocated for every socket up front.
pub async fn chat_socket(State(state): State<AppState>, upgrade: WebSocketUpgrade) -> Response {
    upgrade
        .read_buffer_size(READ_BUFFER)
        // Frames fed together leave in one write (an ack and the sender's own message, a
        // burst of pushes); the buffer keeps what it grew to, so it stays small.
        .write_buffer_size(WRITE_BUFFER)
        .max_write_buffer_size(1024 * 1024)
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| session(state, socket))
}

async fn send(socket: &mut WebSocket, out: &Out<'_>) -> bool {
    socket.send(text(out)).await.is_ok()
}

/// Queues a frame without flushing: the caller flushes once it has fed what leaves together.
async fn feed(socket: &mut WebSocket, out: &Out<'_>) -> bool {
    use futures_util::SinkExt as _;
    socket.feed(text(out)).await.is_ok()
}

async fn flush(socket: &mut WebSocket) -> bool {
    use futures_util::SinkExt as _;
    socket.flush().await.is_ok()
}

async fn close_with(socket: &mut WebSocket, (code, reason): (u16, &str)) {
    let _ = socket
        .send(Frame::Close(Some(CloseFrame {
            code,
            reason: Utf8Bytes::from(reason),
        })))
        .await;
}

/// A client frame: its `type`, its optional `id`, its other fields.
type ClientFrame = (String, Option<Value>, Map<String, Value>);

/// One client frame; `Err` for what is not one JSON object (or repeats a key).
fn parse(frame: &str) -> Result<ClientFrame, Error> {
    let mut map = super::parse_object(frame.as_bytes())?;
    let id = map.remove("id").filter(|v| v.is_number() || v.is_string());
    let kind = match map.remove("type") {
        Some(Value::String(t)) => t,
        _ => return Err(Error::invalid("a frame needs a string \"type\"")),
    };
    Ok((kind, id, map))
}

fn string<'a>(fields: &'a Map<String, Value>, name: &str) -> Result<&'a str, Error> {
    match fields.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s),
        None | Some(Value::Null) => Err(Error::invalid(format!("{name} is required"))),
        Some(_) => Err(Error::invalid(format!("{name} must be a non-empty string"))),
    }
}

fn integer(fields: &Map<String, Value>, name: &str) -> Result<Option<i64>, Error> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n >= 0) => Ok(n.as_i64()),
        Some(_) => Err(Error::invalid(format!(
            "{name} must be an integer of at least 0"
        ))),
    }
}

/// The socket's whole life, as one task. Its future is what every idle socket keeps, so
/// its layout is watched: an async block rather than an `async fn` (whose arguments were
/// stored twice, as arguments and as locals); no local kept across two waits beside `Live`
/// (rustc reserves such a local's room for the whole life); what runs once, or only while a
/// frame or a signal is handled, boxed (it was 11 KiB unboxed, 2 KiB as an `async fn`; the
/// task is now 1 KiB, the socket's stream a third of it). Its timers are the hub's
/// (`Hub::fire_due_timers`): a tokio `Sleep` would be 112 bytes more.
#[expect(
    clippy::manual_async_fn,
    reason = "an async fn stores its arguments twice"
)]
fn session(state: AppState, mut socket: WebSocket) -> impl Future<Output = ()> + Send {
    async move {
        let Some((claims, Socket { id, control })) = Box::pin(enter(&state, &mut socket)).await
        else {
            return;
        };
        let mut live = Live {
            state: &state,
            claims,
            socket_id: id,
            expiring_sent: false,
            known: None,
            last_typing: None,
            control,
        };
        let code = live.run(&mut socket).await;
        let hub = &state.chat.hub;
        hub.leave(live.socket_id);
        if let Some(code) = code {
            state.metrics.chat_closed(code.0);
            // Bounded: a client too slow to read (4009) may never take the close frame.
            let closing = tokio::time::timeout(CLOSE_WITHIN, close_with(&mut socket, code));
            let _ = Box::pin(closing).await;
        }
        hub.gone(&live.control);
    }
}

/// Authenticates the socket and registers it in the hub; closes it on failure.
async fn enter(state: &AppState, socket: &mut WebSocket) -> Option<(Claims, Socket)> {
    let claims = authenticate(state, socket).await?;
    // Read before joining: what is committed after the read reaches the socket either way
    // (pushed, or read to fill the gap it leaves).
    let seqs = state
        .db
        .open_conversation_seqs(&claims.sub, &claims.agent_id)
        .await;
    let Ok(open_seqs) = seqs else {
        state.metrics.chat_closed(close::UNAVAILABLE.0);
        close_with(socket, close::UNAVAILABLE).await;
        return None;
    };
    let joined = state.chat.hub.join(&claims, open_seqs);
    Some((claims, joined))
}

/// Waits for the `auth` frame and answers `ready`; closes the socket on anything else.
async fn authenticate(state: &AppState, socket: &mut WebSocket) -> Option<Claims> {
    let first = match tokio::time::timeout(AUTH_WITHIN, socket.recv()).await {
        Err(_) => {
            close_with(socket, close::PROTOCOL_ERROR).await;
            return None;
        }
        Ok(None) | Ok(Some(Err(_))) => return None,
        Ok(Some(Ok(frame))) => frame,
    };
    let Frame::Text(frame) = first else {
        close_with(socket, close::PROTOCOL_ERROR).await;
        return None;
    };
    let (id, fields) = match parse(frame.as_str()) {
        Ok((kind, id, fields)) if kind == "auth" => (id, fields),
        _ => {
            close_with(socket, close::PROTOCOL_ERROR).await;
            return None;
        }
    };
    let checked = match fields.get("token") {
        Some(Value::String(t)) => {
            token::decode(state, t).and_then(|c| token::check_alive(state, &c).map(|()| c))
        }
        _ => Err(Death::Invalid("the auth frame needs a token")),
    };
    let claims = match checked {
        Ok(claims) => claims,
        Err(death) => {
            state.metrics.chat_closed(close_for(death).0);
            close_with(socket, close_for(death)).await;
            return None;
        }
    };
    match describe(state, claims.clone()).await {
        Ok(me) => {
            if !send(
                socket,
                &Out::Ready {
                    id: id.as_ref(),
                    me,
                },
            )
            .await
            {
                return None;
            }
        }
        Err(e) => {
            let code = match e {
                Error::Unavailable => close::UNAVAILABLE,
                _ => close::TOKEN_INVALID,
            };
            close_with(socket, code).await;
            return None;
        }
    }
    Some(claims)
}

async fn refuse_binary(socket: &mut WebSocket) -> bool {
    let e = Error::invalid("frames are JSON text, not binary");
    send(socket, &error_frame(None, &e)).await
}

/// What a client frame gets back.
enum Reply<'a> {
    Frame(Box<Out<'a>>),
    /// `typing` and `read` get no reply.
    None,
    /// `refresh` changes the socket itself.
    Refresh,
}

fn reply(out: Out<'_>) -> Reply<'_> {
    Reply::Frame(Box::new(out))
}

/// The user's conversation `id`, from `known` when it is the one kept there (who owns a
/// conversation never changes, and whether it is still open the store checks itself), else
/// read and kept.
async fn known_conversation<'k>(
    known: &'k mut Option<Box<Conversation>>,
    state: &AppState,
    user: &ChatUser,
    id: &str,
) -> Result<&'k Conversation, Error> {
    if known.as_ref().is_none_or(|c| c.id != id) {
        *known = Some(Box::new(chat::user_conversation(state, user, id).await?));
    }
    Ok(known.as_deref().expect("kept above"))
}

/// What a socket's loop does next.
enum Step {
    Go,
    /// Close, with this code if any.
    End(Option<(u16, &'static str)>),
}

/// A socket's ping clock, in milliseconds of `Hub::now_ms`.
struct Timing {
    /// When the client last sent a frame.
    last_heard: u64,
    next_ping: u64,
}

/// An authenticated socket.
struct Live<'a> {
    state: &'a AppState,
    claims: Claims,
    socket_id: u64,
    expiring_sent: bool,
    /// The conversation of the last `send` or `typing`, so that the next one reads nothing.
    known: Option<Box<Conversation>>,
    /// The last `typing` passed on: conversation, state, when.
    last_typing: Option<Box<(String, bool, tokio::time::Instant)>>,
    control: Arc<Control>,
}

impl Live<'_> {
    fn user(&self) -> ChatUser {
        ChatUser::from(&self.claims)
    }

    /// When to warn that the token expires: a minute before, or at 80 % of a short lifetime.
    fn expiring_at_ms(&self) -> i64 {
        let c = &self.claims;
        let eighty_percent = c.iat * 1000 + (c.exp - c.iat) * 800;
        ((c.exp - 60) * 1000).max(eighty_percent)
    }

    /// Milliseconds from now to the token's next deadline (the expiring warning, or the
    /// expiry). A deadline already passed waits 50 ms: the check it triggers closes the
    /// socket or moves the deadline, and this keeps a socket from spinning if neither
    /// happened.
    fn next_deadline_ms(&self) -> u64 {
        let now = self.state.clock.now_ms();
        let at = if self.expiring_sent {
            // The token dies once `exp` plus the allowed clock difference has passed.
            (self.claims.exp + i64::from(self.state.settings.token_leeway)) * 1000
        } else {
            self.expiring_at_ms()
        };
        (at - now).max(50) as u64
    }

    /// Checks the token again: a close code if it is dead; sends `expiring` when due.
    async fn recheck(&mut self, socket: &mut WebSocket) -> Result<(), (u16, &'static str)> {
        token::check_alive(self.state, &self.claims).map_err(close_for)?;
        self.state.chat.hub.checked_once(&self.control);
        if !self.expiring_sent && self.state.clock.now_ms() >= self.expiring_at_ms() {
            self.expiring_sent = true;
            let out = Out::Expiring {
                expires_at: rfc3339_s(self.claims.exp),
            };
            if !send(socket, &out).await {
                return Err(close::GOING_AWAY);
            }
        }
        Ok(())
    }

    /// Serves the socket until it closes; the close code to send, if any. What an idle
    /// socket waits in is kept small: a frame, or a signal, is handled in a future of its own.
    async fn run(&mut self, socket: &mut WebSocket) -> Option<(u16, &'static str)> {
        let now = self.state.chat.hub.now_ms();
        let mut timing = Timing {
            last_heard: now,
            next_ping: now + self.ping_every_ms(),
        };
        loop {
            if let Some(code) = self.control.close_code() {
                return Some((code, close::reason(code)));
            }
            // The next ping or the token's next deadline, whichever comes first; the hub's
            // timer signals the socket then.
            let now = self.state.chat.hub.now_ms();
            self.control
                .set_timer(timing.next_ping.min(now + self.next_deadline_ms()));
            let frame = tokio::select! {
                frame = socket.recv() => Some(frame),
                _ = self.control.signalled() => None,
            };
            let step = match frame {
                Some(frame) => {
                    timing.last_heard = self.state.chat.hub.now_ms();
                    Box::pin(self.on_frame(socket, frame)).await
                }
                None => Box::pin(self.on_signal(socket, &mut timing)).await,
            };
            if let Step::End(code) = step {
                return code;
            }
        }
    }

    fn ping_every_ms(&self) -> u64 {
        u64::from(self.state.settings.chat_ping_interval.max(1)) * 1000
    }

    /// A frame from the client (`None`: the connection ended).
    async fn on_frame(
        &mut self,
        socket: &mut WebSocket,
        frame: Option<Result<Frame, axum::Error>>,
    ) -> Step {
        match frame {
            None => Step::End(None),
            Some(Err(e)) => {
                // tungstenite refuses an oversized frame before handing it over; axum's
                // error hides its kind, so its text tells.
                let text = e.to_string();
                let too_big = text.contains("too long") || text.contains("too big");
                Step::End(too_big.then_some(close::TOO_BIG))
            }
            Some(Ok(Frame::Text(t))) => {
                if let Err(code) = self.recheck(socket).await {
                    return Step::End(Some(code));
                }
                let control = self.control.clone();
                tokio::select! {
                    open = self.answer(socket, t.as_str()) => if !open {
                        return Step::End(None);
                    },
                    // A client that sends but never reads: see `on_signal`.
                    _ = control.closing() => {}
                }
                Step::Go
            }
            Some(Ok(Frame::Binary(_))) => match refuse_binary(socket).await {
                true => Step::Go,
                false => Step::End(None),
            },
            Some(Ok(Frame::Close(_))) => Step::End(None),
            Some(Ok(Frame::Ping(_) | Frame::Pong(_))) => Step::Go,
        }
    }

    /// The socket was signalled: pushes queued, a token check asked for, its timer due, or
    /// a close code set (which the loop reads).
    async fn on_signal(&mut self, socket: &mut WebSocket, timing: &mut Timing) -> Step {
        let timer = self.control.take_timer();
        if (self.control.take_recheck() || timer)
            && let Err(code) = self.recheck(socket).await
        {
            return Step::End(Some(code));
        }
        let now = self.state.chat.hub.now_ms();
        if timer && now >= timing.next_ping {
            timing.next_ping = now + self.ping_every_ms();
            let silent_for = u64::from(self.state.settings.chat_idle_timeout) * 1000;
            if now - timing.last_heard > silent_for {
                return Step::End(None);
            }
            // A client that takes no bytes for the idle timeout is as silent as one that
            // sends none.
            let ping = socket.send(Frame::Ping(Default::default()));
            let pinged = tokio::time::timeout(Duration::from_millis(silent_for), ping).await;
            if !matches!(pinged, Ok(Ok(()))) {
                return Step::End(None);
            }
        }
        // A client that reads nothing blocks the write; its queue then overflows, and the
        // close code set by the hub ends the wait.
        let control = self.control.clone();
        tokio::select! {
            sent = self.deliver_queued(socket) => if !sent {
                return Step::End(None);
            },
            _ = control.closing() => {}
        }
        Step::Go
    }

    /// Answers a client frame, then sends what it caused to be pushed to this socket (the
    /// sender's own message after its ack) in the same write.
    async fn answer(&mut self, socket: &mut WebSocket, frame: &str) -> bool {
        self.handle(socket, frame).await && self.deliver_queued(socket).await
    }

    /// Sends the pushes queued for the socket, in one write where they fit.
    async fn deliver_queued(&self, socket: &mut WebSocket) -> bool {
        for push in self.control.take_pushes() {
            if !self.deliver(socket, &push).await {
                return false;
            }
        }
        flush(socket).await
    }

    /// Feeds one push (the caller flushes).
    async fn deliver(&self, socket: &mut WebSocket, push: &Arc<Push>) -> bool {
        let out = match &**push {
            Push::Message {
                conversation_id,
                message,
            } => Out::Message {
                conversation_id,
                message: message.clone().into(),
            },
            Push::Delta {
                conversation_id,
                message_id,
                offset,
                text,
            } => Out::Delta {
                conversation_id,
                message_id,
                offset: *offset,
                text,
            },
            Push::ConversationClosed { conversation_id } => {
                Out::ConversationClosed { conversation_id }
            }
            Push::Typing {
                conversation_id,
                typing,
            } => Out::Typing {
                conversation_id,
                state: rules::typing_word(*typing),
            },
            Push::AgentState {
                conversation_id,
                state,
            } => Out::AgentState {
                conversation_id,
                state,
            },
            // The company's feed's, never queued to a user's socket.
            Push::UserTyping { .. } => return true,
        };
        feed(socket, &out).await
    }

    /// Answers one client frame (fed: the caller flushes); false once the socket is gone.
    async fn handle(&mut self, socket: &mut WebSocket, frame: &str) -> bool {
        let (kind, id, fields) = match parse(frame) {
            Ok(parsed) => parsed,
            Err(e) => return feed(socket, &error_frame(None, &e)).await,
        };
        let id = id.as_ref();
        let user = self.user();
        let state = self.state;
        let result: Result<Reply<'_>, Error> = async {
            match kind.as_str() {
                "ping" => Ok(reply(Out::Pong { id })),
                "open" => {
                    let (conversation, messages) = chat::open(state, &user).await?;
                    Ok(reply(Out::Conversation {
                        id,
                        conversation: conversation.into(),
                        messages: messages.into_iter().map(Into::into).collect(),
                    }))
                }
                "send" => {
                    let conversation_id = string(&fields, "conversationId")?;
                    // The same checks and messages as the REST send.
                    let cmid = client_message_id(fields.get("clientMessageId"))?
                        .ok_or_else(|| Error::invalid("clientMessageId is required"))?;
                    let text = required_text("text", fields.get("text"))?;
                    let conversation =
                        known_conversation(&mut self.known, state, &user, conversation_id).await?;
                    let sent = chat::send(
                        state,
                        conversation,
                        SenderKind::User,
                        None,
                        &cmid,
                        &text,
                        false,
                    )
                    .await?;
                    Ok(reply(Out::Ack {
                        id,
                        message: sent.message.into(),
                        duplicate: sent.duplicate,
                    }))
                }
                "history" => {
                    let conversation_id = string(&fields, "conversationId")?;
                    let limit = integer(&fields, "limit")?.unwrap_or(50);
                    if !(1..=200).contains(&limit) {
                        return Err(Error::invalid("limit must be an integer from 1 to 200"));
                    }
                    let window =
                        window_of(integer(&fields, "before")?, integer(&fields, "after")?)?;
                    let conversation =
                        chat::user_conversation(state, &user, conversation_id).await?;
                    let (messages, has_more) =
                        chat::history(state, &conversation, window, limit).await?;
                    Ok(reply(Out::History {
                        id,
                        conversation_id,
                        messages: messages.into_iter().map(Into::into).collect(),
                        has_more,
                    }))
                }
                "read" => {
                    let conversation_id = string(&fields, "conversationId")?;
                    let seq = integer(&fields, "seq")?
                        .ok_or_else(|| Error::invalid("seq is required"))?;
                    let conversation =
                        chat::user_conversation(state, &user, conversation_id).await?;
                    chat::mark_read(state, &conversation, Side::User, seq).await?;
                    Ok(Reply::None)
                }
                "typing" => {
                    let conversation_id = string(&fields, "conversationId")?;
                    let typing = rules::typing_of(fields.get("state").and_then(Value::as_str))
                        .ok_or_else(|| Error::invalid(rules::TYPING_STATES))?;
                    // Passed on when the state changes, and a `start` again at most every
                    // few seconds: a client sending typing on every key press does not turn
                    // into as many notifications.
                    let now = tokio::time::Instant::now();
                    let repeat = self.last_typing.as_deref().is_some_and(|(c, t, at)| {
                        c == conversation_id && *t == typing && now - *at < TYPING_REPEAT
                    });
                    if repeat {
                        return Ok(Reply::None);
                    }
                    let conversation =
                        known_conversation(&mut self.known, state, &user, conversation_id).await?;
                    chat::user_typing(state, conversation, typing);
                    self.last_typing = Some(Box::new((conversation_id.to_owned(), typing, now)));
                    Ok(Reply::None)
                }
                "refresh" => Ok(Reply::Refresh),
                "auth" => Err(Error::invalid(
                    "already authenticated: send refresh to change the token",
                )),
                other => Err(Error::invalid(format!(
                    "unknown frame type {:?}",
                    other.chars().take(32).collect::<String>()
                ))),
            }
        }
        .await;
        match result {
            Ok(Reply::Frame(out)) => feed(socket, &out).await,
            Ok(Reply::None) => true,
            Ok(Reply::Refresh) => self.refresh(socket, id, &fields).await,
            Err(e) => feed(socket, &error_frame(id, &e)).await,
        }
    }

    /// `refresh`: a new token for the same user, agent and company, in place.
    async fn refresh(
        &mut self,
        socket: &mut WebSocket,
        id: Option<&Value>,
        fields: &Map<String, Value>,
    ) -> bool {
        let refused = |code: &'static str, message: &str| Out::Error {
            id,
            code,
            message: message.to_owned(),
            retry_after: None,
        };
        let Some(Value::String(t)) = fields.get("token") else {
            return send(socket, &refused("invalid_request", "token is required")).await;
        };
        let claims = match token::decode(self.state, t)
            .and_then(|c| token::check_alive(self.state, &c).map(|()| c))
        {
            Ok(c) => c,
            Err(death) => {
                let e = Error::from(death);
                return send(socket, &refused("token_invalid", &e.client_message())).await;
            }
        };
        let old = &self.claims;
        if claims.sub != old.sub
            || claims.agent_id != old.agent_id
            || claims.company_id != old.company_id
        {
            let out = refused(
                "refresh_mismatch",
                "the new token names another user, agent or company; the socket keeps its token",
            );
            return send(socket, &out).await;
        }
        self.state.chat.hub.refreshed(self.socket_id, &claims);
        self.claims = claims;
        self.expiring_sent = false;
        let out = Out::Refreshed {
            id,
            expires_at: rfc3339_s(self.claims.exp),
        };
        send(socket, &out).await
    }
}
