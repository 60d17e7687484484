//! GraphQL subscriptions (over `graphql-transport-ws` at `/graphql/ws`): contact changes as they
//! are committed, by any process on the database.

use async_graphql::{Context, EmptyMutation, Enum, ID, Object, Schema, SimpleObject, Subscription};
use chrono::{DateTime, Utc};
use futures_util::{Stream, StreamExt};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};

use super::{guard::Allow, services_of};
use crate::domain::{access::Permission, webhook::WebhookEventType};

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
            WebhookEventType::EventReceived | WebhookEventType::EmailSent | WebhookEventType::EmailBounced => {
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
        let receiver = services_of(ctx).map_err(async_graphql::Error::from)?.subscribe_to_changes();
        Ok(BroadcastStream::new(receiver).filter_map(move |item| {
            let wanted = match item {
                Ok(change) => ContactChangeType::of(change.event_type).and_then(|change_type| {
                    let contact_matches = contact_id.as_ref().is_none_or(|id| id.as_str() == change.contact_id);
                    let type_matches = types.as_ref().is_none_or(|types| types.contains(&change_type));
                    (contact_matches && type_matches).then(|| ContactChangeEvent {
                        seq: change.seq,
                        change_type,
                        contact_id: ID(change.contact_id.clone()),
                        changes: async_graphql::Json(change.changes.clone()),
                        occurred_at: change.occurred_at,
                    })
                }),
                Err(BroadcastStreamRecvError::Lagged(missed)) => {
                    tracing::warn!(missed, "a contact change subscriber fell behind");
                    None
                }
            };
            std::future::ready(wanted)
        }))
    }
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
