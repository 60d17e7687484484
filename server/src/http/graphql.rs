//! GraphQL over HTTP, to the letter of the GraphQL-over-HTTP specification: media-type
//! negotiation (`application/graphql-response+json` or `application/json`), 4xx for requests
//! that never reach execution, GET for queries only, and a body size limit. A stock
//! async-graphql-axum handler gets several of these wrong, hence this thin handler of our own.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use async_graphql::{
    Request, ServerError, Value as GqlValue, Variables,
    parser::{
        Positioned, parse_query,
        types::{DocumentOperations, ExecutableDocument, OperationDefinition, OperationType, Selection},
    },
};
use axum::{
    body::{Body, to_bytes},
    extract::{ConnectInfo, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde_json::{Value, json};

use super::{AppState, graphiql, request_id};
use crate::{
    domain::consent::UserAgent,
    graphql::{
        error::{GqlError, INTERNAL_MESSAGE, retry_after_seconds},
        loaders::Loaders,
    },
    service::{Actor, Error, RequestContext},
};

/// Large enough for a batch of 1,000 tracked events; anything bigger is refused unread.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;
/// Ample for a sign-in; callers without credentials may send nothing larger.
const MAX_ANONYMOUS_BODY_BYTES: usize = 8 * 1024;
/// What a caller without credentials may ask for (plus `__typename`).
const SIGN_IN_FIELDS: [&str; 3] = ["login", "refreshToken", "__typename"];

const GRAPHQL_RESPONSE_JSON: &str = "application/graphql-response+json";
const JSON: &str = "application/json";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MediaType {
    GraphqlResponseJson,
    Json,
}

impl MediaType {
    fn content_type(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            MediaType::GraphqlResponseJson => "application/graphql-response+json; charset=utf-8",
            MediaType::Json => "application/json; charset=utf-8",
        })
    }
}

pub async fn get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    uri: Uri,
) -> Response {
    let params = Query::<HashMap<String, String>>::try_from_uri(&uri).map(|Query(params)| params).unwrap_or_default();
    if !params.contains_key("query") && accepts_html(&headers) {
        return graphiql::page();
    }
    let media_type = match negotiate(&headers) {
        Ok(media_type) => media_type,
        Err(response) => return *response,
    };
    // Anonymous callers may only sign in, and signing in is a mutation, which GET cannot carry.
    let actor = match authenticate(&state, &headers, media_type).await {
        Ok(Actor::Anonymous) => return unauthenticated(media_type),
        Ok(actor) => actor,
        Err(response) => return *response,
    };
    let parsed = parse_get_params(params);
    if parsed.as_ref().is_ok_and(is_mutation) {
        let mut response =
            request_error(media_type, StatusCode::METHOD_NOT_ALLOWED, "mutations must be sent with POST");
        response.headers_mut().insert(header::ALLOW, HeaderValue::from_static("POST"));
        return response;
    }
    handle(state, peer, actor, headers, media_type, parsed.map(Params::into_request)).await
}

pub async fn post(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let media_type = match negotiate(&headers) {
        Ok(media_type) => media_type,
        Err(response) => return *response,
    };
    let actor = match authenticate(&state, &headers, media_type).await {
        Ok(actor) => actor,
        Err(response) => return *response,
    };
    let anonymous = actor == Actor::Anonymous;
    // Anonymous callers may only sign in: a body too large for that is refused unread, and a
    // small one is read only to check that it asks for nothing else.
    let body_limit = if anonymous { MAX_ANONYMOUS_BODY_BYTES } else { MAX_BODY_BYTES };
    if anonymous && announced_length(&headers).is_none_or(|length| length > body_limit) {
        return unauthenticated(media_type);
    }
    if !anonymous && is_multipart(&headers) {
        let request = receive_multipart(&headers, body).await;
        return handle(state, peer, actor, headers, media_type, request).await;
    }
    if let Err(message) = check_content_type(&headers) {
        return if anonymous {
            unauthenticated(media_type)
        } else {
            request_error(media_type, StatusCode::UNSUPPORTED_MEDIA_TYPE, &message)
        };
    }
    let bytes = match to_bytes(body, body_limit).await {
        Ok(bytes) => bytes,
        Err(_) if anonymous => return unauthenticated(media_type),
        Err(_) => {
            return request_error(
                media_type,
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request body exceeds {MAX_BODY_BYTES} bytes"),
            );
        }
    };
    let parsed = match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(params)) => parse_post_params(params),
        Ok(_) => Err("the request body must be a JSON object".to_owned()),
        Err(error) => Err(format!("the request body is not valid JSON: {error}")),
    };
    if anonymous && !parsed.as_ref().is_ok_and(only_signs_in) {
        return unauthenticated(media_type);
    }
    handle(state, peer, actor, headers, media_type, parsed.map(Params::into_request)).await
}

