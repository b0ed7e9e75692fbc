//! The scheduler: which runners are loaded, reloads on option changes, keep-alive expiry, and
//! one-request-at-a-time per runner (llama-server runs with a single slot, `-np 1`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::OwnedMutexGuard;

use crate::keepalive::KeepAlive;
use crate::log;
use crate::models::ModelEntry;
use crate::runner::{LoadOpts, Runner, RunnerError, SpawnSpec, Spawner, needs_reload};
use crate::template::Template;

pub struct SchedConfig {
    pub llama_server: PathBuf,
    pub log_dir: PathBuf,
    pub max_loaded: usize,
    pub default_keep_alive: KeepAlive,
    pub load_timeout: Duration,
    pub runner_args: Vec<String>,
    pub repack_fallback: bool,
}

pub struct Loaded {
    pub model: Arc<ModelEntry>,
    pub opts: LoadOpts,
    pub runner: Runner,
    busy: Arc<tokio::sync::Mutex<()>>,
    evicted: AtomicBool,
    active: AtomicUsize,
    keep_alive: Mutex<KeepAlive>,
    expires_at: Mutex<SystemTime>,
    /// Bumped whenever a pending expiry timer must be ignored.
    generation: AtomicU64,
}

impl Loaded {
    pub fn expires_at(&self) -> SystemTime {
        *self.expires_at.lock().unwrap()
    }

    fn deadline_from_now(&self) -> SystemTime {
        match *self.keep_alive.lock().unwrap() {
            KeepAlive::Forever => crate::util::forever(),
            KeepAlive::For(d) => SystemTime::now() + d,
        }
    }
}

