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
    match Stamp::utc(
        ms.div_euclid(1000),
        ms.rem_euclid(1000) as u32 * 1_000_000,
        3,
    ) {
        Some(stamp) => stamp.as_str().to_owned(),
        // Before 1970 or after 9999: never a time of ours, but written as it always was.
        None => {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            let format = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            t.format(&format).unwrap_or_default()
        }
    }
}

/// `YYYY-MM-DDTHH:MM:SS.fffZ` (or with six digits of fraction) on the stack. Written by hand
/// because it is on every answer's path (`expiresAt`, each message's `createdAt`) and every
/// log line's: the `time` crate interprets its format description at each call, which was
/// 1.4 % of a `/me` request, and tracing-subscriber's own timestamp 1.3 %.
pub struct Stamp {
    text: [u8; 27],
    len: usize,
}

impl Stamp {
    /// The UTC text of `secs` since the epoch and `nanos` (truncated to `digits`, 3 or 6),
    /// for years 1970 to 9999; None outside them.
    pub fn utc(secs: i64, nanos: u32, digits: u32) -> Option<Stamp> {
        if !(0..253_402_300_800).contains(&secs) || nanos >= 1_000_000_000 {
            return None;
        }
        let (year, month, day) = civil_from_days(secs / 86_400);
        let of_day = secs % 86_400;
        let mut text = *b"0000-00-00T00:00:00.000000Z";
        put_digits(&mut text[0..4], year as u32);
        put_digits(&mut text[5..7], month);
        put_digits(&mut text[8..10], day);
        put_digits(&mut text[11..13], (of_day / 3600) as u32);
        put_digits(&mut text[14..16], (of_day / 60 % 60) as u32);
        put_digits(&mut text[17..19], (of_day % 60) as u32);
        let digits = digits.clamp(3, 6) as usize;
        put_digits(
            &mut text[20..20 + digits],
            nanos / 10u32.pow(9 - digits as u32),
        );
        text[20 + digits] = b'Z';
        Some(Stamp {
            text,
            len: 21 + digits,
        })
    }

    /// Now, to the microsecond (the log lines' timestamp); the epoch if the system clock is
    /// set before 1970 or after 9999.
    pub fn now_micros() -> Stamp {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Stamp::utc(now.as_secs() as i64, now.subsec_nanos(), 6)
            .unwrap_or_else(|| Stamp::utc(0, 0, 6).expect("the epoch is in range"))
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.text[..self.len]).expect("ASCII digits and separators")
    }
}

/// `n` as decimal digits filling `out`, zero-padded on the left.
fn put_digits(out: &mut [u8], mut n: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// (year, month, day) of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for the proleptic Gregorian calendar).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The log lines' timestamp: UTC, microseconds, as tracing-subscriber's default writes it.
pub struct LogTime;

impl tracing_subscriber::fmt::time::FormatTime for LogTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        w.write_str(Stamp::now_micros().as_str())
    }
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
    fn edges_of_the_calendar() {
        assert_eq!(rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_ms(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(rfc3339_ms(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        assert_eq!(rfc3339_ms(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        // Outside the fast path, as before.
        assert_eq!(rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        let stamp = Stamp::utc(1_700_000_000, 123_456_789, 6).unwrap();
        assert_eq!(stamp.as_str(), "2023-11-14T22:13:20.123456Z");
    }

    proptest::proptest! {
        #[test]
        fn the_fast_text_is_the_time_crate_s(ms in 0i64..253_402_300_800_000) {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                .unwrap();
            let format = time::macros::format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
            );
            proptest::prop_assert_eq!(rfc3339_ms(ms), t.format(&format).unwrap());
        }
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
