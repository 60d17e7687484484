//! Signing in and out, users, API keys and contact tokens, and turning a presented bearer
//! credential into an [`Actor`]. What each actor may then do is checked by the GraphQL guards.

use std::{net::IpAddr, num::NonZeroU32};

use chrono::{DateTime, Duration, Utc};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tracing::instrument;
use uuid::Uuid;

use super::{Actor, Error, RequestContext, Result, Services};
use crate::domain::request::client_of;
use crate::{
    audit::{self, Changes},
    crypto::{
        passwords, random_secret, secret_digest,
        tokens::{Audience, TokenSigner},
    },
    domain::{
        access::{AdminUser, ApiKey, ContactTokenPurpose, Password, Permission, Role, Scopes},
        contact::{ContactId, ContactRef, EmailAddress},
    },
    store::{self, access::Rotation},
};

/// Short enough that a stolen access token is soon useless; the refresh token renews it.
pub const ACCESS_TOKEN_LIFETIME: Duration = Duration::minutes(15);
/// A session ends this long after sign-in however often it is refreshed.
pub const SESSION_LIFETIME: Duration = Duration::days(30);
/// Consecutive wrong passwords after which an account is locked for a while.
pub const FAILED_LOGINS_BEFORE_LOCK: i32 = 5;
const LONGEST_LOCK: Duration = Duration::hours(1);
/// Sign-in attempts one address may make per minute, whichever accounts they name.
const LOGIN_ATTEMPTS_PER_IP_PER_MINUTE: u32 = 10;
/// How often the last-used time of an API key is written at most.
const KEY_USE_RESOLUTION: Duration = Duration::minutes(1);

pub const API_KEY_PREFIX: &str = "rpk_";
/// Blind-index kind of the addresses typed at sign-in.
const LOGIN_ADDRESS_INDEX: &str = "login_address";
const REFRESH_TOKEN_PREFIX: &str = "rrt_";

/// Per-address throttle for sign-in attempts, shared by all requests of this process.
pub struct LoginThrottle(DefaultKeyedRateLimiter<IpAddr>);

impl LoginThrottle {
    pub fn new() -> Self {
        let per_minute = NonZeroU32::new(LOGIN_ATTEMPTS_PER_IP_PER_MINUTE).unwrap_or(NonZeroU32::MIN);
        Self(RateLimiter::keyed(Quota::per_minute(per_minute)))
    }

    fn check(&self, ip: IpAddr) -> Result<()> {
        // Forgetting addresses whose buckets are full again keeps memory bounded by the number
        // of addresses seen within the last minute.
        if self.0.len() > 10_000 {
            self.0.retain_recent();
        }
        self.0.check_key(&client_of(ip)).map_err(|not_until| Error::RateLimited {
            retry_after: not_until
                .wait_time_from(governor::clock::Clock::now(&governor::clock::DefaultClock::default())),
        })
    }
}

impl Default for LoginThrottle {
    fn default() -> Self {
        Self::new()
    }
}

/// What a successful sign-in or refresh hands back. The refresh token is shown only here.
#[derive(Clone)]
pub struct SignedIn {
    pub user: AdminUser,
    pub access_token: String,
    pub access_expires_at: DateTime<Utc>,
    pub refresh_token: String,
    pub session_expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, Deserialize)]
struct AccessClaims {
    sid: Uuid,
}

#[derive(Debug, Serialize, Deserialize)]
struct ContactClaims {
    purpose: String,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub name: String,
    pub scopes: Scopes,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Default)]
pub struct UserAlteration {
    pub role: Option<Role>,
    pub disabled: Option<bool>,
}

/// A contact token and when it stops working.
#[derive(Clone)]
pub struct ContactToken {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

// Tokens are credentials: a stray `?value` in a log line must not print them.
impl std::fmt::Debug for SignedIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignedIn")
            .field("user", &self.user.id)
            .field("session_expires_at", &self.session_expires_at)
            .finish()
    }
}

impl std::fmt::Debug for ContactToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContactToken").field("expires_at", &self.expires_at).finish()
    }
}

