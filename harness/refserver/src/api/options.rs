//! The request `options` this server understands, and what they become: the runner's load
//! options and the sampling parameters of llama-server's `/completion`.

use serde_json::{Value, json};

use crate::log;
use crate::runner::LoadOpts;
use crate::template::ModelDefaults;

/// The request `options` this server understands.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct ReqOptions {
    pub(super) num_ctx: Option<i64>,
    pub(super) num_batch: Option<i64>,
    pub(super) num_thread: Option<i64>,
    pub(super) num_predict: Option<i64>,
    pub(super) num_keep: Option<i64>,
    pub(super) seed: Option<i64>,
    pub(super) top_k: Option<i64>,
    pub(super) repeat_last_n: Option<i64>,
    pub(super) temperature: Option<f64>,
    pub(super) top_p: Option<f64>,
    pub(super) min_p: Option<f64>,
    pub(super) typical_p: Option<f64>,
    pub(super) repeat_penalty: Option<f64>,
    pub(super) presence_penalty: Option<f64>,
    pub(super) frequency_penalty: Option<f64>,
    pub(super) stop: Option<Vec<String>>,
}

/// Parse `options` like Ollama's `FromMap`: wrong types are an error (HTTP 500 in Ollama),
/// unknown keys only a WARN.
pub(super) fn parse_options(
    map: Option<&serde_json::Map<String, Value>>,
) -> Result<ReqOptions, String> {
    let mut o = ReqOptions::default();
    let Some(map) = map else { return Ok(o) };
    for (k, v) in map {
        if v.is_null() {
            continue;
        }
        let int = || {
            v.as_f64()
                .map(|f| f as i64)
                .ok_or_else(|| format!("option \"{k}\" must be of type integer"))
        };
        let float = || {
            v.as_f64()
                .ok_or_else(|| format!("option \"{k}\" must be of type float32"))
        };
        match k.as_str() {
            "num_ctx" => o.num_ctx = Some(int()?),
            "num_batch" => o.num_batch = Some(int()?),
            "num_thread" => o.num_thread = Some(int()?),
            "num_predict" => o.num_predict = Some(int()?),
            "num_keep" => o.num_keep = Some(int()?),
            "seed" => o.seed = Some(int()?),
            "top_k" => o.top_k = Some(int()?),
            "repeat_last_n" => o.repeat_last_n = Some(int()?),
            "temperature" => o.temperature = Some(float()?),
            "top_p" => o.top_p = Some(float()?),
            "min_p" => o.min_p = Some(float()?),
            "typical_p" => o.typical_p = Some(float()?),
            "repeat_penalty" => o.repeat_penalty = Some(float()?),
            "presence_penalty" => o.presence_penalty = Some(float()?),
            "frequency_penalty" => o.frequency_penalty = Some(float()?),
            "stop" => o.stop = Some(strings(k, v)?),
            // Load-time options Ollama accepts that have no effect on a CPU llama-server here.
            "num_gpu" | "main_gpu" | "draft_num_predict" => {
                int()?;
            }
            "use_mmap" => {
                if !v.is_boolean() {
                    return Err(format!("option \"{k}\" must be of type boolean"));
                }
            }
            _ => log!("WARN", "invalid option provided option={k}"),
        }
    }
    Ok(o)
}

/// An option whose value must be an array of strings (`stop`).
fn strings(k: &str, v: &Value) -> Result<Vec<String>, String> {
    let arr = v
        .as_array()
        .ok_or_else(|| format!("option \"{k}\" must be of type array"))?;
    arr.iter()
        .map(|s| {
            s.as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("option \"{k}\" must be of type array of strings"))
        })
        .collect()
}

impl ReqOptions {
    /// What the request left unset, from the model's Modelfile `PARAMETER`s (Ollama applies
    /// `api.DefaultOptions()`, then the model's options, then the request's: `server/routes.go`
    /// `modelOptions`). A request `stop` replaces the model's stops.
    pub(super) fn or_model_defaults(mut self, d: &ModelDefaults) -> ReqOptions {
        if self.stop.is_none() && !d.stop.is_empty() {
            self.stop = Some(d.stop.iter().map(|s| s.to_string()).collect());
        }
        self.top_k = self.top_k.or(d.top_k);
        self.top_p = self.top_p.or(d.top_p);
        self
    }

    /// The runner's load options (`num_ctx`, `num_batch`, `num_thread`), clamped to the model's
    /// trained context as [`LoadOpts::resolve`] says.
    pub(super) fn load_opts(&self, trained_ctx: u32) -> LoadOpts {
        LoadOpts::resolve(self.num_ctx, self.num_batch, self.num_thread, trained_ctx)
    }

    /// How many head tokens prompt truncation keeps before a BOS is counted: `num_keep`,
    /// default 4, negative = 0.
    pub(super) fn keep_tokens(&self) -> usize {
        self.num_keep.unwrap_or(4).max(0) as usize
    }

