//! The engine's own speed on this machine, for gates relative to it.
//!
//! A matrix row may give `ttft_max_s` or `tok_s_min` as `engine*F` (see [`crate::matrix`]).
//! Such a gate is a factor on what llama.cpp's own `llama-bench` measures for the cell's model
//! file at the cell's options, on the same machine, in the same run, so a slower machine moves
//! the engine and the limit together and the gate judges the harness and the server, not the
//! hardware:
//!
//! - `tok_s_min = engine*F` → F × `llama-bench` tg: `num_predict` tokens decoded after
//!   `fill_tokens` of context (`-p 0 -n <num_predict> -d <fill_tokens>`);
//! - `ttft_max_s = engine*F` → F × (`fill_tokens` / pp + 1 / tg) + [`LOAD_ALLOWANCE_S`], where pp
//!   is the prefill rate of `fill_tokens` from an empty cache (`-p <fill_tokens> -n 0`): the
//!   engine's time to the first token is the prefill plus one decode step. The load part is not
//!   the cell's own load time: a measured trial never contains a load (one with more than
//!   [`measure::RELOAD_THRESHOLD_S`] of `load_duration` is an invalid trial), so the most load a
//!   valid trial's TTFT can hold is that threshold, added unscaled.
//!
//! Both runs use `-t <num_thread> -b <num_batch> -ub <num_batch>`, as the reference server (like
//! Ollama) starts `llama-server` (harness/refserver/src/runner.rs), and [`EngineEnv::repetitions`]
//! repetitions (`-r`, default 2). The figures, with the command lines, `llama-bench`'s build and
//! the per-repetition spread, are cached as `<run>/engine/<key>.json` (written atomically; the key
//! is the model file and the options), so each distinct (model file, threads, batch, fill,
//! num_predict) is measured once per run directory, also across the processes of a nextest run.
//!
//! Needs `O3_LLAMA_BIN_DIR` (the directory holding `llama-bench`) and `O3_MODELS_DIR` (the GGUF
//! files), as `harness/setup-backend.sh` writes them to `~/.cache/o3-suite/backend.env`. A gate
//! that cannot be resolved is an [`EngineError`], which makes the cell INVALID with the reason.

use std::borrow::Cow;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{ConfigError, NumberIn};
use crate::measure;
use crate::results::{BenchFigure, CellSpec, EngineFigures, Gates, RelativeGates};
use crate::rundir::{RunDir, StoreError, write_atomic};

/// Load a valid trial's TTFT may contain, added unscaled to an engine-relative TTFT limit (s):
/// the reload threshold above which a trial is invalid.
pub const LOAD_ALLOWANCE_S: f64 = measure::RELOAD_THRESHOLD_S;

/// The range of `O3_ENGINE_REPS`: each repetition takes seconds to minutes.
const REPETITIONS: NumberIn<u32> = NumberIn::new(
    std::ops::Bound::Included(1),
    std::ops::Bound::Included(100),
    "a whole number from 1 to 100",
);

/// Repetitions of each `llama-bench` test unless `O3_ENGINE_REPS` says otherwise.
pub const DEFAULT_REPETITIONS: u32 = 2;

/// Longest one `llama-bench` run may take before it is killed.
pub const BENCH_TIMEOUT: Duration = Duration::from_secs(900);

/// Ollama library names → GGUF file names in `O3_MODELS_DIR`: the reference server's built-in
/// table (`BUILTIN_MODELS` in harness/refserver/src/config.rs; a unit test keeps them equal).
pub const MODEL_FILES: &[(&str, &str)] = &[
    ("smollm2:135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3:270m", "gemma-3-270m-q4_k_m.gguf"),
];

/// Why an engine-relative gate could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// `llama-bench` or the model files are not set up.
    #[error(
        "engine-relative gates need llama-bench: {0} (run `bash harness/setup-backend.sh` and load the variables of ~/.cache/o3-suite/backend.env; `bash harness/test.sh` does both)"
    )]
    NotConfigured(String),
    /// An environment variable does not parse.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No GGUF file is known for the model.
    #[error("engine-relative gates: no GGUF file is known for model {model} (known: {known})")]
    UnknownModel {
        /// The model.
        model: String,
        /// The names that have a file.
        known: String,
    },
    /// The model's file is not there.
    #[error("engine-relative gates: model file {0} does not exist")]
    MissingFile(PathBuf),
    /// `llama-bench` could not run, failed, timed out or printed something unreadable.
    #[error("engine-relative gates: `{command}` {why}")]
    Bench {
        /// The command line.
        command: String,
        /// What went wrong.
        why: String,
    },
    /// The figures could not be cached in the run directory.
    #[error("engine-relative gates: {0}")]
    Cache(#[from] StoreError),
}

