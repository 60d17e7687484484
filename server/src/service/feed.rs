//! The live feeds behind GraphQL subscriptions. One follows the audit log, which every change is
//! written to in its own transaction, so subscribers of any process see what every process on
//! the database committed, in the log's order; contact changes are the part of it that concerns
//! contacts. The other takes the statistics of the moment, every `STATISTICS_PERIOD` and at once
//! for a new subscriber. Each runs once per process, from its first subscriber on, however many
//! subscribe.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::{Notify, broadcast};

use super::{Result, Services};
use crate::{
    domain::{audit::AuditEntry, statistics::Statistics, webhook::WebhookEventType},
    store,
};

/// How often the feed looks for new entries while anyone listens.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Entries read at once.
const BATCH: u64 = 500;
/// Entries a slow subscriber may fall behind by before it misses some.
const BUFFER: usize = 4_096;
/// How often statistics are taken while anyone listens: often enough for a dashboard, rarely
/// enough that counting a large contact table stays a small share of the database's time.
pub const STATISTICS_PERIOD: std::time::Duration = std::time::Duration::from_secs(10);

/// One change to one contact, described as the audit log describes it (personal values
/// redacted).
#[derive(Debug, Clone, PartialEq)]
pub struct ContactChange {
    pub seq: i64,
    pub event_type: WebhookEventType,
    pub contact_id: String,
    pub changes: Value,
    pub occurred_at: DateTime<Utc>,
}

impl ContactChange {
    /// The contact change an audit entry records, if it records one.
    pub fn of(entry: &AuditEntry) -> Option<Self> {
        Some(Self {
            seq: entry.seq,
            event_type: WebhookEventType::for_audit_action(&entry.action)?,
            contact_id: entry.target_id.clone(),
            changes: serde_json::from_str(&entry.changes).unwrap_or(Value::Null),
            occurred_at: entry.occurred_at,
        })
    }
}

pub(crate) struct Feeds {
    audit: broadcast::Sender<Arc<AuditEntry>>,
    audit_follower: OnceLock<()>,
    statistics: broadcast::Sender<Arc<Statistics>>,
    statistics_wanted: Arc<Notify>,
    statistics_taker: OnceLock<()>,
}

impl Default for Feeds {
    fn default() -> Self {
        Self {
            audit: broadcast::channel(BUFFER).0,
            audit_follower: OnceLock::new(),
            // Subscribers want the latest counts only.
            statistics: broadcast::channel(1).0,
            statistics_wanted: Arc::default(),
            statistics_taker: OnceLock::new(),
        }
    }
}

impl Services {
    /// Audit entries committed from now on. The first subscriber starts the follower.
    pub fn subscribe_to_audit_log(&self) -> broadcast::Receiver<Arc<AuditEntry>> {
        let receiver = self.feeds.audit.subscribe();
        self.feeds.audit_follower.get_or_init(|| {
            let services = self.clone();
            tokio::spawn(async move { services.follow_audit_log().await });
        });
        receiver
    }

    /// Statistics from now on: the first at once, then every `STATISTICS_PERIOD`.
    pub fn subscribe_to_statistics(&self) -> broadcast::Receiver<Arc<Statistics>> {
        let receiver = self.feeds.statistics.subscribe();
        let mut started = false;
        self.feeds.statistics_taker.get_or_init(|| {
            let services = self.clone();
            tokio::spawn(async move { services.take_statistics().await });
            started = true;
        });
        // A taker just started counts at once anyway.
        if !started {
            self.feeds.statistics_wanted.notify_one();
        }
        receiver
    }

    /// The counts of the moment.
    pub async fn statistics(&self) -> Result<Statistics> {
        Ok(store::statistics::snapshot(self.db.connection(), self.now()).await?)
    }

    async fn take_statistics(self) {
        let wanted = Arc::clone(&self.feeds.statistics_wanted);
        loop {
            // Nobody listening: nothing is counted until someone subscribes again.
            if self.feeds.statistics.receiver_count() == 0 {
                wanted.notified().await;
            }
            match self.statistics().await {
                Ok(statistics) => {
                    let _ = self.feeds.statistics.send(Arc::new(statistics));
                }
                Err(error) => tracing::error!(%error, "the statistics feed cannot count"),
            }
            tokio::select! {
                () = tokio::time::sleep(STATISTICS_PERIOD) => {}
                () = wanted.notified() => {}
            }
        }
    }

    async fn follow_audit_log(self) {
        let conn = self.db.connection();
        let mut last_seq = loop {
            match store::audit::head(conn).await {
                Ok((seq, _)) => break seq,
                Err(error) => tracing::error!(%error, "the audit feed cannot read the audit head"),
            }
            tokio::time::sleep(POLL).await;
        };
        loop {
            match store::audit::batch(conn, last_seq, BATCH).await {
                Ok(entries) => {
                    let full = entries.len() as u64 == BATCH;
                    for entry in entries {
                        last_seq = entry.seq;
                        // No subscriber at the moment is no error: the next one starts from now.
                        let _ = self.feeds.audit.send(Arc::new(entry));
                    }
                    if full {
                        continue;
                    }
                }
                Err(error) => tracing::error!(%error, "the audit feed cannot read the audit log"),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
