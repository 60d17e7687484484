//! The HTTP throughput benchmark: `contact(by: {id})` over GraphQL under wrk, on SQLite and on
//! PostgreSQL, beside a minimal async-graphql "hello" server that serves as the ceiling, all in one
//! run on one machine, so the three numbers are comparable. Results go to `BENCHMARKS.md`.
//!
//! Run it with `cargo bench -p rapport --bench http_throughput` (needs `wrk` on PATH and a
//! PostgreSQL server, found like the end-to-end tests find theirs). Speed is measured here and
//! never asserted in tests: a loaded CI machine would make such tests flaky.

#[path = "support/in_process.rs"]
mod in_process;
mod support;

use std::{fmt::Write as _, path::Path, process::ExitCode, time::Instant};

use anyhow::{Context as _, anyhow, ensure};
use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use axum::{Json, Router, extract::State, routing::post};
use futures_util::{StreamExt, TryStreamExt, stream};
use in_process::InProcess;
use rapport::{
    domain::{
        Change,
        consent::{Channel, ConsentProof, ConsentSource, ConsentStatus, LegalBasis},
        contact::{ContactId, CountryCode, EmailAddress, PersonName},
        field::FieldType,
        key::Key,
        topic::{Frequency, SubscriptionStatus},
    },
    service::{
        Actor, RequestContext, Services,
        consents::ConsentDecision,
        contacts::{ContactChanges, UpsertKey},
        fields::NewField,
        topics::NewTopic,
    },
};
use sea_orm::{ConnectionTrait, Statement};
use serde_json::json;
use support::{
    CONTACT_QUERY, MEASURE, Machine, PostgresDatabase, SAMPLED, WARM_UP, WRK_CONNECTIONS, WRK_THREADS, post_graphql,
    wait_for_quiet, wrk_script, wrk_version,
};
use tokio::{sync::oneshot, task::JoinHandle};

/// Contacts in each database; the load cycles through `SAMPLED` of them.
const CONTACTS: usize = 5_000;
/// Writers seeding at once. SQLite takes one writer at a time, and a writer that finds the lock
/// taken sleeps in SQLite's busy handler, so more than one only wastes time there.
const SEED_CONCURRENCY_SQLITE: usize = 1;
const SEED_CONCURRENCY_POSTGRES: usize = 16;

const HELLO_QUERY: &str = "{ hello }";
const TYPENAME_QUERY: &str = "{ __typename }";
const NO_SQL: &str = "Rapport, no SQL";

/// The goal the numbers are judged against, stated once.
const GOAL_SHARE_OF_CEILING: f64 = 0.5;
const GOAL_P99_MS: f64 = 10.0;

