//! Behavioural events over the API: batches where every event gets its own result and a bad one
//! never stops the good ones, idempotency keys that make retries harmless, the 1,000-event limit,
//! and the contact's timeline (newest first, filtered, paginated).

use rapport_e2e::{TestApp, on_both_databases};
use serde_json::{Value, json};

const TRACK: &str = "mutation($events: [TrackEventInput!]!) {
    trackEvents(events: $events) { index status eventId error { code message field } }
}";

const EVENT_FIELDS: &str = "id type properties occurredAt receivedAt source idempotencyKey";

/// The results of one `trackEvents` call that must succeed as a whole.
async fn track(app: &TestApp, events: Value) -> Vec<Value> {
    app.data(TRACK, json!({ "events": events })).await["trackEvents"].as_array().expect("results").clone()
}

/// The contact's timeline with the given arguments (any of type, first, after, last, before).
async fn timeline(app: &TestApp, contact_id: &str, arguments: Value) -> Value {
    let query = format!(
        "query($id: ID!, $type: String, $first: Int, $after: String, $last: Int, $before: String) {{
           contact(by: {{ id: $id }}) {{
             events(type: $type, first: $first, after: $after, last: $last, before: $before) {{
               pageInfo {{ hasPreviousPage hasNextPage startCursor endCursor }}
               edges {{ cursor node {{ {EVENT_FIELDS} }} }}
             }}
           }}
         }}"
    );
    let mut variables = arguments;
    variables["id"] = json!(contact_id);
    app.data(&query, variables).await["contact"]["events"].clone()
}

fn nodes(connection: &Value) -> Vec<Value> {
    connection["edges"].as_array().expect("edges").iter().map(|edge| edge["node"].clone()).collect()
}

fn node_ids(connection: &Value) -> Vec<String> {
    nodes(connection).iter().map(|node| node["id"].as_str().expect("event id").to_owned()).collect()
}

/// Every event id of the contact, newest first, read page by page.
async fn all_event_ids(app: &TestApp, contact_id: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = timeline(app, contact_id, json!({ "first": 100, "after": after })).await;
        ids.extend(node_ids(&page));
        if page["pageInfo"]["hasNextPage"] != true {
            return ids;
        }
        after = page["pageInfo"]["endCursor"].clone();
    }
}

fn event_id(result: &Value) -> String {
    result["eventId"].as_str().unwrap_or_else(|| panic!("no event id in {result:#}")).to_owned()
}

async fn new_contact(app: &TestApp, contact: Value) -> String {
    app.upsert_contact(contact).await["id"].as_str().expect("contact id").to_owned()
}

fn assert_created(results: &[Value]) {
    for (position, result) in results.iter().enumerate() {
        assert_eq!(result["index"], position, "{result:#}");
        assert_eq!(result["status"], "CREATED", "{result:#}");
        assert_eq!(result["error"], Value::Null, "{result:#}");
        assert!(uuid::Uuid::parse_str(&event_id(result)).is_ok(), "{result:#}");
    }
}

fn assert_item_rejected(result: &Value, index: usize, code: &str, field: Option<&str>) {
    assert_eq!(result["index"], index, "{result:#}");
    assert_eq!(result["status"], "REJECTED", "{result:#}");
    assert_eq!(result["eventId"], Value::Null, "{result:#}");
    assert_eq!(result["error"]["code"], code, "{result:#}");
    assert_eq!(result["error"]["field"], field.map_or(Value::Null, Value::from), "{result:#}");
    let message = result["error"]["message"].as_str().expect("message");
    assert!(!message.is_empty(), "{result:#}");
    if let Some(field) = field {
        assert_eq!(message.matches(field).count(), 1, "the message names the field once: {result:#}");
    }
}

