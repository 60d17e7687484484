//! Contact imports over GraphQL: upload a CSV file (GraphQL multipart request) to import it as
//! `rapport import contacts` would, and read back the runs with their counts, rejected rows and
//! contacts.

use super::guard::Allow;
use crate::domain::access::Permission;
use async_graphql::{
    Context, Enum, ID, InputObject, Object, SimpleObject, Upload,
    connection::{Connection, OpaqueCursor},
};
use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{
    contacts::ContactNode,
    error::{GqlError, GqlResult, parse_arg},
    page_cost,
    pagination::{PageArgs, connection, page_request},
    request_of, services_of,
};
use crate::{
    domain::{
        contact::ContactId,
        import::{self, Import, RowError},
    },
    service::{
        Error,
        contacts::ContactFilterRequest,
        imports::{DEFAULT_BATCH_ROWS, ImportOptions},
    },
};

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "ImportKey", remote = "import::ImportKey")]
pub enum ImportKeyValue {
    /// Rows find their contact by email address.
    Email,
    /// Rows find their contact by external id.
    ExternalId,
}

#[derive(Enum, Clone, Copy, PartialEq, Eq)]
#[graphql(name = "ImportStatus", remote = "import::ImportStatus")]
pub enum ImportStatusValue {
    Running,
    Completed,
    /// Stopped midway (see `failure`); the batches before stay imported.
    Failed,
}

/// A row the import did not take, and why; the value itself is never repeated.
#[derive(SimpleObject)]
#[graphql(name = "RejectedRow")]
pub struct RejectedRowNode {
    /// Where the row starts in the file; the header is line 1.
    line: u64,
    /// The column as the file's header names it; null when the row as a whole is at fault.
    column: Option<String>,
    reason: String,
}

impl From<RowError> for RejectedRowNode {
    fn from(error: RowError) -> Self {
        Self { line: error.line, column: error.column, reason: error.reason }
    }
}

pub struct ImportNode(pub Import);

/// Rejected rows per request at most.
const MAX_REJECTIONS: i32 = 1_000;

#[Object(name = "Import")]
impl ImportNode {
    async fn id(&self) -> ID {
        ID(self.0.id.to_string())
    }

    async fn file_name(&self) -> &str {
        &self.0.file_name
    }

    async fn key(&self) -> ImportKeyValue {
        self.0.key.into()
    }

    async fn status(&self) -> ImportStatusValue {
        self.0.status.into()
    }

    /// Who ran it, as the audit log names actors: user, api_key, system (the command line) …
    async fn actor_kind(&self) -> &str {
        &self.0.actor_kind
    }

    async fn actor_id(&self) -> Option<&str> {
        self.0.actor_id.as_deref()
    }

    async fn started_at(&self) -> DateTime<Utc> {
        self.0.started_at
    }

    async fn finished_at(&self) -> Option<DateTime<Utc>> {
        self.0.finished_at
    }

    /// Data rows read (the header not counted); each is created, updated, unchanged or rejected.
    async fn rows(&self) -> u64 {
        self.0.counts.rows
    }

    async fn created(&self) -> u64 {
        self.0.counts.created
    }

    async fn updated(&self) -> u64 {
        self.0.counts.updated
    }

    /// Rows whose contact was already as they describe it.
    async fn unchanged(&self) -> u64 {
        self.0.counts.unchanged
    }

    async fn rejected(&self) -> u64 {
        self.0.counts.rejected
    }

    /// Why a failed run stopped.
    async fn failure(&self) -> Option<&str> {
        self.0.failure.as_deref()
    }

    /// The rejected rows in file order: up to `first` (default 100, at most 1000) after line
    /// `afterLine`.
    #[graphql(complexity = "first.unwrap_or(100).clamp(1, 1_000) as usize * child_complexity")]
    async fn rejections(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after_line: Option<u64>,
    ) -> GqlResult<Vec<RejectedRowNode>> {
        let first = first.unwrap_or(100);
        if !(1..=MAX_REJECTIONS).contains(&first) {
            return Err(GqlError::bad_input("first", format!("must be between 1 and {MAX_REJECTIONS}")));
        }
        let rows = services_of(ctx)?
            .import_rejections(request_of(ctx)?, self.0.id, after_line, u64::try_from(first).unwrap_or(100))
            .await?;
        Ok(rows.into_iter().map(RejectedRowNode::from).collect())
    }

