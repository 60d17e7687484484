//! The HTTP throughput benchmark: `contact(by: {id})` over GraphQL under wrk, on SQLite and on
//! PostgreSQL, beside a minimal async-graphql "hello" server that serves as the ceiling, all in one
//! run on one machine, so the three numbers are comparable. Results go to `BENCHMARKS.md`.
//!
//! Run it with `cargo bench -p rapport --bench http_throughput` (needs `wrk` on PATH and a
//! PostgreSQL server, found like the end-to-end tests find theirs). Speed is measured here and
//! never asserted in tests: a loaded CI machine would make such tests flaky.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use async_graphql::{EmptyMutation, EmptySubscription, Object, Schema};
use axum::{Json, Router, extract::State, routing::post};
use futures_util::{StreamExt, TryStreamExt, stream};
use rapport::{
    config::{RateLimit, Settings},
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
    startup::{Application, ServeOptions},
};
use sea_orm::{ConnectionTrait, Database, Statement};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::{process::Command, sync::oneshot, task::JoinHandle};

/// Contacts in each database; the load cycles through `SAMPLED` of them, spread evenly.
const CONTACTS: usize = 5_000;
const SAMPLED: usize = 500;
/// The same load for every target. Warm-up lets connection pools, caches and the CPU settle.
const WRK_THREADS: u32 = 2;
const WRK_CONNECTIONS: u32 = 32;
const WARM_UP: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(10);
/// Measuring starts once this share of the CPUs is idle, or after `QUIET_WAIT` regardless.
const QUIET: f64 = 0.9;
const QUIET_WAIT: Duration = Duration::from_secs(30);
/// Writers seeding at once. SQLite takes one writer at a time, and a writer that finds the lock
/// taken sleeps in SQLite's busy handler, so more than one only wastes time there.
const SEED_CONCURRENCY_SQLITE: usize = 1;
const SEED_CONCURRENCY_POSTGRES: usize = 16;

const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
const CONTACT_QUERY: &str = "query($id: ID!) { contact(by: {id: $id}) { id email firstName lastName country attributes consents { purpose channel status } topics { topic { key } status } } }";
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
        "# Benchmarks

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

The command rewrites this file (edit the text in `server/benches/http_throughput.rs`): a run
replaces the section of the same day, and the newest run comes first.
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
    // `cargo test --all-targets` runs bench binaries without `--bench`: stay out of the way there.
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("http_throughput: run it with `cargo bench -p rapport --bench http_throughput`");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("benchmark failed: {error:#}");
            ExitCode::FAILURE
        }
    }
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

    let machine = Machine::describe(wrk_version, observed).await;
    let section = report(&machine, &results);
    println!("\n{section}");
    let path = repository_root().join("BENCHMARKS.md");
    update_benchmarks_file(&path, &machine.date, &section)?;
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

/// Waits, up to `QUIET_WAIT`, until the CPUs are idle (the databases finish what seeding left
/// them, other programs may finish theirs), and returns the idle share last seen.
async fn wait_for_quiet() -> Option<f64> {
    let started = Instant::now();
    loop {
        let idle = cpu_idle_share(Duration::from_secs(1)).await?;
        if idle >= QUIET {
            return Some(idle);
        }
        if started.elapsed() >= QUIET_WAIT {
            eprintln!("warning: only {:.0} % of the CPUs are idle; other work will skew the numbers", idle * 100.0);
            return Some(idle);
        }
        eprintln!("waiting for the CPUs to be idle ({:.0} % now)", idle * 100.0);
    }
}

/// The share of CPU time spent idle over `period`, from /proc/stat (Linux only).
async fn cpu_idle_share(period: Duration) -> Option<f64> {
    fn sample() -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).filter_map(|field| field.parse().ok()).collect();
        let idle = fields.get(3)? + fields.get(4).copied().unwrap_or(0);
        Some((idle, fields.iter().sum()))
    }
    let (idle_before, total_before) = sample()?;
    tokio::time::sleep(period).await;
    let (idle_after, total_after) = sample()?;
    let total = total_after.checked_sub(total_before).filter(|total| *total > 0)?;
    Some(idle_after.saturating_sub(idle_before) as f64 / total as f64)
}

