//! Use cases: one function per command or query. Services own transactions and decide what is
//! allowed; they take domain values that the edges already parsed and return domain values.

pub mod consents;
pub mod contacts;
pub mod error;
pub mod events;
pub mod fields;
pub mod topics;

use std::{net::IpAddr, sync::Arc};

use chrono::{DateTime, Utc};

pub use error::{Error, Result};

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

/// Who is acting. Issue-specific principals (users, API keys, contact tokens) join later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The holder of `RAPPORT_ADMIN_TOKEN`, the deployment's bootstrap owner credential.
    Bootstrap,
}

/// What every use case knows about the request that triggered it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub actor: Actor,
    pub request_id: String,
    /// The caller's address, for the audit log and consent proof; none for work started inside.
    pub ip: Option<IpAddr>,
}

impl RequestContext {
    /// Work the system does by itself or on an operator's command line, not for a caller.
    pub fn internal(actor: Actor, request_id: impl Into<String>) -> Self {
        Self { actor, request_id: request_id.into(), ip: None }
    }
}

/// Shared handles the use cases need, cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub(crate) db: Database,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Services {
    pub fn new(db: Database, clock: Arc<dyn Clock>) -> Self {
        Self { db, clock }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Database time resolution is a microsecond; truncating here makes values read back equal
    /// to the values written.
    pub(crate) fn now(&self) -> DateTime<Utc> {
        let now = self.clock.now();
        DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now)
    }
}
