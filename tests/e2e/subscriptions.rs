//! GraphQL subscriptions over `graphql-transport-ws` at `/graphql/ws`, with a real WebSocket
//! client: committed contact changes arrive, filtered by contact and type; the admin feed brings
//! the statistics of the moment and audited actions, among them an endpoint disabled after
//! failing; a socket without a credential is closed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rapport::config::Settings;
use rapport_e2e::{TestApp, on_both_databases, webhooks::WebhookReceiver};
use serde_json::{Value, json};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async,
    tungstenite::{Message, client::IntoClientRequest, http::HeaderValue},
};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn open(app: &TestApp) -> Socket {
    let url = app.url("/graphql/ws").replacen("http", "ws", 1);
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
    let (socket, response) = connect_async(request).await.expect("the socket opens");
    assert_eq!(response.headers()["sec-websocket-protocol"], "graphql-transport-ws");
    socket
}

async fn send(socket: &mut Socket, message: Value) {
    socket.send(Message::Text(message.to_string().into())).await.expect("sent");
}

/// The next protocol message (pings answered on the way).
async fn next(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a message within 10 s")
            .expect("the socket is open")
            .expect("a frame");
        match message {
            Message::Text(text) => {
                let value: Value = serde_json::from_str(&text).unwrap();
                if value["type"] == "ping" {
                    send(socket, json!({ "type": "pong" })).await;
                    continue;
                }
                return value;
            }
            Message::Close(frame) => return json!({ "closed": frame.map(|frame| u16::from(frame.code)) }),
            _ => continue,
        }
    }
}

async fn subscribed(app: &TestApp, query: &str, variables: Value) -> Socket {
    let mut socket = open(app).await;
    send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {}", rapport_e2e::ADMIN_TOKEN) } })).await;
    assert_eq!(next(&mut socket).await["type"], "connection_ack");
    send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": query, "variables": variables } }))
        .await;
    // The subscription is registered once the server has read the message; a change made
    // right after may come first otherwise.
    tokio::time::sleep(Duration::from_millis(300)).await;
    socket
}

const CHANGES: &str = "subscription($contact: ID, $types: [ContactChangeType!]) {
  contactChanges(contactId: $contact, types: $types) { seq type contactId changes occurredAt }
}";

const FEED: &str = "subscription($actions: [String!], $statistics: Boolean! = true) {
  feed(actions: $actions, statistics: $statistics) {
    __typename
    ... on Statistics { contacts importsRunning mailWaiting webhookDeliveriesPending webhookDeliveriesFailed webhookEndpointsDisabled takenAt }
    ... on AuditEntry { action targetKind targetId }
  }
}";

/// The next item of the feed of type `typename` (counts taken every ten seconds may come
/// between).
async fn next_item(socket: &mut Socket, typename: &str) -> Value {
    loop {
        let message = next(socket).await;
        assert_eq!(message["type"], "next", "{message}");
        let item = &message["payload"]["data"]["feed"];
        if item["__typename"] == typename {
            return item.clone();
        }
    }
}

/// Loopback receivers allowed, and the whole webhook retry schedule run in about two seconds.
fn local_and_quick(settings: &mut Settings) {
    settings.webhooks.allow_private_networks = true;
    settings.webhooks.retry_base = Duration::from_micros(50);
}

