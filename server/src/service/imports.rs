//! Contact imports. A CSV file of any size is parsed on a blocking thread of its own into
//! batches of rows, while the batch before is written set-wise in one transaction: a few
//! statements per batch, never one per row, and never more than a few batches in memory. The
//! parsing thread also decides each batch as if none of its rows named a stored contact, and
//! builds and seals the rows of the contacts it would then create, so that the writer, whose
//! turns with the database are the import's critical path, only has to read whether that holds
//! and send those rows: the common case of a file of new contacts. A bad row is reported (line,
//! column, reason) and the rest go on; the run is recorded as one import with its counts and one
//! audit entry, and remembers every contact it touched: those it creates name it in their row,
//! stored ones it matched are linked to it.

use std::{
    collections::{HashMap, HashSet},
    io::Read,
    sync::Arc,
};

use chrono::{DateTime, Utc};
use futures_util::{FutureExt, StreamExt, stream::FuturesOrdered};
use sea_orm::DbBackend;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::instrument;
use uuid::Uuid;

use super::{Actor, Clock, Error, RequestContext, Result, Services, contacts::contact_changes, stored_now};
use crate::{
    audit::{self, Changes},
    crypto::KeyRing,
    domain::{
        access::Permission,
        contact::{Attributes, Contact, ContactId, EmailAddress, ExternalId, PhoneNumber, Profile},
        field::FieldDefinition,
        import::{ColumnMap, Import, ImportCounts, ImportKey, ImportRow, ImportStatus, MappingError, RowError, Target},
        key::Key,
        page::{Page, PageRequest},
        webhook::{WebhookEndpoint, WebhookEventType},
    },
    store::{
        self,
        contacts::{self as contacts_store, FieldSecrecy, NewContact, PreparedContact},
        imports as repository,
        webhooks::NewMessage,
    },
};

/// Rows per transaction: large enough that the per-batch statements cost little per row, small
/// enough that a batch holds its locks briefly and its memory stays small.
pub const DEFAULT_BATCH_ROWS: usize = 2_000;

/// Batches the parser may run ahead of the writer: both stay busy, memory stays flat.
const BATCHES_AHEAD: usize = 2;

/// How an import reads its file.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// The file's name as the operator knows it, for the record.
    pub file_name: String,
    pub key: ImportKey,
    /// `(column, field)` pairs that override matching columns to fields by header name.
    pub mapping: Vec<(String, String)>,
    /// Drop columns that match no field instead of refusing the file.
    pub ignore_unknown: bool,
    pub batch_rows: usize,
}

impl ImportOptions {
    pub fn new(file_name: impl Into<String>, key: ImportKey) -> Self {
        Self {
            file_name: file_name.into(),
            key,
            mapping: Vec::new(),
            ignore_unknown: false,
            batch_rows: DEFAULT_BATCH_ROWS,
        }
    }
}

/// Where a running import stands, told to the caller after every committed batch.
#[derive(Debug, Clone, Copy)]
pub struct ImportProgress {
    /// Bytes of the file parsed so far (of its size, for a progress bar).
    pub bytes_read: u64,
    pub counts: ImportCounts,
}

/// What the parsing thread hands the writer.
enum Parsed {
    /// The header mapped (or why not); always the first message.
    Header(std::result::Result<ColumnMap, MappingError>),
    Batch {
        rows: Vec<ImportRow>,
        ahead: Ahead,
        rejected: Vec<RowError>,
        bytes_read: u64,
    },
    /// The file cannot be read on (an I/O error); what came before stays imported.
    Unreadable(String),
}