/// Files uploaded with a mutation (GraphQL multipart request spec) are spooled to temporary
/// files as they arrive, never held in memory, so this limit is about disk, not memory.
pub const MAX_UPLOAD_BYTES: u64 = 1024 * 1024 * 1024;

fn is_multipart(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|raw| raw.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("multipart/form-data"))
}

/// A GraphQL multipart request (operations, map, and one file): authenticated callers only,
/// since the body is read before the operation is known.
async fn receive_multipart(headers: &HeaderMap, body: Body) -> Result<Request, String> {
    use futures_util::TryStreamExt;

    let content_type = headers.get(header::CONTENT_TYPE).and_then(|value| value.to_str().ok()).map(str::to_owned);
    let reader = body.into_data_stream().map_err(std::io::Error::other).into_async_read();
    let options = async_graphql::http::MultipartOptions::default()
        .max_num_files(1)
        .max_file_size(usize::try_from(MAX_UPLOAD_BYTES).unwrap_or(usize::MAX));
    async_graphql::http::receive_body(content_type, reader, options)
        .await
        .map_err(|error| format!("the multipart request cannot be read: {error}"))
}

/// The parameters of one GraphQL request, checked for shape but not yet parsed as GraphQL.
struct Params {
    query: String,
    operation_name: Option<String>,
    variables: Option<Value>,
}

impl Params {
    fn into_request(self) -> Request {
        let mut request = Request::new(self.query);
        if let Some(name) = self.operation_name {
            request = request.operation_name(name);
        }
        if let Some(variables) = self.variables {
            request = request.variables(Variables::from_json(variables));
        }
        request
    }
}

async fn handle(
    state: AppState,
    peer: SocketAddr,
    actor: Actor,
    headers: HeaderMap,
    media_type: MediaType,
    request: Result<Request, String>,
) -> Response {
    let request = match request {
        Ok(request) => request,
        Err(message) => return request_error(media_type, StatusCode::BAD_REQUEST, &message),
    };
    let request_id = request_id(&headers);
    let request = request
        .data(RequestContext {
            actor,
            request_id: request_id.clone(),
            ip: Some(peer.ip()),
            user_agent: headers
                .get(header::USER_AGENT)
                .and_then(|value| value.to_str().ok())
                .and_then(|value| UserAgent::parse(value).ok()),
        })
        .data(Loaders::new(&state.services));
    let response = state.schema.execute(request).await;

    // Errors without a path arose before execution (parsing, validation, variable coercion):
    // the request as a whole was bad, and no `data` entry is sent.
    let never_executed = response.data == GqlValue::Null
        && !response.errors.is_empty()
        && response.errors.iter().all(|error| error.path.is_empty());
    let mut response = response;
    for error in &mut response.errors {
        complete_error(error, &request_id);
    }
    if never_executed {
        let status = match media_type {
            MediaType::GraphqlResponseJson => StatusCode::BAD_REQUEST,
            MediaType::Json => StatusCode::OK,
        };
        return respond(media_type, status, &json!({ "errors": response.errors }));
    }
    match serde_json::to_value(&response) {
        Ok(body) => respond(media_type, StatusCode::OK, &body),
        Err(error) => {
            tracing::error!(%error, "cannot serialise a GraphQL response");
            error_response(media_type, StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE, "INTERNAL")
        }
    }
}

