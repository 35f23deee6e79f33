//! The `openai` agent: an LLM behind any OpenAI-compatible endpoint (OpenAI, vLLM, llama.cpp's
//! server, Ollama) answers each user message, its reply streamed to the user as it comes.
//!
//! For each user message (an outbox event, claimed by `agents::worker` in conversation
//! order): `POST {base}/chat/completions` with the system prompt and the conversation's last
//! messages, `"stream": true` and `stream_options.include_usage`; the text is relayed as the
//! agent's streamed reply (`chat::send` with `streaming`, then `chat::grow`), coalesced to one
//! write and one `delta` per 50 ms at most, the first as soon as it comes. Each piece is
//! stored before it is pushed, so a socket that connects mid-reply reads the text so far and
//! then gets the deltas after it. The reply ends `complete`, with the token usage in the
//! audit trail and the metrics; an error, a timeout or a malformed stream ends it `failed`
//! with the text so far, tells the user (`agent_state` `error`) and hands the conversation to
//! a person if the agent says so. A 429 before any text is tried again after its
//! `Retry-After`.

use std::time::{Duration, Instant};

use serde::Serialize;

use super::sse::{Parser, Piece};
use super::worker::LEASE_MARGIN_MS;
use crate::app::AppState;
use crate::chat::rules::{ClientMessageId, MAX_TEXT_CHARS, MessageText, SenderKind};
use crate::chat::{self, Finish};
use crate::db::{Agent, AgentEvent, Conversation, Handler, Message, Window};
use crate::error::Result;

/// At most one `delta` per this long per reply.
const COALESCE: Duration = Duration::from_millis(50);
/// How often the text pushed is stored, at most (the floor is once a second).
const CHECKPOINT: Duration = Duration::from_millis(500);
/// How often a streaming reply renews its claim on the event.
const RENEW_LEASE: Duration = Duration::from_secs(5);
/// Attempts a message gets when the endpoint answers 429 before any text.
const ATTEMPTS: i64 = 3;
/// The longest `Retry-After` honoured; a longer one fails the reply.
const MAX_RETRY_AFTER_S: i64 = 60;

/// The HTTP client for LLM endpoints: no overall timeout (a reply streams as long as it
/// streams); each wait for bytes is bounded by the agent's `llm_timeout`.
pub struct Llm {
    client: reqwest::Client,
}

impl Llm {
    pub fn new() -> Self {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("performchat/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's settings are valid");
        Llm { client }
    }
}

impl Default for Llm {
    fn default() -> Self {
        Self::new()
    }
}

/// The request body of a streamed chat completion.
#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: Vec<Turn<'a>>,
    stream: bool,
    stream_options: StreamOptions,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct Turn<'a> {
    role: &'static str,
    content: &'a str,
}

/// The conversation as the model reads it: the system prompt, then the user's messages as
/// `user` and the agent's and people's as `assistant`, oldest first (system notices left
/// out).
fn turns<'a>(agent: &'a Agent, history: &'a [Message]) -> Vec<Turn<'a>> {
    let prompt = agent.llm_system_prompt.as_deref().map(|content| Turn {
        role: "system",
        content,
    });
    let said = history.iter().filter_map(|m| {
        let role = match m.sender_kind.as_str() {
            "user" => "user",
            "agent" | "operator" => "assistant",
            _ => return None,
        };
        (!m.text.trim().is_empty()).then_some(Turn {
            role,
            content: &m.text,
        })
    });
    prompt.into_iter().chain(said).collect()
}

/// Why a reply did not complete: the audit outcome and what happened.
struct Failure {
    outcome: &'static str,
    why: String,
    /// A 429 before any text: try again after this many seconds.
    retry_after_s: Option<i64>,
}

impl Failure {
    fn new(outcome: &'static str, why: impl Into<String>) -> Self {
        Failure {
            outcome,
            why: why.into(),
            retry_after_s: None,
        }
    }
}

