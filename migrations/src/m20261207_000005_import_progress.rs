//! An import records when it last committed a batch, so that a run whose process died (a crash,
//! a kill, a machine lost) can be told from one still going and be marked failed, instead of
//! saying it is running for ever. Runs recorded before count as progressed when they ended, or
//! else when they started.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000005_import_progress"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .alter_table(
                Table::alter()
                    .table(Import::Table)
                    .add_column(ColumnDef::new(Import::ProgressedAt).timestamp_with_time_zone().null())
                    .to_owned(),
            )
            .await?;
        let progressed = Func::coalesce([Expr::col(Import::FinishedAt), Expr::col(Import::StartedAt)]);
        manager.exec_stmt(Query::update().table(Import::Table).value(Import::ProgressedAt, progressed).to_owned()).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.alter_table(Table::alter().table(Import::Table).drop_column(Import::ProgressedAt).to_owned()).await
    }
}

#[derive(DeriveIden)]
enum Import {
    Table,
    StartedAt,
    FinishedAt,
    ProgressedAt,
}
