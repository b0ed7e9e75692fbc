//! The `{"error": …}` replies, with the status and the model name for the request log line.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::with_model;

#[derive(Debug)]
pub(super) struct ApiError {
    pub(super) status: StatusCode,
    pub(super) message: String,
    model: Option<String>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            model: None,
        }
    }
    pub(super) fn bad(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, message)
    }
    pub(super) fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }
    pub(super) fn not_found(model: &str) -> ApiError {
        Self::new(StatusCode::NOT_FOUND, format!("model '{model}' not found"))
    }
    pub(super) fn for_model(mut self, model: &str) -> ApiError {
        self.model = Some(model.to_string());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let r = (self.status, axum::Json(json!({ "error": self.message }))).into_response();
        match self.model {
            Some(m) => with_model(r, &m),
            None => r,
        }
    }
}