/// Answers one user message (the event's) with the agent's LLM.
pub(super) async fn answer(state: &AppState, event: &AgentEvent, agent: &Agent) -> Result<()> {
    let db = &state.db;
    let conversation = db.find_conversation(&event.conversation_id).await?;
    let asked = match (&conversation, &event.message_id) {
        (Some(c), Some(id)) => db.find_message(&c.id, id).await?,
        _ => None,
    };
    let (Some(conversation), Some(asked)) = (conversation, asked) else {
        state.agents.done(event.n);
        return Ok(());
    };
    // Closed, or a person handles it: the model is not asked.
    if !conversation.is_open() || conversation.handler != Handler::Bot.as_str() {
        state.agents.done(event.n);
        return Ok(());
    }
    let timeout = Duration::from_millis(agent.llm_timeout_ms.max(1000) as u64);
    let lease = |now: i64| now + timeout.as_millis() as i64 + LEASE_MARGIN_MS;
    db.extend_agent_event_lease(event.n, lease(state.clock.now_ms()))
        .await?;
    let (history, _) = db
        .list_messages(
            &conversation.id,
            Window::Before(asked.seq + 1),
            agent.llm_history.max(1),
        )
        .await?;
    let mut reply = Reply::new(state, &conversation, agent, event);
    let started = Instant::now();
    let streamed = stream(state, agent, &history, timeout, &mut reply, &lease).await;
    let now = state.clock.now_ms();
    let model = agent.llm_model.as_deref().unwrap_or_default();
    match streamed {
        Ok(usage) if reply.has_text() => {
            reply.finish(Finish::Complete, usage).await?;
            let (prompt, completion) = usage.unwrap_or((0, 0));
            state.metrics.llm_reply("complete", prompt, completion);
            let detail = format!(
                "{} {model}: {} characters in {} ms, {prompt} prompt and {completion} \
                 completion tokens",
                event.id,
                reply.total_chars,
                started.elapsed().as_millis()
            );
            super::audit(state, agent, "llm.reply", "ok", detail, now).await?;
            state.agents.done(event.n);
        }
        Ok(_) => {
            let failure = Failure::new("empty", "the model answered no text");
            failed(state, agent, event, &conversation, &mut reply, failure, now).await?;
        }
        Err(failure) => {
            failed(state, agent, event, &conversation, &mut reply, failure, now).await?;
        }
    }
    Ok(())
}

/// Ends a reply that did not complete: tried again later (a 429 before any text, attempts
/// left), or failed with the text so far, the user told, and perhaps a person.
async fn failed(
    state: &AppState,
    agent: &Agent,
    event: &AgentEvent,
    conversation: &Conversation,
    reply: &mut Reply<'_>,
    failure: Failure,
    now: i64,
) -> Result<()> {
    let detail = format!(
        "{} attempt {} of {ATTEMPTS}: {}",
        event.id, event.attempts, failure.why
    );
    super::audit(
        state,
        agent,
        "llm.reply",
        failure.outcome,
        detail.clone(),
        now,
    )
    .await?;
    if let Some(wait_s) = failure.retry_after_s
        && !reply.has_text()
        && event.attempts < ATTEMPTS
    {
        state.metrics.llm_reply("retried", 0, 0);
        let at = now + wait_s * 1000;
        state
            .db
            .agent_event_retry_at(event.n, at, None, &detail)
            .await?;
        return Ok(());
    }
    tracing::warn!(event = %event.id, agent = %agent.id, outcome = failure.outcome, "LLM reply failed");
    state.metrics.llm_reply("failed", 0, 0);
    reply.finish(Finish::Failed, None).await?;
    chat::agent_failed(state, &conversation.id, agent.handoff_on_failure).await?;
    state.agents.done(event.n);
    Ok(())
}

