//! The HTTP surface around GraphQL: health, request ids, authentication, size/depth/complexity
//! limits, GET semantics, GraphiQL, and internal errors that must not leak internals.

use rapport_e2e::{ADMIN_TOKEN, TestApp, on_both_databases};
use sea_orm::{ConnectionTrait, Database};
use serde_json::{Value, json};

async fn post_graphql(app: &TestApp, token: Option<&str>, body: Value) -> reqwest::Response {
    let mut request = app.client.post(app.url("/graphql")).json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

const CREATE_CONTACT: &str = r#"mutation { upsertContact(input: {email: "ada@example.com"}) { created } }"#;

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

    async fn every_response_carries_a_request_id_and_a_given_one_is_kept(app) {
        for path in ["/healthz", "/readyz", "/graphql", "/no/such/path"] {
            let response = app.client.get(app.url(path)).send().await.unwrap();
            let id = response.headers().get("x-request-id").unwrap_or_else(|| panic!("{path} has no x-request-id"));
            assert!(!id.is_empty());
        }
        let response = app.client.get(app.url("/healthz")).header("x-request-id", "trace-me-42").send().await.unwrap();
        assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    }

    async fn a_missing_or_wrong_token_is_unauthenticated_and_writes_nothing(app) {
        let before = app.snapshot().await;
        for token in [None, Some("wrong-token"), Some("")] {
            let response = post_graphql(&app, token, json!({ "query": CREATE_CONTACT })).await;
            assert_eq!(response.status(), 401, "token {token:?}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
            assert!(body.get("data").is_none());
        }
        // Anonymous callers are turned away before their body is read: the answer comes while
        // the announced body has not even been sent.
        let address = app.address.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!("POST /graphql HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", rapport::http::MAX_BODY_BYTES * 4);
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await.unwrap();
        let mut answer = vec![0; 1024];
        let read = tokio::io::AsyncReadExt::read(&mut stream, &mut answer).await.unwrap();
        assert!(String::from_utf8_lossy(&answer[..read]).starts_with("HTTP/1.1 401"), "{}", String::from_utf8_lossy(&answer[..read]));
        let garbage = app.client.post(app.url("/graphql")).header("content-type", "text/plain").body("{{{").send().await.unwrap();
        assert_eq!(garbage.status(), 401);
        let response = app.client.post(app.url("/graphql")).header("authorization", format!("Basic {ADMIN_TOKEN}"))
            .json(&json!({ "query": CREATE_CONTACT })).send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(app.snapshot().await, before);
    }

    async fn a_body_over_the_limit_is_refused_and_writes_nothing(app) {
        let before = app.snapshot().await;
        let padding = "x".repeat(rapport::http::MAX_BODY_BYTES + 1);
        let body = json!({ "query": CREATE_CONTACT, "extensions": { "padding": padding } });
        let response = post_graphql(&app, Some(ADMIN_TOKEN), body).await;
        assert_eq!(response.status(), 413);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(app.snapshot().await, before);
    }

    async fn malformed_json_and_malformed_parameters_are_bad_requests(app) {
        let response = app.client.post(app.url("/graphql")).bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json").body("{\"query\": ").send().await.unwrap();
        assert_eq!(response.status(), 400);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

        let response = post_graphql(&app, Some(ADMIN_TOKEN), json!({ "query": 42 })).await;
        assert_eq!(response.status(), 400);
        let response = post_graphql(&app, Some(ADMIN_TOKEN), json!({ "query": "{ topics { key } }", "variables": [1] })).await;
        assert_eq!(response.status(), 400);

        let response = app.client.post(app.url("/graphql")).bearer_auth(ADMIN_TOKEN)
            .header("content-type", "text/plain").body("{ topics { key } }").send().await.unwrap();
        assert_eq!(response.status(), 415);
    }

    async fn syntax_errors_are_bad_user_input_and_a_400_for_graphql_response_json(app) {
        let response = app.client.post(app.url("/graphql")).bearer_auth(ADMIN_TOKEN)
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": "{ topics { key " })).send().await.unwrap();
        assert_eq!(response.status(), 400);
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/graphql-response+json"));
        let body: Value = response.json().await.unwrap();
        assert!(body.get("data").is_none());
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");

        let body = app.graphql("{ topics { noSuchField } }", json!({})).await;
        assert_eq!(body["errors"][0]["extensions"]["code"], "BAD_USER_INPUT");
    }

    async fn a_query_nested_too_deep_is_refused(app) {
        let mut selection = "name".to_owned();
        for _ in 0..20 {
            selection = format!("ofType {{ {selection} }}");
        }
        let query = format!("{{ __schema {{ types {{ fields {{ type {{ {selection} }} }} }} }} }}");
        let error = app.error(&query, json!({})).await;
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
        assert!(error["message"].as_str().unwrap().to_lowercase().contains("deep"), "{error}");
    }

    async fn a_query_too_complex_is_refused(app) {
        let query = "{ contacts(first: 100) { edges { node { id
            consentHistory(first: 100) { edges { node { id purpose status proof { ip } } } }
            events(first: 100) { edges { node { id type properties } } } } } } }";
        let error = app.error(query, json!({})).await;
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
        assert!(error["message"].as_str().unwrap().to_lowercase().contains("complex"), "{error}");
    }

    async fn graphiqls_introspection_query_fits_within_the_limits(app) {
        let data = app.data(INTROSPECTION_QUERY, json!({})).await;
        let types = data["__schema"]["types"].as_array().unwrap();
        assert!(types.iter().any(|t| t["name"] == "Contact"));
    }

    async fn queries_work_over_get_and_mutations_do_not(app) {
        let response = app.client.get(app.url("/graphql")).bearer_auth(ADMIN_TOKEN)
            .query(&[("query", "{ consentPurposes { key } }")]).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body: Value = response.json().await.unwrap();
        let keys: Vec<&str> = body["data"]["consentPurposes"].as_array().unwrap().iter().filter_map(|p| p["key"].as_str()).collect();
        assert!(keys.contains(&"marketing"), "{keys:?}");

        let before = app.snapshot().await;
        let response = app.client.get(app.url("/graphql")).bearer_auth(ADMIN_TOKEN)
            .query(&[("query", CREATE_CONTACT)]).send().await.unwrap();
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "POST");
        assert_eq!(app.snapshot().await, before);
    }

    async fn graphiql_is_served_to_browsers_from_embedded_assets_only(app) {
        let response = app.client.get(app.url("/graphql")).header("accept", "text/html,application/xhtml+xml").send().await.unwrap();
        assert_eq!(response.status(), 200);
        let csp = response.headers()["content-security-policy"].to_str().unwrap().to_owned();
        assert!(csp.contains("default-src 'self'"), "{csp}");
        let page = response.text().await.unwrap();
        assert!(page.contains("graphiql"));
        assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("//cdn"), "page loads something from elsewhere");
        for asset in ["graphiql.min.js", "graphiql.min.css", "react.production.min.js", "react-dom.production.min.js", "init.js"] {
            let response = app.client.get(app.url(&format!("/graphql/graphiql/{asset}"))).send().await.unwrap();
            assert_eq!(response.status(), 200, "{asset}");
        }
        let missing = app.client.get(app.url("/graphql/graphiql/../../etc/passwd")).send().await.unwrap();
        assert_eq!(missing.status(), 404);
    }

    async fn an_internal_error_tells_the_request_id_and_nothing_else(app) {
        let contact = app.upsert_contact(json!({ "email": "grace@example.com" })).await;
        // Damage the stored row behind the application's back, as a faulty migration might.
        let database = Database::connect(&app.database_url).await.unwrap();
        database.execute_unprepared("UPDATE contact SET time_zone = 'Not/AZone'").await.unwrap();
        database.close().await.unwrap();

        let response = post_graphql(&app, Some(ADMIN_TOKEN), json!({
            "query": "query($id: ID!) { contact(by: {id: $id}) { email } }",
            "variables": { "id": contact["id"] },
        })).await;
        let request_id = response.headers()["x-request-id"].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        let error = &body["errors"][0];
        assert_eq!(error["extensions"]["code"], "INTERNAL");
        assert_eq!(error["message"], format!("internal error (request id {request_id})"));
        let text = body.to_string();
        assert!(!text.contains("time_zone") && !text.contains("Not/AZone") && !text.contains("contact."), "{text}");
    }

    async fn a_filter_with_too_many_conditions_is_refused(app) {
        let topics: Vec<Value> = (0..21).map(|i| json!({ "topic": format!("t{i}") })).collect();
        let error = app.error("query($f: ContactFilter) { contacts(filter: $f) { edges { cursor } } }", json!({ "f": { "topics": topics } })).await;
        assert_eq!(error["extensions"]["code"], "BAD_USER_INPUT");
        assert_eq!(error["extensions"]["field"], "filter.topics");
    }

    async fn unknown_paths_get_a_json_404(app) {
        let response = app.client.get(app.url("/no/such/path")).send().await.unwrap();
        assert_eq!(response.status(), 404);
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "NOT_FOUND");
        assert!(body["error"]["message"].is_string());
    }
}

/// The introspection query GraphiQL sends (graphql-js `getIntrospectionQuery`, with descriptions).
const INTROSPECTION_QUERY: &str = r#"
query IntrospectionQuery {
  __schema {
    queryType { name } mutationType { name } subscriptionType { name }
    types { ...FullType }
    directives { name description locations args { ...InputValue } }
  }
}
fragment FullType on __Type {
  kind name description
  fields(includeDeprecated: true) { name description args { ...InputValue } type { ...TypeRef } isDeprecated deprecationReason }
  inputFields { ...InputValue }
  interfaces { ...TypeRef }
  enumValues(includeDeprecated: true) { name description isDeprecated deprecationReason }
  possibleTypes { ...TypeRef }
}
fragment InputValue on __InputValue { name description type { ...TypeRef } defaultValue }
fragment TypeRef on __Type {
  kind name
  ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name ofType { kind name } } } } } } }
}
"#;
