//! Open and click tracking end to end: HTML instrumented as the delivery worker does it, then
//! the pixel and the redirects fetched over HTTP as a mail client would, with the events read
//! back through GraphQL. Forged, altered and spliced tokens never redirect and never record.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rapport::{
    domain::contact::ContactId,
    mail::tracking::{TrackedSend, Tracking, instrument},
};
use rapport_e2e::{TestApp, on_both_databases};
use serde_json::{Value, json};
use uuid::Uuid;

const EVENTS: &str = "query($id: ID!) { contact(by: { id: $id }) {
    events(first: 50) { edges { node { type properties source occurredAt } } }
} }";

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

async fn new_contact(app: &TestApp, email: &str) -> String {
    app.upsert_contact(json!({ "email": email })).await["id"].as_str().expect("contact id").to_owned()
}

fn send_for(contact_id: &str) -> TrackedSend {
    TrackedSend {
        send_id: Uuid::now_v7(),
        contact_id: ContactId::from_uuid(contact_id.parse().expect("contact uuid")),
        email_version_id: Uuid::now_v7(),
    }
}

/// The HTML as the delivery worker would send it to the contact of `send`.
fn instrumented(app: &TestApp, send: TrackedSend, html: &str) -> String {
    let keys = app.services.tracking_keys().expect("tracking keys");
    instrument(html, &Tracking { public_url: &app.address, send, keys: &keys })
}

/// Every tracked URL in `html` under `/t/{kind}/`, in document order.
fn tracked_urls(app: &TestApp, html: &str, kind: &str) -> Vec<String> {
    let marker = format!("{}/t/{kind}/", app.address);
    html.match_indices(&marker)
        .map(|(at, _)| {
            let rest = &html[at..];
            rest[..rest.find('"').expect("closing quote")].to_owned()
        })
        .collect()
}

async fn events(app: &TestApp, contact_id: &str) -> Vec<Value> {
    let data = app.data(EVENTS, json!({ "id": contact_id })).await;
    data["contact"]["events"]["edges"].as_array().expect("edges").iter().map(|edge| edge["node"].clone()).collect()
}

async fn events_of_type(app: &TestApp, contact_id: &str, event_type: &str) -> Vec<Value> {
    events(app, contact_id).await.into_iter().filter(|event| event["type"] == event_type).collect()
}

/// Follows a click URL; returns the status, the `Location` and the body.
async fn click(url: &str) -> (u16, Option<String>, String) {
    let response = no_redirects().get(url).send().await.expect("click sent");
    let status = response.status().as_u16();
    let location = response.headers().get("location").map(|value| value.to_str().expect("ASCII").to_owned());
    (status, location, response.text().await.expect("body"))
}

/// Loads a pixel URL and checks it is the 1×1 GIF, never to be cached.
async fn load_pixel(url: &str) {
    let response = reqwest::get(url).await.expect("pixel loaded");
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/gif");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let body = response.bytes().await.expect("body");
    assert!(body.starts_with(b"GIF89a\x01\x00\x01\x00"), "a 1x1 GIF: {body:?}");
}

fn assert_not_found(status: u16, location: Option<String>, body: &str) {
    assert_eq!(status, 404, "{body}");
    assert_eq!(location, None);
    let body: Value = serde_json::from_str(body).expect("JSON error body");
    assert_eq!(body["error"]["code"], "NOT_FOUND", "{body:#}");
}

/// The token of a tracked URL, decoded.
fn token_bytes(url: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(url.rsplit('/').next().expect("token")).expect("base64url token")
}

fn with_token(url: &str, bytes: &[u8]) -> String {
    let (base, _) = url.rsplit_once('/').expect("token");
    format!("{base}/{}", URL_SAFE_NO_PAD.encode(bytes))
}

