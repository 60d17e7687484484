//! A contact's data key goes with the contact by a trigger on `contact` instead of a foreign key
//! on `contact_key`.
//!
//! Why: a foreign key is checked on every insert into `contact_key`. On PostgreSQL the check
//! looks the contact up and locks its row (`FOR KEY SHARE`), which writes the contact's heap page
//! and the write-ahead log once more for every new contact: about 4 µs of the server's time per
//! contact, measured with `INSERT … SELECT` in psql (BENCHMARKS.md). Keys are only ever written
//! by the store, in the transaction that writes their contact, so the check catches nothing;
//! what matters is the deletion: deleting a contact must destroy its key, so that copies of its
//! ciphertext elsewhere become unreadable (crypto-shredding). The trigger keeps that, row by
//! row, as the foreign key's `ON DELETE CASCADE` did.
//!
//! SQLite cannot drop a foreign key: `contact_key` is copied into a new table without it, as
//! `m20261206_000002_clustered_contact_tables` did, and keeps its `WITHOUT ROWID` storage.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261207_000002_data_key_deletion_trigger"
    }
}

const SQLITE_TRIGGER: &str = r#"
CREATE TRIGGER "contact_key_deleted_with_contact" AFTER DELETE ON "contact" FOR EACH ROW
BEGIN
    DELETE FROM "contact_key" WHERE "contact_id" = OLD."id";
END;
"#;

/// `contact_key` as it is on SQLite, with or without its foreign key.
fn sqlite_key_table(foreign_key: &str) -> String {
    format!(
        r#"
CREATE TABLE "contact_key_rebuilt" (
    "contact_id" uuid_text NOT NULL PRIMARY KEY,
    "master_key_id" varchar(32) NOT NULL,
    "wrapped_key" text NOT NULL,
    "created_at" timestamp_with_timezone_text NOT NULL{foreign_key}
) WITHOUT ROWID;
INSERT INTO "contact_key_rebuilt" (contact_id, master_key_id, wrapped_key, created_at)
    SELECT contact_id, master_key_id, wrapped_key, created_at FROM "contact_key" ORDER BY contact_id;
DROP TABLE "contact_key";
ALTER TABLE "contact_key_rebuilt" RENAME TO "contact_key";
"#
    )
}

const POSTGRES_UP: &str = r#"
CREATE FUNCTION "contact_key_delete_with_contact"() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM "contact_key" WHERE "contact_id" = OLD."id";
    RETURN NULL;
END;
$$;
CREATE TRIGGER "contact_key_deleted_with_contact" AFTER DELETE ON "contact"
    FOR EACH ROW EXECUTE FUNCTION "contact_key_delete_with_contact"();
ALTER TABLE "contact_key" DROP CONSTRAINT "contact_key_contact_fkey";
"#;

const POSTGRES_DOWN: &str = r#"
DELETE FROM "contact_key" WHERE NOT EXISTS (SELECT 1 FROM "contact" WHERE "contact"."id" = "contact_key"."contact_id");
ALTER TABLE "contact_key" ADD CONSTRAINT "contact_key_contact_fkey"
    FOREIGN KEY ("contact_id") REFERENCES "contact" ("id") ON DELETE CASCADE;
DROP TRIGGER "contact_key_deleted_with_contact" ON "contact";
DROP FUNCTION "contact_key_delete_with_contact"();
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let sqlite = format!("{}{SQLITE_TRIGGER}", sqlite_key_table(""));
        crate::run_script(manager, &sqlite, POSTGRES_UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let foreign_key = r#",
    FOREIGN KEY ("contact_id") REFERENCES "contact" ("id") ON DELETE CASCADE"#;
        let sqlite = format!(
            r#"DROP TRIGGER "contact_key_deleted_with_contact";
DELETE FROM "contact_key" WHERE NOT EXISTS (SELECT 1 FROM "contact" WHERE "contact"."id" = "contact_key"."contact_id");
{}"#,
            sqlite_key_table(foreign_key)
        );
        crate::run_script(manager, &sqlite, POSTGRES_DOWN).await
    }
}
