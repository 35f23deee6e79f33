//! `expiresIn`: how long a token lives, in the format Node's jsonwebtoken accepts (it hands
//! strings to the `ms` package, version 2.1.3). Companies port code written against that
//! library, so "1h", "7d", "2 days" or a number of seconds must mean exactly what it meant
//! there. No Rust crate parses `ms`'s grammar exactly (humantime, ms-converter and millis
//! each disagree on some inputs), so the one regex it uses is written out here and tested
//! against a golden table produced by `ms` itself (`tests/fixtures/ms-2.1.3-golden.json`).

use serde_json::Value;

/// A validated token lifetime in whole seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ExpiresIn(u64);

impl ExpiresIn {
    pub const MIN: ExpiresIn = ExpiresIn(60);
    pub const DEFAULT: ExpiresIn = ExpiresIn(24 * 3600);
    pub const DEFAULT_MAX: ExpiresIn = ExpiresIn(30 * 24 * 3600);

    pub fn from_secs(secs: u64) -> Self {
        ExpiresIn(secs)
    }

    pub fn secs(self) -> u64 {
        self.0
    }

    /// The lifetime of a token whose request names none: 24 hours, or `max` if lower.
    pub fn default_within(max: ExpiresIn) -> Self {
        ExpiresIn::DEFAULT.min(max)
    }

    /// Reads the `expiresIn` field of a request: absent or null → None (the caller applies
    /// [`ExpiresIn::default_within`]); a JSON number → seconds; a string → `ms`'s grammar,
    /// which must carry a unit. The result must lie within `MIN..=max`.
    pub fn from_json(value: Option<&Value>, max: ExpiresIn) -> Result<Option<Self>, String> {
        let range = || {
            format!(
                "expiresIn must be between {} and {} (for example \"1h\" or \"7d\")",
                describe(ExpiresIn::MIN.0),
                describe(max.0)
            )
        };
        let secs: f64 = match value {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Number(n)) => n.as_f64().ok_or_else(range)?,
            Some(Value::String(s)) => match parse_ms(s) {
                Some(Duration { millis, unit: true }) => millis / 1000.0,
                Some(Duration { unit: false, .. }) => {
                    return Err(
                        "expiresIn has no unit, and a bare number in a string means \
                                milliseconds, which is almost never meant: add a unit (\"3600s\", \
                                \"90m\", \"1h\", \"7d\") or send a JSON number of seconds"
                            .to_owned(),
                    );
                }
                None => {
                    return Err(format!(
                        "expiresIn is not a duration: use a number with a unit such as \
                         \"90m\", \"1.5h\", \"2 days\" or \"7d\", or a JSON number of seconds; {}",
                        range()
                    ));
                }
            },
            Some(_) => {
                return Err(
                    "expiresIn must be a string such as \"1h\" or a number of seconds".to_owned(),
                );
            }
        };
        // jsonwebtoken computes exp = floor(iat + ms / 1000); with a whole-second iat that is
        // iat + floor(ms / 1000).
        let secs = secs.floor();
        if !secs.is_finite() || secs < ExpiresIn::MIN.0 as f64 || secs > max.0 as f64 {
            return Err(range());
        }
        Ok(Some(ExpiresIn(secs as u64)))
    }

    /// Parses an operator setting such as "30d" (same grammar; a unit is required).
    pub fn parse_setting(s: &str) -> Result<Self, String> {
        parse_duration_setting(s).map(|d| ExpiresIn(d.as_secs()))
    }
}

/// Parses an operator's duration setting ("30d", "90d", "12h"): `ms`'s grammar with a unit
/// required, at least one second.
pub fn parse_duration_setting(s: &str) -> Result<std::time::Duration, String> {
    match parse_ms(s) {
        Some(Duration { millis, unit: true }) if millis >= 1000.0 && millis.is_finite() => {
            Ok(std::time::Duration::from_millis(millis as u64))
        }
        _ => Err(format!(
            "{s:?} is not a duration of at least one second such as \"30d\" or \"720h\""
        )),
    }
}

/// "86400 seconds (24h)" style, for messages.
fn describe(secs: u64) -> String {
    let short = if secs.is_multiple_of(86400) {
        format!("{}d", secs / 86400)
    } else if secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    };
    format!("{secs} seconds ({short})")
}

/// A duration as `ms` reads it.
#[derive(Debug, PartialEq)]
pub struct Duration {
    pub millis: f64,
    /// False when the string had no unit (which `ms` reads as milliseconds).
    pub unit: bool,
}

