//! DataLoaders for the children of a contact, so that a page of contacts with their consents and
//! topics costs the same handful of queries whatever its size. One set per request: nothing is
//! cached across requests.

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, Loader};
use uuid::Uuid;

use super::error::GqlError;
use crate::{
    domain::{
        consent::ConsentChange,
        contact::ContactId,
        topic::{Topic, TopicSubscription},
    },
    service::Services,
};

pub struct Loaders {
    pub consents: DataLoader<ConsentsOfContact>,
    pub subscriptions: DataLoader<SubscriptionsOfContact>,
    pub topics: DataLoader<TopicsById>,
}

impl Loaders {
    pub fn new(services: &Services) -> Self {
        Self {
            consents: DataLoader::new(ConsentsOfContact(services.clone()), tokio::spawn),
            subscriptions: DataLoader::new(SubscriptionsOfContact(services.clone()), tokio::spawn),
            topics: DataLoader::new(TopicsById(services.clone()), tokio::spawn),
        }
    }
}

pub struct ConsentsOfContact(Services);

impl Loader<ContactId> for ConsentsOfContact {
    type Value = Vec<ConsentChange>;
    type Error = GqlError;

    async fn load(&self, keys: &[ContactId]) -> Result<HashMap<ContactId, Self::Value>, Self::Error> {
        let mut grouped: HashMap<ContactId, Vec<ConsentChange>> = HashMap::new();
        for consent in self.0.current_consents(keys).await? {
            grouped.entry(consent.contact_id).or_default().push(consent);
        }
        Ok(grouped)
    }
}

pub struct SubscriptionsOfContact(Services);

impl Loader<ContactId> for SubscriptionsOfContact {
    type Value = Vec<TopicSubscription>;
    type Error = GqlError;

    async fn load(&self, keys: &[ContactId]) -> Result<HashMap<ContactId, Self::Value>, Self::Error> {
        let mut grouped: HashMap<ContactId, Vec<TopicSubscription>> = HashMap::new();
        for subscription in self.0.subscriptions(keys).await? {
            grouped.entry(subscription.contact_id).or_default().push(subscription);
        }
        Ok(grouped)
    }
}

/// Topics are few; one load reads them all and serves every id asked for in the request.
pub struct TopicsById(Services);

impl Loader<Uuid> for TopicsById {
    type Value = Topic;
    type Error = GqlError;

    async fn load(&self, keys: &[Uuid]) -> Result<HashMap<Uuid, Self::Value>, Self::Error> {
        Ok(self
            .0
            .list_topics()
            .await?
            .into_iter()
            .filter(|topic| keys.contains(&topic.id))
            .map(|topic| (topic.id, topic))
            .collect())
    }
}