/// The text above the runs. The benchmark rewrites it on every run, so that it always describes
/// the code that produced the newest numbers.
fn intro() -> String {
    format!(
        "## Throughput of contact-by-id

How fast Rapport answers the read it serves most: one contact by id, with its attributes,
current consents and topic subscriptions, over GraphQL (`contact(by: {{id}})`). Each run puts
the servers below under the same `wrk` load, one after the other, in one process:

- **hello (ceiling)**: a minimal axum + async-graphql server answering `{{ hello }}`, about the
  most a GraphQL server can do on this machine;
- **Rapport, no SQL**: the real server (`Application::build`, with all its middleware,
  authentication, and rate limits checked but raised above the load) answering
  `{{ __typename }}`, which touches no database. The gap between the ceiling and this row is the
  cost of Rapport's HTTP and GraphQL layers; the gap between this row and the next two is the
  cost of reading the contact;
- **Rapport, SQLite**: the contact read on a fresh SQLite file holding {contacts} seeded
  contacts, each with three attributes, two consents and two topic subscriptions;
- **Rapport, PostgreSQL**: the same on a fresh PostgreSQL database on the same machine.

The goal for the last two rows: at least {share:.0} % of the ceiling's requests per second, and a
p99 latency under {p99:.0} ms.

The load cycles through {sampled} of the seeded contacts; each of those requests is checked to
return 200 without GraphQL errors before measuring. `wrk` runs {threads} threads and
{connections} connections for {measure} seconds after a {warm_up} second warm-up. The load
generator, the server and PostgreSQL share the same cores, so absolute numbers are lower than on
a dedicated server: compare the rows of one run, not runs on different machines. Measuring
starts once the CPUs are idle (each run says how idle). `wrk` is a closed loop (a slow response
delays the next request), so its high percentiles understate what an open-loop client would see
under overload. The servers run without a log subscriber: the cost of writing a log line per
request is not included. The PostgreSQL database is created with `synchronous_commit = off` to
make seeding faster; the measured reads write nothing. \"SQL / request\" is the number of
statements the server ran during the measurement divided by the requests answered.

Reproduce it (PostgreSQL is found through `RAPPORT_TEST_POSTGRES_URL`, by default
`postgres://postgres@127.0.0.1:5432/postgres`; the benchmark creates a database `bench_<uuid>`
and drops it at the end):

```sh
apt-get install wrk
cargo bench -p rapport --bench http_throughput
```

The command rewrites this section and leaves the rest of the file alone (edit the text in
`server/benches/http_throughput.rs`): a run replaces the run of the same day, and the newest run
comes first.
",
        share = GOAL_SHARE_OF_CEILING * 100.0,
        p99 = GOAL_P99_MS,
        contacts = CONTACTS,
        sampled = SAMPLED,
        threads = WRK_THREADS,
        connections = WRK_CONNECTIONS,
        measure = MEASURE.as_secs(),
        warm_up = WARM_UP.as_secs(),
    )
}

