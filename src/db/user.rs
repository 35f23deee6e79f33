//! End users: one row per (company, the company's own user id). The internal id is made
//! once and never changes, because companies store it to invalidate tokens later.

use super::{ChangeKind, Db, Pools, Result, group_commit};

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
        Ok(run!(self, |pool| {
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
        // No read first: known users are answered from the cache above, so a call here is
        // nearly always a first sight, and `ON CONFLICT DO NOTHING` covers the rest.
        let pending = PendingUser {
            company_id: company_id.to_owned(),
            external_id: external_id.to_owned(),
            new_id: new_id.to_owned(),
            now_ms,
        };
        match &self.pools {
            // SQLite commits one transaction at a time, each with an fsync: concurrent first
            // requests are batched into one transaction by the group-commit task (with the
            // audit events waiting), and each caller still hears back only after the commit
            // that holds its row.
            Pools::Sqlite { group_commit, .. } => {
                group_commit::submit(group_commit, |reply| {
                    group_commit::Job::User(pending, reply)
                })
                .await
            }
            // One statement (two after a lost race), each its own transaction.
            Pools::Postgres(pool) => {
                on_conn!(pool, &self.writes, |conn| insert_user(&mut *conn, &pending)
                    .await?)
            }
        }
    }

    /// Kills every token the user holds now. Returns None for a user this company does
    /// not have.
    pub async fn invalidate_user(
        &self,
        company_id: &str,
        user: UserRef<'_>,
        now_ms: i64,
    ) -> Result<Option<User>> {
        transaction!(self, |tx| {
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
            updated
        })
    }

    /// A user's current token version; 0 for a user never invalidated or not found,
    /// [`ERASED`](super::ERASED) for an erased one.
    pub async fn find_user_token_version(&self, id: &str) -> Result<i64> {
        Ok(run!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "SELECT token_version FROM app_user WHERE id = $1 \
                 UNION ALL SELECT $2 FROM erased_user WHERE id = $1",
            )
            .bind(id)
            .bind(super::ERASED)
            .fetch_optional(pool)
            .await
        })?
        .unwrap_or(0))
    }

    /// Deletes a user with their conversations and messages, and keeps their id as erased so
    /// that their tokens stay refused. None for a user this company does not have.
    pub async fn erase_user(
        &self,
        company_id: &str,
        user: UserRef<'_>,
        now_ms: i64,
    ) -> Result<Option<User>> {
        transaction!(self, |tx| {
            let query = match user {
                UserRef::Id(id) => sqlx::query_as::<_, User>(
                    "DELETE FROM app_user WHERE company_id = $1 AND id = $2 \
                     RETURNING id, company_id, external_id, token_version, invalidated_at",
                )
                .bind(company_id)
                .bind(id),
                UserRef::External(external_id) => sqlx::query_as::<_, User>(
                    "DELETE FROM app_user WHERE company_id = $1 AND external_id = $2 \
                     RETURNING id, company_id, external_id, token_version, invalidated_at",
                )
                .bind(company_id)
                .bind(external_id),
            };
            let erased = query.fetch_optional(&mut *tx).await?;
            if let Some(u) = &erased {
                sqlx::query(
                    "INSERT INTO erased_user (id, company_id, erased_at) VALUES ($1, $2, $3)",
                )
                .bind(&u.id)
                .bind(company_id)
                .bind(now_ms)
                .execute(&mut *tx)
                .await?;
                record_change!(&mut *tx, ChangeKind::User, &u.id, now_ms);
            }
            erased
        })
    }
}

/// PostgreSQL: inserts the user unless (company, external id) exists, and answers the row
/// that holds. (SQLite inserts first-seen users in batches: `group_commit`.)
async fn insert_user(
    conn: &mut sqlx::PgConnection,
    p: &PendingUser,
) -> std::result::Result<User, sqlx::Error> {
    let inserted = sqlx::query_as::<_, User>(
        "INSERT INTO app_user (id, company_id, external_id, token_version, created_at) \
         VALUES ($1, $2, $3, 0, $4) ON CONFLICT (company_id, external_id) DO NOTHING \
         RETURNING id, company_id, external_id, token_version, invalidated_at",
    )
    .bind(p.new_id.as_str())
    .bind(p.company_id.as_str())
    .bind(p.external_id.as_str())
    .bind(p.now_ms)
    .fetch_optional(&mut *conn)
    .await?;
    match inserted {
        Some(user) => Ok(user),
        // Another request created it first; read it on this connection, which has seen
        // that commit.
        None => {
            sqlx::query_as::<_, User>(
                "SELECT id, company_id, external_id, token_version, invalidated_at \
                 FROM app_user WHERE company_id = $1 AND external_id = $2",
            )
            .bind(p.company_id.as_str())
            .bind(p.external_id.as_str())
            .fetch_one(conn)
            .await
        }
    }
}

/// A first-seen user waiting to be inserted.
pub struct PendingUser {
    pub(super) company_id: String,
    pub(super) external_id: String,
    pub(super) new_id: String,
    pub(super) now_ms: i64,
}
