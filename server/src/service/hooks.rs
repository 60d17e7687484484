//! Inbound webhooks: the sources admins configure, and requests to `/hooks/{source}` checked per
//! Standard Webhooks (signature, timestamp tolerance, replayed `webhook-id`s ignored) before
//! what they carry goes through the same use cases as the API.

use chrono::{DateTime, Utc};
use serde_json::Value;
use tracing::instrument;

use super::{
    Error, RequestContext, Result, Services,
    contacts::{ContactChanges, UpsertKey},
    events::{IngestEvent, MissingContacts, Tracked},
};
use crate::{
    audit::{self, Changes},
    crypto::WebhookSecret,
    domain::{
        access::Permission,
        contact::EmailAddress,
        delivery::SuppressionReason,
        event::IdempotencyKey,
        key::Key,
        webhook::{TIMESTAMP_TOLERANCE, WebhookSource, WebhookSourceKind},
    },
    store::{self, hooks::Claim},
};

/// How long a claim on a `webhook-id` may go uncompleted before a retry takes it over: far
/// longer than handling one request takes, and shorter than senders' later retries.
const CLAIM_GOES_STALE: chrono::Duration = chrono::Duration::seconds(30);

/// What a verified request carries.
#[derive(Debug, Clone)]
pub enum InboundPayload {
    /// One event, as an item of the batch API; its idempotency key defaults to the `webhook-id`.
    Event(IngestEvent),
    /// Changes to the contact found by `key`, made if there is none.
    Contact {
        key: UpsertKey,
        changes: ContactChanges,
    },
    /// The mailbox provider reports the address does not exist, or that its owner marked a
    /// message as spam.
    Bounce(EmailAddress),
    Complaint(EmailAddress),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Accepted,
    /// The `webhook-id` was seen before: nothing was done again.
    Duplicate,
}

/// The Standard Webhooks headers of a request.
#[derive(Debug, Clone)]
pub struct SignedRequest<'a> {
    pub webhook_id: &'a str,
    pub timestamp: &'a str,
    pub signature: &'a str,
    pub body: &'a [u8],
}

fn source_id(key: &Key) -> String {
    format!("source:{}", key.as_str())
}

impl Services {
    /// Configures a source; its `whsec_` secret is returned this once.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, source = %key))]
    pub async fn create_webhook_source(
        &self,
        ctx: &RequestContext,
        key: Key,
        kind: WebhookSourceKind,
    ) -> Result<(WebhookSource, String)> {
        self.require(ctx, Permission::WebhooksManage)?;
        let now = self.now();
        let source = WebhookSource { key, kind, created_at: now };
        let secret = WebhookSecret::generate();
        let wrapped = secret.wrap(&self.db.keys()?.masters, &source_id(&source.key));
        let tx = self.db.begin_write().await?;
        if store::hooks::find(&tx, &source.key).await?.is_some() {
            return Err(Error::Conflict { field: Some("key".to_owned()), reason: "a source has this key".to_owned() });
        }
        store::hooks::insert(&tx, &source, &wrapped).await?;
        let mut changes = Changes::new();
        changes.field("kind", None, Some(Value::from(kind.as_str())));
        let entry = audit::Entry::new("webhook_source.created", "webhook_source", source.key.as_str(), changes);
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        Ok((source, secret.to_whsec()))
    }

