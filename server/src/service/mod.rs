//! Use cases: one function per command or query. Services own transactions and decide what is
//! allowed; they take domain values that the edges already parsed and return domain values.

pub mod access;
pub mod audit;
pub mod catalog;
pub mod consents;
pub mod contacts;
pub mod delivery;
pub mod emails;
pub mod error;
pub mod event_items;
mod event_writer;
pub mod events;
pub mod feed;
pub mod fields;
pub mod forms;
pub mod hooks;
pub mod imports;
pub mod preferences;
pub mod privacy;
pub mod sending;
pub mod topics;
pub mod tracking;
pub mod unsubscribe;
pub mod webhooks;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use error::{Error, Result};
// Defined in the domain so that the audit writer, below this layer, can read them too.
pub use crate::domain::request::{Actor, RequestContext};

use crate::{
    domain::{access::Permission, contact::ContactId},
    store::Database,
};

/// Where "now" comes from, so tests can hold time still.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

/// `clock`'s time at the database's resolution (see `Services::now`).
pub(crate) fn stored_now(clock: &dyn Clock) -> DateTime<Utc> {
    crate::domain::at_storage_precision(clock.now())
}

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Shared handles the use cases need, cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub(crate) db: Database,
    pub(crate) clock: Arc<dyn Clock>,
    login_throttle: Arc<access::LoginThrottle>,
    /// Bounds the password hashes computed at once: each takes 19 MiB and a core for ~50 ms.
    password_work: Arc<tokio::sync::Semaphore>,
    /// Tells this process's delivery worker that sends were queued, so it need not wait for its
    /// next look at the outbox.
    mail_wakeup: Arc<tokio::sync::Notify>,
    /// `RAPPORT_PUBLIC_URL` without a trailing slash: the base of links in emails.
    public_url: Arc<str>,
    catalog: Arc<catalog::CatalogCache>,
    feeds: Arc<feed::Feeds>,
    event_writer: Arc<event_writer::EventWriter>,
}

impl Services {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        Self {
            db,
            clock,
            login_throttle: Arc::new(access::LoginThrottle::new()),
            password_work: Arc::new(tokio::sync::Semaphore::new(cores * 2)),
            mail_wakeup: Arc::new(tokio::sync::Notify::new()),
            public_url: Arc::from(crate::config::Settings::default().public_url.as_str()),
            catalog: Arc::default(),
            feeds: Arc::default(),
            event_writer: Arc::default(),
        }
    }

    /// The same services, making links under `public_url`.
    pub fn with_public_url(mut self, public_url: &str) -> Self {
        self.public_url = Arc::from(public_url.trim_end_matches('/'));
        self
    }

    pub(crate) fn public_url(&self) -> &str {
        &self.public_url
    }

    /// Whether the database answers, for readiness probes.
    pub async fn database_answers(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Use cases check their caller themselves, whichever edge (GraphQL, a page, the command
    /// line) calls them.
    pub(crate) fn require(&self, ctx: &RequestContext, permission: Permission) -> Result<()> {
        if ctx.actor.may(permission) { Ok(()) } else { Err(Error::Forbidden) }
    }

    /// `permission`, or a preference-center token of this very contact.
    pub(crate) fn require_or_own_contact(
        &self,
        ctx: &RequestContext,
        permission: Permission,
        contact_id: ContactId,
    ) -> Result<()> {
        if ctx.actor.may(permission) || ctx.actor.own_contact() == Some(contact_id) {
            Ok(())
        } else {
            Err(Error::Forbidden)
        }
    }

    /// Database time resolution is a microsecond; truncating here makes values read back equal
    /// to the values written.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        stored_now(&*self.clock)
    }
}
