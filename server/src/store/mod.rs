//! Persistence: sea-orm entities (private to this module) and repositories that speak domain
//! types. Every read and write of contacts goes through `contacts`, which seals and opens their
//! personal fields with the key ring this handle carries (`keys` holds the wrapped keys).

mod entity;

pub mod access;
pub mod audit;
pub mod consents;
pub mod contacts;
pub mod emails;
pub mod events;
pub mod fields;
pub mod forms;
pub mod hooks;
pub mod imports;
pub mod keys;
pub mod outbox;
pub mod preferences;
pub mod statistics;
pub mod topics;
pub mod webhooks;

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectOptions, ConnectionTrait, Database as SeaDatabase, DatabaseConnection,
    DatabaseTransaction, DbBackend, DbErr, EntityName, EntityTrait, IdenStatic, Iterable, SqlErr,
    SqliteTransactionMode, Statement, TransactionOptions, TransactionTrait, Value, sea_query::ColumnType,
};

pub use sea_orm::DatabaseConnection as Connection;

use crate::crypto::KeyRing;

/// A uniqueness rule of the schema that callers can break with ordinary input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Constraint {
    ContactExternalId,
    ContactEmail,
    FieldKey,
    PurposeKey,
    TopicKey,
    UserEmail,
    /// Two writers saved the same version of one email.
    EmailVersion,
}

impl Constraint {
    /// (constraint name as PostgreSQL reports it, column list as SQLite reports it)
    const KNOWN: [(Constraint, &'static str, &'static str); 7] = [
        (Constraint::ContactExternalId, "contact_external_id_key", "contact.external_id"),
        (Constraint::ContactEmail, "contact_email_index_key", "contact.email_index"),
        (Constraint::FieldKey, "field_definition_pkey", "field_definition.key"),
        (Constraint::PurposeKey, "consent_purpose_pkey", "consent_purpose.key"),
        (Constraint::TopicKey, "topic_key_key", "topic.key"),
        (Constraint::UserEmail, "admin_user_email_key", "admin_user.email"),
        (
            Constraint::EmailVersion,
            "email_version_email_id_version_key",
            "email_version.email_id, email_version.version",
        ),
    ];

