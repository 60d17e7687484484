//! The mail outbox: sends written in their cause's transaction, claimed by delivery workers
//! under a lease, and settled in as few statements as their outcomes allow. The suppression list
//! lives here too: it is read on every claim.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, ExprTrait, FromQueryResult, QueryFilter, QueryOrder,
    QuerySelect, QueryTrait,
    sea_query::{Expr, LockBehavior, LockType, OnConflict, Query, SelectStatement},
};
use uuid::Uuid;

use super::{
    StoreError, StoreResult,
    entity::{outbox as entity, suppression},
};
use crate::domain::{
    contact::{ContactId, EmailAddress},
    delivery::{Send, SendKey, SendStatus, Suppression, SuppressionReason},
    event::EventProperties,
    page::{Direction, Page, PageRequest},
};

/// Rows per INSERT: well under SQLite's limit of bound parameters.
const ROWS_PER_STATEMENT: usize = 400;

/// Writes sends whose key is new and returns, for each send given (in order), the stored row and
/// whether it was written now. A send whose key exists is left as it was: a repeated cause finds
/// its earlier send.
pub async fn enqueue(conn: &impl ConnectionTrait, sends: &[Send]) -> StoreResult<Vec<(Send, bool)>> {
    let mut created = std::collections::HashSet::new();
    for chunk in sends.chunks(ROWS_PER_STATEMENT) {
        let mut insert = Query::insert();
        insert
            .into_table(entity::Entity)
            .columns([
                entity::Column::Id,
                entity::Column::SendKey,
                entity::Column::EmailId,
                entity::Column::EmailVersionId,
                entity::Column::EmailType,
                entity::Column::ContactId,
                entity::Column::Recipient,
                entity::Column::Context,
                entity::Column::Status,
                entity::Column::Attempts,
                entity::Column::NextAttemptAt,
                entity::Column::MessageId,
                entity::Column::CreatedAt,
                entity::Column::UpdatedAt,
            ])
            .on_conflict(OnConflict::column(entity::Column::SendKey).do_nothing().to_owned())
            .returning_col(entity::Column::Id);
        for send in chunk {
            insert.values_panic([
                send.id.into(),
                send.send_key.as_str().into(),
                send.email_id.into(),
                send.email_version_id.into(),
                send.email_type.as_str().into(),
                send.contact_id.map(|id| id.as_uuid()).into(),
                send.recipient.as_ref().map(|address| address.as_str().to_owned()).into(),
                send.context.clone().map(EventProperties::into_value).into(),
                send.status.as_str().into(),
                send.attempts.into(),
                send.next_attempt_at.into(),
                send.message_id.clone().into(),
                send.created_at.into(),
                send.updated_at.into(),
            ]);
        }
        for row in conn.query_all(&insert).await? {
            created.insert(row.try_get::<Uuid>("", "id")?);
        }
    }
    let repeated: Vec<&str> =
        sends.iter().filter(|send| !created.contains(&send.id)).map(|send| send.send_key.as_str()).collect();
    let mut existing: HashMap<String, Send> = HashMap::new();
    for chunk in repeated.chunks(ROWS_PER_STATEMENT) {
        for model in
            entity::Entity::find().filter(entity::Column::SendKey.is_in(chunk.iter().copied())).all(conn).await?
        {
            existing.insert(model.send_key.clone(), to_domain(model)?);
        }
    }
    sends
        .iter()
        .map(|send| {
            if created.contains(&send.id) {
                Ok((send.clone(), true))
            } else {
                let stored = existing.get(send.send_key.as_str()).cloned();
                stored.map(|stored| (stored, false)).ok_or(StoreError::Corrupt { table: "outbox", column: "send_key" })
            }
        })
        .collect()
}

/// The sends still waiting for a message, as SQL: the condition of the partial index
/// `outbox_waiting_idx`, with the same literals. SQLite uses such an index only for a query that
/// carries its terms, and PostgreSQL's generic plans only when the values are not parameters.
pub const WAITING: &str = "status IN ('queued', 'deferred')";
/// The sends that are settled, as SQL: the condition of `outbox_settled_idx`, likewise. Partial
/// so that claims, which ask for waiting statuses, never take it for the index of waiting sends.
const SETTLED: &str = "status NOT IN ('queued', 'deferred')";

