//! The server's own JWT signing secrets. Kept in the database so that every instance sharing
//! it signs and verifies alike and a restart does not invalidate issued tokens.

use super::{ChangeKind, Db};
use crate::error::Result;

#[derive(Clone, sqlx::FromRow)]
pub struct StoredSigningKey {
    pub id: String,
    pub secret: Vec<u8>,
    pub created_at: i64,
}

impl std::fmt::Debug for StoredSigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredSigningKey")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl Db {
    /// All signing keys, newest last: the newest signs, all verify.
    pub async fn list_signing_keys(&self) -> Result<Vec<StoredSigningKey>> {
        Ok(run!(self, read, |pool| {
            sqlx::query_as::<_, StoredSigningKey>(
                "SELECT id, secret, created_at FROM signing_key ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn find_signing_key(&self, id: &str) -> Result<Option<StoredSigningKey>> {
        Ok(run!(self, read, |pool| {
            sqlx::query_as::<_, StoredSigningKey>(
                "SELECT id, secret, created_at FROM signing_key WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
        })?)
    }

    /// Stores the first signing key unless one exists. Instances starting together on an
    /// empty database race here; the fixed id lets exactly one insert win.
    pub async fn ensure_signing_key(&self, secret: &[u8], now_ms: i64) -> Result<()> {
        const FIRST: &str = "sk1";
        run!(self, write, |pool| {
            let mut tx = pool.begin().await?;
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
            tx.commit().await
        })?;
        Ok(())
    }
}

impl Db {
    /// Adds a signing key that every server starts signing with; the keys before it keep
    /// verifying until `retire_at` (unix ms), when every token they signed has expired.
    pub async fn rotate_signing_key(
        &self,
        id: &str,
        secret: &[u8],
        retire_at: i64,
        now_ms: i64,
    ) -> Result<()> {
        run!(self, write, |pool| {
            let mut tx = pool.begin().await?;
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
            record_change!(&mut *tx, ChangeKind::SigningKey, id, now_ms);
            tx.commit().await
        })?;
        Ok(())
    }

    /// (id, created_at, retire_at) of every signing key, oldest first. No secrets.
    pub async fn list_signing_key_ids(&self) -> Result<Vec<(String, i64, Option<i64>)>> {
        Ok(run!(self, read, |pool| {
            sqlx::query_as::<_, (String, i64, Option<i64>)>(
                "SELECT id, created_at, retire_at FROM signing_key ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    /// Erases signing keys past their retirement; every server drops them from its ring.
    pub async fn purge_retired_signing_keys(&self, now_ms: i64) -> Result<()> {
        run!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let ids = sqlx::query_scalar::<_, String>(
                "DELETE FROM signing_key WHERE retire_at IS NOT NULL AND retire_at < $1 RETURNING id",
            )
            .bind(now_ms)
            .fetch_all(&mut *tx)
            .await?;
            for id in &ids {
                record_change!(&mut *tx, ChangeKind::SigningKey, id, now_ms);
            }
            tx.commit().await
        })?;
        Ok(())
    }
}
