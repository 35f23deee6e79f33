//! What this server knows about tokens without asking the database: the signing keys, the
//! revocation state (invalidated users, revoked tokens, keys, inactive agents and companies)
//! and the mint path's caches. Loaded at start, kept current by the change feed (`feed`) and
//! by this instance's own writes. Every change it applies is announced as a [`TokenEvent`], so
//! that another subsystem (the chat's sockets) can react without the token code calling it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{RwLock, RwLockReadGuard};

use tokio::sync::{Notify, broadcast};

use super::cache::Caches;
use super::revocation::Revocations;
use crate::auth::jwt::Keyring;
use crate::clock::Clock;
use crate::db::StoredSigningKey;

/// A change to what verification accepts, as it is applied on this instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TokenEvent {
    /// Every token of the user minted before `version` is dead.
    UserInvalidated {
        user_id: String,
        version: i64,
    },
    TokenRevoked {
        jti: String,
    },
    KeyRevoked {
        key_id: String,
    },
    AgentActive {
        agent_id: String,
        active: bool,
    },
    CompanyActive {
        company_id: String,
        active: bool,
    },
    /// The signing keys changed: a rotation (older keys now retire at their `retire_at`) or
    /// an erased secret. Tokens of a key are refused from its retirement time on.
    SigningKeysChanged,
}

/// Events a slow subscriber may fall behind by before it sees `Lagged` (and must then
/// re-check everything it holds).
const EVENT_BUFFER: usize = 1024;

pub struct TokenState {
    /// Read caches of the mint path, evicted by the same changes.
    pub caches: Caches,
    revocations: RwLock<Revocations>,
    keyring: RwLock<Keyring>,
    events: broadcast::Sender<TokenEvent>,
    /// The last change-log entry applied.
    seq: AtomicI64,
    /// When the change log was last read successfully (clock milliseconds).
    synced_at_ms: AtomicI64,
    wake: Notify,
}

fn read<T>(lock: &RwLock<T>) -> RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|e| e.into_inner())
}

impl TokenState {
    pub(crate) fn new(
        caches: Caches,
        revocations: Revocations,
        keyring: Keyring,
        seq: i64,
        now_ms: i64,
    ) -> Self {
        TokenState {
            caches,
            revocations: RwLock::new(revocations),
            keyring: RwLock::new(keyring),
            events: broadcast::channel(EVENT_BUFFER).0,
            seq: AtomicI64::new(seq),
            synced_at_ms: AtomicI64::new(now_ms),
            wake: Notify::new(),
        }
    }

