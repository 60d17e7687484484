//! The contact repository: the one place that reads and writes contacts and their custom field
//! values. Writers pass the version they read; an update that finds another version writes nothing.
//!
//! Personal data is sealed here, on its way in and out: email, phone, names and the values of
//! personal custom fields are stored as ciphertext under the contact's data key (`keys`), bound
//! to the contact and the column; email and phone are found through their blind index.
//! Erasing a contact keeps those blind indexes, and nothing else, on the erased list.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use chrono::{DateTime, NaiveDate, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, DbBackend, EntityTrait, ExprTrait, PaginatorTrait, QueryFilter,
    QueryOrder, QuerySelect,
    sea_query::{Expr, OnConflict, Query, SimpleExpr},
};
use serde_json::{Map, Value as Json, json};
use uuid::Uuid;

use super::{
    Conflict, InsertRow, StoreError, StoreResult,
    entity::{
        consent, consent_change, contact as entity, contact_key, erased_address, field_definition, import_contact,
        topic, topic_subscription,
    },
    insert_prepared_rows, insert_rows, is_in_texts, keys, render_row,
};
use crate::crypto::{DataKey, KeyRing};
use crate::domain::{
    contact::{
        Attributes, Contact, ContactId, ContactRef, CountryCode, EmailAddress, ExternalId, Locale, PersonName,
        PhoneNumber, Profile, TimeZone,
    },
    field::{FieldType, FieldValue},
    filter::{AttributeCondition, Comparison, ContactFilter},
    key::Key,
    page::{Direction, Page, PageRequest},
    privacy::{AddressKind, ErasedAddress, Erasure},
    topic::SubscriptionStatus,
};

/// What the blind index is computed over, so that an email and a phone number never share one.
const EMAIL_INDEX: &str = "email";
const PHONE_INDEX: &str = "phone";

pub async fn find(conn: &impl ConnectionTrait, keys: &KeyRing, reference: &ContactRef) -> StoreResult<Option<Contact>> {
    let query = entity::Entity::find();
    let query = match reference {
        ContactRef::Id(id) => query.filter(entity::Column::Id.eq(id.as_uuid())),
        ContactRef::ExternalId(external_id) => query.filter(entity::Column::ExternalId.eq(external_id.as_str())),
        ContactRef::Email(email) => query.filter(entity::Column::EmailIndex.eq(email_index(keys, email))),
    };
    let Some(model) = query.one(conn).await? else {
        return Ok(None);
    };
    let mut data_keys = keys::data_keys(conn, keys, [model.id]).await?;
    let key = data_keys.remove(&model.id).ok_or(StoreError::Corrupt { table: "contact_key", column: "contact_id" })?;
    to_domain(model, &key).map(Some)
}

/// Contacts with this phone number (phone numbers need not be unique), through the blind index.
pub async fn find_by_phone(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    phone: &PhoneNumber,
) -> StoreResult<Vec<ContactId>> {
    let ids: Vec<Uuid> = entity::Entity::find()
        .select_only()
        .column(entity::Column::Id)
        .filter(entity::Column::PhoneIndex.eq(phone_index(keys, phone)))
        .order_by_asc(entity::Column::Id)
        .into_tuple()
        .all(conn)
        .await?;
    Ok(ids.into_iter().map(ContactId::from_uuid).collect())
}

/// The blind index of an email address: how contacts, erased addresses and the suppression list
/// find an address without storing it.
pub fn email_index(keys: &KeyRing, email: &EmailAddress) -> String {
    keys.blind_index.index(EMAIL_INDEX, email.as_str())
}

fn phone_index(keys: &KeyRing, phone: &PhoneNumber) -> String {
    keys.blind_index.index(PHONE_INDEX, phone.as_str())
}

/// Resolves references to ids in three queries at most, whatever their number.
pub async fn resolve(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    references: &[ContactRef],
) -> StoreResult<HashMap<ContactRef, ContactId>> {
    let mut ids = Vec::new();
    let mut external_ids = Vec::new();
    // Blind index → the address asked for: the stored row can only give back the index.
    let mut emails = HashMap::new();
    for reference in references {
        match reference {
            ContactRef::Id(id) => ids.push(id.as_uuid()),
            ContactRef::ExternalId(external_id) => external_ids.push(external_id.as_str()),
            ContactRef::Email(email) => {
                emails.insert(email_index(keys, email), email.clone());
            }
        }
    }
    let mut resolved = HashMap::new();
    for (column, values) in [
        (entity::Column::Id, ids.into_iter().map(sea_orm::Value::from).collect::<Vec<_>>()),
        (entity::Column::ExternalId, external_ids.into_iter().map(sea_orm::Value::from).collect()),
        (entity::Column::EmailIndex, emails.keys().cloned().map(sea_orm::Value::from).collect()),
    ] {
        if values.is_empty() {
            continue;
        }
        let rows: Vec<(Uuid, Option<String>, Option<String>)> = entity::Entity::find()
            .select_only()
            .columns([entity::Column::Id, entity::Column::ExternalId, entity::Column::EmailIndex])
            .filter(column.is_in(values))
            .into_tuple()
            .all(conn)
            .await?;
        for (id, external_id, email) in rows {
            let id = ContactId::from_uuid(id);
            let reference = match column {
                entity::Column::ExternalId => ContactRef::ExternalId(
                    parse(external_id.as_deref(), "external_id", ExternalId::parse)?.ok_or(corrupt("external_id"))?,
                ),
                entity::Column::EmailIndex => ContactRef::Email(
                    email.and_then(|index| emails.get(&index).cloned()).ok_or(corrupt("email_index"))?,
                ),
                _ => ContactRef::Id(id),
            };
            resolved.insert(reference, id);
        }
    }
    Ok(resolved)
}

