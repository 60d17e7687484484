//! Tracking behavioural events in batches: every event gets its own outcome, a bad one never
//! stops the good ones, and a repeated idempotency key stores nothing new.

use crate::domain::page::{Page, PageRequest};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use tracing::instrument;
use uuid::Uuid;

use serde_json::Value;

use super::{Error, RequestContext, Result, Services};
use crate::{
    audit::{self, Changes},
    domain::{
        contact::{ContactId, ContactRef},
        event::{Event, EventProperties, EventType, IdempotencyKey, TimelineKey},
        key::Key,
    },
    store::{self, events::Insertion},
};

pub const MAX_EVENTS_PER_CALL: usize = 1_000;

#[derive(Debug, Clone)]
pub struct NewEvent {
    pub contact: ContactRef,
    pub event_type: EventType,
    pub properties: EventProperties,
    pub occurred_at: Option<DateTime<Utc>>,
    pub source: Key,
    pub idempotency_key: Option<IdempotencyKey>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tracked {
    Created(Uuid),
    Duplicate(Uuid),
}

impl Services {
    /// Stores the events that can be stored, in one transaction, and says for each what became
    /// of it, in the order given. Items that failed to parse at the edge pass through as errors.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, events = batch.len()))]
    pub async fn track_events(
        &self,
        ctx: &RequestContext,
        batch: Vec<Result<NewEvent>>,
    ) -> Result<Vec<Result<Tracked>>> {
        if batch.len() > MAX_EVENTS_PER_CALL {
            return Err(Error::validation("events", format!("at most {MAX_EVENTS_PER_CALL} events per call")));
        }
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let references: Vec<ContactRef> =
            batch.iter().filter_map(|item| item.as_ref().ok().map(|event| event.contact.clone())).collect();
        let contacts = store::contacts::resolve(&tx, self.db.keys()?, &references).await?;

        let mut outcomes: Vec<Option<Result<Tracked>>> = Vec::with_capacity(batch.len());
        let mut to_insert: Vec<Event> = Vec::new();
        let mut insert_positions: Vec<usize> = Vec::new();
        // Within one call the first event with a key wins and later ones are its duplicates.
        let mut first_with_key: HashMap<(Key, IdempotencyKey), usize> = HashMap::new();
        let mut duplicates_in_batch: Vec<(usize, usize)> = Vec::new();
        for (position, item) in batch.into_iter().enumerate() {
            let event = match item.and_then(|event| prepare(event, &contacts, now)) {
                Ok(event) => event,
                Err(error) => {
                    outcomes.push(Some(Err(error)));
                    continue;
                }
            };
            if let Some(key) = &event.idempotency_key {
                let batch_key = (event.source.clone(), key.clone());
                if let Some(first) = first_with_key.get(&batch_key) {
                    duplicates_in_batch.push((position, *first));
                    outcomes.push(None);
                    continue;
                }
                first_with_key.insert(batch_key, position);
            }
            outcomes.push(None);
            insert_positions.push(position);
            to_insert.push(event);
        }

        let insertions = store::events::insert_all(&tx, &to_insert).await?;
        // One entry per batch, with counts: events are facts about contacts rather than changes
        // made by the caller, and one entry per event would double every insert.
        let created = insertions.iter().filter(|insertion| matches!(insertion, Insertion::Created(_))).count();
        if created > 0 {
            let rejected = outcomes.iter().filter(|outcome| matches!(outcome, Some(Err(_)))).count();
            let duplicates = insertions.len() - created + duplicates_in_batch.len();
            let mut changes = Changes::new();
            changes
                .field("created", None, Some(Value::from(created)))
                .field("duplicates", None, Some(Value::from(duplicates)))
                .field("rejected", None, Some(Value::from(rejected)));
            let entry = audit::Entry::new("events.tracked", "event_batch", ctx.request_id.as_str(), changes);
            audit::append(&tx, ctx, now, entry).await?;
        }
        tx.commit().await?;

        let mut stored_ids: HashMap<usize, Uuid> = HashMap::new();
        for (position, insertion) in insert_positions.into_iter().zip(insertions) {
            let (tracked, id) = match insertion {
                Insertion::Created(id) => (Tracked::Created(id), id),
                Insertion::Duplicate(id) => (Tracked::Duplicate(id), id),
            };
            stored_ids.insert(position, id);
            outcomes[position] = Some(Ok(tracked));
        }
        for (position, first) in duplicates_in_batch {
            outcomes[position] = stored_ids.get(&first).map(|id| Ok(Tracked::Duplicate(*id)));
        }
        let results: Vec<Result<Tracked>> = outcomes
            .into_iter()
            .map(|outcome| outcome.unwrap_or_else(|| Err(Error::Internal(anyhow::anyhow!("event outcome missing")))))
            .collect();
        let created = results.iter().filter(|result| matches!(result, Ok(Tracked::Created(_)))).count();
        tracing::info!(created, "events tracked");
        Ok(results)
    }

    pub async fn event_timeline(
        &self,
        contact_id: ContactId,
        event_type: Option<&EventType>,
        page: &PageRequest<TimelineKey>,
    ) -> Result<Page<Event>> {
        Ok(store::events::timeline(self.db.connection(), contact_id, event_type, page).await?)
    }
}

fn prepare(event: NewEvent, contacts: &HashMap<ContactRef, ContactId>, now: DateTime<Utc>) -> Result<Event> {
    let contact_id = *contacts.get(&event.contact).ok_or(Error::NotFound { what: "contact" })?;
    let occurred_at = event.occurred_at.unwrap_or(now);
    if occurred_at > now + crate::domain::CLOCK_SKEW {
        return Err(Error::validation("occurredAt", "lies in the future"));
    }
    Ok(Event {
        id: Uuid::now_v7(),
        contact_id,
        event_type: event.event_type,
        properties: event.properties,
        occurred_at: crate::domain::at_storage_precision(occurred_at),
        received_at: now,
        source: event.source,
        idempotency_key: event.idempotency_key,
    })
}
