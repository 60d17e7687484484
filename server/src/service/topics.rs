//! Topics and subscriptions to them.

use tracing::instrument;
use uuid::Uuid;

use serde_json::Value;

use super::{Error, RequestContext, Result, Services};
use crate::{
    audit::{self, Changes},
    domain::access::Permission,
    domain::{
        contact::{ContactId, ContactRef},
        key::Key,
        topic::{Frequency, SubscriptionStatus, Topic, TopicSubscription},
    },
    store,
};

#[derive(Debug, Clone)]
pub struct NewTopic {
    pub key: Key,
    pub name: String,
    pub description: Option<String>,
    pub default_frequency: Frequency,
}

#[derive(Debug, Clone, Default)]
pub struct TopicAlteration {
    pub name: Option<String>,
    pub description: Option<Option<String>>,
    pub default_frequency: Option<Frequency>,
}

impl Services {
    pub async fn list_topics(&self) -> Result<Vec<Topic>> {
        Ok(store::topics::all(self.db.connection()).await?)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %new.key))]
    pub async fn define_topic(&self, ctx: &RequestContext, new: NewTopic) -> Result<Topic> {
        let now = self.now();
        let topic = Topic {
            id: Uuid::now_v7(),
            key: new.key,
            name: new.name,
            description: new.description,
            default_frequency: new.default_frequency,
            created_at: now,
            updated_at: now,
        };
        let tx = self.db.begin_write().await?;
        store::topics::insert(&tx, &topic).await?;
        let entry = audit::Entry::new("topic.defined", "topic", topic.key.as_str(), topic_changes(None, Some(&topic)));
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        self.catalog.forget();
        Ok(topic)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %key))]
    pub async fn alter_topic(&self, ctx: &RequestContext, key: &Key, alteration: TopicAlteration) -> Result<Topic> {
        let tx = self.db.begin_write().await?;
        let mut topic = store::topics::find(&tx, key).await?.ok_or(Error::NotFound { what: "topic" })?;
        let before = topic.clone();
        if let Some(name) = alteration.name {
            topic.name = name;
        }
        if let Some(description) = alteration.description {
            topic.description = description;
        }
        if let Some(frequency) = alteration.default_frequency {
            topic.default_frequency = frequency;
        }
        let now = self.now();
        topic.updated_at = now;
        store::topics::update(&tx, &topic).await?;
        let entry =
            audit::Entry::new("topic.altered", "topic", key.as_str(), topic_changes(Some(&before), Some(&topic)));
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        self.catalog.forget();
        Ok(topic)
    }

    /// Removes the topic and every subscription to it.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %key))]
    pub async fn delete_topic(&self, ctx: &RequestContext, key: &Key) -> Result<()> {
        let tx = self.db.begin_write().await?;
        let existing = store::topics::find(&tx, key).await?.ok_or(Error::NotFound { what: "topic" })?;
        if !store::topics::delete(&tx, key).await? {
            return Err(Error::NotFound { what: "topic" });
        }
        let entry = audit::Entry::new("topic.deleted", "topic", key.as_str(), topic_changes(Some(&existing), None));
        audit::append(&tx, ctx, self.now(), entry).await?;
        tx.commit().await?;
        self.catalog.forget();
        Ok(())
    }

    /// Subscribes or unsubscribes. Without a frequency, a subscription keeps the one it had, or
    /// takes the topic's default.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %contact_id, topic = %topic_key))]
    pub async fn set_subscription(
        &self,
        ctx: &RequestContext,
        contact_id: ContactId,
        topic_key: &Key,
        status: SubscriptionStatus,
        frequency: Option<Frequency>,
    ) -> Result<(Topic, TopicSubscription)> {
        self.require_or_own_contact(ctx, Permission::ProfilesWrite, contact_id)?;
        let tx = self.db.begin_write().await?;
        let topic = store::topics::find(&tx, topic_key)
            .await?
            .ok_or_else(|| Error::validation("topic", format!("unknown topic {:?}", topic_key.as_str())))?;
        if store::contacts::find(&tx, self.db.keys()?, &ContactRef::Id(contact_id)).await?.is_none() {
            return Err(Error::NotFound { what: "contact" });
        }
        let state = self.subscribe_in(&tx, ctx, contact_id, &topic, status, frequency).await?;
        tx.commit().await?;
        Ok((topic, state))
    }

    /// Sets a subscription inside the caller's transaction, with its audit entry. Without a
    /// frequency, a subscription keeps the one it had, or takes the topic's default.
    pub(super) async fn subscribe_in(
        &self,
        tx: &impl sea_orm::ConnectionTrait,
        ctx: &RequestContext,
        contact_id: ContactId,
        topic: &Topic,
        status: SubscriptionStatus,
        frequency: Option<Frequency>,
    ) -> Result<TopicSubscription> {
        let previous = store::topics::subscriptions(tx, &[contact_id])
            .await?
            .into_iter()
            .find_map(|(subscription, _)| (subscription.topic_id == topic.id).then_some(subscription));
        let now = self.now();
        let state = TopicSubscription {
            contact_id,
            topic_id: topic.id,
            status,
            frequency: frequency
                .or(previous.as_ref().map(|subscription| subscription.frequency))
                .unwrap_or(topic.default_frequency),
            updated_at: now,
        };
        store::topics::save_subscription(tx, &state).await?;
        let mut changes = Changes::new();
        changes
            .field("topic", None, Some(Value::from(topic.key.as_str())))
            .field(
                "status",
                previous.as_ref().map(|subscription| Value::from(subscription.status.as_str())),
                Some(Value::from(state.status.as_str())),
            )
            .field(
                "frequency",
                previous.as_ref().map(|subscription| Value::from(subscription.frequency.as_str())),
                Some(Value::from(state.frequency.as_str())),
            );
        let entry = audit::Entry::new("subscription.changed", "contact", contact_id.to_string(), changes);
        audit::append(tx, ctx, now, entry).await?;
        Ok(state)
    }

    /// The subscriptions of several contacts, each with its topic, in one statement.
    pub async fn subscriptions(&self, contact_ids: &[ContactId]) -> Result<Vec<(TopicSubscription, Topic)>> {
        Ok(store::topics::subscriptions(self.db.connection(), contact_ids).await?)
    }
}

/// A topic's settings before and after, for the audit log.
fn topic_changes(before: Option<&Topic>, after: Option<&Topic>) -> Changes {
    let settings = |topic: Option<&Topic>| -> [Option<Value>; 3] {
        match topic {
            None => [None, None, None],
            Some(topic) => [
                Some(Value::from(topic.name.as_str())),
                topic.description.as_deref().map(Value::from),
                Some(Value::from(topic.default_frequency.as_str())),
            ],
        }
    };
    let mut changes = Changes::new();
    for ((name, old), new) in
        ["name", "description", "defaultFrequency"].into_iter().zip(settings(before)).zip(settings(after))
    {
        changes.field(name, old, new);
    }
    changes
}
