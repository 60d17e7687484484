//! Topics over the API: defining, altering and deleting them, and contacts subscribing with a
//! frequency of their choosing (or the one they had, or the topic's default). Every refused
//! write is shown to leave the stored data as it was.

use rapport_e2e::{TestApp, assert_rejected, filtered_emails, on_both_databases};
use serde_json::{Value, json};

const TOPIC_FIELDS: &str = "id key name description defaultFrequency createdAt updatedAt";
const SUBSCRIPTION_FIELDS: &str = "topic { key name } status frequency updatedAt";

fn define_mutation() -> String {
    format!("mutation($input: DefineTopicInput!) {{ defineTopic(input: $input) {{ {TOPIC_FIELDS} }} }}")
}

fn alter_mutation() -> String {
    format!("mutation($input: AlterTopicInput!) {{ alterTopic(input: $input) {{ {TOPIC_FIELDS} }} }}")
}

const DELETE: &str = "mutation($key: String!) { deleteTopic(key: $key) }";

fn subscribe_mutation() -> String {
    format!(
        "mutation($contactId: ID!, $topic: String!, $frequency: Frequency) {{
           subscribeTopic(contactId: $contactId, topic: $topic, frequency: $frequency) {{ {SUBSCRIPTION_FIELDS} }}
         }}"
    )
}

fn unsubscribe_mutation() -> String {
    format!(
        "mutation($contactId: ID!, $topic: String!) {{
           unsubscribeTopic(contactId: $contactId, topic: $topic) {{ {SUBSCRIPTION_FIELDS} }}
         }}"
    )
}

async fn define(app: &TestApp, input: Value) -> Value {
    app.data(&define_mutation(), json!({ "input": input })).await["defineTopic"].clone()
}

async fn alter(app: &TestApp, input: Value) -> Value {
    app.data(&alter_mutation(), json!({ "input": input })).await["alterTopic"].clone()
}

async fn topics(app: &TestApp) -> Value {
    app.data(&format!("{{ topics {{ {TOPIC_FIELDS} }} }}"), json!({})).await["topics"].clone()
}

async fn new_contact(app: &TestApp, email: &str) -> String {
    let contact = app.upsert_contact(json!({ "email": email })).await;
    contact["id"].as_str().expect("contact id").to_owned()
}

async fn subscribe(app: &TestApp, contact_id: &str, topic: &str, frequency: Option<&str>) -> Value {
    app.data(&subscribe_mutation(), json!({ "contactId": contact_id, "topic": topic, "frequency": frequency }))
        .await["subscribeTopic"]
        .clone()
}

async fn unsubscribe(app: &TestApp, contact_id: &str, topic: &str) -> Value {
    app.data(&unsubscribe_mutation(), json!({ "contactId": contact_id, "topic": topic })).await["unsubscribeTopic"]
        .clone()
}

async fn subscriptions_of(app: &TestApp, contact_id: &str) -> Value {
    let query = format!("query($id: ID!) {{ contact(by: {{ id: $id }}) {{ topics {{ {SUBSCRIPTION_FIELDS} }} }} }}");
    app.data(&query, json!({ "id": contact_id })).await["contact"]["topics"].clone()
}

/// (topic key, status, frequency) of each of the contact's subscriptions.
async fn subscription_states(app: &TestApp, contact_id: &str) -> Vec<(String, String, String)> {
    subscriptions_of(app, contact_id)
        .await
        .as_array()
        .expect("topics")
        .iter()
        .map(|subscription| {
            (
                subscription["topic"]["key"].as_str().expect("key").to_owned(),
                subscription["status"].as_str().expect("status").to_owned(),
                subscription["frequency"].as_str().expect("frequency").to_owned(),
            )
        })
        .collect()
}

fn state(topic: &str, status: &str, frequency: &str) -> (String, String, String) {
    (topic.to_owned(), status.to_owned(), frequency.to_owned())
}