pub async fn insert(conn: &impl ConnectionTrait, keys: &KeyRing, contact: &Contact) -> StoreResult<()> {
    // The key is generated before the row so that the row can be sealed.
    let key = DataKey::generate();
    let fields = defined_fields(conn).await?;
    entity::Entity::insert(to_active(contact, keys, &key, None, &fields)).exec_without_returning(conn).await?;
    keys::store(conn, keys, contact.id.as_uuid(), &key).await
}

/// Writes `updated` over the stored contact if its version is still `updated.version - 1`.
/// Returns false (and writes nothing) when the stored version differs or the contact is gone.
pub async fn update(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    previous: &Contact,
    updated: &Contact,
) -> StoreResult<bool> {
    let id = updated.id.as_uuid();
    let key = keys::data_keys(conn, keys, [id])
        .await?
        .remove(&id)
        .ok_or(StoreError::Corrupt { table: "contact_key", column: "contact_id" })?;
    let fields = defined_fields(conn).await?;
    let result = entity::Entity::update_many()
        .set(to_active(updated, keys, &key, None, &fields))
        .filter(entity::Column::Id.eq(updated.id.as_uuid()))
        .filter(entity::Column::Version.eq(previous.version))
        .exec(conn)
        .await?;
    Ok(result.rows_affected > 0)
}

pub async fn delete(conn: &impl ConnectionTrait, id: ContactId) -> StoreResult<bool> {
    Ok(entity::Entity::delete_by_id(id.as_uuid()).exec(conn).await?.rows_affected > 0)
}

/// Erases the contact: deletes its rows in every table and its data key (so that copies of its
/// ciphertext anywhere stay unreadable), and puts the blind indexes of its email and phone on
/// the erased list. Counts what was deleted; none if there was no such contact.
pub async fn erase(conn: &impl ConnectionTrait, id: ContactId, at: DateTime<Utc>) -> StoreResult<Option<Erasure>> {
    let uuid = id.as_uuid();
    // Locked (on PostgreSQL), so that no event or consent joins the contact between the counts
    // below and the deletion.
    let Some(model) = entity::Entity::find_by_id(uuid).lock_exclusive().one(conn).await? else {
        return Ok(None);
    };
    let custom_fields = model.attributes.as_object().map_or(0, Map::len) as u64;
    let profile_fields = [
        &model.external_id,
        &model.email,
        &model.phone,
        &model.first_name,
        &model.last_name,
        &model.locale,
        &model.time_zone,
        &model.country,
    ]
    .into_iter()
    .filter(|value| value.is_some())
    .count() as u64;
    let mut suppressed = Vec::new();
    for (kind, index) in [(AddressKind::Email, &model.email_index), (AddressKind::Phone, &model.phone_index)] {
        let Some(index) = index else { continue };
        erased_address::Entity::insert(erased_address::ActiveModel {
            blind_index: Set(index.clone()),
            kind: Set(kind.as_str().to_owned()),
            erased_at: Set(at),
        })
        // A phone number shared with a contact erased before: the later erasure counts.
        .on_conflict(
            OnConflict::column(erased_address::Column::BlindIndex)
                .update_column(erased_address::Column::ErasedAt)
                .to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
        suppressed.push(kind);
    }
    // Children first and one by one, rather than by the foreign keys' cascade, to count them.
    consent::Entity::delete_many().filter(consent::Column::ContactId.eq(uuid)).exec(conn).await?;
    let erasure = Erasure {
        profile_fields,
        custom_fields,
        consent_decisions: consent_change::Entity::delete_many()
            .filter(consent_change::Column::ContactId.eq(uuid))
            .exec(conn)
            .await?
            .rows_affected,
        topic_subscriptions: topic_subscription::Entity::delete_many()
            .filter(topic_subscription::Column::ContactId.eq(uuid))
            .exec(conn)
            .await?
            .rows_affected,
        // Counted here, deleted with the contact below.
        events: super::events::count_of(conn, id).await?,
        data_key_destroyed: keys::destroy(conn, uuid).await?,
        suppressed,
    };
    entity::Entity::delete_by_id(uuid).exec(conn).await?;
    Ok(Some(erasure))
}

/// Which of these addresses belong to erased contacts.
pub async fn erased_addresses(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    email: Option<&EmailAddress>,
    phone: Option<&PhoneNumber>,
) -> StoreResult<Vec<ErasedAddress>> {
    let indexes = address_indexes(keys, email, phone);
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let mut erased: Vec<ErasedAddress> = erased_address::Entity::find()
        .filter(erased_address::Column::BlindIndex.is_in(indexes))
        .all(conn)
        .await?
        .into_iter()
        .map(|row| {
            let kind = row.kind.parse().map_err(|_| StoreError::Corrupt { table: "erased_address", column: "kind" })?;
            Ok(ErasedAddress { kind, erased_at: row.erased_at })
        })
        .collect::<StoreResult<_>>()?;
    erased.sort_by_key(|address| address.kind);
    Ok(erased)
}

/// Takes these addresses off the erased list (a new consent was captured for them).
pub async fn readmit(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    email: Option<&EmailAddress>,
    phone: Option<&PhoneNumber>,
) -> StoreResult<()> {
    let indexes = address_indexes(keys, email, phone);
    if !indexes.is_empty() {
        erased_address::Entity::delete_many()
            .filter(erased_address::Column::BlindIndex.is_in(indexes))
            .exec(conn)
            .await?;
    }
    Ok(())
}

fn address_indexes(keys: &KeyRing, email: Option<&EmailAddress>, phone: Option<&PhoneNumber>) -> Vec<String> {
    let email = email.map(|email| email_index(keys, email));
    let phone = phone.map(|phone| phone_index(keys, phone));
    email.into_iter().chain(phone).collect()
}

/// The contacts with these ids that exist, in no particular order, in three statements.
pub async fn by_ids(conn: &impl ConnectionTrait, keys: &KeyRing, ids: &[ContactId]) -> StoreResult<Vec<Contact>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let models =
        entity::Entity::find().filter(entity::Column::Id.is_in(ids.iter().map(|id| id.as_uuid()))).all(conn).await?;
    opened(conn, keys, models).await
}

