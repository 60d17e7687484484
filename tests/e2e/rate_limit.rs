//! Rate limits per client address and per credential: 429 with `Retry-After` and a
//! `RATE_LIMITED` error shaped for the route, separate buckets per credential under one address
//! bucket, recovery after the announced wait, and probes that are never limited; and the tighter
//! per-address limit on public writes (signup forms, asking for a preferences link). Each test sets
//! limits so slow to refill (one request per 1,000 s) that only its own requests count.

use std::time::Duration;

use rapport::config::RateLimit;
use rapport_e2e::{ADMIN_TOKEN, Settings, TestApp, on_both_databases};
use serde_json::{Value, json};

const NEVER_REFILLS: f64 = 0.001;

fn limits(settings: &mut Settings, ip: RateLimit, credential: RateLimit) {
    settings.rate_limit_ip = ip;
    settings.rate_limit_credential = credential;
}

fn burst(requests: u32) -> RateLimit {
    RateLimit::new(NEVER_REFILLS, requests).unwrap()
}

async fn query(app: &TestApp, credential: Option<&str>) -> reqwest::Response {
    let mut request = app.client.post(app.url("/graphql")).json(&json!({ "query": "{ __typename }" }));
    if let Some(credential) = credential {
        request = request.bearer_auth(credential);
    }
    request.send().await.unwrap()
}

/// The whole seconds of `Retry-After`, which must be there and at least 1.
fn retry_after(response: &reqwest::Response) -> u64 {
    let header = response.headers().get("retry-after").expect("a Retry-After header");
    let seconds: u64 = header.to_str().unwrap().parse().expect("Retry-After in whole seconds");
    assert!(seconds >= 1, "Retry-After: {seconds}");
    seconds
}

/// Asserts a GraphQL-shaped RATE_LIMITED answer and returns its `Retry-After`.
async fn assert_graphql_rate_limited(response: reqwest::Response) -> u64 {
    assert_eq!(response.status(), 429);
    let seconds = retry_after(&response);
    assert!(response.headers().contains_key("x-request-id"));
    let body: Value = response.json().await.unwrap();
    assert!(body.get("data").is_none(), "{body}");
    let error = &body["errors"][0];
    assert_eq!(error["extensions"]["code"], "RATE_LIMITED", "{body}");
    assert_eq!(error["extensions"]["retryAfter"], seconds, "{body}");
    assert!(error["message"].is_string(), "{body}");
    seconds
}

