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
/// `press` (a key or a list of keys, to whatever has focus), `reload`, `goto` (a URL),
/// `viewport` ([width, height]). Queries, whose answers are in `results`: `text`, `checked`,
/// `value`, `count` (a selector), `focused` ({tag, type, name, value, text} or null), `tab_to`
/// (a selector: presses Tab until it has focus; what had focus after each press), `title`,
/// `url`, `screenshot` (a path, relative ones under target/screenshots/), `axe` (violations).
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
        // Ada's link with Bea's id put in, Ada's signature kept: what someone would try.
        let (base, token) = delivered.unsubscribe_url.rsplit_once('/').expect("a token in the link");
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3, "a JWT: {token}");
        let mut claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).expect("base64 claims")).expect("JSON claims");
        assert_eq!(claims["sub"], json!(delivered.contact_id), "the token names its contact: {claims}");
        claims["sub"] = json!(bea);
        let forged = format!("{base}/{}.{}.{}", parts[0], URL_SAFE_NO_PAD.encode(claims.to_string()), parts[2]);

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
