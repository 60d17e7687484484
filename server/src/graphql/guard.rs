//! Authorisation, field by field: every query, mutation and contact field names the permission
//! it needs. Contact tokens hold no permission; the few fields they may use name the contact
//! they are about, and pass only for the token's own contact and only for the preference
//! center's purpose.

use async_graphql::{Context, Guard};

use super::{
    error::{Code, GqlError},
    request_of,
};
use crate::{
    domain::access::{ContactTokenPurpose, Permission},
    service::Actor,
};

pub struct Allow {
    permission: Permission,
    /// `Some` when a contact token may pass: the id of the contact the field is about (`None`
    /// inside when the caller named the contact some other way than by id).
    own_contact: Option<Option<String>>,
}

impl Allow {
    pub fn to(permission: Permission) -> Self {
        Self { permission, own_contact: None }
    }

    pub fn or_own_contact(permission: Permission, contact_id: Option<String>) -> Self {
        Self { permission, own_contact: Some(contact_id) }
    }
}

impl Guard for Allow {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let actor = &request_of(ctx)?.actor;
        if actor.may(self.permission) {
            return Ok(());
        }
        if let (Some(Some(asked)), Actor::Contact { contact_id, purpose: ContactTokenPurpose::Preferences }) =
            (&self.own_contact, actor)
            && *asked == contact_id.to_string()
        {
            return Ok(());
        }
        Err(match actor {
            Actor::Anonymous => GqlError::new(Code::Unauthenticated, "authentication required"),
            _ => GqlError::new(Code::Forbidden, format!("requires the {} permission", self.permission)),
        }
        .into())
    }
}

/// Fields open to anyone who is signed in as an admin user.
pub struct SignedInUser;

impl Guard for SignedInUser {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        match &request_of(ctx)?.actor {
            Actor::User { .. } => Ok(()),
            Actor::Anonymous => Err(GqlError::new(Code::Unauthenticated, "authentication required").into()),
            _ => Err(GqlError::new(Code::Forbidden, "only for signed-in users").into()),
        }
    }
}
