//! The contact repository: the one place that reads and writes contacts and their custom field
//! values. Writers pass the version they read; an update that finds another version writes nothing.

use std::collections::HashMap;

use chrono::NaiveDate;
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, OnConflict, Query, SelectStatement},
};
use uuid::Uuid;

use super::{
    StoreError, StoreResult,
    entity::{consent, contact as entity, contact_attribute as attribute, topic, topic_subscription},
    page::{Direction, Page, PageRequest},
};
use crate::domain::{
    contact::{
        Attributes, Contact, ContactId, ContactRef, CountryCode, EmailAddress, ExternalId, Locale, PersonName,
        PhoneNumber, Profile, TimeZone,
    },
    field::{FieldType, FieldValue},
    filter::{AttributeCondition, Comparison, ContactFilter},
    key::Key,
    topic::SubscriptionStatus,
};

pub async fn find(conn: &impl ConnectionTrait, reference: &ContactRef) -> StoreResult<Option<Contact>> {
    let query = entity::Entity::find();
    let query = match reference {
        ContactRef::Id(id) => query.filter(entity::Column::Id.eq(id.as_uuid())),
        ContactRef::ExternalId(external_id) => query.filter(entity::Column::ExternalId.eq(external_id.as_str())),
        ContactRef::Email(email) => query.filter(entity::Column::Email.eq(email.as_str())),
    };
    // One statement: the contact LEFT JOINed with its attribute rows.
    let mut found = query.find_with_related(attribute::Entity).all(conn).await?;
    found.pop().map(|(model, rows)| to_domain(model, rows)).transpose()
}

/// Contacts by id, in no particular order; ids that do not exist are left out.
pub async fn find_many(conn: &impl ConnectionTrait, ids: &[ContactId]) -> StoreResult<Vec<Contact>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let models =
        entity::Entity::find().filter(entity::Column::Id.is_in(ids.iter().map(ContactId::as_uuid))).all(conn).await?;
    with_attributes(conn, models).await
}

/// Resolves references to ids in three queries at most, whatever their number.
pub async fn resolve(
    conn: &impl ConnectionTrait,
    references: &[ContactRef],
) -> StoreResult<HashMap<ContactRef, ContactId>> {
    let mut ids = Vec::new();
    let mut external_ids = Vec::new();
    let mut emails = Vec::new();
    for reference in references {
        match reference {
            ContactRef::Id(id) => ids.push(id.as_uuid()),
            ContactRef::ExternalId(external_id) => external_ids.push(external_id.as_str()),
            ContactRef::Email(email) => emails.push(email.as_str()),
        }
    }
    let mut resolved = HashMap::new();
    for (column, values) in [
        (entity::Column::Id, ids.into_iter().map(sea_orm::Value::from).collect::<Vec<_>>()),
        (entity::Column::ExternalId, external_ids.into_iter().map(sea_orm::Value::from).collect()),
        (entity::Column::Email, emails.into_iter().map(sea_orm::Value::from).collect()),
    ] {
        if values.is_empty() {
            continue;
        }
        let rows: Vec<(Uuid, Option<String>, Option<String>)> = entity::Entity::find()
            .select_only()
            .columns([entity::Column::Id, entity::Column::ExternalId, entity::Column::Email])
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
                entity::Column::Email => {
                    ContactRef::Email(parse(email.as_deref(), "email", EmailAddress::parse)?.ok_or(corrupt("email"))?)
                }
                _ => ContactRef::Id(id),
            };
            resolved.insert(reference, id);
        }
    }
    Ok(resolved)
}

pub async fn insert(conn: &impl ConnectionTrait, contact: &Contact) -> StoreResult<()> {
    entity::Entity::insert(to_active(contact)).exec_without_returning(conn).await?;
    write_attributes(conn, contact.id, &Attributes::new(), &contact.attributes).await
}

/// Writes `updated` over the stored contact if its version is still `updated.version - 1`.
/// Returns false (and writes nothing) when the stored version differs or the contact is gone.
pub async fn update(conn: &impl ConnectionTrait, previous: &Contact, updated: &Contact) -> StoreResult<bool> {
    let result = entity::Entity::update_many()
        .set(to_active(updated))
        .filter(entity::Column::Id.eq(updated.id.as_uuid()))
        .filter(entity::Column::Version.eq(previous.version))
        .exec(conn)
        .await?;
    if result.rows_affected == 0 {
        return Ok(false);
    }
    write_attributes(conn, updated.id, &previous.attributes, &updated.attributes).await?;
    Ok(true)
}

