//! The change feed: keeps every server's in-memory verification state ([`Live`]) in step
//! with the database. At start a [`Snapshot`](crate::db::Snapshot) is loaded; then the
//! `change_log` is read forward by `seq`, re-reading the current state of each changed
//! thing (so applying a change twice is harmless). A wake-up tells the loop to look now:
//! on PostgreSQL a LISTEN on the channel the log's trigger NOTIFYs, on SQLite only the poll
//! timer. Because the log, not the notification, carries the change, a lost notification or
//! a dropped connection delays a change and never loses it.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::auth::jwt::{Keyring, SigningKey};
use crate::cache::{CachedKey, Caches};
use crate::clock::Clock;
use crate::db::{Change, ChangeKind, Db};
use crate::error::{Error, Result};
use crate::revocation::Revocations;

/// How many changes one read of the log takes.
const BATCH: i64 = 1000;
/// How often the database's own list of revoked tokens is pruned.
const PURGE_EVERY: Duration = Duration::from_secs(600);

/// The in-memory state verification reads. Cheap to read under contention: writes are rare.
pub struct Live {
    /// Read caches of the mint path, evicted by the same changes.
    pub caches: Caches,
    revocations: RwLock<Revocations>,
    keyring: RwLock<Keyring>,
    /// The last change applied.
    seq: AtomicI64,
    /// When the log was last read successfully (clock milliseconds).
    synced_at_ms: AtomicI64,
    wake: Notify,
}

impl Live {
    pub fn revocations(&self) -> std::sync::RwLockReadGuard<'_, Revocations> {
        self.revocations.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn keyring(&self) -> std::sync::RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn revocations_mut(&self) -> std::sync::RwLockWriteGuard<'_, Revocations> {
        self.revocations.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Milliseconds since the change log was last read successfully.
    pub fn staleness_ms(&self, clock: &Clock) -> i64 {
        clock.now_ms() - self.synced_at_ms.load(Ordering::Relaxed)
    }

    pub fn seq(&self) -> i64 {
        self.seq.load(Ordering::Relaxed)
    }

    /// Asks the feed to read the log now rather than at its next tick. A server calls it
    /// after its own writes so that it sees them at once.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Loads the state at start: makes the first signing key if the database has none.
pub async fn load(db: &Db, clock: &Clock) -> Result<Arc<Live>> {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    db.ensure_signing_key(&secret, clock.now_ms()).await?;
    let snapshot = db.load_snapshot(clock.now_s()).await?;
    let keyring = Keyring::new(
        snapshot
            .signing_keys
            .iter()
            .map(|k| SigningKey::new(k.id.clone(), &k.secret)),
    )
    .ok_or_else(|| Error::Internal(anyhow::anyhow!("no signing key after creating one")))?;
    let caches = Caches::default();
    for key in &snapshot.api_keys {
        caches.set_key(&key.id, Some(CachedKey::from_row(key)));
    }
    Ok(Arc::new(Live {
        caches,
        revocations: RwLock::new(Revocations::from_snapshot(&snapshot)),
        keyring: RwLock::new(keyring),
        seq: AtomicI64::new(snapshot.seq),
        synced_at_ms: AtomicI64::new(clock.now_ms()),
        wake: Notify::new(),
    }))
}

pub struct FeedSettings {
    /// How often the log is read without a wake-up.
    pub poll: Duration,
    /// Audit events older than this are deleted.
    pub audit_retention_ms: i64,
}

/// Runs the feed until `stop` is cancelled. It also does the periodic clean-ups: expired
/// revocations and audit events past their retention.
pub fn spawn(
    db: Db,
    live: Arc<Live>,
    clock: Clock,
    settings: FeedSettings,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let poll = settings.poll;
    if let Db::Postgres(pool) = &db {
        tokio::spawn(listen(pool.clone(), live.clone(), stop.clone()));
    }
    tokio::spawn(async move {
        let mut last_purge = clock.now_ms();
        let mut failing = false;
        loop {
            match catch_up(&db, &live, &clock).await {
                Ok(()) => {
                    if failing {
                        tracing::info!("change feed recovered");
                        failing = false;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "change feed cannot read the database");
                        failing = true;
                    }
                }
            }
            let now = clock.now_ms();
            live.revocations_mut().purge_expired(now / 1000);
            if now - last_purge > PURGE_EVERY.as_millis() as i64 {
                last_purge = now;
                if let Err(e) = db.purge_expired_revocations(now / 1000).await {
                    tracing::warn!(error = %e, "cannot purge expired revocations");
                }
                if let Err(e) = db
                    .purge_audit_events(now - settings.audit_retention_ms)
                    .await
                {
                    tracing::warn!(error = %e, "cannot purge old audit events");
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
                _ = live.wake.notified() => {}
            }
        }
    })
}

/// Reads and applies every change after the last one applied.
pub async fn catch_up(db: &Db, live: &Live, clock: &Clock) -> Result<()> {
    loop {
        let changes = db.changes_since(live.seq(), BATCH).await?;
        let last = changes.last().map(|c| c.seq);
        for change in &changes {
            apply(db, live, change, clock).await?;
            live.seq.store(change.seq, Ordering::Relaxed);
        }
        if last.is_none() || changes.len() < BATCH as usize {
            live.synced_at_ms.store(clock.now_ms(), Ordering::Relaxed);
            return Ok(());
        }
    }
}

async fn apply(db: &Db, live: &Live, change: &Change, clock: &Clock) -> Result<()> {
    let id = change.subject.as_str();
    match change.kind {
        ChangeKind::User => {
            let version = db.find_user_token_version(id).await?;
            live.revocations_mut().set_user_version(id, version);
        }
        ChangeKind::Token => {
            let exp = db.find_revoked_token(id).await?;
            let exp = exp.filter(|&exp| exp >= clock.now_s());
            live.revocations_mut().set_token_revoked(id, exp);
        }
        ChangeKind::Key => {
            let key = db.find_api_key(id).await?;
            let revoked = key.as_ref().is_some_and(|k| k.revoked_at.is_some());
            live.caches
                .set_key(id, key.as_ref().map(CachedKey::from_row));
            live.revocations_mut().set_key_revoked(id, revoked);
        }
        ChangeKind::Agent => {
            live.caches.evict_agent(id);
            let agent = db.find_agent_by_id(id).await?;
            let inactive = agent.is_some_and(|a| !a.active);
            live.revocations_mut().set_agent_inactive(id, inactive);
        }
        ChangeKind::Company => {
            let company = db.find_company(id).await?;
            let inactive = company.is_some_and(|c| !c.active);
            live.revocations_mut().set_company_inactive(id, inactive);
        }
        ChangeKind::SigningKey => {
            let key = db.find_signing_key(id).await?;
            let mut ring = live.keyring.write().unwrap_or_else(|e| e.into_inner());
            match key {
                Some(key) if !ring.contains(&key.id) => {
                    ring.add(SigningKey::new(key.id.clone(), &key.secret));
                }
                Some(_) => {}
                None => ring.remove(id),
            }
        }
    }
    Ok(())
}

/// PostgreSQL: wake the feed whenever the change log's trigger NOTIFYs. Reconnects with a
/// backoff after losing the connection; the feed's catch-up read covers what it missed.
async fn listen(pool: sqlx::PgPool, live: Arc<Live>, stop: CancellationToken) {
    const CHANNEL: &str = "performchat_change";
    let mut backoff = Duration::from_millis(100);
    loop {
        let attempt = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            // Anything committed while we were not listening is in the log: look now.
            live.wake();
            loop {
                listener.recv().await?;
                live.wake();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            result = attempt => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "change listener disconnected");
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
