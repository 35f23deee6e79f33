//! The sockets this instance holds, and delivery to them. What happened is queued once, as
//! one shared [`Push`], to every socket of its party (one user talking with one agent); a
//! socket whose queue is full is closed (4009) rather than let grow. A change to what
//! verification accepts pokes the sockets it may concern, and each checks its own token again
//! (`token::check_alive`), so the rules of who may stay connected live in one place.
//!
//! Messages reach a party in `seq` order, each once: the party keeps, per conversation, the
//! highest seq it was given (its cursor). A message right after the cursor is pushed; one
//! at or below it is a repeat and dropped; one further on reveals a gap, which the caller
//! fills from the database (`fanout`) before pushing it. So concurrent commits, other
//! instances and lost notifications can delay a message, never reorder, repeat or drop it.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;

use crate::auth::jwt::Claims;
use crate::db::Message;
use crate::token::TokenEvent;

/// Something a user's sockets must hear of.
#[derive(Debug)]
pub enum Push {
    Message {
        conversation_id: String,
        message: Message,
    },
    /// A chunk appended to a streamed reply the party already has, `offset` characters into
    /// its text.
    Delta {
        conversation_id: String,
        message_id: String,
        offset: usize,
        text: String,
    },
    ConversationClosed {
        conversation_id: String,
    },
    /// The agent's side started (`true`) or stopped typing.
    Typing {
        conversation_id: String,
        typing: bool,
    },
    /// What the agent's side is doing (`handoff`, `human`, `bot`, …), for the user's sockets.
    AgentState {
        conversation_id: String,
        state: &'static str,
    },
    /// The user started or stopped typing (for the company's feed).
    UserTyping {
        conversation_id: String,
        user_id: String,
        typing: bool,
    },
}

/// Frames a socket's queue holds before the socket counts as too slow.
pub const QUEUE: usize = 256;

/// One socket's side of the hub.
pub struct Socket {
    pub id: u64,
    pub control: Arc<Control>,
}

/// What the hub (or a token event) gives a socket: its queue of pushes, a close request, a
/// request to check its token again, its timer. Every idle socket keeps one, so it is kept
/// small (104 bytes with its reference counts): a `VecDeque` under a mutex rather than a
/// channel (a tokio channel holds about a kilobyte per socket, in cache-padded halves and a
/// first block of slots); one waker and a flag for all that wakes the reader rather than a
/// `Notify` each; a deadline that the hub's one timer checks ([`Hub::fire_due_timers`])
/// rather than a timer per socket.
pub struct Control {
    /// A close code the socket must close with (0: none).
    close: AtomicU16,
    /// Check the token again: something it depends on changed (see [`Control::take_recheck`]).
    recheck: AtomicBool,
    /// The socket's deadline passed (see [`Control::take_timer`]).
    timer: AtomicBool,
    /// Something for the reader: a push queued, a token check, a close, the timer.
    signal: AtomicBool,
    waker: AtomicWaker,
    queue: Mutex<VecDeque<Arc<Push>>>,
    /// When the socket's timer is due, in milliseconds of [`Hub::now_ms`] (`u64::MAX`: not
    /// set, or fired).
    due: AtomicU64,
    /// Token checks the socket has finished ([`Control::GONE`] once it is closed and its
    /// close frame sent): what [`Hub::settle`] waits on.
    checks: AtomicU64,
}

impl Default for Control {
    fn default() -> Self {
        Control {
            close: AtomicU16::new(0),
            recheck: AtomicBool::new(false),
            timer: AtomicBool::new(false),
            signal: AtomicBool::new(false),
            waker: AtomicWaker::new(),
            queue: Mutex::default(),
            due: AtomicU64::new(u64::MAX),
            checks: AtomicU64::new(0),
        }
    }
}

impl Control {
    const GONE: u64 = u64::MAX;

    /// Wakes the reader; what for, it reads from the flags and the queue.
    fn signal(&self) {
        self.signal.store(true, Ordering::Release);
        self.waker.wake();
    }

