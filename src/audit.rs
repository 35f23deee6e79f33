//! The audit trail's writer. Request handlers queue events; one task writes them in batches
//! (one transaction per batch), so recording costs the request path a channel send. A write
//! that fails (the database restarting, a full disk) is retried until it succeeds: events are
//! never dropped. The queue is bounded, so while the writer cannot write, requests that must
//! be audited are refused (503) rather than answered unaudited.

use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::mpsc;

use crate::db::{AuditEvent, Db};
use crate::error::{Error, Result};

/// Events written per transaction at most.
const BATCH: usize = 3000;
/// Events the queue holds. Small on purpose: it bounds memory (an event is a few hundred
/// bytes), and a writer that cannot keep up should slow requests rather than grow the heap.
const QUEUE: usize = 1024;
/// How long a request waits for room in a full queue before it is refused.
const QUEUE_WAIT: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<AuditEvent>,
}

/// The writing end; [`AuditWriter::run`] ends once every [`AuditLog`] is dropped and the
/// queue is written.
pub struct AuditWriter {
    db: Db,
    rx: mpsc::Receiver<AuditEvent>,
    queued: Gauge,
}

impl AuditLog {
    pub fn new(db: Db, queued: Gauge) -> (AuditLog, AuditWriter) {
        let (queue, rx) = mpsc::channel::<AuditEvent>(QUEUE);
        (AuditLog { queue }, AuditWriter { db, rx, queued })
    }

    /// Queues an event. Refused (503) when the queue stays full, which only happens while
    /// the database refuses writes.
    pub async fn record(&self, event: AuditEvent) -> Result<()> {
        match self.queue.send_timeout(event, QUEUE_WAIT).await {
            Ok(()) => Ok(()),
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => Err(Error::Unavailable),
            // The writer has stopped: only at the very end of a shutdown.
            Err(mpsc::error::SendTimeoutError::Closed(_)) => Err(Error::Unavailable),
        }
    }

    /// Queues an event if there is room, without waiting. For events that anyone can cause
    /// (failed authentications): a flood of them must neither hold up nor refuse the
    /// requests around it. Returns false when the queue was full and the event dropped.
    pub fn try_record(&self, event: AuditEvent) -> bool {
        self.queue.try_send(event).is_ok()
    }
}

impl AuditWriter {
    pub async fn run(mut self) {
        let mut batch = Vec::with_capacity(BATCH);
        while self.rx.recv_many(&mut batch, BATCH).await > 0 {
            self.queued.set(self.rx.len() as i64);
            let mut delay = Duration::from_millis(100);
            let mut failures = 0u32;
            let events = std::sync::Arc::new(std::mem::take(&mut batch));
            while let Err(e) = self.db.insert_audit_events(events.clone()).await {
                if failures.is_multiple_of(60) {
                    tracing::warn!(error = %e, waiting = events.len(), "audit write failed; retrying");
                }
                failures += 1;
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(1));
            }
            if failures > 0 {
                tracing::info!(
                    written = events.len(),
                    "audit events written after a failure"
                );
            }
        }
    }
}