/// The first `limit` sends due at `now` and leased to nobody alive, in the order they fell due:
/// the first rows of `outbox_waiting_idx`, however long the queue behind them.
pub fn due(now: DateTime<Utc>, limit: u64) -> SelectStatement {
    let mut due = Query::select();
    due.column(entity::Column::Id)
        .from(entity::Entity)
        .and_where(Expr::cust(WAITING))
        .and_where(entity::Column::NextAttemptAt.lte(now))
        .cond_where(
            Condition::any().add(entity::Column::LeaseExpiresAt.is_null()).add(entity::Column::LeaseExpiresAt.lt(now)),
        )
        .order_by(entity::Column::NextAttemptAt, sea_orm::Order::Asc)
        .order_by(entity::Column::Id, sea_orm::Order::Asc)
        .limit(limit)
        // The SQLite query builder leaves this out.
        .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
    due
}

/// Leases up to `limit` due sends to `owner` until `lease_until` and returns them. Rows leased
/// to another live worker are skipped, without waiting for its lock on PostgreSQL (`SKIP
/// LOCKED`); SQLite has a single writer, so its claims simply take turns.
pub async fn claim(
    conn: &impl ConnectionTrait,
    owner: Uuid,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: u64,
) -> StoreResult<Vec<Send>> {
    let mut update = Query::update();
    update
        .table(entity::Entity)
        .value(entity::Column::LeaseOwner, owner)
        .value(entity::Column::LeaseExpiresAt, lease_until)
        .and_where(Expr::col(entity::Column::Id).in_subquery(due(now, limit)))
        .returning_all();
    let rows = conn.query_all(&update).await?;
    let mut claimed = rows
        .iter()
        .map(|row| entity::Model::from_query_result(row, "").map_err(StoreError::from).and_then(to_domain))
        .collect::<StoreResult<Vec<_>>>()?;
    claimed.sort_by_key(|send| (send.next_attempt_at, send.id));
    Ok(claimed)
}

/// How one claimed send ended this time round.
#[derive(Debug, Clone, PartialEq)]
pub struct Settlement {
    pub id: Uuid,
    pub status: SendStatus,
    /// Whether the server was asked (counts as an attempt).
    pub attempted: bool,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub detail: Option<String>,
}

/// What makes settlements alike: status, whether attempted, next attempt, detail.
type SettlementKind<'a> = (SendStatus, bool, Option<DateTime<Utc>>, Option<&'a str>);

/// Records outcomes of sends leased to `owner` and releases them. Outcomes alike (same status,
/// detail and next attempt: every message sent, say) are written in one statement.
pub async fn settle(
    conn: &impl ConnectionTrait,
    owner: Uuid,
    now: DateTime<Utc>,
    settlements: &[Settlement],
) -> StoreResult<()> {
    let mut groups: HashMap<SettlementKind<'_>, Vec<Uuid>> = HashMap::new();
    for settlement in settlements {
        groups
            .entry((settlement.status, settlement.attempted, settlement.next_attempt_at, settlement.detail.as_deref()))
            .or_default()
            .push(settlement.id);
    }
    for ((status, attempted, next_attempt_at, detail), ids) in groups {
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut update = Query::update();
            update
                .table(entity::Entity)
                .value(entity::Column::Status, status.as_str())
                .value(entity::Column::Detail, detail.map(str::to_owned))
                .value(entity::Column::LeaseOwner, Option::<Uuid>::None)
                .value(entity::Column::LeaseExpiresAt, Option::<DateTime<Utc>>::None)
                .value(entity::Column::UpdatedAt, now)
                .and_where(entity::Column::Id.is_in(chunk.iter().copied()))
                .and_where(entity::Column::LeaseOwner.eq(owner));
            if attempted {
                update.value(entity::Column::Attempts, Expr::col(entity::Column::Attempts).add(1));
            }
            if let Some(at) = next_attempt_at {
                update.value(entity::Column::NextAttemptAt, at);
            }
            if status == SendStatus::Sent {
                update.value(entity::Column::SentAt, now);
            }
            conn.execute(&update).await?;
        }
    }
    Ok(())
}