/// One page of contacts in id (= creation) order, restricted by `filter`.
pub async fn page(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    filter: &ContactFilter,
    request: &PageRequest<ContactId>,
) -> StoreResult<Page<Contact>> {
    let mut query = entity::Entity::find().filter(condition(conn.get_database_backend(), filter));
    if let Some(after) = request.after {
        query = query.filter(entity::Column::Id.gt(after.as_uuid()));
    }
    if let Some(before) = request.before {
        query = query.filter(entity::Column::Id.lt(before.as_uuid()));
    }
    query = match request.direction {
        Direction::Forward => query.order_by_asc(entity::Column::Id),
        Direction::Backward => query.order_by_desc(entity::Column::Id),
    };
    let models = query.limit(request.limit + 1).all(conn).await?;
    let page = Page::from_rows(models, request.limit, request.direction);
    let ids: Vec<Uuid> = page.items.iter().map(|model| model.id).collect();
    let mut contacts: HashMap<Uuid, Contact> =
        opened(conn, keys, page.items).await?.into_iter().map(|contact| (contact.id.as_uuid(), contact)).collect();
    Ok(Page { items: ids.iter().filter_map(|id| contacts.remove(id)).collect(), has_more: page.has_more })
}

fn condition(backend: DbBackend, filter: &ContactFilter) -> Condition {
    let mut all = Condition::all();
    for attribute_condition in &filter.attributes {
        all = all.add(match attribute_condition {
            AttributeCondition::IsSet { field, set } => {
                let holds = holds_value(backend, field);
                if *set { holds } else { holds.not() }
            }
            AttributeCondition::Compare { field, comparison, value } => {
                let stored = stored_value(backend, field, value.field_type());
                let operand = operand(backend, value);
                match comparison {
                    Comparison::Equal => stored.eq(operand),
                    // "Not equal" includes contacts without a value: it is the complement of "equal".
                    Comparison::NotEqual => {
                        Condition::any().add(stored.clone().ne(operand)).add(stored.is_null()).into()
                    }
                    Comparison::Less => stored.lt(operand),
                    Comparison::LessOrEqual => stored.lte(operand),
                    Comparison::Greater => stored.gt(operand),
                    Comparison::GreaterOrEqual => stored.gte(operand),
                }
            }
        });
    }
    for consent_condition in &filter.consents {
        all = all.add(
            entity::Column::Id.in_subquery(
                Query::select()
                    .column(consent::Column::ContactId)
                    .from(consent::Entity)
                    .and_where(consent::Column::Purpose.eq(consent_condition.purpose.as_str()))
                    .and_where(consent::Column::Channel.eq(consent_condition.channel.as_str()))
                    .and_where(consent::Column::Status.eq(consent_condition.status.as_str()))
                    .to_owned(),
            ),
        );
    }
    for topic_condition in &filter.topics {
        let subscribers = Query::select()
            .column(topic_subscription::Column::ContactId)
            .from(topic_subscription::Entity)
            .and_where(topic_subscription::Column::Status.eq(SubscriptionStatus::Subscribed.as_str()))
            .and_where(
                topic_subscription::Column::TopicId.in_subquery(
                    Query::select()
                        .column(topic::Column::Id)
                        .from(topic::Entity)
                        .and_where(topic::Column::Key.eq(topic_condition.topic.as_str()))
                        .to_owned(),
                ),
            )
            .to_owned();
        all = all.add(if topic_condition.subscribed {
            entity::Column::Id.in_subquery(subscribers)
        } else {
            entity::Column::Id.not_in_subquery(subscribers)
        });
    }
    if let Some(import_id) = filter.import {
        // The contacts the import created name it in their row; those it found are linked.
        all = all.add(
            Condition::any().add(entity::Column::ImportId.eq(import_id)).add(
                entity::Column::Id.in_subquery(
                    Query::select()
                        .column(import_contact::Column::ContactId)
                        .from(import_contact::Entity)
                        .and_where(import_contact::Column::ImportId.eq(import_id))
                        .to_owned(),
                ),
            ),
        );
    }
    all
}