    pub fn revocations(&self) -> RwLockReadGuard<'_, Revocations> {
        read(&self.revocations)
    }

    pub fn keyring(&self) -> RwLockReadGuard<'_, Keyring> {
        read(&self.keyring)
    }

    /// Every change applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<TokenEvent> {
        self.events.subscribe()
    }

    /// Applies one change to the revocation state and announces it if it changed anything.
    fn apply(&self, change: impl FnOnce(&mut Revocations) -> Option<TokenEvent>) {
        let event = {
            let mut r = self.revocations.write().unwrap_or_else(|e| e.into_inner());
            change(&mut r)
        };
        if let Some(event) = event {
            // No subscriber is not an error.
            let _ = self.events.send(event);
        }
    }

    pub(crate) fn set_user_version(&self, user_id: &str, version: i64) {
        self.apply(|r| {
            let before = r.user_version(user_id);
            r.set_user_version(user_id, version);
            (version > before).then(|| TokenEvent::UserInvalidated {
                user_id: user_id.to_owned(),
                version,
            })
        });
    }

    /// `exp` None: not revoked (or no longer worth remembering).
    pub(crate) fn set_token_revoked(&self, jti: &str, exp: Option<i64>) {
        self.apply(|r| {
            let newly = exp.is_some() && !r.is_token_revoked(jti);
            r.set_token_revoked(jti, exp);
            newly.then(|| TokenEvent::TokenRevoked {
                jti: jti.to_owned(),
            })
        });
    }

    pub(crate) fn set_key_revoked(&self, key_id: &str, revoked: bool) {
        self.apply(|r| {
            let newly = revoked && !r.is_key_revoked(key_id);
            r.set_key_revoked(key_id, revoked);
            newly.then(|| TokenEvent::KeyRevoked {
                key_id: key_id.to_owned(),
            })
        });
    }

    pub(crate) fn set_agent_active(&self, agent_id: &str, active: bool) {
        self.apply(|r| {
            let changed = r.is_agent_inactive(agent_id) == active;
            r.set_agent_inactive(agent_id, !active);
            changed.then(|| TokenEvent::AgentActive {
                agent_id: agent_id.to_owned(),
                active,
            })
        });
    }

    pub(crate) fn set_company_active(&self, company_id: &str, active: bool) {
        self.apply(|r| {
            let changed = r.is_company_inactive(company_id) == active;
            r.set_company_inactive(company_id, !active);
            changed.then(|| TokenEvent::CompanyActive {
                company_id: company_id.to_owned(),
                active,
            })
        });
    }

    /// Replaces the keyring with the stored keys (all of them: a rotation changes the
    /// retirement of every older key at once). Keeps the old ring if none has a secret.
    pub(crate) fn set_signing_keys(&self, keys: &[StoredSigningKey]) {
        let Some(ring) = ring_of(keys) else {
            tracing::error!("no signing key with a secret in the database; keeping the ring");
            return;
        };
        *self.keyring.write().unwrap_or_else(|e| e.into_inner()) = ring;
        let _ = self.events.send(TokenEvent::SigningKeysChanged);
    }

    /// Drops revoked tokens past their expiry: they fail on `exp` now.
    pub(crate) fn purge_expired(&self, now_s: i64) {
        self.revocations
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .purge_expired(now_s);
    }

    /// Milliseconds since the change log was last read successfully.
    pub fn staleness_ms(&self, clock: &Clock) -> i64 {
        clock.now_ms() - self.synced_at_ms.load(Ordering::Relaxed)
    }

    /// The last change-log entry applied.
    pub fn seq(&self) -> i64 {
        self.seq.load(Ordering::Relaxed)
    }

    pub(crate) fn applied(&self, seq: i64) {
        self.seq.store(seq, Ordering::Relaxed);
    }

    pub(crate) fn synced(&self, now_ms: i64) {
        self.synced_at_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Asks the feed to read the log now rather than at its next tick. A server calls it
    /// after its own writes so that it sees them at once.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub(crate) async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// The keyring of the stored keys (erased ones included, so their tokens read as retired).
pub(crate) fn ring_of(keys: &[StoredSigningKey]) -> Option<Keyring> {
    Keyring::new(
        keys.iter()
            .map(|k| (k.id.as_str(), k.secret.as_slice(), k.retire_at)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> TokenState {
        let key = StoredSigningKey {
            id: "sk1".into(),
            secret: vec![1; 32],
            created_at: 0,
            retire_at: None,
        };
        TokenState::new(
            Caches::default(),
            Revocations::default(),
            ring_of(&[key]).unwrap(),
            0,
            0,
        )
    }

    #[test]
    fn each_change_is_announced_once() {
        let s = state();
        let mut events = s.subscribe();
        s.set_user_version("u1", 1);
        s.set_user_version("u1", 1);
        s.set_token_revoked("j1", Some(10));
        s.set_token_revoked("j1", Some(10));
        s.set_key_revoked("k1", true);
        s.set_key_revoked("k1", true);
        s.set_agent_active("a1", false);
        s.set_agent_active("a1", false);
        s.set_agent_active("a1", true);
        s.set_company_active("c1", true);
        s.set_company_active("c1", false);
        let got: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
        assert_eq!(
            got,
            [
                TokenEvent::UserInvalidated {
                    user_id: "u1".into(),
                    version: 1
                },
                TokenEvent::TokenRevoked { jti: "j1".into() },
                TokenEvent::KeyRevoked {
                    key_id: "k1".into()
                },
                TokenEvent::AgentActive {
                    agent_id: "a1".into(),
                    active: false
                },
                TokenEvent::AgentActive {
                    agent_id: "a1".into(),
                    active: true
                },
                TokenEvent::CompanyActive {
                    company_id: "c1".into(),
                    active: false
                },
            ]
        );
    }
}
