//! The audit trail's writer. Request handlers queue events; one task writes them in batches
//! (one transaction per batch), so recording costs the request path a channel send. On a
//! clean shutdown the queue is drained before the database closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::db::{AuditEvent, Db};
use crate::metrics::Metrics;

/// Events written per transaction at most.
const BATCH: usize = 3000;
/// Events the queue holds; past that, requests wait for the writer rather than lose events.
/// Small on purpose: it bounds memory (an event is a few hundred bytes), and a writer that
/// cannot keep up should slow minting rather than grow the heap.
const QUEUE: usize = 1024;

#[derive(Clone)]
pub struct AuditLog {
    queue: mpsc::Sender<AuditEvent>,
}

/// The writer task; `close` it after the server has stopped to flush what is queued.
pub struct AuditWriter {
    task: JoinHandle<()>,
}

impl AuditLog {
    pub fn start(db: Db, metrics: Arc<Metrics>) -> (AuditLog, AuditWriter) {
        let (queue, mut rx) = mpsc::channel::<AuditEvent>(QUEUE);
        let task = tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                metrics.audit_queued.set(rx.len() as i64);
                // A failed write is retried (the database may be restarting); events are
                // dropped only after a minute of failures, and that is logged.
                let mut delay = Duration::from_millis(100);
                let mut waited = Duration::ZERO;
                while let Err(e) = db.insert_audit_events(&batch).await {
                    if waited > Duration::from_secs(60) {
                        tracing::error!(error = %e, lost = batch.len(), "audit events could not be written");
                        break;
                    }
                    tracing::warn!(error = %e, "audit write failed; retrying");
                    tokio::time::sleep(delay).await;
                    waited += delay;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                batch.clear();
            }
        });
        (AuditLog { queue }, AuditWriter { task })
    }

    pub async fn record(&self, event: AuditEvent) {
        // Fails only once the writer has stopped, at the very end of a shutdown.
        let _ = self.queue.send(event).await;
    }
}

impl AuditWriter {
    /// Waits until every queued event is written. Every `AuditLog` must be dropped first.
    pub async fn close(self) {
        let _ = self.task.await;
    }
}
