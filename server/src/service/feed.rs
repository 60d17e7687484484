//! The live feed of contact changes behind GraphQL subscriptions. It follows the audit log,
//! which every change is written to in its own transaction, so subscribers of any process see
//! the changes made through every process on the database, in commit order of the log.

use std::sync::{Arc, OnceLock};

use chrono::{DateTime, Utc};
use serde_json::Value;
use tokio::sync::broadcast;

use super::Services;
use crate::{domain::webhook::WebhookEventType, store};

/// How often the feed looks for new entries while anyone listens.
const POLL: std::time::Duration = std::time::Duration::from_millis(200);
/// Entries read at once.
const BATCH: u64 = 500;
/// Changes a slow subscriber may fall behind by before it misses some.
const BUFFER: usize = 4_096;

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

pub(crate) struct ChangeFeed {
    sender: broadcast::Sender<Arc<ContactChange>>,
    follower: OnceLock<()>,
}

impl Default for ChangeFeed {
    fn default() -> Self {
        Self { sender: broadcast::channel(BUFFER).0, follower: OnceLock::new() }
    }
}

impl Services {
    /// Changes committed from now on. The first subscriber starts the follower.
    pub fn subscribe_to_changes(&self) -> broadcast::Receiver<Arc<ContactChange>> {
        let receiver = self.feed.sender.subscribe();
        self.feed.follower.get_or_init(|| {
            let services = self.clone();
            tokio::spawn(async move { services.follow_audit_log().await });
        });
        receiver
    }

    async fn follow_audit_log(self) {
        let conn = self.db.connection();
        let mut last_seq = loop {
            match store::audit::head(conn).await {
                Ok((seq, _)) => break seq,
                Err(error) => tracing::error!(%error, "the change feed cannot read the audit head"),
            }
            tokio::time::sleep(POLL).await;
        };
        loop {
            match store::audit::batch(conn, last_seq, BATCH).await {
                Ok(entries) => {
                    let full = entries.len() as u64 == BATCH;
                    for entry in entries {
                        last_seq = entry.seq;
                        let Some(event_type) = WebhookEventType::for_audit_action(&entry.action) else { continue };
                        let change = ContactChange {
                            seq: entry.seq,
                            event_type,
                            contact_id: entry.target_id,
                            changes: serde_json::from_str(&entry.changes).unwrap_or(Value::Null),
                            occurred_at: entry.occurred_at,
                        };
                        // No subscriber at the moment is no error: the next one starts from now.
                        let _ = self.feed.sender.send(Arc::new(change));
                    }
                    if full {
                        continue;
                    }
                }
                Err(error) => tracing::error!(%error, "the change feed cannot read the audit log"),
            }
            tokio::time::sleep(POLL).await;
        }
    }
}
