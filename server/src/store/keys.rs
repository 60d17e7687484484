//! The key tables: per-contact data keys and the blind index key, each wrapped by a master key.
//! They live apart from the data so that operators can back them up separately; a data backup
//! restored without its keys yields nothing readable.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Statement, Value,
    sea_query::{Expr, OnConflict},
};
use uuid::Uuid;

use super::{
    Conflict, InsertRow, StoreError, StoreResult,
    entity::{blind_index_key, contact_key},
    execute_in_turn, insert_prepared_rows, push_value_rows,
};
use crate::crypto::{BlindIndexKey, CryptoError, DataKey, KeyRing, MasterKeys, WrappedKey};

/// The one row of `blind_index_key` in use; a name leaves room for more indexes later.
const CONTACT_INDEX: &str = "contact";

/// Loads the blind index key, creating it on the first start. Two processes starting at once
/// both try to insert; the loser reads the winner's key.
pub async fn open(conn: &impl ConnectionTrait, masters: MasterKeys) -> StoreResult<KeyRing> {
    if blind_index_key::Entity::find_by_id(CONTACT_INDEX).one(conn).await?.is_none() {
        let wrapped = BlindIndexKey::generate().wrap(&masters);
        blind_index_key::Entity::insert(blind_index_key::ActiveModel {
            name: Set(CONTACT_INDEX.to_owned()),
            master_key_id: Set(wrapped.master_key_id),
            wrapped_key: Set(wrapped.wrapped),
            created_at: Set(Utc::now()),
        })
        .on_conflict(OnConflict::column(blind_index_key::Column::Name).do_nothing().to_owned())
        .exec_without_returning(conn)
        .await?;
    }
    let row = blind_index_key::Entity::find_by_id(CONTACT_INDEX)
        .one(conn)
        .await?
        .ok_or(StoreError::Corrupt { table: "blind_index_key", column: "name" })?;
    let wrapped = WrappedKey { master_key_id: row.master_key_id, wrapped: row.wrapped_key };
    let blind_index = BlindIndexKey::unwrap(&masters, &wrapped).map_err(key_error("blind_index_key"))?;
    Ok(KeyRing { masters, blind_index })
}

/// Stores a new contact's data key, wrapped by the current master key.
pub async fn store(conn: &impl ConnectionTrait, keys: &KeyRing, contact_id: Uuid, key: &DataKey) -> StoreResult<()> {
    let wrapped = key.wrap(&keys.masters, &contact_id.to_string());
    contact_key::Entity::insert(key_row(contact_id, wrapped, Utc::now())).exec_without_returning(conn).await?;
    Ok(())
}

/// The row of a new contact's data key, wrapped by the current master key.
pub(super) fn key_row(contact_id: Uuid, wrapped: WrappedKey, created_at: DateTime<Utc>) -> contact_key::ActiveModel {
    contact_key::ActiveModel {
        contact_id: Set(contact_id),
        master_key_id: Set(wrapped.master_key_id),
        wrapped_key: Set(wrapped.wrapped),
        created_at: Set(created_at),
    }
}

/// Stores the data keys of new contacts set-wise (rows made by `key_row`).
pub(super) async fn store_many(
    conn: &impl ConnectionTrait,
    rows: Vec<InsertRow<contact_key::ActiveModel>>,
) -> StoreResult<()> {
    insert_prepared_rows(conn, rows, Conflict::Fail, ROWS_PER_STATEMENT).await
}

/// Rows per multi-row INSERT of keys: 4,000 bound values on PostgreSQL, well under its limit of
/// 65,535 (on SQLite a statement binds one document).
const ROWS_PER_STATEMENT: usize = 1_000;

/// Deletes a contact's data key: every ciphertext sealed with it, wherever a copy lies, can no
/// longer be opened once no backup of this table holds the key (crypto-shredding).
pub async fn destroy(conn: &impl ConnectionTrait, contact_id: Uuid) -> StoreResult<bool> {
    Ok(contact_key::Entity::delete_by_id(contact_id).exec(conn).await?.rows_affected > 0)
}

/// The data keys of these contacts, unwrapped, in one statement; contacts without a key are
/// left out (the caller decides whether that is corruption).
pub async fn data_keys(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    contact_ids: impl IntoIterator<Item = Uuid>,
) -> StoreResult<HashMap<Uuid, DataKey>> {
    let ids: Vec<Uuid> = contact_ids.into_iter().collect();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let rows = contact_key::Entity::find().filter(contact_key::Column::ContactId.is_in(ids)).all(conn).await?;
    rows.into_iter()
        .map(|row| {
            let wrapped = WrappedKey { master_key_id: row.master_key_id, wrapped: row.wrapped_key };
            let key = DataKey::unwrap(&keys.masters, &wrapped, &row.contact_id.to_string())
                .map_err(key_error("contact_key"))?;
            Ok((row.contact_id, key))
        })
        .collect()
}

