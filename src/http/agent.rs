//! The chat over REST, company side: `/rest/v1/agent/…`, called by the company's backend
//! with its key pair as HTTP Basic credentials and the `chat` scope. No CORS: no web page
//! holds a key secret.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Schema, SchemaType, Type};

use super::basic_caller;
use super::chat::{
    ConversationBody, ConversationPage, MessageBody, MessagePage, MessageResponse,
    client_message_id, cursor, required_text, window,
};
use super::json::JsonBody;
use super::openapi::{ErrorBody, KeyEndpointErrors};
use super::query::Query;
use crate::agents::AgentKind;
use crate::app::AppState;
use crate::auth::Scope;
use crate::chat;
use crate::chat::hub::{Control, Push};
use crate::chat::rules::{self, ClientMessageId, SenderKind};
use crate::db::{Agent, Conversation, ConversationQuery, Handler};
use crate::error::{Error, Result};
use crate::token::{self, Caller};

/// The body of a reply. Its schema is written out below: a person's reply needs their name,
/// which derived schemas cannot say.
// Fields take any JSON value so that the checks in `reply` name the field that is wrong.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplyRequest {
    text: Option<Value>,
    client_message_id: Option<Value>,
    sender_kind: Option<Value>,
    sender_name: Option<Value>,
    status: Option<Value>,
}

/// A chunk for a streamed reply, and perhaps its end.
// Fields take any JSON value so that the checks in `grow_message` name the field that is
// wrong.
#[derive(Deserialize, ToSchema)]
pub struct GrowRequest {
    /// Text to add to the reply: up to 4000 characters in all, no control characters other
    /// than newline and tab; it may be blank. Reaches the user's sockets as a `delta` frame.
    #[schema(value_type = Option<String>, max_length = 4000, pattern = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$")]
    append: Option<Value>,
    /// `complete` to finish the reply (after `append`, if both are given), `failed` to give
    /// it up with the text it has; absent while it goes on. The user's sockets get the
    /// finished reply as a `message` frame.
    #[schema(value_type = Option<String>, pattern = "^(complete|failed)$")]
    status: Option<Value>,
}

/// Characters other than controls (newline and tab allowed in a text), one of them not blank.
const TEXT_PATTERN: &str = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$";
/// Characters other than controls (newline and tab allowed), perhaps none (also written out
/// in `GrowRequest`'s schema attribute, which takes a literal only).
const CHUNK_PATTERN: &str = "^[^\\u0000-\\u0008\\u000B-\\u001F\\u007F-\\u009F]*$";
const NAME_PATTERN: &str = "^[^\\u0000-\\u001F\\u007F-\\u009F]*[^\\s\\u0000-\\u001F\\u007F-\\u009F][^\\u0000-\\u001F\\u007F-\\u009F]*$";

