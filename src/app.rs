//! The composition root: builds the shared state, starts every background task under one
//! tracker, serves HTTP, and stops it all through one shutdown path. Nothing else in the
//! crate spawns a long-running task.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::AgentsState;
use crate::audit::AuditLog;
use crate::chat::ChatState;
use crate::clock::Clock;
use crate::config::Settings;
use crate::db::Db;
use crate::error::{Error, Result};
use crate::limits::Limits;
use crate::metrics::{Metrics, NameLabels};
use crate::token::{TokenState, feed};

/// Everything a request needs. Cloned several times per request (extractors, middleware),
/// so it is one `Arc`: a clone is one atomic increment, where a struct of ten `Arc`s cost ten
/// contended ones (8 % of the CPU of a `/me` request in a profile).
#[derive(Clone)]
pub struct AppState(Arc<AppInner>);

pub struct AppInner {
    pub db: Db,
    pub settings: Settings,
    pub clock: Clock,
    pub metrics: Metrics,
    pub audit: AuditLog,
    pub limits: Limits,
    /// The token subsystem's in-memory state.
    pub tokens: TokenState,
    /// The chat's: this instance's sockets.
    pub chat: ChatState,
    /// The agents': the webhook sender.
    pub agents: AgentsState,
}

impl std::ops::Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}

/// How often the clean-ups run (by the service's clock, so tests can move past them).
const PURGE_EVERY_MS: i64 = 10 * 60 * 1000;
const LIMITS_HOUSEKEEPING_EVERY_MS: i64 = 60 * 1000;
const HOUSEKEEPING_TICK: Duration = Duration::from_secs(1);

/// A built server: its state and its running background tasks.
pub struct App {
    state: AppState,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl App {
    /// Loads the token state from the database and starts the background tasks: the change
    /// feed (and its PostgreSQL listener), the audit writer, the periodic housekeeping, the
    /// chat's fan-out and the webhook worker.
    pub async fn build(db: Db, settings: Settings, clock: Clock) -> Result<App> {
        let tokens = feed::load(&db, &clock).await?;
        let tasks = TaskTracker::new();
        let stop = CancellationToken::new();
        let metrics = Metrics::default();
        let (audit, writer) = AuditLog::new(db.clone(), metrics.audit_queued.clone());
        let limits = Limits::new(settings.limits());
        let agents = AgentsState::new(settings.webhook_timeout);
        let state = AppState(Arc::new(AppInner {
            db,
            settings,
            clock,
            metrics,
            audit,
            limits,
            tokens,
            chat: ChatState::default(),
            agents,
        }));
        tasks.spawn(writer.run());
        let poll = Duration::from_millis(state.settings.change_poll_ms.max(10));
        let s = state.clone();
        let st = stop.clone();
        tasks.spawn(
            async move { feed::run(s.db.clone(), &s.tokens, s.clock.clone(), poll, st).await },
        );
        let s = state.clone();
        let st = stop.clone();
        tasks.spawn(async move { feed::listen(s.db.clone(), &s.tokens, st).await });
        tasks.spawn(housekeeping(state.clone(), stop.clone()));
        tasks.spawn(close_dead_sockets(state.clone(), stop.clone()));
        tasks.spawn(socket_timers(state.clone(), stop.clone()));
        crate::chat::fanout::spawn(&state, &tasks, &stop);
        tasks.spawn(crate::agents::worker::run(state.clone(), stop.clone()));
        Ok(App { state, tasks, stop })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves on `listener` until `shutdown` resolves; then stops taking connections, lets
    /// in-flight requests finish for at most `--shutdown-timeout`, and stops everything.
    pub async fn run_until_stopped(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let grace = Duration::from_secs(self.state.settings.shutdown_timeout.into());
        let signalled = CancellationToken::new();
        let on_signal = signalled.clone();
        let state = self.state.clone();
        let server = crate::http::serve(listener, self.state.clone(), async move {
            shutdown.await;
            tracing::info!("shutting down: finishing in-flight requests");
            // Chat sockets are told to reconnect (to another instance) and catch up.
            state.chat.hub.close_all(1001);
            on_signal.cancel();
        });
        let served = tokio::select! {
            result = server => result,
            _ = async { signalled.cancelled().await; tokio::time::sleep(grace).await } => {
                tracing::warn!("in-flight requests did not finish within {grace:?}; closing anyway");
                Ok(())
            }
        };
        self.stop().await;
        served
    }

    /// Stops the background tasks, writes the queued audit events, closes the database.
    pub async fn stop(self) {
        let App { state, tasks, stop } = self;
        stop.cancel();
        let db = state.db.clone();
        // The audit writer ends once every sender is gone: ours here, the tasks' as they end.
        drop(state);
        tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("the audit trail could not be flushed in time");
        }
        db.close().await;
    }
}

/// The periodic jobs, on one timer: expired revocations out of memory and streamed replies
/// idle past `--stream-timeout` finished as failed (every tick); rate-limit state (every
/// minute); expired revocations, old audit events and retired signing
/// secrets out of the database (every ten minutes); and, while writes are failing, a probe
/// write that tells readiness when they work again.
async fn housekeeping(state: AppState, stop: CancellationToken) {
    let start = state.clock.now_ms();
    let mut last_purge = start;
    let mut last_limits = start;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(HOUSEKEEPING_TICK) => {}
        }
        let now = state.clock.now_ms();
        state.tokens.purge_expired(now / 1000);
        let idle_ms = state.settings.stream_timeout.as_millis() as i64;
        match crate::chat::fail_idle_streams(&state, idle_ms).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(replies = n, "streamed replies timed out and failed"),
            Err(e) => tracing::warn!(error = %e, "cannot end idle streamed replies"),
        }
        if now - last_limits >= LIMITS_HOUSEKEEPING_EVERY_MS {
            last_limits = now;
            state.limits.housekeeping(now);
        }
        if now - last_purge >= PURGE_EVERY_MS {
            last_purge = now;
            purge(&state, now).await;
        }
        if state.db.writes_failing() {
            // Its outcome is recorded by the storage layer; a failure was logged there.
            let _ = state.db.probe_write(now).await;
        }
    }
}

