//! An inbound `webhook-id` is claimed before its work and marked completed after it, instead of
//! being remembered as done from the start: a process that dies in between leaves a claim that a
//! retry of the request takes over once it is stale, rather than a record that turns the retry
//! away as a replay and loses the payload. The ids remembered before were all done (a failed
//! request's id was forgotten), so they are completed when received.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000004_inbound_webhook_completion"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(InboundWebhook::Table)
                    .add_column(ColumnDef::new(InboundWebhook::CompletedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(InboundWebhook::Table)
                    .value(InboundWebhook::CompletedAt, Expr::col(InboundWebhook::ReceivedAt))
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter().table(InboundWebhook::Table).drop_column(InboundWebhook::CompletedAt).to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum InboundWebhook {
    Table,
    ReceivedAt,
    CompletedAt,
}
