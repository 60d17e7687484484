//! The NATS JetStream consumer end to end, against a real NATS server: events published to the
//! subject land on their contacts once and are acknowledged, repeated idempotency keys and bad
//! messages are settled without blocking the stream, messages delivered again after they were
//! stored are stored once, the consumer carries on after the broker is killed and restarted, and
//! a Rapport killed mid-stream stores every event exactly once after its restart.

use std::{collections::BTreeSet, time::Duration};

use rapport_e2e::{
    Settings, TestApp,
    nats::{NatsServer, TestStream, unique_settings},
    on_both_databases, respawn,
};
use sea_orm::{ConnectionTrait, Database, Statement};
use secrecy::ExposeSecret;
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::rapport_binary;

/// Guards against a hung consumer, not a performance expectation.
const PATIENCE: Duration = Duration::from_secs(90);

fn consuming(settings: &mut Settings) {
    settings.nats = Some(unique_settings());
}

/// Runs one SQL query on the test database and returns its rows' first column as text.
async fn column(app: &TestApp, sql: &str) -> Vec<String> {
    let db = Database::connect(&app.database_url).await.expect("test database");
    let rows = db.query_all_raw(Statement::from_string(db.get_database_backend(), sql)).await.expect("query");
    db.close().await.ok();
    rows.iter().map(|row| row.try_get_by_index::<String>(0).expect("a text column")).collect()
}

async fn stored_events(app: &TestApp) -> i64 {
    let db = Database::connect(&app.database_url).await.expect("test database");
    let statement = Statement::from_string(db.get_database_backend(), "SELECT COUNT(*) AS n FROM event");
    let row = db.query_one_raw(statement).await.expect("count query").expect("one row");
    db.close().await.ok();
    row.try_get::<i64>("", "n").expect("a count")
}

/// The `checks.nats` part of `/readyz`.
async fn consumer_status(app: &TestApp) -> Value {
    let ready: Value = app.client.get(app.url("/readyz")).send().await.unwrap().json().await.unwrap();
    ready["checks"]["nats"].clone()
}

