//! The record of contact imports: one row per run with its counts, the contacts it touched and
//! the rows it rejected. Batches add to the counts as they commit, so a run that is still going
//! (or that failed) shows how far it came.

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    sea_query::{Expr, ExprTrait},
};
use uuid::Uuid;

use super::{
    Conflict, StoreError, StoreResult,
    entity::{import as entity, import_contact, import_rejection as rejection},
    insert_rows,
};
use crate::domain::{
    contact::ContactId,
    import::{Import, ImportCounts, ImportStatus, RowError},
    page::{Direction, Page, PageRequest},
};

/// Rows per multi-row INSERT: 2,000 bound values on PostgreSQL, well under its limit of 65,535
/// (on SQLite a statement binds one document).
const ROWS_PER_STATEMENT: usize = 1_000;

pub async fn insert(conn: &impl ConnectionTrait, import: &Import) -> StoreResult<()> {
    let row = entity::ActiveModel { progressed_at: Set(Some(import.started_at)), ..to_active(import) };
    entity::Entity::insert(row).exec_without_returning(conn).await?;
    Ok(())
}

/// Writes the run's status, counts and end as they now are.
pub async fn save(conn: &impl ConnectionTrait, import: &Import) -> StoreResult<()> {
    entity::Entity::update(to_active(import)).exec(conn).await?;
    Ok(())
}

/// Adds a committed batch's counts to the run's, in the database: batches written side by
/// side each add their own, whichever commits first. The run progressed `at`.
pub async fn add_counts(
    conn: &impl ConnectionTrait,
    id: Uuid,
    counts: &ImportCounts,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    let mut update = entity::Entity::update_many()
        .filter(entity::Column::Id.eq(id))
        .col_expr(entity::Column::ProgressedAt, Expr::value(at));
    for (column, value) in [
        (entity::Column::Rows, counts.rows),
        (entity::Column::Created, counts.created),
        (entity::Column::Updated, counts.updated),
        (entity::Column::Unchanged, counts.unchanged),
        (entity::Column::Rejected, counts.rejected),
    ] {
        update = update.col_expr(column, Expr::col(column).add(i64::try_from(value).unwrap_or(i64::MAX)));
    }
    update.exec(conn).await?;
    Ok(())
}

/// Running imports that have not progressed since `stalled_before`.
fn stalled(stalled_before: DateTime<Utc>) -> Condition {
    Condition::all()
        .add(entity::Column::Status.eq(ImportStatus::Running.as_str()))
        .add(entity::Column::ProgressedAt.lt(stalled_before))
}

/// Whether some running import has not progressed since `stalled_before`.
pub async fn any_stalled(conn: &impl ConnectionTrait, stalled_before: DateTime<Utc>) -> StoreResult<bool> {
    Ok(entity::Entity::find().filter(stalled(stalled_before)).one(conn).await?.is_some())
}

/// Marks failed, with `failure`, the running imports that have not progressed since
/// `stalled_before` (their process died); the runs as they now are.
pub async fn fail_stalled(
    conn: &impl ConnectionTrait,
    stalled_before: DateTime<Utc>,
    at: DateTime<Utc>,
    failure: &str,
) -> StoreResult<Vec<Import>> {
    let stalled = || stalled(stalled_before);
    let ids: Vec<Uuid> = entity::Entity::find()
        .select_only()
        .column(entity::Column::Id)
        .filter(stalled())
        .into_tuple()
        .all(conn)
        .await?;
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    entity::Entity::update_many()
        .col_expr(entity::Column::Status, Expr::value(ImportStatus::Failed.as_str()))
        .col_expr(entity::Column::Failure, Expr::value(failure))
        .col_expr(entity::Column::FinishedAt, Expr::value(at))
        .filter(stalled())
        .filter(entity::Column::Id.is_in(ids.iter().copied()))
        .exec(conn)
        .await?;
    let rows = entity::Entity::find()
        .filter(entity::Column::Id.is_in(ids))
        .filter(entity::Column::FinishedAt.eq(at))
        .filter(entity::Column::Failure.eq(failure))
        .all(conn)
        .await?;
    rows.into_iter().map(to_domain).collect()
}

