//! Chat prompts as Ollama renders them for the models this server names.
//!
//! Ollama v0.30+ renders a model's Go `TEMPLATE` itself whenever the model has one
//! (ollama/ollama `server/routes.go`: `usesOllamaRenderedChat` → `chatPrompt` → `renderPrompt`;
//! `OLLAMA_GO_TEMPLATE` defaults to on), sends the text to llama-server's `/completion`, and starts
//! that runner with `--no-jinja --chat-template chatml` so the GGUF's own template is never used
//! (`llm/llama_server.go` `appendJinjaArgs`). The library models `smollm2:135m` and `gemma3:270m`
//! carry the Go templates and `PARAMETER`s below (their ollama.com manifests, as recorded in
//! huggingface/huggingface.js `packages/ollama-utils/src/chat-template-automap.ts`). They are
//! rendered here output for output, after Ollama's `collate` (`template/template.go`): `.System`
//! is every system message joined by a blank line, and consecutive messages of one role (tool
//! messages apart) are merged with a blank line. Messages of roles a template does not name
//! (`tool`, `system` inside the range) render as nothing, exactly as in Ollama.
//!
//! A model the server does not know by name keeps the GGUF's Jinja template, rendered by the
//! runner's `/apply-template` (`Template::Gguf`).

use serde::{Deserialize, Serialize};

/// One chat message as the client sent it (`role`, `content`).
#[derive(Debug, Deserialize, Serialize, Clone, PartialEq)]
pub struct ChatMessage {
    pub role: String,
    #[serde(default)]
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: &str) -> ChatMessage {
        ChatMessage {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// The `PARAMETER`s of a library Modelfile: defaults under the request's own `options`
/// (Ollama: `api.DefaultOptions()`, then the model's options, then the request's).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ModelDefaults {
    pub stop: &'static [&'static str],
    pub top_k: Option<i64>,
    pub top_p: Option<f64>,
}

impl ModelDefaults {
    /// Each parameter's name and value as Ollama prints it (`%#v`: strings quoted), one pair
    /// per value (a list of stops is several pairs).
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut out: Vec<(&'static str, String)> = self
            .stop
            .iter()
            .map(|s| ("stop", serde_json::Value::from(*s).to_string()))
            .collect();
        if let Some(k) = self.top_k {
            out.push(("top_k", k.to_string()));
        }
        if let Some(p) = self.top_p {
            out.push(("top_p", p.to_string()));
        }
        out
    }

