//! Behavioural events and the contact activity they add up to. Inserts are set-wise and
//! idempotent: a row whose (source, idempotency key) already exists is skipped by the database
//! itself, so concurrent retries cannot store an event twice. Activity is upserted once per batch.
//!
//! A contact's events are found differently on the two backends. PostgreSQL indexes `event` by
//! contact as each event is stored. SQLite keeps that index in a table of its own,
//! `event_timeline`, which [`index_timeline`] fills in bulk from the events stored since its last
//! round (migration m20261206_000001_event_timeline says why); reads take the events it holds and
//! those not indexed yet (the tail, by `seq`) in one statement, so in one snapshot.

use std::{
    borrow::Borrow,
    collections::{HashMap, HashSet},
    time::Duration,
};

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder,
    QuerySelect, Statement,
    sea_query::{Expr, OnConflict, Query},
};
use uuid::Uuid;

use super::{
    Database, StoreError, StoreResult,
    entity::{contact, contact_activity as activity, event as entity},
    execute_in_turn,
};
use crate::domain::{
    contact::ContactId,
    event::{ContactActivity, Event, EventProperties, EventType, IdempotencyKey, TimelineKey},
    key::Key,
    page::{Direction, Page, PageRequest},
};

/// Rows per INSERT statement: well under SQLite's limit of bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// What became of one event handed to [`insert_all`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Insertion {
    Created(Uuid),
    /// An event with the same source and idempotency key was stored before; its id.
    Duplicate(Uuid),
}

impl Insertion {
    /// The stored event's id, whichever write stored it.
    pub fn id(self) -> Uuid {
        match self {
            Insertion::Created(id) | Insertion::Duplicate(id) => id,
        }
    }
}

/// Inserts events, skipping those whose idempotency key is already stored, and reports for each
/// event (in order) whether it was created or was a duplicate. Callers dedupe within a batch.
///
/// Nothing is returned row by row: a statement that inserted all its rows created them all, and
/// only one that skipped some reads back which (by their keys), so that the common case spares
/// the database and the driver a row per event.
pub async fn insert_all(conn: &impl ConnectionTrait, events: &[impl Borrow<Event>]) -> StoreResult<Vec<Insertion>> {
    let backend = conn.get_database_backend();
    if backend == DbBackend::Sqlite {
        refuse_missing_contacts(conn, events).await?;
    }
    let chunks: Vec<Vec<&Event>> =
        events.chunks(ROWS_PER_STATEMENT).map(|chunk| chunk.iter().map(|event| event.borrow()).collect()).collect();
    let inserted = execute_in_turn(conn, chunks.iter().map(|chunk| insert_statement(backend, chunk))).await?;
    let mut insertions = Vec::with_capacity(events.len());
    for (chunk, inserted) in chunks.iter().zip(inserted) {
        if inserted == chunk.len() as u64 {
            insertions.extend(chunk.iter().map(|event| Insertion::Created(event.id)));
        } else {
            insertions.extend(skipped_or_not(conn, chunk).await?);
        }
    }
    Ok(insertions)
}

/// What the foreign key does on PostgreSQL: `MissingReference` if a contact of `events` does not
/// exist (deleted since the caller looked it up). SQLite's event table has no foreign key, which
/// would make every deleted contact read the whole table; inside the one write transaction that
/// SQLite runs at a time, no contact can go between this look and the insert.
async fn refuse_missing_contacts(conn: &impl ConnectionTrait, events: &[impl Borrow<Event>]) -> StoreResult<()> {
    let wanted: HashSet<Uuid> = events.iter().map(|event| event.borrow().contact_id.as_uuid()).collect();
    let wanted: Vec<Uuid> = wanted.into_iter().collect();
    let mut found = 0;
    for chunk in wanted.chunks(ROWS_PER_STATEMENT) {
        found += contact::Entity::find()
            .select_only()
            .column(contact::Column::Id)
            .filter(contact::Column::Id.is_in(chunk.iter().copied()))
            .into_tuple::<Uuid>()
            .all(conn)
            .await?
            .len();
    }
    if found == wanted.len() { Ok(()) } else { Err(StoreError::MissingReference) }
}