/// Where `llama-bench` and the model files are, and how many repetitions to run.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineEnv {
    /// `O3_LLAMA_BIN_DIR`: the directory holding `llama-bench`.
    pub bin_dir: Option<PathBuf>,
    /// `O3_MODELS_DIR`: the directory holding the GGUF files of [`MODEL_FILES`].
    pub models_dir: Option<PathBuf>,
    /// `O3_ENGINE_REPS`: repetitions of each test (`-r`). Default [`DEFAULT_REPETITIONS`].
    pub repetitions: u32,
}

impl EngineEnv {
    /// Reads the settings from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the settings through `get` (the environment, or a map in tests). A directory
    /// variable that is unset is read from `backend.env` in the backend cache
    /// (`O3_CACHE`, default `~/.cache/o3-suite`), where `harness/setup-backend.sh` writes both, so
    /// `harness/run.sh` and a plain `cargo test` find the backend without sourcing it.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let cache = get("O3_CACHE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| get("HOME").map(|h| Path::new(&h).join(".cache").join("o3-suite")));
        let backend_env = cache
            .and_then(|c| std::fs::read_to_string(c.join("backend.env")).ok())
            .unwrap_or_default();
        let from_file = |var: &str| {
            backend_env.lines().find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == var).then(|| v.trim().to_string())
            })
        };
        let dir = |var: &str| {
            get(var)
                .or_else(|| from_file(var))
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        };
        Ok(EngineEnv {
            bin_dir: dir("O3_LLAMA_BIN_DIR"),
            models_dir: dir("O3_MODELS_DIR"),
            repetitions: match get("O3_ENGINE_REPS") {
                Some(v) => REPETITIONS.parse_var("O3_ENGINE_REPS", &v)?,
                None => DEFAULT_REPETITIONS,
            },
        })
    }

    /// The `llama-bench` binary.
    pub fn llama_bench(&self) -> Result<PathBuf, EngineError> {
        let dir = self
            .bin_dir
            .as_ref()
            .ok_or_else(|| EngineError::NotConfigured("O3_LLAMA_BIN_DIR is unset".into()))?;
        let bin = dir.join("llama-bench");
        if bin.is_file() {
            Ok(bin)
        } else {
            Err(EngineError::NotConfigured(format!(
                "{} does not exist",
                bin.display()
            )))
        }
    }

    /// The GGUF file of `model` (an Ollama name; `:latest` is implied without a tag).
    pub fn model_file(&self, model: &str) -> Result<PathBuf, EngineError> {
        let dir = self
            .models_dir
            .as_ref()
            .ok_or_else(|| EngineError::NotConfigured("O3_MODELS_DIR is unset".into()))?;
        let tagged = if model.contains(':') {
            model.to_string()
        } else {
            format!("{model}:latest")
        };
        let (_, file) = MODEL_FILES
            .iter()
            .find(|(name, _)| *name == tagged)
            .ok_or_else(|| EngineError::UnknownModel {
                model: model.to_string(),
                known: MODEL_FILES
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let path = dir.join(file);
        if path.is_file() {
            Ok(path)
        } else {
            Err(EngineError::MissingFile(path))
        }
    }
}

/// What to measure: one model file at one set of options.
#[derive(Debug, Clone, PartialEq)]
pub struct BenchRequest {
    /// The GGUF file.
    pub model_file: PathBuf,
    /// `-t`.
    pub threads: u32,
    /// `-b` (`-ub` is min(batch, 512)).
    pub batch: u32,
    /// Prefill size and decode depth.
    pub fill_tokens: u32,
    /// Decode length.
    pub num_predict: u32,
}

impl BenchRequest {
    /// The request for `spec`'s options on `model_file`.
    pub fn for_cell(spec: &CellSpec, model_file: PathBuf) -> Self {
        BenchRequest {
            model_file,
            threads: spec.num_thread,
            batch: spec.num_batch,
            fill_tokens: spec.fill_tokens,
            num_predict: spec.num_predict,
        }
    }

    /// The cache file's name: `<file stem>_t2_b512_f1024_n128`.
    pub fn key(&self) -> String {
        let stem: String = self
            .model_file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!(
            "{stem}_t{}_b{}_f{}_n{}",
            self.threads, self.batch, self.fill_tokens, self.num_predict
        )
    }

    /// Arguments of the prefill run and of the decode run.
    pub fn args(&self, repetitions: u32) -> [Vec<String>; 2] {
        let common = |extra: [&str; 6]| {
            let mut a: Vec<String> = vec!["-m".into(), self.model_file.display().to_string()];
            let t = self.threads.to_string();
            let b = self.batch.to_string();
            let r = repetitions.to_string();
            for s in ["-t", &t, "-b", &b, "-ub", &b, "-r", &r, "-o", "json"] {
                a.push(s.to_string());
            }
            a.extend(extra.iter().map(|s| s.to_string()));
            a
        };
        let fill = self.fill_tokens.to_string();
        let n = self.num_predict.to_string();
        [
            common(["-p", &fill, "-n", "0", "-d", "0"]),
            common(["-p", "0", "-n", &n, "-d", &fill]),
        ]
    }

    /// Whether cached `figures` answer this request.
    fn matches(&self, figures: &EngineFigures) -> bool {
        figures.model_file == self.model_file.display().to_string()
            && figures.threads == self.threads
            && figures.batch == self.batch
            && figures.fill_tokens == self.fill_tokens
            && figures.num_predict == self.num_predict
    }
}

/// Runs `llama-bench` for `req` (the prefill run, then the decode run) and returns the figures.
pub fn bench(env: &EngineEnv, req: &BenchRequest) -> Result<EngineFigures, EngineError> {
    let bin = env.llama_bench()?;
    let started = Instant::now();
    let mut commands = Vec::new();
    let mut runs = Vec::new();
    for args in req.args(env.repetitions) {
        let command = format!("{} {}", bin.display(), args.join(" "));
        let stdout =
            run_with_timeout(&bin, &args, BENCH_TIMEOUT).map_err(|why| EngineError::Bench {
                command: command.clone(),
                why,
            })?;
        let run = parse_bench_json(&stdout).map_err(|why| EngineError::Bench {
            command: command.clone(),
            why: format!("printed no usable JSON: {why}"),
        })?;
        commands.push(command);
        runs.push(run);
    }
    let [(prefill, build), (decode, _)]: [(BenchFigure, String); 2] =
        runs.try_into().expect("two runs");
    let ttft_s = req.fill_tokens as f64 / prefill.mean_tps + 1.0 / decode.mean_tps;
    Ok(EngineFigures {
        model_file: req.model_file.display().to_string(),
        threads: req.threads,
        batch: req.batch,
        fill_tokens: req.fill_tokens,
        num_predict: req.num_predict,
        prefill,
        decode,
        ttft_s,
        load_allowance_s: LOAD_ALLOWANCE_S,
        commands,
        build,
        measured_at_unix_s: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        wall_s: started.elapsed().as_secs_f64(),
    })
}

/// The figures for `req`: from `<run_dir>/engine/<key>.json` when an earlier cell of the run
/// measured them, else measured now and cached there (atomically: a concurrent process either
/// sees no file or a whole one, and two that measure at once both write valid figures).
pub fn cached_bench(
    env: &EngineEnv,
    req: &BenchRequest,
    run_dir: &RunDir,
) -> Result<EngineFigures, EngineError> {
    let path = run_dir.engine_path(&req.key());
    if let Some(figures) = std::fs::read(&path)
        .ok()
        .and_then(|b| serde_json::from_slice::<EngineFigures>(&b).ok())
        .filter(|f| req.matches(f))
    {
        return Ok(figures);
    }
    let figures = bench(env, req)?;
    let json = serde_json::to_vec_pretty(&figures).expect("figures serialize");
    write_atomic(&path, &json)?;
    Ok(figures)
}

/// The absolute limits of `spec`'s gates given the engine `figures`: `engine*F` limits computed
/// (see the module documentation), absolute ones kept.
pub fn gates_from(spec: &CellSpec, relative: &RelativeGates, figures: &EngineFigures) -> Gates {
    let mut gates = spec.gates.clone();
    if let Some(f) = relative.ttft_factor {
        gates.ttft_max_s = f * figures.ttft_s + figures.load_allowance_s;
    }
    if let Some(f) = relative.tok_s_factor {
        gates.tok_s_min = f * figures.decode.mean_tps;
    }
    gates
}

/// Resolves `spec`'s engine-relative gates: measures the engine (or reads the run's cache) and
/// returns the absolute gates and the figures they are relative to. A spec without relative
/// gates is an error too (there is nothing to resolve); see [`resolve_spec`].
pub fn resolve_gates(
    spec: &CellSpec,
    run_dir: &RunDir,
    env: &EngineEnv,
) -> Result<(Gates, EngineFigures), EngineError> {
    let relative = spec.relative_gates.as_ref().ok_or_else(|| {
        EngineError::NotConfigured(format!("{} has no engine-relative gate", spec.test_name))
    })?;
    let req = BenchRequest::for_cell(spec, env.model_file(&spec.model)?);
    let figures = cached_bench(env, &req, run_dir)?;
    Ok((gates_from(spec, relative, &figures), figures))
}

/// `spec` ready to be measured and judged: unchanged when its gates are absolute, else a copy
/// with the resolved limits in `gates` and the engine figures recorded in
/// `relative_gates.engine` (so the result file says what each limit was relative to).
pub fn resolve_spec<'a>(
    spec: &'a CellSpec,
    run_dir: &RunDir,
) -> Result<Cow<'a, CellSpec>, EngineError> {
    let Some(relative) = &spec.relative_gates else {
        return Ok(Cow::Borrowed(spec));
    };
    if relative.engine.is_some() {
        return Ok(Cow::Borrowed(spec));
    }
    let env = EngineEnv::from_env()?;
    let (gates, figures) = resolve_gates(spec, run_dir, &env)?;
    let mut resolved = spec.clone();
    resolved.gates = gates;
    resolved.relative_gates = Some(RelativeGates {
        engine: Some(figures),
        ..relative.clone()
    });
    Ok(Cow::Owned(resolved))
}

