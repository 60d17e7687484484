//! Sending mail on request: one email to one contact, a test to staff addresses, the delivery
//! log, and the suppression list. A send is only ever a row in the outbox here, written in the
//! transaction of its cause; the delivery worker (`delivery`) turns rows into messages.

use serde_json::Value;
use tracing::instrument;
use uuid::Uuid;

use super::{Error, RequestContext, Result, Services};
use crate::{
    audit::{self, Changes},
    domain::{
        access::Permission,
        contact::{ContactId, ContactRef, EmailAddress},
        delivery::{Send, SendKey, SendStatus, Suppression, SuppressionReason},
        email::{Email, EmailVersion},
        event::EventProperties,
        page::{Page, PageRequest},
        webhook::WebhookEventType,
    },
    store::{self, outbox::SendFilter},
};

/// The longest idempotency key a caller may give; the send key adds the email and contact.
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 150;

/// One email for one contact, as a caller asks for it.
#[derive(Debug, Clone)]
pub struct SendRequest {
    pub email_id: Uuid,
    pub contact: ContactRef,
    /// The same key for the same email and contact finds the first send instead of making
    /// another; without one, every request is a new send.
    pub idempotency_key: Option<String>,
    /// Properties templates see as `event`.
    pub event: Option<EventProperties>,
}

impl Services {
    /// Queues one email (its current version) for one contact. Returns the send and whether it
    /// is new; a repeated idempotency key returns the first send.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, email_id = %request.email_id))]
    pub async fn send_email(&self, ctx: &RequestContext, request: SendRequest) -> Result<(Send, bool)> {
        self.require(ctx, Permission::MailSend)?;
        let conn = self.db.connection();
        let (email, version) = self.email_and_version(request.email_id, None).await?;
        let contact_id = self.resolve_one(conn, &request.contact).await?.ok_or(Error::NotFound { what: "contact" })?;
        let key = match &request.idempotency_key {
            Some(key) => format!("api:{}:{contact_id}:{key}", email.id),
            None => format!("api:{}", Uuid::now_v7()),
        };
        let send_key = SendKey::parse(&key).map_err(|error| Error::validation("idempotencyKey", error))?;
        let send = new_send(&version, send_key, Some(contact_id), None, request.event, self.now());
        let mut queued = self.queue(ctx, vec![send], "email.send_queued").await?;
        queued.pop().ok_or_else(|| Error::Internal(anyhow::anyhow!("outbox returned no row")))
    }

