//! Pure rules of the chat: what a message's text and a sender's idempotency key may be.

/// The longest message, in Unicode code points.
pub const MAX_TEXT_CHARS: usize = 4000;
/// The longest `clientMessageId`.
pub const MAX_CLIENT_MESSAGE_ID: usize = 128;

/// A message's text: 1–4000 code points, no NUL or control characters other than newline
/// and tab (a carriage return is one too: clients send `\n`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MessageText(String);

impl MessageText {
    pub fn parse(field: &str, s: &str) -> Result<Self, String> {
        if s.trim().is_empty() {
            return Err(format!("{field} must not be empty"));
        }
        Self::chunk(field, s)
    }

    /// A piece of a streamed reply (its first text, or a chunk appended to it): as a text,
    /// but it may be empty or blank (a chunk is often a space or a newline).
    pub fn chunk(field: &str, s: &str) -> Result<Self, String> {
        if s.chars().count() > MAX_TEXT_CHARS {
            return Err(format!(
                "{field} must be at most {MAX_TEXT_CHARS} characters"
            ));
        }
        if s.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(format!(
                "{field} must not contain control characters other than newline and tab"
            ));
        }
        Ok(MessageText(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The sender's idempotency key: 1–128 letters, digits and `-_.:`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientMessageId(String);

impl ClientMessageId {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= MAX_CLIENT_MESSAGE_ID
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if ok {
            Ok(ClientMessageId(s.to_owned()))
        } else {
            Err(format!(
                "clientMessageId must be 1–{MAX_CLIENT_MESSAGE_ID} letters, digits, '-', '_', '.' or ':'"
            ))
        }
    }

    /// A server-made key, for replies sent without one.
    pub fn generate() -> Self {
        ClientMessageId(format!("srv:{}", crate::ids::random(24)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Who sent a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SenderKind {
    User,
    Agent,
    Operator,
    System,
}

impl SenderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderKind::User => "user",
            SenderKind::Agent => "agent",
            SenderKind::Operator => "operator",
            SenderKind::System => "system",
        }
    }
}

/// Typing as the protocol words it, both ways: `start` (true) or `stop` (false).
pub fn typing_word(typing: bool) -> &'static str {
    if typing { "start" } else { "stop" }
}

/// `start` → true, `stop` → false; None for anything else (see [`TYPING_STATES`]).
pub fn typing_of(word: Option<&str>) -> Option<bool> {
    match word {
        Some("start") => Some(true),
        Some("stop") => Some(false),
        _ => None,
    }
}

/// What an `agent_state` frame says the agent's side is doing: `thinking` (the agent got
/// the user's message and is working on an answer, until its next message or state),
/// `error` (the agent failed to answer), `handoff` (handed to a person, waiting for one),
/// `human` (a person answers), `bot` (the agent answers again).
pub const AGENT_STATES: [&str; 5] = ["thinking", "error", "handoff", "human", "bot"];

/// The state word as the protocol has it, for one read from elsewhere (a notification).
pub fn agent_state_of(word: &str) -> Option<&'static str> {
    AGENT_STATES.into_iter().find(|s| *s == word)
}

/// The error for a typing state that is neither.
pub const TYPING_STATES: &str = "state must be \"start\" or \"stop\"";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_are_checked() {
        assert!(MessageText::parse("text", "hello\nworld\t!").is_ok());
        assert!(MessageText::parse("text", &"é".repeat(4000)).is_ok());
        for (bad, says) in [
            ("", "must not be empty"),
            ("  \n", "must not be empty"),
            ("a\u{0}b", "control characters"),
            ("a\rb", "control characters"),
            ("a\u{1b}[31m", "control characters"),
        ] {
            assert!(
                MessageText::parse("text", bad).unwrap_err().contains(says),
                "{bad:?}"
            );
        }
        assert!(
            MessageText::parse("text", &"a".repeat(4001))
                .unwrap_err()
                .contains("at most 4000")
        );
    }

    #[test]
    fn chunks_may_be_blank_but_not_control_characters() {
        for ok in ["", " ", "\n", " world"] {
            assert!(MessageText::chunk("append", ok).is_ok(), "{ok:?}");
        }
        assert!(
            MessageText::chunk("append", "a\u{7}")
                .unwrap_err()
                .contains("control characters")
        );
        assert!(
            MessageText::chunk("append", &"a".repeat(4001))
                .unwrap_err()
                .contains("at most 4000")
        );
    }

    #[test]
    fn typing_states_read_back_as_written() {
        for typing in [true, false] {
            assert_eq!(typing_of(Some(typing_word(typing))), Some(typing));
        }
        for bad in [None, Some(""), Some("Start"), Some("typing")] {
            assert_eq!(typing_of(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn client_message_ids_are_checked() {
        assert!(ClientMessageId::parse("m-1_a.b:c").is_ok());
        assert!(ClientMessageId::parse(&"a".repeat(128)).is_ok());
        for bad in ["", "a b", "é", "a/b", &"a".repeat(129)] {
            assert!(ClientMessageId::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ClientMessageId::parse(ClientMessageId::generate().as_str()).is_ok());
    }
}