/// One line for progress output: the engine figures and the limits computed from them.
pub fn describe(spec: &CellSpec) -> Option<String> {
    let rel = spec.relative_gates.as_ref()?;
    let e = rel.engine.as_ref()?;
    let mut s = format!(
        "engine (llama-bench {}, -t {} -b {}): {} {:.1} ± {:.1} tok/s, {} {:.1} ± {:.1} tok/s, time to first token {:.2} s",
        e.build,
        e.threads,
        e.batch,
        e.prefill.test,
        e.prefill.mean_tps,
        e.prefill.stddev_tps,
        e.decode.test,
        e.decode.mean_tps,
        e.decode.stddev_tps,
        e.ttft_s
    );
    if let Some(f) = rel.ttft_factor {
        s.push_str(&format!(
            "; TTFT < {f} × {:.2} + {} = {:.2} s",
            e.ttft_s, e.load_allowance_s, spec.gates.ttft_max_s
        ));
    }
    if let Some(f) = rel.tok_s_factor {
        s.push_str(&format!(
            "; decode > {f} × {:.1} = {:.1} tok/s",
            e.decode.mean_tps, spec.gates.tok_s_min
        ));
    }
    Some(s)
}

/// Parses `llama-bench -o json` output holding one test: its figure and the build
/// (`<commit> (<number>)`).
fn parse_bench_json(stdout: &[u8]) -> Result<(BenchFigure, String), String> {
    let v: serde_json::Value = serde_json::from_slice(stdout).map_err(|e| e.to_string())?;
    let tests = v.as_array().ok_or("not a JSON array")?;
    let [t] = tests.as_slice() else {
        return Err(format!("{} tests, expected 1", tests.len()));
    };
    let num = |k: &str| t[k].as_f64().ok_or_else(|| format!("no number {k:?}"));
    let (n_prompt, n_gen, n_depth) = (num("n_prompt")?, num("n_gen")?, num("n_depth")?);
    let mut test = if n_prompt > 0.0 {
        format!("pp{n_prompt}")
    } else {
        format!("tg{n_gen}")
    };
    if n_depth > 0.0 {
        test.push_str(&format!(" @ d{n_depth}"));
    }
    let mean_tps = num("avg_ts")?;
    if !(mean_tps.is_finite() && mean_tps > 0.0) {
        return Err(format!("avg_ts {mean_tps} is not a positive rate"));
    }
    let samples_tps = t["samples_ts"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_f64()).collect())
        .unwrap_or_default();
    let build = format!(
        "{} ({})",
        t["build_commit"].as_str().unwrap_or("unknown"),
        t["build_number"].as_i64().unwrap_or(0)
    );
    Ok((
        BenchFigure {
            test,
            mean_tps,
            stddev_tps: num("stddev_ts").unwrap_or(0.0),
            samples_tps,
        },
        build,
    ))
}

