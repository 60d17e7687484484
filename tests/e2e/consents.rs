//! Consent over the API: the purposes, recording decisions with their proof, the current state
//! per purpose and channel (the decision captured last, whatever order decisions arrive in), the
//! history, and every way a decision can be refused without anything being written.

use rapport_e2e::{TestApp, assert_rejected, filtered_emails, on_both_databases};
use serde_json::{Value, json};

const CONSENT_FIELDS: &str =
    "id purpose channel status legalBasis source capturedAt recordedAt proof { ip userAgent wordingId wordingVersion }";

fn set_consent_mutation() -> String {
    format!("mutation($input: SetConsentInput!) {{ setConsent(input: $input) {{ {CONSENT_FIELDS} }} }}")
}

const DEFINE_PURPOSE: &str = "mutation($input: DefinePurposeInput!) { defineConsentPurpose(input: $input) { key label description builtIn createdAt } }";

async fn new_contact(app: &TestApp, email: &str) -> String {
    let contact = app.upsert_contact(json!({ "email": email })).await;
    contact["id"].as_str().expect("contact id").to_owned()
}

async fn set_consent(app: &TestApp, input: Value) -> Value {
    app.data(&set_consent_mutation(), json!({ "input": input })).await["setConsent"].clone()
}

async fn current_consents(app: &TestApp, contact_id: &str) -> Value {
    let query = format!("query($id: ID!) {{ contact(by: {{ id: $id }}) {{ consents {{ {CONSENT_FIELDS} }} }} }}");
    app.data(&query, json!({ "id": contact_id })).await["contact"]["consents"].clone()
}

/// The contact's consent history with the given arguments (any of purpose, channel, first,
/// after, last, before).
async fn history(app: &TestApp, contact_id: &str, arguments: Value) -> Value {
    let query = format!(
        "query($id: ID!, $purpose: String, $channel: Channel, $first: Int, $after: String, $last: Int, $before: String) {{
           contact(by: {{ id: $id }}) {{
             consentHistory(purpose: $purpose, channel: $channel, first: $first, after: $after, last: $last, before: $before) {{
               pageInfo {{ hasPreviousPage hasNextPage startCursor endCursor }}
               edges {{ cursor node {{ {CONSENT_FIELDS} }} }}
             }}
           }}
         }}"
    );
    let mut variables = arguments;
    variables["id"] = json!(contact_id);
    app.data(&query, variables).await["contact"]["consentHistory"].clone()
}

fn node_ids(connection: &Value) -> Vec<String> {
    connection["edges"]
        .as_array()
        .expect("edges")
        .iter()
        .map(|edge| edge["node"]["id"].as_str().expect("node id").to_owned())
        .collect()
}

fn id_of(consent: &Value) -> String {
    consent["id"].as_str().expect("consent id").to_owned()
}

async fn assert_consent_rejected(app: &TestApp, input: Value, code: &str, field: Option<&str>) -> Value {
    assert_rejected(app, &set_consent_mutation(), json!({ "input": input }), code, field).await
}

