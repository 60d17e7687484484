//! Outbound webhook endpoints over GraphQL: registering them (the secret is shown once), the
//! delivery log with every attempt, and replaying a delivery.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};

use super::{
    access::parse_uuid,
    error::{GqlResult, parse_arg},
    guard::Allow,
    request_of, services_of,
};
use crate::{
    domain::{
        access::Permission,
        key::Key,
        webhook::{WebhookDeliveryStatus, WebhookEndpoint, WebhookEventType, WebhookSource, WebhookSourceKind},
    },
    service::webhooks::{DeliveryLog, NewWebhookEndpoint, WebhookEndpointChanges},
};

/// Deliveries listed at most, newest first.
const MAX_DELIVERIES: i32 = 500;

#[derive(SimpleObject)]
#[graphql(name = "WebhookEndpoint")]
pub struct WebhookEndpointNode {
    id: ID,
    url: String,
    description: String,
    /// The event types sent; empty means every type.
    event_types: Vec<String>,
    enabled: bool,
    /// Why Rapport disabled the endpoint (its deliveries kept failing); cleared by enabling it.
    disabled_reason: Option<String>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<WebhookEndpoint> for WebhookEndpointNode {
    fn from(endpoint: WebhookEndpoint) -> Self {
        Self {
            id: ID(endpoint.id.to_string()),
            url: endpoint.url.to_string(),
            description: endpoint.description,
            event_types: endpoint.event_types.iter().map(|kind| kind.as_str().to_owned()).collect(),
            enabled: endpoint.enabled,
            disabled_reason: endpoint.disabled_reason,
            created_at: endpoint.created_at,
            updated_at: endpoint.updated_at,
        }
    }
}

#[derive(SimpleObject)]
pub struct CreateWebhookEndpointPayload {
    endpoint: WebhookEndpointNode,
    /// `whsec_…`: receivers verify signatures with it. Shown this once.
    secret: String,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "WebhookDeliveryStatus")]
pub enum DeliveryStatusValue {
    Pending,
    Delivered,
    /// Every attempt of the schedule (about three days) failed.
    Failed,
}

impl From<WebhookDeliveryStatus> for DeliveryStatusValue {
    fn from(status: WebhookDeliveryStatus) -> Self {
        match status {
            WebhookDeliveryStatus::Pending => Self::Pending,
            WebhookDeliveryStatus::Delivered => Self::Delivered,
            WebhookDeliveryStatus::Failed => Self::Failed,
        }
    }
}

impl From<DeliveryStatusValue> for WebhookDeliveryStatus {
    fn from(status: DeliveryStatusValue) -> Self {
        match status {
            DeliveryStatusValue::Pending => Self::Pending,
            DeliveryStatusValue::Delivered => Self::Delivered,
            DeliveryStatusValue::Failed => Self::Failed,
        }
    }
}

#[derive(SimpleObject)]
pub struct WebhookAttempt {
    attempted_at: DateTime<Utc>,
    /// The receiver's HTTP status, if it answered.
    status_code: Option<i32>,
    error: Option<String>,
    latency_ms: i32,
}

#[derive(SimpleObject)]
pub struct WebhookDelivery {
    id: ID,
    /// The `webhook-id` header: the same on every attempt and replay of one message.
    message_id: String,
    event_type: String,
    status: DeliveryStatusValue,
    attempts: i32,
    next_attempt_at: DateTime<Utc>,
    last_status_code: Option<i32>,
    last_error: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    attempt_log: Vec<WebhookAttempt>,
}

impl From<DeliveryLog> for WebhookDelivery {
    fn from(log: DeliveryLog) -> Self {
        let delivery = log.delivery;
        Self {
            id: ID(delivery.id.to_string()),
            message_id: format!("msg_{}", delivery.message_id.simple()),
            event_type: delivery.event_type,
            status: delivery.status.into(),
            attempts: i32::try_from(delivery.attempts).unwrap_or(i32::MAX),
            next_attempt_at: delivery.next_attempt_at,
            last_status_code: delivery.last_status_code.map(i32::from),
            last_error: delivery.last_error,
            delivered_at: delivery.delivered_at,
            created_at: delivery.created_at,
            attempt_log: log
                .attempts
                .into_iter()
                .map(|attempt| WebhookAttempt {
                    attempted_at: attempt.attempted_at,
                    status_code: attempt.status_code.map(i32::from),
                    error: attempt.error,
                    latency_ms: i32::try_from(attempt.latency_ms).unwrap_or(i32::MAX),
                })
                .collect(),
        }
    }
}

