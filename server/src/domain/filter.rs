//! Which contacts a list should show: a conjunction of conditions on attributes, consents and
//! topics, or membership of an import. The segment engine grows out of this; every condition here can be checked in SQL.

use super::{
    consent::{Channel, ConsentStatus},
    field::FieldValue,
    key::Key,
};

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ContactFilter {
    pub attributes: Vec<AttributeCondition>,
    pub consents: Vec<ConsentCondition>,
    pub topics: Vec<TopicCondition>,
    /// Only the contacts that this import created or updated.
    pub import: Option<uuid::Uuid>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Equal,
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AttributeCondition {
    Compare { field: Key, comparison: Comparison, value: FieldValue },
    IsSet { field: Key, set: bool },
}

#[derive(Debug, Clone, PartialEq)]
pub struct ConsentCondition {
    pub purpose: Key,
    pub channel: Channel,
    pub status: ConsentStatus,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TopicCondition {
    pub topic: Key,
    pub subscribed: bool,
}
