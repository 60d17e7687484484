//! The contact's timeline on SQLite, where `event_timeline` holds the events up to its progress
//! and later ones (the tail) are read from `event` itself: reads, pages, deletion and erasure see
//! both sides as one, and the migration that made this layout carries stored events over (and
//! back). The servers here index only when a test says so; on PostgreSQL, which indexes each
//! event as it is stored, the same tests check that nothing differs.

use migration::{Migrator, MigratorTrait};
use rapport::{
    startup::ServeOptions,
    store::events::{index_timeline, unindexed},
};
use rapport_e2e::{Backend, TestApp, spawn_app_with_options};
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};
use uuid::Uuid;

const TRACK: &str = "mutation($events: [TrackEventInput!]!) { trackEvents(events: $events) { status eventId } }";

const TIMELINE: &str = "query($id: ID!, $type: String, $first: Int, $after: String, $last: Int, $before: String) {
    contact(by: { id: $id }) {
        events(type: $type, first: $first, after: $after, last: $last, before: $before) {
            pageInfo { hasPreviousPage hasNextPage startCursor endCursor }
            edges { node { id } }
        }
    }
}";

/// `name::sqlite` and `name::postgres`, each running `name(backend)` (the servers here are started
/// with options, which `on_both_databases!` does not take).
macro_rules! on_both_backends {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(super::Backend::Sqlite).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(super::Backend::Postgres).await;
            }
        }
    };
}

async fn manual_app(backend: Backend) -> TestApp {
    spawn_app_with_options(backend, ServeOptions { manual_event_timeline: true, ..ServeOptions::default() }).await
}

async fn new_contact(app: &TestApp, email: &str) -> String {
    app.upsert_contact(json!({ "email": email })).await["id"].as_str().expect("contact id").to_owned()
}

/// Tracks one event per (contact, type, day of June 2024); their ids in that order.
async fn track(app: &TestApp, events: &[(&str, &str, u32)]) -> Vec<String> {
    let events: Vec<Value> = events
        .iter()
        .map(|(contact, event_type, day)| {
            json!({ "contact": { "id": contact }, "type": event_type, "occurredAt": format!("2024-06-{day:02}T08:00:00Z") })
        })
        .collect();
    let data = app.data(TRACK, json!({ "events": events })).await;
    data["trackEvents"]
        .as_array()
        .expect("results")
        .iter()
        .map(|result| {
            assert_eq!(result["status"], "CREATED", "{data:#}");
            result["eventId"].as_str().expect("event id").to_owned()
        })
        .collect()
}

/// Indexes the whole tail; how many events that took.
async fn index_all(app: &TestApp) -> u64 {
    index_timeline(app.services.database()).await.expect("index the timeline")
}

async fn count(app: &TestApp, sql: &str, contact: Option<&str>) -> i64 {
    let values: Vec<sea_orm::Value> = contact.map(|id| Uuid::parse_str(id).expect("uuid").into()).into_iter().collect();
    let statement = Statement::from_sql_and_values(app.services.database().backend(), sql, values);
    let row = app.services.database().connection().query_one_raw(statement).await.expect("count").expect("a row");
    row.try_get_by_index(0).expect("a count")
}

/// Events of the tail: stored but not yet in `event_timeline` (SQLite only).
async fn tail(app: &TestApp) -> u64 {
    unindexed(app.services.database().connection()).await.expect("count the tail")
}

/// The contact's event ids, newest first, read in pages of `size` (forward with `first`, or
/// backward with `last`, then put newest first), with the type filter if any.
async fn read_pages(app: &TestApp, contact: &str, event_type: Option<&str>, size: i64, forward: bool) -> Vec<String> {
    let mut pages: Vec<Vec<String>> = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let variables = if forward {
            json!({ "id": contact, "type": event_type, "first": size, "after": cursor })
        } else {
            json!({ "id": contact, "type": event_type, "last": size, "before": cursor })
        };
        let connection = app.data(TIMELINE, variables).await["contact"]["events"].clone();
        let ids = connection["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .map(|edge| edge["node"]["id"].as_str().expect("id").to_owned())
            .collect();
        pages.push(ids);
        let (more, next) = if forward { ("hasNextPage", "endCursor") } else { ("hasPreviousPage", "startCursor") };
        if connection["pageInfo"][more] != true {
            break;
        }
        cursor = connection["pageInfo"][next].clone();
    }
    if !forward {
        pages.reverse();
    }
    pages.concat()
}

