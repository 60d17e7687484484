use sea_orm::entity::prelude::*;

/// A `webhook-id` a source sent, remembered while a replay of it could still pass the
/// timestamp check.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inbound_webhook")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub source_key: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub webhook_id: String,
    pub received_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
