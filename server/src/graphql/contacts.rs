//! Contacts over GraphQL: lookups, the filtered contact list, upsert, versioned update, delete,
//! and the contact's nested consents, topics, consent history and events.

use super::guard::Allow;
use crate::domain::access::Permission;
use async_graphql::{
    Context, ID, InputObject, Json, MaybeUndefined, Object, OneofObject, SimpleObject,
    connection::{Connection, OpaqueCursor},
};
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{
    consents::{ChannelValue, ConsentInput, ConsentNode, ConsentStatusValue},
    error::{GqlError, GqlResult, parse_arg},
    events::{ActivityNode, EventNode},
    loaders::{activity_by_contact, group_by_contact},
    loaders_of, page_cost,
    pagination::{PageArgs, connection, page_request},
    request_of, services_of,
    topics::SubscriptionNode,
};
use crate::{
    domain::{
        Change,
        contact::{
            Contact, ContactId, ContactRef, CountryCode, EmailAddress, ExternalId, Locale, PersonName, PhoneNumber,
            TimeZone,
        },
        event::{EventType, TimelineKey},
        filter::{Comparison, ConsentCondition, TopicCondition},
        key::Key,
    },
    service::contacts::{AttributeTest, ContactChanges, ContactFilterRequest, UpsertKey},
};

pub struct ContactNode(pub Contact);

#[Object(name = "Contact")]
impl ContactNode {
    #[graphql(guard = "Allow::or_own_contact(Permission::ProfilesRead, Some(self.0.id.to_string()))")]
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn external_id(&self) -> Option<&str> {
        self.0.external_id.as_ref().map(ExternalId::as_str)
    }

    #[graphql(guard = "Allow::or_own_contact(Permission::ProfilesRead, Some(self.0.id.to_string()))")]
    async fn email(&self) -> Option<&str> {
        self.0.email.as_ref().map(EmailAddress::as_str)
    }

    /// E.164, e.g. +4930123456.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn phone(&self) -> Option<&str> {
        self.0.profile.phone.as_ref().map(PhoneNumber::as_str)
    }

    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn first_name(&self) -> Option<&str> {
        self.0.profile.first_name.as_ref().map(PersonName::as_str)
    }

    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn last_name(&self) -> Option<&str> {
        self.0.profile.last_name.as_ref().map(PersonName::as_str)
    }

    /// BCP 47 language tag, e.g. de-CH.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn locale(&self) -> Option<&str> {
        self.0.profile.locale.as_ref().map(Locale::as_str)
    }

    /// IANA time zone name, e.g. Europe/Berlin.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn time_zone(&self) -> Option<&str> {
        self.0.profile.time_zone.as_ref().map(TimeZone::as_str)
    }

    /// ISO 3166-1 alpha-2 country code, e.g. DE.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn country(&self) -> Option<&str> {
        self.0.profile.country.as_ref().map(CountryCode::as_str)
    }

    /// Custom field values by field key.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn attributes(&self) -> Json<Map<String, Value>> {
        Json(self.0.attributes.iter().map(|(key, value)| (key.to_string(), value.to_json())).collect())
    }

    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn updated_at(&self) -> DateTime<Utc> {
        self.0.updated_at
    }

    /// Increases with every change; pass it back as `expectedVersion` when updating.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn version(&self) -> i64 {
        self.0.version
    }

    /// The current consent per purpose and channel (the latest captured decision of each).
    #[graphql(guard = "Allow::or_own_contact(Permission::ProfilesRead, Some(self.0.id.to_string()))")]
    async fn consents(&self, ctx: &Context<'_>) -> GqlResult<Vec<ConsentNode>> {
        let consents = loaders_of(ctx)?.consents.load_one(self.0.id).await?.unwrap_or_default();
        Ok(consents.into_iter().map(ConsentNode).collect())
    }

    #[graphql(guard = "Allow::or_own_contact(Permission::ProfilesRead, Some(self.0.id.to_string()))")]
    async fn topics(&self, ctx: &Context<'_>) -> GqlResult<Vec<SubscriptionNode>> {
        let subscriptions = loaders_of(ctx)?.subscriptions.load_one(self.0.id).await?.unwrap_or_default();
        Ok(subscriptions.into_iter().map(|(subscription, topic)| SubscriptionNode { subscription, topic }).collect())
    }

    /// Every consent decision recorded for this contact, newest first.
    #[graphql(complexity = "page_cost(first, last, child_complexity)", guard = "Allow::to(Permission::ProfilesRead)")]
    #[allow(clippy::too_many_arguments)]
    async fn consent_history(
        &self,
        ctx: &Context<'_>,
        purpose: Option<String>,
        channel: Option<ChannelValue>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<Uuid>, ConsentNode>> {
        let purpose = purpose.map(|raw| parse_arg("purpose", Key::parse(&raw))).transpose()?;
        let request = page_request(PageArgs { after, before, first, last })?;
        let page =
            services_of(ctx)?.consent_history(self.0.id, purpose.as_ref(), channel.map(Into::into), &request).await?;
        Ok(connection(page, &request, |change| change.id, ConsentNode))
    }

    /// When the contact was last seen, from its events; null until its first event.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn activity(&self, ctx: &Context<'_>) -> GqlResult<Option<ActivityNode>> {
        Ok(loaders_of(ctx)?.activity.load_one(self.0.id).await?.flatten().map(ActivityNode))
    }

    /// Behavioural events of this contact, newest first.
    #[graphql(complexity = "page_cost(first, last, child_complexity)", guard = "Allow::to(Permission::ProfilesRead)")]
    #[allow(clippy::too_many_arguments)]
    async fn events(
        &self,
        ctx: &Context<'_>,
        #[graphql(name = "type")] event_type: Option<String>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<TimelineKey>, EventNode>> {
        let event_type = event_type.map(|raw| parse_arg("type", EventType::parse(&raw))).transpose()?;
        let request = page_request(PageArgs { after, before, first, last })?;
        let page = services_of(ctx)?.event_timeline(self.0.id, event_type.as_ref(), &request).await?;
        Ok(connection(page, &request, |event| (event.occurred_at, event.id), EventNode))
    }
}