/// Renews `owner`'s leases on `ids`, the sends it is still working on.
pub async fn renew_leases(
    conn: &impl ConnectionTrait,
    owner: Uuid,
    ids: &[Uuid],
    lease_until: DateTime<Utc>,
) -> StoreResult<()> {
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        entity::Entity::update_many()
            .col_expr(entity::Column::LeaseExpiresAt, Expr::value(lease_until))
            .filter(entity::Column::Id.is_in(chunk.iter().copied()))
            .filter(entity::Column::LeaseOwner.eq(owner))
            .exec(conn)
            .await?;
    }
    Ok(())
}

/// Gives back sends leased to `owner` that it could not work on (a failed read, say), so that
/// they wait for the next claim instead of for the lease to run out.
pub async fn release(conn: &impl ConnectionTrait, owner: Uuid, ids: &[Uuid]) -> StoreResult<()> {
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        entity::Entity::update_many()
            .col_expr(entity::Column::LeaseOwner, Expr::value(Option::<Uuid>::None))
            .col_expr(entity::Column::LeaseExpiresAt, Expr::value(Option::<DateTime<Utc>>::None))
            .filter(entity::Column::Id.is_in(chunk.iter().copied()))
            .filter(entity::Column::LeaseOwner.eq(owner))
            .exec(conn)
            .await?;
    }
    Ok(())
}

