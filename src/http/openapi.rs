//! The OpenAPI 3.1 description of the API, generated from the handlers' annotations and the
//! request and response types beside each handler (utoipa), served at `/rest/v1/openapi.json`;
//! Swagger UI, whose assets are compiled into the binary, at `/rest/v1/docs`.
//!
//! The types that document a body are the ones that parse or answer it: a request type's
//! fields take any JSON value (so that the handler's checks name each bad field), and each
//! field's `#[schema(...)]` says what it must be. The schemas of values with more than one
//! shape are the functions below.

use serde::Serialize;
use utoipa::openapi::schema::{Object, ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{KnownFormat, RefOr, SchemaFormat};
use utoipa::{Modify, OpenApi, ToSchema};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "performchat",
        description = "Self-hosted chat-auth server: a company's backend trades its API key pair for a short-lived JWT naming one of its end users and one agent; the user's chat widget presents it. A query parameter given empty counts as not given.",
        license(name = "MIT")
    ),
    paths(
        super::token::mint_token,
        super::user::invalidate_user,
        super::token::revoke_token,
        super::token::introspect_token,
        super::me::me,
        super::audit::list_audit_events,
        super::chat::open_conversation,
        super::chat::list_conversations,
        super::chat::list_messages,
        super::chat::send_message,
        super::chat::mark_read,
        super::agent::list_conversations,
        super::agent::list_messages,
        super::agent::reply,
        super::agent::grow_message,
        super::agent::close_conversation,
        super::agent::hand_off,
        super::agent::release,
        super::agent::typing,
        super::agent::events,
        super::ops::healthz,
        super::ops::readyz,
        super::ops::metrics,
    ),
    components(schemas(ErrorBody)),
    modifiers(&Schemes),
    tags(
        (name = "tokens", description = "Minting, invalidating, revoking and checking chat tokens"),
        (name = "chat", description = "Conversations and messages: the user side with the chat token, the company side with the key pair"),
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

fn id_string() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(256))
        .pattern(Some(ID_PATTERN))
}

/// An id: 1–256 characters, no control characters.
pub fn id_schema() -> Object {
    id_string().build()
}

/// An optional id: an id, or null (the same as absent).
pub fn nullable_id_schema() -> Object {
    id_string()
        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
        .build()
}

/// A required string field such as `keyId`: any non-empty string.
pub fn non_empty_string_schema() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .build()
}

/// The company's own id for its end user: a string (1–256 characters, no control
/// characters) or an integer that fits 64 bits, signed or not (see `ExternalUserId`).
pub fn user_id_schema() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(id_schema())
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(i64::MIN))
                .maximum(Some(u64::MAX)),
        )
        .description(Some(
            "The company's own id for its end user: a string (1–256 characters, no control characters) or an integer",
        ))
        .into()
}

/// `expiresIn`: a duration as Node's jsonwebtoken takes it, a string with a unit (`"90m"`,
/// `"1.5h"`, `"2 days"`, `"7d"`) or a number of seconds; 60 s to the server's maximum (30 days
/// by default); absent or null for the default (see `ExpiresIn`).
pub fn expires_in_schema() -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .max_length(Some(100))
                .description(Some(
                    "A number with a unit: ms, s, m, h, d, w, y or their long forms",
                )),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Number)
                .minimum(Some(60))
                .maximum(Some(2_592_000))
                .description(Some("Seconds")),
        )
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .description(Some(
            "How long the token lives: \"90m\", \"1.5h\", \"2 days\", \"7d\" or a number of seconds; 60 s to the server's maximum (30 days by default). Default \"24h\"",
        ))
        .into()
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

    #[test]
    fn request_and_response_schemas_say_what_the_handlers_do() {
        let doc = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let schemas = &doc["components"]["schemas"];
        let required = |name: &str| schemas[name]["required"].clone();
        assert_eq!(
            required("MintRequest"),
            serde_json::json!(["keyId", "keySecret", "userId"])
        );
        assert_eq!(
            required("TokenRequest"),
            serde_json::json!(["keyId", "keySecret", "token"])
        );
        let mint = &schemas["MintRequest"]["properties"];
        assert_eq!(mint["userId"]["oneOf"].as_array().unwrap().len(), 2);
        assert_eq!(mint["agentId"]["pattern"], ID_PATTERN);
        assert_eq!(mint["expiresIn"]["oneOf"][2]["type"], "null");
        // Invalidate names its user one of two ways, the other field absent or null.
        let ways = schemas["InvalidateRequest"]["oneOf"].as_array().unwrap();
        assert_eq!(ways.len(), 2);
        assert_eq!(
            ways[0]["required"],
            serde_json::json!(["keyId", "keySecret", "userId"])
        );
        assert_eq!(ways[0]["properties"]["externalId"]["type"], "null");
        assert_eq!(
            ways[1]["required"],
            serde_json::json!(["keyId", "keySecret", "externalId"])
        );
        assert_eq!(ways[1]["properties"]["userId"]["type"], "null");
        // Introspection answers only `active` for an inactive token: nothing else is
        // required, and nothing is ever null.
        let introspect = &schemas["IntrospectResponse"];
        assert_eq!(introspect["required"], serde_json::json!(["active"]));
        assert_eq!(introspect["properties"]["sub"]["type"], "string");
        assert_eq!(introspect["properties"]["exp"]["type"], "integer");
        // Each operation's body is the type its handler reads or answers.
        let body = |path: &str, method: &str| {
            doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"]
                ["$ref"]
                .clone()
        };
        assert_eq!(
            body("/rest/v1/auth/revoke", "post"),
            "#/components/schemas/RevokeResponse"
        );
        assert_eq!(
            body("/rest/v1/auth/me", "get"),
            "#/components/schemas/MeResponse"
        );
        assert_eq!(
            body("/rest/v1/audit", "get"),
            "#/components/schemas/AuditPage"
        );
        assert_eq!(body("/readyz", "get"), "#/components/schemas/Status");
    }
}