/// How many contacts hold one of `values` in clear in the enum field `field`.
pub async fn count_enum_holders(conn: &impl ConnectionTrait, field: &Key, values: &[String]) -> StoreResult<u64> {
    let stored = stored_value(conn.get_database_backend(), field, FieldType::Enum);
    Ok(entity::Entity::find().filter(stored.is_in(values.iter().map(String::as_str))).count(conn).await?)
}

/// Removes every contact's value of `field`, sealed or not.
pub async fn remove_values_of(conn: &impl ConnectionTrait, field: &Key) -> StoreResult<u64> {
    let backend = conn.get_database_backend();
    let removed = match backend {
        DbBackend::Sqlite => Expr::cust_with_values("json_remove(contact.attributes, ?)", [json_path(field)]),
        _ => Expr::cust_with_values("contact.attributes - $1", [field.as_str()]),
    };
    let result = entity::Entity::update_many()
        .col_expr(entity::Column::Attributes, removed)
        .filter(holds_value(backend, field))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

/// Whether a contact holds a value of `field`, of any type, sealed or not.
fn holds_value(backend: DbBackend, field: &Key) -> SimpleExpr {
    match backend {
        DbBackend::Sqlite => Expr::cust_with_values("json_type(contact.attributes, ?) IS NOT NULL", [json_path(field)]),
        _ => Expr::cust_with_values("jsonb_exists(contact.attributes, $1)", [field.as_str()]),
    }
}

/// A contact's value of `field` as stored in clear with the type of `value` (none for a sealed
/// one or another type), comparable with `operand(value)`. PostgreSQL reads a date-time as a
/// timestamp, SQLite compares its text, which sorts as its time does.
fn stored_value(backend: DbBackend, field: &Key, field_type: FieldType) -> SimpleExpr {
    let tag = field_type.as_str();
    match backend {
        DbBackend::Sqlite => {
            Expr::cust_with_values("json_extract(contact.attributes, ?)", [format!("{}.{tag}", json_path(field))])
        }
        _ => {
            let cast = match field_type {
                FieldType::Number => "::double precision",
                FieldType::Boolean => "::boolean",
                FieldType::DateTime => "::timestamp with time zone",
                FieldType::String | FieldType::Enum | FieldType::Date => "",
            };
            Expr::cust_with_values(format!("(contact.attributes -> $1 ->> $2){cast}"), [field.as_str(), tag])
        }
    }
}

/// The value a comparison binds, as `stored_value` reads stored ones.
fn operand(backend: DbBackend, value: &FieldValue) -> sea_orm::Value {
    match value {
        FieldValue::DateTime(at) if backend == DbBackend::Sqlite => at.format(DATETIME_FORMAT).to_string().into(),
        FieldValue::String(text) | FieldValue::Enum(text) => text.clone().into(),
        FieldValue::Date(date) => date.format(DATE_FORMAT).to_string().into(),
        FieldValue::Number(number) => (*number).into(),
        FieldValue::Boolean(flag) => (*flag).into(),
        FieldValue::DateTime(at) => (*at).into(),
    }
}

/// SQLite's path to a field in the document; keys are lower-case letters, digits and `_`.
fn json_path(field: &Key) -> String {
    format!("$.{}", field.as_str())
}

const DATE_FORMAT: &str = "%Y-%m-%d";
/// Fixed width, in UTC: the text sorts as the time does.
const DATETIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

/// The defined custom fields, each with whether its values are personal data, read in the
/// writer's transaction and held there (on PostgreSQL) so that a field cannot be deleted between
/// this read and the write: no value row refers to its definition any more to prevent it.
async fn defined_fields(conn: &impl ConnectionTrait) -> StoreResult<FieldSecrecy> {
    let fields: Vec<(String, bool)> = field_definition::Entity::find()
        .select_only()
        .column(field_definition::Column::Key)
        .column(field_definition::Column::Personal)
        .lock_shared()
        .into_tuple()
        .all(conn)
        .await?;
    Ok(fields.into_iter().collect())
}

/// The document of a contact's custom values, those of personal fields sealed under `key`. A
/// value of a field that is not (or no longer) defined is left out.
fn attributes_document(key: &DataKey, contact_id: ContactId, attributes: &Attributes, fields: &FieldSecrecy) -> Json {
    let contact_id = contact_id.as_uuid().to_string();
    let document: Map<String, Json> = attributes
        .iter()
        .filter_map(|(field, value)| Some((field, value, *fields.get(field.as_str())?)))
        .map(|(field, value, personal)| {
            let type_name = value.field_type().as_str();
            let stored = if personal {
                // Every type is sealed as text: a number or a date in clear would still say
                // something about the person.
                let text = match value.to_json() {
                    Json::String(text) => text,
                    other => other.to_string(),
                };
                json!({ "sealed": key.seal(&text, &contact_id, &attribute_column(field)), "type": type_name })
            } else {
                let clear = match value {
                    FieldValue::DateTime(at) => Json::from(at.format(DATETIME_FORMAT).to_string()),
                    other => other.to_json(),
                };
                json!({ type_name: clear })
            };
            (field.as_str().to_owned(), stored)
        })
        .collect();
    Json::Object(document)
}

/// What a sealed attribute value is bound to besides its contact.
fn attribute_column(field: &Key) -> String {
    format!("attribute:{}", field.as_str())
}

/// Rows per multi-row statement: on PostgreSQL a contact row binds 16 values, 8,000 a statement,
/// well under its limit of 65,535 bound parameters (on SQLite a statement binds one document).
const ROWS_PER_STATEMENT: usize = 500;

/// The contacts holding any of these email addresses (given with their blind indexes, as
/// `email_index` computes them) or external ids, in three statements whatever their number,
/// locked until the caller's transaction ends (on PostgreSQL; a SQLite writer holds the whole
/// database), so that a batch can decide on them and write them without another writer moving
/// their versions on.
pub async fn find_for_update(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    emails: &[(&EmailAddress, &str)],
    external_ids: &[&ExternalId],
) -> StoreResult<Vec<Contact>> {
    if emails.is_empty() && external_ids.is_empty() {
        return Ok(Vec::new());
    }
    let backend = conn.get_database_backend();
    let mut any = Condition::any();
    if !emails.is_empty() {
        any = any.add(is_in_texts(backend, entity::Column::EmailIndex, emails.iter().map(|(_, index)| *index))?);
    }
    if !external_ids.is_empty() {
        any = any.add(is_in_texts(backend, entity::Column::ExternalId, external_ids.iter().map(|id| id.as_str()))?);
    }
    let models = entity::Entity::find().filter(any).lock_exclusive().all(conn).await?;
    opened(conn, keys, models).await
}

/// Which of these email addresses (with their blind indexes) and phone numbers belong to erased
/// contacts, in one statement.
pub async fn erased_among(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    emails: &[(&EmailAddress, &str)],
    phones: &[&PhoneNumber],
) -> StoreResult<(HashSet<EmailAddress>, HashSet<PhoneNumber>)> {
    let mut by_index: HashMap<String, Result<&EmailAddress, &PhoneNumber>> = HashMap::new();
    for (email, index) in emails {
        by_index.insert((*index).to_owned(), Ok(*email));
    }
    for phone in phones {
        by_index.insert(phone_index(keys, phone), Err(*phone));
    }
    let mut erased = (HashSet::new(), HashSet::new());
    if by_index.is_empty() {
        return Ok(erased);
    }
    let indexes: Vec<String> = erased_address::Entity::find()
        .select_only()
        .column(erased_address::Column::BlindIndex)
        .filter(is_in_texts(
            conn.get_database_backend(),
            erased_address::Column::BlindIndex,
            by_index.keys().map(String::as_str),
        )?)
        .into_tuple()
        .all(conn)
        .await?;
    for index in indexes {
        match by_index.get(&index) {
            Some(Ok(email)) => {
                erased.0.insert((*email).clone());
            }
            Some(Err(phone)) => {
                erased.1.insert((*phone).clone());
            }
            None => {}
        }
    }
    Ok(erased)
}

/// The custom fields by key, each with whether its values are personal data: what a contact's
/// row is built with.
pub type FieldSecrecy = HashMap<String, bool>;

/// A new contact's row, sealed under a data key of its own, and that key's row: built before
/// the transaction that inserts them, so that the encryption and the building can run beside
/// the database's work instead of inside it (an import builds them on its parsing thread while
/// the batch before is written). On SQLite both rows are rendered for the insert as well.
pub struct PreparedContact {
    contact: Contact,
    row: InsertRow<entity::ActiveModel>,
    key_row: InsertRow<contact_key::ActiveModel>,
    import_id: Option<Uuid>,
    /// The fields the row was built with: if they have changed by the time it is written, the
    /// row is built again.
    fields: Arc<FieldSecrecy>,
}

impl PreparedContact {
    /// Builds the rows of `contact`, created by the import `import_id` if one does, for
    /// `backend`; `email_index` is its email address's blind index if it is known.
    pub fn new(
        backend: DbBackend,
        keys: &KeyRing,
        contact: Contact,
        email_index: Option<String>,
        fields: &Arc<FieldSecrecy>,
        import_id: Option<Uuid>,
    ) -> StoreResult<Self> {
        let (row, key_row) = new_rows(keys, &contact, email_index, fields, import_id);
        let (row, key_row) = match backend {
            DbBackend::Sqlite => (InsertRow::Rendered(render_row(row)?), InsertRow::Rendered(render_row(key_row)?)),
            _ => (InsertRow::Model(row), InsertRow::Model(key_row)),
        };
        Ok(Self { contact, row, key_row, import_id, fields: Arc::clone(fields) })
    }

    pub fn contact(&self) -> &Contact {
        &self.contact
    }

    /// Whether the row holds `contact`, whatever the times of both: a contact prepared ahead
    /// keeps the time it was prepared at as its creation time.
    pub fn holds(&self, contact: &Contact) -> bool {
        let Contact { id, external_id, email, profile, attributes, created_at: _, updated_at: _, version } =
            &self.contact;
        *id == contact.id
            && *external_id == contact.external_id
            && *email == contact.email
            && *profile == contact.profile
            && *attributes == contact.attributes
            && *version == contact.version
    }
}

/// A new contact's row, sealed under a data key generated for it, and that key's row.
fn new_rows(
    keys: &KeyRing,
    contact: &Contact,
    email_index: Option<String>,
    fields: &FieldSecrecy,
    import_id: Option<Uuid>,
) -> (entity::ActiveModel, contact_key::ActiveModel) {
    let key = DataKey::generate();
    let mut row = to_active(contact, keys, &key, email_index, fields);
    row.import_id = Set(import_id);
    let contact_id = contact.id.as_uuid();
    let key_row = keys::key_row(contact_id, key.wrap(&keys.masters, &contact_id.to_string()), contact.created_at);
    (row, key_row)
}

/// A contact for `insert_many` to create: its rows built ahead, or to be built there.
// Nearly every contact an import creates is prepared: boxing them would allocate once more each.
#[allow(clippy::large_enum_variant)]
pub enum NewContact {
    Prepared(PreparedContact),
    Plain(Contact),
}

impl NewContact {
    pub fn contact(&self) -> &Contact {
        match self {
            NewContact::Prepared(prepared) => prepared.contact(),
            NewContact::Plain(contact) => contact,
        }
    }
}

/// Inserts new contacts set-wise, each sealed under a data key of its own; `import_id` names
/// the import that creates them, if one does.
pub async fn insert_many(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    contacts: Vec<NewContact>,
    import_id: Option<Uuid>,
) -> StoreResult<()> {
    if contacts.is_empty() {
        return Ok(());
    }
    let fields = defined_fields(conn).await?;
    let mut rows = Vec::with_capacity(contacts.len());
    let mut key_rows = Vec::with_capacity(contacts.len());
    for contact in contacts {
        match contact {
            NewContact::Prepared(prepared) if *prepared.fields == fields && prepared.import_id == import_id => {
                rows.push(prepared.row);
                key_rows.push(prepared.key_row);
            }
            NewContact::Prepared(PreparedContact { contact, .. }) | NewContact::Plain(contact) => {
                let (row, key_row) = new_rows(keys, &contact, None, &fields, import_id);
                rows.push(InsertRow::Model(row));
                key_rows.push(InsertRow::Model(key_row));
            }
        }
    }
    insert_prepared_rows(conn, rows, Conflict::Fail, ROWS_PER_STATEMENT).await?;
    keys::store_many(conn, key_rows).await
}

/// Writes new states (`after`) of stored contacts (`before`) set-wise. The caller holds them
/// locked since it read them (`find_for_update`), so their versions cannot have moved on.
pub async fn update_many(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    changed: &[(Contact, Contact)],
) -> StoreResult<()> {
    if changed.is_empty() {
        return Ok(());
    }
    let fields = defined_fields(conn).await?;
    let mut data_keys = keys::data_keys(conn, keys, changed.iter().map(|(before, _)| before.id.as_uuid())).await?;
    let mut rows = Vec::with_capacity(changed.len());
    for (_, after) in changed {
        let key = data_keys
            .remove(&after.id.as_uuid())
            .ok_or(StoreError::Corrupt { table: "contact_key", column: "contact_id" })?;
        let mut row = to_active(after, keys, &key, None, &fields);
        // Every column of a multi-row insert is bound; the conflict clause leaves this one be.
        row.import_id = Set(None);
        rows.push(row);
    }
    let on_conflict = Conflict::Update {
        target: &[entity::Column::Id],
        set: &[
            entity::Column::ExternalId,
            entity::Column::Email,
            entity::Column::EmailIndex,
            entity::Column::Phone,
            entity::Column::PhoneIndex,
            entity::Column::FirstName,
            entity::Column::LastName,
            entity::Column::Locale,
            entity::Column::TimeZone,
            entity::Column::Country,
            entity::Column::Version,
            entity::Column::UpdatedAt,
            entity::Column::Attributes,
        ],
    };
    insert_rows(conn, rows, on_conflict, ROWS_PER_STATEMENT).await
}

/// Opens stored contacts with their data keys, read in one statement.
async fn opened(conn: &impl ConnectionTrait, keys: &KeyRing, models: Vec<entity::Model>) -> StoreResult<Vec<Contact>> {
    if models.is_empty() {
        return Ok(Vec::new());
    }
    let mut data_keys = keys::data_keys(conn, keys, models.iter().map(|model| model.id)).await?;
    models
        .into_iter()
        .map(|model| {
            let key = data_keys
                .remove(&model.id)
                .ok_or(StoreError::Corrupt { table: "contact_key", column: "contact_id" })?;
            to_domain(model, &key)
        })
        .collect()
}

/// The custom values of a stored document, personal ones opened with `key`.
fn read_attributes(contact_id: &str, document: &Json, key: &DataKey) -> StoreResult<Attributes> {
    let corrupt = || corrupt("attributes");
    let mut attributes = Attributes::new();
    for (field, stored) in document.as_object().ok_or_else(corrupt)? {
        let field = Key::parse(field).map_err(|_| corrupt())?;
        let stored = stored.as_object().ok_or_else(corrupt)?;
        let value = match stored.get("sealed") {
            Some(sealed) => {
                let field_type = stored.get("type").and_then(Json::as_str).ok_or_else(corrupt)?;
                let field_type = field_type.parse::<FieldType>().map_err(|_| corrupt())?;
                let sealed = sealed.as_str().ok_or_else(corrupt)?;
                let text = key
                    .open(sealed, contact_id, &attribute_column(&field))
                    .map_err(|reason| StoreError::Undecryptable { table: "contact", reason })?;
                opened_value(field_type, &text).ok_or_else(corrupt)?
            }
            None => {
                let (type_name, clear) = stored.iter().next().ok_or_else(corrupt)?;
                let field_type = type_name.parse::<FieldType>().map_err(|_| corrupt())?;
                clear_value(field_type, clear).ok_or_else(corrupt)?
            }
        };
        attributes.insert(field, value);
    }
    Ok(attributes)
}

/// A value stored in clear, as `attributes_document` wrote it: a number or a boolean as such,
/// every other type as the same text it is sealed as.
fn clear_value(field_type: FieldType, clear: &Json) -> Option<FieldValue> {
    match (field_type, clear) {
        (FieldType::Number, _) => clear.as_f64().map(FieldValue::Number),
        (FieldType::Boolean, _) => clear.as_bool().map(FieldValue::Boolean),
        (_, Json::String(text)) => opened_value(field_type, text),
        _ => None,
    }
}

/// A sealed value once opened: every type is sealed as text.
fn opened_value(field_type: FieldType, text: &str) -> Option<FieldValue> {
    Some(match field_type {
        FieldType::String => FieldValue::String(text.to_owned()),
        FieldType::Enum => FieldValue::Enum(text.to_owned()),
        FieldType::Date => FieldValue::Date(NaiveDate::parse_from_str(text, DATE_FORMAT).ok()?),
        FieldType::Number => FieldValue::Number(text.parse().ok()?),
        FieldType::Boolean => FieldValue::Boolean(text.parse().ok()?),
        FieldType::DateTime => {
            FieldValue::DateTime(chrono::DateTime::parse_from_rfc3339(text).ok()?.with_timezone(&chrono::Utc))
        }
    })
}

/// The row of `contact`, sealed under `key`; `email_index` is its email address's blind index
/// if the caller knows it already.
fn to_active(
    contact: &Contact,
    keys: &KeyRing,
    key: &DataKey,
    email_index: Option<String>,
    fields: &FieldSecrecy,
) -> entity::ActiveModel {
    let profile = &contact.profile;
    let contact_id = contact.id.as_uuid().to_string();
    let seal = |column: &str, value: Option<&str>| value.map(|value| key.seal(value, &contact_id, column));
    let index_of = |email: &EmailAddress| email_index.unwrap_or_else(|| self::email_index(keys, email));
    entity::ActiveModel {
        id: Set(contact.id.as_uuid()),
        external_id: Set(contact.external_id.as_ref().map(|v| v.as_str().to_owned())),
        email: Set(seal("email", contact.email.as_ref().map(EmailAddress::as_str))),
        email_index: Set(contact.email.as_ref().map(index_of)),
        phone: Set(seal("phone", profile.phone.as_ref().map(PhoneNumber::as_str))),
        phone_index: Set(profile.phone.as_ref().map(|phone| phone_index(keys, phone))),
        first_name: Set(seal("first_name", profile.first_name.as_ref().map(PersonName::as_str))),
        last_name: Set(seal("last_name", profile.last_name.as_ref().map(PersonName::as_str))),
        locale: Set(profile.locale.as_ref().map(|v| v.as_str().to_owned())),
        time_zone: Set(profile.time_zone.as_ref().map(|v| v.as_str().to_owned())),
        country: Set(profile.country.as_ref().map(|v| v.as_str().to_owned())),
        version: Set(contact.version),
        created_at: Set(contact.created_at),
        updated_at: Set(contact.updated_at),
        attributes: Set(attributes_document(key, contact.id, &contact.attributes, fields)),
        // Set only by the import that creates the contact: an update leaves it as it is.
        import_id: NotSet,
    }
}

fn to_domain(model: entity::Model, key: &DataKey) -> StoreResult<Contact> {
    let contact_id = model.id.to_string();
    let attributes = read_attributes(&contact_id, &model.attributes, key)?;
    let open = |column: &'static str, sealed: Option<String>| -> StoreResult<Option<String>> {
        sealed
            .map(|sealed| {
                key.open(&sealed, &contact_id, column)
                    .map_err(|reason| StoreError::Undecryptable { table: "contact", reason })
            })
            .transpose()
    };
    let email = open("email", model.email)?;
    let phone = open("phone", model.phone)?;
    let first_name = open("first_name", model.first_name)?;
    let last_name = open("last_name", model.last_name)?;
    Ok(Contact {
        id: ContactId::from_uuid(model.id),
        external_id: parse(model.external_id.as_deref(), "external_id", ExternalId::parse)?,
        email: parse(email.as_deref(), "email", EmailAddress::parse)?,
        profile: Profile {
            phone: parse(phone.as_deref(), "phone", PhoneNumber::parse)?,
            first_name: parse(first_name.as_deref(), "first_name", PersonName::parse)?,
            last_name: parse(last_name.as_deref(), "last_name", PersonName::parse)?,
            locale: parse(model.locale.as_deref(), "locale", Locale::parse)?,
            time_zone: parse(model.time_zone.as_deref(), "time_zone", TimeZone::parse)?,
            country: parse(model.country.as_deref(), "country", CountryCode::parse)?,
        },
        attributes,
        created_at: model.created_at,
        updated_at: model.updated_at,
        version: model.version,
    })
}