/// The chat reacts to a token's death: every change the token state applies pokes the
/// sockets it may concern, which check their tokens again and close with the right code.
async fn close_dead_sockets(state: AppState, stop: CancellationToken) {
    let mut events = state.tokens.subscribe();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => event,
        };
        match event {
            Ok(event) => state.chat.hub.token_changed(&event),
            // Missed some: every socket checks.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => state.chat.hub.poke_all(),
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

/// The chat sockets' one timer: every tick, the sockets whose deadline passed (a ping to
/// send, the idle timeout, the token's `expiring` warning or its expiry) are signalled.
async fn socket_timers(state: AppState, stop: CancellationToken) {
    let mut tick = tokio::time::interval(crate::chat::hub::TIMER_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => state.chat.hub.fire_due_timers(),
        }
    }
}

async fn purge(state: &AppState, now: i64) {
    let db = &state.db;
    if let Err(e) = db.purge_expired_revocations(now / 1000).await {
        tracing::warn!(error = %e, "cannot purge expired revocations");
    }
    let retention = state.settings.audit_retention.as_millis() as i64;
    let mint_retention = state.settings.audit_mint_retention.as_millis() as i64;
    if let Err(e) = db
        .purge_audit_events(now - retention, now - mint_retention)
        .await
    {
        tracing::warn!(error = %e, "cannot purge old audit events");
    }
    match db.erase_retired_signing_keys(now).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(erased = n, "erased the secrets of retired signing keys"),
        Err(e) => tracing::warn!(error = %e, "cannot erase retired signing keys"),
    }
}

impl AppState {
    /// Readiness: the change feed is current, the database answers, and its last write did
    /// not fail (a full disk or a read-only database makes an instance unready).
    pub async fn ready(&self) -> Result<()> {
        if self.verification_stale() {
            return Err(Error::Unavailable);
        }
        if self.db.writes_failing() {
            return Err(Error::Unavailable);
        }
        match tokio::time::timeout(Duration::from_secs(2), self.db.ping()).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(Error::Unavailable),
        }
    }

    /// The change log has not been read for longer than `--max-staleness`: the revocation
    /// state may miss changes, so nothing is verified against it.
    pub fn verification_stale(&self) -> bool {
        let max_stale_ms = i64::from(self.settings.max_staleness) * 1000;
        self.tokens.staleness_ms(&self.clock) > max_stale_ms
    }

    /// Refreshes the gauges that are read rather than counted, then renders every metric.
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        m.cache_entries
            .get_or_create(&NameLabels { name: "users" })
            .set(self.tokens.caches.user_entries() as i64);
        m.cache_entries
            .get_or_create(&NameLabels {
                name: "revoked_tokens",
            })
            .set(self.tokens.revocations().revoked_token_count() as i64);
        for (name, size, idle) in self.db.pool_stats() {
            m.db_pool_connections
                .get_or_create(&NameLabels { name })
                .set(size as i64);
            m.db_pool_idle
                .get_or_create(&NameLabels { name })
                .set(idle as i64);
        }
        m.change_feed_lag_ms
            .set(self.tokens.staleness_ms(&self.clock));
        m.change_feed_seq.set(self.tokens.seq());
        m.chat_sockets.set(self.chat.hub.sockets() as i64);
        m.render()
    }
}