pub async fn find(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<Send>> {
    entity::Entity::find_by_id(id).one(conn).await?.map(to_domain).transpose()
}

/// Which sends a delivery log lists.
#[derive(Debug, Clone, Default)]
pub struct SendFilter {
    pub contact_id: Option<ContactId>,
    pub email_id: Option<Uuid>,
    pub status: Option<SendStatus>,
}

/// Sends newest first; cursors are send ids (UUIDv7, so in creation order).
pub async fn page(
    conn: &impl ConnectionTrait,
    filter: &SendFilter,
    request: &PageRequest<Uuid>,
) -> StoreResult<Page<Send>> {
    let rows = log_query(filter, request).all(conn).await?;
    Page::from_rows(rows, request.limit, request.direction).try_map(to_domain)
}

/// The query of [`page`], as SQL.
pub fn log(filter: &SendFilter, request: &PageRequest<Uuid>) -> SelectStatement {
    log_query(filter, request).into_query()
}

fn log_query(filter: &SendFilter, request: &PageRequest<Uuid>) -> sea_orm::Select<entity::Entity> {
    let mut query = entity::Entity::find();
    if let Some(contact_id) = filter.contact_id {
        query = query.filter(entity::Column::ContactId.eq(contact_id.as_uuid()));
    }
    if let Some(email_id) = filter.email_id {
        query = query.filter(entity::Column::EmailId.eq(email_id));
    }
    if let Some(status) = filter.status {
        // The partial index that holds this status, named by its own condition.
        let held_by = if status.is_final() { SETTLED } else { WAITING };
        query = query.filter(entity::Column::Status.eq(status.as_str())).filter(Expr::cust(held_by));
    }
    if let Some(after) = request.after {
        query = query.filter(entity::Column::Id.lt(after));
    }
    if let Some(before) = request.before {
        query = query.filter(entity::Column::Id.gt(before));
    }
    match request.direction {
        Direction::Forward => query.order_by_desc(entity::Column::Id),
        Direction::Backward => query.order_by_asc(entity::Column::Id),
    }
    .limit(request.limit + 1)
}

/// Every send to one contact, oldest first, for its data export.
pub async fn all_of(conn: &impl ConnectionTrait, contact_id: ContactId) -> StoreResult<Vec<Send>> {
    entity::Entity::find()
        .filter(entity::Column::ContactId.eq(contact_id.as_uuid()))
        .order_by_asc(entity::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// Forgets a contact being erased: its sends go (what was mailed to whom is personal data too),
/// and its suppressions stay (by blind index, so that no mail reaches the address) without the
/// contact's id or the relay's words about it.
pub async fn forget_contact(conn: &impl ConnectionTrait, contact_id: ContactId) -> StoreResult<()> {
    entity::Entity::delete_many().filter(entity::Column::ContactId.eq(contact_id.as_uuid())).exec(conn).await?;
    suppression::Entity::update_many()
        .col_expr(suppression::Column::ContactId, Expr::value(Option::<Uuid>::None))
        .col_expr(suppression::Column::Detail, Expr::value(Option::<String>::None))
        .filter(suppression::Column::ContactId.eq(contact_id.as_uuid()))
        .exec(conn)
        .await?;
    Ok(())
}

/// Puts an address (by its blind index) on the list for `suppression.reason`; false if it was
/// there already for that reason (the first report is kept).
pub async fn suppress(conn: &impl ConnectionTrait, address_index: &str, entry: &Suppression) -> StoreResult<bool> {
    let mut insert = Query::insert();
    insert
        .into_table(suppression::Entity)
        .columns([
            suppression::Column::AddressIndex,
            suppression::Column::Reason,
            suppression::Column::ContactId,
            suppression::Column::Source,
            suppression::Column::Detail,
            suppression::Column::CreatedAt,
        ])
        .values_panic([
            address_index.into(),
            entry.reason.as_str().into(),
            entry.contact_id.map(|id| id.as_uuid()).into(),
            entry.source.as_str().into(),
            entry.detail.clone().into(),
            entry.created_at.into(),
        ])
        .on_conflict(
            OnConflict::columns([suppression::Column::AddressIndex, suppression::Column::Reason])
                .do_nothing()
                .to_owned(),
        );
    Ok(conn.execute(&insert).await?.rows_affected() == 1)
}

/// Removes an address from the list, for one reason or all; how many entries went.
pub async fn unsuppress(
    conn: &impl ConnectionTrait,
    address_index: &str,
    reason: Option<SuppressionReason>,
) -> StoreResult<u64> {
    let mut delete = suppression::Entity::delete_many().filter(suppression::Column::AddressIndex.eq(address_index));
    if let Some(reason) = reason {
        delete = delete.filter(suppression::Column::Reason.eq(reason.as_str()));
    }
    Ok(delete.exec(conn).await?.rows_affected)
}

/// The suppression entries of each of these addresses (blind indexes), in one statement.
pub async fn suppressions_of(
    conn: &impl ConnectionTrait,
    address_indexes: &[String],
) -> StoreResult<HashMap<String, Vec<Suppression>>> {
    let mut found: HashMap<String, Vec<Suppression>> = HashMap::new();
    for chunk in address_indexes.chunks(ROWS_PER_STATEMENT) {
        let rows = suppression::Entity::find()
            .filter(suppression::Column::AddressIndex.is_in(chunk.iter().cloned()))
            .all(conn)
            .await?;
        for row in rows {
            let index = row.address_index.clone();
            found.entry(index).or_default().push(suppression_to_domain(row)?);
        }
    }
    Ok(found)
}

fn suppression_to_domain(model: suppression::Model) -> StoreResult<Suppression> {
    Ok(Suppression {
        reason: model.reason.parse().map_err(|_| StoreError::Corrupt { table: "suppression", column: "reason" })?,
        contact_id: model.contact_id.map(ContactId::from_uuid),
        source: model.source,
        detail: model.detail,
        created_at: model.created_at,
    })
}

fn to_domain(model: entity::Model) -> StoreResult<Send> {
    let corrupt = |column| StoreError::Corrupt { table: "outbox", column };
    Ok(Send {
        id: model.id,
        send_key: SendKey::parse(&model.send_key).map_err(|_| corrupt("send_key"))?,
        email_id: model.email_id,
        email_version_id: model.email_version_id,
        email_type: model.email_type.parse().map_err(|_| corrupt("email_type"))?,
        contact_id: model.contact_id.map(ContactId::from_uuid),
        recipient: model
            .recipient
            .map(|raw| EmailAddress::parse(&raw).map_err(|_| corrupt("recipient")))
            .transpose()?,
        context: model
            .context
            .map(|value| EventProperties::parse(value).map_err(|_| corrupt("context")))
            .transpose()?,
        status: model.status.parse().map_err(|_| corrupt("status"))?,
        attempts: model.attempts,
        next_attempt_at: model.next_attempt_at,
        detail: model.detail,
        message_id: model.message_id,
        created_at: model.created_at,
        updated_at: model.updated_at,
        sent_at: model.sent_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_and_settled_part_the_statuses_where_they_become_final() {
        let waiting: Vec<String> = SendStatus::ALL
            .iter()
            .filter(|status| !status.is_final())
            .map(|status| format!("'{}'", status.as_str()))
            .collect();
        assert_eq!(WAITING, format!("status IN ({})", waiting.join(", ")));
        assert_eq!(SETTLED, format!("status NOT IN ({})", waiting.join(", ")));
    }
}
