//! The preference center, `/preferences/{token}`: a server-rendered page that works without
//! JavaScript (a plain form POST, then a redirect back to the page), and `/preferences`, where a
//! person asks for a fresh link by typing their address. The page's script only saves without a
//! reload; everything it does, the form does too.

use std::net::SocketAddr;

use axum::{
    Form,
    extract::{ConnectInfo, Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use minijinja::{Value, context};
use serde::Deserialize;
use serde_json::json;

use super::{AppState, internal_error, page_context, pages};
use crate::{
    domain::{
        access::ContactTokenPurpose,
        consent::Channel,
        contact::EmailAddress,
        key::Key,
        preferences::PreferencesForm,
        texts,
        topic::{Frequency, SubscriptionStatus},
    },
    service::{Actor, Error, preferences::PreferencesView},
};

#[derive(Debug, Default, Deserialize)]
pub struct Shown {
    saved: Option<String>,
    unsubscribed: Option<String>,
}

/// The contact a preferences link names, as the actor of what the page does.
async fn holder(state: &AppState, token: &str) -> Option<Actor> {
    match state.services.authenticate_bearer(token).await {
        Ok(actor @ Actor::Contact { purpose: ContactTokenPurpose::Preferences, .. }) => Some(actor),
        _ => None,
    }
}

pub async fn show(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Query(shown): Query<Shown>,
) -> Response {
    let Some(actor) = holder(&state, &token).await else {
        return invalid_link(&state, &headers).await;
    };
    let ctx = page_context(actor, peer, &headers);
    match state.services.preferences_view(&ctx).await {
        Ok(view) => render(&view, &headers, &token, StatusCode::OK, &shown, None),
        Err(Error::NotFound { .. }) => invalid_link(&state, &headers).await,
        Err(error) => failed(error),
    }
}

pub async fn save(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(token): Path<String>,
    Form(fields): Form<Vec<(String, String)>>,
) -> Response {
    let Some(actor) = holder(&state, &token).await else {
        return invalid_link(&state, &headers).await;
    };
    let ctx = page_context(actor, peer, &headers);
    let everything = fields.iter().any(|(name, value)| name == "action" && value == "unsubscribe_all");
    let saved = match parse_form(&fields) {
        Ok(form) if everything => state.services.unsubscribe_from_everything(&ctx, form.language).await,
        Ok(form) => state.services.save_preferences(&ctx, form).await,
        Err(error) => Err(error),
    };
    match saved {
        Ok(()) => {
            let shown = if everything { "unsubscribed" } else { "saved" };
            // Redirect after POST: a reload shows the page, it does not send the form again.
            let location = format!("/preferences/{token}?{shown}=1");
            let mut response = StatusCode::SEE_OTHER.into_response();
            match HeaderValue::from_str(&location) {
                Ok(value) => {
                    response.headers_mut().insert(header::LOCATION, value);
                    response
                }
                Err(_) => internal_error(),
            }
        }
        Err(Error::Validation { field, .. }) => match state.services.preferences_view(&ctx).await {
            Ok(view) => {
                let rejected = Rejected { field: field.trim_start_matches("field.").to_owned() };
                render(&view, &headers, &token, StatusCode::BAD_REQUEST, &Shown::default(), Some(rejected))
            }
            Err(error) => failed(error),
        },
        Err(Error::NotFound { .. }) => invalid_link(&state, &headers).await,
        Err(error) => failed(error),
    }
}

/// The page where a person asks for a fresh link.
pub async fn manage(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let settings = state.services.preference_center().await.unwrap_or_default();
    pages::page(StatusCode::OK, "manage.html", pages::language(None, &headers), &settings, Value::UNDEFINED)
}

#[derive(Debug, Deserialize)]
pub struct LinkRequest {
    #[serde(default)]
    address: String,
    /// Hidden from people; a bot that fills every field fills this one too.
    #[serde(default)]
    website: String,
}

/// Sends a fresh link to the address if a contact has it. The answer is the same page whether
/// the address is known, unknown, malformed or caught by the honeypot.
pub async fn request_link(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(request): Form<LinkRequest>,
) -> Response {
    let settings = state.services.preference_center().await.unwrap_or_default();
    if request.website.is_empty()
        && let Ok(address) = EmailAddress::parse(&request.address)
    {
        let ctx = page_context(Actor::Anonymous, peer, &headers);
        if let Err(error) = state.services.send_preferences_link(&ctx, &address).await {
            tracing::error!(error = %error, "cannot queue a preferences link");
        }
    }
    let language = pages::language(None, &headers);
    pages::page(StatusCode::OK, "manage.html", language, &settings, context! { sent => true })
}

async fn invalid_link(state: &AppState, headers: &HeaderMap) -> Response {
    let settings = state.services.preference_center().await.unwrap_or_default();
    let language = pages::language(None, headers);
    pages::page(StatusCode::NOT_FOUND, "manage.html", language, &settings, context! { invalid => true })
}

/// A value the page could not save: which field (its key) and why.
/// The field whose value could not be used. The page says why in its own language, by the kind
/// of input, rather than showing the service's (English) reason.
struct Rejected {
    field: String,
}

fn failed(error: Error) -> Response {
    tracing::error!(error = %error, "preference center failed");
    internal_error()
}

fn render(
    view: &PreferencesView,
    headers: &HeaderMap,
    token: &str,
    status: StatusCode,
    shown: &Shown,
    rejected: Option<Rejected>,
) -> Response {
    let locale = view.contact.profile.locale.as_ref().map(|locale| locale.as_str().to_owned());
    let language = pages::language(locale.as_deref(), headers);
    let topics: Vec<_> = view
        .topics
        .iter()
        .map(|(topic, subscription)| {
            json!({
                "key": topic.key.as_str(),
                "name": topic.name,
                "description": topic.description,
                "subscribed": subscription.as_ref().is_some_and(|s| s.status == SubscriptionStatus::Subscribed),
                "frequency": subscription.as_ref().map_or(topic.default_frequency, |s| s.frequency).as_str(),
            })
        })
        .collect();
    let purposes: Vec<_> = view
        .purposes
        .iter()
        .map(|purpose| {
            let channels: Vec<_> = Channel::ALL
                .iter()
                .map(|channel| {
                    let granted =
                        view.consent_status(purpose, *channel) == Some(crate::domain::consent::ConsentStatus::Granted);
                    json!({ "name": channel.as_str(), "granted": granted })
                })
                .collect();
            // Built-in purposes have their wording in the page's language; admins' own are shown
            // as they wrote them.
            json!({
                "key": purpose.key.as_str(),
                "label": purpose.label,
                "description": purpose.description,
                "built_in": purpose.built_in,
                "channels": channels,
            })
        })
        .collect();
    let fields: Vec<_> = view
        .fields
        .iter()
        .map(|field| {
            json!({ "key": field.key, "label": field.label, "input": field.input, "value": field.value, "options": field.options })
        })
        .collect();
    let frequencies: Vec<&str> = Frequency::ALL.iter().map(|frequency| frequency.as_str()).collect();
    let data = context! {
        token => token,
        action => format!("/preferences/{token}"),
        topics => Value::from_serialize(&topics),
        purposes => Value::from_serialize(&purposes),
        fields => Value::from_serialize(&fields),
        frequencies => frequencies,
        saved => shown.saved.is_some(),
        unsubscribed => shown.unsubscribed.is_some(),
        error => rejected.is_some(),
        error_field => rejected.as_ref().map(|rejected| rejected.field.clone()),
        error_kind => rejected.as_ref().and_then(|rejected| {
            let field = view.fields.iter().find(|field| field.key == rejected.field)?;
            Some(match field.key.as_str() {
                key @ ("country" | "locale" | "time_zone") => key,
                _ => field.input,
            })
        }),
        // The field's label as the form shows it; built-in fields are labelled by the texts.
        error_label => rejected.as_ref().and_then(|rejected| {
            view.fields.iter().find(|field| field.key == rejected.field).and_then(|field| field.label.clone())
        }),
    };
    pages::page(status, "preferences.html", language, &view.settings, data)
}

/// The form as the browser sends it: `topic` and `consent` once per ticked box, `frequency.<topic>`
/// and `field.<key>` once each, and `language`, the language the page was shown in.
fn parse_form(fields: &[(String, String)]) -> Result<PreferencesForm, Error> {
    let mut form = PreferencesForm::default();
    for (name, value) in fields {
        if name == "topic" {
            form.subscribed.push(Key::parse(value).map_err(|error| Error::validation("topic", error))?);
        } else if name == "consent" {
            let (purpose, channel) =
                value.rsplit_once('.').ok_or_else(|| Error::validation("consent", "is not purpose.channel"))?;
            let purpose = Key::parse(purpose).map_err(|error| Error::validation("consent", error))?;
            let channel = channel.parse::<Channel>().map_err(|error| Error::validation("consent", error))?;
            form.granted.push((purpose, channel));
        } else if let Some(topic) = name.strip_prefix("frequency.") {
            let topic = Key::parse(topic).map_err(|error| Error::validation(name.clone(), error))?;
            let frequency = value.parse::<Frequency>().map_err(|error| Error::validation(name.clone(), error))?;
            form.frequencies.push((topic, frequency));
        } else if name == "language" {
            form.language =
                Some(texts::spoken(value).ok_or_else(|| Error::validation("language", "is not spoken here"))?);
        } else if let Some(key) = name.strip_prefix("field.") {
            form.fields.push((key.to_owned(), value.clone()));
        }
    }
    Ok(form)
}
