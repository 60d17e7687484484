//! The preference page benchmark: how long `GET /preferences/{token}` takes on SQLite and on
//! PostgreSQL, alone, flat out under wrk and at a steady rate, both as the client sees it and
//! inside the server, and what the whole page weighs with its stylesheets and script. Results go
//! to `BENCHMARKS.md`.
//!
//! Run it with `cargo bench -p rapport --bench page_render` (needs `wrk` on PATH and a PostgreSQL
//! server, found like the end-to-end tests find theirs). Speed is measured here and never
//! asserted in tests.

// The shared helpers also POST GraphQL queries through wrk; this benchmark GETs pages.
#[path = "support/in_process.rs"]
mod in_process;
#[allow(dead_code)]
mod support;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::ExitCode,
    sync::Mutex,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};
use base64::Engine as _;
use futures_util::{StreamExt, TryStreamExt, stream};
use in_process::InProcess;
use rapport::{
    domain::{
        Change,
        access::ContactTokenPurpose,
        consent::{Channel, ConsentProof, ConsentSource, ConsentStatus, LegalBasis},
        contact::{CountryCode, EmailAddress, PersonName},
        field::FieldType,
        key::Key,
        topic::{Frequency, SubscriptionStatus},
    },
    service::{
        Actor, RequestContext, Services,
        consents::ConsentDecision,
        contacts::{ContactChanges, UpsertKey},
        fields::NewField,
        preferences::PreferenceCenterUpdate,
        topics::NewTopic,
    },
};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use support::{MEASURE, Machine, PostgresDatabase, WARM_UP, WRK_CONNECTIONS, WRK_THREADS, wait_for_quiet};
use tracing::{Metadata, Subscriber, span, subscriber::Interest};
use tracing_subscriber::{
    Layer,
    layer::{Context, SubscriberExt as _},
    registry::LookupSpan,
};

/// Contacts in each database, each with a token of its own; the load cycles through all of them.
const CONTACTS: usize = 300;
/// Writers seeding at once (SQLite takes one writer at a time; see http_throughput).
const SEED_CONCURRENCY_SQLITE: usize = 1;
const SEED_CONCURRENCY_POSTGRES: usize = 8;
/// Requests one after the other on one connection: unmeasured first, then timed.
const ALONE_WARM_UP: usize = 200;
const ALONE_REQUESTS: usize = 2_000;

/// The steady load runs at this share of what the database served flat out under wrk.
const STEADY_SHARE: f64 = 0.5;

/// The goals of the issue, stated once: the median render under load, and the whole page.
const GOAL_MEDIAN_MS: f64 = 5.0;
/// KB as 1000 bytes, the stricter reading.
const GOAL_WEIGHT_BYTES: usize = 60_000;

const TOPICS: [(&str, &str, &str); 5] = [
    ("weekly_digest", "Weekly digest", "The week's best articles, every Monday."),
    ("product_updates", "Product updates", "New features and changes, when they ship."),
    ("events", "Events", "Invitations to webinars and meet-ups near you."),
    ("offers", "Offers", "Discounts for customers, a few times a year."),
    ("research", "Research", "Requests to take part in short surveys and interviews."),
];
const ASSETS: [&str; 3] = ["/assets/page.css", "/assets/brand.css", "/assets/preferences.js"];

