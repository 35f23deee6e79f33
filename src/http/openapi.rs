//! The OpenAPI 3.1 description of the API, generated from the handlers' annotations and the
//! types below (utoipa), served at `/rest/v1/openapi.json`; Swagger UI, whose assets are
//! compiled into the binary, at `/rest/v1/docs`.
//!
//! The request types here exist for the document: handlers read bodies field by field (see
//! `json.rs`) so that every bad field gets its own message.

use serde::Serialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use super::token::{AgentBody, MintResponse, UserBody};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "performchat",
        description = "Self-hosted chat-auth server: a company's backend trades its API key pair for a short-lived JWT naming one of its end users and one agent; the user's chat widget presents it.",
        license(name = "MIT")
    ),
    paths(
        super::token::mint_token,
        super::user::invalidate_user,
        super::token::revoke_token,
        super::token::introspect_token,
        super::me::me,
        super::audit::list_audit_events,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
    ),
    components(schemas(
        MintRequest, MintResponse, UserBody, AgentBody, ErrorBody, ErrorDetail, UserIdValue,
        ExpiresInValue, InvalidateRequest, InvalidateByUserId, InvalidateByExternalId, InvalidateResponse, InvalidatedUser, TokenRequest,
        RevokeResponse, IntrospectResponse, MeResponse, AuditPage, crate::db::AuditEvent, Status
    )),
    modifiers(&Schemes),
    tags(
        (name = "tokens", description = "Minting, invalidating, revoking and checking chat tokens"),
        (name = "operations", description = "Health, readiness, metrics, audit trail")
    )
)]
pub struct ApiDoc;

struct Schemes;

impl Modify for Schemes {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "keyPair",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("keyId as the user name, keySecret as the password"))
                    .build(),
            ),
        );
    }
}

/// The refusals every key endpoint can answer.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
pub enum KeyEndpointErrors {
    /// A field is missing or invalid; the message names it.
    #[response(status = 400)]
    BadRequest(ErrorBody),
    /// Unknown keyId or wrong keySecret.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// Revoked key, inactive company, or a key without the scope.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// Body over 16 KiB.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Not Content-Type: application/json.
    #[response(status = 415)]
    UnsupportedMediaType(ErrorBody),
    /// Rate limited; see Retry-After.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// The database cannot be reached; retry.
    #[response(status = 503)]
    Unavailable(ErrorBody),
}

/// `{"error":{"code":"…","message":"…"}}`
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Serialize, ToSchema)]
pub struct ErrorDetail {
    /// A stable machine code, e.g. `invalid_request`, `invalid_credentials`, `token_expired`.
    pub code: String,
    /// What is wrong, naming the field at fault.
    pub message: String,
}

/// An id as the API accepts it: 1–256 characters, none of them a control character.
const ID_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]{1,256}$";

fn id_string() -> utoipa::openapi::schema::ObjectBuilder {
    utoipa::openapi::schema::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .min_length(Some(1))
        .max_length(Some(256))
        .pattern(Some(ID_PATTERN))
}

fn id_schema() -> utoipa::openapi::schema::Object {
    id_string().build()
}

fn nullable_id_schema() -> utoipa::openapi::schema::Object {
    id_string()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([
            utoipa::openapi::schema::Type::String,
            utoipa::openapi::schema::Type::Null,
        ]))
        .build()
}

/// The company's own id for its end user: a string (1–256 characters, no control
/// characters) or an integer. (Documentation only; `Serialize` lets it sit in the untagged
/// request enums below.)
#[derive(Serialize)]
pub struct UserIdValue;

impl utoipa::PartialSchema for UserIdValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::OneOfBuilder::new()
            .item(id_schema())
            .item(
                utoipa::openapi::schema::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::Integer)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Int64,
                    ))),
            )
            .description(Some(
                "The company's own id for its end user: a string (1–256 characters, no control characters) or an integer",
            ))
            .into()
    }
}

impl ToSchema for UserIdValue {}

