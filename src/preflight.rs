//! Preflight: what a cell and the optimizer ask the server before they load anything — its
//! version, whether the model is pulled, and the model's facts from `/api/show`.

use crate::backend::{BackendError, OllamaClient, ShowResponse, TagModel, same_model};

/// What the server said about itself and the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelFacts {
    /// `/api/version`.
    pub version: String,
    /// The model's entry of `/api/tags`.
    pub tag: TagModel,
    /// `/api/show` of the model.
    pub show: ShowResponse,
}

/// Why a preflight could not go on. [`PreflightError::skips`] says whether the cell cannot
/// run here (SKIPPED) or the server is broken (the cell is INVALID with the error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreflightError {
    /// Nothing answers at the server's address (refused, unreachable, connect timeout).
    #[error(
        "{0}; start Ollama there (`ollama serve`, or `bash harness/refserver.sh start` for the reference server) or point OLLAMA_HOST at a running one"
    )]
    NoServer(String),
    /// The model is not pulled on the server.
    #[error("model {model} is not pulled on {host}: run `ollama pull {model}` there{available}")]
    NotPulled {
        /// The model.
        model: String,
        /// The server.
        host: String,
        /// The models that are there, in words (empty when not known).
        available: String,
    },
    /// Something answers, but wrongly: an error status, a body that is not the endpoint's
    /// JSON, no answer within the timeout. The error names the endpoint, the status and the
    /// start of the body.
    #[error("the server at {host} is broken: {error}")]
    Broken {
        /// The server.
        host: String,
        /// What it answered (a [`BackendError`] in words).
        error: String,
    },
}

impl PreflightError {
    /// Whether the cell cannot run here and is skipped: the server cannot be reached, or the
    /// model is not pulled. A server that answers wrongly is not a reason to skip.
    pub fn skips(&self) -> bool {
        match self {
            PreflightError::NoServer(_) | PreflightError::NotPulled { .. } => true,
            PreflightError::Broken { .. } => false,
        }
    }
}

/// The preflight error of a failed request: unreachable, or broken.
fn failed(host: &str, e: BackendError) -> PreflightError {
    if e.is_unreachable() {
        PreflightError::NoServer(e.to_string())
    } else {
        PreflightError::Broken {
            host: host.to_string(),
            error: e.to_string(),
        }
    }
}

/// Asks the server for its version, the model's tag and the model's facts.
pub async fn preflight(client: &OllamaClient, model: &str) -> Result<ModelFacts, PreflightError> {
    let host = client.host().to_string();
    let version = client.version().await.map_err(|e| failed(&host, e))?;
    let tags = client.tags().await.map_err(|e| failed(&host, e))?;
    let Some(tag) = tags.iter().find(|t| same_model(&t.name, model)).cloned() else {
        return Err(PreflightError::NotPulled {
            model: model.to_string(),
            host,
            available: format!(
                " ({} model(s) available: {})",
                tags.len(),
                tags.iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    let show = match client.show(model).await {
        Ok(s) => s,
        // Listed but unknown to /api/show (removed in between): not pulled.
        Err(BackendError::Http { status: 404, .. }) => {
            return Err(PreflightError::NotPulled {
                model: model.to_string(),
                host,
                available: String::new(),
            });
        }
        Err(e) => return Err(failed(&host, e)),
    };
    Ok(ModelFacts { version, tag, show })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unreachable_and_not_pulled_skip() {
        let unreachable = BackendError::Unreachable {
            host: "h:1".into(),
            detail: "Connection refused".into(),
        };
        assert!(failed("h:1", unreachable).skips());
        let not_pulled = PreflightError::NotPulled {
            model: "m".into(),
            host: "h:1".into(),
            available: String::new(),
        };
        assert!(not_pulled.skips());
        for e in [
            BackendError::Http {
                endpoint: "GET /api/version".into(),
                status: 503,
                message: "busy".into(),
                retried: None,
            },
            BackendError::Malformed {
                endpoint: "GET /api/tags".into(),
                status: 200,
                what: "a body that is not JSON".into(),
                body: "{".into(),
            },
            BackendError::Timeout {
                phase: "GET /api/version to answer".into(),
                after_s: 2.0,
            },
        ] {
            let p = failed("h:1", e);
            assert!(!p.skips(), "{p}");
            assert!(
                p.to_string().starts_with("the server at h:1 is broken: "),
                "{p}"
            );
        }
    }
}
