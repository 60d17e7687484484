//! Outbound webhooks end to end, judged by a real receiver that verifies every signature with the
//! `standardwebhooks` package: changes arrive signed, in order, with the redacted description of
//! the change; a receiver that fails at first gets each message exactly once; one that never
//! accepts gets its endpoint disabled, and a replay sends the message again; private addresses
//! are refused unless allowed; a server killed with a delivery pending delivers it after restart.
//! A disabled endpoint's backlog holds up no other endpoint, and a receiver slower than the lease
//! gets a message once although two workers share the database.
//! What people change on their own pages (the preference page, a one-click unsubscribe) is
//! announced like any other change.

use std::time::Duration;

use chrono::Utc;
use rapport::{
    config::Settings,
    domain::webhook::WebhookEventType,
    service::webhooks::WebhookWorker,
    store::{self, webhooks::WrittenListener},
};
use rapport_e2e::{Backend, TestApp, on_both_databases, respawn, webhooks::WebhookReceiver};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::rapport_binary;

const CREATE: &str = "mutation($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) { endpoint { id url eventTypes enabled } secret }
}";
const DELIVERIES: &str = "query($id: ID!) { webhookDeliveries(endpointId: $id) {
  id messageId eventType status attempts lastStatusCode lastError attemptLog { statusCode error latencyMs }
} }";
const ENDPOINT: &str = "{ webhookEndpoints { id enabled disabledReason } }";

/// Loopback receivers allowed, and the whole retry schedule (about three days at the default
/// base) run in about two seconds.
fn local_and_quick(settings: &mut Settings) {
    settings.webhooks.allow_private_networks = true;
    settings.webhooks.retry_base = Duration::from_micros(50);
}

/// Registers `receiver` for `event_types` and hands it the secret; the endpoint's id.
async fn register(app: &TestApp, receiver: &mut WebhookReceiver, event_types: &[&str]) -> String {
    let created = app.data(CREATE, json!({ "input": { "url": receiver.url(), "eventTypes": event_types } })).await;
    let secret = created["createWebhookEndpoint"]["secret"].as_str().unwrap();
    assert!(secret.starts_with("whsec_"), "{created}");
    receiver.set_secret(secret).await;
    created["createWebhookEndpoint"]["endpoint"]["id"].as_str().unwrap().to_owned()
}

async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    app.data(DELIVERIES, json!({ "id": endpoint })).await["webhookDeliveries"].as_array().unwrap().clone()
}

