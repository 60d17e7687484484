//! Emails: the asset (name, type, which version is current) and its versions. A version is
//! written once and never changed, so that a send can point at exactly what it rendered; the
//! unique (email, version) pair turns two concurrent edits of one version into a conflict.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000006_emails"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Email::Table)
                    .col(uuid(Email::Id).primary_key())
                    .col(string_len(Email::Name, 200))
                    .col(string_len(Email::Type, 16))
                    .col(integer(Email::CurrentVersion))
                    .col(timestamp_with_time_zone(Email::CreatedAt))
                    .col(timestamp_with_time_zone(Email::UpdatedAt))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EmailVersion::Table)
                    .col(uuid(EmailVersion::Id).primary_key())
                    .col(uuid(EmailVersion::EmailId))
                    .col(integer(EmailVersion::Version))
                    .col(string_len(EmailVersion::EmailType, 16))
                    .col(text(EmailVersion::Subject))
                    .col(text_null(EmailVersion::Preheader))
                    .col(text(EmailVersion::Html))
                    .col(text_null(EmailVersion::TextBody))
                    .col(string_len_null(EmailVersion::FromName, 200))
                    .col(string_len(EmailVersion::FromAddress, 320))
                    .col(string_len_null(EmailVersion::ReplyToName, 200))
                    .col(string_len_null(EmailVersion::ReplyToAddress, 320))
                    .col(boolean(EmailVersion::Tracking))
                    // What the template check found when the version was saved, as a JSON list.
                    .col(json(EmailVersion::Warnings))
                    .col(timestamp_with_time_zone(EmailVersion::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .name("email_version_email_fkey")
                            .from(EmailVersion::Table, EmailVersion::EmailId)
                            .to(Email::Table, Email::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("email_version_email_id_version_key")
                    .table(EmailVersion::Table)
                    .col(EmailVersion::EmailId)
                    .col(EmailVersion::Version)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(EmailVersion::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Email::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Email {
    Table,
    Id,
    Name,
    #[sea_orm(iden = "email_type")]
    Type,
    CurrentVersion,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum EmailVersion {
    Table,
    Id,
    EmailId,
    Version,
    EmailType,
    Subject,
    Preheader,
    Html,
    TextBody,
    FromName,
    FromAddress,
    ReplyToName,
    ReplyToAddress,
    Tracking,
    Warnings,
    CreatedAt,
}
