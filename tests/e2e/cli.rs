//! The `rapport` binary as operators run it: help texts, configuration errors, zero-config
//! start on a local SQLite file, `migrate`, JSON logs, secrets kept out of logs, and a graceful
//! shutdown that lets in-flight requests finish.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use crate::rapport_binary;
use rapport_e2e::{Backend, Storage};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::Child,
    sync::mpsc,
};

/// Guards against a hung child, not a performance expectation.
const PATIENCE: Duration = Duration::from_secs(60);

fn rapport(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(rapport_binary())
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("rapport runs")
}

/// A `rapport serve` child whose log lines arrive on a channel.
struct Server {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
}

impl Server {
    fn start(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child = tokio::process::Command::new(rapport_binary())
            .arg("serve")
            .args(args)
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().copied())
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("rapport serve starts");
        let stderr = child.stderr.take().expect("stderr piped");
        let (sender, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, log: Vec::new() }
    }

    /// Waits for a log line containing `needle` and returns it.
    async fn wait_for(&mut self, needle: &str) -> String {
        let found = tokio::time::timeout(PATIENCE, async {
            while let Some(line) = self.lines.recv().await {
                self.log.push(line.clone());
                if line.contains(needle) {
                    return Some(line);
                }
            }
            None
        })
        .await;
        match found {
            Ok(Some(line)) => line,
            _ => panic!("no log line containing {needle:?}; log so far:\n{}", self.log.join("\n")),
        }
    }

    /// The address from the "listening on http://…" line.
    async fn address(&mut self) -> String {
        let line = self.wait_for("listening on http://").await;
        let start = line.find("http://").expect("url") + "http://".len();
        line[start..].chars().take_while(|c| c.is_ascii_digit() || *c == '.' || *c == ':').collect()
    }

    fn terminate(&self) {
        self.signal("-TERM");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("child is running");
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().expect("kill runs");
        assert!(status.success());
    }

    async fn exit_code(&mut self) -> Option<i32> {
        let status =
            tokio::time::timeout(PATIENCE, self.child.wait()).await.expect("rapport exits").expect("exit status");
        while let Ok(line) = self.lines.try_recv() {
            self.log.push(line);
        }
        status.code()
    }
}

