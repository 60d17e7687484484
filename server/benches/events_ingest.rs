//! The event ingestion benchmark: 1,000-event batches POSTed to `/v1/events` of a Rapport server
//! started in this process, on SQLite and on PostgreSQL, from a few concurrent clients for a
//! fixed time; then single events one after the other with an endpoint subscribed to
//! `event.received`, timing each from its acceptance to its webhook reaching a receiver.
//! Events/second (all created, each with its own idempotency key) and those latencies go to
//! `BENCHMARKS.md`.
//!
//! Run it with `cargo bench -p rapport --bench events_ingest` (needs a PostgreSQL server, found
//! like the end-to-end tests find theirs). Speed is measured here and never asserted in tests.

#[path = "support/in_process.rs"]
mod in_process;
// The shared helpers also drive wrk; this benchmark makes its own HTTP load.
#[allow(dead_code)]
mod support;

use std::{
    fmt::Write as _,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};
use in_process::InProcess;
use rapport::{
    domain::contact::{ContactId, ExternalId},
    service::{
        Actor, RequestContext, Services,
        contacts::{ContactChanges, UpsertKey},
    },
    store::events::unindexed,
};
use sea_orm::DbBackend;
use serde_json::{Value, json};
use support::{ADMIN_TOKEN, Machine, PostgresDatabase, wait_for_quiet};

const BATCH: usize = 1_000;
/// Contacts the events are spread over.
const CONTACTS: usize = 1_000;
/// Clients posting at once, as many sources do in production. Batches that arrive while the
/// event writer is busy are written together, so it stays busy only with more senders than one
/// group holds: with 4, every client waited on the same group and the writer then sat idle.
const CLIENTS: usize = 16;
const WARM_UP: Duration = Duration::from_secs(3);
const MEASURE: Duration = Duration::from_secs(10);
/// The goals on 2 cores, events per second.
const GOAL_SQLITE: f64 = 100_000.0;
const GOAL_POSTGRES: f64 = 50_000.0;
/// Single events timed from acceptance to webhook.
const LATENCY_SAMPLES: usize = 300;

fn intro() -> String {
    format!(
        "## Event ingestion (`POST /v1/events`)\n\n\
         `cargo bench -p rapport --bench events_ingest`: {CLIENTS} clients POST batches of {BATCH} events \
         (JSON array, contacts by id spread over {CONTACTS} contacts, small properties, an idempotency key \
         each) to a release-built server in the bench's process for {} s after {} s of warm-up; every \
         event must come back `created`. Goal on 2 cores: {GOAL_SQLITE:.0} events/s on SQLite, \
         {GOAL_POSTGRES:.0} on PostgreSQL. The clients share the machine with the server.\n\n\
         Then, with a webhook endpoint subscribed to `event.received` (a receiver in the bench's process \
         answering 204), {LATENCY_SAMPLES} single events are posted one after the other: \"to webhook\" runs \
         from the moment the `POST` answered (the event committed) to the moment its webhook reached \
         the receiver. An idle webhook worker on PostgreSQL is woken by a NOTIFY sent when a \
         transaction that wrote deliveries commits (and looks every 100 ms for retries); on SQLite it \
         looks for due deliveries with a read every 10 ms.\n\n\
         On SQLite the contact's timeline is indexed in bulk by a task every half second, not as each \
         event is stored (`store::events::index_timeline`); events not indexed yet are read from the \
         event table itself. Below the table: how many events were waiting for that task when the load \
         stopped, and how long after that it had indexed them all.\n",
        MEASURE.as_secs(),
        WARM_UP.as_secs()
    )
}

fn main() -> ExitCode {
    support::run_bench("events_ingest", run)
}

struct Measurement {
    database: &'static str,
    events_per_second: f64,
    batch_ms_p50: f64,
    batch_ms_p99: f64,
    idle_before: Option<f64>,
    goal: f64,
    webhook_ms_p50: f64,
    webhook_ms_p99: f64,
    /// SQLite: events not in the timeline when the load stopped, and the time until they were.
    timeline_lag: Option<(u64, Duration)>,
}