    /// The streamed `/completion` request for `tokens` with these sampling options, each missing
    /// one at Ollama's default; a negative `seed` is not sent. As Ollama's
    /// `llamaServerCompletionRequest` (`llm/llama_server.go` `Completion`): `cache_prompt: true`,
    /// so the runner's one slot reuses the longest common token prefix of the previous prompt
    /// (`tools/server/server-context.cpp`), and `n_keep` = `num_keep` (default 4; 0 is left out).
    pub(super) fn completion_body(&self, tokens: &[i64], num_ctx: u32) -> Value {
        let mut body = json!({
            "prompt": tokens,
            "stream": true,
            "cache_prompt": true,
            "return_tokens": false,
            "n_predict": bounded_num_predict(self.num_predict, num_ctx),
            "temperature": self.temperature.unwrap_or(0.8),
            "top_k": self.top_k.unwrap_or(40),
            "top_p": self.top_p.unwrap_or(0.9),
            "min_p": self.min_p.unwrap_or(0.0),
            "typical_p": self.typical_p.unwrap_or(1.0),
            "repeat_last_n": self.repeat_last_n.unwrap_or(64),
            "repeat_penalty": self.repeat_penalty.unwrap_or(1.0),
            "presence_penalty": self.presence_penalty.unwrap_or(0.0),
            "frequency_penalty": self.frequency_penalty.unwrap_or(0.0),
        });
        let n_keep = self.num_keep.unwrap_or(4);
        if n_keep != 0 {
            body["n_keep"] = json!(n_keep);
        }
        if let Some(seed) = self.seed.filter(|s| *s >= 0) {
            body["seed"] = json!(seed);
        }
        if let Some(stop) = &self.stop {
            body["stop"] = json!(stop);
        }
        body
    }
}

/// Ollama v0.30+: `num_predict < 0` (unbounded) is capped at 10 × num_ctx.
pub(super) fn bounded_num_predict(num_predict: Option<i64>, num_ctx: u32) -> i64 {
    match num_predict {
        Some(n) if n >= 0 => n,
        _ => 10 * num_ctx as i64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn num_predict_bound() {
        assert_eq!(bounded_num_predict(None, 2048), 20_480);
        assert_eq!(bounded_num_predict(Some(-1), 4096), 40_960);
        assert_eq!(bounded_num_predict(Some(16), 4096), 16);
    }

    #[test]
    fn options_types() {
        let m = json!({"num_ctx": 2048.0, "temperature": 0, "stop": ["a"], "bogus": 1});
        let o = parse_options(m.as_object()).unwrap();
        assert_eq!(o.num_ctx, Some(2048));
        assert_eq!(o.temperature, Some(0.0));
        assert_eq!(o.stop, Some(vec!["a".to_string()]));
        let m = json!({"num_ctx": "2048"});
        assert_eq!(
            parse_options(m.as_object()).unwrap_err(),
            "option \"num_ctx\" must be of type integer"
        );
        let m = json!({"stop": "a"});
        assert_eq!(
            parse_options(m.as_object()).unwrap_err(),
            "option \"stop\" must be of type array"
        );
        let m = json!({"stop": ["a", 1]});
        assert_eq!(
            parse_options(m.as_object()).unwrap_err(),
            "option \"stop\" must be of type array of strings"
        );
    }

    #[test]
    fn completion_defaults_and_seed() {
        let o = ReqOptions {
            seed: Some(-1),
            temperature: Some(0.0),
            ..ReqOptions::default()
        };
        let b = o.completion_body(&[1, 2], 2048);
        assert_eq!(b["prompt"], json!([1, 2]));
        assert_eq!(b["n_predict"], 20_480);
        assert_eq!(b["temperature"], 0.0);
        assert_eq!(b["top_k"], 40);
        assert_eq!(
            (&b["cache_prompt"], &b["n_keep"]),
            (&json!(true), &json!(4))
        );
        assert!(b.get("seed").is_none() && b.get("stop").is_none(), "{b}");
        let o = ReqOptions {
            seed: Some(7),
            stop: Some(vec!["x".into()]),
            ..ReqOptions::default()
        };
        let b = o.completion_body(&[], 4096);
        assert_eq!((&b["seed"], &b["stop"]), (&json!(7), &json!(["x"])));
        assert_eq!(o.keep_tokens(), 4);
        let o = ReqOptions {
            num_keep: Some(0),
            ..ReqOptions::default()
        };
        assert!(o.completion_body(&[], 4096).get("n_keep").is_none());
    }

    #[test]
    fn model_defaults_under_request_options() {
        let d = ModelDefaults {
            stop: &["<end_of_turn>"],
            top_k: Some(64),
            top_p: Some(0.95),
        };
        let o = ReqOptions::default().or_model_defaults(&d);
        assert_eq!(o.stop, Some(vec!["<end_of_turn>".to_string()]));
        assert_eq!((o.top_k, o.top_p), (Some(64), Some(0.95)));
        let o = ReqOptions {
            top_k: Some(1),
            stop: Some(vec!["x".into()]),
            ..ReqOptions::default()
        }
        .or_model_defaults(&d);
        assert_eq!((o.top_k, o.stop), (Some(1), Some(vec!["x".to_string()])));
    }
}
