//! Command line and environment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::keepalive::{KeepAlive, parse_go_duration};

/// Built-in Ollama library names → GGUF file names in the models directory.
pub const BUILTIN_MODELS: &[(&str, &str)] = &[
    ("smollm2:135m", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    ("gemma3:270m", "gemma-3-270m-q4_k_m.gguf"),
];

pub const USAGE: &str = "\
o3-refserver: an Ollama-compatible server that runs upstream llama.cpp llama-server runners.

Usage: o3-refserver [OPTIONS]

Options (each VALUE may also be given as --flag=VALUE):
  --listen ADDR              address to listen on (env O3_REFSERVER_LISTEN; default 127.0.0.1:11434)
  --models-dir DIR           directory holding the GGUF files (env O3_MODELS_DIR; required)
  --llama-server PATH        llama-server binary (env O3_LLAMA_SERVER, or O3_LLAMA_BIN_DIR/llama-server;
                             required)
  --model NAME=FILE          add a model name for a GGUF file in --models-dir (repeatable); built in:
                             smollm2:135m=SmolLM2-135M-Instruct.Q4_1.gguf,
                             gemma3:270m=gemma-3-270m-q4_k_m.gguf
  --max-loaded N             models loaded at once, N >= 1 (default 1)
  --default-keep-alive DUR   idle time before a model is unloaded: a Go duration (5m, 30s, -1m = forever)
                             or a number of seconds (default 5m)
  --load-timeout DUR         how long a runner may take to become healthy (default 120s)
  --log-dir DIR              where runner logs go (env O3_REFSERVER_LOG_DIR; default a temp dir)
  --runner-arg ARG           extra argument for every llama-server command line (repeatable; env
                             O3_REFSERVER_RUNNER_ARGS, whitespace-separated), e.g. --runner-arg=--no-repack
  --no-repack-fallback       do not retry a runner that dies of SIGSEGV/SIGILL while loading with
                             --no-repack (the retry works around llama.cpp builds whose native AMX
                             kernels fault on VMs that do not enable AMX state)
  -h, --help                 print this help
  -V, --version              print the version
";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub models_dir: PathBuf,
    pub llama_server: PathBuf,
    pub max_loaded: usize,
    pub default_keep_alive: KeepAlive,
    pub load_timeout: Duration,
    pub log_dir: Option<PathBuf>,
    /// Name → file name (relative to models_dir, or absolute).
    pub models: Vec<(String, String)>,
    /// Extra arguments appended to every llama-server command line.
    pub runner_args: Vec<String>,
    /// Retry a runner that crashes while loading once with `--no-repack` (see USAGE).
    pub repack_fallback: bool,
}

#[derive(Debug, PartialEq)]
pub enum Parsed {
    Run(Box<Config>),
    Help,
    Version,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("unknown argument {0:?} (run with --help for the list of options)")]
    Unknown(String),
    #[error("{0} needs a value")]
    MissingValue(String),
    #[error("{flag}: {msg}")]
    Bad { flag: String, msg: String },
    #[error("{0}")]
    Missing(String),
}

fn bad(flag: &str, msg: impl Into<String>) -> ConfigError {
    ConfigError::Bad {
        flag: flag.to_string(),
        msg: msg.into(),
    }
}

fn parse_keep_alive(flag: &str, v: &str) -> Result<KeepAlive, ConfigError> {
    if let Ok(secs) = v.parse::<f64>() {
        return Ok(KeepAlive::from_secs_f64(secs));
    }
    KeepAlive::parse_str(v).map_err(|e| {
        bad(
            flag,
            format!("{e}; expected a Go duration such as 5m, 30s, -1m, or a number of seconds"),
        )
    })
}

fn parse_duration(flag: &str, v: &str) -> Result<Duration, ConfigError> {
    let ns = match v.parse::<f64>() {
        Ok(secs) => (secs * 1e9) as i64,
        Err(_) => parse_go_duration(v).map_err(|e| {
            bad(
                flag,
                format!("{e}; expected a positive Go duration such as 120s or 2m"),
            )
        })?,
    };
    if ns <= 0 {
        return Err(bad(flag, format!("{v:?} must be positive")));
    }
    Ok(Duration::from_nanos(ns as u64))
}

