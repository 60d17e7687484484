//! The mail outbox and the suppression list. A send is a row before it is a message: whatever
//! causes it writes the row in its own transaction, and the unique send key makes a repeated
//! cause (a retried request or job, a restart) find the row already there instead of adding a
//! second. Delivery workers claim rows with a lease, so several processes share the work and a
//! crashed one's rows return to the queue when the lease runs out.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000007_outbox"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Outbox::Table)
                    .col(uuid(Outbox::Id).primary_key())
                    .col(string_len(Outbox::SendKey, 255))
                    .col(uuid(Outbox::EmailId))
                    .col(uuid(Outbox::EmailVersionId))
                    .col(string_len(Outbox::EmailType, 16))
                    // No foreign key: the delivery log outlives a deleted or erased contact.
                    .col(uuid_null(Outbox::ContactId))
                    // Test sends only: the staff address given instead of the contact's.
                    .col(string_len_null(Outbox::Recipient, 320))
                    // Properties of the triggering event, for templates.
                    .col(json_null(Outbox::Context))
                    .col(string_len(Outbox::Status, 24))
                    .col(integer(Outbox::Attempts))
                    .col(timestamp_with_time_zone(Outbox::NextAttemptAt))
                    .col(uuid_null(Outbox::LeaseOwner))
                    .col(timestamp_with_time_zone_null(Outbox::LeaseExpiresAt))
                    .col(text_null(Outbox::Detail))
                    .col(string_len_null(Outbox::MessageId, 255))
                    .col(timestamp_with_time_zone(Outbox::CreatedAt))
                    .col(timestamp_with_time_zone(Outbox::UpdatedAt))
                    .col(timestamp_with_time_zone_null(Outbox::SentAt))
                    .to_owned(),
            )
            .await?;
        for (name, columns) in [
            ("outbox_send_key_key", vec![Outbox::SendKey]),
            ("outbox_due_idx", vec![Outbox::Status, Outbox::NextAttemptAt]),
            ("outbox_contact_idx", vec![Outbox::ContactId, Outbox::Id]),
            ("outbox_email_idx", vec![Outbox::EmailId, Outbox::Id]),
        ] {
            let mut index = Index::create();
            index.name(name).table(Outbox::Table);
            if name.ends_with("_key") {
                index.unique();
            }
            for column in columns {
                index.col(column);
            }
            manager.create_index(index.to_owned()).await?;
        }

        manager
            .create_table(
                Table::create()
                    .table(Suppression::Table)
                    // The address's blind index: suppression must hold for addresses that belong
                    // to no contact (any more), without keeping the address itself.
                    .col(string_len(Suppression::AddressIndex, 64))
                    .col(string_len(Suppression::Reason, 16))
                    .col(uuid_null(Suppression::ContactId))
                    .col(string_len(Suppression::Source, 64))
                    .col(text_null(Suppression::Detail))
                    .col(timestamp_with_time_zone(Suppression::CreatedAt))
                    .primary_key(Index::create().col(Suppression::AddressIndex).col(Suppression::Reason))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(Suppression::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(Outbox::Table).to_owned()).await
    }
}

#[derive(DeriveIden, Clone, Copy)]
enum Outbox {
    Table,
    Id,
    SendKey,
    EmailId,
    EmailVersionId,
    EmailType,
    ContactId,
    Recipient,
    Context,
    Status,
    Attempts,
    NextAttemptAt,
    LeaseOwner,
    LeaseExpiresAt,
    Detail,
    MessageId,
    CreatedAt,
    UpdatedAt,
    SentAt,
}

#[derive(DeriveIden)]
enum Suppression {
    Table,
    AddressIndex,
    Reason,
    ContactId,
    Source,
    Detail,
    CreatedAt,
}