    /// Resolves once the socket was signalled since the last time it resolved: a push
    /// queued, a token check asked for, a close code set, or the timer due.
    pub fn signalled(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.signal.swap(false, Ordering::AcqRel) {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            match self.signal.swap(false, Ordering::AcqRel) {
                true => Poll::Ready(()),
                false => Poll::Pending,
            }
        })
    }

    /// Pokes the socket; what to pass to [`Hub::checked_since`].
    fn poke(&self) -> u64 {
        let before = self.checks.load(Ordering::Acquire);
        self.ask_recheck();
        before
    }

    fn ask_recheck(&self) {
        self.recheck.store(true, Ordering::Release);
        self.signal();
    }

    /// Whether a token check was asked for since the last call.
    pub fn take_recheck(&self) -> bool {
        self.recheck.swap(false, Ordering::AcqRel)
    }

    /// Sets the socket's timer: it is signalled, and [`Control::take_timer`] tells, once
    /// `at` (in milliseconds of [`Hub::now_ms`]) has passed.
    pub fn set_timer(&self, at: u64) {
        self.due.store(at, Ordering::Release);
    }

    /// Whether the timer fired since the last call.
    pub fn take_timer(&self) -> bool {
        self.timer.swap(false, Ordering::AcqRel)
    }

    fn fire_if_due(&self, now: u64) {
        let due = self.due.load(Ordering::Acquire);
        // A deadline set meanwhile by the socket stays.
        if due <= now
            && self
                .due
                .compare_exchange(due, u64::MAX, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            self.timer.store(true, Ordering::Release);
            self.signal();
        }
    }

    /// Takes everything queued, oldest first.
    pub fn take_pushes(&self) -> VecDeque<Arc<Push>> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Queues a push; when the queue is full, asks its reader to close as too slow instead
    /// and returns false.
    fn offer(&self, push: &Arc<Push>) -> bool {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if queue.len() >= QUEUE {
            drop(queue);
            self.close(TOO_SLOW);
            return false;
        }
        queue.push_back(push.clone());
        drop(queue);
        self.signal();
        true
    }

    pub fn close_code(&self) -> Option<u16> {
        match self.close.load(Ordering::Acquire) {
            0 => None,
            code => Some(code),
        }
    }

    fn close(&self, code: u16) {
        let _ = self
            .close
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire);
        self.signal();
    }

    /// Resolves once a close code is set: a socket blocked writing to a client that reads
    /// nothing stops waiting, and closes.
    pub fn closing(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| {
            if self.close_code().is_some() {
                return Poll::Ready(());
            }
            self.waker.register(cx.waker());
            match self.close_code() {
                Some(_) => Poll::Ready(()),
                None => Poll::Pending,
            }
        })
    }
}

struct Entry {
    user_id: Arc<str>,
    agent_id: Arc<str>,
    /// The token's jti, hashed (see [`jti_hash`]).
    jti: u64,
    control: Arc<Control>,
}

