//! Recording consent decisions and reading them back. A decision is appended to the history and
//! the current state follows from it in the same transaction.

use crate::domain::page::{Page, PageRequest};
use chrono::{DateTime, Utc};
use tracing::instrument;
use uuid::Uuid;

use serde_json::Value;

use super::{Error, RequestContext, Result, Services};
use crate::{
    audit::{self, Changes},
    domain::{
        access::Permission,
        consent::{
            Channel, ConsentChange, ConsentProof, ConsentSource, ConsentStatus, LegalBasis, Purpose, WordingVersion,
        },
        contact::{ContactId, ContactRef},
        key::Key,
    },
    store::{self},
};

/// A decision as the person made it, for a contact named apart (by `record_consent`, or by the
/// contact change it is captured with).
#[derive(Debug, Clone)]
pub struct ConsentDecision {
    pub purpose: Key,
    pub channel: Channel,
    pub status: ConsentStatus,
    pub legal_basis: LegalBasis,
    pub source: ConsentSource,
    /// When the person decided; now when not given.
    pub captured_at: Option<DateTime<Utc>>,
    pub proof: ConsentProof,
}

#[derive(Debug, Clone)]
pub struct NewPurpose {
    pub key: Key,
    pub label: String,
    pub description: Option<String>,
}

impl Services {
    pub async fn list_purposes(&self) -> Result<Vec<Purpose>> {
        Ok(store::consents::purposes(self.db.connection()).await?)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, key = %new.key))]
    pub async fn define_purpose(&self, ctx: &RequestContext, new: NewPurpose) -> Result<Purpose> {
        let purpose = Purpose {
            key: new.key,
            label: new.label,
            description: new.description,
            built_in: false,
            created_at: self.now(),
        };
        let tx = self.db.begin_write().await?;
        store::consents::insert_purpose(&tx, &purpose).await?;
        let mut changes = Changes::new();
        changes.field("label", None, Some(Value::from(purpose.label.as_str()))).field(
            "description",
            None,
            purpose.description.as_deref().map(Value::from),
        );
        let entry = audit::Entry::new("consent_purpose.defined", "consent_purpose", purpose.key.as_str(), changes);
        audit::append(&tx, ctx, purpose.created_at, entry).await?;
        tx.commit().await?;
        self.catalog.forget();
        Ok(purpose)
    }

    /// Records a decision for a contact and returns it as stored.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %contact_id))]
    pub async fn record_consent(
        &self,
        ctx: &RequestContext,
        contact_id: ContactId,
        decision: ConsentDecision,
    ) -> Result<ConsentChange> {
        self.require_or_own_contact(ctx, Permission::ProfilesWrite, contact_id)?;
        let decision = if ctx.actor.own_contact().is_some() { decision.into_self_service(ctx) } else { decision };
        let now = self.now();
        let tx = self.db.begin_write().await?;
        if store::contacts::find(&tx, self.db.keys()?, &ContactRef::Id(contact_id)).await?.is_none() {
            return Err(Error::NotFound { what: "contact" });
        }
        let change = decision.settle(contact_id, now, &store::consents::purposes(&tx).await?)?;
        append_decision(&tx, ctx, &change, now).await?;
        if ctx.actor.own_contact() == Some(contact_id) && grants_email_marketing(&change) {
            super::unsubscribe::lift_unsubscribe(self, &tx, ctx, contact_id, now).await?;
        }
        tx.commit().await?;
        tracing::info!(status = %change.status, purpose = %change.purpose, channel = %change.channel, "consent recorded");
        Ok(change)
    }

    pub async fn current_consents(&self, contact_ids: &[ContactId]) -> Result<Vec<ConsentChange>> {
        Ok(store::consents::current(self.db.connection(), contact_ids).await?)
    }

    pub async fn consent_history(
        &self,
        contact_id: ContactId,
        purpose: Option<&Key>,
        channel: Option<Channel>,
        page: &PageRequest<Uuid>,
    ) -> Result<Page<ConsentChange>> {
        Ok(store::consents::history(self.db.connection(), contact_id, purpose, channel, page).await?)
    }
}

