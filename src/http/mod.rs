//! The HTTP surface: routes, shared layers and the fallbacks that keep every answer in the
//! service's JSON error shape. Handlers are thin: they read the request, call `service`,
//! and shape the response.

mod agent;
mod audit;
pub(crate) mod chat;
mod demo;
mod json;
mod me;
pub mod openapi;
mod ops;
mod query;
mod token;
mod user;
mod widget;
mod ws;

pub use json::{BODY_LIMIT, parse_object};

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use serde_json::Value;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::app::AppState;
use crate::auth::api_key::random_base62;
use crate::auth::{KeySecret, Scope, required_str};
use crate::db::AuditEvent;
use crate::error::{Error, Result};
use crate::metrics::{RequestLabels, Route, RouteLabels, method_label};
use crate::token::{Caller, Credentials};

pub fn router(state: AppState) -> Router {
    // Endpoints that take the key pair: no CORS headers at all, so no browser page can
    // call them with a secret.
    let key_routes = Router::new()
        .route("/rest/v1/auth/token", post(token::mint_token))
        .route("/rest/v1/auth/invalidate", post(user::invalidate_user))
        .route("/rest/v1/auth/revoke", post(token::revoke_token))
        .route("/rest/v1/auth/introspect", post(token::introspect_token))
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed });
    // The company side of the chat, with the key pair as HTTP Basic credentials.
    let agent_routes = Router::new()
        .route(
            "/rest/v1/agent/conversations",
            get(agent::list_conversations),
        )
        .route(
            "/rest/v1/agent/conversations/{id}/messages",
            get(agent::list_messages).post(agent::reply),
        )
        .route(
            "/rest/v1/agent/conversations/{id}/messages/{messageId}",
            axum::routing::patch(agent::grow_message),
        )
        .route(
            "/rest/v1/agent/conversations/{id}/close",
            post(agent::close_conversation),
        )
        .route(
            "/rest/v1/agent/conversations/{id}/handoff",
            post(agent::hand_off),
        )
        .route(
            "/rest/v1/agent/conversations/{id}/release",
            post(agent::release),
        )
        .route(
            "/rest/v1/agent/conversations/{id}/typing",
            post(agent::typing),
        )
        .route("/rest/v1/agent/events", get(agent::events))
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed });
    // The endpoints a chat widget calls with its bearer token.
    let browser_routes = Router::new()
        .route("/rest/v1/auth/me", get(me::me))
        .route(
            "/rest/v1/chat/conversations",
            get(chat::list_conversations).post(chat::open_conversation),
        )
        .route(
            "/rest/v1/chat/conversations/{id}/messages",
            get(chat::list_messages).post(chat::send_message),
        )
        .route(
            "/rest/v1/chat/conversations/{id}/read",
            post(chat::mark_read),
        )
        .route("/rest/v1/chat/ws", get(ws::chat_socket))
        // Set before the CORS layer so that the layer also wraps it and answers preflights.
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(
            CorsLayer::new()
                .allow_origin(cors_origins(&state.settings.cors_origins))
                .allow_methods([Method::GET, Method::POST])
                .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
                .max_age(Duration::from_secs(600)),
        );
    // The demo page and its server-side helpers, only when asked for.
    let demo_routes = if state.settings.demo {
        demo::routes(&state.settings.demo_company)
    } else {
        Router::new()
    };
    Router::new()
        .merge(key_routes)
        .merge(agent_routes)
        .merge(browser_routes)
        .merge(demo_routes)
        .route("/widget.js", get(widget::widget_js))
        .route("/rest/v1/audit", get(audit::list_audit_events))
        // The API description and its browsable docs (Swagger UI's assets are in the binary).
        .merge(utoipa_swagger_ui::SwaggerUi::new("/rest/v1/docs").url(
            "/rest/v1/openapi.json",
            <openapi::ApiDoc as utoipa::OpenApi>::openapi(),
        ))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(|| async { Error::NoRoute })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // One middleware for what wraps every request (its time limit, its log line and
        // metrics, the security headers): each layer costs every request a clone of the
        // route's service stack, a boxed future and moves of the request and response. As
        // three layers, `/me` answered 4-6 % fewer requests/s and mints 2-3 % fewer.
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// `*` for any origin, else the comma-separated list (entries that are not valid header
/// values are ignored).
fn cors_origins(setting: &str) -> AllowOrigin {
    if setting.trim() == "*" {
        return AllowOrigin::any();
    }
    AllowOrigin::list(
        setting
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .filter_map(|o| HeaderValue::from_str(o).ok()),
    )
}

/// The request id: the caller's `X-Request-Id` if it is a sane one, else a new one. It is
/// echoed in the response and carried by the request's log line.
fn request_id(req: &Request) -> HeaderValue {
    req.headers()
        .get(REQUEST_ID)
        .filter(|v| {
            let b = v.as_bytes();
            !b.is_empty()
                && b.len() <= 128
                && b.iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"-_.:/+=".contains(c))
        })
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&random_base62(20)).expect("base62 is a valid header value")
        })
}

const REQUEST_ID: &str = "x-request-id";

