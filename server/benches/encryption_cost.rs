//! The cost of encryption at rest, measured A/B. There is no switch to turn encryption off, so
//! the benchmark builds `rapport` from the commit just before encryption landed and from the
//! merge that landed it, runs each as `rapport serve` (beside the current tree's binary, for
//! information), and times a 1,000-contact upsert batch and contact-by-id under wrk on SQLite and
//! PostgreSQL. Results go to their own section of `BENCHMARKS.md`.
//!
//! Run it with `cargo bench -p rapport --bench encryption_cost` (needs `git`, `tar`, `wrk` and a
//! PostgreSQL server, found like the end-to-end tests find theirs). Speed is measured here and
//! never asserted in tests.

mod support;

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use sea_orm::{ConnectionTrait, Database, Statement};
use serde_json::json;
use support::{
    ADMIN_TOKEN, CONTACT_QUERY, MEASURE, Machine, PostgresDatabase, SAMPLED, WARM_UP, WRK_CONNECTIONS, WRK_THREADS,
    WrkOutput, post_graphql, wait_for_quiet, wrk_script, wrk_version,
};
use tokio::process::{Child, Command};

/// The code just before encryption landed, and the merge that landed it: its first parent is
/// `WITHOUT`, so the two differ by exactly the encryption work.
const WITHOUT: &str = "c4e174d";
const WITH: &str = "4598518";
/// What the current tree's column says of itself, so that nobody reads it as the cost of encryption.
const TODAY_ALSO: &str = "also includes auth, rate limits, …";

/// Contacts per upsert batch, and batches timed after the one warm-up batch. Every batch creates
/// new contacts, so the read afterwards has `(1 + MEASURED_BATCHES) * BATCH` to choose from.
const BATCH: usize = 1_000;
const MEASURED_BATCHES: usize = 5;
/// How long a server may take to migrate a fresh database and answer `/readyz`.
const READY_WAIT: Duration = Duration::from_secs(60);
/// The limits main today enforces, raised far above the load (one address, one token); the two
/// older binaries predate rate limits and ignore these variables.
const UNLIMITED: [(&str, &str); 4] = [
    ("RAPPORT_RATE_LIMIT_IP_PER_SECOND", "1000000"),
    ("RAPPORT_RATE_LIMIT_IP_BURST", "1000000"),
    ("RAPPORT_RATE_LIMIT_CREDENTIAL_PER_SECOND", "1000000"),
    ("RAPPORT_RATE_LIMIT_CREDENTIAL_BURST", "1000000"),
];

fn intro() -> String {
    format!(
        "## Cost of encryption

What encrypting personal fields at rest (XChaCha20-Poly1305 under per-contact data keys, keyed
blind indexes for email and phone) costs the two operations it touches most: writing contacts
and reading one. There is no switch to turn encryption off, so two builds are compared:

- **without encryption**: commit {WITHOUT}, the code just before encryption landed;
- **with encryption**: commit {WITH}, the merge that landed it. Its first parent is {WITHOUT}, so
  `git diff {WITHOUT} {WITH}` is exactly the encryption work;
- **main today ({TODAY_ALSO})**: the current tree, for information
  only. It also carries everything merged since (sign-in and roles, rate limits, GDPR export and
  erasure, SQLite `secure_delete`, …), so its difference from the other two is not the cost of
  encryption.

Besides the cipher work, encryption adds SQL: creating a contact also inserts its wrapped data
key, and reading one also fetches that key to unwrap it.

The benchmark builds each historical commit itself (`cargo build --release` of a `git archive`
of it, under `target/bench-baselines`, once) and runs every binary as `rapport serve` in a child
process, configured by environment only (logging at `warn`, rate limits raised above the load),
on a fresh SQLite file and on a fresh PostgreSQL database on the same machine. SQLite runs in WAL
mode with `synchronous = NORMAL` as Rapport sets it, and the PostgreSQL database has
`synchronous_commit = off` as in the benchmark above, so neither waits for the disk on every
commit. Then, for each binary and database:

- **upsert batch**: one GraphQL request of {batch} aliased `upsertContact` mutations, each creating
  a new contact by email with first and last name and phone, checked to come back without errors
  and with every contact created. One warm-up batch, then {measured} timed ones, one after the
  other; the table gives the median time of the {measured} (and their range) and the contacts per
  second that median makes;
- **contact-by-id**: the query of the benchmark above, under the same `wrk` load ({threads} threads,
  {connections} connections, {measure} s after {warm_up} s of warm-up), cycling through {sampled} of
  the {contacts} contacts the batches created, each checked first to come back with its email. These
  contacts have no attributes, consents or topics, so the read is lighter than the one above.

The three servers of one database run at once and take turns: each timed batch goes to all three
in turn, then each gets its `wrk` load, so that whatever else the machine does drifts over all the
columns alike (a server waiting for its turn does nothing). Measuring starts once the CPUs are
idle, before each timed batch and before each `wrk` run (the run says how idle they were). The
load generator, the servers and PostgreSQL share the same cores: compare the columns of one run,
not runs on different machines. \"difference\" is *with*
relative to *without*: for times a positive number is slower, for rates a negative one.

Reproduce it (PostgreSQL is found through `RAPPORT_TEST_POSTGRES_URL`, as above; the first run
spends several minutes building the two commits):

```sh
apt-get install wrk
cargo bench -p rapport --bench encryption_cost
```

The command rewrites this section with its newest run and leaves the rest of the file alone (edit
the text in `server/benches/encryption_cost.rs`).
",
        batch = grouped(BATCH),
        measured = MEASURED_BATCHES,
        threads = WRK_THREADS,
        connections = WRK_CONNECTIONS,
        measure = MEASURE.as_secs(),
        warm_up = WARM_UP.as_secs(),
        sampled = SAMPLED,
        contacts = grouped((1 + MEASURED_BATCHES) * BATCH),
    )
}