/// Parse the command line (without the program name) and the environment.
pub fn parse(
    args: impl IntoIterator<Item = String>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Parsed, ConfigError> {
    let env_nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    let mut listen = env_nonempty("O3_REFSERVER_LISTEN");
    let mut models_dir = env_nonempty("O3_MODELS_DIR");
    let mut llama_server = env_nonempty("O3_LLAMA_SERVER")
        .or_else(|| env_nonempty("O3_LLAMA_BIN_DIR").map(|d| format!("{d}/llama-server")));
    let mut log_dir = env_nonempty("O3_REFSERVER_LOG_DIR");
    let mut max_loaded = 1usize;
    let mut keep_alive = KeepAlive::For(Duration::from_secs(300));
    let mut load_timeout = Duration::from_secs(120);
    let mut models: Vec<(String, String)> = BUILTIN_MODELS
        .iter()
        .map(|(n, f)| (n.to_string(), f.to_string()))
        .collect();

    let mut runner_args: Vec<String> = env_nonempty("O3_REFSERVER_RUNNER_ARGS")
        .map(|v| v.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let mut repack_fallback = true;

    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Parsed::Help),
            "-V" | "--version" => return Ok(Parsed::Version),
            "--no-repack-fallback" if inline.is_none() => {
                repack_fallback = false;
                continue;
            }
            "--listen"
            | "--models-dir"
            | "--llama-server"
            | "--model"
            | "--max-loaded"
            | "--default-keep-alive"
            | "--load-timeout"
            | "--log-dir"
            | "--runner-arg" => {}
            _ => return Err(ConfigError::Unknown(arg)),
        }
        let value = match inline {
            Some(v) => v,
            None => it
                .next()
                .ok_or_else(|| ConfigError::MissingValue(flag.clone()))?,
        };
        if value.is_empty() {
            return Err(ConfigError::MissingValue(flag));
        }
        match flag.as_str() {
            "--listen" => listen = Some(value),
            "--models-dir" => models_dir = Some(value),
            "--llama-server" => llama_server = Some(value),
            "--log-dir" => log_dir = Some(value),
            "--runner-arg" => runner_args.push(value),
            "--model" => {
                let (name, file) = value.split_once('=').ok_or_else(|| {
                    bad(
                        "--model",
                        format!("{value:?} is not NAME=FILE (e.g. tiny:1m=tiny.gguf)"),
                    )
                })?;
                if name.is_empty() || file.is_empty() {
                    return Err(bad(
                        "--model",
                        format!("{value:?}: both NAME and FILE must be non-empty"),
                    ));
                }
                models.retain(|(n, _)| n != name);
                models.push((name.to_string(), file.to_string()));
            }
            "--max-loaded" => {
                max_loaded = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        bad(
                            "--max-loaded",
                            format!("{value:?} is not a whole number >= 1"),
                        )
                    })?;
            }
            "--default-keep-alive" => keep_alive = parse_keep_alive(&flag, &value)?,
            "--load-timeout" => load_timeout = parse_duration(&flag, &value)?,
            _ => unreachable!(),
        }
    }

    let listen_str = listen.unwrap_or_else(|| "127.0.0.1:11434".to_string());
    let listen: SocketAddr = listen_str.parse().map_err(|_| {
        bad(
            "--listen",
            format!("{listen_str:?} is not an IP:PORT address such as 127.0.0.1:11434"),
        )
    })?;
    let models_dir = models_dir.ok_or_else(|| {
        ConfigError::Missing(
            "no models directory: pass --models-dir DIR or set O3_MODELS_DIR".to_string(),
        )
    })?;
    let llama_server = llama_server.ok_or_else(|| {
        ConfigError::Missing(
            "no llama-server binary: pass --llama-server PATH or set O3_LLAMA_SERVER (or O3_LLAMA_BIN_DIR)"
                .to_string(),
        )
    })?;
    Ok(Parsed::Run(Box::new(Config {
        listen,
        models_dir: PathBuf::from(models_dir),
        llama_server: PathBuf::from(llama_server),
        max_loaded,
        default_keep_alive: keep_alive,
        load_timeout,
        log_dir: log_dir.map(PathBuf::from),
        models,
        runner_args,
        repack_fallback,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        run_env(args, &[])
    }

    fn run_env(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        match parse(args.iter().map(|s| s.to_string()), |k| {
            env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
        })? {
            Parsed::Run(c) => Ok(*c),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_and_defaults() {
        let c = run(&[
            "--models-dir",
            "/m",
            "--llama-server=/bin/ls",
            "--model",
            "tiny:1m=t.gguf",
        ])
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:11434");
        assert_eq!(c.max_loaded, 1);
        assert_eq!(
            c.default_keep_alive,
            KeepAlive::For(Duration::from_secs(300))
        );
        assert_eq!(c.models.len(), 3);
        assert_eq!(c.models[2], ("tiny:1m".into(), "t.gguf".into()));
        assert!(c.repack_fallback);
        assert!(c.runner_args.is_empty());
        let c = run(&[
            "--models-dir=/m",
            "--llama-server=/x",
            "--runner-arg=--no-repack",
            "--runner-arg",
            "-fa",
            "--no-repack-fallback",
        ])
        .unwrap();
        assert_eq!(c.runner_args, ["--no-repack", "-fa"]);
        assert!(!c.repack_fallback);
    }

    #[test]
    fn env_fallbacks() {
        let c = run_env(
            &["--default-keep-alive", "-1"],
            &[
                ("O3_MODELS_DIR", "/m"),
                ("O3_LLAMA_BIN_DIR", "/b"),
                ("O3_REFSERVER_LISTEN", "127.0.0.1:5"),
            ],
        )
        .unwrap();
        assert_eq!(c.llama_server, PathBuf::from("/b/llama-server"));
        assert_eq!(c.listen.port(), 5);
        assert_eq!(c.default_keep_alive, KeepAlive::Forever);
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let e = run(&["--bogus"]).unwrap_err();
        assert!(e.to_string().contains("--bogus"), "{e}");
        let e = run(&["--models-dir"]).unwrap_err();
        assert_eq!(e, ConfigError::MissingValue("--models-dir".into()));
        let e = run(&["--llama-server", "x"]).unwrap_err();
        assert!(e.to_string().contains("--models-dir"), "{e}");
        // One bad flag after the required ones: the error names what was wrong.
        for (flag, value, says) in [
            ("--max-loaded", "0", ">= 1"),
            ("--listen", "nope", "IP:PORT"),
            ("--model", "abc", "NAME=FILE"),
            ("--default-keep-alive", "5q", "unknown unit"),
        ] {
            let e = run(&["--models-dir", "/m", "--llama-server", "x", flag, value]).unwrap_err();
            assert!(e.to_string().contains(says), "{flag} {value}: {e}");
        }
    }
}
