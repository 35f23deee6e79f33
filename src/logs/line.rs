//! How a log line looks: tracing-subscriber's own text and JSON layouts, written without
//! `core::fmt` where it can be avoided. The subscriber's formatter writes each field through
//! `fmt` with its styling wrappers (even with colours off), and was 9 % of the instructions of
//! a `/me` request (BENCHMARKS.md "A log line's cost, counted in instructions"); this one
//! writes the same bytes in less than half of them. Spans are not shown: the service makes
//! none. At a terminal, `main` keeps the subscriber's coloured text instead.

use std::fmt::{self, Write as _};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_log::NormalizeEvent as _;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;

use crate::clock::Stamp;

/// `Text`: `2026-12-06T11:58:53.312536Z  INFO performchat::http: request request_id="…"
/// status=200`; `Json`: one object per line with `timestamp`, `level`, the fields (the
/// message as `message`) and `target`, as the subscriber's `json().flatten_event(true)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    Text,
    Json,
}

impl<S, N> FormatEvent<S, N> for LineFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut w: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // An event from the `log` crate carries its real target in fields.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let stamp = Stamp::now_micros();
        let stamp = stamp.as_str();
        match self {
            LineFormat::Text => {
                w.write_str(stamp)?;
                w.write_str(match *meta.level() {
                    Level::TRACE => " TRACE ",
                    Level::DEBUG => " DEBUG ",
                    Level::INFO => "  INFO ",
                    Level::WARN => "  WARN ",
                    Level::ERROR => " ERROR ",
                })?;
                w.write_str(meta.target())?;
                w.write_str(": ")?;
                let mut fields = TextFields {
                    w: &mut w,
                    first: true,
                    result: Ok(()),
                };
                event.record(&mut fields);
                fields.result?;
            }
            LineFormat::Json => {
                w.write_str("{\"timestamp\":\"")?;
                w.write_str(stamp)?;
                w.write_str("\",\"level\":\"")?;
                w.write_str(meta.level().as_str())?;
                w.write_char('"')?;
                let mut fields = JsonFields {
                    w: &mut w,
                    result: Ok(()),
                };
                event.record(&mut fields);
                fields.result?;
                w.write_str(",\"target\":")?;
                json_str(&mut w, meta.target())?;
                w.write_char('}')?;
            }
        }
        w.write_char('\n')
    }
}

/// The name a field is shown under, or None for the `log.*` fields that normalising used.
fn shown(field: &Field) -> Option<&'static str> {
    let name = field.name();
    if name.starts_with("log.") {
        return None;
    }
    Some(name.strip_prefix("r#").unwrap_or(name))
}

/// `message` bare, then ` name=value`, strings quoted and escaped as `{:?}` does.
struct TextFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    first: bool,
    result: fmt::Result,
}

impl TextFields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        let Some(name) = shown(field) else { return };
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            if !std::mem::take(&mut self.first) {
                self.w.write_char(' ')?;
            }
            if name != "message" {
                self.w.write_str(name)?;
                self.w.write_char('=')?;
            }
            value(self.w)
        })();
    }
}