/// See [`Services::link_signer`].
pub(crate) struct LinkSigner(TokenSigner);

impl LinkSigner {
    pub(crate) fn sign(&self, contact_id: ContactId, purpose: ContactTokenPurpose, now: DateTime<Utc>) -> ContactToken {
        let expires_at = now + purpose.lifetime();
        let claims = ContactClaims { purpose: purpose.as_str().to_owned() };
        let token = self.0.sign(Audience::Contact, &contact_id.to_string(), claims, now, expires_at);
        ContactToken { token, expires_at }
    }
}

impl Services {
    fn signer(&self) -> Result<TokenSigner> {
        Ok(TokenSigner::new(&self.db.keys()?.masters))
    }

    /// Who presents `bearer`: an API key (`rpk_…`), a signed-in user's access token, or a
    /// contact token. Anything else, and anything expired or revoked, is unauthenticated.
    pub async fn authenticate_bearer(&self, bearer: &str) -> Result<Actor> {
        let now = self.now();
        if bearer.starts_with(API_KEY_PREFIX) {
            let conn = self.db.connection();
            let key = store::access::key_by_secret_hash(conn, &secret_digest(bearer))
                .await?
                .filter(|key| key.is_usable(now))
                .ok_or(Error::Unauthenticated)?;
            // The row just read says whether the time is due: most requests skip the write.
            if key.last_used_at.is_none_or(|used| used < now - KEY_USE_RESOLUTION) {
                store::access::touch_key(conn, key.id, now, KEY_USE_RESOLUTION).await?;
            }
            return Ok(Actor::ApiKey { id: key.id, scopes: key.scopes });
        }
        let signer = self.signer()?;
        if let Ok(access) = signer.verify::<AccessClaims>(Audience::Admin, bearer) {
            let user_id = Uuid::parse_str(&access.subject).map_err(|_| Error::Unauthenticated)?;
            let session = access.claims.sid;
            let user = store::access::user_of_open_session(self.db.connection(), session, user_id, now)
                .await?
                .ok_or(Error::Unauthenticated)?;
            return Ok(Actor::User { id: user.id, role: user.role, session });
        }
        let contact = signer.verify::<ContactClaims>(Audience::Contact, bearer).map_err(|_| Error::Unauthenticated)?;
        let contact_id = ContactId::from_uuid(Uuid::parse_str(&contact.subject).map_err(|_| Error::Unauthenticated)?);
        let revoked_at = store::access::contact_tokens_revoked_at(self.db.connection(), contact_id).await?;
        if revoked_at.is_some_and(|revoked_at| contact.issued_at <= revoked_at) {
            return Err(Error::Unauthenticated);
        }
        Ok(Actor::Contact { contact_id, purpose: contact.claims.purpose.parse().map_err(|_| Error::Unauthenticated)? })
    }