/// A jti as the hub keeps it: which socket a revoked token may be is all the hub needs to
/// know, and the socket checks its own token.
fn jti_hash(jti: &str) -> u64 {
    use std::hash::{BuildHasher as _, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(jti)
}

/// One user talking with one agent: the sockets, and how far each conversation has been
/// delivered to them.
struct Party {
    agent_id: Arc<str>,
    sockets: Vec<u64>,
    /// Conversation id → the highest seq pushed (or, for the conversations open when the
    /// party's first socket joined, their last seq then). A conversation missing here was
    /// made after that: everything in it is still to deliver.
    cursors: Cursors,
}

/// Conversation id → the highest seq pushed: a short list (a party follows one open
/// conversation at a time, and the few it saw closed), 24 bytes where a map is 48.
#[derive(Default)]
struct Cursors(Vec<(Box<str>, i64)>);

impl Cursors {
    fn get(&self, conversation_id: &str) -> Option<i64> {
        self.0
            .iter()
            .find(|(c, _)| **c == *conversation_id)
            .map(|(_, seq)| *seq)
    }

    /// The conversation's cursor, from 0 if it has none yet.
    fn get_mut(&mut self, conversation_id: &str) -> &mut i64 {
        let at = match self.0.iter().position(|(c, _)| **c == *conversation_id) {
            Some(at) => at,
            None => {
                self.0.push((conversation_id.into(), 0));
                self.0.len() - 1
            }
        };
        &mut self.0[at].1
    }

    fn iter(&self) -> impl Iterator<Item = (&str, i64)> {
        self.0.iter().map(|(c, seq)| (&**c, *seq))
    }
}

#[derive(Default)]
struct Inner {
    sockets: HashMap<u64, Entry>,
    /// User → their parties, one per agent: nearly always one, so a short list rather than
    /// a map of agents (a map per user was a few hundred bytes of each idle socket).
    parties: HashMap<Arc<str>, Vec<Party>>,
    feeds: HashMap<u64, Feed>,
    feeds_by_company: HashMap<Arc<str>, Vec<u64>>,
}

impl Inner {
    fn party(&self, user_id: &str, agent_id: &str) -> Option<&Party> {
        let parties = self.parties.get(user_id)?;
        parties.iter().find(|p| &*p.agent_id == agent_id)
    }

    fn party_mut(&mut self, user_id: &str, agent_id: &str) -> Option<&mut Party> {
        let parties = self.parties.get_mut(user_id)?;
        parties.iter_mut().find(|p| &*p.agent_id == agent_id)
    }

    /// The sockets whose tokens a token event may have killed: the user's, the token's, or,
    /// for the rare events about keys, agents, companies and signing keys, all of them.
    fn concerned(&self, event: &TokenEvent) -> Vec<u64> {
        match event {
            TokenEvent::UserInvalidated { user_id, .. } => self
                .parties
                .get(user_id.as_str())
                .into_iter()
                .flatten()
                .flat_map(|party| party.sockets.iter().copied())
                .collect(),
            // A scan rather than a map of jtis (a map entry and a copy of the jti were about
            // 100 bytes of every socket): a revoked token is rare. A hash that matches by
            // chance only makes a socket check its token once more.
            TokenEvent::TokenRevoked { jti } => {
                let jti = jti_hash(jti);
                self.sockets
                    .iter()
                    .filter(|(_, e)| e.jti == jti)
                    .map(|(id, _)| *id)
                    .collect()
            }
            TokenEvent::KeyRevoked { .. }
            | TokenEvent::AgentActive { active: false, .. }
            | TokenEvent::CompanyActive { active: false, .. }
            | TokenEvent::SigningKeysChanged => self.sockets.keys().copied().collect(),
            TokenEvent::AgentActive { active: true, .. }
            | TokenEvent::CompanyActive { active: true, .. } => Vec::new(),
        }
    }
}

/// A company's live feed (`GET /rest/v1/agent/events`): what it follows, and its queue.
struct Feed {
    company_id: Arc<str>,
    agent_id: Option<Box<str>>,
    key_id: Box<str>,
    control: Arc<Control>,
}

/// What became of a message handed to [`Hub::deliver`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// Queued to this many sockets.
    Pushed(usize),
    /// Delivered before (or committed before the party joined): dropped.
    Repeat,
    /// Messages after this seq are missing before it: read them first.
    Gap(i64),
    /// Nobody here talks in that conversation.
    NoParty,
}

pub struct Hub {
    next_id: AtomicU64,
    inner: Mutex<Inner>,
    /// What [`Hub::now_ms`] counts from.
    epoch: std::time::Instant,
    /// A socket finished a token check, or closed: told only while some [`Hub::settle`]
    /// waits (`settling`), so that the sockets' checks do not take a lock each.
    checked: Notify,
    settling: AtomicU64,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            next_id: AtomicU64::new(0),
            inner: Mutex::default(),
            epoch: std::time::Instant::now(),
            checked: Notify::new(),
            settling: AtomicU64::new(0),
        }
    }
}

/// How often the hub's timer looks for sockets whose deadline passed.
pub const TIMER_TICK: std::time::Duration = std::time::Duration::from_millis(250);

/// The close code of a socket whose queue overflowed.
pub const TOO_SLOW: u16 = 4009;
/// The close code of what a revoked key or a deactivated company may no longer follow.
pub const ACCESS_REVOKED: u16 = 4003;

impl Hub {
    /// Milliseconds since the hub was made, on the monotonic clock: what socket timers
    /// are set in.
    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Signals every socket whose timer is due. Run every [`TIMER_TICK`] by the server: one
    /// pass over this instance's sockets instead of a timer in each (a tokio `Sleep` was
    /// 112 bytes of every idle socket's task).
    pub fn fire_due_timers(&self) {
        let now = self.now_ms();
        let inner = self.lock();
        for e in inner.sockets.values() {
            e.control.fire_if_due(now);
        }
    }

