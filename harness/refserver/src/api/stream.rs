//! The NDJSON lines of generate and chat replies: streamed as the runner's events arrive, or
//! gathered into one JSON object (`stream: false`).

use std::convert::Infallible;
use std::time::{Duration, Instant, SystemTime};

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::error::ApiError;
use super::llama::{Completion, Event};
use super::with_model;
use crate::log;
use crate::util::rfc3339;

/// Which endpoint a line answers: generate lines carry `response`, chat lines `message`.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Generate,
    Chat,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: &'a str,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// The figures of a done line, in nanoseconds and tokens; zeros are left out.
#[derive(Serialize, Default, Clone, Copy)]
pub(super) struct Metrics {
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) total_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) load_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) prompt_eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) prompt_eval_duration: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) eval_count: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub(super) eval_duration: u64,
}

/// `load_duration` as a done line reports it: at least 1 ns, so it is never left out.
pub(super) fn load_nanos(load: Duration) -> u64 {
    (load.as_nanos() as u64).max(1)
}

#[derive(Serialize)]
pub(super) struct OutLine<'a> {
    model: &'a str,
    created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    response: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<OutMessage<'a>>,
    done: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    done_reason: Option<&'a str>,
    #[serde(flatten)]
    metrics: Metrics,
}

pub(super) fn out_line<'a>(
    kind: Kind,
    model: &'a str,
    text: &'a str,
    done: bool,
    done_reason: Option<&'a str>,
    metrics: Metrics,
) -> OutLine<'a> {
    OutLine {
        model,
        created_at: rfc3339(SystemTime::now()),
        response: (kind == Kind::Generate).then_some(text),
        message: (kind == Kind::Chat).then_some(OutMessage {
            role: "assistant",
            content: text,
        }),
        done,
        done_reason,
        metrics,
    }
}

/// A `200` JSON reply tagged with `model` for the request log line.
pub(super) fn json_response(v: &impl Serialize, model: &str) -> Response {
    with_model(axum::Json(v).into_response(), model)
}

fn ndjson(v: &impl Serialize) -> Bytes {
    let mut b = serde_json::to_vec(v).unwrap_or_default();
    b.push(b'\n');
    Bytes::from(b)
}

fn ndjson_response(body: BoxStream<'static, Result<Bytes, Infallible>>, model: &str) -> Response {
    let mut r = Response::new(Body::from_stream(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    with_model(r, model)
}

fn mid_stream_error(why: &str) -> Bytes {
    ndjson(&json!({
        "error": format!("an error was encountered while running the model: {why}")
    }))
}

/// The done line's figures from the runner's final event, and its `done_reason`.
fn final_metrics(data: &Value, t0: Instant, load: Duration) -> (Metrics, &'static str) {
    let t = data.get("timings").cloned().unwrap_or(Value::Null);
    let n = |k: &str| t.get(k).and_then(Value::as_f64).unwrap_or(0.0).max(0.0);
    let ms_to_ns = |ms: f64| (ms * 1e6).round() as u64;
    let reason = if data.get("stop_type").and_then(Value::as_str) == Some("limit") {
        "length"
    } else {
        "stop"
    };
    (
        Metrics {
            total_duration: t0.elapsed().as_nanos() as u64,
            load_duration: load_nanos(load),
            prompt_eval_count: (n("cache_n") + n("prompt_n")) as u64,
            prompt_eval_duration: ms_to_ns(n("prompt_ms")),
            eval_count: n("predicted_n") as u64,
            eval_duration: ms_to_ns(n("predicted_ms")),
        },
        reason,
    )
}

/// What every line of one reply shares: its shape, the model name as the client sent it (echoed
/// back, as Ollama does), and the instants `total_duration` and `load_duration` are taken from.
pub(super) struct Reply {
    pub(super) kind: Kind,
    pub(super) model: String,
    /// When the request arrived.
    pub(super) t0: Instant,
    /// From `t0` until the runner was handed over.
    pub(super) load_duration: Duration,
}

/// The lines that answer the runner's final event.
struct Ending {
    /// The final event's text as a line of its own, when it has any.
    piece: Option<Bytes>,
    done: Bytes,
    metrics: Metrics,
    reason: &'static str,
}

impl Reply {
    /// A line with generated text, not done.
    fn piece(&self, text: &str) -> Bytes {
        ndjson(&out_line(
            self.kind,
            &self.model,
            text,
            false,
            None,
            Metrics::default(),
        ))
    }

    fn ending(&self, content: &str, data: &Value) -> Ending {
        let (metrics, reason) = final_metrics(data, self.t0, self.load_duration);
        Ending {
            piece: (!content.is_empty()).then(|| self.piece(content)),
            done: ndjson(&out_line(
                self.kind,
                &self.model,
                "",
                true,
                Some(reason),
                metrics,
            )),
            metrics,
            reason,
        }
    }
}

/// `stream: false`: the whole text and the final figures in one JSON object.
pub(super) async fn gathered(reply: Reply, mut run: Completion) -> Result<Response, ApiError> {
    let mut text = String::new();
    loop {
        match run
            .next("runner closed the stream without a final result")
            .await
        {
            Event::Piece(p) => text.push_str(&p),
            Event::Final { content, data } => {
                text.push_str(&content);
                let (metrics, reason) = final_metrics(&data, reply.t0, reply.load_duration);
                let line = out_line(reply.kind, &reply.model, &text, true, Some(reason), metrics);
                drop(run);
                return Ok(json_response(&line, &reply.model));
            }
            Event::Error(why) => return Err(ApiError::internal(why)),
        }
    }
}

/// How a streamed reply opens.
enum Opening {
    /// The first line; the rest follows from the runner.
    First(Bytes),
    /// The runner was done before any text: the whole reply.
    Whole(Bytes),
}

/// Streaming: nothing is sent (not even headers) until the first object exists, so a runner
/// that fails before it is still an HTTP error.
async fn opening(reply: &Reply, run: &mut Completion) -> Result<Opening, ApiError> {
    match run
        .next("runner closed the stream before the first token")
        .await
    {
        Event::Piece(p) => Ok(Opening::First(reply.piece(&p))),
        Event::Final { content, data } => {
            let end = reply.ending(&content, &data);
            let mut b = end.piece.map(Vec::from).unwrap_or_default();
            b.extend_from_slice(&end.done);
            Ok(Opening::Whole(Bytes::from(b)))
        }
        Event::Error(why) => Err(ApiError::internal(why)),
    }
}

/// The streamed NDJSON reply; after its first line the rest is forwarded by a task of its own.
pub(super) async fn streamed(reply: Reply, mut run: Completion) -> Result<Response, ApiError> {
    let first = match opening(&reply, &mut run).await? {
        Opening::First(line) => line,
        Opening::Whole(body) => {
            drop(run);
            let body = futures_util::stream::once(async move { Ok::<_, Infallible>(body) });
            return Ok(ndjson_response(body.boxed(), &reply.model));
        }
    };
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let _ = tx.send(first).await;
    let model = reply.model.clone();
    tokio::spawn(forward(reply, run, tx));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    })
    .boxed();
    Ok(ndjson_response(body, &model))
}

