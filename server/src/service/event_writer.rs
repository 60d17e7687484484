//! Group commit for events. Requests parse their events and resolve their contacts on their own,
//! side by side; the writing is done by one task at a time, which takes every batch handed in
//! while it was busy and writes them all in one transaction.
//!
//! Why: a transaction's cost is mostly the index pages it dirties, each logged once per commit
//! however many rows it took. On SQLite a batch of 1,000 events over 1,000 contacts dirties about
//! one timeline page per contact, so four batches in one transaction log those pages once instead
//! of four times (BENCHMARKS.md, events_ingest). On PostgreSQL it spares concurrent batches
//! queueing on each other's row locks (contact activity, the audit chain's head) and a commit each.
//!
//! An idle writer starts at once, so a lone event waits for nobody. A group that fails is written
//! again one request at a time, so that one request's failure never fails another's.

use std::{
    borrow::Cow,
    collections::HashMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
};

use chrono::{DateTime, Utc};
use sea_orm::DbBackend;
use serde_json::Value;
use tokio::sync::oneshot;

use super::{Error, RequestContext, Result};
use crate::{
    audit::{self, Changes},
    domain::{
        contact::{ContactId, ContactRef},
        event::{ContactActivity, Event, IdempotencyKey},
        key::Key,
        webhook::WebhookEventType,
    },
    store::{self, Database, events::Insertion, webhooks::NewMessage},
};

/// Events per group at most: a bound on one transaction's size and memory.
const MAX_GROUP_EVENTS: usize = 20_000;

/// One request's events on their way to the writer, each with its contact resolved.
pub(crate) struct Submission {
    pub ctx: RequestContext,
    pub now: DateTime<Utc>,
    /// Each event with the reference its contact was named by, to resolve again should that
    /// contact be deleted between the request's look and the write.
    pub events: Vec<(ContactRef, Event)>,
    /// The request's items settled before the write (invalid, or naming no contact), counted in
    /// its audit entry.
    pub rejected: usize,
}

/// What became of each event of a submission, in order: none when its contact was deleted before
/// the write. An event whose (source, idempotency key) came earlier in the group, or was stored
/// before, is a duplicate of that one.
pub(crate) type Written = Vec<Option<Insertion>>;

struct Queued {
    submission: Submission,
    reply: oneshot::Sender<Result<Written>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<Queued>,
    /// Tasks writing a group, at most `parallel_writers`.
    writers: usize,
    /// Requests in the groups being written.
    in_groups: usize,
}

/// What the writer has on hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriterLoad {
    /// Requests in the groups being written.
    pub writing: usize,
    /// Requests waiting for the next group.
    pub waiting: usize,
}

/// Groups written at once. SQLite has one writer anyway. PostgreSQL inserts on several cores at
/// once, so a second group writes its events while the first commits; the two then queue only on
/// the rows both touch (contact activity, the audit chain's head).
pub fn parallel_writers(backend: DbBackend) -> usize {
    match backend {
        DbBackend::Sqlite => 1,
        _ => 2,
    }
}

#[derive(Default)]
pub(crate) struct EventWriter {
    queue: Mutex<Queue>,
    groups_written: AtomicU64,
}

impl EventWriter {
    /// Writes `submission`, with whatever else is waiting, and answers once it is committed.
    pub async fn write(self: &Arc<Self>, db: &Database, submission: Submission) -> Result<Written> {
        let (reply, answer) = oneshot::channel();
        let start = {
            let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
            queue.waiting.push(Queued { submission, reply });
            let start = queue.writers < parallel_writers(db.backend());
            if start {
                queue.writers += 1;
            }
            start
        };
        if start {
            // A task of its own: a request that goes away (its client hung up) must not take the
            // group it was writing with it.
            tokio::spawn(Arc::clone(self).drain(db.clone()));
        }
        answer.await.map_err(|_| Error::Internal(anyhow::anyhow!("the event writer stopped")))?
    }

    /// Groups written so far: fewer than the requests when concurrent ones were written together.
    pub fn groups_written(&self) -> u64 {
        self.groups_written.load(Ordering::Relaxed)
    }

    pub fn load(&self) -> WriterLoad {
        let queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        WriterLoad { writing: queue.in_groups, waiting: queue.waiting.len() }
    }