/// One of four objects: the agent's reply (`senderKind` absent, null or `agent`; a
/// `senderName` optional, shown instead of the agent's name) or a person's (`senderKind`
/// `operator` and their `senderName`), each whole (`text` required) or streamed (`status`
/// `streaming`, `text` optional and perhaps empty).
impl utoipa::PartialSchema for ReplyRequest {
    fn schema() -> RefOr<Schema> {
        let string = || ObjectBuilder::new().schema_type(Type::String);
        let shape = |title: &str, kind: ObjectBuilder, person: bool, streaming: bool| {
            let text = if streaming {
                string()
                    .max_length(Some(4000))
                    .pattern(Some(CHUNK_PATTERN))
                    .description(Some("The reply's first text, perhaps empty; no control characters other than newline and tab"))
            } else {
                string()
                    .min_length(Some(1))
                    .max_length(Some(4000))
                    .pattern(Some(TEXT_PATTERN))
                    .description(Some("1–4000 characters, not all blank; no control characters other than newline and tab"))
            };
            let status = if streaming {
                string().enum_values(Some(["streaming"])).description(Some(
                    "A reply streamed in chunks: `PATCH …/messages/{messageId}` adds them and finishes it",
                ))
            } else {
                string()
                    .enum_values(Some(["complete"]))
                    .description(Some("A whole reply (the default)"))
            };
            let mut o = ObjectBuilder::new()
                .title(Some(title))
                .property("text", text)
                .property(
                    "clientMessageId",
                    ObjectBuilder::new()
                        .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                        .pattern(Some("^[A-Za-z0-9._:-]{1,128}$"))
                        .description(Some("Your idempotency key; made for you when omitted")),
                )
                .property("senderKind", kind)
                .property(
                    "senderName",
                    string()
                        .max_length(Some(100))
                        .pattern(Some(NAME_PATTERN))
                        .description(Some(
                            "The person's name, or a name shown instead of the agent's",
                        )),
                )
                .property("status", status);
            if streaming {
                o = o.required("status");
            } else {
                o = o.required("text");
            }
            if person {
                o = o.required("senderKind").required("senderName");
            }
            o
        };
        let as_agent = || {
            ObjectBuilder::new()
                .schema_type(SchemaType::from_iter([Type::String, Type::Null]))
                .enum_values(Some([Some("agent"), None]))
        };
        let as_person = || string().enum_values(Some(["operator"]));
        OneOfBuilder::new()
            .item(shape("As the agent", as_agent(), false, false))
            .item(shape("As a person", as_person(), true, false))
            .item(shape("Streamed, as the agent", as_agent(), false, true))
            .item(shape("Streamed, as a person", as_person(), true, true))
            .into()
    }
}

impl ToSchema for ReplyRequest {}

#[derive(Deserialize, ToSchema)]
pub struct TypingRequest {
    /// `start` when the agent (or a person) starts typing a reply, `stop` when it stops.
    #[schema(value_type = String, required = true, pattern = "^(start|stop)$")]
    state: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationResponse {
    pub conversation: ConversationBody,
}

/// The caller, from HTTP Basic credentials, with the chat scope.
fn chat_caller(
    state: &AppState,
    headers: &HeaderMap,
    info: &ConnectInfo<SocketAddr>,
) -> Result<Caller> {
    basic_caller(state, headers, info, Scope::Chat)
}

/// Your company's conversations, by last change, oldest first: poll with `updatedSince` and
/// follow `nextCursor`.
#[utoipa::path(get, path = "/rest/v1/agent/conversations", tag = "chat", security(("keyPair" = [])),
    params(
        ("agentId" = Option<String>, Query, description = "Only this agent's"),
        ("status" = Option<String>, Query, pattern = "^(open|closed|waiting_human)?$", description = "open, closed, or waiting_human: open and handed to a person none of whom has answered yet"),
        ("updatedSince" = Option<i64>, Query, minimum = 0, description = "Only conversations changed at or after this time (unix milliseconds)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Conversations per page (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^(-?[0-9]{1,18}\\.[A-Za-z0-9_]+)?$", description = "The nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of conversations", body = ConversationPage),
        KeyEndpointErrors,
    ))]
