//! The `webhook` agent: each event of a webhook agent's conversations (claimed from the
//! outbox by `agents::worker`) is POSTed to its URL, signed as Standard Webhooks specifies,
//! and the answer becomes the agent's replies.
//!
//! A 2xx delivers it (the replies in its body are stored as the agent's messages,
//! idempotently, so a retry after a crash does not repeat them); a 410 disables the webhook;
//! anything else is tried again 5 s, 30 s, 2 min, 10 min and 1 h later, the same
//! `webhook-id` and body each time. When the last attempt fails (or the webhook is gone) the
//! user is told, and the conversation waits for a person.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::signature;
use crate::app::AppState;
use crate::clock::rfc3339_ms;
use crate::db::{Agent, AgentEvent, UserRef};
use crate::http::chat::{ConversationBody, MessageBody};

/// Seconds to wait after each failed attempt before the next; one attempt more than
/// there are waits.
const RETRY_AFTER_S: [i64; 5] = [5, 30, 120, 600, 3600];
/// Attempts an event gets before it fails for good.
pub const ATTEMPTS: i64 = RETRY_AFTER_S.len() as i64 + 1;
/// The most of a webhook's answer that is read (replies and all).
const MAX_ANSWER_BYTES: usize = 256 * 1024;

/// The webhook sender: one HTTP client, its connections kept between deliveries.
pub struct Webhooks {
    client: reqwest::Client,
    pub(super) timeout: Duration,
}

impl Webhooks {
    pub fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            // A webhook answers where it is: a redirect is an answer that is not 2xx.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("performchat/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client's settings are valid");
        Webhooks { client, timeout }
    }
}

