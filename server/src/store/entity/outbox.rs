use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "outbox")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub send_key: String,
    pub email_id: Uuid,
    pub email_version_id: Uuid,
    pub email_type: String,
    pub contact_id: Option<Uuid>,
    pub recipient: Option<String>,
    pub context: Option<Json>,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTimeUtc,
    pub lease_owner: Option<Uuid>,
    pub lease_expires_at: Option<DateTimeUtc>,
    pub detail: Option<String>,
    pub message_id: Option<String>,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub sent_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