pub async fn list_conversations(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<ConversationPage>> {
    let caller = chat_caller(&state, &headers, &info)?;
    let q = Query::parse(
        query.as_deref(),
        &["agentId", "status", "updatedSince", "limit", "cursor"],
    )?;
    let (status, handler) = match q.get("status") {
        None => (None, None),
        Some(s @ ("open" | "closed")) => (Some(s), None),
        Some("waiting_human") => (Some("open"), Some(Handler::WaitingHuman)),
        Some(_) => {
            return Err(Error::invalid(
                "status must be open, closed or waiting_human",
            ));
        }
    };
    let limit = q.limit("limit", 50, 200)?;
    let page = chat::list_for_company(
        &state,
        &ConversationQuery {
            company_id: &caller.company_id,
            agent_id: q.get("agentId"),
            status,
            handler,
            updated_since: q.integer("updatedSince", 0)?,
            after: cursor(q.get("cursor"))?,
            limit,
        },
    )
    .await?;
    Ok(Json(ConversationPage::of(page, limit, |c| c.updated_at)))
}

/// Messages of one of your company's conversations, oldest first.
#[utoipa::path(get, path = "/rest/v1/agent/conversations/{id}/messages", tag = "chat", security(("keyPair" = [])),
    params(
        ("id" = String, Path),
        ("before" = Option<i64>, Query, minimum = 0, description = "Only messages with a lower seq (not with after)"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Only messages with a higher seq (not with before)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "Messages per page (default 50)"),
    ),
    responses(
        (status = 200, description = "A page of messages", body = MessagePage),
        KeyEndpointErrors,
        (status = 404, description = "No such conversation in your company", body = ErrorBody),
    ))]
pub async fn list_messages(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<MessagePage>> {
    let caller = chat_caller(&state, &headers, &info)?;
    let (window, limit) = window(query.as_deref())?;
    let conversation = chat::company_conversation(&state, &caller, &id).await?;
    let (messages, has_more) = chat::history(&state, &conversation, window, limit).await?;
    Ok(Json(MessagePage {
        messages: messages.into_iter().map(Into::into).collect(),
        has_more,
    }))
}

/// Reply in a conversation, as its agent or as a named person (`senderKind: operator`):
/// whole, or streamed (`status: streaming`, then `PATCH …/messages/{messageId}`).
#[utoipa::path(post, path = "/rest/v1/agent/conversations/{id}/messages", tag = "chat", security(("keyPair" = [])),
    params(("id" = String, Path)),
    request_body = ReplyRequest,
    responses(
        (status = 201, description = "Stored and delivered", body = MessageResponse),
        (status = 200, description = "Stored before, with this clientMessageId", body = MessageResponse),
        KeyEndpointErrors,
        (status = 404, description = "No such conversation in your company", body = ErrorBody),
        (status = 409, description = "`conversation_closed`, or `handled_by_person`: a bot agent's reply (senderKind agent) while a person handles the conversation or it waits for one", body = ErrorBody),
    ))]
pub async fn reply(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReplyRequest>,
) -> Result<(StatusCode, Json<MessageResponse>)> {
    let streaming = match body.status.as_ref() {
        None | Some(Value::Null) => false,
        Some(Value::String(s)) if s == "complete" => false,
        Some(Value::String(s)) if s == "streaming" => true,
        Some(_) => return Err(Error::invalid("status must be complete or streaming")),
    };
    let text = if streaming {
        chunk("text", body.text.as_ref())?
    } else {
        required_text("text", body.text.as_ref())?
    };
    let client_message_id = client_message_id(body.client_message_id.as_ref())?
        .unwrap_or_else(ClientMessageId::generate);
    let kind = match body.sender_kind.as_ref() {
        None | Some(Value::Null) => SenderKind::Agent,
        Some(Value::String(s)) if s == "agent" => SenderKind::Agent,
        Some(Value::String(s)) if s == "operator" => SenderKind::Operator,
        Some(_) => return Err(Error::invalid("senderKind must be agent or operator")),
    };
    let name = match body.sender_name.as_ref() {
        None | Some(Value::Null) => None,
        Some(Value::String(s))
            if !s.trim().is_empty()
                && s.chars().count() <= 100
                && !s.chars().any(char::is_control) =>
        {
            Some(s.trim().to_owned())
        }
        Some(_) => {
            return Err(Error::invalid(
                "senderName must be 1–100 characters without control characters",
            ));
        }
    };
    if kind == SenderKind::Operator && name.is_none() {
        return Err(Error::invalid(
            "senderName is required for an operator's reply",
        ));
    }
    let caller = chat_caller(&state, &headers, &info)?;
    let reply = Reply {
        kind,
        name,
        client_message_id: &client_message_id,
        text: &text,
        streaming,
    };
    let (conversation, agent) = conversation_with_agent(&state, &caller, &id).await?;
    let sent = send_reply(&state, &conversation, agent, reply).await?;
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

/// A reply in one of the company's conversations, as its agent or a named person.
pub(super) struct Reply<'a> {
    pub kind: SenderKind,
    /// None: the agent's own name.
    pub name: Option<String>,
    pub client_message_id: &'a ClientMessageId,
    pub text: &'a rules::MessageText,
    pub streaming: bool,
}

