//! The data subject's rights end to end: the export holds every section with what the API wrote
//! (over GraphQL and from the command line, both audited); the erasure removes the contact, its
//! plaintext and its data key, counts what went in a receipt and an audit tombstone, leaves the
//! chain verifiable and the other contacts as they were, and keeps the erased address out until
//! a new consent is captured with it.

use std::process::Command;

use rapport_e2e::{TestApp, assert_error, assert_rejected, on_both_databases, smtp::python};
use serde_json::{Value, json};

use crate::{
    audit::verify,
    encryption::{execute, query_strings, raw_database, secret},
    rapport_binary,
};

const UPSERT: &str = "mutation($input: UpsertContactInput!) { upsertContact(input: $input) { created contact { id consents { purpose status } } } }";
const UPDATE: &str = "mutation($input: UpdateContactInput!) { updateContact(input: $input) { id } }";
const SET_CONSENT: &str = "mutation($input: SetConsentInput!) { setConsent(input: $input) { id } }";
const EXPORT: &str = "query($id: ID!) { contactExport(id: $id) }";
const ERASE: &str = "mutation($id: ID!) { eraseContact(id: $id) {
    id contactId erasedAt suppressedAddresses
    erased { profileFields customFields consentDecisions topicSubscriptions events dataKeyDestroyed }
} }";
const AUDIT: &str = "query($filter: AuditFilter) { auditLog(filter: $filter, first: 100) {
    nodes { id action targetKind targetId actor { kind id } changes }
} }";
const LOOKUP: &str = "query($by: ContactLookup!) { contact(by: $by) { id email firstName } }";

/// What Ada's erasure must leave nowhere in the database, as she gave it.
const ADA_PLAINTEXT: [&str; 4] = ["Ada.Lovelace@example.com", "ada.lovelace@example.com", "Augusta", "Enchantress"];

