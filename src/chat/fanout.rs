//! Delivery of committed messages to every socket that follows them, on this instance and
//! on the others.
//!
//! The instance that committed a message hands it to its hub at once, in memory. Other
//! instances hear of it by ids only and read it from the database:
//! - PostgreSQL: one task sends, after the commits, a NOTIFY on [`CHANNEL`] carrying a batch
//!   of lines `m <conversation> <user> <agent> <company> <seq>` (ids, never a message: a
//!   payload stops at 8 000 bytes; `c <ids>` for a conversation closed, `t <ids> start|stop`
//!   for the agent typing, `u <ids> start|stop` for the user typing, `a <ids> <state>` for
//!   what the agent's side is doing (a handoff), `d <ids> <seq> <message>
//!   <text>` for a chunk of a streamed reply (the chunk itself, a JSON string, in pieces that
//!   fit), `f <ids> <seq>` for a streamed reply finished, which the others read again). It is not sent inside
//!   the message's transaction, where PostgreSQL
//!   would queue every commit of the database on its one notification lock. A notification
//!   can be lost (an instance killed between its commit and its NOTIFY, a listener
//!   reconnecting), so every [`SWEEP_EVERY`] each instance compares the conversations it
//!   follows with their last seq in the database.
//! - SQLite shared by processes: each instance polls the message table's rowid every
//!   [`POLL_EVERY`] (one writer: rowids grow in commit order), and the status of the streamed
//!   replies it handed out while they were streaming (a finished one is pushed whole; their
//!   chunks, like typing, do not cross processes).
//!
//! Whatever the way, the missing messages are read by seq after the party's cursor and
//! handed to the hub in order, which pushes each once (see `hub`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::hub::{Delivery, Push};
use super::rules::{agent_state_of, typing_of, typing_word};
use crate::app::AppState;
use crate::db::{Backend, Conversation, Message, Window};

/// The PostgreSQL notification channel of the chat.
pub const CHANNEL: &str = "performchat_chat";
/// How often SQLite's message table is polled for other processes' messages.
pub const POLL_EVERY: Duration = Duration::from_millis(20);
/// How often, on PostgreSQL, followed conversations are checked for lost notifications.
pub const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// The most a NOTIFY payload carries (PostgreSQL refuses 8 000 bytes and more).
const PAYLOAD_MAX: usize = 7_900;
/// Messages read per round of a catch-up.
const READ_BATCH: i64 = 200;
/// Catch-ups run at once (each reads one conversation).
const CONCURRENT_READS: usize = 8;

/// Something another instance must hear of.
#[derive(Debug)]
enum Note {
    Message {
        ids: Ids,
        seq: i64,
    },
    /// A chunk of a streamed reply (the party's sockets only), `offset` characters into it.
    Delta {
        ids: Ids,
        seq: i64,
        message_id: String,
        offset: usize,
        text: String,
    },
    /// A streamed reply finished (complete or failed): read it again.
    Finished {
        ids: Ids,
        seq: i64,
    },
    Closed {
        ids: Ids,
    },
    /// The agent's side typing, for the user's sockets.
    Typing {
        ids: Ids,
        typing: bool,
    },
    /// What the agent's side is doing, for the user's sockets.
    AgentState {
        ids: Ids,
        state: &'static str,
    },
    /// The user typing, for the company's feeds.
    UserTyping {
        ids: Ids,
        typing: bool,
    },
}

/// Whose conversation a note is about.
#[derive(Clone, Debug)]
struct Ids {
    conversation_id: String,
    user_id: String,
    agent_id: String,
    company_id: String,
}

impl std::fmt::Display for Ids {
    /// As a notification line carries them.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.conversation_id, self.user_id, self.agent_id, self.company_id
        )
    }
}

impl From<&Conversation> for Ids {
    fn from(c: &Conversation) -> Self {
        Ids {
            conversation_id: c.id.clone(),
            user_id: c.user_id.clone(),
            agent_id: c.agent_id.clone(),
            company_id: c.company_id.clone(),
        }
    }
}

