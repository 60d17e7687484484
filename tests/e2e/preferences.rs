//! The preference center over plain HTTP, as a browser without JavaScript uses it: the page of a
//! preferences link, saving the form (redirect after post), what the save stored (read back
//! through GraphQL, with its consent proof and audit actor), bad input, "unsubscribe from
//! everything", forged links, and asking for a fresh link by address. The page in a real browser
//! is in `browser.rs`.

use rapport_e2e::{TestApp, assert_rejected, on_both_databases, smtp::SmtpServer};
use serde_json::{Value, json};

const UPDATE_CENTER: &str = "mutation($input: UpdatePreferenceCenterInput!) {
  updatePreferenceCenter(input: $input) { companyName primaryColor editableFields senderAddress linkEmailId confirmationEmailId }
}";

/// A client that shows redirects instead of following them.
fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

struct Setup {
    contact: String,
    token: String,
}

/// Topics `news` (subscribed, weekly) and `offers`, a date field `birthday`, a contact with
/// marketing email consent, the center's settings, and a preferences token for the contact.
async fn setup(app: &TestApp) -> Setup {
    for (key, name) in [("news", "News"), ("offers", "Offers")] {
        app.data(
            "mutation($input: DefineTopicInput!) { defineTopic(input: $input) { key } }",
            json!({ "input": { "key": key, "name": name } }),
        )
        .await;
    }
    app.data(
        "mutation { defineField(input: { key: \"birthday\", label: \"Birthday\", type: DATE }) { key } }",
        json!({}),
    )
    .await;
    app.data(UPDATE_CENTER, json!({ "input": { "companyName": "Café Example", "primaryColor": "#0f766e", "editableFields": ["first_name", "birthday"] } })).await;
    let contact = app
        .upsert_contact(json!({
            "email": "ada@example.com",
            "firstName": "Ada",
            "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }],
        }))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.data(
        "mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"news\", frequency: WEEKLY) { status } }",
        json!({ "id": contact }),
    )
    .await;
    let token = app
        .data(
            "mutation($id: ID!) { issueContactToken(contactId: $id, purpose: PREFERENCES) { token } }",
            json!({ "id": contact }),
        )
        .await["issueContactToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    Setup { contact, token }
}

async fn page(app: &TestApp, path: &str) -> (u16, String, reqwest::header::HeaderMap) {
    let response = app.client.get(app.url(path)).send().await.expect("page");
    let (status, headers) = (response.status().as_u16(), response.headers().clone());
    (status, response.text().await.unwrap(), headers)
}

async fn post_form(app: &TestApp, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    no_redirects().post(app.url(path)).header("user-agent", "Browser/1.0").form(form).send().await.expect("form posted")
}

const STATE: &str = "query($id: ID!) { contact(by: { id: $id }) {
  firstName attributes
  topics { topic { key } status frequency }
  consents { purpose channel status source proof { ip userAgent wordingId } }
} }";

async fn state(app: &TestApp, id: &str) -> Value {
    app.data(STATE, json!({ "id": id })).await["contact"].clone()
}

