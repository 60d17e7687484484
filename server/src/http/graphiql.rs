//! GraphiQL, for people exploring the API in a browser. Every asset is embedded in the binary
//! (web/graphiql/), so the page works offline and loads nothing from a CDN. The page holds no
//! data: queries it sends need the admin token like any other.

use axum::{
    extract::Path,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

use super::error::ApiError;

/// Fonts and icons are `data:` URLs inside GraphiQL's stylesheet; nothing else is relaxed.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; font-src 'self' data:; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

const ASSETS: &[(&str, &str, &[u8])] = &[
    ("graphiql.min.js", "text/javascript; charset=utf-8", include_bytes!("../../../web/graphiql/graphiql.min.js")),
    ("graphiql.min.css", "text/css; charset=utf-8", include_bytes!("../../../web/graphiql/graphiql.min.css")),
    (
        "react.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../web/graphiql/react.production.min.js"),
    ),
    (
        "react-dom.production.min.js",
        "text/javascript; charset=utf-8",
        include_bytes!("../../../web/graphiql/react-dom.production.min.js"),
    ),
    ("init.js", "text/javascript; charset=utf-8", include_bytes!("../../../web/graphiql/init.js")),
    ("page.css", "text/css; charset=utf-8", include_bytes!("../../../web/graphiql/page.css")),
];

const PAGE: &[u8] = include_bytes!("../../../web/graphiql/index.html");

pub fn page() -> Response {
    with_headers(PAGE, "text/html; charset=utf-8", "no-cache")
}

pub async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|(asset, _, _)| *asset == name) {
        Some((_, content_type, bytes)) => with_headers(bytes, content_type, "public, max-age=3600"),
        None => ApiError::not_found().into_response(),
    }
}

fn with_headers(body: &'static [u8], content_type: &'static str, cache_control: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache_control));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    response
}