fn main() -> ExitCode {
    support::run_bench("encryption_cost", run)
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let machine = Machine::describe(wrk_version().await?).await;
    let builds = builds(&machine.commit).await?;
    let mut postgres = Vec::new();
    for _ in &builds {
        postgres.push(PostgresDatabase::create().await?);
    }
    let outcome = tokio::select! {
        outcome = measure_all(&builds, &postgres) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    for database in &postgres {
        database.drop_database().await;
    }
    let (runs, observed) = outcome?;

    let section = report(&machine, &builds, &runs, &observed);
    println!("\n{section}");
    let path = support::update_section("encryption_cost", |_| format!("{}\n{section}", intro()))?;
    println!("wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// One `rapport` binary and what it was built from.
struct Build {
    label: &'static str,
    commit: String,
    binary: PathBuf,
}

/// The two historical binaries, built if they are not there yet, and the current tree's.
async fn builds(today: &str) -> anyhow::Result<Vec<Build>> {
    let parent = git(&["rev-parse", "--short", &format!("{WITH}^1")]).await?;
    ensure!(
        git(&["rev-parse", "--short", WITHOUT]).await? == parent,
        "{WITH} no longer has {WITHOUT} as its first parent: the A/B pair is wrong"
    );
    Ok(vec![
        Build { label: "without encryption", commit: WITHOUT.to_owned(), binary: baseline(WITHOUT).await? },
        Build { label: "with encryption", commit: WITH.to_owned(), binary: baseline(WITH).await? },
        Build { label: "main today", commit: today.to_owned(), binary: PathBuf::from(env!("CARGO_BIN_EXE_rapport")) },
    ])
}

/// `target/bench-baselines/<commit>/rapport`, built in release mode from the commit's tree. All
/// commits share one target directory, so the dependencies compile once.
async fn baseline(commit: &str) -> anyhow::Result<PathBuf> {
    // The target directory that built this bench: beside `release`, so `cargo clean` clears it.
    let target = Path::new(env!("CARGO_BIN_EXE_rapport"))
        .ancestors()
        .nth(2)
        .context("cannot tell the target directory from the path of the rapport binary")?;
    let root = target.join("bench-baselines");
    let dir = root.join(commit);
    let binary = dir.join("rapport");
    if binary.exists() {
        eprintln!("[{commit}] using {}", binary.display());
        return Ok(binary);
    }
    eprintln!("[{commit}] building {}", binary.display());
    // A `git archive` rather than a `git worktree`: it registers nothing in the repository's
    // `.git`, which other worktrees share. A directory left by an interrupted build starts over.
    let source = dir.join("source");
    if source.exists() {
        std::fs::remove_dir_all(&source).with_context(|| format!("cannot remove {}", source.display()))?;
    }
    std::fs::create_dir_all(&source).with_context(|| format!("cannot create {}", source.display()))?;
    let archive = dir.join("source.tar");
    git(&["archive", "--format=tar", "-o", archive.to_string_lossy().as_ref(), commit]).await?;
    succeed(Command::new("tar").arg("-xf").arg(&archive).arg("-C").arg(&source), "tar").await?;
    std::fs::remove_file(&archive).ok();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let shared = root.join("target");
    succeed(
        Command::new(cargo)
            .args(["build", "--release", "--locked", "--bin", "rapport"])
            .current_dir(&source)
            .env("CARGO_TARGET_DIR", &shared),
        "cargo build",
    )
    .await?;
    std::fs::copy(shared.join("release").join("rapport"), &binary)
        .with_context(|| format!("cannot copy the built binary to {}", binary.display()))?;
    Ok(binary)
}

async fn git(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(support::repository_root())
        .output()
        .await
        .context("cannot run git")?;
    ensure!(output.status.success(), "git {} failed: {}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs `command` with its output on the terminal (a build shows its progress) and checks its exit.
async fn succeed(command: &mut Command, name: &str) -> anyhow::Result<()> {
    let status = command.stdin(Stdio::null()).status().await.with_context(|| format!("cannot run {name}"))?;
    ensure!(status.success(), "{name} failed ({status})");
    Ok(())
}

#[derive(Clone, Copy, PartialEq)]
enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "SQLite",
            Self::Postgres => "PostgreSQL",
        }
    }
}

/// What one binary did on one database.
struct Run {
    backend: Backend,
    /// Index into the builds.
    build: usize,
    /// The timed batches, in seconds, fastest first.
    batch_seconds: Vec<f64>,
    read: WrkOutput,
}

impl Run {
    fn median_batch_seconds(&self) -> f64 {
        self.batch_seconds[self.batch_seconds.len() / 2]
    }

    fn slowest_batch_seconds(&self) -> f64 {
        self.batch_seconds[self.batch_seconds.len() - 1]
    }

    /// Whether some timed batch of `self` took as long as some timed batch of `other`.
    fn batches_overlap(&self, other: &Self) -> bool {
        self.batch_seconds[0] <= other.slowest_batch_seconds() && other.batch_seconds[0] <= self.slowest_batch_seconds()
    }
}

/// The rows of the table for each database.
#[derive(Clone, Copy)]
enum Metric {
    BatchTime,
    BatchRate,
    ReadRate,
    ReadP50,
    ReadP99,
}

impl Metric {
    const ALL: [Self; 5] = [Self::BatchTime, Self::BatchRate, Self::ReadRate, Self::ReadP50, Self::ReadP99];

    fn name(self) -> &'static str {
        match self {
            Self::BatchTime => "upsert batch, median time",
            Self::BatchRate => "upsert, contacts/s",
            Self::ReadRate => "contact-by-id, requests/s",
            Self::ReadP50 => "contact-by-id, p50",
            Self::ReadP99 => "contact-by-id, p99",
        }
    }

    fn value(self, run: &Run) -> f64 {
        match self {
            Self::BatchTime => run.median_batch_seconds(),
            Self::BatchRate => BATCH as f64 / run.median_batch_seconds(),
            Self::ReadRate => run.read.requests_per_second,
            Self::ReadP50 => run.read.p50_ms,
            Self::ReadP99 => run.read.p99_ms,
        }
    }

    fn shown(self, run: &Run) -> String {
        let value = self.value(run);
        match self {
            Self::BatchTime => {
                format!("{value:.2} s ({:.2}–{:.2})", run.batch_seconds[0], run.slowest_batch_seconds())
            }
            Self::BatchRate | Self::ReadRate => format!("{value:.0}"),
            Self::ReadP50 | Self::ReadP99 => format!("{value:.2} ms"),
        }
    }
}

/// What the run learnt of its surroundings.
struct Observed {
    postgres_version: String,
    /// Share of the CPUs idle in the second before each measurement.
    idle: Vec<f64>,
}

async fn measure_all(builds: &[Build], postgres: &[PostgresDatabase]) -> anyhow::Result<(Vec<Run>, Observed)> {
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    let client = reqwest::Client::new();
    let mut observed = Observed { postgres_version: postgres_version(&postgres[0].url).await?, idle: Vec::new() };
    let mut runs = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let mut servers = Vec::new();
        for (index, (build, database)) in builds.iter().zip(postgres).enumerate() {
            let database_url = match backend {
                Backend::Sqlite => format!("sqlite://{}?mode=rwc", work.path().join(format!("{index}.db")).display()),
                Backend::Postgres => database.url.clone(),
            };
            let target = format!("{}, {}", build.label, backend.name());
            let log = work.path().join(format!("{index}-{}.log", backend.name()));
            servers.push(Server::start(target, &build.binary, &database_url, &log, &client).await?);
        }
        let measured = measure_side_by_side(&servers, &client, work.path(), &mut observed.idle).await;
        for server in servers {
            server.stop().await;
        }
        for (build, (batch_seconds, read)) in measured?.into_iter().enumerate() {
            runs.push(Run { backend, build, batch_seconds, read });
        }
    }
    Ok((runs, observed))
}

