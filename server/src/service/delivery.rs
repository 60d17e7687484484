//! The delivery worker: claims due sends from the outbox under a lease, decides each (contact
//! gone, suppressed, no consent, held back by a rate limit), renders the rest lazily (with the
//! version's compiled templates, kept between batches), sends them over a pool of SMTP
//! connections, and settles the outcomes.
//!
//! Exactly once, bar one window: a message is marked sent by the settlement write that follows
//! the relay's `250`, normally within a few tens of milliseconds (settlements are written while
//! other messages are still being sent, gathered for at most `SETTLE_GATHER` so that one write
//! settles hundreds). If the process dies inside that window, the row's lease runs out and
//! the message goes again, with the same `Message-ID`. SMTP has no way to close the window (the
//! relay's acceptance and our write cannot be one transaction); a gathering of milliseconds and
//! one write is all that stands in it. Everything before the `250` is safe to repeat. Leases are
//! renewed only for the sends in hand, and a worker whose renewals fail stops sending, so a row
//! is not sent while another worker may hold its lease.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
    time::{Duration, SystemTime},
};

use chrono::{DateTime, Utc};
use futures_util::{StreamExt, stream};
use lettre::address::Envelope;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::{Result, Services, access::LinkSigner};
use crate::{
    config::MailSettings,
    domain::{
        access::ContactTokenPurpose,
        consent::{ConsentChange, ConsentStatus, email_marketing},
        contact::{Contact, ContactId, EmailAddress, Profile},
        delivery::{SendStatus, Suppression, SuppressionReason, retry_delay},
        email::{EmailType, EmailVersion},
        topic::{Topic, TopicSubscription},
        webhook::WebhookEventType,
    },
    mail::{
        message::{self, Addressing, Dkim},
        rate::SlidingWindow,
        render::{self, CompiledEmail, Links, RenderInput},
        smtp::{SendFailure, SmtpPool},
        text,
        tracking::{self, TrackedSend, Tracking, TrackingKeys},
    },
    store::{self, outbox::Settlement, webhooks::NewMessage},
};

/// Sends claimed at once. Large enough that the per-batch reads cost little per message, small
/// enough that a batch is sent well within its lease.
const BATCH: usize = 500;
/// How often an idle worker looks for sends queued by other processes (its own wake it).
const POLL: Duration = Duration::from_secs(1);
/// Batches in flight at once: one is read while another is being sent.
const LANES: usize = 2;
/// Messages rendered by one blocking task: enough to amortise the hand-off, few enough that the
/// first messages of a batch go out at once.
const RENDER_CHUNK: usize = 16;
/// Compiled versions kept between batches; a program mails a handful of versions at a time.
const COMPILED_VERSIONS: usize = 64;
/// Stands in for an unsubscribe token in test sends; no token looks like it.
const TEST_TOKEN: &str = "test-message";
/// How long the settler gathers outcomes after the first before writing them: one write then
/// settles a few hundred messages instead of a handful, which is most of what a large send asks
/// of the database. It is also how much this adds to the window the module's notes describe.
const SETTLE_GATHER: Duration = Duration::from_millis(20);
/// The longest wait between two tries at writing delivery outcomes.
const SETTLE_RETRY_CEILING: Duration = Duration::from_secs(10);

/// Everything the worker needs, built once at start.
pub struct DeliveryWorker {
    services: Services,
    pool: Arc<SmtpPool>,
    dkim: Option<Dkim>,
    settings: MailSettings,
    public_url: String,
    owner: Uuid,
    global_limit: Option<SlidingWindow>,
    domain_limit: Option<SlidingWindow>,
    compiled: std::sync::Mutex<HashMap<Uuid, Arc<Compiled>>>,
    /// The sends this worker has claimed and not yet settled or released: the only rows whose
    /// lease it renews.
    in_hand: std::sync::Mutex<HashSet<Uuid>>,
    /// When the leases in hand were last renewed (or claimed): past the lease, another worker
    /// may have claimed them, and nothing more is sent until a renewal succeeds.
    renewed_at: std::sync::Mutex<std::time::Instant>,
}

