//! The admin API of the tollgate proxy, on loopback only: what web/dashboard.ts polls (through
//! web/api.ts) and what Prometheus scrapes. A tiny HTTP/1.1 server: GET only, one request per
//! connection, JSON or text bodies.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Instant;

use serde_json::json;

use crate::health::HealthTable;
use crate::limiter::BURST_CAPACITY;
use crate::metrics;
use crate::shard::{key_hash, ShardedLimiter};

/// The admin API binds here only: it has no authentication.
pub const ADMIN_BIND: &str = "127.0.0.1";

/// Prefix of the JSON routes.
pub const API_PREFIX: &str = "/admin/v1";

/// Estimated memory of one bucket (key, bucket, map overhead), for `/memory`.
pub const BYTES_PER_BUCKET: usize = 176;

/// Distinct keys remembered for the quota table, the most recent first.
pub const RECENT_KEYS_KEPT: usize = 2048;

/// The keys seen lately, newest at the front; fed by the listener for every request.
#[derive(Default)]
pub struct RecentKeys {
    keys: VecDeque<String>,
}

impl RecentKeys {
    /// Moves `key` to the front, dropping the oldest past [`RECENT_KEYS_KEPT`].
    pub fn note_key(&mut self, key: &str) {
        if let Some(i) = self.keys.iter().position(|k| k == key) {
            self.keys.remove(i);
        }
        self.keys.push_front(key.to_string());
        self.keys.truncate(RECENT_KEYS_KEPT);
    }
}

/// What the handlers read.
pub struct AdminState {
    pub limiter: Arc<ShardedLimiter>,
    pub health: Arc<Mutex<HealthTable>>,
    pub recent: Mutex<RecentKeys>,
    pub started: Instant,
}

/// One row per recent key: its tokens left (the shape of `QuotaRow` in web/api.ts).
pub fn quota_rows(state: &AdminState, now: Instant) -> serde_json::Value {
    let recent = state.recent.lock().expect("recent lock");
    let rows: Vec<_> = recent
        .keys
        .iter()
        .filter_map(|k| {
            let tokens = state.limiter.tokens_left(k, now)?;
            Some(json!({
                "key": k,
                "hash": format!("{:016x}", key_hash(k)),
                "tokens": tokens,
                "burst": BURST_CAPACITY,
            }))
        })
        .collect();
    serde_json::Value::Array(rows)
}

/// The limiter's estimated memory and its balance over the shards.
pub fn memory_estimate(state: &AdminState) -> serde_json::Value {
    let sizes = state.limiter.shard_sizes();
    let buckets: usize = sizes.iter().sum();
    json!({
        "bytes": buckets * BYTES_PER_BUCKET,
        "buckets": buckets,
        "largest_shard": sizes.iter().max().copied().unwrap_or(0),
        "shards": sizes.len(),
    })
}

/// The upstream health table (the shape of `UpstreamHealth` in web/api.ts).
pub fn upstream_list(state: &AdminState) -> serde_json::Value {
    let health = state.health.lock().expect("health lock");
    let list: Vec<_> = health
        .states()
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "address": s.address.to_string(),
                "healthy": s.healthy,
                "latencyMs": s.last_latency.map_or(0, |d| d.as_millis() as u64),
            })
        })
        .collect();
    serde_json::Value::Array(list)
}

/// The status, content type and body of `GET path`.
pub fn route(state: &AdminState, path: &str) -> (u16, &'static str, String) {
    const JSON: &str = "application/json";
    match path.strip_prefix(API_PREFIX) {
        Some("/quotas") => (200, JSON, quota_rows(state, Instant::now()).to_string()),
        Some("/memory") => (200, JSON, memory_estimate(state).to_string()),
        Some("/upstreams") => (200, JSON, upstream_list(state).to_string()),
        _ if path == "/metrics" => (200, "text/plain; version=0.0.4", metrics::render_prometheus(state.limiter.len())),
        _ if path == "/healthz" => (200, "text/plain", format!("ok {}s\n", state.started.elapsed().as_secs())),
        _ => (404, "text/plain", format!("no route {path}\n")),
    }
}

fn answer(state: &AdminState, stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let (status, kind, body) = match (parts.next(), parts.next()) {
        (Some("GET"), Some(path)) => route(state, path.split('?').next().unwrap_or(path)),
        _ => (405, "text/plain", "GET only\n".to_string()),
    };
    let mut w = &stream;
    write!(
        w,
        "HTTP/1.1 {status} OK\r\ncontent-type: {kind}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// Serves the admin API on [`ADMIN_BIND`]:`port` in a thread of its own.
pub fn serve(port: u16, state: Arc<AdminState>) -> std::io::Result<thread::JoinHandle<()>> {
    let listener = TcpListener::bind((ADMIN_BIND, port))?;
    Ok(thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = answer(&state, stream) {
                eprintln!("tollgate admin: {e}");
            }
        }
    }))
}
