//! `POST /rest/v1/auth/token` (mint), `/revoke` and `/introspect`.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::json::JsonBody;
use super::openapi::{
    ErrorBody, KeyEndpointErrors, expires_in_schema, nullable_id_schema, user_id_schema,
};
use super::{KeyPairRequest, SETTLE_WITHIN, audit_event, authenticate};
use crate::app::AppState;
use crate::auth::{ExpiresIn, ExternalUserId, Scope, optional_id, required_str};
use crate::clock::rfc3339_s;
use crate::db::{Agent, MINTED, User};
use crate::error::{Error, Result};
use crate::token::{self, TokenEvent};

/// The body of the token endpoint: the key pair, the user, and optionally the agent and the
/// token's lifetime.
// Each field takes any JSON value, so that the checks in `mint_token` name the field that is
// wrong; each field's schema says what it must be.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MintRequest {
    #[schema(value_type = String, min_length = 1, example = "pk_your_key_id")]
    key_id: Option<Value>,
    #[schema(value_type = String, min_length = 1, example = "sk_your_secret_key")]
    key_secret: Option<Value>,
    #[schema(schema_with = user_id_schema, required = true)]
    user_id: Option<Value>,
    /// One of the company's agents; omitted or null → its default agent.
    #[schema(schema_with = nullable_id_schema)]
    agent_id: Option<Value>,
    /// Default `"24h"`.
    #[schema(schema_with = expires_in_schema)]
    expires_in: Option<Value>,
}

impl KeyPairRequest for MintRequest {
    fn key_pair(&self) -> (Option<&Value>, Option<&Value>) {
        (self.key_id.as_ref(), self.key_secret.as_ref())
    }
}

/// The body of `/revoke` and `/introspect`: the key pair and a token.
// Lenient fields, as in `MintRequest`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenRequest {
    #[schema(value_type = String, min_length = 1)]
    key_id: Option<Value>,
    #[schema(value_type = String, min_length = 1)]
    key_secret: Option<Value>,
    #[schema(value_type = String, min_length = 1)]
    token: Option<Value>,
}

impl KeyPairRequest for TokenRequest {
    fn key_pair(&self) -> (Option<&Value>, Option<&Value>) {
        (self.key_id.as_ref(), self.key_secret.as_ref())
    }
}

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

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResponse {
    pub revoked: bool,
    pub jti: String,
    /// RFC 3339, UTC, with milliseconds.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// RFC 7662's answer: just `{"active":false}` for anything but a live token of the caller's
/// company; every field for one.
#[derive(Default, Serialize, ToSchema)]
pub struct IntrospectResponse {
    pub active: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub token_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub sub: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub iss: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub iat: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub exp: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub jti: Option<String>,
    /// The keyId that minted the token.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub client_id: Option<String>,
    #[serde(rename = "companyId", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub company_id: Option<String>,
    #[serde(rename = "agentId", skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub agent_id: Option<String>,
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
    JsonBody(body): JsonBody<MintRequest>,
) -> Result<(HeaderMap, Json<MintResponse>)> {
    // Shape first (400), then who is asking (401/403), then what they ask for (404/403).
    let user_id = ExternalUserId::from_json("userId", body.user_id.as_ref())
        .map_err(Error::InvalidRequest)?;
    let agent_id = optional_id("agentId", body.agent_id.as_ref()).map_err(Error::InvalidRequest)?;
    let expires_in = ExpiresIn::from_json(body.expires_in.as_ref(), state.settings.max_expires_in)
        .map_err(Error::InvalidRequest)?;
    let caller = authenticate(&state, &body, &info, Scope::Mint).await?;
    let result = token::mint(&state, &caller, &user_id, agent_id, expires_in).await;
    if state.settings.audit_mints.keeps(result.is_err()) {
        let mut event = audit_event(&state, MINTED, &caller, &info, &result);
        event.agent_id = agent_id.map(str::to_owned);
        if let Ok(m) = &result {
            event.user_id = Some(m.user.id.clone());
            event.agent_id = Some(m.agent.id.clone());
            event.jti = Some(m.jti.clone());
        }
        state.audit.record(event).await?;
    }
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
    JsonBody(body): JsonBody<TokenRequest>,
) -> Result<Json<RevokeResponse>> {
    let token = required_str("token", body.token.as_ref()).map_err(Error::InvalidRequest)?;
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
    // This instance's socket holding the token closes before the answer leaves.
    let event = TokenEvent::TokenRevoked {
        jti: claims.jti.clone(),
    };
    state.chat.hub.settle(&event, SETTLE_WITHIN).await;
    Ok(Json(RevokeResponse {
        revoked: true,
        jti: claims.jti,
        expires_at: rfc3339_s(claims.exp),
    }))
}

/// RFC 7662 introspection of a token, for your backend.
#[utoipa::path(post, path = "/rest/v1/auth/introspect", tag = "tokens", request_body = TokenRequest,
    responses(
        (status = 200, description = "`{\"active\":false}` unless a live token of your company", body = IntrospectResponse),
        KeyEndpointErrors,
    ))]
pub async fn introspect_token(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    JsonBody(body): JsonBody<TokenRequest>,
) -> Result<Json<IntrospectResponse>> {
    let token = required_str("token", body.token.as_ref()).map_err(Error::InvalidRequest)?;
    let caller = authenticate(&state, &body, &info, Scope::Manage).await?;
    Ok(Json(match token::introspect(&state, &caller, token)? {
        None => IntrospectResponse::default(),
        Some(c) => IntrospectResponse {
            active: true,
            token_type: Some("Bearer".to_owned()),
            sub: Some(c.sub),
            iss: Some(c.iss),
            iat: Some(c.iat),
            exp: Some(c.exp),
            jti: Some(c.jti),
            client_id: Some(c.key_id),
            company_id: Some(c.company_id),
            agent_id: Some(c.agent_id),
        },
    }))
}
