//! Group commit for events. Requests parse their events and resolve their contacts on their own,
//! side by side; the writing is done by one task at a time, which takes every batch handed in
//! while it was busy and writes them all in one transaction. Batches handed in while that group's
//! events are inserted join it, up to a bound, so that under steady load groups stay whole rather
//! than alternating between a large one and a small one made of the few that came in meanwhile
//! (each group pays for the index pages of all its contacts: BENCHMARKS.md, events_ingest).
//!
//! Why: a transaction's cost is mostly the index pages it dirties, each logged once per commit
//! however many rows it took. On SQLite a batch of 1,000 events over 1,000 contacts of a large
//! base dirties about one page of contact activity per contact, so four batches in one transaction
//! log those pages once instead of four times (BENCHMARKS.md, events_ingest; the timeline, which
//! cost the same, is indexed later in bulk: `store::events::index_timeline`). On PostgreSQL it
//! spares concurrent batches queueing on each other's row locks (contact activity, the audit
//! chain's head) and a commit each.
//!
//! An idle writer starts at once, so a lone event waits for nobody. A group that fails is written
//! again one request at a time, so that one request's failure never fails another's.

use std::{
    collections::{HashMap, HashSet, hash_map::Entry},
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
                let group = take_waiting(&mut queue.waiting, MAX_GROUP_EVENTS, true);
                guard.in_group = group.len();
                queue.in_groups += group.len();
                group
            };
            let in_group = &mut guard.in_group;
            write_group(&db, group, |budget| self.absorb(budget, in_group)).await;
            self.groups_written.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The requests that came in while a group was being written, up to `budget` events, to join
    /// it: a group then ends when nothing is waiting, instead of the next one starting with the
    /// few requests that arrived meanwhile and paying a whole commit for them.
    fn absorb(&self, budget: usize, in_group: &mut usize) -> Vec<Queued> {
        let mut queue = self.queue.lock().unwrap_or_else(PoisonError::into_inner);
        let taken = take_waiting(&mut queue.waiting, budget, false);
        queue.in_groups += taken.len();
        *in_group += taken.len();
        taken
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

/// The oldest waiting requests, up to `budget` events (but the oldest one whatever its size if
/// `at_least_one`).
fn take_waiting(waiting: &mut Vec<Queued>, budget: usize, at_least_one: bool) -> Vec<Queued> {
    let mut events = 0;
    let mut taken = waiting
        .iter()
        .take_while(|queued| {
            events += queued.submission.events.len();
            events <= budget
        })
        .count();
    if at_least_one {
        taken = taken.max(1);
    }
    waiting.drain(..taken.min(waiting.len())).collect()
}

/// Writes `group`, with the requests `absorb` hands over while it is written, and answers them.
async fn write_group(db: &Database, group: Vec<Queued>, mut absorb: impl FnMut(usize) -> Vec<Queued>) {
    let (mut submissions, mut replies): (Vec<Submission>, Vec<_>) =
        group.into_iter().map(|queued| (queued.submission, queued.reply)).unzip();
    let joining = |budget| {
        let taken = absorb(budget);
        taken
            .into_iter()
            .map(|queued| {
                replies.push(queued.reply);
                queued.submission
            })
            .collect()
    };
    match write_together(db, &mut submissions, Contacts::AsResolved, joining).await {
        Ok(written) => {
            for (reply, written) in replies.into_iter().zip(written) {
                let _ = reply.send(Ok(written));
            }
        }
        Err(error) => {
            let requests = submissions.len();
            tracing::debug!(error = %error, requests, "event group failed; writing its requests one by one");
            for (submission, reply) in submissions.into_iter().zip(replies) {
                let mut alone = vec![submission];
                let written = write_together(db, &mut alone, Contacts::Again, |_| Vec::new()).await;
                let _ = reply.send(written.map(|mut written| written.pop().unwrap_or_default()));
            }
        }
    }
}

/// Writes one request's events in the caller's transaction, their contacts as resolved: for
/// events whose contact's changes commit with them (`identify`).
pub(crate) async fn write_in(
    tx: &impl sea_orm::ConnectionTrait,
    db: &Database,
    submission: Submission,
) -> Result<Written> {
    let mut alone = vec![submission];
    let mut written = write_on(tx, db, &mut alone, Contacts::AsResolved, |_| Vec::new()).await?;
    Ok(written.pop().unwrap_or_default())
}

/// Where the events' contacts come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Contacts {
    /// As each request resolved them; the group is refused if one was deleted since (by the
    /// foreign key on PostgreSQL, by `store::events::insert_all`'s look on SQLite).
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

/// The group's rows, one per (source, idempotency key) with the first event submitted winning,
/// and each submitted event's slot among them.
#[derive(Default)]
struct Placement {
    /// Per request placed so far, each event's slot.
    slots: Vec<Vec<Slot>>,
    /// Per row, the request and the position of its event.
    origins: Vec<(usize, usize)>,
    first_with_key: HashMap<(Key, IdempotencyKey), usize>,
}

impl Placement {
    /// Places the events of the requests of `group` not placed yet, except those at the
    /// (request, position) pairs in `gone`; their new rows.
    fn place<'a>(&mut self, group: &'a [Submission], gone: &HashSet<(usize, usize)>) -> Vec<&'a Event> {
        let mut rows = Vec::new();
        for (request, submission) in group.iter().enumerate().skip(self.slots.len()) {
            let mut slots = Vec::with_capacity(submission.events.len());
            for (position, (_, event)) in submission.events.iter().enumerate() {
                if gone.contains(&(request, position)) {
                    slots.push(Slot::Gone);
                    continue;
                }
                if let Some(key) = &event.idempotency_key {
                    match self.first_with_key.entry((event.source.clone(), key.clone())) {
                        Entry::Occupied(first) => {
                            slots.push(Slot::Repeat(*first.get()));
                            continue;
                        }
                        Entry::Vacant(vacant) => {
                            vacant.insert(self.origins.len());
                        }
                    }
                }
                slots.push(Slot::Row(self.origins.len()));
                self.origins.push((request, position));
                rows.push(event);
            }
            self.slots.push(slots);
        }
        rows
    }
}