    fn from_message(message: &str) -> Option<Self> {
        Self::KNOWN.iter().find_map(|(constraint, pg_name, sqlite_columns)| {
            let named = message.contains(&format!("\"{pg_name}\""));
            let listed = message.strip_prefix("UNIQUE constraint failed: ") == Some(sqlite_columns);
            (named || listed).then_some(*constraint)
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unique constraint {0:?} violated")]
    Conflict(Constraint),
    /// A row refers to one that a concurrent transaction deleted (a contact, a topic …).
    #[error("a referenced row does not exist")]
    MissingReference,
    #[error("stored value in {table}.{column} is not valid")]
    Corrupt { table: &'static str, column: &'static str },
    /// A ciphertext or wrapped key that the loaded keys cannot open: the wrong master key, a
    /// half-done rotation without the previous key, or a value moved or altered in the database.
    #[error("cannot decrypt a value in {table}: {reason}")]
    Undecryptable { table: &'static str, reason: crate::crypto::CryptoError },
    /// The process was started without a master key (only `migrate` may do that).
    #[error("no master key is loaded")]
    NoKeys,
    #[error(transparent)]
    Database(DbErr),
}

impl From<DbErr> for StoreError {
    fn from(error: DbErr) -> Self {
        match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(message)) => match Constraint::from_message(message.trim()) {
                Some(constraint) => StoreError::Conflict(constraint),
                None => StoreError::Database(error),
            },
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => StoreError::MissingReference,
            _ => StoreError::Database(error),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Runs `statements` one after the other and returns how many rows each changed. Each next
/// statement is built (the iterator's work) while the database runs the one before, on SQLite's
/// thread or PostgreSQL's server, rather than the database waiting for it: large multi-row
/// writes spend about as long in one as in the other.
pub async fn execute_in_turn(
    conn: &impl ConnectionTrait,
    mut statements: impl Iterator<Item = Statement>,
) -> StoreResult<Vec<u64>> {
    let mut affected = Vec::new();
    let mut next = statements.next();
    while let Some(statement) = next.take() {
        let (done, following) = futures_util::join!(conn.execute_raw(statement), async { statements.next() });
        affected.push(done?.rows_affected());
        next = following;
    }
    Ok(affected)
}

/// What a multi-row insert ([`insert_rows`]) does with a row whose key is already stored.
pub enum Conflict<'a, C> {
    /// The statement fails (a unique violation).
    Fail,
    /// The stored row stays; `target` is the key.
    Ignore { target: &'a [C] },
    /// The stored row takes the new row's `set` columns; `target` is the key.
    Update { target: &'a [C], set: &'a [C] },
}

/// Inserts `rows`, every column of which is set, in multi-row statements of `rows_per_statement`
/// rows, each built while the one before runs (`execute_in_turn`). The SQL text is written here
/// rather than by sea-query, and each value is moved out of its row rather than cloned: for the
/// millions of values an import binds, building them through sea-query took about as long as
/// SQLite took to store them (BENCHMARKS.md, "Where the import's time goes").
///
/// On SQLite a statement binds one value, its rows as a JSON document that SQLite takes apart
/// (`jsonb_each`), instead of a value per column and row. sea-orm copies every bound value of a
/// statement, and sqlx encodes and frees each one, all on the thread that drives the
/// transaction, while SQLite's own thread waits: an import's 2,000-row batches spent about six
/// such waits of 0.5–5 ms each (BENCHMARKS.md, contact import). One document costs one copy.
/// PostgreSQL's server, not the client, is what an import waits for there, so it keeps a bound
/// value per column and row.
pub async fn insert_rows<A: ActiveModelTrait>(
    conn: &impl ConnectionTrait,
    rows: Vec<A>,
    on_conflict: Conflict<'_, <A::Entity as EntityTrait>::Column>,
    rows_per_statement: usize,
) -> StoreResult<()> {
    let rows = rows.into_iter().map(InsertRow::Model).collect();
    insert_prepared_rows(conn, rows, on_conflict, rows_per_statement).await
}

/// A row for [`insert_prepared_rows`]: its model, or on SQLite the JSON array that
/// [`render_row`] made of it beforehand (on a thread that has the time).
enum InsertRow<A> {
    Model(A),
    Rendered(Vec<u8>),
}

/// [`insert_rows`], for rows that may have been rendered beforehand.
async fn insert_prepared_rows<A: ActiveModelTrait>(
    conn: &impl ConnectionTrait,
    rows: Vec<InsertRow<A>>,
    on_conflict: Conflict<'_, <A::Entity as EntityTrait>::Column>,
    rows_per_statement: usize,
) -> StoreResult<()> {
    let backend = conn.get_database_backend();
    let columns: Vec<<A::Entity as EntityTrait>::Column> = <A::Entity as EntityTrait>::Column::iter().collect();
    let table = A::Entity::default();
    let head = insert_head(table.table_name(), &columns);
    let clause = conflict_clause(&on_conflict);
    let mut rows = rows.into_iter().peekable();
    let mut failure = None;
    let statements = std::iter::from_fn(|| {
        rows.peek()?;
        let chunk = rows.by_ref().take(rows_per_statement);
        let built = match backend {
            DbBackend::Sqlite => json_rows_statement(chunk, &columns, &head, &clause),
            _ => bound_rows_statement(backend, chunk, &columns, table.table_name(), &head, &clause),
        };
        built.map_err(|error| failure = Some(error)).ok()
    });
    let outcome = execute_in_turn(conn, statements).await;
    if let Some(error) = failure {
        return Err(error.into());
    }
    outcome.map(|_| ())
}

/// `column IN (values…)`. On SQLite the values are bound as one JSON array that SQLite takes
/// apart, as [`insert_rows`] binds its rows: an import's lookups name thousands of values (how
/// much that saves was within the spread of runs, BENCHMARKS.md).
fn is_in_texts<'a, C: ColumnTrait>(
    backend: DbBackend,
    column: C,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<sea_orm::sea_query::SimpleExpr, DbErr> {
    Ok(match backend {
        DbBackend::Sqlite => {
            let values: Vec<&str> = values.into_iter().collect();
            let document = serde_json::to_string(&values).map_err(|error| DbErr::Custom(error.to_string()))?;
            sea_orm::sea_query::Expr::cust_with_values(
                format!("\"{}\".\"{}\" IN (SELECT \"value\" FROM json_each(?))", column.entity_name(), column.as_str()),
                [Value::String(Some(document))],
            )
        }
        _ => column.is_in(values),
    })
}

/// The value of `column`, moved out of `row`.
fn take_value<A: ActiveModelTrait>(
    row: &mut A,
    column: <A::Entity as EntityTrait>::Column,
    table: &str,
) -> Result<Value, DbErr> {
    row.take(column)
        .into_value()
        .ok_or_else(|| DbErr::Custom(format!("insert_rows: {table}.{} is not set", column.as_str())))
}

/// `head VALUES (…), (…)` with a bound value per column and row; `head` is the statement's
/// `INSERT INTO … (…)`.
fn bound_rows_statement<A: ActiveModelTrait>(
    backend: DbBackend,
    chunk: impl Iterator<Item = InsertRow<A>>,
    columns: &[<A::Entity as EntityTrait>::Column],
    table: &str,
    head: &str,
    clause: &str,
) -> Result<Statement, DbErr> {
    let mut values = Vec::new();
    let mut count = 0;
    for row in chunk {
        let InsertRow::Model(mut row) = row else {
            return Err(DbErr::Custom(format!("insert_rows: a row of {table} was rendered for SQLite")));
        };
        for column in columns {
            values.push(take_value(&mut row, *column, table)?);
        }
        count += 1;
    }
    let mut sql = String::with_capacity(head.len() + 8 + count * columns.len() * 7 + clause.len());
    sql.push_str(head);
    sql.push_str(" VALUES ");
    push_value_rows(&mut sql, backend, count, columns.len());
    sql.push_str(clause);
    Ok(Statement::from_sql_and_values(backend, sql, values))
}

/// One row as the JSON array that SQLite's statements of [`insert_prepared_rows`] take apart,
/// each value written as sqlx would have bound it (see `push_json_value`).
fn render_row<A: ActiveModelTrait>(mut row: A) -> Result<Vec<u8>, DbErr> {
    let mut rendered = Vec::with_capacity(256);
    push_rendered_row(&mut rendered, &mut row)?;
    Ok(rendered)
}

fn push_rendered_row<A: ActiveModelTrait>(document: &mut Vec<u8>, row: &mut A) -> Result<(), DbErr> {
    let table = A::Entity::default();
    document.push(b'[');
    for (index, column) in <A::Entity as EntityTrait>::Column::iter().enumerate() {
        if index > 0 {
            document.push(b',');
        }
        let value = take_value(row, column, table.table_name())?;
        let failure = |kind: &str| {
            DbErr::Custom(format!(
                "insert_rows: {}.{} holds {kind}, which SQLite cannot take as JSON",
                table.table_name(),
                column.as_str()
            ))
        };
        // The statement reads a column as hex by its type (`json_rows_statement`).
        if matches!(value, Value::Uuid(_) | Value::Bytes(_)) != is_binary(&column) {
            return Err(failure("a value of another type than its column's"));
        }
        push_json_value(document, value).map_err(failure)?;
    }
    document.push(b']');
    Ok(())
}

/// `head SELECT … FROM jsonb_each(?)` on SQLite (`head` is the statement's `INSERT INTO … (…)`):
/// the rows as one JSON array of the arrays [`render_row`] makes. `jsonb_each` hands each row to
/// `->>` in SQLite's binary form; `json_each` would write each row out as text for `->>` to parse
/// again.
fn json_rows_statement<A: ActiveModelTrait>(
    chunk: impl Iterator<Item = InsertRow<A>>,
    columns: &[<A::Entity as EntityTrait>::Column],
    head: &str,
    clause: &str,
) -> Result<Statement, DbErr> {
    use std::fmt::Write as _;
    let mut document = Vec::with_capacity(64 * 1024);
    document.push(b'[');
    for (at, row) in chunk.enumerate() {
        if at > 0 {
            document.push(b',');
        }
        match row {
            InsertRow::Model(mut row) => push_rendered_row(&mut document, &mut row)?,
            InsertRow::Rendered(rendered) => document.extend_from_slice(&rendered),
        }
    }
    document.push(b']');
    let document = String::from_utf8(document).map_err(|error| DbErr::Custom(error.to_string()))?;
    let mut sql = String::with_capacity(head.len() + columns.len() * 24 + 48 + clause.len());
    sql.push_str(head);
    sql.push_str(" SELECT ");
    for (index, column) in columns.iter().enumerate() {
        if index > 0 {
            sql.push_str(", ");
        }
        let _ = if is_binary(column) {
            write!(sql, "unhex(\"value\" ->> {index})")
        } else {
            write!(sql, "\"value\" ->> {index}")
        };
    }
    // "WHERE true" keeps an ON CONFLICT clause from being read as a join's ON.
    sql.push_str(" FROM jsonb_each(?) WHERE true");
    sql.push_str(clause);
    Ok(Statement::from_sql_and_values(DbBackend::Sqlite, sql, [Value::String(Some(document))]))
}

/// Whether `column` holds bytes (UUIDs too), which travel in the JSON as hex.
fn is_binary(column: &impl ColumnTrait) -> bool {
    matches!(
        column.def().get_column_type(),
        ColumnType::Uuid | ColumnType::Binary(_) | ColumnType::VarBinary(_) | ColumnType::Blob
    )
}

/// Writes `value` as a JSON value that SQLite's `->>` turns into what sqlx binds for it: text
/// as a string, numbers as numbers, booleans as 1 and 0, times as sqlx's RFC 3339 text, JSON as
/// its text, and bytes (UUIDs too) as hex for `unhex`. A kind of value that has no such form is
/// refused with its name.
fn push_json_value(document: &mut Vec<u8>, value: Value) -> Result<(), &'static str> {
    use std::io::Write as _;
    fn write_json(document: &mut Vec<u8>, value: &impl serde::Serialize) -> Result<(), &'static str> {
        serde_json::to_writer(document, value).map_err(|_| "a value JSON cannot hold")
    }
    fn finite(number: f64) -> Result<f64, &'static str> {
        if number.is_finite() { Ok(number) } else { Err("a number that is not finite") }
    }
    match value {
        Value::Bool(value) => write_json(document, &value),
        Value::TinyInt(value) => write_json(document, &value),
        Value::SmallInt(value) => write_json(document, &value),
        Value::Int(value) => write_json(document, &value),
        Value::BigInt(value) => write_json(document, &value),
        Value::TinyUnsigned(value) => write_json(document, &value),
        Value::SmallUnsigned(value) => write_json(document, &value),
        Value::Unsigned(value) => write_json(document, &value),
        Value::Float(value) => {
            let value = value.map(|number| finite(f64::from(number))).transpose()?;
            write_json(document, &value)
        }
        Value::Double(value) => {
            let value = value.map(finite).transpose()?;
            write_json(document, &value)
        }
        Value::String(value) => write_json(document, &value),
        Value::Char(value) => write_json(document, &value),
        Value::Json(value) => {
            let text = value.map(|json| json.to_string());
            write_json(document, &text)
        }
        Value::ChronoDateTimeUtc(value) => {
            let text = value.map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, false));
            write_json(document, &text)
        }
        Value::Uuid(value) => {
            match value {
                Some(uuid) => {
                    let _ = write!(document, "\"{}\"", uuid.simple());
                }
                None => document.extend_from_slice(b"null"),
            }
            Ok(())
        }
        Value::Bytes(value) => {
            match value {
                Some(bytes) => {
                    document.push(b'"');
                    document.extend_from_slice(hex::encode(bytes).as_bytes());
                    document.push(b'"');
                }
                None => document.extend_from_slice(b"null"),
            }
            Ok(())
        }
        _ => Err("a kind of value this writer does not know"),
    }
}

