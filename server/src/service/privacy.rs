//! The data subject's rights: exporting everything held on a contact, and erasing it. An
//! erasure keeps the blind index of the contact's email and phone, so that an import cannot
//! add the person back unless the same request captures a new consent.

use chrono::{DateTime, Utc};
use sea_orm::DatabaseTransaction;
use serde_json::Value;
use tracing::instrument;

use super::{Error, RequestContext, Result, Services};
use crate::{
    audit::{self, Changes},
    domain::{
        access::Permission,
        consent::{ConsentChange, ConsentStatus, LegalBasis},
        contact::{Contact, ContactId, ContactRef},
        privacy::{ContactExport, Erasure, ErasureReceipt},
    },
    store,
};

impl Services {
    /// Everything held on the contact, read in one transaction that also records the export in
    /// the audit log (after reading, so the export does not list itself).
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn export_contact(&self, ctx: &RequestContext, reference: &ContactRef) -> Result<ContactExport> {
        self.require(ctx, Permission::PrivacyManage)?;
        let tx = self.db.begin_write().await?;
        let contact =
            store::contacts::find(&tx, self.db.keys()?, reference).await?.ok_or(Error::NotFound { what: "contact" })?;
        let ids = [contact.id];
        let export = ContactExport {
            exported_at: self.now(),
            fields: store::fields::all(&tx).await?,
            consents: store::consents::current(&tx, &ids).await?,
            consent_history: store::consents::all_of(&tx, contact.id).await?,
            subscriptions: store::topics::subscriptions(&tx, &ids).await?,
            events: store::events::all_of(&tx, contact.id).await?,
            sends: store::outbox::all_of(&tx, contact.id).await?,
            audit_entries: store::audit::about(&tx, "contact", &contact.id.to_string()).await?,
            contact,
        };
        let entry = audit::Entry::new("contact.exported", "contact", export.contact.id.to_string(), Changes::new());
        audit::append(&tx, ctx, export.exported_at, entry).await?;
        tx.commit().await?;
        tracing::info!(contact_id = %export.contact.id, "contact exported");
        Ok(export)
    }

    /// Deletes the contact's personal data, consents, subscriptions and events, destroys its
    /// data key, keeps the blind index of its addresses, and leaves a tombstone in the audit
    /// log that counts what went, without any of it. The tombstone's id is the receipt's.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, contact_id = %id))]
    pub async fn erase_contact(&self, ctx: &RequestContext, id: ContactId) -> Result<ErasureReceipt> {
        self.require(ctx, Permission::PrivacyManage)?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let erased = store::contacts::erase(&tx, id, now).await?.ok_or(Error::NotFound { what: "contact" })?;
        store::outbox::forget_contact(&tx, id).await?;
        let tombstone = audit::append(
            &tx,
            ctx,
            now,
            audit::Entry::new("contact.erased", "contact", id.to_string(), tombstone(&erased)),
        )
        .await?;
        tx.commit().await?;
        // The erasure stands once committed; an old log page left behind is recycled later.
        if let Err(error) = self.db.truncate_log().await {
            tracing::warn!(%error, "cannot empty the write-ahead log after an erasure");
        }
        tracing::info!("contact erased");
        Ok(ErasureReceipt { id: tombstone.id, contact_id: id, erased_at: tombstone.occurred_at, erased })
    }

    /// Refuses to give `after` an email or phone of an erased contact that `before` did not
    /// have, unless `decisions` (captured in the same request) hold a new consent: granted, on
    /// the consent basis, and captured after the erasure. An old decision replayed by an import
    /// is no new consent. Addresses let in leave the erased list.
    pub(super) async fn admit_addresses(
        &self,
        tx: &DatabaseTransaction,
        ctx: &RequestContext,
        before: Option<&Contact>,
        after: &Contact,
        decisions: &[ConsentChange],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let email =
            after.email.as_ref().filter(|email| before.and_then(|contact| contact.email.as_ref()) != Some(*email));
        let phone = after
            .profile
            .phone
            .as_ref()
            .filter(|phone| before.and_then(|contact| contact.profile.phone.as_ref()) != Some(*phone));
        let keys = self.db.keys()?;
        let erased = store::contacts::erased_addresses(tx, keys, email, phone).await?;
        if erased.is_empty() {
            return Ok(());
        }
        for address in &erased {
            let consented = decisions.iter().any(|decision| {
                decision.status == ConsentStatus::Granted
                    && decision.legal_basis == LegalBasis::Consent
                    && decision.captured_at > address.erased_at
            });
            if !consented {
                return Err(Error::Conflict {
                    field: Some(address.kind.as_str().to_owned()),
                    reason: format!(
                        "this {} was erased at its owner's request; to add it again, capture a new granted consent in the same request (consents)",
                        address.kind.described()
                    ),
                });
            }
        }
        store::contacts::readmit(tx, keys, email, phone).await?;
        let mut changes = Changes::new();
        let kinds: Vec<Value> = erased.iter().map(|address| Value::from(address.kind.as_str())).collect();
        changes.field("erasedAddresses", Some(Value::from(kinds)), None);
        audit::append(tx, ctx, now, audit::Entry::new("contact.readmitted", "contact", after.id.to_string(), changes))
            .await?;
        Ok(())
    }
}

/// The erasure's audit entry: how many of each kind went (before: the count, after: none),
/// and nothing of what they held.
fn tombstone(erased: &Erasure) -> Changes {
    let mut changes = Changes::new();
    for (name, count) in [
        ("profileFields", erased.profile_fields),
        ("customFields", erased.custom_fields),
        ("consentDecisions", erased.consent_decisions),
        ("topicSubscriptions", erased.topic_subscriptions),
        ("events", erased.events),
    ] {
        changes.field(name, Some(Value::from(count)), None);
    }
    changes.field("dataKeyDestroyed", None, Some(Value::from(erased.data_key_destroyed))).field(
        "erasedAddresses",
        None,
        Some(Value::from(erased.suppressed.iter().map(|kind| Value::from(kind.as_str())).collect::<Vec<_>>())),
    );
    changes
}
