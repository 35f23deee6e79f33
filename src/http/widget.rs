//! `GET /widget.js`: the chat widget a company's page loads with one script tag. Its source
//! (`widget/widget.js`, plain JavaScript checked by `tsc --checkJs`) is in the binary, so the
//! server needs no files beside it and `cargo build` needs no Node.

use std::sync::LazyLock;

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

pub const WIDGET_JS: &str = include_str!("../../widget/widget.js");

/// A strong validator: the first 128 bits of the script's SHA-256, quoted.
static ETAG: LazyLock<HeaderValue> = LazyLock::new(|| etag_of(WIDGET_JS.as_bytes()));

/// Browsers keep it ten minutes, then ask again with `If-None-Match` (a 304 when unchanged),
/// so a new server version reaches the pages within minutes.
const CACHE: &str = "public, max-age=600";

pub fn etag_of(bytes: &[u8]) -> HeaderValue {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    HeaderValue::from_str(&format!("\"{hex}\"")).expect("hex is a header value")
}

/// True when `If-None-Match` names `etag` (or is `*`).
pub fn not_modified(headers: &HeaderMap, etag: &HeaderValue) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().trim_start_matches("W/"))
        .any(|v| v == "*" || v.as_bytes() == etag.as_bytes())
}

pub async fn widget_js(headers: HeaderMap) -> Response {
    let etag = ETAG.clone();
    let common = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, HeaderValue::from_static(CACHE)),
        // Any site may load it: it holds nothing but code.
        (
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        ),
        (
            header::HeaderName::from_static("cross-origin-resource-policy"),
            HeaderValue::from_static("cross-origin"),
        ),
    ];
    if not_modified(&headers, &etag) {
        return (StatusCode::NOT_MODIFIED, common).into_response();
    }
    (
        common,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/javascript; charset=utf-8"),
        )],
        WIDGET_JS,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_none_match_is_read_as_a_list_of_tags() {
        let etag = etag_of(b"x");
        let mut headers = HeaderMap::new();
        assert!(!not_modified(&headers, &etag));
        let listed = format!("\"other\", W/{}", etag.to_str().unwrap());
        headers.insert(header::IF_NONE_MATCH, listed.parse().unwrap());
        assert!(not_modified(&headers, &etag));
        headers.insert(header::IF_NONE_MATCH, "\"other\"".parse().unwrap());
        assert!(!not_modified(&headers, &etag));
    }
}
