//! The text of the streamed replies going on now, as this instance pushed or heard it.
//!
//! An LLM's reply is pushed to the user's sockets as it comes and stored at checkpoints
//! (`agents::llm`), so the database may be up to a checkpoint behind what the sockets
//! have. A socket (or a REST read) that reads a conversation mid-reply gets the stored text
//! completed from here, and then every `delta` after it: nothing between the checkpoint and
//! the read is missed. Every instance keeps the replies it pushes and those it hears of from
//! the others (PostgreSQL's notifications), so a socket on any instance reads them whole.
//! An entry goes when its reply's final `message` is pushed or heard of, or after
//! [`FORGET_AFTER`] without a chunk.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::db::Message;

/// A reply not grown for this long is forgotten (its final message never came here).
const FORGET_AFTER: Duration = Duration::from_secs(120);

/// What is known of one reply: its text from `start` characters on.
#[derive(Debug)]
struct Known {
    start: usize,
    text: String,
    chars: usize,
    grown: Instant,
}

#[derive(Debug, Default)]
pub struct LiveReplies {
    replies: Mutex<HashMap<String, Known>>,
    swept: Mutex<Option<Instant>>,
}

impl LiveReplies {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Known>> {
        self.replies.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets, at most every few seconds, the replies whose end this instance never heard.
    fn sweep(&self, now: Instant, replies: &mut HashMap<String, Known>) {
        let mut swept = self.swept.lock().unwrap_or_else(|e| e.into_inner());
        if swept.is_none_or(|at| now - at >= Duration::from_secs(5)) {
            *swept = Some(now);
            replies.retain(|_, known| now - known.grown < FORGET_AFTER);
        }
    }

    /// Reply `message_id` grew by `text`, starting `offset` characters into it.
    pub fn grew(&self, message_id: &str, offset: usize, text: &str) {
        let now = Instant::now();
        let mut replies = self.lock();
        self.sweep(now, &mut replies);
        let added = text.chars().count();
        match replies.get_mut(message_id) {
            Some(known) if known.start + known.chars >= offset => {
                // Only what is beyond what is known (a chunk heard twice adds nothing).
                let skip = known.start + known.chars - offset;
                if skip < added {
                    let from = text.char_indices().nth(skip).map_or(text.len(), |(i, _)| i);
                    known.text.push_str(&text[from..]);
                    known.chars += added - skip;
                }
                known.grown = now;
            }
            // Unknown, or a gap (chunks this instance missed): known from here on.
            _ => {
                replies.insert(
                    message_id.to_owned(),
                    Known {
                        start: offset,
                        text: text.to_owned(),
                        chars: added,
                        grown: now,
                    },
                );
            }
        }
    }

    /// Reply `message_id` finished: its stored text is all of it.
    pub fn finished(&self, message_id: &str) {
        self.lock().remove(message_id);
    }

    /// Completes the text of the streaming messages among `messages` (as read from the
    /// database) with what was pushed beyond their last checkpoint.
    pub fn fill(&self, messages: &mut [Message]) {
        if !messages.iter().any(|m| m.status == "streaming") {
            return;
        }
        let replies = self.lock();
        for message in messages.iter_mut().filter(|m| m.status == "streaming") {
            let Some(known) = replies.get(&message.id) else {
                continue;
            };
            let stored = message.text.chars().count();
            if known.start <= stored && stored < known.start + known.chars {
                let keep = message
                    .text
                    .char_indices()
                    .nth(known.start)
                    .map_or(message.text.len(), |(i, _)| i);
                message.text.truncate(keep);
                message.text.push_str(&known.text);
            }
        }
    }

    /// How many replies are known.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn streaming(id: &str, text: &str) -> Message {
        Message {
            id: id.to_owned(),
            conversation_id: "conv".to_owned(),
            seq: 1,
            client_message_id: "c".to_owned(),
            sender_kind: "agent".to_owned(),
            sender_name: None,
            text: text.to_owned(),
            status: "streaming".to_owned(),
            created_at: 0,
            prompt_tokens: None,
            completion_tokens: None,
        }
    }

    #[test]
    fn a_read_behind_the_checkpoint_gets_the_text_pushed_since() {
        let live = LiveReplies::default();
        live.grew("m", 0, "Héllo");
        live.grew("m", 5, ", wörld");
        // Heard twice (a read raced a push): nothing is added again.
        live.grew("m", 5, ", wö");
        let mut read = vec![streaming("m", "Hél"), streaming("other", "x")];
        live.fill(&mut read);
        assert_eq!(read[0].text, "Héllo, wörld");
        assert_eq!(read[1].text, "x");
        // Stored as far as pushed: unchanged.
        let mut read = vec![streaming("m", "Héllo, wörld")];
        live.fill(&mut read);
        assert_eq!(read[0].text, "Héllo, wörld");
    }

    #[test]
    fn text_known_only_past_a_gap_completes_only_a_read_that_reaches_it() {
        let live = LiveReplies::default();
        // This instance heard the reply from character 10 on.
        live.grew("m", 10, "abc");
        let mut early = vec![streaming("m", "12345")];
        live.fill(&mut early);
        assert_eq!(early[0].text, "12345", "the gap is not filled with a guess");
        let mut late = vec![streaming("m", "0123456789a")];
        live.fill(&mut late);
        assert_eq!(late[0].text, "0123456789abc");
    }

    #[test]
    fn a_finished_reply_is_forgotten_and_a_finished_read_is_never_changed() {
        let live = LiveReplies::default();
        live.grew("m", 0, "partial and more");
        let mut done = vec![Message {
            status: "complete".to_owned(),
            ..streaming("m", "partial")
        }];
        live.fill(&mut done);
        assert_eq!(done[0].text, "partial");
        live.finished("m");
        assert_eq!(live.len(), 0);
    }
}
