//! A webhook delivery names the round of the worker that leased it. A worker settles, renews and
//! releases only the deliveries it still holds, so one that lost a lease (it stalled past it)
//! cannot overwrite what the worker that took the delivery over recorded, nor free its lease.

use sea_orm_migration::prelude::*;

pub struct Migration;

const LEASE_HOLDER_INDEX: &str = "webhook_delivery_lease_holder_idx";

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000003_webhook_lease_holder"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(WebhookDelivery::Table)
                    .add_column(ColumnDef::new(WebhookDelivery::LeaseHolder).uuid().null())
                    .to_owned(),
            )
            .await?;
        // Renewing a round's leases finds them by holder, not by reading every pending delivery.
        manager
            .create_index(
                Index::create()
                    .name(LEASE_HOLDER_INDEX)
                    .table(WebhookDelivery::Table)
                    .col(WebhookDelivery::LeaseHolder)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.drop_index(Index::drop().name(LEASE_HOLDER_INDEX).table(WebhookDelivery::Table).to_owned()).await?;
        manager
            .alter_table(
                Table::alter().table(WebhookDelivery::Table).drop_column(WebhookDelivery::LeaseHolder).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum WebhookDelivery {
    Table,
    LeaseHolder,
}
