//! The optional NATS JetStream consumer (`RAPPORT_NATS_URL`): events published to a subject are
//! stored as if posted to `POST /v1/events`, through the same item parser and use case. A durable
//! pull consumer keeps the position in the broker, so restarts of either side lose nothing; a
//! message is acknowledged only after the transaction holding its event committed, and every
//! event carries an idempotency key (its own, or one derived from the message), so a message
//! redelivered after a crash is answered as a duplicate and never stored twice.

use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_nats::{
    Client, ConnectOptions,
    header::NATS_MESSAGE_ID,
    jetstream::{
        self, AckKind, Message,
        consumer::{AckPolicy, DeliverPolicy, PullConsumer, pull},
        context::GetStreamByNameErrorKind,
        stream,
    },
};
use futures_util::StreamExt;
use secrecy::ExposeSecret;
use serde_json::Value;
use tokio::{sync::watch, time::Instant};

use crate::{
    config::NatsSettings,
    domain::stream::{ConsumerState, ConsumerStatus},
    service::{
        Actor, Error, RequestContext, Services,
        event_items::parse_event,
        events::{IngestEvent, MissingContacts, Tracked},
    },
};

/// The source of events that name none: idempotency keys are unique per source, so keys derived
/// here never meet the keys of API callers.
pub const DEFAULT_SOURCE: &str = "nats";

/// How long a batch waits for more messages after its first: long enough for a backlog to fill
/// it, short enough that a trickle of events is still stored at once.
const LINGER: Duration = Duration::from_millis(20);

/// Waits between attempts after a failure, doubling up to the last.
const FIRST_RETRY: Duration = Duration::from_millis(250);
const LAST_RETRY: Duration = Duration::from_secs(15);

pub struct StreamConsumer {
    services: Services,
    settings: NatsSettings,
    status: watch::Sender<ConsumerStatus>,
}

/// The stream a consumer is bound to. Its creation time goes into derived idempotency keys: a
/// stream deleted and made again numbers its messages from 1 anew, and those must not be taken
/// for the events of the old one.
struct Origin {
    stream: String,
    created: i128,
}

impl StreamConsumer {
    pub fn new(services: Services, settings: NatsSettings) -> Self {
        let (status, _) = watch::channel(ConsumerStatus::default());
        Self { services, settings, status }
    }

    /// What the consumer is doing, for `/readyz`.
    pub fn status(&self) -> watch::Receiver<ConsumerStatus> {
        self.status.subscribe()
    }