/// One of the company's conversations, and its agent.
pub(super) async fn conversation_with_agent(
    state: &AppState,
    caller: &Caller,
    conversation_id: &str,
) -> Result<(Conversation, Option<Agent>)> {
    let conversation = chat::company_conversation(state, caller, conversation_id).await?;
    let agent = token::find_agent(state, &caller.company_id, &conversation.agent_id).await?;
    Ok((conversation, agent))
}

/// Sends `reply` in `conversation` (of `agent`), unless a person handles it and the reply is
/// the bot's.
pub(super) async fn send_reply(
    state: &AppState,
    conversation: &Conversation,
    agent: Option<Agent>,
    reply: Reply<'_>,
) -> Result<chat::Sent> {
    // A bot's reply waits while a person handles the conversation (or it waits for one).
    if reply.kind == SenderKind::Agent
        && conversation.handler != Handler::Bot.as_str()
        && agent
            .as_ref()
            .is_some_and(|a| AgentKind::of(&a.kind) != Some(AgentKind::Human))
    {
        return Err(Error::HandledByPerson);
    }
    // Unnamed: the agent's own name, as the user sees it in the widget.
    let name = reply
        .name
        .unwrap_or_else(|| agent.map(|a| a.name).unwrap_or_default());
    chat::send(
        state,
        conversation,
        reply.kind,
        Some(&name),
        reply.client_message_id,
        reply.text,
        reply.streaming,
    )
    .await
}

/// Add a chunk to a streamed reply (`append`), and finish it (`status`). Each chunk reaches
/// the user's sockets as a `delta` frame, the finished reply as a `message` frame. A reply
/// that gets no call here for the server's `--stream-timeout` is finished as `failed` with
/// the text it has; a call with neither field only keeps it alive.
#[utoipa::path(patch, path = "/rest/v1/agent/conversations/{id}/messages/{messageId}", tag = "chat", security(("keyPair" = [])),
    params(("id" = String, Path), ("messageId" = String, Path)),
    request_body = GrowRequest,
    responses(
        (status = 200, description = "The reply as it is now", body = MessageResponse),
        KeyEndpointErrors,
        (status = 404, description = "No such conversation in your company, or no such message in it", body = ErrorBody),
        (status = 409, description = "`message_not_streaming`: it is complete or failed already", body = ErrorBody),
    ))]
pub async fn grow_message(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path((id, message_id)): Path<(String, String)>,
    JsonBody(body): JsonBody<GrowRequest>,
) -> Result<Json<MessageResponse>> {
    let append = match body.append.as_ref() {
        None | Some(Value::Null) => None,
        value => Some(chunk("append", value)?),
    };
    let finish = match body.status.as_ref() {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s == "complete" => Some(chat::Finish::Complete),
        Some(Value::String(s)) if s == "failed" => Some(chat::Finish::Failed),
        Some(_) => return Err(Error::invalid("status must be complete or failed")),
    };
    let caller = chat_caller(&state, &headers, &info)?;
    let conversation = chat::company_conversation(&state, &caller, &id).await?;
    let append = append.unwrap_or_else(|| rules::MessageText::chunk("append", "").expect("empty"));
    let message = chat::grow(&state, &conversation, &message_id, &append, finish).await?;
    Ok(Json(MessageResponse {
        message: message.into(),
    }))
}

