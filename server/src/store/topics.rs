//! Topics and contacts' subscriptions to them.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::OnConflict,
};

use super::{
    StoreError, StoreResult,
    entity::{topic as entity, topic_subscription as subscription},
};
use crate::domain::{
    contact::ContactId,
    key::Key,
    topic::{Topic, TopicSubscription},
};

pub async fn all(conn: &impl ConnectionTrait) -> StoreResult<Vec<Topic>> {
    entity::Entity::find().order_by_asc(entity::Column::Key).all(conn).await?.into_iter().map(to_domain).collect()
}

pub async fn find(conn: &impl ConnectionTrait, key: &Key) -> StoreResult<Option<Topic>> {
    entity::Entity::find().filter(entity::Column::Key.eq(key.as_str())).one(conn).await?.map(to_domain).transpose()
}

pub async fn insert(conn: &impl ConnectionTrait, topic: &Topic) -> StoreResult<()> {
    entity::Entity::insert(to_active(topic)).exec_without_returning(conn).await?;
    Ok(())
}

pub async fn update(conn: &impl ConnectionTrait, topic: &Topic) -> StoreResult<()> {
    entity::Entity::update(to_active(topic)).exec(conn).await?;
    Ok(())
}

pub async fn delete(conn: &impl ConnectionTrait, key: &Key) -> StoreResult<bool> {
    let result = entity::Entity::delete_many().filter(entity::Column::Key.eq(key.as_str())).exec(conn).await?;
    Ok(result.rows_affected > 0)
}

/// The subscriptions of several contacts with their topics, in one statement, in the order the
/// topics were defined (topic ids are UUIDv7). Without an order PostgreSQL returns rows as they
/// lie on disk, and an update moves a row: a contact's topics would reshuffle on every change.
pub async fn subscriptions(
    conn: &impl ConnectionTrait,
    contact_ids: &[ContactId],
) -> StoreResult<Vec<(TopicSubscription, Topic)>> {
    if contact_ids.is_empty() {
        return Ok(Vec::new());
    }
    subscription::Entity::find()
        .find_also_related(entity::Entity)
        .filter(subscription::Column::ContactId.is_in(contact_ids.iter().map(ContactId::as_uuid)))
        .order_by_asc(subscription::Column::TopicId)
        .all(conn)
        .await?
        .into_iter()
        .map(|(model, topic)| {
            let corrupt = |column| StoreError::Corrupt { table: "topic_subscription", column };
            let subscription = TopicSubscription {
                contact_id: ContactId::from_uuid(model.contact_id),
                topic_id: model.topic_id,
                status: model.status.parse().map_err(|_| corrupt("status"))?,
                frequency: model.frequency.parse().map_err(|_| corrupt("frequency"))?,
                updated_at: model.updated_at,
            };
            Ok((subscription, to_domain(topic.ok_or(corrupt("topic_id"))?)?))
        })
        .collect()
}

pub async fn save_subscription(conn: &impl ConnectionTrait, state: &TopicSubscription) -> StoreResult<()> {
    subscription::Entity::insert(subscription::ActiveModel {
        contact_id: Set(state.contact_id.as_uuid()),
        topic_id: Set(state.topic_id),
        status: Set(state.status.as_str().to_owned()),
        frequency: Set(state.frequency.as_str().to_owned()),
        updated_at: Set(state.updated_at),
    })
    .on_conflict(
        OnConflict::columns([subscription::Column::ContactId, subscription::Column::TopicId])
            .update_columns([
                subscription::Column::Status,
                subscription::Column::Frequency,
                subscription::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

fn to_active(topic: &Topic) -> entity::ActiveModel {
    entity::ActiveModel {
        id: Set(topic.id),
        key: Set(topic.key.as_str().to_owned()),
        name: Set(topic.name.clone()),
        description: Set(topic.description.clone()),
        default_frequency: Set(topic.default_frequency.as_str().to_owned()),
        created_at: Set(topic.created_at),
        updated_at: Set(topic.updated_at),
    }
}

fn to_domain(model: entity::Model) -> StoreResult<Topic> {
    let corrupt = |column| StoreError::Corrupt { table: "topic", column };
    Ok(Topic {
        id: model.id,
        key: Key::parse(&model.key).map_err(|_| corrupt("key"))?,
        name: model.name,
        description: model.description,
        default_frequency: model.default_frequency.parse().map_err(|_| corrupt("default_frequency"))?,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}
