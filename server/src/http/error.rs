//! How non-GraphQL HTTP endpoints report failure: a status and `{"error": {"code", "message"}}`.

use axum::{
    Json,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde_json::json;

use crate::{
    graphql::error::{Code, retry_after_seconds},
    service::Error,
};

#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: Code,
    message: String,
    retry_after_seconds: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_seconds: None }
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, Code::NotFound, "no such resource")
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> Self {
        match error {
            Error::Validation { field, reason } => {
                Self::new(StatusCode::BAD_REQUEST, Code::BadUserInput, format!("{field}: {reason}"))
            }
            Error::NotFound { what } => Self::new(StatusCode::NOT_FOUND, Code::NotFound, format!("{what} not found")),
            Error::Conflict { reason, .. } => Self::new(StatusCode::CONFLICT, Code::Conflict, reason),
            Error::Forbidden => Self::new(StatusCode::FORBIDDEN, Code::Forbidden, "not allowed"),
            Error::Unauthenticated => {
                Self::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, "authentication required")
            }
            Error::RateLimited { retry_after } => Self {
                retry_after_seconds: Some(retry_after_seconds(retry_after)),
                ..Self::new(StatusCode::TOO_MANY_REQUESTS, Code::RateLimited, "too many requests")
            },
            Error::Internal(cause) => {
                tracing::error!(error = ?cause, "internal error");
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, "internal error")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": { "code": self.code.as_str(), "message": self.message } });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}
