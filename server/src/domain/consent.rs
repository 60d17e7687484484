//! Consent: what a person agreed to, for which purpose and channel, on what legal basis, and the
//! proof of it. Consent is a history of decisions; the current state is the one captured last
//! (ties go to the one recorded last), so importing an old decision never overrides a newer one.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{TextError, clean_text, contact::ContactId, key::Key, string_enum};

string_enum!(Channel { Email => "email", Sms => "sms", Push => "push" });

string_enum!(
    /// `Pending` is a double opt-in that the person has not confirmed yet.
    ConsentStatus { Granted => "granted", Denied => "denied", Pending => "pending" }
);

string_enum!(
    /// The lawful bases of GDPR article 6(1).
    LegalBasis {
        Consent => "consent",
        Contract => "contract",
        LegalObligation => "legal_obligation",
        VitalInterests => "vital_interests",
        PublicTask => "public_task",
        LegitimateInterests => "legitimate_interests",
    }
);

string_enum!(
    ConsentSource {
        Api => "api",
        Form => "form",
        Import => "import",
        PreferenceCenter => "preference_center",
        Admin => "admin",
        Unsubscribe => "unsubscribe",
    }
);

/// The purposes every installation has; admins add their own next to them.
pub const BUILT_IN_PURPOSES: [&str; 3] = ["marketing", "analytics", "profiling"];

/// The purpose marketing mail needs, with the email channel.
pub const MARKETING: &str = "marketing";

/// The current state of email marketing consent among a contact's current consents: what
/// decides whether marketing mail may go, what unsubscribing denies and forms ask for.
pub fn email_marketing(current: &[ConsentChange]) -> Option<ConsentStatus> {
    current
        .iter()
        .find(|consent| consent.purpose.as_str() == MARKETING && consent.channel == Channel::Email)
        .map(|consent| consent.status)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Purpose {
    pub key: Key,
    pub label: String,
    pub description: Option<String>,
    pub built_in: bool,
    pub created_at: DateTime<Utc>,
}

/// What shows that a person made the decision: where it came from and what they were shown.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConsentProof {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<UserAgent>,
    pub wording_id: Option<WordingId>,
    pub wording_version: Option<WordingVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserAgent(String);

impl UserAgent {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        clean_text(raw, 1_000).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Identifies the consent text the person saw, so the exact wording can be shown in a dispute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordingId(String);

impl WordingId {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        clean_text(raw, 200).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Which version of the wording the person saw. Rapport records `<language>:<hash>` for the
/// texts it translates and `<hash>` for texts admins wrote (the first 12 hex digits of the text's
/// SHA-256), so the exact text can be matched in a dispute; callers of the API may send their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WordingVersion(String);

impl WordingVersion {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        clean_text(raw, 100).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// One decision in a contact's consent history.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsentChange {
    pub id: Uuid,
    pub contact_id: ContactId,
    pub purpose: Key,
    pub channel: Channel,
    pub status: ConsentStatus,
    pub legal_basis: LegalBasis,
    pub source: ConsentSource,
    /// When the person made the decision (may lie in the past for imported consents).
    pub captured_at: DateTime<Utc>,
    /// When Rapport recorded it.
    pub recorded_at: DateTime<Utc>,
    pub proof: ConsentProof,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_their_names() {
        for status in ConsentStatus::ALL {
            assert_eq!(status.as_str().parse::<ConsentStatus>(), Ok(*status));
        }
        assert!("yes".parse::<ConsentStatus>().is_err());
    }
}
