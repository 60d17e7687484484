//! The audit log end to end: every kind of change appends one entry in its own transaction, with
//! the actor, request id and address, personal values redacted; rejected writes append nothing;
//! the GraphQL connection filters and pages; `rapport audit verify` finds edits and deletions.

use std::process::Command;

use rapport_e2e::{ADMIN_TOKEN, TestApp, on_both_databases};

use crate::rapport_binary;
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

const ENTRY_FIELDS: &str =
    "seq id occurredAt actor { kind id } action targetKind targetId changes requestId ip prevHash hash";

/// Sends one GraphQL request and returns its data with the response's `x-request-id`.
async fn send(app: &TestApp, query: &str, variables: Value) -> (Value, String) {
    let response = app
        .client
        .post(app.url("/graphql"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({ "query": query, "variables": variables }))
        .send()
        .await
        .expect("request sent");
    let request_id =
        response.headers().get("x-request-id").and_then(|id| id.to_str().ok()).expect("x-request-id").to_owned();
    let body: Value = response.json().await.expect("JSON body");
    (body, request_id)
}

async fn mutate(app: &TestApp, query: &str, variables: Value) -> (Value, String) {
    let (body, request_id) = send(app, query, variables).await;
    assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
    (body["data"].clone(), request_id)
}

/// The audit log with these arguments (filter, first, after, last, before).
async fn audit_log(app: &TestApp, arguments: Value) -> Value {
    let query = format!(
        "query($filter: AuditFilter, $first: Int, $after: String, $last: Int, $before: String) {{
           auditLog(filter: $filter, first: $first, after: $after, last: $last, before: $before) {{
             pageInfo {{ hasPreviousPage hasNextPage startCursor endCursor }}
             edges {{ cursor node {{ {ENTRY_FIELDS} }} }}
           }}
         }}"
    );
    app.data(&query, arguments).await["auditLog"].clone()
}

fn nodes(connection: &Value) -> Vec<Value> {
    connection["edges"].as_array().expect("edges").iter().map(|edge| edge["node"].clone()).collect()
}

/// Every entry, newest first.
async fn all_entries(app: &TestApp) -> Vec<Value> {
    nodes(&audit_log(app, json!({ "first": 100 })).await)
}

async fn newest(app: &TestApp) -> Value {
    all_entries(app).await.into_iter().next().expect("an audit entry")
}

fn assert_entry(entry: &Value, action: &str, target_kind: &str, target_id: &str, request_id: &str) {
    assert_eq!(entry["action"], action, "{entry:#}");
    assert_eq!(entry["targetKind"], target_kind, "{entry:#}");
    assert_eq!(entry["targetId"], target_id, "{entry:#}");
    assert_eq!(entry["requestId"], request_id, "{entry:#}");
    assert_eq!(entry["actor"], json!({ "kind": "bootstrap", "id": null }));
    assert_eq!(entry["ip"], "127.0.0.1");
}

async fn execute(app: &TestApp, sql: &str) {
    let db = Database::connect(&app.database_url).await.expect("database");
    db.execute_unprepared(sql).await.expect("statement runs");
    db.close().await.ok();
}

