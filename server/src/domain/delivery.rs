//! Sending mail: the outbox row that stands for one message, its states, and the suppression
//! list that keeps mail away from addresses that bounced, complained or unsubscribed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    TextError, clean_text,
    contact::{ContactId, EmailAddress},
    email::EmailType,
    event::EventProperties,
    string_enum,
};

string_enum! {
    /// Where a send stands. `Queued` and `Deferred` wait for a worker; every other state is final.
    /// Deferred: the server answered 4xx or could not be reached, tried again later. Bounced: the
    /// server refused it for good (5xx). Failed: still deferred after the last attempt.
    /// Suppressed: the address is on the suppression list for this type of mail.
    /// SkippedNoConsent: marketing mail to a contact whose email marketing consent is not
    /// granted. Skipped: nothing to send to (the contact was erased or has no address), or its
    /// data cannot fill the template (a `required()` outside any fallback).
    SendStatus {
        Queued => "queued",
        Sent => "sent",
        Deferred => "deferred",
        Bounced => "bounced",
        Failed => "failed",
        Suppressed => "suppressed",
        SkippedNoConsent => "skipped_no_consent",
        Skipped => "skipped",
    }
}

impl SendStatus {
    pub fn is_final(self) -> bool {
        !matches!(self, SendStatus::Queued | SendStatus::Deferred)
    }
}

string_enum! {
    /// Why an address is suppressed: a hard bounce (550, 551, 553: the mailbox does not exist or
    /// refuses mail for good) and a manual entry stop all mail; a complaint (spam report from a
    /// feedback loop) and an unsubscribe stop marketing mail.
    SuppressionReason {
        HardBounce => "hard_bounce",
        Complaint => "complaint",
        Unsubscribe => "unsubscribe",
        Manual => "manual",
    }
}

impl SuppressionReason {
    /// Whether an address suppressed for this reason may still get mail of `email_type`:
    /// receipts and confirmations still go to people who only opted out of marketing.
    pub fn blocks(self, email_type: EmailType) -> bool {
        match self {
            SuppressionReason::HardBounce | SuppressionReason::Manual => true,
            SuppressionReason::Complaint | SuppressionReason::Unsubscribe => email_type == EmailType::Marketing,
        }
    }
}

/// What makes a send unique: the same cause always produces the same key (a program, node,
/// contact and entry; or an idempotency key the caller gave), so repeating the cause finds the
/// send already there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SendKey(String);

pub const MAX_SEND_KEY_CHARS: usize = 255;

impl SendKey {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        clean_text(raw, MAX_SEND_KEY_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A send as the outbox holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Send {
    pub id: Uuid,
    pub send_key: SendKey,
    pub email_id: Uuid,
    pub email_version_id: Uuid,
    pub email_type: EmailType,
    /// None only for test sends made without a contact.
    pub contact_id: Option<ContactId>,
    /// A test send's address, used instead of the contact's.
    pub recipient: Option<EmailAddress>,
    pub context: Option<EventProperties>,
    pub status: SendStatus,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// Why it was skipped, deferred or bounced: the server's answer or the rule that applied.
    pub detail: Option<String>,
    pub message_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
}

/// An address on the suppression list. The address itself is not kept, only its blind index.
#[derive(Debug, Clone, PartialEq)]
pub struct Suppression {
    pub reason: SuppressionReason,
    /// The contact the address belonged to when it was suppressed, if any.
    pub contact_id: Option<ContactId>,
    /// What reported it: `smtp`, `unsubscribe`, `admin`, or an inbound webhook source.
    pub source: String,
    pub detail: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// When to try a deferred send again: the wait doubles with each attempt from `base`, capped at
/// six hours, and each wait is spread at random over its upper half so that sends deferred
/// together (a server that went down) do not all return at the same instant. `unit` in [0, 1).
pub fn retry_delay(base: Duration, attempts: u32, unit: f64) -> Duration {
    const LONGEST: Duration = Duration::from_secs(6 * 3600);
    let doubled = base.saturating_mul(1u32 << attempts.saturating_sub(1).min(20));
    let ceiling = doubled.min(LONGEST);
    ceiling.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_wait_longer_each_time_with_jitter_and_a_ceiling() {
        let base = Duration::from_secs(60);
        assert_eq!(retry_delay(base, 1, 0.0), Duration::from_secs(30));
        assert_eq!(retry_delay(base, 1, 0.999_999).as_secs(), 59);
        assert_eq!(retry_delay(base, 3, 0.0), Duration::from_secs(120));
        assert_eq!(retry_delay(base, 40, 0.0), Duration::from_secs(3 * 3600));
        assert!(retry_delay(base, 40, 1.0) <= Duration::from_secs(6 * 3600));
    }

    #[test]
    fn only_hard_bounces_and_manual_entries_stop_transactional_mail() {
        assert!(SuppressionReason::HardBounce.blocks(EmailType::Transactional));
        assert!(SuppressionReason::Manual.blocks(EmailType::Transactional));
        assert!(!SuppressionReason::Unsubscribe.blocks(EmailType::Transactional));
        assert!(!SuppressionReason::Complaint.blocks(EmailType::Transactional));
        assert!(SuppressionReason::Unsubscribe.blocks(EmailType::Marketing));
    }

    #[test]
    fn final_states_are_the_ones_no_worker_picks_up() {
        let waiting: Vec<_> = SendStatus::ALL.iter().filter(|status| !status.is_final()).collect();
        assert_eq!(waiting, [&SendStatus::Queued, &SendStatus::Deferred]);
    }
}
