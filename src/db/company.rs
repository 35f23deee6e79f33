//! Companies: the tenants. Every key, agent and user belongs to exactly one.

use super::{ChangeKind, Db};
use super::{Entity, Result, StoreError};

#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Company {
    pub id: String,
    pub name: String,
    pub active: bool,
    pub default_agent_id: Option<String>,
    #[serde(serialize_with = "crate::clock::serialize_ms")]
    pub created_at: i64,
}

impl Db {
    pub async fn insert_company(&self, id: &str, name: &str, now_ms: i64) -> Result<Company> {
        transaction!(self, |tx| {
            sqlx::query_as::<_, Company>(
                "INSERT INTO company (id, name, active, created_at) VALUES ($1, $2, TRUE, $3) \
                 RETURNING id, name, active, default_agent_id, created_at",
            )
            .bind(id)
            .bind(name)
            .bind(now_ms)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::conflict_on(e, Entity::Company, id))?
        })
    }

    pub async fn find_company(&self, id: &str) -> Result<Option<Company>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Company>(
                "SELECT id, name, active, default_agent_id, created_at FROM company WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await
        })?)
    }

    pub async fn list_companies(&self) -> Result<Vec<Company>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Company>(
                "SELECT id, name, active, default_agent_id, created_at FROM company \
                 ORDER BY created_at, id",
            )
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn count_companies(&self) -> Result<i64> {
        Ok(run!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM company")
                .fetch_one(pool)
                .await
        })?)
    }

    /// Activates or deactivates a company; every token of a deactivated company stops
    /// verifying, and none can be minted, until it is active again.
    pub async fn set_company_active(&self, id: &str, active: bool, now_ms: i64) -> Result<Company> {
        let company = transaction!(self, |tx| {
            let company = sqlx::query_as::<_, Company>(
                "UPDATE company SET active = $2 WHERE id = $1 \
                 RETURNING id, name, active, default_agent_id, created_at",
            )
            .bind(id)
            .bind(active)
            .fetch_optional(&mut *tx)
            .await?;
            if company.is_some() {
                record_change!(&mut *tx, ChangeKind::Company, id, now_ms);
            }
            company
        })?;
        company.ok_or_else(|| StoreError::NotFound(Entity::Company, id.to_owned()))
    }
}
