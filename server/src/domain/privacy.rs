//! The data subject's rights: an export of everything held on a contact, one stable JSON
//! document shared by the API and the command line, and an erasure that leaves a receipt and
//! keeps only the blind index of the person's addresses.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::{
    audit::AuditEntry,
    consent::ConsentChange,
    contact::{Contact, ContactId, CountryCode, EmailAddress, ExternalId, Locale, PersonName, PhoneNumber},
    delivery::Send,
    event::{Event, IdempotencyKey},
    field::FieldDefinition,
    key::Key,
    string_enum,
    topic::{Topic, TopicSubscription},
};

/// Names the export format; it changes only with a new version.
pub const EXPORT_FORMAT: &str = "rapport.contact-export.v1";

string_enum!(
    /// An address that reaches a person and that an erasure keeps as a blind index.
    AddressKind { Email => "email", Phone => "phone" }
);

impl AddressKind {
    /// How people call it, for messages.
    pub fn described(self) -> &'static str {
        match self {
            AddressKind::Email => "email address",
            AddressKind::Phone => "phone number",
        }
    }
}

/// An address of an erased contact, as the erased list knows it: its kind and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasedAddress {
    pub kind: AddressKind,
    pub erased_at: DateTime<Utc>,
}

/// What one erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Built-in profile values the contact held: external id, email, phone, names, locale,
    /// time zone, country.
    pub profile_fields: u64,
    pub custom_fields: u64,
    /// Entries of the consent history (the current consents are derived from them).
    pub consent_decisions: u64,
    pub topic_subscriptions: u64,
    pub events: u64,
    pub data_key_destroyed: bool,
    /// Addresses now on the erased list, by their blind index only.
    pub suppressed: Vec<AddressKind>,
}

/// Proof of an erasure; its id is the id of the audit entry that records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErasureReceipt {
    pub id: Uuid,
    pub contact_id: ContactId,
    pub erased_at: DateTime<Utc>,
    pub erased: Erasure,
}

/// Everything Rapport holds on one contact at the time of the export.
#[derive(Debug, Clone)]
pub struct ContactExport {
    pub exported_at: DateTime<Utc>,
    pub contact: Contact,
    /// The definitions of custom fields, for labels and types.
    pub fields: Vec<FieldDefinition>,
    pub consents: Vec<ConsentChange>,
    /// Every decision, oldest first.
    pub consent_history: Vec<ConsentChange>,
    pub subscriptions: Vec<(TopicSubscription, Topic)>,
    /// Oldest first.
    pub events: Vec<Event>,
    /// Mail sent, or meant to be sent, to the contact; oldest first.
    pub sends: Vec<Send>,
    /// Entries whose target is the contact, in chain order.
    pub audit_entries: Vec<AuditEntry>,
}

