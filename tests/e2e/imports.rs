//! Contact imports: `rapport import contacts` run as operators run it against the test's
//! database, and the `importContacts` upload over GraphQL; the counts, the stored (decrypted)
//! data, the report of rejected rows, the recorded run with its contacts, its audit entry, and
//! the webhooks of the contacts it created or changed; a run whose process died is marked failed.

use std::{path::Path, process::Command};

use rapport::{
    domain::import::{Import, ImportCounts, ImportKey, ImportStatus},
    store::imports as runs,
};
use rapport_e2e::{TestApp, on_both_databases};
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::rapport_binary;

const DEFINE_FIELD: &str = "mutation($input: DefineFieldInput!) { defineField(input: $input) { key } }";

const CONTACT: &str = "query($email: String!) { contact(by: { email: $email }) {
    id externalId email firstName lastName country version attributes } }";

const IMPORTS: &str = "{ imports(first: 10) { nodes {
    id fileName key status actorKind actorId rows created updated unchanged rejected failure finishedAt
    rejections { line column reason }
    contacts(first: 50) { nodes { email } }
} } }";

async fn define_fields(app: &TestApp) {
    for input in [
        json!({ "key": "loyalty_tier", "label": "Tier", "type": "ENUM", "enumValues": ["gold", "silver"] }),
        json!({ "key": "lifetime_value", "label": "LTV", "type": "NUMBER" }),
        json!({ "key": "vip", "label": "VIP", "type": "BOOLEAN" }),
        json!({ "key": "nickname", "label": "Nickname", "type": "STRING", "personal": true }),
    ] {
        app.data(DEFINE_FIELD, json!({ "input": input })).await;
    }
}

