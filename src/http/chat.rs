//! The chat over REST, user side: `/rest/v1/chat/…`, opened by the chat token as
//! `Authorization: Bearer`, answering CORS like `/me`. The bodies it shares with the company
//! side (`agent.rs`) live here.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::json::JsonBody;
use super::me::bearer;
use super::openapi::ErrorBody;
use super::query::Query;
use crate::app::AppState;
use crate::chat::rules::{ClientMessageId, MessageText, SenderKind};
use crate::chat::{self, ChatUser};
use crate::clock::rfc3339_ms;
use crate::db::{Conversation, Message, Side, Window};
use crate::error::{Error, Result};
use crate::token;

/// A conversation between one end user and one agent.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationBody {
    pub id: String,
    pub agent_id: String,
    /// The internal user id (`user.id` of the token response).
    pub user_id: String,
    /// `open` or `closed`.
    pub status: String,
    /// Who answers it: `bot` (its agent: the company's backend, bot or LLM),
    /// `waiting_human` (handed to a person, none of whom has answered yet) or `human`.
    pub handler: String,
    /// The seq of its newest message (0: none yet).
    pub last_seq: i64,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
    pub closed_at: Option<String>,
}

impl From<Conversation> for ConversationBody {
    fn from(c: Conversation) -> Self {
        ConversationBody {
            id: c.id,
            agent_id: c.agent_id,
            user_id: c.user_id,
            status: c.status,
            handler: c.handler,
            last_seq: c.last_seq,
            created_at: rfc3339_ms(c.created_at),
            updated_at: rfc3339_ms(c.updated_at),
            closed_at: c.closed_at.map(rfc3339_ms),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SenderBody {
    /// `user`, `agent`, `operator` or `system`.
    pub kind: String,
    /// The agent's or the person's name; null for the user.
    pub name: Option<String>,
}

/// A message: `seq` is 1, 2, 3… per conversation, gapless, in the order they were stored.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageBody {
    pub id: String,
    pub conversation_id: String,
    pub seq: i64,
    pub client_message_id: String,
    pub sender: SenderBody,
    pub text: String,
    /// `complete`, `streaming` or `failed`.
    pub status: String,
    /// RFC 3339 with milliseconds.
    pub created_at: String,
    /// An LLM's completed reply: the tokens its endpoint counted. Absent on other messages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

/// The tokens an LLM's reply took, as its endpoint reported them.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageBody {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
}

impl From<Message> for MessageBody {
    fn from(m: Message) -> Self {
        MessageBody {
            id: m.id,
            conversation_id: m.conversation_id,
            seq: m.seq,
            client_message_id: m.client_message_id,
            sender: SenderBody {
                kind: m.sender_kind,
                name: m.sender_name,
            },
            text: m.text,
            status: m.status,
            created_at: rfc3339_ms(m.created_at),
            usage: match (m.prompt_tokens, m.completion_tokens) {
                (Some(prompt_tokens), Some(completion_tokens)) => Some(UsageBody {
                    prompt_tokens,
                    completion_tokens,
                }),
                _ => None,
            },
        }
    }
}

fn bodies(messages: Vec<Message>) -> Vec<MessageBody> {
    messages.into_iter().map(MessageBody::from).collect()
}

#[derive(Serialize, ToSchema)]
pub struct OpenedConversation {
    pub conversation: ConversationBody,
    /// The newest messages (at most 50), oldest first.
    pub messages: Vec<MessageBody>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConversationPage {
    pub conversations: Vec<ConversationBody>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePage {
    /// Oldest first.
    pub messages: Vec<MessageBody>,
    /// More messages lie beyond these (older ones, or with `after`, newer ones).
    pub has_more: bool,
}

#[derive(Serialize, ToSchema)]
pub struct MessageResponse {
    pub message: MessageBody,
}

// Fields take any JSON value so that the checks name the field that is wrong.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SendRequest {
    /// Your idempotency key for this message: 1–128 letters, digits and `-_.:`.
    #[schema(value_type = String, required = true, pattern = "^[A-Za-z0-9._:-]{1,128}$")]
    client_message_id: Option<Value>,
    /// 1–4000 characters, not all blank; no control characters other than newline and tab.
    #[schema(value_type = String, required = true, min_length = 1, max_length = 4000, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    text: Option<Value>,
}

#[derive(Deserialize, ToSchema)]
pub struct ReadRequest {
    /// The highest seq read.
    #[schema(value_type = i64, required = true, minimum = 0)]
    seq: Option<Value>,
}

/// The user a bearer token names, verified.
fn chat_user(state: &AppState, headers: &HeaderMap) -> Result<ChatUser> {
    let claims = token::verify(state, bearer(headers)?)?;
    Ok(ChatUser::from(&claims))
}

pub(super) fn required_text(field: &str, value: Option<&Value>) -> Result<MessageText> {
    match value {
        None | Some(Value::Null) => Err(Error::invalid(format!("{field} is required"))),
        Some(Value::String(s)) => MessageText::parse(field, s).map_err(Error::InvalidRequest),
        Some(_) => Err(Error::invalid(format!("{field} must be a string"))),
    }
}

pub(super) fn client_message_id(value: Option<&Value>) -> Result<Option<ClientMessageId>> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => ClientMessageId::parse(s)
            .map(Some)
            .map_err(Error::InvalidRequest),
        Some(_) => Err(Error::invalid("clientMessageId must be a string")),
    }
}

/// `before`/`after`/`limit` of a message listing.
pub(super) fn window(query: Option<&str>) -> Result<(Window, i64)> {
    let q = Query::parse(query, &["before", "after", "limit"])?;
    let limit = q.limit("limit", 50, 200)?;
    Ok((
        window_of(q.integer("before", 0)?, q.integer("after", 0)?)?,
        limit,
    ))
}

/// Which messages `before` or `after` (at most one of them) asks for; the socket's `history`
/// frame reads the same fields.
pub(super) fn window_of(before: Option<i64>, after: Option<i64>) -> Result<Window> {
    match (before, after) {
        (Some(_), Some(_)) => Err(Error::invalid("give before or after, not both")),
        (Some(before), None) => Ok(Window::Before(before)),
        (None, Some(after)) => Ok(Window::After(after)),
        (None, None) => Ok(Window::Latest),
    }
}

/// A page cursor: `<time>.<id>` of the last item of the previous page.
pub(super) fn cursor(value: Option<&str>) -> Result<Option<(i64, &str)>> {
    let Some(value) = value else { return Ok(None) };
    value
        .split_once('.')
        .and_then(|(at, id)| Some((at.parse::<i64>().ok()?, id)))
        .filter(|(_, id)| !id.is_empty())
        .map(Some)
        .ok_or_else(|| Error::invalid("cursor must be the nextCursor of a previous page"))
}

impl ConversationPage {
    /// A page of at most `limit`; the cursor names its last one by `at` (the time it is
    /// ordered by) and id.
    pub(super) fn of(page: Vec<Conversation>, limit: i64, at: fn(&Conversation) -> i64) -> Self {
        let next_cursor = (page.len() as i64 == limit)
            .then(|| page.last().map(|c| format!("{}.{}", at(c), c.id)))
            .flatten();
        ConversationPage {
            conversations: page.into_iter().map(Into::into).collect(),
            next_cursor,
        }
    }
}

/// Open the conversation of the token's user and agent, or resume the open one.
#[utoipa::path(post, path = "/rest/v1/chat/conversations", tag = "chat", security(("bearer" = [])),
    responses(
        (status = 200, description = "The open conversation and its newest messages", body = OpenedConversation),
        (status = 401, description = "`token_expired`, `token_revoked` or `token_invalid`", body = ErrorBody),
        (status = 503, description = "Retry", body = ErrorBody),
    ))]
