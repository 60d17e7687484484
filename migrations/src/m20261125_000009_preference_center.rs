//! The preference center's settings: one row, written by admins (branding, the fields a contact
//! may edit, the sender of its emails), read on every page view.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000009_preference_center"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(PreferenceCenter::Table)
                    // Always 1: there is one preference center per installation.
                    .col(integer(PreferenceCenter::Id).primary_key())
                    .col(json(PreferenceCenter::Settings))
                    .col(timestamp_with_time_zone(PreferenceCenter::UpdatedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(PreferenceCenter::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum PreferenceCenter {
    Table,
    Id,
    Settings,
    UpdatedAt,
}
