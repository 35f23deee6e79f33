//! End users: one row per (company, the company's own user id). The internal id is made
//! once and never changes, because companies store it to invalidate tokens later.

use super::{ChangeKind, Db};
use crate::error::Result;

#[derive(Clone, Debug, sqlx::FromRow, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub company_id: String,
    pub external_id: String,
    /// Tokens carry the version they were minted under; invalidation bumps it, so every
    /// older token dies while tokens minted after the bump live, even within one second.
    pub token_version: i64,
    pub invalidated_at: Option<i64>,
}

/// How a request names a user: by our id or by the company's.
#[derive(Clone, Copy, Debug)]
pub enum UserRef<'a> {
    Id(&'a str),
    External(&'a str),
}

impl Db {
    pub async fn find_user(&self, company_id: &str, user: UserRef<'_>) -> Result<Option<User>> {
        Ok(run!(self, read, |pool| {
            let query = match user {
                UserRef::Id(id) => sqlx::query_as::<_, User>(
                    "SELECT id, company_id, external_id, token_version, invalidated_at \
                     FROM app_user WHERE company_id = $1 AND id = $2",
                )
                .bind(company_id)
                .bind(id),
                UserRef::External(external_id) => sqlx::query_as::<_, User>(
                    "SELECT id, company_id, external_id, token_version, invalidated_at \
                     FROM app_user WHERE company_id = $1 AND external_id = $2",
                )
                .bind(company_id)
                .bind(external_id),
            };
            query.fetch_optional(pool).await
        })?)
    }

    /// The user for (company, external id), created with `new_id` if this is the first time
    /// the pair is seen. Concurrent first calls all get the one row that won. The row is
    /// committed before this returns.
    pub async fn upsert_user(
        &self,
        company_id: &str,
        external_id: &str,
        new_id: &str,
        now_ms: i64,
    ) -> Result<User> {
        if let Some(user) = self
            .find_user(company_id, UserRef::External(external_id))
            .await?
        {
            return Ok(user);
        }
        Ok(run!(self, write, |pool| {
            let inserted = sqlx::query_as::<_, User>(
                "INSERT INTO app_user (id, company_id, external_id, token_version, created_at) \
                 VALUES ($1, $2, $3, 0, $4) ON CONFLICT (company_id, external_id) DO NOTHING \
                 RETURNING id, company_id, external_id, token_version, invalidated_at",
            )
            .bind(new_id)
            .bind(company_id)
            .bind(external_id)
            .bind(now_ms)
            .fetch_optional(pool)
            .await?;
            match inserted {
                Some(user) => user,
                // Another request created it first; read it on the writer, which has seen
                // that commit.
                None => {
                    sqlx::query_as::<_, User>(
                        "SELECT id, company_id, external_id, token_version, invalidated_at \
                         FROM app_user WHERE company_id = $1 AND external_id = $2",
                    )
                    .bind(company_id)
                    .bind(external_id)
                    .fetch_one(pool)
                    .await?
                }
            }
        }))
    }

    /// Kills every token the user holds now. Returns None for a user this company does
    /// not have.
    pub async fn invalidate_user(
        &self,
        company_id: &str,
        user: UserRef<'_>,
        now_ms: i64,
    ) -> Result<Option<User>> {
        Ok(run!(self, write, |pool| {
            let mut tx = pool.begin().await?;
            let query = match user {
                UserRef::Id(id) => sqlx::query_as::<_, User>(
                    "UPDATE app_user SET token_version = token_version + 1, invalidated_at = $3 \
                     WHERE company_id = $1 AND id = $2 \
                     RETURNING id, company_id, external_id, token_version, invalidated_at",
                )
                .bind(company_id)
                .bind(id)
                .bind(now_ms),
                UserRef::External(external_id) => sqlx::query_as::<_, User>(
                    "UPDATE app_user SET token_version = token_version + 1, invalidated_at = $3 \
                     WHERE company_id = $1 AND external_id = $2 \
                     RETURNING id, company_id, external_id, token_version, invalidated_at",
                )
                .bind(company_id)
                .bind(external_id)
                .bind(now_ms),
            };
            let updated = query.fetch_optional(&mut *tx).await?;
            if let Some(u) = &updated {
                record_change!(&mut *tx, ChangeKind::User, &u.id, now_ms);
            }
            tx.commit().await?;
            updated
        }))
    }

    /// A user's current token version; 0 for a user never invalidated or not found.
    pub async fn find_user_token_version(&self, id: &str) -> Result<i64> {
        Ok(run!(self, read, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT token_version FROM app_user WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await
        })?
        .unwrap_or(0))
    }
}