/// A duration as Node's jsonwebtoken takes it: a string with a unit (`"90m"`, `"1.5h"`,
/// `"2 days"`, `"7d"`) or a number of seconds; 60 s to the server's maximum (30 days by
/// default). (Documentation only.)
#[derive(Serialize)]
pub struct ExpiresInValue;

impl utoipa::PartialSchema for ExpiresInValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .max_length(Some(100))
                    .description(Some("A number with a unit: ms, s, m, h, d, w, y or their long forms")),
            )
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::Number)
                    .minimum(Some(60))
                    .maximum(Some(2_592_000))
                    .description(Some("Seconds")),
            )
            .description(Some(
                "How long the token lives: \"90m\", \"1.5h\", \"2 days\", \"7d\" or a number of seconds; 60 s to the server's maximum (30 days by default). Default \"24h\"",
            ))
            .into()
    }
}

impl ToSchema for ExpiresInValue {}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct MintRequest {
    #[schema(example = "pk_your_key_id", min_length = 1)]
    pub key_id: String,
    #[schema(example = "sk_your_secret_key", min_length = 1)]
    pub key_secret: String,
    pub user_id: UserIdValue,
    /// One of the company's agents; omitted or null → its default agent.
    #[schema(schema_with = nullable_id_schema)]
    pub agent_id: Option<String>,
    /// Default `"24h"`.
    #[schema(nullable)]
    pub expires_in: Option<ExpiresInValue>,
}

/// The key pair plus exactly one of `userId` (the internal `user.id` the token endpoint
/// returned) or `externalId` (the company's own id).
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)]
pub enum InvalidateRequest {
    #[schema(title = "By user.id")]
    ByUserId(InvalidateByUserId),
    #[schema(title = "By the company's own id")]
    ByExternalId(InvalidateByExternalId),
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct InvalidateByUserId {
    #[schema(min_length = 1)]
    pub key_id: String,
    #[schema(min_length = 1)]
    pub key_secret: String,
    #[schema(schema_with = id_schema)]
    pub user_id: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct InvalidateByExternalId {
    #[schema(min_length = 1)]
    pub key_id: String,
    #[schema(min_length = 1)]
    pub key_secret: String,
    pub external_id: UserIdValue,
}

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
    /// RFC 3339.
    pub invalidated_at: String,
}

#[derive(ToSchema)]
#[schema(rename_all = "camelCase")]
#[allow(dead_code)]
pub struct TokenRequest {
    #[schema(min_length = 1)]
    pub key_id: String,
    #[schema(min_length = 1)]
    pub key_secret: String,
    #[schema(min_length = 1)]
    pub token: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RevokeResponse {
    pub revoked: bool,
    pub jti: String,
    /// RFC 3339.
    pub expires_at: String,
}

/// RFC 7662: only `active` when the token is not a live token of the caller's company.
#[derive(Serialize, ToSchema)]
pub struct IntrospectResponse {
    pub active: bool,
    pub token_type: Option<String>,
    pub sub: Option<String>,
    pub iss: Option<String>,
    pub iat: Option<i64>,
    pub exp: Option<i64>,
    pub jti: Option<String>,
    /// The keyId that minted the token.
    pub client_id: Option<String>,
    #[serde(rename = "companyId")]
    pub company_id: Option<String>,
    #[serde(rename = "agentId")]
    pub agent_id: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MeResponse {
    pub user: UserBody,
    pub agent: AgentBody,
    /// RFC 3339.
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub events: Vec<crate::db::AuditEvent>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_is_openapi_3_1_and_covers_every_route() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
        for path in [
            "/rest/v1/auth/token",
            "/rest/v1/auth/invalidate",
            "/rest/v1/auth/revoke",
            "/rest/v1/auth/introspect",
            "/rest/v1/auth/me",
            "/rest/v1/audit",
            "/healthz",
            "/readyz",
            "/metrics",
        ] {
            assert!(doc["paths"][path].is_object(), "{path} is missing");
        }
    }
}
