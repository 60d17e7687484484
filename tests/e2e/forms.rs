//! Signup forms and double opt-in, end to end with the real SMTP test server: a submission
//! leaves consent pending and sends a confirmation email; following its link (a GET shows a
//! button, the POST confirms) grants consent with proof of both steps and subscribes the topics.
//! And the failures other tools are known for: a granted consent is never downgraded by a new
//! submission, a known contact signing up to a confirming form still gets the confirmation, a
//! pending submission is not mailed twice, and contacts made pending through the API can be
//! sent the confirmation on request. Requests left unconfirmed for seven days expire (the test
//! moves the server's clock ahead), and confirming a signup after an unsubscribe lifts it.

use rapport_e2e::{TestApp, on_both_databases, respawn, smtp::SmtpServer};
use secrecy::SecretString;
use serde_json::{Value, json};

/// A server on `app`'s database that delivers to `smtp`, with topics `news` and `offers`, a
/// sender for the center's emails, a double opt-in form `newsletter` and a single opt-in form
/// `quick`.
async fn setup(app: &TestApp, smtp: &SmtpServer) -> TestApp {
    let mut settings = app.settings.clone();
    settings.smtp_url = Some(SecretString::from(smtp.url()));
    settings.public_url = "https://forms.example.com".to_owned();
    let app = respawn(app, settings).await;
    for (key, name) in [("news", "News"), ("offers", "Offers")] {
        app.data(
            "mutation($input: DefineTopicInput!) { defineTopic(input: $input) { key } }",
            json!({ "input": { "key": key, "name": name } }),
        )
        .await;
    }
    app.data(
        "mutation { updatePreferenceCenter(input: { senderAddress: \"hello@example.com\" }) { linkEmailId } }",
        json!({}),
    )
    .await;
    let create = "mutation($input: CreateSignupFormInput!) { createSignupForm(input: $input) { key doubleOptIn } }";
    let wording = WORDING;
    app.data(create, json!({ "input": { "key": "newsletter", "name": "Newsletter", "topics": ["news", "offers"], "wording": wording } })).await;
    app.data(create, json!({ "input": { "key": "quick", "name": "Quick", "topics": ["offers"], "wording": wording, "doubleOptIn": false } })).await;
    app
}

/// The consent wording of both forms.
const WORDING: &str = "Yes, send me the newsletter. I can unsubscribe at any time.";

async fn submit(app: &TestApp, form: &str, fields: &[(&str, &str)]) -> (u16, String) {
    let response = app
        .client
        .post(app.url(&format!("/forms/{form}")))
        .header("user-agent", "Signup/1.0")
        .form(fields)
        .send()
        .await
        .expect("form posted");
    (response.status().as_u16(), response.text().await.unwrap())
}

const STATE: &str = "query($email: String!) { contact(by: { email: $email }) {
  id firstName
  topics { topic { key } status }
  consents { purpose channel status source proof { ip userAgent wordingId wordingVersion } }
  events { nodes { type properties } }
} }";

async fn state(app: &TestApp, email: &str) -> Value {
    app.data(STATE, json!({ "email": email })).await["contact"].clone()
}

