//! Personal data encrypted at rest, checked from outside the application: the raw database holds
//! no plaintext of what was written, lookups and uniqueness still work through the blind index,
//! ciphertexts are bound to their row, and master key rotation and key loading behave as the
//! README describes.

use std::{path::Path, process::Command, sync::Arc};

use rapport::crypto::MasterKey;
use rapport_e2e::{ADMIN_TOKEN, Backend, Storage, TestApp, on_both_databases, respawn, spawn_on};

use crate::rapport_binary;
use sea_orm::{ConnectionTrait, Database, Statement};
use secrecy::SecretString;
use serde_json::{Value, json};

const UPSERT: &str = "mutation($input: UpsertContactInput!) { upsertContact(input: $input) { contact { id } } }";
const UPDATE: &str = "mutation($input: UpdateContactInput!) { updateContact(input: $input) { id } }";
const LOOKUP: &str =
    "query($by: ContactLookup!) { contact(by: $by) { id externalId email phone firstName lastName attributes } }";
const ALL: &str = "{ contacts(first: 100) { nodes { id externalId email phone firstName lastName attributes } } }";
const DEFINE_FIELD: &str = "mutation($input: DefineFieldInput!) { defineField(input: $input) { key } }";

/// Plaintexts the tests write, as the application stores them after normalising.
const SECRETS: [&str; 7] = [
    "ada.lovelace@example.com",
    "4930123456",
    "Augusta",
    "Lovelace",
    "Difference-Engine",
    "1815-12-10",
    "grace.hopper@example.com",
];

async fn create_people(app: &TestApp) {
    for (key, kind) in [("nickname", "STRING"), ("birthday", "DATE")] {
        app.data(DEFINE_FIELD, json!({ "input": { "key": key, "label": key, "type": kind, "personal": true } })).await;
    }
    app.data(DEFINE_FIELD, json!({ "input": { "key": "plan", "label": "Plan", "type": "STRING" } })).await;
    for input in [
        json!({
            "externalId": "crm-visible-ada", "email": "Ada.Lovelace@example.com", "phone": "+49 30 123456",
            "firstName": "Augusta", "lastName": "Lovelace",
            "attributes": { "nickname": "Difference-Engine", "birthday": "1815-12-10", "plan": "plan-visible-gold" },
        }),
        json!({ "externalId": "crm-visible-grace", "email": "grace.hopper@example.com", "firstName": "Grace" }),
    ] {
        app.data(UPSERT, json!({ "input": input })).await;
    }
}

/// Every byte the database holds: the SQLite files (WAL included), or every row of every
/// PostgreSQL table cast to text.
pub(crate) async fn raw_database(app: &TestApp) -> String {
    if let Some(dir) = app.sqlite_dir() {
        let mut bytes = Vec::new();
        for entry in std::fs::read_dir(dir).expect("database directory") {
            let path = entry.expect("directory entry").path();
            if path.file_name().is_some_and(|name| name.to_string_lossy().starts_with("rapport.db")) {
                bytes.extend(std::fs::read(&path).expect("database file"));
            }
        }
        return String::from_utf8_lossy(&bytes).into_owned();
    }
    let db = Database::connect(&app.database_url).await.expect("test database");
    let backend = db.get_database_backend();
    let tables = db
        .query_all_raw(Statement::from_string(
            backend,
            "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = 'public'",
        ))
        .await
        .expect("table list");
    let mut text = String::new();
    for table in tables {
        let name: String = table.try_get("", "name").expect("table name");
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!("SELECT CAST(t.* AS text) AS row FROM \"{name}\" t"),
            ))
            .await
            .expect("table rows");
        for row in rows {
            text.push_str(&row.try_get::<String>("", "row").expect("row as text"));
            text.push('\n');
        }
    }
    db.close().await.ok();
    text
}

pub(crate) async fn execute(app: &TestApp, sql: &str) {
    let db = Database::connect(&app.database_url).await.expect("test database");
    db.execute_unprepared(sql).await.expect("statement runs");
    db.close().await.ok();
}

