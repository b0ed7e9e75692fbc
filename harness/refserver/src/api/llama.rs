//! The HTTP calls to a leased llama-server runner (`/apply-template`, `/tokenize`, the streamed
//! `/completion`) and the events of its SSE stream.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::StatusCode;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::{Value, json};

use super::error::ApiError;
use crate::sched::Lease;

/// Why a call to the runner failed: its exit and last error lines when it died, else `fallback`.
async fn failure(lease: &Lease, fallback: String) -> String {
    lease.loaded.runner.failure_reason(fallback).await
}

/// Error text from a llama-server error body (`{"error":{"message":…}}`), else the raw body.
fn runner_error_text(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("error"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_else(|| body.trim().to_string())
}

/// The runner's error reply as ours: its status and its message.
fn status_error(status: reqwest::StatusCode, body: &str) -> ApiError {
    ApiError::new(
        StatusCode::from_u16(status.as_u16()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        runner_error_text(body),
    )
}

/// POST `body` to the runner's `path`; a failed send is the runner's failure reason.
async fn send(
    http: &reqwest::Client,
    lease: &Lease,
    path: &str,
    body: &Value,
    timeout: Option<Duration>,
) -> Result<reqwest::Response, ApiError> {
    let mut req = http.post(format!("{}{path}", lease.loaded.runner.base_url));
    if let Some(t) = timeout {
        req = req.timeout(t);
    }
    match req.json(body).send().await {
        Ok(r) => Ok(r),
        Err(e) => Err(ApiError::internal(
            failure(lease, format!("{path}: {e}")).await,
        )),
    }
}

/// POST `body` to the runner's `path` and return its JSON reply (5 minutes at the most).
pub(super) async fn post_json(
    http: &reqwest::Client,
    lease: &Lease,
    path: &str,
    body: &Value,
) -> Result<Value, ApiError> {
    let resp = send(http, lease, path, body, Some(Duration::from_secs(300))).await?;
    let status = resp.status();
    let text = resp
        .text()
        .await
        .map_err(|e| ApiError::internal(format!("{path}: {e}")))?;
    if !status.is_success() {
        return Err(status_error(status, &text));
    }
    serde_json::from_str(&text).map_err(|e| ApiError::internal(format!("{path}: bad JSON: {e}")))
}

/// The tokens of `text`, with the BOS and other special tokens when `add_special`.
pub(super) async fn tokenize(
    http: &reqwest::Client,
    lease: &Lease,
    text: &str,
    add_special: bool,
) -> Result<Vec<i64>, ApiError> {
    let v = post_json(
        http,
        lease,
        "/tokenize",
        &json!({"content": text, "add_special": add_special, "parse_special": true}),
    )
    .await?;
    v.get("tokens")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .ok_or_else(|| ApiError::internal("/tokenize: no tokens in reply"))
}

/// Start the streamed `/completion` for `body` (no timeout: a generation takes what it takes).
pub(super) async fn completion(
    http: &reqwest::Client,
    lease: Lease,
    body: &Value,
) -> Result<Completion, ApiError> {
    let resp = send(http, &lease, "/completion", body, None).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        return Err(status_error(status, &text));
    }
    Ok(Completion {
        events: EventStream {
            body: resp.bytes_stream().boxed(),
            parser: SseParser::default(),
            pending: VecDeque::new(),
        },
        lease,
    })
}

/// Splits llama-server's SSE byte stream into the JSON objects of its `data:` lines.
#[derive(Default)]
pub(super) struct SseParser {
    buf: Vec<u8>,
}

impl SseParser {
    pub(super) fn push(&mut self, chunk: &[u8]) -> Vec<Result<Value, String>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=pos).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            if let Some(data) = line.strip_prefix("data:") {
                let data = data.trim_start();
                if data == "[DONE]" {
                    continue;
                }
                out.push(
                    serde_json::from_str(data).map_err(|e| format!("bad event from runner: {e}")),
                );
            }
        }
        out
    }
}

/// One decoded runner event.
pub(super) enum Event {
    Piece(String),
    Final { content: String, data: Value },
    Error(String),
}

pub(super) fn classify(v: Value) -> Event {
    if let Some(e) = v.get("error") {
        let msg = e
            .get("message")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| e.to_string());
        return Event::Error(msg);
    }
    let content = v
        .get("content")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if v.get("stop").and_then(Value::as_bool) == Some(true) {
        Event::Final { content, data: v }
    } else {
        Event::Piece(content)
    }
}

/// Streams runner events out of the SSE response.
struct EventStream {
    body: BoxStream<'static, reqwest::Result<Bytes>>,
    parser: SseParser,
    pending: VecDeque<Result<Value, String>>,
}

impl EventStream {
    /// `None` at the end of the stream.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(match item {
                    Ok(v) => classify(v),
                    Err(e) => Event::Error(e),
                });
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.pending.extend(self.parser.push(&chunk)),
                Some(Err(e)) => return Some(Event::Error(format!("reading from runner: {e}"))),
                None => return None,
            }
        }
    }
}

/// A completion under way: the runner's events and the lease that holds the runner for them.
/// Fields drop in order, so the connection to the runner closes before the runner is released.
pub(super) struct Completion {
    events: EventStream,
    lease: Lease,
}

impl Completion {
    /// The next event that carries text or ends the completion. A runner error, or a stream that
    /// ends without a final event (`closed` says when), is an [`Event::Error`] holding the
    /// runner's failure reason.
    pub(super) async fn next(&mut self, closed: &str) -> Event {
        let event = loop {
            match self.events.next().await {
                Some(Event::Piece(p)) if p.is_empty() => continue,
                Some(e) => break e,
                None => break Event::Error(closed.to_string()),
            }
        };
        match event {
            Event::Error(e) => Event::Error(failure(&self.lease, e).await),
            e => e,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parsing() {
        let mut p = SseParser::default();
        let a = p.push(b"data: {\"content\":\"He\",\"stop\":false}\n\ndata: {\"con");
        assert_eq!(a.len(), 1);
        let b = p.push(b"tent\":\"llo\",\"stop\":false}\n\n");
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].as_ref().unwrap()["content"], "llo");
        let c = p.push(b"data: {\"error\":{\"code\":500,\"message\":\"boom\"}}\n\n");
        match classify(c.into_iter().next().unwrap().unwrap()) {
            Event::Error(m) => assert_eq!(m, "boom"),
            _ => panic!("expected an error"),
        }
        assert!(p.push(b"data: [DONE]\n\n: comment\n").is_empty());
    }

    #[test]
    fn runner_error_texts() {
        assert_eq!(
            runner_error_text("{\"error\":{\"code\":400,\"message\":\"too long\"}}"),
            "too long"
        );
        assert_eq!(runner_error_text("{\"error\":\"gone\"}"), "gone");
        assert_eq!(runner_error_text(" plain text\n"), "plain text");
        let e = status_error(reqwest::StatusCode::BAD_REQUEST, "{\"error\":\"x\"}");
        assert_eq!(
            (e.status, e.message.as_str()),
            (StatusCode::BAD_REQUEST, "x")
        );
    }
}