fn conflict_clause<C: IdenStatic>(on_conflict: &Conflict<'_, C>) -> String {
    let quoted =
        |columns: &[C]| columns.iter().map(|column| format!("\"{}\"", column.as_str())).collect::<Vec<_>>().join(", ");
    match on_conflict {
        Conflict::Fail => String::new(),
        Conflict::Ignore { target } => format!(" ON CONFLICT ({}) DO NOTHING", quoted(target)),
        Conflict::Update { target, set } => {
            let assignments: Vec<String> =
                set.iter().map(|column| format!("\"{0}\" = \"excluded\".\"{0}\"", column.as_str())).collect();
            format!(" ON CONFLICT ({}) DO UPDATE SET {}", quoted(target), assignments.join(", "))
        }
    }
}

/// `INSERT INTO "table" ("a", "b")`: the head of a multi-row insert.
fn insert_head<C: IdenStatic>(table: &str, columns: &[C]) -> String {
    let mut sql = String::with_capacity(16 + table.len() + columns.len() * 24);
    sql.push_str("INSERT INTO \"");
    sql.push_str(table);
    sql.push_str("\" (");
    for (at, column) in columns.iter().enumerate() {
        if at > 0 {
            sql.push_str(", ");
        }
        sql.push('"');
        sql.push_str(column.as_str());
        sql.push('"');
    }
    sql.push(')');
    sql
}