/// Kills the child when dropped (a panic or an early return never leaves it running).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `bin args`, returns its stdout; an error (with the end of stderr) when it cannot start,
/// exits unsuccessfully, or is still running after `timeout` (then it is killed).
fn run_with_timeout(bin: &Path, args: &[String], timeout: Duration) -> Result<Vec<u8>, String> {
    let child = Command::new(bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("could not start: {e}"))?;
    let mut child = KillOnDrop(child);
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(child.0.stdout.take().map(|s| Box::new(s) as _));
    let err = drain(child.0.stderr.take().map(|s| Box::new(s) as _));
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.0.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                drop(child);
                return Err(format!("was killed after {} s", timeout.as_secs()));
            }
            Err(e) => return Err(format!("could not be waited for: {e}")),
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if status.success() {
        Ok(stdout)
    } else {
        let stderr = String::from_utf8_lossy(&stderr);
        let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        Err(format!("failed ({status}): {}", tail.join(" | ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<EngineEnv, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        EngineEnv::from_lookup(|k| m.get(k).cloned())
    }

    /// A cell whose table row gives `engine*3` and `engine*0.5`.
    fn spec() -> CellSpec {
        let text = "name,model,category,num_ctx,fill_tokens,num_batch,num_thread,ttft_max_s,tok_s_min,stability_min,use_case\n\
                    a,smollm2:135m,c,4K,1024,512,2,engine*3,engine*0.5,0.6,u\n";
        crate::matrix::parse(Path::new("m.csv"), text, 80.0)
            .unwrap()
            .remove(0)
    }

    fn figures() -> EngineFigures {
        let fig = |test: &str, mean_tps| BenchFigure {
            test: test.into(),
            mean_tps,
            stddev_tps: 1.0,
            samples_tps: vec![mean_tps - 1.0, mean_tps + 1.0],
        };
        EngineFigures {
            model_file: "/m/SmolLM2-135M-Instruct.Q4_1.gguf".into(),
            threads: 2,
            batch: 512,
            fill_tokens: 1024,
            num_predict: 128,
            prefill: fig("pp1024", 512.0),
            decode: fig("tg128 @ d1024", 50.0),
            ttft_s: 1024.0 / 512.0 + 1.0 / 50.0,
            load_allowance_s: LOAD_ALLOWANCE_S,
            commands: vec![],
            build: "abc (1)".into(),
            measured_at_unix_s: 0,
            wall_s: 1.0,
        }
    }

    #[test]
    fn relative_limits_are_factors_on_the_engine_plus_the_load_allowance() {
        let s = spec();
        let rel = RelativeGates {
            ttft_factor: Some(3.0),
            tok_s_factor: Some(0.5),
            engine: None,
        };
        let g = gates_from(&s, &rel, &figures());
        assert!((g.ttft_max_s - (3.0 * 2.02 + 0.5)).abs() < 1e-9, "{g:?}");
        assert_eq!(g.tok_s_min, 25.0);
        assert_eq!((g.stability_min, g.ram_max_pct), (0.6, 80.0));
        // An absolute gate beside a relative one is kept.
        let mut s = spec();
        s.gates.tok_s_min = 7.0;
        let only_ttft = RelativeGates {
            tok_s_factor: None,
            ..rel
        };
        assert_eq!(gates_from(&s, &only_ttft, &figures()).tok_s_min, 7.0);
    }

    #[test]
    fn unresolved_relative_gates_cannot_pass() {
        let s = spec();
        // What the table leaves in `gates` for engine*F: every TTFT ≥ 0 s and every decode rate
        // ≤ f64::MAX fails.
        assert_eq!(s.gates.ttft_max_s, 0.0);
        assert_eq!(s.gates.tok_s_min, f64::MAX);
    }

    #[test]
    fn missing_backend_is_an_error_that_says_how_to_set_it_up() {
        let s = spec();
        let dir = std::env::temp_dir().join(format!("o3-engine-none-{}", std::process::id()));
        let e = resolve_gates(&s, &RunDir::at(&dir), &env(&[]).unwrap()).unwrap_err();
        assert!(matches!(e, EngineError::NotConfigured(_)), "{e}");
        assert!(e.to_string().contains("O3_MODELS_DIR is unset"), "{e}");
        assert!(e.to_string().contains("setup-backend.sh"), "{e}");
        let e = env(&[("O3_LLAMA_BIN_DIR", "/nonexistent")])
            .unwrap()
            .llama_bench()
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("/nonexistent/llama-bench does not exist"),
            "{e}"
        );
        assert!(
            !dir.exists(),
            "nothing is written when nothing was measured"
        );
    }

    #[test]
    fn model_files() {
        let dir = std::env::temp_dir().join(format!("o3-engine-models-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("gemma-3-270m-q4_k_m.gguf"), b"").unwrap();
        let e = env(&[("O3_MODELS_DIR", dir.to_str().unwrap())]).unwrap();
        assert_eq!(
            e.model_file("gemma3:270m").unwrap(),
            dir.join("gemma-3-270m-q4_k_m.gguf")
        );
        let missing = e.model_file("smollm2:135m").unwrap_err();
        assert!(matches!(missing, EngineError::MissingFile(_)), "{missing}");
        let unknown = e.model_file("qwen2.5:3b-instruct").unwrap_err();
        assert!(
            unknown
                .to_string()
                .contains("known: smollm2:135m, gemma3:270m"),
            "{unknown}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_model_table_is_the_reference_servers() {
        let src = std::fs::read_to_string(
            crate::config::crate_root().join("harness/refserver/src/config.rs"),
        )
        .unwrap();
        let start = src.find("BUILTIN_MODELS").unwrap();
        let table = &src[start..start + src[start..].find("];").unwrap()];
        let pairs = table.matches("(\"").count();
        assert_eq!(pairs, MODEL_FILES.len(), "{table}");
        for (name, file) in MODEL_FILES {
            assert!(
                table.contains(&format!("(\"{name}\", \"{file}\")")),
                "{name} → {file} is not in the reference server's table:\n{table}"
            );
        }
    }

    #[test]
    fn bench_arguments_and_key() {
        let req =
            BenchRequest::for_cell(&spec(), PathBuf::from("/m/SmolLM2-135M-Instruct.Q4_1.gguf"));
        assert_eq!(req.key(), "SmolLM2-135M-Instruct.Q4_1_t2_b512_f1024_n128");
        let [pp, tg] = req.args(2);
        let common = "-m /m/SmolLM2-135M-Instruct.Q4_1.gguf -t 2 -b 512 -ub 512 -r 2 -o json";
        assert_eq!(pp.join(" "), format!("{common} -p 1024 -n 0 -d 0"));
        assert_eq!(tg.join(" "), format!("{common} -p 0 -n 128 -d 1024"));
        let mut big = req.clone();
        big.batch = 2048;
        assert!(big.args(1)[0].join(" ").contains("-b 2048 -ub 2048 -r 1"));
    }

    #[test]
    fn llama_bench_json_is_read() {
        // The fields llama-bench -o json prints per test (tools/llama-bench/llama-bench.cpp).
        let out = br#"[{"build_commit": "35b197c", "build_number": 11434, "n_prompt": 0,
            "n_gen": 128, "n_depth": 1024, "avg_ns": 1, "stddev_ns": 1, "avg_ts": 41.5,
            "stddev_ts": 0.7, "samples_ns": [1, 1], "samples_ts": [41.0, 42.0]}]"#;
        let (fig, build) = parse_bench_json(out).unwrap();
        assert_eq!(fig.test, "tg128 @ d1024");
        assert_eq!((fig.mean_tps, fig.stddev_tps), (41.5, 0.7));
        assert_eq!(fig.samples_tps, [41.0, 42.0]);
        assert_eq!(build, "35b197c (11434)");
        assert!(parse_bench_json(b"[]").unwrap_err().contains("0 tests"));
        assert!(parse_bench_json(b"not json").is_err());
        let zero = br#"[{"n_prompt": 8, "n_gen": 0, "n_depth": 0, "avg_ts": 0}]"#;
        assert!(
            parse_bench_json(zero)
                .unwrap_err()
                .contains("not a positive rate")
        );
    }

    #[test]
    fn a_cached_file_is_reused_only_for_the_same_request() {
        let root = std::env::temp_dir().join(format!("o3-engine-cache-{}", std::process::id()));
        let dir = RunDir::at(&root);
        let f = figures();
        let req = BenchRequest {
            model_file: PathBuf::from(&f.model_file),
            threads: 2,
            batch: 512,
            fill_tokens: 1024,
            num_predict: 128,
        };
        let path = dir.engine_path(&req.key());
        write_atomic(&path, &serde_json::to_vec(&f).unwrap()).unwrap();
        // No llama-bench configured: only the cache can answer.
        let none = env(&[]).unwrap();
        assert_eq!(cached_bench(&none, &req, &dir).unwrap(), f);
        // A file whose figures are for other options is not trusted.
        let mut other = f.clone();
        other.threads = 1;
        write_atomic(&path, &serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(cached_bench(&none, &req, &dir).is_err());
        // Nor is a broken one.
        std::fs::write(&path, b"{").unwrap();
        assert!(cached_bench(&none, &req, &dir).is_err());
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_failing_llama_bench_is_an_error_with_its_stderr() {
        let dir = std::env::temp_dir().join(format!("o3-engine-fail-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = dir.join("llama-bench");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'error: failed to load model' >&2\nexit 3\n",
        )
        .unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let e = env(&[("O3_LLAMA_BIN_DIR", dir.to_str().unwrap())]).unwrap();
        let req = BenchRequest::for_cell(&spec(), dir.join("x.gguf"));
        let err = bench(&e, &req).unwrap_err();
        assert!(matches!(err, EngineError::Bench { .. }), "{err}");
        assert!(err.to_string().contains("failed to load model"), "{err}");
        assert!(err.to_string().contains("-p 1024 -n 0"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn directories_come_from_backend_env_when_unset() {
        let cache = std::env::temp_dir().join(format!("o3-engine-env-{}", std::process::id()));
        std::fs::create_dir_all(&cache).unwrap();
        std::fs::write(
            cache.join("backend.env"),
            "O3_LLAMA_BIN_DIR=/c/bin\nO3_MODELS_DIR=/c/models\n",
        )
        .unwrap();
        let c = cache.to_str().unwrap();
        let e = env(&[("O3_CACHE", c)]).unwrap();
        assert_eq!(e.bin_dir.as_deref(), Some(Path::new("/c/bin")));
        assert_eq!(e.models_dir.as_deref(), Some(Path::new("/c/models")));
        let e = env(&[("O3_CACHE", c), ("O3_MODELS_DIR", "/mine")]).unwrap();
        assert_eq!(e.models_dir.as_deref(), Some(Path::new("/mine")));
        std::fs::remove_dir_all(&cache).unwrap();
    }

    #[test]
    fn engine_reps_parse_strictly() {
        assert_eq!(env(&[]).unwrap().repetitions, DEFAULT_REPETITIONS);
        assert_eq!(env(&[("O3_ENGINE_REPS", "3")]).unwrap().repetitions, 3);
        assert_eq!(env(&[("O3_ENGINE_REPS", "100")]).unwrap().repetitions, 100);
        for bad in ["0", "101", "1.5", "x"] {
            let e = env(&[("O3_ENGINE_REPS", bad)]).unwrap_err();
            assert_eq!(e.var, "O3_ENGINE_REPS");
            assert!(e.to_string().contains("from 1 to 100"), "{e}");
        }
    }
}