/// How far a rotation has come: keys wrapped by the current master key, and all keys.
pub async fn rotation_progress(conn: &impl ConnectionTrait, keys: &KeyRing) -> StoreResult<(u64, u64)> {
    use sea_orm::PaginatorTrait;
    let total = contact_key::Entity::find().count(conn).await?;
    let done = contact_key::Entity::find()
        .filter(contact_key::Column::MasterKeyId.eq(keys.masters.current_id()))
        .count(conn)
        .await?;
    Ok((done, total))
}

/// Re-wraps the blind index key with the current master key, if another one wrapped it.
pub async fn rewrap_blind_index_key(conn: &impl ConnectionTrait, keys: &KeyRing) -> StoreResult<bool> {
    let Some(row) = blind_index_key::Entity::find_by_id(CONTACT_INDEX).one(conn).await? else {
        return Ok(false);
    };
    if row.master_key_id == keys.masters.current_id() {
        return Ok(false);
    }
    let wrapped = WrappedKey { master_key_id: row.master_key_id, wrapped: row.wrapped_key };
    let rewrapped = BlindIndexKey::rewrap(&keys.masters, &wrapped).map_err(key_error("blind_index_key"))?;
    blind_index_key::Entity::update_many()
        .col_expr(blind_index_key::Column::MasterKeyId, Expr::value(rewrapped.master_key_id))
        .col_expr(blind_index_key::Column::WrappedKey, Expr::value(rewrapped.wrapped))
        .filter(blind_index_key::Column::Name.eq(CONTACT_INDEX))
        .exec(conn)
        .await?;
    Ok(true)
}

/// Re-wraps up to `limit` data keys that another master key wrapped, of contacts after `after`
/// in id order. Returns how many, and the last contact whose key it re-wrapped: the next call
/// starts there instead of walking again past every key re-wrapped so far.
/// Keys already under the current master key are never selected, so a rotation that was
/// interrupted picks up where it stopped.
pub async fn rewrap_data_keys(
    conn: &impl ConnectionTrait,
    keys: &KeyRing,
    after: Option<Uuid>,
    limit: u64,
) -> StoreResult<(u64, Option<Uuid>)> {
    let mut query = contact_key::Entity::find().filter(contact_key::Column::MasterKeyId.ne(keys.masters.current_id()));
    if let Some(after) = after {
        query = query.filter(contact_key::Column::ContactId.gt(after));
    }
    let rows = query.order_by_asc(contact_key::Column::ContactId).limit(limit).all(conn).await?;
    let count = rows.len() as u64;
    let last = rows.last().map(|row| row.contact_id);
    let mut rewrapped = Vec::with_capacity(rows.len());
    for row in rows {
        let wrapped = WrappedKey { master_key_id: row.master_key_id, wrapped: row.wrapped_key };
        let new =
            DataKey::rewrap(&keys.masters, &wrapped, &row.contact_id.to_string()).map_err(key_error("contact_key"))?;
        rewrapped.push(Rewrapped { contact_id: row.contact_id, old_master_key_id: wrapped.master_key_id, new });
    }
    store_rewrapped(conn, &rewrapped).await?;
    Ok((count, last))
}

/// A data key re-wrapped in memory, with the master key id it was read under.
struct Rewrapped {
    contact_id: Uuid,
    old_master_key_id: String,
    new: WrappedKey,
}

/// Re-wrapped keys per UPDATE: four bound values each, well under SQLite's limit.
const REWRAPS_PER_STATEMENT: usize = 1_000;

/// Writes re-wrapped keys set-wise, one `UPDATE … FROM (VALUES …)` per chunk instead of one
/// statement per key (most of a rotation's time on SQLite). Each key is guarded by the master key
/// id it was read under: a concurrent rotation that got there first wins untouched. Both
/// databases name the columns of a VALUES list column1, column2, …
async fn store_rewrapped(conn: &impl ConnectionTrait, rewrapped: &[Rewrapped]) -> StoreResult<()> {
    let backend = conn.get_database_backend();
    let statements = rewrapped.chunks(REWRAPS_PER_STATEMENT).map(|chunk| {
        let mut sql = String::from(
            r#"UPDATE "contact_key" SET "master_key_id" = "rewrapped"."column3", "wrapped_key" = "rewrapped"."column4" FROM (VALUES "#,
        );
        push_value_rows(&mut sql, backend, chunk.len(), 4);
        let mut values = Vec::with_capacity(chunk.len() * 4);
        for key in chunk {
            values.extend([
                Value::from(key.contact_id),
                Value::from(key.old_master_key_id.as_str()),
                Value::from(key.new.master_key_id.as_str()),
                Value::from(key.new.wrapped.as_str()),
            ]);
        }
        sql.push_str(
            r#") AS "rewrapped" WHERE "contact_key"."contact_id" = "rewrapped"."column1" AND "contact_key"."master_key_id" = "rewrapped"."column2""#,
        );
        Statement::from_sql_and_values(backend, sql, values)
    });
    execute_in_turn(conn, statements).await?;
    Ok(())
}

fn key_error(table: &'static str) -> impl Fn(CryptoError) -> StoreError {
    move |error| StoreError::Undecryptable { table, reason: error }
}
