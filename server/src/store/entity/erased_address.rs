use sea_orm::entity::prelude::*;

/// The blind index of an erased contact's email address or phone number.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "erased_address")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub blind_index: String,
    pub kind: String,
    pub erased_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