fn marketing_email(state: &Value) -> Value {
    state["consents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|consent| consent["purpose"] == "marketing" && consent["channel"] == "EMAIL")
        .cloned()
        .unwrap_or(Value::Null)
}

fn subscribed(state: &Value) -> Vec<String> {
    let mut keys: Vec<String> = state["topics"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|topic| topic["status"] == "SUBSCRIBED")
        .map(|topic| topic["topic"]["key"].as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    keys
}

/// The confirmation link in a received message, made local.
fn confirmation_path(message: &rapport_e2e::smtp::Received) -> String {
    let html = message.html.as_deref().expect("html");
    let link =
        html.split("href=\"").nth(1).and_then(|rest| rest.split('"').next()).expect("a link").replace("&#x2f;", "/");
    assert!(link.starts_with("https://forms.example.com/confirm/"), "{link}");
    link.replace("https://forms.example.com", "")
}

on_both_databases! {
    async fn a_submission_is_confirmed_by_the_link_in_the_mail_with_proof_of_both(app) {
        let smtp = SmtpServer::start().await;
        let app = setup(&app, &smtp).await;
        let (status, page) = submit(&app, "newsletter", &[("email", "new@example.com"), ("first_name", "Nia"), ("topic", "news"), ("website", "")]).await;
        assert_eq!(status, 200);
        assert!(page.contains("check your inbox"), "{page}");

        let pending = state(&app, "new@example.com").await;
        assert_eq!(pending["firstName"], "Nia");
        let consent = marketing_email(&pending);
        assert_eq!(consent["status"], "PENDING");
        assert_eq!(consent["source"], "FORM");
        let wording = rapport_e2e::wording_version(None, WORDING);
        assert_eq!(consent["proof"], json!({ "ip": "127.0.0.1", "userAgent": "Signup/1.0", "wordingId": "form:newsletter", "wordingVersion": wording }));
        assert!(subscribed(&pending).is_empty(), "topics wait for the confirmation");
        assert_eq!(pending["events"]["nodes"][0], json!({ "type": "form.submitted", "properties": { "form": "newsletter" } }));

        // A second submission while the first is pending mails nothing more.
        submit(&app, "newsletter", &[("email", "new@example.com"), ("topic", "news")]).await;
        let message = smtp.wait_for(1).await.remove(0);
        assert_eq!(message.rcpt_to, ["new@example.com"]);
        assert_eq!(message.header("Subject"), Some("Please confirm your subscription"));
        let path = confirmation_path(&message);

        // A link scanner's GET confirms nothing.
        let shown = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(shown.status(), 200);
        assert!(shown.text().await.unwrap().contains("Yes, subscribe me"));
        assert_eq!(marketing_email(&state(&app, "new@example.com").await)["status"], "PENDING");

        let confirmed = app.client.post(app.url(&path)).header("user-agent", "Mailbox/2.0").send().await.unwrap();
        assert_eq!(confirmed.status(), 200);
        assert!(confirmed.text().await.unwrap().contains("your subscription is confirmed"));
        let granted = state(&app, "new@example.com").await;
        let consent = marketing_email(&granted);
        assert_eq!(consent["status"], "GRANTED");
        assert_eq!(consent["proof"]["userAgent"], "Mailbox/2.0", "the decision holds the proof of the confirmation");
        assert_eq!(subscribed(&granted), ["news"], "the topics asked for, now confirmed");
        let requests = app
            .data("query($id: ID!) { optInRequests(contactId: $id) { id status topics submittedIp submittedUserAgent confirmedAt } }", json!({ "id": granted["id"] }))
            .await["optInRequests"]
            .clone();
        assert_eq!(requests.as_array().unwrap().len(), 1);
        assert_eq!(requests[0]["status"], "CONFIRMED");
        assert_eq!(requests[0]["submittedUserAgent"], "Signup/1.0", "and the request holds the proof of the submission");
        assert_eq!(consent["proof"]["wordingId"], format!("opt-in:{}", requests[0]["id"].as_str().unwrap()), "which the decision names");
        assert_eq!(consent["proof"]["wordingVersion"], wording, "with the version of the form's wording");

        // The link again: nothing left to confirm.
        let again = app.client.post(app.url(&path)).send().await.unwrap();
        assert!(again.text().await.unwrap().contains("nothing left to confirm"));
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(smtp.received().len(), 1, "one confirmation mail in all");
    }

    async fn a_granted_consent_is_never_downgraded_yet_the_form_still_asks_for_confirmation(app) {
        let smtp = SmtpServer::start().await;
        let app = setup(&app, &smtp).await;
        app.upsert_contact(json!({ "email": "ada@example.com", "firstName": "Ada", "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }] })).await;
        let (status, _) = submit(&app, "newsletter", &[("email", "ada@example.com"), ("first_name", "Mallory"), ("topic", "offers")]).await;
        assert_eq!(status, 200);
        let after = state(&app, "ada@example.com").await;
        assert_eq!(marketing_email(&after)["status"], "GRANTED", "a stranger typing Ada's address cannot take her consent away");
        assert_eq!(after["firstName"], "Ada", "nor change her data");
        assert!(subscribed(&after).is_empty());
        let message = smtp.wait_for(1).await.remove(0);
        assert_eq!(message.rcpt_to, ["ada@example.com"], "a known contact still confirms a new signup");
        app.client.post(app.url(&confirmation_path(&message))).send().await.unwrap();
        assert_eq!(subscribed(&state(&app, "ada@example.com").await), ["offers"]);
    }

    async fn the_answer_is_the_same_for_known_unknown_and_bot_submissions(app) {
        let smtp = SmtpServer::start().await;
        let app = setup(&app, &smtp).await;
        app.upsert_contact(json!({ "email": "ada@example.com" })).await;
        let (_, known) = submit(&app, "newsletter", &[("email", "ada@example.com")]).await;
        let (_, unknown) = submit(&app, "newsletter", &[("email", "zed@example.com")]).await;
        let (_, bot) = submit(&app, "newsletter", &[("email", "bot@example.com"), ("website", "http://spam.example")]).await;
        assert_eq!(known, unknown);
        assert_eq!(bot, known);
        assert_eq!(state(&app, "bot@example.com").await, Value::Null, "the honeypot keeps bots out");

        let json_answer = app
            .client
            .post(app.url("/forms/newsletter"))
            .json(&json!({ "email": "json@example.com", "topics": ["news"] }))
            .send()
            .await
            .unwrap();
        assert_eq!(json_answer.status(), 202);
        assert_eq!(json_answer.json::<Value>().await.unwrap(), json!({ "status": "received", "confirmationRequired": true }));
        assert_eq!(marketing_email(&state(&app, "json@example.com").await)["status"], "PENDING");

        let unknown_form = app.client.post(app.url("/forms/nope")).form(&[("email", "a@example.com")]).send().await.unwrap();
        assert_eq!(unknown_form.status(), 404);
        let bad = app.client.post(app.url("/forms/newsletter")).form(&[("email", "not an address")]).send().await.unwrap();
        assert_eq!(bad.status(), 400);
        assert_eq!(bad.json::<Value>().await.unwrap()["error"]["code"], "BAD_USER_INPUT");
    }

    async fn a_single_opt_in_form_grants_and_subscribes_at_once(app) {
        let smtp = SmtpServer::start().await;
        let app = setup(&app, &smtp).await;
        let (_, page) = submit(&app, "quick", &[("email", "quick@example.com")]).await;
        assert!(page.contains("You are subscribed."));
        let after = state(&app, "quick@example.com").await;
        assert_eq!(marketing_email(&after)["status"], "GRANTED");
        assert_eq!(marketing_email(&after)["source"], "FORM");
        assert_eq!(subscribed(&after), ["offers"]);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert!(smtp.received().is_empty(), "nothing to confirm");
    }

    async fn a_form_asks_for_the_profile_fields_admins_chose_and_fills_in_new_contacts(app) {
        let smtp = SmtpServer::start().await;
        let app = setup(&app, &smtp).await;
        app.data("mutation { defineField(input: { key: \"birthday\", label: \"Birthday\", type: DATE }) { key } }", json!({})).await;
        let create = "mutation($input: CreateSignupFormInput!) { createSignupForm(input: $input) { key fields } }";
        let input = json!({ "key": "club", "name": "Club", "topics": ["offers"], "wording": "Yes.", "doubleOptIn": false, "fields": ["first_name", "country", "birthday"] });
        assert_eq!(app.data(create, json!({ "input": input })).await["createSignupForm"]["fields"], json!(["first_name", "country", "birthday"]));
        let unknown = json!({ "input": { "key": "bad", "name": "Bad", "topics": [], "wording": "x", "fields": ["first_name", "shoe_size"] } });
        let refused = app.graphql(create, unknown).await;
        assert_eq!(refused["errors"][0]["extensions"]["code"], "BAD_USER_INPUT", "{refused}");
        assert_eq!(refused["errors"][0]["extensions"]["field"], "input.fields[1]", "{refused}");

        let fields = [("email", "club@example.com"), ("first_name", "Grace"), ("country", "de"), ("birthday", "1990-04-01"), ("last_name", "Not asked")];
        assert_eq!(submit(&app, "club", &fields).await.0, 200);
        let asked = "query($email: String!) { contact(by: { email: $email }) { firstName lastName country attributes } }";
        let stored = app.data(asked, json!({ "email": "club@example.com" })).await["contact"].clone();
        assert_eq!(stored["firstName"], "Grace");
        assert_eq!(stored["country"], "DE");
        assert_eq!(stored["attributes"]["birthday"], "1990-04-01");
        assert!(stored["lastName"].is_null(), "a field the form does not ask for is ignored: {stored}");

        let json_body = json!({ "email": "json@example.com", "fields": { "first_name": "Jo", "birthday": "2001-02-03" } });
        let response = app.client.post(app.url("/forms/club")).json(&json_body).send().await.unwrap();
        assert_eq!(response.status(), 202);
        let stored = app.data(asked, json!({ "email": "json@example.com" })).await["contact"].clone();
        assert_eq!((&stored["firstName"], &stored["attributes"]["birthday"]), (&json!("Jo"), &json!("2001-02-03")));

        for known in [false, true] {
            let email = if known { "club@example.com" } else { "new@example.com" };
            let (status, body) = submit(&app, "club", &[("email", email), ("birthday", "next week")]).await;
            assert_eq!(status, 400, "a bad value is refused alike for known and new addresses: {body}");
            assert!(body.contains("birthday"), "{body}");
        }
        assert!(app.data(asked, json!({ "email": "new@example.com" })).await["contact"].is_null(), "nothing was stored");
        let (status, _) = submit(&app, "club", &[("email", "club@example.com"), ("first_name", "Mallory")]).await;
        assert_eq!(status, 200);
        let stored = app.data(asked, json!({ "email": "club@example.com" })).await["contact"].clone();
        assert_eq!(stored["firstName"], "Grace", "a public form never changes a known contact");
    }

    async fn contacts_made_pending_through_the_api_can_be_sent_the_confirmation(app) {
        let smtp = SmtpServer::start().await;
        let app = setup(&app, &smtp).await;
        let id = app
            .upsert_contact(json!({ "email": "imported@example.com", "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "PENDING", "source": "IMPORT" }] }))
            .await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let ask = "mutation($id: ID!) { requestOptInConfirmation(contactId: $id, form: \"newsletter\") }";
        assert_eq!(app.data(ask, json!({ "id": id })).await["requestOptInConfirmation"], true);
        let message = smtp.wait_for(1).await.remove(0);
        assert_eq!(message.rcpt_to, ["imported@example.com"]);
        app.client.post(app.url(&confirmation_path(&message))).send().await.unwrap();
        let after = state(&app, "imported@example.com").await;
        assert_eq!(marketing_email(&after)["status"], "GRANTED");
        assert_eq!(subscribed(&after), ["news", "offers"]);
    }

    async fn an_unconfirmed_request_expires_after_seven_days_and_a_new_submission_mails_a_fresh_link(app) {
        let smtp = SmtpServer::start().await;
        let app = setup(&app, &smtp).await;
        submit(&app, "newsletter", &[("email", "late@example.com"), ("topic", "news")]).await;
        let first = confirmation_path(&smtp.wait_for(1).await[0]);
        let id = state(&app, "late@example.com").await["id"].as_str().unwrap().to_owned();
        let requests = "query($id: ID!) { optInRequests(contactId: $id) { id status expiresAt } }";
        assert_eq!(app.data(requests, json!({ "id": id })).await["optInRequests"][0]["status"], "PENDING");

        app.clock.advance(chrono::Duration::days(7) + chrono::Duration::minutes(1));
        let listed = app.data(requests, json!({ "id": id })).await["optInRequests"].clone();
        assert_eq!(listed[0]["status"], "EXPIRED", "{listed}");
        // The link itself is still signed as valid (its signature says seven days from the real
        // time): the request it would confirm has expired, and that decides.
        let followed = app.client.post(app.url(&first)).header("user-agent", "Mailbox/2.0").send().await.unwrap();
        assert_eq!(followed.status(), 200);
        let page = followed.text().await.unwrap();
        assert!(page.contains("nothing left to confirm") && page.contains("more than seven days old"), "{page}");
        let after = state(&app, "late@example.com").await;
        assert_eq!(marketing_email(&after)["status"], "PENDING", "an expired request grants nothing");
        assert!(subscribed(&after).is_empty());
        assert_eq!(app.data(requests, json!({ "id": id })).await["optInRequests"][0]["status"], "EXPIRED");

        // Signing up again opens a new request and mails a fresh link, which works.
        submit(&app, "newsletter", &[("email", "late@example.com"), ("topic", "offers")]).await;
        let messages = smtp.wait_for(2).await;
        assert_eq!(messages[1].rcpt_to, ["late@example.com"]);
        let second = confirmation_path(&messages[1]);
        assert_ne!(second, first);
        let listed = app.data(requests, json!({ "id": id })).await["optInRequests"].clone();
        assert_eq!((listed[0]["status"].as_str(), listed[1]["status"].as_str()), (Some("PENDING"), Some("EXPIRED")), "{listed}");
        let confirmed = app.client.post(app.url(&second)).send().await.unwrap();
        assert!(confirmed.text().await.unwrap().contains("your subscription is confirmed"));
        let after = state(&app, "late@example.com").await;
        assert_eq!(marketing_email(&after)["status"], "GRANTED");
        assert_eq!(subscribed(&after), ["offers"], "only the open request's topics");
        assert_eq!(app.data(requests, json!({ "id": id })).await["optInRequests"][1]["status"], "EXPIRED", "the old request stays expired");

        // A confirmation link signed more than seven days ago is turned away by its signature.
        let now = chrono::Utc::now();
        let old = app.contact_token(&id, "confirm_opt_in", now - chrono::Duration::days(8), now - chrono::Duration::days(1));
        for response in [app.client.get(app.url(&format!("/confirm/{old}"))).send().await.unwrap(), app.client.post(app.url(&format!("/confirm/{old}"))).send().await.unwrap()] {
            assert_eq!(response.status(), 404);
            assert!(response.text().await.unwrap().contains("This link does not work any more"));
        }
    }

    async fn confirming_a_signup_after_a_one_click_unsubscribe_lifts_the_unsubscribe(app) {
        let smtp = SmtpServer::start().await;
        let app = setup(&app, &smtp).await;
        let id = app
            .upsert_contact(json!({ "email": "back@example.com", "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }] }))
            .await["id"].as_str().unwrap().to_owned();
        let issue = "mutation($id: ID!) { issueContactToken(contactId: $id, purpose: UNSUBSCRIBE) { token } }";
        let token = app.data(issue, json!({ "id": id })).await["issueContactToken"]["token"].as_str().unwrap().to_owned();
        let unsubscribed = app.client.post(app.url(&format!("/unsubscribe/{token}"))).body("List-Unsubscribe=One-Click").send().await.unwrap();
        assert_eq!(unsubscribed.status(), 200);
        let suppressions = "{ suppressions(address: \"back@example.com\") { reason } }";
        assert_eq!(app.data(suppressions, json!({})).await["suppressions"], json!([{ "reason": "UNSUBSCRIBE" }]));

        // Anyone can fill in a single opt-in form with her address: that lifts nothing.
        submit(&app, "quick", &[("email", "back@example.com")]).await;
        assert_eq!(app.data(suppressions, json!({})).await["suppressions"], json!([{ "reason": "UNSUBSCRIBE" }]), "a form proves nothing about the mailbox");

        submit(&app, "newsletter", &[("email", "back@example.com"), ("topic", "news")]).await;
        let message = smtp.wait_for(1).await.remove(0);
        assert_eq!(app.data(suppressions, json!({})).await["suppressions"], json!([{ "reason": "UNSUBSCRIBE" }]), "nor does a submission");
        let confirmed = app.client.post(app.url(&confirmation_path(&message))).send().await.unwrap();
        assert!(confirmed.text().await.unwrap().contains("your subscription is confirmed"));
        let after = state(&app, "back@example.com").await;
        assert_eq!(marketing_email(&after)["status"], "GRANTED");
        assert_eq!(app.data(suppressions, json!({})).await["suppressions"], json!([]), "following the link from her mailbox does");
        let log = app.data("{ auditLog(filter: { action: \"address.unsuppressed\" }) { nodes { actor { kind id } } } }", json!({})).await;
        assert_eq!(log["auditLog"]["nodes"][0]["actor"], json!({ "kind": "contact_token", "id": id }), "{log:#}");
    }
}