    /// Queues a test of an email (its current version unless `number` is given) to each staff
    /// address, personalised for `contact` if given and for a contact without data otherwise.
    /// Tests skip the consent check and the marketing suppressions, not hard bounces.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, email_id = %email_id))]
    pub async fn send_test_email(
        &self,
        ctx: &RequestContext,
        email_id: Uuid,
        number: Option<i32>,
        contact: Option<ContactRef>,
        to: Vec<EmailAddress>,
    ) -> Result<Vec<Send>> {
        self.require(ctx, Permission::MailSend)?;
        // A test shows a contact's data to whoever reads the test.
        self.require(ctx, Permission::ProfilesRead)?;
        let (_, version) = self.email_and_version(email_id, number).await?;
        let contact_id = match contact {
            Some(reference) => Some(
                self.resolve_one(self.db.connection(), &reference).await?.ok_or(Error::NotFound { what: "contact" })?,
            ),
            None => None,
        };
        let now = self.now();
        let sends = to
            .into_iter()
            .map(|address| {
                let key = SendKey::parse(&format!("test:{}", Uuid::now_v7()))
                    .map_err(|error| Error::Internal(anyhow::anyhow!("test send key: {error}")))?;
                Ok(new_send(&version, key, contact_id, Some(address), None, now))
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(self.queue(ctx, sends, "email.test_queued").await?.into_iter().map(|(send, _)| send).collect())
    }

    /// Writes sends in one transaction with their audit entries, and wakes this process's worker.
    async fn queue(&self, ctx: &RequestContext, sends: Vec<Send>, action: &'static str) -> Result<Vec<(Send, bool)>> {
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let stored = self.queue_in(&tx, ctx, &sends, action).await?;
        tx.commit().await?;
        if stored.iter().any(|(_, created)| *created) {
            self.mail_wakeup.notify_one();
        }
        tracing::info!(sends = stored.len(), at = %now, "queued");
        Ok(stored)
    }

    /// Writes sends inside a caller's transaction (the cause of the sends commits with them) and
    /// audits the new ones. The caller wakes the worker after its commit, or the worker finds
    /// them on its next look.
    pub(crate) async fn queue_in(
        &self,
        tx: &impl sea_orm::ConnectionTrait,
        ctx: &RequestContext,
        sends: &[Send],
        action: &'static str,
    ) -> Result<Vec<(Send, bool)>> {
        let now = self.now();
        let stored = store::outbox::enqueue(tx, sends).await?;
        for (send, created) in &stored {
            if *created {
                let mut changes = Changes::new();
                changes
                    .field("email", None, Some(Value::from(send.email_id.to_string())))
                    .field("emailVersion", None, Some(Value::from(send.email_version_id.to_string())))
                    .field("contact", None, send.contact_id.map(|id| Value::from(id.to_string())))
                    .field("sendKey", None, Some(Value::from(send.send_key.as_str())));
                audit::append(tx, ctx, now, audit::Entry::new(action, "send", send.id.to_string(), changes)).await?;
            }
        }
        Ok(stored)
    }

    /// The delivery log: sends newest first, by contact, email or status.
    pub async fn deliveries(
        &self,
        ctx: &RequestContext,
        filter: &SendFilter,
        page: &PageRequest<Uuid>,
    ) -> Result<Page<Send>> {
        self.require(ctx, Permission::ProfilesRead)?;
        Ok(store::outbox::page(self.db.connection(), filter, page).await?)
    }

    pub async fn find_send(&self, ctx: &RequestContext, id: Uuid) -> Result<Option<Send>> {
        self.require(ctx, Permission::ProfilesRead)?;
        Ok(store::outbox::find(self.db.connection(), id).await?)
    }

    /// Puts an address on the suppression list; false if it was there for this reason already.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, reason = %reason))]
    pub async fn suppress_address(
        &self,
        ctx: &RequestContext,
        address: &EmailAddress,
        reason: SuppressionReason,
        source: &str,
        detail: Option<String>,
    ) -> Result<bool> {
        self.require(ctx, Permission::MailSend)?;
        let keys = self.db.keys()?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let contact_id = self.resolve_one(&tx, &ContactRef::Email(address.clone())).await?;
        let index = store::contacts::email_index(keys, address);
        let entry = Suppression { reason, contact_id, source: source.to_owned(), detail, created_at: now };
        let added = store::outbox::suppress(&tx, &index, &entry).await?;
        if added {
            if let Some(event_type) = announced_as(reason) {
                // One address's reports stay in order; no personal data: the address is not in it.
                let ordering_key = contact_id.map_or_else(|| index.clone(), |id| id.to_string());
                let data = serde_json::json!({
                    "contactId": contact_id.map(|id| id.to_string()),
                    "reason": reason.as_str(),
                    "source": source,
                });
                store::webhooks::record(&tx, event_type, &ordering_key, data, now).await?;
            }
            let mut changes = Changes::new();
            changes.field("reason", None, Some(Value::from(reason.as_str())));
            let entry = audit::Entry::new("address.suppressed", "address", index, changes);
            audit::append(&tx, ctx, now, entry).await?;
        }
        tx.commit().await?;
        Ok(added)
    }

    /// Takes an address off the suppression list (for one reason, or all); how many entries went.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn unsuppress_address(
        &self,
        ctx: &RequestContext,
        address: &EmailAddress,
        reason: Option<SuppressionReason>,
    ) -> Result<u64> {
        // Lifting a bounce or a complaint overrides what a person or their mailbox said.
        self.require(ctx, Permission::PrivacyManage)?;
        let index = store::contacts::email_index(self.db.keys()?, address);
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let removed = lift_suppression(&tx, ctx, index, reason, now).await?;
        tx.commit().await?;
        Ok(removed)
    }

    /// Why an address is suppressed, if it is.
    pub async fn suppressions(&self, ctx: &RequestContext, address: &EmailAddress) -> Result<Vec<Suppression>> {
        self.require(ctx, Permission::ProfilesRead)?;
        let index = store::contacts::email_index(self.db.keys()?, address);
        let mut found = store::outbox::suppressions_of(self.db.connection(), std::slice::from_ref(&index)).await?;
        Ok(found.remove(&index).unwrap_or_default())
    }

    async fn resolve_one(
        &self,
        conn: &impl sea_orm::ConnectionTrait,
        reference: &ContactRef,
    ) -> Result<Option<ContactId>> {
        let mut resolved = store::contacts::resolve(conn, self.db.keys()?, std::slice::from_ref(reference)).await?;
        Ok(resolved.remove(reference))
    }

    async fn email_and_version(&self, email_id: Uuid, number: Option<i32>) -> Result<(Email, EmailVersion)> {
        let conn = self.db.connection();
        let email = store::emails::find(conn, email_id).await?.ok_or(Error::NotFound { what: "email" })?;
        let version = store::emails::version(conn, email_id, number.unwrap_or(email.current_version))
            .await?
            .ok_or(Error::NotFound { what: "email version" })?;
        Ok((email, version.version))
    }
}

/// A new outbox row for `version`. Its Message-ID is fixed now, on the sender's domain, so that
/// every attempt at this send carries the same one.
pub(crate) fn new_send(
    version: &EmailVersion,
    send_key: SendKey,
    contact_id: Option<ContactId>,
    recipient: Option<EmailAddress>,
    context: Option<EventProperties>,
    now: chrono::DateTime<chrono::Utc>,
) -> Send {
    let id = Uuid::now_v7();
    let domain = version.from.address.as_str().rsplit_once('@').map_or("rapport.invalid", |(_, domain)| domain);
    Send {
        id,
        send_key,
        email_id: version.email_id,
        email_version_id: version.id,
        email_type: version.email_type,
        contact_id,
        recipient,
        context,
        status: SendStatus::Queued,
        attempts: 0,
        next_attempt_at: now,
        detail: None,
        message_id: Some(format!("<{}@{domain}>", id.simple())),
        created_at: now,
        updated_at: now,
        sent_at: None,
    }
}

/// Takes the address with blind index `index` off the list (for one reason, or all) in the
/// caller's transaction, with an audit entry if anything went; how many entries went.
pub(super) async fn lift_suppression(
    tx: &impl sea_orm::ConnectionTrait,
    ctx: &RequestContext,
    index: String,
    reason: Option<SuppressionReason>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<u64> {
    let removed = store::outbox::unsuppress(tx, &index, reason).await?;
    if removed > 0 {
        let mut changes = Changes::new();
        changes.field("reason", reason.map(|reason| Value::from(reason.as_str())), None);
        let entry = audit::Entry::new("address.unsuppressed", "address", index, changes);
        audit::append(tx, ctx, now, entry).await?;
    }
    Ok(removed)
}

/// The webhook a new suppression is announced as: a bounce or complaint a mail provider reported
/// (an inbound webhook, or an admin recording one) is mail news like a bounce during delivery;
/// an unsubscribe is announced as the consent change it comes with.
fn announced_as(reason: SuppressionReason) -> Option<WebhookEventType> {
    match reason {
        SuppressionReason::HardBounce => Some(WebhookEventType::EmailBounced),
        SuppressionReason::Complaint => Some(WebhookEventType::EmailComplained),
        SuppressionReason::Unsubscribe | SuppressionReason::Manual => None,
    }
}
