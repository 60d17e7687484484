//! Privacy: the addresses of contacts erased on request, kept only as their blind index (the
//! HMAC that lookups use), so that the next import or upsert does not add the person back
//! unnoticed. Nothing else of an erased contact is kept.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000005_privacy"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ErasedAddress::Table)
                    // Email and phone indexes are keyed apart, so one column holds both kinds.
                    .col(string_len(ErasedAddress::BlindIndex, 64).primary_key())
                    .col(string_len(ErasedAddress::Kind, 16))
                    // Only a consent captured after this time lets the address back in.
                    .col(timestamp_with_time_zone(ErasedAddress::ErasedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ErasedAddress::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum ErasedAddress {
    Table,
    BlindIndex,
    Kind,
    ErasedAt,
}