on_both_databases! {
    async fn instrumenting_rewrites_web_links_keeps_the_others_and_adds_a_pixel(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let unsubscribe = format!("{}/unsubscribe/some-token", app.address);
        let preferences = format!("{}/preferences/some-token", app.address);
        let html = format!(
            r##"<html><body>
<a href="https://shop.example/sale?utm_source=mail&amp;utm_medium=email">Sale</a>
<a href="mailto:help@example.com">Write to us</a>
<a href="#details">Details</a>
<a href="{unsubscribe}">Unsubscribe</a>
<a href="{preferences}">Preferences</a>
</body></html>"##
        );
        let out = instrumented(&app, send_for(&ada), &html);

        let clicks = tracked_urls(&app, &out, "c");
        assert_eq!(clicks.len(), 1, "{out}");
        assert!(!out.contains("shop.example"), "the target hides in the signed token: {out}");
        for kept in ["mailto:help@example.com", "\"#details\"", unsubscribe.as_str(), preferences.as_str()] {
            assert!(out.contains(kept), "{kept} kept: {out}");
        }
        let pixels = tracked_urls(&app, &out, "o");
        assert_eq!(pixels.len(), 1, "{out}");
        let pixel_at = out.find(&pixels[0]).expect("pixel");
        assert!(out[..pixel_at].ends_with("<img src=\""), "{out}");
        assert!(out[pixel_at..].trim_end().ends_with("</body></html>"), "the pixel comes before </body>: {out}");
    }

    async fn a_click_redirects_to_the_original_url_and_records_it_on_the_contact(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let send = send_for(&ada);
        let target = "https://shop.example/sale?utm_source=mail&utm_medium=email#top";
        let out = instrumented(&app, send, &format!(r#"<a href="{}">Sale</a>"#, target.replace('&', "&amp;")));
        let clicks = tracked_urls(&app, &out, "c");

        let response = no_redirects().get(&clicks[0]).send().await.expect("click sent");
        assert_eq!(response.status(), 302);
        assert_eq!(response.headers()["location"], target);
        assert_eq!(response.headers()["cache-control"], "no-store");

        let clicked = events_of_type(&app, &ada, "email.clicked").await;
        assert_eq!(clicked.len(), 1, "{clicked:#?}");
        assert_eq!(clicked[0]["source"], "mail");
        assert_eq!(
            clicked[0]["properties"],
            json!({ "url": target, "sendId": send.send_id, "emailVersionId": send.email_version_id })
        );
        let occurred_at: chrono::DateTime<chrono::Utc> =
            clicked[0]["occurredAt"].as_str().expect("occurredAt").parse().expect("a time");
        assert!((chrono::Utc::now() - occurred_at).num_seconds().abs() < 60, "occurred now: {occurred_at}");
        assert!(events_of_type(&app, &ada, "email.opened").await.is_empty());

        // Recorded as an anonymous caller, without the recipient's address.
        let audit = app
            .data(
                r#"{ auditLog(first: 1, filter: { action: "events.tracked" }) { nodes { actor { kind id } ip } } }"#,
                json!({}),
            )
            .await;
        assert_eq!(audit["auditLog"]["nodes"][0], json!({ "actor": { "kind": "anonymous", "id": null }, "ip": null }));
    }

    async fn an_open_records_email_opened(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let send = send_for(&ada);
        let out = instrumented(&app, send, "<html><body><p>Hello</p></body></html>");
        load_pixel(&tracked_urls(&app, &out, "o")[0]).await;

        let opened = events_of_type(&app, &ada, "email.opened").await;
        assert_eq!(opened.len(), 1, "{opened:#?}");
        assert_eq!(opened[0]["source"], "mail");
        assert_eq!(opened[0]["properties"], json!({ "sendId": send.send_id, "emailVersionId": send.email_version_id }));
    }

    async fn repeated_opens_and_clicks_within_a_minute_are_recorded_once(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let out = instrumented(
            &app,
            send_for(&ada),
            r#"<a href="https://a.example/">A</a><a href="https://b.example/">B</a>"#,
        );
        let clicks = tracked_urls(&app, &out, "c");
        let pixel = &tracked_urls(&app, &out, "o")[0];
        for _ in 0..3 {
            load_pixel(pixel).await;
            assert_eq!(click(&clicks[0]).await.0, 302);
        }
        assert_eq!(click(&clicks[1]).await.0, 302);

        // The window is the calendar minute: a run that straddles its end may count a hit twice,
        // but never twice within one minute.
        for (event_type, url) in [("email.opened", None), ("email.clicked", Some("https://a.example/"))] {
            let recorded: Vec<Value> = events_of_type(&app, &ada, event_type)
                .await
                .into_iter()
                .filter(|event| url.is_none_or(|url| event["properties"]["url"] == url))
                .collect();
            let minutes: std::collections::HashSet<String> =
                recorded.iter().map(|event| event["occurredAt"].as_str().expect("occurredAt")[..16].to_owned()).collect();
            assert!(!recorded.is_empty() && recorded.len() <= 2, "{event_type}: {recorded:#?}");
            assert_eq!(minutes.len(), recorded.len(), "{event_type} recorded once a minute: {recorded:#?}");
        }
        let other_link = events_of_type(&app, &ada, "email.clicked").await;
        assert!(other_link.iter().any(|event| event["properties"]["url"] == "https://b.example/"), "each link counts");
    }

    async fn altered_tokens_never_redirect_and_record_nothing(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let out = instrumented(&app, send_for(&ada), r#"<a href="https://shop.example/">Shop</a>"#);
        let (click_url, pixel_url) = (&tracked_urls(&app, &out, "c")[0], &tracked_urls(&app, &out, "o")[0]);

        let mut forged_clicks = vec![
            format!("{}/t/c/not-a-token", app.address),
            format!("{}/t/c/", app.address) + &URL_SAFE_NO_PAD.encode([0u8; 80]),
            // An open token is no click token, and the other way round.
            pixel_url.replace("/t/o/", "/t/c/"),
            click_url[..click_url.len() - 3].to_owned(),
        ];
        let mut forged_pixels = vec![
            format!("{}/t/o/not-a-token", app.address),
            click_url.replace("/t/c/", "/t/o/"),
            pixel_url[..pixel_url.len() - 3].to_owned(),
        ];
        for position in [0, 5, 30, 60] {
            let mut bytes = token_bytes(click_url);
            bytes[position] ^= 0x20;
            forged_clicks.push(with_token(click_url, &bytes));
            let mut bytes = token_bytes(pixel_url);
            bytes[position] ^= 0x20;
            forged_pixels.push(with_token(pixel_url, &bytes));
        }
        for forged in &forged_clicks {
            let (status, location, body) = click(forged).await;
            assert_not_found(status, location, &body);
        }
        for forged in &forged_pixels {
            load_pixel(forged).await;
        }
        assert_eq!(events(&app, &ada).await, Vec::<Value>::new());
    }

    async fn a_token_for_one_url_cannot_be_made_to_redirect_to_another(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let out = instrumented(&app, send_for(&ada), r#"<a href="https://good.example/path">Good</a>"#);
        let click_url = &tracked_urls(&app, &out, "c")[0];
        let bytes = token_bytes(click_url);
        let url_at = bytes.windows(4).position(|window| window == b"good").expect("the URL inside the token");

        // The same length, then longer and shorter, with the tag left as it was.
        let mut same_length = bytes.clone();
        same_length[url_at..url_at + 4].copy_from_slice(b"evil");
        let tag = &bytes[bytes.len() - 16..];
        let longer = [&bytes[..url_at], b"attacker.example/".as_slice(), &bytes[url_at..bytes.len() - 16], tag].concat();
        let shorter = [&bytes[..url_at], &bytes[url_at + 5..]].concat();
        for forged in [same_length, longer, shorter] {
            let (status, location, body) = click(&with_token(click_url, &forged)).await;
            assert_not_found(status, location, &body);
        }

        // A URL from another email's token, spliced in with this token's ids, fails alike.
        let other = instrumented(&app, send_for(&ada), r#"<a href="https://evil.example/path">Evil</a>"#);
        let other_bytes = token_bytes(&tracked_urls(&app, &other, "c")[0]);
        let spliced = [&bytes[..49], &other_bytes[49..]].concat();
        let (status, location, body) = click(&with_token(click_url, &spliced)).await;
        assert_not_found(status, location, &body);
        assert_eq!(events(&app, &ada).await, Vec::<Value>::new());
    }

    async fn query_parameters_cannot_turn_a_click_into_an_open_redirect(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let out = instrumented(&app, send_for(&ada), r#"<a href="https://good.example/">Good</a>"#);
        let click_url = &tracked_urls(&app, &out, "c")[0];
        for attempt in [
            format!("{click_url}?url=https://evil.example/"),
            format!("{click_url}?redirect=https%3A%2F%2Fevil.example%2F&next=//evil.example"),
            format!("{click_url}/https://evil.example/"),
        ] {
            let (status, location, _) = click(&attempt).await;
            assert!(
                status == 404 || (status == 302 && location.as_deref() == Some("https://good.example/")),
                "{attempt}: {status} {location:?}"
            );
        }
        for bare in ["https://evil.example/", "https%3A%2F%2Fevil.example%2F", "%2F%2Fevil.example"] {
            let (status, location, body) = click(&format!("{}/t/c/{bare}", app.address)).await;
            assert_not_found(status, location, &body);
        }
    }

    async fn hits_for_an_erased_contact_record_nothing_and_still_answer(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let out = instrumented(&app, send_for(&ada), r#"<a href="https://shop.example/">Shop</a>"#);
        app.data("mutation($id: ID!) { eraseContact(id: $id) { contactId } }", json!({ "id": ada })).await;
        let audit_before = app.data("{ auditLog(first: 1) { nodes { seq } } }", json!({})).await;

        load_pixel(&tracked_urls(&app, &out, "o")[0]).await;
        let (status, location, _) = click(&tracked_urls(&app, &out, "c")[0]).await;
        assert_eq!((status, location.as_deref()), (302, Some("https://shop.example/")));
        let audit_after = app.data("{ auditLog(first: 1) { nodes { seq } } }", json!({})).await;
        assert_eq!(audit_after, audit_before, "nothing was recorded");
    }

    async fn a_head_request_answers_but_records_nothing(app) {
        let ada = new_contact(&app, "ada@example.com").await;
        let out = instrumented(&app, send_for(&ada), r#"<a href="https://shop.example/">Shop</a>"#);
        let response = no_redirects().head(&tracked_urls(&app, &out, "c")[0]).send().await.expect("HEAD sent");
        assert_eq!(response.status(), 302);
        assert_eq!(response.headers()["location"], "https://shop.example/");
        let response = no_redirects().head(&tracked_urls(&app, &out, "o")[0]).send().await.expect("HEAD sent");
        assert_eq!(response.status(), 200);
        assert_eq!(events(&app, &ada).await, Vec::<Value>::new());
    }
}
