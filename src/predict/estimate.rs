//! The estimates of one cell: what its options cost in bytes and FLOPs (the [`Breakdown`], pure
//! geometry), and the figures those costs give on a host at given efficiencies ([`figures`]).
//!
//! - RAM Δ = weights + KV cache for `num_ctx` (sliding-window layers hold their window only) +
//!   compute buffer + a fitted offset (runtime, buffers the geometry does not know).
//! - decode tok/s at depth d = bandwidth(threads) × efficiency ÷ (weights + KV read at d).
//! - TTFT = prefill FLOPs of the fill (weights `2N` a token, plus attention growing with the
//!   position) ÷ (multiply-add rate(threads) × efficiency) + one decode step.

use serde::{Deserialize, Serialize};

use super::host::HostModel;
use super::model::{KvType, ModelShape};
use crate::results::CellSpec;

/// The options of a cell a prediction depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CellInputs {
    /// `num_ctx`.
    pub num_ctx: u32,
    /// Prompt tokens of a trial.
    pub fill_tokens: u32,
    /// Output tokens of a trial.
    pub num_predict: u32,
    /// `num_thread`.
    pub num_thread: u32,
    /// `num_batch` (the micro-batch is min(num_batch, 512), as llama-server runs it).
    pub num_batch: u32,
}

impl From<&CellSpec> for CellInputs {
    fn from(s: &CellSpec) -> Self {
        CellInputs {
            num_ctx: s.num_ctx,
            fill_tokens: s.fill_tokens,
            num_predict: s.num_predict,
            num_thread: s.num_thread,
            num_batch: s.num_batch,
        }
    }
}

impl CellInputs {
    /// The micro-batch: min(num_batch, 512).
    pub fn ubatch(&self) -> u64 {
        u64::from(self.num_batch.clamp(1, 512))
    }

    /// Depth at which decode is predicted: the fill plus half the output.
    pub fn decode_depth(&self) -> u64 {
        u64::from(self.fill_tokens) + u64::from(self.num_predict) / 2
    }
}

/// What a cell costs, from the model's geometry and the host's figures alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    /// Weights (bytes).
    pub weights_bytes: f64,
    /// KV cache allocated for `num_ctx` (bytes).
    pub kv_cache_bytes: f64,
    /// The same without the sliding-window saving (bytes).
    pub kv_cache_full_bytes: f64,
    /// Compute buffer of one micro-batch (bytes): `4 · ubatch · (4 · embedding + 2 · ffn)`.
    pub compute_buffer_bytes: f64,
    /// Depth of the decode estimate (tokens).
    pub decode_depth: u64,
    /// KV read by one decode step at that depth (bytes).
    pub kv_read_bytes: f64,
    /// Bytes read per decoded token: weights + KV read.
    pub bytes_per_token: f64,
    /// FLOPs of prefilling the fill.
    pub prefill_flops: f64,
    /// Read bandwidth at the cell's threads (GB/s).
    pub bandwidth_gbps: f64,
    /// Multiply-add rate at the cell's threads (GFLOP/s).
    pub compute_gflops: f64,
}

impl Breakdown {
    /// RAM Δ before the fitted offset (bytes).
    pub fn base_ram_bytes(&self) -> f64 {
        self.weights_bytes + self.kv_cache_bytes + self.compute_buffer_bytes
    }
}

/// The costs of `inputs` for `shape` on `host`.
pub fn breakdown(
    shape: &ModelShape,
    host: &HostModel,
    inputs: &CellInputs,
    kv: KvType,
) -> Breakdown {
    let ctx = u64::from(inputs.num_ctx);
    let depth = inputs.decode_depth().min(ctx);
    let weights = shape.weights_bytes as f64;
    let kv_read = shape.kv_read_bytes(depth, kv);
    Breakdown {
        weights_bytes: weights,
        kv_cache_bytes: shape.kv_cache_bytes(ctx, inputs.ubatch(), kv),
        kv_cache_full_bytes: shape.kv_cache_bytes_full(ctx, kv),
        compute_buffer_bytes: 4.0
            * inputs.ubatch() as f64
            * (4.0 * shape.embedding_length as f64 + 2.0 * shape.feed_forward_length as f64),
        decode_depth: depth,
        kv_read_bytes: kv_read,
        bytes_per_token: weights + kv_read,
        prefill_flops: shape.prefill_flops(u64::from(inputs.fill_tokens)),
        bandwidth_gbps: host.bandwidth_gbps(inputs.num_thread),
        compute_gflops: host.compute_gflops(inputs.num_thread),
    }
}

