//! The sockets this instance holds, and delivery to them. What happened is queued once, as
//! one shared [`Push`], to every socket of its user; a socket whose queue is full is closed
//! (4009) rather than let grow. A change to what verification accepts pokes the sockets
//! it may concern, and each checks its own token again (`token::check_alive`), so the rules of
//! who may stay connected live in one place.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

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
    ConversationClosed {
        conversation_id: String,
    },
}

/// Frames a socket's queue holds before the socket counts as too slow.
pub const QUEUE: usize = 256;

/// One socket's side of the hub: its queue of serialised frames, and a close request.
pub struct Socket {
    pub id: u64,
    pub frames: mpsc::Receiver<Arc<Push>>,
    pub control: Arc<Control>,
}

/// How the hub (or a token event) tells a socket to act without waiting for its queue.
#[derive(Default)]
pub struct Control {
    /// A close code the socket must close with (0: none).
    close: AtomicU16,
    /// Check the token again: something it depends on changed.
    pub recheck: Notify,
}

impl Control {
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
        self.recheck.notify_one();
    }
}

struct Entry {
    user_id: Arc<str>,
    agent_id: Arc<str>,
    jti: Arc<str>,
    frames: mpsc::Sender<Arc<Push>>,
    control: Arc<Control>,
}

#[derive(Default)]
struct Inner {
    sockets: HashMap<u64, Entry>,
    by_user: HashMap<Arc<str>, Vec<u64>>,
    by_jti: HashMap<Arc<str>, u64>,
}

#[derive(Default)]
pub struct Hub {
    next_id: AtomicU64,
    inner: Mutex<Inner>,
}

/// The close code of a socket whose queue overflowed.
pub const TOO_SLOW: u16 = 4009;

impl Hub {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an authenticated socket.
    pub fn join(&self, claims: &Claims) -> Socket {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(QUEUE);
        let control = Arc::new(Control::default());
        let mut inner = self.lock();
        let user_id: Arc<str> = match inner.by_user.get_key_value(claims.sub.as_str()) {
            Some((k, _)) => k.clone(),
            None => claims.sub.as_str().into(),
        };
        let jti: Arc<str> = claims.jti.as_str().into();
        inner.by_user.entry(user_id.clone()).or_default().push(id);
        inner.by_jti.insert(jti.clone(), id);
        inner.sockets.insert(
            id,
            Entry {
                user_id,
                agent_id: claims.agent_id.as_str().into(),
                jti,
                frames: tx,
                control: control.clone(),
            },
        );
        Socket {
            id,
            frames: rx,
            control,
        }
    }

    /// A refreshed token: the same user, agent and company, another jti.
    pub fn refreshed(&self, id: u64, claims: &Claims) {
        let mut inner = self.lock();
        let jti: Arc<str> = claims.jti.as_str().into();
        let Some(entry) = inner.sockets.get_mut(&id) else {
            return;
        };
        let old = std::mem::replace(&mut entry.jti, jti.clone());
        inner.by_jti.remove(&old);
        inner.by_jti.insert(jti, id);
    }

    pub fn leave(&self, id: u64) {
        let mut inner = self.lock();
        let Some(entry) = inner.sockets.remove(&id) else {
            return;
        };
        inner.by_jti.remove(&entry.jti);
        if let Some(ids) = inner.by_user.get_mut(&entry.user_id) {
            ids.retain(|s| *s != id);
            if ids.is_empty() {
                inner.by_user.remove(&entry.user_id);
            }
        }
    }

    /// Queues a push to every socket of the user that talks with the agent. Returns how many
    /// sockets it reached.
    pub fn to_user(&self, user_id: &str, agent_id: &str, push: &Arc<Push>) -> usize {
        let inner = self.lock();
        let Some(ids) = inner.by_user.get(user_id) else {
            return 0;
        };
        let mut reached = 0;
        for id in ids {
            let Some(entry) = inner.sockets.get(id) else {
                continue;
            };
            if &*entry.agent_id != agent_id {
                continue;
            }
            match entry.frames.try_send(push.clone()) {
                Ok(()) => reached += 1,
                Err(mpsc::error::TrySendError::Full(_)) => entry.control.close(TOO_SLOW),
                // Leaving: it unregisters itself.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        reached
    }

    /// Pokes the sockets a token event may concern; each checks its token again.
    pub fn token_changed(&self, event: &TokenEvent) {
        let inner = self.lock();
        let poke = |id: &u64| {
            if let Some(e) = inner.sockets.get(id) {
                e.control.recheck.notify_one();
            }
        };
        match event {
            TokenEvent::UserInvalidated { user_id, .. } => {
                inner
                    .by_user
                    .get(user_id.as_str())
                    .into_iter()
                    .flatten()
                    .for_each(poke);
            }
            TokenEvent::TokenRevoked { jti } => {
                inner.by_jti.get(jti.as_str()).into_iter().for_each(poke);
            }
            // Rare: keys, agents, companies and signing keys concern many sockets at once.
            TokenEvent::KeyRevoked { .. }
            | TokenEvent::AgentActive { active: false, .. }
            | TokenEvent::CompanyActive { active: false, .. }
            | TokenEvent::SigningKeysChanged => inner.sockets.keys().for_each(poke),
            TokenEvent::AgentActive { active: true, .. }
            | TokenEvent::CompanyActive { active: true, .. } => {}
        }
    }

    /// Pokes every socket (after missed events, or when shutting down).
    pub fn poke_all(&self) {
        let inner = self.lock();
        for e in inner.sockets.values() {
            e.control.recheck.notify_one();
        }
    }

    /// Asks every socket to close with `code`.
    pub fn close_all(&self, code: u16) {
        let inner = self.lock();
        for e in inner.sockets.values() {
            e.control.close(code);
        }
    }

    /// Authenticated sockets held, for metrics.
    pub fn sockets(&self) -> usize {
        self.lock().sockets.len()
    }
}

#[cfg(test)]
mod tests {
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
    fn frames_reach_every_socket_of_the_user_with_that_agent_only() {
        let hub = Hub::default();
        let mut a = hub.join(&claims("u1", "a1", "j1"));
        let mut b = hub.join(&claims("u1", "a1", "j2"));
        let mut other_agent = hub.join(&claims("u1", "a2", "j3"));
        let frame = Arc::new(Push::ConversationClosed {
            conversation_id: "c".into(),
        });
        assert_eq!(hub.to_user("u1", "a1", &frame), 2);
        assert!(a.frames.try_recv().is_ok() && b.frames.try_recv().is_ok());
        assert!(other_agent.frames.try_recv().is_err());
        hub.leave(a.id);
        assert_eq!(hub.to_user("u1", "a1", &frame), 1);
        hub.leave(b.id);
        hub.leave(other_agent.id);
        assert_eq!(hub.sockets(), 0);
        assert!(hub.lock().by_user.is_empty() && hub.lock().by_jti.is_empty());
    }

    #[test]
    fn a_full_queue_closes_its_socket_as_too_slow() {
        let hub = Hub::default();
        let s = hub.join(&claims("u1", "a1", "j1"));
        let frame = Arc::new(Push::ConversationClosed {
            conversation_id: "c".into(),
        });
        for _ in 0..QUEUE {
            hub.to_user("u1", "a1", &frame);
        }
        assert_eq!(s.control.close_code(), None);
        hub.to_user("u1", "a1", &frame);
        assert_eq!(s.control.close_code(), Some(TOO_SLOW));
    }
}
