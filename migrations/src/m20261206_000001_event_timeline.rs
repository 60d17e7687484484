//! On SQLite, a contact's timeline moves out of the event table's indexes into a table of its own
//! that a background task fills in bulk, in key order (`store::events::index_timeline`), instead
//! of an index that every stored event entered at once.
//!
//! Why: SQLite has one writer, and an index led by the contact took keys in random order, so
//! each group of events dirtied about one index page per contact and wrote it to the log at every
//! commit. That index halved what `POST /v1/events` could store per second (BENCHMARKS.md, "Where
//! event ingestion's time goes on SQLite"). Filled every half second in key order, the timeline
//! table is written a few pages per contact per round instead.
//!
//! The layout on SQLite:
//! - `event` gets `seq`, an ever-growing rowid (`AUTOINCREMENT`, so that a number freed by a
//!   deletion is never handed out again), and loses its index on the contact and its foreign key:
//!   a foreign key on a column without an index makes every deleted contact read the whole table;
//! - `event_timeline` holds (contact, occurred at, event id) for every event up to
//!   `event_timeline_progress.indexed_through`; later events (the tail) are read by `seq`;
//! - a trigger deletes a deleted contact's events, as the foreign key's cascade did;
//! - the index on (event type, occurred at) is not built again: no query reads it, and it cost
//!   about a tenth of what SQLite's writer stores per second. Segments on event types will add
//!   the index they read.
//!
//! PostgreSQL writes on several cores at once and keeps its index on `event`: it is left as it is.

use sea_orm_migration::{prelude::*, sea_orm::DbBackend};

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000001_event_timeline"
    }
}

const EVENT_COLUMNS: &str = "id, contact_id, event_type, properties, occurred_at, received_at, source, idempotency_key";

/// The definitions of the columns after `id`, the same in both layouts.
const EVENT_DEFINITIONS: &str = r#""contact_id" uuid_text NOT NULL,
    "event_type" varchar(100) NOT NULL,
    "properties" jsonb_text NOT NULL,
    "occurred_at" timestamp_with_timezone_text NOT NULL,
    "received_at" timestamp_with_timezone_text NOT NULL,
    "source" varchar(64) NOT NULL,
    "idempotency_key" varchar(255) NULL"#;

const UP: &str = r#"
CREATE TABLE "event_rebuilt" (
    "seq" integer NOT NULL PRIMARY KEY AUTOINCREMENT,
    "id" uuid_text NOT NULL UNIQUE,
    {definitions}
);
INSERT INTO event_rebuilt ({columns}) SELECT {columns} FROM event ORDER BY rowid;
DROP TABLE event;
ALTER TABLE event_rebuilt RENAME TO event;
CREATE UNIQUE INDEX "event_idempotency_key" ON "event" ("source", "idempotency_key");
CREATE TABLE "event_timeline" (
    "contact_id" uuid_text NOT NULL,
    "occurred_at" timestamp_with_timezone_text NOT NULL,
    "event_id" uuid_text NOT NULL,
    PRIMARY KEY ("contact_id", "occurred_at", "event_id")
) WITHOUT ROWID;
INSERT INTO event_timeline (contact_id, occurred_at, event_id)
    SELECT contact_id, occurred_at, id FROM event ORDER BY contact_id, occurred_at, id;
CREATE TABLE "event_timeline_progress" (
    "id" integer NOT NULL PRIMARY KEY CHECK ("id" = 1),
    "indexed_through" integer NOT NULL
);
INSERT INTO event_timeline_progress (id, indexed_through) SELECT 1, coalesce(max(seq), 0) FROM event;
CREATE TRIGGER "event_of_deleted_contact" AFTER DELETE ON "contact" BEGIN
    DELETE FROM event WHERE id IN (SELECT event_id FROM event_timeline WHERE contact_id = OLD.id);
    DELETE FROM event
        WHERE seq > (SELECT indexed_through FROM event_timeline_progress) AND contact_id = OLD.id;
    DELETE FROM event_timeline WHERE contact_id = OLD.id;
END;
"#;

const DOWN: &str = r#"
DROP TRIGGER "event_of_deleted_contact";
DROP TABLE event_timeline_progress;
DROP TABLE event_timeline;
CREATE TABLE "event_rebuilt" (
    "id" uuid_text NOT NULL PRIMARY KEY,
    {definitions},
    FOREIGN KEY ("contact_id") REFERENCES "contact" ("id") ON DELETE CASCADE
);
INSERT INTO event_rebuilt ({columns}) SELECT {columns} FROM event ORDER BY seq;
DROP TABLE event;
ALTER TABLE event_rebuilt RENAME TO event;
CREATE UNIQUE INDEX "event_idempotency_key" ON "event" ("source", "idempotency_key");
CREATE INDEX "event_timeline_idx" ON "event" ("contact_id", "occurred_at", "id");
CREATE INDEX "event_type_idx" ON "event" ("event_type", "occurred_at");
"#;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// The table is copied, dropped and renamed: all of it or nothing.
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_sqlite(manager, UP).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        run_on_sqlite(manager, DOWN).await
    }
}

async fn run_on_sqlite(manager: &SchemaManager<'_>, script: &str) -> Result<(), DbErr> {
    if manager.get_database_backend() == DbBackend::Sqlite {
        let script = script.replace("{columns}", EVENT_COLUMNS).replace("{definitions}", EVENT_DEFINITIONS);
        manager.get_connection().execute_unprepared(&script).await?;
    }
    Ok(())
}
