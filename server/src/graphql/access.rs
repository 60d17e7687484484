//! Signing in, users, API keys and contact tokens over GraphQL. `login` and `refreshToken` are
//! the only fields an anonymous caller may reach (the HTTP layer lets nothing else through).

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    contacts::parse_contact_id,
    error::{GqlError, GqlResult, parse_arg},
    guard::{Allow, SignedInUser},
    request_of, services_of,
};
use crate::{
    domain::{
        access::{self, AdminUser, ApiKey, Password, Permission, Scopes},
        clean_text,
        contact::EmailAddress,
    },
    service::{
        Actor,
        access::{NewApiKey, SignedIn, UserAlteration},
    },
};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "Role", remote = "access::Role")]
pub enum RoleValue {
    /// Everything, including managing other owners.
    Owner,
    /// Everything except managing owners.
    Admin,
    /// Contacts, consents, subscriptions, events, programs and mail; not the schema, users,
    /// keys, audit log or GDPR requests.
    Marketer,
    /// Reads contacts and the schema; changes nothing.
    Analyst,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "ContactTokenPurpose", remote = "access::ContactTokenPurpose")]
pub enum PurposeValue {
    /// Read and change the contact's own consents and topic subscriptions.
    Preferences,
    /// One-click unsubscribe.
    Unsubscribe,
    /// Confirm a double opt-in.
    ConfirmOptIn,
}

pub struct UserNode(AdminUser);

#[Object(name = "User")]
impl UserNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn email(&self) -> &str {
        self.0.email.as_str()
    }

    async fn role(&self) -> RoleValue {
        self.0.role.into()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    /// Set while the user is disabled: they cannot sign in and their sessions are ended.
    async fn disabled_at(&self) -> Option<DateTime<Utc>> {
        self.0.disabled_at
    }
}

pub struct ApiKeyNode(ApiKey);

#[Object(name = "ApiKey")]
impl ApiKeyNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn name(&self) -> &str {
        &self.0.name
    }

    /// The key's first characters, to tell keys apart; the rest is never shown again.
    async fn prefix(&self) -> &str {
        &self.0.prefix
    }

    async fn scopes(&self) -> Vec<&'static str> {
        self.0.scopes.iter().map(Permission::as_str).collect()
    }

    async fn created_at(&self) -> DateTime<Utc> {
        self.0.created_at
    }

    async fn expires_at(&self) -> Option<DateTime<Utc>> {
        self.0.expires_at
    }

    /// To the minute: a busy key is not written on every request.
    async fn last_used_at(&self) -> Option<DateTime<Utc>> {
        self.0.last_used_at
    }

    async fn revoked_at(&self) -> Option<DateTime<Utc>> {
        self.0.revoked_at
    }
}

/// A signed-in session's credentials. Send the access token as `Authorization: Bearer …`;
/// trade the refresh token for new ones with `refreshToken` before the access token expires.
#[derive(SimpleObject)]
pub struct LoginPayload {
    user: UserNode,
    access_token: String,
    access_token_expires_at: DateTime<Utc>,
    /// Valid once: each refresh returns a new one, and reusing an old one ends the session.
    refresh_token: String,
    session_expires_at: DateTime<Utc>,
}