/// Ada's events on odd days are indexed, those on even days are the tail; Grace has one of each.
/// Returns Ada's and Grace's ids and their event ids newest first.
async fn split_timeline(app: &TestApp) -> (String, String, Vec<String>, Vec<String>) {
    let ada = new_contact(app, "ada@example.com").await;
    let grace = new_contact(app, "grace@example.com").await;
    let kind = |day: u32| if day.is_multiple_of(3) { "order.completed" } else { "page.viewed" };
    let odd: Vec<(&str, &str, u32)> = [1, 3, 5, 7, 9, 11]
        .into_iter()
        .map(|day| (ada.as_str(), kind(day), day))
        .chain([(grace.as_str(), "page.viewed", 1)])
        .collect();
    let even: Vec<(&str, &str, u32)> = [2, 4, 6, 8, 10, 12]
        .into_iter()
        .map(|day| (ada.as_str(), kind(day), day))
        .chain([(grace.as_str(), "page.viewed", 2)])
        .collect();
    let odd_ids = track(app, &odd).await;
    let indexed = index_all(app).await;
    let even_ids = track(app, &even).await;
    if app.backend == Backend::Sqlite {
        assert_eq!(indexed, 7, "the first batch went into the timeline");
        assert_eq!(tail(app).await, 7, "the second batch is the tail");
    } else {
        assert_eq!(indexed, 0, "PostgreSQL indexes each event as it is stored");
    }
    // Newest first: day 12 (even[5]), day 11 (odd[5]), …, day 1 (odd[0]).
    let ada_events = (0..6).rev().flat_map(|n| [even_ids[n].clone(), odd_ids[n].clone()]).collect();
    let grace_events = vec![even_ids[6].clone(), odd_ids[6].clone()];
    (ada, grace, ada_events, grace_events)
}

async fn indexed_events_and_the_tail_read_as_one_timeline(backend: Backend) {
    let app = manual_app(backend).await;
    let (ada, grace, ada_events, grace_events) = split_timeline(&app).await;

    for size in [1, 5, 12, 100] {
        assert_eq!(read_pages(&app, &ada, None, size, true).await, ada_events, "forward in pages of {size}");
        assert_eq!(read_pages(&app, &ada, None, size, false).await, ada_events, "backward in pages of {size}");
    }
    assert_eq!(read_pages(&app, &grace, None, 1, true).await, grace_events, "each contact sees only its own");

    // Days divisible by 3 are orders: 12, 9, 6, 3, two on each side.
    let orders: Vec<String> = [0, 3, 6, 9].iter().map(|&n| ada_events[n].clone()).collect();
    assert_eq!(read_pages(&app, &ada, Some("order.completed"), 1, true).await, orders);
    assert_eq!(read_pages(&app, &ada, Some("order.completed"), 3, false).await, orders);

    let export = app.data("query($id: ID!) { contactExport(id: $id) }", json!({ "id": ada })).await;
    let exported: Vec<String> = export["contactExport"]["events"]
        .as_array()
        .expect("exported events")
        .iter()
        .map(|event| event["id"].as_str().expect("id").to_owned())
        .collect();
    let oldest_first: Vec<String> = ada_events.iter().rev().cloned().collect();
    assert_eq!(exported, oldest_first, "the export holds both sides, oldest first");

    if backend == Backend::Sqlite {
        assert_eq!(index_all(&app).await, 7);
        assert_eq!(tail(&app).await, 0);
        assert_eq!(read_pages(&app, &ada, None, 5, true).await, ada_events, "the same once all is indexed");
        assert_eq!(index_all(&app).await, 0, "nothing is indexed twice");
    }
}

/// Events at one instant are ordered by id, on either side of the progress and across it.
async fn events_at_one_instant_page_across_the_progress_without_gaps_or_repeats(backend: Backend) {
    let app = manual_app(backend).await;
    let ada = new_contact(&app, "ada@example.com").await;
    let same_day: Vec<(&str, &str, u32)> = (0..4).map(|_| (ada.as_str(), "tick", 1)).collect();
    let mut expected = track(&app, &same_day).await;
    index_all(&app).await;
    expected.extend(track(&app, &same_day[..3]).await);
    // Newest first means the highest id first when the instants tie.
    expected.sort();
    expected.reverse();
    for size in [1, 2, 3, 7] {
        assert_eq!(read_pages(&app, &ada, None, size, true).await, expected, "forward in pages of {size}");
        assert_eq!(read_pages(&app, &ada, None, size, false).await, expected, "backward in pages of {size}");
    }
}

on_both_backends!(events_at_one_instant_page_across_the_progress_without_gaps_or_repeats);

on_both_backends!(indexed_events_and_the_tail_read_as_one_timeline);