/// `ms` 2.1.3's `parse`: the regex
/// `^(-?(?:\d+)?\.?\d+) *(milliseconds?|msecs?|ms|seconds?|secs?|s|minutes?|mins?|m|hours?|hrs?|h|days?|d|weeks?|w|years?|yrs?|y)?$`
/// (case-insensitive), on strings of at most 100 characters; a year is 365.25 days.
pub fn parse_ms(s: &str) -> Option<Duration> {
    if s.is_empty() || s.len() > 100 {
        return None;
    }
    let bytes = s.as_bytes();
    let mut i = 0;
    if bytes.first() == Some(&b'-') {
        i += 1;
    }
    let int_start = i;
    while i < bytes.len() && bytes[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if i < bytes.len() && bytes[i] == b'.' {
        let frac_start = i + 1;
        let mut j = frac_start;
        while j < bytes.len() && bytes[j].is_ascii_digit() {
            j += 1;
        }
        if j == frac_start {
            // "1." or "1.h": the regex needs a digit after the dot.
            return None;
        }
        i = j;
    } else if int_digits == 0 {
        return None;
    }
    let number: f64 = s[..i].parse().ok()?;
    while i < bytes.len() && bytes[i] == b' ' {
        i += 1;
    }
    let unit = s[i..].to_ascii_lowercase();
    let factor = match unit.as_str() {
        "" => 1.0,
        "years" | "year" | "yrs" | "yr" | "y" => 31_557_600_000.0,
        "weeks" | "week" | "w" => 604_800_000.0,
        "days" | "day" | "d" => 86_400_000.0,
        "hours" | "hour" | "hrs" | "hr" | "h" => 3_600_000.0,
        "minutes" | "minute" | "mins" | "min" | "m" => 60_000.0,
        "seconds" | "second" | "secs" | "sec" | "s" => 1000.0,
        "milliseconds" | "millisecond" | "msecs" | "msec" | "ms" => 1.0,
        _ => return None,
    };
    Some(Duration {
        millis: number * factor,
        unit: !unit.is_empty(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MAX: ExpiresIn = ExpiresIn::DEFAULT_MAX;

    fn secs(v: Value) -> Result<u64, String> {
        ExpiresIn::from_json(Some(&v), MAX).map(|e| e.expect("a value was given").secs())
    }

    #[test]
    fn parses_exactly_as_ms_2_1_3_does() {
        let golden: Vec<Value> =
            serde_json::from_str(include_str!("../../tests/fixtures/ms-2.1.3-golden.json"))
                .unwrap();
        assert!(golden.len() > 80);
        for case in golden {
            let input = case["input"].as_str().unwrap();
            let expected = case["ms"].as_f64();
            let got = parse_ms(input).map(|d| d.millis);
            assert_eq!(got, expected, "ms({input:?})");
        }
    }

    #[test]
    fn documented_forms_give_their_seconds() {
        assert_eq!(secs(json!("1h")), Ok(3600));
        assert_eq!(secs(json!("7d")), Ok(604_800));
        assert_eq!(secs(json!("24h")), Ok(86_400));
        assert_eq!(secs(json!("90m")), Ok(5400));
        assert_eq!(secs(json!("1.5h")), Ok(5400));
        assert_eq!(secs(json!("2 days")), Ok(172_800));
        assert_eq!(secs(json!(3600)), Ok(3600));
        assert_eq!(secs(json!(90.9)), Ok(90));
        assert_eq!(ExpiresIn::from_json(None, MAX), Ok(None));
        assert_eq!(ExpiresIn::from_json(Some(&Value::Null), MAX), Ok(None));
        assert_eq!(ExpiresIn::default_within(MAX), ExpiresIn::DEFAULT);
    }

    #[test]
    fn a_string_without_a_unit_is_refused_with_advice() {
        let err = secs(json!("3600")).unwrap_err();
        assert!(
            err.contains("no unit") && err.contains("expiresIn"),
            "{err}"
        );
    }

    #[test]
    fn the_range_is_enforced_at_both_ends() {
        assert_eq!(secs(json!("60s")), Ok(60));
        assert_eq!(secs(json!("30d")), Ok(2_592_000));
        for bad in [
            json!("59s"),
            json!("59.999s"),
            json!("31d"),
            json!("1000y"),
            json!("-1h"),
            json!("0h"),
            json!(0),
            json!(-5),
            json!(59),
            json!(9_223_372_036_854_775_808u64),
            json!(1e300),
        ] {
            let err = secs(bad.clone()).unwrap_err();
            assert!(
                err.contains("between 60 seconds (1m) and 2592000 seconds (30d)"),
                "{bad}: {err}"
            );
        }
        let tight = ExpiresIn::from_json(Some(&json!("2h")), ExpiresIn::from_secs(3600));
        assert!(tight.unwrap_err().contains("3600 seconds (1h)"));
    }

    #[test]
    fn other_shapes_are_refused_naming_the_field() {
        for bad in [
            json!("abc"),
            json!("1e3h"),
            json!(" 1h"),
            json!(""),
            json!("NaN"),
        ] {
            assert!(
                secs(bad)
                    .unwrap_err()
                    .starts_with("expiresIn is not a duration")
            );
        }
        for bad in [json!(true), json!([1]), json!({"h": 1})] {
            assert!(secs(bad).unwrap_err().starts_with("expiresIn must be"));
        }
    }

    #[test]
    fn the_default_never_exceeds_a_lower_maximum() {
        let max = ExpiresIn::from_secs(3600);
        assert_eq!(ExpiresIn::default_within(max), max);
    }

    #[test]
    fn settings_need_a_unit() {
        assert_eq!(ExpiresIn::parse_setting("30d"), Ok(ExpiresIn::DEFAULT_MAX));
        assert!(ExpiresIn::parse_setting("3600").is_err());
        assert!(ExpiresIn::parse_setting("-1d").is_err());
    }
}
