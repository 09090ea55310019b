//! Bodies that pass through untouched while being measured: the request
//! body's size, and the response body's size and token usage, read from SSE
//! `data:` lines or a plain JSON body as the chunks go by.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use serde_json::Value;

/// The most of a body or an SSE line kept for reading usage.
const SCAN_LIMIT: usize = 4 << 20;

/// Reads token usage and the model out of a response as it streams.
#[derive(Default, Debug)]
pub(crate) struct Scanner {
    sse: bool,
    pending: Vec<u8>,
    overflow: bool,
    /// Input tokens, when the upstream said.
    pub tokens_in: Option<u64>,
    /// Output tokens, when the upstream said.
    pub tokens_out: Option<u64>,
    /// The model the upstream named.
    pub model: Option<String>,
}

impl Scanner {
    /// A scanner for a body of this content type.
    pub(crate) fn new(content_type: &str) -> Scanner {
        Scanner {
            sse: content_type.starts_with("text/event-stream"),
            ..Scanner::default()
        }
    }

    /// Takes the next chunk of the body.
    pub(crate) fn feed(&mut self, mut chunk: &[u8]) {
        if !self.sse {
            if self.pending.len() + chunk.len() > SCAN_LIMIT {
                self.overflow = true;
                self.pending = Vec::new();
            } else if !self.overflow {
                self.pending.extend_from_slice(chunk);
            }
            return;
        }
        while let Some(newline) = chunk.iter().position(|&b| b == b'\n') {
            if !self.overflow {
                self.pending.extend_from_slice(&chunk[..newline]);
                let line = std::mem::take(&mut self.pending);
                self.line(&line);
            }
            self.overflow = false;
            self.pending.clear();
            chunk = &chunk[newline + 1..];
        }
        if self.pending.len() + chunk.len() > SCAN_LIMIT {
            self.overflow = true;
            self.pending = Vec::new();
        } else if !self.overflow {
            self.pending.extend_from_slice(chunk);
        }
    }

    /// The body ended: read what is left.
    pub(crate) fn finish(&mut self) {
        let rest = std::mem::take(&mut self.pending);
        if self.overflow {
            return;
        }
        if self.sse {
            self.line(&rest);
        } else if let Ok(value) = serde_json::from_slice::<Value>(&rest) {
            self.absorb(&value);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            return;
        };
        let data = data.trim_ascii_start();
        if data.first() == Some(&b'{') {
            if let Ok(value) = serde_json::from_slice::<Value>(data) {
                self.absorb(&value);
            }
        }
    }

    /// Takes usage from an Anthropic or OpenAI body or event.
    fn absorb(&mut self, value: &Value) {
        for usage in [
            value.get("usage"),
            value.pointer("/message/usage"),
            value.pointer("/response/usage"),
        ]
        .into_iter()
        .flatten()
        {
            let n = |k: &str| usage.get(k).and_then(Value::as_u64);
            if let Some(input) = n("input_tokens").or_else(|| n("prompt_tokens")) {
                // Anthropic counts cache reads and writes apart from input_tokens.
                let cached = n("cache_creation_input_tokens").unwrap_or(0)
                    + n("cache_read_input_tokens").unwrap_or(0);
                self.tokens_in = Some(input + cached);
            }
            if let Some(output) = n("output_tokens").or_else(|| n("completion_tokens")) {
                self.tokens_out = Some(output);
            }
        }
        if self.model.is_none() {
            self.model = [
                value.get("model"),
                value.pointer("/message/model"),
                value.pointer("/response/model"),
            ]
            .into_iter()
            .flatten()
            .find_map(Value::as_str)
            .map(str::to_owned);
        }
    }
}

/// What a metered response reports once it ends or is dropped.
pub(crate) trait OnDone: Send + 'static {
    /// Called exactly once with the scan and the bytes passed.
    fn done(self: Box<Self>, scanner: Scanner, bytes: u64);
}

/// A response body passed through chunk by chunk while being measured.
pub(crate) struct Metered<B> {
    inner: B,
    scanner: Option<Scanner>,
    bytes: u64,
    on_done: Option<Box<dyn OnDone>>,
}

impl<B> Metered<B> {
    /// Wraps `inner`; `on_done` runs when the body ends or is dropped.
    pub(crate) fn new(inner: B, scanner: Scanner, on_done: Box<dyn OnDone>) -> Metered<B> {
        Metered {
            inner,
            scanner: Some(scanner),
            bytes: 0,
            on_done: Some(on_done),
        }
    }

    fn finish(&mut self) {
        if let (Some(mut scanner), Some(on_done)) = (self.scanner.take(), self.on_done.take()) {
            scanner.finish();
            on_done.done(scanner, self.bytes);
        }
    }
}

impl<B> Drop for Metered<B> {
    fn drop(&mut self) {
        self.finish();
    }
}

impl<B> Body for Metered<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.bytes += data.len() as u64;
                    if let Some(scanner) = &mut this.scanner {
                        scanner.feed(data);
                    }
                }
            }
            Poll::Ready(None) => this.finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body passed through while its bytes are counted.
pub(crate) struct Counted<B> {
    inner: B,
    bytes: Arc<AtomicU64>,
}

impl<B> Counted<B> {
    /// Wraps `inner`, adding each chunk's length to `bytes`.
    pub(crate) fn new(inner: B, bytes: Arc<AtomicU64>) -> Counted<B> {
        Counted { inner, bytes }
    }
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anthropic_stream_split_anywhere() {
        let stream = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"model\":\"claude-x\",\"usage\":{\"input_tokens\":25,\"output_tokens\":1}}}\r\n\r\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":15}}\n\n\
event: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":40}}\n\n";
        for split in 0..stream.len() {
            let mut s = Scanner::new("text/event-stream; charset=utf-8");
            s.feed(&stream.as_bytes()[..split]);
            s.feed(&stream.as_bytes()[split..]);
            s.finish();
            assert_eq!(
                (s.tokens_in, s.tokens_out),
                (Some(25), Some(40)),
                "split at {split}"
            );
            assert_eq!(s.model.as_deref(), Some("claude-x"));
        }
    }

    #[test]
    fn openai_bodies() {
        let mut s = Scanner::new("application/json");
        s.feed(br#"{"model":"gpt-x","usage":{"prompt_tokens":3,"#);
        s.feed(br#""completion_tokens":4}}"#);
        s.finish();
        assert_eq!((s.tokens_in, s.tokens_out), (Some(3), Some(4)));
        let mut s = Scanner::new("text/event-stream");
        s.feed(b"data: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":2}}}\n\ndata: [DONE]\n\n");
        s.finish();
        assert_eq!((s.tokens_in, s.tokens_out), (Some(9), Some(2)));
    }

    #[test]
    fn garbage_is_ignored() {
        let mut s = Scanner::new("text/event-stream");
        s.feed(b"data: {not json\n\ndata:\n\xff\xfe\n");
        s.finish();
        assert_eq!((s.tokens_in, s.tokens_out), (None, None));
    }
}
