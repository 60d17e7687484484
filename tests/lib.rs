//! The end-to-end test harness: `spawn_app` starts the real router on a random port against a
//! fresh SQLite file or a fresh PostgreSQL database (`test_<uuid>`, dropped afterwards), and
//! `TestApp` talks to it over HTTP like any client would.
//!
//! PostgreSQL is found through `RAPPORT_TEST_POSTGRES_URL` (default: the local server on
//! 127.0.0.1:5432 as user postgres). A missing PostgreSQL fails the tests; it never skips them.

pub mod nats;
pub mod smtp;
pub mod webhooks;

use std::{
    path::PathBuf,
    sync::{
        Arc, Once,
        atomic::{AtomicI64, Ordering},
    },
};

pub use rapport::config::Settings;
use rapport::{
    crypto::{
        MasterKey, MasterKeys,
        tokens::{Audience, TokenSigner},
    },
    service::{Clock, Services},
    startup::{Application, ServeOptions},
};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DbBackend, Statement};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs each test body once against SQLite and once against PostgreSQL, as `name::sqlite` and
/// `name::postgres`. `#[settings(f)]` before a test starts its server with settings that
/// `f: fn(&mut Settings)` has changed.
#[macro_export]
macro_rules! on_both_databases {
    ($($(#[settings($configure:expr)])? async fn $name:ident($app:ident) $body:block)*) => {
        $(
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn run($app: $crate::TestApp) $body

                fn configure(_settings: &mut $crate::Settings) {
                    $(($configure)(_settings);)?
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    run($crate::spawn_app_with($crate::Backend::Sqlite, configure).await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    run($crate::spawn_app_with($crate::Backend::Postgres, configure).await).await
                }
            }
        )*
    };
}

pub fn postgres_admin_url() -> String {
    std::env::var("RAPPORT_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Where the test's data lives; dropping it removes the database.
pub enum Storage {
    Sqlite { dir: tempfile::TempDir },
    Postgres { admin_url: String, name: String },
}

impl Storage {
    pub async fn create(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => Storage::Sqlite { dir: tempfile::tempdir().expect("temporary directory") },
            Backend::Postgres => {
                let admin_url = postgres_admin_url();
                let name = format!("test_{}", uuid::Uuid::new_v4().simple());
                let admin = Database::connect(&admin_url)
                    .await
                    .unwrap_or_else(|error| panic!("PostgreSQL is required at {admin_url}: {error}"));
                admin.execute_unprepared(&format!("CREATE DATABASE \"{name}\"")).await.expect("create test database");
                admin.close().await.ok();
                Storage::Postgres { admin_url, name }
            }
        }
    }

    pub fn url(&self) -> String {
        match self {
            Storage::Sqlite { dir } => format!("sqlite://{}?mode=rwc", self.sqlite_file(dir).display()),
            Storage::Postgres { admin_url, name } => {
                let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
                format!("{base}/{name}")
            }
        }
    }

    pub fn sqlite_file(&self, dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join("rapport.db")
    }

    pub fn backend(&self) -> Backend {
        match self {
            Storage::Sqlite { .. } => Backend::Sqlite,
            Storage::Postgres { .. } => Backend::Postgres,
        }
    }
}

impl Drop for Storage {
    fn drop(&mut self) {
        if let Storage::Postgres { admin_url, name } = self {
            let (admin_url, name) = (admin_url.clone(), name.clone());
            // Drop runs outside any async context we could borrow: use a runtime of its own.
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
                runtime.block_on(async {
                    let admin = Database::connect(&admin_url).await.ok()?;
                    admin.execute_unprepared(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)")).await.ok()?;
                    admin.close().await.ok()
                })
            });
            let _ = dropped.join();
        }
    }
}

/// The real time moved ahead by what tests asked for, so that they can see links and requests
/// expire without waiting for it. Only the server's services read it: signed tokens still expire
/// by the real time, as their signatures say.
#[derive(Debug, Default)]
pub struct TestClock {
    ahead_ms: AtomicI64,
}

impl TestClock {
    pub fn advance(&self, by: chrono::Duration) {
        self.ahead_ms.fetch_add(by.num_milliseconds(), Ordering::SeqCst);
    }
}

impl Clock for TestClock {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::milliseconds(self.ahead_ms.load(Ordering::SeqCst))
    }
}

pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub services: Services,
    pub backend: Backend,
    pub database_url: String,
    /// What the server was started with, master key included.
    pub settings: Settings,
    /// The server's clock: the real time, until a test moves it ahead.
    pub clock: Arc<TestClock>,
    stop: Option<oneshot::Sender<()>>,
    // Declared last: the server stops before its database is dropped.
    _storage: Arc<Storage>,
}

static TRACING: Once = Once::new();

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// `spawn_app` with settings that `configure` changes first (lower rate limits, say).
pub async fn spawn_app_with(backend: Backend, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let (storage, settings) = test_storage(backend, configure).await;
    spawn_on(Arc::new(storage), settings).await
}

/// `spawn_app` with these options.
pub async fn spawn_app_with_options(backend: Backend, options: ServeOptions) -> TestApp {
    let (storage, settings) = test_storage(backend, |_| {}).await;
    spawn_on_with_options(Arc::new(storage), settings, options).await
}

/// A fresh database and the settings of a server on it, changed by `configure`.
async fn test_storage(backend: Backend, configure: impl FnOnce(&mut Settings)) -> (Storage, Settings) {
    TRACING.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            rapport::telemetry::init(&filter, rapport::config::LogFormat::Text);
        }
    });
    let storage = Storage::create(backend).await;
    let mut settings = Settings {
        database_url: storage.url(),
        listen: "127.0.0.1:0".parse().expect("address"),
        admin_token: Some(SecretString::from(ADMIN_TOKEN)),
        master_key: Some(SecretString::from(MasterKey::generate().to_base64())),
        ..Settings::default()
    };
    configure(&mut settings);
    (storage, settings)
}

/// Starts another server on the same storage with other settings (another master key, say);
/// the storage lives as long as any app that uses it.
pub async fn respawn(app: &TestApp, settings: Settings) -> TestApp {
    spawn_on(Arc::clone(&app._storage), settings).await
}

/// Starts a server on `storage` with exactly these settings.
pub async fn spawn_on(storage: Arc<Storage>, settings: Settings) -> TestApp {
    spawn_on_with_options(storage, settings, ServeOptions::default()).await
}

