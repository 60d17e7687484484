//! Custom fields over GraphQL, end to end: defining fields of every type, the values each type
//! accepts and refuses on a contact, altering a field (never its type), and deleting it with
//! every value it held. Every rejected write is checked to have left the stored data unchanged.

use rapport_e2e::{TestApp, assert_error, assert_rejected, on_both_databases};
use serde_json::{Value, json};

const DEFINITION: &str = "key label type enumValues required personal createdAt updatedAt";
const DEFINE: &str = "mutation($input: DefineFieldInput!) {
  defineField(input: $input) { key label type enumValues required personal createdAt updatedAt }
}";
const ALTER: &str = "mutation($input: AlterFieldInput!) {
  alterField(input: $input) { key label type enumValues required personal createdAt updatedAt }
}";
const DELETE: &str = "mutation($key: String!) { deleteField(key: $key) }";
const UPSERT: &str = "mutation($input: UpsertContactInput!) {
  upsertContact(input: $input) { created contact { id version attributes } }
}";
const UPDATE: &str = "mutation($input: UpdateContactInput!) { updateContact(input: $input) { id version attributes } }";
const ATTRIBUTES: &str = "query($id: ID!) { contact(by: { id: $id }) { version attributes } }";
const FILTERED: &str = "query($filter: ContactFilter) { contacts(filter: $filter) { nodes { email } } }";

async fn define(app: &TestApp, input: Value) -> Value {
    app.data(DEFINE, json!({ "input": input })).await["defineField"].clone()
}

async fn alter(app: &TestApp, input: Value) -> Value {
    app.data(ALTER, json!({ "input": input })).await["alterField"].clone()
}

async fn fields(app: &TestApp) -> Value {
    app.data(&format!("{{ fields {{ {DEFINITION} }} }}"), json!({})).await["fields"].clone()
}

/// Upserts a contact by email and returns it (id, version, attributes).
async fn upsert(app: &TestApp, email: &str, attributes: Value) -> Value {
    let input = json!({ "email": email, "attributes": attributes });
    app.data(UPSERT, json!({ "input": input })).await["upsertContact"]["contact"].clone()
}

async fn attributes_of(app: &TestApp, contact: &Value) -> Value {
    app.data(ATTRIBUTES, json!({ "id": contact["id"] })).await["contact"]["attributes"].clone()
}

/// The six fields most tests use, one of each type.
async fn define_one_of_each_type(app: &TestApp) {
    for (key, field_type) in [
        ("nickname", "STRING"),
        ("score", "NUMBER"),
        ("vip", "BOOLEAN"),
        ("birthday", "DATE"),
        ("last_order", "DATE_TIME"),
    ] {
        define(app, json!({ "key": key, "label": key, "type": field_type })).await;
    }
    define(app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["bronze", "silver", "gold"] }))
        .await;
}