/// Appends `(?, ?), (?, ?) …`, `rows` rows of `columns` parameters each, with the backend's
/// placeholders: the rows of a multi-row VALUES list.
pub(crate) fn push_value_rows(sql: &mut String, backend: DbBackend, rows: usize, columns: usize) {
    use std::fmt::Write as _;
    let mut parameter = 0;
    for row in 0..rows {
        sql.push_str(if row == 0 { "(" } else { ", (" });
        for at in 0..columns {
            if at > 0 {
                sql.push_str(", ");
            }
            parameter += 1;
            match backend {
                DbBackend::Postgres => {
                    let _ = write!(sql, "${parameter}");
                }
                _ => sql.push('?'),
            }
        }
        sql.push(')');
    }
}

/// SQLite page cache per connection: the one writer keeps the most, as it walks every index a
/// write touches. Bounded, so memory stays flat however large the database grows.
const WRITER_CACHE_KIB: u32 = 64 * 1024;
const READER_CACHE_KIB: u32 = 8 * 1024;

/// The database handle shared by the whole process, with a count of the statements it ran
/// (tests use it to prove that nested fields are batched; metrics will export it).
#[derive(Clone)]
pub struct Database {
    connection: DatabaseConnection,
    /// Where write transactions run. On SQLite, a pool of one connection: SQLite has one writer
    /// at a time anyway, and writers that queue for this connection wait their turn in order,
    /// where writers on separate connections poll SQLite's busy handler with sleeps of up to
    /// 100 ms each (seconds of delay under concurrent batches). On PostgreSQL, the same pool.
    writer: DatabaseConnection,
    statements: Arc<AtomicU64>,
    keys: Option<Arc<KeyRing>>,
    /// Held by every clone of this handle; background work for it ends once the last one is gone.
    _alive: Arc<()>,
}

