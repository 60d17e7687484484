//! The audit tables: the chain's head, which every writer locks before appending, the entries,
//! read in seq order for verification and newest first for the audit log.

use crate::domain::page::{Direction, Page, PageRequest};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};

use super::{
    StoreError, StoreResult,
    entity::{audit_entry as entry, audit_head as head},
};
use crate::domain::audit::{AuditEntry, AuditFilter};

const HEAD_ID: i32 = 1;

/// The last entry's seq and hash, locked until the transaction ends (`FOR UPDATE` on
/// PostgreSQL; SQLite's write transactions are serialised already by `BEGIN IMMEDIATE`).
pub async fn lock_head(conn: &impl ConnectionTrait) -> StoreResult<(i64, String)> {
    let row = head::Entity::find_by_id(HEAD_ID)
        .lock_exclusive()
        .one(conn)
        .await?
        .ok_or(StoreError::Corrupt { table: "audit_head", column: "id" })?;
    Ok((row.seq, row.hash))
}

/// The head without locking it, for verification.
pub async fn head(conn: &impl ConnectionTrait) -> StoreResult<(i64, String)> {
    let row = head::Entity::find_by_id(HEAD_ID)
        .one(conn)
        .await?
        .ok_or(StoreError::Corrupt { table: "audit_head", column: "id" })?;
    Ok((row.seq, row.hash))
}

/// Appends `entry` and moves the head onto it; the caller holds the head's lock.
pub async fn append(conn: &impl ConnectionTrait, entry: &AuditEntry) -> StoreResult<()> {
    entry::Entity::insert(to_active(entry)).exec_without_returning(conn).await?;
    head::Entity::update(head::ActiveModel { id: Set(HEAD_ID), seq: Set(entry.seq), hash: Set(entry.hash.clone()) })
        .exec(conn)
        .await?;
    Ok(())
}

/// Up to `limit` entries after `after_seq`, in chain order.
pub async fn batch(conn: &impl ConnectionTrait, after_seq: i64, limit: u64) -> StoreResult<Vec<AuditEntry>> {
    Ok(entry::Entity::find()
        .filter(entry::Column::Seq.gt(after_seq))
        .order_by_asc(entry::Column::Seq)
        .limit(limit)
        .all(conn)
        .await?
        .into_iter()
        .map(to_domain)
        .collect())
}

/// Every entry about one target, in chain order.
pub async fn about(conn: &impl ConnectionTrait, target_kind: &str, target_id: &str) -> StoreResult<Vec<AuditEntry>> {
    Ok(entry::Entity::find()
        .filter(entry::Column::TargetKind.eq(target_kind))
        .filter(entry::Column::TargetId.eq(target_id))
        .order_by_asc(entry::Column::Seq)
        .all(conn)
        .await?
        .into_iter()
        .map(to_domain)
        .collect())
}

/// A page of the audit log, newest first: "after" a cursor means smaller seqs.
pub async fn page(
    conn: &impl ConnectionTrait,
    filter: &AuditFilter,
    request: &PageRequest<i64>,
) -> StoreResult<Page<AuditEntry>> {
    let mut query = entry::Entity::find();
    let text_conditions = [
        (entry::Column::TargetKind, &filter.target_kind),
        (entry::Column::TargetId, &filter.target_id),
        (entry::Column::ActorKind, &filter.actor_kind),
        (entry::Column::ActorId, &filter.actor_id),
        (entry::Column::Action, &filter.action),
    ];
    for (column, value) in text_conditions {
        if let Some(value) = value {
            query = query.filter(column.eq(value.as_str()));
        }
    }
    if let Some(from) = filter.from {
        query = query.filter(entry::Column::OccurredAt.gte(from));
    }
    if let Some(to) = filter.to {
        query = query.filter(entry::Column::OccurredAt.lt(to));
    }
    if let Some(after) = request.after {
        query = query.filter(entry::Column::Seq.lt(after));
    }
    if let Some(before) = request.before {
        query = query.filter(entry::Column::Seq.gt(before));
    }
    query = match request.direction {
        Direction::Forward => query.order_by_desc(entry::Column::Seq),
        Direction::Backward => query.order_by_asc(entry::Column::Seq),
    };
    let rows = query.limit(request.limit + 1).all(conn).await?;
    Ok(Page::from_rows(rows.into_iter().map(to_domain).collect(), request.limit, request.direction))
}

fn to_active(entry: &AuditEntry) -> entry::ActiveModel {
    entry::ActiveModel {
        seq: Set(entry.seq),
        id: Set(entry.id),
        occurred_at: Set(entry.occurred_at),
        actor_kind: Set(entry.actor_kind.clone()),
        actor_id: Set(entry.actor_id.clone()),
        action: Set(entry.action.clone()),
        target_kind: Set(entry.target_kind.clone()),
        target_id: Set(entry.target_id.clone()),
        changes: Set(entry.changes.clone()),
        request_id: Set(entry.request_id.clone()),
        ip: Set(entry.ip.clone()),
        prev_hash: Set(entry.prev_hash.clone()),
        hash: Set(entry.hash.clone()),
    }
}

fn to_domain(model: entry::Model) -> AuditEntry {
    AuditEntry {
        seq: model.seq,
        id: model.id,
        occurred_at: model.occurred_at,
        actor_kind: model.actor_kind,
        actor_id: model.actor_id,
        action: model.action,
        target_kind: model.target_kind,
        target_id: model.target_id,
        changes: model.changes,
        request_id: model.request_id,
        ip: model.ip,
        prev_hash: model.prev_hash,
        hash: model.hash,
    }
}