#[test]
fn every_command_has_help() {
    let dir = tempfile::tempdir().unwrap();
    let output = rapport(dir.path(), &["--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for command in ["serve", "migrate", "export-schema", "keys", "export"] {
        assert!(help.contains(command), "{help}");
        let output = rapport(dir.path(), &[command, "--help"], &[]);
        assert!(output.status.success(), "{command} --help");
        assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: rapport"), "{command} --help");
    }
    assert!(help.contains("audit"), "{help}");
    let output = rapport(dir.path(), &["audit", "verify", "--help"], &[]);
    assert!(output.status.success(), "audit verify --help");
    assert!(String::from_utf8_lossy(&output.stdout).contains("Usage: rapport audit verify"));
    let output = rapport(dir.path(), &["export", "contact", "--help"], &[]);
    assert!(output.status.success(), "export contact --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("--email") && help.contains("system/cli"), "{help}");
    let output = rapport(dir.path(), &["keys", "rotate", "--help"], &[]);
    assert!(output.status.success(), "keys rotate --help");
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(help.contains("RAPPORT_PREVIOUS_MASTER_KEY") && help.contains("--batch-size"), "{help}");
}

#[tokio::test]
async fn serve_without_any_credential_tells_how_to_create_the_first_admin() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[], &[("RAPPORT_LISTEN", "127.0.0.1:0")]);
    let warning = server.wait_for("no admin user exists").await;
    assert!(warning.contains("rapport admin create"), "{warning}");
    let address = server.address().await;
    let response = reqwest::Client::new()
        .post(format!("http://{address}/graphql"))
        .json(&serde_json::json!({ "query": "{ topics { key } }" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "an anonymous caller was let in");
    server.terminate();
    assert_eq!(server.exit_code().await, Some(0));
}

#[test]
fn an_unknown_key_in_the_config_file_is_named_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("rapport.toml"), "listen = \"127.0.0.1:0\"\ndatabase_ulr = \"sqlite://x.db\"\n")
        .unwrap();
    let output = rapport(dir.path(), &["--config", "rapport.toml", "migrate"], &[]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("database_ulr"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
}

#[test]
fn migrate_creates_the_default_sqlite_file_and_is_repeatable() {
    let dir = tempfile::tempdir().unwrap();
    let first = rapport(dir.path(), &["migrate"], &[("NO_COLOR", "1")]);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(dir.path().join("rapport.db").exists());
    let log = String::from_utf8_lossy(&first.stderr);
    assert!(log.contains("applying migration 1 of"), "{log}");
    let second = rapport(dir.path(), &["migrate"], &[("NO_COLOR", "1")]);
    assert!(second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("up to date"));
}

/// Servers started together on one new PostgreSQL database (a deployment's replicas, say):
/// one migrates while the others wait for it and then find nothing left to apply.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_started_together_on_one_postgresql_migrate_it_once() {
    use migration::{Migrator, MigratorTrait};
    use sea_orm::{ConnectionTrait, Statement};

    let storage = Storage::create(Backend::Postgres).await;
    let url = storage.url();
    let database = sea_orm::Database::connect(&url).await.expect("test database");
    // Held here, the lock stands for a first server still migrating.
    let mut migrating = database.get_postgres_connection_pool().acquire().await.unwrap();
    sea_orm::sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(rapport::startup::MIGRATION_LOCK)
        .execute(&mut *migrating)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let master_key = rapport::crypto::MasterKey::generate().to_base64();
    let env = [
        ("RAPPORT_DATABASE_URL", url.as_str()),
        ("RAPPORT_MASTER_KEY", master_key.as_str()),
        ("RAPPORT_ADMIN_TOKEN", "t0ken"),
        ("RAPPORT_LISTEN", "127.0.0.1:0"),
    ];
    let mut servers = [Server::start(dir.path(), &[], &env), Server::start(dir.path(), &[], &env)];
    for server in &mut servers {
        server.wait_for("another process is migrating this database; waiting for it").await;
    }
    let migrated = Statement::from_string(
        database.get_database_backend(),
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'seaql_migrations'",
    );
    let tables = |row: Option<sea_orm::QueryResult>| row.unwrap().try_get_by_index::<i64>(0).unwrap();
    assert_eq!(tables(database.query_one_raw(migrated).await.unwrap()), 0, "nobody migrates while the lock is held");
    migrating.close().await.unwrap();

    for server in &mut servers {
        let address = server.address().await;
        let ready: serde_json::Value =
            reqwest::get(format!("http://{address}/readyz")).await.unwrap().json().await.unwrap();
        assert_eq!(ready["status"], "ready");
    }
    let applied = Statement::from_string(database.get_database_backend(), "SELECT COUNT(*) FROM seaql_migrations");
    assert_eq!(tables(database.query_one_raw(applied).await.unwrap()), Migrator::migrations().len() as i64);
    let migrating_logs =
        servers.iter().filter(|server| server.log.iter().any(|line| line.contains("applying migration 1 of"))).count();
    assert_eq!(migrating_logs, 1, "one server applied the migrations, the other found them applied");
    for server in &mut servers {
        server.terminate();
        assert_eq!(server.exit_code().await, Some(0), "{}", server.log.join("\n"));
    }
    database.close().await.ok();
}

#[tokio::test]
async fn serve_without_configuration_uses_a_local_sqlite_file_and_says_where() {
    let dir = tempfile::tempdir().unwrap();
    // Only the port is chosen here, so that the test never collides with a server on 8080.
    let mut server =
        Server::start(dir.path(), &[], &[("RAPPORT_LISTEN", "127.0.0.1:0"), ("RAPPORT_ADMIN_TOKEN", "t0ken")]);
    let database_line = server.wait_for("connecting to the database").await;
    let database = dir.path().canonicalize().unwrap().join("rapport.db");
    assert!(database_line.contains(&database.display().to_string()), "{database_line}");
    let address = server.address().await;
    let listening = server.log.last().cloned().unwrap_or_default();
    assert!(listening.contains(&format!("http://{address}/graphql")), "{listening}");
    assert!(database.exists());

    let ready: serde_json::Value =
        reqwest::get(format!("http://{address}/readyz")).await.unwrap().json().await.unwrap();
    assert_eq!(ready["status"], "ready");
    server.terminate();
    assert_eq!(server.exit_code().await, Some(0));
}

#[tokio::test]
async fn insecure_dev_serves_without_a_token_warns_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &["--insecure-dev"], &[("RAPPORT_LISTEN", "127.0.0.1:0")]);
    server.wait_for("--insecure-dev").await;
    let address = server.address().await;
    let body: serde_json::Value = reqwest::Client::new()
        .post(format!("http://{address}/graphql"))
        .json(&serde_json::json!({ "query": "{ topics { key } }" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["data"]["topics"], serde_json::json!([]));
    // Ctrl-C in a terminal stops it as cleanly as SIGTERM does.
    server.signal("-INT");
    server.wait_for("shutdown requested").await;
    assert_eq!(server.exit_code().await, Some(0));
}

#[tokio::test]
async fn json_logs_are_json_and_never_contain_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let secret_token = "do-not-log-this-token-7f3a";
    let mut server = Server::start(
        dir.path(),
        &[],
        &[
            ("RAPPORT_LISTEN", "127.0.0.1:0"),
            ("RAPPORT_ADMIN_TOKEN", secret_token),
            ("RAPPORT_LOG_FORMAT", "json"),
            ("RAPPORT_LOG", "debug"),
        ],
    );
    let address = server.address().await;
    let client = reqwest::Client::new();
    for token in [secret_token, "a-wrong-token"] {
        client
            .post(format!("http://{address}/graphql"))
            .bearer_auth(token)
            .json(&serde_json::json!({ "query": "{ topics { key } }" }))
            .send()
            .await
            .unwrap();
    }
    server.terminate();
    assert_eq!(server.exit_code().await, Some(0));
    assert!(!server.log.is_empty());
    for line in &server.log {
        let parsed: Result<serde_json::Value, _> = serde_json::from_str(line);
        assert!(parsed.is_ok(), "not JSON: {line}");
        assert!(!line.contains(secret_token), "secret in log: {line}");
    }
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_request_finish_then_exits() {
    let dir = tempfile::tempdir().unwrap();
    // tower_http at debug logs when a request reaches the router, i.e. when it is truly in flight.
    let mut server = Server::start(
        dir.path(),
        &[],
        &[
            ("RAPPORT_LISTEN", "127.0.0.1:0"),
            ("RAPPORT_ADMIN_TOKEN", "t0ken"),
            ("RAPPORT_LOG", "info,tower_http=debug"),
        ],
    );
    let address = server.address().await;

    // Start a request and hold back the end of its body, so it is in flight when SIGTERM comes.
    let body = r#"{"query":"mutation { defineTopic(input: {key: \"news\", name: \"News\"}) { key } }"}"#;
    let (head, tail) = body.split_at(body.len() / 2);
    let mut stream = TcpStream::connect(&address).await.unwrap();
    let request = format!(
        "POST /graphql HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer t0ken\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{head}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    server.wait_for("started processing request").await;

    server.terminate();
    server.wait_for("shutdown requested").await;
    stream.write_all(tail.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains(r#""key":"news""#), "{response}");
    assert_eq!(server.exit_code().await, Some(0));
}