    async fn drain(self: Arc<Self>, db: Database) {
        let mut guard = StopGuard { writer: &self, in_group: 0 };
        loop {
            let group = {
                let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
                queue.in_groups -= guard.in_group;
                if queue.waiting.is_empty() {
                    // Counted out under the lock that saw the queue empty, so that a request
                    // arriving now starts a writer of its own; the guard is for panics only.
                    queue.writers -= 1;
                    std::mem::forget(guard);
                    return;
                }
                let group = next_group(&mut queue.waiting);
                guard.in_group = group.len();
                queue.in_groups += group.len();
                group
            };
            write_group(&db, group).await;
            self.groups_written.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Should a writing task panic, its group is answered with an error (their replies dropped), and
/// so are the requests still waiting if no other task is writing; the next request starts a
/// writer again, instead of waiting forever.
struct StopGuard<'a> {
    writer: &'a EventWriter,
    in_group: usize,
}

impl Drop for StopGuard<'_> {
    fn drop(&mut self) {
        let mut queue = self.writer.queue.lock().unwrap_or_else(PoisonError::into_inner);
        queue.writers -= 1;
        queue.in_groups -= self.in_group;
        if queue.writers == 0 {
            queue.waiting.clear();
        }
    }
}

/// The oldest waiting requests, up to `MAX_GROUP_EVENTS` events (always at least one request).
fn next_group(waiting: &mut Vec<Queued>) -> Vec<Queued> {
    let mut events = 0;
    let taken = waiting
        .iter()
        .take_while(|queued| {
            events += queued.submission.events.len();
            events <= MAX_GROUP_EVENTS
        })
        .count()
        .max(1);
    waiting.drain(..taken).collect()
}

async fn write_group(db: &Database, group: Vec<Queued>) {
    let submissions: Vec<&Submission> = group.iter().map(|queued| &queued.submission).collect();
    match write_together(db, &submissions, Contacts::AsResolved).await {
        Ok(written) => {
            for (queued, written) in group.into_iter().zip(written) {
                let _ = queued.reply.send(Ok(written));
            }
        }
        Err(error) => {
            tracing::debug!(error = %error, requests = group.len(), "event group failed; writing its requests one by one");
            for queued in group {
                let written = write_together(db, &[&queued.submission], Contacts::Again).await;
                let _ = queued.reply.send(written.map(|mut written| written.pop().unwrap_or_default()));
            }
        }
    }
}

/// Where the events' contacts come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contacts {
    /// As each request resolved them; the foreign key refuses the group if one was deleted since.
    AsResolved,
    /// Resolved again inside the transaction.
    Again,
}

/// Where a submitted event went in the group's insert.
enum Slot {
    /// Its own row.
    Row(usize),
    /// An earlier event of the group with its source and idempotency key had that row.
    Repeat(usize),
    /// Its contact no longer exists.
    Gone,
}

/// Writes the submissions' events, their contacts' activity, their webhooks and an audit entry per
/// submission, in one transaction; what became of each event, per submission.
async fn write_together(db: &Database, submissions: &[&Submission], contacts: Contacts) -> Result<Vec<Written>> {
    let tx = db.begin_write().await?;
    let current = match contacts {
        Contacts::AsResolved => None,
        Contacts::Again => {
            let references: Vec<ContactRef> = submissions
                .iter()
                .flat_map(|submission| submission.events.iter().map(|(reference, _)| reference.clone()))
                .collect();
            Some(store::contacts::resolve(&tx, db.keys()?, &references).await?)
        }
    };
    let (rows, slots) = place(submissions, current.as_ref());
    let insertions = store::events::insert_all(&tx, &rows).await?;

    let mut created_by_contact: HashMap<ContactId, Vec<&Event>> = HashMap::new();
    for (event, insertion) in rows.iter().zip(&insertions) {
        if matches!(insertion, Insertion::Created(_)) {
            created_by_contact.entry(event.contact_id).or_default().push(event);
        }
    }
    let activity: Vec<ContactActivity> = created_by_contact.into_values().filter_map(ContactActivity::of).collect();
    store::events::record_activity(&tx, &activity).await?;

    let endpoints = store::webhooks::endpoints(&tx).await?;
    let received_wanted = endpoints.iter().any(|endpoint| endpoint.wants(WebhookEventType::EventReceived));
    let mut written_all = Vec::with_capacity(submissions.len());
    for (submission, slots) in submissions.iter().zip(slots) {
        let written: Written = slots
            .iter()
            .map(|slot| match *slot {
                Slot::Row(row) => Some(insertions[row]),
                Slot::Repeat(row) => Some(Insertion::Duplicate(insertions[row].id())),
                Slot::Gone => None,
            })
            .collect();
        let created_rows = || {
            slots.iter().filter_map(|slot| match *slot {
                Slot::Row(row) if matches!(insertions[row], Insertion::Created(_)) => Some(&*rows[row]),
                _ => None,
            })
        };
        if received_wanted {
            let received = created_rows().map(received_webhook).collect();
            store::webhooks::record_for(&tx, &endpoints, received, submission.now).await?;
        }
        audit_submission(&tx, submission, &written).await?;
        written_all.push(written);
    }
    tx.commit().await?;
    Ok(written_all)
}

