//! The preference center over plain HTTP, as a browser without JavaScript uses it: the page of a
//! preferences link, saving the form (redirect after post), what the save stored (read back
//! through GraphQL, with its consent proof and audit actor), bad input, "unsubscribe from
//! everything", forged and expired links, the branding admins set, resubscribing after a one-click
//! unsubscribe, and asking for a fresh link by address. The page in a real browser is in
//! `browser.rs`.

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
  consents { purpose channel status source proof { ip userAgent wordingId wordingVersion } }
} }";

/// The wording version of a purpose shown as `label` and `description`.
fn wording_version(language: Option<&str>, label: &str, description: &str) -> String {
    rapport_e2e::wording_version(language, &format!("{label}\n{description}"))
}

const MARKETING_EN: (&str, &str) = ("Marketing", "Newsletters, offers and other promotional messages.");
const MARKETING_DE: (&str, &str) = ("Werbung", "Newsletter, Angebote und andere Werbenachrichten.");

/// A token of `purpose` for the contact that expired a day ago (issued 31 days ago).
fn expired_token(app: &TestApp, contact: &str, purpose: &str) -> String {
    let now = chrono::Utc::now();
    app.contact_token(contact, purpose, now - chrono::Duration::days(31), now - chrono::Duration::days(1))
}

async fn suppressions(app: &TestApp, address: &str) -> Vec<String> {
    let query = "query($address: String!) { suppressions(address: $address) { reason } }";
    let found = app.data(query, json!({ "address": address })).await;
    found["suppressions"].as_array().unwrap().iter().map(|entry| entry["reason"].as_str().unwrap().to_owned()).collect()
}

async fn one_click_unsubscribe(app: &TestApp, token: &str) -> reqwest::Response {
    no_redirects()
        .post(app.url(&format!("/unsubscribe/{token}")))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("unsubscribe posted")
}

