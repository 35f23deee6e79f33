//! The change log: every write that running servers must apply to their in-memory
//! verification state appends a row in the same transaction. Servers load a [`Snapshot`]
//! at start and then read the log forward by `seq`; a PostgreSQL NOTIFY (or, on SQLite, a
//! cheap poll) only tells them when to look.

use super::{Db, Result, StoredSigningKey};

/// What a change is about; its `subject` is the id of that thing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeKind {
    /// A user's tokens were invalidated, or the user erased (subject: user id).
    User,
    /// One token was revoked (subject: jti).
    Token,
    /// An API key was created, rolled or revoked (subject: key id).
    Key,
    /// An agent was activated, deactivated or renamed (subject: agent id).
    Agent,
    /// A company was activated or deactivated (subject: company id).
    Company,
    /// A signing key was added (the older ones now retire) or its secret erased (subject:
    /// signing key id; servers reload the whole ring).
    SigningKey,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::User => "user",
            ChangeKind::Token => "token",
            ChangeKind::Key => "key",
            ChangeKind::Agent => "agent",
            ChangeKind::Company => "company",
            ChangeKind::SigningKey => "signing_key",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user" => ChangeKind::User,
            "token" => ChangeKind::Token,
            "key" => ChangeKind::Key,
            "agent" => ChangeKind::Agent,
            "company" => ChangeKind::Company,
            "signing_key" => ChangeKind::SigningKey,
            _ => return None,
        })
    }
}

pub(crate) const RECORD_CHANGE: &str =
    "INSERT INTO change_log (kind, subject, at) VALUES ($1, $2, $3)";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub seq: i64,
    pub kind: ChangeKind,
    pub subject: String,
}

/// Everything verification needs, read at start. Later changes arrive through the log.
#[derive(Debug, Default)]
pub struct Snapshot {
    /// The log position this snapshot reflects at least; read before the state itself, so
    /// replaying from here can only repeat a change, never miss one.
    pub seq: i64,
    /// Users whose tokens were invalidated: (user id, current token version).
    pub user_versions: Vec<(String, i64)>,
    /// Revoked, not yet expired tokens: (jti, exp).
    pub revoked_tokens: Vec<(String, i64)>,
    pub revoked_keys: Vec<String>,
    pub inactive_agents: Vec<String>,
    pub inactive_companies: Vec<String>,
    pub signing_keys: Vec<StoredSigningKey>,
    /// Every API key: authentication reads only memory.
    pub api_keys: Vec<super::ApiKey>,
}

impl Db {
    pub async fn latest_change_seq(&self) -> Result<i64> {
        Ok(run!(self, |pool| {
            sqlx::query_scalar::<_, Option<i64>>("SELECT MAX(seq) FROM change_log")
                .fetch_one(pool)
                .await
        })?
        .unwrap_or(0))
    }

    /// Changes after `seq`, oldest first, at most `limit`.
    pub async fn changes_since(&self, seq: i64, limit: i64) -> Result<Vec<Change>> {
        let rows = run!(self, |pool| {
            sqlx::query_as::<_, (i64, String, String)>(
                "SELECT seq, kind, subject FROM change_log WHERE seq > $1 ORDER BY seq LIMIT +$2",
            )
            .bind(seq)
            .bind(limit)
            .fetch_all(pool)
            .await
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(seq, kind, subject)| {
                // A kind this build does not know comes from a newer version sharing the
                // database; skipping it is safe because every kind is also in the snapshot.
                let kind = ChangeKind::parse(&kind)?;
                Some(Change { seq, kind, subject })
            })
            .collect())
    }

    pub async fn load_snapshot(&self, now_s: i64) -> Result<Snapshot> {
        let seq = self.latest_change_seq().await?;
        let (user_versions, revoked_tokens, revoked_keys, inactive_agents, inactive_companies) =
            run!(self, |pool| {
                let users = sqlx::query_as::<_, (String, i64)>(
                    "SELECT id, token_version FROM app_user WHERE token_version > 0 \
                     UNION ALL SELECT id, $1 FROM erased_user",
                )
                .bind(super::ERASED)
                .fetch_all(pool)
                .await?;
                let tokens = sqlx::query_as::<_, (String, i64)>(
                    "SELECT jti, exp FROM revoked_token WHERE exp >= $1",
                )
                .bind(now_s)
                .fetch_all(pool)
                .await?;
                let keys = sqlx::query_scalar::<_, String>(
                    "SELECT id FROM api_key WHERE revoked_at IS NOT NULL",
                )
                .fetch_all(pool)
                .await?;
                let agents =
                    sqlx::query_scalar::<_, String>("SELECT id FROM agent WHERE NOT active")
                        .fetch_all(pool)
                        .await?;
                let companies =
                    sqlx::query_scalar::<_, String>("SELECT id FROM company WHERE NOT active")
                        .fetch_all(pool)
                        .await?;
                Ok::<_, sqlx::Error>((users, tokens, keys, agents, companies))
            })?;
        Ok(Snapshot {
            seq,
            user_versions,
            revoked_tokens,
            revoked_keys,
            inactive_agents,
            inactive_companies,
            signing_keys: self.list_signing_keys().await?,
            api_keys: self.list_all_api_keys().await?,
        })
    }
}