pub async fn delete(conn: &impl ConnectionTrait, id: ContactId) -> StoreResult<bool> {
    Ok(entity::Entity::delete_by_id(id.as_uuid()).exec(conn).await?.rows_affected > 0)
}

/// One page of contacts in id (= creation) order, restricted by `filter`.
pub async fn page(
    conn: &impl ConnectionTrait,
    filter: &ContactFilter,
    request: &PageRequest<ContactId>,
) -> StoreResult<Page<Contact>> {
    let mut query = entity::Entity::find().filter(condition(filter));
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
        with_attributes(conn, page.items).await?.into_iter().map(|contact| (contact.id.as_uuid(), contact)).collect();
    Ok(Page { items: ids.iter().filter_map(|id| contacts.remove(id)).collect(), has_more: page.has_more })
}

fn condition(filter: &ContactFilter) -> Condition {
    let mut all = Condition::all();
    for attribute_condition in &filter.attributes {
        all = all.add(match attribute_condition {
            AttributeCondition::IsSet { field, set } => {
                let holders = attribute_holders(field);
                if *set { entity::Column::Id.in_subquery(holders) } else { entity::Column::Id.not_in_subquery(holders) }
            }
            AttributeCondition::Compare { field, comparison, value } => {
                let (column, operand) = value_column(value);
                let mut holders = attribute_holders(field);
                // "not equal" includes contacts without a value: it is the complement of "equal".
                let (operator, negate) = match comparison {
                    Comparison::Equal => (Comparison::Equal, false),
                    Comparison::NotEqual => (Comparison::Equal, true),
                    other => (*other, false),
                };
                let column = Expr::col((attribute::Entity, column));
                holders.and_where(match operator {
                    Comparison::Equal | Comparison::NotEqual => column.eq(operand),
                    Comparison::Less => column.lt(operand),
                    Comparison::LessOrEqual => column.lte(operand),
                    Comparison::Greater => column.gt(operand),
                    Comparison::GreaterOrEqual => column.gte(operand),
                });
                if negate {
                    entity::Column::Id.not_in_subquery(holders)
                } else {
                    entity::Column::Id.in_subquery(holders)
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
    all
}

fn attribute_holders(field: &Key) -> SelectStatement {
    Query::select()
        .column(attribute::Column::ContactId)
        .from(attribute::Entity)
        .and_where(attribute::Column::FieldKey.eq(field.as_str()))
        .to_owned()
}

/// The column a value is stored in, and the value as that column holds it.
fn value_column(value: &FieldValue) -> (attribute::Column, sea_orm::Value) {
    match value {
        FieldValue::String(text) | FieldValue::Enum(text) => (attribute::Column::ValueText, text.clone().into()),
        FieldValue::Date(date) => (attribute::Column::ValueText, date.format("%Y-%m-%d").to_string().into()),
        FieldValue::Number(number) => (attribute::Column::ValueNumber, (*number).into()),
        FieldValue::Boolean(flag) => (attribute::Column::ValueBool, (*flag).into()),
        FieldValue::DateTime(at) => (attribute::Column::ValueTime, (*at).into()),
    }
}

async fn write_attributes(
    conn: &impl ConnectionTrait,
    contact_id: ContactId,
    previous: &Attributes,
    current: &Attributes,
) -> StoreResult<()> {
    let removed: Vec<&str> = previous.keys().filter(|key| !current.contains_key(*key)).map(Key::as_str).collect();
    if !removed.is_empty() {
        attribute::Entity::delete_many()
            .filter(attribute::Column::ContactId.eq(contact_id.as_uuid()))
            .filter(attribute::Column::FieldKey.is_in(removed))
            .exec(conn)
            .await?;
    }
    let changed: Vec<attribute::ActiveModel> = current
        .iter()
        .filter(|(key, value)| previous.get(*key) != Some(*value))
        .map(|(key, value)| to_attribute_row(contact_id, key, value))
        .collect();
    if !changed.is_empty() {
        attribute::Entity::insert_many(changed)
            .on_conflict(
                OnConflict::columns([attribute::Column::ContactId, attribute::Column::FieldKey])
                    .update_columns([
                        attribute::Column::ValueText,
                        attribute::Column::ValueNumber,
                        attribute::Column::ValueBool,
                        attribute::Column::ValueTime,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(conn)
            .await?;
    }
    Ok(())
}

fn to_attribute_row(contact_id: ContactId, key: &Key, value: &FieldValue) -> attribute::ActiveModel {
    let mut row = attribute::ActiveModel {
        contact_id: Set(contact_id.as_uuid()),
        field_key: Set(key.as_str().to_owned()),
        value_type: Set(value.field_type().as_str().to_owned()),
        value_text: Set(None),
        value_number: Set(None),
        value_bool: Set(None),
        value_time: Set(None),
    };
    match value {
        FieldValue::String(text) | FieldValue::Enum(text) => row.value_text = Set(Some(text.clone())),
        FieldValue::Date(date) => row.value_text = Set(Some(date.format("%Y-%m-%d").to_string())),
        FieldValue::Number(number) => row.value_number = Set(Some(*number)),
        FieldValue::Boolean(flag) => row.value_bool = Set(Some(*flag)),
        FieldValue::DateTime(at) => row.value_time = Set(Some(*at)),
    }
    row
}

async fn with_attributes(conn: &impl ConnectionTrait, models: Vec<entity::Model>) -> StoreResult<Vec<Contact>> {
    if models.is_empty() {
        return Ok(Vec::new());
    }
    let rows = attribute::Entity::find()
        .filter(attribute::Column::ContactId.is_in(models.iter().map(|model| model.id)))
        .all(conn)
        .await?;
    let mut attributes: HashMap<Uuid, Vec<attribute::Model>> = HashMap::new();
    for row in rows {
        attributes.entry(row.contact_id).or_default().push(row);
    }
    models
        .into_iter()
        .map(|model| {
            let rows = attributes.remove(&model.id).unwrap_or_default();
            to_domain(model, rows)
        })
        .collect()
}

fn attribute_value(row: &attribute::Model) -> StoreResult<FieldValue> {
    let text = || row.value_text.clone().ok_or(corrupt_attribute("value_text"));
    let field_type = row.value_type.parse::<FieldType>().map_err(|_| corrupt_attribute("value_type"))?;
    Ok(match field_type {
        FieldType::String => FieldValue::String(text()?),
        FieldType::Enum => FieldValue::Enum(text()?),
        FieldType::Date => FieldValue::Date(
            NaiveDate::parse_from_str(&text()?, "%Y-%m-%d").map_err(|_| corrupt_attribute("value_text"))?,
        ),
        FieldType::Number => FieldValue::Number(row.value_number.ok_or(corrupt_attribute("value_number"))?),
        FieldType::Boolean => FieldValue::Boolean(row.value_bool.ok_or(corrupt_attribute("value_bool"))?),
        FieldType::DateTime => FieldValue::DateTime(row.value_time.ok_or(corrupt_attribute("value_time"))?),
    })
}

fn to_active(contact: &Contact) -> entity::ActiveModel {
    let profile = &contact.profile;
    entity::ActiveModel {
        id: Set(contact.id.as_uuid()),
        external_id: Set(contact.external_id.as_ref().map(|v| v.as_str().to_owned())),
        email: Set(contact.email.as_ref().map(|v| v.as_str().to_owned())),
        phone: Set(profile.phone.as_ref().map(|v| v.as_str().to_owned())),
        first_name: Set(profile.first_name.as_ref().map(|v| v.as_str().to_owned())),
        last_name: Set(profile.last_name.as_ref().map(|v| v.as_str().to_owned())),
        locale: Set(profile.locale.as_ref().map(|v| v.as_str().to_owned())),
        time_zone: Set(profile.time_zone.as_ref().map(|v| v.as_str().to_owned())),
        country: Set(profile.country.as_ref().map(|v| v.as_str().to_owned())),
        version: Set(contact.version),
        created_at: Set(contact.created_at),
        updated_at: Set(contact.updated_at),
    }
}

fn to_domain(model: entity::Model, attribute_rows: Vec<attribute::Model>) -> StoreResult<Contact> {
    let mut attributes = Attributes::new();
    for row in &attribute_rows {
        let key = Key::parse(&row.field_key).map_err(|_| corrupt_attribute("field_key"))?;
        attributes.insert(key, attribute_value(row)?);
    }
    Ok(Contact {
        id: ContactId::from_uuid(model.id),
        external_id: parse(model.external_id.as_deref(), "external_id", ExternalId::parse)?,
        email: parse(model.email.as_deref(), "email", EmailAddress::parse)?,
        profile: Profile {
            phone: parse(model.phone.as_deref(), "phone", PhoneNumber::parse)?,
            first_name: parse(model.first_name.as_deref(), "first_name", PersonName::parse)?,
            last_name: parse(model.last_name.as_deref(), "last_name", PersonName::parse)?,
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

fn corrupt_attribute(column: &'static str) -> StoreError {
    StoreError::Corrupt { table: "contact_attribute", column }
}