    /// Consumes until `stop` turns true (or its sender goes), then stores and acknowledges the
    /// batch in hand. Failures of the broker or the database are logged and retried, never fatal.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let client = match self.connect().await {
            Ok(client) => client,
            Err(error) => {
                tracing::error!(error = format!("{error:#}"), "the NATS stream consumer cannot start");
                self.set_state(ConsumerState::Stopped);
                return;
            }
        };
        let mut retry = FIRST_RETRY;
        loop {
            self.set_state(ConsumerState::Connecting);
            match self.consume(&client, &mut stop, &mut retry).await {
                Ok(()) => break,
                Err(error) => {
                    tracing::warn!(
                        error = format!("{error:#}"),
                        retry_in_ms = retry.as_millis() as u64,
                        "the NATS stream consumer failed; trying again"
                    );
                    self.set_state(ConsumerState::Retrying);
                    if !pause(&mut retry, &mut stop).await {
                        break;
                    }
                }
            }
        }
        // The acknowledgements of the last batch leave before the process does.
        if let Err(error) = client.flush().await {
            tracing::warn!(%error, "could not flush the last acknowledgements; their messages will be redelivered");
        }
        self.set_state(ConsumerState::Stopped);
        tracing::info!("the NATS stream consumer stopped");
    }

    /// Connects in the background: a broker that is down when Rapport starts is retried like one
    /// that goes down later, and never keeps the HTTP API from starting.
    async fn connect(&self) -> anyhow::Result<Client> {
        let url = self.settings.url_display();
        ConnectOptions::new()
            .name("rapport")
            .retry_on_initial_connect()
            .event_callback(|event| async move {
                match event {
                    async_nats::Event::Connected => tracing::info!("connected to NATS"),
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS; reconnecting"),
                    other => tracing::warn!(event = %other, "NATS connection event"),
                }
            })
            .connect(self.settings.url.expose_secret().trim())
            .await
            .with_context(|| format!("cannot connect to NATS at {url}"))
    }

    /// Binds to the stream and the durable consumer, then stores batch after batch. Returns
    /// `Ok` when told to stop, an error when the binding broke (the caller binds again).
    async fn consume(
        &self,
        client: &Client,
        stop: &mut watch::Receiver<bool>,
        retry: &mut Duration,
    ) -> anyhow::Result<()> {
        let context = jetstream::new(client.clone());
        let (stream, origin) = self.bind_stream(&context).await?;
        let consumer: PullConsumer = stream
            .get_or_create_consumer(&self.settings.consumer, self.consumer_config())
            .await
            .with_context(|| format!("cannot bind to the durable consumer {}", self.settings.consumer))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.settings.batch_size)
            .messages()
            .await
            .context("cannot pull messages")?;
        tracing::info!(
            stream = %origin.stream,
            consumer = %self.settings.consumer,
            subject = %self.settings.subject,
            "consuming events from NATS"
        );
        self.set_state(ConsumerState::Consuming);
        loop {
            let first = tokio::select! {
                biased;
                _ = stopping(stop) => return Ok(()),
                first = messages.next() => first,
            };
            let mut batch = vec![first.ok_or_else(|| anyhow!("the message stream ended"))??];
            let mut broken = None;
            let deadline = Instant::now() + LINGER;
            while batch.len() < self.settings.batch_size {
                match tokio::time::timeout_at(deadline, messages.next()).await {
                    Ok(Some(Ok(message))) => batch.push(message),
                    Ok(Some(Err(error))) => {
                        broken = Some(anyhow::Error::from(error));
                        break;
                    }
                    Ok(None) => {
                        broken = Some(anyhow!("the message stream ended"));
                        break;
                    }
                    Err(_) => break,
                }
            }
            // The messages in hand are stored even when the stream broke after them.
            while let Err(error) = self.store(&batch, &origin).await {
                tracing::error!(
                    error = format!("{error:#}"),
                    messages = batch.len(),
                    retry_in_ms = retry.as_millis() as u64,
                    "could not store a batch from NATS; it stays unacknowledged and is tried again"
                );
                self.set_state(ConsumerState::Retrying);
                if !pause(retry, stop).await {
                    // Not acknowledged: the broker delivers the batch again after the ack wait.
                    return Ok(());
                }
                self.set_state(ConsumerState::Consuming);
            }
            *retry = FIRST_RETRY;
            if let Some(error) = broken {
                return Err(error);
            }
        }
    }

    /// The stream that covers the subject, whatever its name (an operator may have made it), or
    /// else a new one of the configured name, on disk.
    async fn bind_stream(&self, context: &jetstream::Context) -> anyhow::Result<(stream::Stream, Origin)> {
        let subject = &self.settings.subject;
        let stream = match context.stream_by_subject(subject.as_str()).await {
            Ok(name) => context.get_stream(&name).await.with_context(|| format!("cannot read the stream {name}"))?,
            Err(error) if error.kind() == GetStreamByNameErrorKind::NotFound => {
                let config = stream::Config {
                    name: self.settings.stream.clone(),
                    subjects: vec![subject.clone()],
                    storage: stream::StorageType::File,
                    description: Some("Events for Rapport".to_owned()),
                    ..Default::default()
                };
                let stream = context
                    .create_stream(config)
                    .await
                    .with_context(|| format!("cannot create the stream {}", self.settings.stream))?;
                tracing::info!(stream = %self.settings.stream, %subject, "created a JetStream stream for the subject");
                stream
            }
            Err(error) => return Err(error).context("cannot look up the stream of the subject"),
        };
        let info = stream.cached_info();
        let origin = Origin { stream: info.config.name.clone(), created: info.created.unix_timestamp_nanos() };
        Ok((stream, origin))
    }

    /// For a consumer made here; one that exists already is used as it is.
    fn consumer_config(&self) -> pull::Config {
        pull::Config {
            durable_name: Some(self.settings.consumer.clone()),
            description: Some("Rapport stores these events".to_owned()),
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.settings.ack_wait,
            filter_subject: self.settings.subject.clone(),
            // Room for the batch being stored and the next ones already pulled.
            max_ack_pending: (self.settings.batch_size as i64 * 4).max(1_000),
            ..Default::default()
        }
    }

    /// Stores the events of `batch` in one call of the batch use case, then acknowledges each
    /// message by what became of its event. An error means nothing was acknowledged.
    async fn store(&self, batch: &[Message], origin: &Origin) -> crate::service::Result<()> {
        let sequences: Vec<Option<u64>> =
            batch.iter().map(|message| message.info().ok().map(|info| info.stream_sequence)).collect();
        let first = sequences.first().copied().flatten().unwrap_or_default();
        let last = sequences.last().copied().flatten().unwrap_or_default();
        let items: Vec<crate::service::Result<IngestEvent>> =
            batch.iter().zip(&sequences).map(|(message, sequence)| item(message, origin, *sequence)).collect();
        let ctx = RequestContext::internal(
            Actor::Stream { name: origin.stream.clone() },
            format!("nats:{}:{first}-{last}", origin.stream),
        );
        let missing = if self.settings.create_contacts { MissingContacts::Create } else { MissingContacts::Reject };
        let outcomes = self.services.ingest_events(&ctx, items, missing).await?;
        let mut counts = ConsumerStatus { state: ConsumerState::Consuming, stored: 0, duplicates: 0, skipped: 0 };
        let mut unsent = 0;
        for ((message, sequence), outcome) in batch.iter().zip(&sequences).zip(outcomes) {
            let kind = match outcome {
                Ok(Tracked::Created(_)) => {
                    counts.stored += 1;
                    AckKind::Ack
                }
                Ok(Tracked::Duplicate(_)) => {
                    counts.duplicates += 1;
                    AckKind::Ack
                }
                Err(error) if retryable(&error) => {
                    tracing::warn!(stream = %origin.stream, sequence, error = %error, "an event could not be stored now; it will be delivered again");
                    AckKind::Nak(Some(FIRST_RETRY))
                }
                Err(error) => {
                    counts.skipped += 1;
                    // Ids and the field only: a reason may quote the value, which may be personal.
                    let (code, field) = rejection(&error);
                    tracing::warn!(stream = %origin.stream, sequence, code, field, "skipped a message that is not a storable event");
                    AckKind::Term
                }
            };
            if message.ack_with(kind).await.is_err() {
                unsent += 1;
            }
        }
        if unsent > 0 {
            tracing::warn!(
                unsent,
                "acknowledgements were not sent (NATS is unreachable); their messages will be redelivered as duplicates"
            );
        }
        self.status.send_modify(|status| {
            status.stored += counts.stored;
            status.duplicates += counts.duplicates;
            status.skipped += counts.skipped;
        });
        Ok(())
    }

    fn set_state(&self, state: ConsumerState) {
        self.status.send_if_modified(|status| std::mem::replace(&mut status.state, state) != state);
    }
}

