//! API keys: a public `keyId` and the SHA-256 hash of its secret. The secret itself is
//! never stored.

use super::{ChangeKind, Db};
use super::{Entity, Result, StoreError};

#[derive(Clone, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub company_id: String,
    #[serde(skip)]
    pub secret_hash: Vec<u8>,
    #[serde(serialize_with = "crate::clock::serialize_ms")]
    pub created_at: i64,
    #[serde(serialize_with = "crate::clock::serialize_opt_ms")]
    pub revoked_at: Option<i64>,
    /// Comma-separated: `mint` (token endpoint) and/or `manage` (invalidate, revoke,
    /// introspect, audit).
    pub scopes: String,
    /// Comma-separated agent ids this key may mint for; None: any of its company's agents.
    pub allowed_agents: Option<String>,
    /// The longest token lifetime this key may ask for, in seconds; None: the server's.
    pub max_expires_in: Option<i64>,
    /// After a roll, the previous secret's hash, valid until `previous_expires_at`.
    #[serde(skip)]
    pub previous_secret_hash: Option<Vec<u8>>,
    #[serde(serialize_with = "crate::clock::serialize_opt_ms")]
    pub previous_expires_at: Option<i64>,
}

/// What a new key may do (the default: everything, any agent, the server's maximum).
#[derive(Clone, Debug)]
pub struct KeyPolicy {
    pub scopes: String,
    pub allowed_agents: Option<String>,
    pub max_expires_in: Option<i64>,
}

impl Default for KeyPolicy {
    fn default() -> Self {
        KeyPolicy {
            scopes: "mint,manage,chat".to_owned(),
            allowed_agents: None,
            max_expires_in: None,
        }
    }
}

/// The key columns.
macro_rules! key_select {
    ($rest:literal) => {
        concat!(
            "SELECT id, company_id, secret_hash, created_at, revoked_at, scopes, \
             allowed_agents, max_expires_in, previous_secret_hash, previous_expires_at \
             FROM api_key ",
            $rest
        )
    };
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("id", &self.id)
            .field("company_id", &self.company_id)
            .field("revoked_at", &self.revoked_at)
            .finish_non_exhaustive()
    }
}

impl Db {
    pub async fn insert_api_key(
        &self,
        id: &str,
        company_id: &str,
        secret_hash: &[u8],
        now_ms: i64,
    ) -> Result<ApiKey> {
        self.insert_api_key_with(id, company_id, secret_hash, &KeyPolicy::default(), now_ms)
            .await
    }

    pub async fn insert_api_key_with(
        &self,
        id: &str,
        company_id: &str,
        secret_hash: &[u8],
        policy: &KeyPolicy,
        now_ms: i64,
    ) -> Result<ApiKey> {
        if self.find_company(company_id).await?.is_none() {
            return Err(StoreError::NotFound(Entity::Company, company_id.to_owned()));
        }
        transaction!(self, |tx| {
            sqlx::query(
                "INSERT INTO api_key (id, company_id, secret_hash, created_at, scopes, \
                     allowed_agents, max_expires_in) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(id)
            .bind(company_id)
            .bind(secret_hash)
            .bind(now_ms)
            .bind(policy.scopes.as_str())
            .bind(policy.allowed_agents.as_deref())
            .bind(policy.max_expires_in)
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::conflict_on(e, Entity::ApiKey, id))?;
            // Servers hold every key in memory: tell them.
            record_change!(&mut *tx, ChangeKind::Key, id, now_ms);
        })?;
        self.find_api_key(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(Entity::ApiKey, id.to_owned()))
    }

    pub async fn find_api_key(&self, id: &str) -> Result<Option<ApiKey>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, ApiKey>(key_select!("WHERE id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn list_all_api_keys(&self) -> Result<Vec<ApiKey>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, ApiKey>(key_select!("ORDER BY created_at, id"))
                .fetch_all(pool)
                .await
        })?)
    }

    pub async fn list_api_keys(&self, company_id: &str) -> Result<Vec<ApiKey>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, ApiKey>(key_select!(
                "WHERE company_id = $1 ORDER BY created_at, id"
            ))
            .bind(company_id)
            .fetch_all(pool)
            .await
        })?)
    }

    /// Gives a key a new secret. The previous one keeps working until `previous_expires_at`
    /// (unix milliseconds; `now` ends it at once). A revoked key cannot be rolled.
    pub async fn roll_api_key(
        &self,
        id: &str,
        new_secret_hash: &[u8],
        previous_expires_at: i64,
        now_ms: i64,
    ) -> Result<ApiKey> {
        let found = transaction!(self, |tx| {
            let found = sqlx::query_scalar::<_, String>(
                "UPDATE api_key SET previous_secret_hash = secret_hash, previous_expires_at = $3, \
                 secret_hash = $2 WHERE id = $1 AND revoked_at IS NULL RETURNING id",
            )
            .bind(id)
            .bind(new_secret_hash)
            .bind(previous_expires_at)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_some() {
                record_change!(&mut *tx, ChangeKind::Key, id, now_ms);
            }
            found.is_some()
        })?;
        self.reread_changed_key(id, found, Entity::ActiveApiKey)
            .await
    }

    /// Revokes a key for good: it mints nothing more, and every token it minted stops
    /// verifying. Revoking a revoked key keeps its first revocation time.
    pub async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<ApiKey> {
        let found = transaction!(self, |tx| {
            let found = sqlx::query_scalar::<_, String>(
                "UPDATE api_key SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING id",
            )
            .bind(id)
            .bind(now_ms)
            .fetch_optional(&mut *tx)
            .await?;
            if found.is_some() {
                record_change!(&mut *tx, ChangeKind::Key, id, now_ms);
            }
            found.is_some()
        })?;
        self.reread_changed_key(id, found, Entity::ApiKey).await
    }

    /// The key as an update left it; `changed` false means no such key (`entity`) was there.
    async fn reread_changed_key(&self, id: &str, changed: bool, entity: Entity) -> Result<ApiKey> {
        let not_found = || StoreError::NotFound(entity, id.to_owned());
        if !changed {
            return Err(not_found());
        }
        self.find_api_key(id).await?.ok_or_else(not_found)
    }
}