on_both_databases! {
    #[settings(|settings| limits(settings, burst(100), burst(3)))]
    async fn a_credential_over_its_burst_gets_a_graphql_rate_limited_error_with_retry_after(app) {
        for _ in 0..3 {
            assert_eq!(query(&app, Some(ADMIN_TOKEN)).await.status(), 200);
        }
        let response = query(&app, Some(ADMIN_TOKEN)).await;
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let seconds = assert_graphql_rate_limited(response).await;
        // One request comes back every 1,000 s; rounding up may add a second, never remove one.
        assert!((999..=1000).contains(&seconds), "Retry-After: {seconds}");

        // Refused before the body is read: the answer comes while the announced body is unsent.
        let address = app.address.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&address).await.unwrap();
        let head = format!("POST /graphql HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n", rapport::http::MAX_BODY_BYTES);
        tokio::io::AsyncWriteExt::write_all(&mut stream, head.as_bytes()).await.unwrap();
        let mut answer = vec![0; 1024];
        let read = tokio::io::AsyncReadExt::read(&mut stream, &mut answer).await.unwrap();
        let answer = String::from_utf8_lossy(&answer[..read]);
        assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");

        let response = app.client.post(app.url("/graphql")).bearer_auth(ADMIN_TOKEN)
            .header("accept", "application/graphql-response+json")
            .json(&json!({ "query": "{ __typename }" })).send().await.unwrap();
        assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/graphql-response+json"));
        assert_graphql_rate_limited(response).await;
    }

    #[settings(|settings| limits(settings, burst(2), burst(100)))]
    async fn other_routes_answer_429_with_the_http_error_shape(app) {
        for _ in 0..2 {
            let response = app.client.get(app.url("/graphql/graphiql/init.js")).send().await.unwrap();
            assert_eq!(response.status(), 200);
        }
        for path in ["/graphql/graphiql/init.js", "/no/such/path"] {
            let response = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(response.status(), 429, "{path}");
            retry_after(&response);
            assert!(response.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
            assert!(body["error"]["message"].is_string(), "{body}");
        }
    }

    #[settings(|settings| limits(settings, burst(5), burst(2)))]
    async fn each_credential_has_its_own_bucket_and_the_address_bounds_them_all(app) {
        assert_eq!(query(&app, Some(ADMIN_TOKEN)).await.status(), 200);
        assert_eq!(query(&app, Some(ADMIN_TOKEN)).await.status(), 200);
        assert_graphql_rate_limited(query(&app, Some(ADMIN_TOKEN)).await).await;
        // Another credential is limited on its own account: it is not authenticated (401), but
        // not rate limited either, although the admin token is.
        assert_eq!(query(&app, Some("rpk_another_key")).await.status(), 401);
        assert_eq!(query(&app, Some("rpk_another_key")).await.status(), 401);
        // Five requests from this address, the refused one included: the address is spent, for
        // a fresh credential too.
        assert_graphql_rate_limited(query(&app, Some("rpk_a_third_key")).await).await;
        assert_graphql_rate_limited(query(&app, None).await).await;
    }

    #[settings(|settings| limits(settings, burst(100), RateLimit::new(2.0, 1).unwrap()))]
    async fn a_limited_caller_is_let_in_again_after_retry_after(app) {
        // The first request spends the burst; the next is refused unless the machine took half a
        // second in between, in which case the one after it is.
        let mut refused = None;
        for _ in 0..10 {
            let response = query(&app, Some(ADMIN_TOKEN)).await;
            if response.status() == 429 {
                refused = Some(response);
                break;
            }
            assert_eq!(response.status(), 200);
        }
        let seconds = assert_graphql_rate_limited(refused.expect("a request over the limit")).await;
        assert_eq!(seconds, 1, "half a second, rounded up");
        tokio::time::sleep(Duration::from_secs(seconds)).await;
        assert_eq!(query(&app, Some(ADMIN_TOKEN)).await.status(), 200);
    }

    #[settings(|settings| limits(settings, burst(1), burst(1)))]
    async fn health_and_readiness_are_never_limited(app) {
        assert_eq!(query(&app, Some(ADMIN_TOKEN)).await.status(), 200);
        assert_eq!(query(&app, Some(ADMIN_TOKEN)).await.status(), 429);
        for _ in 0..5 {
            for path in ["/healthz", "/readyz"] {
                let response = app.client.get(app.url(path)).bearer_auth(ADMIN_TOKEN).send().await.unwrap();
                assert_eq!(response.status(), 200, "{path}");
            }
        }
    }

    #[settings(|settings| limits(settings, burst(3), burst(100)))]
    async fn anonymous_callers_are_limited_by_their_address_alone(app) {
        // A claimed client address changes nothing: the peer address is the client.
        for n in 0..3 {
            let response = app.client.post(app.url("/graphql")).header("x-forwarded-for", format!("203.0.113.{n}"))
                .json(&json!({ "query": "{ __typename }" })).send().await.unwrap();
            assert_eq!(response.status(), 401);
        }
        let response = app.client.post(app.url("/graphql")).header("x-forwarded-for", "203.0.113.99")
            .json(&json!({ "query": "{ __typename }" })).send().await.unwrap();
        assert_graphql_rate_limited(response).await;
        assert_eq!(app.client.get(app.url("/no/such/path")).send().await.unwrap().status(), 429);

        // Another address has a bucket of its own (Linux routes all of 127.0.0.0/8 to loopback).
        let elsewhere = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 2])).build().unwrap();
        let response = elsewhere.post(app.url("/graphql")).json(&json!({ "query": "{ __typename }" })).send().await.unwrap();
        assert_eq!(response.status(), 401);
    }

    #[settings(|settings: &mut Settings| settings.rate_limit_form = burst(3))]
    async fn signup_forms_and_link_requests_share_a_tighter_limit_per_address(app) {
        let create = "mutation($input: CreateSignupFormInput!) { createSignupForm(input: $input) { key } }";
        app.data(create, json!({ "input": { "key": "newsletter", "name": "Newsletter", "topics": [], "wording": "Yes.", "doubleOptIn": false } })).await;
        let form = |client: &reqwest::Client, email: &str| {
            client.post(app.url("/forms/newsletter")).form(&[("email", email.to_owned())]).send()
        };
        for n in 0..2 {
            assert_eq!(form(&app.client, &format!("person{n}@example.com")).await.unwrap().status(), 200);
        }
        let link = app.client.post(app.url("/preferences")).form(&[("address", "person0@example.com")]).send().await.unwrap();
        assert_eq!(link.status(), 200, "asking for a link spends from the same bucket");

        for refused in [
            form(&app.client, "person3@example.com").await.unwrap(),
            app.client.post(app.url("/preferences")).form(&[("address", "person0@example.com")]).send().await.unwrap(),
            app.client.post(app.url("/forms/newsletter")).json(&json!({ "email": "json@example.com" })).send().await.unwrap(),
        ] {
            assert_eq!(refused.status(), 429);
            let seconds = retry_after(&refused);
            assert!((999..=1000).contains(&seconds), "Retry-After: {seconds}");
            assert!(refused.headers().contains_key("x-request-id"));
            let body: Value = refused.json().await.unwrap();
            assert_eq!(body["error"]["code"], "RATE_LIMITED", "{body}");
        }
        let known = app.data("query { contacts(first: 10) { nodes { email } } }", json!({})).await;
        assert_eq!(known["contacts"]["nodes"].as_array().unwrap().len(), 2, "a refused submission stores nothing: {known}");

        // Reading pages, the API and other addresses go on as before.
        assert_eq!(app.client.get(app.url("/preferences")).send().await.unwrap().status(), 200);
        assert_eq!(query(&app, Some(ADMIN_TOKEN)).await.status(), 200);
        let elsewhere = reqwest::Client::builder().local_address(std::net::IpAddr::from([127, 0, 0, 3])).build().unwrap();
        assert_eq!(form(&elsewhere, "person4@example.com").await.unwrap().status(), 200);
    }
}
