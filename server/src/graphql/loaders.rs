//! DataLoaders for the children of a contact. One set per request, caching what it loaded, so
//! nothing is shared across requests. Resolvers that return contacts feed the caches with the
//! children of all of them at once; each contact's own lookup is then answered from the cache.
//! So the statement count of a page never depends on how many lookups happen to land in one
//! batching window, and no request waits for that window. Emails' current versions are
//! batched the same way, keyed by (email id, version number).

use std::collections::HashMap;

use async_graphql::dataloader::{DataLoader, HashMapCache, Loader};
use uuid::Uuid;

use super::error::GqlError;
use crate::{
    domain::{
        consent::ConsentChange,
        contact::ContactId,
        email::CheckedVersion,
        event::ContactActivity,
        topic::{Topic, TopicSubscription},
    },
    service::Services,
};

pub struct Loaders {
    pub consents: DataLoader<ConsentsOfContact, HashMapCache>,
    pub subscriptions: DataLoader<SubscriptionsOfContact, HashMapCache>,
    pub email_versions: DataLoader<EmailVersions, HashMapCache>,
    pub activity: DataLoader<ActivityOfContact, HashMapCache>,
}

impl Loaders {
    pub fn new(services: &Services) -> Self {
        Self {
            consents: DataLoader::with_cache(
                ConsentsOfContact(services.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
            subscriptions: DataLoader::with_cache(
                SubscriptionsOfContact(services.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
            email_versions: DataLoader::with_cache(
                EmailVersions(services.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
            activity: DataLoader::with_cache(
                ActivityOfContact(services.clone()),
                tokio::spawn,
                HashMapCache::default(),
            ),
        }
    }
}

/// Every key gets an entry, empty when the contact has nothing: a missing entry would not be
/// cached and would cost a query of its own later.
pub fn group_by_contact<T>(
    keys: &[ContactId],
    items: Vec<T>,
    contact_of: impl Fn(&T) -> ContactId,
) -> HashMap<ContactId, Vec<T>> {
    let mut grouped: HashMap<ContactId, Vec<T>> = keys.iter().map(|key| (*key, Vec::new())).collect();
    for item in items {
        grouped.entry(contact_of(&item)).or_default().push(item);
    }
    grouped
}

pub struct ConsentsOfContact(Services);

impl Loader<ContactId> for ConsentsOfContact {
    type Value = Vec<ConsentChange>;
    type Error = GqlError;

    async fn load(&self, keys: &[ContactId]) -> Result<HashMap<ContactId, Self::Value>, Self::Error> {
        Ok(group_by_contact(keys, self.0.current_consents(keys).await?, |consent| consent.contact_id))
    }
}

pub struct SubscriptionsOfContact(Services);

impl Loader<ContactId> for SubscriptionsOfContact {
    type Value = Vec<(TopicSubscription, Topic)>;
    type Error = GqlError;

    async fn load(&self, keys: &[ContactId]) -> Result<HashMap<ContactId, Self::Value>, Self::Error> {
        Ok(group_by_contact(keys, self.0.subscriptions(keys).await?, |(subscription, _)| subscription.contact_id))
    }
}

pub struct EmailVersions(Services);

impl Loader<(Uuid, i32)> for EmailVersions {
    type Value = CheckedVersion;
    type Error = GqlError;

    async fn load(&self, keys: &[(Uuid, i32)]) -> Result<HashMap<(Uuid, i32), Self::Value>, Self::Error> {
        let versions = self.0.email_versions(keys).await?;
        Ok(versions.into_iter().map(|checked| ((checked.version.email_id, checked.version.version), checked)).collect())
    }
}

pub struct ActivityOfContact(Services);

impl Loader<ContactId> for ActivityOfContact {
    type Value = Option<ContactActivity>;
    type Error = GqlError;

    async fn load(&self, keys: &[ContactId]) -> Result<HashMap<ContactId, Self::Value>, Self::Error> {
        Ok(activity_by_contact(keys, self.0.contact_activity(keys).await?))
    }
}

/// Every key gets an entry, none for a contact without events (see `group_by_contact`).
pub fn activity_by_contact(
    keys: &[ContactId],
    activity: Vec<ContactActivity>,
) -> HashMap<ContactId, Option<ContactActivity>> {
    let mut by_contact: HashMap<ContactId, Option<ContactActivity>> = keys.iter().map(|key| (*key, None)).collect();
    for entry in activity {
        by_contact.insert(entry.contact_id, Some(entry));
    }
    by_contact
}