/// One multi-row INSERT of `events` that skips those whose idempotency key is stored.
fn insert_statement(backend: DbBackend, events: &[&Event]) -> Statement {
    let mut insert = Query::insert();
    insert
        .into_table(entity::Entity)
        .columns([
            entity::Column::Id,
            entity::Column::ContactId,
            entity::Column::EventType,
            entity::Column::Properties,
            entity::Column::OccurredAt,
            entity::Column::ReceivedAt,
            entity::Column::Source,
            entity::Column::IdempotencyKey,
        ])
        .on_conflict(
            OnConflict::columns([entity::Column::Source, entity::Column::IdempotencyKey]).do_nothing().to_owned(),
        );
    for event in events {
        insert.values_panic([
            event.id.into(),
            event.contact_id.as_uuid().into(),
            event.event_type.as_str().into(),
            event.properties.clone().into_value().into(),
            event.occurred_at.into(),
            event.received_at.into(),
            event.source.as_str().into(),
            event.idempotency_key.as_ref().map(|key| key.as_str().to_owned()).into(),
        ]);
    }
    backend.build(&insert)
}

/// For events some of which an insert skipped: each one's own id if it was stored, else the id
/// of the event stored before with its key. Only an event with a key can have been skipped.
async fn skipped_or_not(conn: &impl ConnectionTrait, events: &[&Event]) -> StoreResult<Vec<Insertion>> {
    let keyed: Vec<(&Key, &IdempotencyKey)> =
        events.iter().filter_map(|event| event.idempotency_key.as_ref().map(|key| (&event.source, key))).collect();
    let stored = stored_ids(conn, &keyed).await?;
    events
        .iter()
        .map(|event| {
            let Some(key) = &event.idempotency_key else {
                return Ok(Insertion::Created(event.id));
            };
            match stored.get(&(event.source.clone(), key.clone())) {
                Some(id) if *id == event.id => Ok(Insertion::Created(event.id)),
                Some(id) => Ok(Insertion::Duplicate(*id)),
                None => Err(StoreError::Corrupt { table: "event", column: "idempotency_key" }),
            }
        })
        .collect()
}

/// The ids of the stored events with these (source, idempotency key) pairs; pairs not stored are
/// missing from the map.
pub async fn stored_ids(
    conn: &impl ConnectionTrait,
    keys: &[(&Key, &IdempotencyKey)],
) -> StoreResult<HashMap<(Key, IdempotencyKey), Uuid>> {
    let mut existing = HashMap::new();
    for chunk in keys.chunks(ROWS_PER_STATEMENT) {
        let mut any_of = Condition::any();
        for (source, key) in chunk {
            any_of = any_of.add(
                Condition::all()
                    .add(entity::Column::Source.eq(source.as_str()))
                    .add(entity::Column::IdempotencyKey.eq(key.as_str())),
            );
        }
        let rows: Vec<(Uuid, String, Option<String>)> = entity::Entity::find()
            .select_only()
            .columns([entity::Column::Id, entity::Column::Source, entity::Column::IdempotencyKey])
            .filter(any_of)
            .into_tuple()
            .all(conn)
            .await?;
        for (id, source, key) in rows {
            let source = Key::parse(&source).map_err(|_| StoreError::Corrupt { table: "event", column: "source" })?;
            let key = key
                .map(|key| IdempotencyKey::parse(&key))
                .transpose()
                .ok()
                .flatten()
                .ok_or(StoreError::Corrupt { table: "event", column: "idempotency_key" })?;
            existing.insert((source, key), id);
        }
    }
    Ok(existing)
}

