//! GraphQL subscriptions (over `graphql-transport-ws` at `/graphql/ws`): contact changes as they
//! are committed, by any process on the database, and the admin console's feed of everything
//! audited with the statistics of the moment.

use std::sync::Arc;

use async_graphql::{Context, EmptyMutation, Enum, ID, Object, Schema, SimpleObject, Subscription, Union};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt, stream};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use super::{audit::AuditEntryNode, guard::Allow, services_of, statistics::StatisticsNode};
use crate::{
    domain::{access::Permission, webhook::WebhookEventType},
    service::feed::ContactChange,
};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
pub enum ContactChangeType {
    ContactCreated,
    ContactUpdated,
    ContactDeleted,
    ConsentChanged,
    TopicChanged,
}

impl ContactChangeType {
    /// The contact change a webhook type reports; events and mail are not contact changes.
    fn of(kind: WebhookEventType) -> Option<Self> {
        Some(match kind {
            WebhookEventType::ContactCreated => Self::ContactCreated,
            WebhookEventType::ContactUpdated => Self::ContactUpdated,
            WebhookEventType::ContactDeleted => Self::ContactDeleted,
            WebhookEventType::ConsentChanged => Self::ConsentChanged,
            WebhookEventType::TopicChanged => Self::TopicChanged,
            WebhookEventType::EventReceived
            | WebhookEventType::EmailSent
            | WebhookEventType::EmailBounced
            | WebhookEventType::EmailComplained => {
                return None;
            }
        })
    }
}

/// One committed change, described as the audit log describes it (personal values redacted:
/// read the contact for them).
#[derive(SimpleObject, Clone)]
pub struct ContactChangeEvent {
    /// The audit entry's sequence number: increasing, so a client can tell what it has seen.
    seq: i64,
    #[graphql(name = "type")]
    change_type: ContactChangeType,
    contact_id: ID,
    changes: async_graphql::Json<serde_json::Value>,
    occurred_at: DateTime<Utc>,
}

#[derive(Default)]
pub struct SubscriptionRoot;

#[Subscription]
impl SubscriptionRoot {
    /// Contact changes from the moment of subscribing, optionally of one contact and of some
    /// types only. A subscriber too slow to keep up misses changes rather than holding others up.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn contact_changes(
        &self,
        ctx: &Context<'_>,
        contact_id: Option<ID>,
        types: Option<Vec<ContactChangeType>>,
    ) -> async_graphql::Result<impl Stream<Item = ContactChangeEvent>> {
        let receiver = services_of(ctx).map_err(async_graphql::Error::from)?.subscribe_to_audit_log();
        Ok(received(receiver, "contact change").filter_map(move |entry| {
            let wanted = ContactChange::of(&entry).and_then(|change| {
                let change_type = ContactChangeType::of(change.event_type)?;
                let contact_matches = contact_id.as_ref().is_none_or(|id| id.as_str() == change.contact_id);
                let type_matches = types.as_ref().is_none_or(|types| types.contains(&change_type));
                (contact_matches && type_matches).then(|| ContactChangeEvent {
                    seq: change.seq,
                    change_type,
                    contact_id: ID(change.contact_id),
                    changes: async_graphql::Json(change.changes),
                    occurred_at: change.occurred_at,
                })
            });
            std::future::ready(wanted)
        }))
    }

    /// The admin console's feed: every audited action as it commits (a webhook endpoint
    /// disabled after failing, an import, a sign-in …), optionally only those whose action is
    /// one of `actions` or starts with one ending in a dot (`webhook_endpoint.`); and, unless
    /// `statistics` is false, the counts of the moment at once and then every ten seconds.
    /// Later issues add their own items (program statistics).
    #[graphql(guard = "Allow::to(Permission::AuditRead)")]
    async fn feed(
        &self,
        ctx: &Context<'_>,
        actions: Option<Vec<String>>,
        #[graphql(default = true)] statistics: bool,
    ) -> async_graphql::Result<impl Stream<Item = FeedItem>> {
        let services = services_of(ctx).map_err(async_graphql::Error::from)?;
        let audited = received(services.subscribe_to_audit_log(), "feed").filter_map(move |entry| {
            let wanted = actions
                .as_ref()
                .is_none_or(|actions| actions.iter().any(|action| matches_action(action, &entry.action)));
            std::future::ready(wanted.then(|| FeedItem::AuditEntry(Box::new(AuditEntryNode::from((*entry).clone())))))
        });
        let counts = if statistics {
            received(services.subscribe_to_statistics(), "statistics")
                .map(|counts| FeedItem::Statistics(StatisticsNode::from(&*counts)))
                .boxed()
        } else {
            stream::empty().boxed()
        };
        Ok(stream::select(audited, counts))
    }
}

/// One item of the admin console's feed.
#[derive(Union)]
pub enum FeedItem {
    AuditEntry(Box<AuditEntryNode>),
    Statistics(StatisticsNode),
}

/// `wanted` names an action, or all actions of a target when it ends with a dot.
fn matches_action(wanted: &str, action: &str) -> bool {
    if wanted.ends_with('.') { action.starts_with(wanted) } else { action == wanted }
}

/// What a broadcast receiver gets. A subscriber too slow to keep up misses items rather than
/// holding others up; the log says so.
fn received<T: Send + Sync + 'static>(
    receiver: tokio::sync::broadcast::Receiver<Arc<T>>,
    feed: &'static str,
) -> impl Stream<Item = Arc<T>> {
    BroadcastStream::new(receiver).filter_map(move |item| {
        std::future::ready(match item {
            Ok(item) => Some(item),
            Err(BroadcastStreamRecvError::Lagged(missed)) => {
                tracing::warn!(missed, feed, "a subscriber fell behind");
                None
            }
        })
    })
}

/// What `/graphql/ws` serves: subscriptions only. Queries and mutations go to `/graphql`,
/// where every request is authenticated, rate-limited and given fresh loaders.
pub type SubscriptionSchema = Schema<WebSocketQuery, EmptyMutation, SubscriptionRoot>;

#[derive(Default)]
pub struct WebSocketQuery;

#[Object]
impl WebSocketQuery {
    /// Always true: queries are answered at `/graphql`; this socket serves subscriptions.
    async fn subscriptions_only(&self) -> bool {
        true
    }
}

pub fn build_subscription_schema(services: crate::service::Services) -> SubscriptionSchema {
    Schema::build(WebSocketQuery, EmptyMutation, SubscriptionRoot)
        .limit_depth(super::MAX_DEPTH)
        .limit_complexity(super::MAX_COMPLEXITY)
        .data(services)
        .finish()
}
