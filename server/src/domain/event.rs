//! Behavioural events: something a contact did (a purchase, a page view, an email opened), with
//! free-form properties. Senders retry, so an event may carry an idempotency key that makes a
//! repeated delivery a no-op.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{TextError, clean_text, contact::ContactId, key::Key};

/// Event type such as `order.completed`: letters, digits and `_ . : -`, at most 100 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EventType(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be 1 to 100 letters, digits or '_', '.', ':', '-'")]
pub struct InvalidEventType;

impl EventType {
    pub fn parse(raw: &str) -> Result<Self, InvalidEventType> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-');
        if (1..=100).contains(&raw.len()) && raw.chars().all(allowed) {
            Ok(Self(raw.to_owned()))
        } else {
            Err(InvalidEventType)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub fn parse(raw: &str) -> Result<Self, TextError> {
        clean_text(raw, 255).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Properties are a JSON object, bounded so that one event cannot bloat a profile.
#[derive(Debug, Clone, PartialEq)]
pub struct EventProperties(Map<String, Value>);

pub const MAX_PROPERTIES_BYTES: usize = 32 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidProperties {
    #[error("must be a JSON object")]
    NotAnObject,
    #[error("must be at most {MAX_PROPERTIES_BYTES} bytes as JSON")]
    TooLarge,
}

impl EventProperties {
    pub fn parse(raw: Value) -> Result<Self, InvalidProperties> {
        let Value::Object(map) = raw else {
            return Err(InvalidProperties::NotAnObject);
        };
        let mut size = ByteCount(0);
        if serde_json::to_writer(&mut size, &map).is_err() || size.0 > MAX_PROPERTIES_BYTES {
            return Err(InvalidProperties::TooLarge);
        }
        Ok(Self(map))
    }

    pub fn as_map(&self) -> &Map<String, Value> {
        &self.0
    }

    pub fn into_value(self) -> Value {
        Value::Object(self.0)
    }
}

/// Counts what is written to it, so that the size of some JSON is known without keeping it.
struct ByteCount(usize);

impl std::io::Write for ByteCount {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0 += bytes.len();
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Position in a contact's timeline: newest first by occurrence, ties broken by id.
pub type TimelineKey = (DateTime<Utc>, Uuid);

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: Uuid,
    pub contact_id: ContactId,
    pub event_type: EventType,
    pub properties: EventProperties,
    pub occurred_at: DateTime<Utc>,
    pub received_at: DateTime<Utc>,
    /// Which system sent it; idempotency keys are unique per source.
    pub source: Key,
    pub idempotency_key: Option<IdempotencyKey>,
}

/// What a contact's events say about when it was last active. It follows the newest event by
/// occurrence, so an old event delivered late never moves "last seen" backwards.
#[derive(Debug, Clone, PartialEq)]
pub struct ContactActivity {
    pub contact_id: ContactId,
    pub last_seen_at: DateTime<Utc>,
    pub last_event_type: EventType,
    pub event_count: i64,
}

impl ContactActivity {
    /// The activity these events (all of one contact, none stored before) add up to; none if
    /// there are no events.
    pub fn of<'a>(events: impl IntoIterator<Item = &'a Event>) -> Option<Self> {
        let mut events = events.into_iter();
        let first = events.next()?;
        let mut activity = Self {
            contact_id: first.contact_id,
            last_seen_at: first.occurred_at,
            last_event_type: first.event_type.clone(),
            event_count: 1,
        };
        for event in events {
            activity.event_count += 1;
            if event.occurred_at >= activity.last_seen_at {
                activity.last_seen_at = event.occurred_at;
                activity.last_event_type = event.event_type.clone();
            }
        }
        Some(activity)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn dotted_event_types_are_accepted_and_spaces_are_not() {
        assert!(EventType::parse("order.completed").is_ok());
        assert!(EventType::parse("email:opened-v2").is_ok());
        assert_eq!(EventType::parse("order completed"), Err(InvalidEventType));
        assert_eq!(EventType::parse(""), Err(InvalidEventType));
    }

    #[test]
    fn properties_must_be_a_bounded_object() {
        assert!(EventProperties::parse(json!({"total": 12.5})).is_ok());
        assert_eq!(EventProperties::parse(json!([1, 2])), Err(InvalidProperties::NotAnObject));
        let huge = json!({ "blob": "x".repeat(MAX_PROPERTIES_BYTES) });
        assert_eq!(EventProperties::parse(huge), Err(InvalidProperties::TooLarge));
    }
}
