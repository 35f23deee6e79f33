//! OpenAI-compatible streamed chat completions, read as server-sent events: `data: {chunk}`
//! lines separated by blank lines, text in `choices[].delta.content`, a usage chunk (with
//! `stream_options.include_usage`) whose `choices` is empty (OpenAI, llama.cpp) or null
//! (vLLM), and `data: [DONE]` last; comments and other fields ignored, `\r\n` accepted, an
//! `{"error":…}` chunk is the endpoint giving up mid-stream. Written here: the crates that
//! parse server-sent events are unmaintained or bring a client of their own, and this is a
//! line splitter over bytes the HTTP client already reads. Pure: bytes in, pieces out.

use serde::Deserialize;

/// What one event of the stream says.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// More of the reply's text.
    Text(String),
    /// The tokens the request and the reply took.
    Usage { prompt: i64, completion: i64 },
    /// `[DONE]`: the reply is whole.
    Done,
}

/// The stream's events, fed as the bytes come.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    data: Option<String>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    choices: Option<Vec<Choice>>,
    #[serde(default)]
    usage: Option<Usage>,
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct Choice {
    #[serde(default)]
    delta: Option<Delta>,
}

#[derive(Deserialize)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    #[serde(default)]
    prompt_tokens: i64,
    #[serde(default)]
    completion_tokens: i64,
}

/// The longest line kept (a chunk is far shorter): a stream that never ends a line is not
/// an OpenAI-compatible one.
const MAX_LINE: usize = 1 << 20;

impl Parser {
    /// Reads `bytes`; returns the pieces of every event they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Piece>, String> {
        let mut pieces = Vec::new();
        for &b in bytes {
            if b != b'\n' {
                self.line.push(b);
                if self.line.len() > MAX_LINE {
                    return Err("a line of the stream is longer than 1 MiB".to_owned());
                }
                continue;
            }
            let mut line = std::mem::take(&mut self.line);
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            self.line_done(&line, &mut pieces)?;
        }
        Ok(pieces)
    }

    /// The end of the body: an event it cut short still counts.
    pub fn finish(&mut self) -> Result<Vec<Piece>, String> {
        let mut pieces = Vec::new();
        let line = std::mem::take(&mut self.line);
        if !line.is_empty() {
            self.line_done(&line, &mut pieces)?;
        }
        self.line_done(b"", &mut pieces)?;
        Ok(pieces)
    }

    fn line_done(&mut self, line: &[u8], pieces: &mut Vec<Piece>) -> Result<(), String> {
        if line.is_empty() {
            if let Some(data) = self.data.take() {
                event(&data, pieces)?;
            }
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let line = std::str::from_utf8(line).map_err(|_| "the stream is not UTF-8".to_owned())?;
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        if field == "data" {
            let value = value.strip_prefix(' ').unwrap_or(value);
            match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            }
        }
        Ok(())
    }
}

fn event(data: &str, pieces: &mut Vec<Piece>) -> Result<(), String> {
    if data.trim() == "[DONE]" {
        pieces.push(Piece::Done);
        return Ok(());
    }
    let chunk: Chunk = serde_json::from_str(data)
        .map_err(|e| format!("a chunk of the stream is not JSON: {e}"))?;
    if let Some(error) = chunk.error {
        let message = error["message"].as_str().unwrap_or("no message");
        return Err(format!("the endpoint sent an error: {message}"));
    }
    for choice in chunk.choices.unwrap_or_default() {
        if let Some(text) = choice.delta.and_then(|d| d.content)
            && !text.is_empty()
        {
            pieces.push(Piece::Text(text));
        }
    }
    if let Some(usage) = chunk.usage {
        pieces.push(Piece::Usage {
            prompt: usage.prompt_tokens,
            completion: usage.completion_tokens,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> Piece {
        Piece::Text(s.to_owned())
    }

    #[test]
    fn openai_chunks_usage_and_done_read_whatever_the_byte_boundaries() {
        let stream = concat!(
            ": keep-alive\n\n",
            "data: {\"id\":\"c1\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"}}]}\r\n\r\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo é\"},\"finish_reason\":null}]}\n\n",
            "data: {\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
            "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":3,\"total_tokens\":15}}\n\n",
            "data: [DONE]\n\n",
        )
        .as_bytes();
        let want = vec![
            text("Hel"),
            text("lo é"),
            Piece::Usage {
                prompt: 12,
                completion: 3,
            },
            Piece::Done,
        ];
        for size in [1, 2, 3, 7, 64, stream.len()] {
            let mut parser = Parser::default();
            let mut got = Vec::new();
            for piece in stream.chunks(size) {
                got.extend(parser.feed(piece).unwrap());
            }
            got.extend(parser.finish().unwrap());
            assert_eq!(got, want, "fed {size} bytes at a time");
        }
    }

    #[test]
    fn vllm_null_choices_and_a_last_event_without_its_blank_line_count() {
        let mut parser = Parser::default();
        let mut got = parser
            .feed(b"data: {\"choices\":null,\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":2}}\n\ndata: [DONE]")
            .unwrap();
        got.extend(parser.finish().unwrap());
        assert_eq!(
            got,
            [
                Piece::Usage {
                    prompt: 1,
                    completion: 2
                },
                Piece::Done
            ]
        );
    }

    #[test]
    fn bad_chunks_and_errors_mid_stream_are_errors() {
        let mut parser = Parser::default();
        let e = parser.feed(b"data: {not json\n\n").unwrap_err();
        assert!(e.contains("not JSON"), "{e}");
        let mut parser = Parser::default();
        let e = parser
            .feed(b"data: {\"error\":{\"message\":\"overloaded\"}}\n\n")
            .unwrap_err();
        assert!(e.contains("overloaded"), "{e}");
        let mut parser = Parser::default();
        assert!(parser.feed(&vec![b'x'; MAX_LINE + 1]).is_err());
    }
}
