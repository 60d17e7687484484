//! The number and time indexes of custom field values hold only the rows that have such a value.
//! Each row of `contact_attribute` has one typed value, so these two indexes used to take an
//! entry for every row, nearly all of them NULL, on every write of a value (imports write
//! millions). Comparisons on a value (`value_number > 3`) imply that it is not NULL, so SQLite
//! and PostgreSQL still use the partial indexes for them. The text index stays whole: it also
//! serves lookups by field alone ("has a value for this field"), whatever the value's type.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261203_000003_partial_attribute_indexes"
    }
}

/// (index, column) of the indexes made partial.
const INDEXES: [(&str, &str); 2] =
    [("contact_attribute_number_idx", "value_number"), ("contact_attribute_time_idx", "value_time")];

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements: String = INDEXES
            .iter()
            .map(|(index, column)| {
                format!(
                    "DROP INDEX {index}; \
                     CREATE INDEX {index} ON contact_attribute (field_key, {column}) WHERE {column} IS NOT NULL;"
                )
            })
            .collect();
        // One batch, so one connection: a pooled SQLite connection that has not seen the drop
        // would refuse to create an index of the same name.
        manager.get_connection().execute_unprepared(&statements).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let statements: String = INDEXES
            .iter()
            .map(|(index, column)| {
                format!("DROP INDEX {index}; CREATE INDEX {index} ON contact_attribute (field_key, {column});")
            })
            .collect();
        manager.get_connection().execute_unprepared(&statements).await?;
        Ok(())
    }
}
