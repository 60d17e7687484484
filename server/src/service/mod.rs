//! Use cases: one function per command or query. Services own transactions and decide what is
//! allowed; they take domain values that the edges already parsed and return domain values.

pub mod access;
pub mod audit;
pub mod consents;
pub mod contacts;
pub mod emails;
pub mod error;
pub mod events;
pub mod fields;
pub mod privacy;
pub mod topics;

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub use error::{Error, Result};
// Defined in the domain so that the audit writer, below this layer, can read them too.
pub use crate::domain::request::{Actor, RequestContext};

use crate::store::Database;

/// Where "now" comes from, so tests can hold time still.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

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
}

impl Services {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock, login_throttle: Arc::new(access::LoginThrottle::new()) }
    }

    /// Whether the database answers, for readiness probes.
    pub async fn database_answers(&self) -> bool {
        self.db.ping().await.is_ok()
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Database time resolution is a microsecond; truncating here makes values read back equal
    /// to the values written.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        crate::domain::at_storage_precision(self.clock.now())
    }
}
