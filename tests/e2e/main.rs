//! End-to-end tests of Rapport: the real server over HTTP on SQLite and PostgreSQL, the binary's
//! command line, and the GraphQL-over-HTTP audit. One module per feature.

mod cli;
mod consents;
mod contacts;
mod encryption;
mod events;
mod fields;
mod graphql_http;
mod http;
mod topics;
