//! Who asked for a change and from where: the use cases authorise with it, and the audit log
//! records it beside every change.

use std::net::IpAddr;

/// Who is acting. Issue-specific principals (users, API keys, contact tokens) join later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// The holder of `RAPPORT_ADMIN_TOKEN`, the deployment's bootstrap owner credential.
    Bootstrap,
    /// An operator running a `rapport` command against the database.
    Cli,
}

/// What every use case knows about the request that triggered it.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub actor: Actor,
    pub request_id: String,
    /// The caller's address, for the audit log and consent proof; none for work started inside.
    pub ip: Option<IpAddr>,
}

impl RequestContext {
    /// Work the system does by itself or on an operator's command line, not for a caller.
    pub fn internal(actor: Actor, request_id: impl Into<String>) -> Self {
        Self { actor, request_id: request_id.into(), ip: None }
    }
}
