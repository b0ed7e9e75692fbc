//! Active health checks of the upstreams: every upstream is probed on its `/healthz` path; it
//! leaves the rotation after UNHEALTHY_AFTER failed probes in a row and comes back after
//! HEALTHY_AFTER successful ones. The admin API shows the table (`GET /admin/v1/upstreams`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::Upstream;

/// Time between two probes of the same upstream.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(2500);

/// How long a probe may take (connect, request and status line).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Failed probes in a row that take an upstream out of the rotation.
pub const UNHEALTHY_AFTER: u32 = 3;

/// Successful probes in a row that bring an upstream back.
pub const HEALTHY_AFTER: u32 = 2;

/// Path probed on each upstream.
pub const HEALTH_PATH: &str = "/healthz";

/// What the checker knows of one upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamState {
    pub name: String,
    pub address: SocketAddr,
    pub healthy: bool,
    pub consecutive_failures: u32,
    pub consecutive_successes: u32,
    pub last_latency: Option<Duration>,
}

/// Health of every upstream, in configuration order.
#[derive(Debug, Clone, Default)]
pub struct HealthTable {
    states: Vec<UpstreamState>,
}

impl HealthTable {
    /// Every upstream healthy until a probe says otherwise.
    pub fn new(upstreams: &[Upstream]) -> HealthTable {
        HealthTable {
            states: upstreams
                .iter()
                .map(|u| UpstreamState {
                    name: u.name.clone(),
                    address: u.address,
                    healthy: true,
                    consecutive_failures: 0,
                    consecutive_successes: 0,
                    last_latency: None,
                })
                .collect(),
        }
    }

    /// Records the result of one probe of upstream `i`.
    pub fn record_probe(&mut self, i: usize, result: Result<Duration, String>) {
        let s = &mut self.states[i];
        match result {
            Ok(latency) => {
                s.last_latency = Some(latency);
                s.consecutive_successes += 1;
                if !s.healthy && s.consecutive_successes >= HEALTHY_AFTER {
                    s.healthy = true;
                }
            }
            Err(_) => {
                s.consecutive_successes = 0;
                s.consecutive_failures += 1;
                if s.consecutive_failures >= UNHEALTHY_AFTER {
                    s.healthy = false;
                }
            }
        }
    }

    /// Whether upstream `i` is in the rotation.
    pub fn is_healthy(&self, i: usize) -> bool {
        self.states.get(i).is_some_and(|s| s.healthy)
    }

    /// The states, for the admin API.
    pub fn states(&self) -> &[UpstreamState] {
        &self.states
    }
}

/// One probe: `GET /healthz`, healthy on a 2xx status line within [`PROBE_TIMEOUT`].
pub fn probe(address: SocketAddr) -> Result<Duration, String> {
    let t0 = Instant::now();
    let mut stream = TcpStream::connect_timeout(&address, PROBE_TIMEOUT).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).map_err(|e| e.to_string())?;
    write!(stream, "GET {HEALTH_PATH} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).map_err(|e| e.to_string())?;
    match &head[9..10] {
        b"2" => Ok(t0.elapsed()),
        _ => Err(format!("status {}", String::from_utf8_lossy(&head[9..12]))),
    }
}

/// Probes every upstream each [`PROBE_INTERVAL`], in a thread of its own.
pub fn spawn_checker(upstreams: Vec<Upstream>, table: Arc<Mutex<HealthTable>>) -> thread::JoinHandle<()> {
    thread::Builder::new()
        .name("health".into())
        .spawn(move || loop {
            for (i, u) in upstreams.iter().enumerate() {
                let result = probe(u.address);
                table.lock().expect("health lock").record_probe(i, result);
            }
            thread::sleep(PROBE_INTERVAL);
        })
        .expect("the health thread starts")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> HealthTable {
        let u = Upstream {
            name: "api-blue".into(),
            address: "10.20.1.11:8080".parse().unwrap(),
            weight: 5,
        };
        HealthTable::new(&[u])
    }

    #[test]
    fn three_failures_in_a_row_take_an_upstream_out() {
        let mut t = table();
        for _ in 0..UNHEALTHY_AFTER {
            t.record_probe(0, Err("refused".into()));
        }
        assert!(!t.is_healthy(0));
        t.record_probe(0, Ok(Duration::from_millis(4)));
        t.record_probe(0, Ok(Duration::from_millis(5)));
        assert!(t.is_healthy(0));
    }
}
