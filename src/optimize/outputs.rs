//! What the searches leave for people and tools, built from the search records of a run
//! (`comparative_analysis/optimize/*.json`) and, for the recommendations, its sessions
//! (`sessions/*.json`) only, so the same files always give the same bytes. One [`Output`] writer
//! per file kind, in the order [`build`] writes them:
//!
//! - [`PresetFiles`]: `integration_configs/<name>_<K>k.yaml`, a [`Preset`] per recommended
//!   configuration (options, verdict with the gates it refers to, figures with intervals, the
//!   evidence cell, server, host, date);
//! - [`Modelfiles`]: `integration_configs/<name>_<K>k.Modelfile`: `FROM` +
//!   `PARAMETER num_ctx/num_thread/num_batch` (clients of Ollama's OpenAI-compatible endpoint
//!   cannot set `num_ctx`; a model created from this file carries it);
//! - [`ContinueFile`]: `integration_configs/continue-config.yaml`, a [`ContinueConfig`] for
//!   Continue (config.yaml `schema: v1`), checked against Continue's own schema package by
//!   `tests/continue_config.rs`;
//! - [`Recommendations`]: `use_case_recommendations.md`, the best passing configuration per use
//!   case, weighed with the run's Phase 2 sessions, and what failed (ranking in
//!   [`recommendations`]). The reports rebuild it too ([`write_recommendations`], called by
//!   [`crate::report::build`] after every cell and session), so a session that ends after the
//!   searches still changes it.

mod continue_config;
mod preset;
pub mod recommendations;

use std::path::PathBuf;

pub use self::continue_config::{
    CompletionOptions, ContinueConfig, ContinueFile, ContinueModel, continue_config,
    render_continue, roles_for,
};
pub use self::preset::{
    GATES_RULE, Interval, Modelfiles, Preset, PresetContext, PresetFigures, PresetFiles,
    PresetServer, preset, preset_stem, render_modelfile, render_preset,
};
pub use self::recommendations::{
    RecommendationInput, Recommendations, USE_CASES, render_recommendations,
    render_recommendations_with, session_workload,
};
use super::record::SearchRecord;
use crate::agentic::SessionResult;
use crate::output::{self, Output, OutputFile};
use crate::rundir::RunDir;

/// File name of the Continue config.
pub const CONTINUE_FILE: &str = "continue-config.yaml";
/// File name of the recommendations.
pub const RECOMMENDATIONS_FILE: &str = "use_case_recommendations.md";

/// Ollama's default address, where its clients (Continue's Ollama provider included) talk when
/// given none.
pub const OLLAMA_DEFAULT: &str = "http://127.0.0.1:11434";

/// Every writer of the records alone that [`build`] runs, in order; [`Recommendations`], which
/// also reads the sessions, comes last.
pub fn writers() -> [&'static dyn Output<[SearchRecord]>; 3] {
    [&PresetFiles, &Modelfiles, &ContinueFile]
}

/// Path of a file in the run directory: `comparative_analysis/<rel>`.
fn in_reports(rel: &str) -> PathBuf {
    RunDir::relative().report_path(rel)
}

/// Path of a file in the run directory's `comparative_analysis/integration_configs/`.
fn in_integration(file: &str) -> PathBuf {
    RunDir::relative().integration_dir().join(file)
}

/// The files [`build`] writes for `records` and `sessions` (paths relative to the run
/// directory).
pub fn render_all(records: &[SearchRecord], sessions: &[SessionResult]) -> Vec<OutputFile> {
    let mut files: Vec<OutputFile> = writers().iter().flat_map(|w| w.render(records)).collect();
    files.extend(Recommendations.render(&RecommendationInput {
        records,
        sessions,
        quality: &[],
    }));
    files
}

/// Errors of writing the outputs.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The search records or the sessions could not be read.
    #[error("failed to read the optimizer records or sessions of run {run_dir}: {source}")]
    Read {
        /// The run directory.
        run_dir: PathBuf,
        /// The cause.
        source: crate::rundir::StoreError,
    },
    /// A file could not be written.
    #[error(transparent)]
    Write(#[from] output::WriteError),
}

/// Rebuilds every output from the run's search records; returns the paths written.
pub fn build(run: &RunDir) -> Result<Vec<PathBuf>, OutputError> {
    // A record that cannot be read is named and left out, like a bad cell file in the reports.
    let mut records: crate::rundir::DirContents<SearchRecord> =
        crate::rundir::read_json_dir(&run.records_dir()).map_err(|source| OutputError::Read {
            run_dir: run.root().to_path_buf(),
            source,
        })?;
    for u in &records.unreadable {
        eprintln!(
            "warning: optimizer record {} not read: {}",
            u.path.display(),
            u.why
        );
    }
    records.items.sort_by(|a, b| a.name.cmp(&b.name));
    let (sessions, unreadable) =
        crate::agentic::report::read(run).map_err(|source| OutputError::Read {
            run_dir: run.root().to_path_buf(),
            source,
        })?;
    for u in &unreadable {
        eprintln!(
            "warning: session result {} not read: {}",
            u.path.display(),
            u.why
        );
    }
    let quality = crate::rundir::read_json_dir::<crate::quality::QualityResult>(&run.quality_dir())
        .map_err(|source| OutputError::Read {
            run_dir: run.root().to_path_buf(),
            source,
        })?;
    let quality = crate::quality::report::of(&quality.items, &[], &[]);
    let mut written = output::write_all(run.root(), &writers(), &records.items[..])?;
    written.extend(write_recommendations(
        run,
        &records.items,
        &sessions,
        &quality.models,
    )?);
    Ok(written)
}

/// Writes `use_case_recommendations.md` from the run's search records, sessions and quality
/// sweeps (as read from the run directory); returns the path written.
pub fn write_recommendations(
    run: &RunDir,
    records: &[SearchRecord],
    sessions: &[SessionResult],
    quality: &[crate::quality::report::ModelQuality],
) -> Result<Vec<PathBuf>, output::WriteError> {
    let writers: [&dyn Output<RecommendationInput<'_>>; 1] = [&Recommendations];
    output::write_all(
        run.root(),
        &writers,
        &RecommendationInput {
            records,
            sessions,
            quality,
        },
    )
}

/// `url` without its userinfo (`user:password@`), as it may be written into files.
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = match url.find("://") {
        Some(i) => url.split_at(i + 3),
        None => ("", url),
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}{host}{tail}")
}

/// Whether `url` is Ollama's default address ([`OLLAMA_DEFAULT`], or `localhost:11434`, with
/// or without `http://` and a trailing `/`).
pub fn is_default_ollama(url: &str) -> bool {
    let u = without_credentials(url.trim()).to_lowercase();
    let rest = match u.split_once("://") {
        Some(("http", rest)) => rest,
        Some(_) => return false,
        None => u.as_str(),
    };
    matches!(
        rest.trim_end_matches('/'),
        "127.0.0.1:11434" | "localhost:11434"
    )
}
