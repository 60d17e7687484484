//! The outbox's due index holds only the sends still waiting (queued or deferred), in the order
//! claims take them. The index it replaces, on (status, next attempt), held every send ever made
//! and gave due rows in no useful order: a claim for 500 read and sorted the whole due queue
//! (tens of thousands of rows in a large send), so each claim grew with the queue. Now a claim
//! reads the first rows of the index and stops. The claim query repeats the index's condition
//! with the same literals: SQLite uses a partial index only for a query that carries its terms.
//! The delivery log filtered by a final status (the failed or bounced sends among millions sent,
//! say) gets an index of the settled sends, in the log's order. It is partial too, so that the
//! claim (which asks for waiting statuses) never takes it for the index of waiting sends, as
//! SQLite's planner does with a whole (status, id) index when the table has no statistics.
//!
//! Built beside the old index, which goes last; on PostgreSQL without locking out writers
//! (`CONCURRENTLY`, which cannot run in a transaction). Each step first drops what an
//! interrupted run may have left, so running the migration again finishes it.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000001_outbox_waiting_index"
    }
}

/// `CONCURRENTLY` where the backend has it.
fn concurrently(manager: &SchemaManager) -> &'static str {
    if manager.get_database_backend() == DbBackend::Postgres { "CONCURRENTLY " } else { "" }
}

/// PostgreSQL: one statement at a time (`CONCURRENTLY` refuses a multi-statement string, which
/// runs as one transaction). SQLite: all in one string, so on one connection: a pooled
/// connection that has not seen a drop would refuse to create an index of the same name.
async fn run(manager: &SchemaManager<'_>, statements: &[String]) -> Result<(), DbErr> {
    let connection = manager.get_connection();
    if manager.get_database_backend() == DbBackend::Postgres {
        for statement in statements {
            connection.execute_unprepared(statement).await?;
        }
    } else {
        connection.execute_unprepared(&statements.join(";\n")).await?;
    }
    Ok(())
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(false)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let concurrently = concurrently(manager);
        run(
            manager,
            &[
                format!("DROP INDEX {concurrently}IF EXISTS outbox_waiting_idx"),
                format!(
                    "CREATE INDEX {concurrently}outbox_waiting_idx ON outbox (next_attempt_at, id) \
                     WHERE status IN ('queued', 'deferred')"
                ),
                format!("DROP INDEX {concurrently}IF EXISTS outbox_settled_idx"),
                format!(
                    "CREATE INDEX {concurrently}outbox_settled_idx ON outbox (status, id) \
                     WHERE status NOT IN ('queued', 'deferred')"
                ),
                format!("DROP INDEX {concurrently}IF EXISTS outbox_due_idx"),
            ],
        )
        .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let concurrently = concurrently(manager);
        run(
            manager,
            &[
                format!("DROP INDEX {concurrently}IF EXISTS outbox_due_idx"),
                format!("CREATE INDEX {concurrently}outbox_due_idx ON outbox (status, next_attempt_at)"),
                format!("DROP INDEX {concurrently}IF EXISTS outbox_settled_idx"),
                format!("DROP INDEX {concurrently}IF EXISTS outbox_waiting_idx"),
            ],
        )
        .await
    }
}