impl Services {
    /// Imports the contacts of a CSV file: rows upsert by `options.key`, bad rows are rejected
    /// one by one, and `observe` hears after every committed batch (with that batch's rejected
    /// rows, for a report). A file whose columns cannot be mapped is refused before anything is
    /// recorded; a failure midway keeps the committed batches, and the run says so.
    #[instrument(skip_all, fields(request_id = %ctx.request_id))]
    pub async fn import_contacts<R: Read + Send + 'static>(
        &self,
        ctx: &RequestContext,
        source: R,
        options: ImportOptions,
        mut observe: impl FnMut(&ImportProgress, &[RowError]) + Send,
    ) -> Result<Import> {
        self.require(ctx, Permission::ProfilesWrite)?;
        let file_name = file_name(&options.file_name);
        let definitions = store::fields::by_key(self.db.connection()).await?;
        let keys = self.db.shared_keys()?;
        let import_id = Uuid::now_v7();
        // Before the parser starts: the contacts it prepares take their batch's time.
        let started_at = self.now();
        let (sender, mut receiver) = mpsc::channel(BATCHES_AHEAD);
        let parser = {
            let definitions = definitions.clone();
            let options = options.clone();
            let clock = Arc::clone(&self.clock);
            let backend = self.db.backend();
            tokio::task::spawn_blocking(move || {
                let context = ParseContext {
                    backend,
                    import_id,
                    definitions: &definitions,
                    options: &options,
                    keys: &keys,
                    clock: &*clock,
                };
                parse_file(source, &context, &sender);
            })
        };
        let columns = match receiver.recv().await {
            Some(Parsed::Header(Ok(columns))) => columns,
            Some(Parsed::Header(Err(error))) => return Err(Error::validation("file", error)),
            Some(Parsed::Unreadable(reason)) => return Err(Error::validation("file", reason)),
            Some(Parsed::Batch { .. }) | None => return Err(Error::validation("file", "the file is empty")),
        };
        let (actor_kind, actor_id) = audit::actor_parts(&ctx.actor);
        let mut import = Import {
            id: import_id,
            file_name,
            key: options.key,
            actor_kind: actor_kind.to_owned(),
            actor_id,
            request_id: ctx.request_id.clone(),
            status: ImportStatus::Running,
            started_at,
            finished_at: None,
            counts: ImportCounts::default(),
            failure: None,
        };
        repository::insert(self.db.connection(), &import).await?;
        tracing::info!(import_id = %import.id, "import started");

        let mut outcome = self.write_batches(&mut import, &definitions, &columns, &mut receiver, &mut observe).await;
        // Stops the parser if the writer gave up early. A parser that died would look like the
        // end of the file: it must fail the run instead.
        drop(receiver);
        if let Err(error) = parser.await
            && outcome.is_ok()
        {
            outcome = Err(Error::Internal(anyhow::anyhow!("the CSV parser stopped: {error}")));
        }

        import.finished_at = Some(self.now());
        match &outcome {
            Ok(()) => import.status = ImportStatus::Completed,
            Err(error) => {
                import.status = ImportStatus::Failed;
                import.failure = Some(match error {
                    Error::Validation { reason, .. } => reason.clone(),
                    _ => format!("internal error; the log has the cause under request id {}", ctx.request_id),
                });
                tracing::error!(import_id = %import.id, error = ?error, "import failed");
            }
        }
        let tx = self.db.begin_write().await?;
        repository::save(&tx, &import).await?;
        audit::append(&tx, ctx, self.now(), import_entry(&import)).await?;
        tx.commit().await?;
        let counts = import.counts;
        tracing::info!(
            import_id = %import.id, rows = counts.rows, created = counts.created, updated = counts.updated,
            unchanged = counts.unchanged, rejected = counts.rejected, status = %import.status, "import finished"
        );
        outcome.map(|()| import)
    }

    /// Marks failed the running imports that committed no batch for `IMPORT_STALLS_AFTER`: their
    /// process died (a crash, a kill, a machine lost). Each gets its closing audit entry, as a
    /// run that ends does; how many there were.
    pub async fn fail_stalled_imports(&self) -> Result<usize> {
        let now = self.now();
        let failure = format!(
            "interrupted: no batch committed for {} minutes (the process running it stopped); \
             the batches committed before stay imported, running the file again adds the rest",
            IMPORT_STALLS_AFTER.num_minutes()
        );
        let stalled_before = now - IMPORT_STALLS_AFTER;
        // A read first: most looks find nothing, and need not wait for SQLite's one writer.
        if !repository::any_stalled(self.db.connection(), stalled_before).await? {
            return Ok(0);
        }
        let tx = self.db.begin_write().await?;
        let failed = repository::fail_stalled(&tx, stalled_before, now, &failure).await?;
        let ctx = RequestContext::internal(Actor::Cli, "import-sweeper");
        for import in &failed {
            audit::append(&tx, &ctx, now, import_entry(import)).await?;
        }
        tx.commit().await?;
        for import in &failed {
            tracing::warn!(import_id = %import.id, "import interrupted: marked failed");
        }
        Ok(failed.len())
    }

    pub async fn find_import(&self, ctx: &RequestContext, id: Uuid) -> Result<Option<Import>> {
        self.require(ctx, Permission::ProfilesRead)?;
        Ok(repository::find(self.db.connection(), id).await?)
    }

    /// Runs of imports, newest first.
    pub async fn list_imports(&self, ctx: &RequestContext, page: &PageRequest<Uuid>) -> Result<Page<Import>> {
        self.require(ctx, Permission::ProfilesRead)?;
        Ok(repository::page(self.db.connection(), page).await?)
    }

    /// The rows a run rejected, in file order, after line `after_line`.
    pub async fn import_rejections(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        after_line: Option<u64>,
        limit: u64,
    ) -> Result<Vec<RowError>> {
        self.require(ctx, Permission::ProfilesRead)?;
        Ok(repository::rejections(self.db.connection(), id, after_line, limit).await?)
    }

    /// Writes the parsed batches in file order, one transaction each. On PostgreSQL the next
    /// batch starts beside one still being written when the two cannot meet: the one before
    /// only creates contacts (so it frees no address or id that a later row could take) and the
    /// two name no email address or external id in common. Each then reads what it would have
    /// read after the other, so the outcome is that of writing them one by one, while the
    /// database works on two batches' statements at once. SQLite has one writer: there batches
    /// go one by one. Progress is told in file order; after a failure, batches already being
    /// written are still counted, and nothing after them is started.
    async fn write_batches(
        &self,
        import: &mut Import,
        definitions: &HashMap<Key, FieldDefinition>,
        columns: &ColumnMap,
        receiver: &mut mpsc::Receiver<Parsed>,
        observe: &mut (impl FnMut(&ImportProgress, &[RowError]) + Send),
    ) -> Result<()> {
        let at_once = if self.db.backend() == DbBackend::Postgres { 2 } else { 1 };
        let mut writing = FuturesOrdered::new();
        let mut failure: Option<Error> = None;
        let mut previous: Option<Started> = None;
        let mut parsing = true;
        loop {
            let room = parsing && failure.is_none() && writing.len() < at_once;
            if !room && writing.is_empty() {
                break;
            }
            tokio::select! {
                biased;
                Some(outcome) = writing.next(), if !writing.is_empty() => {
                    settle(outcome, import, &mut failure, observe);
                }
                parsed = receiver.recv(), if room => {
                    let (rows, ahead, rejected, bytes_read) = match parsed {
                        Some(Parsed::Batch { rows, ahead, rejected, bytes_read }) => (rows, ahead, rejected, bytes_read),
                        Some(Parsed::Unreadable(reason)) => {
                            // Batches before it come first, their failures too.
                            while let Some(outcome) = writing.next().await {
                                settle(outcome, import, &mut failure, observe);
                            }
                            failure.get_or_insert(Error::validation("file", reason));
                            continue;
                        }
                        Some(Parsed::Header(_)) => continue,
                        None => {
                            parsing = false;
                            continue;
                        }
                    };
                    let keys = row_keys(&rows);
                    if let Some(before) = previous.take()
                        && !writing.is_empty()
                    {
                        let mut overtakable = before.keys.is_disjoint(&keys);
                        if overtakable {
                            // The batch before says whether it only creates once it has read.
                            let mut planned = before.only_creates;
                            overtakable = loop {
                                tokio::select! {
                                    only_creates = &mut planned => break only_creates.unwrap_or(false),
                                    Some(outcome) = writing.next() => settle(outcome, import, &mut failure, observe),
                                }
                            };
                        }
                        if !overtakable {
                            while let Some(outcome) = writing.next().await {
                                settle(outcome, import, &mut failure, observe);
                            }
                        }
                        if failure.is_some() {
                            continue;
                        }
                    }
                    let (only_creates, told) = oneshot::channel();
                    let written = self.write_batch(import.id, definitions, columns, rows, ahead, rejected, only_creates);
                    writing.push_back(written.map(move |outcome| outcome.map(|(counts, rejected)| Written { counts, rejected, bytes_read })));
                    previous = Some(Started { keys, only_creates: told });
                }
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Writes one batch, trying again from a fresh read if a concurrent writer took one of its
    /// new identifiers between our read and our insert. `only_creates` hears, once the batch
    /// has read its contacts, whether all it writes is new contacts.
    #[allow(clippy::too_many_arguments)]
    async fn write_batch(
        &self,
        import_id: Uuid,
        definitions: &HashMap<Key, FieldDefinition>,
        columns: &ColumnMap,
        rows: Vec<ImportRow>,
        mut ahead: Ahead,
        parse_rejected: Vec<RowError>,
        only_creates: oneshot::Sender<bool>,
    ) -> Result<(ImportCounts, Vec<RowError>)> {
        let mut only_creates = Promise::Unsaid(only_creates);
        let mut attempts_left = 3;
        loop {
            attempts_left -= 1;
            let attempt = self.try_write_batch(
                import_id,
                definitions,
                columns,
                &rows,
                &mut ahead,
                parse_rejected.clone(),
                &mut only_creates,
            );
            match attempt.await {
                Err(Error::Conflict { .. }) if attempts_left > 0 => {}
                outcome => return outcome,
            }
        }
    }

    /// One try at a batch. The first try uses up the contacts prepared ahead, whether it commits
    /// or not; a later try builds again whatever it needs.
    #[allow(clippy::too_many_arguments)]
    async fn try_write_batch(
        &self,
        import_id: Uuid,
        definitions: &HashMap<Key, FieldDefinition>,
        columns: &ColumnMap,
        rows: &[ImportRow],
        ahead: &mut Ahead,
        mut rejected: Vec<RowError>,
        only_creates: &mut Promise,
    ) -> Result<(ImportCounts, Vec<RowError>)> {
        let keys = self.db.keys()?;
        let now = self.now();
        let emails: Vec<(&EmailAddress, &str)> =
            ahead.email_indexes.iter().map(|(email, index)| (email, index.as_str())).collect();
        let external_ids: Vec<&ExternalId> = rows.iter().filter_map(|row| row.external_id.as_ref()).collect();
        let phones: Vec<&PhoneNumber> = rows.iter().filter_map(|row| row.profile.phone.as_ref()).collect();
        let tx = self.db.begin_write().await?;
        let existing = contacts_store::find_for_update(&tx, keys, &emails, &external_ids).await?;
        let (erased_emails, erased_phones) = contacts_store::erased_among(&tx, keys, &emails, &phones).await?;
        let mut counts = ImportCounts { rows: (rows.len() + rejected.len()) as u64, ..ImportCounts::default() };
        let as_planned = existing.is_empty() && erased_emails.is_empty() && erased_phones.is_empty();
        let (created, updated, stored_matched) = if as_planned && let Some(planned) = ahead.planned.take() {
            // Nothing stored meets the batch: the parsing thread's decision stands as it is.
            counts.created = planned.counts.created;
            counts.updated = planned.counts.updated;
            counts.unchanged = planned.counts.unchanged;
            rejected.extend(planned.rejected);
            let created: Vec<NewContact> = planned.created.into_iter().map(NewContact::Prepared).collect();
            (created, Vec::new(), Vec::new())
        } else {
            let mut plan = BatchPlan::new(existing, columns, definitions, now);
            plan.erased_emails = erased_emails;
            plan.erased_phones = erased_phones;
            plan.apply_all(rows, &ahead.candidates, &mut counts, &mut rejected);
            let stored_matched = std::mem::take(&mut plan.stored_matched);
            let (created, updated) = plan.into_changes();
            // A contact created as the parsing thread foresaw keeps the row it built.
            let mut prepared: HashMap<ContactId, PreparedContact> = ahead
                .planned
                .take()
                .map(|planned| planned.created.into_iter().map(|contact| (contact.contact().id, contact)).collect())
                .unwrap_or_default();
            let created: Vec<NewContact> = created
                .into_iter()
                .map(|contact| match prepared.remove(&contact.id) {
                    Some(ahead) if ahead.holds(&contact) => NewContact::Prepared(ahead),
                    _ => NewContact::Plain(contact),
                })
                .collect();
            (created, updated, stored_matched)
        };
        rejected.sort_by_key(|error| error.line);
        counts.rejected = rejected.len() as u64;

        only_creates.keep(updated.is_empty())?;
        let endpoints = store::webhooks::endpoints(&tx).await?;
        let announced = announcements(&endpoints, definitions, import_id, &created, &updated);
        contacts_store::insert_many(&tx, keys, created, Some(import_id)).await?;
        contacts_store::update_many(&tx, keys, &updated).await?;
        repository::link(&tx, import_id, &stored_matched).await?;
        repository::reject(&tx, import_id, &rejected).await?;
        repository::add_counts(&tx, import_id, &counts, now).await?;
        store::webhooks::record_for(&tx, &endpoints, announced, now).await?;
        tx.commit().await?;
        Ok((counts, rejected))
    }
}

/// The `contact.created` and `contact.updated` webhooks of a batch, described as a change made
/// through the API describes them, with the import's id. They are built only when some endpoint
/// wants them: an import nobody listens to pays one read of the endpoints per batch.
fn announcements(
    endpoints: &[WebhookEndpoint],
    definitions: &HashMap<Key, FieldDefinition>,
    import_id: Uuid,
    created: &[NewContact],
    updated: &[(Contact, Contact)],
) -> Vec<NewMessage> {
    let wanted = |event_type| endpoints.iter().any(|endpoint| endpoint.wants(event_type));
    let announce = |event_type, before: Option<&Contact>, after: &Contact| NewMessage {
        event_type,
        ordering_key: after.id.to_string(),
        data: serde_json::json!({
            "contactId": after.id.to_string(),
            "changes": contact_changes(before, Some(after), definitions).to_json(),
            "importId": import_id,
        }),
    };
    let mut messages = Vec::new();
    if wanted(WebhookEventType::ContactCreated) {
        let new = created.iter().map(|contact| announce(WebhookEventType::ContactCreated, None, contact.contact()));
        messages.extend(new);
    }
    if wanted(WebhookEventType::ContactUpdated) {
        let changed =
            updated.iter().map(|(before, after)| announce(WebhookEventType::ContactUpdated, Some(before), after));
        messages.extend(changed);
    }
    messages
}

/// A batch's outcome, with how far into the file it reaches.
struct Written {
    counts: ImportCounts,
    rejected: Vec<RowError>,
    bytes_read: u64,
}

/// What a batch told the writer about itself: whether all it writes is new contacts. Once it
/// has said so, the next batch may be running beside it, so a retry (after another writer took
/// one of its identifiers) that would now change stored contacts fails the batch instead of
/// racing the next one to them.
enum Promise {
    Unsaid(oneshot::Sender<bool>),
    Said(bool),
}

impl Promise {
    fn keep(&mut self, only_creates: bool) -> Result<()> {
        match std::mem::replace(self, Promise::Said(only_creates)) {
            Promise::Unsaid(sender) => {
                // The writer may have gone on without waiting: nobody listening is fine.
                let _ = sender.send(only_creates);
                Ok(())
            }
            Promise::Said(true) if !only_creates => {
                *self = Promise::Said(true);
                Err(Error::validation(
                    "file",
                    "rows met contacts that another writer changed during the import; import the file again",
                ))
            }
            Promise::Said(said) => {
                *self = Promise::Said(said);
                Ok(())
            }
        }
    }
}

/// The batch started last: what it names, and whether it may be overtaken (see `write_batches`).
struct Started {
    keys: HashSet<String>,
    only_creates: oneshot::Receiver<bool>,
}

/// Counts a written batch and tells the caller, or keeps the first failure.
fn settle(
    outcome: Result<Written>,
    import: &mut Import,
    failure: &mut Option<Error>,
    observe: &mut (impl FnMut(&ImportProgress, &[RowError]) + Send),
) {
    match outcome {
        Ok(written) => {
            import.counts.add(&written.counts);
            observe(&ImportProgress { bytes_read: written.bytes_read, counts: import.counts }, &written.rejected);
        }
        Err(error) => match failure {
            Some(first) => {
                tracing::error!(import_id = %import.id, error = ?error, first = ?first, "a later batch failed too")
            }
            None => *failure = Some(error),
        },
    }
}

/// The email addresses and external ids that rows name, each marked with its kind.
fn row_keys(rows: &[ImportRow]) -> HashSet<String> {
    let mut keys = HashSet::with_capacity(rows.len() * 2);
    for row in rows {
        if let Some(email) = &row.email {
            keys.insert(format!("e:{}", email.as_str()));
        }
        if let Some(id) = &row.external_id {
            keys.insert(format!("x:{}", id.as_str()));
        }
    }
    keys
}

/// How long a running import may go without committing a batch before it counts as interrupted:
/// far longer than a batch takes, even on a loaded database.
pub const IMPORT_STALLS_AFTER: chrono::Duration = chrono::Duration::minutes(15);
/// How often `serve` looks for interrupted imports.
const STALLED_IMPORTS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Runs [`Services::fail_stalled_imports`] every `STALLED_IMPORTS_EVERY` until `stop`. The
/// first look waits too: a run interrupted by this process's predecessor has stalled for at
/// most a few minutes by the time it restarts.
pub async fn keep_failing_stalled_imports(services: Services, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(STALLED_IMPORTS_EVERY) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        if let Err(error) = services.fail_stalled_imports().await {
            tracing::warn!(error = %error, "looking for interrupted imports failed");
        }
    }
}

/// The one audit entry of a run: what was imported and how it went, never a contact's data.
fn import_entry(import: &Import) -> audit::Entry {
    let mut changes = Changes::new();
    let counts = import.counts;
    changes
        .field("fileName", None, Some(Value::from(import.file_name.as_str())))
        .field("key", None, Some(Value::from(import.key.as_str())))
        .field("status", None, Some(Value::from(import.status.as_str())))
        .field("rows", None, Some(Value::from(counts.rows)))
        .field("created", None, Some(Value::from(counts.created)))
        .field("updated", None, Some(Value::from(counts.updated)))
        .field("unchanged", None, Some(Value::from(counts.unchanged)))
        .field("rejected", None, Some(Value::from(counts.rejected)));
    audit::Entry::new("contacts.imported", "import", import.id.to_string(), changes)
}

/// The last component of the name the file was given, bounded, for the record.
fn file_name(raw: &str) -> String {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or(raw).trim();
    let name: String = name.chars().filter(|c| !c.is_control()).take(255).collect();
    if name.is_empty() { "contacts.csv".to_owned() } else { name }
}

/// What the parsing thread works with.
struct ParseContext<'a> {
    backend: DbBackend,
    import_id: Uuid,
    definitions: &'a HashMap<Key, FieldDefinition>,
    options: &'a ImportOptions,
    keys: &'a KeyRing,
    clock: &'a dyn Clock,
}