struct Compiled {
    version: EmailVersion,
    templates: CompiledEmail,
    /// Whether a message of this version needs the recipient's preferences and unsubscribe
    /// links: signing one is work per message, done only for the versions that use it
    /// (marketing mail always carries the unsubscribe link in its header).
    needs_preferences_link: bool,
    needs_unsubscribe_link: bool,
}

/// A batch after its reads: the sends settled without rendering, and the rest with what
/// rendering them needs.
struct Decided {
    settled: Vec<Outcome>,
    to_render: Vec<crate::domain::delivery::Send>,
    batch: Arc<Batch>,
}

/// One claimed send, decided: either settled without the relay, or a message to send.
enum Decision {
    Settled(Outcome),
    Send(Box<Outgoing>),
}

struct Outgoing {
    send_id: Uuid,
    attempts: i32,
    domain: String,
    envelope: Envelope,
    bytes: Vec<u8>,
    address_index: String,
    contact_id: Option<ContactId>,
    email_id: Uuid,
}

/// A settlement, the suppression that a hard bounce adds with it, and the webhook that tells
/// subscribers about it (a contact's message sent or bounced; tests tell nobody).
struct Outcome {
    settlement: Settlement,
    bounced: Option<(String, Suppression)>,
    announced: Option<Box<NewMessage>>,
}

impl DeliveryWorker {
    pub fn new(
        services: Services,
        pool: SmtpPool,
        dkim: Option<Dkim>,
        settings: MailSettings,
        public_url: String,
    ) -> Self {
        Self {
            global_limit: settings.rate_per_second.map(SlidingWindow::new),
            domain_limit: settings.domain_rate_per_second.map(SlidingWindow::new),
            services,
            pool: Arc::new(pool),
            dkim,
            settings,
            public_url,
            owner: Uuid::now_v7(),
            compiled: std::sync::Mutex::new(HashMap::new()),
            in_hand: std::sync::Mutex::new(HashSet::new()),
            renewed_at: std::sync::Mutex::new(std::time::Instant::now()),
        }
    }