async fn issue(app: &TestApp, contact: &str, purpose: &str) -> String {
    app.data(
        "mutation($id: ID!, $purpose: ContactTokenPurpose!) { issueContactToken(contactId: $id, purpose: $purpose) { token } }",
        json!({ "id": contact, "purpose": purpose }),
    )
    .await["issueContactToken"]["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

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
        let (label, description) = MARKETING_EN;
        let english = wording_version(Some("en"), label, description);
        assert_eq!(email["proof"], json!({ "ip": "127.0.0.1", "userAgent": "Browser/1.0", "wordingId": "purpose:marketing", "wordingVersion": english }));
        assert_eq!(consent(&stored, "marketing", "SMS")["status"], "GRANTED");
        assert_eq!(consent(&stored, "marketing", "SMS")["proof"]["wordingVersion"], english, "the English page words it");
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

    async fn expired_links_get_the_friendly_page_and_change_nothing(app) {
        let Setup { contact, .. } = setup(&app).await;
        let expired = expired_token(&app, &contact, "preferences");
        let before = state(&app, &contact).await;

        let (status, html, _) = page(&app, &format!("/preferences/{expired}")).await;
        assert_eq!(status, 404);
        assert!(html.contains("This link does not work any more"), "{html}");
        assert!(html.contains("name=\"address\"") && html.contains("Send me a link"), "it offers to mail a fresh link: {html}");
        assert!(!html.contains("Ada") && !html.contains("field.first_name"), "and shows nothing of the contact: {html}");
        let response = post_form(&app, &format!("/preferences/{expired}"), &[("topic", "offers"), ("field.first_name", "Mallory"), ("action", "save")]).await;
        assert_eq!(response.status(), 404);
        assert!(response.text().await.unwrap().contains("name=\"address\""));
        let response = post_form(&app, &format!("/preferences/{expired}"), &[("action", "unsubscribe_all")]).await;
        assert_eq!(response.status(), 404);

        let expired = expired_token(&app, &contact, "unsubscribe");
        let response = one_click_unsubscribe(&app, &expired).await;
        assert_eq!(response.status(), 404);
        assert!(response.text().await.unwrap().contains("This link does not work any more"));
        let shown = app.client.get(app.url(&format!("/unsubscribe/{expired}"))).send().await.unwrap();
        assert_eq!(shown.status(), 404);
        assert!(shown.text().await.unwrap().contains("The latest email from us has a link that works"));

        assert_eq!(state(&app, &contact).await, before, "nothing changed through an expired link");
        assert!(suppressions(&app, "ada@example.com").await.is_empty(), "and the address was not suppressed");
        // The same tokens, unexpired, work: only their age turned them away.
        let now = chrono::Utc::now();
        let current = app.contact_token(&contact, "preferences", now, now + chrono::Duration::days(1));
        assert_eq!(page(&app, &format!("/preferences/{current}")).await.0, 200);
    }

    async fn the_page_shows_the_branding_and_the_wording_admins_wrote(app) {
        let Setup { contact, token } = setup(&app).await;
        let logo = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
        app.data(UPDATE_CENTER, json!({ "input": {
            "logo": logo,
            "footerText": "Café Example Ltd · 1 High Street & Co, Leeds",
            "privacyPolicyUrl": "https://cafe.example.com/privacy",
        } })).await;
        let define = "mutation($input: DefinePurposeInput!) { defineConsentPurpose(input: $input) { key builtIn } }";
        let (label, description) = ("Partner offers", "Offers from our partners, sent by us. We never pass your address on.");
        let defined = app.data(define, json!({ "input": { "key": "partners", "label": label, "description": description } })).await;
        assert_eq!(defined["defineConsentPurpose"]["builtIn"], false);

        let path = format!("/preferences/{token}");
        for language in ["en", "de"] {
            let response = app.client.get(app.url(&path)).header("accept-language", language).send().await.unwrap();
            assert_eq!(response.status(), 200);
            // The templates escape `/` in attributes as `&#x2f;`, which browsers read as `/`.
            let html = response.text().await.unwrap().replace("&#x2f;", "/");
            assert!(html.contains(&format!(r#"<img class="logo" src="{logo}" alt="Café Example">"#)), "{language}: {html}");
            assert!(html.contains("<p>Café Example Ltd · 1 High Street &amp; Co, Leeds</p>"), "the footer, escaped: {html}");
            let privacy = if language == "de" { "Datenschutzerklärung" } else { "Privacy policy" };
            assert!(html.contains(&format!(r#"<a href="https://cafe.example.com/privacy">{privacy}</a>"#)), "{language}: {html}");
            assert!(html.contains("<legend>Partner offers</legend>"), "an admin's purpose is shown as written, in every language: {html}");
            assert!(html.contains(r#"<p class="hint" id="purpose-partners-hint">Offers from our partners, sent by us. We never pass your address on.</p>"#), "{html}");
            assert!(html.contains(r#"value="partners.email" id="consent-partners-email""#), "{html}");
            assert!(html.contains(&format!(r#"<input type="hidden" name="language" value="{language}">"#)), "{html}");
        }

        // Ticking the boxes on the German page records which wording each one showed.
        let response = post_form(&app, &path, &[
            ("language", "de"),
            ("topic", "news"),
            ("frequency.news", "weekly"),
            ("consent", "marketing.email"),
            ("consent", "partners.email"),
            ("field.first_name", "Ada"),
            ("action", "save"),
        ]).await;
        assert_eq!(response.status(), 303);
        let stored = state(&app, &contact).await;
        let partners = consent(&stored, "partners", "EMAIL");
        assert_eq!(partners["status"], "GRANTED");
        assert_eq!(partners["proof"]["wordingId"], "purpose:partners");
        assert_eq!(partners["proof"]["wordingVersion"], wording_version(None, label, description), "an admin's text has no language");
        // Marketing was granted before; unticking and ticking it again on the German page is a
        // new decision worded in German.
        post_form(&app, &path, &[("language", "de"), ("consent", "partners.email"), ("field.first_name", "Ada"), ("action", "save")]).await;
        post_form(&app, &path, &[("language", "de"), ("consent", "marketing.email"), ("consent", "partners.email"), ("field.first_name", "Ada"), ("action", "save")]).await;
        let marketing = consent(&state(&app, &contact).await, "marketing", "EMAIL");
        let (label, description) = MARKETING_DE;
        assert_eq!(marketing["status"], "GRANTED");
        assert_eq!(marketing["proof"]["wordingVersion"], wording_version(Some("de"), label, description), "{marketing}");
        let refused = post_form(&app, &path, &[("language", "fr"), ("consent", "marketing.email"), ("action", "save")]).await;
        assert_eq!(refused.status(), 400, "a language the pages do not speak is no wording anyone saw");
    }

    async fn granting_email_marketing_again_on_the_page_lifts_the_unsubscribe_and_mail_flows_again(app) {
        let smtp = SmtpServer::start().await;
        let mut settings = app.settings.clone();
        settings.smtp_url = Some(secrecy::SecretString::from(smtp.url()));
        let app = rapport_e2e::respawn(&app, settings).await;
        let Setup { contact, token } = setup(&app).await;
        let unsubscribe = issue(&app, &contact, "UNSUBSCRIBE").await;
        assert_eq!(one_click_unsubscribe(&app, &unsubscribe).await.status(), 200);
        assert_eq!(consent(&state(&app, &contact).await, "marketing", "EMAIL")["status"], "DENIED");
        assert_eq!(suppressions(&app, "ada@example.com").await, ["UNSUBSCRIBE"]);

        // Bea unsubscribed too, and her mailbox bounced for good since: that stays whatever she ticks.
        let bea = app
            .upsert_contact(json!({ "email": "bea@example.com", "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }] }))
            .await["id"].as_str().unwrap().to_owned();
        assert_eq!(one_click_unsubscribe(&app, &issue(&app, &bea, "UNSUBSCRIBE").await).await.status(), 200);
        app.data("mutation { suppressAddress(address: \"bea@example.com\", reason: HARD_BOUNCE) }", json!({})).await;

        // An admin granting consent through the API proves nothing about who holds the mailbox.
        app.data("mutation($id: ID!) { setConsent(input: { contactId: $id, purpose: \"marketing\", channel: EMAIL, status: GRANTED }) { id } }", json!({ "id": contact })).await;
        assert_eq!(suppressions(&app, "ada@example.com").await, ["UNSUBSCRIBE"], "the API leaves the list alone");

        // Ada saves her own page with the box ticked (the admin's grant shows it ticked already):
        // her own decision, recorded anew.
        let response = post_form(&app, &format!("/preferences/{token}"), &[("topic", "news"), ("frequency.news", "weekly"), ("consent", "marketing.email"), ("field.first_name", "Ada"), ("action", "save")]).await;
        assert_eq!(response.status(), 303);
        let renewed = consent(&state(&app, &contact).await, "marketing", "EMAIL");
        assert_eq!((&renewed["status"], &renewed["source"]), (&json!("GRANTED"), &json!("PREFERENCE_CENTER")), "{renewed}");
        assert!(suppressions(&app, "ada@example.com").await.is_empty(), "her own decision lifts her unsubscribe");
        let log = app.data("{ auditLog(filter: { action: \"address.unsuppressed\" }) { nodes { actor { kind id } changes } } }", json!({})).await;
        let lifted = &log["auditLog"]["nodes"][0];
        assert_eq!(lifted["actor"], json!({ "kind": "contact_token", "id": contact }), "{log:#}");
        assert!(lifted["changes"].to_string().contains("unsubscribe"), "{log:#}");

        // Bea ticks the box again over GraphQL, as the page's script saves: her bounce stays.
        let bea_token = issue(&app, &bea, "PREFERENCES").await;
        let save = "mutation($input: SavePreferencesInput!) { savePreferences(input: $input) }";
        let input = json!({ "input": { "subscribed": [], "frequencies": [], "granted": [{ "purpose": "marketing", "channel": "EMAIL" }], "fields": [], "language": "en" } });
        let (status, body) = app.graphql_as(Some(&bea_token), save, input).await;
        assert_eq!((status, &body["data"]["savePreferences"]), (200, &json!(true)), "{body}");
        assert_eq!(suppressions(&app, "bea@example.com").await, ["HARD_BOUNCE"], "only the unsubscribe is lifted");

        // And marketing mail reaches Ada again.
        let create = "mutation($input: CreateEmailInput!) { createEmail(input: $input) { email { id } } }";
        let email = app
            .data(create, json!({ "input": { "name": "News", "type": "MARKETING", "subject": "News", "html": "<p>News</p>", "from": { "address": "news@example.com" } } }))
            .await["createEmail"]["email"]["id"].clone();
        let send = "mutation($input: SendEmailInput!) { sendEmail(input: $input) { created } }";
        app.data(send, json!({ "input": { "emailId": email, "contact": { "id": contact } } })).await;
        let message = smtp.wait_for(1).await.remove(0);
        assert_eq!(message.rcpt_to, ["ada@example.com"]);
    }
}
