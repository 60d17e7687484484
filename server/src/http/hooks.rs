//! `POST /hooks/{source}`: inbound webhooks, signed per Standard Webhooks with the source's
//! secret. The body is an envelope: `{"type": "event", "data": <an item of /v1/events>}` or
//! `{"type": "contact", "data": {"contact": {"email" | "externalId": …}, "changes": {…}}}` for a
//! source of kind `events`; `{"type": "bounce" | "complaint", "data": {"email": …}}` for one of kind
//! `suppressions`. Nothing in the body is read before its signature is checked.

use std::net::SocketAddr;

use axum::{
    Json,
    body::Body,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{AppState, body_within, error::ApiError, page_context};
use crate::{
    domain::contact::{EmailAddress, ExternalId},
    service::{
        Actor, Error,
        contacts::UpsertKey,
        event_items,
        hooks::{InboundPayload, Received, SignedRequest},
    },
};

/// One event or contact with room to spare: an event's properties take at most 32 KB.
const MAX_BODY_BYTES: usize = 1024 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    data: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactEnvelope {
    contact: Map<String, Value>,
    #[serde(default)]
    changes: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddressEnvelope {
    email: String,
}

pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(source): Path<String>,
    body: Body,
) -> Response {
    let body = match body_within(&headers, body, MAX_BODY_BYTES, "a webhook carries one event or contact").await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let header = |name: &str| headers.get(name).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let request = SignedRequest {
        webhook_id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body: &body,
    };
    let source = match state.services.verify_webhook(&source, &request).await {
        Ok(source) => source,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let payload = match parse(&body) {
        Ok(payload) => payload,
        Err(error) => return ApiError::from(error).into_response(),
    };
    let actor = Actor::WebhookSource { key: source.key.as_str().to_owned(), kind: source.kind };
    let ctx = page_context(actor, peer, &headers);
    match state.services.receive_webhook(&ctx, &source, request.webhook_id, payload).await {
        Ok(Received::Accepted) => (StatusCode::OK, Json(json!({ "status": "accepted" }))).into_response(),
        Ok(Received::Duplicate) => (StatusCode::OK, Json(json!({ "status": "duplicate" }))).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

fn parse(body: &[u8]) -> Result<InboundPayload, Error> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|error| Error::validation("body", format!("is not an envelope {{\"type\", \"data\"}}: {error}")))?;
    let data = envelope.data;
    match envelope.kind.as_str() {
        "event" => event_items::parse_event(data).map(InboundPayload::Event).map_err(|error| error.within("data")),
        "contact" => {
            let contact: ContactEnvelope =
                serde_json::from_value(data).map_err(|error| Error::validation("data", error))?;
            let key = upsert_key(&contact.contact).map_err(|error| error.within("data.contact"))?;
            let changes =
                event_items::identify_changes(contact.changes).map_err(|error| error.within("data.changes"))?;
            Ok(InboundPayload::Contact { key, changes })
        }
        kind @ ("bounce" | "complaint") => {
            let address: AddressEnvelope =
                serde_json::from_value(data).map_err(|error| Error::validation("data", error))?;
            let email = EmailAddress::parse(&address.email).map_err(|error| Error::validation("data.email", error))?;
            Ok(if kind == "bounce" { InboundPayload::Bounce(email) } else { InboundPayload::Complaint(email) })
        }
        _ => Err(Error::validation("type", "is none of event, contact, bounce and complaint")),
    }
}

fn upsert_key(reference: &Map<String, Value>) -> Result<UpsertKey, Error> {
    let text = |name: &str| reference.get(name).and_then(Value::as_str);
    match (text("externalId"), text("email"), reference.len()) {
        (Some(external_id), None, 1) => ExternalId::parse(external_id)
            .map(UpsertKey::ExternalId)
            .map_err(|error| Error::validation("externalId", error)),
        (None, Some(email), 1) => {
            EmailAddress::parse(email).map(UpsertKey::Email).map_err(|error| Error::validation("email", error))
        }
        _ => Err(Error::validation("contact", "give exactly one of externalId and email")),
    }
}
