//! The server's own JWT signing secrets. Kept in the database so that every instance sharing
//! it signs and verifies alike and a restart does not invalidate issued tokens. A rotation
//! gives the older keys a retirement time; from then on their tokens are refused, and the
//! periodic clean-up erases their secrets (the rows stay, so that their tokens are still
//! recognised as retired and `signing-key list` shows what happened).

use super::{ChangeKind, Db, Result};

#[derive(Clone, sqlx::FromRow)]
pub struct StoredSigningKey {
    pub id: String,
    /// Empty once erased.
    pub secret: Vec<u8>,
    pub created_at: i64,
    /// Unix ms from when its tokens are refused; None for the key that signs.
    pub retire_at: Option<i64>,
}

impl StoredSigningKey {
    pub fn is_erased(&self) -> bool {
        self.secret.is_empty()
    }
}

impl std::fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("retire_at", &self.retire_at)
            .finish()
    }
}

impl Db {
    /// All signing keys, oldest first: the newest signs, those not retired verify.
    pub async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, StoredSigningKey>(
                "SELECT id, secret, created_at, retire_at FROM signing_key ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    /// Stores the first signing key unless one exists. Instances starting together on an
    /// empty database race here; the fixed id lets exactly one insert win.
    pub async fn ensure_signing_key(&self, secret: &[u8], now_ms: i64) -> Result<()> {
        const FIRST: &str = "sk1";
        transaction!(self, |tx| {
            // Only into an empty table: after a rotation retired the first key, a restart
            // must not bring a new first key back.
            let inserted = sqlx::query(
                "INSERT INTO signing_key (id, secret, created_at) SELECT $1, $2, $3 \
                 WHERE NOT EXISTS (SELECT 1 FROM signing_key) ON CONFLICT (id) DO NOTHING",
            )
            .bind(FIRST)
            .bind(secret)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted > 0 {
                record_change!(&mut *tx, ChangeKind::SigningKey, FIRST, now_ms);
            }
        })
    }

    /// Adds a signing key that every server starts signing with; the keys before it keep
    /// verifying until `retire_at` (unix ms), and not a moment longer.
    pub async fn rotate_signing_key(
        &self,
        id: &str,
        secret: &[u8],
        retire_at: i64,
        now_ms: i64,
    ) -> Result<()> {
        transaction!(self, |tx| {
            sqlx::query(
                "UPDATE signing_key SET retire_at = $1 WHERE retire_at IS NULL OR retire_at > $1",
            )
            .bind(retire_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query("INSERT INTO signing_key (id, secret, created_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(secret)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
            // One change for the whole ring: servers reload every key with its retirement.
            record_change!(&mut *tx, ChangeKind::SigningKey, id, now_ms);
        })
    }

    /// Erases the secrets of signing keys past their retirement (their tokens are refused
    /// already). Returns how many were erased.
    pub async fn erase_retired_signing_keys(&self, now_ms: i64) -> Result<u64> {
        transaction!(self, |tx| {
            let ids = sqlx::query_scalar::<_, String>(
                "UPDATE signing_key SET secret = $2 \
                 WHERE retire_at IS NOT NULL AND retire_at <= $1 AND length(secret) > 0 RETURNING id",
            )
            .bind(now_ms)
            .bind(Vec::<u8>::new())
            .fetch_all(&mut *tx)
            .await?;
            for id in &ids {
                record_change!(&mut *tx, ChangeKind::SigningKey, id, now_ms);
            }
            ids.len() as u64
        })
    }
}
