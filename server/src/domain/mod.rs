//! Plain Rust types for what Rapport is about: contacts, their attributes, consents, topics and events.
//! Every value here is valid by construction: inputs are parsed at the edge and nothing downstream
//! re-checks them. This module knows nothing of HTTP, GraphQL, SQL or mail.

pub mod access;
pub mod audit;
pub mod consent;
pub mod contact;
pub mod delivery;
pub mod email;
pub mod event;
pub mod field;
pub mod filter;
pub mod forms;
pub mod import;
pub mod key;
pub mod page;
pub mod preferences;
pub mod privacy;
pub mod request;
pub mod statistics;
pub mod stream;
pub mod texts;
pub mod topic;
pub mod webhook;

/// Declares a closed set of values stored and exchanged as `snake_case` strings.
macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = crate::domain::UnknownValue;

            fn from_str(raw: &str) -> Result<Self, Self::Err> {
                match raw {
                    $($text => Ok($name::$variant),)+
                    _ => Err(crate::domain::UnknownValue {
                        allowed: &[$($text),+],
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use string_enum;

/// A stored or submitted string that is not one of a closed set of values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be one of: {}", allowed.join(", "))]
pub struct UnknownValue {
    pub allowed: &'static [&'static str],
}

/// Checks free text that people typed: trimmed, non-empty, bounded, no control characters.
pub fn clean_text(raw: &str, max_chars: usize) -> Result<String, TextError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(TextError::Empty);
    }
    if trimmed.chars().count() > max_chars {
        return Err(TextError::TooLong { max_chars });
    }
    if trimmed.chars().any(char::is_control) {
        return Err(TextError::ControlCharacter);
    }
    Ok(trimmed.to_owned())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TextError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {max_chars} characters")]
    TooLong { max_chars: usize },
    #[error("must not contain control characters")]
    ControlCharacter,
}

/// Instants at the precision both databases store (a microsecond), so that a value read back
/// equals the value written and comparisons agree on SQLite and PostgreSQL.
pub fn at_storage_precision(at: chrono::DateTime<chrono::Utc>) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at)
}

/// How far in the future a client-supplied time may lie, for senders whose clocks run fast.
pub const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// A requested change to one optional value: leave it, clear it, or set it.
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Change<T> {
    #[default]
    Keep,
    Clear,
    Set(T),
}

impl<T> Change<T> {
    pub fn apply(self, current: Option<T>) -> Option<T> {
        match self {
            Change::Keep => current,
            Change::Clear => None,
            Change::Set(value) => Some(value),
        }
    }
}