/// One message as an item of the batch: its JSON body, with the source and idempotency key
/// filled in when it names none.
fn item(message: &Message, origin: &Origin, sequence: Option<u64>) -> crate::service::Result<IngestEvent> {
    let mut body: Value =
        serde_json::from_slice(&message.payload).map_err(|_| Error::validation("event", "is not valid JSON"))?;
    let Value::Object(fields) = &mut body else {
        return Err(Error::validation("event", "must be a JSON object"));
    };
    if fields.get("source").is_none_or(Value::is_null) {
        fields.insert("source".to_owned(), Value::from(DEFAULT_SOURCE));
    }
    if fields.get("idempotencyKey").is_none_or(Value::is_null) {
        let message_id = message.headers.as_ref().and_then(|headers| headers.get(NATS_MESSAGE_ID));
        let key = derived_key(message_id.map(|id| id.as_str()), origin, sequence)
            .ok_or_else(|| Error::validation("event", "has no idempotency key and none can be derived"))?;
        fields.insert("idempotencyKey".to_owned(), Value::from(key));
    }
    parse_event(body)
}

/// The publisher's own message id (`Nats-Msg-Id`, which JetStream also deduplicates by), or else
/// the message's place in its stream: the same for every delivery of one message.
fn derived_key(message_id: Option<&str>, origin: &Origin, sequence: Option<u64>) -> Option<String> {
    match message_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) => Some(format!("nats-msg-id:{id}")),
        None => sequence.map(|sequence| format!("nats:{}:{}:{sequence}", origin.stream, origin.created)),
    }
}

