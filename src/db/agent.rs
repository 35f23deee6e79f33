//! Agents: the support or AI agents a company's users chat with. A company's first agent
//! becomes its default, used when a token request names none.

use super::{ChangeKind, Db};
use super::{Entity, Result, StoreError};

#[derive(Clone, Debug, sqlx::FromRow, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub id: String,
    pub company_id: String,
    pub name: String,
    pub active: bool,
    /// Whether this is its company's default agent (derived from `company.default_agent_id`).
    pub is_default: bool,
    /// What answers for it: `human`, `webhook` or `openai` (see `agents::AgentKind`).
    pub kind: String,
    /// Where a `webhook` agent's events go.
    pub webhook_url: Option<String>,
    /// When its webhook answered 410 Gone (no event is sent until its URL is set again).
    #[serde(serialize_with = "crate::clock::serialize_opt_ms")]
    pub webhook_disabled_at: Option<i64>,
    /// An `openai` agent's endpoint (`…/v1`), model, and the server's environment variable
    /// holding its API key (the key itself is never stored).
    pub llm_base_url: Option<String>,
    pub llm_model: Option<String>,
    pub llm_api_key_env: Option<String>,
    pub llm_system_prompt: Option<String>,
    /// Messages sent as context with each request.
    pub llm_history: i64,
    /// The longest wait for the endpoint's next bytes, in milliseconds.
    pub llm_timeout_ms: i64,
    /// Whether a failed reply hands the conversation to a person.
    pub handoff_on_failure: bool,
    #[serde(serialize_with = "crate::clock::serialize_ms")]
    pub created_at: i64,
}

/// The agent columns plus `is_default`; the query must join `company c` to `agent a`.
macro_rules! agent_select {
    ($rest:literal) => {
        concat!(
            "SELECT a.id, a.company_id, a.name, a.active, \
             (c.default_agent_id IS NOT NULL AND c.default_agent_id = a.id) AS is_default, \
             a.kind, a.webhook_url, a.webhook_disabled_at, a.llm_base_url, a.llm_model, \
             a.llm_api_key_env, a.llm_system_prompt, a.llm_history, a.llm_timeout_ms, \
             a.handoff_on_failure, a.created_at FROM agent a JOIN company c ON c.id = a.company_id ",
            $rest
        )
    };
}

/// An agent to create.
#[derive(Clone, Copy, Debug)]
pub struct NewAgent<'a> {
    pub id: &'a str,
    pub company_id: &'a str,
    pub name: &'a str,
    pub active: bool,
    /// Make it its company's default (a company's first agent is, anyway).
    pub make_default: bool,
    /// What answers for it: `human`, `webhook` or `openai`.
    pub kind: &'a str,
    /// Where a `webhook` agent's events go.
    pub webhook_url: Option<&'a str>,
    /// An `openai` agent's settings (the defaults where `None`).
    pub llm: LlmUpdate<'a>,
}

/// The messages an `openai` agent sends as context by default.
const LLM_HISTORY: i64 = 20;
/// The longest wait for an LLM endpoint's next bytes by default.
const LLM_TIMEOUT_MS: i64 = 30_000;

/// What `update_agent` may change; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct AgentUpdate<'a> {
    pub name: Option<&'a str>,
    pub active: Option<bool>,
    pub make_default: bool,
    pub kind: Option<&'a str>,
    /// A new webhook URL (which also enables a webhook disabled by a 410).
    pub webhook_url: Option<&'a str>,
    pub llm: LlmUpdate<'a>,
}

/// An `openai` agent's settings to change; `None` leaves one as it is.
#[derive(Clone, Copy, Debug, Default)]
pub struct LlmUpdate<'a> {
    pub base_url: Option<&'a str>,
    pub model: Option<&'a str>,
    pub api_key_env: Option<&'a str>,
    pub system_prompt: Option<&'a str>,
    pub history: Option<i64>,
    pub timeout_ms: Option<i64>,
    pub handoff_on_failure: Option<bool>,
}

impl Db {
    /// Creates an agent. It becomes the company's default if asked to, or if the company
    /// has none yet.
    pub async fn insert_agent(
        &self,
        id: &str,
        company_id: &str,
        name: &str,
        active: bool,
        make_default: bool,
        now_ms: i64,
    ) -> Result<Agent> {
        let agent = NewAgent {
            id,
            company_id,
            name,
            active,
            make_default,
            kind: "human",
            webhook_url: None,
            llm: LlmUpdate::default(),
        };
        self.insert_agent_of_kind(&agent, now_ms).await
    }