fn consent(state: &Value, purpose: &str, channel: &str) -> Value {
    state["consents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|consent| consent["purpose"] == purpose && consent["channel"] == channel)
        .cloned()
        .unwrap_or(Value::Null)
}

fn topic(state: &Value, key: &str) -> Value {
    state["topics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|topic| topic["topic"]["key"] == key)
        .cloned()
        .unwrap_or(Value::Null)
}

on_both_databases! {
    async fn the_page_shows_the_stored_state_and_a_posted_form_saves_it_then_redirects(app) {
        let Setup { contact, token } = setup(&app).await;
        let path = format!("/preferences/{token}");
        let (status, html, headers) = page(&app, &path).await;
        assert_eq!(status, 200);
        let policy = headers["content-security-policy"].to_str().unwrap();
        assert!(policy.contains("default-src 'none'") && policy.contains("script-src 'self'"), "{policy}");
        assert!(html.contains("Café Example"));
        assert!(html.contains(r#"value="news" id="topic-news" checked"#), "{html}");
        assert!(html.contains(r#"value="offers" id="topic-offers">"#));
        assert!(html.contains(r#"<option value="weekly" selected>"#));
        assert!(html.contains(r#"value="marketing.email" id="consent-marketing-email" checked"#));
        assert!(html.contains(r#"name="field.first_name" id="field-first_name" value="Ada""#));
        assert!(html.contains(r#"type="date" name="field.birthday""#));
        assert!(html.contains("<label for=\"field-birthday\">Birthday</label>"));
        assert!(!html.contains("ada@example.com"), "the page shows no more than it lets people edit");
        let german = app.client.get(app.url(&path)).header("accept-language", "de").send().await.unwrap().text().await.unwrap();
        assert!(german.contains("<html lang=\"de\">") && german.contains("<legend>Werbung</legend>"), "built-in purposes speak the page's language");
        assert!(html.contains("<legend>Marketing</legend>"));

        let response = post_form(&app, &path, &[
            ("topic", "offers"),
            ("frequency.news", "weekly"),
            ("frequency.offers", "daily"),
            ("consent", "marketing.sms"),
            ("field.first_name", "Adele"),
            ("field.birthday", "1990-12-10"),
            ("action", "save"),
        ]).await;
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], format!("/preferences/{token}?saved=1"));
        let (_, html, _) = page(&app, &format!("{path}?saved=1")).await;
        assert!(html.contains("Your preferences are saved."));
        assert!(html.contains(r#"value="offers" id="topic-offers" checked"#), "the page shows the stored state");

        let stored = state(&app, &contact).await;
        assert_eq!(stored["firstName"], "Adele");
        assert_eq!(stored["attributes"]["birthday"], "1990-12-10");
        assert_eq!(topic(&stored, "news")["status"], "UNSUBSCRIBED");
        assert_eq!(topic(&stored, "offers")["status"], "SUBSCRIBED");
        assert_eq!(topic(&stored, "offers")["frequency"], "DAILY");
        let email = consent(&stored, "marketing", "EMAIL");
        assert_eq!(email["status"], "DENIED");
        assert_eq!(email["source"], "PREFERENCE_CENTER");
        assert_eq!(email["proof"], json!({ "ip": "127.0.0.1", "userAgent": "Browser/1.0", "wordingId": "purpose:marketing" }));
        assert_eq!(consent(&stored, "marketing", "SMS")["status"], "GRANTED");
        assert_eq!(consent(&stored, "analytics", "EMAIL"), Value::Null, "nothing recorded for boxes left as they were");

        let log = app.data("query($id: String!) { auditLog(filter: { targetId: $id }) { nodes { action actor { kind id } } } }", json!({ "id": contact })).await;
        let latest = &log["auditLog"]["nodes"][0];
        assert_eq!(latest["actor"], json!({ "kind": "contact_token", "id": contact }), "{log:#}");

        // The same form again changes nothing.
        let before = state(&app, &contact).await;
        let history = "query($id: ID!) { contact(by: { id: $id }) { consentHistory { edges { node { id } } } } }";
        let decisions = app.data(history, json!({ "id": contact })).await;
        post_form(&app, &path, &[("topic", "offers"), ("frequency.offers", "daily"), ("consent", "marketing.sms"), ("field.first_name", "Adele"), ("field.birthday", "1990-12-10"), ("action", "save")]).await;
        assert_eq!(state(&app, &contact).await, before);
        assert_eq!(app.data(history, json!({ "id": contact })).await, decisions);
    }

    async fn bad_input_shows_the_page_with_the_error_and_saves_nothing(app) {
        let Setup { contact, token } = setup(&app).await;
        let path = format!("/preferences/{token}");
        let before = state(&app, &contact).await;
        let response = post_form(&app, &path, &[("topic", "offers"), ("field.birthday", "tomorrow"), ("action", "save")]).await;
        assert_eq!(response.status(), 400);
        let html = response.text().await.unwrap();
        assert!(html.contains("role=\"alert\"") && html.contains("<p>Birthday: "), "the message names the field as the form labels it: {html}");
        assert!(html.contains(r#"id="field-birthday" value="" aria-invalid="true" aria-describedby="error""#), "and marks it: {html}");
        assert!(html.contains("<p>Birthday: is not a date (year-month-day, such as 1990-04-01).</p>"), "{html}");
        let german = no_redirects()
            .post(app.url(&path))
            .header("accept-language", "de-DE,de;q=0.9")
            .form(&[("field.first_name", "Ada"), ("field.birthday", "morgen"), ("action", "save")])
            .send()
            .await
            .unwrap();
        assert_eq!(german.status(), 400);
        let html = german.text().await.unwrap();
        assert!(html.contains("<p>Birthday: ist kein Datum (Jahr-Monat-Tag, etwa 1990-04-01).</p>"), "the reason in the page's language: {html}");
        assert_eq!(state(&app, &contact).await, before, "nothing was saved");
        for form in [vec![("consent", "marketing")], vec![("frequency.news", "hourly")], vec![("topic", "Not A Key")]] {
            let response = post_form(&app, &path, &form).await;
            assert_eq!(response.status(), 400, "{form:?}");
        }
        assert_eq!(state(&app, &contact).await, before);
    }

    async fn unsubscribe_from_everything_ends_every_subscription_and_consent(app) {
        let Setup { contact, token } = setup(&app).await;
        let response = post_form(&app, &format!("/preferences/{token}"), &[("topic", "news"), ("action", "unsubscribe_all")]).await;
        assert_eq!(response.status(), 303);
        assert_eq!(response.headers()["location"], format!("/preferences/{token}?unsubscribed=1"));
        let stored = state(&app, &contact).await;
        assert_eq!(topic(&stored, "news")["status"], "UNSUBSCRIBED");
        assert_eq!(consent(&stored, "marketing", "EMAIL")["status"], "DENIED");
        assert_eq!(stored["firstName"], "Ada", "fields are left as they are");
    }

    async fn forged_and_foreign_links_get_a_friendly_page_and_change_nothing(app) {
        let Setup { contact, token } = setup(&app).await;
        let unsubscribe = app
            .data("mutation($id: ID!) { issueContactToken(contactId: $id, purpose: UNSUBSCRIBE) { token } }", json!({ "id": contact }))
            .await["issueContactToken"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let before = state(&app, &contact).await;
        for forged in [format!("{token}x"), unsubscribe, "nonsense".to_owned(), rapport_e2e::ADMIN_TOKEN.to_owned()] {
            let (status, html, _) = page(&app, &format!("/preferences/{forged}")).await;
            assert_eq!(status, 404);
            assert!(html.contains("This link does not work any more") && html.contains("name=\"address\""), "{html}");
            let response = post_form(&app, &format!("/preferences/{forged}"), &[("topic", "offers"), ("action", "save")]).await;
            assert_eq!(response.status(), 404);
        }
        assert_eq!(state(&app, &contact).await, before);
    }

    async fn revoked_links_get_the_friendly_page_and_links_issued_afterwards_work(app) {
        let Setup { contact, token } = setup(&app).await;
        let other = app
            .data("mutation($id: ID!) { issueContactToken(contactId: $id, purpose: UNSUBSCRIBE) { token } }", json!({ "id": contact }))
            .await["issueContactToken"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(page(&app, &format!("/preferences/{token}")).await.0, 200);
        let revoke = "mutation($id: ID!) { revokeContactTokens(contactId: $id) }";
        let revoked_at = app.data(revoke, json!({ "id": contact })).await["revokeContactTokens"].clone();
        assert!(revoked_at.is_string(), "{revoked_at}");
        let before = state(&app, &contact).await;

        let (status, html, _) = page(&app, &format!("/preferences/{token}")).await;
        assert_eq!(status, 404);
        assert!(html.contains("This link does not work any more") && html.contains("name=\"address\""), "{html}");
        assert_eq!(post_form(&app, &format!("/preferences/{token}"), &[("topic", "offers"), ("action", "save")]).await.status(), 404);
        let unsubscribed = no_redirects()
            .post(app.url(&format!("/unsubscribe/{other}")))
            .form(&[("List-Unsubscribe", "One-Click")])
            .send()
            .await
            .unwrap();
        assert!(unsubscribed.status().is_client_error(), "every purpose's links are revoked: {}", unsubscribed.status());
        let (status, _) = app.graphql_as(Some(&token), "{ preferenceCenter { companyName } }", json!({})).await;
        assert_eq!(status, 401);
        assert_eq!(state(&app, &contact).await, before, "nothing changed through a revoked link");

        let fresh = app
            .data("mutation($id: ID!) { issueContactToken(contactId: $id, purpose: PREFERENCES) { token } }", json!({ "id": contact }))
            .await["issueContactToken"]["token"]
            .as_str()
            .unwrap()
            .to_owned();
        assert_eq!(page(&app, &format!("/preferences/{fresh}")).await.0, 200, "a link issued after the revocation works");

        let audit = app.data("query($id: String!) { auditLog(filter: { targetId: $id }) { nodes { action } } }", json!({ "id": contact })).await;
        assert!(audit.to_string().contains("contact_token.revoked"), "{audit}");
        let missing = app.graphql(revoke, json!({ "id": "01936f0e-0000-7000-8000-000000000000" })).await;
        assert_eq!(missing["errors"][0]["extensions"]["code"], "NOT_FOUND", "{missing}");
    }

    async fn save_preferences_over_graphql_acts_on_the_token_holder_only(app) {
        let Setup { contact, token } = setup(&app).await;
        let save = "mutation($input: SavePreferencesInput!) { savePreferences(input: $input) }";
        let input = json!({ "input": {
            "subscribed": ["news", "offers"],
            "frequencies": [{ "topic": "offers", "frequency": "MONTHLY" }],
            "granted": [{ "purpose": "marketing", "channel": "EMAIL" }],
            "fields": [{ "key": "first_name", "value": "Ada L." }],
        } });
        let (status, body) = app.graphql_as(Some(&token), save, input.clone()).await;
        assert_eq!((status, &body["data"]["savePreferences"]), (200, &json!(true)), "{body}");
        let stored = state(&app, &contact).await;
        assert_eq!(stored["firstName"], "Ada L.");
        assert_eq!(topic(&stored, "offers")["frequency"], "MONTHLY");
        let (_, body) = app.graphql_as(Some(rapport_e2e::ADMIN_TOKEN), save, input).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN", "only a contact saves its own page");
    }

    async fn admins_set_the_branding_and_bad_settings_are_refused(app) {
        let set = |input: Value| json!({ "input": input });
        assert_rejected(&app, UPDATE_CENTER, set(json!({ "primaryColor": "#ffff00" })), "BAD_USER_INPUT", Some("input.primaryColor")).await;
        assert_rejected(&app, UPDATE_CENTER, set(json!({ "logo": "https://cdn.example.com/logo.png" })), "BAD_USER_INPUT", Some("input.logo")).await;
        assert_rejected(&app, UPDATE_CENTER, set(json!({ "editableFields": ["email"] })), "BAD_USER_INPUT", Some("input.editableFields[0]")).await;
        assert_rejected(&app, UPDATE_CENTER, set(json!({ "privacyPolicyUrl": "javascript:alert(1)" })), "BAD_USER_INPUT", Some("input.privacyPolicyUrl")).await;
        let saved = app.data(UPDATE_CENTER, set(json!({ "primaryColor": "#0F766E", "senderAddress": "hello@example.com" }))).await["updatePreferenceCenter"].clone();
        assert_eq!(saved["primaryColor"], "#0f766e");
        assert!(saved["linkEmailId"].is_string() && saved["confirmationEmailId"].is_string(), "the first sender creates the center's emails: {saved}");
        let css = app.client.get(app.url("/assets/brand.css")).send().await.unwrap().text().await.unwrap();
        assert!(css.contains("--accent: #0f766e"), "{css}");
        let analyst = app.signed_in_token("analyst@example.com", "ANALYST").await;
        let (_, body) = app.graphql_as(Some(&analyst), UPDATE_CENTER, set(json!({ "companyName": "X" }))).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "FORBIDDEN");
    }

    async fn asking_for_a_fresh_link_answers_alike_and_mails_known_addresses(app) {
        let smtp = SmtpServer::start().await;
        let mut settings = app.settings.clone();
        settings.smtp_url = Some(secrecy::SecretString::from(smtp.url()));
        settings.public_url = "https://prefs.example.com".to_owned();
        let app = rapport_e2e::respawn(&app, settings).await;
        let Setup { .. } = setup(&app).await;
        app.data(UPDATE_CENTER, json!({ "input": { "senderAddress": "hello@example.com", "senderName": "Café Example" } })).await;

        let (status, html, _) = page(&app, "/preferences").await;
        assert_eq!(status, 200);
        assert!(html.contains("name=\"address\""));
        let known = post_form(&app, "/preferences", &[("address", "ada@example.com"), ("website", "")]).await;
        let (known_status, known_body) = (known.status(), known.text().await.unwrap());
        let unknown = post_form(&app, "/preferences", &[("address", "nobody@example.com"), ("website", "")]).await;
        let (unknown_status, unknown_body) = (unknown.status(), unknown.text().await.unwrap());
        assert_eq!((known_status.as_u16(), &known_body), (unknown_status.as_u16(), &unknown_body), "the answer tells nothing");
        let trapped = post_form(&app, "/preferences", &[("address", "ada@example.com"), ("website", "http://spam.example")]).await;
        assert_eq!(trapped.text().await.unwrap(), known_body);

        let message = smtp.wait_for(1).await.remove(0);
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        assert_eq!(smtp.received().len(), 1, "one mail: none for the unknown address or the bot");
        assert_eq!(message.rcpt_to, ["ada@example.com"]);
        let html = message.html.unwrap();
        // The template escapes the link as HTML does (`/` as `&#x2f;`); a mail client decodes it.
        let link = html.split("href=\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap().replace("&#x2f;", "/");
        assert!(link.starts_with("https://prefs.example.com/preferences/"), "{link}");
        let (status, page_html, _) = page(&app, &link.replace("https://prefs.example.com", "")).await;
        assert_eq!(status, 200, "the mailed link opens the page");
        assert!(page_html.contains("field.first_name"));
    }

    async fn every_email_can_link_to_the_recipients_own_pages(app) {
        let smtp = SmtpServer::start().await;
        let mut settings = app.settings.clone();
        settings.smtp_url = Some(secrecy::SecretString::from(smtp.url()));
        settings.public_url = "https://prefs.example.com".to_owned();
        let app = rapport_e2e::respawn(&app, settings).await;
        let Setup { contact, .. } = setup(&app).await;
        let create = "mutation($input: CreateEmailInput!) { createEmail(input: $input) { email { id } version { warnings } } }";
        let html = "<p>News</p><p><a href=\"{{ links.preferences }}\">Your preferences</a> · <a href=\"{{ links.unsubscribe }}\">Unsubscribe</a></p>";
        let created = app
            .data(create, json!({ "input": { "name": "News", "type": "MARKETING", "subject": "News", "html": html, "from": { "address": "news@example.com" } } }))
            .await["createEmail"]
            .clone();
        assert_eq!(created["version"]["warnings"], json!([]), "links are known to the template check");
        let send = "mutation($input: SendEmailInput!) { sendEmail(input: $input) { created } }";
        app.data(send, json!({ "input": { "emailId": created["email"]["id"], "contact": { "id": contact } } })).await;
        let message = smtp.wait_for(1).await.remove(0);
        let html = message.html.unwrap().replace("&#x2f;", "/");
        let links: Vec<String> = html.split("href=\"").skip(1).filter_map(|rest| rest.split('"').next()).map(str::to_owned).collect();
        assert!(links[0].starts_with("https://prefs.example.com/preferences/"), "the preferences link is not tracked: {links:?}");
        assert!(links[1].starts_with("https://prefs.example.com/unsubscribe/"), "{links:?}");
        let (status, page_html, _) = page(&app, &links[0].replace("https://prefs.example.com", "")).await;
        assert_eq!(status, 200);
        assert!(page_html.contains("Your email preferences"));
        let (status, _, _) = page(&app, &links[1].replace("https://prefs.example.com", "")).await;
        assert_eq!(status, 200);
    }
}