/// The text above the run. The benchmark rewrites it on every run, so that it always describes
/// the code that produced the numbers.
fn intro() -> String {
    format!(
        "## Preference page

How fast Rapport serves a contact's preference page, `GET /preferences/{{token}}`, and what the
page weighs. The goals: the page renders server-side in under {goal_ms:.0} ms at the median
under load, and the whole page with its CSS and JS weighs under {goal_kb} KB uncompressed
(1 KB = 1000 bytes) and makes no request to any other host.

Each database (a fresh SQLite file, then a fresh PostgreSQL database on the same machine) holds
a realistic center: {topics} topics with descriptions, the 3 built-in purposes (each shown
with its 3 channels), 3 editable fields (first name, country and a custom select field), a
company name, footer, privacy policy link and a small SVG logo as a `data:` URL; and {contacts}
contacts, each with a name, a country, the custom field, three consents, subscriptions to
three of the topics, and a preferences token of its own. The real server is started in
process (`Application::build`, all middleware, rate limits checked but raised above the load),
and every contact's page is fetched once and checked before anything is timed. Then, for each
database:

- **1 connection**: {alone} requests one after the other on one kept-alive connection (after
  {alone_warm_up} unmeasured), cycling through the tokens: the uncontended time. Then as many
  calls, one after the other, of what the handler asks of the services (`authenticate_bearer`
  and `preferences_view`) straight through the library: \"reads p50\" is the part of the server
  time spent reading the token and the page's data, the rest being HTTP, middleware and the
  template;
- **{connections} connections**: `wrk` with {threads} threads and {connections} connections for
  {measure} s after {warm_up} s of warm-up, cycling through the tokens: the server flat out. Each
  connection sends its next request as soon as the last one returns, so the times here are
  mostly queueing: by Little's law the median is about {connections} ÷ requests/s, whatever a
  page costs;
- **steady**: requests at a fixed rate of {steady_percent:.0} % of what that database served flat
  out, for {measure} s after {warm_up} s of warm-up, each sent when it is due whether or not the
  earlier ones have returned (an open loop, as visitors arrive; times run from when a request was
  due, so a stalled server cannot hide its backlog), from a client thread of its own: the page
  under a heavy but sustainable load. The goal is judged here.

\"p50\"/\"p99\" are what the client saw; \"server p50\"/\"server p99\" run from the request
entering the router (its `request` tracing span, recorded by a layer that listens to nothing
else) to the response body being handed to the connection, so they leave out the network and
the load generator but include waiting for a worker thread or a database connection. The goal
is judged on the server median under the steady load. The load generator, the server and PostgreSQL share
the same cores; measuring starts once the CPUs are idle (the run says how idle). \"SQL /
request\" is the statements the server ran while measuring divided by the requests answered.

The weight is the largest of the pages checked (both databases) plus the three assets, as
served, uncompressed. A page \"requests another host\" if an element loads anything (`src`,
`srcset`, `poster`, `<link href>`) from an absolute or protocol-relative URL, or its
stylesheets `url()`/`@import` one, or its script names one; links people may follow (`<a href>`,
form actions) are counted apart, since they load nothing by themselves.

Reproduce it (PostgreSQL is found through `RAPPORT_TEST_POSTGRES_URL`, by default
`postgres://postgres@127.0.0.1:5432/postgres`; the benchmark creates a database `bench_<uuid>`
and drops it at the end):

```sh
apt-get install wrk
cargo bench -p rapport --bench page_render
```

The command replaces this section with its run (earlier runs are in the history of this file)
and leaves the rest of the file alone; edit the text in `server/benches/page_render.rs`.
",
        goal_ms = GOAL_MEDIAN_MS,
        goal_kb = GOAL_WEIGHT_BYTES / 1000,
        topics = TOPICS.len(),
        contacts = CONTACTS,
        alone = ALONE_REQUESTS,
        alone_warm_up = ALONE_WARM_UP,
        threads = WRK_THREADS,
        connections = WRK_CONNECTIONS,
        steady_percent = STEADY_SHARE * 100.0,
        measure = MEASURE.as_secs(),
        warm_up = WARM_UP.as_secs(),
    )
}