/// Read one message (announced by another instance) for the company's feeds here, and, for
/// a streamed reply that finished, for the user's sockets here too.
#[derive(Debug)]
struct FeedRead {
    company_id: String,
    agent_id: String,
    conversation_id: String,
    seq: i64,
    /// The user whose sockets get the message again (a finished stream), if any.
    again_for: Option<String>,
}

/// Who here has a streamed reply that is still streaming: its party (`user_id`, empty if
/// none) and the company's feeds (`company_id`, empty if none).
#[derive(Debug, Default)]
struct Watched {
    user_id: String,
    agent_id: String,
    company_id: String,
}

/// The most streamed replies one instance watches at once.
const WATCHED_MAX: usize = 10_000;

/// Read a conversation's messages up to `upto` for its party here.
#[derive(Clone, Debug)]
struct CatchUp {
    conversation_id: String,
    user_id: String,
    agent_id: String,
    upto: i64,
}

/// The fan-out task's ends of the queues, taken once by the composition root.
pub struct Receivers {
    catch_ups: mpsc::Receiver<CatchUp>,
    notes: mpsc::Receiver<Note>,
    feed_reads: mpsc::Receiver<FeedRead>,
}

/// The queues between the request paths and the fan-out task.
pub struct Fanout {
    /// Tells this instance's notifications from the others'.
    instance: String,
    catch_ups: mpsc::Sender<CatchUp>,
    notes: mpsc::Sender<Note>,
    feed_reads: mpsc::Sender<FeedRead>,
    /// A queue overflowed: check every followed conversation.
    sweep_needed: AtomicBool,
    /// SQLite: streamed replies handed to sockets or feeds here from the database, by id,
    /// watched by the poll until they finish (see [`Fanout::watch`]).
    streams: Mutex<HashMap<String, Watched>>,
    receivers: Mutex<Option<Receivers>>,
}

impl Default for Fanout {
    fn default() -> Self {
        let (catch_ups, catch_up_rx) = mpsc::channel(4096);
        let (notes, note_rx) = mpsc::channel(4096);
        let (feed_reads, feed_read_rx) = mpsc::channel(4096);
        Fanout {
            instance: cuid2::create_id(),
            catch_ups,
            notes,
            feed_reads,
            sweep_needed: AtomicBool::new(false),
            streams: Mutex::new(HashMap::new()),
            receivers: Mutex::new(Some(Receivers {
                catch_ups: catch_up_rx,
                notes: note_rx,
                feed_reads: feed_read_rx,
            })),
        }
    }
}