/// The group's rows, one per (source, idempotency key) with the first event submitted winning,
/// and each submitted event's slot among them.
fn place<'a>(
    submissions: &[&'a Submission],
    current: Option<&HashMap<ContactRef, ContactId>>,
) -> (Vec<Cow<'a, Event>>, Vec<Vec<Slot>>) {
    let mut rows: Vec<Cow<'a, Event>> = Vec::new();
    let mut first_with_key: HashMap<(&Key, &IdempotencyKey), usize> = HashMap::new();
    let slots = submissions
        .iter()
        .map(|submission| {
            submission
                .events
                .iter()
                .map(|(reference, submitted)| {
                    let event = match current {
                        None => Cow::Borrowed(submitted),
                        Some(current) => match current.get(reference) {
                            None => return Slot::Gone,
                            Some(id) if *id == submitted.contact_id => Cow::Borrowed(submitted),
                            Some(id) => Cow::Owned(Event { contact_id: *id, ..submitted.clone() }),
                        },
                    };
                    if let Some(key) = &submitted.idempotency_key {
                        if let Some(first) = first_with_key.get(&(&submitted.source, key)) {
                            return Slot::Repeat(*first);
                        }
                        first_with_key.insert((&submitted.source, key), rows.len());
                    }
                    rows.push(event);
                    Slot::Row(rows.len() - 1)
                })
                .collect()
        })
        .collect();
    (rows, slots)
}

/// One entry per request, with counts: events are facts about contacts rather than changes made
/// by the caller, and one entry per event would double every insert.
async fn audit_submission(
    tx: &impl sea_orm::ConnectionTrait,
    submission: &Submission,
    written: &Written,
) -> Result<()> {
    let created = written.iter().filter(|insertion| matches!(insertion, Some(Insertion::Created(_)))).count();
    if created == 0 {
        return Ok(());
    }
    let duplicates = written.iter().filter(|insertion| matches!(insertion, Some(Insertion::Duplicate(_)))).count();
    let gone = written.iter().filter(|insertion| insertion.is_none()).count();
    let mut changes = Changes::new();
    changes
        .field("created", None, Some(Value::from(created)))
        .field("duplicates", None, Some(Value::from(duplicates)))
        .field("rejected", None, Some(Value::from(submission.rejected + gone)));
    let entry = audit::Entry::new("events.tracked", "event_batch", submission.ctx.request_id.as_str(), changes);
    audit::append(tx, &submission.ctx, submission.now, entry).await?;
    Ok(())
}

/// The `event.received` webhook of a stored event: the event as the API shows it.
fn received_webhook(event: &Event) -> NewMessage {
    NewMessage {
        event_type: WebhookEventType::EventReceived,
        ordering_key: event.contact_id.to_string(),
        data: serde_json::json!({
            "eventId": event.id,
            "contactId": event.contact_id.to_string(),
            "type": event.event_type.as_str(),
            "properties": event.properties.as_map(),
            "occurredAt": event.occurred_at.to_rfc3339(),
            "receivedAt": event.received_at.to_rfc3339(),
            "source": event.source.as_str(),
        }),
    }
}