/// What a webhook answered, or why it did not.
enum Answer {
    Status(u16, Vec<u8>),
    /// No HTTP answer: `timeout`, `connect` or `request`, and the error.
    Failed(&'static str, String),
}

/// What a bot may answer in a 2xx body.
#[derive(Debug, Default, Deserialize)]
struct BotAnswer {
    #[serde(default)]
    replies: Vec<BotReply>,
    #[serde(default)]
    handoff: bool,
}

#[derive(Debug, Deserialize)]
struct BotReply {
    text: String,
}

/// Sends one claimed event of a webhook agent (enabled, with this URL) and acts on the
/// answer.
pub(super) async fn deliver(
    state: &AppState,
    event: &AgentEvent,
    agent: &Agent,
    url: &str,
) -> crate::error::Result<()> {
    let db = &state.db;
    let body = match &event.body {
        Some(body) => body.clone(),
        None => match payload(state, event, agent).await? {
            Some(body) => body,
            None => {
                // Its conversation or message is gone (an erased user): nothing to tell.
                state.agents.done(event.n);
                return Ok(());
            }
        },
    };
    let now = state.clock.now_ms();
    let secrets = db.webhook_secrets(&agent.id, now).await?;
    let secrets: Vec<&str> = secrets.iter().map(|s| s.secret.as_str()).collect();
    let timestamp = now / 1000;
    let signed = signature::sign(&secrets, &event.id, timestamp, body.as_bytes());
    let answer = post(state, url, event, timestamp, &signed, &body).await;
    let now = state.clock.now_ms();
    let (outcome, said) = match &answer {
        Answer::Status(status, _) if (200..300).contains(status) => ("ok", format!("{status}")),
        Answer::Status(status, _) => (status_outcome(*status), format!("{status}")),
        Answer::Failed(code, error) => (*code, error.clone()),
    };
    record_attempt(state, agent, event, outcome, &said, now).await?;
    match answer {
        Answer::Status(status, bytes) if (200..300).contains(&status) => {
            state
                .metrics
                .webhook_delivered(now.saturating_sub(event.created_at));
            delivered(state, agent, event, &bytes).await?;
            state.agents.done(event.n);
        }
        Answer::Status(410, _) => {
            state.metrics.webhook_attempt("gone");
            let failed = db.disable_webhook(&agent.id, now).await?;
            if !failed.is_empty() {
                tracing::warn!(agent = %agent.id, "webhook answered 410 Gone: disabled");
                let detail = format!("{url} answered 410 Gone: webhook disabled");
                super::audit(state, agent, "agent.webhook_disabled", "ok", detail, now).await?;
            }
            for failed in failed.iter().filter(|e| e.kind != "conversation.closed") {
                crate::chat::agent_failed(state, &failed.conversation_id, true).await?;
            }
        }
        _ => {
            state.metrics.webhook_attempt("failed");
            let error = format!("attempt {} of {ATTEMPTS}: {said}", event.attempts);
            match RETRY_AFTER_S.get(event.attempts as usize - 1) {
                Some(wait_s) => {
                    db.agent_event_retry_at(event.n, now + wait_s * 1000, Some(&body), &error)
                        .await?;
                }
                None => {
                    state.agents.done(event.n);
                    tracing::warn!(event = %event.id, agent = %agent.id, "webhook failed for good");
                    if event.kind != "conversation.closed" {
                        crate::chat::agent_failed(state, &event.conversation_id, true).await?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// The audit outcome of a status that is not 2xx.
fn status_outcome(status: u16) -> &'static str {
    match status {
        410 => "gone",
        300..=399 => "http_3xx",
        400..=499 => "http_4xx",
        _ => "http_5xx",
    }
}

/// Posts the body with its Standard Webhooks headers; reads at most [`MAX_ANSWER_BYTES`] of
/// the answer.
async fn post(
    state: &AppState,
    url: &str,
    event: &AgentEvent,
    timestamp: i64,
    signed: &str,
    body: &str,
) -> Answer {
    let sent = state
        .agents
        .webhooks
        .client
        .post(url)
        .header("content-type", "application/json")
        .header("webhook-id", &event.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .body(body.to_owned())
        .send()
        .await;
    let mut response = match sent {
        Ok(response) => response,
        Err(e) => return failed(&e),
    };
    let status = response.status().as_u16();
    let mut bytes = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) if bytes.len() + chunk.len() <= MAX_ANSWER_BYTES => {
                bytes.extend_from_slice(&chunk)
            }
            // Too long to be replies: the status still counts.
            Ok(Some(_)) => {
                bytes.clear();
                break;
            }
            Ok(None) => break,
            Err(e) => return failed(&e),
        }
    }
    Answer::Status(status, bytes)
}

fn failed(e: &reqwest::Error) -> Answer {
    let (code, cause) = super::http_error(e);
    Answer::Failed(code, cause)
}

/// A 2xx answer: its replies become the agent's messages and `"handoff": true` hands the
/// conversation to a person, unless the event was its closing.
async fn delivered(
    state: &AppState,
    agent: &Agent,
    event: &AgentEvent,
    answer: &[u8],
) -> crate::error::Result<()> {
    if event.kind == "conversation.closed" || answer.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    let answer: BotAnswer = match serde_json::from_slice(answer) {
        Ok(answer) => answer,
        Err(e) => {
            let detail = format!(
                "{} {}: the answer was not {{\"replies\":[{{\"text\":…}}],\"handoff\":…}}: {e}",
                event.id, event.kind
            );
            let now = state.clock.now_ms();
            super::audit(
                state,
                agent,
                "webhook.answer_ignored",
                "invalid_answer",
                detail,
                now,
            )
            .await?;
            return Ok(());
        }
    };
    let texts: Vec<String> = answer.replies.into_iter().map(|r| r.text).collect();
    let outcome = crate::chat::bot_replied(
        state,
        &event.conversation_id,
        &event.id,
        &agent.name,
        &texts,
        answer.handoff,
    )
    .await?;
    if let Some(why) = outcome.not_delivered {
        let detail = format!("{} {}: {why}", event.id, event.kind);
        let now = state.clock.now_ms();
        super::audit(
            state,
            agent,
            "webhook.answer_ignored",
            "not_delivered",
            detail,
            now,
        )
        .await?;
    }
    Ok(())
}

/// The JSON body of an event, as it was when first sent; None when its conversation (or
/// message) is gone.
async fn payload(
    state: &AppState,
    event: &AgentEvent,
    agent: &Agent,
) -> crate::error::Result<Option<String>> {
    let db = &state.db;
    let Some(conversation) = db.find_conversation(&event.conversation_id).await? else {
        return Ok(None);
    };
    let message = match &event.message_id {
        Some(id) => match db.find_message(&conversation.id, id).await? {
            Some(message) => Some(MessageBody::from(message)),
            None => return Ok(None),
        },
        None => None,
    };
    let user = db
        .find_user(&conversation.company_id, UserRef::Id(&conversation.user_id))
        .await?;
    let Some(user) = user else { return Ok(None) };
    let payload = Payload {
        kind: &event.kind,
        timestamp: rfc3339_ms(event.created_at),
        data: Data {
            conversation: ConversationBody::from(conversation),
            message,
            user: UserData {
                id: &user.id,
                external_id: &user.external_id,
            },
            agent: AgentData {
                id: &agent.id,
                name: &agent.name,
            },
        },
    };
    Ok(Some(serde_json::to_string(&payload).expect("serialisable")))
}

/// An event as the webhook receives it (Standard Webhooks' recommended shape).
#[derive(Serialize)]
struct Payload<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    /// When it happened (RFC 3339); the `webhook-timestamp` header is the attempt's time.
    timestamp: String,
    data: Data<'a>,
}

#[derive(Serialize)]
struct Data<'a> {
    conversation: ConversationBody,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<MessageBody>,
    user: UserData<'a>,
    agent: AgentData<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct UserData<'a> {
    /// The internal user id (`user.id` of the token response).
    id: &'a str,
    /// The company's own id for the user (the token request's `userId`).
    external_id: &'a str,
}

#[derive(Serialize)]
struct AgentData<'a> {
    id: &'a str,
    name: &'a str,
}

/// Every attempt goes to the audit trail: `webhook.attempt`, outcome `ok`, `timeout`,
/// `connect`, `request`, `gone`, `http_3xx`, `http_4xx` or `http_5xx`.
async fn record_attempt(
    state: &AppState,
    agent: &Agent,
    event: &AgentEvent,
    outcome: &str,
    said: &str,
    now: i64,
) -> crate::error::Result<()> {
    let detail = format!(
        "{} {} {} attempt {} of {ATTEMPTS}: {said}",
        event.id, event.kind, event.conversation_id, event.attempts
    );
    super::audit(state, agent, "webhook.attempt", outcome, detail, now).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_and_end() {
        assert_eq!(ATTEMPTS, 6);
        assert!(RETRY_AFTER_S.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(RETRY_AFTER_S.iter().sum::<i64>(), 5 + 30 + 120 + 600 + 3600);
    }

    #[test]
    fn answers_read_replies_and_handoff_with_defaults() {
        let a: BotAnswer = serde_json::from_str(r#"{"replies":[{"text":"Hi"}],"x":1}"#).unwrap();
        assert_eq!(a.replies.len(), 1);
        assert!(!a.handoff);
        let a: BotAnswer = serde_json::from_str(r#"{"handoff":true}"#).unwrap();
        assert!(a.replies.is_empty() && a.handoff);
        assert!(serde_json::from_str::<BotAnswer>(r#"{"replies":"Hi"}"#).is_err());
    }
}
