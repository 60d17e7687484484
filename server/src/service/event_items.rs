//! One event as JSON, the item format of `POST /v1/events`, parsed into the batch's item type.
//! The edges that take events as JSON (the batch API, inbound webhooks and the NATS stream
//! consumer) share it, so an event is written, and rejected, alike whichever way it came in.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    Error, Result,
    contacts::ContactChanges,
    events::{IngestEvent, NewEvent, RawEvent},
};
use crate::domain::{
    Change,
    contact::{
        ContactId, ContactRef, CountryCode, EmailAddress, ExternalId, Locale, PersonName, PhoneNumber, TimeZone,
    },
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct JsonEvent {
    contact: RawContact,
    #[serde(rename = "type")]
    event_type: String,
    properties: Option<Value>,
    /// RFC 3339; defaults to the time of the request.
    occurred_at: Option<String>,
    /// The sending system; idempotency keys are unique per source. Defaults to "api".
    source: Option<String>,
    idempotency_key: Option<String>,
    identify: Option<Map<String, Value>>,
}

/// Exactly one of the three.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawContact {
    id: Option<String>,
    external_id: Option<String>,
    email: Option<String>,
}

/// One item of a batch; what is wrong with it names the field as the caller spells it.
pub fn parse_event(raw: Value) -> Result<IngestEvent> {
    from_json(serde_json::from_value(raw).map_err(|error| Error::validation("event", error))?)
}

/// Like [`parse_event`], straight from the item's JSON text: a large batch is parsed into typed
/// items without first building a tree of every event.
pub fn parse_event_text(raw: &str) -> Result<IngestEvent> {
    from_json(serde_json::from_str(raw).map_err(|error| Error::validation("event", error))?)
}

fn from_json(raw: JsonEvent) -> Result<IngestEvent> {
    let invalid = |field: &str, error: &dyn std::fmt::Display| Error::validation(field, error);
    let contact = match (raw.contact.id, raw.contact.external_id, raw.contact.email) {
        (Some(id), None, None) => ContactRef::Id(ContactId::from_uuid(
            Uuid::parse_str(&id).map_err(|_| invalid("contact.id", &"is not a contact id"))?,
        )),
        (None, Some(external_id), None) => ContactRef::ExternalId(
            ExternalId::parse(&external_id).map_err(|error| invalid("contact.externalId", &error))?,
        ),
        (None, None, Some(email)) => {
            ContactRef::Email(EmailAddress::parse(&email).map_err(|error| invalid("contact.email", &error))?)
        }
        _ => return Err(invalid("contact", &"give exactly one of id, externalId and email")),
    };
    let occurred_at = raw
        .occurred_at
        .map(|raw| DateTime::parse_from_rfc3339(&raw).map(|at| at.with_timezone(&Utc)))
        .transpose()
        .map_err(|_| invalid("occurredAt", &"must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z"))?;
    let identify = raw.identify;
    let event = NewEvent::parse(RawEvent {
        contact,
        event_type: raw.event_type,
        properties: raw.properties,
        occurred_at,
        source: raw.source,
        idempotency_key: raw.idempotency_key,
    })?;
    let identify = identify.map(identify_changes).transpose().map_err(|error| error.within("identify"))?;
    Ok(IngestEvent { event, identify })
}

/// Contact changes as `upsertContact` takes them: a field left out is kept, `null` clears it,
/// and custom fields go in `attributes` (checked against their definitions by the service).
pub fn identify_changes(fields: Map<String, Value>) -> Result<ContactChanges> {
    let mut changes = ContactChanges::default();
    for (name, value) in fields {
        match name.as_str() {
            "externalId" => changes.external_id = change(&name, value, ExternalId::parse)?,
            "email" => changes.email = change(&name, value, EmailAddress::parse)?,
            "phone" => changes.phone = change(&name, value, PhoneNumber::parse)?,
            "firstName" => changes.first_name = change(&name, value, PersonName::parse)?,
            "lastName" => changes.last_name = change(&name, value, PersonName::parse)?,
            "locale" => changes.locale = change(&name, value, Locale::parse)?,
            "timeZone" => changes.time_zone = change(&name, value, TimeZone::parse)?,
            "country" => changes.country = change(&name, value, CountryCode::parse)?,
            "attributes" => {
                changes.attributes = match value {
                    Value::Null => Vec::new(),
                    Value::Object(attributes) => attributes.into_iter().collect(),
                    _ => return Err(Error::validation(name, "must be an object of field keys and values")),
                }
            }
            _ => return Err(Error::validation(name, "is not a profile field; custom fields go in attributes")),
        }
    }
    Ok(changes)
}

fn change<T, E: std::fmt::Display>(
    field: &str,
    value: Value,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Change<T>> {
    match value {
        Value::Null => Ok(Change::Clear),
        Value::String(raw) => parse(&raw).map(Change::Set).map_err(|error| Error::validation(field, error)),
        _ => Err(Error::validation(field, "must be a string or null")),
    }
}
