//! Inbound webhooks, `POST /hooks/{source}`, signed by an implementation we did not write (the
//! `standardwebhooks` package, tests/webhook_sign.py): an event and a contact change land on the
//! profile, bounces and complaints reach the suppression list, and forged, stale and replayed
//! requests change nothing. A request whose handler died is done by the sender's retry, one being
//! handled is answered 409, and an oversized body is refused with a JSON 413.

use rapport::{
    domain::key::Key,
    store::hooks::{self, Claim},
};
use rapport_e2e::{TestApp, on_both_databases, smtp::python};
use serde_json::{Value, json};

const CREATE: &str = "mutation($key: String!, $kind: WebhookSourceKind!) { createWebhookSource(key: $key, kind: $kind) { source { key kind } secret } }";

async fn source(app: &TestApp, key: &str, kind: &str) -> String {
    let created = app.data(CREATE, json!({ "key": key, "kind": kind })).await;
    created["createWebhookSource"]["secret"].as_str().unwrap().to_owned()
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The `webhook-signature` the standardwebhooks package makes.
fn sign(secret: &str, id: &str, timestamp: i64, body: &str) -> String {
    use std::io::Write;
    let mut child = std::process::Command::new(python())
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/webhook_sign.py"))
        .args([secret, id, &timestamp.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the signer runs (tests/run sets up RAPPORT_TEST_PYTHON)");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "the signer failed");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn post(app: &TestApp, source: &str, id: &str, timestamp: i64, signature: &str, body: &str) -> (u16, Value) {
    let response = app
        .client
        .post(app.url(&format!("/hooks/{source}")))
        .header("content-type", "application/json")
        .header("webhook-id", id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or(Value::Null))
}

async fn signed(app: &TestApp, source: &str, secret: &str, id: &str, body: &Value) -> (u16, Value) {
    let body = body.to_string();
    let at = now();
    post(app, source, id, at, &sign(secret, id, at, &body), &body).await
}

const STATE: &str = "query($email: String!) { contact(by: { email: $email }) {
  firstName attributes events { nodes { type source properties } }
} }";

on_both_databases! {
    async fn a_retry_does_what_a_dead_handler_claimed_and_waits_for_a_live_one(app) {
        let secret = source(&app, "shop", "EVENTS").await;
        let conn = app.services.database().connection();
        let shop = Key::parse("shop").unwrap();
        let now = rapport::domain::at_storage_precision(chrono::Utc::now());
        let forget_before = now - chrono::Duration::hours(1);
        // Claims as a process makes them before the work: one a minute ago by a process that died
        // before finishing, one now by a process still at it.
        let a_minute_ago = now - chrono::Duration::minutes(1);
        let claimed = hooks::claim(conn, &shop, "msg_died", a_minute_ago, a_minute_ago, forget_before).await.unwrap();
        assert_eq!(claimed, Claim::Taken);
        assert_eq!(hooks::claim(conn, &shop, "msg_busy", now, now, forget_before).await.unwrap(), Claim::Taken);

        let event = |kind: &str| json!({ "type": "event", "data": { "contact": { "email": "ada@example.com" }, "type": kind } });
        let retried = signed(&app, "shop", &secret, "msg_died", &event("order.placed")).await;
        assert_eq!(retried, (200, json!({ "status": "accepted" })), "the retry does the work the dead process claimed");
        let (status, answer) = signed(&app, "shop", &secret, "msg_busy", &event("order.paid")).await;
        assert_eq!((status, &answer["error"]["code"]), (409, &json!("CONFLICT")), "{answer}");
        let types = |state: Value| -> Vec<Value> { state["contact"]["events"]["nodes"].as_array().unwrap().iter().map(|event| event["type"].clone()).collect() };
        assert_eq!(types(app.data(STATE, json!({ "email": "ada@example.com" })).await), [json!("order.placed")]);

        hooks::complete(conn, &shop, "msg_busy", now, chrono::Utc::now()).await.unwrap();
        let replay = signed(&app, "shop", &secret, "msg_busy", &event("order.paid")).await;
        assert_eq!(replay, (200, json!({ "status": "duplicate" })), "once done, the id is a replay");
        let replay = signed(&app, "shop", &secret, "msg_died", &event("order.placed")).await;
        assert_eq!(replay, (200, json!({ "status": "duplicate" })));
        assert_eq!(types(app.data(STATE, json!({ "email": "ada@example.com" })).await), [json!("order.placed")]);

        // A holder too slow to keep its claim neither forgets nor completes its successor's.
        let stale_before = now - chrono::Duration::seconds(30);
        assert_eq!(hooks::claim(conn, &shop, "msg_slow", a_minute_ago, a_minute_ago, forget_before).await.unwrap(), Claim::Taken);
        assert_eq!(hooks::claim(conn, &shop, "msg_slow", now, stale_before, forget_before).await.unwrap(), Claim::Taken);
        hooks::forget(conn, &shop, "msg_slow", a_minute_ago).await.unwrap();
        hooks::complete(conn, &shop, "msg_slow", a_minute_ago, now).await.unwrap();
        assert_eq!(hooks::claim(conn, &shop, "msg_slow", now, stale_before, forget_before).await.unwrap(), Claim::Held);

        let huge = json!({ "type": "event", "data": { "contact": { "email": "ada@example.com" }, "type": "x", "properties": { "pad": "x".repeat(1_500_000) } } }).to_string();
        let at = now.timestamp();
        let (status, answer) = post(&app, "shop", "msg_huge", at, &sign(&secret, "msg_huge", at, &huge), &huge).await;
        assert_eq!((status, &answer["error"]["code"]), (413, &json!("BAD_USER_INPUT")), "{answer}");
    }

    async fn a_signed_event_and_contact_change_land_on_the_profile_once(app) {
        app.data("mutation { defineField(input: { key: \"plan\", label: \"Plan\", type: STRING }) { key } }", json!({})).await;
        let secret = source(&app, "shop", "EVENTS").await;
        let event = json!({ "type": "event", "data": {
            "contact": { "email": "ada@example.com" }, "type": "order.placed", "properties": { "total": 42 },
            "identify": { "firstName": "Ada" },
        } });
        assert_eq!(signed(&app, "shop", &secret, "msg_order_1", &event).await, (200, json!({ "status": "accepted" })));
        let change = json!({ "type": "contact", "data": { "contact": { "email": "ada@example.com" }, "changes": { "attributes": { "plan": "gold" } } } });
        assert_eq!(signed(&app, "shop", &secret, "msg_contact_1", &change).await.0, 200);
        let state = app.data(STATE, json!({ "email": "ada@example.com" })).await["contact"].clone();
        assert_eq!(state["firstName"], "Ada");
        assert_eq!(state["attributes"]["plan"], "gold");
        let events = state["events"]["nodes"].as_array().unwrap().clone();
        assert_eq!(events.len(), 1, "{events:#?}");
        assert_eq!((&events[0]["type"], &events[0]["source"]), (&json!("order.placed"), &json!("shop")));

        let replay = signed(&app, "shop", &secret, "msg_order_1", &event).await;
        assert_eq!(replay, (200, json!({ "status": "duplicate" })), "a replayed webhook-id is ignored");
        let stale_change = json!({ "type": "contact", "data": { "contact": { "email": "ada@example.com" }, "changes": { "firstName": "Mallory" } } });
        let body = stale_change.to_string();
        let long_ago = now() - 600;
        let (status, answer) = post(&app, "shop", "msg_old", long_ago, &sign(&secret, "msg_old", long_ago, &body), &body).await;
        assert_eq!((status, &answer["error"]["code"]), (401, &json!("UNAUTHENTICATED")), "a stale timestamp is refused");
        let at = now();
        let other_secret = source(&app, "other", "EVENTS").await;
        for (source_key, signature) in [
            ("shop", sign(&other_secret, "msg_forged", at, &body)),
            ("shop", "v1,AAAA".to_owned()),
            ("nowhere", sign(&secret, "msg_forged", at, &body)),
        ] {
            let (status, answer) = post(&app, source_key, "msg_forged", at, &signature, &body).await;
            assert_eq!((status, &answer["error"]["code"]), (401, &json!("UNAUTHENTICATED")), "{source_key} {signature}");
        }
        let tampered = body.replace("Mallory", "Eve");
        let (status, _) = post(&app, "shop", "msg_forged", at, &sign(&secret, "msg_forged", at, &body), &tampered).await;
        assert_eq!(status, 401, "a body changed after signing is refused");
        let after = app.data(STATE, json!({ "email": "ada@example.com" })).await["contact"].clone();
        assert_eq!(after, state, "nothing changed");

        let bad = json!({ "type": "event", "data": { "contact": { "email": "ada@example.com" }, "type": "" } });
        let (status, answer) = signed(&app, "shop", &secret, "msg_bad", &bad).await;
        assert_eq!((status, &answer["error"]["code"]), (400, &json!("BAD_USER_INPUT")), "{answer}");
        let bounce = json!({ "type": "bounce", "data": { "email": "ada@example.com" } });
        let (status, answer) = signed(&app, "shop", &secret, "msg_wrong_kind", &bounce).await;
        assert_eq!(status, 400, "an events source cannot suppress addresses: {answer}");
    }

    async fn bounce_and_complaint_sources_feed_the_suppression_list(app) {
        let secret = source(&app, "esp", "SUPPRESSIONS").await;
        for (id, kind, email) in [("b1", "bounce", "gone@example.com"), ("c1", "complaint", "angry@example.com")] {
            let body = json!({ "type": kind, "data": { "email": email } });
            assert_eq!(signed(&app, "esp", &secret, id, &body).await.0, 200);
        }
        let query = "query($a: String!) { suppressions(address: $a) { reason source } }";
        let gone = app.data(query, json!({ "a": "gone@example.com" })).await;
        assert_eq!(gone["suppressions"], json!([{ "reason": "HARD_BOUNCE", "source": "esp" }]));
        let angry = app.data(query, json!({ "a": "angry@example.com" })).await;
        assert_eq!(angry["suppressions"], json!([{ "reason": "COMPLAINT", "source": "esp" }]));
        let event = json!({ "type": "event", "data": { "contact": { "email": "x@example.com" }, "type": "order.placed" } });
        assert_eq!(signed(&app, "esp", &secret, "e1", &event).await.0, 400, "a suppressions source sends no events");
        let audit = app.data("{ auditLog(filter: { actorKind: \"webhook_source\" }) { nodes { action actor { id } } } }", json!({})).await;
        assert!(audit.to_string().contains("esp"), "changes are audited with the source as actor: {audit}");
    }
}