pub async fn open_conversation(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<OpenedConversation>> {
    let user = chat_user(&state, &headers)?;
    let (conversation, messages) = chat::open(&state, &user).await?;
    Ok(Json(OpenedConversation {
        conversation: conversation.into(),
        messages: bodies(messages),
    }))
}

/// The token user's conversations with the token's agent, newest first.
#[utoipa::path(get, path = "/rest/v1/chat/conversations", tag = "chat", security(("bearer" = [])),
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Conversations per page (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^(-?[0-9]{1,18}\\.[A-Za-z0-9_]+)?$", description = "The nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of conversations", body = ConversationPage),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "`token_expired`, `token_revoked` or `token_invalid`", body = ErrorBody),
    ))]
pub async fn list_conversations(
    State(state): State<AppState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<ConversationPage>> {
    let user = chat_user(&state, &headers)?;
    let q = Query::parse(query.as_deref(), &["limit", "cursor"])?;
    let limit = q.limit("limit", 50, 200)?;
    let before = cursor(q.get("cursor"))?;
    let page = chat::list_for_user(&state, &user, before, limit).await?;
    Ok(Json(ConversationPage::of(page, limit, |c| c.created_at)))
}

/// Messages of one of the token user's conversations, oldest first.
#[utoipa::path(get, path = "/rest/v1/chat/conversations/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(
        ("id" = String, Path),
        ("before" = Option<i64>, Query, minimum = 0, description = "Only messages with a lower seq (not with after)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only messages with a higher seq, to catch up (not with before)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Messages per page (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        (status = 400, description = "A bad parameter", body = ErrorBody),
        (status = 401, description = "`token_expired`, `token_revoked` or `token_invalid`", body = ErrorBody),
        (status = 404, description = "No such conversation of this user and agent", body = ErrorBody),
    ))]
