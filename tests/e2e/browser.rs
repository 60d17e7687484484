//! The pages customers see, in a real browser: Debian's headless Chromium driven by Playwright
//! (tests/browser/run.mjs, a thin driver), opening links from mail the SMTP server captured.
//! `visit` is the reusable part: a scenario of steps in, what the browser saw out; every judgement
//! (axe-core's findings, requests to other hosts, page weight) is made here in Rust.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rapport_e2e::{Settings, TestApp, on_both_databases, repository_root, respawn, smtp::SmtpServer};
use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// A browser run that takes longer than this has hung; a normal one takes a few seconds.
const PATIENCE: Duration = Duration::from_secs(120);

/// What a page may weigh, every response body of its load added up.
const PAGE_BUDGET_BYTES: u64 = 60 * 1024;

pub const DESKTOP: [u32; 2] = [1280, 800];
pub const PHONE: [u32; 2] = [390, 844];

/// What the browser saw in one run of a scenario.
#[derive(Debug, Deserialize)]
pub struct Outcome {
    /// The title and address of the page the run ended on.
    pub title: Option<String>,
    pub url: String,
    /// One per step, in order: what a query step found, `null` for an action.
    pub results: Vec<Value>,
    /// Every request the page made, in the order made.
    pub requests: Vec<Request>,
    pub console: Vec<ConsoleMessage>,
    /// The scenario's steps, to tell which results are axe-core's.
    #[serde(skip)]
    pub steps: Vec<Value>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Request {
    pub method: String,
    pub url: String,
    /// None when no response came.
    pub status: Option<u16>,
    /// Playwright's resource type: `document`, `stylesheet`, `image`, `script` …
    #[serde(rename = "type")]
    pub kind: String,
    /// The response body's length, decoded.
    pub bytes: u64,
    /// The index of the step that made the request; None while the scenario's `url` opened.
    pub step: Option<usize>,
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsoleMessage {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: String,
}

#[derive(Deserialize)]
struct Report {
    #[serde(flatten)]
    outcome: Outcome,
    error: Option<String>,
}

/// Runs `scenario` in headless Chromium and returns what the browser saw; panics, with all the
/// driver said, if a step failed. (Not called `run`: `on_both_databases!` defines a `run` of its
/// own in each test's module.) The scenario (documented in tests/browser/run.mjs):
///
/// ```json
/// { "url": "…", "locale": "de-DE", "viewport": [390, 844], "javascript": false,
///   "steps": [{ "axe": true }, { "press": ["Tab", "Enter"] }, { "text": "[role=status]" }] }
/// ```
///
/// Actions: `click`, `check`, `uncheck` (a selector), `fill` and `select` ([selector, value]),
/// `press` (a key or a list of keys, to whatever has focus), `type` (text, a key per character,
/// to whatever has focus), `reload`, `goto` (a URL),
/// `viewport` ([width, height]). Queries, whose answers are in `results`: `text`, `checked`,
/// `value`, `count` (a selector), `focused` ({tag, type, name, value, text} or null), `tab_to`
/// (a selector: presses Tab until it has focus; what had focus after each press), `title`,
/// `url`, `screenshot` (a path, relative ones under target/screenshots/), `axe` (violations),
/// `aria` (a selector: the roles and accessible names assistive technology is told, as YAML).
pub async fn visit(mut scenario: Value) -> Outcome {
    let chromium = chromium();
    assert!(
        chromium.exists(),
        "Chromium is not installed at {}: tests/run installs Debian's chromium package (or set CHROMIUM)",
        chromium.display()
    );
    let driver = repository_root().join("tests/browser");
    assert!(
        driver.join("node_modules/playwright-core").exists() && driver.join("node_modules/axe-core").exists(),
        "Playwright is not installed: run `npm ci` in tests/browser (tests/run does)"
    );
    if scenario.get("screenshots").is_none() {
        scenario["screenshots"] = json!(screenshot_dir());
    }
    let steps = scenario["steps"].as_array().cloned().unwrap_or_default();

    let mut child = tokio::process::Command::new("node")
        .arg("run.mjs")
        .current_dir(&driver)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node.js is required for the browser tests: tests/run installs it)");
    let mut stdin = child.stdin.take().expect("the driver's stdin");
    stdin.write_all(scenario.to_string().as_bytes()).await.expect("scenario written to the driver");
    drop(stdin);
    let output = tokio::time::timeout(PATIENCE, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the browser run did not finish in {PATIENCE:?}: {scenario:#}"))
        .expect("the driver's output");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report: Report = serde_json::from_str(&stdout)
        .unwrap_or_else(|error| panic!("the driver printed no report ({error}):\n{stdout}\n{stderr}"));
    if let Some(error) = &report.error {
        let Outcome { results, requests, console, .. } = &report.outcome;
        panic!(
            "the browser run failed at {error}\nscenario: {scenario:#}\nresults: {results:#?}\nrequests: {requests:#?}\nconsole: {console:#?}\n{stderr}"
        );
    }
    assert!(output.status.success(), "the driver failed:\n{stderr}");
    Outcome { steps, ..report.outcome }
}

/// Debian's Chromium, or the one `CHROMIUM` names.
pub fn chromium() -> PathBuf {
    std::env::var_os("CHROMIUM").map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

/// Where screenshots are kept for people to look at: target/screenshots/.
pub fn screenshot_dir() -> PathBuf {
    repository_root().join("target/screenshots")
}

impl Outcome {
    /// What step `index` found.
    pub fn result(&self, index: usize) -> &Value {
        &self.results[index]
    }

    /// axe-core's violations of serious or critical impact, from every `axe` step.
    pub fn serious_violations(&self) -> Vec<&Value> {
        self.steps
            .iter()
            .zip(&self.results)
            .filter(|(step, _)| step.get("axe").is_some())
            .flat_map(|(_, violations)| violations.as_array().into_iter().flatten())
            .filter(|violation| matches!(violation["impact"].as_str(), Some("serious" | "critical")))
            .collect()
    }

    /// Requests to anywhere but `base`'s scheme, host and port.
    pub fn foreign_requests(&self, base: &str) -> Vec<&Request> {
        let home = origin(base);
        self.requests.iter().filter(|request| origin(&request.url) != home).collect()
    }

    /// The requests made by step `step` (None: while the scenario's `url` opened).
    pub fn requests_of(&self, step: Option<usize>) -> impl Iterator<Item = &Request> {
        self.requests.iter().filter(move |request| request.step == step)
    }

    /// What the page loaded by step `step` weighs: every response body added up.
    pub fn weight(&self, step: Option<usize>) -> u64 {
        self.requests_of(step).map(|request| request.bytes).sum()
    }

    /// The document that step `step` loaded (the last, after redirects).
    pub fn document(&self, step: Option<usize>) -> &Request {
        self.requests_of(step)
            .filter(|request| request.kind == "document")
            .last()
            .unwrap_or_else(|| panic!("step {step:?} loaded no page: {:#?}", self.requests))
    }

    /// Console errors: CSP violations and uncaught exceptions among them. Not Chromium's notes of
    /// responses that were not 2xx: the statuses in `requests` tell those, and Chromium also
    /// writes one for the /favicon.ico it asks for by itself, which Playwright does not show.
    pub fn console_errors(&self) -> Vec<&ConsoleMessage> {
        self.console
            .iter()
            .filter(|message| message.kind == "error" || message.kind == "pageerror")
            .filter(|message| !message.text.starts_with("Failed to load resource: the server responded with a status"))
            .collect()
    }

    /// The checks every page must pass: no serious or critical axe-core violation, nothing
    /// fetched from another host, no console error, and the first load within the budget.
    pub fn assert_wholesome(&self, base: &str) {
        let violations = self.serious_violations();
        assert!(violations.is_empty(), "axe-core found serious or critical violations: {violations:#?}");
        let foreign = self.foreign_requests(base);
        assert!(foreign.is_empty(), "the page made requests to other hosts: {foreign:#?}");
        let errors: Vec<String> =
            self.console_errors().iter().map(|message| format!("{}: {}", message.kind, message.text)).collect();
        assert!(errors.is_empty(), "the page logged errors: {errors:#?}");
        let weight = self.weight(None);
        assert!(weight < PAGE_BUDGET_BYTES, "the page weighs {weight} bytes: {:#?}", self.requests);
        let failed: Vec<_> = self
            .requests
            .iter()
            .filter(|request| request.failure.is_some() || request.kind != "document" && request.status != Some(200))
            .collect();
        assert!(failed.is_empty(), "what the pages need did not load: {failed:#?}");
    }
}

/// `scheme://host:port` of a URL, for comparing where requests went.
fn origin(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    format!("{scheme}://{authority}")
}

/// The width and height of the PNG at `path`, which must be one.
fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap_or_else(|error| panic!("no screenshot at {}: {error}", path.display()));
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n") && bytes.len() > 24, "{} is not a PNG", path.display());
    let number = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().expect("four bytes"));
    (number(16), number(20))
}

// The unsubscribe page, reached as a customer does: from the List-Unsubscribe link of a real
// marketing email.

/// A marketing email as delivered to a contact who has consented to it.
struct Delivered {
    /// A server on the test's database that delivers mail (the test's own has no relay).
    app: TestApp,
    contact_id: String,
    /// The message's unsubscribe link, pointed at `app`.
    unsubscribe_url: String,
    _smtp: SmtpServer,
}

async fn deliver_marketing_email(app: &TestApp, address: &str) -> Delivered {
    let smtp = SmtpServer::start().await;
    let mut settings: Settings = app.settings.clone();
    settings.smtp_url = Some(SecretString::from(smtp.url()));
    settings.public_url = "https://mail.example.com/".to_owned();
    let app = respawn(app, settings).await;
    let consents = json!([{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }]);
    let contact = app.upsert_contact(json!({ "email": address, "firstName": "Ada", "consents": consents })).await;
    let contact_id = contact["id"].as_str().expect("contact id").to_owned();
    let create = "mutation($input: CreateEmailInput!) { createEmail(input: $input) { email { id } } }";
    let input = json!({
        "name": "News", "type": "MARKETING", "subject": "News", "html": "<p>News</p>",
        "from": { "address": "news@example.com" }, "tracking": false,
    });
    let email = app.data(create, json!({ "input": input })).await;
    let send = "mutation($input: SendEmailInput!) { sendEmail(input: $input) { send { id } } }";
    let input = json!({ "emailId": email["createEmail"]["email"]["id"], "contact": { "id": contact_id } });
    app.data(send, json!({ "input": input })).await;
    let message = smtp.wait_for(1).await.remove(0);
    let header = message.header("List-Unsubscribe").expect("List-Unsubscribe on marketing mail");
    let unsubscribe_url = header.trim_matches(['<', '>']).replace("https://mail.example.com", &app.address);
    Delivered { app, contact_id, unsubscribe_url, _smtp: smtp }
}

async fn marketing_email_consent(app: &TestApp, contact_id: &str) -> Value {
    let query = "query($id: ID!) { contact(by: { id: $id }) { consents { purpose channel status source proof { userAgent } } } }";
    let data = app.data(query, json!({ "id": contact_id })).await;
    data["contact"]["consents"]
        .as_array()
        .expect("consents")
        .iter()
        .find(|consent| consent["purpose"] == "marketing" && consent["channel"] == "EMAIL")
        .cloned()
        .unwrap_or_else(|| panic!("no marketing email consent: {data:#}"))
}

/// `link` with `other` put in as the contact its token names and `owner`'s signature kept: what
/// someone would try.
fn forge(link: &str, owner: &str, other: &str) -> String {
    let (base, token) = link.rsplit_once('/').expect("a token in the link");
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWT: {token}");
    let mut claims: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64 claims")).expect("JSON claims");
    assert_eq!(claims["sub"], json!(owner), "the token names its contact: {claims}");
    claims["sub"] = json!(other);
    format!("{base}/{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2])
}

/// Opens the link, checks the page, then unsubscribes with Tab and Enter alone.
async fn unsubscribe_with_the_keyboard(app: TestApp, javascript: bool) {
    let delivered = deliver_marketing_email(&app, "ada@example.com").await;
    let outcome = visit(json!({
        "url": delivered.unsubscribe_url,
        "locale": "en-US",
        "javascript": javascript,
        "steps": [
            { "axe": true },
            { "text": "h1" },
            { "tab_to": "form button[type=submit]" },
            { "press": "Enter" },
            { "text": "[role=status]" },
            { "axe": true },
        ],
    }))
    .await;

    outcome.assert_wholesome(&delivered.app.address);
    assert_eq!(outcome.document(None).status, Some(200));
    assert_eq!(outcome.result(1), "Unsubscribe");
    let tabbed = outcome.result(2).as_array().expect("what had focus");
    assert!(tabbed.len() <= 2, "the page's one button is at most a skip link away: {tabbed:#?}");
    assert_eq!(tabbed.last().unwrap()["text"], "Unsubscribe");
    let posted = outcome.document(Some(3));
    assert_eq!((posted.method.as_str(), posted.url.as_str()), ("POST", delivered.unsubscribe_url.as_str()));
    assert_eq!(posted.status, Some(200));
    assert!(outcome.result(4).as_str().unwrap().contains("You will not receive marketing email"), "{outcome:#?}");
    assert_eq!(outcome.title.as_deref(), Some("You are unsubscribed · Rapport"));
    assert_eq!(outcome.url, delivered.unsubscribe_url);

    let consent = marketing_email_consent(&delivered.app, &delivered.contact_id).await;
    assert_eq!((&consent["status"], &consent["source"]), (&json!("DENIED"), &json!("UNSUBSCRIBE")), "{consent}");
    assert!(consent["proof"]["userAgent"].as_str().unwrap_or_default().contains("Chrome"), "{consent}");
}

on_both_databases! {
    async fn a_captured_unsubscribe_link_is_completed_with_the_keyboard_alone(app) {
        unsubscribe_with_the_keyboard(app, true).await;
    }

    async fn a_captured_unsubscribe_link_works_with_javascript_disabled(app) {
        unsubscribe_with_the_keyboard(app, false).await;
    }

    async fn a_forged_unsubscribe_link_shows_the_friendly_not_found_page_and_changes_nothing(app) {
        let delivered = deliver_marketing_email(&app, "ada@example.com").await;
        let bea = delivered.app.upsert_contact(json!({
            "email": "bea@example.com",
            "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }],
        })).await;
        let bea = bea["id"].as_str().expect("contact id");
        let forged = forge(&delivered.unsubscribe_url, &delivered.contact_id, bea);

        let outcome = visit(json!({
            "url": forged,
            "steps": [{ "axe": true }, { "text": "h1" }, { "text": "main" }, { "count": "form, button, input" }],
        }))
        .await;
        outcome.assert_wholesome(&delivered.app.address);
        assert_eq!(outcome.document(None).status, Some(404));
        assert_eq!(outcome.result(1), "This link does not work any more");
        assert!(outcome.result(2).as_str().unwrap().contains("The latest email from us has a link that works"));
        assert_eq!(outcome.result(3), 0, "nothing to submit");
        for contact in [delivered.contact_id.as_str(), bea] {
            assert_eq!(marketing_email_consent(&delivered.app, contact).await["status"], "GRANTED");
        }
    }

    async fn screenshots_of_the_unsubscribe_page_in_english_and_german_on_desktop_and_phone(app) {
        let delivered = deliver_marketing_email(&app, "ada@example.com").await;
        for (language, locale, title) in [("en", "en-US", "Unsubscribe · Rapport"), ("de", "de-DE", "Abmelden · Rapport")] {
            let desktop = format!("unsubscribe-{language}-desktop.png");
            let phone = format!("unsubscribe-{language}-phone.png");
            let outcome = visit(json!({
                "url": delivered.unsubscribe_url,
                "locale": locale,
                "viewport": DESKTOP,
                "steps": [
                    { "screenshot": desktop },
                    { "viewport": PHONE },
                    { "screenshot": phone },
                    { "axe": true },
                    { "title": true },
                ],
            }))
            .await;
            outcome.assert_wholesome(&delivered.app.address);
            assert_eq!(outcome.result(4), title);
            for (file, [width, height]) in [(desktop, DESKTOP), (phone, PHONE)] {
                let (shot_width, shot_height) = png_size(&screenshot_dir().join(&file));
                assert_eq!(shot_width, width, "{file} is as wide as the viewport");
                assert!(shot_height >= height, "{file} shows the whole page");
            }
        }
        assert_eq!(marketing_email_consent(&delivered.app, &delivered.contact_id).await["status"], "GRANTED", "looking changes nothing");
    }
}

// The preference center, reached as a customer does: from the link it mails to whoever asks for
// one at /preferences.

/// The address the center's mail links to, swapped for the test server's in the links.
const PUBLIC_URL: &str = "https://prefs.example.com";

/// What a contact's page can change, read back through GraphQL.
const PREFERENCES_STATE: &str = "query($id: ID!) { contact(by: { id: $id }) {
  firstName attributes
  topics { topic { key } status frequency }
  consents { purpose channel status source proof { userAgent wordingVersion } }
} }";

/// A preference center as an admin sets it up (three topics, a custom field `city` that
/// contacts may edit besides their first name, a company name, a brand colour, a footer, a
/// privacy policy and a sender), on a server that delivers its mail to `smtp`.
struct Center {
    app: TestApp,
    smtp: SmtpServer,
}

async fn preference_center(app: &TestApp) -> Center {
    let smtp = SmtpServer::start().await;
    let mut settings: Settings = app.settings.clone();
    settings.smtp_url = Some(SecretString::from(smtp.url()));
    settings.public_url = PUBLIC_URL.to_owned();
    let app = respawn(app, settings).await;
    let topics = [
        ("news", "News", Some("What is new at the café, once a week at most.")),
        ("offers", "Offers", Some("Discounts for subscribers only.")),
        ("events", "Events", None),
    ];
    for (key, name, description) in topics {
        let define = "mutation($input: DefineTopicInput!) { defineTopic(input: $input) { key } }";
        app.data(define, json!({ "input": { "key": key, "name": name, "description": description } })).await;
    }
    let define = "mutation($input: DefineFieldInput!) { defineField(input: $input) { key } }";
    app.data(define, json!({ "input": { "key": "city", "label": "City", "type": "STRING" } })).await;
    let update =
        "mutation($input: UpdatePreferenceCenterInput!) { updatePreferenceCenter(input: $input) { companyName } }";
    let input = json!({
        "companyName": "Café Example",
        "primaryColor": "#0f766e",
        "footerText": "Café Example · 1 Market Street · Leeds",
        "privacyPolicyUrl": "https://cafe.example.com/privacy",
        "editableFields": ["first_name", "city"],
        "senderAddress": "hello@cafe.example.com",
        "senderName": "Café Example",
    });
    app.data(update, json!({ "input": input })).await;
    Center { app, smtp }
}

impl Center {
    /// A contact with marketing email consent, subscribed to `news` weekly; its id.
    async fn contact(&self, address: &str, locale: Option<&str>) -> String {
        let consents = json!([{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }]);
        let input = json!({ "email": address, "firstName": "Ada", "locale": locale, "consents": consents });
        let id = self.app.upsert_contact(input).await["id"].as_str().expect("contact id").to_owned();
        let subscribe =
            "mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"news\", frequency: WEEKLY) { status } }";
        self.app.data(subscribe, json!({ "id": id })).await;
        id
    }

