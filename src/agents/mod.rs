//! Agents that answer by themselves. Each agent has a kind: `human` (the company's backend
//! answers through the agent API; nothing happens by itself), `webhook` (the company's bot:
//! every event of its conversations is sent to it as a signed webhook, and it answers in the
//! webhook's response or later through the agent API) or `openai` (an LLM behind an
//! OpenAI-compatible endpoint answers each user message, streamed). The chat (`crate::chat`)
//! stores and delivers messages; this subsystem decides who is told of them and turns what
//! the agent answers into messages.

pub mod llm;
pub mod signature;
pub mod sse;
pub mod webhook;
pub mod worker;

use std::time::Duration;

/// What answers for an agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AgentKind {
    /// The company's backend, through the agent API.
    Human,
    /// The company's bot, by signed webhook.
    Webhook,
    /// An LLM behind an OpenAI-compatible endpoint, its replies streamed.
    Openai,
}

impl AgentKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AgentKind::Human => "human",
            AgentKind::Webhook => "webhook",
            AgentKind::Openai => "openai",
        }
    }

    /// The kind stored as `kind`, if it is one.
    pub fn of(kind: &str) -> Option<AgentKind> {
        [AgentKind::Human, AgentKind::Webhook, AgentKind::Openai]
            .into_iter()
            .find(|k| k.as_str() == kind)
    }
}

/// The agents' shared state: the webhook sender, the LLM client, and the wake-up of the
/// outbox worker.
pub struct AgentsState {
    pub webhooks: webhook::Webhooks,
    pub llm: llm::Llm,
    wake: tokio::sync::Notify,
    /// Events done with, deleted by the worker's next claim (one commit for many).
    done: std::sync::Mutex<Vec<i64>>,
}

impl AgentsState {
    pub fn new(webhook_timeout: Duration) -> Self {
        AgentsState {
            webhooks: webhook::Webhooks::new(webhook_timeout),
            llm: llm::Llm::new(),
            wake: tokio::sync::Notify::new(),
            done: std::sync::Mutex::default(),
        }
    }

    /// An event is done with: the worker deletes it with its next claim.
    pub fn done(&self, n: i64) {
        self.done.lock().expect("never poisoned").push(n);
        self.wake();
    }

    fn take_done(&self) -> Vec<i64> {
        std::mem::take(&mut *self.done.lock().expect("never poisoned"))
    }

    fn put_back_done(&self, done: Vec<i64>) {
        self.done.lock().expect("never poisoned").extend(done);
    }

    /// Tells the worker that an event may be due (one was queued, or one finished).
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Records what an agent did in its company's audit trail.
pub(crate) async fn audit(
    state: &crate::app::AppState,
    agent: &crate::db::Agent,
    kind: &str,
    outcome: &str,
    detail: String,
    now: i64,
) -> crate::error::Result<()> {
    state
        .audit
        .record(crate::db::AuditEvent {
            at: now,
            kind: kind.to_owned(),
            outcome: outcome.to_owned(),
            company_id: agent.company_id.clone(),
            agent_id: Some(agent.id.clone()),
            detail: Some(detail),
            ..crate::db::AuditEvent::default()
        })
        .await
}

/// What an outgoing request's failure was (`timeout`, `connect` or `request`) and its root
/// cause (refused, reset, a TLS failure), from the error's chain: not `reqwest`'s own text,
/// which holds the URL.
pub(crate) fn http_error(e: &reqwest::Error) -> (&'static str, String) {
    let code = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut cause = code.to_owned();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        cause = s.to_string();
        source = s.source();
    }
    (code, cause)
}

/// Checks a webhook or LLM endpoint URL as an operator gives it: absolute, `http` or
/// `https`, with a host.
pub fn check_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "a webhook URL must be http or https, not {}",
            parsed.scheme()
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("{url:?} has no host"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked() {
        assert!(check_url("https://bot.example.com/hooks/chat").is_ok());
        assert!(check_url("http://127.0.0.1:9000/").is_ok());
        for (bad, says) in [
            ("ftp://example.com/", "http or https"),
            ("example.com/hook", "not a URL"),
            ("", "not a URL"),
        ] {
            let e = check_url(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn kinds_read_back() {
        for kind in [AgentKind::Human, AgentKind::Webhook, AgentKind::Openai] {
            assert_eq!(AgentKind::of(kind.as_str()), Some(kind));
        }
        assert_eq!(AgentKind::of("robot"), None);
    }
}