/// The upsert batches, then the read under wrk over the contacts they created, for each server.
/// The servers take turns, batch by batch and then read by read, so that whatever else the
/// machine does drifts over all of them alike; a server waiting for its turn does nothing.
async fn measure_side_by_side(
    servers: &[Server],
    client: &reqwest::Client,
    work: &Path,
    idle: &mut Vec<f64>,
) -> anyhow::Result<Vec<(Vec<f64>, WrkOutput)>> {
    let mut ids = Vec::new();
    for server in servers {
        ids.push(upsert_batch(server, client, 0).await?.1);
    }
    let mut batch_seconds = vec![Vec::new(); servers.len()];
    for batch in 1..=MEASURED_BATCHES {
        for (index, server) in servers.iter().enumerate() {
            idle.extend(wait_for_quiet().await);
            let (seconds, created) = upsert_batch(server, client, batch).await?;
            eprintln!("[{}] batch {batch}: {BATCH} contacts in {seconds:.2} s", server.target);
            batch_seconds[index].push(seconds);
            ids[index].extend(created);
        }
    }

    let mut results = Vec::new();
    for ((server, ids), mut seconds) in servers.iter().zip(ids).zip(batch_seconds) {
        seconds.sort_by(f64::total_cmp);
        let script = read_script(server, client, work, &ids).await?;
        idle.extend(wait_for_quiet().await);
        support::warm_up(&server.url, &script, &server.target).await?;
        results.push((seconds, support::measure(&server.url, &script, &server.target).await?));
    }
    Ok(results)
}