/// A runner handed to one request. Dropping it releases the runner and starts its idle timer.
pub struct Lease {
    pub loaded: Arc<Loaded>,
    /// When the runner was ready for this request (end of `load_duration`).
    pub handed_over: Instant,
    sched: Arc<Scheduler>,
    _guard: OwnedMutexGuard<()>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        let l = &self.loaded;
        let remaining = l.active.fetch_sub(1, Ordering::SeqCst) - 1;
        if remaining > 0 || l.evicted.load(Ordering::SeqCst) {
            return;
        }
        let keep = *l.keep_alive.lock().unwrap();
        let generation = l.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *l.expires_at.lock().unwrap() = l.deadline_from_now();
        let sched = self.sched.clone();
        let loaded = l.clone();
        match keep {
            KeepAlive::Forever => {}
            KeepAlive::For(d) => {
                tokio::spawn(async move {
                    tokio::time::sleep(d).await;
                    sched.expire(&loaded, generation).await;
                });
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SchedError {
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

pub struct Scheduler {
    cfg: SchedConfig,
    spawner: Spawner,
    http: reqwest::Client,
    list: Mutex<Vec<Arc<Loaded>>>,
    /// Serialises load / unload decisions.
    ops: tokio::sync::Mutex<()>,
    seq: AtomicU64,
    /// Set once a runner crashed while loading and came up with `--no-repack`.
    no_repack: AtomicBool,
}

impl Scheduler {
    pub fn new(cfg: SchedConfig, spawner: Spawner, http: reqwest::Client) -> Arc<Scheduler> {
        Arc::new(Scheduler {
            cfg,
            spawner,
            http,
            list: Mutex::new(Vec::new()),
            ops: tokio::sync::Mutex::new(()),
            seq: AtomicU64::new(0),
            no_repack: AtomicBool::new(false),
        })
    }

    /// Loaded, live runners, latest expiry first (as Ollama sorts `/api/ps`).
    pub fn loaded(&self) -> Vec<Arc<Loaded>> {
        let mut v: Vec<Arc<Loaded>> = self
            .list
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.runner.alive())
            .cloned()
            .collect();
        v.sort_by_key(|l| std::cmp::Reverse(l.expires_at()));
        v
    }

    fn remove_from_list(&self, l: &Arc<Loaded>) -> bool {
        l.evicted.store(true, Ordering::SeqCst);
        let mut list = self.list.lock().unwrap();
        let before = list.len();
        list.retain(|x| !Arc::ptr_eq(x, l));
        before != list.len()
    }

    /// Remove and kill, after in-flight requests on it finish.
    async fn evict(&self, l: &Arc<Loaded>, why: &str) {
        self.remove_from_list(l);
        log!(
            "INFO",
            "unloading {} (runner pid {}): {why}",
            l.model.name,
            l.runner.pid
        );
        let _guard = l.busy.lock().await;
        l.runner.kill().await;
    }

    /// Get a runner for `model` with `opts`, loading or reloading as needed, and wait for its slot.
    pub async fn acquire(
        self: &Arc<Self>,
        model: &Arc<ModelEntry>,
        opts: LoadOpts,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease, SchedError> {
        loop {
            let loaded = {
                let _ops = self.ops.lock().await;
                let existing = self
                    .list
                    .lock()
                    .unwrap()
                    .iter()
                    .find(|l| l.model.name == model.name)
                    .cloned();
                let reuse = match existing {
                    Some(l) if l.runner.alive() && !needs_reload(&l.opts, &opts) => Some(l),
                    Some(l) => {
                        let why = if l.runner.alive() {
                            format!("load options changed {:?} -> {:?}", l.opts, opts)
                        } else {
                            format!(
                                "runner exited ({})",
                                l.runner.exit_status().unwrap_or_default()
                            )
                        };
                        self.evict(&l, &why).await;
                        None
                    }
                    None => None,
                };
                let l = match reuse {
                    Some(l) => l,
                    None => {
                        loop {
                            let victim = {
                                let list = self.list.lock().unwrap();
                                if list.len() < self.cfg.max_loaded {
                                    None
                                } else {
                                    // The one that would expire first goes.
                                    list.iter().min_by_key(|l| l.expires_at()).cloned()
                                }
                            };
                            match victim {
                                Some(v) => {
                                    self.evict(&v, &format!("making room for {}", model.name))
                                        .await
                                }
                                None => break,
                            }
                        }
                        let l = self.load(model, opts).await?;
                        self.list.lock().unwrap().push(l.clone());
                        l
                    }
                };
                l.active.fetch_add(1, Ordering::SeqCst);
                l.generation.fetch_add(1, Ordering::SeqCst);
                if let Some(k) = keep_alive {
                    *l.keep_alive.lock().unwrap() = k;
                }
                *l.expires_at.lock().unwrap() = l.deadline_from_now();
                l
            };
            let handed_over = Instant::now();
            let guard = loaded.busy.clone().lock_owned().await;
            if loaded.evicted.load(Ordering::SeqCst) || !loaded.runner.alive() {
                drop(guard);
                loaded.active.fetch_sub(1, Ordering::SeqCst);
                continue;
            }
            return Ok(Lease {
                loaded,
                handed_over,
                sched: self.clone(),
                _guard: guard,
            });
        }
    }

    async fn load(
        &self,
        model: &Arc<ModelEntry>,
        opts: LoadOpts,
    ) -> Result<Arc<Loaded>, SchedError> {
        let n = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let safe: String = model
            .name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let t = Instant::now();
        let mut attempt = 0;
        let runner = loop {
            attempt += 1;
            let mut extra = self.cfg.runner_args.clone();
            if self.no_repack.load(Ordering::SeqCst) {
                extra.push("--no-repack".into());
            }
            let log_path = self
                .cfg
                .log_dir
                .join(format!("runner-{n:03}-{safe}-{attempt}.log"));
            let result = Runner::start(
                SpawnSpec {
                    llama_server: &self.cfg.llama_server,
                    model_path: &model.path,
                    opts,
                    log_path,
                    load_timeout: self.cfg.load_timeout,
                    extra_args: &extra,
                    own_template: matches!(model.template, Template::Library(_)),
                },
                &self.spawner,
                &self.http,
            )
            .await;
            match result {
                Ok(r) => break r,
                Err(RunnerError::Terminated { status, .. })
                    if attempt == 1
                        && self.cfg.repack_fallback
                        && !self.no_repack.load(Ordering::SeqCst)
                        && !self
                            .cfg
                            .runner_args
                            .iter()
                            .any(|a| a == "--no-repack" || a == "-nr")
                        && (status.contains("SIGSEGV") || status.contains("SIGILL")) =>
                {
                    log!(
                        "WARN",
                        "llama-server crashed while loading {} ({status}); retrying with --no-repack \
                         and keeping it for all runners. This is the signature of a llama.cpp build \
                         with native AMX kernels on a machine that does not enable AMX state: \
                         rebuild with -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 to keep repacking",
                        model.name
                    );
                    self.no_repack.store(true, Ordering::SeqCst);
                }
                Err(e) => {
                    log!("ERROR", "loading {}: {e}", model.name);
                    return Err(e.into());
                }
            }
        };
        log!(
            "INFO",
            "loaded {} in {} ms (runner pid {}, port {}, num_ctx {}, buffers {:?}, log {})",
            model.name,
            t.elapsed().as_millis(),
            runner.pid,
            runner.port,
            opts.num_ctx,
            runner.buffers(),
            runner.log_path.display()
        );
        Ok(Arc::new(Loaded {
            model: model.clone(),
            opts,
            runner,
            busy: Arc::new(tokio::sync::Mutex::new(())),
            evicted: AtomicBool::new(false),
            active: AtomicUsize::new(0),
            keep_alive: Mutex::new(self.cfg.default_keep_alive),
            expires_at: Mutex::new(SystemTime::now()),
            generation: AtomicU64::new(0),
        }))
    }

    /// Idle timer fired: unload if nothing used the runner since.
    async fn expire(&self, l: &Arc<Loaded>, generation: u64) {
        let _ops = self.ops.lock().await;
        if l.generation.load(Ordering::SeqCst) != generation
            || l.active.load(Ordering::SeqCst) != 0
            || l.evicted.load(Ordering::SeqCst)
        {
            return;
        }
        self.evict(l, "keep_alive expired").await;
    }

    /// `keep_alive: 0` with no prompt: drop the model from the loaded list now and kill its runner
    /// in the background once in-flight requests finish (as Ollama replies before the kill).
    pub async fn unload(self: &Arc<Self>, name: &str) {
        let _ops = self.ops.lock().await;
        let found: Vec<Arc<Loaded>> = self
            .list
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.model.name == name)
            .cloned()
            .collect();
        for l in found {
            self.remove_from_list(&l);
            log!(
                "INFO",
                "unloading {} (runner pid {}): keep_alive 0",
                l.model.name,
                l.runner.pid
            );
            tokio::spawn(async move {
                let _guard = l.busy.lock().await;
                l.runner.kill().await;
            });
        }
    }

    /// Kill every runner now (server shutdown).
    pub async fn shutdown(&self) {
        let all: Vec<Arc<Loaded>> = std::mem::take(&mut *self.list.lock().unwrap());
        for l in &all {
            l.evicted.store(true, Ordering::SeqCst);
        }
        for l in &all {
            l.runner.kill().await;
        }
    }
}