impl Fanout {
    /// The queues' receiving ends: `Some` once.
    pub fn take_receivers(&self) -> Option<Receivers> {
        self.receivers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    fn catch_up(&self, job: CatchUp) {
        if self.catch_ups.try_send(job).is_err() {
            self.sweep_later();
        }
    }

    /// The feeds of the company want a message stored elsewhere. Feeds are live views
    /// without catch-up: one dropped here (a full queue) is found by the company's next
    /// `updatedSince` sync.
    fn read_for_feeds(&self, ids: &Ids, seq: i64) {
        self.read(ids, seq, None);
    }

    fn read(&self, ids: &Ids, seq: i64, again_for: Option<String>) {
        let read = FeedRead {
            company_id: ids.company_id.clone(),
            agent_id: ids.agent_id.clone(),
            conversation_id: ids.conversation_id.clone(),
            seq,
            again_for,
        };
        if self.feed_reads.try_send(read).is_err() {
            tracing::debug!("feed read queue full: a message skips the company's live feed");
        }
    }

    /// SQLite: a streaming reply read from the database reached a party (`user_id`) or the
    /// feeds (`company_id`) here. Another process may grow and finish it, and processes
    /// sharing a file hear of nothing but new rows: the poll reads the watched replies'
    /// status and hands each finished one to whoever here had it, as it does a new message.
    fn watch(
        &self,
        message: &Message,
        user_id: Option<&str>,
        agent_id: &str,
        company_id: Option<&str>,
    ) {
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        if streams.len() >= WATCHED_MAX && !streams.contains_key(&message.id) {
            tracing::debug!("too many streamed replies watched: one shows when read again");
            return;
        }
        let w = streams.entry(message.id.clone()).or_default();
        w.agent_id = agent_id.to_owned();
        if let Some(user_id) = user_id {
            w.user_id = user_id.to_owned();
        }
        if let Some(company_id) = company_id {
            w.company_id = company_id.to_owned();
        }
    }

    /// Asks the fan-out task to compare every followed conversation with the database.
    fn sweep_later(&self) {
        self.sweep_needed.store(true, Ordering::Release);
    }

    fn note(&self, state: &AppState, note: Note) {
        // Only PostgreSQL has listeners; SQLite's other processes poll.
        if state.db.backend() == Backend::Postgres && self.notes.try_send(note).is_err() {
            // The others' sweep finds it.
            tracing::debug!("chat notification queue full; other instances catch up by sweep");
        }
    }
}

/// A message was committed here: push it to this instance's sockets and feeds, and tell the
/// others.
pub fn committed(state: &AppState, conversation: &Conversation, message: &Message) {
    let chat = &state.chat;
    match chat
        .hub
        .deliver(&conversation.user_id, &conversation.agent_id, message)
    {
        Delivery::Pushed(_) => state
            .metrics
            .chat_delivered("local", state.clock.now_ms() - message.created_at),
        // A message committed just before this one has not reached the hub yet (or was
        // committed elsewhere): read them in order.
        Delivery::Gap(_) => chat.fanout.catch_up(CatchUp {
            conversation_id: conversation.id.clone(),
            user_id: conversation.user_id.clone(),
            agent_id: conversation.agent_id.clone(),
            upto: message.seq,
        }),
        Delivery::Repeat | Delivery::NoParty => {}
    }
    // On SQLite the poll hands every stored message to the feeds (this process's too), so
    // this one would be there twice.
    if state.db.backend() == Backend::Postgres {
        message_to_feeds(
            state,
            &conversation.company_id,
            &conversation.agent_id,
            message,
        );
    }
    chat.fanout.note(
        state,
        Note::Message {
            ids: conversation.into(),
            seq: message.seq,
        },
    );
}

/// A message for the company's feeds here, if any follows it.
fn message_to_feeds(state: &AppState, company_id: &str, agent_id: &str, message: &Message) {
    if state.chat.hub.has_feed(company_id) {
        let push = Arc::new(Push::Message {
            conversation_id: message.conversation_id.clone(),
            message: message.clone(),
        });
        state.chat.hub.to_feeds(company_id, agent_id, &push);
    }
}

/// A streamed reply grew here by `appended` (and finished, if its status says so): the
/// chunk to the user's sockets as a `delta`, the finished reply as its final `message`
/// (to the company's feeds too), here and elsewhere.
pub fn grown(state: &AppState, conversation: &Conversation, message: &Message, appended: &str) {
    if !appended.is_empty() {
        // Where the chunk starts in the reply, in characters: a socket that read the reply
        // after this chunk was stored (and then gets its push) knows it has it already.
        let offset = message.text.chars().count() - appended.chars().count();
        delta(state, conversation, message, offset, appended);
    }
    if message.status != "streaming" {
        let ids = Ids::from(conversation);
        message_again(state, &ids.user_id, &ids.agent_id, message);
        // On SQLite the poll hands the finished reply to the feeds (this process's too), as
        // it does every new message.
        if state.db.backend() == Backend::Postgres {
            message_to_feeds(state, &ids.company_id, &ids.agent_id, message);
        }
        let seq = message.seq;
        state.chat.fanout.note(state, Note::Finished { ids, seq });
    }
}

/// A streamed reply grew by `text`, `offset` characters into it: the chunk to the user's
/// sockets as a `delta`, here and elsewhere.
pub fn delta(
    state: &AppState,
    conversation: &Conversation,
    message: &Message,
    mut offset: usize,
    text: &str,
) {
    let ids = Ids::from(conversation);
    push_delta(state, &ids, message.seq, &message.id, offset, text);
    for text in pieces(text, DELTA_PIECE) {
        state.chat.fanout.note(
            state,
            Note::Delta {
                ids: ids.clone(),
                seq: message.seq,
                message_id: message.id.clone(),
                offset,
                text: text.to_owned(),
            },
        );
        offset += text.chars().count();
    }
}

fn push_delta(state: &AppState, ids: &Ids, seq: i64, message_id: &str, offset: usize, text: &str) {
    // Known here until stored or finished, for a reader mid-reply.
    state.chat.live.grew(message_id, offset, text);
    let push = Arc::new(Push::Delta {
        conversation_id: ids.conversation_id.clone(),
        message_id: message_id.to_owned(),
        offset,
        text: text.to_owned(),
    });
    state.chat.hub.to_party_after(
        &ids.user_id,
        &ids.agent_id,
        &ids.conversation_id,
        seq,
        &push,
    );
}

/// A message the user's sockets already have, in its new form (a finished stream).
fn message_again(state: &AppState, user_id: &str, agent_id: &str, message: &Message) {
    state.chat.live.finished(&message.id);
    let push = Arc::new(Push::Message {
        conversation_id: message.conversation_id.clone(),
        message: message.clone(),
    });
    state.chat.hub.to_party_after(
        user_id,
        agent_id,
        &message.conversation_id,
        message.seq,
        &push,
    );
}

/// The most bytes of a chunk one notification line carries: JSON-escaped, a piece grows at
/// most sixfold (`\u001f`-style escapes), which with the ids stays under [`PAYLOAD_MAX`].
const DELTA_PIECE: usize = 1_200;

/// `text` in pieces of at most `max` bytes, cut between characters.
fn pieces(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

/// A conversation was closed here: tell its sockets and feeds, here and elsewhere.
pub fn closed(state: &AppState, conversation: &Conversation) {
    let ids = Ids::from(conversation);
    push_closed(state, &ids);
    state.chat.fanout.note(state, Note::Closed { ids });
}

fn push_closed(state: &AppState, ids: &Ids) {
    let push = Arc::new(Push::ConversationClosed {
        conversation_id: ids.conversation_id.clone(),
    });
    let hub = &state.chat.hub;
    hub.to_party(&ids.user_id, &ids.agent_id, &push);
    hub.to_feeds(&ids.company_id, &ids.agent_id, &push);
}

/// The agent's side started or stopped typing: tell the user's sockets, here and elsewhere.
pub fn typing(state: &AppState, conversation: &Conversation, typing: bool) {
    let ids = Ids::from(conversation);
    push_typing(state, &ids, typing);
    state.chat.fanout.note(state, Note::Typing { ids, typing });
}

/// The agent's side changed what it is doing (see `rules::AGENT_STATES`): tell the user's
/// sockets, here and elsewhere.
pub fn agent_state(state: &AppState, conversation: &Conversation, word: &'static str) {
    let ids = Ids::from(conversation);
    push_agent_state(state, &ids, word);
    state
        .chat
        .fanout
        .note(state, Note::AgentState { ids, state: word });
}

fn push_agent_state(state: &AppState, ids: &Ids, word: &'static str) {
    let push = Arc::new(Push::AgentState {
        conversation_id: ids.conversation_id.clone(),
        state: word,
    });
    state.chat.hub.to_party(&ids.user_id, &ids.agent_id, &push);
}

fn push_typing(state: &AppState, ids: &Ids, typing: bool) {
    let push = Arc::new(Push::Typing {
        conversation_id: ids.conversation_id.clone(),
        typing,
    });
    state.chat.hub.to_party(&ids.user_id, &ids.agent_id, &push);
}

/// The user started or stopped typing: tell the company's feeds, here and elsewhere.
pub fn user_typing(state: &AppState, conversation: &Conversation, typing: bool) {
    let ids = Ids::from(conversation);
    push_user_typing(state, &ids, typing);
    state
        .chat
        .fanout
        .note(state, Note::UserTyping { ids, typing });
}

fn push_user_typing(state: &AppState, ids: &Ids, typing: bool) {
    let push = Arc::new(Push::UserTyping {
        conversation_id: ids.conversation_id.clone(),
        user_id: ids.user_id.clone(),
        typing,
    });
    state
        .chat
        .hub
        .to_feeds(&ids.company_id, &ids.agent_id, &push);
}

/// Starts the fan-out's tasks: the catch-up loop, the reader of other instances' messages for
/// the company feeds here, and on PostgreSQL the sender of this instance's notifications and
/// the listener for the others'.
pub fn spawn(state: &AppState, tasks: &tokio_util::task::TaskTracker, stop: &CancellationToken) {
    let Some(Receivers {
        catch_ups,
        notes,
        feed_reads,
    }) = state.chat.fanout.take_receivers()
    else {
        return;
    };
    tasks.spawn(run(state.clone(), catch_ups, stop.clone()));
    tasks.spawn(read_for_feeds(state.clone(), feed_reads, stop.clone()));
    if state.db.backend() == Backend::Postgres {
        tasks.spawn(send_notes(state.clone(), notes, stop.clone()));
        tasks.spawn(listen(state.clone(), stop.clone()));
    }
}

/// Catches up conversations whose messages this instance's sockets miss (after a gap, a
/// notification, SQLite's poll or PostgreSQL's sweep).
async fn run(state: AppState, mut catch_ups: mpsc::Receiver<CatchUp>, stop: CancellationToken) {
    let sqlite = state.db.backend() == Backend::Sqlite;
    let mut rowid = None;
    let mut tick = tokio::time::interval(if sqlite { POLL_EVERY } else { SWEEP_EVERY });
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = catch_ups.recv_many(&mut batch, 1024) => if n == 0 { return },
            _ = tick.tick() => {
                if sqlite {
                    poll_sqlite(&state, &mut rowid).await;
                    poll_streams(&state).await;
                } else {
                    state.chat.fanout.sweep_later();
                }
            }
        }
        if state.chat.fanout.sweep_needed.swap(false, Ordering::AcqRel) {
            sweep(&state).await;
        }
        // Pick up what queued meanwhile (a sweep's or a poll's catch-ups).
        while let Ok(job) = catch_ups.try_recv() {
            batch.push(job);
        }
        // One read per conversation, up to the highest seq asked for.
        let mut wanted: HashMap<String, CatchUp> = HashMap::new();
        for job in batch.drain(..) {
            match wanted.get_mut(&job.conversation_id) {
                Some(w) => w.upto = w.upto.max(job.upto),
                None => {
                    wanted.insert(job.conversation_id.clone(), job);
                }
            }
        }
        let mut reads = tokio::task::JoinSet::new();
        for job in wanted.into_values() {
            if reads.len() >= CONCURRENT_READS {
                reads.join_next().await;
            }
            reads.spawn(catch_up(state.clone(), job));
        }
        while reads.join_next().await.is_some() {}
    }
}