impl ConsentDecision {
    /// A decision a contact makes about themselves: the evidence is what Rapport saw (source,
    /// now, their address and browser), never what the caller claims, because these records
    /// may have to prove consent in court. Only which wording they were shown is theirs to say.
    fn into_self_service(self, ctx: &RequestContext) -> Self {
        Self {
            legal_basis: LegalBasis::Consent,
            source: ConsentSource::PreferenceCenter,
            captured_at: None,
            proof: ConsentProof {
                ip: ctx.ip,
                user_agent: ctx.user_agent.clone(),
                wording_id: self.proof.wording_id,
                wording_version: self.proof.wording_version,
            },
            ..self
        }
    }

    /// The decision as it will be stored for `contact_id`: its purpose must exist, and its
    /// capture time (now when not given) must not lie in the future.
    pub(super) fn settle(
        self,
        contact_id: ContactId,
        now: DateTime<Utc>,
        purposes: &[Purpose],
    ) -> Result<ConsentChange> {
        // The databases keep microseconds: truncating here makes the decision returned equal the
        // one stored, and makes capture times compare alike on SQLite and PostgreSQL.
        let captured_at = self.captured_at.map_or(now, crate::domain::at_storage_precision);
        if captured_at > now + crate::domain::CLOCK_SKEW {
            return Err(Error::validation("capturedAt", "lies in the future"));
        }
        if !purposes.iter().any(|purpose| purpose.key == self.purpose) {
            return Err(Error::validation("purpose", format!("unknown consent purpose {:?}", self.purpose.as_str())));
        }
        Ok(ConsentChange {
            id: Uuid::now_v7(),
            contact_id,
            purpose: self.purpose,
            channel: self.channel,
            status: self.status,
            legal_basis: self.legal_basis,
            source: self.source,
            captured_at,
            recorded_at: now,
            proof: self.proof,
        })
    }
}

/// Appends a settled decision to the history, with its audit entry, in the caller's transaction.
pub(super) async fn append_decision(
    tx: &impl sea_orm::ConnectionTrait,
    ctx: &RequestContext,
    change: &ConsentChange,
    now: DateTime<Utc>,
) -> Result<()> {
    store::consents::append(tx, change).await?;
    // The decision itself is the change; the previous state stays readable in the history.
    let mut changes = Changes::new();
    let after = |text: &str| Some(Value::from(text));
    changes
        .field("consentId", None, Some(Value::from(change.id.to_string())))
        .field("purpose", None, after(change.purpose.as_str()))
        .field("channel", None, after(change.channel.as_str()))
        .field("status", None, after(change.status.as_str()))
        .field("legalBasis", None, after(change.legal_basis.as_str()))
        .field("source", None, after(change.source.as_str()))
        .field("capturedAt", None, Some(Value::from(change.captured_at.to_rfc3339())));
    let entry = audit::Entry::new("consent.recorded", "contact", change.contact_id.to_string(), changes);
    audit::append(tx, ctx, now, entry).await?;
    Ok(())
}

/// Whether the decision grants what marketing mail needs: the `marketing` purpose by email.
pub(super) fn grants_email_marketing(change: &ConsentChange) -> bool {
    change.status == ConsentStatus::Granted
        && change.channel == Channel::Email
        && change.purpose.as_str() == crate::domain::consent::MARKETING
}

/// The version of a wording as consent proof records it: the first 12 hex digits of the SHA-256
/// of the exact text shown, after the language when Rapport's own translation was shown
/// (`en:3f2a9c1b0d4e`). Texts admins wrote are shown as written, so they have no language.
pub(super) fn wording_version(language: Option<&str>, text: &str) -> Option<WordingVersion> {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(text.as_bytes());
    let hash = hex::encode(&digest[..6]);
    let version = match language {
        Some(language) => format!("{language}:{hash}"),
        None => hash,
    };
    WordingVersion::parse(&version).ok()
}