pub async fn list_messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<MessagePage>> {
    let user = chat_user(&state, &headers)?;
    let (window, limit) = window(query.as_deref())?;
    let conversation = chat::user_conversation(&state, &user, &id).await?;
    let (messages, has_more) = chat::history(&state, &conversation, window, limit).await?;
    Ok(Json(MessagePage {
        messages: bodies(messages),
        has_more,
    }))
}

/// Send a message as the user. 201 with the stored message; the same `clientMessageId` again
/// answers 200 with the message stored the first time, never a second one.
#[utoipa::path(post, path = "/rest/v1/chat/conversations/{id}/messages", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = SendRequest,
    responses(
        (status = 201, description = "Stored", body = MessageResponse),
        (status = 200, description = "Stored before, with this clientMessageId", body = MessageResponse),
        (status = 400, description = "A field is missing or invalid", body = ErrorBody),
        (status = 401, description = "`token_expired`, `token_revoked` or `token_invalid`", body = ErrorBody),
        (status = 404, description = "No such conversation of this user and agent", body = ErrorBody),
        (status = 409, description = "`conversation_closed`: open a new one", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not Content-Type: application/json", body = ErrorBody),
        (status = 429, description = "Sending too fast; see Retry-After", body = ErrorBody),
        (status = 503, description = "Retry", body = ErrorBody),
    ))]
pub async fn send_message(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<SendRequest>,
) -> Result<(StatusCode, Json<MessageResponse>)> {
    let user = chat_user(&state, &headers)?;
    let client_message_id = client_message_id(body.client_message_id.as_ref())?
        .ok_or_else(|| Error::invalid("clientMessageId is required"))?;
    let text = required_text("text", body.text.as_ref())?;
    let conversation = chat::user_conversation(&state, &user, &id).await?;
    let sent = chat::send(
        &state,
        &conversation,
        SenderKind::User,
        None,
        &client_message_id,
        &text,
        false,
    )
    .await?;
    let status = if sent.duplicate {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((
        status,
        Json(MessageResponse {
            message: sent.message.into(),
        }),
    ))
}

/// Mark the conversation read up to `seq`, for the user.
#[utoipa::path(post, path = "/rest/v1/chat/conversations/{id}/read", tag = "chat", security(("bearer" = [])),
    params(("id" = String, Path)),
    request_body = ReadRequest,
    responses(
        (status = 204, description = "Recorded"),
        (status = 400, description = "seq is not a seq of this conversation", body = ErrorBody),
        (status = 401, description = "`token_expired`, `token_revoked` or `token_invalid`", body = ErrorBody),
        (status = 404, description = "No such conversation of this user and agent", body = ErrorBody),
        (status = 413, description = "Body over 16 KiB", body = ErrorBody),
        (status = 415, description = "Not Content-Type: application/json", body = ErrorBody),
    ))]
pub async fn mark_read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReadRequest>,
) -> Result<StatusCode> {
    let user = chat_user(&state, &headers)?;
    let seq = match body.seq {
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or_default(),
        None | Some(Value::Null) => return Err(Error::invalid("seq is required")),
        Some(_) => return Err(Error::invalid("seq must be an integer")),
    };
    let conversation = chat::user_conversation(&state, &user, &id).await?;
    chat::mark_read(&state, &conversation, Side::User, seq).await?;
    Ok(StatusCode::NO_CONTENT)
}
