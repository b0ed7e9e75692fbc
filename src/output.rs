//! Output files behind one small trait: one writer per file kind, each a pure function from its
//! input to the files it makes (path relative to the run directory, content), and one function
//! that writes them all atomically. Nothing a writer renders may depend on clocks, hostnames or
//! other state outside its input, so the same input always gives the same bytes (what the
//! goldens rely on).
//!
//! The optimizer's outputs ([`crate::optimize::outputs`]) and the reports ([`crate::report`],
//! whose writers make one fixed file each) are written this way.

use std::path::{Path, PathBuf};

use crate::rundir::{StoreError, write_atomic};

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputFile {
    /// Path relative to the run directory, e.g.
    /// `comparative_analysis/use_case_recommendations.md`.
    pub path: PathBuf,
    /// The complete content.
    pub content: String,
}

impl OutputFile {
    /// A file at `path` (relative to the run directory) with `content`.
    pub fn new(path: impl Into<PathBuf>, content: String) -> OutputFile {
        OutputFile {
            path: path.into(),
            content,
        }
    }
}

/// A kind of output file made from an `In` (for example every search record of a run). One
/// writer may make several files of its kind (a preset per recommended configuration) or none.
pub trait Output<In: ?Sized> {
    /// The files for `input`, in the order they are written. Pure and deterministic.
    fn render(&self, input: &In) -> Vec<OutputFile>;
}

/// A file could not be written.
#[derive(Debug, thiserror::Error)]
#[error("failed to write {path}: {source}")]
pub struct WriteError {
    /// The file.
    pub path: PathBuf,
    /// The cause.
    pub source: StoreError,
}

/// Renders `input` with every writer of `outputs`, in order, and writes each file under
/// `run_dir` atomically ([`write_atomic`]); returns the paths written.
pub fn write_all<In: ?Sized>(
    run_dir: &Path,
    outputs: &[&dyn Output<In>],
    input: &In,
) -> Result<Vec<PathBuf>, WriteError> {
    let mut written = Vec::new();
    for file in outputs.iter().flat_map(|o| o.render(input)) {
        let path = run_dir.join(&file.path);
        write_atomic(&path, file.content.as_bytes()).map_err(|source| WriteError {
            path: path.clone(),
            source,
        })?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes one file per word of its input.
    struct Words;

    impl Output<str> for Words {
        fn render(&self, input: &str) -> Vec<OutputFile> {
            input
                .split_whitespace()
                .map(|w| OutputFile::new(format!("words/{w}.txt"), format!("{w}\n")))
                .collect()
        }
    }

    #[test]
    fn writes_every_file_of_every_output_in_order() {
        let run = std::env::temp_dir().join(format!("o3-output-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        let paths = write_all(&run, &[&Words, &Words], "b a").unwrap();
        let rel: Vec<String> = paths
            .iter()
            .map(|p| p.strip_prefix(&run).unwrap().display().to_string())
            .collect();
        assert_eq!(
            rel,
            ["words/b.txt", "words/a.txt", "words/b.txt", "words/a.txt"]
        );
        assert_eq!(std::fs::read_to_string(&paths[1]).unwrap(), "a\n");
        std::fs::remove_dir_all(&run).unwrap();
    }

    #[test]
    fn a_write_error_names_the_file() {
        let run = std::env::temp_dir().join(format!("o3-output-err-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&run);
        std::fs::create_dir_all(&run).unwrap();
        // A plain file where the directory `words` must go.
        std::fs::write(run.join("words"), "").unwrap();
        let e = write_all(&run, &[&Words], "x").unwrap_err();
        assert!(e.path.starts_with(run.join("words")), "{e}");
        assert!(e.to_string().starts_with("failed to write "), "{e}");
        std::fs::remove_dir_all(&run).unwrap();
    }
}
