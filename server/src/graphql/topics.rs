//! Topics over GraphQL: defining them and (un)subscribing contacts.

use super::guard::Allow;
use crate::domain::access::Permission;
use async_graphql::{Context, Enum, ID, InputObject, MaybeUndefined, Object};
use chrono::{DateTime, Utc};

use super::{
    contacts::parse_contact_id,
    error::{GqlError, GqlResult, parse_arg},
    request_of, services_of,
};
use crate::{
    domain::{
        clean_text,
        key::Key,
        topic::{self, SubscriptionStatus, Topic, TopicSubscription},
    },
    service::topics::{NewTopic, TopicAlteration},
};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Frequency", remote = "topic::Frequency")]
pub enum FrequencyValue {
    Immediate,
    Daily,
    Weekly,
    Monthly,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "SubscriptionStatus", remote = "topic::SubscriptionStatus")]
pub enum SubscriptionStatusValue {
    Subscribed,
    Unsubscribed,
}

pub struct TopicNode(pub Topic);

#[Object(name = "Topic")]
impl TopicNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn key(&self) -> &str {
        self.0.key.as_str()
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    async fn description(&self) -> Option<&str> {
        self.0.description.as_deref()
    }

    async fn default_frequency(&self) -> FrequencyValue {
        self.0.default_frequency.into()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }
}

pub struct SubscriptionNode {
    pub subscription: TopicSubscription,
    pub topic: Topic,
}

#[Object(name = "TopicSubscription")]
impl SubscriptionNode {
    async fn topic(&self) -> TopicNode {
        TopicNode(self.topic.clone())
    }

    async fn status(&self) -> SubscriptionStatusValue {
        self.subscription.status.into()
    }

    async fn frequency(&self) -> FrequencyValue {
        self.subscription.frequency.into()
    }

    async fn updated_at(&self) -> DateTime<Utc> {
        self.subscription.updated_at
    }
}

#[derive(InputObject)]
pub struct DefineTopicInput {
    key: String,
    name: String,
    description: Option<String>,
    #[graphql(default_with = "FrequencyValue::Immediate")]
    default_frequency: FrequencyValue,
}

/// Fields left out are kept; a null description clears it.
#[derive(InputObject)]
pub struct AlterTopicInput {
    key: String,
    name: Option<String>,
    description: MaybeUndefined<String>,
    default_frequency: Option<FrequencyValue>,
}

#[derive(Default)]
pub struct TopicQuery;

#[Object]
impl TopicQuery {
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn topics(&self, ctx: &Context<'_>) -> GqlResult<Vec<TopicNode>> {
        Ok(services_of(ctx)?.list_topics().await?.into_iter().map(TopicNode).collect())
    }
}

#[derive(Default)]
pub struct TopicMutation;

#[Object]
impl TopicMutation {
    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn define_topic(&self, ctx: &Context<'_>, input: DefineTopicInput) -> GqlResult<TopicNode> {
        let new = NewTopic {
            key: parse_arg("key", Key::parse(&input.key))?,
            name: parse_arg("name", clean_text(&input.name, 200))?,
            description: input.description.map(|raw| parse_arg("description", clean_text(&raw, 2_000))).transpose()?,
            default_frequency: input.default_frequency.into(),
        };
        Ok(TopicNode(services_of(ctx)?.define_topic(request_of(ctx)?, new).await?))
    }

    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn alter_topic(&self, ctx: &Context<'_>, input: AlterTopicInput) -> GqlResult<TopicNode> {
        let key = parse_arg("key", Key::parse(&input.key))?;
        let alteration = TopicAlteration {
            name: input.name.map(|raw| parse_arg("name", clean_text(&raw, 200))).transpose()?,
            description: match input.description {
                MaybeUndefined::Undefined => None,
                MaybeUndefined::Null => Some(None),
                MaybeUndefined::Value(raw) => Some(Some(parse_arg("description", clean_text(&raw, 2_000))?)),
            },
            default_frequency: input.default_frequency.map(Into::into),
        };
        Ok(TopicNode(services_of(ctx)?.alter_topic(request_of(ctx)?, &key, alteration).await?))
    }

    /// Deletes the topic and every subscription to it. Returns the deleted key.
    #[graphql(guard = "Allow::to(Permission::SchemaManage)")]
    async fn delete_topic(&self, ctx: &Context<'_>, key: String) -> GqlResult<String> {
        let parsed = parse_arg("key", Key::parse(&key))?;
        services_of(ctx)?.delete_topic(request_of(ctx)?, &parsed).await?;
        Ok(key)
    }

    /// Subscribes a contact to a topic; without a frequency the previous one (or the topic's
    /// default) is kept.
    #[graphql(guard = "Allow::or_own_contact(Permission::ProfilesWrite, Some(contact_id.to_string()))")]
    async fn subscribe_topic(
        &self,
        ctx: &Context<'_>,
        contact_id: ID,
        topic: String,
        frequency: Option<FrequencyValue>,
    ) -> GqlResult<SubscriptionNode> {
        set_subscription(ctx, contact_id, topic, SubscriptionStatus::Subscribed, frequency).await
    }

    #[graphql(guard = "Allow::or_own_contact(Permission::ProfilesWrite, Some(contact_id.to_string()))")]
    async fn unsubscribe_topic(&self, ctx: &Context<'_>, contact_id: ID, topic: String) -> GqlResult<SubscriptionNode> {
        set_subscription(ctx, contact_id, topic, SubscriptionStatus::Unsubscribed, None).await
    }
}

async fn set_subscription(
    ctx: &Context<'_>,
    contact_id: ID,
    topic: String,
    status: SubscriptionStatus,
    frequency: Option<FrequencyValue>,
) -> GqlResult<SubscriptionNode> {
    let contact_id = parse_contact_id("contactId", &contact_id)?;
    let topic = Key::parse(&topic).map_err(|error| GqlError::bad_input("topic", error))?;
    let (topic, subscription) = services_of(ctx)?
        .set_subscription(request_of(ctx)?, contact_id, &topic, status, frequency.map(Into::into))
        .await?;
    Ok(SubscriptionNode { subscription, topic })
}