/// Runs `rapport import contacts …` in `dir` against the app's database: (success, stdout, stderr).
pub(crate) fn import(app: &TestApp, dir: &Path, args: &[&str]) -> (bool, String, String) {
    let master_key = app.settings.master_key.as_ref().expect("master key").expose_secret().to_owned();
    let output = Command::new(rapport_binary())
        .args(["import", "contacts"])
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("RAPPORT_DATABASE_URL", &app.database_url)
        .env("RAPPORT_MASTER_KEY", master_key)
        .env("RAPPORT_LOG", "warn")
        .output()
        .expect("rapport runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

async fn contact(app: &TestApp, email: &str) -> Value {
    app.data(CONTACT, json!({ "email": email })).await["contact"].clone()
}

async fn imports(app: &TestApp) -> Vec<Value> {
    app.data(IMPORTS, json!({})).await["imports"]["nodes"].as_array().expect("nodes").clone()
}

fn emails(import: &Value) -> Vec<String> {
    let mut emails: Vec<String> = import["contacts"]["nodes"]
        .as_array()
        .expect("contacts")
        .iter()
        .map(|node| node["email"].as_str().expect("email").to_owned())
        .collect();
    emails.sort();
    emails
}

const MIXED: &str = "\
email,First Name,last_name,Loyalty Tier,lifetime_value,vip,nickname
ada@example.com,Ada,Lovelace,gold,12.5,yes,Countess
grace@example.com,Grace,Hopper,silver,3,no,Amazing Grace
not-an-address,Bad,Email,,,,
alan@example.com,Alan,Turing,platinum,,,
edsger@example.com,Edsger,Dijkstra,,lots,,
grace@example.com,,,gold,,,
barbara@example.com,Barbara,Liskov,,,,
";

on_both_databases! {
    async fn a_csv_file_is_imported_with_bad_rows_reported_and_the_good_ones_stored(app) {
        define_fields(&app).await;
        app.upsert_contact(json!({ "email": "ada@example.com", "firstName": "Ada", "attributes": { "loyalty_tier": "silver" } })).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("contacts.csv"), MIXED).unwrap();

        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv"]);
        assert!(success, "stdout: {stdout}\nstderr: {stderr}");
        assert!(
            stdout.contains("7 rows, 2 created, 2 updated, 0 unchanged, 3 rejected"),
            "stdout: {stdout}\nstderr: {stderr}"
        );

        // The report names line, column and reason, never the rejected value.
        let report = std::fs::read_to_string(dir.path().join("contacts.errors.csv")).expect("report written");
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines[0], "line,column,reason");
        assert_eq!(lines.len(), 4, "{report}");
        assert!(lines[1].starts_with("4,email,"), "{report}");
        assert!(lines[2].starts_with("5,Loyalty Tier,"), "{report}");
        assert!(lines[3].starts_with("6,lifetime_value,"), "{report}");
        for value in ["not-an-address", "platinum", "lots"] {
            assert!(!report.contains(value), "{report}");
            assert!(!stderr.contains(value), "{stderr}");
        }

        let ada = contact(&app, "ada@example.com").await;
        assert_eq!(ada["lastName"], "Lovelace");
        assert_eq!(ada["version"], 2);
        assert_eq!(
            ada["attributes"],
            json!({ "loyalty_tier": "gold", "lifetime_value": 12.5, "vip": true, "nickname": "Countess" })
        );
        // The second row of the same address built on the first.
        let grace = contact(&app, "grace@example.com").await;
        assert_eq!(grace["firstName"], "Grace");
        assert_eq!(grace["attributes"]["loyalty_tier"], "gold");
        assert_eq!(grace["attributes"]["nickname"], "Amazing Grace");
        assert_eq!(grace["version"], 1);
        assert!(contact(&app, "alan@example.com").await.is_null());

        let runs = imports(&app).await;
        assert_eq!(runs.len(), 1);
        let run = &runs[0];
        assert_eq!(run["fileName"], "contacts.csv");
        assert_eq!(run["key"], "EMAIL");
        assert_eq!(run["status"], "COMPLETED");
        assert_eq!(run["actorKind"], "system");
        assert_eq!(run["actorId"], "cli");
        assert!(run["finishedAt"].is_string());
        assert_eq!(
            [&run["rows"], &run["created"], &run["updated"], &run["unchanged"], &run["rejected"]],
            [7, 2, 2, 0, 3]
        );
        let rejected_lines: Vec<&Value> = run["rejections"].as_array().unwrap().iter().map(|row| &row["line"]).collect();
        assert_eq!(rejected_lines, [4, 5, 6]);
        assert_eq!(run["rejections"][1]["column"], "Loyalty Tier");
        assert_eq!(emails(run), ["ada@example.com", "barbara@example.com", "grace@example.com"]);

        // Programs and segments start from the same list through the contact filter.
        let filtered = app
            .data("query($id: ID!) { contacts(filter: { importId: $id }) { nodes { email } } }", json!({ "id": run["id"] }))
            .await;
        assert_eq!(filtered["contacts"]["nodes"].as_array().unwrap().len(), 3);

        // One audit entry for the whole run, none per contact.
        let audit = app
            .data(
                "query($filter: AuditFilter) { auditLog(filter: $filter, first: 10) { nodes { action targetId changes } } }",
                json!({ "filter": { "targetKind": "import" } }),
            )
            .await;
        let entries = audit["auditLog"]["nodes"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "{audit:#}");
        assert_eq!(entries[0]["action"], "contacts.imported");
        assert_eq!(entries[0]["targetId"], run["id"]);
        assert_eq!(entries[0]["changes"]["created"]["after"], 2);
        assert_eq!(entries[0]["changes"]["rejected"]["after"], 3);
    }

    #[settings(|settings: &mut rapport_e2e::Settings| settings.webhooks.allow_private_networks = true)]
    async fn an_import_announces_the_contacts_it_creates_and_changes_to_the_webhooks_that_want_them(app) {
        let mut receiver = rapport_e2e::webhooks::WebhookReceiver::start(0).await;
        let create = "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }";
        let input = json!({ "url": receiver.url(), "eventTypes": ["contact.created", "contact.updated"] });
        let created = app.data(create, json!({ "input": input })).await;
        receiver.set_secret(created["createWebhookEndpoint"]["secret"].as_str().unwrap()).await;
        let ada = app.upsert_contact(json!({ "email": "ada@example.com", "firstName": "Ada" })).await["id"].as_str().unwrap().to_owned();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("people.csv"), "email,first_name,country\nada@example.com,Ada,GB\ngrace@example.com,Grace,\nalan@example.com,Alan,GB\nnot-an-address,,\n").unwrap();
        let (success, stdout, stderr) = import(&app, dir.path(), &["people.csv", "--batch-size", "2"]);
        assert!(success, "{stdout}{stderr}");
        let import_id = imports(&app).await[0]["id"].clone();

        let received = receiver.wait_for(4).await;
        let mut announced: Vec<&Value> = received.iter().map(|report| &report["body"]).filter(|body| body["data"]["importId"] == import_id).collect();
        assert_eq!(announced.len(), 3, "one webhook per contact the import created or changed: {received:#?}");
        announced.sort_by_key(|body| body["data"]["changes"]["country"]["after"].as_str().map(str::to_owned));
        let grace = announced[0];
        assert_eq!(grace["type"], "contact.created", "{announced:#?}");
        assert_eq!(grace["data"]["changes"]["email"], json!({ "before": null, "after": "[redacted]" }), "personal values stay out: {grace}");
        let update = announced.iter().find(|body| body["data"]["contactId"] == ada.as_str()).expect("Ada's update");
        assert_eq!(update["type"], "contact.updated");
        assert_eq!(update["data"]["changes"], json!({ "country": { "before": null, "after": "GB" } }), "only what changed: {update}");
        let alan = announced.iter().find(|body| body["type"] == "contact.created" && body["data"]["changes"]["country"]["after"] == "GB").expect("Alan's creation");
        let alan_id = app.data(CONTACT, json!({ "email": "alan@example.com" })).await["contact"]["id"].clone();
        assert_eq!(alan["data"]["contactId"], alan_id);

        let (success, stdout, stderr) = import(&app, dir.path(), &["people.csv"]);
        assert!(success, "{stdout}{stderr}");
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        assert_eq!(receiver.delivered().len(), 4, "an import that changes nothing announces nothing");
    }

    async fn running_the_same_import_again_changes_nothing_and_duplicates_no_one(app) {
        define_fields(&app).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("contacts.csv"),
            "email,first_name,loyalty_tier\nada@example.com,Ada,gold\ngrace@example.com,Grace,silver\ngrace@example.com,,silver\nbad-address,,\n",
        )
        .unwrap();
        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv"]);
        assert!(success, "{stdout}{stderr}");
        assert!(stdout.contains("4 rows, 2 created, 0 updated, 1 unchanged, 1 rejected"), "{stdout}{stderr}");
        // Small batches this time: grace's second row lands in another batch than her first.
        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv", "--batch-size", "2"]);
        assert!(success, "{stdout}{stderr}");
        assert!(stdout.contains("4 rows, 0 created, 0 updated, 3 unchanged, 1 rejected"), "{stdout}{stderr}");
        let all = app.data("{ contacts(first: 100) { nodes { email version } } }", json!({})).await;
        let nodes = all["contacts"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 2, "{all:#}");
        assert!(nodes.iter().all(|node| node["version"] == 1), "{all:#}");
        let runs = imports(&app).await;
        assert_eq!(runs.len(), 2);
        assert_eq!(emails(&runs[0]), ["ada@example.com", "grace@example.com"]);
        assert_eq!(emails(&runs[0]), emails(&runs[1]));
    }

    async fn contacts_an_import_creates_name_it_in_their_row_and_only_stored_ones_are_linked(app) {
        use migration::{Migrator, MigratorTrait};
        use sea_orm::{ConnectionTrait, Statement};

        let dir = tempfile::tempdir().unwrap();
        let write = |content: &str| std::fs::write(dir.path().join("contacts.csv"), content).unwrap();
        write("email,first_name\nada@example.com,Ada\ngrace@example.com,Grace\ngrace@example.com,Grace\n");
        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv"]);
        assert!(success, "{stdout}{stderr}");
        // Lin is created in the first batch and met again in the second.
        write("email,first_name\nada@example.com,Ada\nlin@example.com,Lin\ngrace@example.com,Gracie\nlin@example.com,Linus\n");
        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv", "--batch-size", "2"]);
        assert!(success, "{stdout}{stderr}");
        assert!(stdout.contains("4 rows, 1 created, 2 updated, 1 unchanged, 0 rejected"), "{stdout}{stderr}");
        let runs = imports(&app).await;
        let (first, second) = (runs[1]["id"].as_str().unwrap().to_owned(), runs[0]["id"].as_str().unwrap().to_owned());
        let members = [emails(&runs[1]), emails(&runs[0])];
        assert_eq!(members[0], ["ada@example.com", "grace@example.com"]);
        assert_eq!(members[1], ["ada@example.com", "grace@example.com", "lin@example.com"]);

        let db = sea_orm::Database::connect(app.database_url.as_str()).await.expect("connect");
        let backend = db.get_database_backend();
        let count = |table: &'static str, import_id: &str| {
            let db = &db;
            let import_id = uuid::Uuid::parse_str(import_id).expect("an import id");
            async move {
                let placeholder = if backend == sea_orm::DbBackend::Sqlite { "?" } else { "$1" };
                let sql = format!("SELECT COUNT(*) FROM {table} WHERE import_id = {placeholder}");
                let statement = Statement::from_sql_and_values(backend, sql, [import_id.into()]);
                let row = db.query_one_raw(statement).await.expect("count").expect("a row");
                row.try_get_by_index::<i64>(0).expect("a count")
            }
        };
        assert_eq!((count("contact", &first).await, count("contact", &second).await), (2, 1), "who created whom");
        // Ada, Grace, and Lin, whom a later batch of the run that created her found again.
        assert_eq!((count("import_contact", &first).await, count("import_contact", &second).await), (0, 3));

        // Undone, every membership is a link again; redone, the links keep serving the lists.
        let undone = rapport_e2e::migrations_from("m20261206_000004_contact_import");
        Migrator::down(&db, Some(undone)).await.expect("migrate down");
        assert_eq!((count("import_contact", &first).await, count("import_contact", &second).await), (2, 3));
        Migrator::up(&db, None).await.expect("migrate up");
        db.close().await.ok();
        let runs = imports(&app).await;
        assert_eq!([emails(&runs[1]), emails(&runs[0])], members);
    }

    async fn values_sealed_while_parsing_give_way_to_later_rows_of_the_same_contact(app) {
        // The parsing thread seals each row for the contact it would create. Here the second row
        // of an address changes its first name and the third changes it back: what is stored
        // is the last state, and every personal value is still ciphertext.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("contacts.csv"),
            "email,first_name,last_name\nlin@example.com,Lin,Sealed-Early\nlin@example.com,Linus,\n\
             kay@example.com,Kay,Original\nkay@example.com,Kai,\nkay@example.com,Kay,\n",
        )
        .unwrap();
        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv"]);
        assert!(success, "{stdout}{stderr}");
        assert!(stdout.contains("5 rows, 2 created, 3 updated, 0 unchanged, 0 rejected"), "{stdout}{stderr}");
        let lin = contact(&app, "lin@example.com").await;
        assert_eq!((&lin["firstName"], &lin["lastName"], &lin["version"]), (&json!("Linus"), &json!("Sealed-Early"), &json!(1)));
        let kay = contact(&app, "kay@example.com").await;
        assert_eq!((&kay["firstName"], &kay["lastName"]), (&json!("Kay"), &json!("Original")));
        let raw = crate::encryption::raw_database(&app).await;
        for plaintext in ["Linus", "Sealed-Early", "Original", "lin@example.com", "kay@example.com"] {
            assert!(!raw.contains(plaintext), "{plaintext:?} is stored in clear");
        }
    }

    async fn a_contact_prepared_with_an_erased_phone_is_built_again_without_it(app) {
        // The parsing thread prepares Nikolaevna with the phone of her second row. That phone
        // belongs to an erased contact: the writer rejects the row and builds her again from
        // the first row alone, sealed as ever.
        let upsert = "mutation($input: UpsertContactInput!) { upsertContact(input: $input) { contact { id } } }";
        let ada = json!({ "input": { "email": "ada@example.com", "phone": "+44 20 7946 0001" } });
        let id = app.data(upsert, ada).await["upsertContact"]["contact"]["id"].clone();
        app.data("mutation($id: ID!) { eraseContact(id: $id) { contactId } }", json!({ "id": id })).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("contacts.csv"),
            "email,first_name,phone\nnia@example.com,Nikolaevna,\nnia@example.com,,+44 20 7946 0001\n",
        )
        .unwrap();
        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv"]);
        assert!(success, "{stdout}{stderr}");
        assert!(stdout.contains("2 rows, 1 created, 0 updated, 0 unchanged, 1 rejected"), "{stdout}{stderr}");
        let nia = app
            .data("query { contact(by: { email: \"nia@example.com\" }) { firstName phone version } }", json!({}))
            .await["contact"]
            .clone();
        assert_eq!(nia, json!({ "firstName": "Nikolaevna", "phone": null, "version": 1 }));
        let rejections = imports(&app).await[0]["rejections"].clone();
        assert_eq!(
            rejections,
            json!([{ "line": 3, "column": "phone", "reason": "this phone number was erased at its owner's request" }])
        );
        let raw = crate::encryption::raw_database(&app).await;
        assert!(!raw.contains("Nikolaevna"), "the first name is stored in clear");
    }

    async fn batches_written_side_by_side_end_as_if_written_in_file_order(app) {
        // Batches of two rows. On PostgreSQL a batch is written beside the one before it when
        // that one only creates contacts and the two share no address; a batch naming an
        // address of the one before waits for it. Either way the last row of an address wins.
        let dir = tempfile::tempdir().unwrap();
        let rows = [
            ("a", "A1"), ("b", "B1"),
            ("c", "C1"), ("d", "D1"),
            ("a", "A2"), ("e", "E1"),
            ("c", "C2"), ("c", "C3"),
            ("f", "F1"), ("g", "G1"),
            ("f", "F2"), ("h", "H1"),
            ("i", "I1"), ("j", "J1"),
            ("k", "K1"), ("i", "I2"),
        ];
        let mut file = String::from("email,first_name\n");
        for (who, name) in rows {
            file.push_str(&format!("{who}@example.com,{name}\n"));
        }
        std::fs::write(dir.path().join("contacts.csv"), file).unwrap();
        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv", "--batch-size", "2"]);
        assert!(success, "{stdout}{stderr}");
        assert!(stdout.contains("16 rows, 11 created, 5 updated, 0 unchanged, 0 rejected"), "{stdout}{stderr}");
        let expected = [
            ("a", "A2"), ("b", "B1"), ("c", "C3"), ("d", "D1"), ("e", "E1"), ("f", "F2"),
            ("g", "G1"), ("h", "H1"), ("i", "I2"), ("j", "J1"), ("k", "K1"),
        ];
        for (who, name) in expected {
            let stored = contact(&app, &format!("{who}@example.com")).await;
            assert_eq!(stored["firstName"], name, "{who}: {stored:#}");
        }
        let run = &imports(&app).await[0];
        assert_eq!([&run["rows"], &run["created"], &run["updated"]], [16, 11, 5]);
        assert_eq!(emails(run).len(), 11);
    }

    async fn a_mapping_overrides_header_names_and_unknown_columns_refuse_the_file(app) {
        define_fields(&app).await;
        app.upsert_contact(json!({ "externalId": "c-1", "email": "ada@example.com" })).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("crm.csv"),
            "Customer No,Mail,Tier,Shoe size\nc-1,,gold,38\nc-2,grace@example.com,silver,41\nc-3,ada@example.com,,40\n",
        )
        .unwrap();

        let (success, stdout, stderr) = import(&app, dir.path(), &["crm.csv", "--key", "external-id"]);
        assert!(!success, "{stdout}");
        assert!(stderr.contains("\"Customer No\" matches no contact field"), "{stderr}");
        assert!(imports(&app).await.is_empty(), "a refused file records no import");

        let (success, stdout, stderr) = import(
            &app,
            dir.path(),
            &[
                "crm.csv",
                "--key",
                "external-id",
                "--map",
                "Customer No=externalId",
                "--map",
                "Mail=email",
                "--map",
                "Tier=loyalty_tier",
                "--ignore-unknown",
                "--report",
                "problems.csv",
            ],
        );
        assert!(success, "{stdout}{stderr}");
        assert!(stdout.contains("3 rows, 1 created, 1 updated, 0 unchanged, 1 rejected"), "{stdout}");
        let ada = contact(&app, "ada@example.com").await;
        assert_eq!(ada["externalId"], "c-1");
        assert_eq!(ada["attributes"], json!({ "loyalty_tier": "gold" }));
        let grace = contact(&app, "grace@example.com").await;
        assert_eq!(grace["externalId"], "c-2");
        assert_eq!(grace["attributes"], json!({ "loyalty_tier": "silver" }));
        // c-3 would take the address of c-1.
        let report = std::fs::read_to_string(dir.path().join("problems.csv")).expect("report");
        assert!(report.contains("4,Mail,another contact has this email address"), "{report}");
    }

    async fn a_csv_file_uploaded_over_graphql_is_imported(app) {
        define_fields(&app).await;
        let operations = json!({
            "query": "mutation($file: Upload!, $mapping: [ColumnMappingInput!]) {
                importContacts(file: $file, mapping: $mapping) {
                    id fileName status actorKind rows created rejected rejections { line column reason }
                } }",
            "variables": { "file": null, "mapping": [{ "column": "tier", "field": "loyalty_tier" }] },
        });
        let csv = "email,first_name,tier\nada@example.com,Ada,gold\nbad,,\nlinus@example.com,Linus,silver\n";
        let form = || {
            reqwest::multipart::Form::new()
                .text("operations", operations.to_string())
                .text("map", json!({ "0": ["variables.file"] }).to_string())
                .part("0", reqwest::multipart::Part::bytes(csv.as_bytes().to_vec()).file_name("upload.csv").mime_str("text/csv").unwrap())
        };
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(rapport_e2e::ADMIN_TOKEN)
            .multipart(form())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        assert!(body.get("errors").is_none(), "{body:#}");
        let run = &body["data"]["importContacts"];
        assert_eq!(run["fileName"], "upload.csv");
        assert_eq!(run["status"], "COMPLETED");
        assert_eq!(run["actorKind"], "bootstrap");
        assert_eq!([&run["rows"], &run["created"], &run["rejected"]], [3, 2, 1]);
        assert_eq!(run["rejections"], json!([{ "line": 3, "column": "email", "reason": "is not a valid email address" }]));
        assert_eq!(contact(&app, "linus@example.com").await["attributes"], json!({ "loyalty_tier": "silver" }));

        // Reading profiles is not enough to import them.
        let analyst = app.signed_in_token("analyst@example.com", "ANALYST").await;
        let response =
            app.client.post(app.url("/graphql")).bearer_auth(analyst).multipart(form()).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "{body:#}");
        assert_eq!(imports(&app).await.len(), 1);
    }

    async fn a_run_that_stops_committing_batches_is_marked_failed_and_a_slow_one_is_not(app) {
        let conn = app.services.database().connection();
        let now = chrono::Utc::now();
        let long_ago = now - chrono::Duration::minutes(20);
        let run = |started_at| Import {
            id: uuid::Uuid::now_v7(),
            file_name: "people.csv".to_owned(),
            key: ImportKey::Email,
            actor_kind: "cli".to_owned(),
            actor_id: None,
            request_id: "req-1".to_owned(),
            status: ImportStatus::Running,
            started_at,
            finished_at: None,
            counts: ImportCounts::default(),
            failure: None,
        };
        // Runs as their processes left them: one that died twenty minutes in, one as long under
        // way but with a batch just committed, and one just started.
        let (died, slow, fresh) = (run(long_ago), run(long_ago), run(now));
        for import in [&died, &slow, &fresh] {
            runs::insert(conn, import).await.unwrap();
        }
        let batch = ImportCounts { rows: 10, created: 10, ..ImportCounts::default() };
        runs::add_counts(conn, slow.id, &batch, now).await.unwrap();

        assert_eq!(app.services.fail_stalled_imports().await.unwrap(), 1);
        let statuses: Vec<(Value, Value)> = imports(&app).await.into_iter().map(|run| (run["id"].clone(), run["status"].clone())).collect();
        assert_eq!(statuses, [
            (json!(fresh.id), json!("RUNNING")),
            (json!(slow.id), json!("RUNNING")),
            (json!(died.id), json!("FAILED")),
        ]);
        let failed = &imports(&app).await[2];
        assert!(failed["failure"].as_str().unwrap().starts_with("interrupted"), "{failed:#}");
        assert!(!failed["finishedAt"].is_null());
        let audit = app.data("{ auditLog(filter: { action: \"contacts.imported\" }) { nodes { targetId changes } } }", json!({})).await;
        let nodes = audit["auditLog"]["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), 1, "{nodes:#?}");
        assert_eq!(nodes[0]["targetId"], json!(died.id));
        assert_eq!(nodes[0]["changes"]["status"]["after"], "failed");
        assert_eq!(app.services.fail_stalled_imports().await.unwrap(), 0, "marked once");
        let statistics = app.data("{ statistics { importsRunning } }", json!({})).await;
        assert_eq!(statistics["statistics"]["importsRunning"], 2);
    }

    async fn an_upload_whose_client_hangs_up_is_imported_to_the_end(app) {
        let mut csv = String::from("email,first_name\n");
        for n in 0..30_000 {
            csv.push_str(&format!("person{n}@example.com,P{n}\n"));
        }
        let operations = json!({ "query": "mutation($file: Upload!) { importContacts(file: $file) { id } }", "variables": { "file": null } });
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", json!({ "0": ["variables.file"] }).to_string())
            .part("0", reqwest::multipart::Part::bytes(csv.into_bytes()).file_name("people.csv"));
        let request = app.client.post(app.url("/graphql")).bearer_auth(rapport_e2e::ADMIN_TOKEN).multipart(form).send();
        let client = tokio::spawn(request);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        while imports(&app).await.is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "the import never started");
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        // The client hangs up while the import runs.
        client.abort();
        let finished = loop {
            let run = imports(&app).await.remove(0);
            if run["status"] != "RUNNING" {
                break run;
            }
            assert!(tokio::time::Instant::now() < deadline, "still running: {run:#}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        };
        assert_eq!(finished["status"], "COMPLETED", "{finished:#}");
        assert_eq!([&finished["rows"], &finished["created"]], [30_000, 30_000]);
        assert_eq!(contact(&app, "person29999@example.com").await["firstName"], "P29999");
    }

    // Deleting a contact destroys its data key (crypto-shredding) whether a foreign key or,
    // from `m20261207_000002`, a trigger does it; the migration keeps every key both ways.
    async fn a_deleted_contact_takes_its_data_key_with_it_across_the_trigger_migration(app) {
        use migration::{Migrator, MigratorTrait};

        define_fields(&app).await;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("contacts.csv"), MIXED).unwrap();
        let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv"]);
        assert!(success, "stdout: {stdout}\nstderr: {stderr}");
        let keys = || crate::encryption::query_strings(&app.database_url, "SELECT master_key_id FROM contact_key");
        let delete = |email: &'static str| {
            let app = &app;
            async move {
                let id = contact(app, email).await["id"].clone();
                let deleted = app.data("mutation($id: ID!) { deleteContact(id: $id) { deletedContactId } }", json!({ "id": id })).await;
                assert_eq!(deleted["deleteContact"]["deletedContactId"], id);
            }
        };
        let stored = keys().await.len();
        assert_eq!(stored, 3, "one key per imported contact: Ada, Grace and Barbara");
        let connection = sea_orm::Database::connect(app.database_url.as_str()).await.expect("connect");
        let trigger = rapport_e2e::migrations_from("m20261207_000002_data_key_deletion_trigger");

        Migrator::down(&connection, Some(trigger)).await.expect("migrate down");
        assert_eq!(keys().await.len(), stored, "every key is kept");
        delete("ada@example.com").await;
        assert_eq!(keys().await.len(), stored - 1, "the foreign key deleted Ada's key");

        Migrator::up(&connection, None).await.expect("migrate up");
        assert_eq!(keys().await.len(), stored - 1, "every key is kept");
        delete("grace@example.com").await;
        assert_eq!(keys().await.len(), stored - 2, "the trigger deleted Grace's key");
        let barbara = contact(&app, "barbara@example.com").await;
        assert_eq!(barbara["lastName"], "Liskov", "the contact left is readable with its key");
    }
}