on_both_databases! {
    async fn events_are_tracked_for_contacts_named_by_id_external_id_and_email(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let grace = new_contact(&app, json!({ "externalId": "crm-42", "email": "grace@example.com" })).await;
        let linus = new_contact(&app, json!({ "email": "linus@example.com" })).await;
        let results = track(
            &app,
            json!([
                { "contact": { "id": ada }, "type": "order.completed" },
                { "contact": { "externalId": "crm-42" }, "type": "page.viewed" },
                { "contact": { "email": "linus@example.com" }, "type": "email:opened-v2" },
                { "contact": { "email": "grace@example.com" }, "type": "page.viewed" },
                { "contact": { "email": " linus@EXAMPLE.com " }, "type": "page.viewed" },
            ]),
        )
        .await;
        assert_eq!(results.len(), 5);
        assert_created(&results);
        let ids: Vec<String> = results.iter().map(event_id).collect();
        assert_eq!(ids.iter().collect::<std::collections::HashSet<_>>().len(), 5, "every event has its own id");

        assert_eq!(all_event_ids(&app, &ada).await, [ids[0].clone()]);
        let mut linuses = all_event_ids(&app, &linus).await;
        linuses.sort();
        let mut expected = vec![ids[2].clone(), ids[4].clone()];
        expected.sort();
        assert_eq!(linuses, expected, "an email's domain is matched whatever its case");
        let mut graces = all_event_ids(&app, &grace).await;
        graces.sort();
        let mut expected = vec![ids[1].clone(), ids[3].clone()];
        expected.sort();
        assert_eq!(graces, expected);
    }

    async fn an_event_reads_back_with_its_type_properties_source_and_key(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let properties = json!({
            "total": 12.5,
            "currency": "EUR",
            "items": [{ "sku": "A-1", "quantity": 2 }, { "sku": "B-7", "quantity": 1 }],
            "gift": false,
            "note": null,
            "nested": { "deep": { "deeper": [1, 2, 3] } },
        });
        let results = track(
            &app,
            json!([
                {
                    "contact": { "id": ada }, "type": "order.completed", "properties": properties,
                    "occurredAt": "2024-05-01T12:30:00+02:00", "source": "web_shop", "idempotencyKey": "order-1001",
                },
                { "contact": { "id": ada }, "type": "page.viewed" },
            ]),
        )
        .await;
        assert_created(&results);

        let events = nodes(&timeline(&app, &ada, json!({})).await);
        assert_eq!(events.len(), 2);
        let (page_view, order) = (&events[0], &events[1]);

        assert_eq!(order["id"], results[0]["eventId"]);
        assert_eq!(order["type"], "order.completed");
        assert_eq!(order["properties"], properties);
        assert_eq!(order["occurredAt"], "2024-05-01T10:30:00+00:00", "times are kept in UTC");
        assert_eq!(order["source"], "web_shop");
        assert_eq!(order["idempotencyKey"], "order-1001");
        assert_ne!(order["receivedAt"], order["occurredAt"]);

        assert_eq!(page_view["id"], results[1]["eventId"]);
        assert_eq!(page_view["type"], "page.viewed");
        assert_eq!(page_view["properties"], json!({}), "properties default to an empty object");
        assert_eq!(page_view["source"], "api", "the source defaults to api");
        assert_eq!(page_view["idempotencyKey"], Value::Null);
        assert_eq!(page_view["occurredAt"], page_view["receivedAt"], "an event without occurredAt occurred when received");
    }

    async fn the_timeline_lists_events_newest_first_by_occurrence_and_filters_by_type(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let grace = new_contact(&app, json!({ "email": "grace@example.com" })).await;
        // Sent out of order: the timeline orders by when events occurred, not when they arrived.
        let sent = [
            ("page.viewed", "2024-03-01T10:00:00Z"),
            ("order.completed", "2024-01-01T10:00:00Z"),
            ("page.viewed", "2024-05-01T10:00:00Z"),
            ("order.completed", "2024-04-01T10:00:00.5Z"),
            ("page.viewed", "2024-04-01T10:00:00Z"),
        ];
        let events: Vec<Value> = sent
            .iter()
            .map(|(event_type, at)| json!({ "contact": { "id": ada }, "type": event_type, "occurredAt": at }))
            .chain([json!({ "contact": { "id": grace }, "type": "page.viewed", "occurredAt": "2024-04-15T00:00:00Z" })])
            .collect();
        let results = track(&app, json!(events)).await;
        assert_created(&results);
        let id = |position: usize| event_id(&results[position]);

        let all = timeline(&app, &ada, json!({})).await;
        assert_eq!(node_ids(&all), [id(2), id(3), id(4), id(0), id(1)]);
        let occurred: Vec<Value> = nodes(&all).iter().map(|node| node["occurredAt"].clone()).collect();
        assert_eq!(
            occurred,
            [
                "2024-05-01T10:00:00+00:00",
                "2024-04-01T10:00:00.500+00:00",
                "2024-04-01T10:00:00+00:00",
                "2024-03-01T10:00:00+00:00",
                "2024-01-01T10:00:00+00:00",
            ]
        );
        assert_eq!(all["pageInfo"]["hasNextPage"], false);

        let orders = timeline(&app, &ada, json!({ "type": "order.completed" })).await;
        assert_eq!(node_ids(&orders), [id(3), id(1)]);
        let views = timeline(&app, &ada, json!({ "type": "page.viewed" })).await;
        assert_eq!(node_ids(&views), [id(2), id(4), id(0)]);
        let none = timeline(&app, &ada, json!({ "type": "signed.up" })).await;
        assert_eq!(node_ids(&none), Vec::<String>::new());
        assert_eq!(node_ids(&timeline(&app, &grace, json!({})).await), [id(5)], "each contact sees only its own events");
    }

    async fn the_timeline_pages_forward_and_backward(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let events: Vec<Value> = (1..=5)
            .map(|day| json!({ "contact": { "id": ada }, "type": "page.viewed", "occurredAt": format!("2024-06-0{day}T08:00:00Z") }))
            .collect();
        let results = track(&app, json!(events)).await;
        assert_created(&results);
        let newest_first: Vec<String> = results.iter().rev().map(event_id).collect();

        let page1 = timeline(&app, &ada, json!({ "first": 2 })).await;
        assert_eq!(node_ids(&page1), newest_first[0..2]);
        assert_eq!(page1["pageInfo"]["hasNextPage"], true);
        assert_eq!(page1["pageInfo"]["hasPreviousPage"], false);
        let page2 = timeline(&app, &ada, json!({ "first": 2, "after": page1["pageInfo"]["endCursor"] })).await;
        assert_eq!(node_ids(&page2), newest_first[2..4]);
        assert_eq!(page2["pageInfo"]["hasNextPage"], true);
        assert_eq!(page2["pageInfo"]["hasPreviousPage"], true);
        let page3 = timeline(&app, &ada, json!({ "first": 2, "after": page2["pageInfo"]["endCursor"] })).await;
        assert_eq!(node_ids(&page3), newest_first[4..5]);
        assert_eq!(page3["pageInfo"]["hasNextPage"], false);

        let last = timeline(&app, &ada, json!({ "last": 2 })).await;
        assert_eq!(node_ids(&last), newest_first[3..5], "the last page holds the oldest events, newest first");
        assert_eq!(last["pageInfo"]["hasPreviousPage"], true);
        assert_eq!(last["pageInfo"]["hasNextPage"], false);
        let before = timeline(&app, &ada, json!({ "last": 2, "before": last["pageInfo"]["startCursor"] })).await;
        assert_eq!(node_ids(&before), newest_first[1..3]);
        let start = timeline(&app, &ada, json!({ "last": 2, "before": before["pageInfo"]["startCursor"] })).await;
        assert_eq!(node_ids(&start), newest_first[0..1]);
        assert_eq!(start["pageInfo"]["hasPreviousPage"], false);
        assert_eq!(start["pageInfo"]["hasNextPage"], true);
    }

    async fn events_that_occurred_at_the_same_instant_are_paged_without_gaps_or_repeats(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let events: Vec<Value> = (0..7)
            .map(|n| json!({ "contact": { "id": ada }, "type": "tick", "properties": { "n": n }, "occurredAt": "2024-06-01T08:00:00Z" }))
            .collect();
        let results = track(&app, json!(events)).await;
        assert_created(&results);
        let mut expected: Vec<String> = results.iter().map(event_id).collect();

        let mut seen = Vec::new();
        let mut after = Value::Null;
        loop {
            let page = timeline(&app, &ada, json!({ "first": 3, "after": after })).await;
            seen.extend(node_ids(&page));
            if page["pageInfo"]["hasNextPage"] != true {
                break;
            }
            after = page["pageInfo"]["endCursor"].clone();
        }
        assert_eq!(seen.len(), 7, "{seen:?}");
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        expected.sort();
        assert_eq!(sorted, expected);
        assert_eq!(all_event_ids(&app, &ada).await, seen, "pages read in any size agree on one order");
    }

    async fn a_mixed_batch_stores_exactly_the_valid_events(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let grace = new_contact(&app, json!({ "externalId": "crm-7" })).await;
        let events = json!([
            { "contact": { "id": ada }, "type": "order.completed", "properties": { "total": 30 } },
            { "contact": { "email": "nobody@example.com" }, "type": "page.viewed" },
            { "contact": { "id": ada }, "type": "order placed" },
            { "contact": { "externalId": "crm-7" }, "type": "page.viewed", "occurredAt": "2024-02-02T02:02:02Z" },
            { "contact": { "id": ada }, "type": "page.viewed", "properties": [1, 2, 3] },
            { "contact": { "id": ada }, "type": "page.viewed", "properties": "a string" },
            { "contact": { "id": ada }, "type": "page.viewed", "occurredAt": "2999-01-01T00:00:00Z" },
            { "contact": { "id": "0190b4a0-0000-7000-8000-000000000000" }, "type": "page.viewed" },
            { "contact": { "id": "not-an-id" }, "type": "page.viewed" },
            { "contact": { "email": "not an email" }, "type": "page.viewed" },
            { "contact": { "id": ada }, "type": "page.viewed", "source": "Web Shop" },
            { "contact": { "externalId": "crm-unknown" }, "type": "page.viewed" },
            { "contact": { "id": ada }, "type": "page.viewed", "properties": { "blob": "x".repeat(33 * 1024) } },
            { "contact": { "id": ada }, "type": "" },
            { "contact": { "id": ada }, "type": "page.viewed", "idempotencyKey": " " },
            { "contact": { "email": "ada@example.com" }, "type": "signed.up", "idempotencyKey": "signup-ada" },
        ]);
        let results = track(&app, events).await;
        assert_eq!(results.len(), 16);
        for (position, result) in results.iter().enumerate() {
            assert_eq!(result["index"], position, "every result's index is its position: {result:#}");
        }
        for position in [0, 3, 15] {
            assert_eq!(results[position]["status"], "CREATED", "{:#}", results[position]);
            assert_eq!(results[position]["error"], Value::Null);
        }
        assert_item_rejected(&results[1], 1, "NOT_FOUND", None);
        assert_item_rejected(&results[2], 2, "BAD_USER_INPUT", Some("type"));
        assert_item_rejected(&results[4], 4, "BAD_USER_INPUT", Some("properties"));
        assert_item_rejected(&results[5], 5, "BAD_USER_INPUT", Some("properties"));
        assert_item_rejected(&results[6], 6, "BAD_USER_INPUT", Some("occurredAt"));
        assert_item_rejected(&results[7], 7, "NOT_FOUND", None);
        assert_item_rejected(&results[8], 8, "BAD_USER_INPUT", Some("contact.id"));
        assert_item_rejected(&results[9], 9, "BAD_USER_INPUT", Some("contact.email"));
        assert_item_rejected(&results[10], 10, "BAD_USER_INPUT", Some("source"));
        assert_item_rejected(&results[11], 11, "NOT_FOUND", None);
        assert_item_rejected(&results[12], 12, "BAD_USER_INPUT", Some("properties"));
        assert_item_rejected(&results[13], 13, "BAD_USER_INPUT", Some("type"));
        assert_item_rejected(&results[14], 14, "BAD_USER_INPUT", Some("idempotencyKey"));

        let mut adas = all_event_ids(&app, &ada).await;
        adas.sort();
        let mut expected = vec![event_id(&results[0]), event_id(&results[15])];
        expected.sort();
        assert_eq!(adas, expected, "exactly the valid events of ada are stored");
        assert_eq!(all_event_ids(&app, &grace).await, [event_id(&results[3])]);
    }

    async fn a_batch_of_only_invalid_events_stores_nothing(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        track(&app, json!([{ "contact": { "id": ada }, "type": "page.viewed", "occurredAt": "2024-01-01T00:00:00Z" }])).await;
        let before = app.snapshot().await;
        let results = track(
            &app,
            json!([
                { "contact": { "id": ada }, "type": "bad type" },
                { "contact": { "email": "nobody@example.com" }, "type": "page.viewed" },
            ]),
        )
        .await;
        assert_item_rejected(&results[0], 0, "BAD_USER_INPUT", Some("type"));
        assert_item_rejected(&results[1], 1, "NOT_FOUND", None);
        assert_eq!(app.snapshot().await, before);
        assert_eq!(track(&app, json!([])).await, Vec::<Value>::new(), "an empty batch is answered with no results");
        assert_eq!(app.snapshot().await, before);
    }

    async fn the_same_idempotency_key_twice_in_one_batch_stores_one_event(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let grace = new_contact(&app, json!({ "email": "grace@example.com" })).await;
        let results = track(
            &app,
            json!([
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "order-1", "properties": { "try": 1 } },
                { "contact": { "id": ada }, "type": "page.viewed" },
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "order-1", "properties": { "try": 2 } },
                { "contact": { "id": grace }, "type": "order.completed", "idempotencyKey": "order-1" },
            ]),
        )
        .await;
        assert_eq!(results[0]["status"], "CREATED");
        assert_eq!(results[1]["status"], "CREATED");
        for position in [2, 3] {
            assert_eq!(results[position]["index"], position);
            assert_eq!(results[position]["status"], "DUPLICATE", "{:#}", results[position]);
            assert_eq!(results[position]["eventId"], results[0]["eventId"], "a duplicate names the first event");
            assert_eq!(results[position]["error"], Value::Null);
        }
        let orders = nodes(&timeline(&app, &ada, json!({ "type": "order.completed" })).await);
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0]["properties"], json!({ "try": 1 }), "the first event wins");
        assert_eq!(all_event_ids(&app, &ada).await.len(), 2);
        assert_eq!(all_event_ids(&app, &grace).await, Vec::<String>::new());
    }

    async fn sending_a_batch_again_stores_nothing_new(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let events = json!([
            { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "order-1" },
            { "contact": { "email": "ada@example.com" }, "type": "order.completed", "idempotencyKey": "order-2", "source": "shop" },
            { "contact": { "id": ada }, "type": "page.viewed", "idempotencyKey": "view-1", "occurredAt": "2024-01-01T00:00:00Z" },
        ]);
        let first = track(&app, events.clone()).await;
        assert_created(&first);
        let before = app.snapshot().await;

        let again = track(&app, events).await;
        for (position, result) in again.iter().enumerate() {
            assert_eq!(result["index"], position);
            assert_eq!(result["status"], "DUPLICATE", "{result:#}");
            assert_eq!(result["eventId"], first[position]["eventId"]);
        }
        assert_eq!(app.snapshot().await, before, "a repeated batch changes nothing");

        // A retry mixing old and new events stores only the new ones.
        let mixed = track(
            &app,
            json!([
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "order-3" },
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "order-1" },
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "order-1" },
            ]),
        )
        .await;
        assert_eq!(mixed[0]["status"], "CREATED");
        assert_eq!(mixed[1]["status"], "DUPLICATE");
        assert_eq!(mixed[1]["eventId"], first[0]["eventId"]);
        assert_eq!(mixed[2]["status"], "DUPLICATE");
        assert_eq!(mixed[2]["eventId"], first[0]["eventId"]);
        assert_eq!(all_event_ids(&app, &ada).await.len(), 4);
    }

    async fn the_same_key_under_another_source_is_a_different_event(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let results = track(
            &app,
            json!([
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "1001" },
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "1001", "source": "shop" },
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "1001", "source": "api" },
            ]),
        )
        .await;
        assert_eq!(results[0]["status"], "CREATED");
        assert_eq!(results[1]["status"], "CREATED");
        assert_ne!(results[1]["eventId"], results[0]["eventId"]);
        assert_eq!(results[2]["status"], "DUPLICATE", "\"api\" is the default source");
        assert_eq!(results[2]["eventId"], results[0]["eventId"]);

        let later = track(&app, json!([{ "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "1001", "source": "pos" }])).await;
        assert_eq!(later[0]["status"], "CREATED");
        let mut sources: Vec<String> = nodes(&timeline(&app, &ada, json!({})).await)
            .iter()
            .map(|event| format!("{}/{}", event["source"].as_str().unwrap(), event["idempotencyKey"].as_str().unwrap()))
            .collect();
        sources.sort();
        assert_eq!(sources, ["api/1001", "pos/1001", "shop/1001"]);
    }

    async fn events_without_an_idempotency_key_are_never_duplicates(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let event = json!({ "contact": { "id": ada }, "type": "page.viewed", "occurredAt": "2024-01-01T00:00:00Z" });
        let first = track(&app, json!([event, event])).await;
        assert_created(&first);
        let second = track(&app, json!([event])).await;
        assert_created(&second);
        assert_eq!(all_event_ids(&app, &ada).await.len(), 3);
    }

    async fn a_key_whose_first_event_was_rejected_is_still_free(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let results = track(
            &app,
            json!([
                { "contact": { "id": ada }, "type": "order completed", "idempotencyKey": "order-9" },
                { "contact": { "id": ada }, "type": "order.completed", "idempotencyKey": "order-9" },
            ]),
        )
        .await;
        assert_item_rejected(&results[0], 0, "BAD_USER_INPUT", Some("type"));
        assert_eq!(results[1]["status"], "CREATED");
        assert_eq!(all_event_ids(&app, &ada).await, [event_id(&results[1])]);
    }

    async fn more_than_a_thousand_events_in_one_call_are_refused_and_nothing_is_stored(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let events: Vec<Value> = (0..1_001)
            .map(|n| json!({ "contact": { "id": ada }, "type": "page.viewed", "idempotencyKey": format!("view-{n}") }))
            .collect();
        let before = app.snapshot().await;
        let error = app.error(TRACK, json!({ "events": events })).await;
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{error:#}");
        assert_eq!(error["extensions"]["field"], "events", "{error:#}");
        assert_eq!(app.snapshot().await, before);
        assert_eq!(all_event_ids(&app, &ada).await, Vec::<String>::new());
    }

    async fn exactly_a_thousand_events_in_one_call_are_accepted(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let grace = new_contact(&app, json!({ "externalId": "crm-1" })).await;
        let events: Vec<Value> = (0..1_000)
            .map(|n| {
                let contact = if n % 2 == 0 { json!({ "id": ada }) } else { json!({ "externalId": "crm-1" }) };
                json!({
                    "contact": contact,
                    "type": if n % 3 == 0 { "order.completed" } else { "page.viewed" },
                    "properties": { "n": n },
                    "occurredAt": format!("2024-01-01T00:{:02}:{:02}Z", n / 60, n % 60),
                    "idempotencyKey": format!("event-{n}"),
                })
            })
            .collect();
        let results = track(&app, json!(events)).await;
        assert_eq!(results.len(), 1_000);
        assert_created(&results);

        let adas = all_event_ids(&app, &ada).await;
        let graces = all_event_ids(&app, &grace).await;
        assert_eq!((adas.len(), graces.len()), (500, 500));
        // Newest first: event 998 is ada's latest, event 0 her first.
        assert_eq!(adas.first(), Some(&event_id(&results[998])));
        assert_eq!(adas.last(), Some(&event_id(&results[0])));
        assert_eq!(graces.first(), Some(&event_id(&results[999])));

        // Sending all of them again is a thousand duplicates of the same events.
        let before = app.snapshot().await;
        let again = track(&app, json!(events)).await;
        assert_eq!(again.len(), 1_000);
        for (position, result) in again.iter().enumerate() {
            assert_eq!(result["index"], position);
            assert_eq!(result["status"], "DUPLICATE", "{result:#}");
            assert_eq!(result["eventId"], results[position]["eventId"], "{result:#}");
        }
        assert_eq!(app.snapshot().await, before);
        assert_eq!(all_event_ids(&app, &ada).await.len() + all_event_ids(&app, &grace).await.len(), 1_000);
    }

    async fn malformed_timeline_arguments_are_rejected(app) {
        let ada = new_contact(&app, json!({ "email": "ada@example.com" })).await;
        let query = "query($id: ID!, $type: String, $first: Int, $before: String) {
            contact(by: { id: $id }) { events(type: $type, first: $first, before: $before) { edges { cursor } } }
        }";
        for (arguments, field) in [
            (json!({ "type": "page viewed" }), "type"),
            (json!({ "first": 0 }), "first"),
            (json!({ "first": 1000 }), "first"),
            (json!({ "before": "bm9wZQ==" }), "before"),
        ] {
            let mut variables = arguments;
            variables["id"] = json!(ada);
            let error = app.error(query, variables).await;
            assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT", "{error:#}");
            assert_eq!(error["extensions"]["field"], field, "{error:#}");
        }
    }
}
