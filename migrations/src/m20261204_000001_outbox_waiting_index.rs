//! The outbox's due index holds only the sends still waiting (queued or deferred), in the order
//! claims take them. The index it replaces, on (status, next attempt), held every send ever made
//! and gave due rows in no useful order: a claim for 500 read and sorted the whole due queue
//! (tens of thousands of rows in a large send), so each claim grew with the queue. Now a claim
//! reads the first rows of the index and stops. The WHERE text is the one the claim query
//! repeats word for word: SQLite uses a partial index only for a query that carries its terms.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261204_000001_outbox_waiting_index"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One batch, so one connection: a pooled SQLite connection that has not seen the drop
        // would refuse to create an index of the same name.
        manager
            .get_connection()
            .execute_unprepared(
                "DROP INDEX outbox_due_idx; \
                 CREATE INDEX outbox_due_idx ON outbox (next_attempt_at, id) \
                 WHERE status IN ('queued', 'deferred');",
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared(
                "DROP INDEX outbox_due_idx; CREATE INDEX outbox_due_idx ON outbox (status, next_attempt_at);",
            )
            .await?;
        Ok(())
    }
}
