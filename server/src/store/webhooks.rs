//! Outbound webhooks: endpoints, messages written in their change's transaction, and the
//! deliveries that workers lease, attempt and settle.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, DbBackend, DbErr, EntityTrait, ExprTrait,
    FromQueryResult, QueryFilter, QueryOrder, QuerySelect, RuntimeErr,
    sea_query::{Alias, Expr, LockBehavior, LockType, Query, SelectStatement},
    sqlx::postgres::PgListener,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    StoreError, StoreResult,
    entity::{
        webhook_attempt as attempt, webhook_delivery as delivery, webhook_endpoint as endpoint,
        webhook_message as message,
    },
};
use crate::{
    crypto::WrappedKey,
    domain::webhook::{WebhookDeliveryStatus, WebhookEndpoint, WebhookEventType},
};

fn endpoint_to_domain(model: endpoint::Model) -> StoreResult<WebhookEndpoint> {
    let corrupt = |column| StoreError::Corrupt { table: "webhook_endpoint", column };
    let types: Vec<String> = serde_json::from_value(model.event_types).map_err(|_| corrupt("event_types"))?;
    Ok(WebhookEndpoint {
        id: model.id,
        url: model.url.parse().map_err(|_| corrupt("url"))?,
        description: model.description,
        event_types: types
            .iter()
            .map(|kind| kind.parse().map_err(|_| corrupt("event_types")))
            .collect::<Result<_, _>>()?,
        enabled: model.enabled,
        disabled_reason: model.disabled_reason,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn event_types_json(endpoint: &WebhookEndpoint) -> Value {
    json!(endpoint.event_types.iter().map(|kind| kind.as_str()).collect::<Vec<_>>())
}

pub async fn insert_endpoint(
    conn: &impl ConnectionTrait,
    endpoint: &WebhookEndpoint,
    secret: &WrappedKey,
) -> StoreResult<()> {
    endpoint::Entity::insert(endpoint::ActiveModel {
        id: Set(endpoint.id),
        url: Set(endpoint.url.to_string()),
        description: Set(endpoint.description.clone()),
        event_types: Set(event_types_json(endpoint)),
        secret_key_id: Set(secret.master_key_id.clone()),
        secret_wrapped: Set(secret.wrapped.clone()),
        enabled: Set(endpoint.enabled),
        disabled_reason: Set(endpoint.disabled_reason.clone()),
        created_at: Set(endpoint.created_at),
        updated_at: Set(endpoint.updated_at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Saves everything but the secret and the creation time.
pub async fn update_endpoint(conn: &impl ConnectionTrait, endpoint: &WebhookEndpoint) -> StoreResult<bool> {
    let result = endpoint::Entity::update_many()
        .col_expr(endpoint::Column::Url, Expr::value(endpoint.url.to_string()))
        .col_expr(endpoint::Column::Description, Expr::value(endpoint.description.clone()))
        .col_expr(endpoint::Column::EventTypes, Expr::value(event_types_json(endpoint)))
        .col_expr(endpoint::Column::Enabled, Expr::value(endpoint.enabled))
        .col_expr(endpoint::Column::DisabledReason, Expr::value(endpoint.disabled_reason.clone()))
        .col_expr(endpoint::Column::UpdatedAt, Expr::value(endpoint.updated_at))
        .filter(endpoint::Column::Id.eq(endpoint.id))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

pub async fn delete_endpoint(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<bool> {
    Ok(endpoint::Entity::delete_by_id(id).exec(conn).await?.rows_affected == 1)
}

pub async fn endpoint(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<WebhookEndpoint>> {
    endpoint::Entity::find_by_id(id).one(conn).await?.map(endpoint_to_domain).transpose()
}

pub async fn endpoints(conn: &impl ConnectionTrait) -> StoreResult<Vec<WebhookEndpoint>> {
    endpoint::Entity::find()
        .order_by_asc(endpoint::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(endpoint_to_domain)
        .collect()
}

pub async fn endpoint_secret(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<WrappedKey>> {
    Ok(endpoint::Entity::find_by_id(id)
        .one(conn)
        .await?
        .map(|model| WrappedKey { master_key_id: model.secret_key_id, wrapped: model.secret_wrapped }))
}

/// One webhook to write: what it tells about, the key that orders it among its contact's
/// webhooks (the contact id), and its `data`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub event_type: WebhookEventType,
    pub ordering_key: String,
    pub data: Value,
}

/// Writes the webhook of a change, and a delivery to each enabled endpoint that wants its type,
/// in the caller's transaction; nothing when no endpoint wants it. `ordering_key` (the contact)
/// keeps one contact's webhooks in order per endpoint.
pub async fn record(
    conn: &impl ConnectionTrait,
    event_type: WebhookEventType,
    ordering_key: &str,
    data: Value,
    at: DateTime<Utc>,
) -> StoreResult<Option<Uuid>> {
    let message = NewMessage { event_type, ordering_key: ordering_key.to_owned(), data };
    Ok(record_all(conn, vec![message], at).await?.into_iter().next())
}

/// Like [`record`] for many webhooks at once (a batch of events, a round of sends), in a few
/// statements; the ids of the messages some endpoint wanted, in order.
pub async fn record_all(
    conn: &impl ConnectionTrait,
    messages: Vec<NewMessage>,
    at: DateTime<Utc>,
) -> StoreResult<Vec<Uuid>> {
    if messages.is_empty() {
        return Ok(Vec::new());
    }
    record_for(conn, &endpoints(conn).await?, messages, at).await
}

/// Like [`record_all`], to `endpoints` as the caller read them in this transaction: callers that
/// would build many messages first check that some endpoint wants them.
pub async fn record_for(
    conn: &impl ConnectionTrait,
    endpoints: &[WebhookEndpoint],
    messages: Vec<NewMessage>,
    at: DateTime<Utc>,
) -> StoreResult<Vec<Uuid>> {
    let mut ids = Vec::new();
    let mut message_rows = Vec::new();
    let mut delivery_rows = Vec::new();
    let timestamp = at.to_rfc3339();
    for message in messages {
        let targets = endpoints.iter().filter(|endpoint| endpoint.wants(message.event_type));
        let mut targets = targets.peekable();
        if targets.peek().is_none() {
            continue;
        }
        let id = Uuid::now_v7();
        ids.push(id);
        for endpoint in targets {
            delivery_rows.push(new_delivery(Uuid::now_v7(), id, endpoint.id, &message.ordering_key, at));
        }
        let body = json!({ "type": message.event_type.as_str(), "timestamp": timestamp, "data": message.data });
        message_rows.push(message::ActiveModel {
            id: Set(id),
            event_type: Set(message.event_type.as_str().to_owned()),
            body: Set(body.to_string()),
            created_at: Set(at),
        });
    }
    // Rows per statement stay well under SQLite's limit of bound parameters.
    for chunk in message_rows.chunks(ROWS_PER_INSERT) {
        message::Entity::insert_many(chunk.to_vec()).exec_without_returning(conn).await?;
    }
    for chunk in delivery_rows.chunks(ROWS_PER_INSERT) {
        delivery::Entity::insert_many(chunk.to_vec()).exec_without_returning(conn).await?;
    }
    if !delivery_rows.is_empty() && conn.get_database_backend() == DbBackend::Postgres {
        conn.execute_unprepared(&format!("NOTIFY {WRITTEN}")).await?;
    }
    Ok(ids)
}

/// The PostgreSQL channel on which a commit that wrote deliveries wakes the webhook workers.
const WRITTEN: &str = "rapport_webhooks";

/// Wakes idle webhook workers as soon as a transaction that wrote deliveries commits, in this
/// process or another. PostgreSQL delivers a NOTIFY only when its transaction commits (and once,
/// however often it was sent in it), so a worker never wakes to a row it cannot see yet. SQLite
/// has no such channel; its idle workers look for due deliveries instead (`any_due`).
pub struct WrittenListener(PgListener);

impl WrittenListener {
    /// None on SQLite.
    pub async fn connect(conn: &DatabaseConnection) -> StoreResult<Option<Self>> {
        if conn.get_database_backend() != DbBackend::Postgres {
            return Ok(None);
        }
        let mut listener =
            PgListener::connect_with(conn.get_postgres_connection_pool()).await.map_err(listener_error)?;
        listener.listen(WRITTEN).await.map_err(listener_error)?;
        Ok(Some(Self(listener)))
    }

    /// Waits for the next commit that wrote deliveries. Err when the connection is gone for good
    /// (the pool was closed); a lost connection is re-established meanwhile.
    pub async fn written(&mut self) -> StoreResult<()> {
        self.0.recv().await.map(|_| ()).map_err(listener_error)
    }
}

fn listener_error(error: sea_orm::sqlx::Error) -> StoreError {
    StoreError::Database(DbErr::Conn(RuntimeErr::SqlxError(Arc::new(error))))
}

/// Rows per multi-row INSERT: a delivery row binds 12 parameters.
const ROWS_PER_INSERT: usize = 500;

fn new_delivery(
    id: Uuid,
    message_id: Uuid,
    endpoint_id: Uuid,
    ordering_key: &str,
    at: DateTime<Utc>,
) -> delivery::ActiveModel {
    delivery::ActiveModel {
        id: Set(id),
        message_id: Set(message_id),
        endpoint_id: Set(endpoint_id),
        ordering_key: Set(ordering_key.to_owned()),
        status: Set(WebhookDeliveryStatus::Pending.as_str().to_owned()),
        attempts: Set(0),
        next_attempt_at: Set(at),
        leased_until: Set(None),
        lease_holder: Set(None),
        last_status_code: Set(None),
        last_error: Set(None),
        delivered_at: Set(None),
        created_at: Set(at),
    }
}

/// A delivery in a worker's hands, with what it sends.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub id: Uuid,
    pub message_id: Uuid,
    pub endpoint_id: Uuid,
    pub attempts: u32,
    pub body: String,
}

/// The deliveries a worker may take at `now`, soonest first: pending, due, not leased, to an
/// enabled endpoint (a disabled one's backlog waits for it without standing in others' way), and
/// not waiting behind an earlier pending one with their endpoint and ordering key, so that one
/// contact's webhooks arrive in order.
fn due(now: DateTime<Utc>, limit: u64) -> SelectStatement {
    let pending = WebhookDeliveryStatus::Pending.as_str();
    let earlier = Alias::new("earlier");
    let mut blocking = Query::select();
    blocking
        .expr(Expr::val(1))
        .from_as(delivery::Entity, earlier.clone())
        .and_where(
            Expr::col((earlier.clone(), delivery::Column::EndpointId))
                .equals((delivery::Entity, delivery::Column::EndpointId)),
        )
        .and_where(
            Expr::col((earlier.clone(), delivery::Column::OrderingKey))
                .equals((delivery::Entity, delivery::Column::OrderingKey)),
        )
        .and_where(Expr::col((earlier.clone(), delivery::Column::Status)).eq(pending))
        .and_where(Expr::col((earlier, delivery::Column::Id)).lt(Expr::col((delivery::Entity, delivery::Column::Id))));
    let mut enabled = Query::select();
    enabled.column(endpoint::Column::Id).from(endpoint::Entity).and_where(endpoint::Column::Enabled.eq(true));
    let mut due = Query::select();
    due.column(delivery::Column::Id)
        .from(delivery::Entity)
        .and_where(delivery::Column::Status.eq(pending))
        .and_where(delivery::Column::NextAttemptAt.lte(now))
        .and_where(delivery::Column::EndpointId.in_subquery(enabled))
        .cond_where(
            Condition::any().add(delivery::Column::LeasedUntil.is_null()).add(delivery::Column::LeasedUntil.lt(now)),
        )
        .and_where(Expr::exists(blocking).not())
        .order_by(delivery::Column::NextAttemptAt, sea_orm::Order::Asc)
        .limit(limit);
    due
}

/// Whether `claim` would take a delivery at `now`. A read: on SQLite an idle worker asks this
/// often instead of claiming, which is a write and would queue for the one writer each time.
pub async fn any_due(conn: &impl ConnectionTrait, now: DateTime<Utc>) -> StoreResult<bool> {
    let mut probe = Query::select();
    probe.expr(Expr::exists(due(now, 1)));
    let row = conn.query_one(&probe).await?;
    let found: Option<bool> = row.map(|row| row.try_get_by_index(0)).transpose()?;
    Ok(found.unwrap_or(false))
}

/// Leases up to `limit` due deliveries (see `due`) to `holder` until `lease_until`.
pub async fn claim(
    conn: &impl ConnectionTrait,
    now: DateTime<Utc>,
    holder: Uuid,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<Claimed>> {
    let mut due = due(now, limit);
    // The SQLite query builder leaves this out; SQLite has one writer anyway.
    due.lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    let mut update = Query::update();
    update
        .table(delivery::Entity)
        .value(delivery::Column::LeasedUntil, lease_until)
        .value(delivery::Column::LeaseHolder, holder)
        .and_where(Expr::col(delivery::Column::Id).in_subquery(due))
        .returning_all();
    let rows = conn.query_all(&update).await?;
    let leased = rows.iter().map(|row| delivery::Model::from_query_result(row, "")).collect::<Result<Vec<_>, _>>()?;
    if leased.is_empty() {
        return Ok(Vec::new());
    }
    let bodies = message::Entity::find()
        .filter(message::Column::Id.is_in(leased.iter().map(|row| row.message_id)))
        .all(conn)
        .await?;
    let mut claimed = leased
        .into_iter()
        .map(|row| {
            let body = bodies
                .iter()
                .find(|message| message.id == row.message_id)
                .map(|message| message.body.clone())
                .ok_or(StoreError::Corrupt { table: "webhook_delivery", column: "message_id" })?;
            Ok(Claimed {
                id: row.id,
                message_id: row.message_id,
                endpoint_id: row.endpoint_id,
                attempts: u32::try_from(row.attempts).unwrap_or_default(),
                body,
            })
        })
        .collect::<StoreResult<Vec<_>>>()?;
    claimed.sort_by_key(|claimed| claimed.id);
    Ok(claimed)
}

/// One try at a delivery, as the log shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub id: Uuid,
    pub delivery_id: Uuid,
    pub attempted_at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub latency_ms: u32,
}

/// What became of a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    RetryAt(DateTime<Utc>),
    Failed,
}

/// Logs the attempt and settles the delivery, releasing its lease, if `holder` still holds it;
/// whether it did. One that does not (its lease ran out and another worker took the delivery)
/// leaves it to that worker.
pub async fn settle(
    conn: &impl ConnectionTrait,
    holder: Uuid,
    attempt_made: &Attempt,
    outcome: Outcome,
) -> StoreResult<bool> {
    attempt::Entity::insert(attempt::ActiveModel {
        id: Set(attempt_made.id),
        delivery_id: Set(attempt_made.delivery_id),
        attempted_at: Set(attempt_made.attempted_at),
        status_code: Set(attempt_made.status_code.map(i32::from)),
        error: Set(attempt_made.error.clone()),
        latency_ms: Set(i32::try_from(attempt_made.latency_ms).unwrap_or(i32::MAX)),
    })
    .exec_without_returning(conn)
    .await?;
    let (status, next_attempt_at, delivered_at) = match outcome {
        Outcome::Delivered => {
            (WebhookDeliveryStatus::Delivered, attempt_made.attempted_at, Some(attempt_made.attempted_at))
        }
        Outcome::RetryAt(at) => (WebhookDeliveryStatus::Pending, at, None),
        Outcome::Failed => (WebhookDeliveryStatus::Failed, attempt_made.attempted_at, None),
    };
    let settled = delivery::Entity::update_many()
        .col_expr(delivery::Column::Status, Expr::value(status.as_str()))
        .col_expr(delivery::Column::Attempts, Expr::col(delivery::Column::Attempts).add(1))
        .col_expr(delivery::Column::NextAttemptAt, Expr::value(next_attempt_at))
        .col_expr(delivery::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::LeaseHolder, Expr::value(Option::<Uuid>::None))
        .col_expr(delivery::Column::LastStatusCode, Expr::value(attempt_made.status_code.map(i32::from)))
        .col_expr(delivery::Column::LastError, Expr::value(attempt_made.error.clone()))
        .col_expr(delivery::Column::DeliveredAt, Expr::value(delivered_at))
        .filter(delivery::Column::Id.eq(attempt_made.delivery_id))
        .filter(delivery::Column::LeaseHolder.eq(holder))
        .filter(delivery::Column::Status.eq(WebhookDeliveryStatus::Pending.as_str()))
        .exec(conn)
        .await?;
    Ok(settled.rows_affected == 1)
}

/// Extends the leases `holder` still has to `lease_until`: a round that posts to slow receivers
/// keeps its deliveries for as long as it works on them, and no longer than a lease once it
/// stops (its process died).
pub async fn renew(conn: &impl ConnectionTrait, holder: Uuid, lease_until: DateTime<Utc>) -> StoreResult<()> {
    delivery::Entity::update_many()
        .col_expr(delivery::Column::LeasedUntil, Expr::value(lease_until))
        .filter(delivery::Column::LeaseHolder.eq(holder))
        .filter(delivery::Column::Status.eq(WebhookDeliveryStatus::Pending.as_str()))
        .exec(conn)
        .await?;
    Ok(())
}

/// Gives back the leases `holder` has of `ids` without an attempt (the endpoint was deleted or
/// disabled meanwhile).
pub async fn release(conn: &impl ConnectionTrait, holder: Uuid, ids: &[Uuid]) -> StoreResult<()> {
    if ids.is_empty() {
        return Ok(());
    }
    delivery::Entity::update_many()
        .col_expr(delivery::Column::LeasedUntil, Expr::value(Option::<DateTime<Utc>>::None))
        .col_expr(delivery::Column::LeaseHolder, Expr::value(Option::<Uuid>::None))
        .filter(delivery::Column::Id.is_in(ids.iter().copied()))
        .filter(delivery::Column::LeaseHolder.eq(holder))
        .exec(conn)
        .await?;
    Ok(())
}

/// Disables an enabled endpoint, saying why; false if it was not enabled (an admin or another
/// worker got there first). Only these columns: what an admin changed meanwhile stays.
pub async fn disable_endpoint(
    conn: &impl ConnectionTrait,
    id: Uuid,
    reason: &str,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    let result = endpoint::Entity::update_many()
        .col_expr(endpoint::Column::Enabled, Expr::value(false))
        .col_expr(endpoint::Column::DisabledReason, Expr::value(reason))
        .col_expr(endpoint::Column::UpdatedAt, Expr::value(at))
        .filter(endpoint::Column::Id.eq(id))
        .filter(endpoint::Column::Enabled.eq(true))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

/// A delivery as admins read it in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: Uuid,
    pub message_id: Uuid,
    pub endpoint_id: Uuid,
    pub event_type: String,
    pub status: WebhookDeliveryStatus,
    pub attempts: u32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// An endpoint's deliveries, newest first, optionally of one status.
pub async fn deliveries(
    conn: &impl ConnectionTrait,
    endpoint_id: Uuid,
    status: Option<WebhookDeliveryStatus>,
    limit: u64,
) -> StoreResult<Vec<DeliveryRecord>> {
    let mut query = delivery::Entity::find().filter(delivery::Column::EndpointId.eq(endpoint_id));
    if let Some(status) = status {
        query = query.filter(delivery::Column::Status.eq(status.as_str()));
    }
    let rows = query.order_by_desc(delivery::Column::Id).limit(limit).all(conn).await?;
    let types = message::Entity::find()
        .filter(message::Column::Id.is_in(rows.iter().map(|row| row.message_id)))
        .all(conn)
        .await?;
    rows.into_iter()
        .map(|row| {
            let corrupt = |column| StoreError::Corrupt { table: "webhook_delivery", column };
            Ok(DeliveryRecord {
                id: row.id,
                message_id: row.message_id,
                endpoint_id: row.endpoint_id,
                event_type: types
                    .iter()
                    .find(|message| message.id == row.message_id)
                    .map(|message| message.event_type.clone())
                    .ok_or(corrupt("message_id"))?,
                status: row.status.parse().map_err(|_| corrupt("status"))?,
                attempts: u32::try_from(row.attempts).map_err(|_| corrupt("attempts"))?,
                next_attempt_at: row.next_attempt_at,
                last_status_code: row.last_status_code.and_then(|code| u16::try_from(code).ok()),
                last_error: row.last_error,
                delivered_at: row.delivered_at,
                created_at: row.created_at,
            })
        })
        .collect()
}

pub async fn attempts(conn: &impl ConnectionTrait, delivery_ids: &[Uuid]) -> StoreResult<Vec<Attempt>> {
    Ok(attempt::Entity::find()
        .filter(attempt::Column::DeliveryId.is_in(delivery_ids.iter().copied()))
        .order_by_asc(attempt::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(|row| Attempt {
            id: row.id,
            delivery_id: row.delivery_id,
            attempted_at: row.attempted_at,
            status_code: row.status_code.and_then(|code| u16::try_from(code).ok()),
            error: row.error,
            latency_ms: u32::try_from(row.latency_ms).unwrap_or_default(),
        })
        .collect())
}

/// Sends a delivery's message to its endpoint again, as a new delivery due now.
pub async fn replay(conn: &impl ConnectionTrait, delivery_id: Uuid, at: DateTime<Utc>) -> StoreResult<Option<Uuid>> {
    let Some(original) = delivery::Entity::find_by_id(delivery_id).one(conn).await? else {
        return Ok(None);
    };
    let id = Uuid::now_v7();
    let again = new_delivery(id, original.message_id, original.endpoint_id, &original.ordering_key, at);
    delivery::Entity::insert(again).exec_without_returning(conn).await?;
    Ok(Some(id))
}
