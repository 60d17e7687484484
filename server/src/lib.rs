//! Rapport: customer profiles, consents and preferences behind a GraphQL API, in one binary.

pub mod audit;
pub mod config;
pub mod crypto;
pub mod domain;
pub mod graphql;
pub mod http;
pub mod mail;
pub mod service;
pub mod startup;
pub mod store;
pub mod stream;
pub mod telemetry;

/// Here rather than in main.rs, so that the binary, the benchmarks that run the server in their
/// own process and the tests all allocate alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