on_both_databases! {
    async fn the_built_in_purposes_are_listed_and_a_custom_one_is_added_beside_them(app) {
        let data = app.data("{ consentPurposes { key label description builtIn createdAt } }", json!({})).await;
        let purposes = data["consentPurposes"].as_array().unwrap().clone();
        let keys: Vec<&str> = purposes.iter().map(|purpose| purpose["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["analytics", "marketing", "profiling"]);
        for purpose in &purposes {
            assert_eq!(purpose["builtIn"], true, "{purpose:#}");
            assert!(!purpose["label"].as_str().unwrap().is_empty(), "{purpose:#}");
        }

        let defined = app
            .data(
                DEFINE_PURPOSE,
                json!({ "input": { "key": "product_research", "label": "  Product research ", "description": "Interviews about new features" } }),
            )
            .await["defineConsentPurpose"]
            .clone();
        assert_eq!(defined["key"], "product_research");
        assert_eq!(defined["label"], "Product research", "labels are trimmed");
        assert_eq!(defined["description"], "Interviews about new features");
        assert_eq!(defined["builtIn"], false);

        let data = app.data("{ consentPurposes { key label description builtIn createdAt } }", json!({})).await;
        let keys: Vec<&str> =
            data["consentPurposes"].as_array().unwrap().iter().map(|purpose| purpose["key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["analytics", "marketing", "profiling", "product_research"], "built-in purposes come first");
        assert_eq!(data["consentPurposes"][3], defined, "the listed purpose is the one returned");
    }

    async fn a_purpose_without_a_description_has_none(app) {
        let defined = app
            .data(DEFINE_PURPOSE, json!({ "input": { "key": "surveys", "label": "Surveys" } }))
            .await["defineConsentPurpose"]
            .clone();
        assert_eq!(defined["description"], Value::Null);
        assert_eq!(defined["builtIn"], false);
    }

    async fn defining_a_purpose_with_a_taken_key_is_a_conflict_and_changes_nothing(app) {
        app.data(DEFINE_PURPOSE, json!({ "input": { "key": "surveys", "label": "Surveys" } })).await;
        assert_rejected(
            &app,
            DEFINE_PURPOSE,
            json!({ "input": { "key": "surveys", "label": "Other surveys", "description": "again" } }),
            "CONFLICT",
            Some("key"),
        )
        .await;
        // The built-in purposes are taken keys too.
        assert_rejected(
            &app,
            DEFINE_PURPOSE,
            json!({ "input": { "key": "marketing", "label": "My marketing" } }),
            "CONFLICT",
            Some("key"),
        )
        .await;
    }

    async fn a_purpose_with_a_malformed_key_or_an_empty_label_is_rejected(app) {
        for key in ["Product Research", "product-research", "1st_party", "", "ünicode"] {
            assert_rejected(
                &app,
                DEFINE_PURPOSE,
                json!({ "input": { "key": key, "label": "Research" } }),
                "BAD_USER_INPUT",
                Some("key"),
            )
            .await;
        }
        assert_rejected(
            &app,
            DEFINE_PURPOSE,
            json!({ "input": { "key": "research", "label": "   " } }),
            "BAD_USER_INPUT",
            Some("label"),
        )
        .await;
    }

    async fn every_status_and_channel_is_recorded_with_consent_basis_and_api_source_by_default(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        for channel in ["EMAIL", "SMS", "PUSH"] {
            for status in ["GRANTED", "DENIED", "PENDING"] {
                let consent = set_consent(
                    &app,
                    json!({ "contactId": contact, "purpose": "marketing", "channel": channel, "status": status }),
                )
                .await;
                assert_eq!(consent["purpose"], "marketing");
                assert_eq!(consent["channel"], channel);
                assert_eq!(consent["status"], status);
                assert_eq!(consent["legalBasis"], "CONSENT");
                assert_eq!(consent["source"], "API");
                assert_eq!(
                    consent["proof"],
                    json!({ "ip": null, "userAgent": null, "wordingId": null, "wordingVersion": null })
                );
                assert_eq!(consent["capturedAt"], consent["recordedAt"], "without capturedAt the decision is captured now");
            }
        }
        let current = current_consents(&app, &contact).await;
        let states: Vec<(&str, &str)> = current
            .as_array()
            .unwrap()
            .iter()
            .map(|consent| (consent["channel"].as_str().unwrap(), consent["status"].as_str().unwrap()))
            .collect();
        assert_eq!(states, [("EMAIL", "PENDING"), ("PUSH", "PENDING"), ("SMS", "PENDING")], "ordered by channel name");
        assert_eq!(node_ids(&history(&app, &contact, json!({ "first": 20 })).await).len(), 9);
    }

    async fn an_explicit_legal_basis_and_source_are_kept(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let recorded = set_consent(
            &app,
            json!({
                "contactId": contact, "purpose": "analytics", "channel": "PUSH", "status": "GRANTED",
                "legalBasis": "LEGITIMATE_INTERESTS", "source": "PREFERENCE_CENTER",
            }),
        )
        .await;
        assert_eq!(recorded["legalBasis"], "LEGITIMATE_INTERESTS");
        assert_eq!(recorded["source"], "PREFERENCE_CENTER");
        assert_eq!(current_consents(&app, &contact).await, json!([recorded]));
    }

    async fn the_proof_of_a_decision_round_trips(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let recorded = set_consent(
            &app,
            json!({
                "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED",
                "source": "FORM", "capturedAt": "2024-05-01T09:30:00Z",
                "proof": {
                    "ip": "203.0.113.7",
                    "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
                    "wordingId": "newsletter-signup",
                    "wordingVersion": "3",
                },
            }),
        )
        .await;
        let proof = json!({
            "ip": "203.0.113.7",
            "userAgent": "Mozilla/5.0 (X11; Linux x86_64) Firefox/128.0",
            "wordingId": "newsletter-signup",
            "wordingVersion": "3",
        });
        assert_eq!(recorded["proof"], proof);
        assert_eq!(recorded["capturedAt"], "2024-05-01T09:30:00+00:00");
        assert_eq!(recorded["source"], "FORM");
        assert_eq!(current_consents(&app, &contact).await, json!([recorded]), "the current consent is the stored decision");
        let stored = history(&app, &contact, json!({})).await;
        assert_eq!(stored["edges"][0]["node"], recorded, "the history holds the decision as returned");

        // IPv6 is stored in its canonical form; only some parts of the proof may be given.
        let recorded = set_consent(
            &app,
            json!({
                "contactId": contact, "purpose": "marketing", "channel": "SMS", "status": "DENIED",
                "proof": { "ip": " 2001:0db8:0000:0000:0000:0000:0000:0001 ", "wordingVersion": "7" },
            }),
        )
        .await;
        assert_eq!(recorded["proof"], json!({ "ip": "2001:db8::1", "userAgent": null, "wordingId": null, "wordingVersion": "7" }));
        let stored = history(&app, &contact, json!({ "channel": "SMS" })).await;
        assert_eq!(stored["edges"][0]["node"], recorded);
    }

    async fn contact_consents_show_the_current_state_per_purpose_and_channel(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let grace = new_contact(&app, "grace@example.com").await;
        set_consent(&app, json!({ "contactId": ada, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" })).await;
        let marketing_email =
            set_consent(&app, json!({ "contactId": ada, "purpose": "marketing", "channel": "EMAIL", "status": "DENIED" })).await;
        let marketing_sms =
            set_consent(&app, json!({ "contactId": ada, "purpose": "marketing", "channel": "SMS", "status": "GRANTED" })).await;
        let analytics_email =
            set_consent(&app, json!({ "contactId": ada, "purpose": "analytics", "channel": "EMAIL", "status": "PENDING" })).await;
        let grace_profiling =
            set_consent(&app, json!({ "contactId": grace, "purpose": "profiling", "channel": "PUSH", "status": "DENIED" })).await;

        assert_eq!(
            current_consents(&app, &ada).await,
            json!([analytics_email, marketing_email, marketing_sms]),
            "one consent per purpose and channel, ordered by purpose then channel"
        );
        assert_eq!(current_consents(&app, &grace).await, json!([grace_profiling]));
        let nobody = new_contact(&app, "nobody@example.com").await;
        assert_eq!(current_consents(&app, &nobody).await, json!([]));

        // Listing contacts batches their consents; each contact still sees only its own.
        let data = app
            .data("{ contacts(first: 10) { nodes { email consents { id } } } }", json!({}))
            .await;
        let by_email: Vec<(String, Vec<String>)> = data["contacts"]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|contact| {
                (contact["email"].as_str().unwrap().to_owned(), contact["consents"].as_array().unwrap().iter().map(id_of).collect())
            })
            .collect();
        assert_eq!(
            by_email,
            [
                ("ada@example.com".to_owned(), vec![id_of(&analytics_email), id_of(&marketing_email), id_of(&marketing_sms)]),
                ("grace@example.com".to_owned(), vec![id_of(&grace_profiling)]),
                ("nobody@example.com".to_owned(), vec![]),
            ]
        );
    }

    async fn consent_history_lists_every_decision_newest_first_and_filters_by_purpose_and_channel(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let other = new_contact(&app, "grace@example.com").await;
        let mut recorded = Vec::new();
        for (purpose, channel, status) in [
            ("marketing", "EMAIL", "PENDING"),
            ("marketing", "EMAIL", "GRANTED"),
            ("analytics", "EMAIL", "GRANTED"),
            ("marketing", "SMS", "GRANTED"),
            ("marketing", "EMAIL", "DENIED"),
            ("analytics", "PUSH", "DENIED"),
        ] {
            recorded.push(
                set_consent(&app, json!({ "contactId": contact, "purpose": purpose, "channel": channel, "status": status })).await,
            );
        }
        set_consent(&app, json!({ "contactId": other, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" })).await;

        let newest_first = |positions: &[usize]| positions.iter().rev().map(|&position| id_of(&recorded[position])).collect::<Vec<_>>();

        let all = history(&app, &contact, json!({})).await;
        assert_eq!(node_ids(&all), newest_first(&[0, 1, 2, 3, 4, 5]));
        assert_eq!(all["edges"][0]["node"], recorded[5], "history entries carry the whole decision");
        assert_eq!(all["pageInfo"]["hasNextPage"], false);
        assert_eq!(all["pageInfo"]["hasPreviousPage"], false);

        let marketing = history(&app, &contact, json!({ "purpose": "marketing" })).await;
        assert_eq!(node_ids(&marketing), newest_first(&[0, 1, 3, 4]));
        let email = history(&app, &contact, json!({ "channel": "EMAIL" })).await;
        assert_eq!(node_ids(&email), newest_first(&[0, 1, 2, 4]));
        let marketing_email = history(&app, &contact, json!({ "purpose": "marketing", "channel": "EMAIL" })).await;
        assert_eq!(node_ids(&marketing_email), newest_first(&[0, 1, 4]));
        let none = history(&app, &contact, json!({ "purpose": "profiling" })).await;
        assert_eq!(node_ids(&none), Vec::<String>::new());
        assert_eq!(none["pageInfo"]["hasNextPage"], false);
        let unknown = history(&app, &contact, json!({ "purpose": "never_defined" })).await;
        assert_eq!(node_ids(&unknown), Vec::<String>::new(), "an unknown purpose simply has no history");
    }

    async fn consent_history_pages_forward_with_first_and_after_and_backward_with_last_and_before(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let mut recorded = Vec::new();
        for status in ["PENDING", "GRANTED", "DENIED", "GRANTED", "DENIED"] {
            recorded.push(
                set_consent(&app, json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": status })).await,
            );
        }
        let newest_first: Vec<String> = recorded.iter().rev().map(id_of).collect();

        // Forward: 2 + 2 + 1.
        let page1 = history(&app, &contact, json!({ "first": 2 })).await;
        assert_eq!(node_ids(&page1), newest_first[0..2]);
        assert_eq!(page1["pageInfo"]["hasNextPage"], true);
        assert_eq!(page1["pageInfo"]["hasPreviousPage"], false);
        assert_eq!(page1["pageInfo"]["endCursor"], page1["edges"][1]["cursor"]);
        let page2 = history(&app, &contact, json!({ "first": 2, "after": page1["pageInfo"]["endCursor"] })).await;
        assert_eq!(node_ids(&page2), newest_first[2..4]);
        assert_eq!(page2["pageInfo"]["hasNextPage"], true);
        assert_eq!(page2["pageInfo"]["hasPreviousPage"], true);
        let page3 = history(&app, &contact, json!({ "first": 2, "after": page2["pageInfo"]["endCursor"] })).await;
        assert_eq!(node_ids(&page3), newest_first[4..5]);
        assert_eq!(page3["pageInfo"]["hasNextPage"], false);

        // Backward from the end: the last two are the oldest, still listed newest first.
        let last = history(&app, &contact, json!({ "last": 2 })).await;
        assert_eq!(node_ids(&last), newest_first[3..5]);
        assert_eq!(last["pageInfo"]["hasPreviousPage"], true);
        assert_eq!(last["pageInfo"]["hasNextPage"], false);
        assert_eq!(last["pageInfo"]["startCursor"], last["edges"][0]["cursor"]);
        let before = history(&app, &contact, json!({ "last": 2, "before": last["pageInfo"]["startCursor"] })).await;
        assert_eq!(node_ids(&before), newest_first[1..3]);
        assert_eq!(before["pageInfo"]["hasPreviousPage"], true);
        assert_eq!(before["pageInfo"]["hasNextPage"], true);
        let first = history(&app, &contact, json!({ "last": 2, "before": before["pageInfo"]["startCursor"] })).await;
        assert_eq!(node_ids(&first), newest_first[0..1]);
        assert_eq!(first["pageInfo"]["hasPreviousPage"], false);

        // Pagination composes with the filters.
        let filtered = history(&app, &contact, json!({ "purpose": "marketing", "channel": "EMAIL", "first": 3 })).await;
        assert_eq!(node_ids(&filtered), newest_first[0..3]);
        assert_eq!(filtered["pageInfo"]["hasNextPage"], true);
    }

    async fn malformed_history_arguments_are_rejected(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let query = "query($id: ID!, $first: Int, $last: Int, $after: String, $purpose: String) {
            contact(by: { id: $id }) { consentHistory(first: $first, last: $last, after: $after, purpose: $purpose) { edges { cursor } } }
        }";
        for (arguments, field) in [
            (json!({ "first": 0 }), "first"),
            (json!({ "first": 101 }), "first"),
            (json!({ "last": -1 }), "last"),
            (json!({ "first": 1, "last": 1 }), "last"),
            (json!({ "after": "not a cursor" }), "after"),
            (json!({ "purpose": "Not A Key" }), "purpose"),
        ] {
            let mut variables = arguments;
            variables["id"] = json!(contact);
            let error = app.error(query, variables).await;
            assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{error:#}");
            assert_eq!(error["extensions"]["field"], field, "{error:#}");
        }
    }

    async fn an_older_decision_never_overrides_a_newer_one(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let granted = set_consent(
            &app,
            json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED", "capturedAt": "2024-06-01T12:00:00Z" }),
        )
        .await;

        // An import of a decision made before the one we hold: history yes, current state no.
        let imported = set_consent(
            &app,
            json!({
                "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "DENIED",
                "source": "IMPORT", "capturedAt": "2024-01-15T08:00:00Z",
            }),
        )
        .await;
        assert_eq!(imported["status"], "DENIED", "setConsent returns the decision it recorded");
        assert_eq!(imported["capturedAt"], "2024-01-15T08:00:00+00:00");
        assert_eq!(current_consents(&app, &contact).await, json!([granted]));
        assert_eq!(node_ids(&history(&app, &contact, json!({})).await), [id_of(&imported), id_of(&granted)]);

        // Only seconds older still loses.
        let slightly_older = set_consent(
            &app,
            json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "PENDING", "capturedAt": "2024-06-01T11:59:59.999Z" }),
        )
        .await;
        assert_eq!(current_consents(&app, &contact).await, json!([granted]));

        // A decision captured later does move the current state.
        let later = set_consent(
            &app,
            json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "DENIED", "capturedAt": "2024-09-01T00:00:00+02:00" }),
        )
        .await;
        assert_eq!(later["capturedAt"], "2024-08-31T22:00:00+00:00", "capture times are kept in UTC");
        assert_eq!(current_consents(&app, &contact).await, json!([later]));

        // A decision captured now is later than every import.
        let now = set_consent(&app, json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" })).await;
        assert_eq!(current_consents(&app, &contact).await, json!([now]));
        let again_old = set_consent(
            &app,
            json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "DENIED", "capturedAt": "2025-01-01T00:00:00Z" }),
        )
        .await;
        assert_eq!(current_consents(&app, &contact).await, json!([now]));

        assert_eq!(
            node_ids(&history(&app, &contact, json!({})).await),
            [&again_old, &now, &later, &slightly_older, &imported, &granted].map(id_of),
            "the history keeps every decision, newest recorded first"
        );
    }

    async fn an_old_decision_for_another_channel_or_purpose_still_becomes_its_current_state(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let email = set_consent(&app, json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" })).await;
        let sms = set_consent(
            &app,
            json!({ "contactId": contact, "purpose": "marketing", "channel": "SMS", "status": "DENIED", "capturedAt": "2020-01-01T00:00:00Z" }),
        )
        .await;
        let analytics = set_consent(
            &app,
            json!({ "contactId": contact, "purpose": "analytics", "channel": "EMAIL", "status": "DENIED", "capturedAt": "2020-01-01T00:00:00Z" }),
        )
        .await;
        assert_eq!(current_consents(&app, &contact).await, json!([analytics, email, sms]));
    }

    async fn of_two_decisions_captured_at_the_same_instant_the_one_recorded_last_is_current(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let at = "2024-03-01T10:00:00.250+00:00";
        set_consent(&app, json!({ "contactId": contact, "purpose": "profiling", "channel": "EMAIL", "status": "GRANTED", "capturedAt": at })).await;
        let second =
            set_consent(&app, json!({ "contactId": contact, "purpose": "profiling", "channel": "EMAIL", "status": "DENIED", "capturedAt": at })).await;
        assert_eq!(second["capturedAt"], "2024-03-01T10:00:00.250+00:00");
        assert_eq!(current_consents(&app, &contact).await, json!([second]));
    }

    async fn a_capture_time_finer_than_a_microsecond_is_kept_to_the_microsecond_and_reads_back_as_returned(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let recorded = set_consent(
            &app,
            json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED", "capturedAt": "2024-03-01T10:00:00.123456789Z" }),
        )
        .await;
        assert_eq!(recorded["capturedAt"], "2024-03-01T10:00:00.123456+00:00");
        assert_eq!(current_consents(&app, &contact).await, json!([recorded]));
        assert_eq!(history(&app, &contact, json!({})).await["edges"][0]["node"], recorded);

        // Within the same microsecond two decisions tie on both databases: the one recorded last wins.
        let same_microsecond = set_consent(
            &app,
            json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "DENIED", "capturedAt": "2024-03-01T10:00:00.123456001Z" }),
        )
        .await;
        assert_eq!(current_consents(&app, &contact).await, json!([same_microsecond]));
    }

    async fn a_decision_for_an_unknown_purpose_is_rejected_and_nothing_is_recorded(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        set_consent(&app, json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" })).await;
        assert_consent_rejected(
            &app,
            json!({ "contactId": contact, "purpose": "newsletter", "channel": "EMAIL", "status": "GRANTED" }),
            "BAD_USER_INPUT",
            Some("purpose"),
        )
        .await;
        assert_consent_rejected(
            &app,
            json!({ "contactId": contact, "purpose": "Marketing!", "channel": "EMAIL", "status": "GRANTED" }),
            "BAD_USER_INPUT",
            Some("purpose"),
        )
        .await;
    }

    async fn a_decision_for_an_unknown_contact_is_not_found(app) {
        new_contact(&app, "ada@example.com").await;
        assert_consent_rejected(
            &app,
            json!({ "contactId": "0190b4a0-0000-7000-8000-000000000000", "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }),
            "NOT_FOUND",
            None,
        )
        .await;
    }

    async fn a_malformed_contact_id_is_rejected(app) {
        new_contact(&app, "ada@example.com").await;
        for id in ["not-a-uuid", "", "12345"] {
            assert_consent_rejected(
                &app,
                json!({ "contactId": id, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }),
                "BAD_USER_INPUT",
                Some("contactId"),
            )
            .await;
        }
    }

    async fn a_capture_time_in_the_future_is_rejected(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        assert_consent_rejected(
            &app,
            json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED", "capturedAt": "2999-01-01T00:00:00Z" }),
            "BAD_USER_INPUT",
            Some("capturedAt"),
        )
        .await;
    }

    async fn a_malformed_proof_is_rejected(app) {
        let contact = new_contact(&app, "ada@example.com").await;
        let with_proof = |proof: Value| {
            json!({ "contactId": contact, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED", "proof": proof })
        };
        for ip in ["999.1.1.1", "localhost", "203.0.113.7/24", ""] {
            assert_consent_rejected(&app, with_proof(json!({ "ip": ip })), "BAD_USER_INPUT", Some("proof.ip")).await;
        }
        assert_consent_rejected(&app, with_proof(json!({ "userAgent": "  " })), "BAD_USER_INPUT", Some("proof.userAgent")).await;
        assert_consent_rejected(&app, with_proof(json!({ "wordingId": "a\u{0007}b" })), "BAD_USER_INPUT", Some("proof.wordingId"))
            .await;
    }

    async fn a_custom_purpose_is_used_in_set_consent_and_in_the_contacts_filter(app) {
        app.data(DEFINE_PURPOSE, json!({ "input": { "key": "product_research", "label": "Product research" } })).await;
        let ada = new_contact(&app, "ada@example.com").await;
        let grace = new_contact(&app, "grace@example.com").await;
        let linus = new_contact(&app, "linus@example.com").await;
        let recorded = set_consent(
            &app,
            json!({ "contactId": ada, "purpose": "product_research", "channel": "EMAIL", "status": "GRANTED" }),
        )
        .await;
        assert_eq!(recorded["purpose"], "product_research");
        set_consent(&app, json!({ "contactId": grace, "purpose": "product_research", "channel": "EMAIL", "status": "DENIED" })).await;
        set_consent(&app, json!({ "contactId": linus, "purpose": "product_research", "channel": "SMS", "status": "GRANTED" })).await;
        set_consent(&app, json!({ "contactId": grace, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" })).await;
        set_consent(&app, json!({ "contactId": ada, "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" })).await;

        let filtered = |consents: Value| filtered_emails(&app, "consents", consents);
        assert_eq!(
            filtered(json!([{ "purpose": "product_research", "channel": "EMAIL", "status": "GRANTED" }])).await,
            ["ada@example.com"]
        );
        assert_eq!(
            filtered(json!([{ "purpose": "product_research", "channel": "EMAIL", "status": "DENIED" }])).await,
            ["grace@example.com"]
        );
        assert_eq!(
            filtered(json!([{ "purpose": "product_research", "channel": "SMS", "status": "GRANTED" }])).await,
            ["linus@example.com"]
        );
        assert_eq!(
            filtered(json!([{ "purpose": "product_research", "channel": "PUSH", "status": "GRANTED" }])).await,
            Vec::<String>::new()
        );
        // Every condition must hold.
        assert_eq!(
            filtered(json!([
                { "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" },
                { "purpose": "product_research", "channel": "EMAIL", "status": "DENIED" },
            ]))
            .await,
            ["grace@example.com"]
        );

        // The filter follows the current state, not the history.
        set_consent(&app, json!({ "contactId": ada, "purpose": "product_research", "channel": "EMAIL", "status": "DENIED" })).await;
        assert_eq!(
            filtered(json!([{ "purpose": "product_research", "channel": "EMAIL", "status": "DENIED" }])).await,
            ["ada@example.com", "grace@example.com"]
        );
        assert_eq!(
            filtered(json!([{ "purpose": "product_research", "channel": "EMAIL", "status": "GRANTED" }])).await,
            Vec::<String>::new()
        );
        // An older import does not move a contact between filter results.
        set_consent(
            &app,
            json!({ "contactId": grace, "purpose": "product_research", "channel": "EMAIL", "status": "GRANTED", "source": "IMPORT", "capturedAt": "2021-01-01T00:00:00Z" }),
        )
        .await;
        assert_eq!(
            filtered(json!([{ "purpose": "product_research", "channel": "EMAIL", "status": "DENIED" }])).await,
            ["ada@example.com", "grace@example.com"]
        );
    }

    async fn an_unknown_or_malformed_purpose_in_the_contacts_filter_is_rejected(app) {
        let query = "query($consents: [ConsentFilter!]) { contacts(filter: { consents: $consents }) { nodes { id } } }";
        for (consents, field) in [
            (json!([{ "purpose": "Bad Key", "channel": "EMAIL", "status": "GRANTED" }]), "filter.consents[0].purpose"),
            (
                json!([
                    { "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" },
                    { "purpose": "never_defined", "channel": "EMAIL", "status": "GRANTED" },
                ]),
                "filter.consents[1].purpose",
            ),
        ] {
            let error = app.error(query, json!({ "consents": consents })).await;
            assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{error:#}");
            assert_eq!(error["extensions"]["field"], field, "{error:#}");
        }
    }
}

/// A database whose consent history holds a numeric wording version, moved on by the migration
/// that makes versions text: the number reads back as its decimal text, and an empty one as none.
async fn numeric_wording_versions_become_their_decimal_text(backend: rapport_e2e::Backend) {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectOptions, ConnectionTrait, Database, Statement};
    let storage = rapport_e2e::Storage::create(backend).await;
    // One connection: the foreign keys are switched off for it alone, to store history rows
    // without the contacts they would belong to.
    let db = Database::connect(ConnectOptions::new(storage.url()).max_connections(1).to_owned()).await.unwrap();
    Migrator::up(&db, Some(15)).await.unwrap();
    let off = if backend == rapport_e2e::Backend::Postgres {
        "SET session_replication_role = replica"
    } else {
        "PRAGMA foreign_keys = OFF"
    };
    db.execute_unprepared(off).await.unwrap();
    for (id, version) in
        [("0193a000-0000-7000-8000-000000000001", "3"), ("0193a000-0000-7000-8000-000000000002", "NULL")]
    {
        db.execute_unprepared(&format!(
            "INSERT INTO consent_change (id, contact_id, purpose, channel, status, legal_basis, source, captured_at, recorded_at, wording_version) \
             VALUES ('{id}', '0193a000-0000-7000-8000-0000000000ff', 'marketing', 'email', 'granted', 'consent', 'api', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', {version})"
        ))
        .await
        .unwrap();
    }
    Migrator::up(&db, None).await.unwrap();
    let rows = db
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT wording_version FROM consent_change ORDER BY id",
        ))
        .await
        .unwrap();
    let versions: Vec<Option<String>> = rows.iter().map(|row| row.try_get("", "wording_version").unwrap()).collect();
    assert_eq!(versions, [Some("3".to_owned()), None]);
    db.close().await.unwrap();
}

mod numeric_wording_versions_become_their_decimal_text {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::numeric_wording_versions_become_their_decimal_text(rapport_e2e::Backend::Sqlite).await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::numeric_wording_versions_become_their_decimal_text(rapport_e2e::Backend::Postgres).await
    }
}
