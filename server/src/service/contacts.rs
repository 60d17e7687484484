//! Creating, changing, finding and deleting contacts, with their custom field values checked
//! against the field definitions in the same transaction as the write.

use crate::domain::page::{Page, PageRequest};
use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sea_orm::DatabaseTransaction;
use serde_json::Value;
use tracing::instrument;

use super::{
    Error, RequestContext, Result, Services,
    consents::{self, ConsentDecision},
};
use crate::{
    audit::{self, Changes},
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
    store::{self, contacts as repository},
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
    /// Consent decisions captured with the change, recorded in the same transaction. A granted
    /// one lets an erased contact's address back in (see `admit_addresses`).
    pub consents: Vec<ConsentDecision>,
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

/// What was written beside a contact's change, in its transaction, and whether the change
/// stands: one that does not is rolled back with what was written beside it.
pub(super) struct Alongside<T> {
    pub value: T,
    pub commit: bool,
}

/// A write made beside a contact's change, in its transaction, given the contact as changed:
/// the event that carried the change (`identify`), which must commit with it or not at all.
pub(super) type AlongsideWrite<'f, T> =
    dyn for<'a> Fn(&'a DatabaseTransaction, &'a Contact) -> BoxFuture<'a, Result<Alongside<T>>> + Send + Sync + 'f;

/// A contact's change as `save` writes it.
struct Saved<'a> {
    before: Option<&'a Contact>,
    after: &'a Contact,
    decisions: Vec<ConsentDecision>,
    definitions: &'a HashMap<Key, FieldDefinition>,
}

fn nothing_alongside<'a>(_: &'a DatabaseTransaction, _: &'a Contact) -> BoxFuture<'a, Result<Alongside<()>>> {
    Box::pin(std::future::ready(Ok(Alongside { value: (), commit: true })))
}

impl Services {
    pub async fn find_contact(&self, reference: &ContactRef) -> Result<Option<Contact>> {
        Ok(repository::find(self.db.connection(), self.db.keys()?, reference).await?)
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
    pub async fn upsert_contact(
        &self,
        ctx: &RequestContext,
        key: UpsertKey,
        changes: ContactChanges,
    ) -> Result<Upserted> {
        Ok(self.upsert_contact_with(ctx, key, changes, &nothing_alongside).await?.0)
    }

    /// `upsert_contact`, with `alongside` written in the change's transaction.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub(super) async fn upsert_contact_with<T>(
        &self,
        ctx: &RequestContext,
        key: UpsertKey,
        mut changes: ContactChanges,
        alongside: &AlongsideWrite<'_, T>,
    ) -> Result<(Upserted, T)> {
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
        // A concurrent upsert of the same new contact makes our insert hit the unique index, and
        // a concurrent change of the found contact makes our versioned update miss: either way
        // the next attempt reads the row afresh.
        let mut attempts_left = 3;
        loop {
            attempts_left -= 1;
            match self.try_upsert(ctx, &reference, &changes, alongside).await {
                Err(Error::Conflict { field: Some(field), .. })
                    if attempts_left > 0
                        && matches!(
                            (&key, field.as_str()),
                            (UpsertKey::ExternalId(_), "externalId")
                                | (UpsertKey::Email(_), "email")
                                | (_, "expectedVersion")
                        ) => {}
                outcome => {
                    if let Ok((upserted, _)) = &outcome {
                        tracing::info!(contact_id = %upserted.contact.id, created = upserted.created, "contact upserted");
                    }
                    return outcome;
                }
            }
        }
    }

    async fn try_upsert<T>(
        &self,
        ctx: &RequestContext,
        reference: &ContactRef,
        changes: &ContactChanges,
        alongside: &AlongsideWrite<'_, T>,
    ) -> Result<(Upserted, T)> {
        let tx = self.db.begin_write().await?;
        let definitions = store::fields::by_key(&tx).await?;
        let now = self.now();
        let existing = repository::find(&tx, self.db.keys()?, reference).await?;
        let upserted = match &existing {
            Some(existing) => {
                Upserted { contact: apply(existing, changes.clone(), &definitions, now)?, created: false }
            }
            None => Upserted { contact: create(changes.clone(), &definitions, now)?, created: true },
        };
        let decisions = changes.consents.clone();
        let change =
            Saved { before: existing.as_ref(), after: &upserted.contact, decisions, definitions: &definitions };
        let beside = self.save(&tx, ctx, change, now, alongside).await?;
        if beside.commit {
            tx.commit().await?;
        }
        Ok((upserted, beside.value))
    }