/// Reads the file on a blocking thread and sends batches of parsed rows, each with what is
/// worked out ahead for it, until the file ends, the file cannot be read on, or the writer stops
/// listening.
fn parse_file(source: impl Read, context: &ParseContext<'_>, sender: &mpsc::Sender<Parsed>) {
    let ParseContext { definitions, options, .. } = *context;
    let mut reader = csv::ReaderBuilder::new().flexible(true).has_headers(true).from_reader(source);
    let header = match reader.byte_headers() {
        Ok(header) => header.clone(),
        Err(error) => {
            let _ = sender.blocking_send(Parsed::Unreadable(unreadable(&error)));
            return;
        }
    };
    let names: std::result::Result<Vec<&str>, _> = header.iter().map(std::str::from_utf8).collect();
    let Ok(mut names) = names else {
        let _ = sender.blocking_send(Parsed::Unreadable("the header row is not valid UTF-8".to_owned()));
        return;
    };
    if let Some(first) = names.first_mut() {
        *first = first.trim_start_matches('\u{feff}');
    }
    let columns = ColumnMap::resolve(&names, &options.mapping, definitions, options.ignore_unknown, options.key);
    let columns = match columns {
        Ok(columns) => {
            if sender.blocking_send(Parsed::Header(Ok(columns.clone()))).is_err() {
                return;
            }
            columns
        }
        Err(error) => {
            let _ = sender.blocking_send(Parsed::Header(Err(error)));
            return;
        }
    };
    let fields: Arc<FieldSecrecy> = Arc::new(
        definitions.values().map(|definition| (definition.key.as_str().to_owned(), definition.personal)).collect(),
    );
    let batch_rows = options.batch_rows.max(1);
    let mut rows = Vec::with_capacity(batch_rows);
    let mut rejected = Vec::new();
    let mut record = csv::ByteRecord::new();
    let send = |rows: Vec<ImportRow>, rejected: Vec<RowError>, bytes_read: u64| {
        let ahead = Ahead::work_out(&rows, &columns, context, &fields);
        sender.blocking_send(Parsed::Batch { rows, ahead, rejected, bytes_read }).is_ok()
    };
    loop {
        match reader.read_byte_record(&mut record) {
            Ok(true) => {}
            Ok(false) => break,
            Err(error) => {
                let _ = sender.blocking_send(Parsed::Unreadable(unreadable(&error)));
                return;
            }
        }
        let line = record.position().map_or(0, csv::Position::line);
        let cells: std::result::Result<Vec<&str>, _> = record.iter().map(std::str::from_utf8).collect();
        let parsed = match cells {
            Ok(cells) => columns.parse_row(line, cells.into_iter()),
            Err(_) => Err(RowError { line, column: None, reason: "is not valid UTF-8".to_owned() }),
        };
        match parsed {
            Ok(row) => rows.push(row),
            Err(error) => rejected.push(error),
        }
        if rows.len() + rejected.len() >= batch_rows {
            let full = std::mem::replace(&mut rows, Vec::with_capacity(batch_rows));
            if !send(full, std::mem::take(&mut rejected), reader.position().byte()) {
                return;
            }
        }
    }
    if !rows.is_empty() || !rejected.is_empty() {
        send(rows, rejected, reader.position().byte());
    }
}

