//! A contact's custom field values move from rows of `contact_attribute` into one JSON document
//! in the contact's own row, `contact.attributes`: `{"<field>": {"<type>": value}}` for a value in
//! clear and `{"<field>": {"sealed": "<envelope>", "type": "<type>"}}` for a personal one. The
//! type names are the field types (`string`, `enum`, `number`, `boolean`, `date`, `datetime`),
//! so a comparison reads the path of its operand's type, as it read that type's column before; a
//! date-time is `YYYY-MM-DDTHH:MM:SS.ffffffZ`, whose text sorts as its time does.
//!
//! Why: every value was a row of its own with its own entries in three indexes, two foreign keys
//! to check, and on SQLite keys in random order in the value indexes. That was half of what the
//! database did per imported contact (BENCHMARKS.md, "Where the import's time goes"). In the
//! contact's row a value costs a few bytes. The price is that no index serves a comparison on a
//! custom field any more: a filter reads the contacts' rows, as a segment evaluated over all
//! contacts reads them anyway.

use sea_orm_migration::prelude::*;

pub struct Migration;

impl MigrationName for Migration {
    fn name(&self) -> &str {
        "m20261206_000003_attributes_in_contact_row"
    }
}

/// A number goes through `quote`, which writes as many digits as the double needs to read back
/// the same (the JSON functions write 15).
const SQLITE_UP: &str = r#"
ALTER TABLE contact ADD COLUMN attributes json_text NOT NULL DEFAULT '{}';
UPDATE contact SET attributes = (
    SELECT json_group_object(a.field_key, CASE
        WHEN a.sealed THEN json_object('sealed', a.value_text, 'type', a.value_type)
        WHEN a.value_type = 'number' THEN json_object('number', json(quote(a.value_number)))
        WHEN a.value_type = 'boolean' THEN json_object('boolean', json(CASE WHEN a.value_bool THEN 'true' ELSE 'false' END))
        WHEN a.value_type = 'datetime' THEN json_object('datetime',
            substr(a.value_time, 1, 10) || 'T' || substr(a.value_time, 12, 8) || '.' ||
            substr(CASE WHEN substr(a.value_time, 20, 1) = '.'
                THEN substr(a.value_time, 21, instr(substr(a.value_time, 21), '+') - 1) ELSE '' END || '000000', 1, 6) || 'Z')
        ELSE json_object(a.value_type, a.value_text)
    END)
    FROM contact_attribute a WHERE a.contact_id = contact.id
) WHERE id IN (SELECT contact_id FROM contact_attribute);
DROP TABLE contact_attribute;
"#;

/// The value rows again, from the documents, in the table as the clustering migration left it;
/// values of fields no longer defined have nowhere to go.
const SQLITE_DOWN: &str = r#"
CREATE TABLE contact_attribute (
    contact_id uuid_text NOT NULL REFERENCES contact (id) ON DELETE CASCADE,
    field_key varchar(64) NOT NULL REFERENCES field_definition (key) ON DELETE CASCADE,
    value_type varchar(16) NOT NULL,
    value_text text NULL,
    value_number double NULL,
    value_bool boolean NULL,
    value_time timestamp_with_timezone_text NULL,
    sealed boolean NOT NULL DEFAULT FALSE,
    PRIMARY KEY (contact_id, field_key)
) WITHOUT ROWID;
INSERT INTO contact_attribute (contact_id, field_key, value_type, value_text, value_number, value_bool, value_time, sealed)
SELECT c.id, j.key,
    CASE
        WHEN json_type(j.value, '$.sealed') IS NOT NULL THEN json_extract(j.value, '$.type')
        ELSE (SELECT t.key FROM json_each(j.value) t LIMIT 1)
    END,
    coalesce(json_extract(j.value, '$.sealed'), json_extract(j.value, '$.string'),
        json_extract(j.value, '$.enum'), json_extract(j.value, '$.date')),
    json_extract(j.value, '$.number'),
    json_extract(j.value, '$.boolean'),
    replace(json_extract(j.value, '$.datetime'), 'Z', '+00:00'),
    json_type(j.value, '$.sealed') IS NOT NULL
FROM contact c, json_each(c.attributes) j
WHERE j.key IN (SELECT key FROM field_definition);
CREATE INDEX contact_attribute_text_idx ON contact_attribute (field_key, value_text);
CREATE INDEX contact_attribute_number_idx ON contact_attribute (field_key, value_number) WHERE value_number IS NOT NULL;
CREATE INDEX contact_attribute_time_idx ON contact_attribute (field_key, value_time) WHERE value_time IS NOT NULL;
ALTER TABLE contact DROP COLUMN attributes;
"#;

const POSTGRES_UP: &str = r#"
ALTER TABLE contact ADD COLUMN attributes jsonb NOT NULL DEFAULT '{}'::jsonb;
UPDATE contact SET attributes = documents.document
FROM (
    SELECT contact_id, jsonb_object_agg(field_key, CASE
        WHEN sealed THEN jsonb_build_object('sealed', value_text, 'type', value_type)
        WHEN value_type = 'number' THEN jsonb_build_object('number', value_number)
        WHEN value_type = 'boolean' THEN jsonb_build_object('boolean', value_bool)
        WHEN value_type = 'datetime' THEN jsonb_build_object('datetime',
            to_char(value_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'))
        ELSE jsonb_build_object(value_type, value_text)
    END) AS document
    FROM contact_attribute GROUP BY contact_id
) AS documents
WHERE documents.contact_id = contact.id;
DROP TABLE contact_attribute;
"#;

const POSTGRES_DOWN: &str = r#"
CREATE TABLE contact_attribute (
    contact_id uuid NOT NULL REFERENCES contact (id) ON DELETE CASCADE,
    field_key varchar(64) NOT NULL REFERENCES field_definition (key) ON DELETE CASCADE,
    value_type varchar(16) NOT NULL,
    value_text text NULL,
    value_number double precision NULL,
    value_bool boolean NULL,
    value_time timestamp with time zone NULL,
    sealed boolean NOT NULL DEFAULT FALSE,
    PRIMARY KEY (contact_id, field_key)
);
INSERT INTO contact_attribute (contact_id, field_key, value_type, value_text, value_number, value_bool, value_time, sealed)
SELECT c.id, j.key,
    CASE WHEN jsonb_exists(j.value, 'sealed') THEN j.value ->> 'type'
        ELSE (SELECT min(k) FROM jsonb_object_keys(j.value) k) END,
    coalesce(j.value ->> 'sealed', j.value ->> 'string', j.value ->> 'enum', j.value ->> 'date'),
    (j.value ->> 'number')::double precision,
    (j.value ->> 'boolean')::boolean,
    (j.value ->> 'datetime')::timestamp with time zone,
    jsonb_exists(j.value, 'sealed')
FROM contact c, jsonb_each(c.attributes) j
WHERE j.key IN (SELECT key FROM field_definition);
CREATE INDEX contact_attribute_text_idx ON contact_attribute (field_key, value_text);
CREATE INDEX contact_attribute_number_idx ON contact_attribute (field_key, value_number) WHERE value_number IS NOT NULL;
CREATE INDEX contact_attribute_time_idx ON contact_attribute (field_key, value_time) WHERE value_time IS NOT NULL;
ALTER TABLE contact DROP COLUMN attributes;
"#;

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