pub(crate) async fn query_strings(database_url: &str, sql: &str) -> Vec<String> {
    let db = Database::connect(database_url).await.expect("test database");
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect("query");
    db.close().await.ok();
    rows.iter().map(|row| row.try_get_by_index::<String>(0).expect("a text column")).collect()
}

fn sorted_contacts(data: &Value) -> Vec<Value> {
    let mut nodes = data["contacts"]["nodes"].as_array().expect("contact nodes").clone();
    nodes.sort_by_key(|node| node["id"].to_string());
    nodes
}

fn run_rotate(database_url: &str, current: &str, previous: &str, args: &[&str]) -> std::process::Output {
    Command::new(rapport_binary())
        .args(["keys", "rotate"])
        .args(args)
        .env_clear()
        .env("RAPPORT_DATABASE_URL", database_url)
        .env("RAPPORT_MASTER_KEY", current)
        .env("RAPPORT_PREVIOUS_MASTER_KEY", previous)
        .output()
        .expect("rapport runs")
}

pub(crate) fn secret(settings_key: &Option<SecretString>) -> String {
    secrecy::ExposeSecret::expose_secret(settings_key.as_ref().expect("a master key")).to_owned()
}

on_both_databases! {
    async fn no_plaintext_email_phone_name_or_personal_field_is_stored_anywhere(app) {
        create_people(&app).await;
        let ada = app.data(LOOKUP, json!({ "by": { "externalId": "crm-visible-ada" } })).await["contact"].clone();
        assert_eq!(ada["email"], "Ada.Lovelace@example.com");
        assert_eq!(ada["firstName"], "Augusta");
        assert_eq!(ada["attributes"]["nickname"], "Difference-Engine");
        assert_eq!(ada["attributes"]["birthday"], "1815-12-10");

        let raw = raw_database(&app).await;
        // The scan sees the data: values that are not personal are there in clear.
        assert!(raw.contains("crm-visible-ada") && raw.contains("plan-visible-gold"), "the scan missed the data");
        for plaintext in SECRETS {
            assert!(!raw.contains(plaintext), "{plaintext:?} is stored in clear");
            assert!(!raw.to_lowercase().contains(&plaintext.to_lowercase()), "{plaintext:?} is stored in clear");
        }
    }

    async fn lookup_by_email_works_and_a_taken_email_is_a_conflict_on_email(app) {
        create_people(&app).await;
        let by_email = app.data(LOOKUP, json!({ "by": { "email": " Ada.Lovelace@EXAMPLE.com " } })).await;
        assert_eq!(by_email["contact"]["externalId"], "crm-visible-ada");
        let grace = app.data(LOOKUP, json!({ "by": { "email": "grace.hopper@example.com" } })).await["contact"].clone();

        let error = app
            .error(UPDATE, json!({ "input": { "id": grace["id"], "expectedVersion": 1, "email": "Ada.Lovelace@example.com" } }))
            .await;
        assert_eq!(error["extensions"]["code"], "CONFLICT", "{error:#}");
        assert_eq!(error["extensions"]["field"], "email", "{error:#}");
        let error = app
            .error(UPSERT, json!({ "input": { "externalId": "crm-new", "email": "Ada.Lovelace@example.com" } }))
            .await;
        assert_eq!(error["extensions"]["code"], "CONFLICT", "{error:#}");
        assert_eq!(error["extensions"]["field"], "email", "{error:#}");
    }

    async fn a_ciphertext_copied_to_another_contact_does_not_decrypt_and_reveals_nothing(app) {
        create_people(&app).await;
        execute(&app, "UPDATE contact SET first_name = (SELECT first_name FROM contact WHERE external_id = 'crm-visible-ada') \
                       WHERE external_id = 'crm-visible-grace'").await;
        let body = app.graphql(LOOKUP, json!({ "by": { "externalId": "crm-visible-grace" } })).await;
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "INTERNAL", "{body:#}");
        assert!(error["message"].as_str().is_some_and(|message| message.starts_with("internal error (request id")), "{body:#}");
        let text = body.to_string();
        assert!(!text.contains("Augusta") && !text.contains("decrypt") && !text.contains("first_name"), "{text}");
        // The contact the ciphertext came from still reads.
        let ada = app.data(LOOKUP, json!({ "by": { "externalId": "crm-visible-ada" } })).await;
        assert_eq!(ada["contact"]["firstName"], "Augusta");
    }

    async fn filters_comparing_personal_field_values_are_refused_with_a_reason(app) {
        create_people(&app).await;
        let query = "query($filter: ContactFilter) { contacts(filter: $filter, first: 10) { nodes { externalId } } }";
        let filter = json!({ "attributes": [{ "field": "nickname", "comparison": "EQUAL", "value": "Difference-Engine" }] });
        let error = app.error(query, json!({ "filter": filter })).await;
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{error:#}");
        assert!(error["message"].as_str().is_some_and(|message| message.contains("personal")), "{error:#}");
        let is_set = json!({ "attributes": [{ "field": "nickname", "isSet": true }] });
        let data = app.data(query, json!({ "filter": is_set })).await;
        assert_eq!(data["contacts"]["nodes"], json!([{ "externalId": "crm-visible-ada" }]));
    }

    async fn rotation_rewraps_every_data_key_and_resumes_after_an_interruption(app) {
        create_people(&app).await;
        for i in 0..5 {
            app.data(UPSERT, json!({ "input": { "email": format!("person{i}@example.com"), "lastName": "Many" } })).await;
        }
        let before = sorted_contacts(&app.data(ALL, json!({})).await);
        assert_eq!(before.len(), 7);
        let old = secret(&app.settings.master_key);
        let new = MasterKey::generate();
        let new_base64 = new.to_base64();

        // One batch of three, then stop, as if interrupted; the old server keeps running.
        let output = run_rotate(&app.database_url, &new_base64, &old, &["--batch-size", "3", "--max-batches", "1"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let ids = query_strings(&app.database_url, "SELECT master_key_id FROM contact_key").await;
        assert_eq!(ids.iter().filter(|id| *id == new.id()).count(), 3, "{ids:?}");

        // A server that holds both keys reads every contact mid-rotation.
        let mut settings = app.settings.clone();
        settings.master_key = Some(SecretString::from(new_base64.clone()));
        settings.previous_master_key = Some(SecretString::from(old.clone()));
        let during = respawn(&app, settings.clone()).await;
        assert_eq!(sorted_contacts(&during.data(ALL, json!({})).await), before);

        let output = run_rotate(&app.database_url, &new_base64, &old, &["--batch-size", "3"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let ids = query_strings(&app.database_url, "SELECT master_key_id FROM contact_key").await;
        assert_eq!(ids.len(), 7);
        assert!(ids.iter().all(|id| id == new.id()), "{ids:?}");
        let index_key = query_strings(&app.database_url, "SELECT master_key_id FROM blind_index_key").await;
        assert_eq!(index_key, [new.id()]);

        // Once done, the new key alone reads everything, lookups by email included.
        settings.previous_master_key = None;
        let after = respawn(&app, settings).await;
        assert_eq!(sorted_contacts(&after.data(ALL, json!({})).await), before);
        let ada = after.data(LOOKUP, json!({ "by": { "email": "Ada.Lovelace@example.com" } })).await;
        assert_eq!(ada["contact"]["firstName"], "Augusta");
    }

    async fn a_rotation_batch_larger_than_one_statement_rewraps_every_key_to_its_own_contact(app) {
        // 2,500 keys in one batch: the store writes them 1,000 to a statement.
        let dir = tempfile::tempdir().expect("a temporary directory");
        let rows: String = (0..2_500).map(|n| format!("person{n}@example.com,First{n}\n")).collect();
        std::fs::write(dir.path().join("people.csv"), format!("email,first_name\n{rows}")).expect("the file");
        let (success, stdout, stderr) = crate::imports::import(&app, dir.path(), &["people.csv"]);
        assert!(success, "{stdout}{stderr}");
        let old = secret(&app.settings.master_key);

        let new = MasterKey::generate();
        let output = run_rotate(&app.database_url, &new.to_base64(), &old, &["--batch-size", "5000"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let ids = query_strings(&app.database_url, "SELECT master_key_id FROM contact_key").await;
        assert_eq!(ids.len(), 2_500);
        assert!(ids.iter().all(|id| id == new.id()), "every key is under the new master key");

        // A key written to another contact's row would not unwrap: each is bound to its contact.
        let mut settings = app.settings.clone();
        settings.master_key = Some(SecretString::from(new.to_base64()));
        settings.previous_master_key = None;
        let after = respawn(&app, settings).await;
        for n in [0, 999, 1_000, 1_999, 2_000, 2_499] {
            let found = after.data(LOOKUP, json!({ "by": { "email": format!("person{n}@example.com") } })).await;
            assert_eq!(found["contact"]["firstName"], format!("First{n}"), "person{n}");
        }
    }
}

/// Runs `rapport serve` with only these variables and returns its stderr.
fn serve_fails(dir: &Path, env: &[(&str, &str)]) -> String {
    let output = Command::new(rapport_binary())
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("RAPPORT_LISTEN", "127.0.0.1:0")
        .env("RAPPORT_ADMIN_TOKEN", ADMIN_TOKEN)
        .envs(env.iter().copied())
        .output()
        .expect("rapport runs");
    assert!(!output.status.success(), "rapport serve started");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[test]
fn a_missing_or_garbage_master_key_is_a_one_line_error_naming_the_variable() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let postgres = rapport_e2e::postgres_admin_url();
    let short = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [7u8; 16]);
    for (database_url, key) in [
        ("sqlite://rapport.db?mode=rwc", Some("garbage-key!")),
        ("sqlite://rapport.db?mode=rwc", Some(short.as_str())),
        (postgres.as_str(), Some("garbage-key!")),
        (postgres.as_str(), None),
    ] {
        let mut env = vec![("RAPPORT_DATABASE_URL", database_url)];
        if let Some(key) = key {
            env.push(("RAPPORT_MASTER_KEY", key));
        }
        let stderr = serve_fails(dir.path(), &env);
        let line = last_line(&stderr);
        assert!(line.starts_with("rapport: ") && line.contains("RAPPORT_MASTER_KEY"), "{stderr}");
        if let Some(key) = key {
            assert!(!stderr.contains(key), "the key was printed: {stderr}");
        }
    }
    assert!(!dir.path().join("rapport.db").exists(), "a server without a usable key touched the database");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_sqlite_start_generates_rapport_key_readable_by_its_owner_only_and_reuses_it() {
    let storage = Arc::new(Storage::create(Backend::Sqlite).await);
    let settings = rapport::config::Settings {
        database_url: storage.url(),
        listen: "127.0.0.1:0".parse().expect("address"),
        admin_token: Some(SecretString::from(ADMIN_TOKEN)),
        ..rapport::config::Settings::default()
    };
    let first = spawn_on(Arc::clone(&storage), settings.clone()).await;
    let key_file = first.sqlite_dir().expect("a SQLite directory").join("rapport.key");
    let key = std::fs::read_to_string(&key_file).expect("rapport.key was generated");
    assert!(MasterKey::parse(&key).is_ok(), "rapport.key holds a master key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).expect("key file metadata").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "rapport.key mode is {:o}", mode & 0o777);
    }
    first.data(UPSERT, json!({ "input": { "email": "ada.lovelace@example.com", "firstName": "Augusta" } })).await;
    drop(first);

    let second = spawn_on(storage, settings).await;
    assert_eq!(std::fs::read_to_string(&key_file).expect("rapport.key"), key, "the key file was replaced");
    let ada = second.data(LOOKUP, json!({ "by": { "email": "ada.lovelace@example.com" } })).await;
    assert_eq!(ada["contact"]["firstName"], "Augusta");
}