async fn authenticate(state: &AppState, headers: &HeaderMap, media_type: MediaType) -> Result<Actor, Box<Response>> {
    match state.authenticator.authenticate(&state.services, headers).await {
        Ok(actor) => Ok(actor),
        Err(Error::Unauthenticated) => Err(Box::new(unauthenticated(media_type))),
        Err(error) => {
            tracing::error!(error = ?error, "cannot authenticate a request");
            Err(Box::new(error_response(media_type, StatusCode::INTERNAL_SERVER_ERROR, INTERNAL_MESSAGE, "INTERNAL")))
        }
    }
}

fn unauthenticated(media_type: MediaType) -> Response {
    let mut response =
        error_response(media_type, StatusCode::UNAUTHORIZED, "authentication required", "UNAUTHENTICATED");
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

fn announced_length(headers: &HeaderMap) -> Option<usize> {
    headers.get(header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether the request is a mutation that selects nothing but the sign-in fields.
fn only_signs_in(params: &Params) -> bool {
    let Ok(document) = parse_query(&params.query) else {
        return false;
    };
    selected_operation(&document, params).is_some_and(|operation| {
        operation.node.ty == OperationType::Mutation
            && operation.node.selection_set.node.items.iter().all(|selection| match &selection.node {
                Selection::Field(field) => SIGN_IN_FIELDS.contains(&field.node.name.node.as_str()),
                Selection::FragmentSpread(_) | Selection::InlineFragment(_) => false,
            })
    })
}

/// A rate-limited caller's 429: a GraphQL error like any other (through the one outward mapping
/// in graphql/error.rs) in the media type it asked for, or JSON if it asked for none we serve.
pub(super) fn rate_limited(headers: &HeaderMap, retry_after: Duration) -> Response {
    let media_type = negotiate(headers).unwrap_or(MediaType::Json);
    let error = async_graphql::Error::from(GqlError::from(Error::RateLimited { retry_after }));
    let error = ServerError { extensions: error.extensions, ..ServerError::new(error.message, None) };
    let mut response = respond(media_type, StatusCode::TOO_MANY_REQUESTS, &json!({ "errors": [error] }));
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(retry_after)));
    response
}

/// Every error carries a code (CONTRACT.md): errors raised by async-graphql itself (syntax,
/// validation, limits, coercion) are the caller's. Internal errors name the request id, under
/// which the log holds the details.
fn complete_error(error: &mut ServerError, request_id: &str) {
    let extensions = error.extensions.get_or_insert_with(Default::default);
    match extensions.get("code") {
        None => {
            extensions.set("code", "BAD_USER_INPUT");
            extensions.set("field", offending_field(&error.message));
        }
        Some(GqlValue::String(code)) if code == "INTERNAL" => {
            error.message = format!("{INTERNAL_MESSAGE} (request id {request_id})");
        }
        Some(_) => {}
    }
}

/// async-graphql names what it rejects in double quotes ("Unknown field \"x\" on type …",
/// "Invalid value for argument \"input\" …"); a syntax error names nothing, so the query does.
fn offending_field(message: &str) -> String {
    message.split('"').nth(1).filter(|quoted| !quoted.is_empty()).unwrap_or("query").trim_start_matches('$').to_owned()
}

fn is_mutation(params: &Params) -> bool {
    let Ok(document) = parse_query(&params.query) else {
        return false;
    };
    selected_operation(&document, params).is_some_and(|operation| operation.node.ty == OperationType::Mutation)
}

/// The operation the request asks to run; none when a multi-operation document names none.
fn selected_operation<'a>(
    document: &'a ExecutableDocument,
    params: &Params,
) -> Option<&'a Positioned<OperationDefinition>> {
    match (&document.operations, &params.operation_name) {
        (DocumentOperations::Single(operation), _) => Some(operation),
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name.as_str()),
        (DocumentOperations::Multiple(_), None) => None,
    }
}

