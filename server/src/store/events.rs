//! Behavioural events. Inserts are set-wise and idempotent: a row whose (source, idempotency
//! key) already exists is skipped by the database itself, so concurrent retries cannot store an
//! event twice.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{OnConflict, Query},
};
use uuid::Uuid;

use super::{StoreError, StoreResult, entity::event as entity};
use crate::domain::{
    contact::ContactId,
    event::{Event, EventProperties, EventType, IdempotencyKey, TimelineKey},
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

/// Inserts events, skipping those whose idempotency key is already stored, and reports for each
/// event (in order) whether it was created or was a duplicate. Callers dedupe within a batch.
pub async fn insert_all(conn: &impl ConnectionTrait, events: &[Event]) -> StoreResult<Vec<Insertion>> {
    let mut created = std::collections::HashSet::new();
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
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
            )
            .returning_col(entity::Column::Id);
        for event in chunk {
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
        for row in conn.query_all(&insert).await? {
            created.insert(row.try_get::<Uuid>("", "id")?);
        }
    }
    let skipped: Vec<&Event> = events.iter().filter(|event| !created.contains(&event.id)).collect();
    let existing = existing_ids(conn, &skipped).await?;
    events
        .iter()
        .map(|event| {
            if created.contains(&event.id) {
                return Ok(Insertion::Created(event.id));
            }
            let key = (event.source.as_str().to_owned(), event.idempotency_key.as_ref().map(|k| k.as_str().to_owned()));
            existing
                .get(&key)
                .map(|id| Insertion::Duplicate(*id))
                .ok_or(StoreError::Corrupt { table: "event", column: "idempotency_key" })
        })
        .collect()
}

async fn existing_ids(
    conn: &impl ConnectionTrait,
    events: &[&Event],
) -> StoreResult<HashMap<(String, Option<String>), Uuid>> {
    let mut existing = HashMap::new();
    for chunk in events.chunks(ROWS_PER_STATEMENT) {
        let mut any_of = Condition::any();
        for event in chunk {
            any_of = any_of.add(
                Condition::all()
                    .add(entity::Column::Source.eq(event.source.as_str()))
                    .add(entity::Column::IdempotencyKey.eq(event.idempotency_key.as_ref().map(|key| key.as_str()))),
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
            existing.insert((source, key), id);
        }
    }
    Ok(existing)
}

pub async fn timeline(
    conn: &impl ConnectionTrait,
    contact_id: ContactId,
    event_type: Option<&EventType>,
    request: &PageRequest<TimelineKey>,
) -> StoreResult<Page<Event>> {
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
    let rows = query.limit(request.limit + 1).all(conn).await?;
    Page::from_rows(rows, request.limit, request.direction).try_map(to_domain)
}

/// Every event of a contact, oldest first.
pub async fn all_of(conn: &impl ConnectionTrait, contact_id: ContactId) -> StoreResult<Vec<Event>> {
    entity::Entity::find()
        .filter(entity::Column::ContactId.eq(contact_id.as_uuid()))
        .order_by_asc(entity::Column::OccurredAt)
        .order_by_asc(entity::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
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
