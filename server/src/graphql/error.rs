//! The only way a resolver's failure reaches a GraphQL caller. `GqlError` deliberately does not
//! implement `Display`: async-graphql converts any `Display` type into an error carrying its
//! text, and a bare `?` on a database error would then leak internals to the client.

use std::time::Duration;

use async_graphql::{ErrorExtensions, Value};

use crate::service::Error;

/// The codes GraphQL errors carry in `extensions.code`; also why a batch item was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, async_graphql::Enum)]
#[graphql(name = "ErrorCode")]
pub enum Code {
    Unauthenticated,
    Forbidden,
    BadUserInput,
    NotFound,
    Conflict,
    RateLimited,
    Internal,
}

impl Code {
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Unauthenticated => "UNAUTHENTICATED",
            Code::Forbidden => "FORBIDDEN",
            Code::BadUserInput => "BAD_USER_INPUT",
            Code::NotFound => "NOT_FOUND",
            Code::Conflict => "CONFLICT",
            Code::RateLimited => "RATE_LIMITED",
            Code::Internal => "INTERNAL",
        }
    }
}

#[derive(Debug, Clone)]
pub struct GqlError {
    code: Code,
    message: String,
    field: Option<String>,
    retry_after_seconds: Option<u64>,
}

pub type GqlResult<T> = Result<T, GqlError>;

impl GqlError {
    pub fn bad_input(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        let field = field.into();
        Self {
            code: Code::BadUserInput,
            message: format!("{field}: {reason}"),
            field: Some(field),
            retry_after_seconds: None,
        }
    }

    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), field: None, retry_after_seconds: None }
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

/// Parses one argument at the edge, naming it in the error if it does not parse.
pub fn parse_arg<T, E: std::fmt::Display>(field: &str, parsed: Result<T, E>) -> GqlResult<T> {
    parsed.map_err(|error| GqlError::bad_input(field, error))
}

impl From<Error> for GqlError {
    fn from(error: Error) -> Self {
        let plain = |code, message: String| GqlError { code, message, field: None, retry_after_seconds: None };
        match error {
            Error::Validation { field, reason } => GqlError::bad_input(field, reason),
            Error::NotFound { what } => plain(Code::NotFound, format!("{what} not found")),
            Error::Conflict { field, reason } => {
                GqlError { code: Code::Conflict, message: reason, field, retry_after_seconds: None }
            }
            Error::Forbidden => plain(Code::Forbidden, "not allowed".to_owned()),
            Error::Unauthenticated => plain(Code::Unauthenticated, "authentication required".to_owned()),
            Error::RateLimited { retry_after } => GqlError {
                code: Code::RateLimited,
                message: "too many requests".to_owned(),
                field: None,
                retry_after_seconds: Some(retry_after_seconds(retry_after)),
            },
            Error::Internal(cause) => {
                // The cause goes to the log, under the request's span (and so its request id);
                // the caller learns only that something failed.
                tracing::error!(error = ?cause, "internal error");
                plain(Code::Internal, INTERNAL_MESSAGE.to_owned())
            }
        }
    }
}

pub const INTERNAL_MESSAGE: &str = "internal error";

/// `Retry-After` and `extensions.retryAfter` are whole seconds: rounded up, so that a caller who
/// waits that long is let in, and at least 1, since 0 would invite an immediate retry.
pub fn retry_after_seconds(retry_after: Duration) -> u64 {
    retry_after.as_secs().saturating_add(u64::from(retry_after.subsec_nanos() > 0)).max(1)
}

impl From<GqlError> for async_graphql::Error {
    fn from(error: GqlError) -> Self {
        async_graphql::Error::new(error.message).extend_with(|_, extensions| {
            extensions.set("code", error.code.as_str());
            if let Some(field) = &error.field {
                extensions.set("field", field.as_str());
            }
            if let Some(seconds) = error.retry_after_seconds {
                extensions.set("retryAfter", Value::from(seconds));
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up_and_never_zero() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_seconds(Duration::from_secs(999) + Duration::from_nanos(1)), 1000);
    }
}
