//! Inbound webhooks. Admins configure sources, each with a signing secret (wrapped by the master
//! key) and a kind: events and contact changes, or bounces and complaints for the suppression
//! list. The `webhook-id`s a source sent within the timestamp tolerance are remembered, so that a
//! replayed request is recognised and ignored.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000015_webhook_sources"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookSource::Table)
                    .col(string_len(WebhookSource::Key, 64).primary_key())
                    .col(string_len(WebhookSource::Kind, 16))
                    .col(string_len(WebhookSource::SecretKeyId, 64))
                    .col(text(WebhookSource::SecretWrapped))
                    .col(timestamp_with_time_zone(WebhookSource::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(InboundWebhook::Table)
                    .col(string_len(InboundWebhook::SourceKey, 64))
                    .col(string_len(InboundWebhook::WebhookId, 255))
                    .col(timestamp_with_time_zone(InboundWebhook::ReceivedAt))
                    .primary_key(Index::create().col(InboundWebhook::SourceKey).col(InboundWebhook::WebhookId))
                    .foreign_key(
                        ForeignKey::create()
                            .from(InboundWebhook::Table, InboundWebhook::SourceKey)
                            .to(WebhookSource::Table, WebhookSource::Key)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("inbound_webhook_received_idx")
                    .table(InboundWebhook::Table)
                    .col(InboundWebhook::ReceivedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_table(Table::drop().table(InboundWebhook::Table).to_owned()).await?;
        manager.drop_table(Table::drop().table(WebhookSource::Table).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum WebhookSource {
    Table,
    Key,
    Kind,
    SecretKeyId,
    SecretWrapped,
    CreatedAt,
}

#[derive(DeriveIden)]
enum InboundWebhook {
    Table,
    SourceKey,
    WebhookId,
    ReceivedAt,
}