fn main() -> ExitCode {
    support::run_bench("http_throughput", run)
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let wrk_version = wrk_version().await?;
    let postgres = PostgresDatabase::create().await?;
    let outcome = tokio::select! {
        outcome = measure_all(&postgres) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    postgres.drop_database().await;
    let (results, observed) = outcome?;

    let machine = Machine::describe(wrk_version).await;
    let run = report(&machine, &observed, &results);
    println!("\n{run}");
    let path = support::update_section("http_throughput", |previous| with_run(previous, &machine.date, &run))?;
    println!("wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// What one target did under load.
struct Measurement {
    target: &'static str,
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// SQL statements per answered request; none for the ceiling.
    statements_per_request: Option<f64>,
}

/// What the run learnt of its surroundings while the servers ran.
struct Observed {
    sqlite_version: String,
    postgres_version: String,
    /// Share of the CPUs idle in the second before the load: other work on the machine skews the
    /// numbers, and the report says so.
    idle_before_load: Option<f64>,
}

async fn measure_all(postgres: &PostgresDatabase) -> anyhow::Result<(Vec<Measurement>, Observed)> {
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let client = reqwest::Client::new();

    // Both are seeded at once: seeding waits on commits and thread hand-offs part of the time.
    let sqlite_url = format!("sqlite://{}?mode=rwc", work.path().join("rapport.db").display());
    let sqlite = Rapport::start("Rapport, SQLite", &sqlite_url).await?;
    let postgres = Rapport::start("Rapport, PostgreSQL", &postgres.url).await?;
    let (sqlite_ids, postgres_ids) =
        tokio::try_join!(sqlite.seed(SEED_CONCURRENCY_SQLITE), postgres.seed(SEED_CONCURRENCY_POSTGRES))?;
    let mut observed = Observed {
        sqlite_version: database_version(&sqlite.services, "select sqlite_version()").await?,
        postgres_version: database_version(&postgres.services, "show server_version").await?,
        idle_before_load: None,
    };

    let mut results = Vec::new();
    observed.idle_before_load = wait_for_quiet().await;
    let hello = HelloServer::start().await?;
    let body = json!({ "query": HELLO_QUERY }).to_string();
    let response = post_graphql(&client, &hello.url, &body).await?;
    ensure!(response["data"]["hello"] == "world", "the hello server answered {response}");
    let script = wrk_script(work.path(), "hello", &[body])?;
    results.push(load(&hello.url, &script, "hello (ceiling)", None).await?);
    hello.stop().await;

    let body = json!({ "query": TYPENAME_QUERY }).to_string();
    let response = post_graphql(&client, &sqlite.url, &body).await?;
    ensure!(response["data"]["__typename"].is_string(), "Rapport answered {response}");
    let script = wrk_script(work.path(), "typename", &[body])?;
    results.push(load(&sqlite.url, &script, NO_SQL, Some(&sqlite.services)).await?);

    for (rapport, ids) in [(sqlite, sqlite_ids), (postgres, postgres_ids)] {
        let bodies = rapport.checked_bodies(&client, &ids).await?;
        let script = wrk_script(work.path(), &rapport.target.replace([' ', ','], ""), &bodies)?;
        results.push(load(&rapport.url, &script, rapport.target, Some(&rapport.services)).await?);
        rapport.stop().await?;
    }
    Ok((results, observed))
}

/// The real server, started the way `rapport serve` starts it, on a port of its own.
struct Rapport {
    target: &'static str,
    url: String,
    services: Services,
    process: InProcess,
}

impl Rapport {
    async fn start(target: &'static str, database_url: &str) -> anyhow::Result<Self> {
        let process = InProcess::start(target, database_url, |_| {}).await?;
        Ok(Self { target, url: format!("{}/graphql", process.address), services: process.services.clone(), process })
    }

    async fn seed(&self, concurrency: usize) -> anyhow::Result<Vec<ContactId>> {
        let started = Instant::now();
        let ids = seed(&self.services, concurrency).await.with_context(|| format!("seeding {}", self.target))?;
        eprintln!("[{}] seeded {CONTACTS} contacts in {:.1} s", self.target, started.elapsed().as_secs_f64());
        Ok(ids)
    }

    /// The request bodies of the load, each sent once and checked: 200, no errors, and the whole
    /// contact, so that the load measures answers and not failures.
    async fn checked_bodies(&self, client: &reqwest::Client, ids: &[ContactId]) -> anyhow::Result<Vec<String>> {
        let sampled = support::sample(ids);
        let mut bodies = Vec::with_capacity(sampled.len());
        for id in sampled {
            let body = json!({ "query": CONTACT_QUERY, "variables": { "id": id.to_string() } }).to_string();
            let response = post_graphql(client, &self.url, &body).await?;
            let contact = &response["data"]["contact"];
            ensure!(
                contact["id"] == id.to_string()
                    && contact["consents"].as_array().is_some_and(|consents| consents.len() == 2)
                    && contact["topics"].as_array().is_some_and(|topics| topics.len() == 2),
                "{}: contact {id} came back incomplete: {response}",
                self.target
            );
            bodies.push(body);
        }
        Ok(bodies)
    }

    async fn stop(self) -> anyhow::Result<()> {
        self.process.stop().await
    }
}

/// Fields, topics, and `CONTACTS` contacts with attributes, consents and subscriptions, through
/// the services (the same path the API takes), so the rows look like real ones. Returns the ids.
async fn seed(services: &Services, concurrency: usize) -> anyhow::Result<Vec<ContactId>> {
    let ctx = RequestContext::internal(Actor::Bootstrap, "bench-seed");
    for (key, label, field_type, enum_values) in [
        ("plan", "Plan", FieldType::Enum, vec!["free", "pro", "enterprise"]),
        ("lifetime_value", "Lifetime value", FieldType::Number, vec![]),
        ("vip", "VIP", FieldType::Boolean, vec![]),
    ] {
        let new = NewField {
            key: Key::parse(key)?,
            label: label.to_owned(),
            field_type,
            enum_values: enum_values.into_iter().map(str::to_owned).collect(),
            required: false,
            personal: false,
        };
        services.define_field(&ctx, new).await.map_err(|error| anyhow!("define field {key}: {error}"))?;
    }
    let topics = [Key::parse("weekly_digest")?, Key::parse("product_updates")?];
    for (key, name) in topics.iter().zip(["Weekly digest", "Product updates"]) {
        let new = NewTopic {
            key: key.clone(),
            name: name.to_owned(),
            description: None,
            default_frequency: Frequency::Weekly,
        };
        services.define_topic(&ctx, new).await.map_err(|error| anyhow!("define topic {key}: {error}"))?;
    }

    let (ctx, topics) = (&ctx, &topics);
    stream::iter(0..CONTACTS)
        .map(|index| seed_contact(services, ctx, topics, index))
        .buffered(concurrency)
        .try_collect()
        .await
}

async fn seed_contact(
    services: &Services,
    ctx: &RequestContext,
    topics: &[Key],
    index: usize,
) -> anyhow::Result<ContactId> {
    const COUNTRIES: [&str; 5] = ["DE", "CH", "FR", "GB", "US"];
    const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
    let changes = ContactChanges {
        first_name: Change::Set(PersonName::parse(&format!("Ada{index}"))?),
        last_name: Change::Set(PersonName::parse("Lovelace")?),
        country: Change::Set(CountryCode::parse(COUNTRIES[index % COUNTRIES.len()])?),
        attributes: vec![
            ("plan".to_owned(), json!(PLANS[index % PLANS.len()])),
            ("lifetime_value".to_owned(), json!((index % 1000) as f64 * 12.5)),
            ("vip".to_owned(), json!(index.is_multiple_of(10))),
        ],
        ..ContactChanges::default()
    };
    let email = EmailAddress::parse(&format!("person{index}@example.com")).map_err(|_| anyhow!("bad email"))?;
    let contact = services
        .upsert_contact(ctx, UpsertKey::Email(email), changes)
        .await
        .map_err(|error| anyhow!("upsert contact {index}: {error}"))?
        .contact;
    for (purpose, status) in [
        ("marketing", if index.is_multiple_of(3) { ConsentStatus::Denied } else { ConsentStatus::Granted }),
        ("analytics", ConsentStatus::Granted),
    ] {
        let decision = ConsentDecision {
            purpose: Key::parse(purpose)?,
            channel: Channel::Email,
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
    for (position, topic) in topics.iter().enumerate() {
        let status = if (index + position).is_multiple_of(4) {
            SubscriptionStatus::Unsubscribed
        } else {
            SubscriptionStatus::Subscribed
        };
        services
            .set_subscription(ctx, contact.id, topic, status, None)
            .await
            .map_err(|error| anyhow!("subscribe {index}: {error}"))?;
    }
    Ok(contact.id)
}

async fn database_version(services: &Services, query: &str) -> anyhow::Result<String> {
    let connection = services.database().connection();
    let row = connection
        .query_one_raw(Statement::from_string(connection.get_database_backend(), query))
        .await?
        .context("the version query returned no row")?;
    Ok(row.try_get_by_index::<String>(0)?)
}

/// The ceiling: async-graphql behind axum's JSON extractor, as thin as a GraphQL server gets
/// (this is what async-graphql-axum's service does for a JSON POST).
struct HelloServer {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

struct HelloQuery;

#[Object]
impl HelloQuery {
    async fn hello(&self) -> &'static str {
        "world"
    }
}

type HelloSchema = Schema<HelloQuery, EmptyMutation, EmptySubscription>;

async fn hello_graphql(
    State(schema): State<HelloSchema>,
    Json(request): Json<async_graphql::Request>,
) -> Json<async_graphql::Response> {
    Json(schema.execute(request).await)
}

impl HelloServer {
    async fn start() -> anyhow::Result<Self> {
        let schema = Schema::new(HelloQuery, EmptyMutation, EmptySubscription);
        let router = Router::new().route("/graphql", post(hello_graphql)).with_state(schema);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/graphql", listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
        });
        Ok(Self { url, stop, task })
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Warms up, then measures `url` with wrk; counts the SQL statements of the measured part.
async fn load(
    url: &str,
    script: &Path,
    target: &'static str,
    services: Option<&Services>,
) -> anyhow::Result<Measurement> {
    support::warm_up(url, script, target).await?;
    let statements_before = services.map(|services| services.database().statements_executed());
    let output = support::measure(url, script, target).await?;
    let statements = services
        .zip(statements_before)
        .map(|(services, before)| services.database().statements_executed().saturating_sub(before) as f64);
    Ok(Measurement {
        target,
        requests_per_second: output.requests_per_second,
        p50_ms: output.p50_ms,
        p99_ms: output.p99_ms,
        statements_per_request: statements.map(|count| count / output.requests as f64),
    })
}

/// The text of this run in `BENCHMARKS.md`.
fn report(machine: &Machine, observed: &Observed, results: &[Measurement]) -> String {
    let ceiling = results.first().map_or(f64::NAN, |ceiling| ceiling.requests_per_second);
    let mut text = String::new();
    let _ = writeln!(text, "### {}\n", machine.date);
    let _ = writeln!(
        text,
        "Run at {} UTC on commit {}.\n\n\
         - Machine: {} CPUs ({}), {} memory, Linux {} ({})\n\
         - Toolchain: {}, release profile; load: {}, {WRK_THREADS} threads, {WRK_CONNECTIONS} connections, \
         {} s after {} s of warm-up\n\
         - Databases: SQLite {} (WAL), PostgreSQL {}, both on this machine; {CONTACTS} contacts, \
         the load cycles through {SAMPLED} of them\n\
         - CPU idle in the second before the load: {}\n",
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
        observed.idle_before_load.map_or("unknown".to_owned(), |idle| format!("{:.0} %", idle * 100.0)),
    );
    text.push_str("| target | requests/s | p50 | p99 | % of ceiling | SQL / request |\n");
    text.push_str("|---|---:|---:|---:|---:|---:|\n");
    for result in results {
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.2} ms | {:.2} ms | {:.0} % | {} |",
            result.target,
            result.requests_per_second,
            result.p50_ms,
            result.p99_ms,
            100.0 * result.requests_per_second / ceiling,
            result.statements_per_request.map_or("–".to_owned(), |count| format!("{count:.1}")),
        );
    }
    text.push('\n');
    let verdicts: Vec<String> = results
        .iter()
        .filter(|result| result.statements_per_request.is_some() && result.target != NO_SQL)
        .map(|result| {
            let fast_enough = result.requests_per_second >= GOAL_SHARE_OF_CEILING * ceiling;
            let short_tail = result.p99_ms < GOAL_P99_MS;
            let verdict = match (fast_enough, short_tail) {
                (true, true) => "met".to_owned(),
                (false, true) => "not met (throughput)".to_owned(),
                (true, false) => "not met (p99)".to_owned(),
                (false, false) => "not met (throughput and p99)".to_owned(),
            };
            format!("{} {verdict}", result.target.trim_start_matches("Rapport, "))
        })
        .collect();
    let _ = writeln!(
        text,
        "Goal (at least {:.0} % of the ceiling's requests/s, p99 under {GOAL_P99_MS:.0} ms): {}.",
        GOAL_SHARE_OF_CEILING * 100.0,
        verdicts.join("; "),
    );
    text
}

/// The section with `run` first among the runs, replacing an earlier run of the same day.
fn with_run(previous: Option<&str>, date: &str, run: &str) -> String {
    let mut text = intro();
    text.push('\n');
    text.push_str(run.trim_end());
    text.push('\n');
    for (run_date, earlier) in split_runs(previous.unwrap_or_default()) {
        if run_date != date {
            text.push('\n');
            text.push_str(earlier.trim_end());
            text.push('\n');
        }
    }
    text
}

/// Each run (`### YYYY-MM-DD` up to the next one) with its date; the text before the first is left out.
fn split_runs(text: &str) -> Vec<(String, String)> {
    let mut runs: Vec<(String, String)> = Vec::new();
    for line in text.split_inclusive('\n') {
        match (run_date(line), runs.last_mut()) {
            (Some(date), _) => runs.push((date.to_owned(), line.to_owned())),
            (None, Some((_, run))) => run.push_str(line),
            (None, None) => {}
        }
    }
    runs
}

fn run_date(line: &str) -> Option<&str> {
    let date = line.strip_prefix("### ")?.trim();
    let shape = date.len() == 10
        && date.char_indices().all(|(index, c)| if index == 4 || index == 7 { c == '-' } else { c.is_ascii_digit() });
    shape.then_some(date)
}