    /// Delivers until `stop` turns true, then finishes the batches in hand and returns.
    pub async fn run(self, stop: watch::Receiver<bool>) {
        tracing::info!(relay = %self.pool.relay().display(), worker = %self.owner, "mail delivery started");
        let worker = Arc::new(self);
        // Renews until the lanes have finished the batches in hand, stop or not.
        let heartbeat = {
            let worker = Arc::clone(&worker);
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(worker.settings.lease / 3).await;
                    worker.renew_leases().await;
                    if let Some(limit) = &worker.domain_limit {
                        limit.forget_idle();
                    }
                }
            })
        };
        let lanes: Vec<_> = (0..LANES)
            .map(|_| {
                let worker = Arc::clone(&worker);
                let stop = stop.clone();
                tokio::spawn(async move { worker.lane(stop).await })
            })
            .collect();
        for lane in lanes {
            let _ = lane.await;
        }
        heartbeat.abort();
        worker.pool.close().await;
        tracing::info!("mail delivery stopped");
    }

    async fn lane(&self, mut stop: watch::Receiver<bool>) {
        while !*stop.borrow() {
            match self.round().await {
                Ok(0) => {
                    tokio::select! {
                        () = self.services.mail_wakeup.notified() => {}
                        () = tokio::time::sleep(POLL) => {}
                        _ = stop.changed() => {}
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::error!(error = %error, "mail delivery round failed; trying again shortly");
                    tokio::time::sleep(POLL).await;
                }
            }
        }
    }

    fn lease(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.settings.lease).unwrap_or(chrono::Duration::minutes(1))
    }

    async fn renew_leases(&self) {
        let started = std::time::Instant::now();
        let until = self.services.now() + self.lease();
        let ids: Vec<Uuid> = self.in_hand.lock().map(|ids| ids.iter().copied().collect()).unwrap_or_default();
        let renewed = async {
            let tx = self.services.db.begin_write().await?;
            store::outbox::renew_leases(&tx, self.owner, &ids, until).await?;
            tx.commit().await?;
            Ok::<_, super::Error>(())
        };
        match renewed.await {
            Ok(()) => {
                if let Ok(mut renewed_at) = self.renewed_at.lock() {
                    *renewed_at = started;
                }
            }
            Err(error) => tracing::warn!(error = %error, "cannot renew the lease on sends in hand"),
        }
    }

    /// Whether the leases in hand may have run out (renewals failing): sending then could
    /// duplicate what another worker sends.
    fn lease_in_doubt(&self) -> bool {
        // A margin for the time a message takes once it is handed to the relay.
        let safe = self.settings.lease.mul_f64(0.8);
        self.renewed_at.lock().map_or(true, |renewed_at| renewed_at.elapsed() > safe)
    }

    fn hold(&self, ids: &[Uuid]) {
        if let Ok(mut in_hand) = self.in_hand.lock() {
            in_hand.extend(ids.iter().copied());
        }
    }

    fn let_go(&self, ids: &[Uuid]) {
        if let Ok(mut in_hand) = self.in_hand.lock() {
            for id in ids {
                in_hand.remove(id);
            }
        }
    }

    /// Claims, decides, sends and settles one batch; how many sends it claimed.
    async fn round(&self) -> Result<usize> {
        let now = self.services.now();
        let claimed_at = std::time::Instant::now();
        let tx = self.services.db.begin_write().await?;
        let claimed = store::outbox::claim(&tx, self.owner, now, now + self.lease(), BATCH as u64).await?;
        tx.commit().await?;
        if claimed.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = claimed.iter().map(|send| send.id).collect();
        self.hold(&ids);
        if let Ok(mut renewed_at) = self.renewed_at.lock() {
            *renewed_at = (*renewed_at).max(claimed_at);
        }
        let delivered = match self.decide(claimed, now).await {
            Ok(decided) => {
                self.deliver_batch(decided).await;
                Ok(())
            }
            Err(error) => {
                // Nothing was sent: the batch goes back to the queue now rather than when the
                // lease runs out.
                let tx = self.services.db.begin_write().await?;
                store::outbox::release(&tx, self.owner, &ids).await?;
                tx.commit().await?;
                Err(error)
            }
        };
        self.let_go(&ids);
        delivered.map(|()| ids.len())
    }

    /// Renders and sends what was decided and settles every outcome. Rendering runs on the
    /// blocking threads, a chunk at a time on as many cores as there are, and each message goes
    /// to the relay as soon as its chunk is ready, so the cores render while the connections
    /// wait for replies. Outcomes are never dropped: a message the relay took whose row stayed
    /// unsettled would be sent again.
    async fn deliver_batch(&self, decided: Decided) {
        let (results, settler) = self.settler();
        for outcome in decided.settled {
            let _ = results.send(outcome);
        }
        let batch = decided.batch;
        let chunks: Vec<Vec<crate::domain::delivery::Send>> =
            decided.to_render.chunks(RENDER_CHUNK).map(<[_]>::to_vec).collect();
        let cores = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
        stream::iter(chunks)
            .map(|chunk| {
                let batch = Arc::clone(&batch);
                tokio::task::spawn_blocking(move || {
                    chunk.into_iter().map(|send| batch.render(send)).collect::<Vec<_>>()
                })
            })
            .buffered(cores)
            .flat_map(|rendered| {
                stream::iter(rendered.unwrap_or_else(|error| {
                    // A panic while rendering: those sends stay leased to this worker until the
                    // lease runs out, then another round tries them.
                    tracing::error!(error = %error, "rendering failed");
                    Vec::new()
                }))
            })
            .map(|decision| async move {
                match decision {
                    Decision::Settled(outcome) => Some(outcome),
                    Decision::Send(message) => self.deliver(message).await,
                }
            })
            .buffer_unordered(self.settings.smtp_connections)
            .for_each(|outcome| {
                if let Some(outcome) = outcome {
                    let _ = results.send(outcome);
                }
                std::future::ready(())
            })
            .await;
        drop(results);
        if let Err(error) = settler.await {
            tracing::error!(error = %error, "the settlement task ended abnormally");
        }
    }

    /// A task that writes outcomes as they come: each write takes those that arrived within
    /// `SETTLE_GATHER` of the first, and while it runs, the next outcomes gather.
    fn settler(&self) -> (mpsc::UnboundedSender<Outcome>, tokio::task::JoinHandle<()>) {
        let (sender, mut receiver) = mpsc::unbounded_channel::<Outcome>();
        let services = self.services.clone();
        let owner = self.owner;
        let task = tokio::spawn(async move {
            loop {
                let outcomes = gather(&mut receiver, SETTLE_GATHER, BATCH).await;
                if outcomes.is_empty() {
                    break;
                }
                // Messages in `outcomes` may be sent already: a failed write is tried again,
                // however long the database is away, or they would go out a second time.
                let mut wait = Duration::from_millis(100);
                while let Err(error) = settle(&services, owner, &outcomes).await {
                    tracing::warn!(error = %error, retry_in = ?wait, "cannot record delivery outcomes; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(SETTLE_RETRY_CEILING);
                }
            }
        });
        (sender, task)
    }

    /// Sends one message, unless the lease on it may have run out (then it is left for whoever
    /// holds it now, and `None` comes back).
    async fn deliver(&self, outgoing: Box<Outgoing>) -> Option<Outcome> {
        if let Some(limit) = &self.global_limit {
            limit.take("").await;
        }
        if self.lease_in_doubt() {
            tracing::warn!(send_id = %outgoing.send_id, "lease renewals are failing; not sending");
            return None;
        }
        let result = self.pool.send(&outgoing.envelope, &outgoing.bytes).await;
        let now = self.services.now();
        let settled = |status, attempted, detail: Option<String>, next_attempt_at| Outcome {
            announced: outgoing.contact_id.and_then(|contact_id| {
                send_webhook(status, outgoing.send_id, contact_id, outgoing.email_id, detail.as_deref()).map(Box::new)
            }),
            settlement: Settlement { id: outgoing.send_id, status, attempted, next_attempt_at, detail },
            bounced: None,
        };
        Some(match result {
            Ok(()) => settled(SendStatus::Sent, true, None, None),
            Err(SendFailure::Permanent { code, reply, mailbox_refused }) => {
                tracing::info!(send_id = %outgoing.send_id, code, domain = %outgoing.domain, "bounced");
                let mut outcome = settled(SendStatus::Bounced, true, Some(reply.clone()), None);
                if mailbox_refused {
                    let suppression = Suppression {
                        reason: SuppressionReason::HardBounce,
                        contact_id: outgoing.contact_id,
                        source: "smtp".to_owned(),
                        detail: Some(reply),
                        created_at: now,
                    };
                    outcome.bounced = Some((outgoing.address_index.clone(), suppression));
                }
                outcome
            }
            // The relay could not be used at all: that is no attempt at this message, so a long
            // outage does not use up its attempts; it waits as after a first deferral.
            Err(SendFailure::Transient { reply, relay: true }) => {
                let delay = retry_delay(self.settings.retry_base, 1, random_unit());
                tracing::warn!(send_id = %outgoing.send_id, retry_in = ?delay, reply = %reply, "relay unavailable");
                settled(SendStatus::Deferred, false, Some(reply), Some(later(now, delay)))
            }
            Err(SendFailure::Transient { reply, relay: false }) => {
                let attempts = u32::try_from(outgoing.attempts).unwrap_or(0) + 1;
                if attempts >= self.settings.max_attempts {
                    tracing::warn!(send_id = %outgoing.send_id, attempts, "deferred too often; giving up");
                    settled(SendStatus::Failed, true, Some(reply), None)
                } else {
                    let delay = retry_delay(self.settings.retry_base, attempts, random_unit());
                    tracing::info!(send_id = %outgoing.send_id, attempts, retry_in = ?delay, "deferred");
                    settled(SendStatus::Deferred, true, Some(reply), Some(later(now, delay)))
                }
            }
        })
    }

    /// Reads what the batch needs in a few set-wise queries and settles the sends that need no
    /// rendering; the rest are rendered as they are sent (`deliver_batch`).
    async fn decide(&self, claimed: Vec<crate::domain::delivery::Send>, now: DateTime<Utc>) -> Result<Decided> {
        let conn = self.services.db.connection();
        let keys = self.services.db.keys()?;
        let contact_ids: Vec<ContactId> =
            claimed.iter().filter_map(|send| send.contact_id).collect::<HashSet<_>>().into_iter().collect();
        let contacts: HashMap<ContactId, Contact> = store::contacts::by_ids(conn, keys, &contact_ids)
            .await?
            .into_iter()
            .map(|contact| (contact.id, contact))
            .collect();
        let mut topics: HashMap<ContactId, Vec<(TopicSubscription, Topic)>> = HashMap::new();
        for (subscription, topic) in store::topics::subscriptions(conn, &contact_ids).await? {
            topics.entry(subscription.contact_id).or_default().push((subscription, topic));
        }
        let mut consents: HashMap<ContactId, Vec<ConsentChange>> = HashMap::new();
        for consent in store::consents::current(conn, &contact_ids).await? {
            consents.entry(consent.contact_id).or_default().push(consent);
        }
        let recipients: HashMap<Uuid, EmailAddress> = claimed
            .iter()
            .filter_map(|send| {
                let address = send.recipient.clone().or_else(|| {
                    send.contact_id.and_then(|id| contacts.get(&id)).and_then(|contact| contact.email.clone())
                })?;
                Some((send.id, address))
            })
            .collect();
        let indexes: HashMap<Uuid, String> =
            recipients.iter().map(|(id, address)| (*id, store::contacts::email_index(keys, address))).collect();
        let unique_indexes: Vec<String> = indexes.values().cloned().collect::<HashSet<_>>().into_iter().collect();
        let suppressions = store::outbox::suppressions_of(conn, &unique_indexes).await?;
        let compiled = self.compiled_versions(&claimed).await?;

        let batch = Batch {
            contacts,
            topics,
            consents,
            recipients,
            indexes,
            suppressions,
            compiled,
            now,
            signer: self.services.link_signer()?,
            tracking_keys: self.services.tracking_keys()?,
            public_url: self.public_url.trim_end_matches('/').to_owned(),
            dkim: self.dkim.clone(),
        };
        let mut settled = Vec::new();
        let mut to_render = Vec::new();
        for send in claimed {
            match self.precheck(&batch, &send) {
                Some(outcome) => settled.push(outcome),
                None => to_render.push(send),
            }
        }
        Ok(Decided { settled, to_render, batch: Arc::new(batch) })
    }

    /// The rules that settle a send without rendering it, in the order they apply.
    fn precheck(&self, batch: &Batch, send: &crate::domain::delivery::Send) -> Option<Outcome> {
        let settle = |status: SendStatus, detail: &str| {
            Some(Outcome {
                settlement: Settlement {
                    id: send.id,
                    status,
                    attempted: false,
                    next_attempt_at: None,
                    detail: Some(detail.to_owned()),
                },
                bounced: None,
                announced: None,
            })
        };
        let contact = send.contact_id.and_then(|id| batch.contacts.get(&id));
        if send.contact_id.is_some() && contact.is_none() {
            return settle(SendStatus::Skipped, "the contact no longer exists");
        }
        let Some(address) = batch.recipients.get(&send.id) else {
            return settle(SendStatus::Skipped, "the contact has no email address");
        };
        let is_test = send.recipient.is_some();
        // Tests go to staff: only what stops all mail to an address applies to them.
        let effective_type = if is_test { EmailType::Transactional } else { send.email_type };
        let suppressed = batch
            .indexes
            .get(&send.id)
            .and_then(|index| batch.suppressions.get(index))
            .and_then(|entries| entries.iter().find(|entry| entry.reason.blocks(effective_type)));
        if let Some(entry) = suppressed {
            return settle(SendStatus::Suppressed, &format!("the address is suppressed ({})", entry.reason));
        }
        if !is_test && send.email_type == EmailType::Marketing && !batch.has_marketing_consent(send.contact_id) {
            return settle(SendStatus::SkippedNoConsent, "email marketing consent is not granted");
        }
        let domain = address.as_str().rsplit_once('@').map(|(_, domain)| domain.to_owned()).unwrap_or_default();
        if let Some(limit) = &self.domain_limit
            && let Err(wait) = limit.try_take(&domain)
        {
            return Some(Outcome {
                settlement: Settlement {
                    id: send.id,
                    status: send.status,
                    attempted: false,
                    // Rounded, so that the sends to a domain held back together share the time
                    // and are written back in one statement.
                    next_attempt_at: Some(tenth_of_a_second_up(later(batch.now, wait))),
                    detail: send.detail.clone(),
                },
                bounced: None,
                announced: None,
            });
        }
        None
    }

    /// The compiled templates of every version in the batch, compiling those not seen before.
    async fn compiled_versions(
        &self,
        claimed: &[crate::domain::delivery::Send],
    ) -> Result<HashMap<Uuid, Arc<Compiled>>> {
        let wanted: HashSet<Uuid> = claimed.iter().map(|send| send.email_version_id).collect();
        let mut found = HashMap::new();
        let mut missing = Vec::new();
        if let Ok(cache) = self.compiled.lock() {
            for id in &wanted {
                match cache.get(id) {
                    Some(compiled) => {
                        found.insert(*id, Arc::clone(compiled));
                    }
                    None => missing.push(*id),
                }
            }
        }
        for id in missing {
            let Some(version) = store::emails::version_by_id(self.services.db.connection(), id).await? else {
                continue;
            };
            // A version that does not compile was refused when it was saved; if one ever does
            // not, its sends are skipped with the reason (see `Batch::render`).
            let Ok(templates) = CompiledEmail::compile(&version.content) else { continue };
            let needs_preferences_link = templates.refers_to("links.preferences");
            let needs_unsubscribe_link =
                version.email_type == EmailType::Marketing || templates.refers_to("links.unsubscribe");
            let compiled = Arc::new(Compiled { version, templates, needs_preferences_link, needs_unsubscribe_link });
            if let Ok(mut cache) = self.compiled.lock() {
                if cache.len() >= COMPILED_VERSIONS {
                    cache.clear();
                }
                cache.insert(id, Arc::clone(&compiled));
            }
            found.insert(id, compiled);
        }
        Ok(found)
    }
}

