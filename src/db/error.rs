//! What can go wrong in storage, in storage terms: a row that is not there, an id already
//! taken, a database that cannot serve now, or a query that failed. What a client or an
//! operator is told about each is decided above this seam (`error`, `cli`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    #[error("no {0} with id {1:?}")]
    NotFound(Entity, String),
    #[error("{0} id {1:?} is already taken")]
    Conflict(Entity, String),
    /// The database cannot serve now: unreachable, busy past the timeout, out of space, or
    /// refusing writes. Retrying later can succeed without any change here.
    #[error("the database is unavailable: {0}")]
    Unavailable(Arc<sqlx::Error>),
    /// Anything else: a bug in a query, a constraint we did not expect.
    #[error("database query failed: {0}")]
    Query(Arc<sqlx::Error>),
}

/// What a [`StoreError`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entity {
    Company,
    Agent,
    ApiKey,
    /// An API key that is not revoked.
    ActiveApiKey,
    User,
    SigningKey,
    Conversation,
    Message,
}

impl std::fmt::Display for Entity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Entity::Company => "company",
            Entity::Agent => "agent",
            Entity::ApiKey => "API key",
            Entity::ActiveApiKey => "active API key",
            Entity::User => "user",
            Entity::SigningKey => "signing key",
            Entity::Conversation => "conversation",
            Entity::Message => "message",
        })
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        if is_unavailable(&e) {
            StoreError::Unavailable(Arc::new(e))
        } else {
            StoreError::Query(Arc::new(e))
        }
    }
}

impl StoreError {
    /// A unique-constraint violation becomes a conflict on `what`; anything else is kept.
    /// (SQLite does not report constraint names, so the caller says what was taken.)
    pub(crate) fn conflict_on(e: sqlx::Error, entity: Entity, id: &str) -> Self {
        if e.as_database_error()
            .is_some_and(|d| d.is_unique_violation())
        {
            StoreError::Conflict(entity, id.to_owned())
        } else {
            e.into()
        }
    }

    /// The database itself failed (as opposed to a row not found or an id taken).
    pub(crate) fn is_database_failure(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Query(_))
    }
}

/// True when an error means "the database cannot serve now" (answer 503 and retry), as
/// opposed to a bug in a query.
pub(crate) fn is_unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            if d.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
                .is_some()
            {
                // PostgreSQL: 08 connection exception, 53 insufficient resources (53100 disk
                // full), 57P0x shutting down or terminated, 58 system error (58030 I/O),
                // 25006 read-only transaction (a standby, or default_transaction_read_only).
                code.starts_with("08")
                    || code.starts_with("53")
                    || code.starts_with("57P")
                    || code.starts_with("58")
                    || code == "25006"
            } else {
                // SQLite's primary result code is the low byte of its extended code: BUSY (5)
                // after busy_timeout, READONLY (8), IOERR (10), FULL (13), CANTOPEN (14).
                code.parse::<u32>()
                    .is_ok_and(|n| matches!(n & 0xff, 5 | 8 | 10 | 13 | 14))
            }
        }
        _ => false,
    }
}

/// Whether the last write reached the database. Readiness reports a writer that cannot
/// write; the next successful write (or readiness's own probe) clears it.
#[derive(Debug, Default)]
pub struct WriteHealth {
    failing: AtomicBool,
}

impl WriteHealth {
    pub(crate) fn record<T>(&self, outcome: &Result<T>) {
        match outcome {
            Ok(_) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("database writes work again");
                }
            }
            Err(StoreError::Unavailable(e)) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %e, "database refuses writes");
                }
            }
            Err(_) => {}
        }
    }

    pub fn failing(&self) -> bool {
        self.failing.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_read_as_words() {
        let e = StoreError::NotFound(Entity::ApiKey, "pk_1".into());
        assert_eq!(e.to_string(), "no API key with id \"pk_1\"");
    }
}