async fn wait_for_status(app: &TestApp, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let status = consumer_status(app).await;
        if done(&status) {
            return status;
        }
        assert!(tokio::time::Instant::now() < deadline, "the consumer did not get there: {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn event_count(app: &TestApp, external_id: &str) -> i64 {
    let query = "query($id: String!) { contact(by: { externalId: $id }) { activity { eventCount } } }";
    let data = app.data(query, json!({ "id": external_id })).await;
    data["contact"]["activity"]["eventCount"].as_i64().unwrap_or(0)
}

on_both_databases! {
    #[settings(consuming)]
    async fn published_events_are_stored_once_acknowledged_and_bad_messages_are_skipped(app) {
        let settings = app.settings.nats.clone().expect("consumer configured");
        let stream = TestStream::connect(settings).await;
        // Rapport makes the stream itself when none covers the subject.
        let status = wait_for_status(&app, |status| status["status"] == "consuming").await;
        assert_eq!(status["stored"], 0);
        app.upsert_contact(json!({ "externalId": "ann" })).await;
        app.upsert_contact(json!({ "externalId": "bob" })).await;

        let event = |contact: &str, extra: Value| {
            let mut event = json!({ "contact": { "externalId": contact }, "type": "page.viewed" });
            event.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
            event.to_string()
        };
        stream
            .publish_all([
                (None, event("ann", json!({ "properties": { "path": "/" } }))),
                (None, event("ann", json!({ "type": "order.completed", "idempotencyKey": "order-1" }))),
                // The same order again: stored once.
                (None, event("ann", json!({ "type": "order.completed", "idempotencyKey": "order-1" }))),
                (None, "{ not json".to_owned()),
                (None, event("nobody", json!({}))),
                (None, event("bob", json!({ "type": "not a type!" }))),
                (Some("m-1".to_owned()), event("bob", json!({}))),
            ])
            .await;

        let status = wait_for_status(&app, |status| status["stored"] == 3 && status["skipped"] == 3).await;
        assert_eq!(status["duplicates"], 1, "{status}");
        stream.wait_until_all_acknowledged(PATIENCE).await;
        // Committed, so visible to GraphQL (and segments) at once.
        assert_eq!(event_count(&app, "ann").await, 2);
        assert_eq!(event_count(&app, "bob").await, 1);
        assert_eq!(stored_events(&app).await, 3);
        let keys = column(&app, "SELECT idempotency_key FROM event WHERE source = 'nats' ORDER BY idempotency_key").await;
        assert_eq!(keys.len(), 3, "{keys:?}");
        assert!(keys.contains(&"nats-msg-id:m-1".to_owned()), "{keys:?}");
        assert!(keys.contains(&"order-1".to_owned()), "{keys:?}");
        assert!(keys.iter().any(|key| key.starts_with(&format!("nats:{}:", stream.settings.stream))), "{keys:?}");
        let actors = column(&app, "SELECT actor_kind || ':' || actor_id FROM audit_entry WHERE action = 'events.tracked'").await;
        assert!(!actors.is_empty());
        assert!(actors.iter().all(|actor| *actor == format!("stream:{}", stream.settings.stream)), "{actors:?}");
    }

    #[settings(consuming)]
    async fn messages_delivered_again_after_they_were_stored_are_stored_once(app) {
        // What a crash between a commit and its acknowledgement leaves: the broker delivers
        // stored messages again. A second durable consumer on the same stream reads all of them
        // again from the start, whatever key they carry (derived from the stream sequence, their
        // own, or a publisher's Nats-Msg-Id).
        let settings = app.settings.nats.clone().expect("consumer configured");
        wait_for_status(&app, |status| status["status"] == "consuming").await;
        app.upsert_contact(json!({ "externalId": "ann" })).await;
        let stream = TestStream::connect(settings.clone()).await;
        let messages = (0..300).map(|n| {
            let mut event = json!({ "contact": { "externalId": "ann" }, "type": "page.viewed", "properties": { "n": n } });
            if n % 3 == 1 {
                event["idempotencyKey"] = json!(format!("own-{n}"));
            }
            ((n % 3 == 2).then(|| format!("msg-{n}")), event.to_string())
        });
        stream.publish_all(messages).await;
        wait_for_status(&app, |status| status["stored"] == 300).await;
        stream.wait_until_all_acknowledged(PATIENCE).await;

        let again = rapport::config::NatsSettings { consumer: "rapport-again".to_owned(), ..settings };
        let second = respawn(&app, Settings { nats: Some(again.clone()), ..app.settings.clone() }).await;
        let status = wait_for_status(&second, |status| status["duplicates"] == 300).await;
        assert_eq!(status["stored"], 0, "{status}");
        TestStream::connect(again).await.wait_until_all_acknowledged(PATIENCE).await;
        assert_eq!(stored_events(&app).await, 300, "each event stored once");
        assert_eq!(event_count(&app, "ann").await, 300, "contact activity counts each event once");
    }

    async fn the_consumer_carries_on_after_the_broker_is_killed_and_restarted(app) {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = NatsServer::start(None, dir.path()).await;
        let mut nats = unique_settings();
        nats.url = SecretString::from(broker.url());
        let consumer = respawn(&app, Settings { nats: Some(nats.clone()), ..app.settings.clone() }).await;
        app.upsert_contact(json!({ "externalId": "ann" })).await;
        wait_for_status(&consumer, |status| status["status"] == "consuming").await;
        let event = |n: usize| (None, json!({ "contact": { "externalId": "ann" }, "type": "page.viewed", "properties": { "n": n } }).to_string());
        TestStream::connect(nats.clone()).await.publish_all((0..100).map(event)).await;
        wait_for_status(&consumer, |status| status["stored"] == 100).await;

        broker.kill().await;
        let broker = NatsServer::start(Some(broker.port), &broker.dir).await;
        // The stream and the consumer's position were on the broker's disk; a new connection
        // publishes the rest.
        let stream = TestStream::connect(nats.clone()).await;
        // JetStream reads its streams back from disk after it starts listening.
        let (_, first_after_restart) = event(100);
        stream.publish_once_listening(first_after_restart, PATIENCE).await;
        stream.publish_all((101..200).map(event)).await;
        let status = wait_for_status(&consumer, |status| status["stored"] == 200).await;
        assert_eq!(status["status"], "consuming");
        assert_eq!(stored_events(&app).await, 200);
        assert_eq!(event_count(&app, "ann").await, 200);
        drop((stream, broker));
    }

    async fn a_rapport_killed_mid_stream_stores_every_event_exactly_once_after_its_restart(app) {
        const EVENTS: usize = 100_000;
        const CONTACTS: usize = 20;
        let settings = unique_settings();
        let stream = TestStream::connect(settings.clone()).await;
        // Made by "an operator" this time, under the name Rapport is told.
        stream.create().await;
        for n in 0..CONTACTS {
            app.upsert_contact(json!({ "externalId": format!("c{n}") })).await;
        }
        // Most events carry no key (Rapport derives one from the stream sequence); some carry
        // their own, and some a publisher's Nats-Msg-Id.
        let messages = (0..EVENTS).map(|n| {
            let mut event = json!({ "contact": { "externalId": format!("c{}", n % CONTACTS) }, "type": "page.viewed", "properties": { "n": n } });
            if n % 10 == 1 {
                event["idempotencyKey"] = json!(format!("own-{n}"));
            }
            let message_id = (n % 10 == 2).then(|| format!("msg-{n}"));
            (message_id, event.to_string())
        });
        assert_eq!(stream.publish_all(messages).await.len(), EVENTS);

        let mut first = serve(&app, &settings);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while stored_events(&app).await < (EVENTS / 5) as i64 {
            assert!(tokio::time::Instant::now() < deadline, "the first process stored too little");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        first.start_kill().expect("SIGKILL");
        first.wait().await.expect("killed");
        let at_kill = stored_events(&app).await;
        assert!(at_kill < EVENTS as i64, "killed mid-stream ({at_kill} of {EVENTS} stored)");

        let mut second = serve(&app, &settings);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while stored_events(&app).await < EVENTS as i64 {
            assert!(tokio::time::Instant::now() < deadline, "not every event was stored after the restart");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Redeliveries of what the killed process had in hand come after the ack wait; they
        // must all be answered as duplicates before the count can be trusted as final.
        stream.wait_until_all_acknowledged(PATIENCE).await;
        second.start_kill().expect("SIGKILL");
        second.wait().await.expect("killed");

        let properties = column(&app, "SELECT CAST(properties AS TEXT) FROM event").await;
        assert_eq!(properties.len(), EVENTS, "each event stored exactly once");
        let numbers: BTreeSet<u64> = properties
            .iter()
            .map(|text| serde_json::from_str::<Value>(text).expect("JSON")["n"].as_u64().expect("n"))
            .collect();
        assert_eq!(numbers.len(), EVENTS, "no event stored twice");
        assert_eq!(numbers.last().copied(), Some(EVENTS as u64 - 1));
        let total: i64 = {
            let mut total = 0;
            for n in 0..CONTACTS {
                total += event_count(&app, &format!("c{n}")).await;
            }
            total
        };
        assert_eq!(total, EVENTS as i64, "contact activity counts each event once");
    }
}

/// `rapport serve` as its own process on the database of `app`, consuming `settings`' subject.
fn serve(app: &TestApp, settings: &rapport::config::NatsSettings) -> tokio::process::Child {
    tokio::process::Command::new(rapport_binary())
        .arg("serve")
        .env_clear()
        .env("RAPPORT_DATABASE_URL", &app.database_url)
        .env("RAPPORT_MASTER_KEY", app.settings.master_key.as_ref().expect("master key").expose_secret())
        .env("RAPPORT_ADMIN_TOKEN", rapport_e2e::ADMIN_TOKEN)
        .env("RAPPORT_LISTEN", "127.0.0.1:0")
        .env("RAPPORT_NATS_URL", settings.url.expose_secret())
        .env("RAPPORT_NATS_SUBJECT", &settings.subject)
        .env("RAPPORT_NATS_STREAM", &settings.stream)
        .env("RAPPORT_NATS_CONSUMER", &settings.consumer)
        .env("RAPPORT_NATS_ACK_WAIT_SECONDS", settings.ack_wait.as_secs().to_string())
        .env("RAPPORT_LOG", std::env::var("TEST_LOG").unwrap_or_else(|_| "warn".to_owned()))
        .stdout(std::process::Stdio::null())
        // TEST_LOG shows the server's log, as it does for the servers the harness runs in-process.
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            std::process::Stdio::inherit()
        } else {
            std::process::Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .expect("rapport serve starts")
}