/// Writes outcomes in one transaction, with the suppressions their hard bounces add.
async fn settle(services: &Services, owner: Uuid, outcomes: &[Outcome]) -> Result<()> {
    let now = services.now();
    let tx = services.db.begin_write().await?;
    for (index, suppression) in outcomes.iter().filter_map(|outcome| outcome.bounced.as_ref()) {
        store::outbox::suppress(&tx, index, suppression).await?;
    }
    let settlements: Vec<Settlement> = outcomes.iter().map(|outcome| outcome.settlement.clone()).collect();
    store::outbox::settle(&tx, owner, now, &settlements).await?;
    let announced: Vec<NewMessage> =
        outcomes.iter().filter_map(|outcome| outcome.announced.as_deref().cloned()).collect();
    store::webhooks::record_all(&tx, announced, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Waits for a first item, then takes those that follow within `window` of it, up to `most` in
/// all. Every sender gone ends the wait at once; empty means they were gone before any came.
async fn gather<T>(receiver: &mut mpsc::UnboundedReceiver<T>, window: Duration, most: usize) -> Vec<T> {
    let mut gathered = Vec::new();
    if receiver.recv_many(&mut gathered, most).await == 0 {
        return gathered;
    }
    let until = tokio::time::Instant::now() + window;
    while gathered.len() < most {
        let room = most - gathered.len();
        match tokio::time::timeout_at(until, receiver.recv_many(&mut gathered, room)).await {
            Ok(received) if received > 0 => {}
            _ => break,
        }
    }
    gathered
}

/// What one batch's decisions and renders read, gathered up front.
struct Batch {
    contacts: HashMap<ContactId, Contact>,
    topics: HashMap<ContactId, Vec<(TopicSubscription, Topic)>>,
    consents: HashMap<ContactId, Vec<ConsentChange>>,
    recipients: HashMap<Uuid, EmailAddress>,
    indexes: HashMap<Uuid, String>,
    suppressions: HashMap<String, Vec<Suppression>>,
    compiled: HashMap<Uuid, Arc<Compiled>>,
    now: DateTime<Utc>,
    signer: LinkSigner,
    tracking_keys: TrackingKeys,
    public_url: String,
    dkim: Option<Dkim>,
}

impl Batch {
    fn has_marketing_consent(&self, contact_id: Option<ContactId>) -> bool {
        let consents = contact_id.and_then(|id| self.consents.get(&id)).map(Vec::as_slice).unwrap_or_default();
        email_marketing(consents) == Some(ConsentStatus::Granted)
    }

    fn render(&self, send: crate::domain::delivery::Send) -> Decision {
        let skip = |detail: String| {
            Decision::Settled(Outcome {
                settlement: Settlement {
                    id: send.id,
                    status: SendStatus::Skipped,
                    attempted: false,
                    next_attempt_at: None,
                    detail: Some(detail),
                },
                bounced: None,
                announced: None,
            })
        };
        let Some(compiled) = self.compiled.get(&send.email_version_id) else {
            return skip("the email version cannot be read or compiled".to_owned());
        };
        let Some(address) = self.recipients.get(&send.id) else {
            return skip("the contact has no email address".to_owned());
        };
        let blank;
        let contact = match send.contact_id.and_then(|id| self.contacts.get(&id)) {
            Some(contact) => contact,
            None => {
                blank = render::blank_contact();
                &blank
            }
        };
        let topics = send.contact_id.and_then(|id| self.topics.get(&id)).map(Vec::as_slice).unwrap_or_default();
        let consents = send.contact_id.and_then(|id| self.consents.get(&id)).map(Vec::as_slice).unwrap_or_default();
        let version = &compiled.version;
        let is_test = send.recipient.is_some();
        // A test goes to staff: its links must not act for the contact it was rendered for (a
        // mailbox's unsubscribe button pressed on a test, say). They show the invalid-link page.
        let link = |page: &str, purpose: ContactTokenPurpose| match send.contact_id {
            _ if is_test => Some(format!("{}/{page}/{TEST_TOKEN}", self.public_url)),
            Some(contact_id) => {
                let token = self.signer.sign(contact_id, purpose, self.now);
                Some(format!("{}/{page}/{}", self.public_url, token.token))
            }
            None => None,
        };
        let links = Links {
            preferences: compiled
                .needs_preferences_link
                .then(|| link("preferences", ContactTokenPurpose::Preferences))
                .flatten(),
            unsubscribe: compiled
                .needs_unsubscribe_link
                .then(|| link("unsubscribe", ContactTokenPurpose::Unsubscribe))
                .flatten(),
        };
        let event = send.context.as_ref().map(|event| event.as_map());
        let input = RenderInput { contact, topics, consents, event, links: &links };
        let tracking = send.contact_id.filter(|_| version.tracking && !is_test).map(|contact_id| Tracking {
            public_url: &self.public_url,
            send: TrackedSend { send_id: send.id, contact_id, email_version_id: version.id },
            keys: &self.tracking_keys,
        });
        let finish = |html: String, make_text: bool| match &tracking {
            Some(tracking) if make_text => {
                let (html, text) = tracking::instrument_with_text(&html, tracking);
                (html, Some(text))
            }
            Some(tracking) => (tracking::instrument(&html, tracking), None),
            None => {
                let text = make_text.then(|| text::from_html(&html));
                (html, text)
            }
        };
        let mut rendered = match compiled.templates.render_with(input, finish) {
            Ok(rendered) => rendered,
            Err(error) => return skip(format!("cannot render: {error}")),
        };
        if is_test {
            rendered.subject = format!("[Test] {}", rendered.subject);
        }
        // Only marketing mail carries the header; transactional mail has its links in the body.
        let unsubscribe_url = links.unsubscribe.clone().filter(|_| version.email_type == EmailType::Marketing);
        let message_id = send.message_id.clone().unwrap_or_else(|| format!("<{}@rapport.invalid>", send.id.simple()));
        let addressing = Addressing {
            message_id: &message_id,
            from: &version.from,
            reply_to: version.reply_to.as_ref(),
            to: address,
            to_name: if is_test { None } else { display_name(&contact.profile) },
            unsubscribe_url,
            date: SystemTime::from(self.now),
        };
        match message::build(&addressing, &rendered, self.dkim.as_ref()) {
            Ok((envelope, bytes)) => Decision::Send(Box::new(Outgoing {
                send_id: send.id,
                attempts: send.attempts,
                domain: address.as_str().rsplit_once('@').map(|(_, domain)| domain.to_owned()).unwrap_or_default(),
                envelope,
                bytes,
                address_index: self.indexes.get(&send.id).cloned().unwrap_or_default(),
                // A test's bounce is of a staff address, not of the contact it was rendered for.
                contact_id: if is_test { None } else { send.contact_id },
                email_id: send.email_id,
            })),
            Err(error) => skip(error.to_string()),
        }
    }
}

/// The `email.sent` or `email.bounced` webhook of a contact's send, for those outcomes.
fn send_webhook(
    status: SendStatus,
    send_id: Uuid,
    contact_id: ContactId,
    email_id: Uuid,
    reply: Option<&str>,
) -> Option<NewMessage> {
    let (event_type, reply) = match status {
        SendStatus::Sent => (WebhookEventType::EmailSent, None),
        SendStatus::Bounced => (WebhookEventType::EmailBounced, reply),
        _ => return None,
    };
    let mut data = serde_json::json!({ "sendId": send_id, "contactId": contact_id.to_string(), "emailId": email_id });
    if let Some(reply) = reply {
        data["reply"] = reply.into();
    }
    Some(NewMessage { event_type, ordering_key: contact_id.to_string(), data })
}

/// "First Last", or whichever of them the contact has.
fn display_name(profile: &Profile) -> Option<String> {
    let parts: Vec<&str> = [profile.first_name.as_ref(), profile.last_name.as_ref()]
        .into_iter()
        .flatten()
        .map(|name| name.as_str())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

fn later(now: DateTime<Utc>, delay: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::hours(6))
}

fn tenth_of_a_second_up(at: DateTime<Utc>) -> DateTime<Utc> {
    const TENTH: i64 = 100_000;
    let micros = at.timestamp_micros();
    DateTime::from_timestamp_micros((micros + TENTH - 1).div_euclid(TENTH) * TENTH).unwrap_or(at)
}

/// A number in [0, 1) for jitter; the operating system's generator, so no seeding to get wrong.
fn random_unit() -> f64 {
    getrandom::u64().map_or(0.5, |bits| (bits >> 11) as f64 / (1u64 << 53) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Longer than any test runs: a gathering that ends ended for another reason.
    const FOREVER: Duration = Duration::from_secs(3600);

    #[tokio::test]
    async fn outcomes_that_come_while_gathering_are_written_together() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        sender.send(1).expect("the receiver is there");
        let later = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            sender.send(2).expect("the receiver is there");
            tokio::time::sleep(Duration::from_millis(5)).await;
            sender.send(3).expect("the receiver is there");
        });
        // The batch finishing (its sender gone) ends the gathering, not the window.
        assert_eq!(gather(&mut receiver, FOREVER, 100).await, [1, 2, 3]);
        later.await.expect("the sender ran");
        assert!(gather(&mut receiver, FOREVER, 100).await.is_empty());
    }

    #[tokio::test]
    async fn the_window_ends_a_gathering_while_sends_go_on() {
        let (sender, mut receiver) = mpsc::unbounded_channel();
        sender.send(1).expect("the receiver is there");
        // The sender stays: only the window can end this one.
        assert_eq!(gather(&mut receiver, Duration::from_millis(10), 100).await, [1]);
        for item in 2..7 {
            sender.send(item).expect("the receiver is there");
        }
        assert_eq!(gather(&mut receiver, FOREVER, 3).await, [2, 3, 4], "a full gathering is written at once");
        assert_eq!(gather(&mut receiver, Duration::from_millis(10), 3).await, [5, 6]);
    }
}
