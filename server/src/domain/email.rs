//! Emails as admins author them: named assets whose every edit is a new, immutable version, so
//! that a send can always say exactly what it used.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{contact::EmailAddress, string_enum};

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

/// One rendered message, before it becomes MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedEmail {
    pub subject: String,
    pub preheader: Option<String>,
    pub html: String,
    pub text: String,
}
