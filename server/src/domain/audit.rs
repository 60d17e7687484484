//! Audit entries as stored: every value is kept exactly as it was hashed (changes as JSON text,
//! the address as text), so that verifying the chain recomputes hashes from what is stored.

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    pub id: Uuid,
    pub occurred_at: DateTime<Utc>,
    pub actor_kind: String,
    pub actor_id: Option<String>,
    /// What happened, as `<target>.<verb>`: `contact.updated`, `field.defined` …
    pub action: String,
    pub target_kind: String,
    pub target_id: String,
    /// JSON object `{field: {before, after}}`, personal values redacted.
    pub changes: String,
    pub request_id: String,
    pub ip: Option<String>,
    /// Hex SHA-256 of the previous entry, or 64 zeros for the first.
    pub prev_hash: String,
    pub hash: String,
}

/// Which entries of the audit log a reader wants; every condition given must hold.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub target_kind: Option<String>,
    pub target_id: Option<String>,
    pub actor_kind: Option<String>,
    pub actor_id: Option<String>,
    pub action: Option<String>,
    /// Inclusive lower bound of `occurred_at`.
    pub from: Option<DateTime<Utc>>,
    /// Exclusive upper bound of `occurred_at`.
    pub to: Option<DateTime<Utc>>,
}
