//! The Continue config (`config.yaml`, `schema: v1`) of the recommended configurations. The
//! keys are those of Continue's own schema package, `@continuedev/config-yaml`
//! (`configYamlSchema`: `name`, `version`, `schema`, `models[]` with `name`, `provider`,
//! `model`, `apiBase`, `roles`, `defaultCompletionOptions.contextLength`);
//! `tests/continue_config.rs` validates the rendered file with that package.

use serde::{Deserialize, Serialize};

use super::preset::modelfile_model;
use super::{CONTINUE_FILE, in_integration, is_default_ollama, preset_stem, without_credentials};
use crate::matrix::ctx_label;
use crate::optimize::record::SearchRecord;
use crate::output::{Output, OutputFile};

/// `defaultCompletionOptions` of a Continue model entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionOptions {
    /// `contextLength` (tokens); the Continue VS Code extension's Ollama provider sends it as
    /// `num_ctx`.
    #[serde(rename = "contextLength")]
    pub context_length: u32,
}

/// One model entry of a Continue config.yaml.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinueModel {
    /// Unique display name.
    pub name: String,
    /// `ollama`.
    pub provider: String,
    /// Model as Ollama knows it.
    pub model: String,
    /// The server the figures were measured on, credentials removed, with a trailing `/`;
    /// absent when it is Ollama's default address (where Continue talks without one).
    #[serde(rename = "apiBase", default, skip_serializing_if = "Option::is_none")]
    pub api_base: Option<String>,
    /// Roles (`chat`, `edit`, `apply`; never `autocomplete`: fill-in-the-middle is not measured).
    pub roles: Vec<String>,
    /// Completion options.
    #[serde(rename = "defaultCompletionOptions")]
    pub default_completion_options: CompletionOptions,
}

/// A Continue config.yaml (`schema: v1`) holding the recommended configurations.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContinueConfig {
    /// Config name.
    pub name: String,
    /// Config version (the harness version).
    pub version: String,
    /// `v1`.
    pub schema: String,
    /// Model entries.
    pub models: Vec<ContinueModel>,
}

/// Continue roles for the use cases of a model (union, in the order chat, edit, apply): basic
/// code tasks and complex refactoring → chat, edit, apply; chat assistance → chat, edit;
/// maximum analysis, RAG integration and anything else → chat. Never `autocomplete`: the harness
/// measures chat-style generation, not fill-in-the-middle.
pub fn roles_for(use_cases: &[String]) -> Vec<String> {
    let mut want = vec!["chat"];
    for u in use_cases {
        let extra: &[&str] = match u.trim().to_lowercase().as_str() {
            "basic code tasks" | "complex refactoring" => &["edit", "apply"],
            "chat assistance" => &["edit"],
            _ => &[],
        };
        want.extend_from_slice(extra);
    }
    ["chat", "edit", "apply"]
        .iter()
        .filter(|r| want.contains(r))
        .map(|r| r.to_string())
        .collect()
}

/// `apiBase` for a record's server: `None` for Ollama's default address, else the address
/// without credentials, without a query (paths are appended to `apiBase`; the record's query
/// is redacted anyway, `config::redact_url`) and with a trailing `/`.
pub fn api_base(server: &str) -> Option<String> {
    if server.trim().is_empty() || is_default_ollama(server) {
        return None;
    }
    let mut url = without_credentials(server.trim());
    url.truncate(url.find(['?', '#']).unwrap_or(url.len()));
    if !url.ends_with('/') {
        url.push('/');
    }
    Some(url)
}

/// The Continue config of every recommended configuration.
pub fn continue_config(records: &[SearchRecord]) -> ContinueConfig {
    let models = records
        .iter()
        .filter_map(|r| {
            let rec = r.recommended.as_ref()?;
            let uc: Vec<String> = r.use_cases.iter().map(|(u, _)| u.clone()).collect();
            Some(ContinueModel {
                name: format!(
                    "{} {} (o3-suite)",
                    r.model,
                    ctx_label(rec.options.num_ctx)
                        .trim_start_matches("ctx_")
                        .to_uppercase()
                ),
                provider: "ollama".into(),
                model: r.model.clone(),
                api_base: api_base(&r.server),
                roles: roles_for(&uc),
                default_completion_options: CompletionOptions {
                    context_length: rec.options.num_ctx,
                },
            })
        })
        .collect();
    ContinueConfig {
        name: "o3-suite recommendations".into(),
        version: records
            .first()
            .map_or(crate::results::HARNESS_VERSION.to_string(), |r| {
                r.harness_version.clone()
            }),
        schema: "v1".into(),
        models,
    }
}

/// The Continue config as YAML, with a comment header.
pub fn render_continue(records: &[SearchRecord]) -> String {
    let mut o = String::from(
        "# Continue config.yaml with the configurations o3-suite recommends on this host; merge the\n\
         # `models` entries into ~/.continue/config.yaml. `apiBase` is the server the figures were\n\
         # measured on (absent: Ollama's default, localhost:11434).\n\
         # contextLength reaches Ollama as num_ctx only from the Continue VS Code extension (its\n\
         # Ollama provider talks to /api/chat). Other Continue clients, such as the `cn` CLI, use the\n\
         # OpenAI-compatible endpoint, which cannot set num_ctx: for them, and for num_thread and\n\
         # num_batch in any client, create the model from the .Modelfile beside this file and put\n\
         # its name in `model`:\n",
    );
    for r in records {
        if let Some(stem) = preset_stem(r) {
            o.push_str(&format!(
                "#   {}: ollama create {} -f {stem}.Modelfile\n",
                r.model,
                modelfile_model(&stem)
            ));
        }
    }
    o.push_str(
        "# No model gets the `autocomplete` role: fill-in-the-middle is not measured. Generated; do\n\
         # not edit.\n",
    );
    o.push_str(
        &yaml_serde::to_string(&continue_config(records)).expect("configs always serialize"),
    );
    o
}

/// `integration_configs/continue-config.yaml`, always (with no models when nothing passed).
#[derive(Debug, Clone, Copy)]
pub struct ContinueFile;

impl Output<[SearchRecord]> for ContinueFile {
    fn render(&self, records: &[SearchRecord]) -> Vec<OutputFile> {
        vec![OutputFile::new(
            in_integration(CONTINUE_FILE),
            render_continue(records),
        )]
    }
}

#[cfg(test)]
mod tests {
    use super::api_base;

    /// A recorded server (redacted, `config::redact_url`) as `apiBase`: no userinfo, no query
    /// (paths go after it), a trailing `/`.
    #[rstest::rstest]
    #[case("http://***@proxy:8443?token=***", Some("http://proxy:8443/"))]
    #[case("http://box:1", Some("http://box:1/"))]
    #[case("http://***@127.0.0.1:11434", None)]
    fn api_bases(#[case] server: &str, #[case] expected: Option<&str>) {
        assert_eq!(api_base(server).as_deref(), expected);
    }
}
