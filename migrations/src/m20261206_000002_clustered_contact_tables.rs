//! On SQLite, the tables that hang off a contact by a composite or non-integer key are stored
//! `WITHOUT ROWID`, clustered on that key: custom field values (`contact_attribute`), data keys
//! (`contact_key`) and import membership (`import_contact`).
//!
//! Why: a rowid table keyed by anything but an integer is two b-trees, the rows by rowid and a
//! unique index on the key that repeats the key's columns. Every imported contact wrote into
//! both for each of its values, its data key and its import link. Clustered on the key, each
//! row is written once, the tables shrink by the index they no longer need, and a lookup by the
//! key reads the row directly (BENCHMARKS.md, "Where the import's time goes").
//!
//! PostgreSQL stores every table as a heap with separate indexes and has no such choice: it is
//! left as it is.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000002_clustered_contact_tables"
    }
}

/// A table as it is on SQLite: (name, column list, definitions of columns and constraints,
/// indexes to build again after the copy).
struct Table {
    name: &'static str,
    columns: &'static str,
    definitions: &'static str,
    indexes: &'static str,
}

const TABLES: [Table; 3] = [
    Table {
        name: "contact_attribute",
        columns: "contact_id, field_key, value_type, value_text, value_number, value_bool, value_time, sealed",
        definitions: r#""contact_id" uuid_text NOT NULL,
    "field_key" varchar(64) NOT NULL,
    "value_type" varchar(16) NOT NULL,
    "value_text" text NULL,
    "value_number" double NULL,
    "value_bool" boolean NULL,
    "value_time" timestamp_with_timezone_text NULL,
    "sealed" boolean NOT NULL DEFAULT FALSE,
    PRIMARY KEY ("contact_id", "field_key"),
    FOREIGN KEY ("contact_id") REFERENCES "contact" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("field_key") REFERENCES "field_definition" ("key") ON DELETE CASCADE"#,
        indexes: r#"
CREATE INDEX "contact_attribute_text_idx" ON "contact_attribute" ("field_key", "value_text");
CREATE INDEX "contact_attribute_number_idx" ON "contact_attribute" ("field_key", "value_number")
    WHERE value_number IS NOT NULL;
CREATE INDEX "contact_attribute_time_idx" ON "contact_attribute" ("field_key", "value_time")
    WHERE value_time IS NOT NULL;"#,
    },
    Table {
        name: "contact_key",
        columns: "contact_id, master_key_id, wrapped_key, created_at",
        definitions: r#""contact_id" uuid_text NOT NULL PRIMARY KEY,
    "master_key_id" varchar(32) NOT NULL,
    "wrapped_key" text NOT NULL,
    "created_at" timestamp_with_timezone_text NOT NULL,
    FOREIGN KEY ("contact_id") REFERENCES "contact" ("id") ON DELETE CASCADE"#,
        indexes: r#"
CREATE INDEX "contact_key_master_key_idx" ON "contact_key" ("master_key_id", "contact_id");"#,
    },
    Table {
        name: "import_contact",
        columns: "import_id, contact_id",
        definitions: r#""import_id" uuid_text NOT NULL,
    "contact_id" uuid_text NOT NULL,
    PRIMARY KEY ("import_id", "contact_id"),
    FOREIGN KEY ("import_id") REFERENCES "import" ("id") ON DELETE CASCADE,
    FOREIGN KEY ("contact_id") REFERENCES "contact" ("id") ON DELETE CASCADE"#,
        indexes: r#"
CREATE INDEX "import_contact_contact_idx" ON "import_contact" ("contact_id");"#,
    },
];

/// Copies each table into a new one with `storage` after its definition, in key order, and puts
/// the new one in its place.
fn rebuild(storage: &str) -> String {
    TABLES
        .iter()
        .map(|Table { name, columns, definitions, indexes }| {
            format!(
                r#"
CREATE TABLE "{name}_rebuilt" (
    {definitions}
){storage};
INSERT INTO "{name}_rebuilt" ({columns}) SELECT {columns} FROM "{name}" ORDER BY 1, 2;
DROP TABLE "{name}";
ALTER TABLE "{name}_rebuilt" RENAME TO "{name}";{indexes}
"#
            )
        })
        .collect()
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// Each table is copied, dropped and renamed: all of them or nothing.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_sqlite(manager, &rebuild(" WITHOUT ROWID")).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_sqlite(manager, &rebuild("")).await
    }
}

async fn run_on_sqlite(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() == DbBackend::Sqlite {
        manager.get_connection().execute_unprepared(script).await?;
    }
    Ok(())
}
