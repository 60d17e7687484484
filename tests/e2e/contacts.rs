//! Contacts over GraphQL, end to end: upsert and its idempotency, lookups, versioned updates,
//! deletion with everything a contact owns, and the paginated, filtered contact list with its
//! batched children. Every rejected write is followed by a snapshot of the stored data, which
//! must equal the one taken before it: a refusal that wrote half of something is a bug too.

use rapport_e2e::{TestApp, assert_error, assert_rejected, on_both_databases};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

/// Every scalar of a contact, so that comparing two answers compares the whole contact.
macro_rules! contact_fields {
    () => {
        "id externalId email phone firstName lastName locale timeZone country attributes version createdAt updatedAt"
    };
}

const UPSERT: &str = concat!(
    "mutation($input: UpsertContactInput!) { upsertContact(input: $input) { created contact { ",
    contact_fields!(),
    " } } }"
);
const UPDATE: &str =
    concat!("mutation($input: UpdateContactInput!) { updateContact(input: $input) { ", contact_fields!(), " } }");
const LOOKUP: &str = concat!("query($by: ContactLookup!) { contact(by: $by) { ", contact_fields!(), " } }");
const DELETE: &str = "mutation($id: ID!) { deleteContact(id: $id) { deletedContactId } }";
const DEFINE_FIELD: &str = "mutation($input: DefineFieldInput!) { defineField(input: $input) { key } }";
const DEFINE_TOPIC: &str = "mutation($input: DefineTopicInput!) { defineTopic(input: $input) { key } }";
const SET_CONSENT: &str = "mutation($input: SetConsentInput!) { setConsent(input: $input) { id } }";
const SUBSCRIBE: &str =
    "mutation($contactId: ID!, $topic: String!) { subscribeTopic(contactId: $contactId, topic: $topic) { status } }";
const UNSUBSCRIBE: &str =
    "mutation($contactId: ID!, $topic: String!) { unsubscribeTopic(contactId: $contactId, topic: $topic) { status } }";
const TRACK: &str = "mutation($events: [TrackEventInput!]!) { trackEvents(events: $events) { status eventId } }";
const LIST: &str = "query($filter: ContactFilter, $first: Int, $after: String, $last: Int, $before: String) {
  contacts(filter: $filter, first: $first, after: $after, last: $last, before: $before) {
    edges { cursor node { id email } }
    nodes { id }
    pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
  }
}";

/// Upserts and returns the contact, and whether it was created.
async fn upsert(app: &TestApp, input: Value) -> (Value, bool) {
    let data = app.data(UPSERT, json!({ "input": input })).await;
    let payload = &data["upsertContact"];
    (payload["contact"].clone(), payload["created"].as_bool().expect("created is a boolean"))
}

async fn update(app: &TestApp, input: Value) -> Value {
    app.data(UPDATE, json!({ "input": input })).await["updateContact"].clone()
}

async fn lookup(app: &TestApp, by: Value) -> Value {
    app.data(LOOKUP, json!({ "by": by })).await["contact"].clone()
}

async fn define_field(app: &TestApp, input: Value) {
    app.data(DEFINE_FIELD, json!({ "input": input })).await;
}

async fn define_topic(app: &TestApp, key: &str) {
    app.data(DEFINE_TOPIC, json!({ "input": { "key": key, "name": key } })).await;
}

async fn set_consent(app: &TestApp, contact_id: &Value, purpose: &str, channel: &str, status: &str) {
    let input = json!({ "contactId": contact_id, "purpose": purpose, "channel": channel, "status": status });
    app.data(SET_CONSENT, json!({ "input": input })).await;
}

async fn subscribe(app: &TestApp, contact_id: &Value, topic: &str) {
    app.data(SUBSCRIBE, json!({ "contactId": contact_id, "topic": topic })).await;
}

/// A page of the contact list with its emails in order.
async fn list(app: &TestApp, variables: Value) -> (Vec<String>, Value) {
    let data = app.data(LIST, variables).await;
    let contacts = &data["contacts"];
    let emails: Vec<String> = contacts["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| edge["node"]["email"].as_str().expect("every listed contact has an email").to_owned())
        .collect();
    let node_ids: Vec<&Value> = contacts["nodes"].as_array().expect("nodes").iter().map(|node| &node["id"]).collect();
    let edge_ids: Vec<&Value> =
        contacts["edges"].as_array().expect("edges").iter().map(|edge| &edge["node"]["id"]).collect();
    assert_eq!(node_ids, edge_ids, "nodes and edges list the same contacts");
    (emails, contacts.clone())
}

/// The emails of the contacts matching `filter`, in list order.
async fn matching(app: &TestApp, filter: Value) -> Vec<String> {
    list(app, json!({ "filter": filter, "first": 100 })).await.0
}

fn emails(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| format!("{name}@example.com")).collect()
}

fn random_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Rows per table, read straight from the database: the API cannot show rows that lost their
/// contact, so this is how a test sees that deleting a contact left nothing behind.
async fn row_counts(app: &TestApp) -> Vec<(&'static str, i64)> {
    let db = Database::connect(&app.database_url).await.expect("test database");
    let mut counts = Vec::new();
    for table in ["contact", "consent", "consent_change", "topic_subscription", "event"] {
        let statement = Statement::from_string(db.get_database_backend(), format!("SELECT COUNT(*) AS n FROM {table}"));
        let row = db.query_one_raw(statement).await.expect("count query").expect("one row");
        counts.push((table, row.try_get::<i64>("", "n").expect("a count")));
    }
    db.close().await.ok();
    counts
}

