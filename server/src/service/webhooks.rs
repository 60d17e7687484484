//! Outbound webhooks: the endpoints admins register, the delivery log they read and replay, and
//! the worker that posts every message signed per Standard Webhooks, retrying on a schedule.
//!
//! Messages are written by the changes themselves (see `audit::append`), so a committed change
//! always has its message and a rolled-back one has none. Delivery is at least once: a worker
//! that dies between the receiver's answer and recording it leaves the delivery to be sent
//! again when its lease runs out, with the same `webhook-id` for the receiver to recognise.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use sea_orm::DbBackend;
use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::instrument;
use uuid::Uuid;

use super::{Error, RequestContext, Result, Services};
use crate::{
    audit::{self, Changes},
    config::WebhookSettings,
    crypto::WebhookSecret,
    domain::{
        access::Permission,
        request::Actor,
        webhook::{MAX_ATTEMPTS, WebhookDeliveryStatus, WebhookEndpoint, WebhookEventType, is_public, retry_after},
    },
    store::{
        self,
        webhooks::{Attempt, Claimed, DeliveryRecord, Outcome, WrittenListener},
    },
};

/// A receiver has this long to answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// Deliveries a worker takes at once, and posts at once.
const BATCH: u64 = 64;
const CONCURRENCY: usize = 16;
/// How often an idle worker looks for due deliveries, on PostgreSQL or when it cannot listen
/// for commits.
const POLL: Duration = Duration::from_millis(100);
/// How often an idle worker on SQLite looks for due deliveries: the time an event's webhook
/// waits at most before it leaves (BENCHMARKS.md, events_ingest).
const PROBE_EVERY: Duration = Duration::from_millis(10);
/// The part of a receiver's answer kept in the log.
const LOGGED_ERROR_CHARS: usize = 300;

#[derive(Debug, Clone)]
pub struct NewWebhookEndpoint {
    pub url: url::Url,
    pub description: String,
    pub event_types: Vec<WebhookEventType>,
}

#[derive(Debug, Clone, Default)]
pub struct WebhookEndpointChanges {
    pub url: Option<url::Url>,
    pub description: Option<String>,
    pub event_types: Option<Vec<WebhookEventType>>,
    pub enabled: Option<bool>,
}

/// A delivery with its attempts, for the log.
#[derive(Debug, Clone)]
pub struct DeliveryLog {
    pub delivery: DeliveryRecord,
    pub attempts: Vec<Attempt>,
}

