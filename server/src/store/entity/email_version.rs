use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "email_version")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub email_id: Uuid,
    pub version: i32,
    pub email_type: String,
    pub subject: String,
    pub preheader: Option<String>,
    pub html: String,
    pub text_body: Option<String>,
    pub from_name: Option<String>,
    pub from_address: String,
    pub reply_to_name: Option<String>,
    pub reply_to_address: Option<String>,
    pub tracking: bool,
    pub warnings: Json,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