/// Around every request: its time limit (`--request-timeout`, then 503), one log line
/// (method, route — never the raw URI —, status, latency, request id), the request metrics
/// and the security headers. Headers and bodies, which carry secrets and tokens, are never
/// logged. A 500's cause, handed over by the error in the response's extensions, is logged
/// here once, with the request id. (A plain event rather than tower-http's span per request:
/// the span cost more than the rest of the logging.)
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    let route = Route::new(req.extensions().get::<MatchedPath>().cloned());
    // A request that takes longer than `--request-timeout` is answered 503.
    let limit = Duration::from_secs(state.settings.request_timeout.max(1).into());
    let mut res = match tokio::time::timeout(limit, next.run(req)).await {
        Ok(res) => res,
        Err(_) => Error::Unavailable.into_response(),
    };
    security_headers(&mut res);
    let elapsed = started.elapsed();
    let status = res.status().as_u16();
    let request_id = id.to_str().unwrap_or_default();
    let path = route.as_str();
    if let Some(cause) = res.extensions().get::<crate::error::InternalCause>() {
        tracing::error!(request_id, method = %method, route = path, error = %cause.0, "request failed");
    }
    tracing::info!(
        request_id,
        method = %method,
        route = path,
        status,
        latency_us = elapsed.as_micros() as u64,
        "request"
    );
    let m = &state.metrics;
    let labels = RequestLabels {
        method: method_label(&method),
        route,
        status,
    };
    m.requests.get_or_create(&labels).inc();
    m.latency
        .get_or_create(&RouteLabels {
            route: labels.route,
        })
        .observe(elapsed.as_secs_f64());
    if status == 429 {
        m.rate_limited.inc();
    }
    res.headers_mut().insert(REQUEST_ID, id);
    res
}

/// The client's address for the audit trail: the peer of the TCP connection.
fn client_ip(info: &ConnectInfo<SocketAddr>) -> Option<String> {
    Some(info.0.ip().to_string())
}

/// An audit event for what `caller` asked, with the outcome of `result`.
fn audit_event<T>(
    state: &AppState,
    kind: &str,
    caller: &Caller,
    info: &ConnectInfo<SocketAddr>,
    result: &Result<T>,
) -> AuditEvent {
    AuditEvent {
        at: state.clock.now_ms(),
        kind: kind.to_owned(),
        outcome: match result {
            Ok(_) => "ok".to_owned(),
            Err(e) => e.code().to_owned(),
        },
        company_id: caller.company_id.clone(),
        key_id: Some(caller.key_id.clone()),
        client_ip: client_ip(info),
        ..AuditEvent::default()
    }
}

/// Every answer is JSON for an API client, never something a browser should sniff, frame
/// or cache.
fn security_headers(res: &mut Response) {
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // Nothing is cached unless its handler says so (the widget's script).
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The request body of a key endpoint: it carries the key pair.
trait KeyPairRequest {
    /// `keyId` and `keySecret`, as sent.
    fn key_pair(&self) -> (Option<&Value>, Option<&Value>);
}

/// Reads `keyId` and `keySecret` from a key endpoint's body, authenticates them and checks
/// the key has `scope`.
async fn authenticate(
    state: &AppState,
    body: &impl KeyPairRequest,
    info: &ConnectInfo<SocketAddr>,
    scope: Scope,
) -> Result<Caller> {
    let (key_id, key_secret) = body.key_pair();
    let key_id = required_str("keyId", key_id).map_err(Error::InvalidRequest)?;
    let secret = required_str("keySecret", key_secret).map_err(Error::InvalidRequest)?;
    crate::token::authenticate(
        state,
        Credentials {
            key_id,
            secret: &KeySecret::from_request(secret.to_owned()),
            client: Some(info.0.ip()),
        },
        scope,
    )
}

/// `Authorization: Basic base64(keyId:keySecret)`.
fn basic_credentials(headers: &HeaderMap) -> Result<(String, KeySecret)> {
    let missing = || {
        Error::CredentialsRequired(
            "send the key pair as HTTP Basic credentials: Authorization: Basic base64(keyId:keySecret)",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(missing)?;
    let (scheme, encoded) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(missing());
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(missing)?;
    let (key_id, secret) = decoded.split_once(':').ok_or_else(missing)?;
    Ok((
        key_id.to_owned(),
        KeySecret::from_request(secret.to_owned()),
    ))
}

/// The caller of an endpoint that takes the key pair as HTTP Basic credentials (the GET
/// endpoints, and the chat's company side), checked for `scope`.
fn basic_caller(
    state: &AppState,
    headers: &HeaderMap,
    info: &ConnectInfo<SocketAddr>,
    scope: Scope,
) -> Result<Caller> {
    let (key_id, secret) = basic_credentials(headers)?;
    crate::token::authenticate(
        state,
        Credentials {
            key_id: &key_id,
            secret: &secret,
            client: Some(info.0.ip()),
        },
        scope,
    )
}

/// How long an invalidation or revocation waits for this instance's sockets of that user
/// or token to close before it answers (each closes in microseconds; the bound covers a
/// socket stuck writing to a slow client).
pub(crate) const SETTLE_WITHIN: std::time::Duration = std::time::Duration::from_millis(200);

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    // TCP_NODELAY: a socket writes small frames one after another (an `ack`, then the
    // `message` push); with Nagle's algorithm the second waits for the client's delayed ACK,
    // up to 40 ms on Linux.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        router(state).into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}