/// Sends the runner's events on as lines until the done line, an error line, or the client
/// going away (which stops the generation: the runner's connection closes).
async fn forward(reply: Reply, mut run: Completion, tx: mpsc::Sender<Bytes>) {
    let model = &reply.model;
    loop {
        let out = match run.next("runner closed the stream unexpectedly").await {
            Event::Piece(p) => reply.piece(&p),
            Event::Final { content, data } => {
                let end = reply.ending(&content, &data);
                if let Some(piece) = end.piece
                    && tx.send(piece).await.is_err()
                {
                    break;
                }
                let _ = tx.send(end.done).await;
                log!(
                    "INFO",
                    "stream done model={model} done_reason={} prompt_eval_count={} eval_count={} total={:.1}ms",
                    end.reason,
                    end.metrics.prompt_eval_count,
                    end.metrics.eval_count,
                    end.metrics.total_duration as f64 / 1e6
                );
                break;
            }
            Event::Error(why) => {
                log!("ERROR", "stream failed model={model}: {why}");
                let _ = tx.send(mid_stream_error(&why)).await;
                break;
            }
        };
        if tx.send(out).await.is_err() {
            log!(
                "INFO",
                "client went away model={model}; stopping generation"
            );
            break;
        }
    }
    drop(run);
}

#[cfg(test)]
mod tests {
    use super::super::llama::{SseParser, classify};
    use super::*;

    #[test]
    fn final_event_figures() {
        let mut p = SseParser::default();
        let d = p.push(
            b"data: {\"content\":\"\",\"stop\":true,\"stop_type\":\"limit\",\"timings\":{\"cache_n\":3,\"prompt_n\":7,\"prompt_ms\":1.5,\"predicted_n\":16,\"predicted_ms\":100.25}}\n\n",
        );
        match classify(d.into_iter().next().unwrap().unwrap()) {
            Event::Final { data, .. } => {
                let (m, reason) = final_metrics(&data, Instant::now(), Duration::from_micros(5));
                assert_eq!(reason, "length");
                assert_eq!(m.prompt_eval_count, 10);
                assert_eq!(m.prompt_eval_duration, 1_500_000);
                assert_eq!(m.eval_count, 16);
                assert_eq!(m.eval_duration, 100_250_000);
                assert_eq!(m.load_duration, 5_000);
                let (_, reason) =
                    final_metrics(&json!({"stop": true}), Instant::now(), Duration::ZERO);
                assert_eq!(reason, "stop");
            }
            _ => panic!("expected the final event"),
        }
    }

    #[test]
    fn line_shapes() {
        let g = serde_json::to_string(&out_line(
            Kind::Generate,
            "m",
            "hi",
            false,
            None,
            Metrics::default(),
        ))
        .unwrap();
        assert!(g.starts_with("{\"model\":\"m\",\"created_at\":\""), "{g}");
        assert!(g.ends_with("\"response\":\"hi\",\"done\":false}"), "{g}");
        let c = serde_json::to_string(&out_line(
            Kind::Chat,
            "m",
            "",
            true,
            Some("stop"),
            Metrics {
                eval_count: 3,
                ..Metrics::default()
            },
        ))
        .unwrap();
        assert!(
            c.ends_with(
                "\"message\":{\"role\":\"assistant\",\"content\":\"\"},\"done\":true,\"done_reason\":\"stop\",\"eval_count\":3}"
            ),
            "{c}"
        );
    }

    #[test]
    fn final_event_lines() {
        let reply = Reply {
            kind: Kind::Generate,
            model: "m".into(),
            t0: Instant::now(),
            load_duration: Duration::ZERO,
        };
        let data = json!({"stop": true, "timings": {"predicted_n": 2}});
        let end = reply.ending("", &data);
        assert!(end.piece.is_none());
        let done: Value = serde_json::from_slice(&end.done).unwrap();
        assert_eq!(end.done.last(), Some(&b'\n'));
        assert_eq!(
            (&done["done"], &done["eval_count"]),
            (&json!(true), &json!(2))
        );
        assert_eq!(done["load_duration"], 1);
        let end = reply.ending("tail", &data);
        let piece: Value = serde_json::from_slice(&end.piece.unwrap()).unwrap();
        assert_eq!(
            (&piece["response"], &piece["done"]),
            (&json!("tail"), &json!(false))
        );
        assert_eq!(end.reason, "stop");
    }
}
