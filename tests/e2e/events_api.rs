//! The batch event API (`POST /v1/events`): 10,000 events per request in a JSON array or NDJSON,
//! one result per event, duplicates by idempotency key, contacts created on the fly, contact
//! changes carried by events ("identify"), last-seen data, and the request-level refusals.

use rapport::{
    domain::{
        contact::ContactId,
        event::{Event, EventProperties, EventType, IdempotencyKey},
        key::Key,
    },
    service::events::parallel_writers,
};
use rapport_e2e::{ADMIN_TOKEN, Backend, TestApp, on_both_databases};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::{Value, json};

const NDJSON: &str = "application/x-ndjson";

/// POSTs `body` as `content_type` with `bearer` (or none) and returns the status and JSON body.
async fn post_raw(app: &TestApp, bearer: Option<&str>, query: &str, content_type: &str, body: String) -> (u16, Value) {
    let mut request = app
        .client
        .post(app.url(&format!("/v1/events{query}")))
        .header(reqwest::header::CONTENT_TYPE, content_type)
        .body(body);
    if let Some(bearer) = bearer {
        request = request.bearer_auth(bearer);
    }
    let response = request.send().await.expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.expect("JSON body"))
}

/// POSTs events as a JSON array with the admin token; the request as a whole must succeed.
async fn post(app: &TestApp, query: &str, events: Value) -> Value {
    let (status, body) = post_raw(app, Some(ADMIN_TOKEN), query, "application/json", events.to_string()).await;
    assert_eq!(status, 200, "{body:#}");
    body
}

fn statuses(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["status"].as_str().expect("status").to_owned())
        .collect()
}

async fn event_rows(app: &TestApp) -> i64 {
    count(app, "SELECT COUNT(*) AS n FROM event").await
}

/// The count `sql` (a query for `COUNT(*) AS n`) gives.
async fn count(app: &TestApp, sql: &str) -> i64 {
    let db = Database::connect(&app.database_url).await.expect("test database");
    let statement = Statement::from_string(db.get_database_backend(), sql);
    let row = db.query_one_raw(statement).await.expect("count query").expect("one row");
    db.close().await.ok();
    row.try_get::<i64>("", "n").expect("a count")
}

async fn new_contact(app: &TestApp, contact: Value) -> String {
    app.upsert_contact(contact).await["id"].as_str().expect("contact id").to_owned()
}

async fn contact_by_external_id(app: &TestApp, external_id: &str) -> Value {
    let query = "query($id: String!) { contact(by: { externalId: $id }) {
        id email firstName lastName attributes activity { lastSeenAt lastEventType eventCount }
    } }";
    app.data(query, json!({ "id": external_id })).await["contact"].clone()
}

fn assert_error_result(result: &Value, code: &str, field: Option<&str>) {
    assert_eq!(result["status"], "rejected", "{result:#}");
    assert_eq!(result["error"]["code"], code, "{result:#}");
    assert_eq!(result["error"]["field"], field.map_or(Value::Null, Value::from), "{result:#}");
    assert!(result.get("eventId").is_none(), "{result:#}");
}

fn assert_request_error(status: u16, body: &Value, expected_status: u16, code: &str) {
    assert_eq!(status, expected_status, "{body:#}");
    assert_eq!(body["error"]["code"], code, "{body:#}");
    assert!(body["error"]["message"].as_str().is_some_and(|message| !message.is_empty()), "{body:#}");
}

const CONTACTS: usize = 50;

/// Item `i` of the big batch, by `i % 10`: 0 a bad type, 1 an unknown contact, 2 a repeat of an
/// earlier request's key, 3 valid, 4 valid with a key, 5 a repeat of item `i - 1`'s key within
/// the request, 6 in the future, 7 properties that are not an object, 8 and 9 valid.
fn big_batch_item(i: usize) -> Value {
    let contact = json!({ "externalId": format!("c{}", i % CONTACTS) });
    let event = |extra: Value| {
        let mut event = json!({ "contact": contact, "type": "page.viewed", "properties": { "n": i } });
        event.as_object_mut().expect("object").extend(extra.as_object().expect("object").clone());
        event
    };
    match i % 10 {
        0 => event(json!({ "type": "page viewed" })),
        1 => event(json!({ "contact": { "externalId": "nobody" } })),
        2 => event(json!({ "idempotencyKey": format!("early-{}", i % 100) })),
        4 => event(json!({ "idempotencyKey": format!("k-{i}") })),
        5 => event(json!({ "idempotencyKey": format!("k-{}", i - 1) })),
        6 => event(json!({ "occurredAt": "2999-01-01T00:00:00Z" })),
        7 => event(json!({ "properties": [1, 2] })),
        _ => event(json!({})),
    }
}