    /// The actor may manage users of `role`: owners manage everyone, admins all but owners.
    fn require_manages(&self, ctx: &RequestContext, role: Role) -> Result<()> {
        self.require(ctx, Permission::UsersManage)?;
        match ctx.actor.role() {
            Some(own) if own.may_manage(role) => Ok(()),
            _ => Err(Error::Forbidden),
        }
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, role = %role))]
    pub async fn create_user(
        &self,
        ctx: &RequestContext,
        email: EmailAddress,
        password: &Password,
        role: Role,
    ) -> Result<AdminUser> {
        self.require_manages(ctx, role)?;
        let now = self.now();
        let user = AdminUser { id: Uuid::now_v7(), email, role, created_at: now, disabled_at: None };
        // Hashing takes tens of milliseconds: not while holding the write lock.
        let hash = passwords::hash(password);
        let tx = self.db.begin_write().await?;
        store::access::insert_user(&tx, &user, &hash).await?;
        let mut changes = Changes::new();
        changes.personal("email", None, Some(json!(user.email.as_str()))).field(
            "role",
            None,
            Some(json!(role.as_str())),
        );
        audit::append(&tx, ctx, now, audit::Entry::new("user.created", "user", user.id.to_string(), changes)).await?;
        tx.commit().await?;
        Ok(user)
    }

    pub async fn list_users(&self, ctx: &RequestContext) -> Result<Vec<AdminUser>> {
        self.require(ctx, Permission::UsersManage)?;
        Ok(store::access::users(self.db.connection()).await?)
    }

    /// Whether anyone can sign in yet, for the start-up hint.
    pub async fn any_user_exists(&self) -> Result<bool> {
        Ok(store::access::any_user(self.db.connection()).await?)
    }

    pub async fn find_user(&self, id: Uuid) -> Result<AdminUser> {
        store::access::user(self.db.connection(), id).await?.ok_or(Error::NotFound { what: "user" })
    }

    /// Changes a user's role or disables them. Disabling ends their sessions at once; the last
    /// active owner can be neither demoted nor disabled, so a deployment always has one.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, user = %id))]
    pub async fn alter_user(&self, ctx: &RequestContext, id: Uuid, alteration: UserAlteration) -> Result<AdminUser> {
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let before = store::access::user_for_update(&tx, id).await?.ok_or(Error::NotFound { what: "user" })?;
        self.require_manages(ctx, before.role)?;
        let mut user = before.clone();
        if let Some(role) = alteration.role {
            self.require_manages(ctx, role)?;
            user.role = role;
        }
        if let Some(disabled) = alteration.disabled {
            user.disabled_at = if disabled { before.disabled_at.or(Some(now)) } else { None };
        }
        let stops_being_active_owner = before.role == Role::Owner
            && before.disabled_at.is_none()
            && (user.role != Role::Owner || user.disabled_at.is_some());
        if stops_being_active_owner && store::access::lock_active_owners(&tx).await? <= 1 {
            return Err(Error::Conflict {
                field: None,
                reason: "the last active owner cannot be demoted or disabled".into(),
            });
        }
        store::access::update_user(&tx, &user).await?;
        if user.disabled_at.is_some() {
            store::access::revoke_sessions_of(&tx, id, now).await?;
        }
        let mut changes = Changes::new();
        changes.field("role", Some(json!(before.role.as_str())), Some(json!(user.role.as_str()))).field(
            "disabled",
            Some(json!(before.disabled_at.is_some())),
            Some(json!(user.disabled_at.is_some())),
        );
        if !changes.is_empty() {
            audit::append(&tx, ctx, now, audit::Entry::new("user.altered", "user", id.to_string(), changes)).await?;
        }
        tx.commit().await?;
        Ok(user)
    }

    /// Checks a password and opens a session. Every attempt is counted against the address
    /// typed before the password is checked, known account or not, so that concurrent guesses
    /// all count and a lock looks the same for every address; attempts are also throttled per
    /// client address. Unknown addresses, disabled accounts and wrong passwords get the same
    /// answer after the same work.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn login(&self, ctx: &RequestContext, email: &str, password: &str) -> Result<SignedIn> {
        if let Some(ip) = ctx.ip {
            self.login_throttle.check(ip)?;
        }
        let now = self.now();
        let parsed = EmailAddress::parse(email).ok();
        let address = self.db.keys()?.blind_index.index(
            LOGIN_ADDRESS_INDEX,
            &parsed.as_ref().map_or_else(|| email.trim().to_lowercase(), |email| email.as_str().to_owned()),
        );
        let tx = self.db.begin_write().await?;
        let (attempts, locked_until) = store::access::count_attempt(&tx, &address, now).await?;
        if let Some(locked_until) = locked_until.filter(|until| *until > now) {
            // Rolled back: waiting out a lock does not lengthen it.
            return Err(Error::RateLimited { retry_after: (locked_until - now).to_std().unwrap_or_default() });
        }
        if let Some(lock) = lock_after(attempts) {
            store::access::lock_address(&tx, &address, now + lock).await?;
        }
        let found = match &parsed {
            Some(email) => store::access::user_by_email(&tx, email).await?,
            None => None,
        }
        .filter(|(user, _)| user.disabled_at.is_none());
        tx.commit().await?;

        let hash = found.as_ref().map(|(_, hash)| hash.clone());
        let matches = self.verify_password(hash.clone(), password).await?;
        let tx = self.db.begin_write().await?;
        let user = match found {
            Some((user, _)) if matches => user,
            found => {
                let mut changes = Changes::new();
                changes.field("attemptsInARow", None, Some(json!(attempts)));
                let (kind, target) = match found {
                    Some((user, _)) => ("user", user.id.to_string()),
                    None => ("login_address", address),
                };
                audit::append(&tx, ctx, now, audit::Entry::new("user.login_failed", kind, target, changes)).await?;
                tx.commit().await?;
                return Err(Error::Unauthenticated);
            }
        };
        store::access::clear_attempts(&tx, &address).await?;
        if hash.as_deref().is_some_and(passwords::needs_rehash)
            && let Ok(password) = Password::parse(password)
        {
            store::access::replace_password_hash(&tx, user.id, passwords::hash(&password)).await?;
        }
        let session_id = Uuid::now_v7();
        let refresh_token = refresh_token_for(session_id);
        let session_expires_at = now + SESSION_LIFETIME;
        let session = store::access::NewSession {
            id: session_id,
            user_id: user.id,
            refresh_hash: secret_digest(&refresh_token),
            created_at: now,
            expires_at: session_expires_at,
        };
        store::access::insert_session(&tx, &session).await?;
        let mut changes = Changes::new();
        changes.field("session", None, Some(json!(session_id)));
        audit::append(&tx, ctx, now, audit::Entry::new("user.signed_in", "user", user.id.to_string(), changes)).await?;
        let signer = self.signer()?;
        tx.commit().await?;
        let (access_token, access_expires_at) = access_token(&signer, &user, session_id, now, session_expires_at);
        Ok(SignedIn { user, access_token, access_expires_at, refresh_token, session_expires_at })
    }

    /// Checks `password` against `hash`, or spends the same time when there is no account, off
    /// the async workers and a bounded number at a time.
    async fn verify_password(&self, hash: Option<String>, password: &str) -> Result<bool> {
        let _permit = self.password_work.acquire().await.map_err(|error| Error::Internal(error.into()))?;
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || match hash {
            Some(hash) => passwords::verify(&hash, &password),
            None => {
                passwords::verify_against_nothing(&password);
                false
            }
        })
        .await
        .map_err(|error| Error::Internal(error.into()))
    }

    /// Trades a refresh token for a new access token and a new refresh token; the old one stops
    /// working. Presenting an old one again means it was copied: the whole session is revoked.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn refresh(&self, ctx: &RequestContext, refresh_token: &str) -> Result<SignedIn> {
        let session_id = session_of_refresh_token(refresh_token).ok_or(Error::Unauthenticated)?;
        let now = self.now();
        let next = refresh_token_for(session_id);
        let signer = self.signer()?;
        let tx = self.db.begin_write().await?;
        let rotation =
            store::access::rotate_refresh(&tx, session_id, &secret_digest(refresh_token), &secret_digest(&next), now)
                .await?;
        let (user_id, session_expires_at) = match rotation {
            Rotation::Rotated { user_id, expires_at } => (user_id, expires_at),
            Rotation::Reused => {
                let mut changes = Changes::new();
                changes.field("revoked", Some(json!(false)), Some(json!(true)));
                let entry = audit::Entry::new("session.reuse_detected", "session", session_id.to_string(), changes);
                audit::append(&tx, ctx, now, entry).await?;
                tx.commit().await?;
                return Err(Error::Unauthenticated);
            }
            Rotation::Unknown => return Err(Error::Unauthenticated),
        };
        let user =
            store::access::user_of_open_session(&tx, session_id, user_id, now).await?.ok_or(Error::Unauthenticated)?;
        tx.commit().await?;
        let (access_token, access_expires_at) = access_token(&signer, &user, session_id, now, session_expires_at);
        Ok(SignedIn { user, access_token, access_expires_at, refresh_token: next, session_expires_at })
    }

    /// Ends the caller's session: its refresh token and every access token issued in it stop working.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn logout(&self, ctx: &RequestContext) -> Result<()> {
        let Actor::User { session, .. } = &ctx.actor else {
            return Err(Error::Forbidden);
        };
        let now = self.now();
        let tx = self.db.begin_write().await?;
        if store::access::revoke_session(&tx, *session, now).await? {
            let mut changes = Changes::new();
            changes.field("revoked", Some(json!(false)), Some(json!(true)));
            audit::append(&tx, ctx, now, audit::Entry::new("session.revoked", "session", session.to_string(), changes))
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Creates a key and returns it with its secret, which is not stored and never shown again.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn create_api_key(&self, ctx: &RequestContext, new: NewApiKey) -> Result<(ApiKey, String)> {
        self.require(ctx, Permission::KeysManage)?;
        let now = self.now();
        if new.expires_at.is_some_and(|expires_at| expires_at <= now) {
            return Err(Error::validation("expiresAt", "must be in the future"));
        }
        let secret = format!("{API_KEY_PREFIX}{}", random_secret());
        let api_key = ApiKey {
            id: Uuid::now_v7(),
            name: new.name,
            prefix: secret.chars().take(12).collect(),
            scopes: new.scopes,
            created_at: now,
            expires_at: new.expires_at,
            last_used_at: None,
            revoked_at: None,
        };
        let tx = self.db.begin_write().await?;
        store::access::insert_key(&tx, &api_key, &secret_digest(&secret)).await?;
        let mut changes = Changes::new();
        changes
            .field("name", None, Some(json!(api_key.name)))
            .field("scopes", None, Some(json!(api_key.scopes.to_stored())))
            .field("expiresAt", None, api_key.expires_at.map(|at| json!(at)));
        audit::append(&tx, ctx, now, audit::Entry::new("api_key.created", "api_key", api_key.id.to_string(), changes))
            .await?;
        tx.commit().await?;
        Ok((api_key, secret))
    }

    pub async fn list_api_keys(&self, ctx: &RequestContext) -> Result<Vec<ApiKey>> {
        self.require(ctx, Permission::KeysManage)?;
        Ok(store::access::keys(self.db.connection()).await?)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %id))]
    pub async fn revoke_api_key(&self, ctx: &RequestContext, id: Uuid) -> Result<ApiKey> {
        self.require(ctx, Permission::KeysManage)?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        if store::access::revoke_key(&tx, id, now).await? {
            let mut changes = Changes::new();
            changes.field("revokedAt", None, Some(json!(now)));
            audit::append(&tx, ctx, now, audit::Entry::new("api_key.revoked", "api_key", id.to_string(), changes))
                .await?;
        }
        let api_key = store::access::key(&tx, id).await?.ok_or(Error::NotFound { what: "API key" })?;
        tx.commit().await?;
        Ok(api_key)
    }

    /// A signed link credential for one contact and one purpose. Issuing changes nothing stored,
    /// but is audited: whoever holds the token can act as that contact for its purpose.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact = %contact_id, purpose = %purpose))]
    pub async fn issue_contact_token(
        &self,
        ctx: &RequestContext,
        contact_id: ContactId,
        purpose: ContactTokenPurpose,
    ) -> Result<ContactToken> {
        // A token reads the contact, so issuing one takes reading rights as well as writing ones.
        self.require(ctx, Permission::ProfilesRead)?;
        self.require(ctx, Permission::ProfilesWrite)?;
        let now = self.now();
        let expires_at = now + purpose.lifetime();
        let tx = self.db.begin_write().await?;
        let reference = ContactRef::Id(contact_id);
        if store::contacts::resolve(&tx, self.db.keys()?, std::slice::from_ref(&reference)).await?.is_empty() {
            return Err(Error::NotFound { what: "contact" });
        }
        let mut changes = Changes::new();
        changes.field("purpose", None, Some(Value::from(purpose.as_str()))).field(
            "expiresAt",
            None,
            Some(json!(expires_at)),
        );
        let entry = audit::Entry::new("contact_token.issued", "contact", contact_id.to_string(), changes);
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        Ok(self.link_signer()?.sign(contact_id, purpose, now))
    }

    /// Revokes every link issued to the contact so far (a forwarded or leaked email); links
    /// issued afterwards work.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn revoke_contact_tokens(&self, ctx: &RequestContext, contact_id: ContactId) -> Result<DateTime<Utc>> {
        self.require(ctx, Permission::ProfilesWrite)?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let reference = ContactRef::Id(contact_id);
        if store::contacts::resolve(&tx, self.db.keys()?, std::slice::from_ref(&reference)).await?.is_empty() {
            return Err(Error::NotFound { what: "contact" });
        }
        store::access::revoke_contact_tokens(&tx, contact_id, now).await?;
        let mut changes = Changes::new();
        changes.field("revokedAt", None, Some(json!(now)));
        let entry = audit::Entry::new("contact_token.revoked", "contact", contact_id.to_string(), changes);
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        Ok(now)
    }

    /// Signs contact tokens for links in messages being sent. They are not audited one by one:
    /// the send that carries each is on record.
    pub(crate) fn link_signer(&self) -> Result<LinkSigner> {
        Ok(LinkSigner(self.signer()?))
    }
}