/// `spawn_on` with these options (its clock is the test's own, whatever `options` say).
pub async fn spawn_on_with_options(storage: Arc<Storage>, settings: Settings, options: ServeOptions) -> TestApp {
    let backend = storage.backend();
    let clock = Arc::new(TestClock::default());
    let options = ServeOptions { clock: Some(Arc::clone(&clock) as Arc<dyn Clock>), ..options };
    let app = Application::build(&settings, options).await.expect("application starts");
    let address = format!("http://{}", app.local_addr());
    let services = app.services().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    TestApp {
        address,
        client: reqwest::Client::new(),
        services,
        backend,
        database_url: storage.url(),
        settings,
        clock,
        stop: Some(stop),
        _storage: storage,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestApp {
    /// The plan the database would follow for the statement `build` makes for its backend, a line
    /// per step (SQLite's `EXPLAIN QUERY PLAN` details, PostgreSQL's `EXPLAIN` lines). Test tables
    /// are nearly empty, where reading a table whole is cheapest, so PostgreSQL is told to prefer
    /// an index here.
    pub async fn query_plan(&self, build: impl FnOnce(DbBackend) -> Statement) -> Vec<String> {
        let mut options = ConnectOptions::new(self.database_url.clone());
        options.max_connections(1);
        let db = Database::connect(options).await.expect("test database");
        let backend = db.get_database_backend();
        let (prefix, plan_column) = match backend {
            DbBackend::Sqlite => ("EXPLAIN QUERY PLAN ", 3),
            _ => {
                db.execute_unprepared("SET enable_seqscan = off").await.expect("set");
                ("EXPLAIN ", 0)
            }
        };
        let mut statement = build(backend);
        statement.sql.insert_str(0, prefix);
        let plan = db
            .query_all_raw(statement)
            .await
            .expect("explain")
            .iter()
            .map(|row| row.try_get_by_index::<String>(plan_column).expect("plan text"))
            .collect();
        db.close().await.ok();
        plan
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.address)
    }

    /// POSTs a GraphQL request as the admin and returns the whole response body.
    pub async fn graphql(&self, query: &str, variables: Value) -> Value {
        let response = self
            .client
            .post(self.url("/graphql"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({ "query": query, "variables": variables }))
            .send()
            .await
            .expect("request sent");
        response.json().await.expect("JSON body")
    }

    /// POSTs a GraphQL request with `bearer` (or no credential at all) and returns the HTTP
    /// status with the body.
    pub async fn graphql_as(&self, bearer: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut request =
            self.client.post(self.url("/graphql")).json(&json!({ "query": query, "variables": variables }));
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON body"))
    }

    /// The `data` of a request that must succeed without errors.
    pub async fn data(&self, query: &str, variables: Value) -> Value {
        let body = self.graphql(query, variables).await;
        assert!(body.get("errors").is_none(), "unexpected errors: {body:#}");
        body["data"].clone()
    }

    /// The first error of a request that must fail.
    pub async fn error(&self, query: &str, variables: Value) -> Value {
        let body = self.graphql(query, variables).await;
        body["errors"][0]
            .clone()
            .as_object()
            .map(|_| body["errors"][0].clone())
            .unwrap_or_else(|| panic!("expected an error, got {body:#}"))
    }

    /// The directory holding the SQLite file (and its WAL), for tests that read the raw bytes.
    pub fn sqlite_dir(&self) -> Option<PathBuf> {
        match self._storage.as_ref() {
            Storage::Sqlite { dir } => Some(dir.path().to_path_buf()),
            Storage::Postgres { .. } => None,
        }
    }

    /// SQL statements the server has run so far.
    pub fn statements(&self) -> u64 {
        self.services.database().statements_executed()
    }

    /// Everything the API can show of the stored data, to prove a rejected write changed nothing.
    pub async fn snapshot(&self) -> Value {
        self.data(SNAPSHOT_QUERY, json!({})).await
    }

    pub async fn upsert_contact(&self, input: Value) -> Value {
        let data = self
            .data(
                "mutation($input: UpsertContactInput!) { upsertContact(input: $input) { created contact { id externalId email version attributes } } }",
                json!({ "input": input }),
            )
            .await;
        data["upsertContact"]["contact"].clone()
    }
}

impl TestApp {
    /// A contact token (`purpose` as its claim says: `preferences`, `unsubscribe`,
    /// `confirm_opt_in`) signed with the server's own key for any time span, such as one that
    /// has already ended.
    pub fn contact_token(
        &self,
        contact_id: &str,
        purpose: &str,
        issued_at: chrono::DateTime<chrono::Utc>,
        expires_at: chrono::DateTime<chrono::Utc>,
    ) -> String {
        let master = self.settings.master_key.as_ref().expect("master key");
        let master = MasterKey::parse(secrecy::ExposeSecret::expose_secret(master)).expect("master key parses");
        let signer = TokenSigner::new(&MasterKeys::new(master, None));
        signer.sign(Audience::Contact, contact_id, json!({ "purpose": purpose }), issued_at, expires_at)
    }
}

/// A password that admin users made by the harness sign in with.
pub const PASSWORD: &str = "correct horse battery staple";

impl TestApp {
    /// Creates an admin user of `role` (`ANALYST`, `MARKETER` …), signs them in and returns
    /// their access token.
    pub async fn signed_in_token(&self, email: &str, role: &str) -> String {
        let create = "mutation($input: CreateUserInput!) { createUser(input: $input) { id } }";
        self.data(create, json!({ "input": { "email": email, "password": PASSWORD, "role": role } })).await;
        let login = "mutation($email: String!, $password: String!) { login(email: $email, password: $password) { accessToken } }";
        let (_, body) = self.graphql_as(None, login, json!({ "email": email, "password": PASSWORD })).await;
        body["data"]["login"]["accessToken"].as_str().unwrap_or_else(|| panic!("login failed: {body:#}")).to_owned()
    }

    /// Creates an API key with `scopes` and returns its secret.
    pub async fn api_key_secret(&self, name: &str, scopes: &[&str]) -> String {
        let create = "mutation($input: CreateApiKeyInput!) { createApiKey(input: $input) { secret } }";
        let data = self.data(create, json!({ "input": { "name": name, "scopes": scopes } })).await;
        data["createApiKey"]["secret"].as_str().expect("API key secret").to_owned()
    }
}

/// Asserts an error's `extensions.code`, and its `extensions.field` when one is expected.
pub fn assert_error(error: &Value, code: &str, field: Option<&str>) {
    assert_eq!(error["extensions"]["code"], code, "{error:#}");
    if let Some(field) = field {
        assert_eq!(error["extensions"]["field"], field, "{error:#}");
    }
}

/// Sends a write that must fail with `code` (naming `field`), and proves it changed nothing.
pub async fn assert_rejected(app: &TestApp, query: &str, variables: Value, code: &str, field: Option<&str>) -> Value {
    let before = app.snapshot().await;
    let error = app.error(query, variables.clone()).await;
    assert_error(&error, code, field);
    assert_eq!(app.snapshot().await, before, "the rejected write changed stored data: {variables:#}");
    error
}

/// Emails of the contacts matching `contacts(filter: { <list>: conditions })`, in creation order.
pub async fn filtered_emails(app: &TestApp, list: &str, conditions: Value) -> Vec<String> {
    let data = app
        .data(
            "query($filter: ContactFilter) { contacts(filter: $filter) { nodes { email } } }",
            json!({ "filter": { list: conditions } }),
        )
        .await;
    data["contacts"]["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .map(|contact| contact["email"].as_str().expect("email").to_owned())
        .collect()
}

const SNAPSHOT_QUERY: &str = r#"{
  fields { key label type enumValues required personal createdAt updatedAt }
  topics { id key name description defaultFrequency updatedAt }
  consentPurposes { key label description builtIn }
  contacts(first: 20) {
    edges {
      cursor
      node {
        id externalId email phone firstName lastName locale timeZone country attributes createdAt updatedAt version
        consents { id purpose channel status legalBasis source capturedAt recordedAt proof { ip userAgent wordingId wordingVersion } }
        topics { topic { key } status frequency updatedAt }
        consentHistory(first: 10) { edges { node { id purpose channel status capturedAt } } }
        events(first: 10) { edges { node { id type properties occurredAt source idempotencyKey } } }
      }
    }
  }
  emails(first: 20) {
    edges {
      cursor
      node {
        id name type createdAt updatedAt
        versions(first: 10) { edges { node { id version type subject preheader html text from { name address } replyTo { name address } tracking warnings createdAt } } }
      }
    }
  }
}"#;

/// How many migrations `Migrator::down` undoes to undo the one named `name`: it and every one
/// after it, however many later migrations there are by then.
pub fn migrations_from(name: &str) -> u32 {
    use migration::MigratorTrait;
    let names: Vec<String> = migration::Migrator::migrations().iter().map(|step| step.name().to_owned()).collect();
    let at = names.iter().position(|step| step == name).unwrap_or_else(|| panic!("no migration is named {name}"));
    u32::try_from(names.len() - at).expect("a count of migrations")
}

/// The repository's root directory.
pub fn repository_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().expect("repository root").to_path_buf()
}

/// The wording version consent proof records for `text` shown: the language Rapport translated it
/// into, if it did, and the first 12 hex digits of the text's SHA-256. Written out here rather
/// than called, so that a change on the server's side shows.
pub fn wording_version(language: Option<&str>, text: &str) -> String {
    use sha2::{Digest, Sha256};
    let hash: String = Sha256::digest(text.as_bytes()).iter().take(6).map(|byte| format!("{byte:02x}")).collect();
    language.map_or(hash.clone(), |language| format!("{language}:{hash}"))
}
