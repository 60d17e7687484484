//! Counts of the moment, for the admin console's live feed: how many contacts there are, what
//! is still waiting to go out, and what needs an admin (failed deliveries, disabled endpoints).
//! Only counts that an index answers are here, so that taking them stays cheap as tables grow.

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statistics {
    pub taken_at: DateTime<Utc>,
    pub contacts: u64,
    pub imports_running: u64,
    /// Mail queued or deferred, not sent yet.
    pub mail_waiting: u64,
    pub webhook_deliveries_pending: u64,
    /// Deliveries whose whole schedule failed: an admin may replay them.
    pub webhook_deliveries_failed: u64,
    /// Endpoints that kept failing and were switched off until an admin enables them again.
    pub webhook_endpoints_disabled: u64,
}