#[derive(InputObject)]
pub struct CreateWebhookEndpointInput {
    url: String,
    #[graphql(default)]
    description: String,
    /// `contact.created`, `contact.updated`, `contact.deleted`, `consent.changed`,
    /// `topic.changed`, `event.received`, `email.sent`, `email.bounced`; empty or left out means
    /// every type.
    #[graphql(default)]
    event_types: Vec<String>,
}

#[derive(InputObject)]
pub struct UpdateWebhookEndpointInput {
    id: ID,
    url: Option<String>,
    description: Option<String>,
    event_types: Option<Vec<String>>,
    /// `true` also clears the reason Rapport disabled it for.
    enabled: Option<bool>,
}

fn parse_url(field: &str, raw: &str) -> GqlResult<url::Url> {
    parse_arg(field, url::Url::parse(raw.trim()))
}

fn parse_event_types(field: &str, raw: &[String]) -> GqlResult<Vec<WebhookEventType>> {
    raw.iter()
        .enumerate()
        .map(|(index, kind)| {
            parse_arg(
                &format!("{field}[{index}]"),
                kind.parse::<WebhookEventType>().map_err(|_| "is not an event type"),
            )
        })
        .collect()
}

/// A description is optional: left empty, it stays empty.
fn parse_description(raw: &str) -> GqlResult<String> {
    if raw.trim().is_empty() {
        return Ok(String::new());
    }
    parse_arg("input.description", crate::domain::clean_text(raw, 200))
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "WebhookSourceKind")]
pub enum SourceKindValue {
    /// Events (`{"type": "event"}`) and contact changes (`{"type": "contact"}`).
    Events,
    /// Bounces and complaints (`{"type": "bounce" | "complaint"}`) for the suppression list.
    Suppressions,
}

impl From<SourceKindValue> for WebhookSourceKind {
    fn from(kind: SourceKindValue) -> Self {
        match kind {
            SourceKindValue::Events => Self::Events,
            SourceKindValue::Suppressions => Self::Suppressions,
        }
    }
}

impl From<WebhookSourceKind> for SourceKindValue {
    fn from(kind: WebhookSourceKind) -> Self {
        match kind {
            WebhookSourceKind::Events => Self::Events,
            WebhookSourceKind::Suppressions => Self::Suppressions,
        }
    }
}

/// A system allowed to post to `/hooks/{key}`.
#[derive(SimpleObject)]
#[graphql(name = "WebhookSource")]
pub struct WebhookSourceNode {
    key: String,
    kind: SourceKindValue,
    created_at: DateTime<Utc>,
}

impl From<WebhookSource> for WebhookSourceNode {
    fn from(source: WebhookSource) -> Self {
        Self { key: source.key.as_str().to_owned(), kind: source.kind.into(), created_at: source.created_at }
    }
}

#[derive(SimpleObject)]
pub struct CreateWebhookSourcePayload {
    source: WebhookSourceNode,
    /// `whsec_…`: the sender signs with it. Shown this once.
    secret: String,
}

#[derive(Default)]
pub struct WebhookQuery;

#[Object]
impl WebhookQuery {
    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn webhook_endpoints(&self, ctx: &Context<'_>) -> GqlResult<Vec<WebhookEndpointNode>> {
        let endpoints = services_of(ctx)?.webhook_endpoints(request_of(ctx)?).await?;
        Ok(endpoints.into_iter().map(WebhookEndpointNode::from).collect())
    }

    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn webhook_sources(&self, ctx: &Context<'_>) -> GqlResult<Vec<WebhookSourceNode>> {
        let sources = services_of(ctx)?.webhook_sources(request_of(ctx)?).await?;
        Ok(sources.into_iter().map(WebhookSourceNode::from).collect())
    }