/// Names one contact by exactly one of its identifiers.
#[derive(OneofObject)]
pub enum ContactLookup {
    Id(ID),
    ExternalId(String),
    Email(String),
}

impl ContactLookup {
    /// The id asked for, when the contact is named by id (the only way a contact token may).
    pub fn contact_id(&self) -> Option<String> {
        match self {
            ContactLookup::Id(id) => Some(id.to_string()),
            ContactLookup::ExternalId(_) | ContactLookup::Email(_) => None,
        }
    }

    pub fn parse(self, field: &str) -> GqlResult<ContactRef> {
        Ok(match self {
            ContactLookup::Id(id) => ContactRef::Id(parse_contact_id(&format!("{field}.id"), &id)?),
            ContactLookup::ExternalId(raw) => {
                ContactRef::ExternalId(parse_arg(&format!("{field}.externalId"), ExternalId::parse(&raw))?)
            }
            ContactLookup::Email(raw) => {
                ContactRef::Email(parse_arg(&format!("{field}.email"), EmailAddress::parse(&raw))?)
            }
        })
    }
}

pub fn parse_contact_id(field: &str, id: &ID) -> GqlResult<ContactId> {
    Uuid::parse_str(id.as_str())
        .map(ContactId::from_uuid)
        .map_err(|_| GqlError::bad_input(field, "is not a contact id"))
}

#[derive(async_graphql::Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Comparison")]
pub enum ComparisonValue {
    Equal,
    /// Also matches contacts that have no value for the field.
    NotEqual,
    Less,
    LessOrEqual,
    Greater,
    GreaterOrEqual,
}

impl From<ComparisonValue> for Comparison {
    fn from(value: ComparisonValue) -> Self {
        match value {
            ComparisonValue::Equal => Comparison::Equal,
            ComparisonValue::NotEqual => Comparison::NotEqual,
            ComparisonValue::Less => Comparison::Less,
            ComparisonValue::LessOrEqual => Comparison::LessOrEqual,
            ComparisonValue::Greater => Comparison::Greater,
            ComparisonValue::GreaterOrEqual => Comparison::GreaterOrEqual,
        }
    }
}

/// A condition on one custom field: either `comparison` with `value`, or `isSet`.
#[derive(InputObject)]
pub struct AttributeFilter {
    field: String,
    comparison: Option<ComparisonValue>,
    value: Option<Json<Value>>,
    is_set: Option<bool>,
}

#[derive(InputObject)]
pub struct ConsentFilter {
    purpose: String,
    channel: ChannelValue,
    status: ConsentStatusValue,
}

