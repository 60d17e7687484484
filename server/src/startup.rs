//! Wiring: connect and migrate the database, build services, schema and router, bind the
//! listener, and serve until told to stop. Tests use the same path with port 0.

use std::{future::Future, net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{Context, bail};
use migration::{Migrator, MigratorTrait};
use tokio::net::TcpListener;

use crate::{
    config::Settings,
    graphql::{AppSchema, build_schema},
    http::{self, AppState, Authenticator},
    service::{Services, SystemClock},
    store::Database,
};

#[derive(Debug, Clone, Copy, Default)]
pub struct ServeOptions {
    /// Leave the schema as it is (operators who migrate in a separate step).
    pub skip_migrations: bool,
    /// Allow running without `RAPPORT_ADMIN_TOKEN`: every caller is then the owner.
    pub insecure_dev: bool,
}

pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    services: Services,
}

impl Application {
    pub async fn build(settings: &Settings, options: ServeOptions) -> anyhow::Result<Self> {
        let authenticator = match (&settings.admin_token, options.insecure_dev) {
            (Some(token), _) => Authenticator::Token(token.clone()),
            (None, true) => {
                tracing::warn!(
                    "--insecure-dev: no RAPPORT_ADMIN_TOKEN is set, so anyone who can reach this server is its owner"
                );
                Authenticator::Open
            }
            (None, false) => {
                bail!("RAPPORT_ADMIN_TOKEN is not set; set it, or pass --insecure-dev to run without authentication")
            }
        };
        let database = connect(settings).await?;
        if !options.skip_migrations {
            migrate(&database).await?;
        }
        let services = Services::new(database, Arc::new(SystemClock));
        let state = AppState {
            services: services.clone(),
            schema: build_schema(Some(services.clone())),
            authenticator,
            smtp_configured: settings.smtp_url.is_some(),
        };
        let listener = TcpListener::bind(settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        Ok(Self { listener, router: http::router(state), services })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Serves until `shutdown` completes, then lets in-flight requests finish.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let address = self.local_addr();
        tracing::info!(graphql = %format!("http://{address}/graphql"), "listening on http://{address}");
        axum::serve(self.listener, self.router.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(shutdown)
            .await
            .context("server failed")?;
        tracing::info!("stopped");
        self.services.database().clone().close().await.context("closing the database")?;
        Ok(())
    }
}

pub async fn connect(settings: &Settings) -> anyhow::Result<Database> {
    let location = match sqlite_path(&settings.database_url) {
        Some(path) => format!("SQLite file {}", path.display()),
        None => settings.database_display(),
    };
    tracing::info!(database = %location, "connecting to the database");
    Database::connect(&settings.database_url).await.with_context(|| format!("cannot open the database ({location})"))
}

/// Applies pending migrations, reporting each one as it goes.
pub async fn migrate(database: &Database) -> anyhow::Result<()> {
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
