//! The URLs that tracked mail points at: the open pixel `/t/o/{token}` and click redirects
//! `/t/c/{token}`. Public by nature (the signed token is the credential), so they reveal
//! nothing: the pixel is the same image whatever the token, and a click token this server did
//! not sign is a 404, never a redirect. Recording comes second: a hit that cannot be recorded is
//! logged, and the recipient still gets the image or reaches the link.

use axum::{
    extract::{Path, State, rejection::PathRejection},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
};

use super::{AppState, error::ApiError, internal_error, request_id};
use crate::service::{Actor, Error, RequestContext};

/// A transparent 1×1 GIF, the smallest image every mail client shows.
const PIXEL: &[u8] = &[
    0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff,
    0x21, 0xf9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00, 0x02,
    0x02, 0x44, 0x01, 0x00, 0x3b,
];

/// Caches must ask again each time, or a second open or click would never reach us.
const NO_STORE: HeaderValue = HeaderValue::from_static("no-store");

pub async fn open(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    // HEAD is a client checking the link, not a person reading the mail.
    if method != Method::HEAD
        && let Ok(send) =
            token.map_err(|_| ()).and_then(|Path(token)| state.services.verify_open(&token).map_err(|_| ()))
        && let Err(error) = state.services.record_open(&context(&headers), &send).await
    {
        not_recorded(error);
    }
    ([(header::CONTENT_TYPE, HeaderValue::from_static("image/gif")), (header::CACHE_CONTROL, NO_STORE)], PIXEL)
        .into_response()
}

pub async fn click(
    State(state): State<AppState>,
    method: Method,
    headers: HeaderMap,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(click) = token.map_err(|_| ()).and_then(|Path(token)| state.services.verify_click(&token).map_err(|_| ()))
    else {
        return ApiError::not_found().into_response();
    };
    if method != Method::HEAD
        && let Err(error) = state.services.record_click(&context(&headers), &click).await
    {
        not_recorded(error);
    }
    // A `Url` serialises to ASCII without controls or spaces, which is always a header value.
    let Ok(location) = HeaderValue::from_str(click.url.as_str()) else {
        tracing::error!(send_id = %click.send.send_id, "signed URL is not a valid Location");
        return internal_error();
    };
    (StatusCode::FOUND, [(header::LOCATION, location), (header::CACHE_CONTROL, NO_STORE)]).into_response()
}

/// Recorded as the anonymous caller it is, without the caller's address: it is the recipient's
/// (or their mail provider's), personal data that the audit log would keep after an erasure.
fn context(headers: &HeaderMap) -> RequestContext {
    RequestContext { actor: Actor::Anonymous, request_id: request_id(headers), ip: None, user_agent: None }
}

fn not_recorded(error: Error) {
    match error {
        Error::Internal(cause) => tracing::error!(error = ?cause, "tracking hit not recorded"),
        other => tracing::warn!(error = %other, "tracking hit not recorded"),
    }
}