/// A chunk of a streamed reply: a string, perhaps blank or empty.
fn chunk(field: &str, value: Option<&Value>) -> Result<rules::MessageText> {
    match value {
        None | Some(Value::Null) => Ok(rules::MessageText::chunk(field, "").expect("empty")),
        Some(Value::String(s)) => {
            rules::MessageText::chunk(field, s).map_err(Error::InvalidRequest)
        }
        Some(_) => Err(Error::invalid(format!("{field} must be a string"))),
    }
}

/// Close a conversation. The user's next open starts a new one.
#[utoipa::path(post, path = "/rest/v1/agent/conversations/{id}/close", tag = "chat", security(("keyPair" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Closed (closing a closed one changes nothing)", body = ConversationResponse),
        KeyEndpointErrors,
        (status = 404, description = "No such conversation in your company", body = ErrorBody),
    ))]
pub async fn close_conversation(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ConversationResponse>> {
    act_on_conversation(&state, &info, &headers, &id, chat::close).await
}

/// Hand a conversation to a person: it waits for one (listed with
/// `status=waiting_human`) until an operator's first reply takes it (`handler` `human`).
/// The user sees `agent_state` `handoff` and a `system` message saying so. A conversation
/// already with a person, or waiting for one, stays as it is.
#[utoipa::path(post, path = "/rest/v1/agent/conversations/{id}/handoff", tag = "chat", security(("keyPair" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "Handed to a person (or already with one, or waiting)", body = ConversationResponse),
        KeyEndpointErrors,
        (status = 404, description = "No such conversation in your company", body = ErrorBody),
        (status = 409, description = "`conversation_closed`", body = ErrorBody),
    ))]
pub async fn hand_off(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ConversationResponse>> {
    act_on_conversation(&state, &info, &headers, &id, chat::hand_off).await
}

/// Give a conversation back to its agent, from a person or from waiting for one. The user
/// sees `agent_state` `bot`. One with its agent stays as it is.
#[utoipa::path(post, path = "/rest/v1/agent/conversations/{id}/release", tag = "chat", security(("keyPair" = [])),
    params(("id" = String, Path)),
    responses(
        (status = 200, description = "With its agent again (or already)", body = ConversationResponse),
        KeyEndpointErrors,
        (status = 404, description = "No such conversation in your company", body = ErrorBody),
        (status = 409, description = "`conversation_closed`", body = ErrorBody),
    ))]
pub async fn release(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ConversationResponse>> {
    act_on_conversation(&state, &info, &headers, &id, chat::release).await
}

/// Close, hand off, release: the caller's conversation `id`, acted on, as it then is.
async fn act_on_conversation(
    state: &AppState,
    info: &ConnectInfo<SocketAddr>,
    headers: &HeaderMap,
    id: &str,
    act: impl AsyncFnOnce(&AppState, &Caller, &Conversation) -> Result<Conversation>,
) -> Result<Json<ConversationResponse>> {
    let caller = chat_caller(state, headers, info)?;
    let conversation = chat::company_conversation(state, &caller, id).await?;
    let acted = act(state, &caller, &conversation).await?;
    Ok(Json(ConversationResponse {
        conversation: acted.into(),
    }))
}

/// Tell the user's sockets that the agent is typing (`start`) or stopped (`stop`).
#[utoipa::path(post, path = "/rest/v1/agent/conversations/{id}/typing", tag = "chat", security(("keyPair" = [])),
    params(("id" = String, Path)),
    request_body = TypingRequest,
    responses(
        (status = 204, description = "Sent to the user's open sockets, on every instance"),
        KeyEndpointErrors,
        (status = 404, description = "No such conversation in your company", body = ErrorBody),
    ))]
