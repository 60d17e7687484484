//! Public signup forms and their confirmation links. `POST /forms/{key}` takes an HTML form post
//! or JSON and answers the same whatever became of the address; `GET /confirm/{token}` shows a
//! button and only its `POST` confirms, since link scanners fetch every URL in a message.

use std::net::SocketAddr;

use axum::{
    Json,
    body::Bytes,
    extract::{ConnectInfo, Path, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use minijinja::{Value, context};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, error::ApiError, internal_error, page_context, pages};
use crate::{
    domain::{contact::EmailAddress, key::Key},
    graphql::error::Code,
    service::{Actor, Error, forms::Submission},
};

#[derive(Debug, Default, Deserialize)]
struct JsonSubmission {
    email: String,
    #[serde(default, rename = "firstName")]
    first_name: Option<String>,
    /// The form's other fields by key: `{"country": "DE", "birthday": "1990-04-01"}`.
    #[serde(default)]
    fields: serde_json::Map<String, serde_json::Value>,
    #[serde(default)]
    topics: Vec<String>,
    /// The honeypot, as in the HTML form.
    #[serde(default)]
    website: String,
}

pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let json_body = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/json"));
    let raw = if json_body {
        match serde_json::from_slice::<JsonSubmission>(&body) {
            Ok(submission) => submission,
            Err(_) => return bad_input("body", "is not a submission: {\"email\": …, \"topics\": […]}"),
        }
    } else {
        let fields: Vec<(String, String)> = url::form_urlencoded::parse(&body).into_owned().collect();
        let field = |name: &str| fields.iter().find(|(key, _)| key == name).map(|(_, value)| value.clone());
        JsonSubmission {
            email: field("email").unwrap_or_default(),
            first_name: None,
            // Everything else posted; the service reads only the fields the form asks for.
            fields: fields
                .iter()
                .filter(|(name, _)| !matches!(name.as_str(), "email" | "topic" | "website"))
                .map(|(name, value)| (name.clone(), serde_json::Value::from(value.as_str())))
                .collect(),
            topics: fields.iter().filter(|(key, _)| key == "topic").map(|(_, value)| value.clone()).collect(),
            website: field("website").unwrap_or_default(),
        }
    };
    let Ok(key) = Key::parse(&key) else {
        return not_found();
    };
    let Ok(email) = EmailAddress::parse(&raw.email) else {
        return bad_input("email", "is not a valid email address");
    };
    let mut fields: Vec<(String, String)> = raw
        .fields
        .iter()
        .map(|(key, value)| (key.clone(), value.as_str().map_or_else(|| value.to_string(), str::to_owned)))
        .collect();
    fields.extend(raw.first_name.map(|name| ("first_name".to_owned(), name)));
    let Ok(topics) = raw.topics.iter().map(|topic| Key::parse(topic)).collect::<Result<Vec<_>, _>>() else {
        return bad_input("topics", "are not topic keys");
    };
    let forms = match state.services.signup_forms().await {
        Ok(forms) => forms,
        Err(error) => return failed(error),
    };
    let Some(form) = forms.into_iter().find(|form| form.key == key) else {
        return not_found();
    };
    // A bot fills every field, the hidden one too: it gets the same answer, and nothing is done.
    if raw.website.is_empty() {
        let ctx = page_context(Actor::Anonymous, peer, &headers);
        match state.services.submit_form(&ctx, &key, Submission { email, fields, topics }).await {
            Ok(()) => {}
            Err(Error::Validation { field, reason }) => return bad_input(&field, &reason),
            Err(error) => return failed(error),
        }
    }
    if json_body {
        return (
            StatusCode::ACCEPTED,
            Json(json!({ "status": "received", "confirmationRequired": form.double_opt_in })),
        )
            .into_response();
    }
    let settings = state.services.preference_center().await.unwrap_or_default();
    let language = pages::language(None, &headers);
    pages::page(
        StatusCode::OK,
        "form_received.html",
        language,
        &settings,
        context! { double_opt_in => form.double_opt_in },
    )
}

pub async fn show_confirmation(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let settings = state.services.preference_center().await.unwrap_or_default();
    match state.services.confirmation_link_actor(&token).await {
        Ok(Actor::Contact { contact_id, .. }) => {
            let locale = state.services.contact_locale(contact_id).await.ok().flatten();
            pages::page(
                StatusCode::OK,
                "confirm.html",
                pages::language(locale.as_deref(), &headers),
                &settings,
                Value::UNDEFINED,
            )
        }
        _ => pages::page(
            StatusCode::NOT_FOUND,
            "invalid_link.html",
            pages::language(None, &headers),
            &settings,
            Value::UNDEFINED,
        ),
    }
}

pub async fn confirm(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
) -> Response {
    let settings = state.services.preference_center().await.unwrap_or_default();
    let Ok(actor) = state.services.confirmation_link_actor(&token).await else {
        return pages::page(
            StatusCode::NOT_FOUND,
            "invalid_link.html",
            pages::language(None, &headers),
            &settings,
            Value::UNDEFINED,
        );
    };
    let locale = match &actor {
        Actor::Contact { contact_id, .. } => state.services.contact_locale(*contact_id).await.ok().flatten(),
        _ => None,
    };
    let language = pages::language(locale.as_deref(), &headers);
    let ctx = page_context(actor, peer, &headers);
    match state.services.confirm_opt_in(&ctx).await {
        Ok(true) => pages::page(StatusCode::OK, "confirm.html", language, &settings, context! { confirmed => true }),
        Ok(false) | Err(Error::NotFound { .. }) => {
            pages::page(StatusCode::OK, "confirm.html", language, &settings, context! { nothing_open => true })
        }
        Err(error) => failed(error),
    }
}

fn bad_input(field: &str, reason: &str) -> Response {
    ApiError::new(StatusCode::BAD_REQUEST, Code::BadUserInput, format!("{field}: {reason}")).into_response()
}

fn not_found() -> Response {
    ApiError::not_found().into_response()
}

fn failed(error: Error) -> Response {
    tracing::error!(error = %error, "form submission failed");
    internal_error()
}