async fn deleting_or_erasing_a_contact_removes_its_events_on_both_sides(backend: Backend) {
    let app = manual_app(backend).await;
    let (ada, grace, _, grace_events) = split_timeline(&app).await;
    let events_of = match backend {
        Backend::Sqlite => "SELECT count(*) FROM event WHERE contact_id = ?",
        Backend::Postgres => "SELECT count(*) FROM event WHERE contact_id = $1",
    };
    assert_eq!(count(&app, events_of, Some(&ada)).await, 12);

    let erased =
        app.data("mutation($id: ID!) { eraseContact(id: $id) { erased { events } } }", json!({ "id": ada })).await;
    assert_eq!(erased["eraseContact"]["erased"]["events"], 12, "{erased:#}");
    assert_eq!(count(&app, events_of, Some(&ada)).await, 0);

    let lin = new_contact(&app, "lin@example.com").await;
    track(&app, &[(lin.as_str(), "page.viewed", 1)]).await;
    index_all(&app).await;
    track(&app, &[(lin.as_str(), "page.viewed", 2)]).await;
    assert_eq!(count(&app, events_of, Some(&lin)).await, 2);
    app.data("mutation($id: ID!) { deleteContact(id: $id) { deletedContactId } }", json!({ "id": lin })).await;
    assert_eq!(count(&app, events_of, Some(&lin)).await, 0, "a deleted contact's events go with it");

    if backend == Backend::Sqlite {
        let timeline_of = "SELECT count(*) FROM event_timeline WHERE contact_id = ?";
        assert_eq!(count(&app, timeline_of, Some(&ada)).await, 0);
        assert_eq!(count(&app, timeline_of, Some(&lin)).await, 0);
        assert_eq!(count(&app, timeline_of, Some(&grace)).await, 2, "Grace's events stay in the timeline");
    }
    assert_eq!(read_pages(&app, &grace, None, 10, true).await, grace_events, "Grace keeps both of hers");
}

on_both_backends!(deleting_or_erasing_a_contact_removes_its_events_on_both_sides);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migration_carries_stored_events_into_the_timeline_and_back() {
    let app = manual_app(Backend::Sqlite).await;
    let (ada, _, ada_events, _) = split_timeline(&app).await;
    let connection = sea_orm::Database::connect(app.database_url.as_str()).await.expect("connect");
    let has = |name: &'static str| {
        let connection = connection.clone();
        async move {
            let sql = "SELECT count(*) FROM sqlite_master WHERE name = ?";
            let statement = Statement::from_sql_and_values(DbBackend::Sqlite, sql, [name.into()]);
            let row = connection.query_one_raw(statement).await.expect("schema").expect("a row");
            row.try_get_by_index::<i64>(0).expect("count") == 1
        }
    };

    // The timeline's migration and those after it.
    Migrator::down(&connection, Some(rapport_e2e::migrations_from("m20261206_000001_event_timeline")))
        .await
        .expect("migrate down");
    assert!(has("event_timeline_idx").await && has("event_type_idx").await, "the indexes on event are back");
    assert!(!has("event_timeline").await);
    let kept = connection
        .query_one_raw(Statement::from_string(DbBackend::Sqlite, "SELECT count(*) FROM event"))
        .await
        .expect("count")
        .expect("a row");
    assert_eq!(kept.try_get_by_index::<i64>(0).expect("count"), 14, "every event kept");

    Migrator::up(&connection, None).await.expect("migrate up");
    assert!(!has("event_timeline_idx").await && !has("event_type_idx").await && has("event_timeline").await);
    assert_eq!(tail(&app).await, 0, "the migration indexes every stored event");
    assert_eq!(count(&app, "SELECT count(*) FROM event_timeline", None).await, 14);
    assert_eq!(read_pages(&app, &ada, None, 5, true).await, ada_events);
    let new = track(&app, &[(ada.as_str(), "page.viewed", 13)]).await;
    assert_eq!(read_pages(&app, &ada, None, 1, true).await[0], new[0], "new events join the tail");
    connection.close().await.ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeline_page_reads_the_contacts_part_of_each_side_and_never_a_whole_table() {
    use rapport::{
        domain::{
            contact::ContactId,
            event::EventType,
            page::{Direction, PageRequest},
        },
        store::events::timeline_on_sqlite,
    };
    let app = manual_app(Backend::Sqlite).await;
    let event_type = EventType::parse("order.completed").expect("type");
    let cursor = Some((chrono::Utc::now(), Uuid::new_v4()));
    for (direction, after, before) in
        [(Direction::Forward, None, None), (Direction::Forward, cursor, None), (Direction::Backward, None, cursor)]
    {
        let request = PageRequest { after, before, limit: 20, direction };
        for filter in [None, Some(&event_type)] {
            let plan = app.query_plan(|_| timeline_on_sqlite(ContactId::generate(), filter, &request)).await;
            let has = |step: &str| plan.iter().any(|line| line.starts_with(step));
            assert!(has("SEARCH t USING PRIMARY KEY (contact_id=?"), "{plan:#?}");
            assert!(has("SEARCH e USING INDEX sqlite_autoindex_event_1 (id=?)"), "{plan:#?}");
            assert!(has("SEARCH event USING INTEGER PRIMARY KEY (rowid>?)"), "the tail by seq: {plan:#?}");
            assert!(!plan.iter().any(|line| line == "SCAN event" || line.starts_with("SCAN event ")), "{plan:#?}");
            if after.is_some() || before.is_some() {
                assert!(has("SEARCH t USING PRIMARY KEY (contact_id=? AND (occurred_at,event_id)"), "{plan:#?}");
            }
        }
    }
}