/// On SQLite, the events stored but not yet in `event_timeline` now, and how long until none is.
async fn timeline_lag(server: &InProcess) -> anyhow::Result<Option<(u64, Duration)>> {
    let database = server.services.database();
    if database.backend() != DbBackend::Sqlite {
        return Ok(None);
    }
    let started = Instant::now();
    let mut waiting = None;
    loop {
        let count = unindexed(database.connection()).await?;
        let first = *waiting.get_or_insert(count);
        if count == 0 {
            return Ok(Some((first, started.elapsed())));
        }
        ensure!(started.elapsed() < Duration::from_secs(60), "the timeline did not catch up in a minute");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run() -> anyhow::Result<()> {
    let machine = Machine::describe("not used".to_owned()).await;
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let sqlite_url = format!("sqlite://{}?mode=rwc", work.path().join("rapport.db").display());
    let mut results = vec![measure("SQLite", &sqlite_url, GOAL_SQLITE).await?];
    let postgres = PostgresDatabase::create().await?;
    let measured = measure("PostgreSQL", &postgres.url, GOAL_POSTGRES).await;
    postgres.drop_database().await;
    results.push(measured?);

    let run = report(&machine, &results);
    println!("\n{run}");
    let path = support::update_section("events_ingest", |_| format!("{}\n{run}", intro()))?;
    println!("wrote {}", path.display());
    Ok(())
}

async fn measure(database: &'static str, url: &str, goal: f64) -> anyhow::Result<Measurement> {
    // The webhook receiver listens on loopback.
    let server = InProcess::start(database, url, |settings| settings.webhooks.allow_private_networks = true).await?;
    let contacts = seed(&server.services).await?;
    let client = reqwest::Client::new();
    let endpoint = format!("{}/v1/events", server.address);
    let next = Arc::new(AtomicUsize::new(0));

    eprintln!("[{database}] warming up for {} s", WARM_UP.as_secs());
    load(&client, &endpoint, &contacts, &next, WARM_UP).await?;
    let idle_before = wait_for_quiet().await;
    eprintln!("[{database}] measuring for {} s", MEASURE.as_secs());
    let started = Instant::now();
    let mut latencies = load(&client, &endpoint, &contacts, &next, MEASURE).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let timeline_lag = timeline_lag(&server).await?;
    eprintln!("[{database}] timing {LATENCY_SAMPLES} events to their webhooks");
    let mut to_webhook = webhook_latencies(&client, &server.address, &contacts).await?;
    server.stop().await?;

    ensure!(!latencies.is_empty(), "{database}: no batch completed");
    ensure!(!to_webhook.is_empty(), "{database}: no webhook timed");
    Ok(Measurement {
        database,
        events_per_second: (latencies.len() * BATCH) as f64 / elapsed,
        batch_ms_p50: percentile(&mut latencies, 0.5),
        batch_ms_p99: percentile(&mut latencies, 0.99),
        idle_before,
        goal,
        webhook_ms_p50: percentile(&mut to_webhook, 0.5),
        webhook_ms_p99: percentile(&mut to_webhook, 0.99),
        timeline_lag,
    })
}

fn percentile(values: &mut [f64], share: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    values[((values.len() - 1) as f64 * share).round() as usize]
}

/// Registers a receiver for `event.received`, then posts single events one at a time; for each,
/// the milliseconds from the answer to its webhook's arrival.
async fn webhook_latencies(client: &reqwest::Client, base: &str, contacts: &[ContactId]) -> anyhow::Result<Vec<f64>> {
    let (arrivals, mut arrived) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let receiver = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let _ = arrivals.send(Instant::now());
            async { axum::http::StatusCode::NO_CONTENT }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hook", listener.local_addr()?);
    let receiving = tokio::spawn(async move { axum::serve(listener, receiver).await });
    let register = json!({
        "query": "mutation($input: CreateWebhookEndpointInput!) { createWebhookEndpoint(input: $input) { secret } }",
        "variables": { "input": { "url": url, "eventTypes": ["event.received"] } },
    });
    let registered: Value =
        client.post(format!("{base}/graphql")).bearer_auth(ADMIN_TOKEN).json(&register).send().await?.json().await?;
    ensure!(registered["errors"].is_null(), "cannot register the receiver: {registered}");
    let mut latencies = Vec::with_capacity(LATENCY_SAMPLES);
    for sample in 0..LATENCY_SAMPLES {
        let event = json!([{
            "contact": { "id": contacts[sample % contacts.len()].to_string() },
            "type": "page.viewed",
            "idempotencyKey": format!("latency-{sample}"),
        }]);
        let response = client.post(format!("{base}/v1/events")).bearer_auth(ADMIN_TOKEN).json(&event).send().await?;
        let accepted = Instant::now();
        let answer: Value = response.json().await?;
        ensure!(answer["created"] == 1, "the event was not created: {answer}");
        let arrival = tokio::time::timeout(Duration::from_secs(30), arrived.recv())
            .await
            .context("no webhook within 30 s")?
            .context("the receiver stopped")?;
        latencies.push(arrival.saturating_duration_since(accepted).as_secs_f64() * 1_000.0);
    }
    receiving.abort();
    Ok(latencies)
}

async fn seed(services: &Services) -> anyhow::Result<Vec<ContactId>> {
    let ctx = RequestContext::internal(Actor::Bootstrap, "bench-seed");
    let mut ids = Vec::with_capacity(CONTACTS);
    for index in 0..CONTACTS {
        let key = UpsertKey::ExternalId(ExternalId::parse(&format!("bench-{index}"))?);
        let upserted = services
            .upsert_contact(&ctx, key, ContactChanges::default())
            .await
            .map_err(|error| anyhow!("seed contact {index}: {error}"))?;
        ids.push(upserted.contact.id);
    }
    Ok(ids)
}

/// Posts batches from `CLIENTS` clients until `duration` has passed; the time each batch took.
async fn load(
    client: &reqwest::Client,
    endpoint: &str,
    contacts: &[ContactId],
    next: &Arc<AtomicUsize>,
    duration: Duration,
) -> anyhow::Result<Vec<f64>> {
    let deadline = Instant::now() + duration;
    let clients = (0..CLIENTS).map(|_| async move {
        let mut latencies = Vec::new();
        while Instant::now() < deadline {
            let body = batch(contacts, next.fetch_add(1, Ordering::Relaxed));
            let started = Instant::now();
            let response = client
                .post(endpoint)
                .bearer_auth(ADMIN_TOKEN)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body)
                .send()
                .await
                .context("POST /v1/events")?;
            let status = response.status();
            let answer: Value = response.json().await.context("the answer is not JSON")?;
            ensure!(status.is_success() && answer["created"] == BATCH, "the server answered {status}: {answer:.300}");
            latencies.push(started.elapsed().as_secs_f64() * 1_000.0);
        }
        anyhow::Ok(latencies)
    });
    let mut all = Vec::new();
    for latencies in futures_util::future::try_join_all(clients).await? {
        all.extend(latencies);
    }
    Ok(all)
}

/// The `number`th batch: its own idempotency keys, the contacts in turn.
fn batch(contacts: &[ContactId], number: usize) -> String {
    let events: Vec<Value> = (0..BATCH)
        .map(|index| {
            let n = number * BATCH + index;
            json!({
                "contact": { "id": contacts[n % contacts.len()].to_string() },
                "type": if n.is_multiple_of(3) { "order.completed" } else { "page.viewed" },
                "properties": { "path": format!("/products/{}", n % 97), "value": n % 1_000 },
                "idempotencyKey": format!("bench-{n}"),
            })
        })
        .collect();
    Value::from(events).to_string()
}

fn report(machine: &Machine, results: &[Measurement]) -> String {
    let mut text = String::new();
    let idle: Vec<String> = results
        .iter()
        .map(|result| {
            let share = result.idle_before.map_or("unknown".to_owned(), |idle| format!("{:.0} %", idle * 100.0));
            format!("{} {share}", result.database)
        })
        .collect();
    let _ = writeln!(
        text,
        "### {}\n\nRun at {} UTC on commit {}.\n\n\
         - Machine: {} CPUs ({}), {} memory, Linux {} ({}); {}\n\
         - CPU idle in the second before each measurement: {}\n",
        machine.date,
        machine.time,
        machine.commit,
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.os,
        machine.rustc,
        idle.join(", "),
    );
    text.push_str(
        "| database | events/s | batch p50 | batch p99 | goal | to webhook p50 | to webhook p99 |\n\
         |---|---:|---:|---:|---|---:|---:|\n",
    );
    for result in results {
        let verdict = if result.events_per_second >= result.goal { "met" } else { "not met" };
        let _ = writeln!(
            text,
            "| {} | {:.0} | {:.1} ms | {:.1} ms | {:.0}/s: {verdict} | {:.1} ms | {:.1} ms |",
            result.database,
            result.events_per_second,
            result.batch_ms_p50,
            result.batch_ms_p99,
            result.goal,
            result.webhook_ms_p50,
            result.webhook_ms_p99
        );
    }
    for result in results {
        if let Some((waiting, after)) = result.timeline_lag {
            let _ = writeln!(
                text,
                "\n{}'s timeline when the load stopped: {waiting} events not indexed yet, all indexed {:.0} ms later.",
                result.database,
                after.as_secs_f64() * 1000.0
            );
        }
    }
    text
}