/// Ada, with something in every section of the export: fields (personal and not), a consent
/// history with proof, a subscription, events (one repeating her address and name, as mail
/// events do), and audit entries. Returns her id.
async fn create_ada(app: &TestApp) -> String {
    for (key, personal) in [("nickname", true), ("plan", false)] {
        app.data(
            "mutation($input: DefineFieldInput!) { defineField(input: $input) { key } }",
            json!({ "input": { "key": key, "label": key, "type": "STRING", "personal": personal } }),
        )
        .await;
    }
    app.data("mutation { defineTopic(input: { key: \"news\", name: \"News\" }) { key } }", json!({})).await;
    let input = json!({
        "externalId": "crm-ada", "email": "Ada.Lovelace@example.com", "phone": "+44 20 7946 0001",
        "firstName": "Augusta", "lastName": "Lovelace", "locale": "en-GB",
        "attributes": { "nickname": "Enchantress", "plan": "pro" },
    });
    let id = app.data(UPSERT, json!({ "input": input })).await["upsertContact"]["contact"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.data(UPDATE, json!({ "input": { "id": id, "expectedVersion": 1, "country": "GB" } })).await;
    for decision in [
        json!({ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED", "source": "FORM",
                "capturedAt": "2026-01-10T09:00:00Z",
                "proof": { "ip": "203.0.113.7", "userAgent": "Mozilla/5.0", "wordingId": "newsletter", "wordingVersion": "3" } }),
        json!({ "purpose": "marketing", "channel": "EMAIL", "status": "DENIED", "capturedAt": "2026-03-01T09:00:00Z" }),
        json!({ "purpose": "analytics", "channel": "EMAIL", "status": "GRANTED", "legalBasis": "LEGITIMATE_INTERESTS" }),
    ] {
        let mut input = decision;
        input["contactId"] = json!(id);
        app.data(SET_CONSENT, json!({ "input": input })).await;
    }
    subscribe(app, &id).await;
    let events = json!([
        { "contact": { "id": id }, "type": "email.opened", "occurredAt": "2026-02-01T08:00:00Z",
          "properties": { "to": "ada.lovelace@example.com", "greeting": "Dear Augusta" } },
        { "contact": { "id": id }, "type": "order.completed", "properties": { "total": 42.5 }, "idempotencyKey": "order-1" },
    ]);
    track(app, events).await;
    id
}

/// Grace, who must come through Ada's erasure untouched.
async fn create_grace(app: &TestApp) -> String {
    let input = json!({ "externalId": "crm-grace", "email": "grace.hopper@example.com", "firstName": "Grace" });
    let id = app.data(UPSERT, json!({ "input": input })).await["upsertContact"]["contact"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let consent = json!({ "contactId": id, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" });
    app.data(SET_CONSENT, json!({ "input": consent })).await;
    subscribe(app, &id).await;
    track(app, json!([{ "contact": { "id": id }, "type": "page.viewed", "properties": { "path": "/pricing" } }])).await;
    id
}

async fn subscribe(app: &TestApp, id: &str) {
    app.data(
        "mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"news\", frequency: WEEKLY) { status } }",
        json!({ "id": id }),
    )
    .await;
}

async fn track(app: &TestApp, events: Value) {
    let data = app
        .data(
            "mutation($events: [TrackEventInput!]!) { trackEvents(events: $events) { status } }",
            json!({ "events": events }),
        )
        .await;
    for result in data["trackEvents"].as_array().expect("results") {
        assert_eq!(result["status"], "CREATED", "{data:#}");
    }
}

async fn export(app: &TestApp, id: &str) -> Value {
    app.data(EXPORT, json!({ "id": id })).await["contactExport"].clone()
}

async fn audit_entries(app: &TestApp, filter: Value) -> Vec<Value> {
    app.data(AUDIT, json!({ "filter": filter })).await["auditLog"]["nodes"].as_array().expect("nodes").clone()
}

/// Runs `rapport export contact` with these arguments against the app's database and keys.
fn export_command(app: &TestApp, args: &[&str]) -> std::process::Output {
    Command::new(rapport_binary())
        .args(["export", "contact"])
        .args(args)
        .env_clear()
        .env("RAPPORT_DATABASE_URL", &app.database_url)
        .env("RAPPORT_MASTER_KEY", secret(&app.settings.master_key))
        .env("RAPPORT_LOG", "error")
        .output()
        .expect("rapport runs")
}

fn actions(entries: &[Value]) -> Vec<&str> {
    entries.iter().map(|entry| entry["action"].as_str().expect("action")).collect()
}

/// The stored data as the API shows it, without one contact.
fn without_contact(snapshot: &Value, id: &str) -> Value {
    let mut snapshot = snapshot.clone();
    let edges = snapshot["contacts"]["edges"].as_array_mut().expect("edges");
    edges.retain(|edge| edge["node"]["id"] != id);
    snapshot
}

on_both_databases! {
    async fn the_export_holds_every_section_with_what_the_api_wrote_and_is_audited(app) {
        let id = create_ada(&app).await;
        let document = export(&app, &id).await;

        assert_eq!(document["format"], "rapport.contact-export.v1");
        let contact = app
            .data("query($id: ID!) { contact(by: { id: $id }) { createdAt updatedAt version } }", json!({ "id": id }))
            .await["contact"]
            .clone();
        assert_eq!(document["profile"], json!({
            "id": id, "externalId": "crm-ada", "email": "Ada.Lovelace@example.com", "phone": "+442079460001",
            "firstName": "Augusta", "lastName": "Lovelace", "locale": "en-GB", "timeZone": null, "country": "GB",
            "createdAt": contact["createdAt"], "updatedAt": contact["updatedAt"], "version": 2,
        }));
        assert_eq!(document["customFields"], json!([
            { "key": "nickname", "label": "nickname", "type": "STRING", "personal": true, "value": "Enchantress" },
            { "key": "plan", "label": "plan", "type": "STRING", "personal": false, "value": "pro" },
        ]));

        let history = document["consentHistory"].as_array().expect("consent history");
        assert_eq!(history.len(), 3, "{document:#}");
        assert_eq!(history[0]["status"], "GRANTED");
        assert_eq!(history[0]["source"], "FORM");
        assert_eq!(history[0]["legalBasis"], "CONSENT");
        assert_eq!(history[0]["capturedAt"], "2026-01-10T09:00:00+00:00");
        assert_eq!(history[0]["proof"], json!({ "ip": "203.0.113.7", "userAgent": "Mozilla/5.0", "wordingId": "newsletter", "wordingVersion": "3" }));
        assert_eq!(history[1]["status"], "DENIED");
        assert_eq!(history[2]["legalBasis"], "LEGITIMATE_INTERESTS");
        assert!(history.iter().all(|decision| decision["recordedAt"].is_string() && decision["channel"] == "EMAIL"));
        let current: Vec<(&str, &str)> = document["consents"]
            .as_array()
            .expect("consents")
            .iter()
            .map(|consent| (consent["purpose"].as_str().unwrap(), consent["status"].as_str().unwrap()))
            .collect();
        assert_eq!(current, [("analytics", "GRANTED"), ("marketing", "DENIED")]);

        let subscriptions = &document["topicSubscriptions"];
        assert_eq!(subscriptions.as_array().map(Vec::len), Some(1), "{subscriptions:#}");
        assert_eq!(subscriptions[0]["topic"], json!({ "key": "news", "name": "News" }));
        assert_eq!((&subscriptions[0]["status"], &subscriptions[0]["frequency"]), (&json!("SUBSCRIBED"), &json!("WEEKLY")));

        let events = document["events"].as_array().expect("events");
        assert_eq!(events.len(), 2, "{document:#}");
        assert_eq!(events[0]["type"], "email.opened");
        assert_eq!(events[0]["properties"], json!({ "to": "ada.lovelace@example.com", "greeting": "Dear Augusta" }));
        assert_eq!(events[1]["type"], "order.completed");
        assert_eq!(events[1]["idempotencyKey"], "order-1");
        assert_eq!(events[1]["source"], "api");

        assert_eq!(document["emailsSent"], json!([]));
        assert_eq!(document["programParticipation"], json!([]));

        let entries = document["auditEntries"].as_array().expect("audit entries");
        assert_eq!(
            actions(entries),
            ["contact.created", "contact.updated", "consent.recorded", "consent.recorded", "consent.recorded", "subscription.changed"]
        );
        assert!(entries.iter().all(|entry| entry["targetId"] == id && entry["actor"]["kind"] == "bootstrap"));
        assert_eq!(entries[0]["changes"]["email"], json!({ "before": null, "after": "[redacted]" }));

        // The export is a read of personal data: it is recorded, by whom, after the fact.
        let recorded = audit_entries(&app, json!({ "action": "contact.exported" })).await;
        assert_eq!(recorded.len(), 1, "{recorded:#?}");
        assert_eq!(recorded[0]["targetId"], id);
        assert_eq!(recorded[0]["actor"], json!({ "kind": "bootstrap", "id": null }));
        let again = export(&app, &id).await;
        assert_eq!(actions(again["auditEntries"].as_array().expect("entries")).last(), Some(&"contact.exported"));
    }

    async fn exporting_an_unknown_contact_is_not_found_and_a_malformed_id_names_the_argument(app) {
        create_ada(&app).await;
        let error = app.error(EXPORT, json!({ "id": "0192f5a4-0000-7000-8000-000000000000" })).await;
        assert_error(&error, "NOT_FOUND", None);
        let error = app.error(EXPORT, json!({ "id": "not-an-id" })).await;
        assert_error(&error, "BAD_USER_INPUT", Some("id"));
        assert!(audit_entries(&app, json!({ "action": "contact.exported" })).await.is_empty());
    }

    async fn the_command_line_prints_the_same_export_by_id_or_email_and_is_audited_as_system_cli(app) {
        let id = create_ada(&app).await;
        let over_graphql = export(&app, &id).await;

        let output = export_command(&app, &[&id]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let by_id: Value = serde_json::from_slice(&output.stdout).expect("the export is JSON on stdout");
        // Pretty-printed for people reading it.
        assert!(String::from_utf8_lossy(&output.stdout).starts_with("{\n  \""));
        for section in ["format", "profile", "customFields", "consents", "consentHistory", "topicSubscriptions", "events", "emailsSent", "programParticipation"] {
            assert_eq!(by_id[section], over_graphql[section], "{section}");
        }
        // Its audit entries are those of the GraphQL export, plus the entry of that export.
        let entries = by_id["auditEntries"].as_array().expect("audit entries");
        let earlier = over_graphql["auditEntries"].as_array().expect("audit entries");
        assert_eq!(entries[..earlier.len()], earlier[..]);
        assert_eq!(actions(&entries[earlier.len()..]), ["contact.exported"]);

        let output = export_command(&app, &["--email", "Ada.Lovelace@EXAMPLE.com"]);
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        let by_email: Value = serde_json::from_slice(&output.stdout).expect("JSON");
        assert_eq!(by_email["profile"], over_graphql["profile"]);

        let recorded = audit_entries(&app, json!({ "action": "contact.exported", "actorKind": "system" })).await;
        assert_eq!(recorded.len(), 2, "{recorded:#?}");
        assert!(recorded.iter().all(|entry| entry["actor"] == json!({ "kind": "system", "id": "cli" }) && entry["targetId"] == id));

        for (args, reason) in [
            (vec!["0192f5a4-0000-7000-8000-000000000000"], "no contact has the id 0192f5a4-0000-7000-8000-000000000000"),
            (vec!["--email", "nobody@example.com"], "no contact has this email address"),
            (vec!["not-an-id"], "\"not-an-id\" is not a contact id"),
        ] {
            let output = export_command(&app, &args);
            assert!(!output.status.success(), "{args:?}");
            assert!(output.stdout.is_empty(), "{args:?}");
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(stderr.trim(), format!("rapport: {reason}"), "{args:?}");
        }
    }

    async fn erasure_removes_the_contact_and_its_plaintext_and_its_receipt_counts_what_went(app) {
        let id = create_ada(&app).await;
        let grace = create_grace(&app).await;
        let before = app.snapshot().await;

        let receipt = app.data(ERASE, json!({ "id": id })).await["eraseContact"].clone();
        assert_eq!(receipt["contactId"], id);
        assert_eq!(receipt["erased"], json!({
            "profileFields": 7, "customFields": 2, "consentDecisions": 3, "topicSubscriptions": 1, "events": 2,
            "dataKeyDestroyed": true,
        }));
        assert_eq!(receipt["suppressedAddresses"], json!(["EMAIL", "PHONE"]));

        assert_eq!(app.data(LOOKUP, json!({ "by": { "id": id } })).await["contact"], Value::Null);
        assert_eq!(app.data(LOOKUP, json!({ "by": { "email": "Ada.Lovelace@example.com" } })).await["contact"], Value::Null);
        assert_error(&app.error(EXPORT, json!({ "id": id })).await, "NOT_FOUND", None);
        let raw = raw_database(&app).await;
        assert!(raw.contains("crm-grace"), "the scan missed the data");
        for plaintext in ADA_PLAINTEXT {
            assert!(!raw.contains(plaintext), "{plaintext:?} is still in the database");
        }
        let keys = query_strings(&app.database_url, "SELECT master_key_id FROM contact_key").await;
        assert_eq!(keys.len(), 1, "only Grace's data key is left: {keys:?}");

        // Grace, the topic, the fields and the purposes are as they were.
        assert_eq!(app.snapshot().await, without_contact(&before, &id));
        let grace_export = export(&app, &grace).await;
        assert_eq!(grace_export["events"].as_array().map(Vec::len), Some(1));
    }

    async fn an_erasure_during_another_checkpoint_still_empties_the_log_of_its_plaintext(app) {
        let Some(dir) = app.sqlite_dir() else {
            return; // PostgreSQL keeps no log of its own in the database's files.
        };
        let id = create_ada(&app).await;
        create_grace(&app).await;
        // Another process holds SQLite's checkpoint lock (byte 121 of the shared-memory file, as
        // a checkpoint in the background does) for a while: a checkpoint asked for meanwhile
        // answers "busy" at once, without waiting. It waits for the lock, which the server's own
        // background checkpoint may hold for a moment.
        let mut holder = std::process::Command::new(python())
            .args([
                "-c",
                "import fcntl, os, sys, time\n\
                 fd = os.open(sys.argv[1], os.O_RDWR)\n\
                 fcntl.lockf(fd, fcntl.LOCK_EX, 1, 121)\n\
                 print('held', flush=True)\n\
                 time.sleep(0.5)",
            ])
            .arg(dir.join("rapport.db-shm"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python");
        let mut said = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(holder.stdout.as_mut().expect("stdout")),
            &mut said,
        )
        .expect("the lock holder's answer");
        assert_eq!(said.trim(), "held");

        app.data(ERASE, json!({ "id": id })).await;
        assert!(holder.wait().expect("the lock holder").success());
        let raw = raw_database(&app).await;
        assert!(raw.contains("crm-grace"), "the scan missed the data");
        for plaintext in ADA_PLAINTEXT {
            assert!(!raw.contains(plaintext), "{plaintext:?} is still in the database");
        }
    }

    async fn a_data_backup_restored_after_erasure_is_unreadable_unless_a_key_backup_is_restored_too(app) {
        let id = create_ada(&app).await;
        // Backups taken before the erasure: the data, and apart from it, the keys.
        execute(&app, "CREATE TABLE contact_backup AS SELECT * FROM contact WHERE external_id = 'crm-ada'").await;
        execute(&app, "CREATE TABLE key_backup AS SELECT * FROM contact_key WHERE contact_id IN (SELECT id FROM contact_backup)").await;
        app.data(ERASE, json!({ "id": id })).await;
        assert!(query_strings(&app.database_url, "SELECT master_key_id FROM contact_key").await.is_empty());

        // The data backup alone: the row is back, its ciphertext opens for no one.
        execute(&app, "INSERT INTO contact SELECT * FROM contact_backup").await;
        let body = app.graphql(LOOKUP, json!({ "by": { "id": id } })).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "INTERNAL", "{body:#}");
        assert!(!body.to_string().contains("Augusta"), "{body:#}");

        // With a key backup older than the erasure it reads again: the window the README states.
        execute(&app, "INSERT INTO contact_key SELECT * FROM key_backup").await;
        let contact = app.data(LOOKUP, json!({ "by": { "id": id } })).await["contact"].clone();
        assert_eq!(contact["firstName"], "Augusta");
    }

    async fn erasure_leaves_a_tombstone_without_personal_data_and_the_chain_verifies(app) {
        let id = create_ada(&app).await;
        let earlier = audit_entries(&app, json!({ "targetKind": "contact", "targetId": id })).await;
        let receipt = app.data(ERASE, json!({ "id": id })).await["eraseContact"].clone();

        let entries = audit_entries(&app, json!({ "targetKind": "contact", "targetId": id })).await;
        assert_eq!(entries.len(), earlier.len() + 1, "earlier entries stay");
        assert_eq!(entries[1..], earlier[..]);
        let tombstone = &entries[0];
        assert_eq!(tombstone["action"], "contact.erased");
        assert_eq!(tombstone["id"], receipt["id"]);
        assert_eq!(tombstone["changes"], json!({
            "profileFields": { "before": 7, "after": null },
            "customFields": { "before": 2, "after": null },
            "consentDecisions": { "before": 3, "after": null },
            "topicSubscriptions": { "before": 1, "after": null },
            "events": { "before": 2, "after": null },
            "dataKeyDestroyed": { "before": null, "after": true },
            "erasedAddresses": { "before": null, "after": ["email", "phone"] },
        }));
        let log = serde_json::to_string(&audit_entries(&app, json!({})).await).expect("JSON");
        for plaintext in ADA_PLAINTEXT {
            assert!(!log.contains(plaintext), "{plaintext:?} is in the audit log");
        }

        let (intact, stdout, stderr) = verify(&app);
        assert!(intact, "{stdout}{stderr}");
        assert!(stdout.starts_with("audit chain intact"), "{stdout}");
    }

    async fn an_erased_address_is_refused_until_a_new_consent_is_captured_with_it(app) {
        let id = create_ada(&app).await;
        let grace = create_grace(&app).await;
        app.data(ERASE, json!({ "id": id })).await;

        let upsert = |consents: Value| json!({ "input": { "email": "Ada.Lovelace@example.com", "consents": consents } });
        let error = assert_rejected(&app, UPSERT, upsert(json!([])), "CONFLICT", Some("email")).await;
        assert!(error["message"].as_str().is_some_and(|message| message.contains("erased")), "{error:#}");
        // Neither a refusal, nor a decision on another basis, nor one captured before the erasure
        // (an old record replayed by an import) is a new consent.
        for decision in [
            json!({ "purpose": "marketing", "channel": "EMAIL", "status": "DENIED" }),
            json!({ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED", "legalBasis": "LEGITIMATE_INTERESTS" }),
            json!({ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED", "capturedAt": "2020-01-01T00:00:00Z" }),
        ] {
            assert_rejected(&app, UPSERT, upsert(json!([decision])), "CONFLICT", Some("email")).await;
        }
        let phone = json!({ "input": { "email": "someone.else@example.com", "phone": "+442079460001" } });
        assert_rejected(&app, UPSERT, phone, "CONFLICT", Some("phone")).await;
        let moved = json!({ "input": { "id": grace, "expectedVersion": 1, "email": "Ada.Lovelace@example.com" } });
        assert_rejected(&app, UPDATE, moved, "CONFLICT", Some("email")).await;
        let bad_decision = upsert(json!([{ "purpose": "no_such_purpose", "channel": "EMAIL", "status": "GRANTED" }]));
        assert_rejected(&app, UPSERT, bad_decision, "BAD_USER_INPUT", Some("consents[0].purpose")).await;

        let granted = json!([{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED", "source": "FORM" }]);
        let created = app.data(UPSERT, upsert(granted)).await["upsertContact"].clone();
        assert_eq!(created["created"], true);
        assert_eq!(created["contact"]["consents"], json!([{ "purpose": "marketing", "status": "GRANTED" }]));
        let new_id = created["contact"]["id"].as_str().expect("id").to_owned();
        let entries = audit_entries(&app, json!({ "targetId": new_id })).await;
        assert_eq!(actions(&entries), ["consent.recorded", "contact.readmitted", "contact.created"]);
        assert_eq!(entries[1]["changes"], json!({ "erasedAddresses": { "before": ["email"], "after": null } }));

        // The address left the erased list: once this contact is deleted, it comes back freely.
        app.data("mutation($id: ID!) { deleteContact(id: $id) { deletedContactId } }", json!({ "id": new_id })).await;
        let again = app.data(UPSERT, upsert(json!([]))).await["upsertContact"].clone();
        assert_eq!(again["created"], true);
    }

    async fn erasing_twice_or_an_unknown_contact_is_not_found(app) {
        let id = create_ada(&app).await;
        app.data(ERASE, json!({ "id": id })).await;
        let before = app.snapshot().await;
        assert_error(&app.error(ERASE, json!({ "id": id })).await, "NOT_FOUND", None);
        assert_error(&app.error(ERASE, json!({ "id": "0192f5a4-0000-7000-8000-000000000000" })).await, "NOT_FOUND", None);
        assert_eq!(app.snapshot().await, before);
        assert_eq!(audit_entries(&app, json!({ "action": "contact.erased" })).await.len(), 1);
    }
}
