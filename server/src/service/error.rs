//! The one error type of the use cases. The GraphQL and HTTP layers each map it outward once;
//! nothing else decides what a caller is told.

use std::time::Duration;

use crate::store::{Constraint, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input that can never succeed as sent; `field` names it as the caller spelled it.
    #[error("{field}: {reason}")]
    Validation { field: String, reason: String },
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The request clashes with the stored state (a taken key, a stale version).
    #[error("{reason}")]
    Conflict { field: Option<String>, reason: String },
    #[error("not allowed")]
    Forbidden,
    #[error("authentication required")]
    Unauthenticated,
    #[error("too many requests")]
    RateLimited { retry_after: Duration },
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn validation(field: impl Into<String>, reason: impl std::fmt::Display) -> Self {
        Error::Validation { field: field.into(), reason: reason.to_string() }
    }

    /// The same error with its field named inside `path` (`consents[0]` + `purpose`), for input
    /// checked one item of a list at a time.
    pub fn within(self, path: &str) -> Self {
        match self {
            Error::Validation { field, reason } => Error::Validation { field: format!("{path}.{field}"), reason },
            other => other,
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Conflict(constraint) => {
                let (field, reason) = match constraint {
                    Constraint::ContactExternalId => ("externalId", "another contact has this external id"),
                    Constraint::ContactEmail => ("email", "another contact has this email address"),
                    Constraint::FieldKey => ("key", "a field with this key exists"),
                    Constraint::PurposeKey => ("key", "a consent purpose with this key exists"),
                    Constraint::TopicKey => ("key", "a topic with this key exists"),
                    Constraint::UserEmail => ("email", "a user with this email address exists"),
                    Constraint::EmailVersion => ("expectedVersion", "the email was changed meanwhile; read it again"),
                };
                Error::Conflict { field: Some(field.to_owned()), reason: reason.to_owned() }
            }
            StoreError::MissingReference => Error::NotFound { what: "referenced record" },
            other => Error::Internal(other.into()),
        }
    }
}

impl From<sea_orm::DbErr> for Error {
    fn from(error: sea_orm::DbErr) -> Self {
        StoreError::from(error).into()
    }
}
