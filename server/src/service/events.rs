//! Tracking behavioural events in batches: every event gets its own outcome, a bad one never
//! stops the good ones, and a repeated idempotency key stores nothing new. The events of a batch,
//! their audit entry and their contacts' activity are written set-wise in one transaction. An
//! event that changes its contact ("identify") or creates it is written in that change's
//! transaction instead, one contact at a time, so that the two commit together or not at all.

use crate::domain::page::{Page, PageRequest};
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use tracing::instrument;
use uuid::Uuid;

use futures_util::future::BoxFuture;
use sea_orm::DatabaseTransaction;
use serde_json::Value;

pub use super::event_writer::{WriterLoad, parallel_writers};
use super::{
    Error, RequestContext, Result, Services,
    contacts::{Alongside, AlongsideWrite, ContactChanges, UpsertKey},
};
use crate::{
    domain::{
        Change,
        access::Permission,
        contact::{ContactId, ContactRef},
        event::{ContactActivity, Event, EventProperties, EventType, IdempotencyKey, TimelineKey},
        key::Key,
    },
    service::event_writer::{self, Submission},
    store::{self, events::Insertion},
};

/// Events per `trackEvents` call: GraphQL answers with one object per event.
pub const MAX_EVENTS_PER_CALL: usize = 1_000;
/// Events per request to the batch API (`POST /v1/events`).
pub const MAX_EVENTS_PER_REQUEST: usize = 10_000;

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

/// An event's fields as a caller sent them, before parsing; shared by the edges that take events.
pub struct RawEvent {
    pub contact: ContactRef,
    pub event_type: String,
    pub properties: Option<Value>,
    pub occurred_at: Option<DateTime<Utc>>,
    /// Defaults to "api".
    pub source: Option<String>,
    pub idempotency_key: Option<String>,
}

impl NewEvent {
    /// Parses the fields of `raw`, naming the first one that does not parse as the caller spells it.
    pub fn parse(raw: RawEvent) -> Result<Self> {
        let invalid = |field: &str, error: &dyn std::fmt::Display| Error::validation(field, error);
        Ok(Self {
            contact: raw.contact,
            event_type: EventType::parse(&raw.event_type).map_err(|error| invalid("type", &error))?,
            properties: EventProperties::parse(raw.properties.unwrap_or_else(|| Value::Object(Default::default())))
                .map_err(|error| invalid("properties", &error))?,
            occurred_at: raw.occurred_at,
            source: Key::parse(raw.source.as_deref().unwrap_or("api")).map_err(|error| invalid("source", &error))?,
            idempotency_key: raw
                .idempotency_key
                .map(|key| IdempotencyKey::parse(&key))
                .transpose()
                .map_err(|error| invalid("idempotencyKey", &error))?,
        })
    }
}

/// An event for the batch API, with the changes to its contact that came with it.
#[derive(Debug, Clone)]
pub struct IngestEvent {
    pub event: NewEvent,
    pub identify: Option<ContactChanges>,
}

