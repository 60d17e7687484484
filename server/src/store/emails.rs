//! Emails and their versions. Versions are only ever inserted, never updated; the email row
//! names the current one and moves on only from the version its writer read.

use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use uuid::Uuid;

use super::{
    StoreError, StoreResult,
    entity::{email as entity, email_version as version_entity},
};
use crate::domain::{
    contact::EmailAddress,
    email::{CheckedVersion, Email, EmailContent, EmailVersion, Mailbox},
    page::{Direction, Page, PageRequest},
};

pub async fn insert(conn: &impl ConnectionTrait, email: &Email) -> StoreResult<()> {
    entity::Entity::insert(to_active(email)).exec_without_returning(conn).await?;
    Ok(())
}

/// Writes the email's new state if it is still at version `expected`; false when another
/// writer moved it first.
pub async fn advance(conn: &impl ConnectionTrait, email: &Email, expected: i32) -> StoreResult<bool> {
    let result = entity::Entity::update_many()
        .set(to_active(email))
        .filter(entity::Column::Id.eq(email.id))
        .filter(entity::Column::CurrentVersion.eq(expected))
        .exec(conn)
        .await?;
    Ok(result.rows_affected == 1)
}

pub async fn find(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<Email>> {
    entity::Entity::find_by_id(id).one(conn).await?.map(to_domain).transpose()
}

/// Emails in creation order (ids are UUIDv7).
pub async fn page(conn: &impl ConnectionTrait, request: &PageRequest<Uuid>) -> StoreResult<Page<Email>> {
    let mut query = entity::Entity::find();
    if let Some(after) = request.after {
        query = query.filter(entity::Column::Id.gt(after));
    }
    if let Some(before) = request.before {
        query = query.filter(entity::Column::Id.lt(before));
    }
    query = match request.direction {
        Direction::Forward => query.order_by_asc(entity::Column::Id),
        Direction::Backward => query.order_by_desc(entity::Column::Id),
    };
    let rows = query.limit(request.limit + 1).all(conn).await?;
    Page::from_rows(rows, request.limit, request.direction).try_map(to_domain)
}

pub async fn insert_version(conn: &impl ConnectionTrait, checked: &CheckedVersion) -> StoreResult<()> {
    let version = &checked.version;
    let content = &version.content;
    version_entity::Entity::insert(version_entity::ActiveModel {
        id: Set(version.id),
        email_id: Set(version.email_id),
        version: Set(version.version),
        email_type: Set(version.email_type.as_str().to_owned()),
        subject: Set(content.subject.clone()),
        preheader: Set(content.preheader.clone()),
        html: Set(content.html.clone()),
        text_body: Set(content.text.clone()),
        from_name: Set(version.from.name.clone()),
        from_address: Set(version.from.address.as_str().to_owned()),
        reply_to_name: Set(version.reply_to.as_ref().and_then(|mailbox| mailbox.name.clone())),
        reply_to_address: Set(version.reply_to.as_ref().map(|mailbox| mailbox.address.as_str().to_owned())),
        tracking: Set(version.tracking),
        warnings: Set(serde_json::json!(checked.warnings)),
        created_at: Set(version.created_at),
    })
    .exec_without_returning(conn)
    .await?;
    Ok(())
}

/// One version by its id, as a send refers to it.
pub async fn version_by_id(conn: &impl ConnectionTrait, id: Uuid) -> StoreResult<Option<EmailVersion>> {
    let found = version_entity::Entity::find_by_id(id).one(conn).await?;
    Ok(found.map(version_to_domain).transpose()?.map(|checked| checked.version))
}

pub async fn version(conn: &impl ConnectionTrait, email_id: Uuid, number: i32) -> StoreResult<Option<CheckedVersion>> {
    version_entity::Entity::find()
        .filter(version_entity::Column::EmailId.eq(email_id))
        .filter(version_entity::Column::Version.eq(number))
        .one(conn)
        .await?
        .map(version_to_domain)
        .transpose()
}

/// Several versions named by (email id, version number), in one statement.
pub async fn versions_of(conn: &impl ConnectionTrait, keys: &[(Uuid, i32)]) -> StoreResult<Vec<CheckedVersion>> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let any = keys.iter().fold(Condition::any(), |any, (email_id, number)| {
        any.add(
            Condition::all()
                .add(version_entity::Column::EmailId.eq(*email_id))
                .add(version_entity::Column::Version.eq(*number)),
        )
    });
    version_entity::Entity::find().filter(any).all(conn).await?.into_iter().map(version_to_domain).collect()
}

/// An email's versions, newest first; cursors are version numbers.
pub async fn history(
    conn: &impl ConnectionTrait,
    email_id: Uuid,
    request: &PageRequest<i32>,
) -> StoreResult<Page<CheckedVersion>> {
    let mut query = version_entity::Entity::find().filter(version_entity::Column::EmailId.eq(email_id));
    if let Some(after) = request.after {
        query = query.filter(version_entity::Column::Version.lt(after));
    }
    if let Some(before) = request.before {
        query = query.filter(version_entity::Column::Version.gt(before));
    }
    query = match request.direction {
        Direction::Forward => query.order_by_desc(version_entity::Column::Version),
        Direction::Backward => query.order_by_asc(version_entity::Column::Version),
    };
    let rows = query.limit(request.limit + 1).all(conn).await?;
    Page::from_rows(rows, request.limit, request.direction).try_map(version_to_domain)
}

fn to_active(email: &Email) -> entity::ActiveModel {
    entity::ActiveModel {
        id: Set(email.id),
        name: Set(email.name.clone()),
        email_type: Set(email.email_type.as_str().to_owned()),
        current_version: Set(email.current_version),
        created_at: Set(email.created_at),
        updated_at: Set(email.updated_at),
    }
}

fn to_domain(model: entity::Model) -> StoreResult<Email> {
    Ok(Email {
        id: model.id,
        name: model.name,
        email_type: model
            .email_type
            .parse()
            .map_err(|_| StoreError::Corrupt { table: "email", column: "email_type" })?,
        current_version: model.current_version,
        created_at: model.created_at,
        updated_at: model.updated_at,
    })
}

fn version_to_domain(model: version_entity::Model) -> StoreResult<CheckedVersion> {
    let corrupt = |column| StoreError::Corrupt { table: "email_version", column };
    let address = |raw: &str, column| EmailAddress::parse(raw).map_err(|_| corrupt(column));
    let reply_to = match model.reply_to_address {
        Some(raw) => Some(Mailbox { name: model.reply_to_name, address: address(&raw, "reply_to_address")? }),
        None => None,
    };
    Ok(CheckedVersion {
        version: EmailVersion {
            id: model.id,
            email_id: model.email_id,
            version: model.version,
            email_type: model.email_type.parse().map_err(|_| corrupt("email_type"))?,
            content: EmailContent {
                subject: model.subject,
                preheader: model.preheader,
                html: model.html,
                text: model.text_body,
            },
            from: Mailbox { name: model.from_name, address: address(&model.from_address, "from_address")? },
            reply_to,
            tracking: model.tracking,
            created_at: model.created_at,
        },
        warnings: serde_json::from_value(model.warnings).map_err(|_| corrupt("warnings"))?,
    })
}
