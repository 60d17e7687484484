//! The version of a consent wording becomes text. It was a number that callers had to keep
//! themselves; the proof Rapport records itself names the exact text shown by its language and a
//! hash of its content (`en:3f2a9c1b0d4e`), which no number can hold. Numbers stored so far stay
//! readable as their decimal text.

use sea_orm_migration::{prelude::*, sea_orm::DatabaseBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261125_000016_wording_version_text"
    }
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        match manager.get_database_backend() {
            DatabaseBackend::Postgres => {
                db.execute_unprepared(
                    "ALTER TABLE consent_change ALTER COLUMN wording_version TYPE varchar(100) USING wording_version::text",
                )
                .await?;
            }
            // SQLite cannot change a column's type: the values move to a new column, which takes
            // the name. One batch, so one connection: a pooled connection that has not seen the
            // schema change would refuse the next statement.
            _ => {
                db.execute_unprepared(
                    "ALTER TABLE consent_change ADD COLUMN wording_version_text varchar(100);
                     UPDATE consent_change SET wording_version_text = CAST(wording_version AS TEXT)
                         WHERE wording_version IS NOT NULL;
                     ALTER TABLE consent_change DROP COLUMN wording_version;
                     ALTER TABLE consent_change RENAME COLUMN wording_version_text TO wording_version;",
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn down(&self, _manager: &SchemaManager) -> Result<(), DbErr> {
        // Text versions cannot become numbers again without losing them.
        Err(DbErr::Migration("m20261125_000016_wording_version_text cannot be undone".to_owned()))
    }
}
