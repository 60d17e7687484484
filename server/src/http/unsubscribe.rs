//! One-click unsubscribe (RFC 8058): `POST /unsubscribe/{token}` unsubscribes, with no session,
//! cookie or page view, exactly as a mailbox provider sends it (`List-Unsubscribe=One-Click`).
//! `GET` of the same URL shows a page whose button sends that POST; it never unsubscribes by
//! itself, because link scanners fetch every URL in a message.

use std::net::SocketAddr;

use axum::{
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode},
    response::Response,
};

use minijinja::Value;

use super::{AppState, page_context, pages};
use crate::{
    domain::{access::ContactTokenPurpose, preferences::PreferenceCenter},
    service::{Actor, Error},
};

pub async fn show(State(state): State<AppState>, headers: HeaderMap, Path(token): Path<String>) -> Response {
    let settings = state.services.preference_center().await.unwrap_or_default();
    match state.services.unsubscribe_link_contact(&token).await {
        Ok(contact_id) => {
            let locale = state.services.contact_locale(contact_id).await.ok().flatten();
            let language = pages::language(locale.as_deref(), &headers);
            pages::page(StatusCode::OK, "unsubscribe.html", language, &settings, Value::UNDEFINED)
        }
        Err(_) => invalid(&headers, &settings),
    }
}

fn invalid(headers: &HeaderMap, settings: &PreferenceCenter) -> Response {
    pages::page(StatusCode::NOT_FOUND, "invalid_link.html", pages::language(None, headers), settings, Value::UNDEFINED)
}

pub async fn unsubscribe(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let settings = state.services.preference_center().await.unwrap_or_default();
    let Ok(contact_id) = state.services.unsubscribe_link_contact(&token).await else {
        return invalid(&headers, &settings);
    };
    let ctx = page_context(Actor::Contact { contact_id, purpose: ContactTokenPurpose::Unsubscribe }, peer, &headers);
    let locale = state.services.contact_locale(contact_id).await.ok().flatten();
    let language = pages::language(locale.as_deref(), &headers);
    match state.services.unsubscribe(&ctx).await {
        // Erased or deleted since the mail went out: there is nobody left to unsubscribe.
        Ok(_) | Err(Error::NotFound { .. }) => {
            pages::page(StatusCode::OK, "unsubscribed.html", language, &settings, Value::UNDEFINED)
        }
        Err(error) => {
            tracing::error!(error = %error, "unsubscribe failed");
            super::internal_error()
        }
    }
}