/// With `Contacts::Again`, points the events of the requests from `from` on at their contacts
/// as they are now; the (request, position) pairs of those whose contact is gone.
async fn resolve_again(
    tx: &impl sea_orm::ConnectionTrait,
    db: &Database,
    group: &mut [Submission],
    from: usize,
) -> Result<HashSet<(usize, usize)>> {
    let references: Vec<ContactRef> = group[from..]
        .iter()
        .flat_map(|submission| submission.events.iter().map(|(reference, _)| reference.clone()))
        .collect();
    let current = store::contacts::resolve(tx, db.keys()?, &references).await?;
    let mut gone = HashSet::new();
    for (request, submission) in group.iter_mut().enumerate().skip(from) {
        for (position, (reference, event)) in submission.events.iter_mut().enumerate() {
            match current.get(reference) {
                Some(id) => event.contact_id = *id,
                None => {
                    gone.insert((request, position));
                }
            }
        }
    }
    Ok(gone)
}

/// Writes the group's events, their contacts' activity, their webhooks and an audit entry per
/// request, in one transaction; what became of each event, per request. The requests `absorb`
/// hands over while the events are inserted join the group.
async fn write_together(
    db: &Database,
    group: &mut Vec<Submission>,
    contacts: Contacts,
    absorb: impl FnMut(usize) -> Vec<Submission>,
) -> Result<Vec<Written>> {
    let tx = db.begin_write().await?;
    let written = write_on(&tx, db, group, contacts, absorb).await?;
    tx.commit().await?;
    Ok(written)
}

/// `write_together` in the caller's transaction.
async fn write_on(
    tx: &impl sea_orm::ConnectionTrait,
    db: &Database,
    group: &mut Vec<Submission>,
    contacts: Contacts,
    mut absorb: impl FnMut(usize) -> Vec<Submission>,
) -> Result<Vec<Written>> {
    let mut placement = Placement::default();
    let mut insertions = Vec::new();
    let mut events = 0;
    loop {
        let from = placement.slots.len();
        let gone = match contacts {
            Contacts::AsResolved => HashSet::new(),
            Contacts::Again => resolve_again(tx, db, group, from).await?,
        };
        events += group[from..].iter().map(|submission| submission.events.len()).sum::<usize>();
        let rows = placement.place(group, &gone);
        insertions.extend(store::events::insert_all(tx, &rows).await?);
        let joining = absorb(MAX_GROUP_EVENTS.saturating_sub(events));
        if joining.is_empty() {
            break;
        }
        group.extend(joining);
    }
    let group: &[Submission] = group;
    let row_event = |row: usize| {
        let (request, position) = placement.origins[row];
        &group[request].events[position].1
    };

    let mut created_by_contact: HashMap<ContactId, Vec<&Event>> = HashMap::new();
    for (row, insertion) in insertions.iter().enumerate() {
        if matches!(insertion, Insertion::Created(_)) {
            let event = row_event(row);
            created_by_contact.entry(event.contact_id).or_default().push(event);
        }
    }
    let activity: Vec<ContactActivity> = created_by_contact.into_values().filter_map(ContactActivity::of).collect();
    store::events::record_activity(tx, &activity).await?;

    let endpoints = store::webhooks::endpoints(tx).await?;
    let received_wanted = endpoints.iter().any(|endpoint| endpoint.wants(WebhookEventType::EventReceived));
    let mut written_all = Vec::with_capacity(group.len());
    for (submission, slots) in group.iter().zip(&placement.slots) {
        let written: Written = slots
            .iter()
            .map(|slot| match *slot {
                Slot::Row(row) => Some(insertions[row]),
                Slot::Repeat(row) => Some(Insertion::Duplicate(insertions[row].id())),
                Slot::Gone => None,
            })
            .collect();
        if received_wanted {
            let received = slots
                .iter()
                .filter_map(|slot| match *slot {
                    Slot::Row(row) if matches!(insertions[row], Insertion::Created(_)) => {
                        Some(received_webhook(row_event(row)))
                    }
                    _ => None,
                })
                .collect();
            store::webhooks::record_for(tx, &endpoints, received, submission.now).await?;
        }
        audit_submission(tx, submission, &written).await?;
        written_all.push(written);
    }
    Ok(written_all)
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