fn main() -> ExitCode {
    support::run_bench("page_render", run)
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    tracing::subscriber::set_global_default(tracing_subscriber::registry().with(ServerTimes))
        .context("cannot install the timing layer")?;
    let wrk_version = support::wrk_version().await?;
    let postgres = PostgresDatabase::create().await?;
    let outcome = tokio::select! {
        outcome = measure_all(&postgres) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    postgres.drop_database().await;
    let (results, weight, observed) = outcome?;

    let mut machine = Machine::describe(wrk_version).await;
    // The page's templates, stylesheet and script live in web/, which `Machine` does not check.
    if web_changed().await && !machine.commit.contains("uncommitted") {
        machine.commit.push_str(" with uncommitted changes in web/");
    }
    let run = report(&machine, &observed, &results, &weight);
    println!("\n{run}");
    let path = support::update_section("page_render", |_| format!("{}\n{run}", intro()))?;
    println!("wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// How the load was made.
#[derive(Clone, Copy, PartialEq)]
enum Load {
    Connections(u32),
    /// Requests per second, sent on time whatever the answers.
    Steady(f64),
}

impl std::fmt::Display for Load {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Load::Connections(1) => write!(f, "1 connection"),
            Load::Connections(count) => write!(f, "{count} connections"),
            Load::Steady(rate) => write!(f, "steady {rate:.0} req/s"),
        }
    }
}

/// How one database answered one load.
struct Measurement {
    database: &'static str,
    load: Load,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    server_p50_ms: f64,
    server_p99_ms: f64,
    /// The median of the handler's service calls alone, without HTTP or the template.
    reads_p50_ms: Option<f64>,
    statements_per_request: f64,
    idle_before: Option<f64>,
}

/// The page as a browser gets it.
struct Weight {
    html_bytes: usize,
    logo_bytes: usize,
    assets: Vec<(&'static str, usize)>,
    /// Absolute URLs of other hosts that the page, its stylesheets or its script would load.
    foreign_loads: Vec<String>,
    /// Absolute URLs of links people may follow (privacy policy); these load nothing.
    foreign_links: Vec<String>,
    content_security_policy: String,
}

impl Weight {
    fn total(&self) -> usize {
        self.html_bytes + self.assets.iter().map(|(_, bytes)| bytes).sum::<usize>()
    }
}

struct Observed {
    sqlite_version: String,
    postgres_version: String,
}

async fn measure_all(postgres: &PostgresDatabase) -> anyhow::Result<(Vec<Measurement>, Weight, Observed)> {
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let client = reqwest::Client::new();

    let sqlite_url = format!("sqlite://{}?mode=rwc", work.path().join("rapport.db").display());
    let sqlite = Rapport::start("SQLite", &sqlite_url).await?;
    let postgres = Rapport::start("PostgreSQL", &postgres.url).await?;
    let (sqlite_tokens, postgres_tokens) =
        tokio::try_join!(sqlite.seed(SEED_CONCURRENCY_SQLITE), postgres.seed(SEED_CONCURRENCY_POSTGRES))?;
    let observed = Observed {
        sqlite_version: database_version(&sqlite.services, "select sqlite_version()").await?,
        postgres_version: database_version(&postgres.services, "show server_version").await?,
    };

    let mut largest_page = String::new();
    let mut content_security_policy = String::new();
    let mut results = Vec::new();
    let mut assets = Vec::new();
    for (rapport, tokens) in [(sqlite, sqlite_tokens), (postgres, postgres_tokens)] {
        let paths: Vec<String> = tokens.iter().map(|token| format!("/preferences/{token}")).collect();
        let checked = rapport.checked_pages(&client, &paths).await?;
        if checked.largest.len() > largest_page.len() {
            largest_page = checked.largest;
        }
        content_security_policy = checked.content_security_policy;
        if assets.is_empty() {
            for asset in ASSETS {
                assets.push((asset, rapport.get(&client, asset).await?));
            }
        }
        results.push(rapport.alone(&tokens, &paths).await?);
        let script = wrk_get_script(work.path(), rapport.database, &paths)?;
        let flat_out = rapport.loaded(&script).await?;
        let steady_rate = (flat_out.requests_per_second * STEADY_SHARE).round();
        results.push(flat_out);
        results.push(rapport.steady(&paths, steady_rate).await?);
        rapport.stop().await?;
    }

    let mut weight = Weight {
        html_bytes: largest_page.len(),
        logo_bytes: logo_in(&largest_page),
        assets: assets.iter().map(|(name, body)| (*name, body.len())).collect(),
        foreign_loads: Vec::new(),
        foreign_links: Vec::new(),
        content_security_policy,
    };
    let (loads, links) = html_references(&largest_page);
    weight.foreign_loads.extend(loads.into_iter().filter(|url| is_other_host(url)));
    weight.foreign_links.extend(links.into_iter().filter(|url| is_other_host(url)));
    for (name, body) in &assets {
        let referenced = if name.ends_with(".css") { css_references(body) } else { script_references(body) };
        weight.foreign_loads.extend(referenced.into_iter().map(|url| format!("{url} (in {name})")));
    }
    Ok((results, weight, observed))
}

/// The real server, started the way `rapport serve` starts it, on a port of its own.
struct Rapport {
    database: &'static str,
    base_url: String,
    services: Services,
    process: InProcess,
}

/// What checking every page found.
struct CheckedPages {
    largest: String,
    content_security_policy: String,
}

impl Rapport {
    async fn start(database: &'static str, database_url: &str) -> anyhow::Result<Self> {
        let process = InProcess::start(&format!("Rapport on {database}"), database_url, |_| {}).await?;
        Ok(Self { database, base_url: process.address.clone(), services: process.services.clone(), process })
    }

    async fn seed(&self, concurrency: usize) -> anyhow::Result<Vec<String>> {
        let started = Instant::now();
        let tokens = seed(&self.services, concurrency).await.with_context(|| format!("seeding {}", self.database))?;
        eprintln!("[{}] seeded {CONTACTS} contacts in {:.1} s", self.database, started.elapsed().as_secs_f64());
        Ok(tokens)
    }

    async fn get(&self, client: &reqwest::Client, path: &str) -> anyhow::Result<String> {
        let response =
            client.get(format!("{}{path}", self.base_url)).send().await.with_context(|| format!("GET {path}"))?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status == reqwest::StatusCode::OK, "{}: {path} answered {status}: {body}", self.database);
        Ok(body)
    }

    /// Every page, fetched once and checked: 200, the form with every topic, purpose and field,
    /// so that the load measures pages and not error pages.
    async fn checked_pages(&self, client: &reqwest::Client, paths: &[String]) -> anyhow::Result<CheckedPages> {
        let mut checked = CheckedPages { largest: String::new(), content_security_policy: String::new() };
        for path in paths {
            let response = client.get(format!("{}{path}", self.base_url)).send().await?;
            let status = response.status();
            checked.content_security_policy = response
                .headers()
                .get(reqwest::header::CONTENT_SECURITY_POLICY)
                .and_then(|value| value.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let html = response.text().await?;
            let complete = status == reqwest::StatusCode::OK
                && html.contains("id=\"preferences\"")
                && html.matches("name=\"topic\"").count() == TOPICS.len()
                && html.matches("name=\"consent\"").count() == 3 * Channel::ALL.len()
                && ["field-first_name", "field-country", "field-plan"].iter().all(|field| html.contains(field))
                && html.contains("class=\"logo\" src=\"data:image");
            ensure!(complete, "{}: a page came back {status} or incomplete:\n{html}", self.database);
            if html.len() > checked.largest.len() {
                checked.largest = html;
            }
        }
        Ok(checked)
    }

    /// Requests one at a time on one connection: the time with nothing else to do.
    async fn alone(&self, tokens: &[String], paths: &[String]) -> anyhow::Result<Measurement> {
        let client = reqwest::Client::builder().pool_max_idle_per_host(1).build()?;
        let idle_before = wait_for_quiet().await;
        eprintln!("[{}] {ALONE_REQUESTS} requests on one connection", self.database);
        for path in paths.iter().cycle().take(ALONE_WARM_UP) {
            self.get(&client, path).await?;
        }
        take_server_times();
        let statements_before = self.services.database().statements_executed();
        let mut round_trips = Vec::with_capacity(ALONE_REQUESTS);
        let started = Instant::now();
        for path in paths.iter().cycle().take(ALONE_REQUESTS) {
            let sent = Instant::now();
            self.get(&client, path).await?;
            round_trips.push(sent.elapsed());
        }
        let elapsed = started.elapsed();
        let statements = self.services.database().statements_executed().saturating_sub(statements_before);
        let mut server = take_server_times();
        round_trips.sort();
        server.sort();
        // On a worker thread, as a handler runs: `block_on`'s thread would add cross-thread wake-ups.
        let (services, tokens) = (self.services.clone(), tokens.to_vec());
        let mut reads = tokio::spawn(async move {
            let mut reads = Vec::with_capacity(ALONE_REQUESTS);
            for token in tokens.iter().cycle().take(ALONE_REQUESTS) {
                let started = Instant::now();
                let actor = services.authenticate_bearer(token).await.map_err(|error| anyhow!("token: {error}"))?;
                let ctx = RequestContext::internal(actor, "bench-reads");
                services.preferences_view(&ctx).await.map_err(|error| anyhow!("page data: {error}"))?;
                reads.push(started.elapsed());
            }
            anyhow::Ok(reads)
        })
        .await
        .context("the reads task failed")??;
        reads.sort();
        Ok(Measurement {
            database: self.database,
            load: Load::Connections(1),
            requests_per_second: ALONE_REQUESTS as f64 / elapsed.as_secs_f64(),
            p50_ms: percentile_ms(&round_trips, 0.5),
            p99_ms: percentile_ms(&round_trips, 0.99),
            server_p50_ms: percentile_ms(&server, 0.5),
            server_p99_ms: percentile_ms(&server, 0.99),
            reads_p50_ms: Some(percentile_ms(&reads, 0.5)),
            statements_per_request: statements as f64 / ALONE_REQUESTS as f64,
            idle_before,
        })
    }

    /// wrk's load, with the server's own times of the measured requests.
    async fn loaded(&self, script: &Path) -> anyhow::Result<Measurement> {
        let target = format!("{}, {WRK_CONNECTIONS} connections", self.database);
        let idle_before = wait_for_quiet().await;
        support::warm_up(&self.base_url, script, &target).await?;
        take_server_times();
        let statements_before = self.services.database().statements_executed();
        let output = support::measure(&self.base_url, script, &target).await?;
        let statements = self.services.database().statements_executed().saturating_sub(statements_before);
        let mut server = take_server_times();
        server.sort();
        Ok(Measurement {
            database: self.database,
            load: Load::Connections(WRK_CONNECTIONS),
            requests_per_second: output.requests_per_second,
            p50_ms: output.p50_ms,
            p99_ms: output.p99_ms,
            server_p50_ms: percentile_ms(&server, 0.5),
            server_p99_ms: percentile_ms(&server, 0.99),
            reads_p50_ms: None,
            statements_per_request: statements as f64 / output.requests as f64,
            idle_before,
        })
    }

    /// `rate` requests a second on an open loop, from a client thread and runtime of its own (as
    /// wrk is a process of its own), cycling through the paths.
    async fn steady(&self, paths: &[String], rate: f64) -> anyhow::Result<Measurement> {
        eprintln!("[{}] steady {rate:.0} requests/s", self.database);
        let idle_before = wait_for_quiet().await;
        let (base_url, paths) = (self.base_url.clone(), paths.to_vec());
        let services = self.services.clone();
        let (mut latencies, server, statements, sent) = tokio::task::spawn_blocking(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            runtime.block_on(async {
                let client = reqwest::Client::new();
                open_loop(&client, &base_url, &paths, rate, WARM_UP).await?;
                take_server_times();
                let statements_before = services.database().statements_executed();
                let latencies = open_loop(&client, &base_url, &paths, rate, MEASURE).await?;
                let statements = services.database().statements_executed().saturating_sub(statements_before);
                let sent = latencies.len();
                anyhow::Ok((latencies, take_server_times(), statements, sent))
            })
        })
        .await
        .context("the steady load's thread failed")??;
        latencies.sort();
        let mut server = server;
        server.sort();
        Ok(Measurement {
            database: self.database,
            load: Load::Steady(rate),
            requests_per_second: sent as f64 / MEASURE.as_secs_f64(),
            p50_ms: percentile_ms(&latencies, 0.5),
            p99_ms: percentile_ms(&latencies, 0.99),
            server_p50_ms: percentile_ms(&server, 0.5),
            server_p99_ms: percentile_ms(&server, 0.99),
            reads_p50_ms: None,
            statements_per_request: statements as f64 / sent as f64,
            idle_before,
        })
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.process.stop().await
    }
}

/// Sends GETs of `paths` in turn at `rate` a second for `length`, each when it is due; returns how
/// long each took from when it was due to its whole body having arrived.
async fn open_loop(
    client: &reqwest::Client,
    base_url: &str,
    paths: &[String],
    rate: f64,
    length: Duration,
) -> anyhow::Result<Vec<Duration>> {
    let count = (rate * length.as_secs_f64()) as usize;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = tokio::time::Instant::now();
    let mut in_flight = tokio::task::JoinSet::new();
    for (index, path) in paths.iter().cycle().take(count).enumerate() {
        let due = start + interval.mul_f64(index as f64);
        tokio::time::sleep_until(due).await;
        let (client, url) = (client.clone(), format!("{base_url}{path}"));
        in_flight.spawn(async move {
            let response = client.get(&url).send().await?;
            let status = response.status();
            response.bytes().await?;
            ensure!(status == reqwest::StatusCode::OK, "{url} answered {status}");
            anyhow::Ok(due.elapsed())
        });
    }
    let mut latencies = Vec::with_capacity(count);
    while let Some(done) = in_flight.join_next().await {
        latencies.push(done.context("a request task failed")??);
    }
    Ok(latencies)
}

/// The center and `CONTACTS` contacts, through the services (the same path the API takes), so
/// the rows look like real ones. Returns each contact's preferences token.
async fn seed(services: &Services, concurrency: usize) -> anyhow::Result<Vec<String>> {
    let ctx = RequestContext::internal(Actor::Bootstrap, "bench-seed");
    let plan = NewField {
        key: Key::parse("plan")?,
        label: "Plan".to_owned(),
        field_type: FieldType::Enum,
        enum_values: ["free", "pro", "enterprise"].map(str::to_owned).to_vec(),
        required: false,
        personal: false,
    };
    services.define_field(&ctx, plan).await.map_err(|error| anyhow!("define field plan: {error}"))?;
    for (key, name, description) in TOPICS {
        let new = NewTopic {
            key: Key::parse(key)?,
            name: name.to_owned(),
            description: Some(description.to_owned()),
            default_frequency: Frequency::Weekly,
        };
        services.define_topic(&ctx, new).await.map_err(|error| anyhow!("define topic {key}: {error}"))?;
    }
    let center = PreferenceCenterUpdate {
        company_name: Some("Café Example".to_owned()),
        logo: Change::Set(logo()),
        primary_color: Some("#0f766e".to_owned()),
        footer_text: Change::Set("Café Example GmbH · Hauptstraße 1 · 10115 Berlin".to_owned()),
        privacy_policy_url: Change::Set("https://www.example.com/privacy".to_owned()),
        editable_fields: Some(["first_name", "country", "plan"].map(str::to_owned).to_vec()),
        ..PreferenceCenterUpdate::default()
    };
    services.update_preference_center(&ctx, center).await.map_err(|error| anyhow!("update the center: {error}"))?;

    let ctx = &ctx;
    stream::iter(0..CONTACTS).map(|index| seed_contact(services, ctx, index)).buffered(concurrency).try_collect().await
}

async fn seed_contact(services: &Services, ctx: &RequestContext, index: usize) -> anyhow::Result<String> {
    const COUNTRIES: [&str; 5] = ["DE", "CH", "FR", "GB", "US"];
    const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
    let changes = ContactChanges {
        first_name: Change::Set(PersonName::parse(&format!("Ada{index}"))?),
        last_name: Change::Set(PersonName::parse("Lovelace")?),
        country: Change::Set(CountryCode::parse(COUNTRIES[index % COUNTRIES.len()])?),
        attributes: vec![("plan".to_owned(), json!(PLANS[index % PLANS.len()]))],
        ..ContactChanges::default()
    };
    let email = EmailAddress::parse(&format!("person{index}@example.com")).map_err(|_| anyhow!("bad email"))?;
    let contact = services
        .upsert_contact(ctx, UpsertKey::Email(email), changes)
        .await
        .map_err(|error| anyhow!("upsert contact {index}: {error}"))?
        .contact;
    for (purpose, channel, status) in [
        (
            "marketing",
            Channel::Email,
            if index.is_multiple_of(3) { ConsentStatus::Denied } else { ConsentStatus::Granted },
        ),
        ("marketing", Channel::Sms, ConsentStatus::Denied),
        ("analytics", Channel::Email, ConsentStatus::Granted),
    ] {
        let decision = ConsentDecision {
            purpose: Key::parse(purpose)?,
            channel,
            status,
            legal_basis: LegalBasis::Consent,
            source: ConsentSource::Form,
            captured_at: None,
            proof: ConsentProof::default(),
        };
        services
            .record_consent(ctx, contact.id, decision)
            .await
            .map_err(|error| anyhow!("record consent {index}: {error}"))?;
    }
    for offset in 0..3 {
        let topic = Key::parse(TOPICS[(index + offset) % TOPICS.len()].0)?;
        let status = if offset == 2 { SubscriptionStatus::Unsubscribed } else { SubscriptionStatus::Subscribed };
        services
            .set_subscription(ctx, contact.id, &topic, status, Some(Frequency::ALL[offset % Frequency::ALL.len()]))
            .await
            .map_err(|error| anyhow!("subscribe {index}: {error}"))?;
    }
    let token = services
        .issue_contact_token(ctx, contact.id, ContactTokenPurpose::Preferences)
        .await
        .map_err(|error| anyhow!("issue a token for {index}: {error}"))?;
    Ok(token.token)
}

/// A small brand logo, as admins upload it: an SVG, about 700 bytes as a `data:` URL.
fn logo() -> String {
    let svg = concat!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="180" height="40" viewBox="0 0 180 40">"##,
        r##"<rect width="40" height="40" rx="8" fill="#0f766e"/>"##,
        r##"<path d="M11 27c0-7 4-13 10-13 3 0 5 1 7 3l-2 3c-1-1-3-2-5-2-4 0-6 4-6 9s2 8 6 8c2 0 4-1 5-2l2 3c-2 2-4 3-7 3-6 0-10-5-10-12z" fill="#fff"/>"##,
        r##"<circle cx="31" cy="11" r="3" fill="#99f6e4"/>"##,
        r##"<text x="50" y="26" font-family="Georgia, serif" font-size="18" font-weight="bold" fill="#134e4a">Café Example</text>"##,
        r##"<path d="M50 32h120" stroke="#99f6e4" stroke-width="2" stroke-linecap="round"/>"##,
        "</svg>"
    );
    format!("data:image/svg+xml;base64,{}", base64::engine::general_purpose::STANDARD.encode(svg))
}