/// A wrk script reading `SAMPLED` of the contacts, each read once first and checked to come back
/// with its own email, so that the load measures answers (decrypted ones) and not failures.
async fn read_script(
    server: &Server,
    client: &reqwest::Client,
    work: &Path,
    ids: &[String],
) -> anyhow::Result<PathBuf> {
    let positions: Vec<usize> = (0..ids.len()).collect();
    let mut bodies = Vec::with_capacity(SAMPLED);
    for position in support::sample(&positions) {
        let id = &ids[position];
        let body = json!({ "query": CONTACT_QUERY, "variables": { "id": id } }).to_string();
        let response = post_graphql(client, &server.url, &body).await?;
        let contact = &response["data"]["contact"];
        ensure!(
            contact["id"] == id.as_str() && contact["email"] == email(position),
            "{}: contact {id} came back wrong: {response}",
            server.target
        );
        bodies.push(body);
    }
    wrk_script(work, &server.target.replace(|c: char| !c.is_ascii_alphanumeric(), ""), &bodies)
}

/// Sends batch number `batch` (contacts `batch * BATCH` onwards, all new) and returns how long
/// the answer took, in seconds, and the ids of the contacts created, in order.
async fn upsert_batch(server: &Server, client: &reqwest::Client, batch: usize) -> anyhow::Result<(f64, Vec<String>)> {
    let first = batch * BATCH;
    let mut query = String::from("mutation {");
    for position in 0..BATCH {
        let index = first + position;
        write!(
            query,
            " c{position}: upsertContact(input: {{email: \"{}\", firstName: \"Ada{index}\", lastName: \"Lovelace\", \
             phone: \"+4930{index:08}\"}}) {{ created contact {{ id }} }}",
            email(index)
        )?;
    }
    query.push_str(" }");
    let body = json!({ "query": query }).to_string();
    let started = Instant::now();
    let response = post_graphql(client, &server.url, &body).await?;
    let seconds = started.elapsed().as_secs_f64();
    let mut ids = Vec::with_capacity(BATCH);
    for position in 0..BATCH {
        let upserted = &response["data"][format!("c{position}")];
        let id = upserted["contact"]["id"].as_str().filter(|_| upserted["created"] == true);
        let id =
            id.with_context(|| format!("{}: contact {} was not created: {upserted}", server.target, first + position))?;
        ids.push(id.to_owned());
    }
    Ok((seconds, ids))
}

