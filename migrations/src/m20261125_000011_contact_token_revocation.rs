//! Revoking a contact's links. A contact token is a signed, self-contained link; revoking one
//! records the moment before which every token issued to that contact stops working, so a leaked
//! or forwarded link can be cut off without knowing which copy leaked. Links issued afterwards
//! work again.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000011_contact_token_revocation"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ContactTokenRevocation::Table)
                    .col(uuid(ContactTokenRevocation::ContactId).primary_key())
                    .col(timestamp_with_time_zone(ContactTokenRevocation::RevokedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ContactTokenRevocation::Table, ContactTokenRevocation::ContactId)
                            .to(Contact::Table, Contact::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ContactTokenRevocation::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum ContactTokenRevocation {
    Table,
    ContactId,
    RevokedAt,
}

#[derive(DeriveIden)]
enum Contact {
    Table,
    Id,
}
