//! Creating, changing, finding and deleting contacts, with their custom field values checked
//! against the field definitions in the same transaction as the write.

use std::collections::HashMap;

use serde_json::Value;
use tracing::instrument;

use super::{Error, RequestContext, Result, Services};
use crate::{
    domain::{
        Change,
        contact::{
            Attributes, Contact, ContactId, ContactRef, CountryCode, EmailAddress, ExternalId, Locale, PersonName,
            PhoneNumber, Profile, TimeZone,
        },
        field::{FieldDefinition, FieldType, FieldValue, FieldValueError},
        filter::{AttributeCondition, Comparison, ConsentCondition, ContactFilter, TopicCondition},
        key::Key,
    },
    store::{
        self, contacts as repository,
        page::{Page, PageRequest},
    },
};

/// Changes to a contact, already parsed; attribute values are checked against their definitions
/// here, since only the store knows the definitions.
#[derive(Debug, Clone, Default)]
pub struct ContactChanges {
    pub external_id: Change<ExternalId>,
    pub email: Change<EmailAddress>,
    pub phone: Change<PhoneNumber>,
    pub first_name: Change<PersonName>,
    pub last_name: Change<PersonName>,
    pub locale: Change<Locale>,
    pub time_zone: Change<TimeZone>,
    pub country: Change<CountryCode>,
    /// Field key as sent, and the new value; JSON `null` clears the field.
    pub attributes: Vec<(String, Value)>,
}

/// How an upsert finds the contact it may update.
#[derive(Debug, Clone)]
pub enum UpsertKey {
    ExternalId(ExternalId),
    Email(EmailAddress),
}

#[derive(Debug, Clone)]
pub struct Upserted {
    pub contact: Contact,
    pub created: bool,
}

impl Services {
    pub async fn find_contact(&self, reference: &ContactRef) -> Result<Option<Contact>> {
        Ok(repository::find(self.db.connection(), self.db.keys()?, reference).await?)
    }

    pub async fn find_contacts(&self, ids: &[ContactId]) -> Result<Vec<Contact>> {
        Ok(repository::find_many(self.db.connection(), self.db.keys()?, ids).await?)
    }

    pub async fn list_contacts(
        &self,
        filter: &ContactFilterRequest,
        page: &PageRequest<ContactId>,
    ) -> Result<Page<Contact>> {
        let filter = self.resolve_filter(filter).await?;
        Ok(repository::page(self.db.connection(), self.db.keys()?, &filter, page).await?)
    }