/// The efficiencies a prediction uses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Efficiencies {
    /// Share of the read bandwidth decode reaches.
    pub decode: f64,
    /// Engine prefill FLOP rate ÷ the probe's multiply-add rate.
    pub prefill: f64,
    /// Bytes the process tree grows by beyond the geometry.
    pub ram_offset_bytes: f64,
}

/// The predicted figures of a cell.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Client TTFT of a trial, model loaded (s).
    pub ttft_s: f64,
    /// Client decode rate (tokens/s).
    pub decode_tps: f64,
    /// Server process-tree RSS growth, peak minus before the load (bytes).
    pub ram_delta_bytes: f64,
}

/// Decode rate of `b` at decode efficiency `e`.
pub fn decode_tps(b: &Breakdown, e: f64) -> f64 {
    b.bandwidth_gbps * 1e9 * e / b.bytes_per_token
}

/// Prefill time of `b` at prefill efficiency `e` (s).
pub fn prefill_s(b: &Breakdown, e: f64) -> f64 {
    b.prefill_flops / (b.compute_gflops * 1e9 * e)
}

/// The figures of `b` at `eff`.
pub fn figures(b: &Breakdown, eff: &Efficiencies) -> Figures {
    let decode = decode_tps(b, eff.decode);
    Figures {
        ttft_s: prefill_s(b, eff.prefill) + 1.0 / decode,
        decode_tps: decode,
        ram_delta_bytes: b.base_ram_bytes() + eff.ram_offset_bytes,
    }
}

/// The efficiencies one measurement implies, each `None` when the figure is missing or
/// implausible: decode from the decode rate, prefill from TTFT minus one decode step, the RAM
/// offset from the RSS growth.
pub fn implied(b: &Breakdown, m: &Measured) -> Implied {
    let decode = m
        .decode_tps
        .filter(|d| *d > 0.0)
        .map(|d| d * b.bytes_per_token / (b.bandwidth_gbps * 1e9));
    let prefill = match (m.ttft_s, m.decode_tps) {
        (Some(t), Some(d)) if d > 0.0 && t - 1.0 / d > 0.0 && b.prefill_flops > 0.0 => {
            Some(b.prefill_flops / (b.compute_gflops * 1e9 * (t - 1.0 / d)))
        }
        _ => None,
    };
    Implied {
        decode,
        prefill,
        ram_offset_bytes: m.ram_delta_bytes.map(|r| r - b.base_ram_bytes()),
    }
}

/// What a cell measured, in the figures a prediction makes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Measured {
    /// Mean client TTFT of the valid measured trials (s).
    pub ttft_s: Option<f64>,
    /// Mean client decode rate (tokens/s).
    pub decode_tps: Option<f64>,
    /// Peak minus baseline RSS of the server's process tree (bytes).
    pub ram_delta_bytes: Option<f64>,
}

/// The efficiencies one measurement implies ([`implied`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Implied {
    /// Decode efficiency.
    pub decode: Option<f64>,
    /// Prefill efficiency.
    pub prefill: Option<f64>,
    /// RAM offset (bytes).
    pub ram_offset_bytes: Option<f64>,
}

/// Relative error of each figure, (predicted − measured) ÷ measured; `None` where the cell did
/// not measure it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct FigureErrors {
    /// TTFT.
    pub ttft: Option<f64>,
    /// Decode rate.
    pub decode: Option<f64>,
    /// RAM Δ.
    pub ram: Option<f64>,
}

/// The errors of `p` against `m`.
pub fn errors(p: &Figures, m: &Measured) -> FigureErrors {
    let rel = |p: f64, m: Option<f64>| m.filter(|m| *m != 0.0).map(|m| (p - m) / m.abs());
    FigureErrors {
        ttft: rel(p.ttft_s, m.ttft_s),
        decode: rel(p.decode_tps, m.decode_tps),
        ram: rel(p.ram_delta_bytes, m.ram_delta_bytes),
    }
}
