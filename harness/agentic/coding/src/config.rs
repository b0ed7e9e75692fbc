//! Configuration of the tollgate proxy: read from `tollgate.toml`, overridden by environment
//! variables (`TOLLGATE_*`), validated before the listener starts.

use std::env;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Port the proxy listens on when neither the file nor `TOLLGATE_PORT` sets one.
pub const DEFAULT_PORT: u16 = 7311;

/// Port of the admin API (metrics, bucket inspection), bound to loopback only.
pub const ADMIN_PORT: u16 = 7399;

/// How long an upstream may take to send its response headers.
pub const UPSTREAM_HEADER_TIMEOUT: Duration = Duration::from_secs(22);

/// Largest request body the proxy forwards (bytes): 8 MiB.
pub const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;

/// Where the configuration file is looked for when `TOLLGATE_CONFIG` is unset.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/tollgate/tollgate.toml";

/// A configuration problem: which setting, what was found, what is allowed.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    pub setting: String,
    pub found: String,
    pub allowed: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid setting {}: found {:?}, expected {}",
            self.setting, self.found, self.allowed
        )
    }
}

/// One upstream service the proxy forwards to.
#[derive(Debug, Clone, PartialEq)]
pub struct Upstream {
    pub name: String,
    pub address: SocketAddr,
    pub weight: u32,
}

/// The whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen_port: u16,
    pub admin_port: u16,
    pub upstreams: Vec<Upstream>,
    pub header_timeout: Duration,
    pub max_body_bytes: usize,
    pub access_log: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen_port: DEFAULT_PORT,
            admin_port: ADMIN_PORT,
            upstreams: Vec::new(),
            header_timeout: UPSTREAM_HEADER_TIMEOUT,
            max_body_bytes: MAX_BODY_BYTES,
            access_log: None,
        }
    }
}

fn port(setting: &str, value: &str) -> Result<u16, ConfigError> {
    match value.parse::<u16>() {
        Ok(p) if p >= 1024 => Ok(p),
        _ => Err(ConfigError {
            setting: setting.to_string(),
            found: value.to_string(),
            allowed: "a port from 1024 to 65535".to_string(),
        }),
    }
}

/// Applies the `TOLLGATE_*` variables over `cfg`.
pub fn apply_env(cfg: &mut Config, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
    if let Some(v) = get("TOLLGATE_PORT") {
        cfg.listen_port = port("TOLLGATE_PORT", &v)?;
    }
    if let Some(v) = get("TOLLGATE_ADMIN_PORT") {
        cfg.admin_port = port("TOLLGATE_ADMIN_PORT", &v)?;
    }
    if let Some(v) = get("TOLLGATE_HEADER_TIMEOUT_S") {
        let secs: u64 = v.parse().map_err(|_| ConfigError {
            setting: "TOLLGATE_HEADER_TIMEOUT_S".into(),
            found: v.clone(),
            allowed: "a whole number of seconds".into(),
        })?;
        cfg.header_timeout = Duration::from_secs(secs);
    }
    if let Some(v) = get("TOLLGATE_ACCESS_LOG") {
        cfg.access_log = Some(PathBuf::from(v));
    }
    Ok(())
}

/// Checks what a file cannot express: ports that differ, at least one upstream, weights > 0.
pub fn validate(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.listen_port == cfg.admin_port {
        return Err(ConfigError {
            setting: "admin_port".into(),
            found: cfg.admin_port.to_string(),
            allowed: format!("a port other than listen_port {}", cfg.listen_port),
        });
    }
    if cfg.upstreams.is_empty() {
        return Err(ConfigError {
            setting: "upstreams".into(),
            found: "none".into(),
            allowed: "at least one [[upstream]] table".into(),
        });
    }
    if let Some(u) = cfg.upstreams.iter().find(|u| u.weight == 0) {
        return Err(ConfigError {
            setting: format!("upstream.{}.weight", u.name),
            found: "0".into(),
            allowed: "a weight ≥ 1".into(),
        });
    }
    Ok(())
}

/// The configuration file's path: `TOLLGATE_CONFIG`, else [`DEFAULT_CONFIG_PATH`].
pub fn config_path() -> PathBuf {
    env::var_os("TOLLGATE_CONFIG")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(DEFAULT_CONFIG_PATH).to_path_buf())
}