/// Asks the endpoint and relays the streamed text into `reply`; the token usage, if the
/// endpoint told it.
async fn stream(
    state: &AppState,
    agent: &Agent,
    history: &[Message],
    timeout: Duration,
    reply: &mut Reply<'_>,
    lease: &impl Fn(i64) -> i64,
) -> std::result::Result<Option<(i64, i64)>, Failure> {
    let base = agent.llm_base_url.as_deref().unwrap_or_default();
    let url = format!("{}/chat/completions", base.trim_end_matches('/'));
    let body = Request {
        model: agent.llm_model.as_deref().unwrap_or_default(),
        messages: turns(agent, history),
        stream: true,
        stream_options: StreamOptions {
            include_usage: true,
        },
    };
    let mut request = state
        .agents
        .llm
        .client
        .post(&url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(&body).expect("serialisable"));
    // Read when the reply starts, so that a rotated key applies at once; never logged.
    if let Some(key) = agent
        .llm_api_key_env
        .as_deref()
        .and_then(|var| std::env::var(var).ok())
        .filter(|key| !key.is_empty())
    {
        request = request.bearer_auth(key);
    }
    let sent = tokio::time::timeout(timeout, request.send()).await;
    let mut response = match sent {
        Err(_) => {
            return Err(Failure::new(
                "timeout",
                "the endpoint did not answer in time",
            ));
        }
        Ok(Err(e)) => return Err(http_failure(&e)),
        Ok(Ok(response)) => response,
    };
    let status = response.status();
    if !status.is_success() {
        let mut failure = Failure::new(
            if status.as_u16() == 429 {
                "http_429"
            } else if status.is_server_error() {
                "http_5xx"
            } else {
                "http_4xx"
            },
            format!("the endpoint answered {status}"),
        );
        if status.as_u16() == 429 {
            let after = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<i64>().ok())
                .unwrap_or(5);
            failure.retry_after_s = (0..=MAX_RETRY_AFTER_S).contains(&after).then_some(after);
        }
        return Err(failure);
    }
    // Answered: the reply's message starts now, before the first words come.
    reply.start().await.map_err(stored_failure)?;
    let mut parser = Parser::default();
    let mut usage = None;
    let mut renewed = Instant::now();
    loop {
        let (push_at, save_at) = (reply.push_due(), reply.save_due());
        let chunk = tokio::select! {
            chunk = tokio::time::timeout(timeout, response.chunk()) => chunk,
            _ = sleep_until(push_at), if push_at.is_some() => {
                reply.flush().await.map_err(stored_failure)?;
                continue;
            }
            _ = sleep_until(save_at), if save_at.is_some() => {
                reply.save(None, None).await.map_err(stored_failure)?;
                continue;
            }
        };
        let pieces = match chunk {
            Err(_) => return Err(Failure::new("timeout", "the stream stalled")),
            Ok(Err(e)) => return Err(http_failure(&e)),
            Ok(Ok(Some(bytes))) => parser.feed(&bytes),
            // Ended without `[DONE]`: the text so far is all there is, if the last event
            // was whole.
            Ok(Ok(None)) => match parser.finish() {
                Ok(pieces) if pieces.contains(&Piece::Done) => Ok(pieces),
                Ok(_) => {
                    return Err(Failure::new(
                        "invalid_stream",
                        "the stream ended before [DONE]",
                    ));
                }
                Err(e) => Err(e),
            },
        };
        let pieces = pieces.map_err(|why| Failure::new("invalid_stream", why))?;
        for piece in pieces {
            match piece {
                Piece::Text(text) => reply.push(&text).await.map_err(stored_failure)?,
                Piece::Usage { prompt, completion } => usage = Some((prompt, completion)),
                Piece::Done => return Ok(usage),
            }
        }
        if renewed.elapsed() >= RENEW_LEASE {
            renewed = Instant::now();
            let until = lease(state.clock.now_ms());
            state
                .db
                .extend_agent_event_lease(reply.event.n, until)
                .await
                .map_err(|e| stored_failure(e.into()))?;
        }
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

fn http_failure(e: &reqwest::Error) -> Failure {
    let (outcome, cause) = super::http_error(e);
    Failure::new(outcome, cause)
}

fn stored_failure(e: crate::error::Error) -> Failure {
    Failure::new("storage", format!("the reply could not be stored: {e}"))
}

/// A reply as it streams: the message it grows (started, empty, when the endpoint answers),
/// the text not pushed yet (coalesced), the text pushed but not stored yet, and when each
/// last happened.
struct Reply<'a> {
    state: &'a AppState,
    conversation: &'a Conversation,
    agent: &'a Agent,
    event: &'a AgentEvent,
    message: Option<Message>,
    /// Characters pushed into `message` (a reply longer than a message goes on in the next).
    chars: usize,
    total_chars: usize,
    /// Messages this reply took so far (past the longest a message may be).
    parts: usize,
    pending: String,
    unsaved: String,
    last_push: Option<Instant>,
    last_save: Instant,
}

impl<'a> Reply<'a> {
    fn new(
        state: &'a AppState,
        conversation: &'a Conversation,
        agent: &'a Agent,
        event: &'a AgentEvent,
    ) -> Self {
        Reply {
            state,
            conversation,
            agent,
            event,
            message: None,
            chars: 0,
            total_chars: 0,
            parts: 0,
            pending: String::new(),
            unsaved: String::new(),
            last_push: None,
            last_save: Instant::now(),
        }
    }

    fn has_text(&self) -> bool {
        self.total_chars > 0 || !self.pending.trim().is_empty()
    }

    /// Starts the reply's message, empty (the user's sockets show the agent answering), so
    /// that its first words are pushed the moment they come, with no write before them.
    async fn start(&mut self) -> Result<()> {
        if self.message.is_some() {
            return Ok(());
        }
        // One id per attempt and part: a retry after a crash starts a new message (the one
        // cut off is failed by the stream timeout).
        let id = format!("{}.a{}.{}", self.event.id, self.event.attempts, self.parts);
        let id = ClientMessageId::parse(&id).expect("event ids are plain");
        let empty = MessageText::chunk("text", "").expect("empty is a chunk");
        let sent = chat::send(
            self.state,
            self.conversation,
            SenderKind::Agent,
            Some(&self.agent.name),
            &id,
            &empty,
            true,
        )
        .await?;
        self.message = Some(sent.message);
        self.chars = 0;
        self.last_save = Instant::now();
        Ok(())
    }

