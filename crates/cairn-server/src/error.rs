//! The one error type of the server and its HTTP form.
//!
//! Every failure a request can meet becomes an [`ApiError`]: a stable
//! [`ErrorCode`] plus a human message. The HTTP status comes from
//! [`ErrorCode::http_status`] and nowhere else, and the body is always
//! `{"code": "...", "message": "..."}` — including for rejections that axum
//! would otherwise answer in plain text (bad path or query parameters,
//! unknown routes), which the API layer routes through this type too.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use cairn_storage::StorageError;
use cairn_types::ErrorCode;
use cairn_types::api::ErrorBody;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::BadRequest, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Internal, message)
    }

    pub fn stream_not_found(name: &str) -> Self {
        Self::new(
            ErrorCode::StreamNotFound,
            format!("stream {name:?} does not exist"),
        )
    }

    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        ApiError::new(e.code(), e.to_string())
    }
}

impl From<cairn_cluster::read::ReadError> for ApiError {
    fn from(e: cairn_cluster::read::ReadError) -> Self {
        ApiError::new(e.code, e.message)
    }
}

impl From<cairn_cluster::ClusterError> for ApiError {
    fn from(e: cairn_cluster::ClusterError) -> Self {
        ApiError::new(e.error_code(), e.to_string())
    }
}

impl From<tokio::task::JoinError> for ApiError {
    /// A blocking task panicked or was cancelled: a server bug, not the
    /// client's fault.
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(format!("request task failed: {e}"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, "request failed");
        } else {
            tracing::debug!(code = %self.code, message = %self.message, "request rejected");
        }
        let body = ErrorBody {
            code: self.code.as_str().to_string(),
            message: self.message,
        };
        let mut response = (status, Json(body)).into_response();
        // For the failure counters in the API's middleware.
        response.extensions_mut().insert(self.code);
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_comes_from_the_code() {
        assert_eq!(
            ApiError::stream_not_found("x").status(),
            StatusCode::NOT_FOUND
        );
        let e = ApiError::from(StorageError::OffsetOutOfRange {
            requested: 9,
            start: 0,
            end: 3,
        });
        assert_eq!(e.code, ErrorCode::OffsetOutOfRange);
        assert_eq!(e.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    }
}
