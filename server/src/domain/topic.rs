//! Topics are the subjects a person can follow ("Weekly newsletter"), each with how often they
//! want to hear about it.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{contact::ContactId, key::Key, string_enum};

string_enum!(Frequency { Immediate => "immediate", Daily => "daily", Weekly => "weekly", Monthly => "monthly" });

string_enum!(SubscriptionStatus { Subscribed => "subscribed", Unsubscribed => "unsubscribed" });

#[derive(Debug, Clone, PartialEq)]
pub struct Topic {
    pub id: Uuid,
    pub key: Key,
    pub name: String,
    pub description: Option<String>,
    pub default_frequency: Frequency,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicSubscription {
    pub contact_id: ContactId,
    pub topic_id: Uuid,
    pub status: SubscriptionStatus,
    pub frequency: Frequency,
    pub updated_at: DateTime<Utc>,
}