fn email(index: usize) -> String {
    format!("person{index}@example.com")
}

async fn postgres_version(url: &str) -> anyhow::Result<String> {
    let connection = Database::connect(url).await.context("cannot connect to PostgreSQL")?;
    let row = connection
        .query_one_raw(Statement::from_string(connection.get_database_backend(), "show server_version"))
        .await?
        .context("the version query returned no row")?;
    let version = row.try_get_by_index::<String>(0)?;
    connection.close().await.ok();
    Ok(version)
}

/// `rapport serve` in a child process of its own, on a free port, configured by environment only.
struct Server {
    target: String,
    child: Child,
    url: String,
}

impl Server {
    async fn start(
        target: String,
        binary: &Path,
        database_url: &str,
        log: &Path,
        client: &reqwest::Client,
    ) -> anyhow::Result<Self> {
        eprintln!("[{target}] starting {}", binary.display());
        // The port is free when asked; nothing else on this machine is expected to take it before
        // the server binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let log_file = std::fs::File::create(log).with_context(|| format!("cannot create {}", log.display()))?;
        let child = Command::new(binary)
            .arg("serve")
            .env_clear()
            .env("RAPPORT_DATABASE_URL", database_url)
            .env("RAPPORT_LISTEN", format!("127.0.0.1:{port}"))
            .env("RAPPORT_ADMIN_TOKEN", ADMIN_TOKEN)
            // The binary without encryption ignores it.
            .env("RAPPORT_MASTER_KEY", rapport::crypto::MasterKey::generate().to_base64())
            .env("RAPPORT_LOG", "warn")
            .envs(UNLIMITED)
            .stdin(Stdio::null())
            .stdout(log_file.try_clone()?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut server = Self { target, child, url: format!("http://127.0.0.1:{port}/graphql") };
        let ready = format!("http://127.0.0.1:{port}/readyz");
        let started = Instant::now();
        loop {
            if let Some(status) = server.child.try_wait()? {
                bail!("{}: the server exited ({status}):\n{}", server.target, tail(log));
            }
            let response = client.get(&ready).send().await;
            if response.is_ok_and(|response| response.status().is_success()) {
                return Ok(server);
            }
            if started.elapsed() > READY_WAIT {
                // Dropping the server kills it.
                bail!("{}: not ready after {} s:\n{}", server.target, READY_WAIT.as_secs(), tail(log));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Kills the server: its database is thrown away, so a graceful shutdown buys nothing.
    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The last lines of a server's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// The text of this run in `BENCHMARKS.md`.
fn report(machine: &Machine, builds: &[Build], runs: &[Run], observed: &Observed) -> String {
    let mut text = String::new();
    let mut idle = observed.idle.clone();
    idle.sort_by(f64::total_cmp);
    let lowest_idle = idle.first().copied();
    let idle = match (idle.first(), idle.get(idle.len() / 2)) {
        (Some(lowest), Some(median)) => {
            format!("lowest {:.0} %, median {:.0} % over {} measurements", lowest * 100.0, median * 100.0, idle.len())
        }
        _ => "unknown".to_owned(),
    };
    let _ = writeln!(
        text,
        "### {}\n\n\
         Run at {} UTC.\n\n\
         - Machine: {} CPUs ({}), {} memory, Linux {} ({})\n\
         - Toolchain: {}, release profile; load: {}\n\
         - Databases: SQLite as bundled in each binary, PostgreSQL {}, both on this machine\n\
         - CPU idle in the second before each measurement: {idle}\n",
        machine.date,
        machine.time,
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.os,
        machine.rustc,
        machine.wrk,
        observed.postgres_version,
    );
    let _ = writeln!(
        text,
        "| database | workload | {} ({}) | {} ({}) | difference | {}, {} ({TODAY_ALSO}) |\n|---|---|---:|---:|---:|---:|",
        builds[0].label, builds[0].commit, builds[1].label, builds[1].commit, builds[2].label, builds[2].commit,
    );
    let mut changes = Vec::new();
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let of = |build: usize| runs.iter().find(|run| run.build == build && run.backend == backend);
        let columns: Vec<&Run> = (0..builds.len()).filter_map(of).collect();
        let [without, with, today] = columns[..] else { continue };
        for metric in Metric::ALL {
            let change = metric.value(with) / metric.value(without) - 1.0;
            let _ = writeln!(
                text,
                "| {} | {} | {} | {} | {:+.1} % | {} |",
                backend.name(),
                metric.name(),
                metric.shown(without),
                metric.shown(with),
                change * 100.0,
                metric.shown(today),
            );
        }
        changes.push(Changes {
            backend: backend.name(),
            batch: with.median_batch_seconds() / without.median_batch_seconds() - 1.0,
            batches_overlap: with.batches_overlap(without),
            reads: with.read.requests_per_second / without.read.requests_per_second - 1.0,
        });
    }
    text.push('\n');
    text.push_str(&interpretation(&changes, lowest_idle));
    text
}

/// What encryption changed on one database, relative to the build without it.
struct Changes {
    backend: &'static str,
    batch: f64,
    /// Whether the timed batches with and without encryption overlap: if they do, the difference
    /// of the medians is less certain than it looks.
    batches_overlap: bool,
    reads: f64,
}

/// One or two sentences that say what the table means, from the numbers of this run.
fn interpretation(changes: &[Changes], lowest_idle: Option<f64>) -> String {
    let percent = |change: f64| format!("{:.0} %", change.abs() * 100.0);
    let batches: Vec<String> = changes
        .iter()
        .map(|change| {
            let direction = if change.batch >= 0.0 { "slower" } else { "faster" };
            format!("{} {direction} on {}", percent(change.batch), change.backend)
        })
        .collect();
    let reads: Vec<String> = changes
        .iter()
        .map(|change| {
            let direction = if change.reads >= 0.0 { "higher" } else { "lower" };
            format!("{} {direction} on {}", percent(change.reads), change.backend)
        })
        .collect();
    let (overlapping, apart): (Vec<&Changes>, Vec<&Changes>) =
        changes.iter().partition(|change| change.batches_overlap);
    let names = |changes: &[&Changes]| changes.iter().map(|change| change.backend).collect::<Vec<_>>().join(" and ");
    let mut text = format!(
        "In this run, encryption made the {}-contact upsert batch {}, and the requests per second of \
         contact-by-id {}.",
        grouped(BATCH),
        batches.join(" and "),
        reads.join(" and "),
    );
    if !apart.is_empty() {
        let _ = write!(
            text,
            " On {}, the timed batches of the two builds do not overlap: the batch difference there is not noise.",
            names(&apart)
        );
    }
    if !overlapping.is_empty() {
        let _ = write!(
            text,
            " On {}, the timed batches of the two builds overlap, so the batch difference there is less certain \
             than the medians suggest.",
            names(&overlapping)
        );
    }
    text.push_str(
        " The reads come from one `wrk` run per build, whose run-to-run spread this benchmark does not measure.",
    );
    if let Some(idle) = lowest_idle.filter(|idle| *idle < support::QUIET) {
        let _ = write!(
            text,
            " Other work kept the CPUs busy during part of this run (down to {:.0} % idle), so these numbers \
             are less reliable than usual.",
            idle * 100.0
        );
    }
    text.push('\n');
    text
}

/// `6000` as `6,000`.
fn grouped(number: usize) -> String {
    let digits = number.to_string();
    let mut text = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}
