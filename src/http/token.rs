//! `POST /rest/v1/auth/token` (mint), `/revoke` and `/introspect`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::openapi::{
    ErrorBody, IntrospectResponse, KeyEndpointErrors, MintRequest, RevokeResponse, TokenRequest,
};
use super::{audit_event, authenticate, json::JsonObject};
use crate::app::AppState;
use crate::auth::{ExpiresIn, ExternalUserId, Scope, optional_id, required_str};
use crate::clock::rfc3339_s;
use crate::db::{Agent, User};
use crate::error::{Error, Result};
use crate::token;

/// The documented response: `{"token", "user": {…}, "agent": {…}}`, nothing more.
#[derive(Serialize, ToSchema)]
pub struct MintResponse {
    token: String,
    user: UserBody,
    agent: AgentBody,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserBody {
    pub id: String,
    pub external_id: String,
    pub company_id: String,
    pub agent_id: String,
}

impl UserBody {
    pub fn new(user: User, agent_id: String) -> Self {
        UserBody {
            id: user.id,
            external_id: user.external_id,
            company_id: user.company_id,
            agent_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AgentBody {
    pub id: String,
    pub name: String,
    pub active: bool,
}

impl From<Agent> for AgentBody {
    fn from(a: Agent) -> Self {
        AgentBody {
            id: a.id,
            name: a.name,
            active: a.active,
        }
    }
}

/// Mint a chat token for one of your users and one of your agents.
#[utoipa::path(post, path = "/rest/v1/auth/token", tag = "tokens", request_body = MintRequest,
    responses(
        (status = 200, description = "The token, the user (store `user.id`) and the agent", body = MintResponse),
        KeyEndpointErrors,
        (status = 404, description = "No such agent in your company", body = ErrorBody),
    ))]
pub async fn mint_token(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    body: JsonObject,
) -> Result<(HeaderMap, Json<MintResponse>)> {
    // Shape first (400), then who is asking (401/403), then what they ask for (404/403).
    let user_id =
        ExternalUserId::from_json("userId", body.get("userId")).map_err(Error::InvalidRequest)?;
    let agent_id = optional_id("agentId", body.get("agentId")).map_err(Error::InvalidRequest)?;
    let expires_in = ExpiresIn::from_json(body.get("expiresIn"), state.settings.max_expires_in)
        .map_err(Error::InvalidRequest)?;
    let caller = authenticate(&state, &body, &info, Scope::Mint).await?;
    let result = token::mint(&state, &caller, &user_id, agent_id, expires_in).await;
    let mut event = audit_event(&state, "token.minted", &caller, &info, &result);
    event.agent_id = agent_id.map(str::to_owned);
    if let Ok(m) = &result {
        event.user_id = Some(m.user.id.clone());
        event.agent_id = Some(m.agent.id.clone());
        event.jti = Some(m.jti.clone());
    }
    state.audit.record(event).await?;
    let minted = result?;
    let agent_id = minted.agent.id.clone();
    let mut headers = HeaderMap::new();
    if let Some(a) = minted.allowance {
        headers.insert("x-ratelimit-limit", HeaderValue::from(a.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(a.remaining));
    }
    Ok((
        headers,
        Json(MintResponse {
            token: minted.token,
            user: UserBody::new(minted.user, agent_id),
            agent: minted.agent.into(),
        }),
    ))
}

/// Revoke one token of your company (its `jti`); the user's other tokens live.
#[utoipa::path(post, path = "/rest/v1/auth/revoke", tag = "tokens", request_body = TokenRequest,
    responses(
        (status = 200, description = "Revoked", body = RevokeResponse),
        KeyEndpointErrors,
    ))]
pub async fn revoke_token(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    body: JsonObject,
) -> Result<Json<Value>> {
    let token = required_str("token", body.get("token")).map_err(Error::InvalidRequest)?;
    let caller = authenticate(&state, &body, &info, Scope::Manage).await?;
    let result = token::revoke(&state, &caller, token).await;
    let mut event = audit_event(&state, "token.revoked", &caller, &info, &result);
    if let Ok(c) = &result {
        event.user_id = Some(c.sub.clone());
        event.agent_id = Some(c.agent_id.clone());
        event.jti = Some(c.jti.clone());
    }
    state.audit.record(event).await?;
    let claims = result?;
    Ok(Json(json!({
        "revoked": true,
        "jti": claims.jti,
        "expiresAt": rfc3339_s(claims.exp),
    })))
}

/// RFC 7662's answer shape: `{"active":false}` for anything but an active token of the
/// caller's company.
/// RFC 7662 introspection of a token, for your backend.
#[utoipa::path(post, path = "/rest/v1/auth/introspect", tag = "tokens", request_body = TokenRequest,
    responses(
        (status = 200, description = "`{\"active\":false}` unless a live token of your company", body = IntrospectResponse),
        KeyEndpointErrors,
    ))]
pub async fn introspect_token(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    body: JsonObject,
) -> Result<Json<Value>> {
    let token = required_str("token", body.get("token")).map_err(Error::InvalidRequest)?;
    let caller = authenticate(&state, &body, &info, Scope::Manage).await?;
    Ok(Json(match token::introspect(&state, &caller, token)? {
        None => json!({ "active": false }),
        Some(c) => json!({
            "active": true,
            "token_type": "Bearer",
            "sub": c.sub,
            "iss": c.iss,
            "iat": c.iat,
            "exp": c.exp,
            "jti": c.jti,
            "client_id": c.key_id,
            "companyId": c.company_id,
            "agentId": c.agent_id,
        }),
    }))
}
