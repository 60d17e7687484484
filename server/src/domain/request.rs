//! Who asked for a change and from where: the use cases authorise with it, and the audit log
//! records it beside every change.

use std::net::{IpAddr, Ipv6Addr};

use uuid::Uuid;

use super::{
    access::{ContactTokenPurpose, Permission, Role, Scopes},
    consent::UserAgent,
    contact::ContactId,
    webhook::WebhookSourceKind,
};

/// Who is acting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The holder of `RAPPORT_ADMIN_TOKEN`, the deployment's bootstrap owner credential.
    Bootstrap,
    /// A signed-in admin user, with the role the database held when the request came in, and
    /// the session their access token belongs to.
    User { id: Uuid, role: Role, session: Uuid },
    /// A back-office system or front-end app calling with an API key.
    ApiKey { id: Uuid, scopes: Scopes },
    /// A contact acting on their own record through a signed link.
    Contact { contact_id: ContactId, purpose: ContactTokenPurpose },
    /// An operator at the command line (`rapport …` subcommands).
    Cli,
    /// A system posting to `/hooks/{source}`, proven by its signature; it may do what its
    /// source's kind allows.
    WebhookSource { key: String, kind: WebhookSourceKind },
    /// The NATS JetStream consumer, storing what was published to the stream of this name. The
    /// operator who configured it vouches for what is published there, as for an API key with
    /// `events:write` and `profiles:write`.
    Stream { name: String },
    /// A caller without credentials, who may only sign in, or follow a tracking link from an
    /// email (recording an open or a click on the contact it was sent to).
    Anonymous,
}

impl Actor {
    /// Whether this actor holds `permission` for the deployment as a whole. Contacts hold none:
    /// what they may do to their own record is decided per field.
    pub fn may(&self, permission: Permission) -> bool {
        match self {
            Actor::Bootstrap | Actor::Cli => true,
            Actor::User { role, .. } => role.may(permission),
            Actor::ApiKey { scopes, .. } => scopes.contains(permission),
            Actor::WebhookSource { kind, .. } => kind.permissions().contains(&permission),
            Actor::Stream { .. } => matches!(permission, Permission::EventsWrite | Permission::ProfilesWrite),
            Actor::Contact { .. } | Actor::Anonymous => false,
        }
    }

    /// The contact whose preference-center token this actor presents, if any.
    pub fn own_contact(&self) -> Option<ContactId> {
        match self {
            Actor::Contact { contact_id, purpose: ContactTokenPurpose::Preferences } => Some(*contact_id),
            _ => None,
        }
    }

    /// The role this actor acts with when managing users: the bootstrap token and the command
    /// line act as owners.
    pub fn role(&self) -> Option<Role> {
        match self {
            Actor::Bootstrap | Actor::Cli => Some(Role::Owner),
            Actor::User { role, .. } => Some(*role),
            Actor::ApiKey { .. }
            | Actor::Contact { .. }
            | Actor::WebhookSource { .. }
            | Actor::Stream { .. }
            | Actor::Anonymous => None,
        }
    }
}

/// What every use case knows about the request that triggered it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub actor: Actor,
    pub request_id: String,
    /// The caller's address, for the audit log and consent proof; none for work started inside.
    pub ip: Option<IpAddr>,
    /// The caller's `User-Agent`, for consent proof.
    pub user_agent: Option<UserAgent>,
}

impl RequestContext {
    /// Work the system does by itself or on an operator's command line, not for a caller.
    pub fn internal(actor: Actor, request_id: impl Into<String>) -> Self {
        Self { actor, request_id: request_id.into(), ip: None, user_agent: None }
    }
}

/// The client behind an address, for per-client limits. An IPv6 host usually holds a whole /64
/// and can pick any address in it, so the /64 is the client; an IPv4 address arriving as
/// IPv4-mapped IPv6 (a dual-stack listener) is the IPv4 address it is.
pub fn client_of(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(address) => IpAddr::V6(Ipv6Addr::from_bits(address.to_bits() & !u128::from(u64::MAX))),
        v4 => v4,
    }
}