/// How often the SQLite log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(250);
/// How often, and how far apart, `truncate_log` asks for a checkpoint that SQLite says is busy.
const TRUNCATE_ATTEMPTS: usize = 100;
const TRUNCATE_RETRY_AFTER: Duration = Duration::from_millis(20);

/// Copies SQLite's write-ahead log back into the database file every `CHECKPOINT_EVERY`, on a
/// reader connection, until the handle is dropped or closed. PASSIVE never blocks the writer
/// nor readers; frames that a reader still needs wait for the next round.
fn checkpoint_in_background(connection: DatabaseConnection, alive: std::sync::Weak<()>) {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            if alive.strong_count() == 0 {
                break;
            }
            if let Err(error) = connection.execute_unprepared("PRAGMA wal_checkpoint(PASSIVE)").await {
                if matches!(error, DbErr::ConnectionAcquire(_)) {
                    break;
                }
                tracing::warn!(error = %error, "SQLite checkpoint failed");
            }
        }
    });
}

impl Database {
    pub async fn connect(url: &str) -> Result<Self, DbErr> {
        let sqlite = url.starts_with("sqlite:");
        let statements = Arc::new(AtomicU64::new(0));
        let connection = Self::pool(url, if sqlite { 8 } else { 16 }, READER_CACHE_KIB, &statements).await?;
        let writer = if sqlite { Self::pool(url, 1, WRITER_CACHE_KIB, &statements).await? } else { connection.clone() };
        let alive = Arc::new(());
        if sqlite {
            checkpoint_in_background(connection.clone(), Arc::downgrade(&alive));
        }
        Ok(Self { connection, writer, statements, keys: None, _alive: alive })
    }