#[derive(InputObject)]
pub struct TopicFilter {
    topic: String,
    #[graphql(default = true)]
    subscribed: bool,
}

/// Contacts matching every condition given.
#[derive(InputObject, Default)]
pub struct ContactFilter {
    attributes: Option<Vec<AttributeFilter>>,
    consents: Option<Vec<ConsentFilter>>,
    topics: Option<Vec<TopicFilter>>,
    /// Only the contacts that this import created or updated (or found unchanged).
    import_id: Option<ID>,
}

/// Each condition is a subquery; a filter is for people, not for thousands of conditions.
const MAX_CONDITIONS_PER_LIST: usize = 20;

impl ContactFilter {
    fn parse(self) -> GqlResult<ContactFilterRequest> {
        for (name, count) in [
            ("filter.attributes", self.attributes.as_ref().map_or(0, Vec::len)),
            ("filter.consents", self.consents.as_ref().map_or(0, Vec::len)),
            ("filter.topics", self.topics.as_ref().map_or(0, Vec::len)),
        ] {
            if count > MAX_CONDITIONS_PER_LIST {
                return Err(GqlError::bad_input(name, format!("at most {MAX_CONDITIONS_PER_LIST} conditions")));
            }
        }
        let mut request = ContactFilterRequest::default();
        for (index, condition) in self.attributes.unwrap_or_default().into_iter().enumerate() {
            let test = match (condition.comparison, condition.value, condition.is_set) {
                (Some(comparison), Some(Json(value)), None) if !value.is_null() => {
                    AttributeTest::Compare(comparison.into(), value)
                }
                (None, None, Some(set)) => AttributeTest::IsSet(set),
                _ => {
                    return Err(GqlError::bad_input(
                        format!("filter.attributes[{index}]"),
                        "give either comparison and a non-null value, or isSet",
                    ));
                }
            };
            request.attributes.push((condition.field, test));
        }
        for (index, condition) in self.consents.unwrap_or_default().into_iter().enumerate() {
            request.consents.push(ConsentCondition {
                purpose: parse_arg(&format!("filter.consents[{index}].purpose"), Key::parse(&condition.purpose))?,
                channel: condition.channel.into(),
                status: condition.status.into(),
            });
        }
        for (index, condition) in self.topics.unwrap_or_default().into_iter().enumerate() {
            request.topics.push(TopicCondition {
                topic: parse_arg(&format!("filter.topics[{index}].topic"), Key::parse(&condition.topic))?,
                subscribed: condition.subscribed,
            });
        }
        request.import = self
            .import_id
            .map(|id| parse_arg("filter.importId", Uuid::parse_str(&id).map_err(|_| "is not an import id")))
            .transpose()?;
        Ok(request)
    }
}

/// Creates a contact or updates the one with the same `externalId` (or, without one, `email`).
/// Fields left out are kept; fields set to null are cleared.
#[derive(InputObject)]
pub struct UpsertContactInput {
    external_id: Option<String>,
    email: MaybeUndefined<String>,
    phone: MaybeUndefined<String>,
    first_name: MaybeUndefined<String>,
    last_name: MaybeUndefined<String>,
    locale: MaybeUndefined<String>,
    time_zone: MaybeUndefined<String>,
    country: MaybeUndefined<String>,
    /// Custom field values by key; a null value clears the field.
    attributes: Option<Json<Value>>,
    /// Consent decisions captured with this change, appended to the contact's consent history in
    /// the same transaction, as `setConsent` would. An email address or phone number of an
    /// erased contact is refused (CONFLICT) unless one of them is GRANTED, on the CONSENT basis,
    /// and captured after the erasure.
    consents: Option<Vec<ConsentInput>>,
}

/// Changes a contact if it is still at `expectedVersion`. Fields left out are kept; fields set
/// to null are cleared.
#[derive(InputObject)]
pub struct UpdateContactInput {
    id: ID,
    expected_version: i64,
    external_id: MaybeUndefined<String>,
    email: MaybeUndefined<String>,
    phone: MaybeUndefined<String>,
    first_name: MaybeUndefined<String>,
    last_name: MaybeUndefined<String>,
    locale: MaybeUndefined<String>,
    time_zone: MaybeUndefined<String>,
    country: MaybeUndefined<String>,
    attributes: Option<Json<Value>>,
    /// Consent decisions captured with this change, appended to the contact's consent history in
    /// the same transaction, as `setConsent` would. An email address or phone number of an
    /// erased contact is refused (CONFLICT) unless one of them is GRANTED, on the CONSENT basis,
    /// and captured after the erasure.
    consents: Option<Vec<ConsentInput>>,
}

