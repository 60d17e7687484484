//! GraphQL subscriptions over `graphql-transport-ws` at `/graphql/ws`, with a real WebSocket
//! client: committed contact changes arrive, filtered by contact and type; a socket without a
//! credential is closed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rapport_e2e::{TestApp, on_both_databases};
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

on_both_databases! {
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
