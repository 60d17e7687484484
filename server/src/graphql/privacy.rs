//! The data subject's rights over GraphQL: the export of everything held on a contact (the
//! document `rapport export contact` prints too) and the erasure with its receipt.

use async_graphql::{Context, Enum, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{contacts::parse_contact_id, error::GqlResult, guard::Allow, request_of, services_of};
use crate::domain::{
    access::Permission,
    contact::ContactRef,
    privacy::{self, ErasureReceipt},
};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "AddressKind", remote = "privacy::AddressKind")]
pub enum AddressKindValue {
    Email,
    Phone,
}

/// How much of each kind an erasure removed.
#[derive(SimpleObject)]
pub struct ErasedData {
    /// Built-in profile values: external id, email, phone, names, locale, time zone, country.
    profile_fields: u64,
    /// Custom field values.
    custom_fields: u64,
    /// Decisions in the consent history.
    consent_decisions: u64,
    topic_subscriptions: u64,
    events: u64,
    /// The contact's data key was deleted: every copy of its ciphertext is unreadable once no
    /// key backup older than the erasure remains.
    data_key_destroyed: bool,
}

/// Proof that a contact was erased.
#[derive(SimpleObject)]
#[graphql(name = "ErasureReceipt")]
pub struct ErasureReceiptNode {
    /// The id of the audit entry that records the erasure (action `contact.erased`).
    id: ID,
    contact_id: ID,
    erased_at: DateTime<Utc>,
    erased: ErasedData,
    /// Addresses kept only as a blind index (a keyed hash), so that upserts refuse them until a
    /// new consent is captured with them.
    suppressed_addresses: Vec<AddressKindValue>,
}

impl From<ErasureReceipt> for ErasureReceiptNode {
    fn from(receipt: ErasureReceipt) -> Self {
        let erased = receipt.erased;
        Self {
            id: ID(receipt.id.to_string()),
            contact_id: ID(receipt.contact_id.to_string()),
            erased_at: receipt.erased_at,
            erased: ErasedData {
                profile_fields: erased.profile_fields,
                custom_fields: erased.custom_fields,
                consent_decisions: erased.consent_decisions,
                topic_subscriptions: erased.topic_subscriptions,
                events: erased.events,
                data_key_destroyed: erased.data_key_destroyed,
            },
            suppressed_addresses: erased.suppressed.into_iter().map(Into::into).collect(),
        }
    }
}

#[derive(Default)]
pub struct PrivacyQuery;

#[Object]
impl PrivacyQuery {
    /// Everything Rapport holds on a contact, as one JSON document (`rapport export contact`
    /// prints the same); the export is recorded in the audit log. NOT_FOUND for an unknown or
    /// erased contact. The document, format `rapport.contact-export.v1`, is an object with:
    /// `format`; `exportedAt`; `profile` {id, externalId, email, phone, firstName, lastName,
    /// locale, timeZone, country, createdAt, updatedAt, version}; `customFields` [{key, label,
    /// type, personal, value}]; `consents` (the current ones) and `consentHistory` (every
    /// decision, oldest first), each [{id, purpose, channel, status, legalBasis, source,
    /// capturedAt, recordedAt, proof {ip, userAgent, wordingId, wordingVersion}}];
    /// `topicSubscriptions` [{topic {key, name}, status, frequency, updatedAt}]; `events`
    /// [{id, type, properties, occurredAt, receivedAt, source, idempotencyKey}], oldest first;
    /// `emailsSent` [{id, emailId, emailVersionId, type, status, attempts, detail, messageId,
    /// createdAt, sentAt}], oldest first; `programParticipation`, an empty array until programs
    /// exist (the key is part of the format already); `auditEntries`
    /// [{seq, id, occurredAt, actor {kind, id}, action, targetKind, targetId, changes,
    /// requestId, ip, hash}] about the contact, in chain order. Names, enum values and times
    /// are spelled as elsewhere in this API.
    #[graphql(guard = "Allow::to(Permission::PrivacyManage)")]
    async fn contact_export(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Json<Value>> {
        let reference = ContactRef::Id(parse_contact_id("id", &id)?);
        let export = services_of(ctx)?.export_contact(request_of(ctx)?, &reference).await?;
        Ok(Json(export.to_json()))
    }
}

#[derive(Default)]
pub struct PrivacyMutation;

#[Object]
impl PrivacyMutation {
    /// Erases a contact at their request: deletes the profile, custom field values, consent
    /// history, topic subscriptions and events, and destroys the contact's data key. Only the
    /// blind index of its email and phone stays, so that upserts refuse them until a new consent
    /// is captured; the audit log keeps its entries and gains a tombstone that counts what went.
    /// NOT_FOUND for an unknown or already erased contact.
    #[graphql(guard = "Allow::to(Permission::PrivacyManage)")]
    async fn erase_contact(&self, ctx: &Context<'_>, id: ID) -> GqlResult<ErasureReceiptNode> {
        let contact_id = parse_contact_id("id", &id)?;
        Ok(services_of(ctx)?.erase_contact(request_of(ctx)?, contact_id).await?.into())
    }
}