    /// Applies `changes` if the contact is still at `expected_version`; otherwise writes nothing.
    pub async fn update_contact(
        &self,
        ctx: &RequestContext,
        id: ContactId,
        expected_version: i64,
        changes: ContactChanges,
    ) -> Result<Contact> {
        Ok(self.update_contact_with(ctx, id, expected_version, changes, &nothing_alongside).await?.0)
    }

    /// `update_contact`, with `alongside` written in the change's transaction (even when the
    /// changes change nothing).
    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %id))]
    pub(super) async fn update_contact_with<T>(
        &self,
        ctx: &RequestContext,
        id: ContactId,
        expected_version: i64,
        mut changes: ContactChanges,
        alongside: &AlongsideWrite<'_, T>,
    ) -> Result<(Contact, T)> {
        let tx = self.db.begin_write().await?;
        let existing = repository::find(&tx, self.db.keys()?, &ContactRef::Id(id))
            .await?
            .ok_or(Error::NotFound { what: "contact" })?;
        if existing.version != expected_version {
            return Err(stale(&existing));
        }
        let definitions = store::fields::by_key(&tx).await?;
        let now = self.now();
        let decisions = std::mem::take(&mut changes.consents);
        let updated = apply(&existing, changes, &definitions, now)?;
        let change = Saved { before: Some(&existing), after: &updated, decisions, definitions: &definitions };
        let beside = self.save(&tx, ctx, change, now, alongside).await?;
        if beside.commit {
            tx.commit().await?;
        }
        Ok((updated, beside.value))
    }

    /// Writes a contact's new state (`before` is none for a new contact; nothing if it did not
    /// change) with its audit entry, lets in the erased addresses it takes on if it may, records
    /// the consent decisions captured with it, and writes `alongside`, all in the caller's
    /// transaction. `alongside` is written after the contact's row and before its audit entry:
    /// the event writer takes the audit chain's head last too, and PostgreSQL transactions that
    /// take the same locks in different orders deadlock. What is written after it is left out
    /// when it says the change does not stand.
    async fn save<T>(
        &self,
        tx: &DatabaseTransaction,
        ctx: &RequestContext,
        change: Saved<'_>,
        now: DateTime<Utc>,
        alongside: &AlongsideWrite<'_, T>,
    ) -> Result<Alongside<T>> {
        let Saved { before, after, decisions, definitions } = change;
        let decisions = if decisions.is_empty() {
            Vec::new()
        } else {
            let purposes = store::consents::purposes(tx).await?;
            decisions
                .into_iter()
                .enumerate()
                .map(|(index, decision)| {
                    decision
                        .settle(after.id, now, &purposes)
                        .map_err(|error| error.within(&format!("consents[{index}]")))
                })
                .collect::<Result<Vec<_>>>()?
        };
        let action = match before {
            Some(existing) if existing == after => None,
            Some(existing) => {
                if !repository::update(tx, self.db.keys()?, existing, after).await? {
                    return Err(stale(existing));
                }
                Some("contact.updated")
            }
            None => {
                repository::insert(tx, self.db.keys()?, after).await?;
                Some("contact.created")
            }
        };
        let beside = alongside(tx, after).await?;
        if !beside.commit {
            return Ok(beside);
        }
        if let Some(action) = action {
            let changes = contact_changes(before, Some(after), definitions);
            audit::append(tx, ctx, now, contact_entry(action, after.id, changes)).await?;
            self.admit_addresses(tx, ctx, before, after, &decisions, now).await?;
        }
        for decision in &decisions {
            consents::append_decision(tx, ctx, decision, now).await?;
        }
        Ok(beside)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %id))]
    pub async fn delete_contact(&self, ctx: &RequestContext, id: ContactId) -> Result<()> {
        let tx = self.db.begin_write().await?;
        // Read first, so the audit entry can say which fields the contact held.
        let existing = repository::find(&tx, self.db.keys()?, &ContactRef::Id(id))
            .await?
            .ok_or(Error::NotFound { what: "contact" })?;
        if !repository::delete(&tx, id).await? {
            return Err(Error::NotFound { what: "contact" });
        }
        let definitions = store::fields::by_key(&tx).await?;
        let changes = contact_changes(Some(&existing), None, &definitions);
        audit::append(&tx, ctx, self.now(), contact_entry("contact.deleted", id, changes)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn resolve_filter(&self, request: &ContactFilterRequest) -> Result<ContactFilter> {
        let conn = self.db.connection();
        let mut filter = ContactFilter { import: request.import, ..ContactFilter::default() };
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
    pub import: Option<uuid::Uuid>,
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

fn contact_entry(action: &'static str, id: ContactId, changes: Changes) -> audit::Entry {
    audit::Entry::new(action, "contact", id.to_string(), changes)
}

/// What changed between two states of a contact (`None`: it did not exist), for the audit log.
/// Email, phone, names and personal custom fields are redacted; a field whose definition is
/// gone counts as personal, to err on the side of saying less.
pub(super) fn contact_changes(
    before: Option<&Contact>,
    after: Option<&Contact>,
    definitions: &HashMap<Key, FieldDefinition>,
) -> Changes {
    fn text<T>(
        contact: Option<&Contact>,
        get: impl Fn(&Contact) -> Option<&T>,
        as_str: impl Fn(&T) -> &str,
    ) -> Option<Value> {
        contact.and_then(get).map(|value| Value::from(as_str(value)))
    }
    let mut changes = Changes::new();
    changes
        .field(
            "externalId",
            text(before, |c| c.external_id.as_ref(), ExternalId::as_str),
            text(after, |c| c.external_id.as_ref(), ExternalId::as_str),
        )
        .personal(
            "email",
            text(before, |c| c.email.as_ref(), EmailAddress::as_str),
            text(after, |c| c.email.as_ref(), EmailAddress::as_str),
        )
        .personal(
            "phone",
            text(before, |c| c.profile.phone.as_ref(), PhoneNumber::as_str),
            text(after, |c| c.profile.phone.as_ref(), PhoneNumber::as_str),
        )
        .personal(
            "firstName",
            text(before, |c| c.profile.first_name.as_ref(), PersonName::as_str),
            text(after, |c| c.profile.first_name.as_ref(), PersonName::as_str),
        )
        .personal(
            "lastName",
            text(before, |c| c.profile.last_name.as_ref(), PersonName::as_str),
            text(after, |c| c.profile.last_name.as_ref(), PersonName::as_str),
        )
        .field(
            "locale",
            text(before, |c| c.profile.locale.as_ref(), Locale::as_str),
            text(after, |c| c.profile.locale.as_ref(), Locale::as_str),
        )
        .field(
            "timeZone",
            text(before, |c| c.profile.time_zone.as_ref(), |zone: &TimeZone| zone.as_str()),
            text(after, |c| c.profile.time_zone.as_ref(), |zone: &TimeZone| zone.as_str()),
        )
        .field(
            "country",
            text(before, |c| c.profile.country.as_ref(), CountryCode::as_str),
            text(after, |c| c.profile.country.as_ref(), CountryCode::as_str),
        );
    let empty = Attributes::new();
    let attributes_before = before.map_or(&empty, |contact| &contact.attributes);
    let attributes_after = after.map_or(&empty, |contact| &contact.attributes);
    let keys: std::collections::BTreeSet<&Key> = attributes_before.keys().chain(attributes_after.keys()).collect();
    for key in keys {
        let field = format!("attributes.{key}");
        let old = attributes_before.get(key).map(FieldValue::to_json);
        let new = attributes_after.get(key).map(FieldValue::to_json);
        if definitions.get(key).is_some_and(|definition| !definition.personal) {
            changes.field(field, old, new);
        } else {
            changes.personal(field, old, new);
        }
    }
    changes
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
        FieldValue::DateTime(at) => FieldValue::DateTime(crate::domain::at_storage_precision(at)),
        other => other,
    }
}