pub async fn find(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<Import>> {
    entity::Entity::find_by_id(id).one(conn).await?.map(to_domain).transpose()
}

/// One page of runs, newest first; ids are UUIDv7, so id order is the order they started in.
pub async fn page(conn: &impl ConnectionTrait, request: &PageRequest<Uuid>) -> StoreResult<Page<Import>> {
    let mut query = entity::Entity::find();
    if let Some(after) = request.after {
        query = query.filter(entity::Column::Id.lt(after));
    }
    if let Some(before) = request.before {
        query = query.filter(entity::Column::Id.gt(before));
    }
    query = match request.direction {
        Direction::Forward => query.order_by_desc(entity::Column::Id),
        Direction::Backward => query.order_by_asc(entity::Column::Id),
    };
    let rows = query.limit(request.limit + 1).all(conn).await?;
    Page::from_rows(rows, request.limit, request.direction).try_map(to_domain)
}

/// Links stored contacts to a run that updated them or found them unchanged (those it creates
/// name it in their own row); a contact linked twice is linked once.
pub async fn link(conn: &impl ConnectionTrait, import_id: Uuid, contacts: &[ContactId]) -> StoreResult<()> {
    let rows = contacts
        .iter()
        .map(|contact_id| import_contact::ActiveModel {
            import_id: Set(import_id),
            contact_id: Set(contact_id.as_uuid()),
        })
        .collect();
    let key = [import_contact::Column::ImportId, import_contact::Column::ContactId];
    insert_rows(conn, rows, Conflict::Ignore { target: &key }, ROWS_PER_STATEMENT).await
}

pub async fn reject(conn: &impl ConnectionTrait, import_id: Uuid, errors: &[RowError]) -> StoreResult<()> {
    for chunk in errors.chunks(ROWS_PER_STATEMENT) {
        let rows = chunk.iter().map(|error| rejection::ActiveModel {
            import_id: Set(import_id),
            row_number: Set(i64::try_from(error.line).unwrap_or(i64::MAX)),
            column_name: Set(error.column.clone()),
            reason: Set(error.reason.clone()),
        });
        rejection::Entity::insert_many(rows).exec_without_returning(conn).await?;
    }
    Ok(())
}

/// Rejected rows in file order, from the line after `after_line`.
pub async fn rejections(
    conn: &impl ConnectionTrait,
    import_id: Uuid,
    after_line: Option<u64>,
    limit: u64,
) -> StoreResult<Vec<RowError>> {
    let mut query = rejection::Entity::find().filter(rejection::Column::ImportId.eq(import_id));
    if let Some(after) = after_line {
        query = query.filter(rejection::Column::RowNumber.gt(i64::try_from(after).unwrap_or(i64::MAX)));
    }
    let rows = query.order_by_asc(rejection::Column::RowNumber).limit(limit).all(conn).await?;
    Ok(rows
        .into_iter()
        .map(|row| RowError {
            line: u64::try_from(row.row_number).unwrap_or_default(),
            column: row.column_name,
            reason: row.reason,
        })
        .collect())
}

fn to_active(import: &Import) -> entity::ActiveModel {
    let count = |value: u64| Set(i64::try_from(value).unwrap_or(i64::MAX));
    entity::ActiveModel {
        id: Set(import.id),
        file_name: Set(import.file_name.clone()),
        upsert_key: Set(import.key.as_str().to_owned()),
        actor_kind: Set(import.actor_kind.clone()),
        actor_id: Set(import.actor_id.clone()),
        request_id: Set(import.request_id.clone()),
        status: Set(import.status.as_str().to_owned()),
        started_at: Set(import.started_at),
        finished_at: Set(import.finished_at),
        rows: count(import.counts.rows),
        created: count(import.counts.created),
        updated: count(import.counts.updated),
        unchanged: count(import.counts.unchanged),
        rejected: count(import.counts.rejected),
        failure: Set(import.failure.clone()),
        progressed_at: NotSet,
    }
}

fn to_domain(row: entity::Model) -> StoreResult<Import> {
    let corrupt = |column| StoreError::Corrupt { table: "import", column };
    let count = |value: i64| u64::try_from(value).unwrap_or_default();
    Ok(Import {
        id: row.id,
        key: row.upsert_key.parse().map_err(|_| corrupt("upsert_key"))?,
        status: row.status.parse().map_err(|_| corrupt("status"))?,
        file_name: row.file_name,
        actor_kind: row.actor_kind,
        actor_id: row.actor_id,
        request_id: row.request_id,
        started_at: row.started_at,
        finished_at: row.finished_at,
        counts: ImportCounts {
            rows: count(row.rows),
            created: count(row.created),
            updated: count(row.updated),
            unchanged: count(row.unchanged),
            rejected: count(row.rejected),
        },
        failure: row.failure,
    })
}