    /// Asks for a link at /preferences as a customer does and returns the one the email brings,
    /// pointed at the test server.
    async fn mailed_link(&self, address: &str) -> String {
        let asked = self.smtp.received().len();
        let response = self
            .app
            .client
            .post(self.app.url("/preferences"))
            .form(&[("address", address), ("website", "")])
            .send()
            .await
            .expect("link asked for");
        assert_eq!(response.status(), 200);
        let message = self.smtp.wait_for(asked + 1).await.remove(asked);
        assert_eq!(message.rcpt_to, [address]);
        preferences_link(&message.html.expect("an HTML part")).replace(PUBLIC_URL, &self.app.address)
    }

    async fn state(&self, id: &str) -> Value {
        self.app.data(PREFERENCES_STATE, json!({ "id": id })).await["contact"].clone()
    }
}

/// The preferences link in a mail's HTML, decoded as a mail client does (`/` is `&#x2f;`).
fn preferences_link(html: &str) -> String {
    let link = html
        .split("href=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .map(|href| href.replace("&#x2f;", "/").replace("&amp;", "&"))
        .find(|href| href.contains("/preferences/"))
        .unwrap_or_else(|| panic!("no preferences link in {html}"));
    assert!(link.starts_with(&format!("{PUBLIC_URL}/preferences/")), "{link}");
    link
}

/// The current subscription to `key` in a state from `Center::state`.
fn subscription(state: &Value, key: &str) -> (String, String) {
    let topic = state["topics"].as_array().expect("topics").iter().find(|topic| topic["topic"]["key"] == key);
    let topic = topic.unwrap_or_else(|| panic!("no subscription to {key}: {state:#}"));
    (topic["status"].as_str().unwrap().to_owned(), topic["frequency"].as_str().unwrap().to_owned())
}

/// The current consent for `purpose` on `channel` in a state from `Center::state`, or null.
fn current_consent(state: &Value, purpose: &str, channel: &str) -> Value {
    let consents = state["consents"].as_array().expect("consents");
    consents
        .iter()
        .find(|consent| consent["purpose"] == purpose && consent["channel"] == channel)
        .cloned()
        .unwrap_or_default()
}

/// What the changes made on the page (offers ticked at daily, news unticked, text messages for
/// marketing allowed, the first name Adele) must have stored, with the browser's proof and the
/// wording the page showed in `language`.
async fn assert_changes_stored(center: &Center, contact: &str, language: &str) {
    let stored = center.state(contact).await;
    assert_eq!(stored["firstName"], "Adele", "{stored:#}");
    assert_eq!(subscription(&stored, "news").0, "UNSUBSCRIBED");
    assert_eq!(subscription(&stored, "offers"), ("SUBSCRIBED".to_owned(), "DAILY".to_owned()));
    assert!(stored["topics"].as_array().unwrap().iter().all(|topic| topic["topic"]["key"] != "events"), "{stored:#}");
    let sms = current_consent(&stored, "marketing", "SMS");
    assert_eq!((&sms["status"], &sms["source"]), (&json!("GRANTED"), &json!("PREFERENCE_CENTER")), "{sms}");
    assert!(sms["proof"]["userAgent"].as_str().unwrap_or_default().contains("Chrome"), "the browser's own: {sms}");
    let version = sms["proof"]["wordingVersion"].as_str().unwrap_or_default();
    assert!(version.starts_with(&format!("{language}:")) && version.len() == language.len() + 13, "{sms}");
    let email = current_consent(&stored, "marketing", "EMAIL");
    assert_eq!((&email["status"], &email["source"]), (&json!("GRANTED"), &json!("API")), "left as it was: {email}");
    assert_eq!(current_consent(&stored, "analytics", "EMAIL"), Value::Null, "nothing recorded for boxes left alone");
}

/// The page's title and saved notice in one language.
struct Texts {
    language: &'static str,
    title: &'static str,
    saved: &'static str,
}

const ENGLISH: Texts =
    Texts { language: "en", title: "Your email preferences · Café Example", saved: "Your preferences are saved." };
const GERMAN: Texts = Texts {
    language: "de",
    title: "Ihre E-Mail-Einstellungen · Café Example",
    saved: "Ihre Einstellungen sind gespeichert.",
};

/// Opens a mailed link, changes topics, a frequency, a consent and the first name with the
/// mouse, saves, reloads and sees what was stored; then reads it back through GraphQL. The
/// browser asks for English; a contact's own `locale` comes first.
async fn preferences_saved_from_a_mailed_link(app: TestApp, javascript: bool, locale: Option<&str>, texts: Texts) {
    let center = preference_center(&app).await;
    let contact = center.contact("ada@example.com", locale).await;
    let link = center.mailed_link("ada@example.com").await;
    let outcome = visit(json!({
        "url": link,
        "locale": "en-US",
        "javascript": javascript,
        "steps": [
            { "axe": true },
            { "checked": "#topic-news" },
            { "value": "#field-first_name" },
            { "check": "#topic-offers" },
            { "uncheck": "#topic-news" },
            { "select": ["#frequency-offers", "daily"] },
            { "check": "#consent-marketing-sms" },
            { "fill": ["#field-first_name", "Adele"] },
            { "click": "button[name=action][value=save]" },
            { "text": "#status .notice" },
            { "axe": true },
            { "reload": true },
            { "checked": "#topic-news" },
            { "checked": "#topic-offers" },
            { "value": "#frequency-offers" },
            { "checked": "#consent-marketing-sms" },
            { "checked": "#consent-marketing-email" },
            { "value": "#field-first_name" },
            { "checked": "#topic-events" },
        ],
    }))
    .await;

    outcome.assert_wholesome(&center.app.address);
    assert_eq!(outcome.document(None).status, Some(200));
    assert_eq!(
        (outcome.result(1), outcome.result(2)),
        (&json!(true), &json!("Ada")),
        "the page shows the stored state"
    );
    assert_eq!(outcome.result(9), texts.saved);
    assert_eq!(outcome.title.as_deref(), Some(texts.title));
    let save: Vec<_> = outcome.requests_of(Some(8)).map(|request| (request.method.as_str(), request.status)).collect();
    if javascript {
        let api = outcome.requests_of(Some(8)).find(|request| request.url.ends_with("/graphql"));
        assert_eq!(api.map(|request| request.status), Some(Some(200)), "saved through the API: {save:?}");
        assert!(outcome.requests_of(Some(8)).all(|request| request.kind != "document"), "no reload: {save:?}");
    } else {
        assert_eq!(save.first(), Some(&("POST", Some(303))), "the form posted: {save:?}");
        assert_eq!(outcome.document(Some(8)).url, format!("{link}?saved=1"), "redirected back to the page");
    }
    let after_reload: Vec<&Value> = (12..=18).map(|step| outcome.result(step)).collect();
    let expected = [json!(false), json!(true), json!("daily"), json!(true), json!(true), json!("Adele"), json!(false)];
    assert_eq!(after_reload, expected.iter().collect::<Vec<_>>(), "the page shows what was stored");
    assert_changes_stored(&center, &contact, texts.language).await;
}

on_both_databases! {
    async fn a_mailed_preferences_link_saves_changes_that_a_reload_and_the_api_show(app) {
        preferences_saved_from_a_mailed_link(app, true, None, ENGLISH).await;
    }

    async fn a_mailed_preferences_link_saves_without_javascript_in_the_contacts_language(app) {
        preferences_saved_from_a_mailed_link(app, false, Some("de-DE"), GERMAN).await;
    }

    async fn the_preference_page_is_completed_and_saved_with_the_keyboard_alone(app) {
        let center = preference_center(&app).await;
        let contact = center.contact("ada@example.com", None).await;
        let link = center.mailed_link("ada@example.com").await;
        let outcome = visit(json!({
            "url": link,
            "steps": [
                { "tab_to": "#topic-news" },
                { "press": "Space" },
                { "tab_to": "#topic-offers" },
                { "press": "Space" },
                { "tab_to": "#frequency-offers" },
                { "press": "ArrowDown" },
                { "tab_to": "#consent-marketing-sms" },
                { "press": "Space" },
                { "tab_to": "#field-first_name" },
                { "press": "Control+A" },
                { "type": "Adele" },
                { "tab_to": "button[name=action][value=save]" },
                { "press": "Enter" },
                { "text": "#status .notice" },
                { "focused": true },
                { "axe": true },
                { "reload": true },
                { "checked": "#topic-news" },
                { "checked": "#topic-offers" },
                { "value": "#frequency-offers" },
                { "checked": "#consent-marketing-sms" },
                { "value": "#field-first_name" },
                { "aria": "#preferences" },
            ],
        }))
        .await;

        outcome.assert_wholesome(&center.app.address);
        // Tab goes through the page in the order it reads: skip link, each topic then its
        // frequency, each purpose's channels, the fields, Save.
        let order: Vec<String> = [0, 2, 4, 6, 8, 11]
            .into_iter()
            .flat_map(|step| outcome.result(step).as_array().expect("what had focus").clone())
            .map(|element| match (element["name"].as_str(), element["value"].as_str()) {
                // A box or button by the value it sends; a field by its name alone.
                (Some(name), Some(value)) if matches!(element["type"].as_str(), Some("checkbox" | "submit")) => format!("{name}={value}"),
                (Some(name), _) => name.to_owned(),
                (None, _) => format!("{}:{}", element["tag"].as_str().unwrap_or_default(), element["text"].as_str().unwrap_or_default()),
            })
            .collect();
        // Topics and purposes are in the order of their keys.
        let mut expected = vec!["a:Skip to content".to_owned()];
        for topic in ["events", "news", "offers"] {
            expected.extend([format!("topic={topic}"), format!("frequency.{topic}")]);
        }
        for purpose in ["analytics", "marketing", "profiling"] {
            expected.extend(["email", "sms", "push"].map(|channel| format!("consent={purpose}.{channel}")));
        }
        expected.extend(["field.first_name", "field.city", "action=save"].map(str::to_owned));
        assert_eq!(order, expected, "focus follows the page's order");
        assert_eq!(outcome.result(13), "Your preferences are saved.");
        assert_eq!(outcome.result(14)["value"], "save", "focus stays on Save after saving: {:?}", outcome.result(14));
        let stored: Vec<&Value> = (17..=21).map(|step| outcome.result(step)).collect();
        assert_eq!(stored, [&json!(false), &json!(true), &json!("daily"), &json!(true), &json!("Adele")]);
        // What a screen reader announces: every group and control named, and each "How often"
        // saying which topic it is for.
        let told = outcome.result(22).as_str().expect("an ARIA snapshot");
        for group in ["Topics", "Analytics", "Marketing", "Profiling", "About you"] {
            assert!(told.contains(&format!("- group \"{group}\"")), "{told}");
        }
        for topic in ["Events", "News", "Offers"] {
            assert!(told.contains(&format!("- combobox \"How often {topic}\"")), "{told}");
        }
        let controls = ["- checkbox", "- combobox", "- textbox", "- button"];
        let unnamed: Vec<&str> = told
            .lines()
            .map(str::trim)
            .filter(|line| controls.iter().any(|role| line.starts_with(role)) && !line.contains('"'))
            .collect();
        assert!(unnamed.is_empty(), "controls without a name: {unnamed:#?}");
        assert_changes_stored(&center, &contact, "en").await;
    }

    async fn a_forged_preferences_link_offers_a_fresh_link_and_changes_nothing(app) {
        let center = preference_center(&app).await;
        let ada = center.contact("ada@example.com", None).await;
        let bea = center.contact("bea@example.com", None).await;
        let link = center.mailed_link("ada@example.com").await;
        let forged = forge(&link, &ada, &bea);
        let before = (center.state(&ada).await, center.state(&bea).await);
        let outcome = visit(json!({
            "url": forged,
            "steps": [
                { "axe": true },
                { "text": "h1" },
                { "count": "input[name=topic], input[name=consent], input[name^='field.']" },
                { "fill": ["#address", "bea@example.com"] },
                { "click": "form button[type=submit]" },
                { "text": "[role=status]" },
                { "axe": true },
            ],
        }))
        .await;
        outcome.assert_wholesome(&center.app.address);
        assert_eq!(outcome.document(None).status, Some(404));
        assert_eq!(outcome.result(1), "This link does not work any more");
        assert_eq!(outcome.result(2), 0, "nothing of Ada's or Bea's is shown");
        assert_eq!(outcome.document(Some(4)).method, "POST");
        assert!(outcome.result(5).as_str().unwrap().contains("a link to your preferences is on its way"), "{outcome:#?}");
        // The fresh link the page sent works.
        let fresh = center.smtp.wait_for(2).await.remove(1);
        assert_eq!(fresh.rcpt_to, ["bea@example.com"]);
        let fresh = preferences_link(&fresh.html.expect("an HTML part")).replace(PUBLIC_URL, &center.app.address);
        let response = center.app.client.get(&fresh).send().await.expect("fresh link");
        assert_eq!(response.status(), 200);
        assert_eq!((center.state(&ada).await, center.state(&bea).await), before, "nothing changed");
    }

    async fn unsubscribe_from_everything_on_the_preference_page(app) {
        let center = preference_center(&app).await;
        let contact = center.contact("ada@example.com", None).await;
        let link = center.mailed_link("ada@example.com").await;
        let outcome = visit(json!({
            "url": link,
            "steps": [
                { "count": "input[type=checkbox]:checked" },
                { "click": "button[name=action][value=unsubscribe_all]" },
                { "text": "#status .notice" },
                { "count": "input[type=checkbox]:checked" },
                { "value": "#field-first_name" },
                { "axe": true },
            ],
        }))
        .await;
        outcome.assert_wholesome(&center.app.address);
        assert_eq!(outcome.result(0), 2, "news and marketing email to begin with");
        assert_eq!(outcome.document(Some(1)).url, format!("{link}?unsubscribed=1"));
        assert!(outcome.result(2).as_str().unwrap().starts_with("You are unsubscribed from everything."), "{outcome:#?}");
        assert_eq!((outcome.result(3), outcome.result(4)), (&json!(0), &json!("Ada")));
        let stored = center.state(&contact).await;
        assert_eq!(subscription(&stored, "news").0, "UNSUBSCRIBED");
        let email = current_consent(&stored, "marketing", "EMAIL");
        assert_eq!((&email["status"], &email["source"]), (&json!("DENIED"), &json!("PREFERENCE_CENTER")), "{email}");
        assert!(email["proof"]["userAgent"].as_str().unwrap_or_default().contains("Chrome"), "{email}");
        let granted: Vec<_> = stored["consents"].as_array().unwrap().iter().filter(|consent| consent["status"] == "GRANTED").collect();
        assert!(granted.is_empty(), "{granted:#?}");
        assert_eq!(stored["firstName"], "Ada", "fields are left as they are");
    }

    async fn screenshots_of_the_preference_page_in_english_and_german_on_desktop_and_phone(app) {
        let center = preference_center(&app).await;
        let contact = center.contact("ada@example.com", None).await;
        center.app.data("mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"offers\", frequency: MONTHLY) { status } }", json!({ "id": contact })).await;
        let link = center.mailed_link("ada@example.com").await;
        let before = center.state(&contact).await;
        for (language, locale, texts) in [("en", "en-US", ENGLISH), ("de", "de-DE", GERMAN)] {
            let desktop = format!("preferences-{language}-desktop.png");
            let phone = format!("preferences-{language}-phone.png");
            let outcome = visit(json!({
                "url": link,
                "locale": locale,
                "viewport": DESKTOP,
                "steps": [
                    { "axe": true },
                    { "screenshot": desktop },
                    { "viewport": PHONE },
                    { "screenshot": phone },
                    { "axe": true },
                    { "title": true },
                ],
            }))
            .await;
            outcome.assert_wholesome(&center.app.address);
            assert_eq!(outcome.result(5), texts.title);
            let brand = outcome.requests.iter().find(|request| request.url.ends_with("/assets/brand.css"));
            assert_eq!(brand.and_then(|request| request.status), Some(200), "the brand colour is applied");
            for (file, [width, height]) in [(desktop, DESKTOP), (phone, PHONE)] {
                let (shot_width, shot_height) = png_size(&screenshot_dir().join(&file));
                assert_eq!(shot_width, width, "{file} is as wide as the viewport");
                assert!(shot_height >= height, "{file} shows the whole page");
            }
        }
        assert_eq!(center.state(&contact).await, before, "looking changes nothing");
    }
}
