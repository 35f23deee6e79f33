//! Single revoked tokens, by `jti`, kept until they would have expired anyway.

use super::{ChangeKind, Db};
use crate::error::Result;

impl Db {
    /// Revokes one token. Revoking twice is not an error.
    pub async fn revoke_token(
        &self,
        jti: &str,
        company_id: &str,
        exp: i64,
        now_ms: i64,
    ) -> Result<()> {
        run!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let inserted = sqlx::query(
                "INSERT INTO revoked_token (jti, company_id, exp, revoked_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (jti) DO NOTHING",
            )
            .bind(jti)
            .bind(company_id)
            .bind(exp)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if inserted > 0 {
                record_change!(&mut *tx, ChangeKind::Token, jti, now_ms);
            }
            tx.commit().await
        })?;
        Ok(())
    }

    /// The expiry of a revoked token, or None if it is not revoked.
    pub async fn find_revoked_token(&self, jti: &str) -> Result<Option<i64>> {
        Ok(run!(self, read, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT exp FROM revoked_token WHERE jti = $1")
                .bind(jti)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// Forgets revocations of tokens that have expired: they can no longer verify anyway.
    pub async fn purge_expired_revocations(&self, now_s: i64) -> Result<u64> {
        Ok(run!(self, write, |pool| {
            sqlx::query("DELETE FROM revoked_token WHERE exp < $1")
                .bind(now_s)
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })?)
    }
}
