//! GraphQL over HTTP as an independent implementation judges it: the audit suite of the
//! `graphql-http` npm package must report no error and no warning. Also: the committed
//! `schema.graphql` is exactly what the binary exports.

use std::process::Command;

use rapport_e2e::{ADMIN_TOKEN, on_both_databases, repository_root};

use crate::rapport_binary;

on_both_databases! {
    async fn the_graphql_http_audit_reports_no_error_and_no_warning(app) {
        let harness = repository_root().join("tests/graphql-http");
        assert!(
            harness.join("node_modules/graphql-http").exists(),
            "the audit suite is not installed: run `npm ci` in tests/graphql-http (tests/run does)"
        );
        let output = tokio::process::Command::new("node")
            .arg("audit.mjs")
            .current_dir(&harness)
            .env("RAPPORT_AUDIT_URL", app.url("/graphql"))
            .env("RAPPORT_AUDIT_TOKEN", ADMIN_TOKEN)
            .output()
            .await
            .expect("node runs (Node.js is required for this test)");
        let report = String::from_utf8_lossy(&output.stdout);
        assert!(output.status.success(), "graphql-http audit failed:\n{report}\n{}", String::from_utf8_lossy(&output.stderr));
        assert!(report.contains("0 warnings, 0 errors"), "{report}");
    }
}

#[test]
fn schema_graphql_is_what_the_binary_exports() {
    let output = Command::new(rapport_binary()).arg("export-schema").output().expect("rapport runs");
    assert!(output.status.success());
    let exported = String::from_utf8(output.stdout).expect("UTF-8 schema");
    let committed = std::fs::read_to_string(repository_root().join("schema.graphql")).expect("schema.graphql exists");
    assert!(
        exported == committed,
        "schema.graphql is out of date: run `cargo run -- export-schema > schema.graphql` and commit it"
    );
}

on_both_databases! {
    async fn the_readme_curl_example_works_against_a_fresh_server(app) {
        let readme = std::fs::read_to_string(repository_root().join("README.md")).expect("README.md");
        let example = readme.split("readme-example").nth(1).expect("the README marks its example");
        let payload = example.split("-d '").nth(1).and_then(|rest| rest.split('\'').next()).expect("a -d '…' payload");
        let response = app
            .client
            .post(app.url("/graphql"))
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(payload.to_owned())
            .send()
            .await
            .unwrap();
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["data"]["upsertContact"]["created"], true, "{body}");
        assert_eq!(body["data"]["upsertContact"]["contact"]["email"], "ada@example.com");
        assert_eq!(body["data"]["upsertContact"]["contact"]["version"], 1);
    }
}