/// What the parsing thread works out for a batch before the writer reads the database.
struct Ahead {
    /// Per row, the id a contact it creates gets.
    candidates: Vec<ContactId>,
    /// The blind index of every email address the rows name.
    email_indexes: HashMap<EmailAddress, String>,
    /// The batch decided as if no row named a stored contact or an erased address, which the
    /// writer keeps if its read finds none; a try that used it up leaves none.
    planned: Option<Planned>,
}

/// A batch decided without stored contacts.
struct Planned {
    /// The contacts it creates, their rows built and sealed.
    created: Vec<PreparedContact>,
    /// Created, and updated or unchanged by rows after the one that created their contact.
    counts: ImportCounts,
    rejected: Vec<RowError>,
}

impl Ahead {
    fn work_out(
        rows: &[ImportRow],
        columns: &ColumnMap,
        context: &ParseContext<'_>,
        fields: &Arc<FieldSecrecy>,
    ) -> Self {
        let keys = context.keys;
        let candidates: Vec<ContactId> = rows.iter().map(|_| ContactId::generate()).collect();
        let email_indexes: HashMap<EmailAddress, String> = rows
            .iter()
            .filter_map(|row| row.email.as_ref())
            .map(|email| (email.clone(), contacts_store::email_index(keys, email)))
            .collect();
        let mut plan = BatchPlan::new(Vec::new(), columns, context.definitions, stored_now(context.clock));
        let (mut counts, mut rejected) = (ImportCounts::default(), Vec::new());
        plan.apply_all(rows, &candidates, &mut counts, &mut rejected);
        let (created, _) = plan.into_changes();
        // A row that cannot be built here fails to build in the writer too, and fails the batch.
        let created: Option<Vec<PreparedContact>> = created
            .into_iter()
            .map(|contact| {
                let email_index = contact.email.as_ref().and_then(|email| email_indexes.get(email)).cloned();
                PreparedContact::new(context.backend, keys, contact, email_index, fields, Some(context.import_id)).ok()
            })
            .collect();
        let planned = created.map(|created| Planned { created, counts, rejected });
        Self { candidates, email_indexes, planned }
    }
}