    /// Creates the contact named by `key`, or applies `changes` to it if it exists. Sending the
    /// same upsert twice leaves the contact as the first one did, version included.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn upsert_contact(
        &self,
        ctx: &RequestContext,
        key: UpsertKey,
        mut changes: ContactChanges,
    ) -> Result<Upserted> {
        let reference = match &key {
            UpsertKey::ExternalId(external_id) => {
                changes.external_id = Change::Set(external_id.clone());
                ContactRef::ExternalId(external_id.clone())
            }
            UpsertKey::Email(email) => {
                changes.email = Change::Set(email.clone());
                ContactRef::Email(email.clone())
            }
        };
        // A concurrent upsert of the same new contact makes our insert hit the unique index;
        // the second attempt then finds the row and updates it.
        let mut attempts_left = 2;
        loop {
            attempts_left -= 1;
            match self.try_upsert(&reference, &changes).await {
                Err(Error::Conflict { field: Some(field), .. })
                    if attempts_left > 0
                        && matches!(
                            (&key, field.as_str()),
                            (UpsertKey::ExternalId(_), "externalId") | (UpsertKey::Email(_), "email")
                        ) => {}
                outcome => {
                    if let Ok(upserted) = &outcome {
                        tracing::info!(contact_id = %upserted.contact.id, created = upserted.created, "contact upserted");
                    }
                    return outcome;
                }
            }
        }
    }

    async fn try_upsert(&self, reference: &ContactRef, changes: &ContactChanges) -> Result<Upserted> {
        let tx = self.db.begin_write().await?;
        let definitions = store::fields::by_key(&tx).await?;
        let upserted = match repository::find(&tx, self.db.keys()?, reference).await? {
            Some(existing) => {
                let updated = apply(&existing, changes.clone(), &definitions, self.now())?;
                if updated != existing && !repository::update(&tx, self.db.keys()?, &existing, &updated).await? {
                    return Err(stale(&existing));
                }
                Upserted { contact: updated, created: false }
            }
            None => {
                let contact = create(changes.clone(), &definitions, self.now())?;
                repository::insert(&tx, self.db.keys()?, &contact).await?;
                Upserted { contact, created: true }
            }
        };
        tx.commit().await?;
        Ok(upserted)
    }

    /// Applies `changes` if the contact is still at `expected_version`; otherwise writes nothing.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %id))]
    pub async fn update_contact(
        &self,
        ctx: &RequestContext,
        id: ContactId,
        expected_version: i64,
        changes: ContactChanges,
    ) -> Result<Contact> {
        let tx = self.db.begin_write().await?;
        let existing = repository::find(&tx, self.db.keys()?, &ContactRef::Id(id))
            .await?
            .ok_or(Error::NotFound { what: "contact" })?;
        if existing.version != expected_version {
            return Err(stale(&existing));
        }
        let definitions = store::fields::by_key(&tx).await?;
        let updated = apply(&existing, changes, &definitions, self.now())?;
        if updated == existing {
            return Ok(existing);
        }
        if !repository::update(&tx, self.db.keys()?, &existing, &updated).await? {
            return Err(stale(&existing));
        }
        tx.commit().await?;
        Ok(updated)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %id))]
    pub async fn delete_contact(&self, ctx: &RequestContext, id: ContactId) -> Result<()> {
        let tx = self.db.begin_write().await?;
        if !repository::delete(&tx, id).await? {
            return Err(Error::NotFound { what: "contact" });
        }
        tx.commit().await?;
        Ok(())
    }

    async fn resolve_filter(&self, request: &ContactFilterRequest) -> Result<ContactFilter> {
        let conn = self.db.connection();
        let mut filter = ContactFilter::default();
        if !request.attributes.is_empty() {
            let definitions = store::fields::by_key(conn).await?;
            for (index, (raw_key, test)) in request.attributes.iter().enumerate() {
                let field_path = format!("filter.attributes[{index}]");
                let definition = Key::parse(raw_key).ok().and_then(|key| definitions.get(&key)).ok_or_else(|| {
                    Error::validation(format!("{field_path}.field"), format!("unknown field {raw_key:?}"))
                })?;
                filter.attributes.push(attribute_condition(definition, test, &field_path)?);
            }
        }
        if !request.consents.is_empty() {
            let purposes = store::consents::purposes(conn).await?;
            for (index, condition) in request.consents.iter().enumerate() {
                if !purposes.iter().any(|purpose| purpose.key == condition.purpose) {
                    return Err(Error::validation(
                        format!("filter.consents[{index}].purpose"),
                        "unknown consent purpose",
                    ));
                }
                filter.consents.push(condition.clone());
            }
        }
        if !request.topics.is_empty() {
            let topics = store::topics::all(conn).await?;
            for (index, condition) in request.topics.iter().enumerate() {
                if !topics.iter().any(|topic| topic.key == condition.topic) {
                    return Err(Error::validation(format!("filter.topics[{index}].topic"), "unknown topic"));
                }
                filter.topics.push(condition.clone());
            }
        }
        Ok(filter)
    }
}

/// A contact filter as the caller sent it; attribute values are typed once their field is known.
#[derive(Debug, Clone, Default)]
pub struct ContactFilterRequest {
    pub attributes: Vec<(String, AttributeTest)>,
    pub consents: Vec<ConsentCondition>,
    pub topics: Vec<TopicCondition>,
}

#[derive(Debug, Clone)]
pub enum AttributeTest {
    Compare(Comparison, Value),
    IsSet(bool),
}

