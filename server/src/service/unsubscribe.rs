//! Unsubscribing from the link in an email: the `UNSUBSCRIBE` token names the contact, and one
//! transaction denies its email marketing consent (with what the request showed as proof) and
//! puts its address on the suppression list for marketing mail. Doing it twice changes nothing
//! the second time.

use tracing::instrument;

use super::{Error, RequestContext, Result, Services, consents::append_decision};
use crate::{
    audit::{self, Changes},
    domain::{
        access::ContactTokenPurpose,
        consent::{
            Channel, ConsentChange, ConsentProof, ConsentSource, ConsentStatus, LegalBasis, MARKETING, email_marketing,
        },
        contact::{ContactId, ContactRef},
        delivery::{Suppression, SuppressionReason},
        key::Key,
        request::Actor,
    },
    store,
};

/// What an unsubscribe did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsubscribed {
    /// Consent was denied now (or the address suppressed now).
    Now,
    /// It had been done before; nothing changed.
    Already,
}

impl Services {
    /// The contact an unsubscribe link names; `Unauthenticated` for any other token.
    pub async fn unsubscribe_link_contact(&self, token: &str) -> Result<ContactId> {
        match self.authenticate_bearer(token).await {
            Ok(Actor::Contact { contact_id, purpose: ContactTokenPurpose::Unsubscribe }) => Ok(contact_id),
            _ => Err(Error::Unauthenticated),
        }
    }

    /// The contact's locale (BCP 47), for the language of the pages it sees.
    pub async fn contact_locale(&self, contact_id: ContactId) -> Result<Option<String>> {
        let contact = store::contacts::find(self.db.connection(), self.db.keys()?, &ContactRef::Id(contact_id)).await?;
        Ok(contact.and_then(|contact| contact.profile.locale).map(|locale| locale.as_str().to_owned()))
    }

    /// Unsubscribes the contact of `ctx` (an `UNSUBSCRIBE` token) from marketing email.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn unsubscribe(&self, ctx: &RequestContext) -> Result<Unsubscribed> {
        let Actor::Contact { contact_id, purpose: ContactTokenPurpose::Unsubscribe } = ctx.actor else {
            return Err(Error::Forbidden);
        };
        let keys = self.db.keys()?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let contact = store::contacts::find(&tx, keys, &ContactRef::Id(contact_id))
            .await?
            .ok_or(Error::NotFound { what: "contact" })?;
        let marketing = Key::parse(MARKETING).map_err(|_| Error::Internal(anyhow::anyhow!("purpose key")))?;
        let denied =
            email_marketing(&store::consents::current(&tx, &[contact_id]).await?) == Some(ConsentStatus::Denied);
        let mut changed = false;
        if !denied {
            let decision = ConsentChange {
                id: uuid::Uuid::now_v7(),
                contact_id,
                purpose: marketing,
                channel: Channel::Email,
                status: ConsentStatus::Denied,
                legal_basis: LegalBasis::Consent,
                source: ConsentSource::Unsubscribe,
                captured_at: now,
                recorded_at: now,
                proof: ConsentProof {
                    ip: ctx.ip,
                    user_agent: ctx.user_agent.clone(),
                    wording_id: None,
                    wording_version: None,
                },
            };
            append_decision(&tx, ctx, &decision, now).await?;
            changed = true;
        }
        if let Some(address) = &contact.email {
            let index = store::contacts::email_index(keys, address);
            let entry = Suppression {
                reason: SuppressionReason::Unsubscribe,
                contact_id: Some(contact_id),
                source: "unsubscribe".to_owned(),
                detail: None,
                created_at: now,
            };
            if store::outbox::suppress(&tx, &index, &entry).await? {
                let mut changes = Changes::new();
                changes.field("reason", None, Some(serde_json::Value::from(entry.reason.as_str())));
                audit::append(&tx, ctx, now, audit::Entry::new("address.suppressed", "address", index, changes))
                    .await?;
                changed = true;
            }
        }
        tx.commit().await?;
        tracing::info!(contact_id = %contact_id, changed, "unsubscribed");
        Ok(if changed { Unsubscribed::Now } else { Unsubscribed::Already })
    }
}

/// Someone who unsubscribed and later grants email marketing consent again through their own
/// action, proven by a link from their mailbox (the preference page, a double opt-in
/// confirmation), wants marketing mail again: the `UNSUBSCRIBE` entry their unsubscribing put on
/// the suppression list goes, in the caller's transaction and audited. Bounces, complaints and
/// entries admins made stay: those only an admin lifts. Anything else that grants consent (the
/// API, an import, a single opt-in form anyone can fill in) proves nothing about who holds the
/// mailbox, so it leaves the list alone.
pub(super) async fn lift_unsubscribe(
    services: &Services,
    tx: &impl sea_orm::ConnectionTrait,
    ctx: &RequestContext,
    contact_id: ContactId,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let keys = services.db.keys()?;
    let Some(address) = store::contacts::find(tx, keys, &ContactRef::Id(contact_id)).await?.and_then(|c| c.email)
    else {
        return Ok(());
    };
    let index = store::contacts::email_index(keys, &address);
    super::sending::lift_suppression(tx, ctx, index, Some(SuppressionReason::Unsubscribe), now).await?;
    Ok(())
}