/// The migration that clusters values, data keys and import links on their keys (SQLite only)
/// keeps every imported contact readable, in both directions. Going below it means undoing the
/// migrations after it too (values in the contact's row, the import that created a contact, the
/// partial indexes).
#[tokio::test]
async fn clustering_the_contact_tables_on_sqlite_keeps_every_imported_contact() {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, DbBackend, Statement};

    let app = rapport_e2e::spawn_app(rapport_e2e::Backend::Sqlite).await;
    define_fields(&app).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("contacts.csv"), MIXED).unwrap();
    let (success, stdout, stderr) = import(&app, dir.path(), &["contacts.csv"]);
    assert!(success, "stdout: {stdout}\nstderr: {stderr}");
    let before =
        (contact(&app, "ada@example.com").await, contact(&app, "grace@example.com").await, imports(&app).await);
    assert_eq!(before.0["attributes"]["nickname"], "Countess", "a sealed value");

    let connection = sea_orm::Database::connect(app.database_url.as_str()).await.expect("connect");
    let clustered = |table: &'static str| {
        let connection = connection.clone();
        async move {
            let sql = "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?";
            let statement = Statement::from_sql_and_values(DbBackend::Sqlite, sql, [table.into()]);
            let row = connection.query_one_raw(statement).await.expect("schema").expect("the table");
            row.try_get_by_index::<String>(0).expect("sql").contains("WITHOUT ROWID")
        }
    };
    let tables = ["contact_key", "import_contact"];
    let broken_references = || async {
        let statement = Statement::from_string(DbBackend::Sqlite, "PRAGMA foreign_key_check");
        connection.query_all_raw(statement).await.expect("check").len()
    };
    for table in tables {
        assert!(clustered(table).await, "{table} is clustered on its key");
    }

    Migrator::down(&connection, Some(rapport_e2e::migrations_from("m20261206_000002_clustered_contact_tables")))
        .await
        .expect("migrate down");
    for table in ["contact_attribute", "contact_key", "import_contact"] {
        assert!(!clustered(table).await, "{table} has rowids again");
    }
    assert_eq!(broken_references().await, 0);

    Migrator::up(&connection, None).await.expect("migrate up");
    for table in tables {
        assert!(clustered(table).await, "{table} is clustered again");
    }
    assert_eq!(broken_references().await, 0);
    let after = (contact(&app, "ada@example.com").await, contact(&app, "grace@example.com").await, imports(&app).await);
    assert_eq!(after, before, "values, keys and import links all carried over");
}
