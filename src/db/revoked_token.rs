//! Single revoked tokens, by `jti`, kept until they would have expired anyway.

use super::Result;
use super::{ChangeKind, Db};

impl Db {
    /// Revokes one token. Revoking twice is not an error.
    pub async fn revoke_token(
        &self,
        jti: &str,
        company_id: &str,
        exp: i64,
        now_ms: i64,
    ) -> Result<()> {
        transaction!(self, |tx| {
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
        })
    }

    /// The expiry of a revoked token, or None if it is not revoked.
    pub async fn find_revoked_token(&self, jti: &str) -> Result<Option<i64>> {
        Ok(run!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT exp FROM revoked_token WHERE jti = $1")
                .bind(jti)
                .fetch_optional(pool)
                .await
        })?)
    }

    /// Forgets revocations of tokens that have expired: they can no longer verify anyway.
    pub async fn purge_expired_revocations(&self, now_s: i64) -> Result<u64> {
        transaction!(self, |tx| {
            sqlx::query("DELETE FROM revoked_token WHERE exp < $1")
                .bind(now_s)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        })
    }
}