    /// `/api/show` `parameters`: one line per pair, the name padded to 30
    /// (`fmt.Sprintf("%-*s %#v", 30, k, v)` in `GetModelInfo`, `server/routes.go`).
    pub fn show_text(&self) -> String {
        self.pairs()
            .iter()
            .map(|(k, v)| format!("{k:<30} {v}"))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A model of Ollama's library whose template this server renders itself.
#[derive(Debug)]
pub struct LibraryModel {
    pub name: &'static str,
    /// The Go template, as `/api/show` reports it.
    pub go_template: &'static str,
    pub defaults: ModelDefaults,
    render: fn(&str, &[ChatMessage]) -> String,
}

/// How a model's chat prompts are rendered.
#[derive(Debug, Clone, Copy)]
pub enum Template {
    /// Here, as Ollama renders the library model's Go template.
    Library(&'static LibraryModel),
    /// By the runner's `/apply-template`, with the GGUF's Jinja template.
    Gguf,
}

impl Template {
    /// The library template for an Ollama model name, else the GGUF's.
    pub fn for_model(name: &str) -> Template {
        LIBRARY
            .iter()
            .find(|m| m.name == name)
            .map_or(Template::Gguf, Template::Library)
    }
}

impl LibraryModel {
    /// The prompt for `msgs`, as Ollama's `renderPrompt` makes it.
    pub fn render(&self, msgs: &[ChatMessage]) -> String {
        let (system, collated) = collate(msgs);
        (self.render)(&system, &collated)
    }
}

/// Ollama's `collate`: every system message's text joined by a blank line (the template's
/// `.System`), and the messages with consecutive same-role ones (but `tool`) merged.
fn collate(msgs: &[ChatMessage]) -> (String, Vec<ChatMessage>) {
    let mut system = Vec::new();
    let mut out: Vec<ChatMessage> = Vec::with_capacity(msgs.len());
    for m in msgs {
        if m.role == "system" {
            system.push(m.content.as_str());
        }
        match out.last_mut() {
            Some(prev) if prev.role == m.role && m.role != "tool" => {
                prev.content.push_str("\n\n");
                prev.content.push_str(&m.content);
            }
            _ => out.push(m.clone()),
        }
    }
    (system.join("\n\n"), out)
}

pub const LIBRARY: &[LibraryModel] = &[
    LibraryModel {
        name: "smollm2:135m",
        go_template: SMOLLM2_TEMPLATE,
        defaults: ModelDefaults {
            stop: &["<|im_start|>", "<|im_end|>"],
            top_k: None,
            top_p: None,
        },
        render: render_smollm2,
    },
    LibraryModel {
        name: "gemma3:270m",
        go_template: GEMMA3_270M_TEMPLATE,
        defaults: ModelDefaults {
            stop: &["<end_of_turn>"],
            top_k: Some(64),
            top_p: Some(0.95),
        },
        render: render_gemma3_270m,
    },
];

const SMOLLM2_TEMPLATE: &str = "{{- if .Messages }}\n{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}\n{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n{{- if eq .Role \"user\" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n{{ else if eq .Role \"assistant\" }}<|im_start|>assistant\n{{ .Content }}{{ if not $last }}<|im_end|>\n{{ end }}\n{{- end }}\n{{- if and (ne .Role \"assistant\") $last }}<|im_start|>assistant\n{{ end }}\n{{- end }}\n{{- else }}\n{{- if .System }}<|im_start|>system\n{{ .System }}<|im_end|>\n{{ end }}{{ if .Prompt }}<|im_start|>user\n{{ .Prompt }}<|im_end|>\n{{ end }}<|im_start|>assistant\n{{ end }}{{ .Response }}{{ if .Response }}<|im_end|>{{ end }}";

const GEMMA3_270M_TEMPLATE: &str = "{{- $systemPromptAdded := false }}\n{{- range $i, $_ := .Messages }}\n{{- $last := eq (len (slice $.Messages $i)) 1 }}\n{{- if eq .Role \"user\" }}<start_of_turn>user\n{{- if (and (not $systemPromptAdded) $.System) }}\n{{- $systemPromptAdded = true }}\n{{ $.System }}\n{{ end }}\n{{ .Content }}<end_of_turn>\n{{ if $last }}<start_of_turn>model\n{{ end }}\n{{- else if eq .Role \"assistant\" }}<start_of_turn>model\n{{ .Content }}{{ if not $last }}<end_of_turn>\n{{ end }}\n{{- end }}\n{{- end }}";

/// `SMOLLM2_TEMPLATE` (the `.Messages` branch) on collated messages. No default system prompt:
/// the library Modelfile has no `SYSTEM` (the GGUF's Jinja template would add one).
fn render_smollm2(system: &str, msgs: &[ChatMessage]) -> String {
    let mut out = String::new();
    if !system.is_empty() {
        out.push_str("<|im_start|>system\n");
        out.push_str(system);
        out.push_str("<|im_end|>\n");
    }
    for (i, m) in msgs.iter().enumerate() {
        let last = i + 1 == msgs.len();
        match m.role.as_str() {
            "user" => {
                out.push_str("<|im_start|>user\n");
                out.push_str(&m.content);
                out.push_str("<|im_end|>\n");
            }
            "assistant" => {
                out.push_str("<|im_start|>assistant\n");
                out.push_str(&m.content);
                if !last {
                    out.push_str("<|im_end|>\n");
                }
            }
            _ => {}
        }
        if m.role != "assistant" && last {
            out.push_str("<|im_start|>assistant\n");
        }
    }
    out
}

/// `GEMMA3_270M_TEMPLATE` on collated messages: the system text opens the first user turn.
/// No `<bos>`: the runner's tokenizer adds it.
fn render_gemma3_270m(system: &str, msgs: &[ChatMessage]) -> String {
    let mut out = String::new();
    let mut system_added = false;
    for (i, m) in msgs.iter().enumerate() {
        let last = i + 1 == msgs.len();
        match m.role.as_str() {
            "user" => {
                out.push_str("<start_of_turn>user");
                if !system_added && !system.is_empty() {
                    system_added = true;
                    out.push('\n');
                    out.push_str(system);
                    out.push('\n');
                }
                out.push('\n');
                out.push_str(&m.content);
                out.push_str("<end_of_turn>\n");
                if last {
                    out.push_str("<start_of_turn>model\n");
                }
            }
            "assistant" => {
                out.push_str("<start_of_turn>model\n");
                out.push_str(&m.content);
                if !last {
                    out.push_str("<end_of_turn>\n");
                }
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lib(name: &str) -> &'static LibraryModel {
        match Template::for_model(name) {
            Template::Library(m) => m,
            Template::Gguf => panic!("{name} has no library template"),
        }
    }

    fn msgs(list: &[(&str, &str)]) -> Vec<ChatMessage> {
        list.iter().map(|(r, c)| ChatMessage::new(r, c)).collect()
    }

    #[test]
    fn gemma3_turns() {
        let g = lib("gemma3:270m");
        assert_eq!(
            g.render(&msgs(&[("user", "Hi")])),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n"
        );
        // The system text opens the first user turn; earlier answers close with <end_of_turn>.
        assert_eq!(
            g.render(&msgs(&[
                ("system", "Be brief."),
                ("user", "Hi"),
                ("assistant", "Hello!"),
                ("user", "Name?"),
            ])),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello!<end_of_turn>\n\
             <start_of_turn>user\nName?<end_of_turn>\n<start_of_turn>model\n"
        );
        // A trailing assistant message is left open (prefill), as the Go template does.
        assert_eq!(
            g.render(&msgs(&[("user", "Hi"), ("assistant", "Hel")])),
            "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\nHel"
        );
    }

    #[test]
    fn smollm2_turns() {
        let s = lib("smollm2:135m");
        assert_eq!(
            s.render(&msgs(&[("user", "Hi")])),
            "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(
            s.render(&msgs(&[
                ("system", "Be brief."),
                ("user", "Hi"),
                ("assistant", "Hello!"),
                ("user", "Name?"),
            ])),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nName?<|im_end|>\n\
             <|im_start|>assistant\n"
        );
    }

    #[test]
    fn collate_merges_and_joins_systems() {
        let s = lib("smollm2:135m");
        // Two system messages become one `.System`; two user messages in a row merge.
        assert_eq!(
            s.render(&msgs(&[
                ("system", "A"),
                ("user", "x"),
                ("user", "y"),
                ("system", "B"),
            ])),
            "<|im_start|>system\nA\n\nB<|im_end|>\n<|im_start|>user\nx\n\ny<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        // Tool messages are not merged, and neither template renders them.
        let (_, c) = collate(&msgs(&[("tool", "a"), ("tool", "b")]));
        assert_eq!(c.len(), 2);
        assert_eq!(
            lib("gemma3:270m").render(&msgs(&[("user", "q"), ("tool", "r")])),
            "<start_of_turn>user\nq<end_of_turn>\n"
        );
    }

    #[test]
    fn unknown_models_keep_the_gguf_template() {
        assert!(matches!(Template::for_model("other:1b"), Template::Gguf));
        assert!(matches!(
            Template::for_model("gemma3:270m"),
            Template::Library(_)
        ));
    }

    #[test]
    fn show_parameters() {
        let d = &lib("gemma3:270m").defaults;
        assert_eq!(
            d.show_text(),
            format!(
                "{:<30} \"<end_of_turn>\"\n{:<30} 64\n{:<30} 0.95",
                "stop", "top_k", "top_p"
            )
        );
        assert_eq!(
            lib("smollm2:135m").defaults.pairs(),
            [
                ("stop", "\"<|im_start|>\"".to_string()),
                ("stop", "\"<|im_end|>\"".to_string())
            ]
        );
    }
}