/// Why the file cannot be read on, without quoting it.
fn unreadable(error: &csv::Error) -> String {
    let line = error.position().map(|position| format!(" at line {}", position.line())).unwrap_or_default();
    match error.kind() {
        csv::ErrorKind::Io(io) => format!("cannot read the file{line}: {io}"),
        csv::ErrorKind::Utf8 { .. } => format!("the file is not valid UTF-8{line}"),
        _ => format!("the file is not valid CSV{line}"),
    }
}

/// What one row did to its contact.
enum Applied {
    Created,
    Updated,
    Unchanged,
}

/// One batch decided in memory: the contacts it reads, as each row leaves them. Later rows of
/// the same contact build on earlier ones, so a file may name a contact twice.
struct BatchPlan<'a> {
    columns: &'a ColumnMap,
    definitions: &'a HashMap<Key, FieldDefinition>,
    now: DateTime<Utc>,
    /// (as stored, or none for a contact this batch creates; as the rows leave it)
    contacts: Vec<(Option<Contact>, Contact)>,
    by_email: HashMap<EmailAddress, usize>,
    by_external_id: HashMap<ExternalId, usize>,
    erased_emails: HashSet<EmailAddress>,
    erased_phones: HashSet<PhoneNumber>,
    /// Every stored contact a row matched, in first-seen order.
    stored_matched: Vec<ContactId>,
    seen: HashSet<ContactId>,
}

