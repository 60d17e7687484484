//! Rapport started inside the bench's own process, the way `rapport serve` starts it, on a port
//! of its own. Benches that load such a server include this file with `#[path]`; the others (which
//! run release binaries as child processes) do not, so nothing in it goes unused.

use anyhow::Context as _;
use rapport::{
    config::{RateLimit, Settings},
    service::Services,
    startup::{Application, ServeOptions},
};
use secrecy::SecretString;
use tokio::{sync::oneshot, task::JoinHandle};

use crate::support::ADMIN_TOKEN;

pub struct InProcess {
    /// `http://host:port`, without a path.
    pub address: String,
    pub services: Services,
    stop: oneshot::Sender<()>,
    server: JoinHandle<anyhow::Result<()>>,
}

impl InProcess {
    /// Starts Rapport with the bench settings, then whatever `configure` changes.
    pub async fn start(name: &str, database_url: &str, configure: impl FnOnce(&mut Settings)) -> anyhow::Result<Self> {
        eprintln!("[{name}] starting Rapport");
        let unlimited = RateLimit::new(1_000_000.0, 1_000_000)?;
        let mut settings = Settings {
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
        configure(&mut settings);
        let app = Application::build(&settings, ServeOptions::default())
            .await
            .with_context(|| format!("{name} does not start"))?;
        let services = app.services().clone();
        let address = format!("http://{}", app.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until(async move {
            let _ = stopped.await;
        }));
        Ok(Self { address, services, stop, server })
    }

    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.server.await.context("the Rapport server task failed")?.context("the Rapport server failed")
    }
}
