//! When each contact was last seen: the newest event's time and type, and how many events it has.
//! Kept in a table of its own, upserted once per batch of events, so that profiles and segments
//! can read it without scanning the events and the contact row is not rewritten on every event.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000013_contact_activity"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(ContactActivity::Table)
                    .col(uuid(ContactActivity::ContactId).primary_key())
                    .col(timestamp_with_time_zone(ContactActivity::LastSeenAt))
                    .col(string_len(ContactActivity::LastEventType, 100))
                    .col(big_integer(ContactActivity::EventCount))
                    .foreign_key(
                        ForeignKey::create()
                            .from(ContactActivity::Table, ContactActivity::ContactId)
                            .to(Contact::Table, Contact::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Segments ask "seen since …" or "not seen since …".
        manager
            .create_index(
                Index::create()
                    .name("contact_activity_last_seen_idx")
                    .table(ContactActivity::Table)
                    .col(ContactActivity::LastSeenAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(ContactActivity::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum ContactActivity {
    Table,
    ContactId,
    LastSeenAt,
    LastEventType,
    EventCount,
}

#[derive(DeriveIden)]
enum Contact {
    Table,
    Id,
}
