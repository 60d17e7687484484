//! Wiring: connect and migrate the database, build services, schema and router, bind the
//! listener, and serve until told to stop. Tests use the same path with port 0.

use std::{
    future::Future,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use anyhow::{Context, anyhow, bail};
use migration::{Migrator, MigratorTrait};
use sea_orm::DbBackend;
use secrecy::{ExposeSecret, SecretString};
use tokio::net::TcpListener;

use crate::{
    config::Settings,
    crypto::{KeyError, MasterKey, MasterKeys},
    domain::{contact::ContactRef, privacy::ContactExport},
    graphql::{AppSchema, build_schema},
    http::{self, AppState, Authenticator, Limiters},
    mail::{
        message::Dkim,
        smtp::{Relay, SmtpPool},
    },
    service::{
        self, Actor, Clock, RequestContext, Services, SystemClock, delivery::DeliveryWorker, webhooks::WebhookWorker,
    },
    store::Database,
    stream::StreamConsumer,
};

#[derive(Clone, Default)]
pub struct ServeOptions {
    /// Leave the schema as it is (operators who migrate in a separate step).
    pub skip_migrations: bool,
    /// Allow running without `RAPPORT_ADMIN_TOKEN`: every caller is then the owner.
    pub insecure_dev: bool,
    /// Where the services' "now" comes from; the system clock when unset. Tests move it ahead to
    /// see what time does (links and opt-in requests expiring) without waiting for it.
    pub clock: Option<Arc<dyn Clock>>,
    /// Leave SQLite's event timeline to calls of `store::events::index_timeline` instead of a
    /// task every half second: tests that need events on both sides of its progress.
    pub manual_event_timeline: bool,
}

pub struct Application {
    listener: TcpListener,
    manual_event_timeline: bool,
    router: axum::Router,
    services: Services,
    delivery: Option<DeliveryWorker>,
    webhooks: Option<WebhookWorker>,
    stream: Option<StreamConsumer>,
}

impl Application {
    pub async fn build(settings: &Settings, options: ServeOptions) -> anyhow::Result<Self> {
        if options.insecure_dev {
            tracing::warn!("--insecure-dev: callers without credentials act as the owner of this server");
        }
        let authenticator = Authenticator::new(settings.admin_token.clone(), options.insecure_dev);
        // Keys first: a server that cannot read its data should not migrate it either.
        let masters = master_keys(settings)?;
        let database = connect(settings).await?;
        if !options.skip_migrations {
            migrate(&database).await?;
        }
        let database = open_keys(database, masters).await?;
        let clock = options.clock.clone().unwrap_or_else(|| Arc::new(SystemClock));
        let services = Services::new(database, clock).with_public_url(&settings.public_url);
        if settings.admin_token.is_none() && !options.insecure_dev && !services.any_user_exists().await? {
            tracing::warn!(
                "no admin user exists and RAPPORT_ADMIN_TOKEN is not set: create one with `rapport admin create --email …`"
            );
        }
        let stream = settings.nats.clone().map(|nats| {
            tracing::info!(url = %nats.url_display(), subject = %nats.subject, "consuming events from NATS");
            StreamConsumer::new(services.clone(), nats)
        });
        let state = AppState {
            services: services.clone(),
            schema: build_schema(Some(services.clone())),
            subscription_schema: crate::graphql::subscriptions::build_subscription_schema(services.clone()),
            authenticator,
            limiters: Arc::new(Limiters::new(
                settings.rate_limit_ip,
                settings.rate_limit_credential,
                settings.rate_limit_form,
            )?),
            smtp_configured: settings.smtp_url.is_some(),
            stream_status: stream.as_ref().map(StreamConsumer::status),
        };
        let delivery = delivery_worker(settings, &services)?;
        let webhooks = if settings.webhooks.deliver {
            Some(WebhookWorker::new(services.clone(), settings.webhooks.clone())?)
        } else {
            tracing::info!(
                "RAPPORT_WEBHOOK_DELIVERY is off: this process writes webhooks and leaves posting them to others"
            );
            None
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Ok(Self {
            listener,
            manual_event_timeline: options.manual_event_timeline,
            router: http::router(state),
            services,
            delivery,
            webhooks,
            stream,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Serves (and delivers mail, and consumes the event stream) until `shutdown` completes, then
    /// lets in-flight requests, the mail batches and the event batch in hand finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let address = self.local_addr();
        tracing::info!(graphql = %format!("http://{address}/graphql"), "listening on http://{address}");
        let (stop_delivery, delivery_stopped) = tokio::sync::watch::channel(false);
        let delivery = self.delivery.map(|worker| tokio::spawn(worker.run(delivery_stopped.clone())));
        let stream = self.stream.map(|consumer| tokio::spawn(consumer.run(delivery_stopped.clone())));
        let webhooks = self.webhooks.map(|worker| tokio::spawn(worker.run(delivery_stopped.clone())));
        let stalled_imports = tokio::spawn(crate::service::imports::keep_failing_stalled_imports(
            self.services.clone(),
            delivery_stopped.clone(),
        ));
        let timeline = (!self.manual_event_timeline).then(|| {
            tokio::spawn(crate::store::events::keep_timeline_indexed(
                self.services.database().clone(),
                delivery_stopped,
            ))
        });
        let served = axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .context("server failed");
        let _ = stop_delivery.send(true);
        if let Some(delivery) = delivery {
            let _ = delivery.await;
        }
        if let Some(webhooks) = webhooks {
            let _ = webhooks.await;
        }
        if let Some(stream) = stream {
            let _ = stream.await;
        }
        if let Some(timeline) = timeline {
            let _ = timeline.await;
        }
        let _ = stalled_imports.await;
        served?;
        tracing::info!("stopped");
        self.services.database().clone().close().await.context("closing the database")?;
        Ok(())
    }
}

/// The delivery worker, when there is a relay to deliver to; without `RAPPORT_SMTP_URL` sends
/// wait in the outbox (and `/readyz` says so).
fn delivery_worker(settings: &Settings, services: &Services) -> anyhow::Result<Option<DeliveryWorker>> {
    let Some(url) = &settings.smtp_url else {
        tracing::warn!("RAPPORT_SMTP_URL is not set: mail is queued, not sent");
        return Ok(None);
    };
    let relay = Relay::parse(url).map_err(|error| anyhow!("RAPPORT_SMTP_URL {error}"))?;
    let dkim = match &settings.mail.dkim {
        Some(dkim) => {
            let key = std::fs::read_to_string(&dkim.key_file)
                .with_context(|| format!("cannot read the DKIM key file {}", dkim.key_file.display()))?;
            Some(
                Dkim::new(&dkim.selector, &dkim.domain, &key)
                    .map_err(|error| anyhow!("{}: {error}", dkim.key_file.display()))?,
            )
        }
        None => None,
    };
    let pool = SmtpPool::new(relay, settings.mail.smtp_connections);
    Ok(Some(DeliveryWorker::new(services.clone(), pool, dkim, settings.mail.clone(), settings.public_url.clone())))
}

pub async fn connect(settings: &Settings) -> anyhow::Result<Database> {
    let location = match sqlite_path(&settings.database_url) {
        Some(path) => format!("SQLite file {}", path.display()),
        None => settings.database_display(),
    };
    tracing::info!(database = %location, "connecting to the database");
    Database::connect(&settings.database_url).await.with_context(|| format!("cannot open the database ({location})"))
}

/// Loads (or, on a first start, creates) the blind index key and hands the key ring to the
/// database handle.
pub async fn open_keys(database: Database, masters: MasterKeys) -> anyhow::Result<Database> {
    let keys = crate::store::keys::open(database.connection(), masters)
        .await
        .context("cannot open the encryption keys (is the master key the one this database was created with?)")?;
    Ok(database.with_keys(keys))
}

/// The master keys: `RAPPORT_MASTER_KEY` (and `RAPPORT_PREVIOUS_MASTER_KEY` during a rotation),
/// or, for a SQLite database without one, `rapport.key` beside the database file, generated on
/// the first start. PostgreSQL has no file of its own to keep a key beside, so it needs the
/// variable.
pub fn master_keys(settings: &Settings) -> anyhow::Result<MasterKeys> {
    let current = match (&settings.master_key, key_file(&settings.database_url)) {
        (Some(key), _) => parse_key("RAPPORT_MASTER_KEY", key)?,
        (None, Some(path)) => read_or_create_key_file(&path)?,
        (None, None) => bail!(
            "RAPPORT_MASTER_KEY is not set; it is required with PostgreSQL (base64 of 32 random bytes, e.g. from `openssl rand -base64 32`)"
        ),
    };
    let previous = match &settings.previous_master_key {
        Some(key) => Some(parse_key("RAPPORT_PREVIOUS_MASTER_KEY", key)?),
        None => None,
    };
    Ok(MasterKeys::new(current, previous))
}

fn parse_key(variable: &str, key: &SecretString) -> anyhow::Result<MasterKey> {
    MasterKey::parse(key.expose_secret()).map_err(|error: KeyError| anyhow!("{variable} is not valid: it {error}"))
}

/// `rapport.key` in the directory of the SQLite file, if the database is a SQLite file.
pub fn key_file(database_url: &str) -> Option<PathBuf> {
    sqlite_path(database_url).map(|path| path.with_file_name("rapport.key"))
}

fn read_or_create_key_file(path: &Path) -> anyhow::Result<MasterKey> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            MasterKey::parse(&text).map_err(|error| anyhow!("{} is not a valid master key: it {error}", path.display()))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            let key = MasterKey::generate();
            write_key_file(path, &key)?;
            tracing::warn!(
                key_file = %path.display(),
                "RAPPORT_MASTER_KEY is not set: generated a master key into the key file; back it up apart from the database, without it the personal data cannot be read"
            );
            Ok(key)
        }
        Err(error) => Err(error).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Writes a new key file readable by its owner only; never overwrites one.
fn write_key_file(path: &Path, key: &MasterKey) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).with_context(|| format!("cannot create {}", path.display()))?;
    file.write_all(format!("{}\n", key.to_base64()).as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Re-wraps every data key and the blind index key with the current master key, one committed
/// batch at a time, in contact id order. Keys already wrapped by the current key are skipped, so
/// an interrupted run resumes where it stopped; the server keeps serving meanwhile as long as it
/// holds both keys.
pub async fn rotate_keys(settings: &Settings, batch_size: u64, max_batches: Option<u64>) -> anyhow::Result<()> {
    let masters = master_keys(settings)?;
    let database = open_keys(connect(settings).await?, masters).await?;
    let keys = database.keys()?;
    let tx = database.begin_write().await?;
    if crate::store::keys::rewrap_blind_index_key(&tx, keys).await? {
        tracing::info!("re-wrapped the blind index key");
    }
    tx.commit().await?;
    let (done, total) = crate::store::keys::rotation_progress(database.connection(), keys).await?;
    let progress = indicatif::ProgressBar::new(total);
    progress.set_style(
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} data keys ({eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    progress.set_message("re-wrapping");
    progress.set_position(done);
    let mut batches = 0;
    let mut after = None;
    loop {
        if max_batches.is_some_and(|max| batches >= max) {
            progress.abandon_with_message("stopped");
            tracing::info!(batches, "stopped after the requested number of batches; run again to continue");
            break;
        }
        let tx = database.begin_write().await?;
        let (rewrapped, last) = crate::store::keys::rewrap_data_keys(&tx, keys, after, batch_size.max(1)).await?;
        tx.commit().await?;
        if last.is_none() {
            if after.is_some() {
                // A pass ends where the ids end; one more from the start finds any key written
                // behind it meanwhile (by a server still wrapping with the old key).
                after = None;
                continue;
            }
            progress.finish_with_message("done");
            tracing::info!(master_key_id = keys.masters.current_id(), "every key is wrapped by the current master key");
            break;
        }
        batches += 1;
        after = last;
        progress.inc(rewrapped);
    }
    database.close().await.context("closing the database")?;
    Ok(())
}

/// `rapport admin create`: migrates if needed (it may be the very first command run) and
/// creates the user, audited as done at the command line.
pub async fn create_admin(
    settings: &Settings,
    email: &str,
    role: &str,
    password: &str,
) -> anyhow::Result<crate::domain::access::AdminUser> {
    use crate::domain::{
        access::{Password, Role},
        contact::EmailAddress,
    };
    let email = EmailAddress::parse(email).map_err(|error| anyhow!("--email: {error}"))?;
    let role: Role = role.parse().map_err(|error| anyhow!("--role: {error}"))?;
    let password = Password::parse(password).map_err(|error| anyhow!("password: {error}"))?;
    let database = connect(settings).await?;
    migrate(&database).await?;
    let services = Services::new(database.clone(), Arc::new(SystemClock));
    let context = RequestContext::internal(Actor::Cli, uuid::Uuid::now_v7().to_string());
    let created = services.create_user(&context, email, &password, role).await.map_err(|error| match error {
        service::Error::Conflict { reason, .. } => anyhow!("{reason}"),
        other => anyhow!(other),
    });
    database.close().await.context("closing the database")?;
    created
}

/// `rapport export contact`: the export the `contactExport` query returns, read with the
/// server's settings and recorded in the audit log as the command line's (actor system/cli).
pub async fn export_contact(settings: &Settings, reference: &ContactRef) -> anyhow::Result<ContactExport> {
    let masters = master_keys(settings)?;
    let database = open_keys(connect(settings).await?, masters).await?;
    let services = Services::new(database.clone(), Arc::new(SystemClock));
    let ctx = RequestContext::internal(Actor::Cli, uuid::Uuid::now_v7().to_string());
    let export = services.export_contact(&ctx, reference).await;
    database.close().await.context("closing the database")?;
    export.map_err(|error| match error {
        service::Error::NotFound { .. } => match reference {
            ContactRef::Id(id) => anyhow!("no contact has the id {id}"),
            ContactRef::Email(_) => anyhow!("no contact has this email address"),
            ContactRef::ExternalId(_) => anyhow!("no contact has this external id"),
        },
        other => anyhow::Error::from(other),
    })
}

/// What `rapport import contacts` reports when it is done.
#[derive(Debug)]
pub struct ImportSummary {
    pub import: crate::domain::import::Import,
    /// Where the rejected rows were written, if any row was rejected.
    pub report: Option<PathBuf>,
    pub elapsed: std::time::Duration,
}

/// `rapport import contacts`: imports a CSV file with the server's settings, recorded as the
/// command line's (actor system/cli). Shows a progress bar on a terminal and a plain line every
/// few seconds otherwise (both on stderr), and writes rejected rows to `report` as they come.
pub async fn import_contacts(
    settings: &Settings,
    file: &Path,
    options: service::imports::ImportOptions,
    report: &Path,
) -> anyhow::Result<ImportSummary> {
    use std::io::IsTerminal;

    let source = std::fs::File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = source.metadata().map(|metadata| metadata.len()).unwrap_or(0);
    let masters = master_keys(settings)?;
    let database = open_keys(connect(settings).await?, masters).await?;
    let services = Services::new(database.clone(), Arc::new(SystemClock));
    let ctx = RequestContext::internal(Actor::Cli, uuid::Uuid::now_v7().to_string());
    let started = std::time::Instant::now();
    let mut progress = ImportProgressDisplay::new(size, std::io::stderr().is_terminal());
    let mut report_writer: Option<csv::Writer<std::fs::File>> = None;
    let mut report_error: Option<anyhow::Error> = None;
    let outcome = services
        .import_contacts(&ctx, source, options, |at, rejected| {
            progress.show(at, started.elapsed());
            if rejected.is_empty() || report_error.is_some() {
                return;
            }
            if let Err(error) = write_rejections(&mut report_writer, report, rejected) {
                report_error = Some(error);
            }
        })
        .await;
    progress.finish();
    database.close().await.context("closing the database")?;
    let import = outcome.map_err(|error| match error {
        service::Error::Validation { reason, .. } => anyhow!("{}: {reason}", file.display()),
        other => anyhow::Error::from(other),
    })?;
    if let Some(mut writer) = report_writer.take() {
        writer.flush().with_context(|| format!("cannot write the report {}", report.display()))?;
    }
    if let Some(error) = report_error {
        return Err(error);
    }
    let report = (import.counts.rejected > 0).then(|| report.to_path_buf());
    Ok(ImportSummary { import, report, elapsed: started.elapsed() })
}

/// Appends rejected rows (line, column, reason) to the report, creating it on the first one.
fn write_rejections(
    writer: &mut Option<csv::Writer<std::fs::File>>,
    path: &Path,
    rejected: &[crate::domain::import::RowError],
) -> anyhow::Result<()> {
    let cannot = || format!("cannot write the report {}", path.display());
    if writer.is_none() {
        let mut created = csv::Writer::from_path(path).with_context(cannot)?;
        created.write_record(["line", "column", "reason"]).with_context(cannot)?;
        *writer = Some(created);
    }
    if let Some(writer) = writer.as_mut() {
        for error in rejected {
            let line = error.line.to_string();
            writer
                .write_record([line.as_str(), error.column.as_deref().unwrap_or(""), error.reason.as_str()])
                .with_context(cannot)?;
        }
    }
    Ok(())
}

/// Progress of an import on stderr: a bar of bytes read on a terminal, otherwise a line at most
/// every few seconds, so that logs of unattended runs stay short.
struct ImportProgressDisplay {
    bar: Option<indicatif::ProgressBar>,
    size: u64,
    last_line: Option<std::time::Instant>,
}

impl ImportProgressDisplay {
    const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

    fn new(size: u64, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new(size);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "importing [{bar:40}] {bytes}/{total_bytes} {msg} ({eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Self { bar, size, last_line: None }
    }

    fn show(&mut self, at: &service::imports::ImportProgress, elapsed: std::time::Duration) {
        let rows = at.counts.rows;
        let rate = rows as f64 / elapsed.as_secs_f64().max(0.001);
        match &self.bar {
            Some(bar) => {
                bar.set_position(at.bytes_read);
                bar.set_message(format!("{rows} rows, {rate:.0} rows/s"));
            }
            None => {
                if self.last_line.is_some_and(|last| last.elapsed() < Self::LINE_EVERY) {
                    return;
                }
                self.last_line = Some(std::time::Instant::now());
                let percent = if self.size == 0 { 100.0 } else { at.bytes_read as f64 * 100.0 / self.size as f64 };
                eprintln!(
                    "imported {rows} rows ({percent:.0} % of the file), {rate:.0} rows/s, {} rejected",
                    at.counts.rejected
                );
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The PostgreSQL advisory lock that one migrating process holds, so that servers started
/// together on one database migrate it one after the other: the second finds nothing pending
/// instead of applying the same migration again and failing.
pub const MIGRATION_LOCK: i64 = 0x7261_7070_6f72_7401;

/// Applies pending migrations, reporting each one as it goes. On PostgreSQL it first takes
/// `MIGRATION_LOCK` (waiting, and saying so, while another process holds it). SQLite has no
/// such lock, and a SQLite file is meant to be served by one process.
pub async fn migrate(database: &Database) -> anyhow::Result<()> {
    use sea_orm::sqlx;

    let connection = database.connection();
    if connection.get_database_backend() != DbBackend::Postgres {
        return apply_pending(database).await;
    }
    // A session lock on a connection of its own, outside any transaction, and asked for again
    // until it is free rather than waited for in one statement: a transaction open here (a
    // waiting statement is one) would hold back the migrations that build indexes
    // CONCURRENTLY, which wait for every transaction older than themselves, and so the very
    // process this one waits for. Closing the connection releases the lock; so does the end
    // of the process.
    let mut lock = connection.get_postgres_connection_pool().acquire().await.context("cannot reach the database")?;
    let mut told = false;
    loop {
        let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(MIGRATION_LOCK)
            .fetch_one(&mut *lock)
            .await
            .context("cannot take the migration lock")?;
        if free {
            break;
        }
        if !told {
            tracing::info!("another process is migrating this database; waiting for it");
            told = true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let applied = apply_pending(database).await;
    // A failed migration is the error to report, whether or not the lock was released cleanly.
    let released = lock.close().await;
    applied?;
    released.context("cannot release the migration lock")
}

async fn apply_pending(database: &Database) -> anyhow::Result<()> {
    let connection = database.connection();
    let pending = Migrator::get_pending_migrations(connection).await.context("cannot read the migration state")?;
    if pending.is_empty() {
        tracing::info!("database schema is up to date");
        return Ok(());
    }
    let total = pending.len();
    for (index, migration) in pending.iter().enumerate() {
        tracing::info!(migration = %migration.name(), "applying migration {} of {total}", index + 1);
        Migrator::up(connection, Some(1)).await.with_context(|| format!("migration {} failed", migration.name()))?;
    }
    tracing::info!(applied = total, "database schema is up to date");
    Ok(())
}

/// `rapport audit verify`: walks the audit chain of the configured database, showing progress
/// on stderr once the chain is long enough for a wait to be noticed.
pub async fn verify_audit(settings: &Settings) -> anyhow::Result<crate::audit::Verdict> {
    use std::io::Write;

    const QUIET_BELOW: u64 = 10_000;
    let database = connect(settings).await?;
    let mut shown = false;
    let verdict = crate::audit::verify(database.connection(), |checked, total| {
        if total >= QUIET_BELOW {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\rverified {checked} of {total} audit entries");
            let _ = stderr.flush();
            shown = true;
        }
    })
    .await
    .context("cannot read the audit log (is the database migrated?)")?;
    if shown {
        eprintln!();
    }
    database.close().await.ok();
    Ok(verdict)
}

/// The absolute path of a SQLite database file, for telling people where their data is.
fn sqlite_path(url: &str) -> Option<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().filter(|path| !path.is_empty() && *path != ":memory:")?;
    let path = PathBuf::from(path);
    Some(if path.is_absolute() { path } else { std::env::current_dir().ok()?.join(path) })
}

/// A future that completes on SIGINT (Ctrl-C) or SIGTERM. The handlers are installed now, not
/// when the future is first polled: a signal that arrives while the server is still starting
/// must not kill the process the default way.
#[cfg(unix)]
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutdown requested; finishing in-flight requests");
    })
}

#[cfg(not(unix))]
pub fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; finishing in-flight requests");
    })
}

/// The schema's SDL, as `rapport export-schema` prints it and `schema.graphql` holds it.
pub fn schema_sdl() -> String {
    let schema: AppSchema = build_schema(None);
    schema.sdl()
}