    /// When the text waiting must be pushed: 50 ms after the last push (the first at once).
    fn push_due(&self) -> Option<Instant> {
        if self.pending.is_empty() {
            return None;
        }
        Some(self.last_push.map_or_else(Instant::now, |at| at + COALESCE))
    }

    /// When the text pushed must be stored: a checkpoint after the last.
    fn save_due(&self) -> Option<Instant> {
        (!self.unsaved.is_empty()).then_some(self.last_save + CHECKPOINT)
    }

    /// More text: pushed at once if nothing was for 50 ms, else with the next.
    async fn push(&mut self, text: &str) -> Result<()> {
        // Carriage returns and other control characters are not message text.
        self.pending.extend(
            text.chars()
                .filter(|c| !c.is_control() || *c == '\n' || *c == '\t'),
        );
        if self.push_due().is_some_and(|at| at <= Instant::now()) {
            self.flush().await?;
        }
        Ok(())
    }

    /// Pushes the text waiting to the user's sockets (stored at the next checkpoint).
    async fn flush(&mut self) -> Result<()> {
        self.last_push = Some(Instant::now());
        let mut text = std::mem::take(&mut self.pending);
        while !text.is_empty() {
            let room = MAX_TEXT_CHARS - self.chars;
            let cut = text
                .char_indices()
                .nth(room)
                .map_or(text.len(), |(at, _)| at);
            let rest = text.split_off(cut);
            if !text.is_empty() {
                self.start().await?;
                let message = self.message.as_ref().expect("started");
                chat::stream_ahead(self.state, self.conversation, message, self.chars, &text);
                let added = text.chars().count();
                self.chars += added;
                self.total_chars += added;
                self.unsaved.push_str(&text);
            }
            if !rest.is_empty() {
                // This message is full: it is complete, and the reply goes on in a new one.
                self.save(Some(Finish::Complete), None).await?;
                self.message = None;
                self.chars = 0;
                self.parts += 1;
            }
            text = rest;
        }
        Ok(())
    }

    /// Stores the text pushed since the last checkpoint, and ends the message as `finish`.
    async fn save(&mut self, finish: Option<Finish>, usage: Option<(i64, i64)>) -> Result<()> {
        self.last_save = Instant::now();
        let Some(message) = &self.message else {
            return Ok(());
        };
        if self.unsaved.is_empty() && finish.is_none() {
            return Ok(());
        }
        let unsaved = MessageText::chunk("text", &self.unsaved).expect("filtered and cut to fit");
        let saved = chat::checkpoint(
            self.state,
            self.conversation,
            &message.id,
            &unsaved,
            finish,
            usage,
        )
        .await?;
        self.unsaved.clear();
        self.message = Some(saved);
        Ok(())
    }

    /// Pushes what waits, stores the rest and ends the message as `how` (with the token
    /// usage, if the endpoint told it).
    async fn finish(&mut self, how: Finish, usage: Option<(i64, i64)>) -> Result<()> {
        self.flush().await?;
        self.save(Some(how), usage).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: &str, text: &str) -> Message {
        Message {
            id: String::new(),
            conversation_id: String::new(),
            seq: 0,
            client_message_id: String::new(),
            sender_kind: kind.into(),
            sender_name: None,
            text: text.into(),
            status: "complete".into(),
            created_at: 0,
            prompt_tokens: None,
            completion_tokens: None,
        }
    }

    #[test]
    fn the_model_reads_the_prompt_then_the_conversation_without_notices() {
        let agent = Agent {
            id: "a".into(),
            company_id: "c".into(),
            name: "Support Agent".into(),
            active: true,
            is_default: true,
            kind: "openai".into(),
            webhook_url: None,
            webhook_disabled_at: None,
            llm_base_url: Some("http://127.0.0.1:11434/v1".into()),
            llm_model: Some("llama3.2".into()),
            llm_api_key_env: None,
            llm_system_prompt: Some("Be brief.".into()),
            llm_history: 20,
            llm_timeout_ms: 30_000,
            handoff_on_failure: true,
            created_at: 0,
        };
        let history = [
            message("user", "Hi"),
            message("system", "You're being connected to a person"),
            message("agent", "Hello!"),
            message("operator", "Alice here."),
            message("agent", ""),
            message("user", "Thanks"),
        ];
        let body = serde_json::to_value(Request {
            model: "llama3.2",
            messages: turns(&agent, &history),
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
        })
        .unwrap();
        assert_eq!(
            body,
            serde_json::json!({
                "model": "llama3.2",
                "messages": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": "Hi"},
                    {"role": "assistant", "content": "Hello!"},
                    {"role": "assistant", "content": "Alice here."},
                    {"role": "user", "content": "Thanks"},
                ],
                "stream": true,
                "stream_options": {"include_usage": true},
            })
        );
    }
}
