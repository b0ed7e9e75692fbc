//! A deterministic model of a server for testing the search: a function from a probe's options
//! to its true TTFT and decode rate, plus seeded noise, turned into a real [`CellResult`] by the
//! harness's own summaries, stability score and gates. No randomness from outside: the noise of
//! a probe depends only on the seed and the probe's test name, so the same probe always gives
//! the same figures, whatever order the search asks in.

use super::{LoadOptions, Prober, options_of};
use crate::gates::{self, CellFacts};
use crate::results::{
    CellResult, CellSpec, CellSummaries, FORMAT_VERSION, HardwareSummary, Host, RunMetadata,
    StopReason, TrialKind, TrialRecord,
};
use crate::rundir::{RunDir, save_json};
use crate::stability;
use crate::stats::summarize;

pub use crate::stats::SplitMix64;

/// FNV-1a hash of a string (to derive a probe's noise seed from its test name).
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The `/api/version` the simulated server reports.
pub const SIM_VERSION: &str = "0.0.0-sim";

/// A figure of the model as a function of the options and the fill.
pub type Figure = Box<dyn Fn(&LoadOptions, u32) -> f64>;

/// A simulated server.
pub struct SimServer {
    /// Seed of the noise.
    pub seed: u64,
    /// Measured trials per probe.
    pub trials: u32,
    /// True mean TTFT (s) for options and fill tokens.
    pub ttft_s: Figure,
    /// True mean client decode rate (tokens/s).
    pub decode_tps: Figure,
    /// Relative standard deviation of the per-trial noise (e.g. 0.03 = 3 %).
    pub noise_rel: f64,
    /// Peak system RAM (percent) for options and fill.
    pub ram_pct: Figure,
    /// Wall time charged per probe (s).
    pub wall_s: f64,
    /// Where to write result files (as the live runner does), if anywhere.
    pub run_dir: Option<RunDir>,
    /// Every cell probed, in order.
    pub probed: Vec<CellSpec>,
}

impl SimServer {
    /// A server with the given TTFT and decode functions, 2 % noise, 5 trials, 30 % RAM,
    /// 60 s per probe.
    pub fn new(seed: u64, ttft_s: Figure, decode_tps: Figure) -> SimServer {
        SimServer {
            seed,
            trials: 5,
            ttft_s,
            decode_tps,
            noise_rel: 0.02,
            ram_pct: Box::new(|_, _| 30.0),
            wall_s: 60.0,
            run_dir: None,
            probed: Vec::new(),
        }
    }

    /// The cell result this server gives for `spec`.
    pub fn result(&self, spec: &CellSpec) -> CellResult {
        let opts = options_of(spec);
        let mut rng = SplitMix64::new(self.seed ^ fnv1a(&spec.test_name));
        let ttft = (self.ttft_s)(&opts, spec.fill_tokens);
        let decode = (self.decode_tps)(&opts, spec.fill_tokens);
        let mut trials = Vec::new();
        for i in 0..self.trials {
            let t = ttft * (1.0 + self.noise_rel * rng.next_normal());
            let d = decode * (1.0 + self.noise_rel * rng.next_normal());
            trials.push(TrialRecord {
                index: 2 + i,
                kind: TrialKind::Measured,
                prompt_tokens_intended: spec.fill_tokens,
                prompt_tokens_evaluated: Some(spec.fill_tokens),
                output_tokens: Some(spec.num_predict),
                ttft_s: Some(t.max(1e-3)),
                decode_tps: Some(d.max(1e-3)),
                e2e_s: Some(t + spec.num_predict as f64 / d.max(1e-3)),
                valid: true,
                ..TrialRecord::default()
            });
        }
        let s = |f: &dyn Fn(&TrialRecord) -> Option<f64>| {
            summarize(&trials.iter().filter_map(f).collect::<Vec<_>>())
        };
        let summaries = CellSummaries {
            ttft_s: s(&|t| t.ttft_s),
            decode_tps: s(&|t| t.decode_tps),
            e2e_s: s(&|t| t.e2e_s),
            ..CellSummaries::default()
        };
        let st = stability::score(&trials);
        let ram = (self.ram_pct)(&opts, spec.fill_tokens);
        let hardware = HardwareSummary {
            source: "simulated".into(),
            system_peak_pct: ram,
            ram_guard_tripped: ram >= spec.gates.ram_max_pct,
            ..HardwareSummary::default()
        };
        let facts = CellFacts {
            valid: trials.len(),
            attempted: trials.len(),
            ..CellFacts::default()
        };
        let judgement = gates::judge(spec, &summaries, &st, &hardware, &facts);
        CellResult {
            format_version: FORMAT_VERSION,
            cell: spec.clone(),
            judgement,
            load_s: Some(0.1),
            load_wall_s: Some(0.1),
            trials,
            summaries,
            stop_reason: StopReason::MaxTrials,
            hardware,
            stability: st,
            metadata: RunMetadata {
                run_id: "sim".into(),
                host: Host {
                    cpu_model: "simulated CPU".into(),
                    ..Host::default()
                },
                server: "sim://".into(),
                server_version: Some(SIM_VERSION.into()),
                ..RunMetadata::default()
            },
            fidelity: Vec::new(),
            wall_s: self.wall_s,
            prediction: None,
            probes: Vec::new(),
            host_speed: None,
        }
    }
}

impl Prober for SimServer {
    fn probe(&mut self, spec: &CellSpec) -> CellResult {
        self.probed.push(spec.clone());
        let r = self.result(spec);
        if let Some(dir) = &self.run_dir {
            save_json(&dir.cell_path(&spec.test_name), &r)
                .expect("the simulated run directory is writable");
        }
        r
    }
}
