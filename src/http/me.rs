//! `GET /rest/v1/auth/me`: what a chat widget learns from its bearer token.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, header};
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::ErrorBody;
use super::token::{AgentBody, UserBody};
use crate::app::AppState;
use crate::auth::jwt::Claims;
use crate::clock::rfc3339_s;
use crate::error::{Error, Result};
use crate::token;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeResponse {
    pub user: UserBody,
    pub agent: AgentBody,
    /// RFC 3339, UTC, with milliseconds.
    #[schema(format = DateTime)]
    pub expires_at: String,
}

/// What the chat widget's bearer token says: its user, its agent, when it expires.
#[utoipa::path(get, path = "/rest/v1/auth/me", tag = "tokens", security(("bearer" = [])),
    responses(
        (status = 200, description = "The token is valid", body = MeResponse),
        (status = 401, description = "`token_expired` (mint a new one), `token_revoked` or `token_invalid` (stop)", body = ErrorBody),
        (status = 503, description = "Verification state is stale (database unreachable); retry", body = ErrorBody),
    ))]
pub async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<MeResponse>> {
    let token = bearer(&headers)?;
    let claims = token::verify(&state, token)?;
    Ok(Json(describe(&state, claims).await?))
}

/// What a verified token says (also the chat socket's `ready` frame).
pub(super) async fn describe(state: &AppState, claims: Claims) -> Result<MeResponse> {
    let external_id = token::external_id(state, &claims.company_id, &claims.sub).await?;
    let agent = token::find_agent(state, &claims.company_id, &claims.agent_id).await?;
    let (Some(external_id), Some(agent)) = (external_id, agent) else {
        return Err(Error::TokenInvalid(
            "the token's user or agent no longer exists",
        ));
    };
    Ok(MeResponse {
        user: UserBody {
            id: claims.sub,
            external_id,
            company_id: claims.company_id,
            agent_id: agent.id.clone(),
        },
        agent: AgentBody::from(agent),
        expires_at: rfc3339_s(claims.exp),
    })
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(super) fn bearer(headers: &HeaderMap) -> Result<&str> {
    let missing = Error::TokenInvalid("send the token as Authorization: Bearer <token>");
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(missing)?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(Error::TokenInvalid(
            "send the token as Authorization: Bearer <token>",
        )),
    }
}
