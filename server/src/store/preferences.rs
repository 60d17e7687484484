//! The preference center's settings: one JSON row, the defaults until admins first save.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ConnectionTrait, EntityTrait, sea_query::OnConflict};

use super::{StoreError, StoreResult, entity::preference_center as entity};
use crate::domain::preferences::PreferenceCenter;

const ROW: i32 = 1;

pub async fn get(conn: &impl ConnectionTrait) -> StoreResult<PreferenceCenter> {
    match entity::Entity::find_by_id(ROW).one(conn).await? {
        Some(model) => serde_json::from_value(model.settings)
            .map_err(|_| StoreError::Corrupt { table: "preference_center", column: "settings" }),
        None => Ok(PreferenceCenter::default()),
    }
}

pub async fn save(conn: &impl ConnectionTrait, settings: &PreferenceCenter, at: DateTime<Utc>) -> StoreResult<()> {
    let value = serde_json::to_value(settings)
        .map_err(|_| StoreError::Corrupt { table: "preference_center", column: "settings" })?;
    entity::Entity::insert(entity::ActiveModel { id: Set(ROW), settings: Set(value), updated_at: Set(at) })
        .on_conflict(
            OnConflict::column(entity::Column::Id)
                .update_columns([entity::Column::Settings, entity::Column::UpdatedAt])
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}
