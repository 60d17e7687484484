//! Who may do what: admin users signing in and out, roles, API keys, contact tokens, and the
//! attacks each must withstand (wrong passwords, forged and expired tokens, revoked keys,
//! missing scopes, brute force, cross-contact tokens, anonymous calls).

use std::{
    io::Write,
    net::IpAddr,
    process::{Command, Stdio},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{Duration, Utc};
use rapport::crypto::{
    MasterKey, MasterKeys,
    tokens::{Audience, TokenSigner},
};
use sea_orm::ConnectionTrait;
use secrecy::ExposeSecret;
use serde_json::{Value, json};

use crate::rapport_binary;
use rapport_e2e::{TestApp, assert_error, on_both_databases};

const PASSWORD: &str = "correct horse battery staple";

const CREATE_USER: &str = "mutation($input: CreateUserInput!) { createUser(input: $input) { id email role } }";
const LOGIN: &str = "mutation($email: String!, $password: String!) {
  login(email: $email, password: $password) { accessToken accessTokenExpiresAt refreshToken sessionExpiresAt user { id email role } }
}";
const REFRESH: &str = "mutation($token: String!) { refreshToken(refreshToken: $token) { accessToken refreshToken } }";
const ME: &str = "{ me { id email role } }";
const CONTACTS: &str = "{ contacts(first: 5) { nodes { id email } } }";
const UPSERT: &str = "mutation($input: UpsertContactInput!) { upsertContact(input: $input) { contact { id email } } }";
const CREATE_KEY: &str = "mutation($input: CreateApiKeyInput!) {
  createApiKey(input: $input) { secret apiKey { id name prefix scopes expiresAt lastUsedAt revokedAt } }
}";
const ISSUE_CONTACT_TOKEN: &str = "mutation($id: ID!, $purpose: ContactTokenPurpose!) {
  issueContactToken(contactId: $id, purpose: $purpose) { token expiresAt }
}";

async fn create_user(app: &TestApp, email: &str, role: &str) -> String {
    let data = app.data(CREATE_USER, json!({ "input": { "email": email, "password": PASSWORD, "role": role } })).await;
    data["createUser"]["id"].as_str().expect("user id").to_owned()
}

/// Signs in as a new user of `role` and returns the login payload.
async fn signed_in(app: &TestApp, email: &str, role: &str) -> Value {
    create_user(app, email, role).await;
    login(app, email, PASSWORD).await
}

async fn login(app: &TestApp, email: &str, password: &str) -> Value {
    let (status, body) = app.graphql_as(None, LOGIN, json!({ "email": email, "password": password })).await;
    assert_eq!(status, 200, "{body:#}");
    assert!(body.get("errors").is_none(), "login failed: {body:#}");
    body["data"]["login"].clone()
}

fn token(payload: &Value) -> &str {
    payload["accessToken"].as_str().expect("access token")
}

/// The first error's code of a request made with `bearer`.
async fn code_as(app: &TestApp, bearer: &str, query: &str, variables: Value) -> String {
    let (_, body) = app.graphql_as(Some(bearer), query, variables).await;
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("none").to_owned()
}

async fn create_key(app: &TestApp, name: &str, scopes: &[&str]) -> (String, String) {
    let data = app.data(CREATE_KEY, json!({ "input": { "name": name, "scopes": scopes } })).await;
    let key = &data["createApiKey"];
    (key["secret"].as_str().expect("secret").to_owned(), key["apiKey"]["id"].as_str().expect("id").to_owned())
}

fn masters_of(app: &TestApp) -> MasterKeys {
    let master = MasterKey::parse(app.settings.master_key.as_ref().expect("master key").expose_secret()).unwrap();
    MasterKeys::new(master, None)
}

fn signer_of(app: &TestApp) -> TokenSigner {
    TokenSigner::new(&masters_of(app))
}

/// A sign-in attempt sent from `source` (every 127.0.0.0/8 address reaches the loopback server),
/// so that tests about one account are not cut short by the per-address limit.
async fn login_from(app: &TestApp, source: IpAddr, email: &str, password: &str) -> Value {
    let client = reqwest::Client::builder().local_address(source).build().unwrap();
    let body = json!({ "query": LOGIN, "variables": { "email": email, "password": password } });
    client.post(app.url("/graphql")).json(&body).send().await.unwrap().json().await.unwrap()
}

fn code_of(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"].as_str().unwrap_or("none")
}