    /// The socket finished a token check and is still open.
    pub fn checked_once(&self, control: &Control) {
        let _ = control
            .checks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n != Control::GONE).then_some(n + 1)
            });
        self.tell_settling();
    }

    /// The socket is closed (its close frame, if any, sent).
    pub fn gone(&self, control: &Control) {
        control.checks.store(Control::GONE, Ordering::Release);
        self.tell_settling();
    }

    fn tell_settling(&self) {
        if self.settling.load(Ordering::Acquire) > 0 {
            self.checked.notify_waiters();
        }
    }

    /// Waits until the socket has checked its token since `before` (or is gone).
    async fn checked_since(&self, control: &Control, before: u64) {
        loop {
            let notified = self.checked.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let now = control.checks.load(Ordering::Acquire);
            if now == Control::GONE || now > before {
                return;
            }
            notified.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an authenticated socket. `open_seqs` are the last seqs of the party's
    /// open conversations, read before this call: they start the party's cursors if this is
    /// its first socket (what was committed before is the client's to read, by `open` or
    /// `history`).
    pub fn join(&self, claims: &Claims, open_seqs: Vec<(String, i64)>) -> Socket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let control = Arc::new(Control::default());
        // The token was checked before the socket joined: a change applied in between (the
        // user invalidated right after `ready`) poked nobody. The socket checks once more as
        // soon as it runs; whatever is applied from now on pokes it.
        control.ask_recheck();
        let mut inner = self.lock();
        let user_id: Arc<str> = match inner.parties.get_key_value(claims.sub.as_str()) {
            Some((k, _)) => k.clone(),
            None => claims.sub.as_str().into(),
        };
        // Room for one: a `Vec` would make room for four at its first push.
        let parties = inner
            .parties
            .entry(user_id.clone())
            .or_insert_with(|| Vec::with_capacity(1));
        let at = match parties.iter().position(|p| *p.agent_id == *claims.agent_id) {
            Some(at) => at,
            None => {
                parties.push(Party {
                    agent_id: claims.agent_id.as_str().into(),
                    sockets: Vec::with_capacity(1),
                    cursors: Cursors(
                        open_seqs
                            .into_iter()
                            .map(|(c, seq)| (c.into_boxed_str(), seq))
                            .collect(),
                    ),
                });
                parties.len() - 1
            }
        };
        let party = &mut parties[at];
        party.sockets.push(id);
        let agent_id = party.agent_id.clone();
        inner.sockets.insert(
            id,
            Entry {
                user_id,
                agent_id,
                jti: jti_hash(&claims.jti),
                control: control.clone(),
            },
        );
        Socket { id, control }
    }

    /// A refreshed token: the same user, agent and company, another jti.
    pub fn refreshed(&self, id: u64, claims: &Claims) {
        if let Some(entry) = self.lock().sockets.get_mut(&id) {
            entry.jti = jti_hash(&claims.jti);
        }
    }

    pub fn leave(&self, id: u64) {
        let mut inner = self.lock();
        let Some(entry) = inner.sockets.remove(&id) else {
            return;
        };
        if let Some(parties) = inner.parties.get_mut(&entry.user_id) {
            if let Some(party) = parties.iter_mut().find(|p| p.agent_id == entry.agent_id) {
                party.sockets.retain(|s| *s != id);
            }
            parties.retain(|party| !party.sockets.is_empty());
            if parties.is_empty() {
                inner.parties.remove(&entry.user_id);
            }
        }
    }

    /// Queues a push to every socket of the user that talks with the agent. Returns how many
    /// sockets it reached.
    pub fn to_party(&self, user_id: &str, agent_id: &str, push: &Arc<Push>) -> usize {
        let inner = self.lock();
        let Some(party) = inner.party(user_id, agent_id) else {
            return 0;
        };
        Self::queue(&inner, &party.sockets, push)
    }

    /// Queues a push about a message the party already has (a chunk of a streamed reply, or
    /// its final form), to a party whose cursor has reached `seq` only: one further behind
    /// will read the message as it then is when its catch-up comes.
    pub fn to_party_after(
        &self,
        user_id: &str,
        agent_id: &str,
        conversation_id: &str,
        seq: i64,
        push: &Arc<Push>,
    ) -> usize {
        let inner = self.lock();
        let Some(party) = inner.party(user_id, agent_id) else {
            return 0;
        };
        if party.cursors.get(conversation_id).unwrap_or(0) < seq {
            return 0;
        }
        Self::queue(&inner, &party.sockets, push)
    }

    fn queue(inner: &Inner, sockets: &[u64], push: &Arc<Push>) -> usize {
        sockets
            .iter()
            .filter_map(|id| inner.sockets.get(id))
            .filter(|entry| entry.control.offer(push))
            .count()
    }

    /// Pushes a committed message to its party if it is the next one they need (see the
    /// module's comment).
    pub fn deliver(&self, user_id: &str, agent_id: &str, message: &Message) -> Delivery {
        let mut inner = self.lock();
        let Some(party) = inner.party_mut(user_id, agent_id) else {
            return Delivery::NoParty;
        };
        let cursor = party.cursors.get_mut(&message.conversation_id);
        if message.seq <= *cursor {
            return Delivery::Repeat;
        }
        if message.seq > *cursor + 1 {
            return Delivery::Gap(*cursor);
        }
        *cursor = message.seq;
        let push = Arc::new(Push::Message {
            conversation_id: message.conversation_id.clone(),
            message: message.clone(),
        });
        let party = inner.party(user_id, agent_id).expect("found above");
        Delivery::Pushed(Self::queue(&inner, &party.sockets, &push))
    }

    /// How far a party has been given a conversation; None if nobody here talks in it.
    pub fn cursor(&self, user_id: &str, agent_id: &str, conversation_id: &str) -> Option<i64> {
        let inner = self.lock();
        let party = inner.party(user_id, agent_id)?;
        Some(party.cursors.get(conversation_id).unwrap_or(0))
    }

    /// Whether some socket here talks for this user with this agent.
    pub fn has_party(&self, user_id: &str, agent_id: &str) -> bool {
        self.lock().party(user_id, agent_id).is_some()
    }

    /// Every conversation some party here is following, with its cursor:
    /// `(conversation, user, agent, cursor)`.
    pub fn followed(&self) -> Vec<(String, Arc<str>, Arc<str>, i64)> {
        let inner = self.lock();
        inner
            .parties
            .iter()
            .flat_map(|(user, parties)| {
                parties.iter().flat_map(move |party| {
                    party.cursors.iter().map(move |(c, seq)| {
                        (c.to_string(), user.clone(), party.agent_id.clone(), seq)
                    })
                })
            })
            .collect()
    }

    /// For a user invalidated or a token revoked by this instance: pokes the sockets
    /// concerned and waits (at most `within`) until each has checked its token again, so
    /// that their close frames leave before the caller's answer.
    pub async fn settle(&self, event: &TokenEvent, within: std::time::Duration) {
        let controls: Vec<Arc<Control>> = {
            let inner = self.lock();
            inner
                .concerned(event)
                .iter()
                .filter_map(|id| inner.sockets.get(id))
                .map(|e| e.control.clone())
                .collect()
        };
        if controls.is_empty() {
            return;
        }
        self.settling.fetch_add(1, Ordering::AcqRel);
        let poked: Vec<u64> = controls.iter().map(|c| c.poke()).collect();
        let all = async {
            for (control, before) in controls.iter().zip(poked) {
                self.checked_since(control, before).await;
            }
        };
        let _ = tokio::time::timeout(within, all).await;
        self.settling.fetch_sub(1, Ordering::AcqRel);
    }

    /// Pokes the sockets a token event may concern; each checks its token again. A feed whose
    /// key was revoked, or whose company was deactivated, is closed.
    pub fn token_changed(&self, event: &TokenEvent) {
        let inner = self.lock();
        for feed in inner.feeds.values() {
            let dead = match event {
                TokenEvent::KeyRevoked { key_id } => *feed.key_id == **key_id,
                TokenEvent::CompanyActive {
                    company_id,
                    active: false,
                } => *feed.company_id == **company_id,
                _ => false,
            };
            if dead {
                feed.control.close(ACCESS_REVOKED);
            }
        }
        for id in inner.concerned(event) {
            if let Some(e) = inner.sockets.get(&id) {
                e.control.ask_recheck();
            }
        }
    }

    /// Pokes every socket (after missed events, or when shutting down).
    pub fn poke_all(&self) {
        let inner = self.lock();
        for e in inner.sockets.values() {
            e.control.ask_recheck();
        }
    }

    /// Asks every socket to close with `code`.
    pub fn close_all(&self, code: u16) {
        let inner = self.lock();
        for e in inner.sockets.values() {
            e.control.close(code);
        }
    }

    /// Registers a company's feed (of one agent's conversations, or all of them), opened
    /// with `key_id`: it closes when that key is revoked or the company deactivated.
    pub fn follow_company(&self, company_id: &str, agent_id: Option<&str>, key_id: &str) -> Socket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let control = Arc::new(Control::default());
        // The token was checked before the socket joined: a change applied in between (the
        // user invalidated right after `ready`) poked nobody. The socket checks once more as
        // soon as it runs; whatever is applied from now on pokes it.
        control.ask_recheck();
        let mut inner = self.lock();
        let company: Arc<str> = company_id.into();
        inner
            .feeds_by_company
            .entry(company.clone())
            .or_default()
            .push(id);
        inner.feeds.insert(
            id,
            Feed {
                company_id: company,
                agent_id: agent_id.map(Into::into),
                key_id: key_id.into(),
                control: control.clone(),
            },
        );
        Socket { id, control }
    }

    pub fn unfollow_company(&self, id: u64) {
        let mut inner = self.lock();
        let Some(feed) = inner.feeds.remove(&id) else {
            return;
        };
        if let Some(ids) = inner.feeds_by_company.get_mut(&feed.company_id) {
            ids.retain(|f| *f != id);
            if ids.is_empty() {
                inner.feeds_by_company.remove(&feed.company_id);
            }
        }
    }

    /// Company feeds held, for metrics.
    pub fn feeds(&self) -> usize {
        self.lock().feeds.len()
    }

    /// Whether some feed here follows the company.
    pub fn has_feed(&self, company_id: &str) -> bool {
        self.lock().feeds_by_company.contains_key(company_id)
    }

    /// Queues a push to the company's feeds that follow the agent.
    pub fn to_feeds(&self, company_id: &str, agent_id: &str, push: &Arc<Push>) -> usize {
        let inner = self.lock();
        let Some(ids) = inner.feeds_by_company.get(company_id) else {
            return 0;
        };
        ids.iter()
            .filter_map(|id| inner.feeds.get(id))
            .filter(|feed| feed.agent_id.as_deref().is_none_or(|a| a == agent_id))
            .filter(|feed| feed.control.offer(push))
            .count()
    }

    /// Authenticated sockets held, for metrics.
    pub fn sockets(&self) -> usize {
        self.lock().sockets.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn claims(sub: &str, agent: &str, jti: &str) -> Claims {
        Claims {
            sub: sub.into(),
            company_id: "c".into(),
            agent_id: agent.into(),
            key_id: "k".into(),
            ver: 0,
            skid: "sk1".into(),
            iss: "performchat".into(),
            jti: jti.into(),
            iat: 0,
            exp: 10,
        }
    }

    #[test]
    fn a_socket_that_joins_checks_its_token_once_more() {
        let hub = Hub::default();
        let socket = hub.join(&claims("u1", "a1", "j1"), vec![]);
        assert!(socket.control.take_recheck());
        assert!(!socket.control.take_recheck());
    }

    #[test]
    fn frames_reach_every_socket_of_the_user_with_that_agent_only() {
        let hub = Hub::default();
        let a = hub.join(&claims("u1", "a1", "j1"), vec![]);
        let b = hub.join(&claims("u1", "a1", "j2"), vec![]);
        let other_agent = hub.join(&claims("u1", "a2", "j3"), vec![]);
        let frame = Arc::new(Push::ConversationClosed {
            conversation_id: "c".into(),
        });
        assert_eq!(hub.to_party("u1", "a1", &frame), 2);
        assert!(a.control.take_pushes().len() == 1 && b.control.take_pushes().len() == 1);
        assert!(other_agent.control.take_pushes().is_empty());
        hub.leave(a.id);
        assert_eq!(hub.to_party("u1", "a1", &frame), 1);
        hub.leave(b.id);
        hub.leave(other_agent.id);
        assert_eq!(hub.sockets(), 0);
        let inner = hub.lock();
        assert!(inner.parties.is_empty());
    }

    #[tokio::test]
    async fn settle_returns_once_the_sockets_concerned_have_checked_or_closed() {
        let hub = Arc::new(Hub::default());
        let dying = hub.join(&claims("u1", "a1", "j1"), vec![]);
        let other = hub.join(&claims("u2", "a1", "j2"), vec![]);
        // The socket's task: on a poke, it takes 50 ms to send its close frame.
        let control = dying.control.clone();
        let hub_of_task = hub.clone();
        let task = tokio::spawn(async move {
            control.signalled().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            hub_of_task.gone(&control);
        });
        let started = tokio::time::Instant::now();
        let event = TokenEvent::UserInvalidated {
            user_id: "u1".into(),
            version: 1,
        };
        hub.settle(&event, Duration::from_secs(5)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(dying.control.checks.load(Ordering::Acquire), Control::GONE);
        task.await.unwrap();
        // A socket that checks and stays open settles too; nobody's sockets: at once.
        let control = other.control.clone();
        let hub_of_task = hub.clone();
        tokio::spawn(async move {
            control.signalled().await;
            hub_of_task.checked_once(&control);
        });
        let event = TokenEvent::TokenRevoked { jti: "j2".into() };
        tokio::time::timeout(
            Duration::from_secs(1),
            hub.settle(&event, Duration::from_secs(5)),
        )
        .await
        .expect("settled by the check");
        let nobody = TokenEvent::TokenRevoked { jti: "j9".into() };
        hub.settle(&nobody, Duration::from_secs(5)).await;
    }

    fn message(conversation: &str, seq: i64) -> Message {
        Message {
            id: format!("m{seq}"),
            conversation_id: conversation.into(),
            seq,
            client_message_id: format!("c{seq}"),
            sender_kind: "user".into(),
            sender_name: None,
            text: "hi".into(),
            status: "complete".into(),
            created_at: 0,
            prompt_tokens: None,
            completion_tokens: None,
        }
    }

    fn pushed_seqs(socket: &Socket) -> Vec<i64> {
        let mut seqs = Vec::new();
        for push in socket.control.take_pushes() {
            if let Push::Message { message, .. } = &*push {
                seqs.push(message.seq);
            }
        }
        seqs
    }

    #[test]
    fn messages_reach_a_party_in_order_once_and_a_gap_is_reported_not_skipped() {
        let hub = Hub::default();
        // conv1 had 3 messages when the socket joined; conv2 is made later.
        let s = hub.join(&claims("u1", "a1", "j1"), vec![("conv1".into(), 3)]);
        assert_eq!(
            hub.deliver("u1", "a1", &message("conv1", 3)),
            Delivery::Repeat
        );
        assert_eq!(
            hub.deliver("u1", "a1", &message("conv1", 4)),
            Delivery::Pushed(1)
        );
        assert_eq!(
            hub.deliver("u1", "a1", &message("conv1", 4)),
            Delivery::Repeat
        );
        // 5 is still on its way: 6 waits for it.
        assert_eq!(
            hub.deliver("u1", "a1", &message("conv1", 6)),
            Delivery::Gap(4)
        );
        assert_eq!(hub.cursor("u1", "a1", "conv1"), Some(4));
        assert_eq!(
            hub.deliver("u1", "a1", &message("conv1", 5)),
            Delivery::Pushed(1)
        );
        assert_eq!(
            hub.deliver("u1", "a1", &message("conv1", 6)),
            Delivery::Pushed(1)
        );
        assert_eq!(
            hub.deliver("u1", "a1", &message("conv2", 1)),
            Delivery::Pushed(1)
        );
        assert_eq!(pushed_seqs(&s), vec![4, 5, 6, 1]);
        // Another agent's party, or nobody: not this socket's.
        assert_eq!(
            hub.deliver("u1", "a2", &message("conv3", 1)),
            Delivery::NoParty
        );
        assert_eq!(hub.cursor("u9", "a1", "conv1"), None);
        // A second socket of the party shares the cursors; the first one's read is kept.
        let t = hub.join(&claims("u1", "a1", "j2"), vec![("conv1".into(), 2)]);
        assert_eq!(
            hub.deliver("u1", "a1", &message("conv1", 7)),
            Delivery::Pushed(2)
        );
        assert_eq!((pushed_seqs(&s), pushed_seqs(&t)), (vec![7], vec![7]));
        assert_eq!(hub.followed().len(), 2);
    }

    #[test]
    fn a_full_queue_closes_its_socket_as_too_slow() {
        let hub = Hub::default();
        let s = hub.join(&claims("u1", "a1", "j1"), vec![]);
        let frame = Arc::new(Push::ConversationClosed {
            conversation_id: "c".into(),
        });
        for _ in 0..QUEUE {
            hub.to_party("u1", "a1", &frame);
        }
        assert_eq!(s.control.close_code(), None);
        hub.to_party("u1", "a1", &frame);
        assert_eq!(s.control.close_code(), Some(TOO_SLOW));
    }
}