on_both_databases! {
    async fn the_feed_brings_the_counts_at_once_and_the_audited_actions_asked_for(app) {
        app.upsert_contact(json!({ "email": "ada@example.com" })).await;
        app.upsert_contact(json!({ "email": "grace@example.com" })).await;
        let mut feed = subscribed(&app, FEED, json!({ "actions": ["topic.defined", "consent_purpose."] })).await;
        let first = next(&mut feed).await;
        let counts = &first["payload"]["data"]["feed"];
        assert_eq!(counts["__typename"], "Statistics", "the counts come first: {first}");
        assert_eq!(counts["contacts"], 2, "{counts}");
        assert_eq!((counts["webhookDeliveriesFailed"].clone(), counts["webhookEndpointsDisabled"].clone()), (json!(0), json!(0)));

        app.upsert_contact(json!({ "email": "linus@example.com" })).await;
        app.data("mutation { defineTopic(input: { key: \"news\", name: \"News\" }) { key } }", json!({})).await;
        let entry = next_item(&mut feed, "AuditEntry").await;
        assert_eq!((entry["action"].as_str(), entry["targetId"].as_str()), (Some("topic.defined"), Some("news")), "the contact's creation is not asked for: {entry}");

        let mut counts_only = subscribed(&app, FEED, json!({ "actions": [] })).await;
        assert_eq!(next_item(&mut counts_only, "Statistics").await["contacts"], 3, "a new subscriber gets fresh counts");
        let statistics = app.data("{ statistics { contacts importsRunning mailWaiting } }", json!({})).await;
        assert_eq!(statistics["statistics"], json!({ "contacts": 3, "importsRunning": 0, "mailWaiting": 0 }));
    }

    #[settings(local_and_quick)]
    async fn an_endpoint_disabled_after_failing_is_told_on_the_feed_and_counted(app) {
        // A receiver without the secret answers 503 to everything.
        let receiver = WebhookReceiver::start(0).await;
        let create = "mutation($url: String!) { createWebhookEndpoint(input: { url: $url }) { endpoint { id } } }";
        let endpoint = app.data(create, json!({ "url": receiver.url() })).await["createWebhookEndpoint"]["endpoint"]["id"].as_str().unwrap().to_owned();
        let mut feed = subscribed(&app, FEED, json!({ "actions": ["webhook_endpoint.disabled"], "statistics": false })).await;
        app.upsert_contact(json!({ "email": "ada@example.com" })).await;

        let told = next_item(&mut feed, "AuditEntry").await;
        assert_eq!(told, json!({ "__typename": "AuditEntry", "action": "webhook_endpoint.disabled", "targetKind": "webhook_endpoint", "targetId": endpoint }));
        let statistics = app.data("{ statistics { webhookDeliveriesPending webhookDeliveriesFailed webhookEndpointsDisabled } }", json!({})).await;
        assert_eq!(statistics["statistics"], json!({ "webhookDeliveriesPending": 0, "webhookDeliveriesFailed": 1, "webhookEndpointsDisabled": 1 }));
    }

    async fn committed_contact_changes_arrive_filtered_by_contact_and_type(app) {
        let ada = app.upsert_contact(json!({ "email": "ada@example.com", "firstName": "Ada" })).await["id"].as_str().unwrap().to_owned();
        let grace = app.upsert_contact(json!({ "email": "grace@example.com" })).await["id"].as_str().unwrap().to_owned();
        let mut all = subscribed(&app, CHANGES, json!({})).await;
        let mut ada_updates = subscribed(&app, CHANGES, json!({ "contact": ada, "types": ["CONTACT_UPDATED"] })).await;

        let update = "mutation($id: ID!, $name: String!) { updateContact(input: { id: $id, expectedVersion: 1, firstName: $name }) { id } }";
        app.data(update, json!({ "id": grace, "name": "Grace" })).await;
        app.data("mutation($id: ID!) { setConsent(input: { contactId: $id, purpose: \"marketing\", channel: EMAIL, status: GRANTED }) { id } }", json!({ "id": ada })).await;
        app.data(update, json!({ "id": ada, "name": "Ada L." })).await;

        let mut seen = Vec::new();
        for _ in 0..3 {
            let message = next(&mut all).await;
            assert_eq!(message["type"], "next", "{message}");
            seen.push(message["payload"]["data"]["contactChanges"].clone());
        }
        let kinds: Vec<(&str, &str)> = seen.iter().map(|change| (change["type"].as_str().unwrap(), change["contactId"].as_str().unwrap())).collect();
        assert_eq!(kinds, [("CONTACT_UPDATED", grace.as_str()), ("CONSENT_CHANGED", ada.as_str()), ("CONTACT_UPDATED", ada.as_str())]);
        assert!(seen[0]["seq"].as_i64() < seen[2]["seq"].as_i64());
        assert_eq!(seen[2]["changes"]["firstName"]["after"], "[redacted]", "personal values stay out: {}", seen[2]);

        let only = next(&mut ada_updates).await;
        assert_eq!(only["payload"]["data"]["contactChanges"]["contactId"], ada.as_str(), "{only}");
        assert_eq!(only["payload"]["data"]["contactChanges"]["type"], "CONTACT_UPDATED");
        let nothing_more = tokio::time::timeout(Duration::from_millis(500), ada_updates.next()).await;
        assert!(nothing_more.is_err(), "only Ada's updates: {nothing_more:?}");
    }

    async fn the_feed_needs_the_audit_permission(app) {
        let analyst = app.signed_in_token("analyst@example.com", "ANALYST").await;
        let mut socket = open(&app).await;
        send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {analyst}") } })).await;
        assert_eq!(next(&mut socket).await["type"], "connection_ack");
        send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": FEED, "variables": {} } })).await;
        let refused = next(&mut socket).await;
        assert_eq!(refused["payload"]["data"], Value::Null, "{refused}");
        assert_eq!(refused["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN", "{refused}");
    }

    async fn a_socket_without_a_valid_credential_is_closed(app) {
        for payload in [json!({}), json!({ "Authorization": "Bearer not-a-token" })] {
            let mut socket = open(&app).await;
            send(&mut socket, json!({ "type": "connection_init", "payload": payload })).await;
            let answer = next(&mut socket).await;
            assert!(answer.get("closed").is_some(), "closed without connection_ack: {payload} {answer}");
        }
        let url = app.url("/graphql/ws").replacen("http", "ws", 1);
        let mut request = url.into_client_request().unwrap();
        request.headers_mut().insert("sec-websocket-protocol", HeaderValue::from_static("graphql-transport-ws"));
        request.headers_mut().insert("authorization", HeaderValue::from_static("Bearer forged"));
        let refused = connect_async(request).await;
        assert!(refused.is_err(), "a bad credential on the upgrade is refused before the socket opens");
    }
}
