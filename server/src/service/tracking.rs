//! What recipients do with tracked mail: an open of the pixel or a click of a link becomes an
//! `email.opened` or `email.clicked` event on the contact, through the ordinary event service
//! (source `mail`), so segments and programs see them like any other event.
//!
//! Mail clients and link scanners fetch the same URL several times in a row, so each hit carries
//! an idempotency key of the send, the kind, the link (clicks) and the minute (UTC) it came in:
//! within one calendar minute, one send's opens count once and each of its links' clicks count
//! once. Hits on either side of a minute's end count twice; a lookup of earlier events would
//! avoid that, at the price of a read and a race on every hit.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use super::{
    Error, RequestContext, Result, Services,
    events::{NewEvent, Tracked},
};
use crate::{
    domain::{
        contact::ContactRef,
        event::{EventProperties, EventType, IdempotencyKey},
        key::Key,
    },
    mail::tracking::{TrackedClick, TrackedSend, TrackingKeys},
};

const SOURCE: &str = "mail";
const OPENED: &str = "email.opened";
const CLICKED: &str = "email.clicked";

impl Services {
    /// The keys that sign the tracking tokens in outgoing mail and verify them when they return.
    pub fn tracking_keys(&self) -> Result<TrackingKeys> {
        Ok(TrackingKeys::new(&self.db.keys()?.masters))
    }

    /// The send an open token names; `NotFound` for a token this server did not sign.
    pub fn verify_open(&self, token: &str) -> Result<TrackedSend> {
        self.tracking_keys()?.verify_open(token).map_err(|_| Error::NotFound { what: "tracking token" })
    }

    /// The send and link a click token names; `NotFound` for a token this server did not sign.
    pub fn verify_click(&self, token: &str) -> Result<TrackedClick> {
        self.tracking_keys()?.verify_click(token).map_err(|_| Error::NotFound { what: "tracking token" })
    }

    /// Records `email.opened`, once per send and minute. Records nothing for an erased contact.
    pub async fn record_open(&self, ctx: &RequestContext, send: &TrackedSend) -> Result<()> {
        let minute = minute_of(self.now());
        let key = format!("open:{}:{minute}", send.send_id);
        self.record(ctx, send, OPENED, properties(send, None), &key).await
    }

    /// Records `email.clicked` with the link's URL, once per send, link and minute. Records
    /// nothing for an erased contact.
    pub async fn record_click(&self, ctx: &RequestContext, click: &TrackedClick) -> Result<()> {
        let minute = minute_of(self.now());
        // A digest keeps the key within its 255 characters whatever the length of the URL.
        let link: String = hex::encode(&Sha256::digest(click.url.as_str().as_bytes())[..16]);
        let key = format!("click:{}:{link}:{minute}", click.send.send_id);
        self.record(ctx, &click.send, CLICKED, properties(&click.send, Some(click.url.as_str())), &key).await
    }

    async fn record(
        &self,
        ctx: &RequestContext,
        send: &TrackedSend,
        event_type: &str,
        properties: Map<String, Value>,
        idempotency_key: &str,
    ) -> Result<()> {
        let internal = |what: &str| Error::Internal(anyhow::anyhow!("tracking event: invalid {what}"));
        let event = NewEvent {
            contact: ContactRef::Id(send.contact_id),
            event_type: EventType::parse(event_type).map_err(|_| internal("type"))?,
            properties: EventProperties::parse(Value::Object(properties))
                .map_err(|error| Error::validation("url", error))?,
            occurred_at: None,
            source: Key::parse(SOURCE).map_err(|_| internal("source"))?,
            idempotency_key: Some(IdempotencyKey::parse(idempotency_key).map_err(|_| internal("idempotency key"))?),
        };
        match self.track_events(ctx, vec![Ok(event)]).await?.pop() {
            Some(Ok(Tracked::Created(_) | Tracked::Duplicate(_))) => Ok(()),
            // Erased (or deleted) since the mail went out: there is no one to record it on.
            Some(Err(Error::NotFound { .. })) => {
                tracing::debug!(send_id = %send.send_id, "tracking hit for a contact that no longer exists");
                Ok(())
            }
            Some(Err(error)) => Err(error),
            None => Err(Error::Internal(anyhow::anyhow!("tracking event: no outcome"))),
        }
    }
}

fn minute_of(at: DateTime<Utc>) -> i64 {
    at.timestamp().div_euclid(60)
}

fn properties(send: &TrackedSend, url: Option<&str>) -> Map<String, Value> {
    let mut properties = Map::new();
    if let Some(url) = url {
        properties.insert("url".into(), json!(url));
    }
    properties.insert("sendId".into(), json!(send.send_id));
    properties.insert("emailVersionId".into(), json!(send.email_version_id));
    properties
}