fn parse_get_params(mut params: HashMap<String, String>) -> Result<Params, String> {
    let query = params.remove("query").ok_or("the query parameter is missing")?;
    let json_param = |name: &str, raw: Option<String>| -> Result<Option<Value>, String> {
        match raw.as_deref().map(serde_json::from_str::<Value>) {
            None => Ok(None),
            Some(Ok(Value::Null)) => Ok(None),
            Some(Ok(value @ Value::Object(_))) => Ok(Some(value)),
            Some(_) => Err(format!("the {name} parameter must be a JSON object")),
        }
    };
    let variables = json_param("variables", params.remove("variables"))?;
    json_param("extensions", params.remove("extensions"))?;
    Ok(Params { query, operation_name: params.remove("operationName").filter(|name| !name.is_empty()), variables })
}

fn parse_post_params(mut params: serde_json::Map<String, Value>) -> Result<Params, String> {
    let query = match params.remove("query") {
        Some(Value::String(query)) => query,
        Some(_) => return Err("query must be a string".to_owned()),
        None => return Err("the query parameter is missing".to_owned()),
    };
    let operation_name = match params.remove("operationName") {
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => Some(name),
        Some(_) => return Err("operationName must be a string".to_owned()),
    };
    let variables = match params.remove("variables") {
        None | Some(Value::Null) => None,
        Some(value @ Value::Object(_)) => Some(value),
        Some(_) => return Err("variables must be an object".to_owned()),
    };
    match params.remove("extensions") {
        None | Some(Value::Null) | Some(Value::Object(_)) => {}
        Some(_) => return Err("extensions must be an object".to_owned()),
    }
    Ok(Params { query, operation_name, variables })
}

/// Picks the response media type from `Accept`; none given means `application/json`.
fn negotiate(headers: &HeaderMap) -> Result<MediaType, Box<Response>> {
    let accept =
        headers.get_all(header::ACCEPT).iter().filter_map(|value| value.to_str().ok()).collect::<Vec<_>>().join(",");
    if accept.trim().is_empty() {
        return Ok(MediaType::Json);
    }
    let mut best: Option<(f32, MediaType)> = None;
    for item in accept.split(',') {
        let mut parts = item.split(';').map(str::trim);
        let range = parts.next().unwrap_or_default().to_ascii_lowercase();
        let quality = parts
            .filter_map(|param| param.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
            .next()
            .unwrap_or(1.0);
        let media_type = match range.as_str() {
            GRAPHQL_RESPONSE_JSON => MediaType::GraphqlResponseJson,
            JSON | "application/*" | "*/*" => MediaType::Json,
            _ => continue,
        };
        if quality > 0.0 && best.is_none_or(|(best_quality, _)| quality > best_quality) {
            best = Some((quality, media_type));
        }
    }
    best.map(|(_, media_type)| media_type).ok_or_else(|| {
        let body = json!({ "errors": [{ "message": "acceptable response types are application/graphql-response+json and application/json", "extensions": { "code": "BAD_USER_INPUT" } }] });
        Box::new(respond(MediaType::Json, StatusCode::NOT_ACCEPTABLE, &body))
    })
}

fn accepts_html(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|value| value.to_str().ok()).is_some_and(|accept| accept.contains("text/html"))
}

fn check_content_type(headers: &HeaderMap) -> Result<(), String> {
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .ok_or("send the request body as application/json")?;
    let mut parts = raw.split(';').map(str::trim);
    if !parts.next().is_some_and(|mime| mime.eq_ignore_ascii_case(JSON)) {
        return Err(format!("unsupported content type {raw:?}: send application/json"));
    }
    let charset_ok = parts
        .filter_map(|param| param.split_once('='))
        .filter(|(name, _)| name.trim().eq_ignore_ascii_case("charset"))
        .all(|(_, value)| value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8"));
    if charset_ok { Ok(()) } else { Err("only utf-8 request bodies are accepted".to_owned()) }
}

fn request_error(media_type: MediaType, status: StatusCode, message: &str) -> Response {
    error_response(media_type, status, message, "BAD_USER_INPUT")
}

fn error_response(media_type: MediaType, status: StatusCode, message: &str, code: &str) -> Response {
    respond(media_type, status, &json!({ "errors": [{ "message": message, "extensions": { "code": code } }] }))
}

fn respond(media_type: MediaType, status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, media_type.content_type());
    response
}