/// A write transaction that holds the event writer up: on SQLite it has the one writer
/// connection, on PostgreSQL a lock that keeps inserts out of `event`.
async fn hold_the_writer(app: &TestApp) -> sea_orm::DatabaseTransaction {
    let hold = app.services.database().begin_write().await.expect("write transaction");
    if app.services.database().backend() == sea_orm::DbBackend::Postgres {
        hold.execute_unprepared("LOCK TABLE event IN SHARE ROW EXCLUSIVE MODE").await.expect("lock");
    }
    hold
}

/// Waits until the event writer has `writing` requests in its group and `waiting` queued.
async fn until_writer_has(app: &TestApp, writing: usize, waiting: usize) {
    let expected = rapport::service::events::WriterLoad { writing, waiting };
    for _ in 0..500 {
        if app.services.event_writer_load() == expected {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("the event writer never had {expected:?}: {:?}", app.services.event_writer_load());
}

/// POSTs events in a task of its own, for requests that wait on the writer.
fn post_later(app: &TestApp, events: Value) -> tokio::task::JoinHandle<(u16, Value)> {
    let request = app
        .client
        .post(app.url("/v1/events"))
        .bearer_auth(ADMIN_TOKEN)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(events.to_string());
    tokio::spawn(async move {
        let response = request.send().await.expect("request sent");
        (response.status().as_u16(), response.json().await.expect("JSON body"))
    })
}

on_both_databases! {
    async fn ten_thousand_events_store_exactly_the_valid_new_ones(app) {
        for n in 0..CONTACTS {
            new_contact(&app, json!({ "externalId": format!("c{n}") })).await;
        }
        let early: Vec<Value> = (0..100)
            .map(|n| json!({ "contact": { "externalId": format!("c{}", n % CONTACTS) }, "type": "signed_up", "idempotencyKey": format!("early-{n}") }))
            .collect();
        let earlier = post(&app, "", json!(early)).await;
        assert_eq!(earlier["created"], 100, "{earlier:#}");

        let batch: Vec<Value> = (0..10_000).map(big_batch_item).collect();
        let answer = post(&app, "", json!(batch)).await;
        assert_eq!((answer["created"].clone(), answer["duplicates"].clone(), answer["rejected"].clone()), (json!(4_000), json!(2_000), json!(4_000)));
        let results = answer["results"].as_array().expect("results");
        assert_eq!(results.len(), 10_000);
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result["index"], i, "{result:#}");
            match i % 10 {
                0 => assert_error_result(result, "BAD_USER_INPUT", Some("type")),
                1 => assert_error_result(result, "NOT_FOUND", None),
                2 => {
                    assert_eq!(result["status"], "duplicate", "{result:#}");
                    assert_eq!(result["eventId"], earlier["results"][i % 100]["eventId"], "{result:#}");
                }
                5 => {
                    assert_eq!(result["status"], "duplicate", "{result:#}");
                    assert_eq!(result["eventId"], results[i - 1]["eventId"], "{result:#}");
                }
                6 => assert_error_result(result, "BAD_USER_INPUT", Some("occurredAt")),
                7 => assert_error_result(result, "BAD_USER_INPUT", Some("properties")),
                _ => assert_eq!(result["status"], "created", "{result:#}"),
            }
        }
        assert_eq!(event_rows(&app).await, 100 + 4_000);

        let data = app.data("{ contacts(first: 100) { nodes { activity { eventCount } } } }", json!({})).await;
        let counted: i64 = data["contacts"]["nodes"]
            .as_array()
            .expect("nodes")
            .iter()
            .map(|node| node["activity"]["eventCount"].as_i64().expect("event count"))
            .sum();
        assert_eq!(counted, 4_100);

        // Sent again, every event with a key is a duplicate; those without one are new every time.
        let again = post(&app, "", json!(batch)).await;
        assert_eq!((again["created"].clone(), again["duplicates"].clone()), (json!(3_000), json!(3_000)));
        assert_eq!(event_rows(&app).await, 100 + 4_000 + 3_000);
    }

    async fn ndjson_and_a_json_array_are_answered_alike(app) {
        new_contact(&app, json!({ "externalId": "ann", "email": "ann@example.com" })).await;
        let events = [
            json!({ "contact": { "email": "ann@example.com" }, "type": "a", "idempotencyKey": "one" }),
            json!({ "contact": { "externalId": "ann" }, "type": "b", "properties": { "total": 12.5 } }),
            json!({ "contact": { "externalId": "ann" }, "type": "c", "unknown": 1 }),
        ];
        let array = post(&app, "", json!(events)).await;
        assert_eq!(statuses(&array), ["created", "created", "rejected"]);
        assert_error_result(&array["results"][2], "BAD_USER_INPUT", Some("event"));

        // A blank line is skipped; a line that is not JSON is one rejected item.
        let lines: Vec<String> = events.iter().map(Value::to_string).collect();
        let body = format!("{}\n\n{}\nnot json\n{}\n", lines[0], lines[1], lines[2]);
        let (status, ndjson) = post_raw(&app, Some(ADMIN_TOKEN), "", &format!("{NDJSON}; charset=utf-8"), body).await;
        assert_eq!(status, 200, "{ndjson:#}");
        assert_eq!(statuses(&ndjson), ["duplicate", "created", "rejected", "rejected"]);
        assert_eq!(ndjson["results"][0]["eventId"], array["results"][0]["eventId"]);
        assert_error_result(&ndjson["results"][2], "BAD_USER_INPUT", Some("event"));
        assert_eq!(event_rows(&app).await, 3);
    }

    async fn the_api_needs_a_key_with_events_write(app) {
        let contact = new_contact(&app, json!({ "externalId": "ann" })).await;
        let events = json!([{ "contact": { "id": contact }, "type": "a" }]).to_string();

        let (status, body) = post_raw(&app, None, "", "application/json", events.clone()).await;
        assert_request_error(status, &body, 401, "UNAUTHENTICATED");
        let (status, body) = post_raw(&app, Some("rpk_not_a_key"), "", "application/json", events.clone()).await;
        assert_request_error(status, &body, 401, "UNAUTHENTICATED");
        let reader = app.api_key_secret("reader", &["profiles:read"]).await;
        let (status, body) = post_raw(&app, Some(&reader), "", "application/json", events.clone()).await;
        assert_request_error(status, &body, 403, "FORBIDDEN");

        let writer = app.api_key_secret("events", &["events:write"]).await;
        let (status, body) = post_raw(&app, Some(&writer), "", "application/json", events.clone()).await;
        assert_eq!((status, statuses(&body)), (200, vec!["created".to_owned()]), "{body:#}");

        // Creating or changing contacts needs profiles:write as well.
        let (status, body) = post_raw(&app, Some(&writer), "?createContacts=true", "application/json", events).await;
        assert_request_error(status, &body, 403, "FORBIDDEN");
        let identify = json!([
            { "contact": { "id": contact }, "type": "a", "identify": { "firstName": "Ann" } },
            { "contact": { "id": contact }, "type": "b" },
        ]);
        let (status, body) = post_raw(&app, Some(&writer), "", "application/json", identify.to_string()).await;
        assert_eq!(status, 200, "{body:#}");
        assert_error_result(&body["results"][0], "FORBIDDEN", None);
        assert_eq!(body["results"][1]["status"], "created");
        assert_eq!(contact_by_external_id(&app, "ann").await["firstName"], Value::Null);
        assert_eq!(event_rows(&app).await, 2);
    }

    async fn more_than_ten_thousand_events_are_refused_whole(app) {
        let contact = new_contact(&app, json!({ "externalId": "ann" })).await;
        let events: Vec<Value> = (0..10_001).map(|_| json!({ "contact": { "id": contact }, "type": "a" })).collect();
        let (status, body) = post_raw(&app, Some(ADMIN_TOKEN), "", "application/json", json!(events).to_string()).await;
        assert_request_error(status, &body, 413, "BAD_USER_INPUT");
        assert!(body["error"]["message"].as_str().expect("message").contains("10000"), "{body:#}");
        assert_eq!(event_rows(&app).await, 0);
    }

    async fn malformed_requests_are_refused_with_a_json_error(app) {
        for (content_type, body, query, status) in [
            ("application/json", "[{\"contact\": ", "", 400),
            ("application/json", "{\"contact\": {\"externalId\": \"ann\"}, \"type\": \"a\"}", "", 400),
            (NDJSON, "\u{fffd}", "?createContacts=maybe", 400),
            ("application/json", "[]", "?limit=5", 400),
            ("text/plain", "[]", "", 415),
        ] {
            let (answered, error) = post_raw(&app, Some(ADMIN_TOKEN), query, content_type, body.to_owned()).await;
            assert_request_error(answered, &error, status, "BAD_USER_INPUT");
        }
        let (status, body) = post_raw(&app, Some(ADMIN_TOKEN), "", "application/json", "[]".to_owned()).await;
        assert_eq!((status, body["results"].clone()), (200, json!([])));
    }

    async fn unknown_contacts_are_created_only_when_asked(app) {
        let events = json!([
            { "contact": { "email": "new@example.com" }, "type": "a" },
            { "contact": { "externalId": "x-1" }, "type": "a" },
            { "contact": { "id": uuid::Uuid::now_v7().to_string() }, "type": "a" },
            { "contact": { "email": "new@example.com" }, "type": "b" },
        ]);
        let refused = post(&app, "", events.clone()).await;
        assert_eq!(statuses(&refused), ["rejected"; 4]);
        assert_error_result(&refused["results"][0], "NOT_FOUND", None);
        assert_eq!(app.data("{ contacts { nodes { id } } }", json!({})).await["contacts"]["nodes"], json!([]));

        let created = post(&app, "?createContacts=true", events).await;
        assert_eq!(statuses(&created), ["created", "created", "rejected", "created"]);
        assert_error_result(&created["results"][2], "NOT_FOUND", None);
        let data = app.data("{ contacts { nodes { email externalId activity { eventCount lastEventType } } } }", json!({})).await;
        assert_eq!(
            data["contacts"]["nodes"],
            json!([
                { "email": "new@example.com", "externalId": null, "activity": { "eventCount": 2, "lastEventType": "b" } },
                { "email": null, "externalId": "x-1", "activity": { "eventCount": 1, "lastEventType": "a" } },
            ])
        );
    }

    async fn events_carry_contact_changes_and_a_bad_change_rejects_its_event_alone(app) {
        app.data("mutation { defineField(input: { key: \"tier\", label: \"Tier\", type: STRING }) { key } }", json!({})).await;
        new_contact(&app, json!({ "externalId": "ann", "email": "ann@example.com" })).await;
        let answer = post(&app, "?createContacts=true", json!([
            { "contact": { "externalId": "ann" }, "type": "a", "idempotencyKey": "i-1",
              "identify": { "firstName": "Ann", "attributes": { "tier": "gold" } } },
            { "contact": { "externalId": "ann" }, "type": "b", "identify": { "attributes": { "nope": 1 } } },
            { "contact": { "externalId": "ann" }, "type": "c", "identify": { "email": "not an address" } },
            { "contact": { "externalId": "ann" }, "type": "d", "identify": { "favouriteColour": "red" } },
            { "contact": { "externalId": "bob" }, "type": "e", "identify": { "email": "bob@example.com", "firstName": "Bob" } },
            { "contact": { "externalId": "cy" }, "type": "f", "identify": { "externalId": "someone-else" } },
        ])).await;
        assert_eq!(statuses(&answer), ["created", "rejected", "rejected", "rejected", "created", "rejected"]);
        assert_error_result(&answer["results"][1], "BAD_USER_INPUT", Some("identify.attributes.nope"));
        assert_error_result(&answer["results"][2], "BAD_USER_INPUT", Some("identify.email"));
        assert_error_result(&answer["results"][3], "BAD_USER_INPUT", Some("identify.favouriteColour"));
        assert_error_result(&answer["results"][5], "BAD_USER_INPUT", Some("identify.externalId"));
        let ann = contact_by_external_id(&app, "ann").await;
        assert_eq!((ann["firstName"].clone(), ann["email"].clone(), ann["attributes"].clone()), (json!("Ann"), json!("ann@example.com"), json!({ "tier": "gold" })));
        assert_eq!(ann["activity"]["eventCount"], 1);
        let bob = contact_by_external_id(&app, "bob").await;
        assert_eq!((bob["email"].clone(), bob["firstName"].clone()), (json!("bob@example.com"), json!("Bob")));
        assert_eq!(contact_by_external_id(&app, "cy").await, Value::Null);

        // A repeat of a stored event changes nothing, not even its contact.
        let repeat = post(&app, "", json!([
            { "contact": { "externalId": "ann" }, "type": "a", "idempotencyKey": "i-1", "identify": { "firstName": "Changed" } },
        ])).await;
        assert_eq!(repeat["results"][0]["eventId"], answer["results"][0]["eventId"]);
        assert_eq!(statuses(&repeat), ["duplicate"]);
        assert_eq!(contact_by_external_id(&app, "ann").await["firstName"], "Ann");
        assert_eq!(event_rows(&app).await, 2);
    }

    async fn an_event_stored_by_another_request_meanwhile_takes_back_the_contact_change_it_carried(app) {
        let ann = new_contact(&app, json!({ "externalId": "ann", "firstName": "Ann" })).await;
        let hold = hold_the_writer(&app).await;
        let request = post_later(&app, json!([
            { "contact": { "id": ann }, "type": "order.placed", "idempotencyKey": "order-1", "identify": { "firstName": "Changed" } },
        ]));
        // The request found no event with its key and is now held up writing its own.
        if app.backend == Backend::Postgres {
            // Only this test's database: the server is shared with tests running beside it.
            let waiting = "SELECT COUNT(*) AS n FROM pg_locks WHERE NOT granted \
                           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())";
            let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
            while count(&app, waiting).await == 0 {
                assert!(tokio::time::Instant::now() < deadline, "the request never waited for the lock");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        } else {
            // SQLite has no lock table to watch; the request reads before it waits for the writer.
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        // Meanwhile another request stores an event with that key.
        let stored = Event {
            id: uuid::Uuid::now_v7(),
            contact_id: ContactId::from_uuid(uuid::Uuid::parse_str(&ann).unwrap()),
            event_type: EventType::parse("order.placed").unwrap(),
            properties: EventProperties::parse(json!({})).unwrap(),
            occurred_at: chrono::Utc::now(),
            received_at: chrono::Utc::now(),
            source: Key::parse("api").unwrap(),
            idempotency_key: Some(IdempotencyKey::parse("order-1").unwrap()),
        };
        rapport::store::events::insert_all(&hold, &[&stored]).await.expect("insert");
        hold.commit().await.expect("commit");

        let (status, answer) = request.await.expect("request");
        assert_eq!((status, statuses(&answer)), (200, vec!["duplicate".to_owned()]), "{answer:#}");
        assert_eq!(answer["results"][0]["eventId"], stored.id.to_string());
        assert_eq!(contact_by_external_id(&app, "ann").await["firstName"], "Ann", "a duplicate changes no contact");
        assert_eq!(event_rows(&app).await, 1);
    }

    async fn an_event_whose_namesake_was_refused_is_stored_with_its_own_changes(app) {
        // The first is refused when its contact is written; the second, a corrected retry with
        // the same idempotency key in the same request, stands on its own. The last repeats an
        // event that writes no contact: it is a duplicate, and changes nothing either.
        new_contact(&app, json!({ "externalId": "eve", "firstName": "Eve" })).await;
        let answer = post(&app, "?createContacts=true", json!([
            { "contact": { "externalId": "dee" }, "type": "signup", "idempotencyKey": "k-1", "identify": { "attributes": { "nope": 1 } } },
            { "contact": { "externalId": "dee" }, "type": "signup", "idempotencyKey": "k-1", "identify": { "firstName": "Dee" } },
            { "contact": { "externalId": "dee" }, "type": "signup", "idempotencyKey": "k-1", "identify": { "firstName": "Later" } },
            { "contact": { "externalId": "eve" }, "type": "visit", "idempotencyKey": "k-2" },
            { "contact": { "externalId": "eve" }, "type": "visit", "idempotencyKey": "k-2", "identify": { "firstName": "Mallory" } },
        ])).await;
        assert_eq!(statuses(&answer), ["rejected", "created", "duplicate", "created", "duplicate"], "{answer:#}");
        assert_error_result(&answer["results"][0], "BAD_USER_INPUT", Some("identify.attributes.nope"));
        assert_eq!(answer["results"][2]["eventId"], answer["results"][1]["eventId"]);
        let dee = contact_by_external_id(&app, "dee").await;
        assert_eq!(dee["firstName"], "Dee", "a duplicate changes nothing: {dee:#}");
        assert_eq!(dee["activity"]["eventCount"], 1);
        assert_eq!(contact_by_external_id(&app, "eve").await["firstName"], "Eve");
        // Without createContacts, an event naming no contact is rejected: it takes no key either.
        let answer = post(&app, "", json!([
            { "contact": { "externalId": "nobody" }, "type": "visit", "idempotencyKey": "k-3" },
            { "contact": { "externalId": "eve" }, "type": "visit", "idempotencyKey": "k-3", "identify": { "lastName": "Smith" } },
        ])).await;
        assert_eq!(statuses(&answer), ["rejected", "created"], "{answer:#}");
        assert_eq!(contact_by_external_id(&app, "eve").await["lastName"], "Smith");
        // Nor do changes for a contact that does not exist create it.
        let answer = post(&app, "", json!([
            { "contact": { "externalId": "ghost" }, "type": "visit", "identify": { "firstName": "Ghost" } },
        ])).await;
        assert_error_result(&answer["results"][0], "NOT_FOUND", None);
        assert_eq!(contact_by_external_id(&app, "ghost").await, Value::Null);
        assert_eq!(event_rows(&app).await, 3);
    }

    async fn last_seen_follows_the_newest_event_right_after_the_response(app) {
        let id = new_contact(&app, json!({ "externalId": "ann" })).await;
        assert_eq!(contact_by_external_id(&app, "ann").await["activity"], Value::Null);
        post(&app, "", json!([
            { "contact": { "id": id }, "type": "opened", "occurredAt": "2026-01-02T10:00:00Z" },
            { "contact": { "id": id }, "type": "clicked", "occurredAt": "2026-01-03T10:00:00+02:00" },
        ])).await;
        let activity = contact_by_external_id(&app, "ann").await["activity"].clone();
        assert_eq!(activity, json!({ "lastSeenAt": "2026-01-03T08:00:00+00:00", "lastEventType": "clicked", "eventCount": 2 }));

        // An older event arriving late counts, but does not move "last seen" back.
        post(&app, "", json!([{ "contact": { "externalId": "ann" }, "type": "viewed", "occurredAt": "2026-01-01T00:00:00Z" }])).await;
        let activity = contact_by_external_id(&app, "ann").await["activity"].clone();
        assert_eq!(activity, json!({ "lastSeenAt": "2026-01-03T08:00:00+00:00", "lastEventType": "clicked", "eventCount": 3 }));

        let before = chrono::Utc::now();
        post(&app, "", json!([{ "contact": { "id": id }, "type": "purchased" }])).await;
        let listed = app.data("{ contacts { nodes { activity { lastSeenAt lastEventType eventCount } } } }", json!({})).await;
        let activity = &listed["contacts"]["nodes"][0]["activity"];
        assert_eq!((activity["lastEventType"].clone(), activity["eventCount"].clone()), (json!("purchased"), json!(4)));
        let seen = chrono::DateTime::parse_from_rfc3339(activity["lastSeenAt"].as_str().expect("time")).expect("RFC 3339");
        assert!(seen >= before - chrono::Duration::seconds(1), "{activity:#}");
    }

    async fn requests_that_wait_for_the_writer_join_the_group_being_written_each_with_its_own_answer(app) {
        let id = new_contact(&app, json!({ "externalId": "ann" })).await;
        let event = |key: &str| json!({ "contact": { "id": id }, "type": "page.viewed", "idempotencyKey": key });
        let writers = parallel_writers(app.services.database().backend());
        let hold = hold_the_writer(&app).await;
        let mut firsts = Vec::new();
        for n in 0..writers {
            firsts.push(post_later(&app, json!([event(&format!("first-{n}"))])));
            until_writer_has(&app, n + 1, 0).await;
        }
        // Both name the key "pair", which is stored nowhere yet: the group stores it once.
        let second = post_later(&app, json!([event("pair"), event("second")]));
        until_writer_has(&app, writers, 1).await;
        let third = post_later(&app, json!([event("third"), event("pair")]));
        until_writer_has(&app, writers, 2).await;
        let groups_before = app.services.event_groups_written();
        hold.rollback().await.expect("rollback");

        for first in firsts {
            let (status, first) = first.await.expect("first request");
            assert_eq!((status, statuses(&first)), (200, vec!["created".to_owned()]), "{first:#}");
        }
        let (second, third) = (second.await.expect("second request").1, third.await.expect("third request").1);
        assert_eq!(statuses(&second), ["created", "created"], "{second:#}");
        assert_eq!(statuses(&third), ["created", "duplicate"], "{third:#}");
        assert_eq!(third["results"][1]["eventId"], second["results"][0]["eventId"]);
        assert_eq!((third["created"].clone(), third["duplicates"].clone()), (json!(1), json!(1)));
        let groups = app.services.event_groups_written() - groups_before;
        // They arrived while the first groups waited to be written, so they joined those groups
        // instead of waiting for a group of their own.
        assert_eq!(groups, writers as u64, "the other two requests joined the groups being written");
        assert_eq!(event_rows(&app).await, writers as i64 + 3);
        let audited = count(&app, "SELECT COUNT(*) AS n FROM audit_entry WHERE action = 'events.tracked'").await;
        assert_eq!(audited, writers as i64 + 2, "an audit entry per request");
        assert_eq!(contact_by_external_id(&app, "ann").await["activity"]["eventCount"], writers + 3);
    }

    async fn a_contact_deleted_while_its_events_waited_rejects_them_and_no_other_request(app) {
        let ann = new_contact(&app, json!({ "externalId": "ann" })).await;
        let bob = new_contact(&app, json!({ "externalId": "bob" })).await;
        let event = |id: &str| json!({ "contact": { "id": id }, "type": "page.viewed" });
        let writers = parallel_writers(app.services.database().backend());
        let hold = hold_the_writer(&app).await;
        let mut firsts = Vec::new();
        for n in 0..writers {
            firsts.push(post_later(&app, json!([event(&ann)])));
            until_writer_has(&app, n + 1, 0).await;
        }
        let for_bob = post_later(&app, json!([event(&bob), event(&bob)]));
        let for_ann = post_later(&app, json!([event(&ann)]));
        until_writer_has(&app, writers, 2).await;
        // Bob is deleted after both requests found him, before their group is written.
        let backend = app.services.database().backend();
        let sql = match backend {
            sea_orm::DbBackend::Postgres => "DELETE FROM contact WHERE id = $1",
            _ => "DELETE FROM contact WHERE id = ?",
        };
        let bob_id = uuid::Uuid::parse_str(&bob).expect("uuid");
        let delete = Statement::from_sql_and_values(backend, sql, [bob_id.into()]);
        assert_eq!(hold.execute_raw(delete).await.expect("delete").rows_affected(), 1);
        hold.commit().await.expect("commit");

        for first in firsts {
            assert_eq!(statuses(&first.await.expect("first request").1), ["created"]);
        }
        let (status, for_bob) = for_bob.await.expect("request for bob");
        assert_eq!(status, 200, "{for_bob:#}");
        for result in for_bob["results"].as_array().expect("results") {
            assert_error_result(result, "NOT_FOUND", None);
        }
        assert_eq!(statuses(&for_ann.await.expect("request for ann").1), ["created"]);
        assert_eq!(event_rows(&app).await, writers as i64 + 1);
        assert_eq!(contact_by_external_id(&app, "ann").await["activity"]["eventCount"], writers + 1);
    }
}