fn change<T, E: std::fmt::Display>(
    field: &str,
    raw: MaybeUndefined<String>,
    parse: impl Fn(&str) -> Result<T, E>,
) -> GqlResult<Change<T>> {
    Ok(match raw {
        MaybeUndefined::Undefined => Change::Keep,
        MaybeUndefined::Null => Change::Clear,
        MaybeUndefined::Value(raw) => Change::Set(parse_arg(field, parse(&raw))?),
    })
}

/// The profile part shared by both inputs, parsed at the edge.
#[allow(clippy::too_many_arguments)]
fn profile_changes(
    email: MaybeUndefined<String>,
    phone: MaybeUndefined<String>,
    first_name: MaybeUndefined<String>,
    last_name: MaybeUndefined<String>,
    locale: MaybeUndefined<String>,
    time_zone: MaybeUndefined<String>,
    country: MaybeUndefined<String>,
    attributes: Option<Json<Value>>,
    consents: Option<Vec<ConsentInput>>,
) -> GqlResult<ContactChanges> {
    // Taken as any JSON and checked here: were the scalar typed as an object, async-graphql
    // would refuse a non-object itself, with an error that names no field.
    let attributes = match attributes {
        None | Some(Json(Value::Null)) => Vec::new(),
        Some(Json(Value::Object(map))) => map.into_iter().collect(),
        Some(_) => return Err(GqlError::bad_input("attributes", "must be an object of field keys and values")),
    };
    Ok(ContactChanges {
        external_id: Change::Keep,
        email: change("email", email, EmailAddress::parse)?,
        phone: change("phone", phone, PhoneNumber::parse)?,
        first_name: change("firstName", first_name, PersonName::parse)?,
        last_name: change("lastName", last_name, PersonName::parse)?,
        locale: change("locale", locale, Locale::parse)?,
        time_zone: change("timeZone", time_zone, TimeZone::parse)?,
        country: change("country", country, CountryCode::parse)?,
        attributes,
        consents: consents
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(index, consent)| consent.parse(&format!("consents[{index}].")))
            .collect::<GqlResult<_>>()?,
    })
}

#[derive(SimpleObject)]
pub struct UpsertContactPayload {
    contact: ContactNode,
    /// True when no contact matched and a new one was created.
    created: bool,
}

#[derive(SimpleObject)]
pub struct DeleteContactPayload {
    deleted_contact_id: ID,
}

#[derive(Default)]
pub struct ContactQuery;

#[Object]
impl ContactQuery {
    /// One contact by id, external id or email; null when there is none.
    #[graphql(guard = "Allow::or_own_contact(Permission::ProfilesRead, by.contact_id())")]
    async fn contact(&self, ctx: &Context<'_>, by: ContactLookup) -> GqlResult<Option<ContactNode>> {
        let reference = by.parse("by")?;
        let contact = services_of(ctx)?.find_contact(&reference).await?;
        let selection = ctx.look_ahead();
        prime_loaders(ctx, contact.as_slice(), |child| selection.field(child).exists()).await?;
        Ok(contact.map(ContactNode))
    }

