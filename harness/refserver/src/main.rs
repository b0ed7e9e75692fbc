//! o3-refserver: an Ollama-compatible server (native `/api/*` wire format, Ollama v0.30+
//! semantics) that runs upstream llama.cpp `llama-server` runners as direct child processes.
#![deny(unsafe_code)]

mod api;
mod config;
mod gguf;
mod keepalive;
mod models;
mod runner;
mod sched;
mod template;
mod util;

use std::sync::Arc;
use std::time::Duration;

use crate::config::Parsed;

fn main() {
    let parsed = match config::parse(std::env::args().skip(1), |k| std::env::var(k).ok()) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("o3-refserver: {e}");
            std::process::exit(2);
        }
    };
    let cfg = match parsed {
        Parsed::Help => {
            print!("{}", config::USAGE);
            return;
        }
        Parsed::Version => {
            println!(
                "o3-refserver {} (Ollama API {})",
                env!("CARGO_PKG_VERSION"),
                api::VERSION
            );
            return;
        }
        Parsed::Run(c) => *c,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("building the tokio runtime");
    let code = rt.block_on(serve(cfg));
    rt.shutdown_timeout(Duration::from_secs(2));
    std::process::exit(code);
}

async fn serve(cfg: config::Config) -> i32 {
    let required = [
        (
            cfg.llama_server.is_file(),
            "llama-server binary",
            &cfg.llama_server,
            "--llama-server PATH",
        ),
        (
            cfg.models_dir.is_dir(),
            "models directory",
            &cfg.models_dir,
            "--models-dir DIR",
        ),
    ];
    for (exists, what, path, flag) in required {
        if !exists {
            log!(
                "ERROR",
                "{what} {} does not exist (pass {flag})",
                path.display()
            );
            return 2;
        }
    }
    let log_dir = cfg.log_dir.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("o3-refserver-{}", std::process::id()))
    });
    if let Err(e) = std::fs::create_dir_all(&log_dir) {
        log!("ERROR", "cannot create log dir {}: {e}", log_dir.display());
        return 2;
    }
    let models_dir = cfg.models_dir.clone();
    let table = cfg.models.clone();
    let registry = tokio::task::spawn_blocking(move || models::Registry::load(&models_dir, &table))
        .await
        .expect("model registry loader panicked");
    let http = match reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            log!("ERROR", "building the HTTP client: {e}");
            return 1;
        }
    };
    let llama_server = std::fs::canonicalize(&cfg.llama_server).unwrap_or(cfg.llama_server.clone());
    let sched = sched::Scheduler::new(
        sched::SchedConfig {
            llama_server,
            log_dir: log_dir.clone(),
            max_loaded: cfg.max_loaded,
            default_keep_alive: cfg.default_keep_alive,
            load_timeout: cfg.load_timeout,
            runner_args: cfg.runner_args.clone(),
            repack_fallback: cfg.repack_fallback,
        },
        runner::Spawner::new(tokio::runtime::Handle::current()),
        http.clone(),
    );
    let listener = match tokio::net::TcpListener::bind(cfg.listen).await {
        Ok(l) => l,
        Err(e) => {
            log!("ERROR", "cannot listen on {}: {e}", cfg.listen);
            return 1;
        }
    };
    log!(
        "INFO",
        "o3-refserver {} listening on {} ({} models, runner logs in {}, llama-server {})",
        api::VERSION,
        listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default(),
        registry.models.len(),
        log_dir.display(),
        cfg.llama_server.display()
    );
    let app = api::router(api::AppState {
        registry: Arc::new(registry),
        sched: sched.clone(),
        http,
    });
    let server = axum::serve(listener, app);
    let code = tokio::select! {
        r = server => match r {
            Ok(()) => 0,
            Err(e) => { log!("ERROR", "server error: {e}"); 1 }
        },
        sig = shutdown_signal() => { log!("INFO", "{sig}: stopping runners and exiting"); 0 }
    };
    sched.shutdown().await;
    code
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("installing the SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("installing the SIGHUP handler");
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
    }
}
