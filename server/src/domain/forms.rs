//! Signup forms and double opt-in: what a form subscribes people to and the consent wording it
//! shows, and the opt-in request a submission leaves until the person confirms it.

use std::net::IpAddr;

use chrono::{DateTime, Duration, Utc};
use uuid::Uuid;

use super::{consent::UserAgent, contact::ContactId, key::Key, string_enum};

/// How long a confirmation link works; an unconfirmed request is expired afterwards.
pub const OPT_IN_LIFETIME: Duration = Duration::days(7);

#[derive(Debug, Clone, PartialEq)]
pub struct SignupForm {
    pub id: Uuid,
    /// Part of the form's public URL: `POST /forms/{key}`.
    pub key: Key,
    pub name: String,
    /// The topics the form subscribes to; a submission may pick among them.
    pub topics: Vec<Key>,
    /// The profile fields the form asks for besides the address (built-in or custom field keys);
    /// they fill in a new contact and never change a known one.
    pub fields: Vec<String>,
    /// The consent text shown with the form, recorded as the wording of the decision.
    pub wording: String,
    /// Whether email marketing consent waits, `PENDING`, for the link in a confirmation email.
    pub double_opt_in: bool,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

string_enum!(OptInStatus { Pending => "pending", Confirmed => "confirmed" });

/// A submission waiting for confirmation, with the proof of the submission itself.
#[derive(Debug, Clone, PartialEq)]
pub struct OptInRequest {
    pub id: Uuid,
    pub contact_id: ContactId,
    pub form_id: Uuid,
    pub topics: Vec<Key>,
    pub status: OptInStatus,
    pub submitted_ip: Option<IpAddr>,
    pub submitted_user_agent: Option<UserAgent>,
    pub submitted_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
}

impl OptInRequest {
    pub fn is_open(&self, now: DateTime<Utc>) -> bool {
        self.status == OptInStatus::Pending && self.expires_at > now
    }
}
