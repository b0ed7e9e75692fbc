//! The model of the model: the geometry a prediction needs, read from `/api/show` (`details`
//! and `model_info`, the GGUF key/values; `docs/ollama-api.md` §4.4) and the blob size of
//! `/api/tags`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::backend::ShowResponse;

/// Element type of the KV cache, with llama.cpp's block sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum KvType {
    /// 16-bit floats: 2 bytes an element (llama.cpp's and Ollama's default).
    #[default]
    F16,
    /// `q8_0`: blocks of 32 elements in 34 bytes.
    Q8_0,
    /// `q4_0`: blocks of 32 elements in 18 bytes.
    Q4_0,
}

impl KvType {
    /// Bytes of one element.
    pub fn bytes_per_element(self) -> f64 {
        match self {
            KvType::F16 => 2.0,
            KvType::Q8_0 => 34.0 / 32.0,
            KvType::Q4_0 => 18.0 / 32.0,
        }
    }

    /// Parses Ollama's spelling (`OLLAMA_KV_CACHE_TYPE`): `f16`, `q8_0`, `q4_0`.
    pub fn parse(s: &str) -> Option<KvType> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f16" => Some(KvType::F16),
            "q8_0" => Some(KvType::Q8_0),
            "q4_0" => Some(KvType::Q4_0),
            _ => None,
        }
    }

    /// Ollama's spelling.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F16 => "f16",
            KvType::Q8_0 => "q8_0",
            KvType::Q4_0 => "q4_0",
        }
    }
}

/// How the layers of a model attend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerAttention {
    /// KV heads of the layer (0 for a layer without attention, e.g. LFM2's convolution blocks).
    pub kv_heads: u64,
    /// Whether the layer attends to a sliding window only.
    pub sliding: bool,
}

/// What a prediction knows of a model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelShape {
    /// `general.architecture`, e.g. `gemma3`.
    pub arch: String,
    /// `details.family` (the architecture when absent): calibration groups by it.
    pub family: String,
    /// `details.quantization_level`, e.g. `Q4_K_M` (`unknown` when absent).
    pub quantization: String,
    /// Parameters: `general.parameter_count`, else `details.parameter_size` (`1.2B`).
    pub parameters: u64,
    /// Bytes of the weights: the blob size of `/api/tags`.
    pub weights_bytes: u64,
    /// Layers (`block_count`).
    pub layers: u64,
    /// Query heads (`attention.head_count`; the largest entry when it is per layer).
    pub heads: u64,
    /// Key length (`attention.key_length`, else `embedding_length / head_count`).
    pub key_length: u64,
    /// Value length (`attention.value_length`, else the key length).
    pub value_length: u64,
    /// `embedding_length`.
    pub embedding_length: u64,
    /// `feed_forward_length` (the largest entry when it is per layer); 0 when absent.
    pub feed_forward_length: u64,
    /// Trained context (`context_length`).
    pub trained_context: Option<u64>,
    /// Sliding window (`attention.sliding_window`, tokens), when the architecture has one.
    pub sliding_window: Option<u64>,
    /// One entry per layer.
    pub layer_attention: Vec<LayerAttention>,
    /// How each figure was found where it was not read directly (fallbacks, layouts).
    pub notes: Vec<String>,
}

/// Layers that are global in a repeating sliding-window layout, by architecture, as llama.cpp
/// lays them out (`llama-model.cpp`, `set_swa_pattern`): with a pattern of `n`, layer `i` is
/// global when `i % n == n − 1`, local otherwise. Gemma 3: 5 local layers per global one.
fn swa_pattern(arch: &str) -> Option<u64> {
    match arch {
        "gemma3" | "gemma3n" => Some(6),
        "gemma2" => Some(2),
        "cohere2" => Some(4),
        _ => None,
    }
}

/// `1.2B`, `270M`, `27.4B`, `135M` → parameters.
fn parse_parameter_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'B' => (&s[..s.len() - 1], 1e9),
        'M' => (&s[..s.len() - 1], 1e6),
        'K' => (&s[..s.len() - 1], 1e3),
        'T' => (&s[..s.len() - 1], 1e12),
        _ => (s, 1.0),
    };
    let v: f64 = num.trim().parse().ok()?;
    (v > 0.0).then(|| (v * mult).round() as u64)
}

