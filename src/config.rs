//! Configuration: environment variables read once into a typed struct.
//!
//! Every variable is parsed strictly: a value that does not parse is an error naming the
//! variable, the value and what is allowed. See the README for the full list.

use std::ops::Bound::{self, Excluded, Included, Unbounded};
use std::ops::RangeBounds;
use std::path::PathBuf;
use std::time::Duration;

/// Default Ollama address when `OLLAMA_HOST` is unset.
pub const DEFAULT_HOST: &str = "127.0.0.1:11434";

/// Harness configuration (defaults in each field's doc). Its `Debug` shows the server through
/// [`Config::display_url`].
#[derive(Clone, PartialEq)]
pub struct Config {
    /// Base URL of the server for requests, from `OLLAMA_HOST` (with or without scheme):
    /// `scheme://[userinfo@]host:port`. Default `http://127.0.0.1:11434`. It holds the
    /// credentials when `OLLAMA_HOST` does: record or print [`Config::display_url`] or
    /// [`Config::host_label`], never this; request with [`Config::url`].
    pub base_url: String,
    /// The query of `OLLAMA_HOST` (without the `?`), sent with every request (e.g. a token for
    /// a reverse proxy); `None` when there is none. Secret like the userinfo.
    pub base_query: Option<String>,
    /// `O3_REQUIRE_SERVER=1`: a cell that cannot run fails instead of being ignored. Default off.
    pub require_server: bool,
    /// `O3_MATRIX`: the matrix table. Default `harness/matrix.csv` in the crate.
    pub matrix_path: PathBuf,
    /// `O3_RESULTS_DIR`: where run directories go. Default `target/o3-results` in the crate.
    pub results_dir: PathBuf,
    /// `O3_RUN_ID`: name of this run's directory. Default: nextest's run id, else a timestamp.
    pub run_id: Option<String>,
    /// `O3_CONNECT_TIMEOUT_S`: TCP connect timeout. Default 5 s.
    pub connect_timeout: Duration,
    /// `O3_FIRST_CHUNK_TIMEOUT_S`: request sent → first chunk; covers model load and prefill.
    /// Default 600 s.
    pub first_chunk_timeout: Duration,
    /// `O3_CHUNK_GAP_TIMEOUT_S`: longest silence between two chunks of a stream. Default 60 s.
    pub chunk_gap_timeout: Duration,
    /// `O3_TRIAL_TIMEOUT_S`: the whole of one request. Default 1800 s.
    pub trial_timeout: Duration,
    /// `O3_UNLOAD_TIMEOUT_S`: how long to wait for a runner to go after an unload. Default 60 s.
    pub unload_timeout: Duration,
    /// `O3_MIN_TRIALS`: measured trials before the stopping rule may stop. Default 3.
    pub min_trials: u32,
    /// `O3_MAX_TRIALS`: measured trials at most. Default 10.
    pub max_trials: u32,
    /// `O3_RAM_LIMIT_PCT`: system RAM share at which a cell is stopped. Default 80.
    pub ram_limit_pct: f64,
    /// `O3_SAMPLE_HZ`: hardware sampling rate. Default 5 Hz (at least 5).
    pub sample_hz: f64,
    /// `O3_SEED`: sampling seed sent with every request. Default 42.
    pub seed: u64,
    /// `O3_BUSY_CPU_PCT`: the share of the machine's CPU other processes may use during a trial
    /// before it is invalid as "host busy" (100 turns the guard off). Default: derived per cell
    /// from its `num_thread` (see `monitor::default_busy_limit_pct`).
    pub busy_cpu_pct: Option<f64>,
    /// `O3_BASELINE`, `O3_BASELINE_THRESHOLD`, `O3_BASELINE_WARN_ONLY`: the run every cell is
    /// compared with ([`crate::baseline`]). Default: none.
    pub baseline: crate::baseline::BaselineSettings,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be left out (or printed unredacted) silently.
        let Config {
            base_url: _,
            base_query: _,
            require_server,
            matrix_path,
            results_dir,
            run_id,
            connect_timeout,
            first_chunk_timeout,
            chunk_gap_timeout,
            trial_timeout,
            unload_timeout,
            min_trials,
            max_trials,
            ram_limit_pct,
            sample_hz,
            seed,
            busy_cpu_pct,
            baseline,
        } = self;
        f.debug_struct("Config")
            .field("server", &self.display_url())
            .field("require_server", require_server)
            .field("matrix_path", matrix_path)
            .field("results_dir", results_dir)
            .field("run_id", run_id)
            .field("connect_timeout", connect_timeout)
            .field("first_chunk_timeout", first_chunk_timeout)
            .field("chunk_gap_timeout", chunk_gap_timeout)
            .field("trial_timeout", trial_timeout)
            .field("unload_timeout", unload_timeout)
            .field("min_trials", min_trials)
            .field("max_trials", max_trials)
            .field("ram_limit_pct", ram_limit_pct)
            .field("sample_hz", sample_hz)
            .field("seed", seed)
            .field("busy_cpu_pct", busy_cpu_pct)
            .field("baseline", baseline)
            .finish()
    }
}

