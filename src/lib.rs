//! o3-suite: a context-scaling test harness for local LLM servers.
//!
//! `cargo test --test context_scaling` turns a matrix table (models × context sizes, with gates)
//! into one test per cell. Each cell loads its model on a live Ollama server with the cell's exact
//! options, measures it with statistical care, watches the hardware while it runs, scores its
//! stability, judges it against its gates and leaves a result file behind; reports are rebuilt
//! from the result files after every cell.
//!
//! Module map: [`matrix`] (the table), [`config`] (environment), [`backend`] (Ollama's native
//! API), [`workload`] (prompts), [`measure`] (one trial), [`monitor`] (hardware sampler),
//! [`stats`], [`stability`], [`gates`] (the typed judgement), [`engine`] (llama-bench figures
//! for engine-relative gates), [`results`] (what a cell leaves), [`rundir`] (the run
//! directory's layout and files), [`lock`] (one run per server and run directory), [`report`], [`baseline`] (comparison with an earlier run), [`merge`] (several hosts in one comparison), [`preflight`], [`predict`] (performance prediction), [`runner`] (one cell end to end,
//! in phases), [`harness`] (the shared test-target `main`), [`date`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agentic;
pub mod backend;
pub mod baseline;
pub mod config;
pub mod date;
pub mod engine;
pub mod gates;
pub mod golden;
pub mod harness;
pub mod judgement;
pub mod lock;
pub mod matrix;
pub mod measure;
pub mod merge;
pub mod monitor;
pub mod optimize;
pub mod output;
pub mod predict;
pub mod preflight;
pub mod progress;
pub mod quality;
pub mod report;
pub mod results;
pub mod rundir;
pub mod runner;
pub mod stability;
pub mod stats;
pub mod text;
pub mod workload;