    async fn pool(
        url: &str,
        size: u32,
        cache_kib: u32,
        statements: &Arc<AtomicU64>,
    ) -> Result<DatabaseConnection, DbErr> {
        let mut options = ConnectOptions::new(url.to_owned());
        options
            .max_connections(size)
            .connect_timeout(Duration::from_secs(10))
            .sqlx_logging(false)
            .map_sqlx_sqlite_opts(move |sqlite| {
                // WAL lets readers run beside the one writer; the busy timeout makes writers queue
                // instead of failing while another transaction commits. Secure delete zeroes what
                // is deleted, so that an erased contact's plaintext (event properties, say) does
                // not linger in free pages of the file.
                //
                // The rest is for write speed (see BENCHMARKS.md, events_ingest): a page cache that
                // holds the hot index pages of large tables instead of spilling and re-reading them,
                // statement journals in memory rather than in temporary files, and checkpoints off
                // the writer's path: a task copies the log back into the file (see
                // `checkpoint_in_background`), so that commits do not wait for its fsync. The log
                // only starts over once a checkpoint has copied all of it when a write begins,
                // which under writes that never pause (an import) only the writer's own
                // checkpoint does, with an fsync that it waits for: it does so once the log
                // reaches 400 MiB. At 80 MiB, that wait cost a million-row import a fifth of its
                // time (BENCHMARKS.md, contact import). The log's file keeps its size when the log
                // starts over, to be written over in place: cutting it back each time cost an
                // import about 6 %. Only a log that outgrew 512 MiB (a long read held it) is cut
                // back, to that.
                sqlite
                    .journal_mode(sea_orm::sqlx::sqlite::SqliteJournalMode::Wal)
                    .synchronous(sea_orm::sqlx::sqlite::SqliteSynchronous::Normal)
                    .busy_timeout(Duration::from_secs(10))
                    .foreign_keys(true)
                    .pragma("secure_delete", "on")
                    .pragma("cache_size", format!("-{cache_kib}"))
                    .pragma("temp_store", "memory")
                    .pragma("wal_autocheckpoint", "100000")
                    .pragma("journal_size_limit", (512 * 1024 * 1024).to_string())
                    // Rows come back from SQLite's thread in larger hand-overs: fewer wake-ups.
                    .row_buffer_size(1024)
            });
        let mut connection = SeaDatabase::connect(options).await?;
        let counter = Arc::clone(statements);
        connection.set_metric_callback(move |_| {
            counter.fetch_add(1, Ordering::Relaxed);
        });
        Ok(connection)
    }

    /// The same handle, sealing and opening personal fields with `keys` (see `keys::open`).
    pub fn with_keys(self, keys: KeyRing) -> Self {
        Self { keys: Some(Arc::new(keys)), ..self }
    }

    pub fn keys(&self) -> StoreResult<&KeyRing> {
        self.keys.as_deref().ok_or(StoreError::NoKeys)
    }