/// Reads the messages other instances stored for the company feeds that follow them here.
async fn read_for_feeds(
    state: AppState,
    mut reads: mpsc::Receiver<FeedRead>,
    stop: CancellationToken,
) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = reads.recv_many(&mut batch, 256) => if n == 0 { return },
        }
        for read in batch.drain(..) {
            let window = Window::After(read.seq - 1);
            match state
                .db
                .list_messages(&read.conversation_id, window, 1)
                .await
            {
                Ok((messages, _)) => {
                    for message in messages.iter().filter(|m| m.seq == read.seq) {
                        if message.status == "streaming" && state.db.backend() == Backend::Sqlite {
                            state.chat.fanout.watch(
                                message,
                                None,
                                &read.agent_id,
                                Some(&read.company_id),
                            );
                        }
                        message_to_feeds(&state, &read.company_id, &read.agent_id, message);
                        if let Some(user_id) = &read.again_for {
                            message_again(&state, user_id, &read.agent_id, message);
                        }
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot read a message for the feeds"),
            }
        }
    }
}

/// Reads a conversation after its party's cursor and hands the messages to the hub in order.
async fn catch_up(state: AppState, job: CatchUp) {
    let hub = &state.chat.hub;
    loop {
        let Some(cursor) = hub.cursor(&job.user_id, &job.agent_id, &job.conversation_id) else {
            return;
        };
        if cursor >= job.upto {
            return;
        }
        let mut messages = match state
            .db
            .list_messages(&job.conversation_id, Window::After(cursor), READ_BATCH)
            .await
        {
            Ok((messages, _)) => messages,
            Err(e) => {
                // Tried again by the next sweep or poll; a client may also ask `history`.
                tracing::warn!(error = %e, "cannot read messages to deliver");
                state.chat.fanout.sweep_later();
                return;
            }
        };
        let Some(last) = messages.last().map(|m| m.seq) else {
            return;
        };
        // A streamed reply mid-way: with the text pushed since its last checkpoint.
        state.chat.live.fill(&mut messages);
        let now = state.clock.now_ms();
        let sqlite = state.db.backend() == Backend::Sqlite;
        for message in &messages {
            match hub.deliver(&job.user_id, &job.agent_id, message) {
                Delivery::Pushed(_) => {
                    state
                        .metrics
                        .chat_delivered("database", now - message.created_at);
                    if sqlite && message.status == "streaming" {
                        state
                            .chat
                            .fanout
                            .watch(message, Some(&job.user_id), &job.agent_id, None);
                    }
                }
                Delivery::Repeat => {}
                Delivery::Gap(_) | Delivery::NoParty => return,
            }
        }
        if (messages.len() as i64) < READ_BATCH && last < job.upto {
            // Erased meanwhile: nothing more to read.
            return;
        }
    }
}