/// Every text column of every audit entry, concatenated.
async fn raw_audit_text(app: &TestApp) -> String {
    let db = Database::connect(&app.database_url).await.expect("database");
    let statement = Statement::from_string(
        db.get_database_backend(),
        "SELECT action, target_id, changes, request_id FROM audit_entry ORDER BY seq",
    );
    let rows = db.query_all_raw(statement).await.expect("audit rows");
    db.close().await.ok();
    rows.iter()
        .map(|row| {
            ["action", "target_id", "changes", "request_id"]
                .iter()
                .map(|column| row.try_get::<String>("", column).expect("text column"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Runs `rapport audit verify` against the app's database: (success, stdout, stderr).
pub(crate) fn verify(app: &TestApp) -> (bool, String, String) {
    let output = Command::new(rapport_binary())
        .args(["audit", "verify"])
        .env_clear()
        .env("RAPPORT_DATABASE_URL", &app.database_url)
        .env("RAPPORT_LOG", "error")
        .output()
        .expect("rapport runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

const UPSERT: &str =
    "mutation($input: UpsertContactInput!) { upsertContact(input: $input) { contact { id version } } }";
const UPDATE: &str = "mutation($input: UpdateContactInput!) { updateContact(input: $input) { id version } }";
const DEFINE_FIELD: &str = "mutation($input: DefineFieldInput!) { defineField(input: $input) { key } }";
const DEFINE_TOPIC: &str = "mutation($input: DefineTopicInput!) { defineTopic(input: $input) { key } }";

/// A few changes of several kinds, for the filter, paging and verify tests.
async fn some_history(app: &TestApp) -> String {
    mutate(app, DEFINE_FIELD, json!({ "input": { "key": "plan", "label": "Plan", "type": "STRING" } })).await;
    let (data, _) = mutate(app, UPSERT, json!({ "input": { "email": "ada@example.com", "firstName": "Ada" } })).await;
    let id = data["upsertContact"]["contact"]["id"].as_str().expect("id").to_owned();
    mutate(app, UPDATE, json!({ "input": { "id": id, "expectedVersion": 1, "attributes": { "plan": "pro" } } })).await;
    mutate(app, DEFINE_TOPIC, json!({ "input": { "key": "news", "name": "News" } })).await;
    mutate(app, UPDATE, json!({ "input": { "id": id, "expectedVersion": 2, "locale": "en-GB" } })).await;
    id
}

on_both_databases! {
    async fn contact_changes_are_recorded_with_actor_request_and_redacted_personal_values(app) {
        mutate(&app, DEFINE_FIELD, json!({ "input": { "key": "plan", "label": "Plan", "type": "STRING" } })).await;
        mutate(&app, DEFINE_FIELD, json!({ "input": { "key": "birthday", "label": "Birthday", "type": "DATE", "personal": true } })).await;

        let (data, request_id) = mutate(&app, UPSERT, json!({ "input": {
            "email": "grace.hopper@example.com", "firstName": "Grace", "lastName": "Hopper",
            "phone": "+4930123456", "locale": "en-US", "attributes": { "plan": "free", "birthday": "1906-12-09" },
        } })).await;
        let id = data["upsertContact"]["contact"]["id"].as_str().expect("id").to_owned();
        let created = newest(&app).await;
        assert_entry(&created, "contact.created", "contact", &id, &request_id);
        assert_eq!(created["seq"], 3);
        assert_eq!(created["changes"], json!({
            "email": { "before": null, "after": "[redacted]" },
            "firstName": { "before": null, "after": "[redacted]" },
            "lastName": { "before": null, "after": "[redacted]" },
            "phone": { "before": null, "after": "[redacted]" },
            "locale": { "before": null, "after": "en-US" },
            "attributes.plan": { "before": null, "after": "free" },
            "attributes.birthday": { "before": null, "after": "[redacted]" },
        }));

        let (_, request_id) = mutate(&app, UPDATE, json!({ "input": {
            "id": id, "expectedVersion": 1, "lastName": "Murray Hopper", "locale": "en-GB",
            "attributes": { "plan": "pro", "birthday": null },
        } })).await;
        let updated = newest(&app).await;
        assert_entry(&updated, "contact.updated", "contact", &id, &request_id);
        assert_eq!(updated["changes"], json!({
            "lastName": { "before": "[redacted]", "after": "[redacted]" },
            "locale": { "before": "en-US", "after": "en-GB" },
            "attributes.plan": { "before": "free", "after": "pro" },
            "attributes.birthday": { "before": "[redacted]", "after": null },
        }));
        assert_eq!(updated["prevHash"], created["hash"]);

        // An upsert that changes nothing records nothing.
        let count = all_entries(&app).await.len();
        mutate(&app, UPSERT, json!({ "input": { "email": "grace.hopper@example.com", "locale": "en-GB" } })).await;
        assert_eq!(all_entries(&app).await.len(), count);

        let (_, request_id) =
            mutate(&app, "mutation($id: ID!) { deleteContact(id: $id) { deletedContactId } }", json!({ "id": id })).await;
        let deleted = newest(&app).await;
        assert_entry(&deleted, "contact.deleted", "contact", &id, &request_id);
        assert_eq!(deleted["changes"]["email"], json!({ "before": "[redacted]", "after": null }));
        assert_eq!(deleted["changes"]["attributes.plan"], json!({ "before": "pro", "after": null }));

        let raw = raw_audit_text(&app).await;
        for secret in ["grace", "Grace", "Hopper", "Murray", "4930123456", "1906-12-09"] {
            assert!(!raw.contains(secret), "the audit table holds {secret:?}: {raw}");
        }
    }

    async fn definitions_consents_subscriptions_and_event_batches_are_recorded(app) {
        let (_, request_id) = mutate(&app, DEFINE_FIELD, json!({ "input": { "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["a", "b"] } })).await;
        let entry = newest(&app).await;
        assert_entry(&entry, "field.defined", "field", "tier", &request_id);
        assert_eq!(entry["changes"]["enumValues"], json!({ "before": null, "after": ["a", "b"] }));

        let (_, request_id) = mutate(&app, "mutation { alterField(input: { key: \"tier\", label: \"Level\", personal: true }) { key } }", json!({})).await;
        let entry = newest(&app).await;
        assert_entry(&entry, "field.altered", "field", "tier", &request_id);
        assert_eq!(entry["changes"], json!({
            "label": { "before": "Tier", "after": "Level" },
            "personal": { "before": false, "after": true },
        }));

        let (_, request_id) = mutate(&app, "mutation { deleteField(key: \"tier\") }", json!({})).await;
        assert_entry(&newest(&app).await, "field.deleted", "field", "tier", &request_id);

        let (_, request_id) = mutate(&app, "mutation { defineConsentPurpose(input: { key: \"research\", label: \"Research\" }) { key } }", json!({})).await;
        let entry = newest(&app).await;
        assert_entry(&entry, "consent_purpose.defined", "consent_purpose", "research", &request_id);
        assert_eq!(entry["changes"], json!({ "label": { "before": null, "after": "Research" } }));

        let (data, _) = mutate(&app, UPSERT, json!({ "input": { "externalId": "crm-1" } })).await;
        let id = data["upsertContact"]["contact"]["id"].as_str().expect("id").to_owned();

        let (_, request_id) = mutate(&app, "mutation($id: ID!) { setConsent(input: { contactId: $id, purpose: \"research\", channel: EMAIL, status: GRANTED }) { id } }", json!({ "id": id })).await;
        let entry = newest(&app).await;
        assert_entry(&entry, "consent.recorded", "contact", &id, &request_id);
        assert_eq!(entry["changes"]["status"], json!({ "before": null, "after": "granted" }));
        assert_eq!(entry["changes"]["purpose"], json!({ "before": null, "after": "research" }));

        let (_, request_id) = mutate(&app, DEFINE_TOPIC, json!({ "input": { "key": "news", "name": "News" } })).await;
        assert_entry(&newest(&app).await, "topic.defined", "topic", "news", &request_id);
        let (_, request_id) = mutate(&app, "mutation { alterTopic(input: { key: \"news\", name: \"Newsletter\" }) { key } }", json!({})).await;
        let entry = newest(&app).await;
        assert_entry(&entry, "topic.altered", "topic", "news", &request_id);
        assert_eq!(entry["changes"], json!({ "name": { "before": "News", "after": "Newsletter" } }));

        let (_, request_id) = mutate(&app, "mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"news\", frequency: WEEKLY) { status } }", json!({ "id": id })).await;
        let entry = newest(&app).await;
        assert_entry(&entry, "subscription.changed", "contact", &id, &request_id);
        assert_eq!(entry["changes"]["status"], json!({ "before": null, "after": "subscribed" }));
        let (_, request_id) = mutate(&app, "mutation($id: ID!) { unsubscribeTopic(contactId: $id, topic: \"news\") { status } }", json!({ "id": id })).await;
        let entry = newest(&app).await;
        assert_entry(&entry, "subscription.changed", "contact", &id, &request_id);
        assert_eq!(entry["changes"]["status"], json!({ "before": "subscribed", "after": "unsubscribed" }));
        assert_eq!(entry["changes"].get("frequency"), None);

        let before = all_entries(&app).await.len();
        let (_, request_id) = mutate(&app, "mutation($events: [TrackEventInput!]!) { trackEvents(events: $events) { status } }", json!({ "events": [
            { "contact": { "externalId": "crm-1" }, "type": "page_viewed" },
            { "contact": { "externalId": "crm-1" }, "type": "page_viewed", "idempotencyKey": "k1" },
            { "contact": { "externalId": "crm-1" }, "type": "page_viewed", "idempotencyKey": "k1" },
            { "contact": { "externalId": "nobody" }, "type": "page_viewed" },
        ] })).await;
        let entries = all_entries(&app).await;
        assert_eq!(entries.len(), before + 1, "one entry per batch");
        assert_entry(&entries[0], "events.tracked", "event_batch", &request_id, &request_id);
        assert_eq!(entries[0]["changes"], json!({
            "created": { "before": null, "after": 2 },
            "duplicates": { "before": null, "after": 1 },
            "rejected": { "before": null, "after": 1 },
        }));

        let (_, request_id) = mutate(&app, "mutation { deleteTopic(key: \"news\") }", json!({})).await;
        assert_entry(&newest(&app).await, "topic.deleted", "topic", "news", &request_id);
    }

    async fn rejected_writes_append_nothing(app) {
        let id = some_history(&app).await;
        let before = all_entries(&app).await;
        let (stale, _) = send(&app, UPDATE, json!({ "input": { "id": id, "expectedVersion": 1, "locale": "fr" } })).await;
        assert_eq!(stale["errors"][0]["extensions"]["code"], "CONFLICT");
        let (bad, _) = send(&app, UPDATE, json!({ "input": { "id": id, "expectedVersion": 3, "attributes": { "plan": 5 } } })).await;
        assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        let (taken, _) = send(&app, DEFINE_FIELD, json!({ "input": { "key": "plan", "label": "Again", "type": "STRING" } })).await;
        assert_eq!(taken["errors"][0]["extensions"]["code"], "CONFLICT");
        let (unknown, _) = send(&app, "mutation { deleteTopic(key: \"missing\") }", json!({})).await;
        assert_eq!(unknown["errors"][0]["extensions"]["code"], "NOT_FOUND");
        assert_eq!(all_entries(&app).await, before);
    }

    async fn the_audit_log_filters_and_pages_newest_first(app) {
        let id = some_history(&app).await;
        let all = all_entries(&app).await;
        let seqs: Vec<i64> = all.iter().map(|entry| entry["seq"].as_i64().expect("seq")).collect();
        assert_eq!(seqs, vec![5, 4, 3, 2, 1]);

        let about_contact = nodes(&audit_log(&app, json!({ "filter": { "targetKind": "contact", "targetId": id } })).await);
        let actions: Vec<&str> = about_contact.iter().map(|entry| entry["action"].as_str().expect("action")).collect();
        assert_eq!(actions, ["contact.updated", "contact.updated", "contact.created"]);
        let updates = nodes(&audit_log(&app, json!({ "filter": { "action": "contact.updated" } })).await);
        assert_eq!(updates.len(), 2);
        assert_eq!(nodes(&audit_log(&app, json!({ "filter": { "actorKind": "bootstrap" } })).await).len(), 5);
        assert!(nodes(&audit_log(&app, json!({ "filter": { "actorKind": "user" } })).await).is_empty());
        assert!(nodes(&audit_log(&app, json!({ "filter": { "actorId": "someone" } })).await).is_empty());

        // Time bounds: from is inclusive, to exclusive.
        let third = &all[2];
        let from_third = nodes(&audit_log(&app, json!({ "filter": { "from": third["occurredAt"] } })).await);
        assert!(from_third.iter().all(|entry| entry["seq"].as_i64() >= Some(3)));
        assert!(from_third.iter().any(|entry| entry["seq"] == 3));
        let before_third = nodes(&audit_log(&app, json!({ "filter": { "to": third["occurredAt"] } })).await);
        assert!(before_third.iter().all(|entry| entry["seq"].as_i64() < Some(3)));
        assert!(nodes(&audit_log(&app, json!({ "filter": { "from": "2000-01-01T00:00:00Z", "to": "2000-01-02T00:00:00Z" } })).await).is_empty());

        // Forward in pages of two, then back.
        let page1 = audit_log(&app, json!({ "first": 2 })).await;
        assert_eq!(nodes(&page1), all[..2]);
        assert_eq!(page1["pageInfo"]["hasNextPage"], true);
        let page2 = audit_log(&app, json!({ "first": 2, "after": page1["pageInfo"]["endCursor"] })).await;
        assert_eq!(nodes(&page2), all[2..4]);
        let page3 = audit_log(&app, json!({ "first": 2, "after": page2["pageInfo"]["endCursor"] })).await;
        assert_eq!(nodes(&page3), all[4..]);
        assert_eq!(page3["pageInfo"]["hasNextPage"], false);
        let back = audit_log(&app, json!({ "last": 2, "before": page3["pageInfo"]["startCursor"] })).await;
        assert_eq!(nodes(&back), all[2..4]);
        assert_eq!(back["pageInfo"]["hasPreviousPage"], true);
        let newest_two = audit_log(&app, json!({ "last": 2 })).await;
        assert_eq!(nodes(&newest_two), all[3..]);
    }

    async fn verify_reports_an_intact_chain_then_the_entry_whose_byte_was_edited(app) {
        some_history(&app).await;
        let (ok, stdout, stderr) = verify(&app);
        assert!(ok, "verify failed: {stdout} {stderr}");
        assert!(stdout.contains("audit chain intact: 5 entries"), "{stdout}");

        // One byte of entry 3's changes: "pro" becomes "prp".
        execute(&app, "UPDATE audit_entry SET changes = replace(changes, '\"pro\"', '\"prp\"') WHERE seq = 3").await;
        let (ok, stdout, stderr) = verify(&app);
        assert!(!ok, "verify passed a tampered chain: {stdout}");
        assert!(stderr.contains("broken at seq 3"), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }

    async fn verify_finds_an_edited_action_and_a_deleted_entry(app) {
        some_history(&app).await;
        execute(&app, "UPDATE audit_entry SET action = 'topic.definee' WHERE seq = 4").await;
        let (ok, _, stderr) = verify(&app);
        assert!(!ok);
        assert!(stderr.contains("broken at seq 4"), "{stderr}");

        execute(&app, "UPDATE audit_entry SET action = 'topic.defined' WHERE seq = 4").await;
        assert!(verify(&app).0, "restoring the byte restores the chain");

        execute(&app, "DELETE FROM audit_entry WHERE seq = 2").await;
        let (ok, _, stderr) = verify(&app);
        assert!(!ok);
        assert!(stderr.contains("broken at seq 2"), "{stderr}");
    }

    async fn concurrent_writers_append_one_gap_free_chain(app) {
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..16 {
            let (client, url) = (app.client.clone(), app.url("/graphql"));
            writes.spawn(async move {
                let body = json!({ "query": UPSERT, "variables": { "input": { "externalId": format!("crm-{n}") } } });
                let response = client.post(url).bearer_auth(ADMIN_TOKEN).json(&body).send().await.expect("sent");
                let answer: Value = response.json().await.expect("JSON body");
                assert!(answer.get("errors").is_none(), "{answer:#}");
            });
        }
        while let Some(done) = writes.join_next().await {
            done.expect("writer finished");
        }
        let entries = all_entries(&app).await;
        let seqs: Vec<i64> = entries.iter().map(|entry| entry["seq"].as_i64().expect("seq")).collect();
        assert_eq!(seqs, (1..=16).rev().collect::<Vec<i64>>());
        for pair in entries.windows(2) {
            assert_eq!(pair[0]["prevHash"], pair[1]["hash"]);
        }
        let (ok, stdout, stderr) = verify(&app);
        assert!(ok, "{stdout} {stderr}");
        assert!(stdout.contains("audit chain intact: 16 entries"), "{stdout}");
    }

    async fn verify_finds_a_deleted_last_entry(app) {
        some_history(&app).await;
        execute(&app, "DELETE FROM audit_entry WHERE seq = 5").await;
        let (ok, _, stderr) = verify(&app);
        assert!(!ok);
        assert!(stderr.contains("broken at seq 5"), "{stderr}");
    }
}