impl ContactExport {
    /// The export document. Names, enum values (upper case) and times (RFC 3339) are those of
    /// the GraphQL API, so that a reader of both sees the same values.
    pub fn to_json(&self) -> Value {
        let contact = &self.contact;
        let profile = &contact.profile;
        let text = |value: Option<&str>| value.map_or(Value::Null, Value::from);
        let definitions: HashMap<&Key, &FieldDefinition> =
            self.fields.iter().map(|definition| (&definition.key, definition)).collect();
        let custom_fields: Vec<Value> = contact
            .attributes
            .iter()
            .map(|(key, value)| {
                let definition = definitions.get(key);
                json!({
                    "key": key.as_str(),
                    "label": definition.map(|definition| definition.label.as_str()),
                    "type": definition.map(|definition| api_name(definition.field_type.as_str())),
                    "personal": definition.map(|definition| definition.personal),
                    "value": value.to_json(),
                })
            })
            .collect();
        json!({
            "format": EXPORT_FORMAT,
            "exportedAt": self.exported_at.to_rfc3339(),
            "profile": {
                "id": contact.id.to_string(),
                "externalId": text(contact.external_id.as_ref().map(ExternalId::as_str)),
                "email": text(contact.email.as_ref().map(EmailAddress::as_str)),
                "phone": text(profile.phone.as_ref().map(PhoneNumber::as_str)),
                "firstName": text(profile.first_name.as_ref().map(PersonName::as_str)),
                "lastName": text(profile.last_name.as_ref().map(PersonName::as_str)),
                "locale": text(profile.locale.as_ref().map(Locale::as_str)),
                "timeZone": text(profile.time_zone.as_ref().map(|zone| zone.as_str())),
                "country": text(profile.country.as_ref().map(CountryCode::as_str)),
                "createdAt": contact.created_at.to_rfc3339(),
                "updatedAt": contact.updated_at.to_rfc3339(),
                "version": contact.version,
            },
            "customFields": custom_fields,
            "consents": self.consents.iter().map(consent_json).collect::<Vec<_>>(),
            "consentHistory": self.consent_history.iter().map(consent_json).collect::<Vec<_>>(),
            "topicSubscriptions": self.subscriptions.iter().map(|(subscription, topic)| json!({
                "topic": { "key": topic.key.as_str(), "name": topic.name },
                "status": api_name(subscription.status.as_str()),
                "frequency": api_name(subscription.frequency.as_str()),
                "updatedAt": subscription.updated_at.to_rfc3339(),
            })).collect::<Vec<_>>(),
            "events": self.events.iter().map(|event| json!({
                "id": event.id.to_string(),
                "type": event.event_type.as_str(),
                "properties": Value::Object(event.properties.as_map().clone()),
                "occurredAt": event.occurred_at.to_rfc3339(),
                "receivedAt": event.received_at.to_rfc3339(),
                "source": event.source.as_str(),
                "idempotencyKey": text(event.idempotency_key.as_ref().map(IdempotencyKey::as_str)),
            })).collect::<Vec<_>>(),
            "emailsSent": self.sends.iter().map(|send| json!({
                "id": send.id.to_string(),
                "emailId": send.email_id.to_string(),
                "emailVersionId": send.email_version_id.to_string(),
                "type": api_name(send.email_type.as_str()),
                "status": api_name(send.status.as_str()),
                "attempts": send.attempts,
                "detail": send.detail,
                "messageId": send.message_id,
                "createdAt": send.created_at.to_rfc3339(),
                "sentAt": send.sent_at.map(|at| at.to_rfc3339()),
            })).collect::<Vec<_>>(),
            // Programs do not exist yet; the key is part of the format already.
            "programParticipation": [],
            "auditEntries": self.audit_entries.iter().map(audit_json).collect::<Vec<_>>(),
        })
    }
}

fn consent_json(consent: &ConsentChange) -> Value {
    let proof = &consent.proof;
    json!({
        "id": consent.id.to_string(),
        "purpose": consent.purpose.as_str(),
        "channel": api_name(consent.channel.as_str()),
        "status": api_name(consent.status.as_str()),
        "legalBasis": api_name(consent.legal_basis.as_str()),
        "source": api_name(consent.source.as_str()),
        "capturedAt": consent.captured_at.to_rfc3339(),
        "recordedAt": consent.recorded_at.to_rfc3339(),
        "proof": {
            "ip": proof.ip.map(|ip| ip.to_string()),
            "userAgent": proof.user_agent.as_ref().map(|agent| agent.as_str()),
            "wordingId": proof.wording_id.as_ref().map(|wording| wording.as_str()),
            "wordingVersion": proof.wording_version.as_ref().map(|version| version.as_str()),
        },
    })
}

fn audit_json(entry: &AuditEntry) -> Value {
    // Shown as text if the stored JSON was damaged, as the audit log query does.
    let changes = serde_json::from_str::<Map<String, Value>>(&entry.changes)
        .map_or_else(|_| Value::String(entry.changes.clone()), Value::Object);
    json!({
        "seq": entry.seq,
        "id": entry.id.to_string(),
        "occurredAt": entry.occurred_at.to_rfc3339(),
        "actor": { "kind": entry.actor_kind, "id": entry.actor_id },
        "action": entry.action,
        "targetKind": entry.target_kind,
        "targetId": entry.target_id,
        "changes": changes,
        "requestId": entry.request_id,
        "ip": entry.ip,
        "hash": entry.hash,
    })
}

/// A stored `snake_case` value as the GraphQL API spells the same enum value.
fn api_name(stored: &str) -> String {
    stored.to_ascii_uppercase()
}