fn check_url(url: &url::Url) -> Result<()> {
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(Error::validation("input.url", "must be an http or https URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(Error::validation("input.url", "must not hold credentials; the signature authenticates"));
    }
    Ok(())
}

impl Services {
    /// Registers an endpoint; the `whsec_` secret is returned this once.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn create_webhook_endpoint(
        &self,
        ctx: &RequestContext,
        new: NewWebhookEndpoint,
    ) -> Result<(WebhookEndpoint, String)> {
        self.require(ctx, Permission::WebhooksManage)?;
        check_url(&new.url)?;
        let now = self.now();
        let endpoint = WebhookEndpoint {
            id: Uuid::now_v7(),
            url: new.url,
            description: new.description,
            event_types: new.event_types,
            enabled: true,
            disabled_reason: None,
            created_at: now,
            updated_at: now,
        };
        let secret = WebhookSecret::generate();
        let wrapped = secret.wrap(&self.db.keys()?.masters, &endpoint.id.to_string());
        let tx = self.db.begin_write().await?;
        store::webhooks::insert_endpoint(&tx, &endpoint, &wrapped).await?;
        let mut changes = Changes::new();
        changes.field("url", None, Some(Value::from(endpoint.url.as_str()))).field(
            "eventTypes",
            None,
            Some(event_types_json(&endpoint.event_types)),
        );
        let entry = audit::Entry::new("webhook_endpoint.created", "webhook_endpoint", endpoint.id.to_string(), changes);
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        Ok((endpoint, secret.to_whsec()))
    }

    #[instrument(skip_all, fields(request_id = %ctx.request_id, endpoint = %id))]
    pub async fn update_webhook_endpoint(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        update: WebhookEndpointChanges,
    ) -> Result<WebhookEndpoint> {
        self.require(ctx, Permission::WebhooksManage)?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let before = store::webhooks::endpoint(&tx, id).await?.ok_or(Error::NotFound { what: "webhook endpoint" })?;
        let mut after = before.clone();
        if let Some(url) = update.url {
            check_url(&url)?;
            after.url = url;
        }
        if let Some(description) = update.description {
            after.description = description;
        }
        if let Some(event_types) = update.event_types {
            after.event_types = event_types;
        }
        if let Some(enabled) = update.enabled {
            after.enabled = enabled;
            if enabled {
                after.disabled_reason = None;
            }
        }
        if after == before {
            return Ok(before);
        }
        after.updated_at = now;
        store::webhooks::update_endpoint(&tx, &after).await?;
        let mut changes = Changes::new();
        if before.url != after.url {
            changes.field("url", Some(Value::from(before.url.as_str())), Some(Value::from(after.url.as_str())));
        }
        if before.event_types != after.event_types {
            changes.field(
                "eventTypes",
                Some(event_types_json(&before.event_types)),
                Some(event_types_json(&after.event_types)),
            );
        }
        if before.enabled != after.enabled {
            changes.field("enabled", Some(Value::from(before.enabled)), Some(Value::from(after.enabled)));
        }
        let entry = audit::Entry::new("webhook_endpoint.altered", "webhook_endpoint", id.to_string(), changes);
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        Ok(after)
    }

    /// Removes the endpoint with its deliveries and their log.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, endpoint = %id))]
    pub async fn delete_webhook_endpoint(&self, ctx: &RequestContext, id: Uuid) -> Result<()> {
        self.require(ctx, Permission::WebhooksManage)?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        if !store::webhooks::delete_endpoint(&tx, id).await? {
            return Err(Error::NotFound { what: "webhook endpoint" });
        }
        let entry = audit::Entry::new("webhook_endpoint.deleted", "webhook_endpoint", id.to_string(), Changes::new());
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn webhook_endpoints(&self, ctx: &RequestContext) -> Result<Vec<WebhookEndpoint>> {
        self.require(ctx, Permission::WebhooksManage)?;
        Ok(store::webhooks::endpoints(self.db.connection()).await?)
    }

    /// An endpoint's deliveries, newest first, each with its attempts.
    pub async fn webhook_deliveries(
        &self,
        ctx: &RequestContext,
        endpoint_id: Uuid,
        status: Option<WebhookDeliveryStatus>,
        limit: u64,
    ) -> Result<Vec<DeliveryLog>> {
        self.require(ctx, Permission::WebhooksManage)?;
        let conn = self.db.connection();
        let deliveries = store::webhooks::deliveries(conn, endpoint_id, status, limit).await?;
        let ids: Vec<Uuid> = deliveries.iter().map(|delivery| delivery.id).collect();
        let mut attempts = store::webhooks::attempts(conn, &ids).await?;
        Ok(deliveries
            .into_iter()
            .map(|delivery| {
                let (own, rest): (Vec<_>, Vec<_>) =
                    attempts.drain(..).partition(|attempt| attempt.delivery_id == delivery.id);
                attempts = rest;
                DeliveryLog { delivery, attempts: own }
            })
            .collect())
    }

    /// Sends a delivery's message again, as a new delivery due now; returns its id.
    #[instrument(skip_all, fields(request_id = %ctx.request_id, delivery = %delivery_id))]
    pub async fn replay_webhook_delivery(&self, ctx: &RequestContext, delivery_id: Uuid) -> Result<Uuid> {
        self.require(ctx, Permission::WebhooksManage)?;
        let now = self.now();
        let tx = self.db.begin_write().await?;
        let id = store::webhooks::replay(&tx, delivery_id, now)
            .await?
            .ok_or(Error::NotFound { what: "webhook delivery" })?;
        let mut changes = Changes::new();
        changes.field("replayOf", None, Some(Value::from(delivery_id.to_string())));
        let entry = audit::Entry::new("webhook_delivery.replayed", "webhook_delivery", id.to_string(), changes);
        audit::append(&tx, ctx, now, entry).await?;
        tx.commit().await?;
        Ok(id)
    }
}

fn event_types_json(types: &[WebhookEventType]) -> Value {
    json!(types.iter().map(|kind| kind.as_str()).collect::<Vec<_>>())
}

/// Posts due deliveries until told to stop. Every `serve` runs one; several processes on one
/// database share the work through leases.
pub struct WebhookWorker {
    services: Services,
    client: reqwest::Client,
    settings: WebhookSettings,
}

impl WebhookWorker {
    pub fn new(services: Services, settings: WebhookSettings) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .connect_timeout(Duration::from_secs(5))
            // A redirect could lead anywhere; a receiver answers where it was registered.
            .redirect(reqwest::redirect::Policy::none())
            // A proxy would connect for us, past the address check below.
            .no_proxy()
            .user_agent(concat!("Rapport-Webhooks/", env!("CARGO_PKG_VERSION")))
            .dns_resolver(Arc::new(PublicOnly { allow_private: settings.allow_private_networks }))
            .build()?;
        Ok(Self { services, client, settings })
    }

    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        tracing::info!("webhook delivery started");
        let mut listener = match WrittenListener::connect(self.services.db.connection()).await {
            Ok(listener) => listener,
            Err(error) => {
                tracing::warn!(error = %error, "cannot listen for new webhooks; polling only");
                None
            }
        };
        while !*stop.borrow() {
            let handled = match self.round().await {
                Ok(handled) => handled,
                Err(error) => {
                    tracing::error!(error = %error, "webhook delivery round failed");
                    0
                }
            };
            if handled == 0 {
                tokio::select! {
                    () = self.until_due(&mut listener) => {}
                    _ = stop.changed() => {}
                }
            }
        }
        tracing::info!("webhook delivery stopped");
    }

    /// Waits, when the last round found nothing, until a round may find something. On
    /// PostgreSQL that is the next commit that wrote deliveries, or `POLL` for retries that fall
    /// due. On SQLite, where no process hears of another's commits, it is the first of regular
    /// looks (`PROBE_EVERY`, cheap reads beside the writer) that finds a due delivery.
    async fn until_due(&self, listener: &mut Option<WrittenListener>) {
        if let Some(active) = listener.as_mut() {
            tokio::select! {
                () = tokio::time::sleep(POLL) => {}
                written = active.written() => {
                    if let Err(error) = written {
                        tracing::warn!(error = %error, "stopped listening for new webhooks; polling only");
                        *listener = None;
                    }
                }
            }
            return;
        }
        if self.services.db.backend() != DbBackend::Sqlite {
            tokio::time::sleep(POLL).await;
            return;
        }
        loop {
            tokio::time::sleep(PROBE_EVERY).await;
            match store::webhooks::any_due(self.services.db.connection(), self.services.now()).await {
                Ok(false) => {}
                Ok(true) => return,
                Err(error) => {
                    // The round that follows reports it, if it lasts.
                    tracing::debug!(error = %error, "cannot look for due webhooks");
                    return;
                }
            }
        }
    }

    fn lease_until(&self) -> DateTime<Utc> {
        self.services.now() + chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::days(365))
    }

    /// Claims and delivers one batch; how many deliveries it handled.
    async fn round(&self) -> Result<usize> {
        let conn = self.services.db.connection();
        let holder = Uuid::now_v7();
        let claimed = store::webhooks::claim(conn, self.services.now(), holder, self.lease_until(), BATCH).await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let endpoints = store::webhooks::endpoints(conn).await?;
        let (ready, gone): (Vec<_>, Vec<_>) = claimed.into_iter().partition(|claimed| {
            endpoints.iter().any(|endpoint| endpoint.id == claimed.endpoint_id && endpoint.enabled)
        });
        let gone: Vec<Uuid> = gone.iter().map(|claimed| claimed.id).collect();
        store::webhooks::release(conn, holder, &gone).await?;
        let count = ready.len();
        let endpoints = &endpoints;
        let delivering = stream::iter(ready).for_each_concurrent(CONCURRENCY, |claimed| async move {
            let Some(endpoint) = endpoints.iter().find(|endpoint| endpoint.id == claimed.endpoint_id) else {
                return;
            };
            if let Err(error) = self.deliver(endpoint, holder, &claimed).await {
                tracing::error!(error = %error, delivery = %claimed.id, "cannot record a webhook attempt");
            }
        });
        tokio::select! {
            () = delivering => {}
            () = self.keep_leased(holder) => {}
        }
        Ok(count)
    }

    /// Renews the round's leases a few times per lease, for as long as the round lasts: slow
    /// receivers (up to `REQUEST_TIMEOUT` each, several after one another) may keep a round
    /// busy for longer than a lease, and a delivery whose lease ran out would be posted again
    /// by another worker while this one still waits for its answer.
    async fn keep_leased(&self, holder: Uuid) {
        loop {
            tokio::time::sleep(self.settings.lease / 3).await;
            if let Err(error) = store::webhooks::renew(self.services.db.connection(), holder, self.lease_until()).await
            {
                tracing::warn!(error = %error, "cannot renew webhook delivery leases");
            }
        }
    }

    async fn deliver(&self, endpoint: &WebhookEndpoint, holder: Uuid, claimed: &Claimed) -> Result<()> {
        let conn = self.services.db.connection();
        let wrapped = store::webhooks::endpoint_secret(conn, endpoint.id)
            .await?
            .ok_or(Error::NotFound { what: "webhook endpoint" })?;
        let secret = WebhookSecret::unwrap(&self.services.db.keys()?.masters, &wrapped, &endpoint.id.to_string())
            .map_err(|error| Error::Internal(anyhow::anyhow!("webhook secret of {}: {error}", endpoint.id)))?;
        let attempted_at = self.services.now();
        let started = std::time::Instant::now();
        let (status_code, error) = self.post(endpoint, claimed, &secret, attempted_at).await;
        let latency_ms = u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX);
        let attempts = claimed.attempts + 1;
        let delivered = status_code.is_some_and(|code| (200..300).contains(&code));
        let outcome = if delivered {
            Outcome::Delivered
        } else {
            match retry_after(attempts, self.settings.retry_base, random_unit()) {
                Some(wait) if attempts < MAX_ATTEMPTS => Outcome::RetryAt(
                    attempted_at + chrono::Duration::from_std(wait).unwrap_or(chrono::Duration::days(365)),
                ),
                _ => Outcome::Failed,
            }
        };
        let attempt =
            Attempt { id: Uuid::now_v7(), delivery_id: claimed.id, attempted_at, status_code, error, latency_ms };
        if outcome == Outcome::Failed {
            return self.disable(endpoint, holder, &attempt).await;
        }
        if !store::webhooks::settle(conn, holder, &attempt, outcome).await? {
            tracing::warn!(delivery = %claimed.id, "a webhook delivery's lease ran out during its attempt");
        }
        Ok(())
    }

    /// One POST; the status code if the receiver answered, and what went wrong if it failed.
    async fn post(
        &self,
        endpoint: &WebhookEndpoint,
        claimed: &Claimed,
        secret: &WebhookSecret,
        at: DateTime<Utc>,
    ) -> (Option<u16>, Option<String>) {
        if let Some(ip) = literal_ip(&endpoint.url)
            && !self.settings.allow_private_networks
            && !is_public(ip)
        {
            return (None, Some(format!("{ip} is not a public address (see webhook_allow_private_networks)")));
        }
        let message_id = format!("msg_{}", claimed.message_id.simple());
        let timestamp = at.timestamp();
        let signature = secret.sign(&message_id, timestamp, claimed.body.as_bytes());
        let sent = self
            .client
            .post(endpoint.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", &message_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(claimed.body.clone())
            .send()
            .await;
        match sent {
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return (Some(status.as_u16()), None);
                }
                let text = response.text().await.unwrap_or_default();
                let excerpt: String = text.chars().take(LOGGED_ERROR_CHARS).collect();
                (Some(status.as_u16()), Some(format!("answered {status}: {excerpt}")))
            }
            Err(error) => (None, Some(describe(&error))),
        }
    }

    /// The schedule is spent: the delivery fails and the endpoint is disabled until an admin
    /// enables it again, which the audit log and the endpoint's `disabledReason` tell.
    async fn disable(&self, endpoint: &WebhookEndpoint, holder: Uuid, attempt: &Attempt) -> Result<()> {
        let reason = format!(
            "disabled after {MAX_ATTEMPTS} failed attempts to deliver {}; last: {}",
            attempt.delivery_id,
            attempt.error.as_deref().unwrap_or("no answer")
        );
        tracing::warn!(endpoint = %endpoint.id, url = %endpoint.url, "{reason}");
        let tx = self.services.db.begin_write().await?;
        let settled = store::webhooks::settle(&tx, holder, attempt, Outcome::Failed).await?;
        if !settled || !store::webhooks::disable_endpoint(&tx, endpoint.id, &reason, attempt.attempted_at).await? {
            // Another worker has the delivery now, or an admin disabled the endpoint first.
            tx.commit().await?;
            return Ok(());
        }
        let mut changes = Changes::new();
        changes.field("enabled", Some(Value::from(true)), Some(Value::from(false))).field(
            "disabledReason",
            None,
            Some(Value::from(reason)),
        );
        let ctx = RequestContext::internal(Actor::Cli, "webhook-worker");
        let entry =
            audit::Entry::new("webhook_endpoint.disabled", "webhook_endpoint", endpoint.id.to_string(), changes);
        audit::append(&tx, &ctx, attempt.attempted_at, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

fn literal_ip(url: &url::Url) -> Option<std::net::IpAddr> {
    match url.host()? {
        url::Host::Ipv4(ip) => Some(ip.into()),
        url::Host::Ipv6(ip) => Some(ip.into()),
        url::Host::Domain(_) => None,
    }
}

/// The error and its causes, which is where reqwest says what happened.
fn describe(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A number in [0, 1) for jitter, from the operating system's generator.
fn random_unit() -> f64 {
    getrandom::u64().map_or(0.5, |bits| (bits >> 11) as f64 / (1u64 << 53) as f64)
}

/// Resolves names like the system does, then keeps only public addresses: the check applies
/// to the addresses actually connected to, so a name that resolves differently on the second
/// lookup (DNS rebinding) cannot slip through.
struct PublicOnly {
    allow_private: bool,
}

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let allowed: Vec<SocketAddr> =
                found.into_iter().filter(|address| allow_private || is_public(address.ip())).collect();
            if allowed.is_empty() {
                return Err(format!("{host} resolves to no public address (see webhook_allow_private_networks)").into());
            }
            Ok(Box::new(allowed.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