/// The bytes the logo's `data:` URL takes in the page, as escaped there (`/` as `&#x2f;`).
fn logo_in(html: &str) -> usize {
    html.split_once("class=\"logo\" src=\"").and_then(|(_, rest)| rest.split_once('"')).map_or(0, |(url, _)| url.len())
}

/// A wrk script that GETs the paths in turn, each wrk thread starting at its own place.
fn wrk_get_script(dir: &Path, name: &str, paths: &[String]) -> anyhow::Result<PathBuf> {
    let mut script = String::from("local paths = {\n");
    for path in paths {
        ensure!(!path.contains("]==]"), "a path would end the Lua string early");
        writeln!(script, "[==[{path}]==],")?;
    }
    script.push_str(
        "}
local threads = 0
function setup(thread)
  thread:set(\"offset\", threads * 97)
  threads = threads + 1
end
local next_path = 0
function init(args)
  next_path = offset % #paths
end
function request()
  next_path = next_path % #paths + 1
  return wrk.format(\"GET\", paths[next_path])
end
",
    );
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The server's time of each request since the last call: from the router's `request` span
/// opening to its closing, which is when the response body has been handed over.
static SERVER_TIMES: Mutex<Vec<Duration>> = Mutex::new(Vec::new());

fn take_server_times() -> Vec<Duration> {
    SERVER_TIMES.lock().map(|mut times| std::mem::take(&mut *times)).unwrap_or_default()
}

/// A tracing layer interested in the router's `request` span only, so the server pays for one
/// span per request and nothing else (no events, no service spans, no formatting).
struct ServerTimes;

struct Opened(Instant);

fn is_request_span(metadata: &Metadata<'_>) -> bool {
    metadata.is_span() && metadata.name() == "request" && metadata.target().starts_with("rapport")
}

impl<S> Layer<S> for ServerTimes
where
    S: Subscriber + for<'lookup> LookupSpan<'lookup>,
{
    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        if is_request_span(metadata) { Interest::always() } else { Interest::never() }
    }

    fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
        is_request_span(metadata)
    }

    fn on_new_span(&self, _: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        let opened = ctx.span(&id).and_then(|span| span.extensions().get::<Opened>().map(|opened| opened.0));
        if let (Some(opened), Ok(mut times)) = (opened, SERVER_TIMES.lock()) {
            times.push(opened.elapsed());
        }
    }
}

/// The `share` percentile of sorted durations, in milliseconds (nearest rank).
fn percentile_ms(sorted: &[Duration], share: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((share * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1].as_secs_f64() * 1_000.0
}

/// URLs the HTML would load (`src`, `srcset`, `poster`, `<link href>`) and URLs of links and
/// forms, as written in the page (entities decoded).
fn html_references(html: &str) -> (Vec<String>, Vec<String>) {
    let (mut loads, mut links) = (Vec::new(), Vec::new());
    for tag in html.split('<').skip(1).filter_map(|rest| rest.split('>').next()) {
        let name = tag.split(|c: char| c.is_whitespace() || c == '/').next().unwrap_or_default().to_ascii_lowercase();
        for attribute in ["src", "srcset", "poster", "href", "action", "formaction"] {
            for value in attribute_values(tag, attribute) {
                let value = htmlize::unescape(value).into_owned();
                let navigation =
                    matches!(attribute, "action" | "formaction") || (attribute == "href" && name != "link");
                if navigation {
                    links.push(value);
                } else if attribute == "srcset" {
                    loads.extend(
                        value.split(',').filter_map(|candidate| candidate.split_whitespace().next()).map(str::to_owned),
                    );
                } else {
                    loads.push(value);
                }
            }
        }
    }
    (loads, links)
}

/// The values of `attribute="…"` (or single-quoted) in the inside of one tag.
fn attribute_values<'a>(tag: &'a str, attribute: &str) -> Vec<&'a str> {
    let mut values = Vec::new();
    let mut rest = tag;
    while let Some(at) = rest.find(attribute) {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + attribute.len()..];
        rest = after;
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let Some(after) = after.trim_start().strip_prefix('=') else { continue };
        let after = after.trim_start();
        let Some(quote) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else { continue };
        if let Some(end) = after[1..].find(quote) {
            values.push(&after[1..1 + end]);
        }
    }
    values
}