on_both_databases! {
    async fn moving_custom_values_out_of_the_contact_row_and_back_keeps_every_value_and_its_order(app) {
        // The migration that moved custom values into the contact's row, undone and redone:
        // every value of every type, sealed or in clear, comes back as it was, and date-times
        // (stored as UTC text of fixed width) still compare by instant, to the microsecond.
        use migration::{Migrator, MigratorTrait};
        for (key, field_type, personal) in [
            ("city", "STRING", false),
            ("score", "NUMBER", false),
            ("vip", "BOOLEAN", false),
            ("birthday", "DATE", false),
            ("last_order", "DATE_TIME", false),
            ("nickname", "STRING", true),
            ("first_visit", "DATE_TIME", true),
        ] {
            define_field(&app, json!({ "key": key, "label": key, "type": field_type, "personal": personal })).await;
        }
        define_field(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["silver", "gold"] })).await;
        let contacts = [
            ("a", json!({ "city": "Berlin", "score": 10, "vip": true, "birthday": "1980-05-01", "last_order": "2026-01-10T10:00:00.25Z", "tier": "gold", "nickname": "Ace", "first_visit": "2020-02-29T08:15:00.123456Z" })),
            // 0.1 + 0.2: a double that needs 17 digits to read back the same.
            ("b", json!({ "score": 0.30000000000000004, "vip": false, "last_order": "2026-01-10T11:00:00+01:00" })),
            ("c", json!({})),
        ];
        let mut before = Vec::new();
        for (name, attributes) in contacts {
            before.push(upsert(&app, json!({ "email": format!("{name}@example.com"), "attributes": attributes })).await.0);
        }
        let compare = |comparison: &str, value: &str| {
            json!({ "attributes": [{ "field": "last_order", "comparison": comparison, "value": value }] })
        };
        let orderings = [
            (compare("GREATER", "2026-01-10T10:00:00.1Z"), vec!["a"]),
            (compare("LESS", "2026-01-10T10:00:00.250001Z"), vec!["a", "b"]),
            (compare("EQUAL", "2026-01-10T10:00:00Z"), vec!["b"]),
            (compare("EQUAL", "2026-01-10T11:00:00.250+01:00"), vec!["a"]),
        ];
        for (filter, expected) in &orderings {
            assert_eq!(matching(&app, filter.clone()).await, emails(expected), "{filter}");
        }

        let db = Database::connect(&app.database_url).await.expect("test database");
        let backend = db.get_database_backend();
        let count = |condition: &str| {
            let db = &db;
            let sql = format!("SELECT COUNT(*) FROM contact_attribute WHERE {condition}");
            async move {
                let row = db.query_one_raw(Statement::from_string(backend, sql)).await.expect("count").expect("a row");
                row.try_get_by_index::<i64>(0).expect("a count")
            }
        };
        let undone = rapport_e2e::migrations_from("m20261206_000003_attributes_in_contact_row");
        Migrator::down(&db, Some(undone)).await.expect("migrate down");
        assert_eq!(count("TRUE").await, 11, "a row per value");
        assert_eq!(count("sealed").await, 2);
        assert_eq!(count("value_number IS NOT NULL").await, 2);
        assert_eq!(count("value_bool IS NOT NULL").await, 2);
        assert_eq!(count("value_time IS NOT NULL").await, 2);
        assert_eq!(count("field_key = 'last_order' AND value_time > '2026-01-10T10:00:00.1Z'").await, 1);
        assert_eq!(count("field_key = 'score' AND value_number > 0.3 AND value_number < 1").await, 1);
        assert_eq!(count("field_key = 'tier' AND value_text = 'gold' AND value_type = 'enum'").await, 1);

        Migrator::up(&db, None).await.expect("migrate up");
        db.close().await.ok();
        for (contact, name) in before.iter().zip(["a", "b", "c"]) {
            assert_eq!(&lookup(&app, json!({ "email": format!("{name}@example.com") })).await, contact);
        }
        for (filter, expected) in &orderings {
            assert_eq!(matching(&app, filter.clone()).await, emails(expected), "after the round trip: {filter}");
        }
    }

    async fn upsert_by_email_creates_a_contact_with_normalised_values(app) {
        let (contact, created) = upsert(&app, json!({
            "email": "  Ada.Lovelace@Example.COM ",
            "firstName": " Ada ",
            "phone": "+49 (30) 123-456",
            "locale": "de-ch",
            "timeZone": "Europe/Berlin",
            "country": "de",
        }))
        .await;
        assert!(created);
        assert_eq!(contact["version"], 1);
        // Trimmed and the domain lower-cased; the local part keeps its case.
        assert_eq!(contact["email"], "Ada.Lovelace@example.com");
        assert_eq!(contact["externalId"], Value::Null);
        assert_eq!(contact["firstName"], "Ada");
        assert_eq!(contact["lastName"], Value::Null);
        assert_eq!(contact["phone"], "+4930123456");
        assert_eq!(contact["locale"], "de-CH");
        assert_eq!(contact["timeZone"], "Europe/Berlin");
        assert_eq!(contact["country"], "DE");
        assert_eq!(contact["attributes"], json!({}));
        assert_eq!(contact["createdAt"], contact["updatedAt"]);
        // The answer is what was stored.
        assert_eq!(lookup(&app, json!({ "id": contact["id"] })).await, contact);

        // A differently cased local part is another address, and so another contact.
        let (other, created) = upsert(&app, json!({ "email": "ada.lovelace@example.com" })).await;
        assert!(created);
        assert_ne!(other["id"], contact["id"]);
    }

    async fn the_same_upsert_twice_leaves_the_contact_and_its_version_as_the_first_did(app) {
        define_field(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        define_field(&app, json!({ "key": "last_order", "label": "Last order", "type": "DATE_TIME" })).await;
        let input = json!({
            "email": "grace@example.com",
            "firstName": "Grace",
            "country": "us",
            "attributes": { "score": 7, "last_order": "2026-03-01T09:30:00+01:00" },
        });
        let (first, created) = upsert(&app, input.clone()).await;
        assert!(created);
        assert_eq!(first["version"], 1);

        let before = app.snapshot().await;
        let (second, created) = upsert(&app, input).await;
        assert!(!created);
        assert_eq!(second, first, "same version, same updatedAt, same values");
        // The same input spelled differently (domain case, offset) changes nothing either.
        let (third, created) = upsert(&app, json!({
            "email": "grace@EXAMPLE.com",
            "country": "US",
            "attributes": { "score": 7.0, "last_order": "2026-03-01T08:30:00Z" },
        }))
        .await;
        assert!(!created);
        assert_eq!(third, first);
        assert_eq!(app.snapshot().await, before);
    }

    async fn an_upsert_that_changes_a_value_bumps_the_version_and_keeps_what_it_leaves_out(app) {
        let (first, _) = upsert(&app, json!({
            "email": "grace@example.com",
            "firstName": "Grace",
            "lastName": "Hopper",
            "phone": "+15550100",
        }))
        .await;

        let (second, created) = upsert(&app, json!({ "email": "grace@example.com", "firstName": "Amazing Grace" })).await;
        assert!(!created);
        assert_eq!(second["id"], first["id"]);
        assert_eq!(second["version"], 2);
        assert_eq!(second["firstName"], "Amazing Grace");
        assert_eq!(second["lastName"], "Hopper");
        assert_eq!(second["phone"], "+15550100");
        assert_eq!(second["createdAt"], first["createdAt"]);

        // Null clears a field; the rest stays.
        let (third, created) = upsert(&app, json!({ "email": "grace@example.com", "phone": null })).await;
        assert!(!created);
        assert_eq!(third["version"], 3);
        assert_eq!(third["phone"], Value::Null);
        assert_eq!(third["firstName"], "Amazing Grace");
        assert_eq!(lookup(&app, json!({ "id": first["id"] })).await, third);
    }

    async fn upsert_by_external_id_creates_and_then_updates_that_contact(app) {
        let (contact, created) = upsert(&app, json!({ "externalId": "crm-1", "firstName": "Alan" })).await;
        assert!(created);
        assert_eq!(contact["version"], 1);
        assert_eq!(contact["externalId"], "crm-1");
        assert_eq!(contact["email"], Value::Null);

        // Surrounding space is not part of an external id.
        let (updated, created) = upsert(&app, json!({ "externalId": " crm-1 ", "email": "alan@example.com" })).await;
        assert!(!created);
        assert_eq!(updated["id"], contact["id"]);
        assert_eq!(updated["version"], 2);
        assert_eq!(updated["email"], "alan@example.com");
        assert_eq!(updated["firstName"], "Alan");
        assert_eq!(lookup(&app, json!({ "externalId": "crm-1" })).await, updated);
    }

    async fn upsert_with_external_id_and_email_keys_on_the_external_id_and_may_change_the_email(app) {
        let (original, created) = upsert(&app, json!({ "externalId": "crm-7", "email": "old@example.com" })).await;
        assert!(created);

        let (changed, created) = upsert(&app, json!({ "externalId": "crm-7", "email": "new@example.com" })).await;
        assert!(!created);
        assert_eq!(changed["id"], original["id"]);
        assert_eq!(changed["version"], 2);
        assert_eq!(changed["email"], "new@example.com");
        assert_eq!(lookup(&app, json!({ "email": "old@example.com" })).await, Value::Null);
        assert_eq!(lookup(&app, json!({ "email": "new@example.com" })).await["id"], original["id"]);

        // The old address is free again: upserting it alone creates somebody else.
        let (other, created) = upsert(&app, json!({ "email": "old@example.com" })).await;
        assert!(created);
        assert_ne!(other["id"], original["id"]);
    }

    async fn an_upsert_without_external_id_or_email_is_rejected_and_nothing_is_written(app) {
        upsert(&app, json!({ "email": "someone@example.com" })).await;
        for input in [json!({ "firstName": "Nobody" }), json!({ "email": null, "firstName": "Nobody" }), json!({})] {
            assert_rejected(&app, UPSERT, json!({ "input": input }), "BAD_USER_INPUT", Some("externalId")).await;
        }
    }

    async fn a_contact_is_found_by_id_external_id_or_normalised_email(app) {
        let (contact, _) = upsert(&app, json!({ "externalId": "crm-42", "email": "Marie.Curie@example.org" })).await;
        upsert(&app, json!({ "externalId": "crm-43", "email": "pierre@example.org" })).await;

        assert_eq!(lookup(&app, json!({ "id": contact["id"] })).await, contact);
        assert_eq!(lookup(&app, json!({ "externalId": "crm-42" })).await, contact);
        assert_eq!(lookup(&app, json!({ "email": "Marie.Curie@example.org" })).await, contact);
        // The lookup normalises its input as the upsert did.
        assert_eq!(lookup(&app, json!({ "email": "  Marie.Curie@EXAMPLE.ORG " })).await, contact);
        // But the local part is case-sensitive.
        assert_eq!(lookup(&app, json!({ "email": "marie.curie@example.org" })).await, Value::Null);
    }

    async fn an_unknown_contact_is_null(app) {
        upsert(&app, json!({ "externalId": "crm-1", "email": "known@example.com" })).await;
        assert_eq!(lookup(&app, json!({ "id": random_id() })).await, Value::Null);
        assert_eq!(lookup(&app, json!({ "externalId": "crm-2" })).await, Value::Null);
        assert_eq!(lookup(&app, json!({ "email": "unknown@example.com" })).await, Value::Null);
    }

    async fn a_lookup_by_two_identifiers_or_a_malformed_one_is_bad_user_input(app) {
        let (contact, _) = upsert(&app, json!({ "externalId": "crm-1", "email": "known@example.com" })).await;

        // Not exactly one identifier: GraphQL validation (@oneOf) refuses these before any
        // resolver runs, so no extensions.field is set; the message names the argument.
        let two = json!({ "by": { "id": contact["id"], "email": "known@example.com" } });
        let inline = r#"{ contact(by: { externalId: "crm-1", email: "known@example.com" }) { id } }"#;
        for (query, variables) in [(LOOKUP, two), (inline, json!({})), (LOOKUP, json!({ "by": {} }))] {
            let error = app.error(query, variables).await;
            assert_error(&error, "BAD_USER_INPUT", None);
            assert!(error["message"].as_str().is_some_and(|message| message.contains("\"by\"")), "{error:#}");
        }

        for (by, field) in [
            (json!({ "id": "not-a-uuid" }), "by.id"),
            (json!({ "id": "" }), "by.id"),
            (json!({ "email": "not an email" }), "by.email"),
            (json!({ "email": "known@localhost" }), "by.email"),
            (json!({ "externalId": "   " }), "by.externalId"),
        ] {
            let error = app.error(LOOKUP, json!({ "by": by })).await;
            assert_error(&error, "BAD_USER_INPUT", Some(field));
        }
    }

    async fn update_with_the_current_version_changes_clears_and_keeps_fields(app) {
        define_field(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        define_field(&app, json!({ "key": "nickname", "label": "Nickname", "type": "STRING" })).await;
        let (contact, _) = upsert(&app, json!({
            "externalId": "crm-1",
            "email": "ada@example.com",
            "firstName": "Ada",
            "lastName": "Lovelace",
            "phone": "+4930123456",
            "timeZone": "Europe/London",
            "attributes": { "score": 5, "nickname": "Countess" },
        }))
        .await;

        let updated = update(&app, json!({
            "id": contact["id"],
            "expectedVersion": 1,
            "firstName": "Augusta",
            "timeZone": "America/New_York",
            "phone": null,
            "attributes": { "score": 9.5, "nickname": null },
        }))
        .await;
        assert_eq!(updated["id"], contact["id"]);
        assert_eq!(updated["version"], 2);
        assert_eq!(updated["firstName"], "Augusta");
        assert_eq!(updated["timeZone"], "America/New_York");
        assert_eq!(updated["phone"], Value::Null);
        assert_eq!(updated["lastName"], "Lovelace");
        assert_eq!(updated["email"], "ada@example.com");
        assert_eq!(updated["externalId"], "crm-1");
        assert_eq!(updated["attributes"], json!({ "score": 9.5 }));
        assert_eq!(updated["createdAt"], contact["createdAt"]);
        assert_eq!(lookup(&app, json!({ "id": contact["id"] })).await, updated);

        // A change that changes nothing keeps the version.
        let before = app.snapshot().await;
        let same = update(&app, json!({ "id": contact["id"], "expectedVersion": 2, "firstName": "Augusta" })).await;
        assert_eq!(same, updated);
        assert_eq!(app.snapshot().await, before);

        // Without attributes, the attributes stay.
        let renamed = update(&app, json!({ "id": contact["id"], "expectedVersion": 2, "lastName": "King" })).await;
        assert_eq!(renamed["version"], 3);
        assert_eq!(renamed["attributes"], json!({ "score": 9.5 }));
    }

    async fn stale_version_is_rejected_and_nothing_is_written(app) {
        let (contact, _) = upsert(&app, json!({ "email": "ada@example.com", "firstName": "Ada" })).await;
        update(&app, json!({ "id": contact["id"], "expectedVersion": 1, "firstName": "Augusta" })).await;

        for expected_version in [1, 3, 0] {
            let input = json!({ "id": contact["id"], "expectedVersion": expected_version, "firstName": "Lost update" });
            assert_rejected(&app, UPDATE, json!({ "input": input }), "CONFLICT", Some("expectedVersion")).await;
        }
        // Even a change that would change nothing is refused at a stale version.
        let input = json!({ "id": contact["id"], "expectedVersion": 1, "firstName": "Augusta" });
        assert_rejected(&app, UPDATE, json!({ "input": input }), "CONFLICT", Some("expectedVersion")).await;

        let current = update(&app, json!({ "id": contact["id"], "expectedVersion": 2, "lastName": "King" })).await;
        assert_eq!(current["version"], 3);
        assert_eq!(current["firstName"], "Augusta");
    }

    async fn updating_or_deleting_an_unknown_contact_is_not_found(app) {
        upsert(&app, json!({ "email": "ada@example.com" })).await;
        let input = json!({ "id": random_id(), "expectedVersion": 1, "firstName": "Ghost" });
        assert_rejected(&app, UPDATE, json!({ "input": input }), "NOT_FOUND", None).await;
        assert_rejected(&app, DELETE, json!({ "id": random_id() }), "NOT_FOUND", None).await;

        let input = json!({ "id": "42", "expectedVersion": 1, "firstName": "Ghost" });
        assert_rejected(&app, UPDATE, json!({ "input": input }), "BAD_USER_INPUT", Some("id")).await;
        assert_rejected(&app, DELETE, json!({ "id": "42" }), "BAD_USER_INPUT", Some("id")).await;
    }

    async fn removing_both_email_and_external_id_is_rejected_and_nothing_is_written(app) {
        let (contact, _) = upsert(&app, json!({ "externalId": "crm-1", "email": "ada@example.com" })).await;
        let both = json!({ "id": contact["id"], "expectedVersion": 1, "email": null, "externalId": null });
        assert_rejected(&app, UPDATE, json!({ "input": both }), "BAD_USER_INPUT", Some("email")).await;

        // Either one alone may go, as long as the other stays.
        let without_email = update(&app, json!({ "id": contact["id"], "expectedVersion": 1, "email": null })).await;
        assert_eq!(without_email["email"], Value::Null);
        let last = json!({ "id": contact["id"], "expectedVersion": 2, "externalId": null });
        assert_rejected(&app, UPDATE, json!({ "input": last }), "BAD_USER_INPUT", Some("email")).await;
        let upsert_clearing = json!({ "externalId": "crm-1", "email": null });
        let (unchanged, created) = upsert(&app, upsert_clearing).await;
        assert!(!created);
        assert_eq!(unchanged["version"], 2, "clearing an absent email changes nothing");
    }

    async fn malformed_profile_values_are_rejected_naming_the_field_and_nothing_is_written(app) {
        let (contact, _) = upsert(&app, json!({ "externalId": "crm-1", "email": "ada@example.com" })).await;
        let too_long = "x".repeat(201);
        let cases = [
            ("email", json!("not-an-email")),
            ("email", json!("ada@localhost")),
            ("email", json!("two@@example.com")),
            ("timeZone", json!("Mars/Olympus")),
            ("timeZone", json!("CEST+2")),
            ("phone", json!("030 123456")),
            ("phone", json!("+49 30 abc")),
            ("locale", json!("english please")),
            ("country", json!("XX")),
            ("country", json!("DEU")),
            ("firstName", json!("   ")),
            ("lastName", json!(too_long)),
            ("externalId", json!("")),
        ];
        for (field, value) in cases {
            // Creating a new contact.
            let mut create = json!({ "externalId": "crm-new", "email": "new@example.com" });
            create[field] = value.clone();
            assert_rejected(&app, UPSERT, json!({ "input": create }), "BAD_USER_INPUT", Some(field)).await;
            // Changing the existing one through an upsert …
            let mut change = json!({ "externalId": "crm-1" });
            change[field] = value.clone();
            if field == "externalId" {
                change["email"] = json!("ada@example.com");
            }
            assert_rejected(&app, UPSERT, json!({ "input": change }), "BAD_USER_INPUT", Some(field)).await;
            // … and through an update.
            let mut update = json!({ "id": contact["id"], "expectedVersion": 1 });
            update[field] = value;
            assert_rejected(&app, UPDATE, json!({ "input": update }), "BAD_USER_INPUT", Some(field)).await;
        }
    }

    async fn custom_field_values_that_do_not_fit_their_definition_are_rejected_and_nothing_is_written(app) {
        define_field(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        define_field(&app, json!({ "key": "vip", "label": "VIP", "type": "BOOLEAN" })).await;
        define_field(&app, json!({ "key": "birthday", "label": "Birthday", "type": "DATE" })).await;
        define_field(&app, json!({ "key": "nickname", "label": "Nickname", "type": "STRING" })).await;
        define_field(&app, json!({
            "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["bronze", "silver", "gold"],
        }))
        .await;
        let (contact, _) = upsert(&app, json!({ "email": "ada@example.com", "attributes": { "tier": "gold" } })).await;

        let cases = [
            ("unknown_key", json!("anything")),
            ("Score", json!(1)),
            ("score", json!("12")),
            ("score", json!(true)),
            ("score", json!([1])),
            ("vip", json!("yes")),
            ("vip", json!(1)),
            ("birthday", json!("1990-02-30")),
            ("birthday", json!("28.02.1990")),
            ("nickname", json!(5)),
            ("nickname", json!({ "text": "Ada" })),
            ("tier", json!("platinum")),
            ("tier", json!("Gold")),
        ];
        for (key, value) in cases {
            let field = format!("attributes.{key}");
            let attributes = json!({ key: value });
            let create = json!({ "email": "new@example.com", "attributes": attributes });
            assert_rejected(&app, UPSERT, json!({ "input": create }), "BAD_USER_INPUT", Some(field.as_str())).await;
            let change = json!({ "email": "ada@example.com", "attributes": attributes });
            assert_rejected(&app, UPSERT, json!({ "input": change }), "BAD_USER_INPUT", Some(field.as_str())).await;
            // One bad value spoils the whole change, good values beside it included.
            let update = json!({
                "id": contact["id"], "expectedVersion": 1, "firstName": "Ada",
                "attributes": { "tier": "silver", key: value },
            });
            assert_rejected(&app, UPDATE, json!({ "input": update }), "BAD_USER_INPUT", Some(field.as_str())).await;
        }
    }

    async fn attributes_that_are_not_an_object_are_bad_user_input_and_nothing_is_written(app) {
        define_field(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        let (contact, _) = upsert(&app, json!({ "email": "ada@example.com", "attributes": { "score": 1 } })).await;
        for attributes in [json!([1]), json!("score"), json!(5), json!(true)] {
            let create = json!({ "email": "new@example.com", "attributes": attributes });
            assert_rejected(&app, UPSERT, json!({ "input": create }), "BAD_USER_INPUT", Some("attributes")).await;
            let change = json!({ "id": contact["id"], "expectedVersion": 1, "attributes": attributes });
            assert_rejected(&app, UPDATE, json!({ "input": change }), "BAD_USER_INPUT", Some("attributes")).await;
        }
        // Null attributes, like absent ones, change none of them.
        let (same, created) = upsert(&app, json!({ "email": "ada@example.com", "attributes": null })).await;
        assert!(!created);
        assert_eq!(same, contact);
    }

    async fn unknown_input_fields_and_values_of_the_wrong_graphql_type_are_bad_user_input_and_nothing_is_written(app) {
        let (contact, _) = upsert(&app, json!({ "email": "ada@example.com" })).await;
        // These never reach a resolver: async-graphql refuses them while coercing the variables,
        // and its message names the argument.
        for (query, input, argument) in [
            (UPSERT, json!({ "email": "new@example.com", "nickname": "Ada" }), "unknown field \"nickname\""),
            (UPSERT, json!({ "email": 5 }), "input.email"),
            (UPSERT, json!({ "email": "new@example.com", "firstName": ["Ada"] }), "input.firstName"),
            (UPDATE, json!({ "id": contact["id"], "expectedVersion": "one" }), "input.expectedVersion"),
            (UPDATE, json!({ "id": contact["id"] }), "\"expectedVersion\""),
            (UPDATE, json!({ "id": contact["id"], "expectedVersion": 1, "version": 2 }), "unknown field \"version\""),
        ] {
            let error = assert_rejected(&app, query, json!({ "input": input }), "BAD_USER_INPUT", None).await;
            let message = error["message"].as_str().unwrap_or_default();
            assert!(message.contains(argument), "{error:#}");
        }
        let inline = r#"mutation { upsertContact(input: { email: "new@example.com", nickname: "Ada" }) { created } }"#;
        assert_rejected(&app, inline, json!({}), "BAD_USER_INPUT", None).await;
    }

    async fn several_missing_required_fields_are_named_first_by_key_every_time(app) {
        for key in ["tier", "birthday", "country_code"] {
            define_field(&app, json!({ "key": key, "label": key, "type": "STRING", "required": true })).await;
        }
        for _ in 0..5 {
            let input = json!({ "email": "ada@example.com" });
            assert_rejected(&app, UPSERT, json!({ "input": input }), "BAD_USER_INPUT", Some("attributes.birthday")).await;
        }
        let input = json!({ "email": "ada@example.com", "attributes": { "birthday": "10 December" } });
        assert_rejected(&app, UPSERT, json!({ "input": input }), "BAD_USER_INPUT", Some("attributes.country_code")).await;
    }

    async fn a_required_custom_field_must_be_given_on_create_and_cannot_be_cleared(app) {
        define_field(&app, json!({ "key": "customer_since", "label": "Customer since", "type": "DATE", "required": true }))
            .await;
        let missing = json!({ "email": "ada@example.com", "firstName": "Ada" });
        assert_rejected(&app, UPSERT, json!({ "input": missing }), "BAD_USER_INPUT", Some("attributes.customer_since"))
            .await;
        let given_null = json!({ "email": "ada@example.com", "attributes": { "customer_since": null } });
        assert_rejected(&app, UPSERT, json!({ "input": given_null }), "BAD_USER_INPUT", Some("attributes.customer_since"))
            .await;

        let (contact, created) =
            upsert(&app, json!({ "email": "ada@example.com", "attributes": { "customer_since": "2020-01-31" } })).await;
        assert!(created);
        assert_eq!(contact["attributes"], json!({ "customer_since": "2020-01-31" }));

        let clear = json!({ "id": contact["id"], "expectedVersion": 1, "attributes": { "customer_since": null } });
        assert_rejected(&app, UPDATE, json!({ "input": clear }), "BAD_USER_INPUT", Some("attributes.customer_since"))
            .await;
        let clear = json!({ "email": "ada@example.com", "attributes": { "customer_since": null } });
        assert_rejected(&app, UPSERT, json!({ "input": clear }), "BAD_USER_INPUT", Some("attributes.customer_since"))
            .await;

        // Changes that leave the required value alone are fine, and it may be replaced.
        let renamed = update(&app, json!({ "id": contact["id"], "expectedVersion": 1, "firstName": "Ada" })).await;
        assert_eq!(renamed["attributes"], json!({ "customer_since": "2020-01-31" }));
        let (replaced, _) =
            upsert(&app, json!({ "email": "ada@example.com", "attributes": { "customer_since": "2019-12-01" } })).await;
        assert_eq!(replaced["attributes"], json!({ "customer_since": "2019-12-01" }));
        assert_eq!(replaced["version"], 3);
    }

    async fn taking_another_contacts_external_id_is_a_conflict_and_nothing_is_written(app) {
        upsert(&app, json!({ "externalId": "crm-a", "email": "a@example.com" })).await;
        let (b, _) = upsert(&app, json!({ "email": "b@example.com", "firstName": "Bea" })).await;

        for external_id in ["crm-a", " crm-a "] {
            let input = json!({ "id": b["id"], "expectedVersion": 1, "externalId": external_id, "firstName": "Taken" });
            assert_rejected(&app, UPDATE, json!({ "input": input }), "CONFLICT", Some("externalId")).await;
        }
        // A free external id is fine.
        let b = update(&app, json!({ "id": b["id"], "expectedVersion": 1, "externalId": "crm-b" })).await;
        assert_eq!(b["externalId"], "crm-b");
    }

    async fn taking_another_contacts_email_is_a_conflict_and_nothing_is_written(app) {
        let (a, _) = upsert(&app, json!({ "externalId": "crm-a", "email": "a@example.com" })).await;
        let (b, _) = upsert(&app, json!({ "externalId": "crm-b", "email": "b@example.com" })).await;

        let input = json!({ "id": b["id"], "expectedVersion": 1, "email": "a@EXAMPLE.com" });
        assert_rejected(&app, UPDATE, json!({ "input": input }), "CONFLICT", Some("email")).await;
        // Keyed on crm-a, this upsert would give contact a the address of contact b.
        let input = json!({ "externalId": "crm-a", "email": "b@example.com" });
        assert_rejected(&app, UPSERT, json!({ "input": input }), "CONFLICT", Some("email")).await;
        // A new external id with a taken address would be a second contact with that address.
        let input = json!({ "externalId": "crm-c", "email": "a@example.com" });
        assert_rejected(&app, UPSERT, json!({ "input": input }), "CONFLICT", Some("email")).await;

        assert_eq!(lookup(&app, json!({ "id": a["id"] })).await, a);
        assert_eq!(lookup(&app, json!({ "id": b["id"] })).await, b);
    }

    async fn deleting_a_contact_removes_it_with_its_attributes_consents_topics_and_events(app) {
        define_field(&app, json!({ "key": "nickname", "label": "Nickname", "type": "STRING" })).await;
        define_topic(&app, "news").await;
        let mut ids = Vec::new();
        for name in ["a", "b"] {
            let (contact, _) = upsert(&app, json!({
                "externalId": format!("crm-{name}"),
                "email": format!("{name}@example.com"),
                "attributes": { "nickname": name },
            }))
            .await;
            set_consent(&app, &contact["id"], "marketing", "EMAIL", "GRANTED").await;
            set_consent(&app, &contact["id"], "analytics", "EMAIL", "DENIED").await;
            subscribe(&app, &contact["id"], "news").await;
            let events = json!([{ "contact": { "id": contact["id"] }, "type": "order.completed", "idempotencyKey": format!("order-{name}") }]);
            let tracked = app.data(TRACK, json!({ "events": events })).await;
            assert_eq!(tracked["trackEvents"][0]["status"], "CREATED");
            ids.push(contact["id"].clone());
        }
        let (a, b) = (&ids[0], &ids[1]);
        let counts_before = row_counts(&app).await;
        assert_eq!(
            counts_before,
            [("contact", 2), ("consent", 4), ("consent_change", 4), ("topic_subscription", 2), ("event", 2)]
        );

        let deleted = app.data(DELETE, json!({ "id": a })).await;
        assert_eq!(deleted["deleteContact"]["deletedContactId"], *a);
        assert_eq!(lookup(&app, json!({ "id": a })).await, Value::Null);
        assert_eq!(lookup(&app, json!({ "externalId": "crm-a" })).await, Value::Null);
        assert_eq!(lookup(&app, json!({ "email": "a@example.com" })).await, Value::Null);
        assert_rejected(&app, DELETE, json!({ "id": a }), "NOT_FOUND", None).await;

        // Exactly the deleted contact's rows are gone; the other contact keeps all of its own.
        assert_eq!(
            row_counts(&app).await,
            [("contact", 1), ("consent", 2), ("consent_change", 2), ("topic_subscription", 1), ("event", 1)]
        );
        let kept = app
            .data(
                "query($id: ID!) { contact(by: { id: $id }) { attributes consents { purpose } topics { topic { key } } events { edges { node { type } } } } }",
                json!({ "id": b }),
            )
            .await;
        assert_eq!(kept["contact"]["attributes"], json!({ "nickname": "b" }));
        assert_eq!(kept["contact"]["consents"].as_array().map(Vec::len), Some(2));
        assert_eq!(kept["contact"]["topics"][0]["topic"]["key"], "news");
        assert_eq!(kept["contact"]["events"]["edges"][0]["node"]["type"], "order.completed");
        let granted = json!({ "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }] });
        assert_eq!(matching(&app, granted).await, emails(&["b"]));

        // The deleted contact's idempotency key went with its event.
        let events = json!([{ "contact": { "id": b }, "type": "order.completed", "idempotencyKey": "order-a" }]);
        let tracked = app.data(TRACK, json!({ "events": events })).await;
        assert_eq!(tracked["trackEvents"][0]["status"], "CREATED");
    }

    async fn a_contact_id_in_another_uuid_spelling_finds_the_contact_and_is_answered_canonically(app) {
        let (contact, _) = upsert(&app, json!({ "email": "ada@example.com" })).await;
        let id = contact["id"].as_str().expect("id").to_owned();
        assert_eq!(id, id.to_lowercase(), "ids are shown lower-cased, with hyphens");
        assert_eq!(lookup(&app, json!({ "id": id.to_uppercase() })).await, contact);
        let simple = id.replace('-', "");
        assert_eq!(lookup(&app, json!({ "id": simple })).await, contact);

        let deleted = app.data(DELETE, json!({ "id": simple.to_uppercase() })).await;
        assert_eq!(deleted["deleteContact"]["deletedContactId"], id);
        assert_eq!(lookup(&app, json!({ "id": id })).await, Value::Null);
    }

    async fn contacts_page_forward_in_creation_order_without_gaps_or_duplicates(app) {
        let names = ["p0", "p1", "p2", "p3", "p4", "p5", "p6"];
        for name in names {
            upsert(&app, json!({ "email": format!("{name}@example.com") })).await;
        }

        let (all, connection) = list(&app, json!({})).await;
        assert_eq!(all, emails(&names), "without arguments, one default page holds all seven");
        assert_eq!(connection["pageInfo"]["hasNextPage"], false);

        let mut seen = Vec::new();
        let mut after = Value::Null;
        let mut pages = Vec::new();
        loop {
            let (page, connection) = list(&app, json!({ "first": 3, "after": after })).await;
            let info = &connection["pageInfo"];
            assert_eq!(info["hasPreviousPage"], !after.is_null());
            assert_eq!(info["startCursor"], connection["edges"][0]["cursor"]);
            assert_eq!(info["endCursor"], connection["edges"][page.len() - 1]["cursor"]);
            pages.push((page.len(), info["hasNextPage"].clone()));
            seen.extend(page);
            if info["hasNextPage"] == false {
                break;
            }
            after = info["endCursor"].clone();
        }
        assert_eq!(pages, [(3, json!(true)), (3, json!(true)), (1, json!(false))]);
        assert_eq!(seen, emails(&names));

        // A page that ends exactly at the last contact says there is nothing more.
        let (exact, connection) = list(&app, json!({ "first": 7 })).await;
        assert_eq!(exact.len(), 7);
        assert_eq!(connection["pageInfo"]["hasNextPage"], false);
        let (_, connection) = list(&app, json!({ "first": 6 })).await;
        assert_eq!(connection["pageInfo"]["hasNextPage"], true);
        let (beyond, connection) = list(&app, json!({ "first": 3, "after": connection["pageInfo"]["endCursor"] })).await;
        assert_eq!(beyond, emails(&["p6"]));
        assert_eq!(connection["pageInfo"]["hasNextPage"], false);
    }

    async fn contacts_page_backward_from_the_end_and_before_a_cursor(app) {
        let names = ["p0", "p1", "p2", "p3", "p4", "p5", "p6"];
        for name in names {
            upsert(&app, json!({ "email": format!("{name}@example.com") })).await;
        }

        let (page, connection) = list(&app, json!({ "last": 3 })).await;
        assert_eq!(page, emails(&["p4", "p5", "p6"]), "a backward page is still in creation order");
        assert_eq!(connection["pageInfo"]["hasPreviousPage"], true);
        assert_eq!(connection["pageInfo"]["hasNextPage"], false);

        let mut seen = page;
        let mut before = connection["pageInfo"]["startCursor"].clone();
        loop {
            let (page, connection) = list(&app, json!({ "last": 3, "before": before })).await;
            assert_eq!(connection["pageInfo"]["hasNextPage"], true);
            seen = [page, seen].concat();
            if connection["pageInfo"]["hasPreviousPage"] == false {
                break;
            }
            before = connection["pageInfo"]["startCursor"].clone();
        }
        assert_eq!(seen, emails(&names));

        // after and before together read the window between them.
        let (_, first_two) = list(&app, json!({ "first": 2 })).await;
        let (_, last_two) = list(&app, json!({ "last": 2 })).await;
        let window = json!({
            "first": 10,
            "after": first_two["pageInfo"]["endCursor"],
            "before": last_two["pageInfo"]["startCursor"],
        });
        assert_eq!(list(&app, window).await.0, emails(&["p2", "p3", "p4"]));
    }

    async fn pages_stay_stable_while_contacts_are_added(app) {
        for name in ["p0", "p1", "p2", "p3"] {
            upsert(&app, json!({ "email": format!("{name}@example.com") })).await;
        }
        let (page, connection) = list(&app, json!({ "first": 2 })).await;
        assert_eq!(page, emails(&["p0", "p1"]));
        upsert(&app, json!({ "email": "p4@example.com" })).await;
        let (rest, connection) = list(&app, json!({ "first": 10, "after": connection["pageInfo"]["endCursor"] })).await;
        assert_eq!(rest, emails(&["p2", "p3", "p4"]), "the newcomer comes last, nothing is skipped or repeated");
        assert_eq!(connection["pageInfo"]["hasNextPage"], false);
    }

    async fn page_sizes_outside_1_to_100_malformed_cursors_and_first_with_last_are_bad_user_input(app) {
        upsert(&app, json!({ "email": "p0@example.com" })).await;
        let not_a_uuid = "ImhlbGxvIg"; // base64 of "hello" as JSON: a string, but no contact id
        for (variables, field) in [
            (json!({ "first": 101 }), "first"),
            (json!({ "first": 0 }), "first"),
            (json!({ "first": -1 }), "first"),
            (json!({ "last": 101 }), "last"),
            (json!({ "last": 0 }), "last"),
            (json!({ "first": 3, "last": 3 }), "last"),
            (json!({ "first": 3, "after": "garbage" }), "after"),
            (json!({ "first": 3, "after": not_a_uuid }), "after"),
            (json!({ "last": 3, "before": "%%%" }), "before"),
        ] {
            let error = app.error(LIST, variables.clone()).await;
            assert_error(&error, "BAD_USER_INPUT", Some(field));
        }
        let (page, _) = list(&app, json!({ "first": 100 })).await;
        assert_eq!(page, emails(&["p0"]), "100 itself is allowed");
    }

    async fn attribute_filters_compare_values_of_every_type(app) {
        for (key, field_type) in
            [("city", "STRING"), ("score", "NUMBER"), ("vip", "BOOLEAN"), ("birthday", "DATE"), ("last_order", "DATE_TIME")]
        {
            define_field(&app, json!({ "key": key, "label": key, "type": field_type })).await;
        }
        define_field(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["silver", "gold"] })).await;
        let contacts = [
            ("a", json!({ "city": "Berlin", "score": 10, "vip": true, "birthday": "1980-05-01", "last_order": "2026-01-10T10:00:00Z", "tier": "gold" })),
            ("b", json!({ "city": "Paris", "score": 3.5, "vip": false, "birthday": "1995-12-24", "last_order": "2026-03-01T00:00:00+01:00", "tier": "silver" })),
            ("c", json!({ "city": "Berlin", "score": -2, "birthday": "2001-01-01", "tier": "gold" })),
            ("d", json!({})),
        ];
        for (name, attributes) in contacts {
            upsert(&app, json!({ "email": format!("{name}@example.com"), "attributes": attributes })).await;
        }
        let compare = |field: &str, comparison: &str, value: Value| {
            json!({ "attributes": [{ "field": field, "comparison": comparison, "value": value }] })
        };
        let is_set = |field: &str, set: bool| json!({ "attributes": [{ "field": field, "isSet": set }] });

        let expectations = [
            (compare("city", "EQUAL", json!("Berlin")), vec!["a", "c"]),
            // "Not equal" also matches contacts that have no value at all.
            (compare("city", "NOT_EQUAL", json!("Berlin")), vec!["b", "d"]),
            (compare("tier", "EQUAL", json!("gold")), vec!["a", "c"]),
            (compare("tier", "NOT_EQUAL", json!("gold")), vec!["b", "d"]),
            (compare("score", "EQUAL", json!(10)), vec!["a"]),
            (compare("score", "GREATER", json!(3.5)), vec!["a"]),
            (compare("score", "GREATER_OR_EQUAL", json!(3.5)), vec!["a", "b"]),
            (compare("score", "LESS", json!(0)), vec!["c"]),
            (compare("score", "LESS_OR_EQUAL", json!(3.5)), vec!["b", "c"]),
            (compare("score", "NOT_EQUAL", json!(10)), vec!["b", "c", "d"]),
            (compare("vip", "EQUAL", json!(true)), vec!["a"]),
            (compare("vip", "EQUAL", json!(false)), vec!["b"]),
            (compare("vip", "NOT_EQUAL", json!(true)), vec!["b", "c", "d"]),
            (compare("birthday", "LESS", json!("1995-12-24")), vec!["a"]),
            (compare("birthday", "LESS_OR_EQUAL", json!("1995-12-24")), vec!["a", "b"]),
            (compare("birthday", "GREATER", json!("1990-01-01")), vec!["b", "c"]),
            (compare("birthday", "EQUAL", json!("2001-01-01")), vec!["c"]),
            (compare("last_order", "GREATER", json!("2026-02-01T00:00:00Z")), vec!["b"]),
            (compare("last_order", "LESS", json!("2026-02-28T23:30:00Z")), vec!["a", "b"]),
            // b's value was written with an offset; it is the same instant in UTC.
            (compare("last_order", "EQUAL", json!("2026-02-28T23:00:00Z")), vec!["b"]),
            (compare("last_order", "LESS_OR_EQUAL", json!("2026-01-10T11:00:00+01:00")), vec!["a"]),
            (is_set("score", true), vec!["a", "b", "c"]),
            (is_set("score", false), vec!["d"]),
            (is_set("vip", false), vec!["c", "d"]),
            (is_set("last_order", true), vec!["a", "b"]),
        ];
        for (filter, expected) in expectations {
            assert_eq!(matching(&app, filter.clone()).await, emails(&expected), "{filter}");
        }
    }

    async fn consent_filter_matches_the_current_decision_of_each_contact(app) {
        let mut ids = Vec::new();
        for name in ["a", "b", "c", "d", "e", "f"] {
            ids.push(upsert(&app, json!({ "email": format!("{name}@example.com") })).await.0["id"].clone());
        }
        set_consent(&app, &ids[0], "marketing", "EMAIL", "GRANTED").await;
        set_consent(&app, &ids[1], "marketing", "EMAIL", "GRANTED").await;
        set_consent(&app, &ids[1], "marketing", "EMAIL", "DENIED").await;
        set_consent(&app, &ids[2], "marketing", "SMS", "GRANTED").await;
        set_consent(&app, &ids[4], "marketing", "EMAIL", "PENDING").await;
        set_consent(&app, &ids[5], "marketing", "EMAIL", "GRANTED").await;
        // An older decision recorded later does not replace the current one.
        let late = json!({
            "contactId": ids[5], "purpose": "marketing", "channel": "EMAIL", "status": "DENIED",
            "capturedAt": "2020-01-01T00:00:00Z",
        });
        app.data(SET_CONSENT, json!({ "input": late })).await;

        let consent = |channel: &str, status: &str| {
            json!({ "consents": [{ "purpose": "marketing", "channel": channel, "status": status }] })
        };
        assert_eq!(matching(&app, consent("EMAIL", "GRANTED")).await, emails(&["a", "f"]));
        assert_eq!(matching(&app, consent("EMAIL", "DENIED")).await, emails(&["b"]));
        assert_eq!(matching(&app, consent("EMAIL", "PENDING")).await, emails(&["e"]));
        assert_eq!(matching(&app, consent("SMS", "GRANTED")).await, emails(&["c"]));
        let analytics = json!({ "consents": [{ "purpose": "analytics", "channel": "EMAIL", "status": "GRANTED" }] });
        assert_eq!(matching(&app, analytics).await, Vec::<String>::new());
    }

    async fn topic_filter_matches_subscribers_and_subscribed_false_matches_everyone_else(app) {
        define_topic(&app, "news").await;
        define_topic(&app, "offers").await;
        let mut ids = Vec::new();
        for name in ["a", "b", "c", "d"] {
            ids.push(upsert(&app, json!({ "email": format!("{name}@example.com") })).await.0["id"].clone());
        }
        subscribe(&app, &ids[0], "news").await;
        subscribe(&app, &ids[1], "news").await;
        app.data(UNSUBSCRIBE, json!({ "contactId": ids[1], "topic": "news" })).await;
        subscribe(&app, &ids[2], "offers").await;

        assert_eq!(matching(&app, json!({ "topics": [{ "topic": "news" }] })).await, emails(&["a"]));
        assert_eq!(matching(&app, json!({ "topics": [{ "topic": "news", "subscribed": true }] })).await, emails(&["a"]));
        assert_eq!(
            matching(&app, json!({ "topics": [{ "topic": "news", "subscribed": false }] })).await,
            emails(&["b", "c", "d"])
        );
        assert_eq!(matching(&app, json!({ "topics": [{ "topic": "offers" }] })).await, emails(&["c"]));
    }

    async fn every_filter_condition_must_match(app) {
        define_field(&app, json!({ "key": "city", "label": "City", "type": "STRING" })).await;
        define_field(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        define_topic(&app, "news").await;
        let people = [("a", "Berlin", 10, true, true), ("b", "Berlin", 10, true, false), ("c", "Berlin", 1, true, true),
            ("d", "Paris", 10, true, true), ("e", "Berlin", 10, false, true), ("f", "Berlin", 20, true, true)];
        for (name, city, score, granted, subscribed) in people {
            let (contact, _) =
                upsert(&app, json!({ "email": format!("{name}@example.com"), "attributes": { "city": city, "score": score } })).await;
            if granted {
                set_consent(&app, &contact["id"], "marketing", "EMAIL", "GRANTED").await;
            }
            if subscribed {
                subscribe(&app, &contact["id"], "news").await;
            }
        }
        let filter = json!({
            "attributes": [
                { "field": "city", "comparison": "EQUAL", "value": "Berlin" },
                { "field": "score", "comparison": "GREATER_OR_EQUAL", "value": 10 },
            ],
            "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }],
            "topics": [{ "topic": "news" }],
        });
        assert_eq!(matching(&app, filter.clone()).await, emails(&["a", "f"]));

        // A filtered list pages like the whole list.
        let (page, connection) = list(&app, json!({ "filter": filter, "first": 1 })).await;
        assert_eq!(page, emails(&["a"]));
        assert_eq!(connection["pageInfo"]["hasNextPage"], true);
        let after = connection["pageInfo"]["endCursor"].clone();
        let (page, connection) = list(&app, json!({ "filter": filter, "first": 1, "after": after })).await;
        assert_eq!(page, emails(&["f"]));
        assert_eq!(connection["pageInfo"]["hasNextPage"], false);

        let nobody = json!({
            "attributes": [{ "field": "city", "comparison": "EQUAL", "value": "Paris" }],
            "topics": [{ "topic": "news", "subscribed": false }],
        });
        let (page, connection) = list(&app, json!({ "filter": nobody })).await;
        assert!(page.is_empty());
        assert_eq!(connection["pageInfo"]["hasNextPage"], false);
        assert_eq!(connection["pageInfo"]["endCursor"], Value::Null);
    }

    async fn filters_naming_unknown_fields_topics_or_purposes_or_malformed_conditions_are_bad_user_input(app) {
        define_field(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        define_field(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["gold"] })).await;
        define_topic(&app, "news").await;
        upsert(&app, json!({ "email": "a@example.com", "attributes": { "score": 1 } })).await;
        let score_is_set = json!({ "field": "score", "isSet": true });
        for (filter, field) in [
            (json!({ "attributes": [{ "field": "nope", "comparison": "EQUAL", "value": 1 }] }), "filter.attributes[0].field"),
            (json!({ "attributes": [score_is_set, { "field": "nope", "isSet": true }] }), "filter.attributes[1].field"),
            (json!({ "attributes": [{ "field": "Not A Key", "isSet": true }] }), "filter.attributes[0].field"),
            (json!({ "consents": [{ "purpose": "nope", "channel": "EMAIL", "status": "GRANTED" }] }), "filter.consents[0].purpose"),
            (json!({ "consents": [{ "purpose": "Marketing", "channel": "EMAIL", "status": "GRANTED" }] }), "filter.consents[0].purpose"),
            (json!({ "topics": [{ "topic": "nope" }] }), "filter.topics[0].topic"),
            (json!({ "topics": [{ "topic": "news" }, { "topic": "Bad Key" }] }), "filter.topics[1].topic"),
            // A comparison needs a value of the field's type …
            (json!({ "attributes": [{ "field": "score", "comparison": "EQUAL", "value": "ten" }] }), "filter.attributes[0].value"),
            (json!({ "attributes": [{ "field": "tier", "comparison": "EQUAL", "value": "platinum" }] }), "filter.attributes[0].value"),
            // … and either a comparison with a value, or isSet, never both or neither.
            (json!({ "attributes": [{ "field": "score", "comparison": "EQUAL" }] }), "filter.attributes[0]"),
            (json!({ "attributes": [{ "field": "score", "comparison": "EQUAL", "value": null }] }), "filter.attributes[0]"),
            (json!({ "attributes": [{ "field": "score" }] }), "filter.attributes[0]"),
            (json!({ "attributes": [{ "field": "score", "comparison": "EQUAL", "value": 1, "isSet": true }] }), "filter.attributes[0]"),
        ] {
            let error = app.error(LIST, json!({ "filter": filter })).await;
            assert_error(&error, "BAD_USER_INPUT", Some(field));
        }
    }

    async fn ordering_comparisons_on_strings_booleans_and_enums_are_bad_user_input(app) {
        define_field(&app, json!({ "key": "city", "label": "City", "type": "STRING" })).await;
        define_field(&app, json!({ "key": "vip", "label": "VIP", "type": "BOOLEAN" })).await;
        define_field(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["silver", "gold"] })).await;
        upsert(&app, json!({ "email": "a@example.com", "attributes": { "city": "Berlin", "vip": true, "tier": "gold" } })).await;
        for (field, value) in [("city", json!("M")), ("vip", json!(false)), ("tier", json!("silver"))] {
            for comparison in ["LESS", "LESS_OR_EQUAL", "GREATER", "GREATER_OR_EQUAL"] {
                let filter = json!({ "attributes": [{ "field": field, "comparison": comparison, "value": value }] });
                let error = app.error(LIST, json!({ "filter": filter })).await;
                assert_error(&error, "BAD_USER_INPUT", Some("filter.attributes[0].comparison"));
            }
            // Equality is what these fields support.
            let filter = json!({ "attributes": [{ "field": field, "comparison": "NOT_EQUAL", "value": value }] });
            assert_eq!(matching(&app, filter).await, emails(&["a"]));
        }
    }

    // The statement counter is the whole process's: the webhook worker's polling would count too.
    #[settings(|settings: &mut rapport_e2e::Settings| settings.webhooks.deliver = false)]
    async fn nested_consents_and_topics_cost_the_same_number_of_statements_for_50_contacts_as_for_5(app) {
        // Setting up 50 contacts takes three requests: mutations run in order within one request.
        let upserts: String = (0..50)
            .map(|i| format!("c{i}: upsertContact(input: {{ email: \"person{i}@example.com\" }}) {{ contact {{ id }} }}\n"))
            .collect();
        let created = app.data(&format!("mutation {{ {upserts} }}"), json!({})).await;
        let ids: Vec<String> =
            (0..50).map(|i| created[format!("c{i}")]["contact"]["id"].as_str().expect("contact id").to_owned()).collect();
        define_topic(&app, "news").await;
        define_topic(&app, "offers").await;
        let children: String = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                format!(
                    "m{i}: setConsent(input: {{ contactId: \"{id}\", purpose: \"marketing\", channel: EMAIL, status: GRANTED }}) {{ id }}
                     a{i}: setConsent(input: {{ contactId: \"{id}\", purpose: \"analytics\", channel: EMAIL, status: DENIED }}) {{ id }}
                     n{i}: subscribeTopic(contactId: \"{id}\", topic: \"news\") {{ status }}
                     o{i}: subscribeTopic(contactId: \"{id}\", topic: \"offers\", frequency: WEEKLY) {{ status }}\n"
                )
            })
            .collect();
        app.data(&format!("mutation {{ {children} }}"), json!({})).await;

        const NESTED: &str = "query($first: Int!) {
          contacts(first: $first) {
            edges { node { id consents { purpose status } topics { topic { key name } status } } }
          }
        }";
        let mut costs = Vec::new();
        for first in [5, 50] {
            // The counter also sees the server's background workers: the fewest of three runs
            // is the query's own cost.
            let mut cost = u64::MAX;
            let mut data = Value::Null;
            for _ in 0..3 {
                let before = app.statements();
                data = app.data(NESTED, json!({ "first": first })).await;
                cost = cost.min(app.statements() - before);
            }
            costs.push(cost);

            let edges = data["contacts"]["edges"].as_array().expect("edges");
            assert_eq!(edges.len(), first);
            for edge in edges {
                let node = &edge["node"];
                let mut consents: Vec<Value> = node["consents"].as_array().expect("consents").clone();
                consents.sort_by_key(|consent| consent["purpose"].to_string());
                assert_eq!(
                    consents,
                    [json!({ "purpose": "analytics", "status": "DENIED" }), json!({ "purpose": "marketing", "status": "GRANTED" })],
                    "{node:#}"
                );
                let mut topics: Vec<Value> = node["topics"].as_array().expect("topics").clone();
                topics.sort_by_key(|topic| topic["topic"]["key"].to_string());
                assert_eq!(
                    topics,
                    [
                        json!({ "topic": { "key": "news", "name": "news" }, "status": "SUBSCRIBED" }),
                        json!({ "topic": { "key": "offers", "name": "offers" }, "status": "SUBSCRIBED" }),
                    ],
                    "{node:#}"
                );
            }
        }
        assert!(costs[0] > 0);
        assert_eq!(costs[1], costs[0], "statements for 5 contacts: {}, for 50: {}", costs[0], costs[1]);
    }
}
