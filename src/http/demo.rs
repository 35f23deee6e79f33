//! `serve --demo`: the page at `/demo` shows the widget as an end user sees it, beside an
//! agent's pane where the person at the keyboard answers. Its routes act for the demo
//! company (`--demo-company`) with the server's own authority, so no key secret reaches the
//! browser: they mint tokens only for demo users (external ids `demo-…`), and follow and
//! answer only the conversations of that company. Served only with `--demo`, on loopback
//! unless `--demo-public`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::Mutex;

use super::agent::{Reply, company_feed, conversation_with_agent, send_reply};
use super::chat::MessageBody;
use super::json::JsonBody;
use super::query::Query;
use crate::app::AppState;
use crate::auth::api_key::new_key_id;
use crate::auth::{ExternalUserId, KeyRules, KeySecret};
use crate::chat::rules::{ClientMessageId, SenderKind};
use crate::chat::{self, history};
use crate::db::{ApiKey, KeyPolicy, Window};
use crate::error::{Error, Result};
use crate::token::{self, Caller};

const PAGE: &str = include_str!("../../widget/demo.html");

/// Demo tokens live an hour (the widget renews them on `expiring`).
const TOKEN_LIFETIME_S: u64 = 3600;

/// The demo's company, and the key its tokens are minted with (found or made on first use).
pub struct Demo {
    company_id: String,
    caller: Mutex<Option<Caller>>,
}

pub fn routes(company_id: &str) -> Router<AppState> {
    let demo = Arc::new(Demo {
        company_id: company_id.to_owned(),
        caller: Mutex::new(None),
    });
    Router::new()
        .route("/demo", get(page))
        .route("/demo/agents", get(agents))
        .route("/demo/token", post(mint))
        .route("/demo/messages", get(messages))
        .route("/demo/events", get(events))
        .route("/demo/reply", post(reply))
        .layer(Extension(demo))
}

impl Demo {
    /// Acts as the company: with its first live key that may mint and chat, or a new one.
    async fn caller(&self, state: &AppState) -> Result<Caller> {
        let mut cached = self.caller.lock().await;
        if let Some(caller) = cached.as_ref()
            && !state.tokens.revocations().is_key_revoked(&caller.key_id)
        {
            return Ok(caller.clone());
        }
        if state.db.find_company(&self.company_id).await?.is_none() {
            return Err(Error::NotFound(format!(
                "the demo's company {} does not exist (serve --demo-company ID)",
                self.company_id
            )));
        }
        let rules = |k: &ApiKey| {
            KeyRules::from_stored(&k.scopes, k.allowed_agents.as_deref(), k.max_expires_in)
        };
        let keys = state.db.list_api_keys(&self.company_id).await?;
        let live = keys.into_iter().find(|k| {
            let r = rules(k);
            k.revoked_at.is_none() && r.mint && r.chat && r.allowed_agents.is_none()
        });
        let key = match live {
            Some(key) => key,
            None => {
                // Its secret is never shown: the demo acts for the company from inside.
                let secret = KeySecret::generate();
                state
                    .db
                    .insert_api_key_with(
                        &new_key_id(),
                        &self.company_id,
                        &secret.hash(),
                        &KeyPolicy::default(),
                        state.clock.now_ms(),
                    )
                    .await?
            }
        };
        let caller = Caller {
            company_id: key.company_id.clone(),
            rules: Arc::new(rules(&key)),
            key_id: key.id,
        };
        *cached = Some(caller.clone());
        Ok(caller)
    }
}

async fn page() -> Response {
    (
        [(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; connect-src 'self' ws: wss:",
            ),
        )],
        Html(PAGE),
    )
        .into_response()
}

