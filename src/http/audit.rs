//! `GET /rest/v1/audit`: a company reads its own audit trail, newest first, a page at a time.
//! The key pair comes as HTTP Basic credentials (`keyId:keySecret`), never in the URL.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use serde::Serialize;
use utoipa::ToSchema;

use super::basic_caller;
use super::openapi::KeyEndpointErrors;
use super::query::Query;
use crate::app::AppState;
use crate::auth::Scope;
use crate::auth::expires_in::parse_ms;
use crate::db::{AuditEvent, AuditQuery};
use crate::error::{Error, Result};

/// A page of a company's audit trail, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

/// Your company's audit trail, newest first, a page at a time.
#[utoipa::path(get, path = "/rest/v1/audit", tag = "operations", security(("keyPair" = [])),
    params(
        ("since" = Option<String>, Query, pattern = "^([0-9]*\\.?[0-9]+ *(ms|s|m|h|d|w|y))?$", description = "Only events this recent: a duration such as 1h or 7d"),
        ("user" = Option<String>, Query, description = "Only events of this user (the internal user id)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Events per page (default 100)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{0,18}$", description = "The nextCursor of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of events", body = AuditPage),
        KeyEndpointErrors,
    ))]
pub async fn list_audit_events(
    State(state): State<AppState>,
    info: ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditPage>> {
    let params = Query::parse(query.as_deref(), &["since", "user", "limit", "cursor"])?;
    let limit = params.limit("limit", 100, 1000)?;
    let before_id = match params.get("cursor") {
        None => None,
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| Error::invalid("cursor must be the nextCursor of a previous page"))?,
        ),
    };
    let since_ms = match params.get("since") {
        None => None,
        Some(s) => {
            let d = parse_ms(s)
                .filter(|d| d.unit && d.millis >= 0.0 && d.millis.is_finite())
                .ok_or_else(|| {
                    Error::invalid("since must be a duration such as \"1h\" or \"7d\"")
                })?;
            Some(state.clock.now_ms() - d.millis.min(1e15) as i64)
        }
    };
    let caller = basic_caller(&state, &headers, &info, Scope::Manage)?;
    let events = state
        .db
        .list_audit_events(&AuditQuery {
            company_id: &caller.company_id,
            since_ms,
            user_id: params.get("user"),
            before_id,
            limit,
        })
        .await?;
    let next_cursor = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        events,
        next_cursor,
    }))
}
