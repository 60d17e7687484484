//! Outbound webhooks. Admins register endpoints (URL, event types, a signing secret wrapped by
//! the master key). A change writes its webhook message, and one delivery per subscribed
//! endpoint, in the transaction of the change itself: no change is committed without its
//! message, nor a message without its change. Deliveries are leased by workers, retried on a
//! schedule, and every attempt is logged.

use sea_orm_migration::{prelude::*, schema::*};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000014_webhooks"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(WebhookEndpoint::Table)
                    .col(uuid(WebhookEndpoint::Id).primary_key())
                    .col(text(WebhookEndpoint::Url))
                    .col(string_len(WebhookEndpoint::Description, 200))
                    .col(json(WebhookEndpoint::EventTypes))
                    .col(string_len(WebhookEndpoint::SecretKeyId, 64))
                    .col(text(WebhookEndpoint::SecretWrapped))
                    .col(boolean(WebhookEndpoint::Enabled))
                    .col(text_null(WebhookEndpoint::DisabledReason))
                    .col(timestamp_with_time_zone(WebhookEndpoint::CreatedAt))
                    .col(timestamp_with_time_zone(WebhookEndpoint::UpdatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookMessage::Table)
                    .col(uuid(WebhookMessage::Id).primary_key())
                    .col(string_len(WebhookMessage::EventType, 64))
                    .col(text(WebhookMessage::Body))
                    .col(timestamp_with_time_zone(WebhookMessage::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookDelivery::Table)
                    .col(uuid(WebhookDelivery::Id).primary_key())
                    .col(uuid(WebhookDelivery::MessageId))
                    .col(uuid(WebhookDelivery::EndpointId))
                    // Deliveries with the same key go out one after the other, in order.
                    .col(string_len(WebhookDelivery::OrderingKey, 64))
                    .col(string_len(WebhookDelivery::Status, 16))
                    .col(integer(WebhookDelivery::Attempts))
                    .col(timestamp_with_time_zone(WebhookDelivery::NextAttemptAt))
                    .col(timestamp_with_time_zone_null(WebhookDelivery::LeasedUntil))
                    .col(integer_null(WebhookDelivery::LastStatusCode))
                    .col(text_null(WebhookDelivery::LastError))
                    .col(timestamp_with_time_zone_null(WebhookDelivery::DeliveredAt))
                    .col(timestamp_with_time_zone(WebhookDelivery::CreatedAt))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDelivery::Table, WebhookDelivery::MessageId)
                            .to(WebhookMessage::Table, WebhookMessage::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookDelivery::Table, WebhookDelivery::EndpointId)
                            .to(WebhookEndpoint::Table, WebhookEndpoint::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_delivery_due_idx")
                    .table(WebhookDelivery::Table)
                    .col(WebhookDelivery::Status)
                    .col(WebhookDelivery::NextAttemptAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_delivery_order_idx")
                    .table(WebhookDelivery::Table)
                    .col(WebhookDelivery::EndpointId)
                    .col(WebhookDelivery::OrderingKey)
                    .col(WebhookDelivery::Status)
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(WebhookAttempt::Table)
                    .col(uuid(WebhookAttempt::Id).primary_key())
                    .col(uuid(WebhookAttempt::DeliveryId))
                    .col(timestamp_with_time_zone(WebhookAttempt::AttemptedAt))
                    .col(integer_null(WebhookAttempt::StatusCode))
                    .col(text_null(WebhookAttempt::Error))
                    .col(integer(WebhookAttempt::LatencyMs))
                    .foreign_key(
                        ForeignKey::create()
                            .from(WebhookAttempt::Table, WebhookAttempt::DeliveryId)
                            .to(WebhookDelivery::Table, WebhookDelivery::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("webhook_attempt_delivery_idx")
                    .table(WebhookAttempt::Table)
                    .col(WebhookAttempt::DeliveryId)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            WebhookAttempt::Table.into_iden(),
            WebhookDelivery::Table.into_iden(),
            WebhookMessage::Table.into_iden(),
            WebhookEndpoint::Table.into_iden(),
        ] {
            manager.drop_table(Table::drop().table(table).to_owned()).await?;
        }
        Ok(())
    }
}

#[derive(DeriveIden)]
enum WebhookEndpoint {
    Table,
    Id,
    Url,
    Description,
    EventTypes,
    SecretKeyId,
    SecretWrapped,
    Enabled,
    DisabledReason,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum WebhookMessage {
    Table,
    Id,
    EventType,
    Body,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WebhookDelivery {
    Table,
    Id,
    MessageId,
    EndpointId,
    OrderingKey,
    Status,
    Attempts,
    NextAttemptAt,
    LeasedUntil,
    LastStatusCode,
    LastError,
    DeliveredAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum WebhookAttempt {
    Table,
    Id,
    DeliveryId,
    AttemptedAt,
    StatusCode,
    Error,
    LatencyMs,
}