    /// The keys, for work that seals or opens values away from this handle (on another thread).
    pub fn shared_keys(&self) -> StoreResult<Arc<KeyRing>> {
        self.keys.clone().ok_or(StoreError::NoKeys)
    }

    pub fn connection(&self) -> &DatabaseConnection {
        &self.connection
    }

    pub fn backend(&self) -> DbBackend {
        self.connection.get_database_backend()
    }

    pub fn statements_executed(&self) -> u64 {
        self.statements.load(Ordering::Relaxed)
    }

    /// Starts a transaction that will write. On SQLite it takes the write lock up front
    /// (`BEGIN IMMEDIATE`): a deferred transaction that reads first and writes later fails
    /// outright when another writer got in between, instead of waiting its turn.
    pub async fn begin_write(&self) -> Result<DatabaseTransaction, DbErr> {
        self.writer
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
    }

    /// On SQLite, moves the write-ahead log into the database file and empties it: the log
    /// still holds earlier versions of the pages a deletion rewrote. PostgreSQL has no such step;
    /// its dead rows go when (auto)vacuum reclaims them.
    ///
    /// SQLite answers "busy" instead of checkpointing while another checkpoint runs (the one in
    /// the background, every `CHECKPOINT_EVERY`) or while readers outlast the busy timeout, so
    /// the checkpoint is asked for again until it is done, for a while. Still busy after that,
    /// the log is recycled as writes go on, which is reported but no error.
    pub async fn truncate_log(&self) -> Result<(), DbErr> {
        if self.backend() != DbBackend::Sqlite {
            return Ok(());
        }
        let checkpoint = Statement::from_string(DbBackend::Sqlite, "PRAGMA wal_checkpoint(TRUNCATE)");
        for _ in 0..TRUNCATE_ATTEMPTS {
            let outcome = self.connection.query_one_raw(checkpoint.clone()).await?;
            let busy: i64 = match outcome {
                Some(row) => row.try_get_by_index(0)?,
                None => 0,
            };
            if busy == 0 {
                return Ok(());
            }
            tokio::time::sleep(TRUNCATE_RETRY_AFTER).await;
        }
        tracing::warn!("the write-ahead log stayed busy; it is emptied as writes go on");
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), DbErr> {
        self.connection.ping().await
    }