/// SQLite: hands every message committed since the last poll (by any process) to the
/// catch-up, for the parties here.
async fn poll_sqlite(state: &AppState, seen: &mut Option<i64>) {
    let last = match state.db.last_message_rowid().await {
        Ok(Some(last)) => last,
        Ok(None) => return,
        Err(e) => {
            tracing::debug!(error = %e, "cannot poll for messages");
            return;
        }
    };
    let from = match *seen {
        // Nobody here to deliver to, or the first poll: start from now.
        Some(from) if state.chat.hub.sockets() > 0 || state.chat.hub.feeds() > 0 => from,
        _ => {
            *seen = Some(last);
            return;
        }
    };
    if last <= from {
        // The newest messages were erased: rowids below `from` will be used again.
        *seen = Some(last);
        return;
    }
    match state.db.messages_after_rowid(from, 4 * READ_BATCH).await {
        Ok(rows) => {
            for (rowid, conversation_id, user_id, agent_id, company_id, seq) in rows {
                *seen = Some(rowid);
                if state.chat.hub.has_feed(&company_id) {
                    let ids = Ids {
                        conversation_id: conversation_id.clone(),
                        user_id: user_id.clone(),
                        agent_id: agent_id.clone(),
                        company_id,
                    };
                    state.chat.fanout.read_for_feeds(&ids, seq);
                }
                if state.chat.hub.has_party(&user_id, &agent_id) {
                    state.chat.fanout.catch_up(CatchUp {
                        conversation_id,
                        user_id,
                        agent_id,
                        upto: seq,
                    });
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot poll for messages"),
    }
}

/// SQLite: hands the watched streamed replies that finished (in any process) to whoever
/// here had them; forgets those nobody here follows any more.
async fn poll_streams(state: &AppState) {
    let fanout = &state.chat.fanout;
    let ids: Vec<String> = {
        let mut streams = fanout.streams.lock().unwrap_or_else(|e| e.into_inner());
        let hub = &state.chat.hub;
        streams.retain(|_, w| {
            (!w.user_id.is_empty() && hub.has_party(&w.user_id, &w.agent_id))
                || (!w.company_id.is_empty() && hub.has_feed(&w.company_id))
        });
        streams.keys().take(500).cloned().collect()
    };
    if ids.is_empty() {
        return;
    }
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    match state.db.finished_among(&ids).await {
        Ok(finished) => {
            for message in finished {
                let watched = fanout
                    .streams
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&message.id);
                let Some(w) = watched else { continue };
                if !w.user_id.is_empty() {
                    message_again(state, &w.user_id, &w.agent_id, &message);
                }
                if !w.company_id.is_empty() {
                    message_to_feeds(state, &w.company_id, &w.agent_id, &message);
                }
            }
        }
        Err(e) => tracing::debug!(error = %e, "cannot poll streamed replies"),
    }
}

/// Compares every conversation followed here with its last seq in the database; catches up
/// those behind.
async fn sweep(state: &AppState) {
    let followed = state.chat.hub.followed();
    for chunk in followed.chunks(500) {
        let ids: Vec<String> = chunk.iter().map(|f| f.0.clone()).collect();
        let seqs: HashMap<String, i64> = match state.db.conversation_seqs(&ids).await {
            Ok(rows) => rows.into_iter().collect(),
            Err(e) => {
                tracing::debug!(error = %e, "cannot sweep followed conversations");
                state.chat.fanout.sweep_later();
                return;
            }
        };
        for (conversation_id, user_id, agent_id, cursor) in chunk {
            if let Some(&last) = seqs.get(conversation_id)
                && last > *cursor
            {
                state.chat.fanout.catch_up(CatchUp {
                    conversation_id: conversation_id.clone(),
                    user_id: user_id.to_string(),
                    agent_id: agent_id.to_string(),
                    upto: last,
                });
            }
        }
    }
}

/// PostgreSQL: sends this instance's notes in batches, as many lines per NOTIFY as fit.
async fn send_notes(state: AppState, mut notes: mpsc::Receiver<Note>, stop: CancellationToken) {
    let mut batch = Vec::new();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            n = notes.recv_many(&mut batch, 512) => if n == 0 { return },
        }
        for payload in payloads(&state.chat.fanout.instance, batch.drain(..)) {
            if let Err(e) = state.db.notify(CHANNEL, &payload).await {
                // The other instances' sweep delivers what this one could not announce.
                tracing::debug!(error = %e, "cannot send a chat notification");
            }
        }
    }
}

