//! Signup forms and opt-in requests.

use chrono::{DateTime, Utc};
use sea_orm::{ActiveValue::Set, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::Expr};
use uuid::Uuid;

use super::{
    StoreError, StoreResult,
    entity::{opt_in_request as request_entity, signup_form as entity},
};
use crate::domain::{
    consent::UserAgent,
    contact::ContactId,
    forms::{OptInRequest, OptInStatus, SignupForm},
    key::Key,
};

pub async fn insert(conn: &impl ConnectionTrait, form: &SignupForm) -> StoreResult<()> {
    entity::Entity::insert(entity::ActiveModel {
        id: Set(form.id),
        key: Set(form.key.as_str().to_owned()),
        name: Set(form.name.clone()),
        topics: Set(keys_json(&form.topics)),
        fields: Set(serde_json::json!(form.fields)),
        wording: Set(form.wording.clone()),
        double_opt_in: Set(form.double_opt_in),
        created_at: Set(form.created_at),
        updated_at: Set(form.updated_at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

pub async fn find_by_key(conn: &impl ConnectionTrait, key: &Key) -> StoreResult<Option<SignupForm>> {
    entity::Entity::find().filter(entity::Column::Key.eq(key.as_str())).one(conn).await?.map(to_domain).transpose()
}

pub async fn find(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<SignupForm>> {
    entity::Entity::find_by_id(id).one(conn).await?.map(to_domain).transpose()
}

pub async fn all(conn: &impl ConnectionTrait) -> StoreResult<Vec<SignupForm>> {
    entity::Entity::find().order_by_asc(entity::Column::Id).all(conn).await?.into_iter().map(to_domain).collect()
}

pub async fn insert_request(conn: &impl ConnectionTrait, request: &OptInRequest) -> StoreResult<()> {
    request_entity::Entity::insert(request_entity::ActiveModel {
        id: Set(request.id),
        contact_id: Set(request.contact_id.as_uuid()),
        form_id: Set(request.form_id),
        topics: Set(keys_json(&request.topics)),
        status: Set(request.status.as_str().to_owned()),
        submitted_ip: Set(request.submitted_ip.map(|ip| ip.to_string())),
        submitted_user_agent: Set(request.submitted_user_agent.as_ref().map(|agent| agent.as_str().to_owned())),
        submitted_at: Set(request.submitted_at),
        expires_at: Set(request.expires_at),
        confirmed_at: Set(request.confirmed_at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// A contact's requests, newest first.
pub async fn requests_of(conn: &impl ConnectionTrait, contact_id: ContactId) -> StoreResult<Vec<OptInRequest>> {
    request_entity::Entity::find()
        .filter(request_entity::Column::ContactId.eq(contact_id.as_uuid()))
        .order_by_desc(request_entity::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(request_to_domain)
        .collect()
}

/// Marks requests confirmed, if they are still pending; how many were.
pub async fn confirm(conn: &impl ConnectionTrait, ids: &[Uuid], at: DateTime<Utc>) -> StoreResult<u64> {
    let result = request_entity::Entity::update_many()
        .col_expr(request_entity::Column::Status, Expr::value(OptInStatus::Confirmed.as_str()))
        .col_expr(request_entity::Column::ConfirmedAt, Expr::value(at))
        .filter(request_entity::Column::Id.is_in(ids.iter().copied()))
        .filter(request_entity::Column::Status.eq(OptInStatus::Pending.as_str()))
        .exec(conn)
        .await?;
    Ok(result.rows_affected)
}

fn keys_json(keys: &[Key]) -> serde_json::Value {
    serde_json::json!(keys.iter().map(Key::as_str).collect::<Vec<_>>())
}

fn keys_of(value: serde_json::Value, table: &'static str) -> StoreResult<Vec<Key>> {
    let corrupt = || StoreError::Corrupt { table, column: "topics" };
    let raw: Vec<String> = serde_json::from_value(value).map_err(|_| corrupt())?;
    raw.iter().map(|key| Key::parse(key).map_err(|_| corrupt())).collect()
}

fn to_domain(model: entity::Model) -> StoreResult<SignupForm> {
    Ok(SignupForm {
        id: model.id,
        key: Key::parse(&model.key).map_err(|_| StoreError::Corrupt { table: "signup_form", column: "key" })?,
        name: model.name,
        topics: keys_of(model.topics, "signup_form")?,
        fields: serde_json::from_value(model.fields)
            .map_err(|_| StoreError::Corrupt { table: "signup_form", column: "fields" })?,
        wording: model.wording,
        double_opt_in: model.double_opt_in,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn request_to_domain(model: request_entity::Model) -> StoreResult<OptInRequest> {
    let corrupt = |column| StoreError::Corrupt { table: "opt_in_request", column };
    Ok(OptInRequest {
        id: model.id,
        contact_id: ContactId::from_uuid(model.contact_id),
        form_id: model.form_id,
        topics: keys_of(model.topics, "opt_in_request")?,
        status: model.status.parse().map_err(|_| corrupt("status"))?,
        submitted_ip: model.submitted_ip.map(|ip| ip.parse().map_err(|_| corrupt("submitted_ip"))).transpose()?,
        submitted_user_agent: model
            .submitted_user_agent
            .map(|agent| UserAgent::parse(&agent).map_err(|_| corrupt("submitted_user_agent")))
            .transpose()?,
        submitted_at: model.submitted_at,
        expires_at: model.expires_at,
        confirmed_at: model.confirmed_at,
    })
}
