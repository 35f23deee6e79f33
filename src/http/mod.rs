//! The HTTP surface: routes, shared layers and the fallbacks that keep every answer in the
//! service's JSON error shape. Handlers are thin: they read the request, call `service`,
//! and shape the response.

mod json;
mod me;
mod token;
mod user;

pub use json::BODY_LIMIT;

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::auth::{KeySecret, required_str};
use crate::error::{Error, Result};
use crate::service::{AppState, Caller};
use json::JsonObject;

pub fn router(state: AppState) -> Router {
    // Endpoints that take the key pair: no CORS headers at all, so no browser page can
    // call them with a secret.
    let key_routes = Router::new()
        .route("/rest/v1/auth/token", post(token::mint_token))
        .route("/rest/v1/auth/invalidate", post(user::invalidate_user))
        .route("/rest/v1/auth/revoke", post(token::revoke_token))
        .route("/rest/v1/auth/introspect", post(token::introspect_token))
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed });
    // The endpoint a chat widget calls with its bearer token.
    let browser_routes = Router::new()
        .route("/rest/v1/auth/me", get(me::me))
        // Set before the CORS layer so that the layer also wraps it and answers preflights.
        .method_not_allowed_fallback(|| async { Error::MethodNotAllowed })
        .layer(
            CorsLayer::new()
                .allow_origin(AllowOrigin::any())
                .allow_methods([Method::GET])
                .allow_headers([header::AUTHORIZATION])
                .max_age(Duration::from_secs(600)),
        );
    Router::new()
        .merge(key_routes)
        .merge(browser_routes)
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(|| async { Error::NoRoute })
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// One log line per request: method, route (never the raw URI), status, latency. Headers and
/// bodies, which carry secrets and tokens, are never logged. (A plain event rather than
/// tower-http's span per request: the span cost more than the rest of the logging.)
async fn log_request(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let res = next.run(req).await;
    tracing::info!(
        method = %method,
        route = route.as_ref().map_or("unmatched", |p| p.as_str()),
        status = res.status().as_u16(),
        latency_us = started.elapsed().as_micros() as u64,
        "request"
    );
    res
}

/// Every answer is JSON for an API client, never something a browser should sniff, frame
/// or cache.
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    res
}

/// Reads `keyId` and `keySecret` from a key endpoint's body and authenticates them.
async fn authenticate(state: &AppState, body: &JsonObject) -> Result<Caller> {
    let key_id = required_str("keyId", body.get("keyId")).map_err(Error::InvalidRequest)?;
    let secret = required_str("keySecret", body.get("keySecret")).map_err(Error::InvalidRequest)?;
    state
        .authenticate(key_id, &KeySecret::from_request(secret.to_owned()))
        .await
}

/// Serves until `shutdown` resolves, then lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}
