//! The HTTP surface: GraphQL, health, GraphiQL, mail tracking, and the middleware every request passes through
//! (request id, tracing, panic recovery, security headers, rate limits). There is deliberately
//! no request timeout layer: cancelling a handler mid-commit could store a write its caller saw
//! rejected.

mod auth;
pub mod error;
mod events;
mod forms;
mod graphiql;
mod graphql;
mod health;
mod hooks;
mod pages;
mod preferences;
mod rate_limit;
mod tracking;
mod unsubscribe;

use std::sync::Arc;

use axum::{
    Router,
    http::{HeaderMap, HeaderName, HeaderValue, Request, StatusCode, header},
    middleware::from_fn_with_state,
    response::{IntoResponse, Response},
    routing::get,
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    set_header::SetResponseHeaderLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use self::error::ApiError;
pub use self::{auth::Authenticator, graphql::MAX_BODY_BYTES, rate_limit::Limiters};
use crate::{graphql::AppSchema, graphql::error::Code, service::Services};

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

#[derive(Clone)]
pub struct AppState {
    pub services: Services,
    pub schema: AppSchema,
    pub subscription_schema: crate::graphql::subscriptions::SubscriptionSchema,
    pub authenticator: Authenticator,
    pub limiters: Arc<Limiters>,
    pub smtp_configured: bool,
    /// The NATS stream consumer's state, when one runs.
    pub stream_status: Option<tokio::sync::watch::Receiver<crate::domain::stream::ConsumerStatus>>,
}

pub fn router(state: AppState) -> Router {
    let middleware = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &Request<_>| {
                    let request_id = request.headers().get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or_default();
                    tracing::info_span!("request", method = %request.method(), path = %logged_path(request.uri().path()), request_id = %request_id)
                })
                .on_response(DefaultOnResponse::new().level(Level::INFO)),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(CatchPanicLayer::custom(|payload: Box<dyn std::any::Any + Send>| {
            let message = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            tracing::error!(panic = message, "request handler panicked");
            internal_error()
        }))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")))
        .layer(SetResponseHeaderLayer::if_not_present(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")))
        // Innermost, so a refusal still gets a request id, a log line and the headers above,
        // and comes before any handler reads a body or authenticates.
        .layer(from_fn_with_state(Arc::clone(&state.limiters), rate_limit::enforce));

    Router::new()
        .route("/graphql", get(graphql::get).post(graphql::post))
        .route("/graphql/ws", get(graphql::subscriptions))
        .route("/graphql/graphiql/{file}", get(graphiql::asset))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/t/o/{token}", get(tracking::open))
        .route("/t/c/{token}", get(tracking::click))
        .route("/unsubscribe/{token}", get(unsubscribe::show).post(unsubscribe::unsubscribe))
        // Browsers ask for it on every page; an empty answer keeps their consoles quiet.
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/assets/page.css", get(pages::stylesheet))
        .route("/assets/brand.css", get(pages::brand_stylesheet))
        .route("/assets/preferences.js", get(pages::preferences_script))
        .route("/preferences", get(preferences::manage).post(preferences::request_link))
        .route("/forms/{key}", axum::routing::post(forms::submit))
        .route("/hooks/{source}", axum::routing::post(hooks::receive))
        .route("/v1/events", axum::routing::post(events::ingest))
        .route("/confirm/{token}", get(forms::show_confirmation).post(forms::confirm))
        .route("/preferences/{token}", get(preferences::show).post(preferences::save))
        .fallback(|| async { ApiError::not_found() })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, Code::BadUserInput, "method not allowed on this path")
        })
        .with_state(state)
        .layer(middleware)
}

fn internal_error() -> Response {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, Code::Internal, "internal error").into_response()
}

/// Paths whose last segment is a token: a tracking token carries its contact's id and the link's
/// URL (which may hold personal data), and an unsubscribe token is a credential, so the log shows
/// only which route was hit.
const TOKEN_PATHS: [&str; 5] = ["/t/o/", "/t/c/", "/unsubscribe/", "/preferences/", "/confirm/"];

fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    match TOKEN_PATHS.iter().find(|prefix| path.starts_with(**prefix)) {
        Some(prefix) => format!("{prefix}…").into(),
        None => path.into(),
    }
}

/// The context of a request to a customer page: who acts (the page's token holder, or nobody),
/// and the address and browser that a consent decision records as its proof.
fn page_context(
    actor: crate::service::Actor,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
) -> crate::service::RequestContext {
    crate::service::RequestContext {
        actor,
        request_id: request_id(headers),
        ip: Some(peer.ip()),
        user_agent: headers
            .get(header::USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| crate::domain::consent::UserAgent::parse(value).ok()),
    }
}

/// The id `SetRequestIdLayer` gave this request.
fn request_id(headers: &HeaderMap) -> String {
    headers.get(REQUEST_ID).and_then(|value| value.to_str().ok()).unwrap_or_default().to_owned()
}

/// The whole body, or a JSON 413 if it is longer than `limit` (as its `Content-Length` says, or
/// as reading it finds), with `advice` on what to send instead.
async fn body_within(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
    advice: &str,
) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            Code::BadUserInput,
            format!("the body exceeds {limit} bytes; {advice}"),
        )
        .into_response()
    };
    let announced = headers.get(header::CONTENT_LENGTH).and_then(|value| value.to_str().ok()?.parse::<usize>().ok());
    if announced.is_some_and(|length| length > limit) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|_| too_large())
}

#[cfg(test)]
mod tests {
    use super::logged_path;

    #[test]
    fn tracking_tokens_stay_out_of_the_log() {
        assert_eq!(logged_path("/t/c/AgGiEpZfOnURgvzw"), "/t/c/…");
        assert_eq!(logged_path("/t/o/AQGiEpZfOnURgvzw"), "/t/o/…");
        assert_eq!(logged_path("/unsubscribe/eyJhbGciOiJIUzI1NiJ9"), "/unsubscribe/…");
        assert_eq!(logged_path("/graphql"), "/graphql");
    }
}