    pub async fn webhook_sources(&self, ctx: &RequestContext) -> Result<Vec<WebhookSource>> {
        self.require(ctx, Permission::WebhooksManage)?;
        Ok(store::hooks::all(self.db.connection()).await?)
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, source = %key))]
    pub async fn delete_webhook_source(&self, ctx: &RequestContext, key: &Key) -> Result<()> {
        self.require(ctx, Permission::WebhooksManage)?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        if !store::hooks::delete(&tx, key).await? {
            return Err(Error::NotFound { what: "webhook source" });
        }
        let entry = audit::Entry::new("webhook_source.deleted", "webhook_source", key.as_str(), Changes::new());
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The source whose secret signed `request`, if one did within the timestamp tolerance.
    /// Every failure is the same `Unauthenticated`: an unknown source tells nothing more than
    /// a bad signature.
    pub async fn verify_webhook(&self, key: &str, request: &SignedRequest<'_>) -> Result<WebhookSource> {
        let key = Key::parse(key).map_err(|_| Error::Unauthenticated)?;
        let (source, wrapped) = store::hooks::find(self.db.connection(), &key).await?.ok_or(Error::Unauthenticated)?;
        let timestamp: i64 = request.timestamp.trim().parse().map_err(|_| Error::Unauthenticated)?;
        let sent_at = DateTime::<Utc>::from_timestamp(timestamp, 0).ok_or(Error::Unauthenticated)?;
        if (self.now() - sent_at).abs() > TIMESTAMP_TOLERANCE {
            return Err(Error::Unauthenticated);
        }
        let secret = WebhookSecret::unwrap(&self.db.keys()?.masters, &wrapped, &source_id(&key))
            .map_err(|error| Error::Internal(anyhow::anyhow!("webhook source secret of {key}: {error}")))?;
        if request.webhook_id.is_empty()
            || !secret.verifies(request.webhook_id, timestamp, request.body, request.signature)
        {
            return Err(Error::Unauthenticated);
        }
        Ok(source)
    }

    /// Does what a verified request asks, once per `webhook-id`. `ctx` acts as the source.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, source = %source.key))]
    pub async fn receive_webhook(
        &self,
        ctx: &RequestContext,
        source: &WebhookSource,
        webhook_id: &str,
        payload: InboundPayload,
    ) -> Result<Received> {
        let now = crate::domain::at_storage_precision(self.now());
        // Claimed before the work, so that two copies arriving at once do it once; completed
        // after it; given back if it fails, so that the sender's retry is taken. A claim whose
        // holder died before completing it goes stale, and a retry then does the work: the work
        // is idempotent (the event's idempotency key, an upsert, a suppression), so a holder
        // that died after the work but before completing it causes no second effect.
        let forget_before = now - TIMESTAMP_TOLERANCE * 2;
        let conn = self.db.connection();
        match store::hooks::claim(conn, &source.key, webhook_id, now, now - CLAIM_GOES_STALE, forget_before).await? {
            Claim::Taken => {}
            Claim::Completed => return Ok(Received::Duplicate),
            Claim::Held => {
                return Err(Error::Conflict {
                    field: Some("webhook-id".to_owned()),
                    reason: "a request with this webhook-id is being handled; retry later".to_owned(),
                });
            }
        }
        match self.act_on_webhook(ctx, source, webhook_id, payload).await {
            Ok(()) => {
                store::hooks::complete(conn, &source.key, webhook_id, now, self.now()).await?;
                Ok(Received::Accepted)
            }
            Err(error) => {
                store::hooks::forget(conn, &source.key, webhook_id, now).await?;
                Err(error)
            }
        }
    }

    async fn act_on_webhook(
        &self,
        ctx: &RequestContext,
        source: &WebhookSource,
        webhook_id: &str,
        payload: InboundPayload,
    ) -> Result<()> {
        match (source.kind, payload) {
            (WebhookSourceKind::Events, InboundPayload::Event(mut item)) => {
                item.event.source = source.key.clone();
                if item.event.idempotency_key.is_none() {
                    item.event.idempotency_key = IdempotencyKey::parse(webhook_id).ok();
                }
                let outcome = self.ingest_events(ctx, vec![Ok(item)], MissingContacts::Create).await?;
                match outcome.into_iter().next() {
                    Some(Ok(Tracked::Created(_) | Tracked::Duplicate(_))) => Ok(()),
                    Some(Err(error)) => Err(error),
                    None => Err(Error::Internal(anyhow::anyhow!("no outcome for the webhook's event"))),
                }
            }
            (WebhookSourceKind::Events, InboundPayload::Contact { key, changes }) => {
                self.upsert_contact(ctx, key, changes).await.map(|_| ())
            }
            (WebhookSourceKind::Suppressions, InboundPayload::Bounce(address)) => {
                let detail = Some(format!("webhook {webhook_id}"));
                self.suppress_address(ctx, &address, SuppressionReason::HardBounce, source.key.as_str(), detail)
                    .await
                    .map(|_| ())
            }
            (WebhookSourceKind::Suppressions, InboundPayload::Complaint(address)) => {
                let detail = Some(format!("webhook {webhook_id}"));
                self.suppress_address(ctx, &address, SuppressionReason::Complaint, source.key.as_str(), detail)
                    .await
                    .map(|_| ())
            }
            (kind, _) => {
                Err(Error::validation("type", format!("a source of kind {} does not send this", kind.as_str())))
            }
        }
    }
}
