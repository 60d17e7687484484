//! The audit log over GraphQL: a read-only connection, newest first, filtered by target, actor,
//! action and time. Entries are shown as stored, so what a reader sees is what the chain covers.

use super::guard::Allow;
use crate::domain::access::Permission;
use async_graphql::{
    Context, ID, InputObject, Json, Object, SimpleObject,
    connection::{Connection, OpaqueCursor},
};
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{
    error::GqlResult,
    page_cost,
    pagination::{PageArgs, connection, page_request},
    services_of,
};
use crate::domain::audit::{AuditEntry, AuditFilter};

/// Which entries to list; every condition given must hold.
#[derive(InputObject, Default)]
#[graphql(name = "AuditFilter")]
pub struct AuditFilterInput {
    /// `contact`, `field`, `consent_purpose`, `topic`, `event_batch` …
    target_kind: Option<String>,
    target_id: Option<String>,
    /// `bootstrap`, or `system` (id `cli` for the command line); users, API keys and contact
    /// tokens later.
    actor_kind: Option<String>,
    actor_id: Option<String>,
    /// Such as `contact.updated`.
    action: Option<String>,
    /// Entries at or after this time.
    from: Option<DateTime<Utc>>,
    /// Entries before this time.
    to: Option<DateTime<Utc>>,
}

impl From<AuditFilterInput> for AuditFilter {
    fn from(input: AuditFilterInput) -> Self {
        AuditFilter {
            target_kind: input.target_kind,
            target_id: input.target_id,
            actor_kind: input.actor_kind,
            actor_id: input.actor_id,
            action: input.action,
            from: input.from,
            to: input.to,
        }
    }
}

#[derive(SimpleObject)]
pub struct AuditActor {
    kind: String,
    id: Option<String>,
}

pub struct AuditEntryNode(AuditEntry);

impl From<AuditEntry> for AuditEntryNode {
    fn from(entry: AuditEntry) -> Self {
        Self(entry)
    }
}

#[Object(name = "AuditEntry")]
impl AuditEntryNode {
    /// Position in the hash chain, from 1.
    async fn seq(&self) -> i64 {
        self.0.seq
    }

    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn occurred_at(&self) -> DateTime<Utc> {
        self.0.occurred_at
    }

    async fn actor(&self) -> AuditActor {
        AuditActor { kind: self.0.actor_kind.clone(), id: self.0.actor_id.clone() }
    }

    async fn action(&self) -> &str {
        &self.0.action
    }

    async fn target_kind(&self) -> &str {
        &self.0.target_kind
    }

    async fn target_id(&self) -> &str {
        &self.0.target_id
    }

    /// `{field: {before, after}}`; personal values read "[redacted]".
    async fn changes(&self) -> Json<Value> {
        // Shown as text if the stored JSON was damaged: `rapport audit verify` says more.
        Json(serde_json::from_str(&self.0.changes).unwrap_or_else(|_| Value::String(self.0.changes.clone())))
    }

    /// The `x-request-id` of the request that made the change.
    async fn request_id(&self) -> &str {
        &self.0.request_id
    }

    async fn ip(&self) -> Option<&str> {
        self.0.ip.as_deref()
    }

    /// Hex SHA-256 of the previous entry.
    async fn prev_hash(&self) -> &str {
        &self.0.prev_hash
    }

    /// Hex SHA-256 of this entry and the previous hash.
    async fn hash(&self) -> &str {
        &self.0.hash
    }
}

#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// Every recorded change, newest first.
    #[graphql(complexity = "page_cost(first, last, child_complexity)", guard = "Allow::to(Permission::AuditRead)")]
    async fn audit_log(
        &self,
        ctx: &Context<'_>,
        filter: Option<AuditFilterInput>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<i64>, AuditEntryNode>> {
        let filter = AuditFilter::from(filter.unwrap_or_default());
        let request = page_request::<i64>(PageArgs { after, before, first, last })?;
        let page = services_of(ctx)?.audit_log(&filter, &request).await?;
        Ok(connection(page, &request, |entry| entry.seq, AuditEntryNode))
    }
}