/// Failures that may pass (a database hiccup, a contact changed meanwhile); everything else
/// would fail the same way on every delivery.
fn retryable(error: &Error) -> bool {
    match error {
        Error::Internal(_) | Error::RateLimited { .. } => true,
        Error::Conflict { field, .. } => field.as_deref() == Some("expectedVersion"),
        _ => false,
    }
}

fn rejection(error: &Error) -> (&'static str, Option<&str>) {
    match error {
        Error::Validation { field, .. } => ("BAD_USER_INPUT", Some(field.as_str())),
        Error::NotFound { .. } => ("NOT_FOUND", None),
        Error::Conflict { field, .. } => ("CONFLICT", field.as_deref()),
        Error::Forbidden | Error::Unauthenticated => ("FORBIDDEN", None),
        Error::RateLimited { .. } | Error::Internal(_) => ("INTERNAL", None),
    }
}

/// Completes when the process is told to stop, or when nobody can tell it any more.
async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}

/// Waits `retry` (doubling it for next time) unless told to stop first; false when stopping.
async fn pause(retry: &mut Duration, stop: &mut watch::Receiver<bool>) -> bool {
    let wait = *retry;
    *retry = (*retry * 2).min(LAST_RETRY);
    tokio::select! {
        _ = stopping(stop) => false,
        _ = tokio::time::sleep(wait) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { stream: "EVENTS".to_owned(), created: 1_700_000_000_000_000_000 }
    }

    #[test]
    fn a_message_id_from_the_publisher_wins_over_the_stream_sequence() {
        assert_eq!(derived_key(Some("order-9"), &origin(), Some(5)).unwrap(), "nats-msg-id:order-9");
        assert_eq!(derived_key(Some("  "), &origin(), Some(5)).unwrap(), "nats:EVENTS:1700000000000000000:5");
        assert_eq!(derived_key(None, &origin(), None), None);
    }

    #[test]
    fn a_stream_made_again_derives_other_keys_for_the_same_sequence() {
        let again = Origin { created: origin().created + 1, ..origin() };
        assert_ne!(derived_key(None, &origin(), Some(1)), derived_key(None, &again, Some(1)));
    }

    #[test]
    fn only_passing_failures_are_delivered_again() {
        assert!(retryable(&Error::Internal(anyhow!("database gone"))));
        let stale = Error::Conflict { field: Some("expectedVersion".to_owned()), reason: String::new() };
        assert!(retryable(&stale));
        assert!(!retryable(&Error::validation("type", "is not an event type")));
        assert!(!retryable(&Error::NotFound { what: "contact" }));
        let taken = Error::Conflict { field: Some("email".to_owned()), reason: String::new() };
        assert!(!retryable(&taken));
    }
}