impl<'a> BatchPlan<'a> {
    fn new(
        existing: Vec<Contact>,
        columns: &'a ColumnMap,
        definitions: &'a HashMap<Key, FieldDefinition>,
        now: DateTime<Utc>,
    ) -> Self {
        let mut plan = Self {
            columns,
            definitions,
            now,
            contacts: Vec::with_capacity(existing.len()),
            by_email: HashMap::new(),
            by_external_id: HashMap::new(),
            erased_emails: HashSet::new(),
            erased_phones: HashSet::new(),
            stored_matched: Vec::new(),
            seen: HashSet::new(),
        };
        for contact in existing {
            plan.index(plan.contacts.len(), &contact);
            plan.contacts.push((Some(contact.clone()), contact));
        }
        plan
    }

    fn index(&mut self, at: usize, contact: &Contact) {
        if let Some(email) = &contact.email {
            self.by_email.insert(email.clone(), at);
        }
        if let Some(external_id) = &contact.external_id {
            self.by_external_id.insert(external_id.clone(), at);
        }
    }

    /// Applies `rows` in order, each creating its contact with the id of the same place in
    /// `candidates`, and counts what each did.
    fn apply_all(
        &mut self,
        rows: &[ImportRow],
        candidates: &[ContactId],
        counts: &mut ImportCounts,
        rejected: &mut Vec<RowError>,
    ) {
        for (row, candidate) in rows.iter().zip(candidates) {
            match self.apply(row, *candidate) {
                Ok(Applied::Created) => counts.created += 1,
                Ok(Applied::Updated) => counts.updated += 1,
                Ok(Applied::Unchanged) => counts.unchanged += 1,
                Err(error) => rejected.push(error),
            }
        }
    }

