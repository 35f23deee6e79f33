//! `GET /rest/v1/audit`: a company reads its own audit trail, newest first, a page at a time.
//! The key pair comes as HTTP Basic credentials (`keyId:keySecret`), never in the URL.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::auth::expires_in::parse_duration_setting;
use crate::auth::{KeySecret, Scope};
use crate::db::AuditQuery;
use crate::error::{Error, Result};
use crate::service::AppState;

#[derive(Deserialize)]
pub struct Params {
    since: Option<String>,
    user: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

pub async fn list_audit_events(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(params): Query<Params>,
) -> Result<Json<Value>> {
    let (key_id, secret) = basic_credentials(&headers)?;
    let limit = match params.limit.as_deref() {
        None => 100,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=1000).contains(l))
            .ok_or_else(|| Error::invalid("limit must be an integer from 1 to 1000"))?,
    };
    let before_id = match params.cursor.as_deref() {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| Error::invalid("cursor must be the nextCursor of a previous page"))?,
        ),
    };
    let since_ms = match params.since.as_deref() {
        None => None,
        Some(s) => {
            let d = parse_duration_setting(s)
                .map_err(|_| Error::invalid("since must be a duration such as \"1h\" or \"7d\""))?;
            Some(state.clock.now_ms() - d.as_millis() as i64)
        }
    };
    let caller = state
        .authenticate(&key_id, &secret, Some(info.0.ip()))
        .await?;
    caller.require(Scope::Manage)?;
    let events = state
        .db
        .list_audit_events(&AuditQuery {
            company_id: &caller.company_id,
            since_ms,
            user_id: params.user.as_deref(),
            before_id,
            limit,
        })
        .await?;
    let next = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(json!({ "events": events, "nextCursor": next })))
}

/// `Authorization: Basic base64(keyId:keySecret)`.
fn basic_credentials(headers: &HeaderMap) -> Result<(String, KeySecret)> {
    let missing = || {
        Error::invalid(
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
