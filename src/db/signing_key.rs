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
            let inserted = sqlx::query(
                "INSERT INTO signing_key (id, secret, created_at) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO NOTHING",
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
