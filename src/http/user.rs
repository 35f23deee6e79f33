//! `POST /rest/v1/auth/invalidate`: kill every token a user holds now.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, State};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, Type};

use super::json::JsonBody;
use super::openapi::{
    ErrorBody, KeyEndpointErrors, id_schema, non_empty_string_schema, user_id_schema,
};
use super::{KeyPairRequest, SETTLE_WITHIN, audit_event, authenticate};
use crate::app::AppState;
use crate::auth::{ExternalUserId, Scope, optional_id};
use crate::clock::rfc3339_ms;
use crate::db::UserRef;
use crate::error::{Error, Result};
use crate::token::{self, TokenEvent};

/// The body of the invalidate endpoint: the key pair plus exactly one of `userId` or
/// `externalId`.
// Each field takes any JSON value, so that the checks in `invalidate_user` name the field
// that is wrong; the schema (below) says what each must be.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidateRequest {
    key_id: Option<Value>,
    key_secret: Option<Value>,
    /// The internal `user.id` the token endpoint returned.
    user_id: Option<Value>,
    /// The company's own id for its end user.
    external_id: Option<Value>,
}

impl KeyPairRequest for InvalidateRequest {
    fn key_pair(&self) -> (Option<&Value>, Option<&Value>) {
        (self.key_id.as_ref(), self.key_secret.as_ref())
    }
}

/// One of two objects, as derived schemas cannot say: the key pair and `userId`, or the key
/// pair and `externalId`; the other one absent or null.
impl utoipa::PartialSchema for InvalidateRequest {
    fn schema() -> RefOr<Schema> {
        let naming = |title: &str, field: &str, schema: RefOr<Schema>, other: &str| {
            ObjectBuilder::new()
                .title(Some(title))
                .property("keyId", non_empty_string_schema())
                .required("keyId")
                .property("keySecret", non_empty_string_schema())
                .required("keySecret")
                .property(field, schema)
                .required(field)
                .property(other, ObjectBuilder::new().schema_type(Type::Null))
        };
        OneOfBuilder::new()
            .item(naming(
                "By user.id",
                "userId",
                id_schema().into(),
                "externalId",
            ))
            .item(naming(
                "By the company's own id",
                "externalId",
                user_id_schema(),
                "userId",
            ))
            .description(Some(
                "The key pair plus exactly one of `userId` (the internal `user.id` the token endpoint returned) or `externalId` (the company's own id).",
            ))
            .into()
    }
}

impl ToSchema for InvalidateRequest {}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidatedUser {
    pub id: String,
    pub external_id: String,
    pub company_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvalidateResponse {
    pub invalidated: bool,
    pub user: InvalidatedUser,
    /// RFC 3339, UTC, with milliseconds.
    #[schema(format = DateTime)]
    pub invalidated_at: String,
}

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
    JsonBody(body): JsonBody<InvalidateRequest>,
) -> Result<Json<InvalidateResponse>> {
    // `userId` here is the internal user.id the token endpoint returned (what the docs tell
    // companies to store); `externalId` is the company's own id.
    let internal = optional_id("userId", body.user_id.as_ref()).map_err(Error::InvalidRequest)?;
    let external = match body.external_id.as_ref() {
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
    // This instance's sockets of the user close before the answer leaves.
    let event = TokenEvent::UserInvalidated {
        user_id: user.id.clone(),
        version: user.token_version,
    };
    state.chat.hub.settle(&event, SETTLE_WITHIN).await;
    Ok(Json(InvalidateResponse {
        invalidated: true,
        user: InvalidatedUser {
            id: user.id,
            external_id: user.external_id,
            company_id: user.company_id,
        },
        invalidated_at: rfc3339_ms(user.invalidated_at.unwrap_or_default()),
    }))
}