impl From<SignedIn> for LoginPayload {
    fn from(signed_in: SignedIn) -> Self {
        Self {
            user: UserNode(signed_in.user),
            access_token: signed_in.access_token,
            access_token_expires_at: signed_in.access_expires_at,
            refresh_token: signed_in.refresh_token,
            session_expires_at: signed_in.session_expires_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct CreateApiKeyPayload {
    api_key: ApiKeyNode,
    /// The key itself (`rpk_…`). Shown this once: only a digest of it is stored.
    secret: String,
}

#[derive(SimpleObject)]
pub struct ContactTokenPayload {
    token: String,
    expires_at: DateTime<Utc>,
}

#[derive(InputObject)]
pub struct CreateUserInput {
    email: String,
    /// At least 12 characters.
    password: String,
    role: RoleValue,
}

#[derive(InputObject)]
pub struct AlterUserInput {
    id: ID,
    role: Option<RoleValue>,
    disabled: Option<bool>,
}

#[derive(InputObject)]
pub struct CreateApiKeyInput {
    name: String,
    /// Such as `profiles:read`, `profiles:write`, `events:write`, `programs:manage`.
    scopes: Vec<String>,
    expires_at: Option<DateTime<Utc>>,
}

pub(super) fn parse_uuid(field: &str, id: &ID) -> GqlResult<Uuid> {
    Uuid::parse_str(id.as_str()).map_err(|_| GqlError::bad_input(field, "is not a valid id"))
}

#[derive(Default)]
pub struct AccessQuery;

#[Object]
impl AccessQuery {
    /// The signed-in user.
    #[graphql(guard = "SignedInUser")]
    async fn me(&self, ctx: &Context<'_>) -> GqlResult<UserNode> {
        let Actor::User { id, .. } = request_of(ctx)?.actor else {
            return Err(GqlError::new(super::error::Code::Forbidden, "only for signed-in users"));
        };
        Ok(UserNode(services_of(ctx)?.find_user(id).await?))
    }

    #[graphql(guard = "Allow::to(Permission::UsersManage)")]
    async fn users(&self, ctx: &Context<'_>) -> GqlResult<Vec<UserNode>> {
        Ok(services_of(ctx)?.list_users(request_of(ctx)?).await?.into_iter().map(UserNode).collect())
    }

    #[graphql(guard = "Allow::to(Permission::KeysManage)")]
    async fn api_keys(&self, ctx: &Context<'_>) -> GqlResult<Vec<ApiKeyNode>> {
        Ok(services_of(ctx)?.list_api_keys(request_of(ctx)?).await?.into_iter().map(ApiKeyNode).collect())
    }
}

#[derive(Default)]
pub struct AccessMutation;

#[Object]
impl AccessMutation {
    /// Signs in with email and password. Wrong credentials give UNAUTHENTICATED whatever was
    /// wrong; repeated failures give RATE_LIMITED with `extensions.retryAfter` in seconds.
    async fn login(&self, ctx: &Context<'_>, email: String, password: String) -> GqlResult<LoginPayload> {
        Ok(services_of(ctx)?.login(request_of(ctx)?, &email, &password).await?.into())
    }

    /// Trades a refresh token for a new access token and a new refresh token.
    async fn refresh_token(&self, ctx: &Context<'_>, refresh_token: String) -> GqlResult<LoginPayload> {
        Ok(services_of(ctx)?.refresh(request_of(ctx)?, &refresh_token).await?.into())
    }

    /// Ends the caller's session: its refresh token and access tokens stop working at once.
    #[graphql(guard = "SignedInUser")]
    async fn logout(&self, ctx: &Context<'_>) -> GqlResult<bool> {
        services_of(ctx)?.logout(request_of(ctx)?).await?;
        Ok(true)
    }

    /// Owners create any user; admins create all but owners.
    #[graphql(guard = "Allow::to(Permission::UsersManage)")]
    async fn create_user(&self, ctx: &Context<'_>, input: CreateUserInput) -> GqlResult<UserNode> {
        let email = parse_arg("input.email", EmailAddress::parse(&input.email))?;
        let password = parse_arg("input.password", Password::parse(&input.password))?;
        let user = services_of(ctx)?.create_user(request_of(ctx)?, email, &password, input.role.into()).await?;
        Ok(UserNode(user))
    }

    /// Changes a user's role or disables them (which ends their sessions at once).
    #[graphql(guard = "Allow::to(Permission::UsersManage)")]
    async fn alter_user(&self, ctx: &Context<'_>, input: AlterUserInput) -> GqlResult<UserNode> {
        let id = parse_uuid("input.id", &input.id)?;
        let alteration = UserAlteration { role: input.role.map(Into::into), disabled: input.disabled };
        Ok(UserNode(services_of(ctx)?.alter_user(request_of(ctx)?, id, alteration).await?))
    }

    #[graphql(guard = "Allow::to(Permission::KeysManage)")]
    async fn create_api_key(&self, ctx: &Context<'_>, input: CreateApiKeyInput) -> GqlResult<CreateApiKeyPayload> {
        let name = parse_arg("input.name", clean_text(&input.name, 200))?;
        let scopes = parse_arg("input.scopes", Scopes::parse(&input.scopes))?;
        let new = NewApiKey { name, scopes, expires_at: input.expires_at };
        let (api_key, secret) = services_of(ctx)?.create_api_key(request_of(ctx)?, new).await?;
        Ok(CreateApiKeyPayload { api_key: ApiKeyNode(api_key), secret })
    }

    /// The key stops working at once. Revoking a revoked key changes nothing.
    #[graphql(guard = "Allow::to(Permission::KeysManage)")]
    async fn revoke_api_key(&self, ctx: &Context<'_>, id: ID) -> GqlResult<ApiKeyNode> {
        let id = parse_uuid("id", &id)?;
        Ok(ApiKeyNode(services_of(ctx)?.revoke_api_key(request_of(ctx)?, id).await?))
    }

    /// A signed, expiring token that lets its holder act as this contact for one purpose
    /// only, for links in emails.
    #[graphql(guard = "Allow::to(Permission::ProfilesRead).and(Allow::to(Permission::ProfilesWrite))")]
    async fn issue_contact_token(
        &self,
        ctx: &Context<'_>,
        contact_id: ID,
        purpose: PurposeValue,
    ) -> GqlResult<ContactTokenPayload> {
        let contact_id = parse_contact_id("contactId", &contact_id)?;
        let issued = services_of(ctx)?.issue_contact_token(request_of(ctx)?, contact_id, purpose.into()).await?;
        Ok(ContactTokenPayload { token: issued.token, expires_at: issued.expires_at })
    }

    /// Every link issued to the contact so far stops working (for a forwarded or leaked email);
    /// their pages offer to mail a fresh link. Returns the moment of revocation.
    #[graphql(guard = "Allow::to(Permission::ProfilesWrite)")]
    async fn revoke_contact_tokens(&self, ctx: &Context<'_>, contact_id: ID) -> GqlResult<DateTime<Utc>> {
        let contact_id = parse_contact_id("contactId", &contact_id)?;
        Ok(services_of(ctx)?.revoke_contact_tokens(request_of(ctx)?, contact_id).await?)
    }
}