/// A configuration error: which variable, what value, what is allowed.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("invalid {var}={value:?}: {allowed}")]
pub struct ConfigError {
    /// The variable.
    pub var: String,
    /// Its value.
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

/// The crate's root directory (where `Cargo.toml` is).
pub fn crate_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Default for Config {
    fn default() -> Self {
        let root = crate_root();
        Config {
            base_url: normalize_host(DEFAULT_HOST).expect("default host is valid"),
            base_query: None,
            require_server: false,
            matrix_path: root.join("harness").join("matrix.csv"),
            results_dir: std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| root.join("target"))
                .join("o3-results"),
            run_id: None,
            connect_timeout: Duration::from_secs(5),
            first_chunk_timeout: Duration::from_secs(600),
            chunk_gap_timeout: Duration::from_secs(60),
            trial_timeout: Duration::from_secs(1800),
            unload_timeout: Duration::from_secs(60),
            min_trials: 3,
            max_trials: 10,
            ram_limit_pct: 80.0,
            sample_hz: 5.0,
            seed: 42,
            busy_cpu_pct: None,
            baseline: Default::default(),
        }
    }
}

/// What `OLLAMA_HOST` names: the base URL requests start with and the query sent with each.
#[derive(Clone, PartialEq, Eq)]
pub struct HostUrl {
    /// `scheme://[userinfo@]host:port`.
    pub base_url: String,
    /// The query without the `?`, `None` when there is none or it is empty.
    pub query: Option<String>,
}

impl std::fmt::Debug for HostUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostUrl")
            .field("base_url", &redact_url(&self.base_url))
            .field("query", &self.query.as_deref().map(redact_query))
            .finish()
    }
}

/// Turns an `OLLAMA_HOST` value into a base URL: adds `http://` when there is no scheme and
/// the default port 11434 when there is none; `0.0.0.0` (a listen address) becomes 127.0.0.1.
/// Userinfo (`user:password@`) and a query (`?token=…`) are kept for requests
/// ([`parse_host`] returns the query); error messages show the value through [`redact_url`].
pub fn normalize_host(raw: &str) -> Result<String, ConfigError> {
    parse_host(raw).map(|h| h.base_url)
}

