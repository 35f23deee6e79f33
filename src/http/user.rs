//! `POST /rest/v1/auth/invalidate`: kill every token a user holds now.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use serde_json::{Value, json};

use super::openapi::{ErrorBody, InvalidateRequest, InvalidateResponse, KeyEndpointErrors};
use super::{audit_event, authenticate, json::JsonObject};
use crate::app::AppState;
use crate::auth::{ExternalUserId, Scope, optional_id};
use crate::clock::rfc3339_ms;
use crate::db::UserRef;
use crate::error::{Error, Result};
use crate::token;

/// Invalidate every token a user holds now; tokens minted afterwards work.
#[utoipa::path(post, path = "/rest/v1/auth/invalidate", tag = "tokens", request_body = InvalidateRequest,
    responses(
        (status = 200, description = "Invalidated", body = InvalidateResponse),
        KeyEndpointErrors,
        (status = 404, description = "Your company has no such user", body = ErrorBody),
    ))]
pub async fn invalidate_user(
    info: ConnectInfo<SocketAddr>,
    State(state): State<AppState>,
    body: JsonObject,
) -> Result<Json<Value>> {
    // `userId` here is the internal user.id the token endpoint returned (what the docs tell
    // companies to store); `externalId` is the company's own id.
    let internal = optional_id("userId", body.get("userId")).map_err(Error::InvalidRequest)?;
    let external = match body.get("externalId") {
        None | Some(Value::Null) => None,
        value => {
            Some(ExternalUserId::from_json("externalId", value).map_err(Error::InvalidRequest)?)
        }
    };
    let user_ref = match (internal, &external) {
        (Some(id), None) => UserRef::Id(id),
        (None, Some(ext)) => UserRef::External(ext.as_str()),
        (Some(_), Some(_)) => {
            return Err(Error::invalid("give either userId or externalId, not both"));
        }
        (None, None) => {
            return Err(Error::invalid(
                "userId (the user.id returned by /rest/v1/auth/token) or externalId is required",
            ));
        }
    };
    let caller = authenticate(&state, &body, &info, Scope::Manage).await?;
    let result = token::invalidate(&state, &caller, user_ref).await;
    let mut event = audit_event(&state, "user.invalidated", &caller, &info, &result);
    event.user_id = match (&result, user_ref) {
        (Ok(u), _) => Some(u.id.clone()),
        (Err(_), UserRef::Id(id)) => Some(id.to_owned()),
        (Err(_), UserRef::External(_)) => None,
    };
    state.audit.record(event).await?;
    let user = result?;
    Ok(Json(json!({
        "invalidated": true,
        "user": {
            "id": user.id,
            "externalId": user.external_id,
            "companyId": user.company_id,
        },
        "invalidatedAt": rfc3339_ms(user.invalidated_at.unwrap_or_default()),
    })))
}
