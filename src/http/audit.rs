//! `GET /rest/v1/audit`: a company reads its own audit trail, newest first, a page at a time.
//! The key pair comes as HTTP Basic credentials (`keyId:keySecret`), never in the URL.

use std::net::SocketAddr;

use axum::Json;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{HeaderMap, header};
use base64::Engine as _;
use serde::Serialize;
use utoipa::ToSchema;

use super::openapi::KeyEndpointErrors;
use crate::app::AppState;
use crate::auth::expires_in::parse_ms;
use crate::auth::{KeySecret, Scope};
use crate::db::{AuditEvent, AuditQuery};
use crate::error::{Error, Result};
use crate::token::{self, Credentials};

/// A page of a company's audit trail, newest first.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub events: Vec<AuditEvent>,
    /// Pass as `cursor` for the next page; null on the last.
    pub next_cursor: Option<String>,
}

#[derive(Default)]
struct Params {
    since: Option<String>,
    user: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// Reads the query string by hand so that every mistake gets the service's error shape: an
/// empty parameter counts as absent, a repeated one is refused, unknown ones are ignored.
fn params(query: Option<&str>) -> Result<Params> {
    let mut p = Params::default();
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let slot = match name.as_ref() {
            "since" => &mut p.since,
            "user" => &mut p.user,
            "limit" => &mut p.limit,
            "cursor" => &mut p.cursor,
            _ => continue,
        };
        if slot.is_some() {
            return Err(Error::invalid(format!("{name} is given more than once")));
        }
        if !value.is_empty() {
            *slot = Some(value.into_owned());
        }
    }
    Ok(p)
}

/// Your company's audit trail, newest first, a page at a time.
#[utoipa::path(get, path = "/rest/v1/audit", tag = "operations", security(("keyPair" = [])),
    params(
        ("since" = Option<String>, Query, pattern = "^[0-9]*\\.?[0-9]+ *(ms|s|m|h|d|w|y)$", description = "Only events this recent: a duration such as 1h or 7d"),
        ("user" = Option<String>, Query, description = "Only events of this user (the internal user id)"),
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "Events per page (default 100)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]*$", description = "The nextCursor of the previous page"),
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
    let (key_id, secret) = basic_credentials(&headers)?;
    let params = params(query.as_deref())?;
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
            let d = parse_ms(s)
                .filter(|d| d.unit && d.millis >= 0.0 && d.millis.is_finite())
                .ok_or_else(|| {
                    Error::invalid("since must be a duration such as \"1h\" or \"7d\"")
                })?;
            Some(state.clock.now_ms() - d.millis.min(1e15) as i64)
        }
    };
    let caller = token::authenticate(
        &state,
        Credentials {
            key_id: &key_id,
            secret: &secret,
            client: Some(info.0.ip()),
        },
        Scope::Manage,
    )?;
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
    let next_cursor = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.id.to_string()))
        .flatten();
    Ok(Json(AuditPage {
        events,
        next_cursor,
    }))
}

/// `Authorization: Basic base64(keyId:keySecret)`.
pub(super) fn basic_credentials(headers: &HeaderMap) -> Result<(String, KeySecret)> {
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
