//! Admin users, their sign-in sessions, and API keys. Secrets arrive here already hashed.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, sea_query::Expr,
};
use uuid::Uuid;

use super::{
    StoreError, StoreResult,
    entity::{admin_user as user, api_key as key, user_session as session},
};
use crate::domain::{
    access::{AdminUser, ApiKey, Role, Scopes},
    contact::EmailAddress,
};

/// What sign-in needs beyond the user: the hash to check and the throttle state.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub password_hash: String,
    pub failed_logins: i32,
    pub locked_until: Option<DateTime<Utc>>,
}

fn user_to_domain(model: user::Model) -> StoreResult<(AdminUser, Credentials)> {
    let corrupt = |column| StoreError::Corrupt { table: "admin_user", column };
    Ok((
        AdminUser {
            id: model.id,
            email: EmailAddress::parse(&model.email).map_err(|_| corrupt("email"))?,
            role: model.role.parse::<Role>().map_err(|_| corrupt("role"))?,
            created_at: model.created_at,
            disabled_at: model.disabled_at,
        },
        Credentials {
            password_hash: model.password_hash,
            failed_logins: model.failed_logins,
            locked_until: model.locked_until,
        },
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
        failed_logins: Set(0),
        locked_until: Set(None),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

pub async fn user_by_email(
    conn: &impl ConnectionTrait,
    email: &EmailAddress,
) -> StoreResult<Option<(AdminUser, Credentials)>> {
    user::Entity::find().filter(user::Column::Email.eq(email.as_str())).one(conn).await?.map(user_to_domain).transpose()
}

pub async fn user(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<AdminUser>> {
    Ok(user::Entity::find_by_id(id).one(conn).await?.map(user_to_domain).transpose()?.map(|(user, _)| user))
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

pub async fn count_active_owners(conn: &impl ConnectionTrait) -> StoreResult<u64> {
    use sea_orm::PaginatorTrait;
    Ok(user::Entity::find()
        .filter(user::Column::Role.eq(Role::Owner.as_str()))
        .filter(user::Column::DisabledAt.is_null())
        .count(conn)
        .await?)
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

pub async fn record_failed_login(
    conn: &impl ConnectionTrait,
    id: Uuid,
    failed_logins: i32,
    locked_until: Option<DateTime<Utc>>,
) -> StoreResult<()> {
    user::Entity::update_many()
        .col_expr(user::Column::FailedLogins, Expr::value(failed_logins))
        .col_expr(user::Column::LockedUntil, Expr::value(locked_until))
        .filter(user::Column::Id.eq(id))
        .exec(conn)
        .await?;
    Ok(())
}

/// Clears the throttle after a good password, replacing the hash when its parameters are stale.
pub async fn record_successful_login(
    conn: &impl ConnectionTrait,
    id: Uuid,
    new_password_hash: Option<String>,
) -> StoreResult<()> {
    let mut update = user::Entity::update_many()
        .col_expr(user::Column::FailedLogins, Expr::value(0))
        .col_expr(user::Column::LockedUntil, Expr::value(Option::<DateTime<Utc>>::None));
    if let Some(hash) = new_password_hash {
        update = update.col_expr(user::Column::PasswordHash, Expr::value(hash));
    }
    update.filter(user::Column::Id.eq(id)).exec(conn).await?;
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
        previous_refresh_hash: Set(None),
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
    Rotated { user_id: Uuid },
    /// The presented token was already replaced: someone kept a copy. The session is revoked.
    Reused,
    /// No open session knows this token.
    Unknown,
}

/// Swaps the session's refresh token if `presented_hash` is the current one. The compare-and-set
/// in one UPDATE makes two concurrent refreshes with the same token yield one winner.
pub async fn rotate_refresh(
    conn: &impl ConnectionTrait,
    session_id: Uuid,
    presented_hash: &str,
    new_hash: &str,
    now: DateTime<Utc>,
) -> StoreResult<Rotation> {
    let swapped = session::Entity::update_many()
        .col_expr(session::Column::PreviousRefreshHash, Expr::value(presented_hash))
        .col_expr(session::Column::RefreshHash, Expr::value(new_hash))
        .col_expr(session::Column::RefreshedAt, Expr::value(now))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::RefreshHash.eq(presented_hash))
        .filter(session::Column::RevokedAt.is_null())
        .filter(session::Column::ExpiresAt.gt(now))
        .exec(conn)
        .await?;
    if swapped.rows_affected == 1 {
        let user_id = session::Entity::find_by_id(session_id).one(conn).await?.map(|model| model.user_id);
        return Ok(user_id.map_or(Rotation::Unknown, |user_id| Rotation::Rotated { user_id }));
    }
    let reused = session::Entity::update_many()
        .col_expr(session::Column::RevokedAt, Expr::value(now))
        .filter(session::Column::Id.eq(session_id))
        .filter(session::Column::PreviousRefreshHash.eq(presented_hash))
        .filter(session::Column::RevokedAt.is_null())
        .exec(conn)
        .await?;
    Ok(if reused.rows_affected == 1 { Rotation::Reused } else { Rotation::Unknown })
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
