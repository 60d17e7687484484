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
        consent::{Channel, ConsentChange, ConsentProof, ConsentSource, ConsentStatus, LegalBasis, Purpose},
        contact::{ContactId, ContactRef},
        key::Key,
    },
    store::{self},
};

#[derive(Debug, Clone)]
pub struct ConsentDecision {
    pub contact_id: ContactId,
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
        Ok(purpose)
    }

    /// Records a decision. Returns it, and the contact's current consent for that purpose and
    /// channel afterwards (the same decision unless a later-captured one exists).
    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %decision.contact_id))]
    pub async fn record_consent(&self, ctx: &RequestContext, decision: ConsentDecision) -> Result<ConsentChange> {
        let now = self.now();
        // The databases keep microseconds: truncating here makes the decision returned equal the
        // one stored, and makes capture times compare alike on SQLite and PostgreSQL.
        let captured_at = decision.captured_at.map_or(now, crate::domain::at_storage_precision);
        if captured_at > now + crate::domain::CLOCK_SKEW {
            return Err(Error::validation("capturedAt", "lies in the future"));
        }
        let tx = self.db.begin_write().await?;
        if store::contacts::find(&tx, self.db.keys()?, &ContactRef::Id(decision.contact_id)).await?.is_none() {
            return Err(Error::NotFound { what: "contact" });
        }
        if !store::consents::purposes(&tx).await?.iter().any(|purpose| purpose.key == decision.purpose) {
            return Err(Error::validation(
                "purpose",
                format!("unknown consent purpose {:?}", decision.purpose.as_str()),
            ));
        }
        let change = ConsentChange {
            id: Uuid::now_v7(),
            contact_id: decision.contact_id,
            purpose: decision.purpose,
            channel: decision.channel,
            status: decision.status,
            legal_basis: decision.legal_basis,
            source: decision.source,
            captured_at,
            recorded_at: now,
            proof: decision.proof,
        };
        store::consents::append(&tx, &change).await?;
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
        audit::append(&tx, ctx, now, entry).await?;
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
