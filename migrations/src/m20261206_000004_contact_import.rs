//! A contact remembers the import that created it, in `contact.import_id`, instead of a row of
//! `import_contact` per created contact; `import_contact` keeps the contacts an import updated
//! or found unchanged. "Contacts of this import" is the union of both.
//!
//! Why: a link row cost an entry in two indexes and two foreign-key checks per contact, about a
//! tenth of what the database did per imported contact, and an import of new contacts creates
//! every one of its contacts. The column's index takes only imported contacts, and since one
//! import's contacts are written together its entries are appended, not scattered.
//!
//! Imports are never deleted (each is the record of a run), so the column has no foreign key to
//! check on every insert. Links written before this migration stay as they are.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000004_contact_import"
    }
}

const SQLITE_UP: &str = "
ALTER TABLE contact ADD COLUMN import_id uuid_text NULL;
CREATE INDEX contact_import_idx ON contact (import_id) WHERE import_id IS NOT NULL;
";

const SQLITE_DOWN: &str = "
INSERT OR IGNORE INTO import_contact (import_id, contact_id) SELECT import_id, id FROM contact WHERE import_id IS NOT NULL;
DROP INDEX contact_import_idx;
ALTER TABLE contact DROP COLUMN import_id;
";

const POSTGRES_UP: &str = "
ALTER TABLE contact ADD COLUMN import_id uuid NULL;
CREATE INDEX contact_import_idx ON contact (import_id) WHERE import_id IS NOT NULL;
";

const POSTGRES_DOWN: &str = "
INSERT INTO import_contact (import_id, contact_id) SELECT import_id, id FROM contact WHERE import_id IS NOT NULL
    ON CONFLICT DO NOTHING;
DROP INDEX contact_import_idx;
ALTER TABLE contact DROP COLUMN import_id;
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, SQLITE_UP, POSTGRES_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        crate::run_script(manager, SQLITE_DOWN, POSTGRES_DOWN).await
    }
}
