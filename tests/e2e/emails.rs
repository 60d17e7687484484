//! Emails over the API: authoring them as immutable versions with lost-update detection and an
//! audit trail, the template check on save (errors with line and column, warnings for unknown
//! fields), previews personalised from the whole profile, the sandbox's limits, and who may do
//! what.

use rapport_e2e::{TestApp, assert_error, assert_rejected, on_both_databases};
use serde_json::{Value, json};

const VERSION_FIELDS: &str = "id version type subject preheader html text from { name address } replyTo { name address } tracking warnings createdAt";

fn create_mutation() -> String {
    format!(
        "mutation($input: CreateEmailInput!) {{
           createEmail(input: $input) {{ email {{ id name type currentVersion {{ version }} }} version {{ {VERSION_FIELDS} }} }}
         }}"
    )
}

fn update_mutation() -> String {
    format!(
        "mutation($input: UpdateEmailInput!) {{
           updateEmail(input: $input) {{ email {{ id name type currentVersion {{ version }} }} version {{ {VERSION_FIELDS} }} }}
         }}"
    )
}

const PREVIEW: &str = "query($emailId: ID!, $contactId: ID!, $version: Int, $event: JSON) {
  previewEmail(emailId: $emailId, contactId: $contactId, version: $version, event: $event) {
    version subject preheader html text textGenerated
  }
}";

fn email_input(html: &str) -> Value {
    json!({
        "name": "Welcome",
        "type": "MARKETING",
        "subject": "Welcome, {{ contact.first_name | default(\"friend\") }}",
        "html": html,
        "from": { "name": "Rapport", "address": "news@example.com" },
    })
}

/// Creates an email and returns the payload (`email` and the saved `version`).
async fn create(app: &TestApp, input: Value) -> Value {
    app.data(&create_mutation(), json!({ "input": input })).await["createEmail"].clone()
}

async fn update(app: &TestApp, input: Value) -> Value {
    app.data(&update_mutation(), json!({ "input": input })).await["updateEmail"].clone()
}

/// Creates an email with this HTML and returns its id.
async fn email_with(app: &TestApp, html: &str) -> String {
    create(app, email_input(html)).await["email"]["id"].as_str().expect("email id").to_owned()
}

async fn preview(app: &TestApp, email_id: &str, contact_id: &str, event: Option<Value>) -> Value {
    let variables = json!({ "emailId": email_id, "contactId": contact_id, "event": event });
    app.data(PREVIEW, variables).await["previewEmail"].clone()
}

async fn preview_html(app: &TestApp, html: &str, contact_id: &str, event: Option<Value>) -> String {
    let email_id = email_with(app, html).await;
    preview(app, &email_id, contact_id, event).await["html"].as_str().expect("html").to_owned()
}

async fn contact(app: &TestApp, input: Value) -> String {
    app.upsert_contact(input).await["id"].as_str().expect("contact id").to_owned()
}

async fn define_field(app: &TestApp, key: &str, field_type: &str) {
    let define = "mutation($input: DefineFieldInput!) { defineField(input: $input) { key } }";
    app.data(define, json!({ "input": { "key": key, "label": key, "type": field_type } })).await;
}

async fn audit_actions(app: &TestApp, email_id: &str) -> Vec<(String, Value)> {
    let query = "query($id: String!) { auditLog(filter: { targetKind: \"email\", targetId: $id }) { nodes { action changes } } }";
    let log = app.data(query, json!({ "id": email_id })).await;
    log["auditLog"]["nodes"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|entry| (entry["action"].as_str().expect("action").to_owned(), entry["changes"].clone()))
        .collect()
}