/// The demo company's active agents, the default first.
async fn agents(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
) -> Result<Json<Value>> {
    let mut agents = state.db.list_agents(&demo.company_id).await?;
    agents.retain(|a| a.active);
    agents.sort_by_key(|a| !a.is_default);
    let agents: Vec<Value> = agents
        .into_iter()
        .map(|a| json!({"id": a.id, "name": a.name, "kind": a.kind, "default": a.is_default}))
        .collect();
    Ok(Json(
        json!({"companyId": demo.company_id, "agents": agents}),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MintBody {
    visitor: Option<Value>,
    agent_id: Option<Value>,
}

/// A chat token for the demo user of this browser (`demo-{visitor}`) and one agent.
async fn mint(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    JsonBody(body): JsonBody<MintBody>,
) -> Result<Json<Value>> {
    let visitor = match &body.visitor {
        Some(Value::String(v))
            if (1..=40).contains(&v.len())
                && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            v
        }
        _ => return Err(Error::invalid("visitor must be 1–40 letters, digits or -")),
    };
    let user = ExternalUserId::from_json("visitor", Some(&json!(format!("demo-{visitor}"))))
        .map_err(Error::InvalidRequest)?;
    let agent_id = match &body.agent_id {
        None | Some(Value::Null) => None,
        Some(Value::String(id)) => Some(id.as_str()),
        Some(_) => return Err(Error::invalid("agentId must be a string")),
    };
    let caller = demo.caller(&state).await?;
    let lifetime = crate::auth::ExpiresIn::from_secs(TOKEN_LIFETIME_S);
    let minted = token::mint(&state, &caller, &user, agent_id, Some(lifetime)).await?;
    Ok(Json(
        json!({"token": minted.token, "agentId": minted.agent.id}),
    ))
}

/// A conversation's messages as the company sees them (`?conversationId=`).
async fn messages(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>> {
    let q = Query::parse(query.as_deref(), &["conversationId"])?;
    let id = q
        .get("conversationId")
        .ok_or_else(|| Error::invalid("conversationId is required"))?;
    let caller = demo.caller(&state).await?;
    let conversation = chat::company_conversation(&state, &caller, id).await?;
    let (messages, _) = history(&state, &conversation, Window::Latest, 200).await?;
    let messages: Vec<MessageBody> = messages.into_iter().map(Into::into).collect();
    Ok(Json(json!({ "messages": messages })))
}

/// The company's live feed for one agent (`?agentId=`), as `GET /rest/v1/agent/events`.
async fn events(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    RawQuery(query): RawQuery,
) -> Result<Response> {
    let q = Query::parse(query.as_deref(), &["agentId"])?;
    let caller = demo.caller(&state).await?;
    Ok(company_feed(&state, &caller, q.get("agentId")).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReplyBody {
    conversation_id: Option<Value>,
    text: Option<Value>,
}

/// The person at the keyboard answers: as the agent if it is a `human` agent (its replies
/// come from people), else as an operator taking over from the bot.
async fn reply(
    State(state): State<AppState>,
    Extension(demo): Extension<Arc<Demo>>,
    JsonBody(body): JsonBody<ReplyBody>,
) -> Result<(StatusCode, Json<Value>)> {
    let Some(Value::String(id)) = &body.conversation_id else {
        return Err(Error::invalid("conversationId is required"));
    };
    let text = super::chat::required_text("text", body.text.as_ref())?;
    let caller = demo.caller(&state).await?;
    let (conversation, agent) = conversation_with_agent(&state, &caller, id).await?;
    let human = agent.as_ref().is_none_or(|a| {
        crate::agents::AgentKind::of(&a.kind) == Some(crate::agents::AgentKind::Human)
    });
    let (kind, name) = if human {
        (SenderKind::Agent, None)
    } else {
        (SenderKind::Operator, Some("Demo operator".to_owned()))
    };
    let reply = Reply {
        kind,
        name,
        client_message_id: &ClientMessageId::generate(),
        text: &text,
        streaming: false,
    };
    let sent = send_reply(&state, &conversation, agent, reply).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"message": MessageBody::from(sent.message)})),
    ))
}