/// Adds newly stored events to their contacts' activity, one statement per `ROWS_PER_STATEMENT`
/// contacts. `additions` holds at most one entry per contact (PostgreSQL refuses to update one
/// row twice in a statement).
pub async fn record_activity(conn: &impl ConnectionTrait, additions: &[ContactActivity]) -> StoreResult<()> {
    // Ties go to the batch: of two events at the same instant, the later-received one is last.
    let newer = "excluded.last_seen_at >= contact_activity.last_seen_at";
    // Every writer locks the rows in id order, so that concurrent batches over the same contacts
    // queue on PostgreSQL instead of deadlocking.
    let mut additions: Vec<&ContactActivity> = additions.iter().collect();
    additions.sort_by_key(|addition| addition.contact_id.as_uuid());
    for chunk in additions.chunks(ROWS_PER_STATEMENT) {
        let mut upsert = Query::insert();
        upsert
            .into_table(activity::Entity)
            .columns([
                activity::Column::ContactId,
                activity::Column::LastSeenAt,
                activity::Column::LastEventType,
                activity::Column::EventCount,
            ])
            .on_conflict(
                OnConflict::column(activity::Column::ContactId)
                    .value(
                        activity::Column::LastSeenAt,
                        Expr::cust(format!(
                            "CASE WHEN {newer} THEN excluded.last_seen_at ELSE contact_activity.last_seen_at END"
                        )),
                    )
                    .value(
                        activity::Column::LastEventType,
                        Expr::cust(format!(
                            "CASE WHEN {newer} THEN excluded.last_event_type ELSE contact_activity.last_event_type END"
                        )),
                    )
                    .value(
                        activity::Column::EventCount,
                        Expr::cust("contact_activity.event_count + excluded.event_count"),
                    )
                    .to_owned(),
            );
        for addition in chunk {
            upsert.values_panic([
                addition.contact_id.as_uuid().into(),
                addition.last_seen_at.into(),
                addition.last_event_type.as_str().into(),
                addition.event_count.into(),
            ]);
        }
        conn.execute(&upsert).await?;
    }
    Ok(())
}

/// The activity of these contacts; contacts without events have none.
pub async fn activity_of(conn: &impl ConnectionTrait, ids: &[ContactId]) -> StoreResult<Vec<ContactActivity>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    activity::Entity::find()
        .filter(activity::Column::ContactId.is_in(ids.iter().map(|id| id.as_uuid())))
        .all(conn)
        .await?
        .into_iter()
        .map(|row| {
            Ok(ContactActivity {
                contact_id: ContactId::from_uuid(row.contact_id),
                last_seen_at: row.last_seen_at,
                last_event_type: EventType::parse(&row.last_event_type)
                    .map_err(|_| StoreError::Corrupt { table: "contact_activity", column: "last_event_type" })?,
                event_count: row.event_count,
            })
        })
        .collect()
}

pub async fn timeline(
    conn: &impl ConnectionTrait,
    contact_id: ContactId,
    event_type: Option<&EventType>,
    request: &PageRequest<TimelineKey>,
) -> StoreResult<Page<Event>> {
    let rows = if conn.get_database_backend() == DbBackend::Sqlite {
        entity::Entity::find().from_raw_sql(timeline_on_sqlite(contact_id, event_type, request)).all(conn).await?
    } else {
        let mut query = entity::Entity::find().filter(entity::Column::ContactId.eq(contact_id.as_uuid()));
        if let Some(event_type) = event_type {
            query = query.filter(entity::Column::EventType.eq(event_type.as_str()));
        }
        if let Some((at, id)) = request.after {
            query = query.filter(older_than(at, id));
        }
        if let Some((at, id)) = request.before {
            query = query.filter(newer_than(at, id));
        }
        query = match request.direction {
            Direction::Forward => query.order_by_desc(entity::Column::OccurredAt).order_by_desc(entity::Column::Id),
            Direction::Backward => query.order_by_asc(entity::Column::OccurredAt).order_by_asc(entity::Column::Id),
        };
        query.limit(request.limit + 1).all(conn).await?
    };
    Page::from_rows(rows, request.limit, request.direction).try_map(to_domain)
}

/// The columns of an event as the entity reads them (`seq`, SQLite's alone, left out).
const EVENT_COLUMNS: &str = "id, contact_id, event_type, properties, occurred_at, received_at, source, idempotency_key";

/// The events of the tail: stored since `index_timeline`'s last round.
const TAIL: &str = "seq > (SELECT indexed_through FROM event_timeline_progress)";