/// Waits until the endpoint's newest delivery has `status`, and returns the deliveries.
async fn wait_for_status(app: &TestApp, endpoint: &str, status: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let found = deliveries(app, endpoint).await;
        if found.first().is_some_and(|delivery| delivery["status"] == status) {
            return found;
        }
        assert!(tokio::time::Instant::now() < deadline, "no delivery became {status}: {found:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

on_both_databases! {
    #[settings(local_and_quick)]
    async fn a_commit_that_writes_webhooks_wakes_idle_workers_and_an_open_transaction_does_not(app) {
        let connection = app.services.database().connection();
        let listener = WrittenListener::connect(connection).await.expect("listen");
        let Some(mut listener) = listener else {
            // SQLite: idle workers look for due deliveries instead (the test below).
            assert_eq!(app.backend, Backend::Sqlite);
            return;
        };
        // Nobody listens at this address: the deliveries only have to be written.
        let created = app
            .data(CREATE, json!({ "input": { "url": "http://127.0.0.1:9/", "eventTypes": ["contact.created"] } }))
            .await;
        assert_eq!(created["createWebhookEndpoint"]["endpoint"]["enabled"], true, "{created}");
        let tx = app.services.database().begin_write().await.expect("begin");
        let data = json!({ "contactId": "c1", "changes": {} });
        let written = store::webhooks::record(&tx, WebhookEventType::ContactCreated, "c1", data, Utc::now())
            .await
            .expect("record");
        assert!(written.is_some(), "the endpoint wants contact.created");
        assert!(
            tokio::time::timeout(Duration::from_millis(300), listener.written()).await.is_err(),
            "woken before the commit"
        );
        tx.commit().await.expect("commit");
        tokio::time::timeout(Duration::from_secs(10), listener.written())
            .await
            .expect("woken by the commit")
            .expect("still listening");
    }

    #[settings(|settings: &mut Settings| settings.webhooks.deliver = false)]
    async fn a_delivery_is_due_once_committed_and_due_unless_leased_or_behind_an_earlier_one(app) {
        let db = app.services.database();
        let conn = db.connection();
        let created = app
            .data(CREATE, json!({ "input": { "url": "http://127.0.0.1:9/", "eventTypes": ["contact.created"] } }))
            .await;
        assert_eq!(created["createWebhookEndpoint"]["endpoint"]["enabled"], true, "{created}");
        let at = Utc::now();
        assert!(!store::webhooks::any_due(conn, at).await.unwrap(), "nothing written yet");

        let tx = db.begin_write().await.expect("begin");
        for _ in 0..2 {
            let data = json!({ "contactId": "c1", "changes": {} });
            store::webhooks::record(&tx, WebhookEventType::ContactCreated, "c1", data, at).await.expect("record");
        }
        assert!(!store::webhooks::any_due(conn, at).await.unwrap(), "seen before the commit");
        tx.commit().await.expect("commit");
        assert!(store::webhooks::any_due(conn, at).await.unwrap(), "committed and due");
        let earlier = at - chrono::Duration::seconds(1);
        assert!(!store::webhooks::any_due(conn, earlier).await.unwrap(), "due before it was written");

        let lease_until = at + chrono::Duration::seconds(60);
        let claimed = store::webhooks::claim(conn, at, uuid::Uuid::now_v7(), lease_until, 10).await.expect("claim");
        assert_eq!(claimed.len(), 1, "the second waits behind the first: {claimed:?}");
        assert!(!store::webhooks::any_due(conn, at).await.unwrap(), "one leased, the other behind it");
        let lease_over = lease_until + chrono::Duration::seconds(1);
        assert!(store::webhooks::any_due(conn, lease_over).await.unwrap(), "the lease ran out");
    }

    #[settings(local_and_quick)]
    async fn saving_the_preference_page_and_one_click_unsubscribing_send_webhooks(app) {
        let mut receiver = WebhookReceiver::start(0).await;
        register(&app, &mut receiver, &["consent.changed", "topic.changed"]).await;
        app.data("mutation { defineTopic(input: { key: \"news\", name: \"News\" }) { key } }", json!({})).await;
        let contact = app.upsert_contact(json!({ "email": "ada@example.com" })).await;
        let id = contact["id"].as_str().unwrap();
        let issue = "mutation($id: ID!, $purpose: ContactTokenPurpose!) { issueContactToken(contactId: $id, purpose: $purpose) { token } }";
        let mut tokens = Vec::new();
        for purpose in ["PREFERENCES", "UNSUBSCRIBE"] {
            let issued = app.data(issue, json!({ "id": id, "purpose": purpose })).await;
            tokens.push(issued["issueContactToken"]["token"].as_str().unwrap().to_owned());
        }
        let (preferences, unsubscribe) = (&tokens[0], &tokens[1]);

        let saved = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap()
            .post(app.url(&format!("/preferences/{preferences}")))
            .form(&[("topic", "news"), ("frequency.news", "weekly"), ("consent", "marketing.email"), ("action", "save")])
            .send().await.unwrap();
        assert_eq!(saved.status(), 303);
        let received = receiver.wait_for(2).await;
        let mut types: Vec<&str> = received.iter().map(|report| report["body"]["type"].as_str().unwrap()).collect();
        types.sort_unstable();
        assert_eq!(types, ["consent.changed", "topic.changed"], "{received:#?}");
        let granted = received.iter().find(|report| report["body"]["type"] == "consent.changed").unwrap();
        assert_eq!(granted["body"]["data"]["contactId"], id);
        assert_eq!(granted["body"]["data"]["changes"]["status"]["after"], "granted", "{granted}");
        assert_eq!(granted["body"]["data"]["changes"]["source"]["after"], "preference_center", "{granted}");

        let unsubscribed = app.client.post(app.url(&format!("/unsubscribe/{unsubscribe}")))
            .body("List-Unsubscribe=One-Click").send().await.unwrap();
        assert_eq!(unsubscribed.status(), 200);
        let received = receiver.wait_for(3).await;
        let denied = &received[2];
        assert_eq!(denied["body"]["type"], "consent.changed");
        assert_eq!(denied["body"]["data"]["contactId"], id);
        assert_eq!(denied["body"]["data"]["changes"]["status"]["after"], "denied", "{denied}");
        assert_eq!(denied["body"]["data"]["changes"]["source"]["after"], "unsubscribe", "{denied}");
        assert!(!received.iter().any(|report| report.to_string().contains("ada@example.com")), "personal values stay out");
        assert!(receiver.reports().iter().all(|report| report["outcome"] == "delivered"), "{:#?}", receiver.reports());
    }

    #[settings(local_and_quick)]
    async fn changes_arrive_signed_in_order_and_only_where_subscribed(app) {
        let mut everything = WebhookReceiver::start(0).await;
        let mut consents_only = WebhookReceiver::start(0).await;
        register(&app, &mut everything, &[]).await;
        register(&app, &mut consents_only, &["consent.changed"]).await;
        app.data("mutation { defineTopic(input: { key: \"news\", name: \"News\" }) { key } }", json!({})).await;

        let contact = app.upsert_contact(json!({ "email": "ada@example.com", "firstName": "Ada" })).await;
        let id = contact["id"].as_str().unwrap();
        app.data("mutation($id: ID!) { updateContact(input: { id: $id, expectedVersion: 1, firstName: \"Ada L.\" }) { id } }", json!({ "id": id })).await;
        app.data("mutation($id: ID!) { setConsent(input: { contactId: $id, purpose: \"marketing\", channel: EMAIL, status: GRANTED }) { id } }", json!({ "id": id })).await;
        app.data("mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"news\") { status } }", json!({ "id": id })).await;

        let received = everything.wait_for(4).await;
        let types: Vec<&str> = received.iter().map(|report| report["body"]["type"].as_str().unwrap()).collect();
        assert_eq!(types, ["contact.created", "contact.updated", "consent.changed", "topic.changed"], "one contact's webhooks arrive in order");
        for report in &received {
            assert_eq!(report["body"]["data"]["contactId"], id);
            assert!(report["body"]["timestamp"].is_string(), "{report}");
            assert!(!report.to_string().contains("ada@example.com") && !report.to_string().contains("Ada"), "personal values stay out: {report}");
        }
        assert_eq!(received[1]["body"]["data"]["changes"]["firstName"]["after"], "[redacted]", "{}", received[1]);
        assert_eq!(received[2]["body"]["data"]["changes"]["status"]["after"], "granted", "{}", received[2]);
        let ids: std::collections::HashSet<&str> = received.iter().map(|report| report["id"].as_str().unwrap()).collect();
        assert_eq!(ids.len(), 4, "every message has its own webhook-id");

        let consents = consents_only.wait_for(1).await;
        assert_eq!(consents[0]["body"]["type"], "consent.changed");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(consents_only.delivered().len(), 1, "an endpoint gets only the types it asked for");
        assert!(everything.reports().iter().all(|report| report["outcome"] == "delivered"), "{:#?}", everything.reports());
    }

    #[settings(local_and_quick)]
    async fn a_receiver_failing_at_first_gets_the_message_exactly_once(app) {
        let mut receiver = WebhookReceiver::start(3).await;
        let endpoint = register(&app, &mut receiver, &["contact.created"]).await;
        app.upsert_contact(json!({ "email": "grace@example.com" })).await;
        let delivered = receiver.wait_for(1).await;
        let log = wait_for_status(&app, &endpoint, "DELIVERED").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.delivered().len(), 1, "delivered once");
        let failed: Vec<Value> = receiver.reports().into_iter().filter(|report| report["outcome"] == "failed").collect();
        assert_eq!(failed.len(), 3);
        assert!(failed.iter().all(|report| report["id"] == delivered[0]["id"]), "every attempt carries the same webhook-id");
        assert_eq!(log.len(), 1);
        assert_eq!(log[0]["attempts"], 4);
        assert_eq!(log[0]["messageId"], delivered[0]["id"]);
        let codes: Vec<&Value> = log[0]["attemptLog"].as_array().unwrap().iter().map(|attempt| &attempt["statusCode"]).collect();
        assert_eq!(codes, [&json!(503), &json!(503), &json!(503), &json!(204)]);
    }

    #[settings(local_and_quick)]
    async fn a_receiver_that_never_accepts_gets_disabled_and_a_replay_sends_the_message_again(app) {
        // A receiver without the secret answers 503 to everything.
        let mut receiver = WebhookReceiver::start(0).await;
        let created = app.data(CREATE, json!({ "input": { "url": receiver.url() } })).await;
        let endpoint = created["createWebhookEndpoint"]["endpoint"]["id"].as_str().unwrap().to_owned();
        let secret = created["createWebhookEndpoint"]["secret"].as_str().unwrap().to_owned();
        app.upsert_contact(json!({ "email": "linus@example.com" })).await;
        let log = wait_for_status(&app, &endpoint, "FAILED").await;
        assert_eq!(log[0]["attempts"], 10, "the whole schedule was tried: {log:#?}");
        let endpoints = app.data(ENDPOINT, json!({})).await;
        assert_eq!(endpoints["webhookEndpoints"][0]["enabled"], false);
        assert!(endpoints["webhookEndpoints"][0]["disabledReason"].as_str().unwrap().contains("failed attempts"), "{endpoints}");
        let audit = app.data("{ auditLog(filter: { action: \"webhook_endpoint.disabled\" }) { nodes { targetId } } }", json!({})).await;
        assert_eq!(audit["auditLog"]["nodes"][0]["targetId"], endpoint.as_str(), "admins see why in the audit log");

        app.upsert_contact(json!({ "email": "later@example.com" })).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(deliveries(&app, &endpoint).await.len(), 1, "a disabled endpoint is sent nothing new");

        receiver.set_secret(&secret).await;
        let enable = "mutation($id: ID!) { updateWebhookEndpoint(input: { id: $id, enabled: true }) { enabled disabledReason } }";
        let enabled = app.data(enable, json!({ "id": endpoint })).await;
        assert_eq!(enabled["updateWebhookEndpoint"], json!({ "enabled": true, "disabledReason": null }));
        let replay = "mutation($id: ID!) { replayWebhookDelivery(id: $id) }";
        app.data(replay, json!({ "id": log[0]["id"] })).await;
        let delivered = receiver.wait_for(1).await;
        assert_eq!(delivered[0]["id"], log[0]["messageId"], "a replay carries the message's webhook-id");
        let missing = app.graphql(replay, json!({ "id": "01936f0e-0000-7000-8000-000000000000" })).await;
        assert_eq!(missing["errors"][0]["extensions"]["code"], "NOT_FOUND", "{missing}");
    }

    #[settings(local_and_quick)]
    async fn stored_events_go_out_as_event_received_and_duplicates_do_not(app) {
        let mut receiver = WebhookReceiver::start(0).await;
        register(&app, &mut receiver, &["event.received"]).await;
        let contact = app.upsert_contact(json!({ "email": "lin@example.com" })).await;
        let id = contact["id"].as_str().unwrap();
        let track = "mutation($events: [TrackEventInput!]!) { trackEvents(events: $events) { status eventId } }";
        let events = json!([
            { "contact": { "id": id }, "type": "order.placed", "properties": { "total": 42 }, "idempotencyKey": "o-1" },
            { "contact": { "id": id }, "type": "page.viewed", "properties": { "path": "/sale" } },
        ]);
        let tracked = app.data(track, json!({ "events": events })).await["trackEvents"].clone();
        let again = app.data(track, json!({ "events": [events[0].clone()] })).await["trackEvents"].clone();
        assert_eq!(again[0]["status"], "DUPLICATE", "{again}");

        let received = receiver.wait_for(2).await;
        let bodies: Vec<&Value> = received.iter().map(|report| &report["body"]).collect();
        assert!(bodies.iter().all(|body| body["type"] == "event.received" && body["data"]["contactId"] == id), "{bodies:#?}");
        assert_eq!(bodies[0]["data"]["eventId"], tracked[0]["eventId"]);
        assert_eq!(bodies[0]["data"]["type"], "order.placed");
        assert_eq!(bodies[0]["data"]["properties"], json!({ "total": 42 }));
        assert_eq!(bodies[1]["data"]["eventId"], tracked[1]["eventId"]);
        assert_eq!(bodies[1]["data"]["properties"]["path"], "/sale");
        assert_eq!(bodies[1]["data"]["source"], "api");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.delivered().len(), 2, "a duplicate event announces nothing");
    }

    #[settings(|settings: &mut Settings| settings.webhooks.retry_base = Duration::from_secs(3600))]
    async fn private_addresses_are_refused_unless_the_operator_allows_them(app) {
        let mut receiver = WebhookReceiver::start(0).await;
        let by_address = register(&app, &mut receiver, &[]).await;
        let by_name = app.data(CREATE, json!({ "input": { "url": receiver.url().replace("127.0.0.1", "localhost") } })).await
            ["createWebhookEndpoint"]["endpoint"]["id"].as_str().unwrap().to_owned();
        app.upsert_contact(json!({ "email": "mallory@example.com" })).await;
        for endpoint in [&by_address, &by_name] {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            let log = loop {
                let log = deliveries(&app, endpoint).await;
                if log.first().is_some_and(|delivery| delivery["attempts"] == 1) {
                    break log;
                }
                assert!(tokio::time::Instant::now() < deadline, "no attempt: {log:#?}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert_eq!(log[0]["status"], "PENDING");
            let error = log[0]["lastError"].as_str().unwrap();
            assert!(error.contains("public address"), "{error}");
        }
        assert!(receiver.reports().is_empty(), "nothing reached the loopback receiver: {:#?}", receiver.reports());

        let bad = app.graphql(CREATE, json!({ "input": { "url": "ftp://example.com/x" } })).await;
        assert_eq!(bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{bad}");
        let bad = app.graphql(CREATE, json!({ "input": { "url": "https://example.com/x", "eventTypes": ["contact.exploded"] } })).await;
        assert_eq!(bad["errors"][0]["extensions"]["field"], "input.eventTypes[0]", "{bad}");
    }

    #[settings(|settings: &mut Settings| {
        local_and_quick(settings);
        settings.webhooks.deliver = false;
    })]
    async fn a_disabled_endpoints_backlog_does_not_hold_up_the_other_endpoints(app) {
        // It never gets its secret, so it would answer 503 to anything that reached it.
        let neglected = WebhookReceiver::start(0).await;
        let created = app.data(CREATE, json!({ "input": { "url": neglected.url(), "eventTypes": ["contact.created"] } })).await;
        let disabled = created["createWebhookEndpoint"]["endpoint"]["id"].as_str().unwrap().to_owned();
        // More due deliveries than a worker takes at once, all older than the one that matters.
        for n in 0..80 {
            app.upsert_contact(json!({ "email": format!("backlog{n}@example.com") })).await;
        }
        let disable = "mutation($id: ID!) { updateWebhookEndpoint(input: { id: $id, enabled: false }) { enabled } }";
        app.data(disable, json!({ "id": disabled })).await;
        let mut receiver = WebhookReceiver::start(0).await;
        register(&app, &mut receiver, &["contact.created"]).await;
        let waiting = app.upsert_contact(json!({ "email": "waiting@example.com" })).await;

        let mut settings = app.settings.webhooks.clone();
        settings.deliver = true;
        let (stop, stopped) = watch::channel(false);
        let worker = tokio::spawn(WebhookWorker::new(app.services.clone(), settings).expect("worker").run(stopped));
        let delivered = receiver.wait_for(1).await;
        assert_eq!(delivered[0]["body"]["data"]["contactId"], waiting["id"]);
        assert!(neglected.reports().is_empty(), "the disabled endpoint was sent {:#?}", neglected.reports());
        let backlog = app.data("query($id: ID!) { webhookDeliveries(endpointId: $id, first: 500) { status attempts } }", json!({ "id": disabled })).await;
        let backlog = backlog["webhookDeliveries"].as_array().unwrap();
        assert_eq!(backlog.len(), 80);
        assert!(backlog.iter().all(|delivery| delivery["status"] == "PENDING" && delivery["attempts"] == 0), "kept for when it is enabled: {backlog:#?}");
        stop.send(true).unwrap();
        worker.await.unwrap();
    }

    #[settings(|settings: &mut Settings| {
        local_and_quick(settings);
        settings.webhooks.lease = Duration::from_secs(2);
    })]
    async fn a_receiver_slower_than_the_lease_gets_the_message_once_from_two_workers(app) {
        // A second worker on the same database, as another process would run.
        let (stop, stopped) = watch::channel(false);
        let settings = app.settings.webhooks.clone();
        let second = tokio::spawn(WebhookWorker::new(app.services.clone(), settings).expect("worker").run(stopped));
        let mut receiver = WebhookReceiver::start_with(0, Duration::from_secs(5)).await;
        let endpoint = register(&app, &mut receiver, &["contact.created"]).await;
        app.upsert_contact(json!({ "email": "patient@example.com" })).await;
        receiver.wait_for(1).await;
        let log = wait_for_status(&app, &endpoint, "DELIVERED").await;
        // Long enough for a second post, started when the first lease ran out, to be answered.
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(receiver.delivered().len(), 1, "posted again while the first post waited: {:#?}", receiver.reports());
        assert_eq!(log[0]["attempts"], 1, "{log:#?}");
        stop.send(true).unwrap();
        second.await.unwrap();
    }

    #[settings(|settings: &mut Settings| settings.webhooks.deliver = false)]
    async fn a_server_killed_with_a_delivery_pending_delivers_it_after_the_restart(app) {
        let mut receiver = WebhookReceiver::start(0).await;
        let created = app.data(CREATE, json!({ "input": { "url": receiver.url() } })).await;
        let secret = created["createWebhookEndpoint"]["secret"].as_str().unwrap().to_owned();
        let endpoint = created["createWebhookEndpoint"]["endpoint"]["id"].as_str().unwrap().to_owned();
        // The in-process server only writes webhooks; the child posts them until it is killed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut child = serve(&app, port);
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "the child did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let created = client
            .post(format!("{base}/graphql"))
            .bearer_auth(rapport_e2e::ADMIN_TOKEN)
            .json(&json!({ "query": "mutation { upsertContact(input: { email: \"kill@example.com\" }) { contact { id } } }" }))
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert!(created["errors"].is_null(), "{created}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !receiver.reports().iter().any(|report| report["outcome"] == "unready") {
            assert!(tokio::time::Instant::now() < deadline, "the child never tried");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        child.start_kill().expect("SIGKILL");
        child.wait().await.expect("killed");
        assert!(receiver.delivered().is_empty());

        receiver.set_secret(&secret).await;
        let mut settings = app.settings.clone();
        settings.webhooks.deliver = true;
        local_and_quick(&mut settings);
        let restarted = respawn(&app, settings).await;
        let delivered = receiver.wait_for(1).await;
        let log = wait_for_status(&restarted, &endpoint, "DELIVERED").await;
        assert_eq!(delivered[0]["body"]["type"], "contact.created");
        assert_eq!(delivered[0]["id"], log[0]["messageId"]);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(receiver.delivered().len(), 1, "delivered exactly once");
    }
}

/// A `rapport serve` child on `app`'s database, allowed to reach loopback, retrying after a
/// second, holding deliveries for a second: killed at any point, what it held is free soon.
fn serve(app: &TestApp, port: u16) -> tokio::process::Child {
    tokio::process::Command::new(rapport_binary())
        .arg("serve")
        .env_clear()
        .env("RAPPORT_DATABASE_URL", &app.database_url)
        .env("RAPPORT_MASTER_KEY", secrecy::ExposeSecret::expose_secret(app.settings.master_key.as_ref().unwrap()))
        .env("RAPPORT_ADMIN_TOKEN", rapport_e2e::ADMIN_TOKEN)
        .env("RAPPORT_LISTEN", format!("127.0.0.1:{port}"))
        .env("RAPPORT_WEBHOOK_ALLOW_PRIVATE_NETWORKS", "true")
        .env("RAPPORT_WEBHOOK_RETRY_BASE_SECONDS", "1")
        .env("RAPPORT_WEBHOOK_LEASE_SECONDS", "1")
        .env("RAPPORT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("rapport serve starts")
}