/// Whether a URL as written in the page points at another host: absolute with a host, or
/// protocol-relative. Paths, fragments and `data:` URLs stay on this server.
fn is_other_host(url: &str) -> bool {
    let url = url.trim();
    url.starts_with("//") || url::Url::parse(url).is_ok_and(|parsed| parsed.host().is_some())
}

/// `url(…)` and `@import` targets in a stylesheet that are on another host.
fn css_references(css: &str) -> Vec<String> {
    let mut found = Vec::new();
    for piece in css.split("url(").skip(1) {
        let target = piece.split(')').next().unwrap_or_default().trim().trim_matches(['"', '\'']);
        if is_other_host(target) {
            found.push(target.to_owned());
        }
    }
    for piece in css.split("@import").skip(1) {
        let target = piece.split(';').next().unwrap_or_default().trim();
        found.push(format!("@import {target}"));
    }
    found
}

/// String literals in a script that name another host (`"https://…"`, `'//…'` and the like).
fn script_references(script: &str) -> Vec<String> {
    let mut found = Vec::new();
    for quote in ['"', '\'', '`'] {
        for literal in script.split(quote).skip(1).step_by(2) {
            if is_other_host(literal) {
                found.push(literal.to_owned());
            }
        }
    }
    found
}

async fn database_version(services: &Services, query: &str) -> anyhow::Result<String> {
    let connection = services.database().connection();
    let row = connection
        .query_one_raw(Statement::from_string(connection.get_database_backend(), query))
        .await?
        .context("the version query returned no row")?;
    Ok(row.try_get_by_index::<String>(0)?)
}

