//! What the benchmarks share: the wrk load and its settings, waiting for idle CPUs, the machine's
//! CPU time, a PostgreSQL database of their own, a description of the machine, and the section of
//! `BENCHMARKS.md` each one owns. Each bench includes this module, so nearly everything here is
//! used by every bench.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use sea_orm::{ConnectionTrait, Database};
use serde_json::Value;
use tokio::process::Command;

pub const ADMIN_TOKEN: &str = "bench-admin-token-0123456789";
/// The read the benchmarks load: one contact by id with what a profile page shows.
pub const CONTACT_QUERY: &str = "query($id: ID!) { contact(by: {id: $id}) { id email firstName lastName country attributes consents { purpose channel status } topics { topic { key } status } } }";
/// The load cycles through this many of the seeded contacts, spread evenly.
pub const SAMPLED: usize = 500;
/// The same load for every target. Warm-up lets connection pools, caches and the CPU settle.
pub const WRK_THREADS: u32 = 2;
pub const WRK_CONNECTIONS: u32 = 32;
pub const WARM_UP: Duration = Duration::from_secs(3);
pub const MEASURE: Duration = Duration::from_secs(10);
/// Measuring starts once this share of the CPUs is idle, or after `QUIET_WAIT` regardless.
pub const QUIET: f64 = 0.9;
const QUIET_WAIT: Duration = Duration::from_secs(30);

/// `SAMPLED` of `items`, spread evenly over them.
pub fn sample<T: Copy>(items: &[T]) -> Vec<T> {
    items.iter().step_by((items.len() / SAMPLED).max(1)).take(SAMPLED).copied().collect()
}

/// Waits, up to `QUIET_WAIT`, until the CPUs are idle (databases finish what the last step left
/// them, other programs may finish theirs), and returns the idle share last seen.
pub async fn wait_for_quiet() -> Option<f64> {
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
    let before = CpuTimes::now()?;
    tokio::time::sleep(period).await;
    CpuTimes::now()?.since(&before).map(|spent| spent.idle_share)
}

/// The machine's CPU time so far, all CPUs together, in the clock ticks of /proc/stat's first
/// line (Linux only).
#[derive(Debug, Clone, Copy)]
pub struct CpuTimes {
    /// user, nice, system, irq and softirq
    busy: u64,
    /// idle and waiting for I/O
    idle: u64,
    /// taken by the hypervisor for other guests
    steal: u64,
    total: u64,
}

/// How the CPUs spent a stretch of time.
#[derive(Debug, Clone, Copy)]
// Every bench compiles this module on its own, and only contact_import reads all of it.
#[allow(dead_code)]
pub struct CpuSpent {
    /// CPU-seconds of work, every process together.
    pub busy_seconds: f64,
    /// Of all the CPUs' time, stolen time included.
    pub idle_share: f64,
    /// Of all the CPUs' time: what the hypervisor gave to other guests.
    pub steal_share: f64,
}

/// Clock ticks per second of /proc/stat: `USER_HZ`, which Linux fixes at 100 for user space.
const USER_HZ: f64 = 100.0;

impl CpuTimes {
    pub fn now() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> =
            stat.lines().next()?.split_whitespace().skip(1).filter_map(|field| field.parse().ok()).collect();
        // Guest time, in the fields after these, is counted in user and nice time already.
        let [user, nice, system, idle, iowait, irq, softirq, steal] = fields.get(..8)?.try_into().ok()?;
        Some(Self {
            busy: user + nice + system + irq + softirq,
            idle: idle + iowait,
            steal,
            total: user + nice + system + idle + iowait + irq + softirq + steal,
        })
    }

    /// What was spent since `earlier`; none if no time passed.
    pub fn since(&self, earlier: &Self) -> Option<CpuSpent> {
        let total = self.total.checked_sub(earlier.total).filter(|total| *total > 0)? as f64;
        Some(CpuSpent {
            busy_seconds: self.busy.saturating_sub(earlier.busy) as f64 / USER_HZ,
            idle_share: self.idle.saturating_sub(earlier.idle) as f64 / total,
            steal_share: self.steal.saturating_sub(earlier.steal) as f64 / total,
        })
    }
}