on_both_databases! {
    async fn an_email_is_created_versioned_and_listed_with_its_history_and_audit_entries(app) {
        let created = create(&app, json!({
            "name": " Welcome ",
            "type": "MARKETING",
            "subject": "Hello {{ contact.first_name | default(\"there\") }}",
            "preheader": "Our news",
            "html": "<p>Hello</p>",
            "from": { "name": "Rapport", "address": "news@Example.com" },
            "replyTo": { "address": "help@example.com" },
        }))
        .await;
        let id = created["email"]["id"].as_str().unwrap().to_owned();
        assert_eq!(created["email"]["name"], "Welcome");
        assert_eq!(created["email"]["currentVersion"]["version"], 1);
        let first = &created["version"];
        assert_eq!(first["version"], 1);
        assert_eq!(first["type"], "MARKETING");
        assert_eq!(first["tracking"], true, "tracking is on by default");
        assert_eq!(first["text"], Value::Null);
        assert_eq!(first["from"], json!({ "name": "Rapport", "address": "news@example.com" }));
        assert_eq!(first["replyTo"], json!({ "name": null, "address": "help@example.com" }));
        assert_eq!(first["warnings"], json!([]));

        let second = update(&app, json!({ "id": id, "expectedVersion": 1, "subject": "Hi {{ contact.first_name | default(\"there\") }}", "preheader": null, "tracking": false })).await;
        assert_eq!(second["email"]["currentVersion"]["version"], 2);
        assert_eq!(second["version"]["subject"], "Hi {{ contact.first_name | default(\"there\") }}");
        assert_eq!(second["version"]["preheader"], Value::Null, "null clears the preheader");
        assert_eq!(second["version"]["html"], "<p>Hello</p>", "parts left out are kept");
        assert_eq!(second["version"]["tracking"], false);
        assert_ne!(second["version"]["id"], first["id"]);

        let query = format!("query($id: ID!) {{ email(id: $id) {{ name currentVersion {{ version subject }} versions {{ nodes {{ {VERSION_FIELDS} }} }} }} }}");
        let email = app.data(&query, json!({ "id": id })).await["email"].clone();
        assert_eq!(email["currentVersion"]["version"], 2);
        assert_eq!(email["versions"]["nodes"], json!([second["version"], first]), "versions are kept as saved, newest first");

        // A rename alone keeps the version; an edit that changes nothing writes nothing.
        let renamed = update(&app, json!({ "id": id, "expectedVersion": 2, "name": "Hello series" })).await;
        assert_eq!(renamed["email"]["name"], "Hello series");
        assert_eq!(renamed["version"]["version"], 2);
        let unchanged = update(&app, json!({ "id": id, "expectedVersion": 2, "html": "<p>Hello</p>" })).await;
        assert_eq!(unchanged["version"], renamed["version"]);

        let second_email = email_with(&app, "<p>Second</p>").await;
        let listed = app.data("{ emails(first: 10) { nodes { id name currentVersion { version } } } }", json!({})).await;
        assert_eq!(
            listed["emails"]["nodes"],
            json!([
                { "id": id, "name": "Hello series", "currentVersion": { "version": 2 } },
                { "id": second_email, "name": "Welcome", "currentVersion": { "version": 1 } },
            ])
        );
        let first_page = app.data("{ emails(first: 1) { pageInfo { hasNextPage endCursor } nodes { id } } }", json!({})).await;
        assert_eq!(first_page["emails"]["pageInfo"]["hasNextPage"], true);
        let next = app
            .data("query($after: String) { emails(first: 1, after: $after) { nodes { id } } }", json!({ "after": first_page["emails"]["pageInfo"]["endCursor"] }))
            .await;
        assert_eq!(next["emails"]["nodes"], json!([{ "id": second_email }]));

        let actions = audit_actions(&app, &id).await;
        let names: Vec<&str> = actions.iter().map(|(action, _)| action.as_str()).collect();
        assert_eq!(names, ["email.renamed", "email.versioned", "email.created"], "newest first");
        let versioned = &actions[1].1;
        assert_eq!(versioned["version"], json!({ "before": 1, "after": 2 }));
        assert_eq!(versioned["tracking"], json!({ "before": true, "after": false }));
        assert!(versioned.get("html").is_none(), "an unchanged body is not listed: {versioned:#}");
        let html_digest = &actions[2].1["html"]["after"];
        assert_eq!(html_digest.as_str().map(str::len), Some(64), "bodies are recorded by their SHA-256: {html_digest}");
    }

    async fn a_stale_expected_version_is_a_conflict_and_nothing_is_written(app) {
        let id = email_with(&app, "<p>Hello</p>").await;
        update(&app, json!({ "id": id, "expectedVersion": 1, "html": "<p>Hello again</p>" })).await;
        let error = assert_rejected(
            &app,
            &update_mutation(),
            json!({ "input": { "id": id, "expectedVersion": 1, "html": "<p>Lost update</p>" } }),
            "CONFLICT",
            Some("expectedVersion"),
        )
        .await;
        assert!(error["message"].as_str().unwrap().contains("version 2"), "{error:#}");
        assert_rejected(
            &app,
            &update_mutation(),
            json!({ "input": { "id": "0190a0a0-0000-7000-8000-000000000000", "expectedVersion": 1, "html": "<p>x</p>" } }),
            "NOT_FOUND",
            None,
        )
        .await;
    }

    async fn a_syntax_error_names_the_part_with_line_and_column_and_nothing_is_stored(app) {
        let error = assert_rejected(
            &app,
            &create_mutation(),
            json!({ "input": email_input("<p>\n  Hello {{ contact.first_name </p>") }),
            "BAD_USER_INPUT",
            Some("input.html"),
        )
        .await;
        let message = error["message"].as_str().unwrap();
        assert!(message.starts_with("input.html: syntax error"), "{message}");
        assert!(message.contains("(line 2, column 32)"), "{message}");

        let mut bad_subject = email_input("<p>Hi</p>");
        bad_subject["subject"] = json!("Hi {% if contact.first_name %}");
        assert_rejected(&app, &create_mutation(), json!({ "input": bad_subject }), "BAD_USER_INPUT", Some("input.subject")).await;
        let unknown_filter = email_input("<p>{{ contact.first_name | shout }}</p>");
        let error = assert_rejected(&app, &create_mutation(), json!({ "input": unknown_filter }), "BAD_USER_INPUT", Some("input.html")).await;
        assert!(error["message"].as_str().unwrap().contains("unknown filter"), "{error:#}");

        let id = email_with(&app, "<p>Hi</p>").await;
        assert_rejected(
            &app,
            &update_mutation(),
            json!({ "input": { "id": id, "expectedVersion": 1, "text": "Hi {{ contact.first_name" } }),
            "BAD_USER_INPUT",
            Some("input.text"),
        )
        .await;
        for (field, input) in [
            ("input.html", json!({ "html": "  " })),
            ("input.subject", json!({ "subject": "" })),
            ("input.from.address", json!({ "from": { "address": "not an address" } })),
            ("input.replyTo.name", json!({ "replyTo": { "name": " ", "address": "a@example.com" } })),
        ] {
            let mut input = input;
            input["id"] = json!(id);
            input["expectedVersion"] = json!(1);
            assert_rejected(&app, &update_mutation(), json!({ "input": input }), "BAD_USER_INPUT", Some(field)).await;
        }
    }

    async fn references_to_unknown_fields_are_saved_with_warnings(app) {
        define_field(&app, "tier", "STRING").await;
        app.data("mutation { defineTopic(input: { key: \"digest\", name: \"Digest\" }) { key } }", json!({})).await;
        let html = "<p>{{ contact.frist_name }} {{ contact.attributes.tier }} {{ contact.attributes.nope }}</p>\
            <p>{{ contact.topics.digest.frequency }} {{ contact.topics.gossip.status }}</p>\
            <p>{{ contact.consents.marketing.email }} {{ contact.consents.tracking.email }}</p>";
        let created = create(&app, email_input(html)).await;
        assert_eq!(
            created["version"]["warnings"],
            json!([
                "html: contact.attributes.nope: no custom field nope is defined",
                "html: contact.consents.tracking: no consent purpose tracking is defined",
                "html: contact.frist_name is not a contact field (id, external_id, email, phone, first_name, last_name, locale, time_zone, country, attributes, topics, consents)",
                "html: contact.topics.gossip: no topic gossip is defined",
            ])
        );
        let id = created["email"]["id"].as_str().unwrap();
        let fixed = update(&app, json!({ "id": id, "expectedVersion": 1, "html": "<p>{{ contact.first_name }}</p>" })).await;
        assert_eq!(fixed["version"]["warnings"], json!([]));
        let query = "query($id: ID!) { email(id: $id) { versions { nodes { version warnings } } } }";
        let versions = app.data(query, json!({ "id": id })).await["email"]["versions"]["nodes"].clone();
        assert_eq!(versions[1]["warnings"].as_array().unwrap().len(), 4, "warnings stay with their version");
    }

    async fn a_preview_is_personalised_from_profile_custom_fields_topics_consents_and_the_event(app) {
        define_field(&app, "tier", "STRING").await;
        define_field(&app, "points", "NUMBER").await;
        app.data("mutation { defineTopic(input: { key: \"digest\", name: \"The digest\" }) { key } }", json!({})).await;
        let id = contact(&app, json!({
            "email": "ada@example.com", "firstName": "Ada", "lastName": "Lovelace", "locale": "en-GB",
            "timeZone": "Europe/London", "country": "gb", "phone": "+44 20 7946 0000",
            "attributes": { "tier": "gold", "points": 120 },
            "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }],
        }))
        .await;
        app.data("mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"digest\", frequency: WEEKLY) { status } }", json!({ "id": id })).await;
        let email_id = email_with(
            &app,
            "<p>{{ contact.first_name }} {{ contact.last_name }} &lt;{{ contact.email }}&gt; {{ contact.phone }} {{ contact.locale }} {{ contact.time_zone }} {{ contact.country }}</p>\
             <p>{{ contact.attributes.tier }}: {{ contact.attributes.points }} points</p>\
             <p>{{ contact.topics.digest.name }} {{ contact.topics.digest.frequency }} {{ contact.topics.digest.status }}</p>\
             <p>marketing by email: {{ contact.consents.marketing.email }}; by sms: {{ contact.consents.marketing.sms | default(\"not asked\") }}</p>\
             <p>Order {{ event.order_id | default(\"(none)\") }} of {{ event.total | default(0) }}</p>",
        )
        .await;
        let rendered = preview(&app, &email_id, &id, Some(json!({ "order_id": "A-17", "total": 42.5 }))).await;
        assert_eq!(rendered["version"], 1);
        assert_eq!(rendered["subject"], "Welcome, Ada");
        assert_eq!(
            rendered["html"],
            "<p>Ada Lovelace &lt;ada@example.com&gt; +442079460000 en-GB Europe&#x2f;London GB</p>\
             <p>gold: 120 points</p>\
             <p>The digest weekly subscribed</p>\
             <p>marketing by email: granted; by sms: not asked</p>\
             <p>Order A-17 of 42.5</p>"
        );
        let without_event = preview(&app, &email_id, &id, None).await;
        assert!(without_event["html"].as_str().unwrap().ends_with("<p>Order (none) of 0</p>"), "{without_event:#}");

        // An older version previews as it was.
        update(&app, json!({ "id": email_id, "expectedVersion": 1, "html": "<p>v2 for {{ contact.first_name }}</p>" })).await;
        let old = app.data(PREVIEW, json!({ "emailId": email_id, "contactId": id, "version": 1 })).await["previewEmail"].clone();
        assert_eq!(old["version"], 1);
        assert!(old["html"].as_str().unwrap().starts_with("<p>Ada Lovelace"), "{old:#}");
        assert_eq!(preview(&app, &email_id, &id, None).await["html"], "<p>v2 for Ada</p>");
        for (variables, code, field) in [
            (json!({ "emailId": email_id, "contactId": id, "version": 3 }), "NOT_FOUND", None),
            (json!({ "emailId": email_id, "contactId": "0190a0a0-0000-7000-8000-000000000000" }), "NOT_FOUND", None),
            (json!({ "emailId": "nope", "contactId": id }), "BAD_USER_INPUT", Some("emailId")),
            (json!({ "emailId": email_id, "contactId": id, "event": [1, 2] }), "BAD_USER_INPUT", Some("event")),
        ] {
            assert_error(&app.error(PREVIEW, variables).await, code, field);
        }
    }

    async fn default_covers_missing_and_empty_values_and_fallback_blocks_cover_missing_data(app) {
        let named = contact(&app, json!({ "email": "ada@example.com", "firstName": "Ada" })).await;
        let nameless = contact(&app, json!({ "email": "anon@example.com" })).await;
        let greeting = "<p>Hi {{ contact.first_name | default(\"there\") }}, {{ event.nickname | default(\"friend\") }}!</p>";
        assert_eq!(preview_html(&app, greeting, &named, Some(json!({ "nickname": "Countess" }))).await, "<p>Hi Ada, Countess!</p>");
        assert_eq!(preview_html(&app, greeting, &nameless, Some(json!({ "nickname": "" }))).await, "<p>Hi there, friend!</p>");
        assert_eq!(preview_html(&app, greeting, &nameless, Some(json!({ "nickname": null }))).await, "<p>Hi there, friend!</p>");
        assert_eq!(preview_html(&app, greeting, &nameless, None).await, "<p>Hi there, friend!</p>");

        let block = "{% macro generic() %}<p>Here is <b>our pick</b> for you.</p>{% endmacro %}\
            {% call fallback(generic) %}<p>{{ required(contact.first_name) }}, your order {{ required(event.order_id) }} shipped.</p>{% endcall %}";
        let email_id = email_with(&app, block).await;
        let shipped = preview(&app, &email_id, &named, Some(json!({ "order_id": "A-17" }))).await;
        assert_eq!(shipped["html"], "<p>Ada, your order A-17 shipped.</p>");
        let generic = "<p>Here is <b>our pick</b> for you.</p>";
        assert_eq!(preview(&app, &email_id, &named, None).await["html"], generic, "without an event");
        assert_eq!(preview(&app, &email_id, &nameless, Some(json!({ "order_id": "A-18" }))).await["html"], generic, "without a name");

        let plain = "<p>{% call fallback(\"Hello!\") %}Hello {{ required(contact.first_name) }}!{% endcall %}</p>";
        assert_eq!(preview_html(&app, plain, &nameless, None).await, "<p>Hello!</p>");

        // Outside a fallback block, missing required data stops the render and says what is missing.
        let strict = email_with(&app, "<p>{{ required(event.order_id, \"the order id\") }}</p>").await;
        let error = app.error(PREVIEW, json!({ "emailId": strict, "contactId": named })).await;
        assert_error(&error, "BAD_USER_INPUT", Some("html"));
        assert!(error["message"].as_str().unwrap().contains("the order id is missing"), "{error:#}");
    }

    async fn conditional_blocks_follow_the_contact_s_data(app) {
        define_field(&app, "tier", "STRING").await;
        app.data("mutation { defineTopic(input: { key: \"digest\", name: \"Digest\" }) { key } }", json!({})).await;
        let gold = contact(&app, json!({
            "email": "gold@example.com", "attributes": { "tier": "gold" },
            "consents": [{ "purpose": "marketing", "channel": "EMAIL", "status": "GRANTED" }],
        }))
        .await;
        app.data("mutation($id: ID!) { subscribeTopic(contactId: $id, topic: \"digest\") { status } }", json!({ "id": gold })).await;
        let plain = contact(&app, json!({ "email": "plain@example.com" })).await;
        let html = "{% if contact.attributes.tier == \"gold\" %}<p>Gold lounge</p>{% else %}<p>Upgrade</p>{% endif %}\
            {% if contact.topics.digest.subscribed %}<p>Digest</p>{% endif %}\
            {% if contact.consents.marketing.email == \"granted\" %}<p>Offers</p>{% endif %}";
        let email_id = email_with(&app, html).await;
        assert_eq!(preview(&app, &email_id, &gold, None).await["html"], "<p>Gold lounge</p><p>Digest</p><p>Offers</p>");
        assert_eq!(preview(&app, &email_id, &plain, None).await["html"], "<p>Upgrade</p>");
    }

    async fn markup_in_contact_data_is_escaped_in_the_html_part(app) {
        let id = contact(&app, json!({ "email": "eve@example.com", "firstName": "<script>alert(1)</script>" })).await;
        let mut input = email_input("<p>Hi {{ contact.first_name }}</p>");
        input["text"] = json!("Hi {{ contact.first_name }}");
        let email_id = create(&app, input).await["email"]["id"].as_str().unwrap().to_owned();
        let rendered = preview(&app, &email_id, &id, Some(json!({ "note": "<img src=x onerror=alert(2)>" }))).await;
        let html = rendered["html"].as_str().unwrap();
        assert_eq!(html, "<p>Hi &lt;script&gt;alert(1)&lt;&#x2f;script&gt;</p>");
        assert!(!html.contains("<script"), "{html}");
        assert_eq!(rendered["text"], "Hi <script>alert(1)</script>", "the text part is not markup");
        assert_eq!(rendered["subject"], "Welcome, <script>alert(1)</script>", "nor is the subject");
        let event_markup = preview_html(&app, "<p>{{ event.note }}</p>", &id, Some(json!({ "note": "<img src=x onerror=alert(2)>" }))).await;
        assert_eq!(event_markup, "<p>&lt;img src=x onerror=alert(2)&gt;</p>");
    }

    async fn a_text_part_is_generated_from_the_html_when_none_is_written(app) {
        let id = contact(&app, json!({ "email": "ada@example.com", "firstName": "Ada" })).await;
        let html = "<html><head><style>p { color: red }</style></head><body><h1>Hello {{ contact.first_name }}</h1>\
            <p>Read <a href=\"https://example.com/news\">the news</a>.</p></body></html>";
        let email_id = email_with(&app, html).await;
        let generated = preview(&app, &email_id, &id, None).await;
        assert_eq!(generated["textGenerated"], true);
        let text = generated["text"].as_str().unwrap();
        assert!(text.contains("Hello Ada"), "{text}");
        assert!(text.contains("https://example.com/news"), "links keep their address: {text}");
        assert!(!text.contains('<') && !text.contains("color"), "no markup or style: {text}");

        update(&app, json!({ "id": email_id, "expectedVersion": 1, "text": "Hello {{ contact.first_name }}, see https://example.com/news" })).await;
        let written = preview(&app, &email_id, &id, None).await;
        assert_eq!(written["textGenerated"], false);
        assert_eq!(written["text"], "Hello Ada, see https://example.com/news");
    }

    async fn runaway_loops_and_huge_outputs_are_stopped_with_a_clear_error(app) {
        // What fails for everyone is refused when saved.
        let endless = email_input("{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}");
        let error = assert_rejected(&app, &create_mutation(), json!({ "input": endless }), "BAD_USER_INPUT", Some("input.html")).await;
        assert!(error["message"].as_str().unwrap().contains("more than 200000 steps"), "{error:#}");
        let huge = email_input("{% for i in range(100) %}{{ \"x\" * 20000 }}{% endfor %}");
        let error = assert_rejected(&app, &create_mutation(), json!({ "input": huge }), "BAD_USER_INPUT", Some("input.html")).await;
        assert!(error["message"].as_str().unwrap().contains("larger than 1048576 bytes"), "{error:#}");
        let recursive = email_input("{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}{{ down(0) }}");
        let saved = create(&app, recursive).await;
        assert!(saved["version"]["warnings"][0].as_str().unwrap().contains("recursion"), "{saved:#}");

        // What depends on the data is stopped when rendered.
        define_field(&app, "bio", "STRING").await;
        define_field(&app, "count", "NUMBER").await;
        let id = contact(&app, json!({ "email": "ada@example.com", "attributes": { "bio": "y".repeat(4000), "count": 100000 } })).await;
        let looping = email_with(&app, "{% for i in range(contact.attributes.count) %}{% for j in range(contact.attributes.count) %}x{% endfor %}{% endfor %}").await;
        let error = app.error(PREVIEW, json!({ "emailId": looping, "contactId": id })).await;
        assert_error(&error, "BAD_USER_INPUT", Some("html"));
        assert_eq!(error["message"], "html: the template ran more than 200000 steps (a loop too long, or one without end)");
        let copying = email_with(&app, "{% for i in range(300) %}{{ contact.attributes.bio }}{% endfor %}").await;
        let error = app.error(PREVIEW, json!({ "emailId": copying, "contactId": id })).await;
        assert_error(&error, "BAD_USER_INPUT", Some("html"));
        assert_eq!(error["message"], "html: the output is larger than 1048576 bytes");
    }

    async fn analysts_read_emails_but_only_mail_send_writes_and_previews_them(app) {
        let email_id = email_with(&app, "<p>Hi {{ contact.first_name }}</p>").await;
        let contact_id = contact(&app, json!({ "email": "ada@example.com", "firstName": "Ada" })).await;
        let read = "query($id: ID!) { email(id: $id) { name currentVersion { html } } emails { nodes { id } } }";
        let create_variables = json!({ "input": email_input("<p>x</p>") });
        let update_variables = json!({ "input": { "id": email_id, "expectedVersion": 1, "html": "<p>y</p>" } });
        let preview_variables = json!({ "emailId": email_id, "contactId": contact_id });

        let analyst = app.signed_in_token("analyst@example.com", "ANALYST").await;
        let (_, body) = app.graphql_as(Some(&analyst), read, json!({ "id": email_id })).await;
        assert_eq!(body["data"]["email"]["currentVersion"]["html"], "<p>Hi {{ contact.first_name }}</p>", "{body:#}");
        let before = app.snapshot().await;
        for (query, variables) in [(create_mutation(), &create_variables), (update_mutation(), &update_variables), (PREVIEW.to_owned(), &preview_variables)] {
            let (_, body) = app.graphql_as(Some(&analyst), &query, variables.clone()).await;
            assert_error(&body["errors"][0], "FORBIDDEN", None);
            assert!(body["errors"][0]["message"].as_str().unwrap().contains("mail:send"), "{body:#}");
        }

        let reader_key = app.api_key_secret("reader", &["profiles:read"]).await;
        let (_, body) = app.graphql_as(Some(&reader_key), &create_mutation(), create_variables.clone()).await;
        assert_error(&body["errors"][0], "FORBIDDEN", None);
        // Mail alone may author, but previews show contact data, which takes profiles:read too.
        let sender_key = app.api_key_secret("sender", &["mail:send"]).await;
        let (_, body) = app.graphql_as(Some(&sender_key), PREVIEW, preview_variables.clone()).await;
        assert_error(&body["errors"][0], "FORBIDDEN", None);
        let (_, body) = app.graphql_as(Some(&sender_key), read, json!({ "id": email_id })).await;
        assert_error(&body["errors"][0], "FORBIDDEN", None);
        assert_eq!(app.snapshot().await, before, "a refused caller changed emails");
        let (_, body) = app.graphql_as(Some(&sender_key), &update_mutation(), update_variables).await;
        assert_eq!(body["data"]["updateEmail"]["version"]["version"], 2, "{body:#}");

        let marketer = app.signed_in_token("marketer@example.com", "MARKETER").await;
        let (_, body) = app.graphql_as(Some(&marketer), PREVIEW, preview_variables).await;
        assert_eq!(body["data"]["previewEmail"]["html"], "<p>y</p>", "{body:#}");
        let (_, body) = app.graphql_as(Some(&marketer), &create_mutation(), create_variables).await;
        assert!(body["data"]["createEmail"]["email"]["id"].is_string(), "{body:#}");
    }
}