/// `GET /graphql/ws`: subscriptions over `graphql-transport-ws` (or the older
/// `subscriptions-transport-ws`). The credential comes with the upgrade request
/// (`Authorization: Bearer …`) or, as browsers cannot set that header, in the
/// `connection_init` payload as `{"Authorization": "Bearer …"}`; without a valid one the socket
/// is closed before anything is served.
pub async fn subscriptions(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    protocol: async_graphql_axum::GraphQLProtocol,
    upgrade: axum::extract::WebSocketUpgrade,
) -> Response {
    let upfront = if headers.contains_key(header::AUTHORIZATION) {
        match authenticate(&state, &headers, MediaType::Json).await {
            Ok(actor) => Some(actor),
            Err(response) => return *response,
        }
    } else {
        None
    };
    let request_id = request_id(&headers);
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| UserAgent::parse(value).ok());
    upgrade.protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS).on_upgrade(move |socket| {
        let schema = state.subscription_schema.clone();
        async_graphql_axum::GraphQLWebSocket::new(socket, schema, protocol)
            .on_connection_init(move |payload: Value| async move {
                let actor = match upfront {
                    Some(actor) => actor,
                    None => {
                        let presented = ["Authorization", "authorization"]
                            .iter()
                            .find_map(|name| payload.get(*name).and_then(Value::as_str))
                            .and_then(|value| HeaderValue::from_str(value).ok());
                        let mut presented_headers = HeaderMap::new();
                        if let Some(value) = presented {
                            presented_headers.insert(header::AUTHORIZATION, value);
                        }
                        state
                            .authenticator
                            .authenticate(&state.services, &presented_headers)
                            .await
                            .map_err(|_| async_graphql::Error::new("authentication required"))?
                    }
                };
                if actor == Actor::Anonymous {
                    return Err(async_graphql::Error::new("authentication required"));
                }
                let mut data = async_graphql::Data::default();
                data.insert(RequestContext { actor, request_id, ip: Some(peer.ip()), user_agent });
                Ok(data)
            })
            .serve()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn the_preferred_acceptable_media_type_wins() {
        assert_eq!(negotiate(&HeaderMap::new()).unwrap(), MediaType::Json);
        assert_eq!(negotiate(&accept("*/*")).unwrap(), MediaType::Json);
        assert_eq!(
            negotiate(&accept("application/graphql-response+json, application/json;q=0.9")).unwrap(),
            MediaType::GraphqlResponseJson
        );
        assert_eq!(
            negotiate(&accept("application/graphql-response+json;q=0.5, application/json")).unwrap(),
            MediaType::Json
        );
        assert_eq!(negotiate(&accept("text/html")).unwrap_err().status(), StatusCode::NOT_ACCEPTABLE);
    }

    #[test]
    fn errors_raised_before_resolvers_name_what_they_reject() {
        assert_eq!(offending_field(r#"Unknown field "noSuchField" on type "Topic"."#), "noSuchField");
        assert_eq!(offending_field(r#"Variable "$id" of required type "ID!" was not provided."#), "id");
        assert_eq!(offending_field(" --> 1:15\n  |\n1 | { topics { key\n"), "query");
    }

    #[test]
    fn only_utf8_json_bodies_are_accepted() {
        let content_type = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_str(value).unwrap());
            check_content_type(&headers)
        };
        assert!(content_type("application/json").is_ok());
        assert!(content_type("application/json; charset=UTF-8").is_ok());
        assert!(content_type("application/json; charset=latin1").is_err());
        assert!(content_type("text/plain").is_err());
        assert!(check_content_type(&HeaderMap::new()).is_err());
    }
}
