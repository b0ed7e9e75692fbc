//! Entry point of the tollgate proxy: reads the configuration, starts the janitor that sweeps
//! idle buckets, the upstream health checker and the admin API, then serves the listener.

mod admin;
mod config;
mod health;
mod limiter;
mod listener;
mod metrics;
mod proxy;
mod shard;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::admin::{AdminState, RecentKeys};
use crate::config::{apply_env, config_path, validate, Config, ConfigError, Upstream};
use crate::limiter::DEFAULT_REFILL_PER_SEC;
use crate::shard::ShardedLimiter;

/// How often the janitor sweeps idle buckets out of every shard.
const SWEEP_INTERVAL: Duration = Duration::from_secs(37);

/// Exit status when the configuration is invalid (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// The only file schema this release reads (written by tools/migrate_config.py).
const SUPPORTED_SCHEMA: u32 = 4;

/// How long in-flight requests may finish after SIGTERM before the process exits.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(29);

#[derive(Debug, Deserialize)]
struct FileConfig {
    schema: u32,
    listen_port: Option<u16>,
    admin_port: Option<u16>,
    access_log: Option<PathBuf>,
    #[serde(default)]
    limits: FileLimits,
    #[serde(default, rename = "upstream")]
    upstreams: Vec<FileUpstream>,
}

#[derive(Debug, Default, Deserialize)]
struct FileLimits {
    default_rate_per_sec: Option<f64>,
    #[serde(default)]
    route: BTreeMap<String, f64>,
}

#[derive(Debug, Deserialize)]
struct FileUpstream {
    name: String,
    address: String,
    weight: u32,
}

/// Reads `path` into a [`Config`] and the per-route rates; the file's values over the defaults.
fn read_file(path: &Path) -> Result<(Config, Vec<(String, f64)>), ConfigError> {
    let bad = |found: String, allowed: &str| ConfigError {
        setting: path.display().to_string(),
        found,
        allowed: allowed.to_string(),
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string(), "a readable file"))?;
    let file: FileConfig = toml::from_str(&text).map_err(|e| bad(e.to_string(), "valid TOML"))?;
    if file.schema != SUPPORTED_SCHEMA {
        return Err(bad(
            format!("schema {}", file.schema),
            "schema 4 (run tools/migrate_config.py)",
        ));
    }
    let mut cfg = Config::default();
    if let Some(p) = file.listen_port {
        cfg.listen_port = p;
    }
    if let Some(p) = file.admin_port {
        cfg.admin_port = p;
    }
    cfg.access_log = file.access_log;
    for u in file.upstreams {
        let address = u
            .address
            .parse()
            .map_err(|_| bad(u.address.clone(), "host:port of an upstream"))?;
        cfg.upstreams.push(Upstream {
            name: u.name,
            address,
            weight: u.weight,
        });
    }
    if let Some(r) = file.limits.default_rate_per_sec.filter(|&r| r != DEFAULT_REFILL_PER_SEC) {
        return Err(bad(
            format!("default_rate_per_sec = {r}"),
            "12.5, the built-in default (set route rates instead)",
        ));
    }
    Ok((cfg, file.limits.route.into_iter().collect()))
}

/// The configuration: the file, then the environment, then validation.
fn load() -> Result<(Config, Vec<(String, f64)>), ConfigError> {
    let (mut cfg, rates) = read_file(&config_path())?;
    apply_env(&mut cfg, |k| std::env::var(k).ok())?;
    validate(&cfg)?;
    Ok((cfg, rates))
}

/// Sweeps every shard each [`SWEEP_INTERVAL`] and counts what went.
fn spawn_janitor(limiter: Arc<ShardedLimiter>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("janitor".into())
        .spawn(move || loop {
            thread::sleep(SWEEP_INTERVAL);
            let evicted = limiter.sweep_all(Instant::now());
            metrics::record_evictions(evicted);
        })
        .expect("the janitor thread starts")
}

fn main() -> ExitCode {
    let (cfg, rates) = match load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tollgate: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let limiter = Arc::new(ShardedLimiter::new(shard::DEFAULT_SHARDS));
    for (route, rate) in &rates {
        limiter.set_route_rate(route, *rate);
    }
    let health = Arc::new(Mutex::new(health::HealthTable::new(&cfg.upstreams)));
    let _janitor = spawn_janitor(Arc::clone(&limiter));
    let _checker = health::spawn_checker(cfg.upstreams.clone(), Arc::clone(&health));
    let state = Arc::new(AdminState {
        limiter: Arc::clone(&limiter),
        health: Arc::clone(&health),
        recent: Mutex::new(RecentKeys::default()),
        started: Instant::now(),
    });
    if let Err(e) = admin::serve(cfg.admin_port, Arc::clone(&state)) {
        eprintln!("tollgate: admin port {}: {e}", cfg.admin_port);
        return ExitCode::from(EXIT_CONFIG);
    }
    eprintln!(
        "tollgate: listening on :{} ({} upstreams, admin on 127.0.0.1:{})",
        cfg.listen_port,
        cfg.upstreams.len(),
        cfg.admin_port
    );
    listener::run(&cfg, state, SHUTDOWN_GRACE)
}