/// What becomes of an event whose contact reference names no contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MissingContacts {
    Reject,
    /// Create the contact from its external id or email (a reference by id cannot create one).
    Create,
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
        let batch = batch.into_iter().map(|item| item.and_then(|event| checked_time(event, now))).collect();
        self.record_events(ctx, batch, now).await
    }

    /// The batch API: like `track_events`, for up to `MAX_EVENTS_PER_REQUEST` events, which may
    /// carry contact changes and may name contacts that do not exist yet. Contact changes need
    /// `profiles:write` as well; an item whose changes are refused or invalid is rejected alone.
    /// An event is checked before its contact is written, and an event already stored (by its
    /// idempotency key) writes nothing, so a rejected or repeated item changes no contact; one
    /// that changes or creates its contact commits with that change.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, events = batch.len()))]
    pub async fn ingest_events(
        &self,
        ctx: &RequestContext,
        batch: Vec<Result<IngestEvent>>,
        missing: MissingContacts,
    ) -> Result<Vec<Result<Tracked>>> {
        self.require(ctx, Permission::EventsWrite)?;
        if missing == MissingContacts::Create {
            self.require(ctx, Permission::ProfilesWrite)?;
        }
        if batch.len() > MAX_EVENTS_PER_REQUEST {
            return Err(Error::validation("events", format!("at most {MAX_EVENTS_PER_REQUEST} events per request")));
        }
        let now = self.now();
        let mut settled: Vec<Option<Result<Tracked>>> = Vec::with_capacity(batch.len());
        let mut pending: Vec<IngestEvent> = Vec::new();
        let mut pending_positions: Vec<usize> = Vec::new();
        for (position, item) in batch.into_iter().enumerate() {
            match item.and_then(|item| Ok(IngestEvent { event: checked_time(item.event, now)?, ..item })) {
                Ok(item) => {
                    settled.push(None);
                    pending.push(item);
                    pending_positions.push(position);
                }
                Err(error) => settled.push(Some(Err(error))),
            }
        }
        let written = if missing == MissingContacts::Create || pending.iter().any(|item| item.identify.is_some()) {
            self.write_contacts(ctx, &mut pending, missing, now).await?
        } else {
            pending.iter().map(|_| None).collect()
        };
        let mut to_record = Vec::with_capacity(pending.len());
        let mut record_positions = Vec::with_capacity(pending.len());
        for ((position, item), outcome) in pending_positions.into_iter().zip(pending).zip(written) {
            match outcome {
                Some(outcome) => settled[position] = Some(outcome),
                None => {
                    to_record.push(Ok(item.event));
                    record_positions.push(position);
                }
            }
        }
        let recorded = self.record_events(ctx, to_record, now).await?;
        for (position, outcome) in record_positions.into_iter().zip(recorded) {
            settled[position] = Some(outcome);
        }
        Ok(settled.into_iter().map(|outcome| outcome.unwrap_or_else(|| Err(missing_outcome()))).collect())
    }

    /// Applies the contact changes of these events and creates their missing contacts (if asked
    /// to), in order, each with its event in its transaction, and points the other events at
    /// their contacts by id. Returns, per event, its final outcome when it is settled here
    /// (written with its contact's change, refused, or already stored), else none.
    async fn write_contacts(
        &self,
        ctx: &RequestContext,
        items: &mut [IngestEvent],
        missing: MissingContacts,
        now: DateTime<Utc>,
    ) -> Result<Vec<Option<Result<Tracked>>>> {
        let references: Vec<ContactRef> = items.iter().map(|item| item.event.contact.clone()).collect();
        let known = store::contacts::resolve(self.db.connection(), self.db.keys()?, &references).await?;
        let writes = |item: &IngestEvent| {
            item.identify.is_some() || (missing == MissingContacts::Create && !known.contains_key(&item.event.contact))
        };
        let keyed: Vec<(&Key, &IdempotencyKey)> = items
            .iter()
            .filter(|item| writes(item))
            .filter_map(|item| item.event.idempotency_key.as_ref().map(|key| (&item.event.source, key)))
            .collect();
        let stored = store::events::stored_ids(self.db.connection(), &keyed).await?;
        let may_change_profiles = ctx.actor.may(Permission::ProfilesWrite);
        // The keys of the earlier events that will be recorded: those that write nothing here
        // and name a contact that exists, and those whose writes went through.
        let mut taken_keys: HashSet<(Key, IdempotencyKey)> = HashSet::new();
        let mut created: HashMap<ContactRef, ContactId> = HashMap::new();
        let mut outcomes = Vec::with_capacity(items.len());
        for item in items.iter_mut() {
            let batch_key = item.event.idempotency_key.clone().map(|key| (item.event.source.clone(), key));
            // A later event with the key of an earlier one is its duplicate: it writes nothing.
            // One whose namesake was refused is written in its stead.
            if batch_key.as_ref().is_some_and(|key| taken_keys.contains(key)) {
                outcomes.push(None);
                continue;
            }
            if !writes(item) {
                if known.contains_key(&item.event.contact) {
                    taken_keys.extend(batch_key);
                }
                outcomes.push(None);
                continue;
            }
            if let Some(id) = batch_key.as_ref().and_then(|key| stored.get(key)) {
                outcomes.push(Some(Ok(Tracked::Duplicate(*id))));
                continue;
            }
            if item.identify.is_some() && !may_change_profiles {
                outcomes.push(Some(Err(Error::Forbidden)));
                continue;
            }
            let reference = item.event.contact.clone();
            let existing = known.get(&reference).or_else(|| created.get(&reference)).copied();
            let identify = item.identify.take();
            if let (Some(id), None) = (existing, &identify) {
                // Created by an earlier event of the request: recorded with the others.
                taken_keys.extend(batch_key);
                item.event.contact = ContactRef::Id(id);
                outcomes.push(None);
                continue;
            }
            let event = &item.event;
            let write_event: &AlongsideWrite<'_, Tracked> =
                &|tx, contact| self.write_event_with_contact(tx, ctx, event.clone(), contact.id, now);
            let written = match (existing, identify) {
                (Some(id), changes) => self.identify(ctx, id, changes.unwrap_or_default(), write_event).await,
                // Changes for a contact that does not exist create it only when asked to.
                (None, _) if missing == MissingContacts::Reject => Err(Error::NotFound { what: "contact" }),
                (None, changes) => {
                    let created_now =
                        self.create_contact(ctx, &reference, changes.unwrap_or_default(), write_event).await;
                    created_now.map(|(id, tracked)| {
                        if matches!(tracked, Tracked::Created(_)) {
                            created.insert(reference.clone(), id);
                        }
                        tracked
                    })
                }
            };
            match written {
                Ok(tracked) => {
                    taken_keys.extend(batch_key);
                    outcomes.push(Some(Ok(tracked)));
                }
                Err(error) => outcomes.push(Some(Err(error.within("identify")))),
            }
        }
        Ok(outcomes)
    }

    /// Writes `event` for `contact_id` in the transaction of its contact's change; the change
    /// stands only if the event is new.
    fn write_event_with_contact<'a>(
        &self,
        tx: &'a DatabaseTransaction,
        ctx: &RequestContext,
        event: NewEvent,
        contact_id: ContactId,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Alongside<Tracked>>> {
        let db = self.db.clone();
        let submission = Submission {
            ctx: ctx.clone(),
            now,
            events: vec![(ContactRef::Id(contact_id), event_for(event, contact_id, now))],
            rejected: 0,
        };
        Box::pin(async move {
            let written = event_writer::write_in(tx, &db, submission).await?;
            match written.first().copied().flatten() {
                Some(Insertion::Created(id)) => Ok(Alongside { value: Tracked::Created(id), commit: true }),
                // Stored meanwhile by another request: this one changes nothing.
                Some(Insertion::Duplicate(id)) => Ok(Alongside { value: Tracked::Duplicate(id), commit: false }),
                None => Err(Error::NotFound { what: "contact" }),
            }
        })
    }

    /// Applies `changes` to an existing contact with its event, reading it afresh if another
    /// writer changed it between our read and our write.
    async fn identify(
        &self,
        ctx: &RequestContext,
        id: ContactId,
        changes: ContactChanges,
        write_event: &AlongsideWrite<'_, Tracked>,
    ) -> Result<Tracked> {
        let mut attempts_left = 3;
        loop {
            attempts_left -= 1;
            let current = self.find_contact(&ContactRef::Id(id)).await?.ok_or(Error::NotFound { what: "contact" })?;
            match self.update_contact_with(ctx, id, current.version, changes.clone(), write_event).await {
                Err(Error::Conflict { field: Some(field), .. }) if field == "expectedVersion" && attempts_left > 0 => {}
                outcome => return outcome.map(|(_, tracked)| tracked),
            }
        }
    }

    /// Creates the contact `reference` names, with `changes`. The reference is the contact's key,
    /// so changes that would give it another one are refused rather than silently dropped.
    async fn create_contact(
        &self,
        ctx: &RequestContext,
        reference: &ContactRef,
        changes: ContactChanges,
        write_event: &AlongsideWrite<'_, Tracked>,
    ) -> Result<(ContactId, Tracked)> {
        let key = match reference {
            ContactRef::Id(_) => return Err(Error::NotFound { what: "contact" }),
            ContactRef::ExternalId(external_id) => {
                if !matches!(&changes.external_id, Change::Keep)
                    && changes.external_id != Change::Set(external_id.clone())
                {
                    return Err(Error::validation(
                        "externalId",
                        "differs from the external id the new contact is created by",
                    ));
                }
                UpsertKey::ExternalId(external_id.clone())
            }
            ContactRef::Email(email) => {
                if !matches!(&changes.email, Change::Keep) && changes.email != Change::Set(email.clone()) {
                    return Err(Error::validation(
                        "email",
                        "differs from the email address the new contact is created by",
                    ));
                }
                UpsertKey::Email(email.clone())
            }
        };
        let (upserted, tracked) = self.upsert_contact_with(ctx, key, changes, write_event).await?;
        Ok((upserted.contact.id, tracked))
    }

    /// Stores the events that can be stored, with their audit entry and their contacts' activity,
    /// in one transaction (shared with the batches of other requests: see `event_writer`). Items
    /// that failed earlier pass through as errors.
    async fn record_events(
        &self,
        ctx: &RequestContext,
        batch: Vec<Result<NewEvent>>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Result<Tracked>>> {
        let references: Vec<ContactRef> =
            batch.iter().filter_map(|item| item.as_ref().ok().map(|event| event.contact.clone())).collect();
        // Read outside the write, so that the writer spends its time writing; the write refuses
        // a contact deleted since (PostgreSQL's foreign key, SQLite's look in `insert_all`).
        let contacts = store::contacts::resolve(self.db.connection(), self.db.keys()?, &references).await?;
        let mut outcomes: Vec<Option<Result<Tracked>>> = Vec::with_capacity(batch.len());
        let mut events = Vec::with_capacity(batch.len());
        let mut positions = Vec::with_capacity(batch.len());
        for (position, item) in batch.into_iter().enumerate() {
            let resolved = item.and_then(|event| {
                let reference = event.contact.clone();
                with_contact(event, &contacts, now).map(|event| (reference, event))
            });
            match resolved {
                Ok(resolved) => {
                    events.push(resolved);
                    positions.push(position);
                    outcomes.push(None);
                }
                Err(error) => outcomes.push(Some(Err(error))),
            }
        }
        if !events.is_empty() {
            let rejected = outcomes.len() - events.len();
            let submission = Submission { ctx: ctx.clone(), now, events, rejected };
            let written = self.event_writer.write(&self.db, submission).await?;
            for (position, insertion) in positions.into_iter().zip(written) {
                outcomes[position] = Some(match insertion {
                    Some(Insertion::Created(id)) => Ok(Tracked::Created(id)),
                    Some(Insertion::Duplicate(id)) => Ok(Tracked::Duplicate(id)),
                    None => Err(Error::NotFound { what: "contact" }),
                });
            }
        }
        let results: Vec<Result<Tracked>> =
            outcomes.into_iter().map(|outcome| outcome.unwrap_or_else(|| Err(missing_outcome()))).collect();
        let created = results.iter().filter(|result| matches!(result, Ok(Tracked::Created(_)))).count();
        tracing::info!(created, "events tracked");
        Ok(results)
    }

    /// Event groups written since the process started: fewer than the requests that tracked
    /// events when concurrent ones were written together.
    pub fn event_groups_written(&self) -> u64 {
        self.event_writer.groups_written()
    }

    /// The requests whose events are being written, and those waiting for the next group.
    pub fn event_writer_load(&self) -> WriterLoad {
        self.event_writer.load()
    }

    /// When these contacts were last seen; contacts without events are left out.
    pub async fn contact_activity(&self, ids: &[ContactId]) -> Result<Vec<ContactActivity>> {
        Ok(store::events::activity_of(self.db.connection(), ids).await?)
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

fn missing_outcome() -> Error {
    Error::Internal(anyhow::anyhow!("event outcome missing"))
}

/// The event with its time settled: now when it came without one, never in the future.
fn checked_time(event: NewEvent, now: DateTime<Utc>) -> Result<NewEvent> {
    let occurred_at = event.occurred_at.unwrap_or(now);
    if occurred_at > now + crate::domain::CLOCK_SKEW {
        return Err(Error::validation("occurredAt", "lies in the future"));
    }
    Ok(NewEvent { occurred_at: Some(crate::domain::at_storage_precision(occurred_at)), ..event })
}

fn with_contact(event: NewEvent, contacts: &HashMap<ContactRef, ContactId>, now: DateTime<Utc>) -> Result<Event> {
    let contact_id = *contacts.get(&event.contact).ok_or(Error::NotFound { what: "contact" })?;
    Ok(event_for(event, contact_id, now))
}

fn event_for(event: NewEvent, contact_id: ContactId, now: DateTime<Utc>) -> Event {
    Event {
        id: Uuid::now_v7(),
        contact_id,
        event_type: event.event_type,
        properties: event.properties,
        occurred_at: event.occurred_at.unwrap_or(now),
        received_at: now,
        source: event.source,
        idempotency_key: event.idempotency_key,
    }
}
