use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "contact")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub external_id: Option<String>,
    /// Sealed (see `crypto`), as are phone and the names.
    pub email: Option<String>,
    /// Blind index of the email address: what lookups and the unique index use.
    pub email_index: Option<String>,
    pub phone: Option<String>,
    pub phone_index: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub locale: Option<String>,
    pub time_zone: Option<String>,
    pub country: Option<String>,
    pub version: i64,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    /// Custom field values: `{"<field>": {"<type>": value}}`, or `{"sealed": …, "type": …}` for a
    /// personal one (see the migration that introduced it).
    pub attributes: Json,
    /// The import that created the contact, if one did.
    pub import_id: Option<Uuid>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