fn attribute_condition(
    definition: &FieldDefinition,
    test: &AttributeTest,
    field_path: &str,
) -> Result<AttributeCondition> {
    let field = definition.key.clone();
    match test {
        AttributeTest::IsSet(set) => Ok(AttributeCondition::IsSet { field, set: *set }),
        AttributeTest::Compare(..) if definition.personal => Err(Error::validation(
            format!("{field_path}.comparison"),
            "the values of a personal field are stored encrypted and cannot be compared; only isSet filters apply",
        )),
        AttributeTest::Compare(comparison, raw) => {
            let ordered = matches!(definition.field_type, FieldType::Number | FieldType::Date | FieldType::DateTime);
            let ordering = !matches!(comparison, Comparison::Equal | Comparison::NotEqual);
            if ordering && !ordered {
                return Err(Error::validation(
                    format!("{field_path}.comparison"),
                    format!("a {} field can only be compared for equality", definition.field_type),
                ));
            }
            let value =
                definition.parse_value(raw).map_err(|error| Error::validation(format!("{field_path}.value"), error))?;
            Ok(AttributeCondition::Compare { field, comparison: *comparison, value: at_stored_precision(value) })
        }
    }
}

fn stale(current: &Contact) -> Error {
    Error::Conflict {
        field: Some("expectedVersion".to_owned()),
        reason: format!("the contact was changed meanwhile; it is now at version {}", current.version),
    }
}

fn create(
    changes: ContactChanges,
    definitions: &HashMap<Key, FieldDefinition>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Contact> {
    let blank = Contact {
        id: ContactId::generate(),
        external_id: None,
        email: None,
        profile: Profile::default(),
        attributes: Attributes::new(),
        created_at: now,
        updated_at: now,
        version: 0,
    };
    let contact = apply(&blank, changes, definitions, now)?;
    // The first missing field by key, so that the same request always names the same field.
    if let Some(missing) = definitions
        .values()
        .filter(|definition| definition.required && !contact.attributes.contains_key(&definition.key))
        .min_by(|a, b| a.key.cmp(&b.key))
    {
        return Err(Error::validation(format!("attributes.{}", missing.key), FieldValueError::Required));
    }
    Ok(Contact { version: 1, ..contact })
}

/// The contact as it would be after `changes`, or the first reason it cannot be.
/// Returns `current` unchanged (same version) when the changes change nothing.
fn apply(
    current: &Contact,
    changes: ContactChanges,
    definitions: &HashMap<Key, FieldDefinition>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<Contact> {
    let profile = &current.profile;
    let mut next = Contact {
        external_id: changes.external_id.apply(current.external_id.clone()),
        email: changes.email.apply(current.email.clone()),
        profile: Profile {
            phone: changes.phone.apply(profile.phone.clone()),
            first_name: changes.first_name.apply(profile.first_name.clone()),
            last_name: changes.last_name.apply(profile.last_name.clone()),
            locale: changes.locale.apply(profile.locale.clone()),
            time_zone: changes.time_zone.apply(profile.time_zone),
            country: changes.country.apply(profile.country.clone()),
        },
        ..current.clone()
    };
    for (raw_key, raw_value) in changes.attributes {
        let field = format!("attributes.{raw_key}");
        let definition = Key::parse(&raw_key)
            .ok()
            .and_then(|key| definitions.get(&key))
            .ok_or_else(|| Error::validation(&field, "no such custom field is defined"))?;
        if raw_value.is_null() {
            if definition.required {
                return Err(Error::validation(&field, FieldValueError::Required));
            }
            next.attributes.remove(&definition.key);
        } else {
            let value = definition.parse_value(&raw_value).map_err(|error| Error::validation(&field, error))?;
            next.attributes.insert(definition.key.clone(), at_stored_precision(value));
        }
    }
    if next.external_id.is_none() && next.email.is_none() {
        return Err(Error::validation("email", "a contact needs an email address or an external id"));
    }
    if next == *current {
        return Ok(next);
    }
    Ok(Contact { version: current.version + 1, updated_at: now, ..next })
}

/// The databases keep date-times to the microsecond (PostgreSQL truncates, SQLite would keep
/// more). Truncating here makes the contact returned equal the one read back on both, keeps a
/// repeated upsert from looking like a change, and lets filters compare like with like.
fn at_stored_precision(value: FieldValue) -> FieldValue {
    match value {
        FieldValue::DateTime(at) => {
            FieldValue::DateTime(chrono::DateTime::from_timestamp_micros(at.timestamp_micros()).unwrap_or(at))
        }
        other => other,
    }
}