pub async fn typing(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<TypingRequest>,
) -> Result<StatusCode> {
    let typing = rules::typing_of(body.state.as_ref().and_then(Value::as_str))
        .ok_or_else(|| Error::invalid(rules::TYPING_STATES))?;
    let caller = chat_caller(&state, &headers, &info)?;
    let conversation = chat::company_conversation(&state, &caller, &id).await?;
    chat::agent_typing(&state, &conversation, typing);
    Ok(StatusCode::NO_CONTENT)
}

/// The company's live feed, as server-sent events: `message` (every new message of its
/// conversations, the user's and the agent's), `typing` (the user started or stopped typing)
/// and `conversation_closed`; each event's data is one JSON object. A live view without
/// replay: after a reconnect, catch up with `GET /rest/v1/agent/conversations?updatedSince=`.
/// The stream ends when the key is revoked or the company deactivated, or when the reader
/// falls 256 events behind.
#[utoipa::path(get, path = "/rest/v1/agent/events", tag = "chat", security(("keyPair" = [])),
    params(("agentId" = Option<String>, Query, description = "Only this agent's conversations")),
    responses(
        (status = 200, description = "`text/event-stream`: events `message` `{\"conversationId\",\"message\"}`, `typing` `{\"conversationId\",\"userId\",\"state\"}`, `conversation_closed` `{\"conversationId\"}`; a comment every 15 s keeps proxies from closing it", content_type = "text/event-stream", body = String),
        KeyEndpointErrors,
    ))]
pub async fn events(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Sse<impl Stream<Item = std::result::Result<Event, Infallible>>>> {
    let caller = chat_caller(&state, &headers, &info)?;
    let q = Query::parse(query.as_deref(), &["agentId"])?;
    Ok(company_feed(&state, &caller, q.get("agentId")))
}

/// A company's live feed (one agent's, if named) for as long as the response streams; it
/// ends with the key that follows it.
pub(super) fn company_feed(
    state: &AppState,
    caller: &Caller,
    agent_id: Option<&str>,
) -> Sse<impl Stream<Item = std::result::Result<Event, Infallible>> + use<>> {
    let feed = state
        .chat
        .hub
        .follow_company(&caller.company_id, agent_id, &caller.key_id);
    let feed = Following {
        state: state.clone(),
        id: feed.id,
        control: feed.control,
    };
    let events = futures_util::stream::unfold(
        (feed, std::collections::VecDeque::<Arc<Push>>::new()),
        |(feed, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop_front().and_then(|p| event_of(&p)) {
                    return Some((Ok(event), (feed, pending)));
                }
                if !pending.is_empty() {
                    continue;
                }
                if feed.control.close_code().is_some() {
                    return None;
                }
                tokio::select! {
                    _ = feed.control.signalled() => pending.extend(feed.control.take_pushes()),
                    _ = feed.control.closing() => return None,
                }
            }
        },
    );
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

/// A feed registered in the hub for as long as its response streams.
struct Following {
    state: AppState,
    id: u64,
    control: Arc<Control>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.state.chat.hub.unfollow_company(self.id);
    }
}

fn event_of(push: &Push) -> Option<Event> {
    let (name, data) = match push {
        Push::Message {
            conversation_id,
            message,
        } => (
            "message",
            serde_json::json!({"conversationId": conversation_id, "message": MessageBody::from(message.clone())}),
        ),
        Push::UserTyping {
            conversation_id,
            user_id,
            typing,
        } => (
            "typing",
            serde_json::json!({"conversationId": conversation_id, "userId": user_id,
                               "state": rules::typing_word(*typing)}),
        ),
        Push::ConversationClosed { conversation_id } => (
            "conversation_closed",
            serde_json::json!({"conversationId": conversation_id}),
        ),
        // The agent's own typing and chunks go to the user only (the company sees the
        // finished reply).
        Push::Typing { .. } | Push::Delta { .. } | Push::AgentState { .. } => return None,
    };
    Some(Event::default().event(name).data(data.to_string()))
}
