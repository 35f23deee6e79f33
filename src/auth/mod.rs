//! Pure rules: request field validation, API keys, `expiresIn`, token signing and
//! verification. No I/O here; everything is unit-tested beside its code.

pub mod api_key;
pub mod expires_in;
pub mod jwt;
pub mod rules;

pub use api_key::KeySecret;
pub use expires_in::ExpiresIn;
pub use rules::{KeyRules, Scope};

use serde_json::Value;

/// The longest id we accept for a user, an agent or a key.
pub const MAX_ID_CHARS: usize = 256;

/// The company's own id for its end user: a JSON string (1–256 characters, no control
/// characters) or a JSON integer, kept as its decimal text. Express apps pass
/// `req.user.id`, which is often a number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalUserId(String);

impl ExternalUserId {
    pub fn from_json(field: &str, value: Option<&Value>) -> Result<Self, String> {
        match value {
            None | Some(Value::Null) => Err(format!("{field} is required")),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(ExternalUserId(n.to_string())),
            // 42.0 is the integer 42 (JSON Schema agrees, and clients whose numbers are all
            // floats send it so), as long as it is exact.
            Some(Value::Number(n)) if n.as_f64().is_some_and(is_exact_integer) => Ok(
                ExternalUserId(format!("{}", n.as_f64().unwrap_or_default() as i64)),
            ),
            Some(Value::Number(_)) => Err(format!(
                "{field} must be a string or an integer, not a fraction"
            )),
            Some(Value::String(s)) => Ok(ExternalUserId(text_id(field, s)?.to_owned())),
            Some(_) => Err(format!("{field} must be a string or an integer")),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn is_exact_integer(f: f64) -> bool {
    f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0
}

/// A required string field.
pub fn required_str<'a>(field: &str, value: Option<&'a Value>) -> Result<&'a str, String> {
    match value {
        None | Some(Value::Null) => Err(format!("{field} is required")),
        Some(Value::String(s)) if s.is_empty() => Err(format!("{field} is required")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

/// An optional id field: absent or null is None; otherwise it must be a valid id.
pub fn optional_id<'a>(field: &str, value: Option<&'a Value>) -> Result<Option<&'a str>, String> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(text_id(field, s)?)),
        Some(_) => Err(format!("{field} must be a string")),
    }
}

/// 1–256 characters, none of them control characters.
fn text_id<'a>(field: &str, s: &'a str) -> Result<&'a str, String> {
    if s.is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if s.chars().count() > MAX_ID_CHARS {
        return Err(format!("{field} must be at most {MAX_ID_CHARS} characters"));
    }
    if s.chars().any(char::is_control) {
        return Err(format!("{field} must not contain control characters"));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn user(v: Value) -> Result<String, String> {
        ExternalUserId::from_json("userId", Some(&v)).map(|u| u.0)
    }

    #[test]
    fn user_ids_may_be_strings_or_integers() {
        assert_eq!(user(json!("user_123")), Ok("user_123".into()));
        assert_eq!(user(json!(42)), Ok("42".into()));
        assert_eq!(user(json!(-7)), Ok("-7".into()));
        assert_eq!(
            user(json!(18446744073709551615u64)),
            Ok("18446744073709551615".into())
        );
        assert_eq!(user(json!(42.0)), Ok("42".into()));
        assert_eq!(user(json!(-0.0)), Ok("0".into()));
        assert_eq!(user(json!("é".repeat(256))), Ok("é".repeat(256)));
    }

    #[test]
    fn bad_user_ids_are_refused_naming_the_field() {
        for (v, says) in [
            (json!(null), "userId is required"),
            (json!(""), "userId must not be empty"),
            (json!("a".repeat(257)), "at most 256"),
            (json!("a\u{0}b"), "control characters"),
            (json!("a\nb"), "control characters"),
            (json!(1.5), "not a fraction"),
            (json!(true), "userId must be a string or an integer"),
            (json!({"id": 1}), "userId must be a string or an integer"),
        ] {
            let err = user(v).unwrap_err();
            assert!(err.contains(says), "{err}");
        }
        assert_eq!(
            ExternalUserId::from_json("userId", None).unwrap_err(),
            "userId is required"
        );
    }

    #[test]
    fn optional_ids_treat_null_as_absent() {
        assert_eq!(optional_id("agentId", None), Ok(None));
        assert_eq!(optional_id("agentId", Some(&Value::Null)), Ok(None));
        assert_eq!(
            optional_id("agentId", Some(&json!("agent_abc"))),
            Ok(Some("agent_abc"))
        );
        assert!(optional_id("agentId", Some(&json!(5))).is_err());
    }

    #[test]
    fn required_strings_name_the_missing_field() {
        assert_eq!(
            required_str("keyId", None).unwrap_err(),
            "keyId is required"
        );
        assert_eq!(
            required_str("keyId", Some(&json!(""))).unwrap_err(),
            "keyId is required"
        );
        assert_eq!(
            required_str("keyId", Some(&json!(1))).unwrap_err(),
            "keyId must be a string"
        );
    }
}
