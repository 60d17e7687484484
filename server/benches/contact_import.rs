//! The contact import benchmark: a generated CSV file of one million contacts imported through
//! the very function `rapport import contacts` calls, on SQLite and on PostgreSQL, each into an
//! empty database. Rows per second, the machine's CPU time per row and the process's peak memory
//! go to `BENCHMARKS.md`; memory is sampled through the run to show whether it stays flat as the
//! file goes by.
//!
//! Run it with `cargo bench -p rapport --bench contact_import` (needs a PostgreSQL server, found
//! like the end-to-end tests find theirs). `RAPPORT_BENCH_IMPORT_ROWS` sets another row count
//! for a quick look. Speed is measured here and never asserted in tests.

// The shared helpers also drive wrk; this benchmark runs no HTTP load.
#[allow(dead_code)]
mod support;

use std::{
    fmt::Write as _,
    io::{BufWriter, Write as _},
    path::Path,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};
use rapport::{
    config::Settings,
    domain::{field::FieldType, import::ImportKey, key::Key},
    service::{Actor, RequestContext, Services, SystemClock, fields::NewField, imports::ImportOptions},
    startup,
};
use secrecy::SecretString;
use support::{CpuSpent, CpuTimes, Machine, PostgresDatabase, process_cpu_seconds, wait_for_quiet};

const DEFAULT_ROWS: u64 = 1_000_000;
/// The goal on 2 cores, rows per second, on either database.
const GOAL: f64 = 50_000.0;
const COUNTRIES: [&str; 6] = ["DE", "FR", "GB", "US", "CH", "NL"];
const LOCALES: [&str; 4] = ["de", "fr", "en", "de-CH"];

fn rows() -> u64 {
    std::env::var("RAPPORT_BENCH_IMPORT_ROWS").ok().and_then(|rows| rows.parse().ok()).unwrap_or(DEFAULT_ROWS)
}

fn intro(rows: u64, bytes: u64) -> String {
    format!(
        "## Contact import (`rapport import contacts`)\n\n\
         `cargo bench -p rapport --bench contact_import`: a generated CSV file of {rows} new contacts \
         ({:.0} MB: email, first and last name, locale, country, an enum and a number custom field; \
         names and email are encrypted, the email gets a blind index) imported by email into an empty \
         database through the function the command line calls (batches of {} rows, parsed on one \
         thread while the previous batch is written). Goal on 2 cores: {GOAL:.0} rows/s with memory \
         flat whatever the file's size. Peak RSS is the bench process's (VmHWM, reset before each \
         run; on SQLite the database engine runs in the process too); \"RSS at start\" is the \
         resident size when the run begins (the PostgreSQL run begins with what the SQLite run \
         before it left resident, which the peak then includes) and \"RSS at a quarter\" the size \
         a quarter of the way through, to compare with the peak. \"CPU per row\" is the whole \
         machine's busy CPU time over the run (the import and, on PostgreSQL, the server) divided by \
         the rows, and \"of it in Rapport\" the part this process spent (all of it on SQLite, whose \
         engine runs in the process; on PostgreSQL the rest is the server's); \"CPUs idle\" is the share of the machine the run left unused, and \"CPU stolen\" \
         the share its hypervisor gave to other guests. On a shared virtual machine the slowest of \
         several runs of one build can be a third below the fastest: compare CPU per row as well.\n",
        bytes as f64 / 1e6,
        rapport::service::imports::DEFAULT_BATCH_ROWS,
    )
}

fn main() -> ExitCode {
    support::run_bench("contact_import", run)
}

struct Measurement {
    database: &'static str,
    rows: u64,
    seconds: f64,
    peak_rss_kib: u64,
    start_rss_kib: u64,
    quarter_rss_kib: u64,
    idle_before: Option<f64>,
    /// The whole machine's CPU over the run: the import and, for PostgreSQL, the server.
    cpu: Option<CpuSpent>,
    /// CPU-seconds of this process over the run: all of it on SQLite, the client on PostgreSQL.
    process_cpu_seconds: Option<f64>,
}

async fn run() -> anyhow::Result<()> {
    let machine = Machine::describe("not used".to_owned()).await;
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let rows = rows();
    let file = work.path().join("contacts.csv");
    eprintln!("generating {rows} rows into {}", file.display());
    generate(&file, rows)?;
    let bytes = std::fs::metadata(&file)?.len();

    let sqlite_url = format!("sqlite://{}?mode=rwc", work.path().join("rapport.db").display());
    let mut results = vec![measure("SQLite", &sqlite_url, &file, rows).await?];
    let postgres = PostgresDatabase::create().await?;
    let server = postgres.settings().await.unwrap_or_else(|error| format!("PostgreSQL settings unknown: {error:#}"));
    let measured = measure("PostgreSQL", &postgres.url, &file, rows).await;
    postgres.drop_database().await;
    results.push(measured?);

    let run = report(&machine, &server, &results);
    println!("\n{run}");
    let path = support::update_section("contact_import", |_| format!("{}\n{run}", intro(rows, bytes)))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// Writes `rows` distinct contacts; every 50th has no last name, as real files have gaps.
fn generate(path: &Path, rows: u64) -> anyhow::Result<()> {
    let mut out = BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "email,first_name,last_name,locale,country,loyalty_tier,lifetime_value")?;
    for n in 0..rows {
        let last = if n % 50 == 0 { String::new() } else { format!("Lastname{}", n % 9_973) };
        writeln!(
            out,
            "person{n}@example{}.com,First{},{last},{},{},{},{}.{}",
            n % 100,
            n % 7_919,
            LOCALES[(n % 4) as usize],
            COUNTRIES[(n % 6) as usize],
            if n % 3 == 0 { "gold" } else { "silver" },
            n % 10_000,
            n % 100,
        )?;
    }
    out.flush()?;
    Ok(())
}