/// The real server, started the way `rapport serve` starts it, on a port of its own.
struct Rapport {
    target: &'static str,
    url: String,
    services: Services,
    stop: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

impl Rapport {
    async fn start(target: &'static str, database_url: &str) -> anyhow::Result<Self> {
        eprintln!("[{target}] starting Rapport");
        let unlimited = RateLimit::new(1_000_000.0, 1_000_000)?;
        let settings = Settings {
            database_url: database_url.to_owned(),
            listen: "127.0.0.1:0".parse()?,
            admin_token: Some(SecretString::from(ADMIN_TOKEN)),
            master_key: Some(SecretString::from(rapport::crypto::MasterKey::generate().to_base64())),
            // The limiters still run on every request, but the load comes from one address with
            // one token, far faster than any production default allows.
            rate_limit_ip: unlimited,
            rate_limit_credential: unlimited,
            ..Settings::default()
        };
        let app = Application::build(&settings, ServeOptions::default())
            .await
            .with_context(|| format!("{target} does not start"))?;
        let services = app.services().clone();
        let url = format!("http://{}/graphql", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(Self { target, url, services, stop, server })
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
        let sampled: Vec<ContactId> = ids.iter().step_by((ids.len() / SAMPLED).max(1)).take(SAMPLED).copied().collect();
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
        let _ = self.stop.send(());
        self.server.await.context("the Rapport server task failed")?.context("the Rapport server failed")
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

/// POSTs one request as the load will and returns the body, which must be a 200 without errors.
async fn post_graphql(client: &reqwest::Client, url: &str, body: &str) -> anyhow::Result<Value> {
    let response = client
        .post(url)
        .bearer_auth(ADMIN_TOKEN)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let body: Value = response.json().await.context("the response is not JSON")?;
    ensure!(status == reqwest::StatusCode::OK && body.get("errors").is_none(), "{url} answered {status}: {body}");
    Ok(body)
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

/// A wrk script that POSTs the bodies in turn, each wrk thread starting at its own place.
fn wrk_script(dir: &Path, name: &str, bodies: &[String]) -> anyhow::Result<PathBuf> {
    let mut script = String::new();
    script.push_str("wrk.method = \"POST\"\n");
    script.push_str("wrk.headers[\"Content-Type\"] = \"application/json\"\n");
    writeln!(script, "wrk.headers[\"Authorization\"] = \"Bearer {ADMIN_TOKEN}\"")?;
    script.push_str("local bodies = {\n");
    for body in bodies {
        ensure!(!body.contains("]==]"), "a request body would end the Lua string early");
        writeln!(script, "[==[{body}]==],")?;
    }
    script.push_str(
        "}
local threads = 0
function setup(thread)
  thread:set(\"offset\", threads * 97)
  threads = threads + 1
end
local next_body = 0
function init(args)
  next_body = offset % #bodies
end
function request()
  next_body = next_body % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[next_body])
end
",
    );
    let path = dir.join(format!("{name}.lua"));
    std::fs::write(&path, script).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// Warms up, then measures `url` with wrk; counts the SQL statements of the measured part.
async fn load(
    url: &str,
    script: &Path,
    target: &'static str,
    services: Option<&Services>,
) -> anyhow::Result<Measurement> {
    eprintln!("[{target}] warming up for {} s", WARM_UP.as_secs());
    wrk(url, script, WARM_UP).await?;
    eprintln!("[{target}] measuring for {} s", MEASURE.as_secs());
    let statements_before = services.map(|services| services.database().statements_executed());
    let output = wrk(url, script, MEASURE).await?;
    let statements = services
        .zip(statements_before)
        .map(|(services, before)| services.database().statements_executed().saturating_sub(before) as f64);
    let parsed = WrkOutput::parse(&output).with_context(|| format!("cannot read wrk's output:\n{output}"))?;
    ensure!(parsed.non_2xx == 0, "{target}: {} responses were not 2xx:\n{output}", parsed.non_2xx);
    ensure!(parsed.socket_errors.is_none(), "{target}: wrk saw socket errors:\n{output}");
    ensure!(parsed.requests > 0, "{target}: no request completed:\n{output}");
    Ok(Measurement {
        target,
        requests_per_second: parsed.requests_per_second,
        p50_ms: parsed.p50_ms,
        p99_ms: parsed.p99_ms,
        statements_per_request: statements.map(|count| count / parsed.requests as f64),
    })
}

async fn wrk(url: &str, script: &Path, duration: Duration) -> anyhow::Result<String> {
    let output = Command::new("wrk")
        .arg(format!("-t{WRK_THREADS}"))
        .arg(format!("-c{WRK_CONNECTIONS}"))
        .arg(format!("-d{}s", duration.as_secs()))
        .arg("--latency")
        .arg("-s")
        .arg(script)
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(wrk_missing)?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    ensure!(output.status.success(), "wrk failed: {stdout}{}", String::from_utf8_lossy(&output.stderr));
    Ok(stdout)
}

async fn wrk_version() -> anyhow::Result<String> {
    // `wrk -v` prints its version and usage, and exits 1.
    let output = Command::new("wrk").arg("-v").stdin(Stdio::null()).output().await.map_err(wrk_missing)?;
    let text = String::from_utf8_lossy(&output.stdout);
    let first = text.lines().next().unwrap_or("wrk");
    Ok(first.split(" Copyright").next().unwrap_or(first).trim().to_owned())
}

fn wrk_missing(error: std::io::Error) -> anyhow::Error {
    if error.kind() == std::io::ErrorKind::NotFound {
        anyhow!("wrk is not on PATH: install it with `apt-get install wrk` (or your system's package manager)")
    } else {
        anyhow!("cannot run wrk: {error}")
    }
}

/// The parts of wrk's report we use.
#[derive(Debug)]
struct WrkOutput {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    requests: u64,
    non_2xx: u64,
    socket_errors: Option<String>,
}

impl WrkOutput {
    fn parse(output: &str) -> anyhow::Result<Self> {
        let mut requests_per_second = None;
        let (mut p50_ms, mut p99_ms, mut requests) = (None, None, None);
        let (mut non_2xx, mut socket_errors) = (0, None);
        for line in output.lines().map(str::trim) {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("Requests/sec:"), Some(value)) => requests_per_second = Some(value.parse()?),
                (Some("50%"), Some(value)) => p50_ms = Some(parse_duration_ms(value)?),
                (Some("99%"), Some(value)) => p99_ms = Some(parse_duration_ms(value)?),
                (Some(count), Some("requests")) => requests = Some(count.parse()?),
                (Some("Non-2xx"), _) => {
                    non_2xx = line.rsplit(' ').next().unwrap_or_default().parse()?;
                }
                (Some("Socket"), Some("errors:")) => socket_errors = Some(line.to_owned()),
                _ => {}
            }
        }
        Ok(Self {
            requests_per_second: requests_per_second.context("no Requests/sec line")?,
            p50_ms: p50_ms.context("no 50% line: was --latency passed?")?,
            p99_ms: p99_ms.context("no 99% line: was --latency passed?")?,
            requests: requests.context("no request count")?,
            non_2xx,
            socket_errors,
        })
    }
}

/// wrk writes durations as `812.00us`, `1.23ms`, `2.01s` or `1.50m`.
fn parse_duration_ms(text: &str) -> anyhow::Result<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic()).with_context(|| format!("no unit in {text:?}"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().with_context(|| format!("not a duration: {text:?}"))?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1_000.0,
        "m" => 60_000.0,
        other => bail!("unknown unit {other:?} in {text:?}"),
    };
    Ok(number * factor)
}

/// A database of its own on the PostgreSQL server the end-to-end tests use.
struct PostgresDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PostgresDatabase {
    async fn create() -> anyhow::Result<Self> {
        let admin_url = std::env::var("RAPPORT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
        let admin = Database::connect(&admin_url).await.with_context(|| {
            format!("PostgreSQL is required at {admin_url} (set RAPPORT_TEST_POSTGRES_URL to use another server)")
        })?;
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.context("cannot create the database")?;
        // Seeding commits five transactions per contact; not waiting for each to reach the disk
        // makes it faster. The measured reads write nothing, so they are not affected.
        admin
            .execute_unprepared(&format!("ALTER DATABASE \"{name}\" SET synchronous_commit = off"))
            .await
            .context("cannot configure the database")?;
        admin.close().await.ok();
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Ok(Self { admin_url, name, url })
    }

    async fn drop_database(&self) {
        let dropped = async {
            let admin = Database::connect(&self.admin_url).await?;
            admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name)).await?;
            admin.close().await
        };
        if let Err(error) = dropped.await {
            eprintln!("could not drop the database {}: {error}; drop it by hand", self.name);
        }
    }
}

/// Where and when the numbers were taken.
struct Machine {
    date: String,
    time: String,
    cpus: usize,
    cpu_model: String,
    memory: String,
    kernel: String,
    os: String,
    rustc: String,
    wrk: String,
    commit: String,
    observed: Observed,
}

impl Machine {
    async fn describe(wrk: String, observed: Observed) -> Self {
        let now = chrono::Utc::now();
        let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name").and_then(|rest| rest.split_once(':')))
            .map_or("unknown".to_owned(), |(_, model)| model.trim().to_owned());
        let memory = read("/proc/meminfo")
            .lines()
            .find_map(|line| line.strip_prefix("MemTotal:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or("unknown".to_owned(), |kib| format!("{:.1} GiB", kib / 1024.0 / 1024.0));
        let os = read("/etc/os-release")
            .lines()
            .find_map(|line| line.strip_prefix("PRETTY_NAME="))
            .map_or("unknown".to_owned(), |name| name.trim_matches('"').to_owned());
        let rustc = command_output(&std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()), &["--version"])
            .await
            .unwrap_or_else(|| "unknown".to_owned());
        let commit = match command_output("git", &["rev-parse", "--short", "HEAD"]).await {
            Some(commit) => {
                // Only changes to what is measured matter; other files may be in flux.
                let dirty = command_output(
                    "git",
                    &["status", "--porcelain", "--", "server", "migrations", "Cargo.toml", "Cargo.lock"],
                )
                .await
                .is_some_and(|status| !status.is_empty());
                if dirty { format!("{commit} with uncommitted changes") } else { commit }
            }
            None => "unknown".to_owned(),
        };
        Self {
            date: now.format("%Y-%m-%d").to_string(),
            time: now.format("%H:%M").to_string(),
            cpus: std::thread::available_parallelism().map_or(0, usize::from),
            cpu_model,
            memory,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            os,
            rustc,
            wrk,
            commit,
            observed,
        }
    }
}

async fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).current_dir(repository_root()).output().await.ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The section of `BENCHMARKS.md` for this run.
fn report(machine: &Machine, results: &[Measurement]) -> String {
    let ceiling = results.first().map_or(f64::NAN, |ceiling| ceiling.requests_per_second);
    let mut text = String::new();
    let _ = writeln!(text, "## {}\n", machine.date);
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
        machine.observed.sqlite_version,
        machine.observed.postgres_version,
        machine.observed.idle_before_load.map_or("unknown".to_owned(), |idle| format!("{:.0} %", idle * 100.0)),
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

/// Puts `section` first among the runs, replacing an earlier run of the same day.
fn update_benchmarks_file(path: &Path, date: &str, section: &str) -> anyhow::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let runs = split_runs(&existing);
    let mut text = intro();
    text.push('\n');
    text.push_str(section.trim_end());
    text.push('\n');
    for (run_date, run) in runs {
        if run_date != date {
            text.push('\n');
            text.push_str(run.trim_end());
            text.push('\n');
        }
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Each run (`## YYYY-MM-DD` up to the next one) with its date; the text before the first is left out.
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
    let date = line.strip_prefix("## ")?.trim();
    let shape = date.len() == 10
        && date.char_indices().all(|(index, c)| if index == 4 || index == 7 { c == '-' } else { c.is_ascii_digit() });
    shape.then_some(date)
}

fn repository_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), Path::to_path_buf)
}
