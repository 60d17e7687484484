//! Admin users, their sign-in sessions, and API keys. Secrets arrive here already hashed.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set,
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait, OnConflict},
};
use uuid::Uuid;

use super::{
    StoreError, StoreResult,
    entity::{
        admin_user as user, api_key as key, contact_token_revocation as revocation, login_throttle as throttle,
        used_refresh_token as used, user_session as session,
    },
};
use crate::domain::{
    access::{AdminUser, ApiKey, Role, Scopes},
    contact::{ContactId, EmailAddress},
};

fn user_to_domain(model: user::Model) -> StoreResult<(AdminUser, String)> {
    let corrupt = |column| StoreError::Corrupt { table: "admin_user", column };
    Ok((
        AdminUser {
            id: model.id,
            email: EmailAddress::parse(&model.email).map_err(|_| corrupt("email"))?,
            role: model.role.parse::<Role>().map_err(|_| corrupt("role"))?,
            created_at: model.created_at,
            disabled_at: model.disabled_at,
        },
        model.password_hash,
    ))
}

pub async fn insert_user(conn: &impl ConnectionTrait, user: &AdminUser, password_hash: &str) -> StoreResult<()> {
    user::Entity::insert(user::ActiveModel {
        id: Set(user.id),
        email: Set(user.email.as_str().to_owned()),
        password_hash: Set(password_hash.to_owned()),
        role: Set(user.role.as_str().to_owned()),
        created_at: Set(user.created_at),
        disabled_at: Set(user.disabled_at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// The user with this address and their password hash.
pub async fn user_by_email(
    conn: &impl ConnectionTrait,
    email: &EmailAddress,
) -> StoreResult<Option<(AdminUser, String)>> {
    user::Entity::find().filter(user::Column::Email.eq(email.as_str())).one(conn).await?.map(user_to_domain).transpose()
}

pub async fn user(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<AdminUser>> {
    Ok(user::Entity::find_by_id(id).one(conn).await?.map(user_to_domain).transpose()?.map(|(user, _)| user))
}

/// The user, locked until the transaction ends (PostgreSQL; SQLite's write transaction already
/// excludes other writers).
pub async fn user_for_update(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<AdminUser>> {
    let found = user::Entity::find_by_id(id).lock_exclusive().one(conn).await?;
    Ok(found.map(user_to_domain).transpose()?.map(|(user, _)| user))
}

pub async fn users(conn: &impl ConnectionTrait) -> StoreResult<Vec<AdminUser>> {
    user::Entity::find()
        .order_by_asc(user::Column::Email)
        .all(conn)
        .await?
        .into_iter()
        .map(|model| user_to_domain(model).map(|(user, _)| user))
        .collect()
}

/// Counts the active owners and locks their rows until the transaction ends, so that two
/// concurrent demotions cannot both see another owner left.
pub async fn lock_active_owners(conn: &impl ConnectionTrait) -> StoreResult<usize> {
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(Role::Owner.as_str()))
        .filter(user::Column::DisabledAt.is_null())
        .lock_exclusive()
        .all(conn)
        .await?
        .len())
}

pub async fn any_user(conn: &impl ConnectionTrait) -> StoreResult<bool> {
    Ok(user::Entity::find().one(conn).await?.is_some())
}

pub async fn update_user(conn: &impl ConnectionTrait, user: &AdminUser) -> StoreResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::Role, Expr::value(user.role.as_str()))
        .col_expr(user::Column::DisabledAt, Expr::value(user.disabled_at))
        .filter(user::Column::Id.eq(user.id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Counts one more sign-in attempt for an address and returns the attempts in a row and any
/// lock in force. One upsert, so concurrent attempts each count (the row lock orders them).
pub async fn count_attempt(
    conn: &impl ConnectionTrait,
    address_hash: &str,
    now: DateTime<Utc>,
) -> StoreResult<(i32, Option<DateTime<Utc>>)> {
    let counted = throttle::Entity::insert(throttle::ActiveModel {
        address_hash: Set(address_hash.to_owned()),
        failures: Set(1),
        locked_until: Set(None),
        updated_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(throttle::Column::AddressHash)
            .value(throttle::Column::Failures, Expr::col((throttle::Entity, throttle::Column::Failures)).add(1))
            .value(throttle::Column::UpdatedAt, now)
            .to_owned(),
    )
    .exec_with_returning(conn)
    .await?;
    Ok((counted.failures, counted.locked_until))
}

pub async fn lock_address(conn: &impl ConnectionTrait, address_hash: &str, until: DateTime<Utc>) -> StoreResult<()> {
    throttle::Entity::update_many()
        .col_expr(throttle::Column::LockedUntil, Expr::value(until))
        .filter(throttle::Column::AddressHash.eq(address_hash))
        .exec(conn)
        .await?;
    Ok(())
}

/// Forgets the failures of an address after a good password.
pub async fn clear_attempts(conn: &impl ConnectionTrait, address_hash: &str) -> StoreResult<()> {
    throttle::Entity::delete_by_id(address_hash.to_owned()).exec(conn).await?;
    Ok(())
}

/// Replaces a password hash made with parameters weaker than today's.
pub async fn replace_password_hash(conn: &impl ConnectionTrait, id: Uuid, hash: String) -> StoreResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::PasswordHash, Expr::value(hash))
        .filter(user::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// A sign-in session: one chain of refresh tokens, of which only the newest is valid.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub id: Uuid,
    pub user_id: Uuid,
    pub refresh_hash: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

pub async fn insert_session(conn: &impl ConnectionTrait, new: &NewSession) -> StoreResult<()> {
    session::Entity::insert(session::ActiveModel {
        id: Set(new.id),
        user_id: Set(new.user_id),
        refresh_hash: Set(new.refresh_hash.clone()),
        created_at: Set(new.created_at),
        refreshed_at: Set(new.created_at),
        expires_at: Set(new.expires_at),
        revoked_at: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// The user of a session that is still open at `now`, with the role they hold now: one
/// statement per request, so that sign-out, disabling and role changes apply at once.
pub async fn user_of_open_session(
    conn: &impl ConnectionTrait,
    session_id: Uuid,
    user_id: Uuid,
    now: DateTime<Utc>,
) -> StoreResult<Option<AdminUser>> {
    let found = user::Entity::find()
        .inner_join(session::Entity)
        .filter(session::Column::Id.eq(session_id))
        .filter(user::Column::Id.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .filter(user::Column::DisabledAt.is_null())
        .one(conn)
        .await?;
    Ok(found.map(user_to_domain).transpose()?.map(|(user, _)| user))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rotation {
    /// The presented token was current; the session now expects the new one.
    Rotated { user_id: Uuid, expires_at: DateTime<Utc> },
    /// The presented token was traded in before: someone kept a copy. The session is revoked.
    Reused,
    /// No open session knows this token.
    Unknown,
}

/// Swaps the session's refresh token if `presented_hash` is the current one. The compare-and-set
/// in one UPDATE makes two concurrent refreshes with the same token yield one winner; the
/// traded-in token is remembered, so presenting it again at any later time revokes the session.
pub async fn rotate_refresh(
    conn: &impl ConnectionTrait,
    session_id: Uuid,
    presented_hash: &str,
    new_hash: &str,
    now: DateTime<Utc>,
) -> StoreResult<Rotation> {
    let swapped = session::Entity::update_many()
        .col_expr(session::Column::RefreshHash, Expr::value(new_hash))
        .col_expr(session::Column::RefreshedAt, Expr::value(now))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RefreshHash.eq(presented_hash))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?;
    if swapped.rows_affected == 1 {
        used::Entity::insert(used::ActiveModel { hash: Set(presented_hash.to_owned()), session_id: Set(session_id) })
            .exec_without_returning(conn)
            .await?;
        let session = session::Entity::find_by_id(session_id).one(conn).await?;
        return Ok(session.map_or(Rotation::Unknown, |session| Rotation::Rotated {
            user_id: session.user_id,
            expires_at: session.expires_at,
        }));
    }
    let traded_in = used::Entity::find()
        .filter(used::Column::Hash.eq(presented_hash))
        .filter(used::Column::SessionId.eq(session_id))
        .one(conn)
        .await?;
    if traded_in.is_none() {
        return Ok(Rotation::Unknown);
    }
    let revoked = revoke_session(conn, session_id, now).await?;
    Ok(if revoked { Rotation::Reused } else { Rotation::Unknown })
}

pub async fn revoke_session(conn: &impl ConnectionTrait, session_id: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
    let revoked = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(revoked.rows_affected == 1)
}

pub async fn revoke_sessions_of(conn: &impl ConnectionTrait, user_id: Uuid, now: DateTime<Utc>) -> StoreResult<u64> {
    let revoked = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::UserId.eq(user_id))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(revoked.rows_affected)
}

fn key_to_domain(model: key::Model) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: model.id,
        name: model.name,
        prefix: model.prefix,
        scopes: Scopes::from_stored(&model.scopes)
            .map_err(|_| StoreError::Corrupt { table: "api_key", column: "scopes" })?,
        created_at: model.created_at,
        expires_at: model.expires_at,
        last_used_at: model.last_used_at,
        revoked_at: model.revoked_at,
    })
}

pub async fn insert_key(conn: &impl ConnectionTrait, api_key: &ApiKey, secret_hash: &str) -> StoreResult<()> {
    key::Entity::insert(key::ActiveModel {
        id: Set(api_key.id),
        name: Set(api_key.name.clone()),
        prefix: Set(api_key.prefix.clone()),
        secret_hash: Set(secret_hash.to_owned()),
        scopes: Set(api_key.scopes.to_stored()),
        created_at: Set(api_key.created_at),
        expires_at: Set(api_key.expires_at),
        last_used_at: Set(None),
        revoked_at: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

pub async fn key_by_secret_hash(conn: &impl ConnectionTrait, secret_hash: &str) -> StoreResult<Option<ApiKey>> {
    key::Entity::find().filter(key::Column::SecretHash.eq(secret_hash)).one(conn).await?.map(key_to_domain).transpose()
}

pub async fn key(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<ApiKey>> {
    key::Entity::find_by_id(id).one(conn).await?.map(key_to_domain).transpose()
}

pub async fn keys(conn: &impl ConnectionTrait) -> StoreResult<Vec<ApiKey>> {
    key::Entity::find().order_by_asc(key::Column::Id).all(conn).await?.into_iter().map(key_to_domain).collect()
}

/// Records use at most once per `resolution`, so a busy key does not turn every read into a write.
pub async fn touch_key(
    conn: &impl ConnectionTrait,
    id: Uuid,
    now: DateTime<Utc>,
    resolution: chrono::Duration,
) -> StoreResult<()> {
    key::Entity::update_many()
        .col_expr(key::Column::LastUsedAt, Expr::value(now))
        .filter(key::Column::Id.eq(id))
        .filter(
            Condition::any().add(key::Column::LastUsedAt.is_null()).add(key::Column::LastUsedAt.lt(now - resolution)),
        )
        .exec(conn)
        .await?;
    Ok(())
}

pub async fn revoke_key(conn: &impl ConnectionTrait, id: Uuid, now: DateTime<Utc>) -> StoreResult<bool> {
    let revoked = key::Entity::update_many()
        .col_expr(key::Column::RevokedAt, Expr::value(now))
        .filter(key::Column::Id.eq(id))
        .filter(key::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(revoked.rows_affected == 1)
}

/// Every token issued to the contact up to `at` stops working.
pub async fn revoke_contact_tokens(
    conn: &impl ConnectionTrait,
    contact_id: ContactId,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    revocation::Entity::insert(revocation::ActiveModel { contact_id: Set(contact_id.as_uuid()), revoked_at: Set(at) })
        .on_conflict(
            OnConflict::column(revocation::Column::ContactId).update_column(revocation::Column::RevokedAt).to_owned(),
        )
        .exec_without_returning(conn)
        .await?;
    Ok(())
}

/// When the contact's tokens were last revoked, if ever.
pub async fn contact_tokens_revoked_at(
    conn: &impl ConnectionTrait,
    contact_id: ContactId,
) -> StoreResult<Option<DateTime<Utc>>> {
    Ok(revocation::Entity::find_by_id(contact_id.as_uuid()).one(conn).await?.map(|row| row.revoked_at))
}
