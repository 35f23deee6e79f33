//! The change feed: keeps every server's [`TokenState`] in step with the database. At start a
//! [`Snapshot`](crate::db::Snapshot) is loaded; then the `change_log` is read forward by `seq`,
//! re-reading the current state of each changed thing (so applying a change twice is
//! harmless). A wake-up tells the loop to look now: on PostgreSQL a LISTEN on the channel the
//! log's trigger NOTIFYs, on SQLite only the poll timer. Because the log, not the
//! notification, carries the change, a lost notification or a dropped connection delays a
//! change and never loses it.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::TokenState;
use super::cache::{CachedKey, Caches};
use super::revocation::Revocations;
use super::state::ring_of;
use crate::clock::Clock;
use crate::db::{self, Change, ChangeKind, Db};

/// How many changes one read of the log takes.
const BATCH: i64 = 1000;

/// Loads the state at start; makes the first signing key if the database has none.
pub async fn load(db: &Db, clock: &Clock) -> db::Result<TokenState> {
    let mut secret = [0u8; 32];
    rand::fill(&mut secret);
    db.ensure_signing_key(&secret, clock.now_ms()).await?;
    let snapshot = db.load_snapshot(clock.now_s()).await?;
    let keyring = ring_of(&snapshot.signing_keys).ok_or_else(|| {
        // Only a hand-edited database gets here: every rotation adds a key with a secret.
        db::StoreError::NotFound(db::Entity::SigningKey, "(any with a secret)".into())
    })?;
    let caches = Caches::default();
    for key in &snapshot.api_keys {
        caches.set_key(&key.id, Some(CachedKey::from_row(key)));
    }
    Ok(TokenState::new(
        caches,
        Revocations::from_snapshot(&snapshot),
        keyring,
        snapshot.seq,
        clock.now_ms(),
    ))
}

/// Reads the log until `stop`: at every `poll`, and whenever woken.
pub async fn run(
    db: Db,
    state: &TokenState,
    clock: Clock,
    poll: Duration,
    stop: CancellationToken,
) {
    let mut failing = false;
    loop {
        match catch_up(&db, state, &clock).await {
            Ok(()) if failing => {
                tracing::info!("change feed recovered");
                failing = false;
            }
            Ok(()) => {}
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "change feed cannot read the database");
                    failing = true;
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
            _ = state.woken() => {}
        }
    }
}

/// Reads and applies every change after the last one applied.
pub async fn catch_up(db: &Db, state: &TokenState, clock: &Clock) -> db::Result<()> {
    loop {
        let changes = db.changes_since(state.seq(), BATCH).await?;
        for change in &changes {
            apply(db, state, change, clock).await?;
            state.applied(change.seq);
        }
        if changes.len() < BATCH as usize {
            state.synced(clock.now_ms());
            return Ok(());
        }
    }
}

async fn apply(db: &Db, state: &TokenState, change: &Change, clock: &Clock) -> db::Result<()> {
    let id = change.subject.as_str();
    match change.kind {
        ChangeKind::User => {
            let version = db.find_user_token_version(id).await?;
            state.set_user_version(id, version);
        }
        ChangeKind::Token => {
            let exp = db.find_revoked_token(id).await?;
            let exp = exp.filter(|&exp| exp >= clock.now_s());
            state.set_token_revoked(id, exp);
        }
        ChangeKind::Key => {
            let key = db.find_api_key(id).await?;
            let revoked = key.as_ref().is_some_and(|k| k.revoked_at.is_some());
            state
                .caches
                .set_key(id, key.as_ref().map(CachedKey::from_row));
            state.set_key_revoked(id, revoked);
        }
        ChangeKind::Agent => {
            state.caches.evict_agent(id);
            let agent = db.find_agent_by_id(id).await?;
            state.set_agent_active(id, agent.is_none_or(|a| a.active));
        }
        ChangeKind::Company => {
            let company = db.find_company(id).await?;
            state.set_company_active(id, company.is_none_or(|c| c.active));
        }
        ChangeKind::SigningKey => {
            // The whole ring: a rotation also changes every older key's retirement.
            state.set_signing_keys(&db.list_signing_keys().await?);
        }
    }
    Ok(())
}

/// PostgreSQL: wake the feed whenever the change log's trigger NOTIFYs. Reconnects with a
/// backoff after losing the connection; the feed's catch-up read covers what it missed.
pub async fn listen(db: Db, state: &TokenState, stop: CancellationToken) {
    // Anything committed while nobody listened is in the log: look on every connection.
    db.listen(
        "performchat_change",
        stop,
        || state.wake(),
        |_| state.wake(),
    )
    .await;
}