on_both_databases! {
    async fn a_user_signs_in_refreshes_and_signs_out(app) {
        let signed_in = signed_in(&app, "ops@example.com", "ADMIN").await;
        assert_eq!(signed_in["user"]["role"], "ADMIN");
        let access = token(&signed_in).to_owned();
        let me = app.graphql_as(Some(&access), ME, json!({})).await.1;
        assert_eq!(me["data"]["me"]["email"], "ops@example.com");

        let refreshed = app.graphql_as(None, REFRESH, json!({ "token": signed_in["refreshToken"] })).await.1;
        let refreshed = &refreshed["data"]["refreshToken"];
        assert_ne!(refreshed["refreshToken"], signed_in["refreshToken"], "the refresh token rotates");
        let new_access = refreshed["accessToken"].as_str().unwrap().to_owned();
        assert_eq!(app.graphql_as(Some(&new_access), ME, json!({})).await.1["data"]["me"]["email"], "ops@example.com");

        // Presenting the replaced refresh token again means it was copied: the session ends.
        let (_, reused) = app.graphql_as(None, REFRESH, json!({ "token": signed_in["refreshToken"] })).await;
        assert_error(&reused["errors"][0], "UNAUTHENTICATED", None);
        assert_eq!(app.graphql_as(Some(&new_access), ME, json!({})).await.0, 401);
        let (_, after_reuse) = app.graphql_as(None, REFRESH, json!({ "token": refreshed["refreshToken"] })).await;
        assert_error(&after_reuse["errors"][0], "UNAUTHENTICATED", None);

        let second = login(&app, "ops@example.com", PASSWORD).await;
        let (_, logout) = app.graphql_as(Some(token(&second)), "mutation { logout }", json!({})).await;
        assert_eq!(logout["data"]["logout"], true);
        assert_eq!(app.graphql_as(Some(token(&second)), ME, json!({})).await.0, 401, "logout ends the access token");
        let (_, refresh_after_logout) = app.graphql_as(None, REFRESH, json!({ "token": second["refreshToken"] })).await;
        assert_error(&refresh_after_logout["errors"][0], "UNAUTHENTICATED", None);

        let log = app.data("{ auditLog(filter: { targetKind: \"user\" }) { nodes { action actor { kind } } } }", json!({})).await;
        let actions: Vec<&str> = log["auditLog"]["nodes"].as_array().unwrap().iter().map(|n| n["action"].as_str().unwrap()).collect();
        assert!(actions.contains(&"user.created") && actions.contains(&"user.signed_in"), "{actions:?}");
    }

    async fn wrong_passwords_and_unknown_accounts_get_the_same_answer_and_brute_force_is_stopped(app) {
        create_user(&app, "victim@example.com", "OWNER").await;
        let attempt = |email: &'static str, password: &'static str| {
            let app = &app;
            async move { app.graphql_as(None, LOGIN, json!({ "email": email, "password": password })).await.1 }
        };
        let unknown = attempt("nobody@example.com", PASSWORD).await;
        let wrong = attempt("victim@example.com", "not the password at all").await;
        assert_error(&unknown["errors"][0], "UNAUTHENTICATED", None);
        assert_eq!(unknown["errors"][0]["message"], wrong["errors"][0]["message"]);
        assert!(wrong["data"].is_null() || wrong["data"]["login"].is_null());
        for _ in 1..rapport::service::access::FAILED_LOGINS_BEFORE_LOCK {
            attempt("victim@example.com", "still not the password").await;
        }
        // Locked now: even the right password is not checked until the lock ends.
        let locked = attempt("victim@example.com", PASSWORD).await;
        assert_error(&locked["errors"][0], "RATE_LIMITED", None);
        assert!(locked["errors"][0]["extensions"]["retryAfter"].as_u64().unwrap() >= 1, "{locked:#}");
        let log = app.data("{ auditLog(filter: { action: \"user.login_failed\" }) { nodes { changes } } }", json!({})).await;
        assert_eq!(log["auditLog"]["nodes"].as_array().unwrap().len(), rapport::service::access::FAILED_LOGINS_BEFORE_LOCK as usize + 1);
        assert!(!log.to_string().contains("still not the password"), "a tried password was recorded");
    }

    async fn sign_in_attempts_from_one_address_are_limited_whatever_the_account(app) {
        let mut codes = Vec::new();
        for attempt in 0..12 {
            let email = format!("guess{attempt}@example.com");
            let (_, body) = app.graphql_as(None, LOGIN, json!({ "email": email, "password": PASSWORD })).await;
            codes.push(body["errors"][0]["extensions"]["code"].as_str().unwrap().to_owned());
        }
        assert!(codes[..10].iter().all(|code| code == "UNAUTHENTICATED"), "{codes:?}");
        assert_eq!(codes[11], "RATE_LIMITED", "{codes:?}");
    }

    async fn forged_expired_and_foreign_tokens_are_refused(app) {
        let signed_in = signed_in(&app, "ops@example.com", "OWNER").await;
        let good = token(&signed_in).to_owned();
        assert_eq!(app.graphql_as(Some(&good), ME, json!({})).await.0, 200);
        let (header, rest) = good.split_once('.').unwrap();
        let (payload, signature) = rest.split_once('.').unwrap();
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        let encode = |value: &Value| URL_SAFE_NO_PAD.encode(value.to_string());

        let mut longer = claims.clone();
        longer["exp"] = json!(claims["exp"].as_i64().unwrap() + 86_400);
        let altered = format!("{header}.{}.{signature}", encode(&longer));
        let alg_none = format!("{}.{payload}.", encode(&json!({ "alg": "none", "typ": "JWT" })));
        let alg_swap = format!("{}.{payload}.{signature}", encode(&json!({ "alg": "HS512", "typ": "JWT", "kid": "x" })));
        let now = Utc::now();
        let sid = json!({ "sid": claims["sid"] });
        let subject = claims["sub"].as_str().unwrap();
        let expired = signer_of(&app).sign(Audience::Admin, subject, sid.clone(), now - Duration::hours(2), now - Duration::hours(1));
        let other_key = TokenSigner::new(&MasterKeys::new(MasterKey::generate(), None))
            .sign(Audience::Admin, subject, sid.clone(), now, now + Duration::minutes(5));
        let contact_audience = signer_of(&app).sign(Audience::Contact, subject, sid.clone(), now, now + Duration::minutes(5));
        // The right key and key id under another algorithm: only the algorithm pin refuses it.
        let real_key = masters_of(&app).derive("token signing v1").remove(0);
        let header = jsonwebtoken::Header { kid: Some(real_key.id().to_owned()), ..jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512) };
        let mut swapped_claims = claims.clone();
        swapped_claims["exp"] = json!((now + Duration::minutes(5)).timestamp());
        let hs512 = jsonwebtoken::encode(&header, &swapped_claims, &jsonwebtoken::EncodingKey::from_secret(real_key.bytes())).unwrap();
        for (name, forged) in [
            ("altered payload", altered),
            ("alg none", alg_none),
            ("algorithm swap", alg_swap),
            ("expired", expired),
            ("signed with another key", other_key),
            ("for the contact audience", contact_audience),
            ("HS512 with the real key", hs512),
            ("garbage", "eyJhbGciOi.garbage.x".to_owned()),
        ] {
            let (status, body) = app.graphql_as(Some(&forged), ME, json!({})).await;
            assert_eq!(status, 401, "{name}: {body:#}");
            assert_error(&body["errors"][0], "UNAUTHENTICATED", None);
        }
    }

    async fn roles_decide_what_each_user_may_do(app) {
        let analyst = token(&signed_in(&app, "analyst@example.com", "ANALYST").await).to_owned();
        let marketer = token(&signed_in(&app, "marketer@example.com", "MARKETER").await).to_owned();
        let admin = token(&signed_in(&app, "admin@example.com", "ADMIN").await).to_owned();
        let contact = json!({ "input": { "email": "ada@example.com" } });
        let define_field = "mutation { defineField(input: { key: \"tier\", label: \"Tier\", type: STRING }) { key } }";
        let audit = "{ auditLog(first: 1) { nodes { action } } }";
        let new_user = |email: &str, role: &str| json!({ "input": { "email": email, "password": PASSWORD, "role": role } });

        assert_eq!(code_as(&app, &analyst, CONTACTS, json!({})).await, "none");
        assert_eq!(code_as(&app, &analyst, UPSERT, contact.clone()).await, "FORBIDDEN");
        assert_eq!(code_as(&app, &analyst, define_field, json!({})).await, "FORBIDDEN");
        assert_eq!(code_as(&app, &marketer, UPSERT, contact.clone()).await, "none");
        assert_eq!(code_as(&app, &marketer, define_field, json!({})).await, "FORBIDDEN");
        assert_eq!(code_as(&app, &marketer, audit, json!({})).await, "FORBIDDEN");
        assert_eq!(code_as(&app, &marketer, CREATE_USER, new_user("m2@example.com", "ANALYST")).await, "FORBIDDEN");
        assert_eq!(code_as(&app, &admin, define_field, json!({})).await, "none");
        assert_eq!(code_as(&app, &admin, audit, json!({})).await, "none");
        assert_eq!(code_as(&app, &admin, CREATE_USER, new_user("a2@example.com", "ADMIN")).await, "none");
        assert_eq!(code_as(&app, &admin, CREATE_USER, new_user("o2@example.com", "OWNER")).await, "FORBIDDEN");
        let (_, forbidden) = app.graphql_as(Some(&analyst), UPSERT, contact).await;
        assert!(forbidden["errors"][0]["message"].as_str().unwrap().contains("profiles:write"), "{forbidden:#}");
    }

    async fn disabling_a_user_ends_their_sessions_and_the_last_owner_stays(app) {
        let owner_id = create_user(&app, "owner@example.com", "OWNER").await;
        let marketer = signed_in(&app, "marketer@example.com", "MARKETER").await;
        let alter = "mutation($input: AlterUserInput!) { alterUser(input: $input) { role disabledAt } }";
        let data = app.data(alter, json!({ "input": { "id": marketer["user"]["id"], "disabled": true } })).await;
        assert!(data["alterUser"]["disabledAt"].is_string());
        assert_eq!(app.graphql_as(Some(token(&marketer)), ME, json!({})).await.0, 401);
        let (_, refused) = app.graphql_as(None, LOGIN, json!({ "email": "marketer@example.com", "password": PASSWORD })).await;
        assert_error(&refused["errors"][0], "UNAUTHENTICATED", None);

        let error = app.error(alter, json!({ "input": { "id": owner_id, "role": "ADMIN" } })).await;
        assert_error(&error, "CONFLICT", None);
        let error = app.error(alter, json!({ "input": { "id": owner_id, "disabled": true } })).await;
        assert_error(&error, "CONFLICT", None);
        let users = app.data("{ users { email role disabledAt } }", json!({})).await;
        assert_eq!(users["users"][1]["role"], "OWNER", "{users:#}");
    }

    async fn api_keys_carry_scopes_are_shown_once_and_can_be_revoked(app) {
        let (secret, id) = create_key(&app, "shop", &["profiles:read"]).await;
        assert!(secret.starts_with("rpk_") && secret.len() > 40, "{secret}");
        let listed = app.data("{ apiKeys { id prefix scopes lastUsedAt } }", json!({})).await;
        assert!(!listed.to_string().contains(&secret), "a key's secret was listed");
        assert!(secret.starts_with(listed["apiKeys"][0]["prefix"].as_str().unwrap()));
        assert_eq!(listed["apiKeys"][0]["scopes"], json!(["profiles:read"]));

        assert_eq!(code_as(&app, &secret, CONTACTS, json!({})).await, "none");
        let (_, body) = app.graphql_as(Some(&secret), UPSERT, json!({ "input": { "email": "ada@example.com" } })).await;
        assert_error(&body["errors"][0], "FORBIDDEN", None);
        assert_eq!(code_as(&app, &secret, CREATE_KEY, json!({ "input": { "name": "x", "scopes": ["profiles:read"] } })).await, "FORBIDDEN");
        let used = app.data("{ apiKeys { lastUsedAt } }", json!({})).await;
        assert!(used["apiKeys"][0]["lastUsedAt"].is_string(), "{used:#}");

        let revoke = "mutation($id: ID!) { revokeApiKey(id: $id) { revokedAt } }";
        assert!(app.data(revoke, json!({ "id": id })).await["revokeApiKey"]["revokedAt"].is_string());
        assert_eq!(app.graphql_as(Some(&secret), CONTACTS, json!({})).await.0, 401, "a revoked key still works");
        assert_eq!(app.graphql_as(Some("rpk_made-up"), CONTACTS, json!({})).await.0, 401);

        let (expiring, _) = create_key(&app, "expiring", &["profiles:read"]).await;
        assert_eq!(app.graphql_as(Some(&expiring), CONTACTS, json!({})).await.0, 200);
        let past = if app.backend == rapport_e2e::Backend::Postgres { "now() - interval '1 minute'" } else { "'2000-01-01 00:00:00+00:00'" };
        app.services.database().connection()
            .execute_unprepared(&format!("UPDATE api_key SET expires_at = {past} WHERE name = 'expiring'"))
            .await.unwrap();
        assert_eq!(app.graphql_as(Some(&expiring), CONTACTS, json!({})).await.0, 401, "an expired key still works");

        for (scopes, field) in [(json!([]), "input.scopes"), (json!(["root"]), "input.scopes"), (json!(["keys:manage"]), "input.scopes")] {
            let error = app.error(CREATE_KEY, json!({ "input": { "name": "bad", "scopes": scopes } })).await;
            assert_error(&error, "BAD_USER_INPUT", Some(field));
        }
        let error = app.error(CREATE_KEY, json!({ "input": { "name": "old", "scopes": ["profiles:read"], "expiresAt": "2001-01-01T00:00:00Z" } })).await;
        assert_error(&error, "BAD_USER_INPUT", Some("expiresAt"));
    }

    async fn anonymous_callers_reach_nothing_but_sign_in(app) {
        let before = app.snapshot().await;
        for (query, variables) in [
            (CONTACTS, json!({})),
            (ME, json!({})),
            (UPSERT, json!({ "input": { "email": "ada@example.com" } })),
            ("mutation($e: String!, $p: String!) { login(email: $e, password: $p) { accessToken } logout }", json!({ "e": "x@example.com", "p": PASSWORD })),
            ("mutation { ...F } fragment F on MutationRoot { logout }", json!({})),
            ("{ __schema { types { name } } }", json!({})),
        ] {
            let (status, body) = app.graphql_as(None, query, variables).await;
            assert_eq!(status, 401, "{query}: {body:#}");
            assert_error(&body["errors"][0], "UNAUTHENTICATED", None);
        }
        let get = app.client.get(app.url("/graphql?query=%7Bcontacts%7Bnodes%7Bid%7D%7D%7D")).send().await.unwrap();
        assert_eq!(get.status(), 401);
        assert_eq!(get.headers()["www-authenticate"], "Bearer");
        let big = app.client.post(app.url("/graphql")).json(&json!({ "query": LOGIN, "extensions": { "pad": "x".repeat(10_000) } })).send().await.unwrap();
        assert_eq!(big.status(), 401, "an anonymous body larger than a sign-in is refused");
        assert_eq!(app.snapshot().await, before);
    }

    async fn contact_tokens_reach_only_their_own_preferences_across_the_whole_schema(app) {
        app.data("mutation { defineTopic(input: { key: \"news\", name: \"News\" }) { key } }", json!({})).await;
        let a = app.upsert_contact(json!({ "email": "a@example.com", "firstName": "Ada" })).await["id"].as_str().unwrap().to_owned();
        let b = app.upsert_contact(json!({ "email": "b@example.com", "firstName": "Bea" })).await["id"].as_str().unwrap().to_owned();
        let issued = app.data(ISSUE_CONTACT_TOKEN, json!({ "id": a, "purpose": "PREFERENCES" })).await;
        let token_a = issued["issueContactToken"]["token"].as_str().unwrap().to_owned();
        let (_, key_id) = create_key(&app, "shop", &["profiles:read"]).await;
        let user_id = create_user(&app, "ops@example.com", "ADMIN").await;
        let created = app.data("mutation { createEmail(input: { name: \"x\", type: MARKETING, subject: \"x\", html: \"x\", from: { address: \"a@example.com\" } }) { email { id } } }", json!({})).await;
        let email_id = created["createEmail"]["email"]["id"].as_str().unwrap().to_owned();
        let before = app.snapshot().await;

        // Every root field, each aimed at contact B where it names a contact.
        let attempts: Vec<(&str, String, Value)> = vec![
            ("contact", "query($id: ID!) { contact(by: { id: $id }) { id } }".into(), json!({ "id": b })),
            ("contact", "{ contact(by: { email: \"a@example.com\" }) { id } }".into(), json!({})),
            ("contacts", CONTACTS.into(), json!({})),
            ("fields", "{ fields { key } }".into(), json!({})),
            ("consentPurposes", "{ consentPurposes { key } }".into(), json!({})),
            ("topics", "{ topics { key } }".into(), json!({})),
            ("auditLog", "{ auditLog { nodes { action } } }".into(), json!({})),
            ("me", ME.into(), json!({})),
            ("users", "{ users { id } }".into(), json!({})),
            ("apiKeys", "{ apiKeys { id } }".into(), json!({})),
            ("upsertContact", UPSERT.into(), json!({ "input": { "email": "b@example.com", "firstName": "Mallory" } })),
            ("updateContact", "mutation($id: ID!) { updateContact(input: { id: $id, expectedVersion: 1, firstName: \"Mallory\" }) { id } }".into(), json!({ "id": b })),
            ("deleteContact", "mutation($id: ID!) { deleteContact(id: $id) { deletedContactId } }".into(), json!({ "id": b })),
            ("defineField", "mutation { defineField(input: { key: \"x\", label: \"X\", type: STRING }) { key } }".into(), json!({})),
            ("alterField", "mutation { alterField(input: { key: \"x\", label: \"Y\" }) { key } }".into(), json!({})),
            ("deleteField", "mutation { deleteField(key: \"x\") }".into(), json!({})),
            ("setConsent", "mutation($id: ID!) { setConsent(input: { contactId: $id, purpose: \"marketing\", channel: EMAIL, status: DENIED }) { id } }".into(), json!({ "id": b })),
            ("defineConsentPurpose", "mutation { defineConsentPurpose(input: { key: \"x\", label: \"X\" }) { key } }".into(), json!({})),
            ("defineTopic", "mutation { defineTopic(input: { key: \"x\", name: \"X\" }) { key } }".into(), json!({})),
            ("alterTopic", "mutation { alterTopic(input: { key: \"news\", name: \"Y\" }) { key } }".into(), json!({})),
            ("deleteTopic", "mutation { deleteTopic(key: \"news\") }".into(), json!({})),
            ("subscribeTopic", "mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"news\") { status } }".into(), json!({ "id": b })),
            ("unsubscribeTopic", "mutation($id: ID!) { unsubscribeTopic(contactId: $id, topic: \"news\") { status } }".into(), json!({ "id": b })),
            ("trackEvents", "mutation($id: ID!) { trackEvents(events: [{ contact: { id: $id }, type: \"page.viewed\" }]) { status } }".into(), json!({ "id": b })),
            ("logout", "mutation { logout }".into(), json!({})),
            ("createUser", CREATE_USER.into(), json!({ "input": { "email": "evil@example.com", "password": PASSWORD, "role": "OWNER" } })),
            ("alterUser", "mutation($id: ID!) { alterUser(input: { id: $id, disabled: true }) { id } }".into(), json!({ "id": user_id })),
            ("createApiKey", CREATE_KEY.into(), json!({ "input": { "name": "x", "scopes": ["profiles:read"] } })),
            ("revokeApiKey", "mutation($id: ID!) { revokeApiKey(id: $id) { id } }".into(), json!({ "id": key_id })),
            ("issueContactToken", ISSUE_CONTACT_TOKEN.into(), json!({ "id": b, "purpose": "PREFERENCES" })),
            ("revokeContactTokens", "mutation($id: ID!) { revokeContactTokens(contactId: $id) }".into(), json!({ "id": b })),
            ("contactExport", "query($id: ID!) { contactExport(id: $id) }".into(), json!({ "id": b })),
            ("contactExport", "query($id: ID!) { contactExport(id: $id) }".into(), json!({ "id": a })),
            ("eraseContact", "mutation($id: ID!) { eraseContact(id: $id) { id } }".into(), json!({ "id": b })),
            ("emails", "{ emails { nodes { id } } }".into(), json!({})),
            ("email", "query($id: ID!) { email(id: $id) { id } }".into(), json!({ "id": email_id })),
            ("previewEmail", "query($e: ID!, $c: ID!) { previewEmail(emailId: $e, contactId: $c) { html } }".into(), json!({ "e": email_id, "c": a })),
            ("createEmail", "mutation { createEmail(input: { name: \"x\", type: MARKETING, subject: \"x\", html: \"x\", from: { address: \"a@example.com\" } }) { email { id } } }".into(), json!({})),
            ("updateEmail", "mutation($id: ID!) { updateEmail(input: { id: $id, expectedVersion: 1, html: \"y\" }) { email { id } } }".into(), json!({ "id": email_id })),
            ("sendEmail", "mutation($e: ID!, $c: ID!) { sendEmail(input: { emailId: $e, contact: { id: $c } }) { created } }".into(), json!({ "e": email_id, "c": b })),
            ("sendEmail", "mutation($e: ID!, $c: ID!) { sendEmail(input: { emailId: $e, contact: { id: $c } }) { created } }".into(), json!({ "e": email_id, "c": a })),
            ("sendTestEmail", "mutation($e: ID!) { sendTestEmail(input: { emailId: $e, to: [\"evil@example.com\"] }) { id } }".into(), json!({ "e": email_id })),
            ("deliveries", "{ deliveries { nodes { id } } }".into(), json!({})),
            ("emailSend", "query($id: ID!) { emailSend(id: $id) { id } }".into(), json!({ "id": email_id })),
            ("suppressions", "{ suppressions(address: \"a@example.com\") { reason } }".into(), json!({})),
            ("suppressAddress", "mutation { suppressAddress(address: \"b@example.com\", reason: MANUAL) }".into(), json!({})),
            ("unsuppressAddress", "mutation { unsuppressAddress(address: \"b@example.com\") }".into(), json!({})),
            ("preferenceCenter", "{ preferenceCenter { companyName } }".into(), json!({})),
            ("signupForms", "{ signupForms { key } }".into(), json!({})),
            ("optInRequests", "query($id: ID!) { optInRequests(contactId: $id) { id } }".into(), json!({ "id": b })),
            ("createSignupForm", "mutation { createSignupForm(input: { key: \"x\", name: \"X\", topics: [], wording: \"x\" }) { key } }".into(), json!({})),
            ("requestOptInConfirmation", "mutation($id: ID!) { requestOptInConfirmation(contactId: $id, form: \"x\") }".into(), json!({ "id": b })),
            ("updatePreferenceCenter", "mutation { updatePreferenceCenter(input: { companyName: \"Evil\" }) { companyName } }".into(), json!({})),
            ("webhookEndpoints", "{ webhookEndpoints { id } }".into(), json!({})),
            ("webhookDeliveries", "query($id: ID!) { webhookDeliveries(endpointId: $id) { id } }".into(), json!({ "id": key_id })),
            ("createWebhookEndpoint", "mutation { createWebhookEndpoint(input: { url: \"https://evil.example.com/\" }) { secret } }".into(), json!({})),
            ("updateWebhookEndpoint", "mutation($id: ID!) { updateWebhookEndpoint(input: { id: $id, enabled: false }) { id } }".into(), json!({ "id": key_id })),
            ("deleteWebhookEndpoint", "mutation($id: ID!) { deleteWebhookEndpoint(id: $id) }".into(), json!({ "id": key_id })),
            ("webhookSources", "{ webhookSources { key } }".into(), json!({})),
            ("createWebhookSource", "mutation { createWebhookSource(key: \"evil\", kind: EVENTS) { secret } }".into(), json!({})),
            ("deleteWebhookSource", "mutation { deleteWebhookSource(key: \"evil\") }".into(), json!({})),
            ("replayWebhookDelivery", "mutation($id: ID!) { replayWebhookDelivery(id: $id) }".into(), json!({ "id": key_id })),
            ("imports", "{ imports { nodes { id } } }".into(), json!({})),
            ("import", "query($id: ID!) { import(id: $id) { id } }".into(), json!({ "id": key_id })),
            ("statistics", "{ statistics { contacts } }".into(), json!({})),
        ];
        for (field, query, variables) in &attempts {
            let (_, body) = app.graphql_as(Some(&token_a), query, variables.clone()).await;
            assert_error(&body["errors"][0], "FORBIDDEN", None);
            assert!(body["data"].is_null() || body["data"][field].is_null(), "{field}: {body:#}");
        }
        // importContacts takes a file, so it goes as a GraphQL multipart request.
        let operations = json!({
            "query": "mutation($file: Upload!) { importContacts(file: $file) { id } }",
            "variables": { "file": null },
        });
        let form = reqwest::multipart::Form::new()
            .text("operations", operations.to_string())
            .text("map", json!({ "0": ["variables.file"] }).to_string())
            .part("0", reqwest::multipart::Part::bytes(b"email\nevil@example.com\n".to_vec()).file_name("evil.csv"));
        let response = app.client.post(app.url("/graphql")).bearer_auth(&token_a).multipart(form).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_error(&body["errors"][0], "FORBIDDEN", None);
        assert_eq!(app.snapshot().await, before, "a contact token changed someone's data");

        // The list above must name every root field but the public sign-in ones.
        let schema = app.data("{ __schema { queryType { fields { name } } mutationType { fields { name } } } }", json!({})).await;
        let tried: std::collections::BTreeSet<&str> = attempts.iter().map(|(field, _, _)| *field).collect();
        for root in ["queryType", "mutationType"] {
            for field in schema["__schema"][root]["fields"].as_array().unwrap() {
                let name = field["name"].as_str().unwrap();
                // savePreferences names no contact: it acts on the token's own (tried below).
                assert!(tried.contains(name) || ["login", "refreshToken", "savePreferences", "importContacts"].contains(&name), "{name} is not tried with a contact token");
            }
        }

        // Their own preferences and consents, and nothing else about them.
        let own = "query($id: ID!) { contact(by: { id: $id }) { id email consents { purpose status } topics { topic { key } status } } }";
        let (_, body) = app.graphql_as(Some(&token_a), own, json!({ "id": a })).await;
        assert_eq!(body["data"]["contact"]["email"], "a@example.com", "{body:#}");
        let (_, body) = app.graphql_as(Some(&token_a), "query($id: ID!) { contact(by: { id: $id }) { firstName } }", json!({ "id": a })).await;
        assert_error(&body["errors"][0], "FORBIDDEN", None);
        let (_, body) = app.graphql_as(Some(&token_a), "mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"news\") { status } }", json!({ "id": a })).await;
        assert_eq!(body["data"]["subscribeTopic"]["status"], "SUBSCRIBED", "{body:#}");
        let (_, body) = app.graphql_as(Some(&token_a), "mutation($id: ID!) { setConsent(input: { contactId: $id, purpose: \"marketing\", channel: EMAIL, status: GRANTED }) { status } }", json!({ "id": a })).await;
        assert_eq!(body["data"]["setConsent"]["status"], "GRANTED", "{body:#}");
        let save = "mutation { savePreferences(input: { subscribed: [], frequencies: [], granted: [], fields: [{ key: \"first_name\", value: \"Ada\" }] }) }";
        let (_, body) = app.graphql_as(Some(&token_a), save, json!({})).await;
        assert_eq!(body["data"]["savePreferences"], true, "{body:#}");
        let b_now = app.data("query($id: ID!) { contact(by: { id: $id }) { firstName topics { status } consents { status } } }", json!({ "id": b })).await;
        assert_eq!(b_now["contact"]["firstName"], "Bea", "savePreferences acts on the token's own contact only");
        let log = app.data("query($id: String!) { auditLog(filter: { targetId: $id }) { nodes { action actor { kind id } } } }", json!({ "id": a })).await;
        assert_eq!(log["auditLog"]["nodes"][0]["actor"], json!({ "kind": "contact_token", "id": a }), "{log:#}");

        // A token for another purpose opens nothing here, and a token for A is useless once forged for B.
        let unsubscribe = app.data(ISSUE_CONTACT_TOKEN, json!({ "id": a, "purpose": "UNSUBSCRIBE" })).await;
        let (_, body) = app.graphql_as(Some(unsubscribe["issueContactToken"]["token"].as_str().unwrap()), own, json!({ "id": a })).await;
        assert_error(&body["errors"][0], "FORBIDDEN", None);
        let now = Utc::now();
        let foreign = TokenSigner::new(&MasterKeys::new(MasterKey::generate(), None))
            .sign(Audience::Contact, &b, json!({ "purpose": "preferences" }), now, now + Duration::minutes(5));
        assert_eq!(app.graphql_as(Some(&foreign), own, json!({ "id": b })).await.0, 401);
    }

    async fn admin_create_reads_the_password_from_stdin(app) {
        let run = |email: &str, password: &str| {
            let mut child = Command::new(rapport_binary())
                .args(["admin", "create", "--email", email, "--role", "admin"])
                .env_clear()
                .env("RAPPORT_DATABASE_URL", &app.database_url)
                .env("RAPPORT_MASTER_KEY", app.settings.master_key.as_ref().unwrap().expose_secret())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("rapport runs");
            writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
            child.wait_with_output().unwrap()
        };
        let created = run("cli@example.com", PASSWORD);
        assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
        assert!(String::from_utf8_lossy(&created.stdout).contains("cli@example.com"));
        let signed_in = login(&app, "cli@example.com", PASSWORD).await;
        assert_eq!(signed_in["user"]["role"], "ADMIN");
        for (email, password, reason) in [("cli@example.com", PASSWORD, "exists"), ("short@example.com", "short", "12 characters")] {
            let failed = run(email, password);
            assert!(!failed.status.success());
            let stderr = String::from_utf8_lossy(&failed.stderr);
            let last = stderr.trim().lines().last().unwrap_or_default();
            assert!(last.starts_with("rapport: ") && last.contains(reason), "{stderr}");
            assert!(!stderr.contains(password) || password == "short", "the password was printed");
        }
        let log = app.data("{ auditLog(filter: { actorKind: \"system\", actorId: \"cli\" }) { nodes { action } } }", json!({})).await;
        assert_eq!(log["auditLog"]["nodes"][0]["action"], "user.created");
    }
    async fn concurrent_wrong_passwords_still_lock_the_account(app) {
        create_user(&app, "victim@example.com", "OWNER").await;
        let mut attempts = tokio::task::JoinSet::new();
        for n in 0..9u8 {
            let (client, url) = (app.client.clone(), app.url("/graphql"));
            let body = json!({ "query": LOGIN, "variables": { "email": "victim@example.com", "password": format!("wrong guess number {n}") } });
            let source: IpAddr = [127, 0, 1, n].into();
            let client = if n == 0 { client } else { reqwest::Client::builder().local_address(source).build().unwrap() };
            attempts.spawn(async move { client.post(url).json(&body).send().await.unwrap().json::<Value>().await.unwrap() });
        }
        for body in attempts.join_all().await {
            assert!(["UNAUTHENTICATED", "RATE_LIMITED"].contains(&code_of(&body)), "{body:#}");
        }
        let tenth = login_from(&app, [127, 0, 2, 1].into(), "victim@example.com", PASSWORD).await;
        assert_eq!(code_of(&tenth), "RATE_LIMITED", "signed in after 9 wrong passwords: {tenth:#}");
    }

    async fn a_locked_account_answers_like_an_unknown_address(app) {
        create_user(&app, "owner@example.com", "OWNER").await;
        let (first, second): (IpAddr, IpAddr) = ([127, 0, 0, 1].into(), [127, 0, 0, 2].into());
        let (mut known, mut unknown) = (Vec::new(), Vec::new());
        for _ in 0..7 {
            known.push(code_of(&login_from(&app, first, "owner@example.com", "not the password!").await).to_owned());
            unknown.push(code_of(&login_from(&app, second, "nobody@example.com", "not the password!").await).to_owned());
        }
        assert_eq!(known, unknown);
        assert_eq!(known.last().map(String::as_str), Some("RATE_LIMITED"), "{known:?}");
    }

    async fn a_stolen_refresh_token_cannot_outrun_reuse_detection(app) {
        let signed_in = signed_in(&app, "ops@example.com", "ADMIN").await;
        let stolen = signed_in["refreshToken"].clone();
        let t2 = app.graphql_as(None, REFRESH, json!({ "token": stolen })).await.1["data"]["refreshToken"]["refreshToken"].clone();
        let t3 = app.graphql_as(None, REFRESH, json!({ "token": t2 })).await.1["data"]["refreshToken"]["refreshToken"].clone();
        assert!(t3.is_string());
        let (_, victim) = app.graphql_as(None, REFRESH, json!({ "token": stolen })).await;
        assert_error(&victim["errors"][0], "UNAUTHENTICATED", None);
        let (_, thief) = app.graphql_as(None, REFRESH, json!({ "token": t3 })).await;
        assert_error(&thief["errors"][0], "UNAUTHENTICATED", None);
        let log = app.data("{ auditLog(filter: { action: \"session.reuse_detected\" }) { nodes { targetKind } } }", json!({})).await;
        assert_eq!(log["auditLog"]["nodes"].as_array().unwrap().len(), 1, "{log:#}");
    }

    async fn a_refresh_keeps_the_end_of_the_session(app) {
        let signed_in = signed_in(&app, "ops@example.com", "ADMIN").await;
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (_, refreshed) = app.graphql_as(None, "mutation($token: String!) { refreshToken(refreshToken: $token) { sessionExpiresAt } }", json!({ "token": signed_in["refreshToken"] })).await;
        assert_eq!(refreshed["data"]["refreshToken"]["sessionExpiresAt"], signed_in["sessionExpiresAt"]);
    }

    async fn a_write_only_key_cannot_mint_contact_tokens_to_read_contacts(app) {
        let a = app.upsert_contact(json!({ "email": "a@example.com" })).await["id"].as_str().unwrap().to_owned();
        let (key, _) = create_key(&app, "signup form", &["profiles:write"]).await;
        let (_, minted) = app.graphql_as(Some(&key), ISSUE_CONTACT_TOKEN, json!({ "id": a, "purpose": "PREFERENCES" })).await;
        assert_error(&minted["errors"][0], "FORBIDDEN", None);
    }

    async fn a_contact_token_cannot_forge_consent_evidence(app) {
        let a = app.upsert_contact(json!({ "email": "a@example.com" })).await["id"].as_str().unwrap().to_owned();
        let issued = app.data(ISSUE_CONTACT_TOKEN, json!({ "id": a, "purpose": "PREFERENCES" })).await;
        let token = issued["issueContactToken"]["token"].as_str().unwrap().to_owned();
        let forged = "mutation($id: ID!) { setConsent(input: { contactId: $id, purpose: \"marketing\", channel: EMAIL, status: GRANTED,
            legalBasis: LEGITIMATE_INTERESTS, source: ADMIN, capturedAt: \"2020-01-01T00:00:00Z\",
            proof: { ip: \"10.1.2.3\", userAgent: \"Rapport admin console\", wordingId: \"footer\", wordingVersion: \"3\" } }) { status } }";
        let response = app.client.post(app.url("/graphql")).bearer_auth(&token).header("user-agent", "Mozilla/5.0 (test)")
            .json(&json!({ "query": forged, "variables": { "id": a } })).send().await.unwrap();
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["data"]["setConsent"]["status"], "GRANTED", "{body:#}");
        let stored = app.data("query($id: ID!) { contact(by: { id: $id }) { consents { source legalBasis capturedAt proof { ip userAgent wordingId wordingVersion } } } }", json!({ "id": a })).await;
        let consent = &stored["contact"]["consents"][0];
        assert_eq!(consent["source"], "PREFERENCE_CENTER");
        assert_eq!(consent["legalBasis"], "CONSENT");
        assert_ne!(consent["capturedAt"], "2020-01-01T00:00:00Z");
        assert_eq!(consent["proof"], json!({ "ip": "127.0.0.1", "userAgent": "Mozilla/5.0 (test)", "wordingId": "footer", "wordingVersion": "3" }));
    }

    async fn an_admin_email_is_redacted_in_the_audit_log(app) {
        create_user(&app, "jane.doe@example.com", "ANALYST").await;
        let log = app.data("{ auditLog(filter: { action: \"user.created\" }) { nodes { changes } } }", json!({})).await;
        assert!(!log.to_string().contains("jane.doe@example.com"), "{log:#}");
    }

    async fn two_concurrent_demotions_never_leave_no_owner(app) {
        let alter = "mutation($input: AlterUserInput!) { alterUser(input: $input) { role } }";
        let mut owners = vec![create_user(&app, "owner0@example.com", "OWNER").await, create_user(&app, "owner1@example.com", "OWNER").await];
        for trial in 0..10 {
            let mut demotions = tokio::task::JoinSet::new();
            for id in owners.clone() {
                let (client, url) = (app.client.clone(), app.url("/graphql"));
                let body = json!({ "query": alter, "variables": { "input": { "id": id, "role": "ADMIN" } } });
                demotions.spawn(async move {
                    let response = client.post(url).bearer_auth(rapport_e2e::ADMIN_TOKEN).json(&body).send().await.unwrap();
                    (id, response.json::<Value>().await.unwrap())
                });
            }
            let outcomes = demotions.join_all().await;
            let users = app.data("{ users { role disabledAt } }", json!({})).await;
            let active_owners = users["users"].as_array().unwrap().iter().filter(|u| u["role"] == "OWNER" && u["disabledAt"].is_null()).count();
            assert!(active_owners >= 1, "trial {trial}: no active owner left: {outcomes:?}");
            owners = outcomes.into_iter().filter(|(_, body)| body.get("errors").is_some()).map(|(id, _)| id).collect();
            owners.push(create_user(&app, &format!("owner{}@example.com", trial + 2), "OWNER").await);
        }
    }
}