    /// The contacts this import created, updated or found unchanged, in creation order; the same
    /// list as `contacts(filter: {importId})`.
    #[graphql(complexity = "page_cost(first, last, child_complexity)", guard = "Allow::to(Permission::ProfilesRead)")]
    async fn contacts(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<Uuid>, ContactNode>> {
        let request = page_request::<Uuid>(PageArgs { after, before, first, last })?;
        let filter = ContactFilterRequest { import: Some(self.0.id), ..ContactFilterRequest::default() };
        let page = services_of(ctx)?.list_contacts(&filter, &request.clone().map(ContactId::from_uuid)).await?;
        Ok(connection(page, &request, |contact| contact.id.as_uuid(), ContactNode))
    }
}

#[derive(Default)]
pub struct ImportQuery;

#[Object]
impl ImportQuery {
    /// Runs of contact imports, newest first.
    #[graphql(complexity = "page_cost(first, last, child_complexity)", guard = "Allow::to(Permission::ProfilesRead)")]
    async fn imports(
        &self,
        ctx: &Context<'_>,
        first: Option<i32>,
        after: Option<String>,
        last: Option<i32>,
        before: Option<String>,
    ) -> GqlResult<Connection<OpaqueCursor<Uuid>, ImportNode>> {
        let request = page_request::<Uuid>(PageArgs { after, before, first, last })?;
        let page = services_of(ctx)?.list_imports(request_of(ctx)?, &request).await?;
        Ok(connection(page, &request, |import| import.id, ImportNode))
    }

    #[graphql(guard = "Allow::to(Permission::ProfilesRead)")]
    async fn import(&self, ctx: &Context<'_>, id: ID) -> GqlResult<Option<ImportNode>> {
        let id = parse_import_id(&id)?;
        Ok(services_of(ctx)?.find_import(request_of(ctx)?, id).await?.map(ImportNode))
    }
}

fn parse_import_id(id: &ID) -> GqlResult<Uuid> {
    parse_arg("id", Uuid::parse_str(id).map_err(|_| "is not an import id"))
}

/// Fills a field from a column whatever the header calls it.
#[derive(InputObject)]
pub struct ColumnMappingInput {
    /// The column as the file's header names it.
    column: String,
    /// A contact field (email, externalId, phone, firstName, lastName, locale, timeZone,
    /// country), a custom field by key (or attributes.key), or "-" to ignore the column.
    field: String,
}

#[derive(Default)]
pub struct ImportMutation;

#[Object]
impl ImportMutation {
    /// Imports the contacts of an uploaded CSV file (GraphQL multipart request). Columns map to
    /// fields by header name (case and separators aside) unless `mapping` says otherwise; a
    /// column that matches no field refuses the file unless `ignoreUnknownColumns`. Rows upsert
    /// by `key`; empty cells leave fields as they are; bad rows are rejected one by one (see
    /// `rejections`) and the others imported. Answers once the whole file is imported.
    #[graphql(guard = "Allow::to(Permission::ProfilesWrite)")]
    async fn import_contacts(
        &self,
        ctx: &Context<'_>,
        file: Upload,
        #[graphql(default_with = "ImportKeyValue::Email")] key: ImportKeyValue,
        mapping: Option<Vec<ColumnMappingInput>>,
        #[graphql(default = false)] ignore_unknown_columns: bool,
    ) -> GqlResult<ImportNode> {
        let upload = file.value(ctx).map_err(|error| GqlError::from(Error::Internal(error.into())))?;
        let options = ImportOptions {
            file_name: upload.filename.clone(),
            key: key.into(),
            mapping: mapping.unwrap_or_default().into_iter().map(|m| (m.column, m.field)).collect(),
            ignore_unknown: ignore_unknown_columns,
            batch_rows: DEFAULT_BATCH_ROWS,
        };
        // A task of its own: a client that hangs up must not stop the import midway, leaving a
        // run that says it is running for ever.
        let services = services_of(ctx)?.clone();
        let request = request_of(ctx)?.clone();
        let running =
            tokio::spawn(async move { services.import_contacts(&request, upload.content, options, |_, _| {}).await });
        let import = running.await.map_err(|error| GqlError::from(Error::Internal(error.into())))??;
        Ok(ImportNode(import))
    }
}
