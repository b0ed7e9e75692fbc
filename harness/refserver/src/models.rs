//! The model registry: Ollama names → GGUF files, with their header facts and digests.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::gguf::{self, Gguf, Value};
use crate::log;
use crate::template::Template;

/// Arrays longer than this are shown as `[]` in `/api/show` (as Ollama does without `verbose`).
pub const SHOW_MAX_ARRAY: usize = 5;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Details {
    pub parent_model: String,
    pub format: String,
    pub family: String,
    pub families: Vec<String>,
    pub parameter_size: String,
    pub quantization_level: String,
}

#[derive(Debug)]
pub struct ModelEntry {
    pub name: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: SystemTime,
    pub digest: String,
    pub gguf: Gguf,
    pub details: Details,
    /// `<arch>.context_length`, the trained context (0 when unknown).
    pub trained_ctx: u32,
    pub chat_template: Option<String>,
    /// How its chat prompts are rendered: Ollama's library template for the names this server
    /// knows, else the GGUF's own.
    pub template: Template,
}

impl ModelEntry {
    pub fn load(name: &str, path: &Path) -> Result<ModelEntry, String> {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.is_file() {
            return Err(format!("{} is not a file", path.display()));
        }
        let g = Gguf::read_path(path, SHOW_MAX_ARRAY)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let digest = crate::util::cached_sha256(path)
            .map_err(|e| format!("{}: digest: {e}", path.display()))?;
        let arch = g.architecture().unwrap_or("unknown").to_string();
        let details = Details {
            parent_model: String::new(),
            format: "gguf".into(),
            family: arch.clone(),
            families: vec![arch],
            parameter_size: gguf::human_number(g.parameter_count()),
            quantization_level: g
                .file_type()
                .map(gguf::file_type_name)
                .unwrap_or("unknown")
                .to_string(),
        };
        let trained_ctx = g
            .arch_u64("context_length")
            .map(|v| v.min(u32::MAX as u64) as u32)
            .unwrap_or(0);
        let chat_template = g
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(ModelEntry {
            name: name.to_string(),
            path: path.to_path_buf(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            digest,
            gguf: g,
            details,
            trained_ctx,
            chat_template,
            template: Template::for_model(name),
        })
    }

    /// `model_info` for `/api/show`: the GGUF key/values minus `general.name` and the chat
    /// template, plus a computed `general.parameter_count` when the file has none.
    pub fn model_info(&self, verbose: bool) -> serde_json::Map<String, serde_json::Value> {
        let full;
        let g = if verbose {
            match Gguf::read_path(&self.path, usize::MAX) {
                Ok(g) => {
                    full = g;
                    &full
                }
                Err(e) => {
                    log!(
                        "WARN",
                        "re-reading {} for verbose show: {e}",
                        self.path.display()
                    );
                    &self.gguf
                }
            }
        } else {
            &self.gguf
        };
        let mut m = serde_json::Map::new();
        for (k, v) in &g.kv {
            if k == "general.name" || k == "tokenizer.chat_template" {
                continue;
            }
            m.insert(k.clone(), v.to_json());
        }
        m.entry("general.parameter_count")
            .or_insert_with(|| serde_json::Value::from(g.parameter_count()));
        m
    }
}

pub struct Registry {
    pub models: Vec<Arc<ModelEntry>>,
}

impl Registry {
    /// Load every configured model whose file exists; missing or unreadable files are logged and
    /// left out (they are then "not found", as in Ollama).
    pub fn load(models_dir: &Path, table: &[(String, String)]) -> Registry {
        let mut handles = Vec::new();
        for (name, file) in table {
            let path = if Path::new(file).is_absolute() {
                PathBuf::from(file)
            } else {
                models_dir.join(file)
            };
            let path = std::fs::canonicalize(&path).unwrap_or(path);
            let name = name.clone();
            handles.push(std::thread::spawn(move || {
                (name.clone(), path.clone(), ModelEntry::load(&name, &path))
            }));
        }
        let mut models = Vec::new();
        for h in handles {
            match h.join() {
                Ok((_, _, Ok(m))) => {
                    log!(
                        "INFO",
                        "model {} -> {} (GGUF v{}, {} bytes, {} {} {}, trained context {})",
                        m.name,
                        m.path.display(),
                        m.gguf.version,
                        m.size,
                        m.details.family,
                        m.details.parameter_size,
                        m.details.quantization_level,
                        m.trained_ctx
                    );
                    models.push(Arc::new(m));
                }
                Ok((name, _, Err(e))) => log!("WARN", "model {name} not listed: {e}"),
                Err(_) => log!("WARN", "model loader thread panicked"),
            }
        }
        Registry { models }
    }

    /// Look a name up as Ollama does: exact, else with ":latest" added.
    pub fn find(&self, name: &str) -> Option<Arc<ModelEntry>> {
        let with_tag = if name.contains(':') {
            name.to_string()
        } else {
            format!("{name}:latest")
        };
        self.models
            .iter()
            .find(|m| m.name == name || m.name == with_tag)
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_reads_synthetic_file_and_skips_missing() {
        let dir = std::env::temp_dir().join(format!("o3ref-reg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("tiny.gguf"), crate::gguf::tests::sample()).unwrap();
        let reg = Registry::load(
            &dir,
            &[
                ("tiny:1m".into(), "tiny.gguf".into()),
                ("gone:1m".into(), "missing.gguf".into()),
            ],
        );
        assert_eq!(reg.models.len(), 1);
        let m = reg.find("tiny:1m").unwrap();
        assert_eq!(m.trained_ctx, 8192);
        assert_eq!(m.details.family, "llama");
        assert_eq!(m.details.quantization_level, "Q4_1");
        assert_eq!(m.digest.len(), 64);
        let info = m.model_info(false);
        assert!(info.get("general.name").is_none());
        assert_eq!(info["llama.context_length"], 8192);
        assert_eq!(info["tokenizer.ggml.tokens"], serde_json::json!([]));
        assert_eq!(info["general.parameter_count"], 576 * 49152 + 576);
        let verbose = m.model_info(true);
        assert_eq!(
            verbose["tokenizer.ggml.tokens"].as_array().unwrap().len(),
            6
        );
        assert!(reg.find("gone:1m").is_none());
        assert!(reg.find("tiny").is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
