use sea_orm::entity::prelude::*;

/// A `webhook-id` a source sent, remembered while a replay of it could still pass the
/// timestamp check: claimed while its request is handled, then completed.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "inbound_webhook")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub source_key: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub webhook_id: String,
    /// When it was claimed (or claimed again, its holder gone).
    pub received_at: DateTimeUtc,
    /// None while it is being handled.
    pub completed_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