/// A page of the timeline on SQLite: the page's worth from `event_timeline`, read in its key
/// order, and the tail's events of the contact, in one statement, sorted together. Public for the
/// test of its query plan.
pub fn timeline_on_sqlite(
    contact_id: ContactId,
    event_type: Option<&EventType>,
    request: &PageRequest<TimelineKey>,
) -> Statement {
    let order = match request.direction {
        Direction::Forward => "DESC",
        Direction::Backward => "ASC",
    };
    let limit = request.limit + 1;
    // The same conditions twice: on the timeline's columns, then on the tail's. The cursor is a
    // row value, which SQLite reads as a range of the timeline's key. The type is compared as
    // `+event_type`, an expression, so that the planner never reads every event of that type by
    // an index on it (PostgreSQL has one; segments may add one here) instead of the contact's few.
    let conditions = |at: &str, id: &str, kind: &str, values: &mut Vec<sea_orm::Value>| {
        let mut sql = String::new();
        values.push(contact_id.as_uuid().into());
        if let Some(event_type) = event_type {
            sql.push_str(&format!(" AND +{kind} = ?"));
            values.push(event_type.as_str().into());
        }
        for (bound, than) in [(request.after, "<"), (request.before, ">")] {
            if let Some((bound_at, bound_id)) = bound {
                sql.push_str(&format!(" AND ({at}, {id}) {than} (?, ?)"));
                values.extend([bound_at.into(), bound_id.into()]);
            }
        }
        sql
    };
    let mut values = Vec::new();
    let indexed = conditions("t.occurred_at", "t.event_id", "e.event_type", &mut values);
    let tail = conditions("occurred_at", "id", "event_type", &mut values);
    let sql = format!(
        "SELECT {EVENT_COLUMNS} FROM (SELECT * FROM (\
           SELECT e.* FROM event_timeline t JOIN event e ON e.id = t.event_id \
           WHERE t.contact_id = ?{indexed} ORDER BY t.occurred_at {order}, t.event_id {order} LIMIT {limit}) \
         UNION ALL SELECT * FROM event WHERE {TAIL} AND contact_id = ?{tail}) \
         ORDER BY occurred_at {order}, id {order} LIMIT {limit}"
    );
    Statement::from_sql_and_values(DbBackend::Sqlite, sql, values)
}

/// Every event of a contact, oldest first.
pub async fn all_of(conn: &impl ConnectionTrait, contact_id: ContactId) -> StoreResult<Vec<Event>> {
    let rows = if conn.get_database_backend() == DbBackend::Sqlite {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM event WHERE id IN (SELECT event_id FROM event_timeline WHERE contact_id = ?) \
             UNION ALL SELECT {EVENT_COLUMNS} FROM event WHERE {TAIL} AND contact_id = ? \
             ORDER BY occurred_at, id"
        );
        let id = contact_id.as_uuid();
        let statement = Statement::from_sql_and_values(DbBackend::Sqlite, sql, [id.into(), id.into()]);
        entity::Entity::find().from_raw_sql(statement).all(conn).await?
    } else {
        entity::Entity::find()
            .filter(entity::Column::ContactId.eq(contact_id.as_uuid()))
            .order_by_asc(entity::Column::OccurredAt)
            .order_by_asc(entity::Column::Id)
            .all(conn)
            .await?
    };
    rows.into_iter().map(to_domain).collect()
}

/// How many events a contact has. Deleting the contact deletes them: by the foreign key's cascade
/// on PostgreSQL, by the trigger `event_of_deleted_contact` on SQLite.
pub async fn count_of(conn: &impl ConnectionTrait, contact_id: ContactId) -> StoreResult<u64> {
    let id = contact_id.as_uuid();
    if conn.get_database_backend() != DbBackend::Sqlite {
        return Ok(entity::Entity::find().filter(entity::Column::ContactId.eq(id)).count(conn).await?);
    }
    let sql = format!(
        "SELECT (SELECT count(*) FROM event_timeline WHERE contact_id = ?) \
              + (SELECT count(*) FROM event WHERE {TAIL} AND contact_id = ?)"
    );
    count(conn, Statement::from_sql_and_values(DbBackend::Sqlite, sql, [id.into(), id.into()])).await
}

/// On SQLite, the events not in `event_timeline` yet (the tail); none on PostgreSQL.
pub async fn unindexed(conn: &impl ConnectionTrait) -> StoreResult<u64> {
    if conn.get_database_backend() != DbBackend::Sqlite {
        return Ok(0);
    }
    count(conn, Statement::from_string(DbBackend::Sqlite, format!("SELECT count(*) FROM event WHERE {TAIL}"))).await
}

