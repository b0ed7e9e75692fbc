//! A limiter split into shards, each behind its own lock, so that requests of different keys
//! rarely wait for each other. The shard of a key comes from `tg_shard_of` in
//! `native/tg_hash.c` (the same hash the edge load balancer uses for key affinity).

use std::ffi::c_char;
use std::sync::Mutex;
use std::time::Instant;

use crate::limiter::{Limiter, Refusal};

/// Shards when the configuration does not say: a prime, so keys spread evenly.
pub const DEFAULT_SHARDS: usize = 61;

/// Most shards allowed; more only costs memory.
pub const MAX_SHARDS: usize = 1021;

extern "C" {
    /// `native/tg_hash.c`: the shard (0..n_shards) of the `len` bytes at `key`.
    fn tg_shard_of(key: *const c_char, len: usize, n_shards: u32) -> u32;
    /// `native/tg_hash.c`: the 64-bit FNV-1a hash with tollgate's seed.
    fn tg_hash64(key: *const c_char, len: usize) -> u64;
}

/// The shard of `key` among `n` shards.
pub fn shard_for(key: &str, n: usize) -> usize {
    assert!(n > 0 && n <= MAX_SHARDS, "shard count {n} out of range");
    // SAFETY: the pointer and length come from a live &str; the C side only reads them.
    unsafe { tg_shard_of(key.as_ptr().cast(), key.len(), n as u32) as usize }
}

/// The key's hash, shown by the admin API next to its bucket.
pub fn key_hash(key: &str) -> u64 {
    // SAFETY: as in `shard_for`.
    unsafe { tg_hash64(key.as_ptr().cast(), key.len()) }
}

/// Many limiters, one per shard.
pub struct ShardedLimiter {
    shards: Vec<Mutex<Limiter>>,
}

impl ShardedLimiter {
    /// `n` empty shards.
    pub fn new(n: usize) -> ShardedLimiter {
        let n = n.clamp(1, MAX_SHARDS);
        ShardedLimiter {
            shards: (0..n).map(|_| Mutex::new(Limiter::new())).collect(),
        }
    }

    fn shard(&self, key: &str) -> &Mutex<Limiter> {
        &self.shards[shard_for(key, self.shards.len())]
    }

    /// Sets `route`'s refill rate in every shard.
    pub fn set_route_rate(&self, route: &str, per_sec: f64) {
        for s in &self.shards {
            s.lock().expect("shard lock").set_route_rate(route, per_sec);
        }
    }

    /// [`Limiter::admit`] in `key`'s shard.
    pub fn admit(&self, key: &str, route: &str, now: Instant) -> Result<(), Refusal> {
        self.shard(key).lock().expect("shard lock").admit(key, route, now)
    }

    /// Runs `f` on `key`'s shard, locked for the duration of the call.
    pub fn with_shard<R>(&self, key: &str, f: impl FnOnce(&mut Limiter) -> R) -> R {
        f(&mut self.shard(key).lock().expect("shard lock"))
    }

    /// [`Limiter::tokens_left`] in `key`'s shard.
    pub fn tokens_left(&self, key: &str, now: Instant) -> Option<f64> {
        self.shard(key)
            .lock()
            .expect("shard lock")
            .tokens_left(key, now)
    }

    /// Sweeps every shard; the buckets evicted in all of them.
    pub fn sweep_all(&self, now: Instant) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("shard lock").sweep(now))
            .sum()
    }

    /// Live buckets over all shards.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().expect("shard lock").len())
            .sum()
    }

    /// Whether no shard holds a bucket.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Buckets per shard, for the admin API's balance view.
    pub fn shard_sizes(&self) -> Vec<usize> {
        self.shards
            .iter()
            .map(|s| s.lock().expect("shard lock").len())
            .collect()
    }

    /// The shard count.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_always_lands_in_the_same_shard() {
        for n in [1, 7, DEFAULT_SHARDS, MAX_SHARDS] {
            let a = shard_for("customer-8812", n);
            assert_eq!(a, shard_for("customer-8812", n));
            assert!(a < n);
        }
    }

    #[test]
    fn keys_spread_over_the_shards() {
        let mut seen = vec![0usize; DEFAULT_SHARDS];
        for i in 0..6100 {
            seen[shard_for(&format!("key-{i}"), DEFAULT_SHARDS)] += 1;
        }
        // About 100 each; none empty, none more than twice its share.
        assert!(seen.iter().all(|&c| c > 0 && c < 200), "{seen:?}");
    }
}