/// [`normalize_host`] with the query.
pub fn parse_host(raw: &str) -> Result<HostUrl, ConfigError> {
    let err = |why: &str| ConfigError {
        var: "OLLAMA_HOST".into(),
        value: redact_url(raw),
        allowed: format!(
            "{why}; expected host[:port] or http(s)://[user:password@]host[:port][?query]"
        ),
    };
    let s = raw.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.contains('#') {
        return Err(err(
            "a fragment ('#') is not supported (percent-encode a '#' of a password as %23)",
        ));
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((sc, rest)) if sc == "http" || sc == "https" => (sc, rest),
        Some((sc, _)) => return Err(err(&format!("unsupported scheme {sc:?}"))),
        None => ("http", s),
    };
    // The userinfo ends at the last '@' (as `redact_url` reads it), the query starts at the
    // first '?' after it.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, rest),
    };
    if userinfo.is_some_and(|u| u.contains(['/', '?'])) {
        return Err(err(
            "'/' or '?' before the last '@': percent-encode '/', '?' and '@' in a user name or password (%2F, %3F, %40) and '@' in the query (%40)",
        ));
    }
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q).filter(|q| !q.is_empty())),
        None => (rest, None),
    };
    let rest = rest.trim_end_matches('/');
    if rest.contains('/') {
        return Err(err("a path after the host is not supported"));
    }
    let (host, port) = if let Some(stripped) = rest.strip_prefix('[') {
        // [v6]:port
        let (h, after) = stripped
            .split_once(']')
            .ok_or_else(|| err("unclosed '['"))?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(err("junk after ']'")),
        };
        (format!("[{h}]"), port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (rest.to_string(), None),
        }
    };
    let host = if host.is_empty() || host == "0.0.0.0" {
        "127.0.0.1".to_string()
    } else {
        host
    };
    let port: u16 = match port {
        Some(p) => p
            .parse()
            .map_err(|_| err(&format!("port {p:?} is not a number 0-65535")))?,
        None if s.contains("://") && scheme == "https" => 443,
        None if s.contains("://") => 80,
        None => 11434,
    };
    let userinfo = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    let parsed = HostUrl {
        base_url: format!("{scheme}://{userinfo}{host}:{port}"),
        query: query.map(str::to_string),
    };
    // What the HTTP client will be given must be a URL it takes (its errors do not quote the
    // value).
    reqwest::Url::parse(&join_url(&parsed.base_url, parsed.query.as_deref(), "/"))
        .map_err(|e| err(&format!("not a valid URL ({e})")))?;
    Ok(parsed)
}

/// The URL of `path` (e.g. `/api/version`) on the server at `base_url`, with `query`.
pub fn join_url(base_url: &str, query: Option<&str>, path: &str) -> String {
    match query {
        Some(q) => format!("{base_url}{path}?{q}"),
        None => format!("{base_url}{path}"),
    }
}

/// A URL (or an `OLLAMA_HOST` value, valid or not) as it may be recorded or printed:
/// everything between the scheme and the last `@` (user name and password) becomes `***`,
/// every query parameter's value becomes `***` (the names stay; a parameter without `=`
/// becomes `***`), and a fragment becomes `#***`. Scheme, host, port and path stay.
///
/// Every query value is hidden, not only token-like names: Ollama reads no query parameter, so
/// one in `OLLAMA_HOST` is for something in between (a proxy), most likely a credential.
pub fn redact_url(raw: &str) -> String {
    let (scheme, rest) = match raw.find("://") {
        Some(i) => raw.split_at(i + 3),
        None => ("", raw),
    };
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((_, r)) => ("***@", r),
        None => ("", rest),
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, _)) => (r, "#***"),
        None => (rest, ""),
    };
    match rest.split_once('?') {
        Some((before, query)) => {
            format!(
                "{scheme}{userinfo}{before}?{}{fragment}",
                redact_query(query)
            )
        }
        None => format!("{scheme}{userinfo}{rest}{fragment}"),
    }
}

