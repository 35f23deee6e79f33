//! The one error type of the service and its JSON shape: `{"error":{"code":"…","message":"…"}}`.
//!
//! Every failure a client can see is an [`Error`]; its `status()` and stable machine `code()` are
//! decided here and nowhere else. Messages name the field at fault but never quote a secret, a
//! token or raw input (serde's texts can echo values, so callers map them to their own words).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::db::StoreError;

/// Why the API key pair was refused. Unknown keyId and wrong secret share one message on purpose:
/// nothing in the answer tells which part was wrong.
pub const BAD_CREDENTIALS: &str = "keyId or keySecret is not valid";

/// What a 503 tells clients to wait before retrying, in seconds.
pub const UNAVAILABLE_RETRY_AFTER_S: u64 = 2;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field is missing or invalid; the message names it.
    #[error("{0}")]
    InvalidRequest(String),
    /// The body is not parseable JSON, or not an object.
    #[error("{0}")]
    InvalidJson(String),
    #[error("request body must be JSON: send Content-Type: application/json")]
    UnsupportedMediaType,
    #[error("request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("{}", BAD_CREDENTIALS)]
    InvalidCredentials,
    /// No usable credentials were sent (GET endpoints that take them as HTTP Basic).
    #[error("{0}")]
    CredentialsRequired(&'static str),
    #[error("this API key has been revoked")]
    KeyRevoked,
    #[error("this company is inactive")]
    CompanyInactive,
    #[error("agent {0:?} is inactive")]
    AgentInactive(String),
    #[error("agent {0:?} was not found in this company")]
    AgentNotFound(String),
    #[error("this API key lacks the {0} scope")]
    InsufficientScope(&'static str),
    #[error("this API key may not mint tokens for agent {0:?}")]
    AgentNotAllowed(String),
    /// Too many requests; retry after the given number of seconds.
    #[error("{message}")]
    RateLimited {
        message: &'static str,
        retry_after_s: u64,
    },
    /// An operator-side lookup (CLI) or an API resource that does not exist.
    #[error("{0}")]
    NotFound(String),
    /// An operator-side conflict (CLI): an id that is already taken.
    #[error("{0}")]
    Conflict(String),
    #[error("the conversation is closed: open a new one")]
    ConversationClosed,
    /// A bot's reply to a conversation a person has taken (or that waits for one).
    #[error(
        "a person handles this conversation: the agent's replies are not delivered until it is \
         released (POST …/release)"
    )]
    HandledByPerson,
    /// A chunk for a streamed reply that has already finished (its status).
    #[error("the message is no longer streaming: it is {0}")]
    MessageNotStreaming(String),
    #[error("no route for this path")]
    NoRoute,
    #[error("this method is not allowed on this path")]
    MethodNotAllowed,
    #[error("{0}")]
    TokenInvalid(&'static str),
    #[error("the token has expired: request a new one")]
    TokenExpired,
    #[error("{0}")]
    TokenRevoked(&'static str),
    /// The database cannot be reached or refuses writes (a full disk, a read-only database),
    /// or the in-memory revocation state is too stale to trust. Retrying later succeeds.
    #[error("the service is temporarily unavailable: retry shortly")]
    Unavailable,
    /// A bug or an unexpected storage failure. The client gets an opaque body; the cause is
    /// logged once, where the response is made.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl Error {
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidRequest(message.into())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Error::InvalidRequest(_) | Error::InvalidJson(_) => StatusCode::BAD_REQUEST,
            Error::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Error::InvalidCredentials
            | Error::CredentialsRequired(_)
            | Error::TokenInvalid(_)
            | Error::TokenExpired
            | Error::TokenRevoked(_) => StatusCode::UNAUTHORIZED,
            Error::KeyRevoked
            | Error::CompanyInactive
            | Error::AgentInactive(_)
            | Error::InsufficientScope(_)
            | Error::AgentNotAllowed(_) => StatusCode::FORBIDDEN,
            Error::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Error::AgentNotFound(_) | Error::NotFound(_) | Error::NoRoute => StatusCode::NOT_FOUND,
            Error::Conflict(_)
            | Error::ConversationClosed
            | Error::HandledByPerson
            | Error::MessageNotStreaming(_) => StatusCode::CONFLICT,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "invalid_request",
            Error::InvalidJson(_) => "invalid_json",
            Error::UnsupportedMediaType => "unsupported_media_type",
            Error::PayloadTooLarge(_) => "payload_too_large",
            Error::InvalidCredentials | Error::CredentialsRequired(_) => "invalid_credentials",
            Error::KeyRevoked => "key_revoked",
            Error::CompanyInactive => "company_inactive",
            Error::AgentInactive(_) => "agent_inactive",
            Error::AgentNotFound(_) => "agent_not_found",
            Error::InsufficientScope(_) => "insufficient_scope",
            Error::AgentNotAllowed(_) => "agent_not_allowed",
            Error::RateLimited { .. } => "rate_limited",
            Error::NotFound(_) => "not_found",
            Error::Conflict(_) => "conflict",
            Error::ConversationClosed => "conversation_closed",
            Error::HandledByPerson => "handled_by_person",
            Error::MessageNotStreaming(_) => "message_not_streaming",
            Error::NoRoute => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::TokenInvalid(_) => "token_invalid",
            Error::TokenExpired => "token_expired",
            Error::TokenRevoked(_) => "token_revoked",
            Error::Unavailable => "unavailable",
            Error::Internal(_) => "internal",
        }
    }

    /// The text sent to the client. A 500 says nothing about its cause.
    pub fn client_message(&self) -> String {
        match self {
            Error::Internal(_) => "internal error; the cause has been logged".to_owned(),
            other => other.to_string(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound(..) => Error::NotFound(e.to_string()),
            StoreError::Conflict(..) => Error::Conflict(e.to_string()),
            StoreError::Unavailable(cause) => {
                // Logged here because the client only sees a generic 503.
                tracing::warn!(error = %cause, "database unavailable");
                Error::Unavailable
            }
            StoreError::Query(cause) => Error::Internal(anyhow::anyhow!("{cause}")),
        }
    }
}

/// The cause of a 500, handed to the request's log line (which knows the request id) in the
/// response's extensions; it never reaches the client.
#[derive(Clone, Debug)]
pub struct InternalCause(pub std::sync::Arc<str>);

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = json!({ "error": { "code": self.code(), "message": self.client_message() } });
        let mut response = (status, axum::Json(body)).into_response();
        if let Error::Internal(cause) = &self {
            let cause = format!("{cause:#}");
            response
                .extensions_mut()
                .insert(InternalCause(cause.into()));
        }
        let retry_after_s = match &self {
            Error::RateLimited { retry_after_s, .. } => Some(*retry_after_s),
            Error::Unavailable => Some(UNAVAILABLE_RETRY_AFTER_S),
            _ => None,
        };
        if let Some(s) = retry_after_s {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(s),
            );
        }
        if let Error::CredentialsRequired(_) = &self {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Basic realm=\"performchat\""),
            );
        }
        if status == StatusCode::UNAUTHORIZED && self.code().starts_with("token_") {
            // RFC 6750: bearer-token failures name the scheme.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
