//! End-to-end tests of Rapport: the real server over HTTP on SQLite and PostgreSQL, the binary's
//! command line, and the GraphQL-over-HTTP audit. One module per feature.

mod access;
mod audit;
mod browser;
mod cli;
mod consents;
mod contacts;
mod emails;
mod encryption;
mod event_timeline;
mod events;
mod events_api;
mod fields;
mod forms;
mod graphql_http;
mod hooks;
mod http;
mod imports;
mod mail;
mod nats;
mod preferences;
mod privacy;
mod rate_limit;
mod subscriptions;
mod topics;
mod tracking;
mod webhooks;

/// The `rapport` binary that cargo built for these tests (see tests/Cargo.toml).
pub fn rapport_binary() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_BIN_EXE_rapport-under-test"))
}