/// A query (without the `?`) with every value replaced by `***`.
fn redact_query(query: &str) -> String {
    query
        .split('&')
        .map(|part| match part.split_once('=') {
            Some((name, _)) => format!("{name}=***"),
            None if part.is_empty() => String::new(),
            None => "***".to_string(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

pub(crate) fn parse_bool(var: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(ConfigError {
            var: var.into(),
            value: value.into(),
            allowed: "one of 1, 0, true, false, yes, no, on, off".into(),
        }),
    }
}

/// A kind of number a value may be: what [`NumberIn`] parses into.
pub trait Number: std::str::FromStr + PartialOrd + Copy {
    /// Whether the value is a real number (false for infinities and NaN).
    fn is_finite_number(self) -> bool;
}

impl Number for f64 {
    fn is_finite_number(self) -> bool {
        self.is_finite()
    }
}

impl Number for u32 {
    fn is_finite_number(self) -> bool {
        true
    }
}

impl Number for u64 {
    fn is_finite_number(self) -> bool {
        true
    }
}

/// "A number in a range": the one parser behind the environment variables (here), the matrix
/// table's number columns ([`crate::matrix`]) and the optimizer's settings
/// ([`crate::optimize::OptConfig`]). `allowed` is what error messages say is allowed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NumberIn<T> {
    /// Lower end.
    pub min: Bound<T>,
    /// Upper end.
    pub max: Bound<T>,
    /// What is allowed, in words, e.g. `a whole number ≥ 1`.
    pub allowed: &'static str,
}

impl<T: Number> NumberIn<T> {
    /// The range from `min` to `max`, described as `allowed`.
    pub const fn new(min: Bound<T>, max: Bound<T>, allowed: &'static str) -> Self {
        NumberIn { min, max, allowed }
    }

    /// Parses `value` (surrounding whitespace ignored); `Err(allowed)` when it is not a finite
    /// number of this kind inside the range.
    pub fn parse(&self, value: &str) -> Result<T, &'static str> {
        match value.trim().parse::<T>() {
            Ok(v) if v.is_finite_number() && (self.min, self.max).contains(&v) => Ok(v),
            _ => Err(self.allowed),
        }
    }

    /// [`NumberIn::parse`] of environment variable `var`, with the error naming it.
    pub fn parse_var(&self, var: &str, value: &str) -> Result<T, ConfigError> {
        self.parse(value).map_err(|allowed| ConfigError {
            var: var.into(),
            value: value.into(),
            allowed: allowed.into(),
        })
    }
}

/// Seconds of a timeout: from 0.1 s (less cannot even connect) to a day (more is a hung run,
/// and keeps every sum of timeouts far from overflowing a `Duration` or an `Instant`).
const SECONDS: NumberIn<f64> = NumberIn::new(
    Included(0.1),
    Included(86_400.0),
    "a number of seconds from 0.1 to 86400 (one day)",
);
/// A count of trials, probes, threads…: a whole number ≥ 1.
pub const COUNT: NumberIn<u32> = NumberIn::new(Included(1), Unbounded, "a whole number ≥ 1");
/// Measured trials of a cell: at least one, at most a thousand (each takes seconds to minutes).
const TRIALS: NumberIn<u32> =
    NumberIn::new(Included(1), Included(1000), "a whole number from 1 to 1000");
/// A share of system RAM.
pub const PERCENT: NumberIn<f64> =
    NumberIn::new(Excluded(0.0), Included(100.0), "a percentage in (0, 100]");
const SAMPLE_HZ: NumberIn<f64> =
    NumberIn::new(Included(5.0), Included(100.0), "a rate from 5 to 100 (Hz)");
const SEED: NumberIn<u64> = NumberIn::new(
    Included(0),
    Included(u64::MAX),
    "a whole number from 0 to 18446744073709551615",
);

impl Config {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads the configuration through `get` (the environment, or a map in tests).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut c = Config::default();
        if let Some(v) = get("OLLAMA_HOST").filter(|v| !v.trim().is_empty()) {
            let h = parse_host(&v)?;
            c.base_url = h.base_url;
            c.base_query = h.query;
        }
        if let Some(v) = get("O3_REQUIRE_SERVER") {
            c.require_server = parse_bool("O3_REQUIRE_SERVER", &v)?;
        }
        if let Some(v) = get("O3_MATRIX").filter(|v| !v.is_empty()) {
            let p = PathBuf::from(v);
            c.matrix_path = if p.is_relative() {
                crate_root().join(p)
            } else {
                p
            };
        }
        if let Some(v) = get("O3_RESULTS_DIR").filter(|v| !v.is_empty()) {
            c.results_dir = PathBuf::from(v);
        }
        if let Some(v) = get("O3_RUN_ID").filter(|v| !v.is_empty()) {
            if v.contains('/') || v.starts_with('.') {
                return Err(ConfigError {
                    var: "O3_RUN_ID".into(),
                    value: v,
                    allowed: "a directory name without '/' that does not start with '.'".into(),
                });
            }
            c.run_id = Some(v);
        }
        let secs = |var: &str, target: &mut Duration| -> Result<(), ConfigError> {
            if let Some(v) = get(var) {
                *target = Duration::from_secs_f64(SECONDS.parse_var(var, &v)?);
            }
            Ok(())
        };
        secs("O3_CONNECT_TIMEOUT_S", &mut c.connect_timeout)?;
        secs("O3_FIRST_CHUNK_TIMEOUT_S", &mut c.first_chunk_timeout)?;
        secs("O3_CHUNK_GAP_TIMEOUT_S", &mut c.chunk_gap_timeout)?;
        secs("O3_TRIAL_TIMEOUT_S", &mut c.trial_timeout)?;
        secs("O3_UNLOAD_TIMEOUT_S", &mut c.unload_timeout)?;
        if let Some(v) = get("O3_MIN_TRIALS") {
            c.min_trials = TRIALS.parse_var("O3_MIN_TRIALS", &v)?;
        }
        if let Some(v) = get("O3_MAX_TRIALS") {
            c.max_trials = TRIALS.parse_var("O3_MAX_TRIALS", &v)?;
        }
        if c.max_trials < c.min_trials {
            return Err(ConfigError {
                var: "O3_MAX_TRIALS".into(),
                value: c.max_trials.to_string(),
                allowed: format!("at least O3_MIN_TRIALS ({})", c.min_trials),
            });
        }
        if let Some(v) = get("O3_RAM_LIMIT_PCT") {
            c.ram_limit_pct = PERCENT.parse_var("O3_RAM_LIMIT_PCT", &v)?;
        }
        if let Some(v) = get("O3_BUSY_CPU_PCT").filter(|v| !v.trim().is_empty()) {
            c.busy_cpu_pct = Some(PERCENT.parse_var("O3_BUSY_CPU_PCT", &v)?);
        }
        if let Some(v) = get("O3_SAMPLE_HZ") {
            c.sample_hz = SAMPLE_HZ.parse_var("O3_SAMPLE_HZ", &v)?;
        }
        if let Some(v) = get("O3_SEED") {
            c.seed = SEED.parse_var("O3_SEED", &v)?;
        }
        c.baseline = crate::baseline::BaselineSettings::from_lookup(&get, &c.results_dir)?;
        Ok(c)
    }

    /// The URL of `path` (e.g. `/api/version`) for a request: userinfo and query included.
    pub fn url(&self, path: &str) -> String {
        join_url(&self.base_url, self.base_query.as_deref(), path)
    }

    /// The server's address as it is recorded and printed: [`redact_url`] of the whole
    /// `OLLAMA_HOST` URL, e.g. `http://***@proxy:8443?token=***`.
    pub fn display_url(&self) -> String {
        redact_url(&self.url(""))
    }

    /// `scheme://host:port`: the address without userinfo and query (to find the server's
    /// process, or to key anything by the server).
    pub fn origin(&self) -> String {
        match self.base_url.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://{}", self.host_label()),
            None => self.host_label().to_string(),
        }
    }

    /// The `host:port` part of the base URL (no userinfo), for messages.
    pub fn host_label(&self) -> &str {
        let rest = self
            .base_url
            .split_once("://")
            .map(|(_, h)| h)
            .unwrap_or(&self.base_url);
        rest.rsplit_once('@').map_or(rest, |(_, h)| h)
    }

    /// Variables that shaped this run, for the result metadata: `OLLAMA_HOST` and every value
    /// holding `://` through [`redact_url`].
    pub fn recorded_env() -> Vec<(String, String)> {
        Self::recorded_env_of(std::env::vars())
    }

    fn recorded_env_of(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = vars
            .filter(|(k, _)| k == "OLLAMA_HOST" || k.starts_with("O3_") || k == "NEXTEST_RUN_ID")
            .map(|(k, val)| {
                if k == "OLLAMA_HOST" || val.contains("://") {
                    let redacted = redact_url(&val);
                    (k, redacted)
                } else {
                    (k, val)
                }
            })
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::collections::HashMap;

    #[rstest]
    #[case("127.0.0.1:11434", "http://127.0.0.1:11434")]
    #[case("localhost", "http://localhost:11434")]
    #[case("http://example.local:8080", "http://example.local:8080")]
    #[case("http://example.local", "http://example.local:80")]
    #[case("https://example.local", "https://example.local:443")]
    #[case("0.0.0.0", "http://127.0.0.1:11434")]
    #[case(":9999", "http://127.0.0.1:9999")]
    #[case("[::1]:5000", "http://[::1]:5000")]
    #[case("127.0.0.1:11434/", "http://127.0.0.1:11434")]
    fn hosts(#[case] raw: &str, #[case] expected: &str) {
        assert_eq!(normalize_host(raw).unwrap(), expected);
    }

    #[rstest]
    #[case("ftp://x", "unsupported scheme")]
    #[case("host:notaport", "is not a number")]
    #[case("host:70000", "is not a number")]
    #[case("", "empty")]
    #[case("http://host/api", "path")]
    fn bad_hosts(#[case] raw: &str, #[case] needle: &str) {
        let e = normalize_host(raw).unwrap_err();
        assert_eq!(e.var, "OLLAMA_HOST");
        assert!(e.to_string().contains(needle), "{e}");
    }

    fn from(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| m.get(k).cloned())
    }

    #[test]
    fn defaults() {
        let c = from(&[]).unwrap();
        assert_eq!(c.base_url, "http://127.0.0.1:11434");
        assert!(!c.require_server);
        assert_eq!((c.min_trials, c.max_trials), (3, 10));
        assert_eq!(c.ram_limit_pct, 80.0);
        assert!(c.matrix_path.ends_with("harness/matrix.csv"));
    }

    #[test]
    fn values_are_read() {
        let c = from(&[
            ("OLLAMA_HOST", "10.1.2.3:1"),
            ("O3_REQUIRE_SERVER", "1"),
            ("O3_MIN_TRIALS", "2"),
            ("O3_MAX_TRIALS", "4"),
            ("O3_FIRST_CHUNK_TIMEOUT_S", "2.5"),
            ("O3_MATRIX", "harness/reference.csv"),
        ])
        .unwrap();
        assert_eq!(c.base_url, "http://10.1.2.3:1");
        assert!(c.require_server);
        assert_eq!((c.min_trials, c.max_trials), (2, 4));
        assert_eq!(c.first_chunk_timeout, Duration::from_millis(2500));
        assert!(c.matrix_path.is_absolute());
        assert!(c.matrix_path.ends_with("harness/reference.csv"));
    }

    #[rstest]
    #[case(" 2.5 ", Ok(2.5))]
    #[case("100", Ok(100.0))]
    #[case("0", Err(()))]
    #[case("100.5", Err(()))]
    #[case("inf", Err(()))]
    #[case("NaN", Err(()))]
    #[case("", Err(()))]
    fn numbers_in_a_range(#[case] value: &str, #[case] expected: Result<f64, ()>) {
        assert_eq!(
            PERCENT.parse(value).map_err(|allowed| {
                assert_eq!(allowed, "a percentage in (0, 100]");
            }),
            expected
        );
    }

    #[test]
    fn whole_numbers_in_a_range() {
        assert_eq!(COUNT.parse("1"), Ok(1));
        assert!(COUNT.parse("0").is_err());
        assert!(COUNT.parse("1.5").is_err());
        assert!(COUNT.parse("-1").is_err());
        assert_eq!(SEED.parse("0"), Ok(0));
        assert_eq!(SAMPLE_HZ.parse("5"), Ok(5.0));
        assert!(SAMPLE_HZ.parse("4.99").is_err());
    }

    #[rstest]
    #[case("O3_REQUIRE_SERVER", "maybe", "one of 1, 0")]
    #[case("O3_MIN_TRIALS", "0", "from 1 to 1000")]
    #[case("O3_MAX_TRIALS", "2", "at least O3_MIN_TRIALS")]
    #[case("O3_TRIAL_TIMEOUT_S", "-3", "from 0.1 to 86400")]
    #[case("O3_RAM_LIMIT_PCT", "150", "(0, 100]")]
    #[case("O3_RAM_LIMIT_PCT", "-3", "(0, 100]")]
    #[case("O3_SEED", "-1", "from 0 to 18446744073709551615")]
    #[case("O3_SAMPLE_HZ", "1", "from 5 to 100")]
    #[case("O3_RUN_ID", "../x", "without '/'")]
    fn bad_values_name_the_variable(#[case] var: &str, #[case] value: &str, #[case] allowed: &str) {
        let e = from(&[(var, value)]).unwrap_err();
        assert_eq!(e.var, var);
        assert!(e.to_string().contains(allowed), "{e}");
        assert!(e.to_string().contains(value), "{e}");
    }

    #[rstest::rstest]
    #[case(None, Ok(None))]
    #[case(Some(""), Ok(None))]
    #[case(Some(" 30 "), Ok(Some(30.0)))]
    #[case(Some("100"), Ok(Some(100.0)))]
    #[case(Some("0"), Err(()))]
    #[case(Some("100.5"), Err(()))]
    #[case(Some("-5"), Err(()))]
    #[case(Some("NaN"), Err(()))]
    #[case(Some("inf"), Err(()))]
    #[case(Some("lots"), Err(()))]
    fn the_busy_limit_variable(#[case] v: Option<&str>, #[case] want: Result<Option<f64>, ()>) {
        let got = Config::from_lookup(|k| {
            (k == "O3_BUSY_CPU_PCT")
                .then(|| v.map(str::to_string))
                .flatten()
        });
        match want {
            Ok(w) => assert_eq!(got.unwrap().busy_cpu_pct, w),
            Err(()) => {
                let e = got.unwrap_err();
                assert_eq!(e.var, "O3_BUSY_CPU_PCT");
                assert!(e.to_string().starts_with("invalid O3_BUSY_CPU_PCT="), "{e}");
            }
        }
    }

    /// Every numeric variable at and just past each end of its range, and the non-numbers.
    /// Columns: variable, lowest allowed, just below, highest allowed, just above, what the
    /// error says is allowed. (`O3_MIN_TRIALS` tops at the default `O3_MAX_TRIALS`, 10, and
    /// `O3_MAX_TRIALS` starts at the default `O3_MIN_TRIALS`, 3.)
    #[rstest]
    #[case(
        "O3_CONNECT_TIMEOUT_S",
        "0.1",
        "0.09",
        "86400",
        "86400.5",
        "from 0.1 to 86400"
    )]
    #[case(
        "O3_FIRST_CHUNK_TIMEOUT_S",
        "0.1",
        "0.09",
        "86400",
        "1e30",
        "from 0.1 to 86400"
    )]
    #[case(
        "O3_CHUNK_GAP_TIMEOUT_S",
        "0.1",
        "0",
        "86400",
        "86401",
        "from 0.1 to 86400"
    )]
    #[case(
        "O3_TRIAL_TIMEOUT_S",
        "0.1",
        "-1",
        "86400",
        "1e30",
        "from 0.1 to 86400"
    )]
    #[case(
        "O3_UNLOAD_TIMEOUT_S",
        "0.1",
        "0.0999",
        "86400",
        "1e300",
        "from 0.1 to 86400"
    )]
    #[case("O3_MIN_TRIALS", "1", "0", "10", "1001", "from 1 to 1000")]
    #[case("O3_MAX_TRIALS", "3", "0", "1000", "1001", "from 1 to 1000")]
    #[case("O3_RAM_LIMIT_PCT", "0.001", "0", "100", "100.01", "(0, 100]")]
    #[case("O3_SAMPLE_HZ", "5", "4.9", "100", "101", "from 5 to 100")]
    #[case(
        "O3_SEED",
        "0",
        "-1",
        "18446744073709551615",
        "18446744073709551616",
        "from 0 to 18446744073709551615"
    )]
    fn every_number_has_a_range(
        #[case] var: &str,
        #[case] lo: &str,
        #[case] below: &str,
        #[case] hi: &str,
        #[case] above: &str,
        #[case] allowed: &str,
    ) {
        for ok in [lo, hi] {
            let c = from(&[(var, ok)]);
            assert!(c.is_ok(), "{var}={ok} refused: {c:?}");
        }
        for value in [below, above, "NaN", "inf", "-inf", "x", ""] {
            let e = from(&[(var, value)]).unwrap_err();
            assert_eq!(e.var, var, "{e}");
            assert_eq!(e.value, value, "{e}");
            assert!(e.to_string().contains(allowed), "{var}={value}: {e}");
        }
    }

    #[test]
    fn bounds_reach_the_struct() {
        // The bounds reach the struct: a day is a day, and a trial count of 1000 fits.
        let c = from(&[("O3_TRIAL_TIMEOUT_S", "86400"), ("O3_MAX_TRIALS", "1000")]).unwrap();
        assert_eq!(c.trial_timeout, Duration::from_secs(86_400));
        assert_eq!(c.max_trials, 1000);
        assert_eq!(
            from(&[("O3_CONNECT_TIMEOUT_S", "0.1")])
                .unwrap()
                .connect_timeout,
            Duration::from_millis(100)
        );
    }

    #[rstest]
    #[case("http://user:pw@host:1", "http://***@host:1")]
    #[case("user:pw@host:1", "***@host:1")]
    #[case("http://host:1?token=t0k3n", "http://host:1?token=***")]
    #[case(
        "http://u:p@host:1?token=a&key=b&flag",
        "http://***@host:1?token=***&key=***&***"
    )]
    #[case("https://host/api?api_key=x#frag", "https://host/api?api_key=***#***")]
    // A password with an unencoded '@', '/' or '?': everything up to the last '@' goes.
    #[case("http://u:p@ss/w?rd@host:1", "http://***@host:1")]
    #[case("http://host:1", "http://host:1")]
    #[case("127.0.0.1:11434", "127.0.0.1:11434")]
    #[case("", "")]
    fn urls_are_redacted(#[case] raw: &str, #[case] shown: &str) {
        assert_eq!(redact_url(raw), shown);
    }

    #[test]
    fn credentials_are_kept_for_requests_and_hidden_everywhere_else() {
        let c = from(&[(
            "OLLAMA_HOST",
            "http://user:s3cr3tpw@127.0.0.1:8080/?token=t0k3n&x=1",
        )])
        .unwrap();
        assert_eq!(c.base_url, "http://user:s3cr3tpw@127.0.0.1:8080");
        assert_eq!(c.base_query.as_deref(), Some("token=t0k3n&x=1"));
        assert_eq!(
            c.url("/api/version"),
            "http://user:s3cr3tpw@127.0.0.1:8080/api/version?token=t0k3n&x=1"
        );
        assert_eq!(c.display_url(), "http://***@127.0.0.1:8080?token=***&x=***");
        assert_eq!(c.host_label(), "127.0.0.1:8080");
        assert_eq!(c.origin(), "http://127.0.0.1:8080");
        let debug = format!("{c:?}");
        assert!(
            !debug.contains("s3cr3tpw") && !debug.contains("t0k3n"),
            "{debug}"
        );
        let debug = format!("{:?}", parse_host("u:s3cr3tpw@h?token=t0k3n").unwrap());
        assert!(
            !debug.contains("s3cr3tpw") && !debug.contains("t0k3n"),
            "{debug}"
        );
        // Without a scheme, with an empty query, IPv6.
        let h = parse_host("u:p@[::1]:5?").unwrap();
        assert_eq!((h.base_url.as_str(), h.query), ("http://u:p@[::1]:5", None));
        let plain = from(&[]).unwrap();
        assert_eq!(plain.display_url(), "http://127.0.0.1:11434");
        assert_eq!(plain.origin(), plain.base_url);
    }

    #[rstest]
    #[case("http://user:s3cr3tpw@host:port?token=t0k3n", "is not a number")]
    #[case("http://user:s3cr3tpw@host/path?token=t0k3n", "path")]
    #[case("http://user:s3cr/3tpw@host:1?token=t0k3n", "percent-encode")]
    #[case("http://user:s3cr3tpw@host:1?token=t0k3n#x", "fragment")]
    #[case("http://user:s3cr3tpw@ho st:1?token=t0k3n", "not a valid URL")]
    fn bad_hosts_do_not_show_the_credentials(#[case] raw: &str, #[case] needle: &str) {
        let e = from(&[("OLLAMA_HOST", raw)]).unwrap_err();
        let shown = e.to_string();
        assert_eq!(e.var, "OLLAMA_HOST");
        assert!(shown.contains(needle), "{shown}");
        assert!(
            !shown.contains("s3cr") && !shown.contains("t0k3n"),
            "{shown}"
        );
    }

    #[test]
    fn recorded_env_is_redacted() {
        let vars = [
            ("OLLAMA_HOST", "user:s3cr3tpw@h:1?token=t0k3n"),
            ("O3_MONITOR_URL", "http://u:s3cr3tpw@h:2"),
            ("O3_MIN_TRIALS", "3"),
            ("HOME", "/root"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let rec = Config::recorded_env_of(vars.into_iter());
        assert_eq!(
            rec,
            [
                ("O3_MIN_TRIALS", "3"),
                ("O3_MONITOR_URL", "http://***@h:2"),
                ("OLLAMA_HOST", "***@h:1?token=***"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
    }
}
