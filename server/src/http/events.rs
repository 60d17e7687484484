//! `POST /v1/events`, the batch event API: a JSON array or NDJSON of events, each answered in
//! order with its own result. What is wrong with the request as a whole (credentials, media type,
//! size, a body that is not a JSON array) refuses it with an HTTP error; what is wrong with one
//! event rejects that event alone, so items are parsed here one by one, never as one typed array.

use std::net::SocketAddr;

use axum::{
    Json,
    body::Body,
    extract::{ConnectInfo, RawQuery, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{AppState, body_within, error::ApiError, page_context};
use crate::{
    graphql::error::{Code, GqlError},
    service::{
        self, Actor, Error,
        event_items::parse_event_text,
        events::{IngestEvent, MAX_EVENTS_PER_REQUEST, MissingContacts, Tracked},
    },
};

/// Room for 10,000 events of about 3 KB each; an event's properties alone may take 32 KB, so a
/// request of large events has to be split into several.
pub const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

const NDJSON: &str = "application/x-ndjson";

pub async fn ingest(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let actor = match state.authenticator.authenticate(&state.services, &headers).await {
        Ok(Actor::Anonymous) => return unauthenticated(),
        Ok(actor) => actor,
        Err(Error::Unauthenticated) => return unauthenticated(),
        Err(error) => return ApiError::from(error).into_response(),
    };
    let missing = match missing_contacts(query.as_deref()) {
        Ok(missing) => missing,
        Err(message) => return bad_request(message),
    };
    let ndjson = match media_type(&headers) {
        Some(ndjson) => ndjson,
        None => {
            return ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                Code::BadUserInput,
                format!("send application/json (an array of events) or {NDJSON} (one event per line)"),
            )
            .into_response();
        }
    };
    let bytes = match body_within(&headers, body, MAX_BODY_BYTES, "send the events in several requests").await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let items = match if ndjson { ndjson_items(&bytes) } else { array_items(&bytes) } {
        Ok(items) => items,
        Err(message) => return bad_request(message),
    };
    if items.len() > MAX_EVENTS_PER_REQUEST {
        return ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::BadUserInput,
            format!("at most {MAX_EVENTS_PER_REQUEST} events per request; this one has {}", items.len()),
        )
        .into_response();
    }
    let ctx = page_context(actor, peer, &headers);
    match state.services.ingest_events(&ctx, items, missing).await {
        Ok(outcomes) => Json(Answer::new(outcomes)).into_response(),
        Err(error) => ApiError::from(error).into_response(),
    }
}

fn unauthenticated() -> Response {
    let mut response =
        ApiError::new(StatusCode::UNAUTHORIZED, Code::Unauthenticated, "authentication required").into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn bad_request(message: impl Into<String>) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, Code::BadUserInput, message).into_response()
}

/// `?createContacts=true` creates the contacts that events name by external id or email and
/// that do not exist yet; without it such events are rejected as NOT_FOUND.
fn missing_contacts(query: Option<&str>) -> Result<MissingContacts, String> {
    let mut missing = MissingContacts::Reject;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match (name.as_ref(), value.as_ref()) {
            ("createContacts", "true") => missing = MissingContacts::Create,
            ("createContacts", "false") => missing = MissingContacts::Reject,
            ("createContacts", _) => return Err("createContacts must be true or false".to_owned()),
            (other, _) => return Err(format!("unknown query parameter {other:?}")),
        }
    }
    Ok(missing)
}

/// Whether the body is NDJSON (else a JSON array); none for any other media type.
fn media_type(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let essence = value.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/json" => Some(false),
        NDJSON => Some(true),
        _ => None,
    }
}

/// The items of a JSON array, each parsed on its own: only the array's outline is parsed first.
fn array_items(body: &[u8]) -> Result<Vec<service::Result<IngestEvent>>, String> {
    match serde_json::from_slice::<Vec<&RawValue>>(body) {
        Ok(items) => Ok(items.into_iter().map(|item| parse_event_text(item.get())).collect()),
        Err(error) if error.is_data() => Err("the body must be a JSON array of events".to_owned()),
        Err(error) => Err(format!("the body is not valid JSON: {error}")),
    }
}

/// One item per non-blank line; a line that is not JSON rejects that item only, as each line
/// stands on its own.
fn ndjson_items(body: &[u8]) -> Result<Vec<service::Result<IngestEvent>>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    Ok(text.lines().filter(|line| !line.trim().is_empty()).map(parse_event_text).collect())
}

/// The answer to a request that was processed: counts, and one result per event in order.
#[derive(Serialize)]
struct Answer {
    created: usize,
    duplicates: usize,
    rejected: usize,
    results: Vec<ItemResult>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ItemResult {
    index: usize,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ItemError>,
}

#[derive(Serialize)]
struct ItemError {
    code: &'static str,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<String>,
}

impl Answer {
    fn new(outcomes: Vec<service::Result<Tracked>>) -> Self {
        let mut answer = Self { created: 0, duplicates: 0, rejected: 0, results: Vec::with_capacity(outcomes.len()) };
        for (index, outcome) in outcomes.into_iter().enumerate() {
            let (status, event_id, error) = match outcome {
                Ok(Tracked::Created(id)) => {
                    answer.created += 1;
                    ("created", Some(id), None)
                }
                Ok(Tracked::Duplicate(id)) => {
                    answer.duplicates += 1;
                    ("duplicate", Some(id), None)
                }
                Err(error) => {
                    answer.rejected += 1;
                    // The GraphQL mapping, so that an item is rejected in the same words there.
                    let error = GqlError::from(error);
                    let error = ItemError {
                        code: error.code().as_str(),
                        message: error.message().to_owned(),
                        field: error.field().map(str::to_owned),
                    };
                    ("rejected", None, Some(error))
                }
            };
            answer.results.push(ItemResult { index, status, event_id, error });
        }
        answer
    }
}
