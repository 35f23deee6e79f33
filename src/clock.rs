//! The one source of "now". Production reads the system clock; tests shift it forward to
//! cross an expiry without sleeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Clone, Debug, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn now_ms(&self) -> i64 {
        let system = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        system + self.offset_ms.load(Ordering::Relaxed)
    }

    pub fn now_s(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Moves this clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as i64, Ordering::Relaxed);
    }
}

/// RFC 3339 text (UTC, millisecond precision) for a unix-milliseconds time.
pub fn rfc3339_ms(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    t.format(&format).unwrap_or_default()
}

/// RFC 3339 text (as [`rfc3339_ms`]) for a unix-seconds time.
pub fn rfc3339_s(s: i64) -> String {
    rfc3339_ms(s.saturating_mul(1000))
}

/// Serializes a unix-milliseconds time as [`rfc3339_ms`] text, the one time format of the
/// API's answers and of the CLI's `--json` output: `#[serde(serialize_with = ...)]`.
pub fn serialize_ms<S: serde::Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339_ms(*ms))
}

/// [`serialize_ms`] for an optional time (None stays null).
pub fn serialize_opt_ms<S: serde::Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match ms {
        Some(ms) => s.serialize_some(&rfc3339_ms(*ms)),
        None => s.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_render_as_rfc3339_utc() {
        assert_eq!(rfc3339_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
        assert_eq!(rfc3339_s(1_700_000_000), "2023-11-14T22:13:20.000Z");
    }

    #[test]
    fn times_serialize_as_rfc3339_text() {
        #[derive(serde::Serialize)]
        struct Times {
            #[serde(serialize_with = "serialize_ms")]
            at: i64,
            #[serde(serialize_with = "serialize_opt_ms")]
            until: Option<i64>,
            #[serde(serialize_with = "serialize_opt_ms")]
            never: Option<i64>,
        }
        let json = serde_json::to_value(Times {
            at: 1_700_000_000_123,
            until: Some(0),
            never: None,
        })
        .unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "at": "2023-11-14T22:13:20.123Z",
                "until": "1970-01-01T00:00:00.000Z",
                "never": null,
            })
        );
    }

    #[test]
    fn advancing_a_clone_moves_the_original() {
        let clock = Clock::default();
        let before = clock.now_ms();
        clock.clone().advance(Duration::from_secs(3600));
        assert!(clock.now_ms() - before >= 3_600_000);
    }
}
