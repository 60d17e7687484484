//! Emails as admins author them: named assets whose every edit is a new, immutable version, so
//! that a send can always say exactly what it used.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{TextError, clean_text, contact::EmailAddress, string_enum};

string_enum! {
    /// Marketing mail needs consent and honours every suppression; transactional mail (receipts,
    /// confirmations) skips the consent check but never goes to a hard-bounced address.
    EmailType {
        Marketing => "marketing",
        Transactional => "transactional",
    }
}

/// A display name and an address, as in `From: "Rapport" <news@example.com>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mailbox {
    pub name: Option<String>,
    pub address: EmailAddress,
}

/// The templates of one version. Every part is a minijinja template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailContent {
    pub subject: String,
    pub preheader: Option<String>,
    pub html: String,
    /// Generated from the HTML when absent.
    pub text: Option<String>,
}

/// An email asset; its content lives in its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email {
    pub id: Uuid,
    pub name: String,
    pub email_type: EmailType,
    pub current_version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// One immutable version of an email: what a send renders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EmailVersion {
    pub id: Uuid,
    pub email_id: Uuid,
    pub version: i32,
    pub email_type: EmailType,
    pub content: EmailContent,
    pub from: Mailbox,
    pub reply_to: Option<Mailbox>,
    /// Open pixel and click redirects; on by default.
    pub tracking: bool,
    pub created_at: DateTime<Utc>,
}

/// A version as listed: with what the template check found when it was saved (fields that no
/// contact has, say), which does not stop it from being sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedVersion {
    pub version: EmailVersion,
    pub warnings: Vec<String>,
}

/// One rendered message, before it becomes MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub preheader: Option<String>,
    pub html: String,
    pub text: String,
}

/// Names and one-line parts (subject, preheader, sender names) are text people type.
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_LINE_CHARS: usize = 2_000;
/// Large enough for any newsletter (Gmail clips messages past 102 KB anyway), small enough that
/// a version row stays an ordinary row.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// An email's name, or a mailbox's display name.
pub fn parse_name(raw: &str) -> Result<String, TextError> {
    clean_text(raw, MAX_NAME_CHARS)
}

/// A subject or preheader template: one line of text.
pub fn parse_line(raw: &str) -> Result<String, TextError> {
    clean_text(raw, MAX_LINE_CHARS)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {MAX_BODY_BYTES} bytes")]
    TooLarge,
    #[error("must not contain NUL characters")]
    Nul,
}

/// An HTML or text body template, kept as written (its whitespace may matter).
pub fn parse_body(raw: &str) -> Result<String, BodyError> {
    if raw.trim().is_empty() {
        Err(BodyError::Empty)
    } else if raw.len() > MAX_BODY_BYTES {
        Err(BodyError::TooLarge)
    } else if raw.contains('\0') {
        Err(BodyError::Nul)
    } else {
        Ok(raw.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_keep_their_whitespace_and_must_hold_something() {
        assert_eq!(parse_body("  <p>Hi</p>\n").as_deref(), Ok("  <p>Hi</p>\n"));
        assert_eq!(parse_body(" \n\t"), Err(BodyError::Empty));
        assert_eq!(parse_body(&"x".repeat(MAX_BODY_BYTES + 1)), Err(BodyError::TooLarge));
        assert_eq!(parse_body("a\0b"), Err(BodyError::Nul));
    }

    #[test]
    fn subjects_are_single_trimmed_lines() {
        assert_eq!(parse_line("  Hello {{ contact.first_name }} ").as_deref(), Ok("Hello {{ contact.first_name }}"));
        assert_eq!(parse_line("two\nlines"), Err(TextError::ControlCharacter));
    }
}