/// CPU-seconds this process has used so far, user and system time together (Linux only): on
/// PostgreSQL, the part of a run's CPU that Rapport spent rather than the server.
// Every bench compiles this module on its own, and only contact_import reads it.
#[allow(dead_code)]
pub fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name, in parentheses, may hold spaces; the fields after it do not.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are the stat file's 14th and 15th fields; this list starts at the 3rd.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// POSTs one request as the load will and returns the body, which must be a 200 without errors.
pub async fn post_graphql(client: &reqwest::Client, url: &str, body: &str) -> anyhow::Result<Value> {
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

/// A wrk script that POSTs the bodies in turn, each wrk thread starting at its own place.
pub fn wrk_script(dir: &Path, name: &str, bodies: &[String]) -> anyhow::Result<PathBuf> {
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

/// Loads `url` for `WARM_UP`, unmeasured.
pub async fn warm_up(url: &str, script: &Path, target: &str) -> anyhow::Result<()> {
    eprintln!("[{target}] warming up for {} s", WARM_UP.as_secs());
    wrk(url, script, WARM_UP).await.map(drop)
}

/// Loads `url` for `MEASURE` and checks that every request succeeded.
pub async fn measure(url: &str, script: &Path, target: &str) -> anyhow::Result<WrkOutput> {
    eprintln!("[{target}] measuring for {} s", MEASURE.as_secs());
    let output = wrk(url, script, MEASURE).await?;
    let parsed = WrkOutput::parse(&output).with_context(|| format!("cannot read wrk's output:\n{output}"))?;
    ensure!(parsed.non_2xx == 0, "{target}: {} responses were not 2xx:\n{output}", parsed.non_2xx);
    ensure!(parsed.socket_errors.is_none(), "{target}: wrk saw socket errors:\n{output}");
    ensure!(parsed.requests > 0, "{target}: no request completed:\n{output}");
    Ok(parsed)
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

pub async fn wrk_version() -> anyhow::Result<String> {
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
pub struct WrkOutput {
    pub requests_per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
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
pub struct PostgresDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl PostgresDatabase {
    pub async fn create() -> anyhow::Result<Self> {
        let admin_url = std::env::var("RAPPORT_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
        let name = format!("bench_{}", uuid::Uuid::now_v7().simple());
        let admin = Database::connect(&admin_url).await.with_context(|| {
            format!("PostgreSQL is required at {admin_url} (set RAPPORT_TEST_POSTGRES_URL to use another server)")
        })?;
        admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.context("cannot create the database")?;
        // Seeding commits several transactions per contact; not waiting for each to reach the
        // disk makes it faster.
        admin
            .execute_unprepared(&format!("ALTER DATABASE \"{name}\" SET synchronous_commit = off"))
            .await
            .context("cannot configure the database")?;
        admin.close().await.ok();
        let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
        let url = format!("{base}/{name}");
        Ok(Self { admin_url, name, url })
    }

    /// The server's version and the settings that weigh on bulk writes, for a report: with the
    /// default `max_wal_size` (1 GB) a million-contact import checkpoints several times, and
    /// every page it touches again afterwards goes whole into the log.
    // Every bench compiles this module on its own, and only contact_import reads it.
    #[allow(dead_code)]
    pub async fn settings(&self) -> anyhow::Result<String> {
        let connection = Database::connect(&self.url).await.context("cannot connect to the database")?;
        let sql = "SELECT current_setting('server_version'), current_setting('shared_buffers'), \
                   current_setting('max_wal_size'), current_setting('synchronous_commit')";
        let row = connection
            .query_one_raw(sea_orm::Statement::from_string(sea_orm::DbBackend::Postgres, sql))
            .await?
            .context("no settings")?;
        let setting = |at: usize| row.try_get_by_index::<String>(at);
        let described = format!(
            "PostgreSQL {}: shared_buffers {}, max_wal_size {}, synchronous_commit {} (the benchmark's database)",
            setting(0)?,
            setting(1)?,
            setting(2)?,
            setting(3)?,
        );
        connection.close().await.ok();
        Ok(described)
    }

    pub async fn drop_database(&self) {
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
pub struct Machine {
    pub date: String,
    pub time: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory: String,
    pub kernel: String,
    pub os: String,
    pub rustc: String,
    pub wrk: String,
    /// The commit of the working tree, noting uncommitted changes to what is measured.
    pub commit: String,
}

impl Machine {
    pub async fn describe(wrk: String) -> Self {
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
        }
    }
}

/// A command's trimmed standard output, run in the repository; none if it fails.
async fn command_output(program: &str, args: &[&str]) -> Option<String> {
    let output = Command::new(program).args(args).current_dir(repository_root()).output().await.ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

pub fn repository_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map_or(manifest.clone(), Path::to_path_buf)
}

/// Rewrites the section of `BENCHMARKS.md` between `<!-- {name}:start -->` and
/// `<!-- {name}:end -->`, leaving the rest of the file (the other benchmarks' sections) as it is.
/// `build` gets the section's current text, if any, and returns the new one. A section not yet
/// in the file goes at its end.
pub fn update_section(name: &str, build: impl FnOnce(Option<&str>) -> String) -> anyhow::Result<PathBuf> {
    let path = repository_root().join("BENCHMARKS.md");
    let existing = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => "# Benchmarks\n".to_owned(),
        Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
    };
    let (start, end) = (format!("<!-- {name}:start -->"), format!("<!-- {name}:end -->"));
    let span = existing
        .find(&start)
        .and_then(|from| existing[from..].find(&end).map(|length| (from, from + length + end.len())));
    let current = span.map(|(from, to)| existing[from + start.len()..to - end.len()].trim());
    let section = format!("{start}\n{}\n{end}", build(current).trim());
    let text = match span {
        Some((from, to)) => format!("{}{section}{}", &existing[..from], &existing[to..]),
        None => format!("{}\n\n{section}\n", existing.trim_end()),
    };
    std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// A bench binary's `main`: does nothing outside `cargo bench` (`cargo test --all-targets` runs
/// bench binaries without `--bench`), else runs `bench` on a multi-threaded runtime.
pub fn run_bench<F: std::future::Future<Output = anyhow::Result<()>>>(
    name: &str,
    bench: impl FnOnce() -> F,
) -> std::process::ExitCode {
    use std::process::ExitCode;
    if !std::env::args().any(|arg| arg == "--bench") {
        println!("{name}: run it with `cargo bench -p rapport --bench {name}`");
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("benchmark failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}
