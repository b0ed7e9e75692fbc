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

/// Why a preflight could not go on.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PreflightError {
    /// The server did not answer `/api/version`.
    #[error(
        "{0}; start Ollama there (`ollama serve`, or `bash harness/refserver.sh start` for the reference server) or point OLLAMA_HOST at a running one"
    )]
    NoServer(String),
    /// `/api/tags` failed.
    #[error("cannot list models on {host}: {error}")]
    NoTags {
        /// The server.
        host: String,
        /// What went wrong.
        error: String,
    },
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
    /// `/api/show` failed for another reason.
    #[error("cannot inspect {model} on {host}: {error}")]
    NoShow {
        /// The model.
        model: String,
        /// The server.
        host: String,
        /// What went wrong.
        error: String,
    },
}

/// Asks the server for its version, the model's tag and the model's facts.
pub async fn preflight(client: &OllamaClient, model: &str) -> Result<ModelFacts, PreflightError> {
    let host = client.host().to_string();
    let version = client
        .version()
        .await
        .map_err(|e| PreflightError::NoServer(e.to_string()))?;
    let tags = client.tags().await.map_err(|e| PreflightError::NoTags {
        host: host.clone(),
        error: e.to_string(),
    })?;
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
        Err(BackendError::Http { status: 404, .. }) => {
            return Err(PreflightError::NotPulled {
                model: model.to_string(),
                host,
                available: String::new(),
            });
        }
        Err(e) => {
            return Err(PreflightError::NoShow {
                model: model.to_string(),
                host,
                error: e.to_string(),
            });
        }
    };
    Ok(ModelFacts { version, tag, show })
}
