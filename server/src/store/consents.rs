//! Consent purposes, the append-only consent history, and the current-state projection that is
//! kept beside it in the same transaction.

use std::net::IpAddr;

use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, ExprTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Alias, Expr, OnConflict, Query},
};
use uuid::Uuid;

use super::{
    StoreError, StoreResult,
    entity::{consent, consent_change as change, consent_purpose as purpose},
};
use crate::domain::{
    consent::{Channel, ConsentChange, ConsentProof, Purpose, UserAgent, WordingId, WordingVersion},
    contact::ContactId,
    key::Key,
    page::{Direction, Page, PageRequest},
};

pub async fn purposes(conn: &impl ConnectionTrait) -> StoreResult<Vec<Purpose>> {
    purpose::Entity::find()
        .order_by_desc(purpose::Column::BuiltIn)
        .order_by_asc(purpose::Column::Key)
        .all(conn)
        .await?
        .into_iter()
        .map(|model| {
            Ok(Purpose {
                key: Key::parse(&model.key)
                    .map_err(|_| StoreError::Corrupt { table: "consent_purpose", column: "key" })?,
                label: model.label,
                description: model.description,
                built_in: model.built_in,
                created_at: model.created_at,
            })
        })
        .collect()
}

pub async fn insert_purpose(conn: &impl ConnectionTrait, new: &Purpose) -> StoreResult<()> {
    purpose::Entity::insert(purpose::ActiveModel {
        key: Set(new.key.as_str().to_owned()),
        label: Set(new.label.clone()),
        description: Set(new.description.clone()),
        built_in: Set(new.built_in),
        created_at: Set(new.created_at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// Appends a decision to the history and moves the current state to it unless the current
/// state was captured later. The comparison happens inside the upsert, so two concurrent
/// writers cannot leave the projection pointing at the older decision.
pub async fn append(conn: &impl ConnectionTrait, decision: &ConsentChange) -> StoreResult<()> {
    change::Entity::insert(to_active(decision)).exec_without_returning(conn).await?;
    let mut upsert = Query::insert();
    upsert
        .into_table(consent::Entity)
        .columns([
            consent::Column::ContactId,
            consent::Column::Purpose,
            consent::Column::Channel,
            consent::Column::ChangeId,
            consent::Column::Status,
            consent::Column::CapturedAt,
        ])
        .values_panic([
            decision.contact_id.as_uuid().into(),
            decision.purpose.as_str().into(),
            decision.channel.as_str().into(),
            decision.id.into(),
            decision.status.as_str().into(),
            decision.captured_at.into(),
        ])
        .on_conflict(
            OnConflict::columns([consent::Column::ContactId, consent::Column::Purpose, consent::Column::Channel])
                .update_columns([consent::Column::ChangeId, consent::Column::Status, consent::Column::CapturedAt])
                .action_and_where(
                    Expr::col((consent::Entity, consent::Column::CapturedAt))
                        .lte(Expr::col((Alias::new("excluded"), consent::Column::CapturedAt))),
                )
                .to_owned(),
        );
    conn.execute(&upsert).await?;
    Ok(())
}

/// The current consents of several contacts, in one query.
pub async fn current(conn: &impl ConnectionTrait, contact_ids: &[ContactId]) -> StoreResult<Vec<ConsentChange>> {
    if contact_ids.is_empty() {
        return Ok(Vec::new());
    }
    change::Entity::find()
        .filter(
            change::Column::Id.in_subquery(
                Query::select()
                    .column(consent::Column::ChangeId)
                    .from(consent::Entity)
                    .and_where(consent::Column::ContactId.is_in(contact_ids.iter().map(ContactId::as_uuid)))
                    .to_owned(),
            ),
        )
        .order_by_asc(change::Column::Purpose)
        .order_by_asc(change::Column::Channel)
        .all(conn)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

/// A contact's decisions, newest recorded first, optionally for one purpose and/or channel.
pub async fn history(
    conn: &impl ConnectionTrait,
    contact_id: ContactId,
    purpose: Option<&Key>,
    channel: Option<Channel>,
    request: &PageRequest<Uuid>,
) -> StoreResult<Page<ConsentChange>> {
    let mut query = change::Entity::find().filter(change::Column::ContactId.eq(contact_id.as_uuid()));
    if let Some(purpose) = purpose {
        query = query.filter(change::Column::Purpose.eq(purpose.as_str()));
    }
    if let Some(channel) = channel {
        query = query.filter(change::Column::Channel.eq(channel.as_str()));
    }
    // Newest first: "after" a cursor means older ids.
    if let Some(after) = request.after {
        query = query.filter(change::Column::Id.lt(after));
    }
    if let Some(before) = request.before {
        query = query.filter(change::Column::Id.gt(before));
    }
    query = match request.direction {
        Direction::Forward => query.order_by_desc(change::Column::Id),
        Direction::Backward => query.order_by_asc(change::Column::Id),
    };
    let rows = query.limit(request.limit + 1).all(conn).await?;
    Page::from_rows(rows, request.limit, request.direction).try_map(to_domain)
}

/// Every decision recorded for a contact, in the order recorded.
pub async fn all_of(conn: &impl ConnectionTrait, contact_id: ContactId) -> StoreResult<Vec<ConsentChange>> {
    change::Entity::find()
        .filter(change::Column::ContactId.eq(contact_id.as_uuid()))
        .order_by_asc(change::Column::Id)
        .all(conn)
        .await?
        .into_iter()
        .map(to_domain)
        .collect()
}

fn to_active(decision: &ConsentChange) -> change::ActiveModel {
    change::ActiveModel {
        id: Set(decision.id),
        contact_id: Set(decision.contact_id.as_uuid()),
        purpose: Set(decision.purpose.as_str().to_owned()),
        channel: Set(decision.channel.as_str().to_owned()),
        status: Set(decision.status.as_str().to_owned()),
        legal_basis: Set(decision.legal_basis.as_str().to_owned()),
        source: Set(decision.source.as_str().to_owned()),
        captured_at: Set(decision.captured_at),
        recorded_at: Set(decision.recorded_at),
        proof_ip: Set(decision.proof.ip.map(|ip| ip.to_string())),
        proof_user_agent: Set(decision.proof.user_agent.as_ref().map(|agent| agent.as_str().to_owned())),
        wording_id: Set(decision.proof.wording_id.as_ref().map(|wording| wording.as_str().to_owned())),
        wording_version: Set(decision.proof.wording_version.as_ref().map(|version| version.as_str().to_owned())),
    }
}

fn to_domain(model: change::Model) -> StoreResult<ConsentChange> {
    let corrupt = |column| StoreError::Corrupt { table: "consent_change", column };
    Ok(ConsentChange {
        id: model.id,
        contact_id: ContactId::from_uuid(model.contact_id),
        purpose: Key::parse(&model.purpose).map_err(|_| corrupt("purpose"))?,
        channel: model.channel.parse().map_err(|_| corrupt("channel"))?,
        status: model.status.parse().map_err(|_| corrupt("status"))?,
        legal_basis: model.legal_basis.parse().map_err(|_| corrupt("legal_basis"))?,
        source: model.source.parse().map_err(|_| corrupt("source"))?,
        captured_at: model.captured_at,
        recorded_at: model.recorded_at,
        proof: ConsentProof {
            ip: model.proof_ip.map(|ip| ip.parse::<IpAddr>()).transpose().map_err(|_| corrupt("proof_ip"))?,
            user_agent: model
                .proof_user_agent
                .map(|agent| UserAgent::parse(&agent))
                .transpose()
                .map_err(|_| corrupt("proof_user_agent"))?,
            wording_id: model
                .wording_id
                .map(|wording| WordingId::parse(&wording))
                .transpose()
                .map_err(|_| corrupt("wording_id"))?,
            wording_version: model
                .wording_version
                .map(|version| WordingVersion::parse(&version))
                .transpose()
                .map_err(|_| corrupt("wording_version"))?,
        },
    })
}
