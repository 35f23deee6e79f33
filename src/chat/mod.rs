//! The chat subsystem: conversations between a company's end user and one of its agents,
//! and their messages. The user side is opened by a chat token (`token::verify`); the
//! company side by its key pair with the `chat` scope. Operations are free of HTTP; `http/`
//! handlers call them.

mod conversation;
pub mod fanout;
pub mod hub;
mod live;
pub mod rules;

/// What the chat holds in memory: this instance's sockets, and the queues of delivery to
/// them and to the other instances.
#[derive(Default)]
pub struct ChatState {
    pub hub: hub::Hub,
    pub fanout: fanout::Fanout,
    /// The text of the streamed replies going on now, for reads mid-reply.
    pub live: live::LiveReplies,
}

pub use conversation::{
    BotReplied, ChatUser, Finish, Sent, agent_failed, agent_typing, bot_replied, checkpoint, close,
    company_conversation, fail_idle_streams, grow, hand_off, history, list_for_company,
    list_for_user, mark_read, open, release, send, stream_ahead, user_conversation, user_typing,
};