impl Visit for TextFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        let message = field.name() == "message";
        self.field(field, |w| {
            if message {
                w.write_str(value)
            } else if value
                .bytes()
                .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\')
            {
                // What `{:?}` writes for text that needs no escape, without its machinery.
                w.write_char('"')?;
                w.write_str(value)?;
                w.write_char('"')
            } else {
                write!(w, "{value:?}")
            }
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    // The subscriber adds ` name.sources=[…]` for an error with sources; the service logs its
    // errors by their text (`error = %e`), which goes through `record_debug`.
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |w| write!(w, "{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| write!(w, "{value:?}"));
    }
}

/// `,"name":value` for each field: strings and whatever is shown by `{:?}` as JSON strings,
/// numbers and booleans as themselves.
struct JsonFields<'a, 'w> {
    w: &'a mut Writer<'w>,
    result: fmt::Result,
}

impl JsonFields<'_, '_> {
    fn field(&mut self, field: &Field, value: impl FnOnce(&mut Writer<'_>) -> fmt::Result) {
        let Some(name) = shown(field) else { return };
        if self.result.is_err() {
            return;
        }
        self.result = (|| {
            self.w.write_char(',')?;
            json_str(self.w, name)?;
            self.w.write_char(':')?;
            value(self.w)
        })();
    }
}

impl Visit for JsonFields<'_, '_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.field(field, |w| json_str(w, value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.field(field, |w| w.write_str(itoa::Buffer::new().format(value)));
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        // As serde_json writes it (`1.0`, not `1`; NaN and infinities as null).
        self.field(field, |w| {
            w.write_str(&serde_json::to_string(&value).unwrap_or_else(|_| "null".into()))
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.field(field, |w| w.write_str(if value { "true" } else { "false" }));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value}")?;
            w.write_char('"')
        });
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.field(field, |w| {
            w.write_char('"')?;
            write!(Escaped(w), "{value:?}")?;
            w.write_char('"')
        });
    }
}

/// `text` as a JSON string.
fn json_str(w: &mut Writer<'_>, text: &str) -> fmt::Result {
    w.write_char('"')?;
    Escaped(w).write_str(text)?;
    w.write_char('"')
}

/// Writes what it is given escaped for the inside of a JSON string (RFC 8259: the quote, the
/// backslash and the control characters), the runs between escapes in one write. Written
/// here because serde_json's escaper writes to an `io::Write`, and a log line is built in a
/// `fmt::Write`.
struct Escaped<'a, 'w>(&'a mut Writer<'w>);

impl fmt::Write for Escaped<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut start = 0;
        for (i, b) in s.bytes().enumerate() {
            let escape = match b {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..=0x1f => "",
                _ => continue,
            };
            self.0.write_str(&s[start..i])?;
            if escape.is_empty() {
                write!(self.0, "\\u{b:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            start = i + 1;
        }
        self.0.write_str(&s[start..])
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::Sink;
    use super::*;

    impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
        type Writer = Sink;
        fn make_writer(&'a self) -> Sink {
            self.clone()
        }
    }

    impl Sink {
        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(str::to_owned).collect()
        }
    }

    /// The events the service writes, and some it could: every kind of field value, text
    /// that needs escaping in both layouts, an error.
    fn events() {
        let id = "n6C3CI5Qmbr0vb9WLY5b";
        tracing::info!(
            request_id = id,
            method = %"GET",
            route = "/rest/v1/auth/me",
            status = 200u16,
            latency_us = 71u64,
            "request"
        );
        tracing::warn!(
            delta = -3i64,
            ratio = 0.5f64,
            on = true,
            "a \"quoted\"\tline\u{1}"
        );
        let e = std::io::Error::other("disk \"full\"\nretrying");
        tracing::error!(error = %e, cause = ?e.kind(), path = "C:\\x 'y'", "cannot write");
        tracing::debug!(r#type = "raw", "é ü 🦀");
    }

    /// (ours, tracing-subscriber's) lines for [`events`] in one layout.
    fn both(json: bool) -> (Vec<String>, Vec<String>) {
        let ours = Sink::default();
        let theirs = Sink::default();
        let format = if json {
            LineFormat::Json
        } else {
            LineFormat::Text
        };
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .event_format(format)
            .with_writer(ours.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, events);
        let builder = tracing_subscriber::fmt()
            .with_max_level(Level::DEBUG)
            .with_ansi(false)
            .with_writer(theirs.clone());
        if json {
            tracing::subscriber::with_default(builder.json().flatten_event(true).finish(), events);
        } else {
            tracing::subscriber::with_default(builder.finish(), events);
        }
        (ours.lines(), theirs.lines())
    }

    #[test]
    fn text_lines_are_the_subscriber_s_own() {
        let (ours, theirs) = both(false);
        // Five lines: the error's text holds a newline, written as it is by both.
        assert_eq!(ours.len(), 5);
        assert_eq!(ours.len(), theirs.len());
        for (a, b) in ours.iter().zip(&theirs) {
            // The timestamps differ; the rest is byte for byte the same.
            let at = if a.as_bytes().get(26) == Some(&b'Z') {
                27
            } else {
                0
            };
            assert_eq!(a[at..], b[at..], "\nours:   {a}\ntheirs: {b}");
        }
        assert!(ours[0].ends_with(
            r#"  INFO performchat::logs::line::tests: request request_id="n6C3CI5Qmbr0vb9WLY5b" method=GET route="/rest/v1/auth/me" status=200 latency_us=71"#
        ));
    }

    #[test]
    fn json_lines_are_the_subscriber_s_own() {
        let (ours, theirs) = both(true);
        assert_eq!(ours.len(), 4);
        for (a, b) in ours.iter().zip(&theirs) {
            let parsed: serde_json::Value = serde_json::from_str(a).expect("our line is JSON");
            assert_eq!(parsed["timestamp"].as_str().unwrap().len(), 27);
            // `{"timestamp":"` and the timestamp differ; the rest is byte for byte the same.
            assert_eq!(a[41..], b[41..], "\nours:   {a}\ntheirs: {b}");
        }
    }
}