/// Notes as NOTIFY payloads: the instance's id on the first line, a note per line after it,
/// each payload under [`PAYLOAD_MAX`] bytes.
fn payloads(instance: &str, notes: impl Iterator<Item = Note>) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    for note in notes {
        let line = match note {
            Note::Message { ids, seq } => format!("m {ids} {seq}"),
            Note::Delta {
                ids,
                seq,
                message_id,
                offset,
                text,
            } => format!(
                "d {ids} {seq} {message_id} {offset} {}",
                serde_json::Value::String(text)
            ),
            Note::Finished { ids, seq } => format!("f {ids} {seq}"),
            Note::Closed { ids } => format!("c {ids}"),
            Note::Typing { ids, typing } => format!("t {ids} {}", typing_word(typing)),
            Note::UserTyping { ids, typing } => format!("u {ids} {}", typing_word(typing)),
            Note::AgentState { ids, state } => format!("a {ids} {state}"),
        };
        if !current.is_empty() && current.len() + 1 + line.len() > PAYLOAD_MAX {
            out.push(std::mem::take(&mut current));
        }
        if current.is_empty() {
            current.push_str(instance);
        }
        current.push('\n');
        current.push_str(&line);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// PostgreSQL: listens for the other instances' notes. On every (re)connection it sweeps,
/// for what was announced while it was not listening.
async fn listen(state: AppState, stop: CancellationToken) {
    let db = state.db.clone();
    db.listen(
        CHANNEL,
        stop,
        || state.chat.fanout.sweep_later(),
        |payload| heard(&state, payload),
    )
    .await;
}

/// Acts on another instance's payload.
fn heard(state: &AppState, payload: &str) {
    let mut lines = payload.lines();
    if lines.next() == Some(state.chat.fanout.instance.as_str()) {
        return;
    }
    for line in lines {
        if let Some(delta) = line.strip_prefix("d ") {
            heard_delta(state, delta);
            continue;
        }
        let fields: Vec<&str> = line.split(' ').collect();
        let (kind, ids, rest) = match fields.as_slice() {
            [kind, conversation, user, agent, company, rest @ ..] => (
                *kind,
                Ids {
                    conversation_id: (*conversation).to_owned(),
                    user_id: (*user).to_owned(),
                    agent_id: (*agent).to_owned(),
                    company_id: (*company).to_owned(),
                },
                rest,
            ),
            _ => {
                tracing::debug!("unreadable chat notification line");
                continue;
            }
        };
        match (kind, rest) {
            ("m", [seq]) => {
                let Ok(seq) = seq.parse::<i64>() else {
                    continue;
                };
                let hub = &state.chat.hub;
                if hub.has_feed(&ids.company_id) {
                    state.chat.fanout.read_for_feeds(&ids, seq);
                }
                if hub.has_party(&ids.user_id, &ids.agent_id) {
                    state.chat.fanout.catch_up(CatchUp {
                        conversation_id: ids.conversation_id,
                        user_id: ids.user_id,
                        agent_id: ids.agent_id,
                        upto: seq,
                    });
                }
            }
            ("f", [seq]) => {
                let Ok(seq) = seq.parse::<i64>() else {
                    continue;
                };
                let hub = &state.chat.hub;
                let party = hub.has_party(&ids.user_id, &ids.agent_id);
                if party || hub.has_feed(&ids.company_id) {
                    let again_for = party.then(|| ids.user_id.clone());
                    state.chat.fanout.read(&ids, seq, again_for);
                }
            }
            ("c", []) => push_closed(state, &ids),
            ("t", [word]) if let Some(typing) = typing_of(Some(word)) => {
                push_typing(state, &ids, typing)
            }
            ("u", [word]) if let Some(typing) = typing_of(Some(word)) => {
                push_user_typing(state, &ids, typing)
            }
            ("a", [word]) if let Some(word) = agent_state_of(word) => {
                push_agent_state(state, &ids, word)
            }
            _ => tracing::debug!("unreadable chat notification line"),
        }
    }
}

/// `<conversation> <user> <agent> <company> <seq> <messageId> <offset> <text as a JSON
/// string>`.
fn heard_delta(state: &AppState, line: &str) {
    let fields: Vec<&str> = line.splitn(8, ' ').collect();
    let [
        conversation,
        user,
        agent,
        company,
        seq,
        message_id,
        offset,
        text,
    ] = fields.as_slice()
    else {
        tracing::debug!("unreadable chat notification line");
        return;
    };
    let (Ok(seq), Ok(offset), Ok(text)) = (
        seq.parse::<i64>(),
        offset.parse::<usize>(),
        serde_json::from_str::<String>(text),
    ) else {
        tracing::debug!("unreadable chat notification line");
        return;
    };
    let ids = Ids {
        conversation_id: (*conversation).to_owned(),
        user_id: (*user).to_owned(),
        agent_id: (*agent).to_owned(),
        company_id: (*company).to_owned(),
    };
    push_delta(state, &ids, seq, message_id, offset, &text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_cut_between_characters() {
        let text = "héllo wörld ".repeat(300);
        let parts: Vec<&str> = pieces(&text, 1_200).collect();
        assert!(parts.len() > 1);
        assert!(parts.iter().all(|p| p.len() <= 1_200 && !p.is_empty()));
        assert_eq!(parts.concat(), text);
        assert_eq!(pieces("", 10).count(), 0);
    }

    #[test]
    fn payloads_stay_under_the_notify_limit_and_keep_every_note() {
        let notes = (0..500).map(|i| Note::Message {
            ids: Ids {
                conversation_id: format!("conv_{i:024}"),
                user_id: format!("usr_{i:024}"),
                agent_id: format!("agt_{i:024}"),
                company_id: format!("co_{i:024}"),
            },
            seq: i,
        });
        let out = payloads("inst", notes);
        assert!(out.len() > 1);
        let mut lines = 0;
        for p in &out {
            assert!(p.len() <= PAYLOAD_MAX, "{}", p.len());
            assert!(p.starts_with("inst\nm "));
            lines += p.lines().count() - 1;
        }
        assert_eq!(lines, 500);
    }
}