/// Whether the page's own files differ from the commit.
async fn web_changed() -> bool {
    let output = tokio::process::Command::new("git")
        .args(["status", "--porcelain", "--", "web"])
        .current_dir(support::repository_root())
        .output()
        .await;
    output.is_ok_and(|output| output.status.success() && !output.stdout.is_empty())
}

/// The text of this run in `BENCHMARKS.md`.
fn report(machine: &Machine, observed: &Observed, results: &[Measurement], weight: &Weight) -> String {
    let mut text = String::new();
    let _ = writeln!(text, "### {}\n", machine.date);
    let idle: Vec<String> = results
        .iter()
        .map(|result| {
            let share = result.idle_before.map_or("unknown".to_owned(), |idle| format!("{:.0} %", idle * 100.0));
            format!("{} {} {share}", result.database, result.load)
        })
        .collect();
    let _ = writeln!(
        text,
        "Run at {} UTC on commit {}.\n\n\
         - Machine: {} CPUs ({}), {} memory, Linux {} ({})\n\
         - Toolchain: {}, release profile; load: {}, {WRK_THREADS} threads, {WRK_CONNECTIONS} connections, \
         {} s after {} s of warm-up\n\
         - Databases: SQLite {} (WAL), PostgreSQL {}, both on this machine; {CONTACTS} contacts with a token each\n\
         - CPU idle in the second before each measurement: {}\n",
        machine.time,
        machine.commit,
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.os,
        machine.rustc,
        machine.wrk,
        MEASURE.as_secs(),
        WARM_UP.as_secs(),
        observed.sqlite_version,
        observed.postgres_version,
        idle.join(", "),
    );
    text.push_str(
        "| database | load | requests/s | p50 | p99 | server p50 | server p99 | reads p50 | SQL / request |\n",
    );
    text.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for result in results {
        let _ = writeln!(
            text,
            "| {} | {} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {:.1} |",
            result.database,
            result.load,
            result.requests_per_second,
            result.p50_ms,
            result.p99_ms,
            result.server_p50_ms,
            result.server_p99_ms,
            result.reads_p50_ms.map_or("–".to_owned(), |ms| format!("{ms:.2} ms")),
            result.statements_per_request,
        );
    }
    text.push('\n');

    text.push_str("| part of the page | bytes |\n|---|---:|\n");
    let _ = writeln!(
        text,
        "| HTML, `/preferences/{{token}}` (largest checked; of which the logo's `data:` URL {} bytes) | {} |",
        weight.logo_bytes, weight.html_bytes
    );
    for (name, bytes) in &weight.assets {
        let _ = writeln!(text, "| `{name}` | {bytes} |");
    }
    let _ = writeln!(text, "| **total** | **{}** |\n", weight.total());
    let _ = writeln!(text, "Content-Security-Policy sent with the page: `{}`.\n", weight.content_security_policy);
    let links = if weight.foreign_links.is_empty() {
        "none".to_owned()
    } else {
        weight.foreign_links.iter().map(|url| format!("`{url}`")).collect::<Vec<_>>().join(", ")
    };
    let _ = writeln!(text, "Links to other hosts that people may follow (they load nothing): {links}.\n");

    let medians: Vec<String> = results
        .iter()
        .filter(|result| matches!(result.load, Load::Steady(_)))
        .map(|result| {
            let met = if result.server_p50_ms < GOAL_MEDIAN_MS { "met" } else { "not met" };
            format!(
                "{} {met} ({:.2} ms at {:.0} req/s)",
                result.database, result.server_p50_ms, result.requests_per_second
            )
        })
        .collect();
    let total = weight.total();
    let weight_verdict = if total < GOAL_WEIGHT_BYTES { "met" } else { "not met" };
    let hosts_verdict = if weight.foreign_loads.is_empty() {
        "met (none found)".to_owned()
    } else {
        let found: Vec<String> = weight.foreign_loads.iter().map(|url| format!("`{url}`")).collect();
        format!("not met: {}", found.join(", "))
    };
    let _ = writeln!(
        text,
        "Goals: server median under {GOAL_MEDIAN_MS:.0} ms under the steady load: {}. Weight under {} KB: {weight_verdict} \
         ({:.1} KB). No request to another host: {hosts_verdict}.",
        medians.join("; "),
        GOAL_WEIGHT_BYTES / 1000,
        total as f64 / 1000.0,
    );
    text
}
