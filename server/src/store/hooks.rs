//! Inbound webhook sources and the `webhook-id`s they recently sent, claimed while handled.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    sea_query::{Expr, OnConflict},
};

use super::{
    StoreError, StoreResult,
    entity::{inbound_webhook as seen, webhook_source as source},
};
use crate::{
    crypto::WrappedKey,
    domain::{key::Key, webhook::WebhookSource},
};

fn to_domain(model: source::Model) -> StoreResult<WebhookSource> {
    let corrupt = |column| StoreError::Corrupt { table: "webhook_source", column };
    Ok(WebhookSource {
        key: Key::parse(&model.key).map_err(|_| corrupt("key"))?,
        kind: model.kind.parse().map_err(|_| corrupt("kind"))?,
        created_at: model.created_at,
    })
}

pub async fn insert(conn: &impl ConnectionTrait, hook: &WebhookSource, secret: &WrappedKey) -> StoreResult<()> {
    source::Entity::insert(source::ActiveModel {
        key: Set(hook.key.as_str().to_owned()),
        kind: Set(hook.kind.as_str().to_owned()),
        secret_key_id: Set(secret.master_key_id.clone()),
        secret_wrapped: Set(secret.wrapped.clone()),
        created_at: Set(hook.created_at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

pub async fn delete(conn: &impl ConnectionTrait, key: &Key) -> StoreResult<bool> {
    Ok(source::Entity::delete_by_id(key.as_str()).exec(conn).await?.rows_affected == 1)
}

pub async fn all(conn: &impl ConnectionTrait) -> StoreResult<Vec<WebhookSource>> {
    source::Entity::find().order_by_asc(source::Column::Key).all(conn).await?.into_iter().map(to_domain).collect()
}

/// The source and its wrapped secret.
pub async fn find(conn: &impl ConnectionTrait, key: &Key) -> StoreResult<Option<(WebhookSource, WrappedKey)>> {
    let Some(model) = source::Entity::find_by_id(key.as_str()).one(conn).await? else {
        return Ok(None);
    };
    let wrapped = WrappedKey { master_key_id: model.secret_key_id.clone(), wrapped: model.secret_wrapped.clone() };
    Ok(Some((to_domain(model)?, wrapped)))
}

/// What became of a claim on a `webhook-id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// The caller handles the request, and then completes or forgets the id.
    Taken,
    /// A request with this id was handled: this one is a replay.
    Completed,
    /// A request with this id is being handled, by a holder that may still finish.
    Held,
}

/// Claims `webhook_id` from `source_key` at `at` (at storage precision: the claim's time tells
/// its holder's later writes from another's): taken if it is new, or if its claim was made
/// before `stale_before` and never completed (its holder died). Ids older than `forget_before`
/// are forgotten first: their timestamps no longer pass.
pub async fn claim(
    conn: &impl ConnectionTrait,
    source_key: &Key,
    webhook_id: &str,
    at: DateTime<Utc>,
    stale_before: DateTime<Utc>,
    forget_before: DateTime<Utc>,
) -> StoreResult<Claim> {
    seen::Entity::delete_many().filter(seen::Column::ReceivedAt.lt(forget_before)).exec(conn).await?;
    let inserted = seen::Entity::insert(seen::ActiveModel {
        source_key: Set(source_key.as_str().to_owned()),
        webhook_id: Set(webhook_id.to_owned()),
        received_at: Set(at),
        completed_at: Set(None),
    })
    .on_conflict(OnConflict::columns([seen::Column::SourceKey, seen::Column::WebhookId]).do_nothing().to_owned())
    .exec_without_returning(conn)
    .await?;
    if inserted == 1 {
        return Ok(Claim::Taken);
    }
    let taken_over = seen::Entity::update_many()
        .col_expr(seen::Column::ReceivedAt, Expr::value(at))
        .filter(seen::Column::SourceKey.eq(source_key.as_str()))
        .filter(seen::Column::WebhookId.eq(webhook_id))
        .filter(seen::Column::CompletedAt.is_null())
        .filter(seen::Column::ReceivedAt.lt(stale_before))
        .exec(conn)
        .await?;
    if taken_over.rows_affected == 1 {
        return Ok(Claim::Taken);
    }
    let completed = seen::Entity::find_by_id((source_key.as_str().to_owned(), webhook_id.to_owned()))
        .one(conn)
        .await?
        .is_some_and(|row| row.completed_at.is_some());
    Ok(if completed { Claim::Completed } else { Claim::Held })
}

/// Marks an id claimed `claimed_at` handled: a request with it is a replay from now on. A claim
/// taken over since (this holder was too slow) is the new holder's to complete.
pub async fn complete(
    conn: &impl ConnectionTrait,
    source_key: &Key,
    webhook_id: &str,
    claimed_at: DateTime<Utc>,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    seen::Entity::update_many()
        .col_expr(seen::Column::CompletedAt, Expr::value(at))
        .filter(seen::Column::SourceKey.eq(source_key.as_str()))
        .filter(seen::Column::WebhookId.eq(webhook_id))
        .filter(seen::Column::ReceivedAt.eq(claimed_at))
        .exec(conn)
        .await?;
    Ok(())
}

/// Forgets an id claimed `claimed_at` whose request failed, so that the sender's retry is taken;
/// a claim taken over since is left to its new holder.
pub async fn forget(
    conn: &impl ConnectionTrait,
    source_key: &Key,
    webhook_id: &str,
    claimed_at: DateTime<Utc>,
) -> StoreResult<()> {
    seen::Entity::delete_many()
        .filter(seen::Column::SourceKey.eq(source_key.as_str()))
        .filter(seen::Column::WebhookId.eq(webhook_id))
        .filter(seen::Column::ReceivedAt.eq(claimed_at))
        .filter(seen::Column::CompletedAt.is_null())
        .exec(conn)
        .await?;
    Ok(())
}