on_both_databases! {
    async fn a_topic_is_defined_with_immediate_as_its_default_frequency_and_listed(app) {
        assert_eq!(topics(&app).await, json!([]));
        let topic = define(&app, json!({ "key": "weekly_digest", "name": "  Weekly digest  " })).await;
        assert_eq!(topic["key"], "weekly_digest");
        assert_eq!(topic["name"], "Weekly digest", "names are trimmed");
        assert_eq!(topic["description"], Value::Null);
        assert_eq!(topic["defaultFrequency"], "IMMEDIATE");
        assert_eq!(topic["createdAt"], topic["updatedAt"]);
        assert!(!topic["id"].as_str().unwrap().is_empty());
        assert_eq!(topics(&app).await, json!([topic]), "the listed topic is the one returned");
    }

    async fn topics_are_listed_by_key_with_their_description_and_frequency(app) {
        let product = define(
            &app,
            json!({ "key": "product_updates", "name": "Product updates", "description": "What we shipped", "defaultFrequency": "MONTHLY" }),
        )
        .await;
        assert_eq!(product["description"], "What we shipped");
        assert_eq!(product["defaultFrequency"], "MONTHLY");
        let events = define(&app, json!({ "key": "events", "name": "Events near you", "defaultFrequency": "WEEKLY" })).await;
        let digest = define(&app, json!({ "key": "daily_digest", "name": "Daily digest", "defaultFrequency": "DAILY" })).await;
        assert_eq!(topics(&app).await, json!([digest, events, product]));
    }

    async fn defining_a_topic_with_a_taken_key_is_a_conflict_and_changes_nothing(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        assert_rejected(
            &app,
            &define_mutation(),
            json!({ "input": { "key": "weekly_digest", "name": "Another digest", "defaultFrequency": "DAILY" } }),
            "CONFLICT",
            Some("key"),
        )
        .await;
    }

    async fn a_topic_with_a_malformed_key_or_name_is_rejected(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        for key in ["Weekly Digest", "weekly-digest", "2weekly", ""] {
            assert_rejected(
                &app,
                &define_mutation(),
                json!({ "input": { "key": key, "name": "Digest" } }),
                "BAD_USER_INPUT",
                Some("key"),
            )
            .await;
        }
        assert_rejected(
            &app,
            &define_mutation(),
            json!({ "input": { "key": "digest", "name": " " } }),
            "BAD_USER_INPUT",
            Some("name"),
        )
        .await;
        assert_rejected(
            &app,
            &define_mutation(),
            json!({ "input": { "key": "digest", "name": "x".repeat(201) } }),
            "BAD_USER_INPUT",
            Some("name"),
        )
        .await;
        assert_rejected(
            &app,
            &define_mutation(),
            json!({ "input": { "key": "digest", "name": "Digest", "description": "" } }),
            "BAD_USER_INPUT",
            Some("description"),
        )
        .await;
    }

    async fn altering_a_topic_changes_only_the_fields_given(app) {
        let defined = define(
            &app,
            json!({ "key": "weekly_digest", "name": "Weekly digest", "description": "The week in brief", "defaultFrequency": "WEEKLY" }),
        )
        .await;

        let renamed = alter(&app, json!({ "key": "weekly_digest", "name": "The weekly" })).await;
        assert_eq!(renamed["name"], "The weekly");
        assert_eq!(renamed["description"], "The week in brief", "a description left out is kept");
        assert_eq!(renamed["defaultFrequency"], "WEEKLY");
        assert_eq!(renamed["id"], defined["id"]);
        assert_eq!(renamed["createdAt"], defined["createdAt"]);
        assert_eq!(topics(&app).await, json!([renamed]));

        let cleared = alter(&app, json!({ "key": "weekly_digest", "description": null })).await;
        assert_eq!(cleared["description"], Value::Null, "a null description clears it");
        assert_eq!(cleared["name"], "The weekly");
        assert_eq!(topics(&app).await, json!([cleared]));

        let refrequenced = alter(&app, json!({ "key": "weekly_digest", "defaultFrequency": "MONTHLY" })).await;
        assert_eq!(refrequenced["defaultFrequency"], "MONTHLY");
        assert_eq!(refrequenced["name"], "The weekly");
        assert_eq!(refrequenced["description"], Value::Null);

        let everything = alter(
            &app,
            json!({ "key": "weekly_digest", "name": "Digest", "description": "Back again", "defaultFrequency": "DAILY" }),
        )
        .await;
        assert_eq!(
            (&everything["key"], &everything["name"], &everything["description"], &everything["defaultFrequency"]),
            (&json!("weekly_digest"), &json!("Digest"), &json!("Back again"), &json!("DAILY"))
        );
        assert_eq!(everything["createdAt"], defined["createdAt"]);
        assert_eq!(topics(&app).await, json!([everything]));
    }

    async fn altering_a_topic_with_bad_input_changes_nothing(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest", "description": "Kept" })).await;
        assert_rejected(
            &app,
            &alter_mutation(),
            json!({ "input": { "key": "weekly_digest", "name": "" } }),
            "BAD_USER_INPUT",
            Some("name"),
        )
        .await;
        assert_rejected(
            &app,
            &alter_mutation(),
            json!({ "input": { "key": "weekly_digest", "description": "  " } }),
            "BAD_USER_INPUT",
            Some("description"),
        )
        .await;
        assert_rejected(
            &app,
            &alter_mutation(),
            json!({ "input": { "key": "Weekly", "name": "Weekly" } }),
            "BAD_USER_INPUT",
            Some("key"),
        )
        .await;
    }

    async fn altering_or_deleting_an_unknown_topic_is_not_found(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        assert_rejected(
            &app,
            &alter_mutation(),
            json!({ "input": { "key": "monthly_digest", "name": "Monthly" } }),
            "NOT_FOUND",
            None,
        )
        .await;
        assert_rejected(&app, DELETE, json!({ "key": "monthly_digest" }), "NOT_FOUND", None).await;
        assert_rejected(&app, DELETE, json!({ "key": "Not A Key" }), "BAD_USER_INPUT", Some("key")).await;
    }

    async fn deleting_a_topic_removes_it_and_every_subscription_to_it(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        let kept = define(&app, json!({ "key": "product_updates", "name": "Product updates" })).await;
        let ada = new_contact(&app, "ada@example.com").await;
        let grace = new_contact(&app, "grace@example.com").await;
        subscribe(&app, &ada, "weekly_digest", Some("WEEKLY")).await;
        subscribe(&app, &ada, "product_updates", None).await;
        subscribe(&app, &grace, "weekly_digest", None).await;
        unsubscribe(&app, &grace, "product_updates").await;

        let deleted = app.data(DELETE, json!({ "key": "weekly_digest" })).await;
        assert_eq!(deleted["deleteTopic"], "weekly_digest", "the deleted key is returned");
        assert_eq!(topics(&app).await, json!([kept]));
        assert_eq!(subscription_states(&app, &ada).await, [state("product_updates", "SUBSCRIBED", "IMMEDIATE")]);
        assert_eq!(subscription_states(&app, &grace).await, [state("product_updates", "UNSUBSCRIBED", "IMMEDIATE")]);
        let error = app.error("{ contacts(filter: { topics: [{ topic: \"weekly_digest\" }] }) { nodes { id } } }", json!({})).await;
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "the filter no longer knows the topic: {error:#}");
        assert_eq!(error["extensions"]["field"], "filter.topics[0].topic", "{error:#}");

        // Deleting it again finds nothing; the key can be defined anew, with no subscribers.
        assert_rejected(&app, DELETE, json!({ "key": "weekly_digest" }), "NOT_FOUND", None).await;
        let again = define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest, again" })).await;
        assert_eq!(again["name"], "Weekly digest, again");
        assert_eq!(filtered_emails(&app, "topics", json!([{ "topic": "weekly_digest" }])).await, Vec::<String>::new());
        assert_eq!(subscription_states(&app, &ada).await, [state("product_updates", "SUBSCRIBED", "IMMEDIATE")]);
    }

    async fn subscribing_with_a_frequency_stores_it(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest", "defaultFrequency": "WEEKLY" })).await;
        let contact = new_contact(&app, "ada@example.com").await;
        let subscription = subscribe(&app, &contact, "weekly_digest", Some("MONTHLY")).await;
        assert_eq!(subscription["topic"], json!({ "key": "weekly_digest", "name": "Weekly digest" }));
        assert_eq!(subscription["status"], "SUBSCRIBED");
        assert_eq!(subscription["frequency"], "MONTHLY");
        assert_eq!(subscriptions_of(&app, &contact).await, json!([subscription]), "contact.topics shows what was returned");

        // A new frequency replaces the old one.
        let changed = subscribe(&app, &contact, "weekly_digest", Some("DAILY")).await;
        assert_eq!(changed["frequency"], "DAILY");
        assert_eq!(subscriptions_of(&app, &contact).await, json!([changed]));
    }

    async fn subscribing_without_a_frequency_takes_the_topic_default_or_keeps_the_previous_one(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest", "defaultFrequency": "WEEKLY" })).await;
        define(&app, json!({ "key": "alerts", "name": "Alerts" })).await;
        let contact = new_contact(&app, "ada@example.com").await;

        assert_eq!(subscribe(&app, &contact, "weekly_digest", None).await["frequency"], "WEEKLY", "the topic's default");
        assert_eq!(subscribe(&app, &contact, "alerts", None).await["frequency"], "IMMEDIATE", "the default default");

        subscribe(&app, &contact, "weekly_digest", Some("MONTHLY")).await;
        let again = subscribe(&app, &contact, "weekly_digest", None).await;
        assert_eq!(again["frequency"], "MONTHLY", "the previous frequency is kept");

        // A later change of the topic's default does not touch existing subscriptions.
        alter(&app, json!({ "key": "alerts", "defaultFrequency": "DAILY" })).await;
        assert_eq!(subscribe(&app, &contact, "alerts", None).await["frequency"], "IMMEDIATE");
        let other = new_contact(&app, "grace@example.com").await;
        assert_eq!(subscribe(&app, &other, "alerts", None).await["frequency"], "DAILY", "new subscribers take the new default");
    }

    async fn unsubscribing_sets_unsubscribed_and_a_resubscription_keeps_the_frequency(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        let contact = new_contact(&app, "ada@example.com").await;
        subscribe(&app, &contact, "weekly_digest", Some("WEEKLY")).await;

        let unsubscribed = unsubscribe(&app, &contact, "weekly_digest").await;
        assert_eq!(unsubscribed["status"], "UNSUBSCRIBED");
        assert_eq!(unsubscribed["frequency"], "WEEKLY");
        assert_eq!(unsubscribed["topic"], json!({ "key": "weekly_digest", "name": "Weekly digest" }));
        assert_eq!(subscriptions_of(&app, &contact).await, json!([unsubscribed]));

        // Unsubscribing twice is harmless.
        assert_eq!(unsubscribe(&app, &contact, "weekly_digest").await["status"], "UNSUBSCRIBED");

        let back = subscribe(&app, &contact, "weekly_digest", None).await;
        assert_eq!(back["status"], "SUBSCRIBED");
        assert_eq!(back["frequency"], "WEEKLY");
        assert_eq!(subscription_states(&app, &contact).await, [state("weekly_digest", "SUBSCRIBED", "WEEKLY")]);
    }

    async fn unsubscribing_without_ever_subscribing_records_the_refusal(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest", "defaultFrequency": "DAILY" })).await;
        let contact = new_contact(&app, "ada@example.com").await;
        let refused = unsubscribe(&app, &contact, "weekly_digest").await;
        assert_eq!(refused["status"], "UNSUBSCRIBED");
        assert_eq!(refused["frequency"], "DAILY");
        assert_eq!(subscription_states(&app, &contact).await, [state("weekly_digest", "UNSUBSCRIBED", "DAILY")]);
    }

    async fn contact_topics_show_each_topic_with_its_status_and_frequency(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        define(&app, json!({ "key": "alerts", "name": "Alerts", "defaultFrequency": "DAILY" })).await;
        define(&app, json!({ "key": "offers", "name": "Offers" })).await;
        let ada = new_contact(&app, "ada@example.com").await;
        let grace = new_contact(&app, "grace@example.com").await;
        let linus = new_contact(&app, "linus@example.com").await;
        subscribe(&app, &ada, "offers", Some("MONTHLY")).await;
        subscribe(&app, &ada, "alerts", None).await;
        unsubscribe(&app, &ada, "weekly_digest").await;
        subscribe(&app, &grace, "weekly_digest", Some("WEEKLY")).await;

        let mut ada_states = subscription_states(&app, &ada).await;
        ada_states.sort();
        assert_eq!(
            ada_states,
            [
                state("alerts", "SUBSCRIBED", "DAILY"),
                state("offers", "SUBSCRIBED", "MONTHLY"),
                state("weekly_digest", "UNSUBSCRIBED", "IMMEDIATE"),
            ]
        );
        assert_eq!(subscription_states(&app, &grace).await, [state("weekly_digest", "SUBSCRIBED", "WEEKLY")]);
        assert_eq!(subscription_states(&app, &linus).await, []);

        // A renamed topic shows its new name in every subscription.
        alter(&app, json!({ "key": "weekly_digest", "name": "The weekly" })).await;
        assert_eq!(subscriptions_of(&app, &grace).await[0]["topic"], json!({ "key": "weekly_digest", "name": "The weekly" }));

        // Listing contacts batches their subscriptions; each contact still sees only its own.
        let data = app.data("{ contacts(first: 10) { nodes { email topics { topic { key } status } } } }", json!({})).await;
        let counts: Vec<(String, usize)> = data["contacts"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|contact| (contact["email"].as_str().unwrap().to_owned(), contact["topics"].as_array().unwrap().len()))
            .collect();
        assert_eq!(
            counts,
            [("ada@example.com".to_owned(), 3), ("grace@example.com".to_owned(), 1), ("linus@example.com".to_owned(), 0)]
        );
    }

    async fn contact_topics_are_listed_in_a_stable_order_whatever_was_changed_last(app) {
        for key in ["alpha", "beta", "gamma"] {
            define(&app, json!({ "key": key, "name": key })).await;
        }
        let contact = new_contact(&app, "ada@example.com").await;
        subscribe(&app, &contact, "gamma", None).await;
        subscribe(&app, &contact, "alpha", None).await;
        subscribe(&app, &contact, "beta", None).await;
        let order = |states: Vec<(String, String, String)>| states.into_iter().map(|(key, _, _)| key).collect::<Vec<_>>();
        let first = order(subscription_states(&app, &contact).await);
        // Rewriting subscriptions moves rows around in the database; the listing must not move.
        subscribe(&app, &contact, "gamma", Some("WEEKLY")).await;
        unsubscribe(&app, &contact, "alpha").await;
        subscribe(&app, &contact, "gamma", Some("DAILY")).await;
        assert_eq!(order(subscription_states(&app, &contact).await), first);
        assert_eq!(first, ["alpha", "beta", "gamma"], "subscriptions are listed in the order the topics were defined");
    }

    async fn subscribing_to_an_unknown_topic_is_rejected(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        let contact = new_contact(&app, "ada@example.com").await;
        subscribe(&app, &contact, "weekly_digest", Some("WEEKLY")).await;
        for topic in ["monthly_digest", "Weekly Digest", ""] {
            assert_rejected(
                &app,
                &subscribe_mutation(),
                json!({ "contactId": contact, "topic": topic, "frequency": "DAILY" }),
                "BAD_USER_INPUT",
                Some("topic"),
            )
            .await;
            assert_rejected(
                &app,
                &unsubscribe_mutation(),
                json!({ "contactId": contact, "topic": topic }),
                "BAD_USER_INPUT",
                Some("topic"),
            )
            .await;
        }
    }

    async fn subscribing_an_unknown_or_malformed_contact_is_rejected(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        new_contact(&app, "ada@example.com").await;
        let unknown = "0190b4a0-0000-7000-8000-000000000000";
        assert_rejected(
            &app,
            &subscribe_mutation(),
            json!({ "contactId": unknown, "topic": "weekly_digest" }),
            "NOT_FOUND",
            None,
        )
        .await;
        assert_rejected(
            &app,
            &unsubscribe_mutation(),
            json!({ "contactId": unknown, "topic": "weekly_digest" }),
            "NOT_FOUND",
            None,
        )
        .await;
        assert_rejected(
            &app,
            &subscribe_mutation(),
            json!({ "contactId": "ada@example.com", "topic": "weekly_digest" }),
            "BAD_USER_INPUT",
            Some("contactId"),
        )
        .await;
    }

    async fn the_contacts_filter_finds_subscribers_and_everyone_else(app) {
        define(&app, json!({ "key": "weekly_digest", "name": "Weekly digest" })).await;
        define(&app, json!({ "key": "alerts", "name": "Alerts" })).await;
        let ada = new_contact(&app, "ada@example.com").await;
        let grace = new_contact(&app, "grace@example.com").await;
        new_contact(&app, "linus@example.com").await;
        subscribe(&app, &ada, "weekly_digest", None).await;
        subscribe(&app, &ada, "alerts", None).await;
        subscribe(&app, &grace, "weekly_digest", None).await;
        unsubscribe(&app, &grace, "weekly_digest").await;

        assert_eq!(filtered_emails(&app, "topics", json!([{ "topic": "weekly_digest" }])).await, ["ada@example.com"]);
        assert_eq!(
            filtered_emails(&app, "topics", json!([{ "topic": "weekly_digest", "subscribed": false }])).await,
            ["grace@example.com", "linus@example.com"],
            "an unsubscribed contact and one that never subscribed are both not subscribed"
        );
        assert_eq!(
            filtered_emails(&app, "topics", json!([{ "topic": "weekly_digest" }, { "topic": "alerts" }])).await,
            ["ada@example.com"]
        );
        assert_eq!(
            filtered_emails(&app, "topics", json!([{ "topic": "alerts", "subscribed": false }, { "topic": "weekly_digest", "subscribed": false }]))
                .await,
            ["grace@example.com", "linus@example.com"]
        );
        let error = app.error("{ contacts(filter: { topics: [{ topic: \"alerts\" }, { topic: \"no_such_topic\" }] }) { nodes { id } } }", json!({})).await;
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{error:#}");
        assert_eq!(error["extensions"]["field"], "filter.topics[1].topic", "{error:#}");

        subscribe(&app, &grace, "weekly_digest", None).await;
        assert_eq!(filtered_emails(&app, "topics", json!([{ "topic": "weekly_digest" }])).await, ["ada@example.com", "grace@example.com"]);
    }
}