async fn measure(database: &'static str, url: &str, file: &Path, rows: u64) -> anyhow::Result<Measurement> {
    let settings = Settings {
        database_url: url.to_owned(),
        master_key: Some(SecretString::from(rapport::crypto::MasterKey::generate().to_base64())),
        log: "warn".to_owned(),
        ..Settings::default()
    };
    prepare(&settings).await?;
    let idle_before = wait_for_quiet().await;
    eprintln!("[{database}] importing {rows} rows");
    reset_peak_rss();
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = Arc::clone(&sampling);
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while sampling.load(Ordering::Relaxed) {
                samples.push(status_kib("VmRSS:"));
                std::thread::sleep(Duration::from_millis(250));
            }
            samples
        })
    };
    let report = file.with_extension("errors.csv");
    let cpu_before = CpuTimes::now();
    let process_before = process_cpu_seconds();
    let started = Instant::now();
    let summary =
        startup::import_contacts(&settings, file, ImportOptions::new("contacts.csv", ImportKey::Email), &report).await;
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu_before.zip(CpuTimes::now()).and_then(|(before, after)| after.since(&before));
    let process_cpu_seconds = process_before.zip(process_cpu_seconds()).map(|(before, after)| after - before);
    sampling.store(false, Ordering::Relaxed);
    let samples = sampler.join().map_err(|_| anyhow!("the memory sampler panicked"))?;
    let summary = summary?;
    let counts = summary.import.counts;
    ensure!(counts.created == rows && counts.rejected == 0, "{database}: expected {rows} created, got {counts:?}");
    Ok(Measurement {
        database,
        rows,
        seconds,
        peak_rss_kib: status_kib("VmHWM:"),
        start_rss_kib: samples.first().copied().unwrap_or_default(),
        quarter_rss_kib: samples.get(samples.len() / 4).copied().unwrap_or_default(),
        idle_before,
        cpu,
        process_cpu_seconds,
    })
}

/// Migrates the empty database and defines the custom fields the file fills.
async fn prepare(settings: &Settings) -> anyhow::Result<()> {
    let database = startup::connect(settings).await?;
    startup::migrate(&database).await?;
    let database = startup::open_keys(database, startup::master_keys(settings)?).await?;
    let services = Services::new(database.clone(), Arc::new(SystemClock));
    let ctx = RequestContext::internal(Actor::Cli, "bench-prepare");
    for (key, field_type, enum_values) in [
        ("loyalty_tier", FieldType::Enum, vec!["gold".to_owned(), "silver".to_owned()]),
        ("lifetime_value", FieldType::Number, Vec::new()),
    ] {
        let new = NewField {
            key: Key::parse(key)?,
            label: key.to_owned(),
            field_type,
            enum_values,
            required: false,
            personal: false,
        };
        services.define_field(&ctx, new).await.map_err(|error| anyhow!("define {key}: {error}"))?;
    }
    database.close().await?;
    Ok(())
}

/// Resets VmHWM to the current RSS (Linux ≥ 4.0), so that each run's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// A `kB` line of /proc/self/status.
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_default()
}

fn report(machine: &Machine, server: &str, results: &[Measurement]) -> String {
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
         - {server}\n\
         - CPU idle in the second before each run: {}\n",
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
        "| database | rows | time | rows/s | CPU per row | of it in Rapport | CPUs idle | CPU stolen | RSS at start | RSS at a quarter | peak RSS | goal |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for result in results {
        let rate = result.rows as f64 / result.seconds;
        let verdict = if rate >= GOAL { "met" } else { "not met" };
        let (per_row, idle, stolen) = result.cpu.map_or_else(
            || ("unknown".to_owned(), "unknown".to_owned(), "unknown".to_owned()),
            |cpu| {
                (
                    format!("{:.1} µs", cpu.busy_seconds * 1e6 / result.rows as f64),
                    format!("{:.0} %", cpu.idle_share * 100.0),
                    format!("{:.1} %", cpu.steal_share * 100.0),
                )
            },
        );
        let in_process = result
            .process_cpu_seconds
            .map_or("unknown".to_owned(), |seconds| format!("{:.1} µs", seconds * 1e6 / result.rows as f64));
        let _ = writeln!(
            text,
            "| {} | {} | {:.1} s | {rate:.0} | {per_row} | {in_process} | {idle} | {stolen} | {:.0} MiB | {:.0} MiB | {:.0} MiB | {GOAL:.0}/s: {verdict} |",
            result.database,
            result.rows,
            result.seconds,
            result.start_rss_kib as f64 / 1024.0,
            result.quarter_rss_kib as f64 / 1024.0,
            result.peak_rss_kib as f64 / 1024.0,
        );
    }
    text
}