fn parse<T, E>(
    raw: Option<&str>,
    column: &'static str,
    parser: impl Fn(&str) -> Result<T, E>,
) -> StoreResult<Option<T>> {
    raw.map(|value| parser(value).map_err(|_| corrupt(column))).transpose()
}

fn corrupt(column: &'static str) -> StoreError {
    StoreError::Corrupt { table: "contact", column }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        crypto::{MasterKey, MasterKeys},
        domain::field::FieldDefinition,
    };

    /// A field made personal after an import prepared its rows (here, as it read the file) is
    /// sealed all the same: the rows are built again against the fields read where they are
    /// written.
    #[tokio::test]
    async fn a_contact_prepared_before_its_field_became_personal_is_stored_sealed() {
        use migration::MigratorTrait as _;
        let connection = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        migration::Migrator::up(&connection, None).await.unwrap();
        let keys = keys::open(&connection, MasterKeys::new(MasterKey::generate(), None)).await.unwrap();
        let nickname = Key::parse("nickname").unwrap();
        let now = Utc::now();
        let definition = FieldDefinition {
            key: nickname.clone(),
            label: "Nickname".to_owned(),
            field_type: FieldType::String,
            enum_values: Vec::new(),
            required: false,
            personal: true,
            created_at: now,
            updated_at: now,
        };
        crate::store::fields::insert(&connection, &definition).await.unwrap();
        let contact = Contact {
            id: ContactId::generate(),
            external_id: None,
            email: Some(EmailAddress::parse("ada@example.com").unwrap()),
            profile: Profile::default(),
            attributes: Attributes::from([(nickname, FieldValue::String("Enchantress".to_owned()))]),
            created_at: crate::domain::at_storage_precision(now),
            updated_at: crate::domain::at_storage_precision(now),
            version: 1,
        };
        let prepared_while_not_personal = Arc::new(FieldSecrecy::from([("nickname".to_owned(), false)]));
        let prepared =
            PreparedContact::new(DbBackend::Sqlite, &keys, contact.clone(), None, &prepared_while_not_personal, None)
                .unwrap();

        insert_many(&connection, &keys, vec![NewContact::Prepared(prepared)], None).await.unwrap();
        let stored = entity::Entity::find_by_id(contact.id.as_uuid()).one(&connection).await.unwrap().expect("stored");
        let document = stored.attributes.to_string();
        assert!(document.contains("sealed") && !document.contains("Enchantress"), "{document}");
        let read = find(&connection, &keys, &ContactRef::Id(contact.id)).await.unwrap().expect("found");
        assert_eq!(read, contact);
    }
}
