//! The mail throughput benchmark: how many personalised marketing messages a second one `rapport
//! serve` process renders, tracks and hands to a local SMTP sink, on SQLite and on PostgreSQL,
//! beside the sink's own ceiling (`smtp-source` to `smtp-sink`) measured in the same run, so that
//! the ratio is visible. Results go to their own section of `BENCHMARKS.md`.
//!
//! Run it with `cargo bench -p rapport --bench mail_throughput` (needs `smtp-sink` and
//! `smtp-source` from Debian's `postfix` package, and a PostgreSQL server, found like the
//! end-to-end tests find theirs). Speed is measured here and never asserted in tests.

// The shared helpers also drive wrk, which this benchmark does not use.
#[allow(dead_code)]
mod support;

use std::{
    collections::HashMap,
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{ExitCode, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, bail, ensure};
use futures_util::{StreamExt, TryStreamExt, stream};
use rapport::{
    config::{MailSettings, Settings},
    crypto::MasterKey,
    domain::{
        Change,
        consent::{Channel, ConsentProof, ConsentSource, ConsentStatus, LegalBasis},
        contact::{ContactRef, EmailAddress, PersonName},
        email::{EmailContent, EmailType, Mailbox},
        field::FieldType,
        key::Key,
        topic::{Frequency, SubscriptionStatus},
    },
    service::{
        Actor, RequestContext, Services,
        consents::ConsentDecision,
        contacts::{ContactChanges, UpsertKey},
        emails::{Draft, NewEmail},
        fields::NewField,
        sending::SendRequest,
        topics::NewTopic,
    },
    startup::{Application, ServeOptions},
};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};
use secrecy::SecretString;
use serde_json::json;
use support::{ADMIN_TOKEN, Machine, PostgresDatabase, wait_for_quiet};
use tokio::{
    process::{Child, Command},
    sync::oneshot,
};
use uuid::Uuid;

/// Messages per target: one marketing email to each of this many contacts.
const MESSAGES: usize = 20_000;
/// The goal, and what we aim at (listmonk's best published figure is about 830 a second).
const GOAL_PER_SECOND: f64 = 3_000.0;
const AIM_PER_SECOND: f64 = 5_000.0;
/// Writers seeding at once. SQLite takes one writer at a time, and a writer that finds the lock
/// taken sleeps in SQLite's busy handler, so more than one only wastes time there.
const SEED_CONCURRENCY_SQLITE: usize = 1;
const SEED_CONCURRENCY_POSTGRES: usize = 16;
/// Connections smtp-sink queues before accepting them, above any session count used here.
const SINK_BACKLOG: u32 = 1024;
/// How often the outbox is counted while Rapport delivers: the resolution of the timings.
const POLL: Duration = Duration::from_millis(100);
/// Polls between two looks for deferred sends: about one a second.
const DEFERRAL_CHECK_EVERY: u32 = 10;
/// A delivery that settles nothing for this long has stalled, and the run fails.
const STALL: Duration = Duration::from_secs(60);
const SINK_START_WAIT: Duration = Duration::from_secs(5);
const STOP_WAIT: Duration = Duration::from_secs(30);
/// smtp-sink refuses to run as root unless told whom to become after binding its port.
const SINK_USER_WHEN_ROOT: &str = "nobody";