    /// An endpoint's deliveries, newest first, each with its attempts.
    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn webhook_deliveries(
        &self,
        ctx: &Context<'_>,
        endpoint_id: ID,
        status: Option<DeliveryStatusValue>,
        #[graphql(default = 100, validator(minimum = 1, maximum = 500))] first: i32,
    ) -> GqlResult<Vec<WebhookDelivery>> {
        let endpoint_id = parse_uuid("endpointId", &endpoint_id)?;
        let limit = u64::try_from(first.min(MAX_DELIVERIES)).unwrap_or(1);
        let deliveries =
            services_of(ctx)?.webhook_deliveries(request_of(ctx)?, endpoint_id, status.map(Into::into), limit).await?;
        Ok(deliveries.into_iter().map(WebhookDelivery::from).collect())
    }
}

#[derive(Default)]
pub struct WebhookMutation;

#[Object]
impl WebhookMutation {
    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn create_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: CreateWebhookEndpointInput,
    ) -> GqlResult<CreateWebhookEndpointPayload> {
        let new = NewWebhookEndpoint {
            url: parse_url("input.url", &input.url)?,
            description: parse_description(&input.description)?,
            event_types: parse_event_types("input.eventTypes", &input.event_types)?,
        };
        let (endpoint, secret) = services_of(ctx)?.create_webhook_endpoint(request_of(ctx)?, new).await?;
        Ok(CreateWebhookEndpointPayload { endpoint: endpoint.into(), secret })
    }

    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn update_webhook_endpoint(
        &self,
        ctx: &Context<'_>,
        input: UpdateWebhookEndpointInput,
    ) -> GqlResult<WebhookEndpointNode> {
        let id = parse_uuid("input.id", &input.id)?;
        let changes = WebhookEndpointChanges {
            url: input.url.as_deref().map(|raw| parse_url("input.url", raw)).transpose()?,
            description: input.description.as_deref().map(parse_description).transpose()?,
            event_types: input
                .event_types
                .as_deref()
                .map(|raw| parse_event_types("input.eventTypes", raw))
                .transpose()?,
            enabled: input.enabled,
        };
        Ok(services_of(ctx)?.update_webhook_endpoint(request_of(ctx)?, id, changes).await?.into())
    }

    /// Removes the endpoint, its deliveries and their log.
    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn delete_webhook_endpoint(&self, ctx: &Context<'_>, id: ID) -> GqlResult<bool> {
        let id = parse_uuid("id", &id)?;
        services_of(ctx)?.delete_webhook_endpoint(request_of(ctx)?, id).await?;
        Ok(true)
    }

    /// Lets a system post to `/hooks/{key}`, signing with the secret returned this once.
    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn create_webhook_source(
        &self,
        ctx: &Context<'_>,
        key: String,
        kind: SourceKindValue,
    ) -> GqlResult<CreateWebhookSourcePayload> {
        let key = parse_arg("key", Key::parse(&key))?;
        let (source, secret) = services_of(ctx)?.create_webhook_source(request_of(ctx)?, key, kind.into()).await?;
        Ok(CreateWebhookSourcePayload { source: source.into(), secret })
    }

    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn delete_webhook_source(&self, ctx: &Context<'_>, key: String) -> GqlResult<bool> {
        let key = parse_arg("key", Key::parse(&key))?;
        services_of(ctx)?.delete_webhook_source(request_of(ctx)?, &key).await?;
        Ok(true)
    }

    /// Sends a delivery's message again (same `webhook-id`), as a new delivery due now.
    #[graphql(guard = "Allow::to(Permission::WebhooksManage)")]
    async fn replay_webhook_delivery(&self, ctx: &Context<'_>, id: ID) -> GqlResult<ID> {
        let id = parse_uuid("id", &id)?;
        Ok(ID(services_of(ctx)?.replay_webhook_delivery(request_of(ctx)?, id).await?.to_string()))
    }
}
