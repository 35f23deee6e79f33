//! The audit trail's table.

use std::sync::Arc;

use super::Db;
use super::Result;

/// The kind of a token's mint: a data event, kept by `--audit-mints` for
/// `--audit-mint-retention`; every other kind is kept for `--audit-retention`.
pub const MINTED: &str = "token.minted";

#[derive(
    Clone, Debug, Default, PartialEq, Eq, sqlx::FromRow, serde::Serialize, utoipa::ToSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    /// Assigned by the database; 0 before it is stored.
    pub id: i64,
    /// When it happened: RFC 3339, UTC, with milliseconds.
    // Unix milliseconds in memory and in the database.
    #[serde(serialize_with = "crate::clock::serialize_ms")]
    #[schema(value_type = String, format = DateTime)]
    pub at: i64,
    /// What happened: `token.minted`, `auth.failed` (a wrong secret for this company's key;
    /// `detail` names the scope asked for), `user.invalidated`, `user.erased`, `token.revoked`,
    /// `key.created`, `key.rolled`, `key.revoked`, `agent.created`, `agent.updated`,
    /// `agent.webhook_secret_rolled`, `agent.webhook_disabled`, `company.created`,
    /// `company.updated`, `conversation.opened`, `conversation.closed`,
    /// `conversation.handed_off`, `conversation.taken`, `conversation.released`,
    /// `webhook.attempt` (outcome `ok`, `timeout`, `connect`, `request`, `gone`, `http_3xx`,
    /// `http_4xx` or `http_5xx`), `webhook.answer_ignored`, `llm.reply` (outcome `ok`,
    /// `timeout`, `connect`, `request`, `http_429`, `http_4xx`, `http_5xx`, `invalid_stream`,
    /// `empty` or `storage`).
    pub kind: String,
    /// `ok`, or the error code of a refused request.
    pub outcome: String,
    pub company_id: String,
    pub key_id: Option<String>,
    pub user_id: Option<String>,
    pub agent_id: Option<String>,
    pub jti: Option<String>,
    pub client_ip: Option<String>,
    pub detail: Option<String>,
}

/// Which events `list_audit_events` returns, newest first.
#[derive(Debug, Default)]
pub struct AuditQuery<'a> {
    pub company_id: &'a str,
    pub since_ms: Option<i64>,
    pub user_id: Option<&'a str>,
    /// Only events older than this id (the cursor of the previous page).
    pub before_id: Option<i64>,
    pub limit: i64,
}

impl Db {
    /// Stores events in one transaction: on SQLite in the group commit of the mint path's
    /// writes (`group_commit`), on PostgreSQL with one multi-row statement.
    pub async fn insert_audit_events(&self, events: Arc<Vec<AuditEvent>>) -> Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        if let super::Pools::Sqlite { group_commit, .. } = &self.pools {
            return super::group_commit::submit(group_commit, |reply| {
                super::group_commit::Job::Audit(events, reply)
            })
            .await;
        }
        // PostgreSQL allows 65 535 bound values; 10 a row.
        for chunk in events.chunks(3000) {
            transaction!(self, |tx| {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO audit_event \
                     (at, kind, outcome, company_id, key_id, user_id, agent_id, jti, client_ip, detail) ",
                );
                insert.push_values(chunk, |mut row, e| {
                    row.push_bind(e.at)
                        .push_bind(e.kind.as_str())
                        .push_bind(e.outcome.as_str())
                        .push_bind(e.company_id.as_str())
                        .push_bind(e.key_id.as_deref())
                        .push_bind(e.user_id.as_deref())
                        .push_bind(e.agent_id.as_deref())
                        .push_bind(e.jti.as_deref())
                        .push_bind(e.client_ip.as_deref())
                        .push_bind(e.detail.as_deref());
                });
                // Not kept as a prepared statement: its text varies with the batch size, and
                // a cache of many-thousand-parameter statements cost tens of megabytes.
                insert.build().persistent(false).execute(&mut *tx).await?;
            })?;
        }
        Ok(())
    }

    pub async fn list_audit_events(&self, q: &AuditQuery<'_>) -> Result<Vec<AuditEvent>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, AuditEvent>(
                "SELECT id, at, kind, outcome, company_id, key_id, user_id, agent_id, jti, \
                 client_ip, detail FROM audit_event \
                 WHERE company_id = $1 AND ($2 IS NULL OR at >= $2) \
                 AND ($3 IS NULL OR user_id = $3) AND ($4 IS NULL OR id < $4) \
                 ORDER BY id DESC LIMIT +$5",
            )
            .bind(q.company_id)
            .bind(q.since_ms)
            .bind(q.user_id)
            .bind(q.before_id)
            .bind(q.limit)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Deletes events older than `before_ms`, and `token.minted` events (which have a
    /// retention of their own) older than `mints_before_ms`.
    pub async fn purge_audit_events(&self, before_ms: i64, mints_before_ms: i64) -> Result<u64> {
        transaction!(self, |tx| {
            let others = sqlx::query("DELETE FROM audit_event WHERE at < $1 AND kind <> $2")
                .bind(before_ms)
                .bind(MINTED)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            let mints = sqlx::query("DELETE FROM audit_event WHERE at < $1 AND kind = $2")
                .bind(mints_before_ms)
                .bind(MINTED)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            others + mints
        })
    }
}
