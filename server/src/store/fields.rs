//! Custom field definitions.

use std::collections::HashMap;

use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, QueryOrder};

use super::{StoreError, StoreResult, contacts, entity::field_definition as entity};
use crate::domain::{
    field::{FieldDefinition, FieldType},
    key::Key,
};

pub async fn all(conn: &impl ConnectionTrait) -> StoreResult<Vec<FieldDefinition>> {
    entity::Entity::find().order_by_asc(entity::Column::Key).all(conn).await?.into_iter().map(to_domain).collect()
}

pub async fn by_key(conn: &impl ConnectionTrait) -> StoreResult<HashMap<Key, FieldDefinition>> {
    Ok(all(conn).await?.into_iter().map(|definition| (definition.key.clone(), definition)).collect())
}

pub async fn find(conn: &impl ConnectionTrait, key: &Key) -> StoreResult<Option<FieldDefinition>> {
    entity::Entity::find_by_id(key.as_str()).one(conn).await?.map(to_domain).transpose()
}

pub async fn insert(conn: &impl ConnectionTrait, definition: &FieldDefinition) -> StoreResult<()> {
    entity::Entity::insert(to_active(definition)).exec_without_returning(conn).await?;
    Ok(())
}

pub async fn update(conn: &impl ConnectionTrait, definition: &FieldDefinition) -> StoreResult<()> {
    entity::Entity::update(to_active(definition)).exec(conn).await?;
    Ok(())
}

/// Deletes the definition and every contact's value of it. The definition goes first: on
/// PostgreSQL that waits for the contact writers that read it (they hold it shared) and no
/// writer can wait for this transaction's contact rows while it waits.
pub async fn delete(conn: &impl ConnectionTrait, key: &Key) -> StoreResult<bool> {
    let deleted = entity::Entity::delete_by_id(key.as_str()).exec(conn).await?.rows_affected > 0;
    if deleted {
        contacts::remove_values_of(conn, key).await?;
    }
    Ok(deleted)
}

/// How many contacts hold one of `values` in an enum field (before those values are removed).
pub async fn count_values_in_use(conn: &impl ConnectionTrait, key: &Key, values: &[String]) -> StoreResult<u64> {
    contacts::count_enum_holders(conn, key, values).await
}

fn to_active(definition: &FieldDefinition) -> entity::ActiveModel {
    entity::ActiveModel {
        key: Set(definition.key.as_str().to_owned()),
        label: Set(definition.label.clone()),
        field_type: Set(definition.field_type.as_str().to_owned()),
        enum_values: Set(serde_json::json!(definition.enum_values)),
        required: Set(definition.required),
        personal: Set(definition.personal),
        created_at: Set(definition.created_at),
        updated_at: Set(definition.updated_at),
    }
}

fn to_domain(model: entity::Model) -> StoreResult<FieldDefinition> {
    let corrupt = |column| StoreError::Corrupt { table: "field_definition", column };
    Ok(FieldDefinition {
        key: Key::parse(&model.key).map_err(|_| corrupt("key"))?,
        label: model.label,
        field_type: model.field_type.parse::<FieldType>().map_err(|_| corrupt("field_type"))?,
        enum_values: serde_json::from_value(model.enum_values).map_err(|_| corrupt("enum_values"))?,
        required: model.required,
        personal: model.personal,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}