async fn count(conn: &impl ConnectionTrait, statement: Statement) -> StoreResult<u64> {
    let counted: i64 = match conn.query_one_raw(statement).await? {
        Some(row) => row.try_get_by_index(0)?,
        None => 0,
    };
    Ok(counted.unsigned_abs())
}

/// Events that one round of [`index_timeline`] takes at most: a bound on its transaction, which
/// holds SQLite's one write lock.
pub const TIMELINE_ROUND: u64 = 100_000;

/// How often the tail goes into the timeline: each round writes a few pages per contact that had
/// events since the last, so rarer rounds write fewer pages per event, and reads scan a longer tail.
const TIMELINE_EVERY: Duration = Duration::from_millis(500);

/// On SQLite, adds up to [`TIMELINE_ROUND`] events of the tail to `event_timeline`, sorted by its
/// key so that each contact's pages are written once; how many. Nothing to do on PostgreSQL.
pub async fn index_timeline(db: &Database) -> StoreResult<u64> {
    if db.backend() != DbBackend::Sqlite {
        return Ok(0);
    }
    let tx = db.begin_write().await?;
    let through =
        format!("SELECT max(seq) FROM (SELECT seq FROM event WHERE {TAIL} ORDER BY seq LIMIT {TIMELINE_ROUND})");
    let through: Option<i64> = match tx.query_one_raw(Statement::from_string(DbBackend::Sqlite, through)).await? {
        Some(row) => row.try_get_by_index(0)?,
        None => None,
    };
    let Some(through) = through else {
        tx.rollback().await?;
        return Ok(0);
    };
    let index = format!(
        "INSERT INTO event_timeline (contact_id, occurred_at, event_id) \
         SELECT contact_id, occurred_at, id FROM event WHERE {TAIL} AND seq <= ? \
         ORDER BY contact_id, occurred_at, id"
    );
    let indexed = tx
        .execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, index, [through.into()]))
        .await?
        .rows_affected();
    let progress = "UPDATE event_timeline_progress SET indexed_through = ?";
    tx.execute_raw(Statement::from_sql_and_values(DbBackend::Sqlite, progress, [through.into()])).await?;
    tx.commit().await?;
    Ok(indexed)
}

/// On SQLite, runs [`index_timeline`] every [`TIMELINE_EVERY`], and again at once after a full
/// round, until `stop` turns true (what is left waits for the next start; reads see it meanwhile).
pub async fn keep_timeline_indexed(db: Database, mut stop: tokio::sync::watch::Receiver<bool>) {
    if db.backend() != DbBackend::Sqlite {
        return;
    }
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TIMELINE_EVERY) => {}
            _ = stop.wait_for(|stopped| *stopped) => return,
        }
        loop {
            match index_timeline(&db).await {
                Ok(TIMELINE_ROUND) if !*stop.borrow() => {}
                Ok(_) => break,
                Err(error) => {
                    tracing::warn!(error = %error, "indexing the event timeline failed");
                    break;
                }
            }
        }
    }
}

fn older_than(at: DateTime<Utc>, id: Uuid) -> Condition {
    Condition::any()
        .add(entity::Column::OccurredAt.lt(at))
        .add(Condition::all().add(entity::Column::OccurredAt.eq(at)).add(entity::Column::Id.lt(id)))
}

fn newer_than(at: DateTime<Utc>, id: Uuid) -> Condition {
    Condition::any()
        .add(entity::Column::OccurredAt.gt(at))
        .add(Condition::all().add(entity::Column::OccurredAt.eq(at)).add(entity::Column::Id.gt(id)))
}

fn to_domain(model: entity::Model) -> StoreResult<Event> {
    let corrupt = |column| StoreError::Corrupt { table: "event", column };
    Ok(Event {
        id: model.id,
        contact_id: ContactId::from_uuid(model.contact_id),
        event_type: EventType::parse(&model.event_type).map_err(|_| corrupt("event_type"))?,
        properties: EventProperties::parse(model.properties).map_err(|_| corrupt("properties"))?,
        occurred_at: model.occurred_at,
        received_at: model.received_at,
        source: Key::parse(&model.source).map_err(|_| corrupt("source"))?,
        idempotency_key: model
            .idempotency_key
            .map(|key| IdempotencyKey::parse(&key))
            .transpose()
            .map_err(|_| corrupt("idempotency_key"))?,
    })
}
