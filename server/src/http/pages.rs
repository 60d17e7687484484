//! The pages customers see: server-rendered HTML from the templates in web/pages/ (embedded in
//! the binary), in the customer's language, under a Content-Security-Policy that allows nothing
//! but this server's own stylesheet and forms posting back to it.

use std::sync::LazyLock;

use axum::extract::State;
use axum::{
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use minijinja::Environment;
use serde::Serialize;

use super::AppState;
use crate::domain::{preferences::PreferenceCenter, texts};

/// Logos are `data:` URLs (see `parse_logo`); scripts and requests go to this server only.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const TEMPLATES: [(&str, &str); 8] = [
    ("layout.html", include_str!("../../../web/pages/layout.html")),
    ("unsubscribe.html", include_str!("../../../web/pages/unsubscribe.html")),
    ("unsubscribed.html", include_str!("../../../web/pages/unsubscribed.html")),
    ("invalid_link.html", include_str!("../../../web/pages/invalid_link.html")),
    ("preferences.html", include_str!("../../../web/pages/preferences.html")),
    ("manage.html", include_str!("../../../web/pages/manage.html")),
    ("form_received.html", include_str!("../../../web/pages/form_received.html")),
    ("confirm.html", include_str!("../../../web/pages/confirm.html")),
];

const STYLESHEET: &str = include_str!("../../../web/pages/page.css");
const PREFERENCES_SCRIPT: &str = include_str!("../../../web/pages/preferences.js");

static PAGES: LazyLock<Environment<'static>> = LazyLock::new(|| {
    let mut environment = Environment::new();
    for (name, source) in TEMPLATES {
        if let Err(error) = environment.add_template(name, source) {
            tracing::error!(template = name, %error, "a page template does not compile");
        }
    }
    environment
});

/// Who the pages speak for, as admins set it.
#[derive(Debug, Clone, Serialize)]
struct Brand<'a> {
    company: &'a str,
    logo: Option<&'a str>,
    footer: Option<&'a str>,
    privacy_url: Option<&'a str>,
}

/// The language to answer in: the contact's own locale if the pages speak it, else the first
/// language of `Accept-Language` (by quality) that they speak, else English.
pub fn language(contact_locale: Option<&str>, headers: &HeaderMap) -> &'static str {
    if let Some(language) = contact_locale.and_then(texts::spoken) {
        return language;
    }
    let accepted = headers.get(header::ACCEPT_LANGUAGE).and_then(|value| value.to_str().ok()).unwrap_or_default();
    let mut ranked: Vec<(f32, &str)> = accepted
        .split(',')
        .filter_map(|item| {
            let mut parts = item.split(';');
            let tag = parts.next()?.trim();
            let quality = parts
                .find_map(|parameter| parameter.trim().strip_prefix("q="))
                .map_or(Some(1.0), |q| q.trim().parse::<f32>().ok())?;
            (quality > 0.0).then_some((quality, tag))
        })
        .collect();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    ranked.into_iter().find_map(|(_, tag)| texts::spoken(tag)).unwrap_or(texts::DEFAULT_LANGUAGE)
}

/// Renders page `name` in `language` with `status`, branded by `settings`, with `data` for
/// the page's own template.
pub fn page(
    status: StatusCode,
    name: &str,
    language: &str,
    settings: &PreferenceCenter,
    data: minijinja::Value,
) -> Response {
    let texts = texts::of(language);
    let brand = Brand {
        company: &settings.company_name,
        logo: settings.logo.as_deref(),
        footer: settings.footer_text.as_deref(),
        privacy_url: settings.privacy_policy_url.as_deref(),
    };
    let context = minijinja::context! { t => texts, brand => brand, ..data };
    let rendered = PAGES.get_template(name).and_then(|template| template.render(context));
    match rendered {
        Ok(html) => {
            let mut response = (status, html).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
            response
        }
        Err(error) => {
            tracing::error!(page = name, %error, "cannot render a page");
            super::internal_error()
        }
    }
}

pub async fn stylesheet() -> Response {
    asset(STYLESHEET.to_owned(), "text/css; charset=utf-8", "public, max-age=3600")
}

pub async fn preferences_script() -> Response {
    asset(PREFERENCES_SCRIPT.to_owned(), "text/javascript; charset=utf-8", "public, max-age=3600")
}

/// The brand colour, as admins set it: a stylesheet, since the policy allows no inline style.
pub async fn brand_stylesheet(State(state): State<AppState>) -> Response {
    let color = state.services.preference_center().await.map(|settings| settings.primary_color).unwrap_or_default();
    // Stored colours were checked on the way in (`parse_color`); this keeps the CSS well formed
    // whatever the row holds.
    let color = if color.len() == 7 && color.starts_with('#') && color[1..].bytes().all(|b| b.is_ascii_hexdigit()) {
        color
    } else {
        PreferenceCenter::default().primary_color
    };
    asset(format!(":root {{ --accent: {color}; }}\n"), "text/css; charset=utf-8", "no-cache")
}

fn asset(body: String, content_type: &'static str, cache_control: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_renders_in_every_language() {
        for (name, _) in TEMPLATES {
            for language in texts::languages() {
                let rendered =
                    page(StatusCode::OK, name, language, &PreferenceCenter::default(), minijinja::Value::UNDEFINED);
                assert_eq!(rendered.status(), StatusCode::OK, "{name} in {language}");
            }
        }
    }

    #[test]
    fn the_contact_locale_comes_first_then_accept_language_by_quality() {
        let headers = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT_LANGUAGE, HeaderValue::from_str(value).unwrap());
            headers
        };
        assert_eq!(language(Some("de-CH"), &headers("en")), "de");
        assert_eq!(language(Some("fr"), &headers("fr-FR, de;q=0.8, en;q=0.5")), "de");
        assert_eq!(language(None, &headers("en;q=0.4, de-AT;q=0.9")), "de");
        assert_eq!(language(None, &headers("de;q=0, fr")), "en");
        assert_eq!(language(None, &HeaderMap::new()), "en");
    }
}