    /// Applies `row`; a contact it creates gets the id `candidate`.
    fn apply(&mut self, row: &ImportRow, candidate: ContactId) -> std::result::Result<Applied, RowError> {
        let found = match self.columns.key() {
            ImportKey::Email => row.email.as_ref().and_then(|email| self.by_email.get(email)),
            ImportKey::ExternalId => row.external_id.as_ref().and_then(|id| self.by_external_id.get(id)),
        }
        .copied();
        let blank;
        let current = match found {
            Some(at) => &self.contacts[at].1,
            None => {
                blank = self.blank(candidate);
                &blank
            }
        };
        let next = row.apply(current, self.now);
        let reject = |target: Target, reason: &str| RowError {
            line: row.line,
            column: self.columns.column_of(&target).map(str::to_owned),
            reason: reason.to_owned(),
        };
        if let Some(email) = next.email.as_ref().filter(|email| current.email.as_ref() != Some(*email)) {
            if self.by_email.get(email).is_some_and(|at| Some(*at) != found) {
                return Err(reject(Target::Email, "another contact has this email address"));
            }
            if self.erased_emails.contains(email) {
                return Err(reject(Target::Email, "this email address was erased at its owner's request"));
            }
        }
        if let Some(id) = next.external_id.as_ref().filter(|id| current.external_id.as_ref() != Some(*id))
            && self.by_external_id.get(id).is_some_and(|at| Some(*at) != found)
        {
            return Err(reject(Target::ExternalId, "another contact has this external id"));
        }
        if next
            .profile
            .phone
            .as_ref()
            .is_some_and(|phone| current.profile.phone.as_ref() != Some(phone) && self.erased_phones.contains(phone))
        {
            return Err(reject(Target::Phone, "this phone number was erased at its owner's request"));
        }
        if found.is_none()
            && let Some(missing) = self
                .definitions
                .values()
                .filter(|definition| definition.required && !next.attributes.contains_key(&definition.key))
                .min_by(|a, b| a.key.cmp(&b.key))
        {
            return Err(RowError {
                line: row.line,
                column: None,
                reason: format!("a new contact needs a value of the required field {}", missing.key),
            });
        }
        let applied = match found {
            None => Applied::Created,
            Some(_) if next == *current => Applied::Unchanged,
            Some(_) => Applied::Updated,
        };
        let id = next.id;
        let at = match found {
            Some(at) => {
                let previous = &self.contacts[at].1;
                if previous.email != next.email
                    && let Some(email) = &previous.email
                {
                    self.by_email.remove(email);
                }
                if previous.external_id != next.external_id
                    && let Some(external_id) = &previous.external_id
                {
                    self.by_external_id.remove(external_id);
                }
                self.index(at, &next);
                self.contacts[at].1 = next;
                at
            }
            None => {
                let at = self.contacts.len();
                self.index(at, &next);
                self.contacts.push((None, next));
                at
            }
        };
        // A contact this batch creates names the import in its own row; a stored one is linked.
        if self.contacts[at].0.is_some() && self.seen.insert(id) {
            self.stored_matched.push(id);
        }
        Ok(applied)
    }

