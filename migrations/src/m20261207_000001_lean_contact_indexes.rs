//! Fewer index entries per new contact: the lookups by external id, email and phone index only
//! what is there, and data keys are no longer indexed by the master key that wraps them.
//!
//! Why: a contact without an external id or a phone (most imported ones) still cost an entry
//! for its NULL in each of those indexes, and every data key an entry in
//! `contact_key_master_key_idx`. Each entry is a b-tree insert on every new contact, where an
//! import spends most of its time (BENCHMARKS.md). No query looks a contact up by a NULL, and
//! both databases use a `WHERE … IS NOT NULL` index for `= value` and `IN (…)`. The master key
//! index served only the two counts that `rapport keys rotate` shows once when it starts: two
//! scans of the key table per rotation instead of an index entry per contact.
//!
//! Uniqueness is unchanged: NULLs never conflicted. The indexes keep their names, so that the
//! errors of a duplicate external id or email address still name them. Each index is built
//! again, and `contact` stays locked until the migration commits: on PostgreSQL, dropping an
//! index locks the table against reads as well as writes. On a large table, run it in a
//! maintenance window.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000001_lean_contact_indexes"
    }
}

/// The same statements on SQLite and PostgreSQL.
const UP: &str = r#"
DROP INDEX "contact_key_master_key_idx";
DROP INDEX "contact_external_id_key";
CREATE UNIQUE INDEX "contact_external_id_key" ON "contact" ("external_id") WHERE "external_id" IS NOT NULL;
DROP INDEX "contact_email_index_key";
CREATE UNIQUE INDEX "contact_email_index_key" ON "contact" ("email_index") WHERE "email_index" IS NOT NULL;
DROP INDEX "contact_phone_index_idx";
CREATE INDEX "contact_phone_index_idx" ON "contact" ("phone_index") WHERE "phone_index" IS NOT NULL;
"#;

const DOWN: &str = r#"
DROP INDEX "contact_phone_index_idx";
CREATE INDEX "contact_phone_index_idx" ON "contact" ("phone_index");
DROP INDEX "contact_email_index_key";
CREATE UNIQUE INDEX "contact_email_index_key" ON "contact" ("email_index");
DROP INDEX "contact_external_id_key";
CREATE UNIQUE INDEX "contact_external_id_key" ON "contact" ("external_id");
CREATE INDEX "contact_key_master_key_idx" ON "contact_key" ("master_key_id", "contact_id");
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, UP, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, DOWN, DOWN).await
    }
}
