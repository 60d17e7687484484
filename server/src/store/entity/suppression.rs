use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "suppression")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub address_index: String,
    #[sea_orm(primary_key, auto_increment = false)]
    pub reason: String,
    pub contact_id: Option<Uuid>,
    pub source: String,
    pub detail: Option<String>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