    pub async fn close(self) -> Result<(), DbErr> {
        if self.backend() == DbBackend::Sqlite {
            self.writer.close().await?;
        }
        self.connection.close().await
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone as _;
    use sea_orm::{ActiveValue::Set, ConnectionTrait, Statement};
    use uuid::Uuid;

    use super::*;

    fn contact_row(id: u128, text: Option<&str>, import_id: Option<Uuid>) -> entity::contact::ActiveModel {
        let at = chrono::Utc.with_ymd_and_hms(2026, 12, 7, 5, 4, 3).unwrap() + chrono::Duration::microseconds(120);
        entity::contact::ActiveModel {
            id: Set(Uuid::from_u128(id)),
            external_id: Set(text.map(|text| format!("crm-{text}"))),
            email: Set(text.map(|text| format!("\"quoted\" \\ {text} ü\n"))),
            email_index: Set(Some(format!("index-{id}"))),
            phone: Set(None),
            phone_index: Set(None),
            first_name: Set(text.map(str::to_owned)),
            last_name: Set(Some(String::new())),
            locale: Set(Some("de-CH".to_owned())),
            time_zone: Set(None),
            country: Set(Some("CH".to_owned())),
            version: Set(i64::MAX),
            created_at: Set(at),
            updated_at: Set(at + chrono::Duration::seconds(1)),
            attributes: Set(
                serde_json::json!({ "ltv": { "number": 12.5 }, "vip": { "boolean": true }, "n": { "sealed": "x\"y" } }),
            ),
            import_id: Set(import_id),
        }
    }

    /// Every column of the contact as SQLite stores it: its storage class and its value as text
    /// (bytes as hex), so that a difference of type shows as well as one of value.
    async fn stored(connection: &DatabaseConnection, id: u128) -> Vec<String> {
        let columns: Vec<String> = <entity::contact::Entity as EntityTrait>::Column::iter()
            .map(|column| format!("typeof(\"{0}\") || ':' || coalesce(hex(\"{0}\"), 'NULL')", column.as_str()))
            .collect();
        let sql = format!("SELECT {} FROM contact WHERE id = ?", columns.join(", "));
        let statement = Statement::from_sql_and_values(DbBackend::Sqlite, sql, [Uuid::from_u128(id).into()]);
        let row = connection.query_one_raw(statement).await.unwrap().expect("the row");
        (0..columns.len()).map(|at| row.try_get_by_index::<String>(at).unwrap()).collect()
    }

    /// SQLite's inserts by one JSON document store every value exactly as sqlx binds it.
    #[tokio::test]
    async fn rows_inserted_as_one_json_document_are_stored_as_bound_rows_are() {
        use migration::MigratorTrait as _;
        let connection = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        migration::Migrator::up(&connection, None).await.unwrap();
        let columns: Vec<_> = <entity::contact::Entity as EntityTrait>::Column::iter().collect();
        let head = insert_head("contact", &columns);
        let delete = |id: u128| {
            Statement::from_sql_and_values(
                DbBackend::Sqlite,
                "DELETE FROM contact WHERE id = ?",
                [Uuid::from_u128(id).into()],
            )
        };
        for (id, text, import_id) in [(1, Some("Ada"), None), (2, None, Some(Uuid::from_u128(99)))] {
            let row = InsertRow::Model(contact_row(id, text, import_id));
            let bound = bound_rows_statement(DbBackend::Sqlite, [row].into_iter(), &columns, "contact", &head, "");
            connection.execute_raw(bound.unwrap()).await.unwrap();
            let by_binding = stored(&connection, id).await;
            connection.execute_raw(delete(id)).await.unwrap();
            let row = InsertRow::<entity::contact::ActiveModel>::Rendered(
                render_row(contact_row(id, text, import_id)).unwrap(),
            );
            let json = json_rows_statement([row].into_iter(), &columns, &head, "");
            connection.execute_raw(json.unwrap()).await.unwrap();
            let by_document = stored(&connection, id).await;
            assert_eq!(by_document, by_binding);
            assert!(by_document[0].starts_with("blob:"), "ids are bytes: {}", by_document[0]);
        }
    }

    /// The JSON form on SQLite keeps the conflict clauses that `update_many` and the import's
    /// links rely on: a row already stored stays as it is, or takes the new values it names.
    #[tokio::test]
    async fn rows_inserted_as_one_json_document_keep_their_conflict_clause() {
        use entity::contact::Column;
        use migration::MigratorTrait as _;
        let connection = sea_orm::Database::connect("sqlite::memory:").await.unwrap();
        migration::Migrator::up(&connection, None).await.unwrap();
        let first_name = || async {
            let sql = "SELECT first_name FROM contact WHERE id = ?";
            let statement = Statement::from_sql_and_values(DbBackend::Sqlite, sql, [Uuid::from_u128(1).into()]);
            let row = connection.query_one_raw(statement).await.unwrap().expect("the row");
            row.try_get_by_index::<String>(0).unwrap()
        };
        insert_rows(&connection, vec![contact_row(1, Some("Ada"), None)], Conflict::Fail, 10).await.unwrap();
        let grace = || entity::contact::ActiveModel {
            first_name: Set(Some("Grace".to_owned())),
            ..contact_row(1, Some("Ada"), None)
        };

        insert_rows(&connection, vec![grace()], Conflict::Ignore { target: &[Column::Id] }, 10).await.unwrap();
        assert_eq!(first_name().await, "Ada");
        let update = Conflict::Update { target: &[Column::Id], set: &[Column::FirstName] };
        insert_rows(&connection, vec![grace()], update, 10).await.unwrap();
        assert_eq!(first_name().await, "Grace");
        let again = insert_rows(&connection, vec![grace()], Conflict::Fail, 10).await;
        assert!(matches!(again, Err(StoreError::Conflict(_) | StoreError::Database(_))), "{again:?}");
    }
}
