//! Contact imports (`rapport import contacts`, the `importContacts` mutation): one row per run
//! with its counts, the contacts each run created or updated (so that segments and programs can
//! start from "contacts of this import"), and the rows it rejected with their reasons, which
//! never hold the rejected value itself.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000001_imports"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Import::Table)
                    .col(uuid(Import::Id).primary_key())
                    .col(string_len(Import::FileName, 255))
                    .col(string_len(Import::UpsertKey, 16))
                    .col(string_len(Import::ActorKind, 32))
                    .col(string_len_null(Import::ActorId, 255))
                    .col(string_len(Import::RequestId, 255))
                    .col(string_len(Import::Status, 16))
                    .col(timestamp_with_time_zone(Import::StartedAt))
                    .col(timestamp_with_time_zone_null(Import::FinishedAt))
                    .col(big_integer(Import::Rows))
                    .col(big_integer(Import::Created))
                    .col(big_integer(Import::Updated))
                    .col(big_integer(Import::Unchanged))
                    .col(big_integer(Import::Rejected))
                    .col(text_null(Import::Failure))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ImportContact::Table)
                    .col(uuid(ImportContact::ImportId))
                    .col(uuid(ImportContact::ContactId))
                    .primary_key(Index::create().col(ImportContact::ImportId).col(ImportContact::ContactId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ImportContact::Table, ImportContact::ImportId)
                            .to(Import::Table, Import::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    // A deleted or erased contact leaves the imports it came from.
                    .foreign_key(
                        ForeignKey::create()
                            .from(ImportContact::Table, ImportContact::ContactId)
                            .to(Contact::Table, Contact::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("import_contact_contact_idx")
                    .table(ImportContact::Table)
                    .col(ImportContact::ContactId)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(ImportRejection::Table)
                    .col(uuid(ImportRejection::ImportId))
                    .col(big_integer(ImportRejection::RowNumber))
                    .col(string_len_null(ImportRejection::ColumnName, 255))
                    .col(text(ImportRejection::Reason))
                    .primary_key(Index::create().col(ImportRejection::ImportId).col(ImportRejection::RowNumber))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ImportRejection::Table, ImportRejection::ImportId)
                            .to(Import::Table, Import::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ImportRejection::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(ImportContact::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Import::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Import {
    Table,
    Id,
    FileName,
    UpsertKey,
    ActorKind,
    ActorId,
    RequestId,
    Status,
    StartedAt,
    FinishedAt,
    Rows,
    Created,
    Updated,
    Unchanged,
    Rejected,
    Failure,
}

#[derive(DeriveIden)]
enum ImportContact {
    Table,
    ImportId,
    ContactId,
}

#[derive(DeriveIden)]
enum ImportRejection {
    Table,
    ImportId,
    RowNumber,
    ColumnName,
    Reason,
}

#[derive(DeriveIden)]
enum Contact {
    Table,
    Id,
}