fn access_token(
    signer: &TokenSigner,
    user: &AdminUser,
    session: Uuid,
    now: DateTime<Utc>,
    session_expires_at: DateTime<Utc>,
) -> (String, DateTime<Utc>) {
    let expires_at = (now + ACCESS_TOKEN_LIFETIME).min(session_expires_at);
    (signer.sign(Audience::Admin, &user.id.to_string(), AccessClaims { sid: session }, now, expires_at), expires_at)
}

/// Locks double in length with each failure past the threshold, up to an hour.
fn lock_after(failures: i32) -> Option<Duration> {
    let beyond = failures - FAILED_LOGINS_BEFORE_LOCK;
    (beyond >= 0).then(|| (Duration::minutes(1) * 2i32.saturating_pow(beyond.min(10) as u32)).min(LONGEST_LOCK))
}

/// `rrt_<session id>_<secret>`: the session id lets a refresh find its row without a scan.
fn refresh_token_for(session: Uuid) -> String {
    format!("{REFRESH_TOKEN_PREFIX}{}_{}", session.simple(), random_secret())
}

fn session_of_refresh_token(token: &str) -> Option<Uuid> {
    let rest = token.strip_prefix(REFRESH_TOKEN_PREFIX)?;
    let (session, _) = rest.split_once('_')?;
    Uuid::try_parse(session).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_start_at_the_threshold_and_double_up_to_an_hour() {
        assert_eq!(lock_after(FAILED_LOGINS_BEFORE_LOCK - 1), None);
        assert_eq!(lock_after(FAILED_LOGINS_BEFORE_LOCK), Some(Duration::minutes(1)));
        assert_eq!(lock_after(FAILED_LOGINS_BEFORE_LOCK + 2), Some(Duration::minutes(4)));
        assert_eq!(lock_after(FAILED_LOGINS_BEFORE_LOCK + 30), Some(LONGEST_LOCK));
    }

    #[test]
    fn a_refresh_token_names_its_session() {
        let session = Uuid::now_v7();
        let token = refresh_token_for(session);
        assert_eq!(session_of_refresh_token(&token), Some(session));
        assert_eq!(session_of_refresh_token("rrt_nonsense"), None);
        assert_eq!(session_of_refresh_token(&format!("rpk_{}", random_secret())), None);
    }

    #[test]
    fn a_wait_reported_by_the_throttle_is_positive() {
        let throttle = LoginThrottle::new();
        let ip: IpAddr = [192, 0, 2, 1].into();
        let outcomes: Vec<_> = (0..=LOGIN_ATTEMPTS_PER_IP_PER_MINUTE).map(|_| throttle.check(ip)).collect();
        assert!(outcomes[..LOGIN_ATTEMPTS_PER_IP_PER_MINUTE as usize].iter().all(Result::is_ok));
        match outcomes.last() {
            Some(Err(Error::RateLimited { retry_after })) => assert!(!retry_after.is_zero()),
            other => panic!("expected a rate limit, got {other:?}"),
        }
    }
}