    /// Creates an agent of a kind (with its webhook URL for a `webhook` agent).
    pub async fn insert_agent_of_kind(&self, new: &NewAgent<'_>, now_ms: i64) -> Result<Agent> {
        let NewAgent {
            id,
            company_id,
            name,
            active,
            make_default,
            kind,
            webhook_url,
            llm,
        } = *new;
        transaction!(self, |tx| {
            let company = sqlx::query_scalar::<_, Option<String>>(
                "UPDATE company SET default_agent_id = CASE \
                   WHEN $2 OR default_agent_id IS NULL THEN $3 ELSE default_agent_id END \
                 WHERE id = $1 RETURNING default_agent_id",
            )
            .bind(company_id)
            .bind(make_default)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            if company.is_none() {
                return Err(StoreError::NotFound(Entity::Company, company_id.to_owned()));
            }
            sqlx::query(
                "INSERT INTO agent (id, company_id, name, active, created_at, kind, webhook_url, \
                 llm_base_url, llm_model, llm_api_key_env, llm_system_prompt, llm_history, \
                 llm_timeout_ms, handoff_on_failure) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            )
            .bind(id)
            .bind(company_id)
            .bind(name)
            .bind(active)
            .bind(now_ms)
            .bind(kind)
            .bind(webhook_url)
            .bind(llm.base_url)
            .bind(llm.model)
            .bind(llm.api_key_env)
            .bind(llm.system_prompt)
            .bind(llm.history.unwrap_or(LLM_HISTORY))
            .bind(llm.timeout_ms.unwrap_or(LLM_TIMEOUT_MS))
            .bind(llm.handoff_on_failure.unwrap_or(true))
            .execute(&mut *tx)
            .await
            .map_err(|e| StoreError::conflict_on(e, Entity::Agent, id))?;
            record_change!(&mut *tx, ChangeKind::Agent, id, now_ms);
        })?;
        self.find_agent_by_id(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(Entity::Agent, id.to_owned()))
    }

    pub async fn find_agent_by_id(&self, id: &str) -> Result<Option<Agent>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Agent>(agent_select!("WHERE a.id = $1"))
                .bind(id)
                .fetch_optional(pool)
                .await
        })?)
    }

    pub async fn find_default_agent(&self, company_id: &str) -> Result<Option<Agent>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Agent>(agent_select!(
                "WHERE c.id = $1 AND a.id = c.default_agent_id"
            ))
            .bind(company_id)
            .fetch_optional(pool)
            .await
        })?)
    }

    pub async fn list_agents(&self, company_id: &str) -> Result<Vec<Agent>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, Agent>(agent_select!(
                "WHERE a.company_id = $1 ORDER BY a.created_at, a.id"
            ))
            .bind(company_id)
            .fetch_all(pool)
            .await
        })?)
    }

    pub async fn update_agent(
        &self,
        id: &str,
        update: AgentUpdate<'_>,
        now_ms: i64,
    ) -> Result<Agent> {
        let found = transaction!(self, |tx| {
            let company_id = sqlx::query_scalar::<_, String>(
                "UPDATE agent SET name = COALESCE($2, name), active = COALESCE($3, active), \
                 kind = COALESCE($4, kind), webhook_url = COALESCE($5, webhook_url), \
                 webhook_disabled_at = CASE WHEN $5 IS NULL THEN webhook_disabled_at END, \
                 llm_base_url = COALESCE($6, llm_base_url), llm_model = COALESCE($7, llm_model), \
                 llm_api_key_env = COALESCE($8, llm_api_key_env), \
                 llm_system_prompt = COALESCE($9, llm_system_prompt), \
                 llm_history = COALESCE($10, llm_history), \
                 llm_timeout_ms = COALESCE($11, llm_timeout_ms), \
                 handoff_on_failure = COALESCE($12, handoff_on_failure) \
                 WHERE id = $1 RETURNING company_id",
            )
            .bind(id)
            .bind(update.name)
            .bind(update.active)
            .bind(update.kind)
            .bind(update.webhook_url)
            .bind(update.llm.base_url)
            .bind(update.llm.model)
            .bind(update.llm.api_key_env)
            .bind(update.llm.system_prompt)
            .bind(update.llm.history)
            .bind(update.llm.timeout_ms)
            .bind(update.llm.handoff_on_failure)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(company_id) = &company_id {
                if update.make_default {
                    sqlx::query("UPDATE company SET default_agent_id = $2 WHERE id = $1")
                        .bind(company_id)
                        .bind(id)
                        .execute(&mut *tx)
                        .await?;
                }
                record_change!(&mut *tx, ChangeKind::Agent, id, now_ms);
            }
            company_id.is_some()
        })?;
        let not_found = || StoreError::NotFound(Entity::Agent, id.to_owned());
        if !found {
            return Err(not_found());
        }
        self.find_agent_by_id(id).await?.ok_or_else(not_found)
    }
}

/// One secret that signs an agent's webhooks.
#[derive(Clone, Debug, sqlx::FromRow)]
pub struct WebhookSecret {
    pub id: String,
    pub secret: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
}

impl Db {
    /// Adds a signing secret to an agent, and makes every one it had before expire at
    /// `old_expire_at` (if they would expire later).
    pub async fn add_webhook_secret(
        &self,
        agent_id: &str,
        secret: &WebhookSecret,
        old_expire_at: i64,
    ) -> Result<()> {
        transaction!(self, |tx| {
            sqlx::query(
                "UPDATE webhook_secret SET expires_at = $2 \
                 WHERE agent_id = $1 AND (expires_at IS NULL OR expires_at > $2)",
            )
            .bind(agent_id)
            .bind(old_expire_at)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO webhook_secret (id, agent_id, secret, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&secret.id)
            .bind(agent_id)
            .bind(&secret.secret)
            .bind(secret.created_at)
            .bind(secret.expires_at)
            .execute(&mut *tx)
            .await?;
        })
    }

    /// The secrets that sign an agent's webhooks at `now_ms`, newest first.
    pub async fn webhook_secrets(&self, agent_id: &str, now_ms: i64) -> Result<Vec<WebhookSecret>> {
        Ok(run!(self, |pool| {
            sqlx::query_as::<_, WebhookSecret>(
                "SELECT id, secret, created_at, expires_at FROM webhook_secret \
                 WHERE agent_id = $1 AND (expires_at IS NULL OR expires_at > $2) \
                 ORDER BY created_at DESC, id DESC",
            )
            .bind(agent_id)
            .bind(now_ms)
            .fetch_all(pool)
            .await
        })?)
    }
}
