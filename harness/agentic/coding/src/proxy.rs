//! The request path of the tollgate proxy: admit (rate limit), pick an upstream, forward,
//! record. Kept free of I/O details so it can be tested with fake upstreams.

use std::time::{Duration, Instant};

use crate::config::{Config, Upstream};
use crate::limiter::{Limiter, Refusal};

/// Header that carries the client key; requests without it share the anonymous bucket.
pub const CLIENT_KEY_HEADER: &str = "x-tollgate-key";

/// Bucket key of requests that carry no client key.
pub const ANONYMOUS_KEY: &str = "anonymous";

/// Attempts per request across upstreams before the proxy answers 502.
pub const MAX_ATTEMPTS: u32 = 3;

/// What the proxy answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Forwarded; the upstream's status.
    Forwarded { upstream: String, status: u16 },
    /// Refused by the limiter: 429 with `Retry-After`.
    TooManyRequests { retry_after_s: u64 },
    /// The limiter is saturated: 503.
    Unavailable,
    /// Every attempt failed: 502.
    BadGateway { attempts: u32 },
}

impl Outcome {
    /// The HTTP status sent to the client.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Forwarded { status, .. } => *status,
            Outcome::TooManyRequests { .. } => 429,
            Outcome::Unavailable => 503,
            Outcome::BadGateway { .. } => 502,
        }
    }
}

/// A request as the proxy sees it.
#[derive(Debug, Clone)]
pub struct Request {
    pub route: String,
    pub client_key: Option<String>,
    pub body_len: usize,
}

/// Something that can forward a request to an upstream (the real one does HTTP).
pub trait Forward {
    /// Forwards `req` to `to`; the status, or an error when the upstream failed.
    fn forward(&mut self, to: &Upstream, req: &Request) -> Result<u16, String>;
}

/// Smooth weighted round-robin over the upstreams (the nginx algorithm).
pub struct Picker {
    current: Vec<i64>,
}

impl Picker {
    pub fn new(n: usize) -> Picker {
        Picker { current: vec![0; n] }
    }

    /// The index of the next upstream.
    pub fn next(&mut self, upstreams: &[Upstream]) -> usize {
        let total: i64 = upstreams.iter().map(|u| i64::from(u.weight)).sum();
        let mut best = 0;
        for (i, u) in upstreams.iter().enumerate() {
            self.current[i] += i64::from(u.weight);
            if self.current[i] > self.current[best] {
                best = i;
            }
        }
        self.current[best] -= total;
        best
    }
}

/// Rounds a retry delay up to whole seconds for `Retry-After` (never 0).
pub fn retry_after_secs(d: Duration) -> u64 {
    let s = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    s.max(1)
}

/// Handles one request: the limiter first, then up to [`MAX_ATTEMPTS`] upstreams.
pub fn handle(
    cfg: &Config,
    limiter: &mut Limiter,
    picker: &mut Picker,
    fwd: &mut impl Forward,
    req: &Request,
    now: Instant,
) -> Outcome {
    let key = req.client_key.as_deref().unwrap_or(ANONYMOUS_KEY);
    match limiter.admit(key, &req.route, now) {
        Err(Refusal::Throttled { retry_after }) => {
            return Outcome::TooManyRequests {
                retry_after_s: retry_after_secs(retry_after),
            };
        }
        Err(Refusal::Saturated) => return Outcome::Unavailable,
        Ok(()) => {}
    }
    let mut attempts = 0;
    while attempts < MAX_ATTEMPTS {
        attempts += 1;
        let i = picker.next(&cfg.upstreams);
        let upstream = &cfg.upstreams[i];
        match fwd.forward(upstream, req) {
            Ok(status) if status < 500 => {
                return Outcome::Forwarded {
                    upstream: upstream.name.clone(),
                    status,
                };
            }
            Ok(_) | Err(_) => continue,
        }
    }
    Outcome::BadGateway { attempts }
}
