//! The JSON body extractor of the key endpoints. It replaces axum's `Json` so that every
//! bad body gets the service's error shape and a message that never quotes the input:
//! 415 unless the Content-Type is JSON (which also means no HTML form or `text/plain`
//! "simple request" from a browser page reaches a key endpoint), 413 over the body limit,
//! 400 for bytes that are not one JSON object with distinct keys. The object is then read
//! into the endpoint's request type, whose fields take any JSON value (`Option<Value>`):
//! reading them cannot fail, and the handler's checks name each field that is wrong.

use std::fmt;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::{Deserialize, DeserializeOwned, Deserializer, MapAccess, Visitor};
use serde_json::{Map, Value};

use crate::error::Error;

/// The body limit of every endpoint: documented requests are a few hundred bytes.
pub const BODY_LIMIT: usize = 16 * 1024;

/// A request body that is one JSON object, read into `T`.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = Error;

    async fn from_request(req: Request, state: &S) -> Result<Self, Error> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(Error::UnsupportedMediaType);
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Error::PayloadTooLarge(BODY_LIMIT)
            } else {
                Error::InvalidJson("the request body could not be read".to_owned())
            }
        })?;
        read_object(&bytes).map(JsonBody)
    }
}

/// One JSON object (see [`parse_object`]) read into `T`. With lenient fields this cannot
/// fail; should a type be strict, its error is replaced by one that quotes nothing.
fn read_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    let object = Value::Object(parse_object(bytes)?);
    T::deserialize(object)
        .map_err(|_| Error::InvalidJson("request body has a field of the wrong type".to_owned()))
}

/// `application/json` or any `application/*+json`, with parameters such as charset.
fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Parses one JSON object, refusing duplicate top-level keys: two parsers reading
/// `{"userId":"a","userId":"b"}` differently is how request smuggling starts.
pub fn parse_object(bytes: &[u8]) -> Result<Map<String, Value>, Error> {
    match serde_json::from_slice::<TopLevel>(bytes) {
        Ok(TopLevel(map)) => Ok(map),
        Err(e) => Err(Error::InvalidJson(describe(&e))),
    }
}

fn describe(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Eof => "it ends too early",
        Category::Syntax => "it has a syntax error",
        Category::Io => "it could not be read",
        // Our own visitor's errors: their texts are ours and carry no input.
        Category::Data => return format!("request body {e}"),
    };
    format!(
        "request body is not valid JSON: {what} at line {} column {}",
        e.line(),
        e.column()
    )
}

struct TopLevel(Map<String, Value>);

impl<'de> Deserialize<'de> for TopLevel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = TopLevel;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<TopLevel, A::Error> {
                let mut map = Map::new();
                while let Some(key) = access.next_key::<String>()? {
                    let value: Value = access.next_value()?;
                    if map.contains_key(&key) {
                        return Err(serde::de::Error::custom("must not repeat a key"));
                    }
                    map.insert(key, value);
                }
                Ok(TopLevel(map))
            }
        }
        d.deserialize_any(ObjectVisitor).map_err(|e: D::Error| {
            // serde's own "invalid type: …" message can quote the input (a string body);
            // replace it with ours.
            let text = e.to_string();
            if text.starts_with("invalid type") {
                serde::de::Error::custom("must be a JSON object")
            } else {
                e
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(body: &str) -> String {
        match parse_object(body.as_bytes()) {
            Err(Error::InvalidJson(m)) => m,
            other => panic!("{body}: {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn objects_parse() {
        let map = parse_object(br#"{"keyId":"pk_1","n":[1,{"a":null}]}"#).unwrap();
        assert_eq!(map["keyId"], "pk_1");
    }

    #[test]
    fn bad_bodies_get_messages_without_their_content() {
        assert!(err(r#"{"keyId":"#).contains("ends too early"));
        assert!(err(r#"{"keyId" "sk_secret"}"#).contains("syntax error at line 1"));
        assert_eq!(err(r#""sk_secret""#), "request body must be a JSON object");
        assert!(err("[1,2]").contains("must be a JSON object"));
        assert!(err(r#"{"a":1,"a":2}"#).contains("must not repeat a key"));
        assert!(!err(r#"{"keySecret":"sk_secret" x}"#).contains("sk_secret"));
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert!(err(&format!(r#"{{"a":{deep}}}"#)).starts_with("request body"));
    }

    #[derive(serde::Deserialize, Debug)]
    #[serde(rename_all = "camelCase")]
    struct Lenient {
        key_id: Option<Value>,
        user_id: Option<Value>,
    }

    #[test]
    fn request_types_read_any_value_and_leave_the_checks_to_the_handler() {
        let body: Lenient = read_object(br#"{"keyId":[1],"other":true}"#).unwrap();
        assert_eq!(body.key_id, Some(serde_json::json!([1])));
        assert_eq!(body.user_id, None);
        let body: Lenient = read_object(br#"{"keyId":null,"userId":{"a":1}}"#).unwrap();
        assert_eq!(
            body.key_id, None,
            "null reads as absent, as every check treats it"
        );
        assert!(body.user_id.is_some());
        // The object checks still come first.
        assert!(matches!(
            read_object::<Lenient>(br#"{"keyId":1,"keyId":2}"#),
            Err(Error::InvalidJson(m)) if m.contains("must not repeat a key")
        ));
        assert!(matches!(
            read_object::<Lenient>(b"[]"),
            Err(Error::InvalidJson(m)) if m.contains("must be a JSON object")
        ));
    }

    #[test]
    fn json_content_types_are_recognised() {
        let v = |s: &'static str| Some(header::HeaderValue::from_static(s));
        assert!(is_json(v("application/json").as_ref()));
        assert!(is_json(v("application/json; charset=utf-8").as_ref()));
        assert!(is_json(v("Application/JSON").as_ref()));
        assert!(is_json(v("application/vnd.api+json").as_ref()));
        assert!(!is_json(v("text/plain").as_ref()));
        assert!(!is_json(v("application/x-www-form-urlencoded").as_ref()));
        assert!(!is_json(None));
    }
}