    /// Contacts in creation order, optionally filtered.
    #[graphql(complexity = "page_cost(first, last, child_complexity)", guard = "Allow::to(Permission::ProfilesRead)")]
    async fn contacts(
        &self,
        ctx: &Context<'_>,
        filter: Option<ContactFilter>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<Uuid>, ContactNode>> {
        let filter = filter.unwrap_or_default().parse()?;
        let request = page_request::<Uuid>(PageArgs { after, before, first, last })?;
        let page = services_of(ctx)?.list_contacts(&filter, &request.clone().map(ContactId::from_uuid)).await?;
        let selection = ctx.look_ahead();
        let selects = |child: &str| {
            selection.field("edges").field("node").field(child).exists()
                || selection.field("nodes").field(child).exists()
        };
        prime_loaders(ctx, &page.items, selects).await?;
        Ok(connection(page, &request, |contact| contact.id.as_uuid(), ContactNode))
    }
}

/// Fetches the selected children of these contacts now, concurrently, one statement each, and
/// hands them to the loaders' caches (see `loaders`): the child fields then skip the loaders'
/// batching delay.
async fn prime_loaders(ctx: &Context<'_>, contacts: &[Contact], selects: impl Fn(&str) -> bool) -> GqlResult<()> {
    if contacts.is_empty() {
        return Ok(());
    }
    let services = services_of(ctx)?;
    let ids: Vec<ContactId> = contacts.iter().map(|contact| contact.id).collect();
    let consents =
        async { if selects("consents") { services.current_consents(&ids).await.map(Some) } else { Ok(None) } };
    let subscriptions =
        async { if selects("topics") { services.subscriptions(&ids).await.map(Some) } else { Ok(None) } };
    let activity =
        async { if selects("activity") { services.contact_activity(&ids).await.map(Some) } else { Ok(None) } };
    let (consents, subscriptions, activity) = futures_util::try_join!(consents, subscriptions, activity)?;
    let loaders = loaders_of(ctx)?;
    if let Some(consents) = consents {
        loaders.consents.feed_many(group_by_contact(&ids, consents, |consent| consent.contact_id)).await;
    }
    if let Some(subscriptions) = subscriptions {
        loaders
            .subscriptions
            .feed_many(group_by_contact(&ids, subscriptions, |(subscription, _)| subscription.contact_id))
            .await;
    }
    if let Some(activity) = activity {
        loaders.activity.feed_many(activity_by_contact(&ids, activity)).await;
    }
    Ok(())
}

#[derive(Default)]
pub struct ContactMutation;

#[Object]
impl ContactMutation {
    /// Idempotent: the same input twice leaves the contact (and its version) as the first did.
    #[graphql(guard = "Allow::to(Permission::ProfilesWrite)")]
    async fn upsert_contact(&self, ctx: &Context<'_>, input: UpsertContactInput) -> GqlResult<UpsertContactPayload> {
        let external_id = input.external_id.map(|raw| parse_arg("externalId", ExternalId::parse(&raw))).transpose()?;
        let email_for_key = match &input.email {
            MaybeUndefined::Value(raw) if external_id.is_none() => Some(parse_arg("email", EmailAddress::parse(raw))?),
            _ => None,
        };
        let changes = profile_changes(
            input.email,
            input.phone,
            input.first_name,
            input.last_name,
            input.locale,
            input.time_zone,
            input.country,
            input.attributes,
            input.consents,
        )?;
        let key = match (external_id, email_for_key) {
            (Some(external_id), _) => UpsertKey::ExternalId(external_id),
            (None, Some(email)) => UpsertKey::Email(email),
            (None, None) => {
                return Err(GqlError::bad_input("externalId", "give an externalId or an email to find the contact by"));
            }
        };
        let upserted = services_of(ctx)?.upsert_contact(request_of(ctx)?, key, changes).await?;
        Ok(UpsertContactPayload { contact: ContactNode(upserted.contact), created: upserted.created })
    }

    /// Fails with CONFLICT, writing nothing, when the contact is no longer at `expectedVersion`.
    #[graphql(guard = "Allow::to(Permission::ProfilesWrite)")]
    async fn update_contact(&self, ctx: &Context<'_>, input: UpdateContactInput) -> GqlResult<ContactNode> {
        let id = parse_contact_id("id", &input.id)?;
        let mut changes = profile_changes(
            input.email,
            input.phone,
            input.first_name,
            input.last_name,
            input.locale,
            input.time_zone,
            input.country,
            input.attributes,
            input.consents,
        )?;
        changes.external_id = change("externalId", input.external_id, ExternalId::parse)?;
        let contact = services_of(ctx)?.update_contact(request_of(ctx)?, id, input.expected_version, changes).await?;
        Ok(ContactNode(contact))
    }

    /// Deletes the contact with its consents, topic subscriptions and events.
    #[graphql(guard = "Allow::to(Permission::ProfilesWrite)")]
    async fn delete_contact(&self, ctx: &Context<'_>, id: ID) -> GqlResult<DeleteContactPayload> {
        let contact_id = parse_contact_id("id", &id)?;
        services_of(ctx)?.delete_contact(request_of(ctx)?, contact_id).await?;
        // The canonical form, as `Contact.id` shows it: an id may be sent upper-cased or
        // without hyphens, and callers match the answer against the ids they hold.
        Ok(DeleteContactPayload { deleted_contact_id: ID(contact_id.to_string()) })
    }
}
