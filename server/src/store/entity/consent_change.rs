use sea_orm::entity::prelude::*;

/// Append-only consent history.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "consent_change")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub contact_id: Uuid,
    pub purpose: String,
    pub channel: String,
    pub status: String,
    pub legal_basis: String,
    pub source: String,
    pub captured_at: DateTimeUtc,
    pub recorded_at: DateTimeUtc,
    pub proof_ip: Option<String>,
    pub proof_user_agent: Option<String>,
    pub wording_id: Option<String>,
    pub wording_version: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
