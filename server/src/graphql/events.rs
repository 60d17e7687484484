//! Events over GraphQL: tracking a batch with one result per event, and the event type shown in
//! a contact's timeline.

use super::guard::Allow;
use crate::domain::access::Permission;
use async_graphql::{Context, Enum, ID, InputObject, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    contacts::ContactLookup,
    error::{Code, GqlError, GqlResult},
    request_of, services_of,
};
use crate::{
    domain::event::{ContactActivity, Event, IdempotencyKey},
    service::{
        self,
        events::{MAX_EVENTS_PER_CALL, NewEvent, RawEvent, Tracked},
    },
};

pub struct EventNode(pub Event);

#[Object(name = "Event")]
impl EventNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    #[graphql(name = "type")]
    async fn event_type(&self) -> &str {
        self.0.event_type.as_str()
    }

    async fn properties(&self) -> Json<&Map<String, Value>> {
        Json(self.0.properties.as_map())
    }

    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }

    async fn received_at(&self) -> DateTime<Utc> {
        self.0.received_at
    }

    async fn source(&self) -> &str {
        self.0.source.as_str()
    }

    async fn idempotency_key(&self) -> Option<&str> {
        self.0.idempotency_key.as_ref().map(IdempotencyKey::as_str)
    }
}

pub struct ActivityNode(pub ContactActivity);

/// What a contact's events say about when it was last active.
#[Object(name = "ContactActivity")]
impl ActivityNode {
    /// When its newest event occurred (by `occurredAt`, not by arrival).
    async fn last_seen_at(&self) -> DateTime<Utc> {
        self.0.last_seen_at
    }

    /// The type of that newest event.
    async fn last_event_type(&self) -> &str {
        self.0.last_event_type.as_str()
    }

    /// How many events are stored for the contact.
    async fn event_count(&self) -> i64 {
        self.0.event_count
    }
}

#[derive(InputObject)]
pub struct TrackEventInput {
    contact: ContactLookup,
    #[graphql(name = "type")]
    event_type: String,
    properties: Option<Json<Value>>,
    /// Defaults to now.
    occurred_at: Option<DateTime<Utc>>,
    /// The sending system; idempotency keys are unique per source. Defaults to "api".
    source: Option<String>,
    /// Sending the same key (for the same source) again stores nothing new.
    idempotency_key: Option<String>,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum TrackStatus {
    Created,
    /// An event with this idempotency key was stored before; `eventId` is that event.
    Duplicate,
    /// Not stored; `error` says why.
    Rejected,
}

/// Why one item of a batch was rejected.
#[derive(SimpleObject)]
pub struct ItemError {
    code: Code,
    message: String,
    field: Option<String>,
}

impl From<GqlError> for ItemError {
    fn from(error: GqlError) -> Self {
        Self { code: error.code(), message: error.message().to_owned(), field: error.field().map(str::to_owned) }
    }
}

#[derive(SimpleObject)]
pub struct TrackEventResult {
    /// Position of the event in the request.
    index: i32,
    status: TrackStatus,
    event_id: Option<ID>,
    error: Option<ItemError>,
}

#[derive(Default)]
pub struct EventMutation;

#[Object]
impl EventMutation {
    /// Tracks up to 1,000 events. Each gets its own result; invalid ones never stop valid ones.
    #[graphql(complexity = "events.len() * child_complexity", guard = "Allow::to(Permission::EventsWrite)")]
    async fn track_events(&self, ctx: &Context<'_>, events: Vec<TrackEventInput>) -> GqlResult<Vec<TrackEventResult>> {
        if events.len() > MAX_EVENTS_PER_CALL {
            return Err(GqlError::bad_input("events", format!("at most {MAX_EVENTS_PER_CALL} events per call")));
        }
        let batch: Vec<service::Result<NewEvent>> = events.into_iter().map(parse_event).collect();
        let outcomes = services_of(ctx)?.track_events(request_of(ctx)?, batch).await?;
        Ok(outcomes
            .into_iter()
            .enumerate()
            .map(|(index, outcome)| {
                let index = i32::try_from(index).unwrap_or(i32::MAX);
                match outcome {
                    Ok(Tracked::Created(id)) => TrackEventResult {
                        index,
                        status: TrackStatus::Created,
                        event_id: Some(ID(id.to_string())),
                        error: None,
                    },
                    Ok(Tracked::Duplicate(id)) => TrackEventResult {
                        index,
                        status: TrackStatus::Duplicate,
                        event_id: Some(ID(id.to_string())),
                        error: None,
                    },
                    Err(error) => TrackEventResult {
                        index,
                        status: TrackStatus::Rejected,
                        event_id: None,
                        error: Some(GqlError::from(error).into()),
                    },
                }
            })
            .collect())
    }
}

fn parse_event(input: TrackEventInput) -> service::Result<NewEvent> {
    let contact = input.contact.parse("contact").map_err(|error| {
        let field = error.field().unwrap_or("contact");
        // The lookup's message already begins with the field, and the item error prefixes it
        // again: keep only the reason, so the caller does not read "contact.id: contact.id: …".
        let reason = error.message().strip_prefix(&format!("{field}: ")).unwrap_or(error.message());
        service::Error::validation(field, reason)
    })?;
    NewEvent::parse(RawEvent {
        contact,
        event_type: input.event_type,
        properties: input.properties.map(|Json(value)| value),
        occurred_at: input.occurred_at,
        source: input.source,
        idempotency_key: input.idempotency_key,
    })
}