    fn blank(&self, id: ContactId) -> Contact {
        Contact {
            id,
            external_id: None,
            email: None,
            profile: Profile::default(),
            attributes: Attributes::new(),
            created_at: self.now,
            updated_at: self.now,
            version: 0,
        }
    }

    /// The contacts to insert, and the (stored, new) states of those to update. A contact
    /// changed by several rows moves on by one version, as one write.
    fn into_changes(self) -> (Vec<Contact>, Vec<(Contact, Contact)>) {
        let mut created = Vec::new();
        let mut updated = Vec::new();
        for (before, after) in self.contacts {
            match before {
                None => created.push(Contact { version: 1, ..after }),
                Some(before) => {
                    // Rows that changed a contact and then changed it back leave it as it was.
                    let unchanged = Contact { version: before.version, updated_at: before.updated_at, ..after };
                    if unchanged != before {
                        let version = before.version + 1;
                        updated.push((before, Contact { version, updated_at: after.updated_at, ..unchanged }));
                    }
                }
            }
        }
        (created, updated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_that_said_it_only_creates_may_not_change_stored_contacts_on_a_retry() {
        let (sender, mut told) = oneshot::channel();
        let mut promise = Promise::Unsaid(sender);
        promise.keep(true).unwrap();
        assert_eq!(told.try_recv(), Ok(true));
        promise.keep(true).unwrap();
        let error = promise.keep(false).unwrap_err();
        assert!(matches!(error, Error::Validation { .. }), "{error:?}");
    }

    #[test]
    fn a_batch_that_said_it_changes_stored_contacts_may_do_anything_on_a_retry() {
        let (sender, mut told) = oneshot::channel();
        let mut promise = Promise::Unsaid(sender);
        promise.keep(false).unwrap();
        assert_eq!(told.try_recv(), Ok(false));
        promise.keep(true).unwrap();
        promise.keep(false).unwrap();
    }
}