impl ModelShape {
    /// The shape of a model from `/api/show` and its blob size (`/api/tags` `size`). The error
    /// names the key that is missing.
    pub fn from_show(
        show: &ShowResponse,
        weights_bytes: Option<u64>,
    ) -> Result<ModelShape, String> {
        let info = &show.model_info;
        let mut notes = Vec::new();
        let arch = info
            .get("general.architecture")
            .and_then(Value::as_str)
            .ok_or("model_info has no general.architecture")?
            .to_string();
        let key = |k: &str| info.get(&format!("{arch}.{k}"));
        let num = |k: &str| key(k).and_then(Value::as_u64);
        // A number, or the largest entry of a per-layer array.
        let num_or_max = |k: &str| match key(k) {
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_u64).max(),
            Some(v) => v.as_u64(),
            None => None,
        };
        let layers =
            num("block_count").ok_or_else(|| format!("model_info has no {arch}.block_count"))?;
        let heads = num_or_max("attention.head_count")
            .ok_or_else(|| format!("model_info has no {arch}.attention.head_count"))?;
        let embedding_length = num("embedding_length")
            .ok_or_else(|| format!("model_info has no {arch}.embedding_length"))?;
        let kv_heads: Vec<u64> = match key("attention.head_count_kv") {
            Some(Value::Array(a)) if !a.is_empty() => {
                let v: Vec<u64> = a.iter().filter_map(Value::as_u64).collect();
                if v.len() != a.len() || v.len() as u64 != layers {
                    return Err(format!(
                        "{arch}.attention.head_count_kv has {} entries, not {layers} whole numbers",
                        a.len()
                    ));
                }
                v
            }
            Some(v) if v.as_u64().is_some() => vec![v.as_u64().unwrap_or(0); layers as usize],
            _ => {
                notes.push(format!("head_count_kv missing: used head_count {heads}"));
                vec![heads; layers as usize]
            }
        };
        let key_length = match num("attention.key_length") {
            Some(d) => d,
            None if heads > 0 => {
                let d = embedding_length / heads;
                notes.push(format!(
                    "key_length missing: used embedding_length / head_count = {d}"
                ));
                d
            }
            None => return Err(format!("model_info has no {arch}.attention.key_length")),
        };
        let value_length = num("attention.value_length").unwrap_or(key_length);
        let sliding_window = num("attention.sliding_window").filter(|&w| w > 0);
        let sliding: Vec<bool> = match (sliding_window, key("attention.sliding_window_pattern")) {
            (None, _) => vec![false; layers as usize],
            (Some(_), Some(Value::Array(a))) if a.len() as u64 == layers => {
                notes.push("sliding-window layers from attention.sliding_window_pattern".into());
                a.iter().map(|v| v.as_bool().unwrap_or(false)).collect()
            }
            (Some(w), _) => match swa_pattern(&arch) {
                Some(n) => {
                    notes.push(format!(
                        "{arch} layout: {} local layers of a {w}-token window per global layer (llama.cpp's pattern)",
                        n - 1
                    ));
                    (0..layers).map(|i| i % n != n - 1).collect()
                }
                None => {
                    notes.push(format!(
                        "{arch} has a {w}-token sliding window but no known layer layout: every layer counted as global (an over-estimate)"
                    ));
                    vec![false; layers as usize]
                }
            },
        };
        let parameters = match info.get("general.parameter_count").and_then(Value::as_u64) {
            Some(p) => p,
            None => {
                let p = show
                    .details
                    .parameter_size
                    .as_deref()
                    .and_then(parse_parameter_size)
                    .ok_or("neither general.parameter_count nor details.parameter_size")?;
                notes.push(format!("parameter count from details.parameter_size: {p}"));
                p
            }
        };
        let weights_bytes = match weights_bytes {
            Some(b) if b > 0 => b,
            _ => return Err("the blob size is unknown (/api/tags has no size)".into()),
        };
        Ok(ModelShape {
            family: show.details.family.clone().unwrap_or_else(|| arch.clone()),
            quantization: show
                .details
                .quantization_level
                .clone()
                .unwrap_or_else(|| "unknown".into()),
            parameters,
            weights_bytes,
            layers,
            heads,
            key_length,
            value_length,
            embedding_length,
            feed_forward_length: num_or_max("feed_forward_length").unwrap_or(0),
            trained_context: num("context_length"),
            sliding_window,
            layer_attention: kv_heads
                .into_iter()
                .zip(sliding)
                .map(|(kv_heads, sliding)| LayerAttention { kv_heads, sliding })
                .collect(),
            notes,
            arch,
        })
    }

    /// Bits per weight: the blob size over the parameters.
    pub fn bits_per_weight(&self) -> f64 {
        self.weights_bytes as f64 * 8.0 / self.parameters.max(1) as f64
    }

    /// KV bytes of one token in one layer with `kv_heads` heads.
    fn kv_bytes_per_cell(&self, kv_heads: u64, kv: KvType) -> f64 {
        kv_heads as f64 * (self.key_length + self.value_length) as f64 * kv.bytes_per_element()
    }

    /// Cells a sliding-window layer allocates at `num_ctx` (llama.cpp `llama-kv-cache-iswa.cpp`:
    /// `min(n_ctx, pad(n_swa + n_ubatch, 256))`, one sequence).
    pub fn swa_cells(&self, num_ctx: u64, ubatch: u64) -> u64 {
        match self.sliding_window {
            Some(w) => num_ctx.min((w + ubatch).div_ceil(256) * 256),
            None => num_ctx,
        }
    }

    /// Bytes of the KV cache allocated for `num_ctx` (sliding-window layers hold their window).
    pub fn kv_cache_bytes(&self, num_ctx: u64, ubatch: u64, kv: KvType) -> f64 {
        let swa = self.swa_cells(num_ctx, ubatch);
        self.layer_attention
            .iter()
            .map(|l| {
                let cells = if l.sliding { swa } else { num_ctx };
                self.kv_bytes_per_cell(l.kv_heads, kv) * cells as f64
            })
            .sum()
    }

    /// Bytes of the KV cache for `num_ctx` if every layer held the whole context (no
    /// sliding-window saving: what calculators that ignore the window assume).
    pub fn kv_cache_bytes_full(&self, num_ctx: u64, kv: KvType) -> f64 {
        self.layer_attention
            .iter()
            .map(|l| self.kv_bytes_per_cell(l.kv_heads, kv) * num_ctx as f64)
            .sum()
    }

    /// KV bytes per context token of the layers that hold the whole context (the part of the
    /// cache that grows with `num_ctx` once it is past the window).
    pub fn kv_bytes_per_token_global(&self, kv: KvType) -> f64 {
        self.layer_attention
            .iter()
            .filter(|l| !(l.sliding && self.sliding_window.is_some()))
            .map(|l| self.kv_bytes_per_cell(l.kv_heads, kv))
            .sum()
    }

    /// Bytes of KV one decode step reads at depth `depth` (sliding-window layers read at most
    /// their window).
    pub fn kv_read_bytes(&self, depth: u64, kv: KvType) -> f64 {
        self.layer_attention
            .iter()
            .map(|l| {
                let d = match (l.sliding, self.sliding_window) {
                    (true, Some(w)) => depth.min(w),
                    _ => depth,
                };
                self.kv_bytes_per_cell(l.kv_heads, kv) * d as f64
            })
            .sum()
    }

    /// FLOPs of attention for one token at position `p`: `4 · heads · head_dim · p` per
    /// attending layer (QKᵀ and PV), `p` capped at the window on sliding layers.
    pub fn attention_flops(&self, p: f64) -> f64 {
        self.layer_attention
            .iter()
            .filter(|l| l.kv_heads > 0)
            .map(|l| {
                let p = match (l.sliding, self.sliding_window) {
                    (true, Some(w)) => p.min(w as f64),
                    _ => p,
                };
                4.0 * self.heads as f64 * self.key_length as f64 * p
            })
            .sum()
    }

    /// FLOPs to prefill `fill` tokens from an empty cache: `2 · N` per token for the weights,
    /// plus attention summed over positions (sliding layers capped at the window).
    pub fn prefill_flops(&self, fill: u64) -> f64 {
        let weights = 2.0 * self.parameters as f64 * fill as f64;
        // Σ_{p=0}^{fill-1} min(p, w) per layer, in closed form.
        let attention: f64 = self
            .layer_attention
            .iter()
            .filter(|l| l.kv_heads > 0)
            .map(|l| {
                let n = fill as f64;
                let sum_p = match (l.sliding, self.sliding_window) {
                    (true, Some(w)) if fill > w => {
                        let w = w as f64;
                        w * (w - 1.0) / 2.0 + w * (n - w)
                    }
                    _ => n * (n - 1.0) / 2.0,
                };
                4.0 * self.heads as f64 * self.key_length as f64 * sum_p
            })
            .sum();
        weights + attention
    }

    /// A short description: `gemma3 Q4_K_M, 4.3B params, 3.1 GiB (5.7 bits/weight), 34 layers (29 sliding, window 1024)`.
    pub fn describe(&self) -> String {
        let sliding = self.layer_attention.iter().filter(|l| l.sliding).count();
        let window = match self.sliding_window {
            Some(w) if sliding > 0 => format!(" ({sliding} sliding, window {w})"),
            _ => String::new(),
        };
        format!(
            "{} {}, {:.2}B params, {:.2} GiB ({:.2} bits/weight), {} layers{window}",
            self.arch,
            self.quantization,
            self.parameters as f64 / 1e9,
            self.weights_bytes as f64 / (1u64 << 30) as f64,
            self.bits_per_weight(),
            self.layers
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_sizes() {
        assert_eq!(parse_parameter_size("1.2B"), Some(1_200_000_000));
        assert_eq!(parse_parameter_size("270M"), Some(270_000_000));
        assert_eq!(parse_parameter_size("x"), None);
    }
}