/// A newsletter as people send them: table layout with inline styles, about 9 KB, personalised
/// with the first name, a custom field and the topic, a loop over the articles, and seventeen links
/// that tracking rewrites. No text part, so Rapport generates one from the HTML, as it does for
/// every email whose author leaves it out.
const NEWSLETTER_SUBJECT: &str = r#"{{ contact.first_name | default("there") }}, this week at Northwind"#;
const NEWSLETTER_PREHEADER: &str = "Five stories, one release, and a free seat at the spring meetup.";
const NEWSLETTER_HTML: &str = r##"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>This week at Northwind</title>
<style>
  body { margin: 0; padding: 0; background: #f3f4f6; }
  a { color: #1d4ed8; }
  @media (max-width: 620px) { .container { width: 100% !important; } .column { display: block !important; width: 100% !important; } }
</style>
</head>
<body style="margin:0;padding:0;background:#f3f4f6;font-family:Helvetica,Arial,sans-serif;color:#111827;">
{% set articles = [
  {"title": "How we cut our cloud bill by a third without touching the product", "summary": "A line-by-line account of the six months we spent reading invoices, the reserved capacity we should have bought two years ago, and the one query that cost more than the whole staging environment.", "url": "https://www.example.com/blog/cloud-bill", "minutes": 9},
  {"title": "Release 4.2: saved segments, faster exports and a calmer inbox", "summary": "Segments you build once and reuse everywhere, CSV exports that stream instead of timing out, and notification digests that arrive once a day instead of once a minute.", "url": "https://www.example.com/changelog/4-2", "minutes": 4},
  {"title": "Customer story: a bakery chain that knows every regular by name", "summary": "Twelve shops, one loyalty card and a preference centre that lets customers pick which offers they hear about. Their opt-out rate fell by half in a quarter.", "url": "https://www.example.com/customers/bakery", "minutes": 6},
  {"title": "The consent checklist we give every new customer", "summary": "What to record when someone subscribes, how long to keep the proof, and the three questions a regulator actually asked one of our customers last spring.", "url": "https://www.example.com/guides/consent-checklist", "minutes": 7},
  {"title": "From the team: what we are building next", "summary": "Journeys with waiting steps, per-topic sending limits and a plain-text editor for people who never wanted a drag-and-drop builder in the first place.", "url": "https://www.example.com/blog/roadmap", "minutes": 3}
] %}
<table role="presentation" width="100%" cellspacing="0" cellpadding="0" border="0" style="background:#f3f4f6;">
  <tr>
    <td align="center" style="padding:24px 12px;">
      <table role="presentation" class="container" width="600" cellspacing="0" cellpadding="0" border="0" style="width:600px;background:#ffffff;border-radius:8px;overflow:hidden;">
        <tr>
          <td style="padding:24px 32px;background:#111827;">
            <a href="https://www.example.com/?from=newsletter" style="color:#ffffff;text-decoration:none;font-size:22px;font-weight:bold;letter-spacing:0.5px;">Northwind</a>
            <span style="float:right;color:#9ca3af;font-size:13px;line-height:30px;">Weekly digest</span>
          </td>
        </tr>
        <tr>
          <td style="padding:32px 32px 8px 32px;">
            <h1 style="margin:0 0 16px 0;font-size:24px;line-height:32px;color:#111827;">Hi {{ contact.first_name | default("there") }},</h1>
            <p style="margin:0 0 16px 0;font-size:16px;line-height:24px;color:#374151;">
              Here is what happened at Northwind this week: a release that many of you asked for,
              a story from a customer who runs twelve bakeries, and the checklist we hand to every
              team that starts collecting consent. As always, each article takes less than ten
              minutes to read, and you can reply to this email if you want to talk about any of it.
            </p>
            {% if contact.topics.weekly_digest and contact.topics.weekly_digest.subscribed %}
            <p style="margin:0 0 16px 0;font-size:14px;line-height:20px;color:#6b7280;">
              You get this digest {{ contact.topics.weekly_digest.frequency }} because you subscribed to {{ contact.topics.weekly_digest.name }}.
            </p>
            {% endif %}
          </td>
        </tr>
        {% for article in articles %}
        <tr>
          <td style="padding:16px 32px;border-top:1px solid #e5e7eb;">
            <p style="margin:0 0 4px 0;font-size:12px;line-height:16px;color:#6b7280;text-transform:uppercase;letter-spacing:1px;">{{ loop.index }} of {{ loop.length }} &middot; {{ article.minutes }} min read</p>
            <h2 style="margin:0 0 8px 0;font-size:19px;line-height:26px;">
              <a href="{{ article.url }}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=weekly" style="color:#111827;text-decoration:none;">{{ article.title }}</a>
            </h2>
            <p style="margin:0 0 12px 0;font-size:15px;line-height:22px;color:#374151;">{{ article.summary }}</p>
            <a href="{{ article.url }}?utm_source=newsletter&amp;utm_medium=email&amp;utm_campaign=weekly&amp;utm_content=read-more" style="display:inline-block;font-size:14px;font-weight:bold;color:#1d4ed8;text-decoration:none;">Read more &rarr;</a>
          </td>
        </tr>
        {% endfor %}
        <tr>
          <td style="padding:24px 32px;background:#eff6ff;border-top:1px solid #dbeafe;">
            {% if contact.attributes.plan == "free" %}
            <h3 style="margin:0 0 8px 0;font-size:17px;line-height:24px;color:#1e3a8a;">Ready for more than the free plan?</h3>
            <p style="margin:0 0 16px 0;font-size:15px;line-height:22px;color:#1e40af;">
              Pro adds saved segments, scheduled exports and priority support. Upgrade this month and
              the first three months cost half.
            </p>
            <a href="https://www.example.com/pricing?plan=pro&amp;offer=spring" style="display:inline-block;padding:12px 20px;background:#1d4ed8;color:#ffffff;border-radius:6px;font-size:15px;font-weight:bold;text-decoration:none;">See the Pro plan</a>
            {% elif contact.attributes.plan == "pro" %}
            <h3 style="margin:0 0 8px 0;font-size:17px;line-height:24px;color:#1e3a8a;">New in your Pro plan</h3>
            <p style="margin:0 0 16px 0;font-size:15px;line-height:22px;color:#1e40af;">
              Saved segments are live in your workspace today. Build one from any filter and reuse it
              in exports, automations and reports.
            </p>
            <a href="https://www.example.com/docs/segments" style="display:inline-block;padding:12px 20px;background:#1d4ed8;color:#ffffff;border-radius:6px;font-size:15px;font-weight:bold;text-decoration:none;">Try saved segments</a>
            {% else %}
            <h3 style="margin:0 0 8px 0;font-size:17px;line-height:24px;color:#1e3a8a;">Your {{ contact.attributes.plan | default("Northwind") | title }} team, at the meetup</h3>
            <p style="margin:0 0 16px 0;font-size:15px;line-height:22px;color:#1e40af;">
              Customers on the {{ contact.attributes.plan | default("enterprise") }} plan get two free seats at the
              spring meetup in Lisbon, including the workshop day. Seats go in the order they are claimed.
            </p>
            <a href="https://www.example.com/events/spring-meetup?seats=2" style="display:inline-block;padding:12px 20px;background:#1d4ed8;color:#ffffff;border-radius:6px;font-size:15px;font-weight:bold;text-decoration:none;">Claim your seats</a>
            {% endif %}
          </td>
        </tr>
        <tr>
          <td style="padding:24px 32px;">
            <h3 style="margin:0 0 8px 0;font-size:17px;line-height:24px;">Coming up</h3>
            <table role="presentation" width="100%" cellspacing="0" cellpadding="0" border="0">
              <tr>
                <td class="column" width="50%" valign="top" style="padding:0 8px 12px 0;font-size:14px;line-height:20px;color:#374151;">
                  <strong>Webinar, 12 March</strong><br>
                  Segments in practice: the five filters our customers use most.<br>
                  <a href="https://www.example.com/webinars/segments">Register</a>
                </td>
                <td class="column" width="50%" valign="top" style="padding:0 0 12px 8px;font-size:14px;line-height:20px;color:#374151;">
                  <strong>Office hours, every Thursday</strong><br>
                  Bring your questions about consent, exports or the API.<br>
                  <a href="https://www.example.com/office-hours">Book a slot</a>
                </td>
              </tr>
            </table>
          </td>
        </tr>
        <tr>
          <td style="padding:24px 32px;background:#f9fafb;border-top:1px solid #e5e7eb;font-size:12px;line-height:18px;color:#6b7280;">
            <p style="margin:0 0 8px 0;">
              <a href="https://twitter.com/northwind" style="color:#6b7280;">Twitter</a> &middot;
              <a href="https://www.linkedin.com/company/northwind" style="color:#6b7280;">LinkedIn</a> &middot;
              <a href="https://www.example.com/blog" style="color:#6b7280;">Blog</a>
            </p>
            <p style="margin:0 0 8px 0;">
              You receive this email because you agreed to hear from Northwind about products and
              events. To stop, use the unsubscribe link your mail program shows next to our name.
            </p>
            <p style="margin:0;">Northwind Ltd, 1 Example Street, London EC1A 1AA, United Kingdom</p>
          </td>
        </tr>
      </table>
    </td>
  </tr>
</table>
</body>
</html>
"##;

/// The text above the run. The benchmark rewrites it on every run, so that it always describes
/// the code that produced the numbers.
fn intro() -> String {
    format!(
        "## Throughput of mail delivery

How many personalised marketing messages a second one `rapport serve` process sends. The
goal is at least {goal:.0} messages a second from one process on 2 cores, aiming at {aim:.0} (the
best figure listmonk's maintainer has published is about 830). Each run measures, one after
the other on the same machine:

- **smtp-source → smtp-sink (ceiling)**: Postfix's test client sending the same number of
  copies of one of Rapport's messages (captured from Rapport in the same run, byte for byte)
  over as many persistent sessions as Rapport opens, to Postfix's test server, which accepts
  and discards everything. This is about the most any client gets out of the sink here;
- **Rapport, SQLite** and **Rapport, PostgreSQL**: the release binary, started as `rapport
  serve` on a fresh database holding {messages} contacts (first name, a custom field, email
  marketing consent granted, subscribed to a topic) and {messages} queued sends of one
  marketing email with open and click tracking: a newsletter of about 9 KB of HTML with the
  first name, the custom field and the topic in it, a loop over five articles and seventeen
  tracked links, and no text part (Rapport makes it from the HTML). Rapport claims the sends
  from the outbox, checks consent and suppressions, renders, rewrites the links, signs a
  List-Unsubscribe link, and sends over its pool of SMTP connections (default size) to the sink.

Seeding goes through the library without a relay, so nothing is sent before the binary starts.
The outbox is counted every {poll} ms while the binary runs. \"seconds\" runs from the first
count that saw a message sent to the count that saw all sent, and \"messages\" is how many were
settled in between; \"from start\" runs from starting the process (which migrates nothing, the
database being ready) to all sent. Peak RSS is the process's `VmHWM` just before it is stopped.
The sink, the binary and PostgreSQL share the same cores, and each part starts once the CPUs
are idle.

Reproduce it (PostgreSQL is found through `RAPPORT_TEST_POSTGRES_URL`, by default
`postgres://postgres@127.0.0.1:5432/postgres`; the benchmark creates a database `bench_<uuid>`
and drops it at the end; installing `postfix` with \"No configuration\" installs the tools
without setting up a mail server):

```sh
echo \"postfix postfix/main_mailer_type select No configuration\" | debconf-set-selections
DEBIAN_FRONTEND=noninteractive apt-get install postfix
cargo bench -p rapport --bench mail_throughput
```

The command replaces this section with its run (earlier runs are in the history of this file)
and leaves the rest of the file alone; edit the text in `server/benches/mail_throughput.rs`.
",
        goal = GOAL_PER_SECOND,
        aim = AIM_PER_SECOND,
        messages = MESSAGES,
        poll = POLL.as_millis(),
    )
}

fn main() -> ExitCode {
    support::run_bench("mail_throughput", run)
}

async fn run() -> anyhow::Result<()> {
    let started = Instant::now();
    let tools = SinkTools::find()?;
    let postgres = PostgresDatabase::create().await?;
    let outcome = tokio::select! {
        outcome = measure_all(&tools, &postgres) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    postgres.drop_database().await;
    let (results, observed) = outcome?;

    // There is no load generator to name: the sink's version is reported on its own.
    let machine = Machine::describe(String::new()).await;
    let run = report(&machine, &observed, &results);
    println!("\n{run}");
    let path = support::update_section("mail_throughput", |_| format!("{}\n{run}", intro()))?;
    println!("wrote {} in {:.0} s", path.display(), started.elapsed().as_secs_f64());
    Ok(())
}

/// What one target did.
struct Measurement {
    target: &'static str,
    /// The messages timed, and the time they took.
    messages: usize,
    seconds: f64,
    /// For Rapport: from starting the process to the last message sent.
    from_start: Option<f64>,
    peak_rss_bytes: Option<u64>,
    /// Share of the CPUs idle in the second before the part started.
    idle_before: Option<f64>,
}

impl Measurement {
    fn per_second(&self) -> f64 {
        self.messages as f64 / self.seconds
    }

    fn short_name(&self) -> &'static str {
        self.target.strip_prefix("Rapport, ").unwrap_or("ceiling")
    }
}

/// What the run learnt of its surroundings.
struct Observed {
    message_bytes: usize,
    smtp_connections: usize,
    postfix_version: String,
    sqlite_version: String,
    postgres_version: String,
}

async fn measure_all(tools: &SinkTools, postgres: &PostgresDatabase) -> anyhow::Result<(Vec<Measurement>, Observed)> {
    let work = tempfile::tempdir().context("cannot create a temporary directory")?;
    // One key for seeding and for the binary: the binary must read what seeding encrypted.
    let master_key = MasterKey::generate().to_base64();
    let smtp_connections = MailSettings::default().smtp_connections;

    let message = capture_message(tools, work.path(), &master_key).await?;
    let sqlite_url = format!("sqlite://{}?mode=rwc", work.path().join("rapport.db").display());
    // Both are seeded at once: seeding waits on commits and thread hand-offs part of the time.
    tokio::try_join!(
        seed_database("Rapport, SQLite", &sqlite_url, &master_key, SEED_CONCURRENCY_SQLITE),
        seed_database("Rapport, PostgreSQL", &postgres.url, &master_key, SEED_CONCURRENCY_POSTGRES),
    )?;
    let observed = Observed {
        message_bytes: message.bytes,
        smtp_connections,
        postfix_version: tools.postfix_version().await,
        sqlite_version: database_version(&sqlite_url, "select sqlite_version()").await?,
        postgres_version: database_version(&postgres.url, "show server_version").await?,
    };

    let mut results = vec![sink_ceiling(tools, &message.path, smtp_connections).await?];
    for (target, database_url) in [("Rapport, SQLite", sqlite_url.as_str()), ("Rapport, PostgreSQL", &postgres.url)] {
        results.push(deliver(tools, target, database_url, &master_key, work.path()).await?);
    }
    Ok((results, observed))
}

/// Settings for the library: no rate limits in the way, and a relay only when one is given.
fn settings(database_url: &str, master_key: &str, smtp_url: Option<String>) -> anyhow::Result<Settings> {
    Ok(Settings {
        database_url: database_url.to_owned(),
        listen: "127.0.0.1:0".parse()?,
        admin_token: Some(SecretString::from(ADMIN_TOKEN)),
        master_key: Some(SecretString::from(master_key)),
        smtp_url: smtp_url.map(SecretString::from),
        ..Settings::default()
    })
}

async fn seed_database(target: &str, database_url: &str, master_key: &str, concurrency: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let app = Application::build(&settings(database_url, master_key, None)?, ServeOptions::default())
        .await
        .with_context(|| format!("{target} does not start"))?;
    seed(app.services(), MESSAGES, concurrency).await.with_context(|| format!("seeding {target}"))?;
    app.services().database().clone().close().await.context("closing the seeded database")?;
    eprintln!(
        "[{target}] seeded {MESSAGES} contacts and queued {MESSAGES} sends in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// A custom field, a topic, the newsletter, and `contacts` contacts each with a first name, the
/// field, marketing consent and a subscription, and one queued send of the newsletter each;
/// through the services (the same path the API takes), so the rows look like real ones.
async fn seed(services: &Services, contacts: usize, concurrency: usize) -> anyhow::Result<()> {
    let ctx = RequestContext::internal(Actor::Bootstrap, "bench-seed");
    let plan = NewField {
        key: Key::parse("plan")?,
        label: "Plan".to_owned(),
        field_type: FieldType::Enum,
        enum_values: ["free", "pro", "enterprise"].map(str::to_owned).to_vec(),
        required: false,
        personal: false,
    };
    services.define_field(&ctx, plan).await.map_err(|error| anyhow!("define the field: {error}"))?;
    let topic = Key::parse("weekly_digest")?;
    let new = NewTopic {
        key: topic.clone(),
        name: "Weekly digest".to_owned(),
        description: None,
        default_frequency: Frequency::Weekly,
    };
    services.define_topic(&ctx, new).await.map_err(|error| anyhow!("define the topic: {error}"))?;
    let newsletter = NewEmail {
        name: "Weekly digest".to_owned(),
        draft: Draft {
            email_type: EmailType::Marketing,
            content: EmailContent {
                subject: NEWSLETTER_SUBJECT.to_owned(),
                preheader: Some(NEWSLETTER_PREHEADER.to_owned()),
                html: NEWSLETTER_HTML.to_owned(),
                text: None,
            },
            from: Mailbox {
                name: Some("Northwind".to_owned()),
                address: EmailAddress::parse("news@example.com").map_err(|_| anyhow!("bad sender"))?,
            },
            reply_to: None,
            tracking: true,
        },
    };
    let (email, version) =
        services.create_email(&ctx, newsletter).await.map_err(|error| anyhow!("create the email: {error}"))?;
    ensure!(version.warnings.is_empty(), "the newsletter's template has warnings: {:?}", version.warnings);

    let (ctx, topic) = (&ctx, &topic);
    stream::iter(0..contacts)
        .map(|index| seed_contact(services, ctx, topic, email.id, index))
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

async fn seed_contact(
    services: &Services,
    ctx: &RequestContext,
    topic: &Key,
    email_id: Uuid,
    index: usize,
) -> anyhow::Result<()> {
    const PLANS: [&str; 3] = ["free", "pro", "enterprise"];
    let changes = ContactChanges {
        first_name: Change::Set(PersonName::parse(&format!("Ada{index}"))?),
        last_name: Change::Set(PersonName::parse("Lovelace")?),
        attributes: vec![("plan".to_owned(), json!(PLANS[index % PLANS.len()]))],
        ..ContactChanges::default()
    };
    let address = EmailAddress::parse(&format!("person{index}@example.com")).map_err(|_| anyhow!("bad email"))?;
    let contact = services
        .upsert_contact(ctx, UpsertKey::Email(address), changes)
        .await
        .map_err(|error| anyhow!("upsert contact {index}: {error}"))?
        .contact;
    let consent = ConsentDecision {
        purpose: Key::parse("marketing")?,
        channel: Channel::Email,
        status: ConsentStatus::Granted,
        legal_basis: LegalBasis::Consent,
        source: ConsentSource::Form,
        captured_at: None,
        proof: ConsentProof::default(),
    };
    services.record_consent(ctx, contact.id, consent).await.map_err(|error| anyhow!("consent {index}: {error}"))?;
    services
        .set_subscription(ctx, contact.id, topic, SubscriptionStatus::Subscribed, None)
        .await
        .map_err(|error| anyhow!("subscribe {index}: {error}"))?;
    let request = SendRequest { email_id, contact: ContactRef::Id(contact.id), idempotency_key: None, event: None };
    let (_, created) = services.send_email(ctx, request).await.map_err(|error| anyhow!("send {index}: {error}"))?;
    ensure!(created, "the send to contact {index} was not queued");
    Ok(())
}

/// One message exactly as Rapport sends it, for smtp-source to send as the ceiling.
struct CapturedMessage {
    /// The message with LF line ends, as smtp-source's `-F` wants it.
    path: PathBuf,
    /// Its size on the wire (CRLF line ends).
    bytes: usize,
}

/// Delivers the newsletter to one contact of a database of its own, through the library with the
/// worker running, to a sink that keeps what it receives, and returns that message.
async fn capture_message(tools: &SinkTools, work: &Path, master_key: &str) -> anyhow::Result<CapturedMessage> {
    let dump = work.join("dump");
    std::fs::create_dir(&dump).context("cannot create the dump directory")?;
    // The sink drops root privileges before it writes.
    std::fs::set_permissions(&dump, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let sink = Sink::start(tools, Some(&dump.join("message."))).await?;
    let database_url = format!("sqlite://{}?mode=rwc", work.join("capture.db").display());
    let app = Application::build(&settings(&database_url, master_key, Some(sink.url()))?, ServeOptions::default())
        .await
        .context("the capturing server does not start")?;
    let services = app.services().clone();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    seed(&services, 1, 1).await.context("seeding the capture")?;
    let monitor = Database::connect(&database_url).await.context("cannot open the capture database")?;
    let started = Instant::now();
    while outbox_counts(&monitor).await?.get("sent").copied().unwrap_or(0) < 1 {
        ensure!(started.elapsed() < STALL, "the captured message was not sent within {} s", STALL.as_secs());
        tokio::time::sleep(POLL).await;
    }
    monitor.close().await.ok();
    let _ = stop.send(());
    server.await.context("the capturing server task failed")?.context("the capturing server failed")?;
    sink.stop().await;

    let file = std::fs::read_dir(&dump)?.next().context("the sink kept no message")??.path();
    let dumped = std::fs::read_to_string(&file).with_context(|| format!("cannot read {}", file.display()))?;
    let message = strip_sink_trace(&dumped).context("the sink's dump has no Received header")?;
    let path = work.join("message.eml");
    std::fs::write(&path, message)?;
    Ok(CapturedMessage { path, bytes: message.len() + message.lines().count() })
}

/// smtp-sink's dump starts with `X-…` lines about the session and its own `Received` header
/// (folded over several lines); the message follows, and then an empty line.
fn strip_sink_trace(dumped: &str) -> Option<&str> {
    let received = dumped.find("\nReceived: ")? + 1;
    let mut rest = &dumped[received..];
    loop {
        let end = rest.find('\n')? + 1;
        rest = &rest[end..];
        if !rest.starts_with([' ', '\t']) {
            return rest.strip_suffix('\n');
        }
    }
}

/// Postfix's test programs, found on PATH or in /usr/sbin, where Debian puts them.
struct SinkTools {
    sink: PathBuf,
    source: PathBuf,
}

impl SinkTools {
    fn find() -> anyhow::Result<Self> {
        let find = |name: &str| {
            let path = std::env::var_os("PATH").unwrap_or_default();
            std::env::split_paths(&path)
                .chain([PathBuf::from("/usr/sbin")])
                .map(|directory| directory.join(name))
                .find(|candidate| candidate.is_file())
        };
        match (find("smtp-sink"), find("smtp-source")) {
            (Some(sink), Some(source)) => Ok(Self { sink, source }),
            _ => bail!(
                "smtp-sink and smtp-source are not installed: they come with Debian's postfix package. Install it \
                 without setting up a mail server: `echo \"postfix postfix/main_mailer_type select No configuration\" \
                 | debconf-set-selections && DEBIAN_FRONTEND=noninteractive apt-get install postfix`"
            ),
        }
    }

    /// The version of the package that ships the tools (they print none of their own).
    async fn postfix_version(&self) -> String {
        let output = Command::new("dpkg-query").args(["-W", "-f", "${Version}", "postfix"]).output().await;
        match output {
            Ok(output) if output.status.success() => format!("postfix {}", String::from_utf8_lossy(&output.stdout)),
            _ => "postfix (version unknown)".to_owned(),
        }
    }
}

/// smtp-sink on a free loopback port, accepting and discarding every message.
struct Sink {
    child: Child,
    port: u16,
}

impl Sink {
    /// Starts the sink; with `dump_template`, it also writes each message to a file named from it.
    async fn start(tools: &SinkTools, dump_template: Option<&Path>) -> anyhow::Result<Self> {
        // The port is free when asked; nothing else on this machine is expected to take it before
        // the sink binds it a moment later.
        let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let mut command = Command::new(&tools.sink);
        if running_as_root() {
            command.args(["-u", SINK_USER_WHEN_ROOT]);
        }
        if let Some(template) = dump_template {
            command.arg("-d").arg(template);
        }
        let mut child = command
            .arg(format!("127.0.0.1:{port}"))
            .arg(SINK_BACKLOG.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", tools.sink.display()))?;
        let started = Instant::now();
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = child.try_wait()? {
                bail!("smtp-sink exited ({status}) before accepting connections");
            }
            ensure!(started.elapsed() < SINK_START_WAIT, "smtp-sink does not accept connections on port {port}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(Self { child, port })
    }

    fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| status.lines().find_map(|line| line.strip_prefix("Uid:")).map(str::to_owned))
        .and_then(|uids| uids.split_whitespace().nth(1).map(|effective| effective == "0"))
        .unwrap_or(false)
}

/// smtp-source sending `MESSAGES` copies of Rapport's message over `sessions` persistent
/// sessions: the most a client gets out of the sink on this machine.
async fn sink_ceiling(tools: &SinkTools, message: &Path, sessions: usize) -> anyhow::Result<Measurement> {
    let target = "smtp-source → smtp-sink (ceiling)";
    let sink = Sink::start(tools, None).await?;
    let idle_before = wait_for_quiet().await;
    eprintln!("[{target}] sending {MESSAGES} messages");
    let started = Instant::now();
    let output = Command::new(&tools.source)
        .arg("-d")
        .args(["-s", &sessions.to_string(), "-m", &MESSAGES.to_string()])
        .arg("-F")
        .arg(message)
        .arg(format!("127.0.0.1:{}", sink.port))
        .stdin(Stdio::null())
        .output()
        .await
        .with_context(|| format!("cannot run {}", tools.source.display()))?;
    let seconds = started.elapsed().as_secs_f64();
    sink.stop().await;
    ensure!(
        output.status.success(),
        "smtp-source failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(Measurement { target, messages: MESSAGES, seconds, from_start: None, peak_rss_bytes: None, idle_before })
}

/// Starts the release binary on a seeded database with the sink as its relay, and times it until
/// every send is settled as sent.
async fn deliver(
    tools: &SinkTools,
    target: &'static str,
    database_url: &str,
    master_key: &str,
    work: &Path,
) -> anyhow::Result<Measurement> {
    let sink = Sink::start(tools, None).await?;
    let monitor =
        Database::connect(database_url).await.with_context(|| format!("{target}: cannot open the database"))?;
    let log = work.join(format!("{}.log", target.replace([' ', ','], "")));
    let log_file = std::fs::File::create(&log).with_context(|| format!("cannot create {}", log.display()))?;
    let idle_before = wait_for_quiet().await;
    eprintln!("[{target}] delivering {MESSAGES} messages");
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_rapport"))
        .arg("serve")
        .env_clear()
        .env("RAPPORT_DATABASE_URL", database_url)
        .env("RAPPORT_MASTER_KEY", master_key)
        .env("RAPPORT_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("RAPPORT_LISTEN", "127.0.0.1:0")
        .env("RAPPORT_SMTP_URL", sink.url())
        .env("RAPPORT_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .context("cannot start the rapport binary")?;
    let pid = child.id().context("the rapport process has no id")?;

    let mut first_sent: Option<(Instant, usize)> = None;
    let (mut last_sent, mut last_progress) = (0, Instant::now());
    let mut poll = tokio::time::interval(POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut polls = 0_u32;
    let all_sent = loop {
        poll.tick().await;
        if let Some(status) = child.try_wait()? {
            bail!("{target}: rapport exited ({status}):\n{}", tail(&log));
        }
        // A deferral would come back within the stall limit and end sent, so it is watched for;
        // it waits far longer than a second, so a look a second is enough.
        polls += 1;
        if polls.is_multiple_of(DEFERRAL_CHECK_EVERY) && deferred_sends(&monitor).await? > 0 {
            bail!("{target}: a send was deferred: {}", first_detail(&monitor, "deferred").await);
        }
        // Every send must end sent (checked once all are settled), so settled is sent.
        let sent = MESSAGES - waiting_sends(&monitor).await?;
        let now = Instant::now();
        if sent > 0 && first_sent.is_none() {
            first_sent = Some((now, sent));
        }
        if sent >= MESSAGES {
            break now;
        }
        if sent > last_sent {
            (last_sent, last_progress) = (sent, now);
        }
        ensure!(
            last_progress.elapsed() < STALL,
            "{target}: no message sent for {} s ({sent} of {MESSAGES} sent):\n{}",
            STALL.as_secs(),
            tail(&log)
        );
    };
    let peak_rss_bytes = peak_rss_bytes(pid);
    terminate(&mut child, pid).await;
    sink.stop().await;
    let counts = outbox_counts(&monitor).await?;
    if let Some((status, _)) = counts.iter().find(|(status, _)| status.as_str() != "sent") {
        bail!("{target}: a send ended {status}: {}", first_detail(&monitor, status).await);
    }
    monitor.close().await.ok();

    let (first_at, sent_at_first) = first_sent.context("no message was sent")?;
    ensure!(sent_at_first < MESSAGES, "{target}: every message was sent before the first count; nothing was timed");
    Ok(Measurement {
        target,
        messages: MESSAGES - sent_at_first,
        seconds: all_sent.duration_since(first_at).as_secs_f64(),
        from_start: Some(all_sent.duration_since(started).as_secs_f64()),
        peak_rss_bytes,
        idle_before,
    })
}

/// How many sends still wait for a message: what the monitor asks ten times a second, so it is
/// counted from the partial index of waiting sends alone, not to take the database's time from
/// the server measured.
async fn waiting_sends(connection: &DatabaseConnection) -> anyhow::Result<usize> {
    count_sends(connection, rapport::store::outbox::WAITING).await
}

/// How many waiting sends were deferred (which reads each waiting row, so it is asked less often).
async fn deferred_sends(connection: &DatabaseConnection) -> anyhow::Result<usize> {
    count_sends(connection, &format!("status = 'deferred' AND {}", rapport::store::outbox::WAITING)).await
}

async fn count_sends(connection: &DatabaseConnection, condition: &str) -> anyhow::Result<usize> {
    let row = connection
        .query_one_raw(Statement::from_string(
            connection.get_database_backend(),
            format!("select count(*) from outbox where {condition}"),
        ))
        .await
        .with_context(|| format!("cannot count the sends where {condition}"))?
        .context("a count has a row")?;
    Ok(usize::try_from(row.try_get_by_index::<i64>(0)?)?)
}

/// How many sends are in each status.
async fn outbox_counts(connection: &DatabaseConnection) -> anyhow::Result<HashMap<String, usize>> {
    let rows = connection
        .query_all_raw(Statement::from_string(
            connection.get_database_backend(),
            "select status, count(*) from outbox group by status",
        ))
        .await
        .context("cannot count the outbox")?;
    rows.iter()
        .map(|row| {
            let status: String = row.try_get_by_index(0)?;
            let count: i64 = row.try_get_by_index(1)?;
            Ok((status, usize::try_from(count)?))
        })
        .collect()
}

/// The detail recorded on one send in `status`, for the error message.
async fn first_detail(connection: &DatabaseConnection, status: &str) -> String {
    let statement = Statement::from_sql_and_values(
        connection.get_database_backend(),
        match connection.get_database_backend() {
            sea_orm::DatabaseBackend::Postgres => "select detail from outbox where status = $1 limit 1",
            _ => "select detail from outbox where status = ? limit 1",
        },
        [status.into()],
    );
    match connection.query_one_raw(statement).await {
        Ok(Some(row)) => row.try_get_by_index::<Option<String>>(0).ok().flatten().unwrap_or_default(),
        Ok(None) => String::new(),
        Err(error) => format!("(cannot read the detail: {error})"),
    }
}

/// The most memory the process has held (`VmHWM`, Linux only).
fn peak_rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Asks the process to stop as an operator would (SIGTERM), and kills it if it does not.
async fn terminate(child: &mut Child, pid: u32) {
    let asked = Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
    let stopped = asked.is_ok_and(|status| status.success())
        && tokio::time::timeout(STOP_WAIT, child.wait()).await.is_ok_and(|waited| waited.is_ok());
    if !stopped {
        eprintln!("rapport did not stop within {} s of SIGTERM; killing it", STOP_WAIT.as_secs());
        let _ = child.kill().await;
    }
}

/// The last lines of a server's log, for an error message.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

async fn database_version(url: &str, query: &str) -> anyhow::Result<String> {
    let connection = Database::connect(url).await.context("cannot connect to the database")?;
    let row = connection
        .query_one_raw(Statement::from_string(connection.get_database_backend(), query))
        .await?
        .context("the version query returned no row")?;
    let version = row.try_get_by_index::<String>(0)?;
    connection.close().await.ok();
    Ok(version)
}

/// The text of this run in `BENCHMARKS.md`.
fn report(machine: &Machine, observed: &Observed, results: &[Measurement]) -> String {
    let ceiling = results.first().map_or(f64::NAN, Measurement::per_second);
    let mut text = String::new();
    let _ = writeln!(text, "### {}\n", machine.date);
    let idle: Vec<String> = results
        .iter()
        .map(|result| {
            let share = result.idle_before.map_or("unknown".to_owned(), |idle| format!("{:.0} %", idle * 100.0));
            format!("{} {share}", result.short_name())
        })
        .collect();
    let _ = writeln!(
        text,
        "Run at {} UTC on commit {}.\n\n\
         - Machine: {} CPUs ({}), {} memory, Linux {} ({})\n\
         - Toolchain: {}, release profile; sink: smtp-sink and smtp-source of {}, {} SMTP sessions\n\
         - Databases: SQLite {} (WAL), PostgreSQL {}, both on this machine; {MESSAGES} contacts and sends each\n\
         - Message: {:.1} KB on the wire (MIME, text and HTML parts, tracked links, List-Unsubscribe)\n\
         - CPU idle in the second before each part: {}\n",
        machine.time,
        machine.commit,
        machine.cpus,
        machine.cpu_model,
        machine.memory,
        machine.kernel,
        machine.os,
        machine.rustc,
        observed.postfix_version,
        observed.smtp_connections,
        observed.sqlite_version,
        observed.postgres_version,
        observed.message_bytes as f64 / 1000.0,
        idle.join(", "),
    );
    text.push_str("| target | messages | seconds | messages/s | share of sink ceiling | peak RSS | from start |\n");
    text.push_str("|---|---:|---:|---:|---:|---:|---:|\n");
    for result in results {
        let _ = writeln!(
            text,
            "| {} | {} | {:.2} | {:.0} | {:.0} % | {} | {} |",
            result.target,
            result.messages,
            result.seconds,
            result.per_second(),
            100.0 * result.per_second() / ceiling,
            result
                .peak_rss_bytes
                .map_or("–".to_owned(), |bytes| format!("{:.0} MiB", bytes as f64 / 1024.0 / 1024.0)),
            result.from_start.map_or("–".to_owned(), |seconds| format!("{seconds:.1} s")),
        );
    }
    text.push('\n');
    let verdicts: Vec<String> = results
        .iter()
        .filter(|result| result.from_start.is_some())
        .map(|result| {
            let rate = result.per_second();
            let verdict = if rate >= AIM_PER_SECOND {
                "met, and the aim too"
            } else if rate >= GOAL_PER_SECOND {
                "met"
            } else {
                "not met"
            };
            format!("{} {verdict}", result.short_name())
        })
        .collect();
    let _ = writeln!(
        text,
        "Goal (at least {GOAL_PER_SECOND:.0} messages/s, aiming at {AIM_PER_SECOND:.0}): {}.",
        verdicts.join("; ")
    );
    text
}