on_both_databases! {
    async fn every_field_type_can_be_defined_and_is_listed_by_key(app) {
        assert_eq!(fields(&app).await, json!([]));

        let nickname = define(&app, json!({ "key": "nickname", "label": " Nickname ", "type": "STRING", "personal": true })).await;
        assert_eq!(nickname["key"], "nickname");
        assert_eq!(nickname["label"], "Nickname");
        assert_eq!(nickname["type"], "STRING");
        assert_eq!(nickname["enumValues"], json!([]));
        assert_eq!(nickname["required"], false);
        assert_eq!(nickname["personal"], true);
        assert_eq!(nickname["createdAt"], nickname["updatedAt"]);

        let score = define(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER", "required": true })).await;
        assert_eq!((score["type"].clone(), score["required"].clone(), score["personal"].clone()), (json!("NUMBER"), json!(true), json!(false)));
        let vip = define(&app, json!({ "key": "vip", "label": "VIP", "type": "BOOLEAN", "enumValues": [] })).await;
        assert_eq!(vip["type"], "BOOLEAN");
        let birthday = define(&app, json!({ "key": "birthday", "label": "Birthday", "type": "DATE" })).await;
        assert_eq!(birthday["type"], "DATE");
        let last_order = define(&app, json!({ "key": "last_order", "label": "Last order", "type": "DATE_TIME" })).await;
        assert_eq!(last_order["type"], "DATE_TIME");
        let tier = define(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": [" gold ", "silver", "bronze"] })).await;
        assert_eq!(tier["type"], "ENUM");
        assert_eq!(tier["enumValues"], json!(["gold", "silver", "bronze"]), "trimmed, in the order given");

        assert_eq!(fields(&app).await, json!([birthday, last_order, nickname, score, tier, vip]));
    }

    async fn values_of_every_type_are_accepted_and_read_back_as_written(app) {
        define_one_of_each_type(&app).await;
        let contact = upsert(&app, "ada@example.com", json!({
            "nickname": "  Countess of Lovelace ",
            "score": 42.5,
            "vip": false,
            "birthday": "1815-12-10",
            "last_order": "2026-11-25T09:00:00+01:00",
            "tier": "gold",
        }))
        .await;
        let expected = json!({
            "birthday": "1815-12-10",
            "last_order": "2026-11-25T08:00:00Z",
            "nickname": "Countess of Lovelace",
            "score": 42.5,
            "tier": "gold",
            "vip": false,
        });
        assert_eq!(contact["attributes"], expected);
        assert_eq!(attributes_of(&app, &contact).await, expected);

        // Other spellings each type accepts.
        let other = upsert(&app, "grace@example.com", json!({
            "nickname": "Amazing Grace 🌟",
            "score": -7,
            "vip": true,
            "birthday": "2024-02-29",
            "last_order": "2026-01-02T03:04:05.123456Z",
            "tier": "bronze",
        }))
        .await;
        let stored = attributes_of(&app, &other).await;
        assert_eq!(stored, other["attributes"], "the answer is what was stored");
        assert_eq!(stored["score"].as_f64(), Some(-7.0));
        assert_eq!(stored["last_order"], "2026-01-02T03:04:05.123456Z");
        assert_eq!(stored["nickname"], "Amazing Grace 🌟");
        assert_eq!(stored["birthday"], "2024-02-29");
    }

    async fn a_date_time_finer_than_a_microsecond_reads_back_as_answered_and_stays_idempotent(app) {
        define(&app, json!({ "key": "last_order", "label": "Last order", "type": "DATE_TIME" })).await;
        let attributes = json!({ "last_order": "2026-01-02T03:04:05.123456789Z" });
        let contact = upsert(&app, "ada@example.com", attributes.clone()).await;
        assert_eq!(attributes_of(&app, &contact).await, contact["attributes"]);
        let before = app.snapshot().await;
        let again = upsert(&app, "ada@example.com", attributes).await;
        assert_eq!(again, contact, "the same upsert again changes nothing");
        assert_eq!(app.snapshot().await, before);
        // A filter compares at the same precision, whichever way the instant is written.
        for value in ["2026-01-02T03:04:05.123456789Z", "2026-01-02T03:04:05.123456Z", "2026-01-02T04:04:05.123456999+01:00"] {
            let filter = json!({ "attributes": [{ "field": "last_order", "comparison": "EQUAL", "value": value }] });
            let found = app.data(FILTERED, json!({ "filter": filter })).await;
            assert_eq!(found["contacts"]["nodes"], json!([{ "email": "ada@example.com" }]), "{value}");
        }
    }

    async fn values_of_the_wrong_type_are_rejected_naming_the_field_and_nothing_is_written(app) {
        define_one_of_each_type(&app).await;
        let contact = upsert(&app, "ada@example.com", json!({ "nickname": "Ada", "tier": "gold" })).await;
        let cases = [
            ("nickname", json!(5)),
            ("nickname", json!(true)),
            ("nickname", json!("")),
            ("nickname", json!("   ")),
            ("nickname", json!("bell\u{7}")),
            ("nickname", json!("x".repeat(4_001))),
            ("nickname", json!(["Ada"])),
            ("nickname", json!({ "text": "Ada" })),
            ("score", json!("42")),
            ("score", json!(true)),
            ("score", json!([1])),
            ("score", json!({})),
            ("vip", json!("true")),
            ("vip", json!(1)),
            ("vip", json!(0)),
            ("birthday", json!("1990-02-30")),
            ("birthday", json!("28.02.1990")),
            ("birthday", json!("1990-02-28T00:00:00Z")),
            ("birthday", json!(19_900_228)),
            ("last_order", json!("tomorrow")),
            ("last_order", json!("2026-11-25")),
            ("last_order", json!("2026-11-25T08:00:00")),
            ("last_order", json!(1_764_057_600)),
            ("tier", json!("platinum")),
            ("tier", json!("Gold")),
            ("tier", json!("")),
            ("tier", json!(1)),
        ];
        for (key, value) in cases {
            let field = format!("attributes.{key}");
            let create = json!({ "email": "new@example.com", "attributes": { key: value } });
            assert_rejected(&app, UPSERT, json!({ "input": create }), "BAD_USER_INPUT", Some(field.as_str())).await;
            let change = json!({ "id": contact["id"], "expectedVersion": 1, "attributes": { key: value } });
            assert_rejected(&app, UPDATE, json!({ "input": change }), "BAD_USER_INPUT", Some(field.as_str())).await;
        }
        // A string field's limit is inclusive.
        let longest = upsert(&app, "long@example.com", json!({ "nickname": "x".repeat(4_000) })).await;
        assert_eq!(longest["attributes"]["nickname"].as_str().map(str::len), Some(4_000));
    }

    async fn defining_an_existing_key_is_a_conflict_and_nothing_is_written(app) {
        define(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        for input in [
            json!({ "key": "score", "label": "Score", "type": "NUMBER" }),
            json!({ "key": "score", "label": "Score as text", "type": "STRING" }),
            json!({ "key": "score", "label": "Score", "type": "ENUM", "enumValues": ["high"] }),
        ] {
            assert_rejected(&app, DEFINE, json!({ "input": input }), "CONFLICT", Some("key")).await;
        }
        assert_eq!(fields(&app).await[0]["type"], "NUMBER");
    }

    async fn malformed_keys_and_labels_are_bad_user_input_and_nothing_is_written(app) {
        define(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        let too_long = "x".repeat(65);
        for key in ["Tier", "1abc", "with space", "dash-ed", "", "_tier", "ünï", too_long.as_str()] {
            let input = json!({ "key": key, "label": "Label", "type": "STRING" });
            assert_rejected(&app, DEFINE, json!({ "input": input }), "BAD_USER_INPUT", Some("key")).await;
        }
        let too_long = "x".repeat(201);
        for label in ["", "   ", too_long.as_str(), "tab\there"] {
            let input = json!({ "key": "nickname", "label": label, "type": "STRING" });
            assert_rejected(&app, DEFINE, json!({ "input": input }), "BAD_USER_INPUT", Some("label")).await;
        }
        // The longest key and label are fine.
        let longest = define(&app, json!({ "key": "x".repeat(64), "label": "y".repeat(200), "type": "STRING" })).await;
        assert_eq!(longest["key"].as_str().map(str::len), Some(64));
    }

    async fn enum_values_must_fit_the_type_and_nothing_is_written(app) {
        define(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        for input in [
            json!({ "key": "tier", "label": "Tier", "type": "ENUM" }),
            json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": [] }),
            json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["gold", " gold "] }),
            json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["gold", ""] }),
            json!({ "key": "tier", "label": "Tier", "type": "NUMBER", "enumValues": ["gold"] }),
            json!({ "key": "tier", "label": "Tier", "type": "STRING", "enumValues": ["gold"] }),
            json!({ "key": "tier", "label": "Tier", "type": "BOOLEAN", "enumValues": ["yes", "no"] }),
        ] {
            assert_rejected(&app, DEFINE, json!({ "input": input }), "BAD_USER_INPUT", Some("enumValues")).await;
        }
    }

    async fn alter_field_changes_label_personal_and_required_and_keeps_the_rest(app) {
        let defined = define(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["silver", "gold"] })).await;

        let relabelled = alter(&app, json!({ "key": "tier", "label": " Loyalty tier " })).await;
        assert_eq!(relabelled["label"], "Loyalty tier");
        for unchanged in ["key", "type", "enumValues", "required", "personal", "createdAt"] {
            assert_eq!(relabelled[unchanged], defined[unchanged], "{unchanged}");
        }

        let personal = alter(&app, json!({ "key": "tier", "personal": true })).await;
        assert_eq!(personal["personal"], true);
        assert_eq!(personal["label"], "Loyalty tier");
        assert_eq!(personal["required"], false);

        let required = alter(&app, json!({ "key": "tier", "required": true })).await;
        assert_eq!(required["required"], true);
        assert_eq!(required["personal"], true);
        assert_eq!(fields(&app).await, json!([required]));

        // Required now: a new contact must have a tier.
        let missing = json!({ "email": "ada@example.com" });
        assert_rejected(&app, UPSERT, json!({ "input": missing }), "BAD_USER_INPUT", Some("attributes.tier")).await;
        upsert(&app, "ada@example.com", json!({ "tier": "gold" })).await;

        let relaxed = alter(&app, json!({ "key": "tier", "required": false, "personal": false })).await;
        assert_eq!((relaxed["required"].clone(), relaxed["personal"].clone()), (json!(false), json!(false)));
        assert_eq!(relaxed["enumValues"], json!(["silver", "gold"]));
        let without = upsert(&app, "grace@example.com", json!({})).await;
        assert_eq!(without["attributes"], json!({}));

        let too_long = "x".repeat(201);
        for label in ["", "  ", too_long.as_str()] {
            let input = json!({ "key": "tier", "label": label });
            assert_rejected(&app, ALTER, json!({ "input": input }), "BAD_USER_INPUT", Some("label")).await;
        }
    }

    async fn enum_values_can_be_added_reordered_and_unused_ones_removed(app) {
        define(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["silver", "gold"] })).await;
        let ada = upsert(&app, "ada@example.com", json!({ "tier": "gold" })).await;

        let added = alter(&app, json!({ "key": "tier", "enumValues": ["bronze", "silver", "gold", "platinum"] })).await;
        assert_eq!(added["enumValues"], json!(["bronze", "silver", "gold", "platinum"]));
        let grace = upsert(&app, "grace@example.com", json!({ "tier": "platinum" })).await;
        assert_eq!(grace["attributes"], json!({ "tier": "platinum" }));

        // Nobody holds bronze or silver.
        let removed = alter(&app, json!({ "key": "tier", "enumValues": ["platinum", "gold"] })).await;
        assert_eq!(removed["enumValues"], json!(["platinum", "gold"]));
        assert_eq!(fields(&app).await[0]["enumValues"], json!(["platinum", "gold"]));
        assert_eq!(attributes_of(&app, &ada).await, json!({ "tier": "gold" }));
        let change = json!({ "id": ada["id"], "expectedVersion": 1, "attributes": { "tier": "silver" } });
        assert_rejected(&app, UPDATE, json!({ "input": change }), "BAD_USER_INPUT", Some("attributes.tier")).await;
    }

    async fn removing_an_enum_value_a_contact_holds_is_a_conflict_and_nothing_is_written(app) {
        define(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["silver", "gold"] })).await;
        define(&app, json!({ "key": "nickname", "label": "Nickname", "type": "STRING" })).await;
        let ada = upsert(&app, "ada@example.com", json!({ "tier": "gold" })).await;
        // The same text in another field does not hold the enum value.
        upsert(&app, "grace@example.com", json!({ "tier": "gold", "nickname": "silver" })).await;

        for values in [json!(["silver"]), json!(["silver", "bronze"]), json!(["bronze"])] {
            let input = json!({ "key": "tier", "enumValues": values, "label": "Renamed too" });
            assert_rejected(&app, ALTER, json!({ "input": input }), "CONFLICT", Some("enumValues")).await;
        }

        let moved = json!({ "id": ada["id"], "expectedVersion": 1, "attributes": { "tier": "silver" } });
        app.data(UPDATE, json!({ "input": moved })).await;
        let conflict = json!({ "key": "tier", "enumValues": ["silver"] });
        assert_rejected(&app, ALTER, json!({ "input": conflict }), "CONFLICT", Some("enumValues")).await;
        // Clearing the last holder frees the value.
        let grace = app.data("{ contact(by: { email: \"grace@example.com\" }) { id version } }", json!({})).await;
        let cleared = json!({ "id": grace["contact"]["id"], "expectedVersion": 1, "attributes": { "tier": null } });
        app.data(UPDATE, json!({ "input": cleared })).await;
        let altered = alter(&app, json!({ "key": "tier", "enumValues": ["silver"] })).await;
        assert_eq!(altered["enumValues"], json!(["silver"]));
        assert_eq!(attributes_of(&app, &ada).await, json!({ "tier": "silver" }));
    }

    async fn alter_field_checks_enum_values_against_the_type_and_nothing_is_written(app) {
        define(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        define(&app, json!({ "key": "tier", "label": "Tier", "type": "ENUM", "enumValues": ["silver", "gold"] })).await;
        for input in [
            json!({ "key": "score", "enumValues": ["high"] }),
            json!({ "key": "tier", "enumValues": [] }),
            json!({ "key": "tier", "enumValues": ["gold", "gold"] }),
            json!({ "key": "tier", "enumValues": ["gold", "   "] }),
        ] {
            assert_rejected(&app, ALTER, json!({ "input": input }), "BAD_USER_INPUT", Some("enumValues")).await;
        }
    }

    async fn altering_or_deleting_an_unknown_field_is_not_found(app) {
        define(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        let input = json!({ "key": "nope", "label": "Nope" });
        assert_rejected(&app, ALTER, json!({ "input": input }), "NOT_FOUND", None).await;
        assert_rejected(&app, DELETE, json!({ "key": "nope" }), "NOT_FOUND", None).await;
        let input = json!({ "key": "Score", "label": "Nope" });
        assert_rejected(&app, ALTER, json!({ "input": input }), "BAD_USER_INPUT", Some("key")).await;
        assert_rejected(&app, DELETE, json!({ "key": "Score" }), "BAD_USER_INPUT", Some("key")).await;
    }

    async fn the_type_of_a_field_cannot_be_changed(app) {
        define(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER" })).await;
        upsert(&app, "ada@example.com", json!({ "score": 3 })).await;
        // The input has no type: GraphQL validation refuses one before any resolver runs (so no
        // extensions.field is set), and its message names the unknown input field.
        let input = json!({ "key": "score", "type": "STRING" });
        let inline = r#"mutation { alterField(input: { key: "score", type: STRING }) { key } }"#;
        for (query, variables) in [(ALTER, json!({ "input": input })), (inline, json!({}))] {
            let error = assert_rejected(&app, query, variables, "BAD_USER_INPUT", None).await;
            assert!(error["message"].as_str().is_some_and(|message| message.contains("unknown field \"type\"")), "{error:#}");
        }
        assert_eq!(fields(&app).await[0]["type"], "NUMBER");
    }

    async fn a_value_of_a_field_deleted_after_the_input_was_checked_is_not_stored(app) {
        // A writer checks its input against the definitions and then writes; a field deleted in
        // between must not leave its value behind in the contact's row, where nothing else
        // would ever remove it. The store reads the definitions again in its own transaction.
        use rapport::domain::{
            contact::{Contact, ContactId, EmailAddress, Profile},
            field::FieldValue,
            key::Key,
        };
        define(&app, json!({ "key": "nickname", "label": "Nickname", "type": "STRING" })).await;
        let now = chrono::Utc::now();
        let contact = Contact {
            id: ContactId::generate(),
            external_id: None,
            email: Some(EmailAddress::parse("orphan@example.com").expect("an address")),
            profile: Profile::default(),
            attributes: [
                (Key::parse("nickname").expect("a key"), FieldValue::String("Kept".to_owned())),
                (Key::parse("deleted_meanwhile").expect("a key"), FieldValue::Boolean(true)),
            ]
            .into_iter()
            .collect(),
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let database = app.services.database();
        rapport::store::contacts::insert(database.connection(), database.keys().expect("keys"), &contact)
            .await
            .expect("insert");
        let stored = json!({ "id": contact.id.as_uuid().to_string() });
        assert_eq!(attributes_of(&app, &stored).await, json!({ "nickname": "Kept" }));
    }

    async fn deleting_a_field_removes_it_and_every_contacts_value_of_it(app) {
        define(&app, json!({ "key": "score", "label": "Score", "type": "NUMBER", "required": true })).await;
        define(&app, json!({ "key": "nickname", "label": "Nickname", "type": "STRING" })).await;
        let ada = upsert(&app, "ada@example.com", json!({ "score": 1, "nickname": "Countess" })).await;
        let grace = upsert(&app, "grace@example.com", json!({ "score": 2 })).await;

        let deleted = app.data(DELETE, json!({ "key": "score" })).await;
        assert_eq!(deleted["deleteField"], "score");
        let remaining = fields(&app).await;
        assert_eq!(remaining.as_array().map(Vec::len), Some(1));
        assert_eq!(remaining[0]["key"], "nickname");
        assert_eq!(attributes_of(&app, &ada).await, json!({ "nickname": "Countess" }));
        assert_eq!(attributes_of(&app, &grace).await, json!({}));

        // The key is unknown everywhere now.
        let write = json!({ "id": ada["id"], "expectedVersion": 1, "attributes": { "score": 5 } });
        assert_rejected(&app, UPDATE, json!({ "input": write }), "BAD_USER_INPUT", Some("attributes.score")).await;
        let filter = json!({ "attributes": [{ "field": "score", "isSet": true }] });
        let error = app.error(FILTERED, json!({ "filter": filter })).await;
        assert_error(&error, "BAD_USER_INPUT", Some("filter.attributes[0].field"));
        assert_rejected(&app, DELETE, json!({ "key": "score" }), "NOT_FOUND", None).await;
        // It was required; new contacts no longer need it.
        let new = upsert(&app, "alan@example.com", json!({})).await;
        assert_eq!(new["attributes"], json!({}));

        // Defined again, the key starts empty: no old value comes back.
        define(&app, json!({ "key": "score", "label": "Score", "type": "STRING" })).await;
        assert_eq!(attributes_of(&app, &ada).await, json!({ "nickname": "Countess" }));
        assert_eq!(attributes_of(&app, &grace).await, json!({}));
        let filter = json!({ "attributes": [{ "field": "score", "isSet": true }] });
        assert_eq!(app.data(FILTERED, json!({ "filter": filter })).await["contacts"]["nodes"], json!([]));
    }
}
